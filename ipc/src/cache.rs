//! role -> cache: the persistent state store (schema: cache.capnp).
use std::os::fd::OwnedFd;

use crate::channel::{Message, no_fds};
use crate::frame::{self, Violation, clip, data, text};
use crate::generated::cache_capnp::{reply, request};

pub const EDGE: &str = "cache";
pub const VERSION: u32 = crate::generated::cache_capnp::VERSION;
crate::edge!(
    /// This edge, for `edge::open`, `edge::accept` and `edge::serve`.
    Link,
    Request,
    Reply
);
pub const MAX_NAMESPACE: usize = 32;
pub const MAX_KEY: usize = 512;
pub const MAX_VALUE: usize = 4096;
pub const MAX_REASON: usize = 256;
/// The longest a record may live: a year and a day (address-verify
/// results live 31 days by default, and an admin may ask for more).
pub const MAX_TTL: u32 = 366 * 24 * 3600;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Get,
    Put { value: Vec<u8>, ttl_seconds: u32 },
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub namespace: String,
    pub key: String,
    pub op: Op,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Found { value: Vec<u8>, expires_in: u32 },
    NotFound,
    Done,
    Refused(String),
}

impl Message for Request {
    const MAX_FRAME: usize = 6 * 1024;

    fn encode(&self) -> Vec<u8> {
        let mut b = frame::builder();
        {
            let mut r = b.init_root::<request::Builder>();
            r.set_namespace(clip(&self.namespace, MAX_NAMESPACE));
            r.set_entry(clip(&self.key, MAX_KEY));
            match &self.op {
                Op::Get => r.set_get(()),
                Op::Delete => r.set_delete(()),
                Op::Put { value, ttl_seconds } => {
                    let mut p = r.init_put();
                    p.set_value(&value[..value.len().min(MAX_VALUE)]);
                    p.set_ttl_seconds(*ttl_seconds);
                }
            }
        }
        frame::finish(&b)
    }

    fn decode(f: &[u8], fds: Vec<OwnedFd>) -> Result<Self, Violation> {
        no_fds(&fds)?;
        let msg = frame::open(f, Self::MAX_FRAME)?;
        let r = msg.get_root::<request::Reader>()?;
        let op = match r.which()? {
            request::Get(()) => Op::Get,
            request::Delete(()) => Op::Delete,
            request::Put(p) => {
                let p = p?;
                Op::Put {
                    value: data(p.get_value(), "put.value", MAX_VALUE)?,
                    ttl_seconds: frame::range(
                        p.get_ttl_seconds().into(),
                        "put.ttlSeconds",
                        1,
                        MAX_TTL.into(),
                    )? as u32,
                }
            }
        };
        Ok(Request {
            namespace: text(r.get_namespace(), "namespace", MAX_NAMESPACE)?,
            key: text(r.get_entry(), "entry", MAX_KEY)?,
            op,
        })
    }
}

impl Message for Reply {
    const MAX_FRAME: usize = 6 * 1024;

    fn encode(&self) -> Vec<u8> {
        let mut b = frame::builder();
        {
            let mut r = b.init_root::<reply::Builder>();
            match self {
                Reply::Found { value, expires_in } => {
                    let mut f = r.init_found();
                    f.set_value(&value[..value.len().min(MAX_VALUE)]);
                    f.set_expires_in(*expires_in);
                }
                Reply::NotFound => r.set_not_found(()),
                Reply::Done => r.set_done(()),
                Reply::Refused(why) => r.set_refused(clip(why, MAX_REASON)),
            }
        }
        frame::finish(&b)
    }

    fn decode(f: &[u8], fds: Vec<OwnedFd>) -> Result<Self, Violation> {
        no_fds(&fds)?;
        let msg = frame::open(f, Self::MAX_FRAME)?;
        let r = msg.get_root::<reply::Reader>()?;
        Ok(match r.which()? {
            reply::Found(f) => {
                let f = f?;
                Reply::Found {
                    value: data(f.get_value(), "found.value", MAX_VALUE)?,
                    expires_in: frame::range(
                        f.get_expires_in().into(),
                        "found.expiresIn",
                        0,
                        MAX_TTL.into(),
                    )? as u32,
                }
            }
            reply::NotFound(()) => Reply::NotFound,
            reply::Done(()) => Reply::Done,
            reply::Refused(t) => Reply::Refused(text(t, "refused", MAX_REASON)?),
        })
    }
}
