//! smtpd -> policy (schema: policy.capnp).
use std::os::fd::OwnedFd;

use crate::channel::{Message, no_fds};
use crate::frame::{self, Violation, clip, list_len, text};
use crate::generated::policy_capnp::{reply, request};

pub const EDGE: &str = "policy";
pub const VERSION: u32 = crate::generated::policy_capnp::VERSION;
crate::edge!(
    /// This edge, for `edge::open`, `edge::accept` and `edge::serve`.
    Link,
    Request,
    Reply
);
/// Longest service key.
pub const MAX_SERVICE: usize = 1024;
/// Most attributes in a request.
pub const MAX_ATTRS: usize = 64;
/// Longest attribute name.
pub const MAX_NAME: usize = 64;
/// Longest attribute value.
pub const MAX_VALUE: usize = 2048;
/// Longest action (the policy reply parser's line limit).
pub const MAX_ACTION: usize = 8192;
const MAX_REASON: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub service: String,
    pub attrs: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Action(String),
    Failed(String),
}

impl Message for Request {
    const MAX_FRAME: usize = 160 * 1024;

    fn encode(&self) -> Vec<u8> {
        let mut b = frame::builder();
        {
            let mut r = b.init_root::<request::Builder>();
            r.set_service(clip(&self.service, MAX_SERVICE));
            let n = self.attrs.len().min(MAX_ATTRS);
            let mut l = r.init_attrs(n as u32);
            for (i, (name, value)) in self.attrs.iter().take(n).enumerate() {
                let mut a = l.reborrow().get(i as u32);
                a.set_name(clip(name, MAX_NAME));
                a.set_value(clip(value, MAX_VALUE));
            }
        }
        frame::finish(&b)
    }

    fn decode(f: &[u8], fds: Vec<OwnedFd>) -> Result<Self, Violation> {
        no_fds(&fds)?;
        let msg = frame::open(f, Self::MAX_FRAME)?;
        let r = msg.get_root::<request::Reader>()?;
        let service = text(r.get_service(), "service", MAX_SERVICE)?;
        let l = r.get_attrs()?;
        list_len(l.len(), "attrs", MAX_ATTRS)?;
        let mut attrs = Vec::with_capacity(l.len() as usize);
        for a in l.iter() {
            let name = text(a.get_name(), "attr.name", MAX_NAME)?;
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                return Err(Violation::Field {
                    field: "attr.name",
                    why: "not an attribute name".into(),
                });
            }
            attrs.push((name, text(a.get_value(), "attr.value", MAX_VALUE)?));
        }
        Ok(Request { service, attrs })
    }
}

impl Message for Reply {
    const MAX_FRAME: usize = MAX_ACTION + 1024;

    fn encode(&self) -> Vec<u8> {
        let mut b = frame::builder();
        {
            let mut r = b.init_root::<reply::Builder>();
            match self {
                Reply::Action(a) => r.set_action(clip(a, MAX_ACTION)),
                Reply::Failed(e) => r.set_failed(clip(e, MAX_REASON)),
            }
        }
        frame::finish(&b)
    }

    fn decode(f: &[u8], fds: Vec<OwnedFd>) -> Result<Self, Violation> {
        no_fds(&fds)?;
        let msg = frame::open(f, Self::MAX_FRAME)?;
        let r = msg.get_root::<reply::Reader>()?;
        Ok(match r.which()? {
            reply::Action(t) => Reply::Action(text(t, "action", MAX_ACTION)?),
            reply::Failed(t) => Reply::Failed(text(t, "failed", MAX_REASON)?),
        })
    }
}
