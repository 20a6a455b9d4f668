//! smtp -> sts: a recipient domain's MTA-STS policy (schema: sts.capnp).
use std::os::fd::OwnedFd;

use crate::channel::{Message, no_fds};
use crate::frame::{self, Violation, clip, list_len, text};
use crate::generated::sts_capnp::{Mode as WireMode, reply, request};

pub const EDGE: &str = "sts";
pub const VERSION: u32 = crate::generated::sts_capnp::VERSION;
crate::edge!(
    /// This edge, for `edge::open`, `edge::accept` and `edge::serve`.
    Link,
    Request,
    Reply
);
const NAME: usize = 255;
pub const MAX_MX: usize = 64;
pub const MAX_ID: usize = 32;
pub const MAX_WHY: usize = 512;
pub const MAX_AGE: u32 = 31_557_600;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub domain: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Enforce,
    Testing,
    None,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub mode: Mode,
    pub mx: Vec<String>,
    pub max_age: u32,
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Policy(Policy),
    /// No policy applies: why ("" when the domain publishes none).
    None(String),
}

impl Message for Request {
    const MAX_FRAME: usize = 1024;

    fn encode(&self) -> Vec<u8> {
        let mut b = frame::builder();
        b.init_root::<request::Builder>()
            .set_domain(clip(&self.domain, NAME));
        frame::finish(&b)
    }

    fn decode(f: &[u8], fds: Vec<OwnedFd>) -> Result<Self, Violation> {
        no_fds(&fds)?;
        let msg = frame::open(f, Self::MAX_FRAME)?;
        let r = msg.get_root::<request::Reader>()?;
        let domain = text(r.get_domain(), "domain", NAME)?;
        if domain.is_empty() || domain.contains(' ') {
            return Err(Violation::Field {
                field: "domain",
                why: "not a domain name".into(),
            });
        }
        Ok(Request { domain })
    }
}

impl Message for Reply {
    const MAX_FRAME: usize = MAX_MX * (NAME + 16) + 4096;

    fn encode(&self) -> Vec<u8> {
        let mut b = frame::builder();
        {
            let mut r = b.init_root::<reply::Builder>();
            match self {
                Reply::Policy(p) => {
                    let mut w = r.init_policy();
                    w.set_mode(match p.mode {
                        Mode::Enforce => WireMode::Enforce,
                        Mode::Testing => WireMode::Testing,
                        Mode::None => WireMode::None,
                    });
                    w.set_max_age(p.max_age.min(MAX_AGE));
                    w.set_id(clip(&p.id, MAX_ID));
                    let n = p.mx.len().min(MAX_MX);
                    let mut l = w.init_mx(n as u32);
                    for (i, m) in p.mx.iter().take(n).enumerate() {
                        l.set(i as u32, clip(m, NAME));
                    }
                }
                Reply::None(why) => r.set_none(clip(why, MAX_WHY)),
            }
        }
        frame::finish(&b)
    }

    fn decode(f: &[u8], fds: Vec<OwnedFd>) -> Result<Self, Violation> {
        no_fds(&fds)?;
        let msg = frame::open(f, Self::MAX_FRAME)?;
        let r = msg.get_root::<reply::Reader>()?;
        Ok(match r.which()? {
            reply::Policy(p) => {
                let p = p?;
                let l = p.get_mx()?;
                list_len(l.len(), "mx", MAX_MX)?;
                let mut mx = Vec::new();
                for t in l.iter() {
                    mx.push(text(t, "mx", NAME)?);
                }
                let max_age = p.get_max_age();
                if max_age > MAX_AGE {
                    return Err(Violation::Field {
                        field: "maxAge",
                        why: "over a year".into(),
                    });
                }
                Reply::Policy(Policy {
                    mode: match p.get_mode()? {
                        WireMode::Enforce => Mode::Enforce,
                        WireMode::Testing => Mode::Testing,
                        WireMode::None => Mode::None,
                    },
                    mx,
                    max_age,
                    id: text(p.get_id(), "id", MAX_ID)?,
                })
            }
            reply::None(t) => Reply::None(text(t, "none", MAX_WHY)?),
        })
    }
}
