//! broker, qmgr, local, pickup -> proxymap (schema: proxymap.capnp).
use std::os::fd::OwnedFd;

use crate::channel::{Message, no_fds};
use crate::frame::{self, Violation, clip, text};
use crate::generated::proxymap_capnp::{reply, request};

pub const EDGE: &str = "proxymap";
pub const VERSION: u32 = crate::generated::proxymap_capnp::VERSION;
crate::edge!(
    /// This edge, for `edge::open`, `edge::accept` and `edge::serve`.
    Link,
    Request,
    Reply
);
/// Longest table reference.
pub const MAX_TABLE: usize = 1024;
/// Longest key.
pub const MAX_KEY: usize = 4096;
/// Longest value (socketmap's own limit).
pub const MAX_VALUE: usize = 100_000;
const MAX_REASON: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub table: String,
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Found(String),
    NotFound,
    Failed(String),
}

impl Message for Request {
    const MAX_FRAME: usize = 8 * 1024;

    fn encode(&self) -> Vec<u8> {
        let mut b = frame::builder();
        {
            let mut r = b.init_root::<request::Builder>();
            r.set_table(clip(&self.table, MAX_TABLE));
            r.set_query(clip(&self.key, MAX_KEY));
        }
        frame::finish(&b)
    }

    fn decode(f: &[u8], fds: Vec<OwnedFd>) -> Result<Self, Violation> {
        no_fds(&fds)?;
        let msg = frame::open(f, Self::MAX_FRAME)?;
        let r = msg.get_root::<request::Reader>()?;
        Ok(Request {
            table: text(r.get_table(), "table", MAX_TABLE)?,
            key: text(r.get_query(), "query", MAX_KEY)?,
        })
    }
}

impl Message for Reply {
    const MAX_FRAME: usize = MAX_VALUE + 1024;

    fn encode(&self) -> Vec<u8> {
        let mut b = frame::builder();
        {
            let mut r = b.init_root::<reply::Builder>();
            match self {
                Reply::Found(v) => r.set_found(clip(v, MAX_VALUE)),
                Reply::NotFound => r.set_not_found(()),
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
            reply::Found(t) => Reply::Found(text(t, "found", MAX_VALUE)?),
            reply::NotFound(()) => Reply::NotFound,
            reply::Failed(t) => Reply::Failed(text(t, "failed", MAX_REASON)?),
        })
    }
}
