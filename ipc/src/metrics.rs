//! every role -> metrics: a process's figures (schema: metrics.capnp).
use std::os::fd::OwnedFd;

use crate::channel::{Message, no_fds};
use crate::frame::{self, Violation, clip, list_len, text};
use crate::generated::metrics_capnp::{reply, request};

pub const EDGE: &str = "metrics";
pub const VERSION: u32 = crate::generated::metrics_capnp::VERSION;
crate::edge!(
    /// This edge, for `edge::open`, `edge::accept` and `edge::serve`.
    Link,
    Request,
    Reply
);
/// Most samples in one report.
pub const MAX_SAMPLES: usize = 2048;
/// Longest series name.
pub const MAX_NAME: usize = 64;
/// Most label values of one sample.
pub const MAX_LABELS: usize = 8;
/// Longest label value.
pub const MAX_LABEL: usize = 128;

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<String>,
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Request {
    pub samples: Vec<Sample>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    pub accepted: u32,
}

impl Message for Request {
    const MAX_FRAME: usize = 512 * 1024;

    fn encode(&self) -> Vec<u8> {
        let mut b = frame::builder();
        {
            let n = self.samples.len().min(MAX_SAMPLES);
            let mut l = b.init_root::<request::Builder>().init_samples(n as u32);
            for (i, s) in self.samples.iter().take(n).enumerate() {
                let mut e = l.reborrow().get(i as u32);
                e.set_name(clip(&s.name, MAX_NAME));
                e.set_value(s.value);
                let k = s.labels.len().min(MAX_LABELS);
                let mut ls = e.init_labels(k as u32);
                for (j, v) in s.labels.iter().take(k).enumerate() {
                    ls.set(j as u32, clip(v, MAX_LABEL));
                }
            }
        }
        frame::finish(&b)
    }

    fn decode(f: &[u8], fds: Vec<OwnedFd>) -> Result<Self, Violation> {
        no_fds(&fds)?;
        let msg = frame::open(f, Self::MAX_FRAME)?;
        let r = msg.get_root::<request::Reader>()?;
        let l = r.get_samples()?;
        list_len(l.len(), "samples", MAX_SAMPLES)?;
        let mut samples = Vec::with_capacity(l.len() as usize);
        for e in l.iter() {
            let name = text(e.get_name(), "sample.name", MAX_NAME)?;
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                return Err(Violation::Field {
                    field: "sample.name",
                    why: "not a metric name".into(),
                });
            }
            let ls = e.get_labels()?;
            list_len(ls.len(), "sample.labels", MAX_LABELS)?;
            let mut labels = Vec::with_capacity(ls.len() as usize);
            for t in ls.iter() {
                labels.push(text(t, "sample.label", MAX_LABEL)?);
            }
            let value = e.get_value();
            if !value.is_finite() {
                return Err(Violation::Field {
                    field: "sample.value",
                    why: "not a finite number".into(),
                });
            }
            samples.push(Sample {
                name,
                labels,
                value,
            });
        }
        Ok(Request { samples })
    }
}

impl Message for Reply {
    const MAX_FRAME: usize = 256;

    fn encode(&self) -> Vec<u8> {
        let mut b = frame::builder();
        b.init_root::<reply::Builder>().set_accepted(self.accepted);
        frame::finish(&b)
    }

    fn decode(f: &[u8], fds: Vec<OwnedFd>) -> Result<Self, Violation> {
        no_fds(&fds)?;
        let msg = frame::open(f, Self::MAX_FRAME)?;
        let r = msg.get_root::<reply::Reader>()?;
        Ok(Reply {
            accepted: r.get_accepted(),
        })
    }
}
