//! verify -> qmgr: one address-verification probe (schema: probe.capnp).
use std::os::fd::OwnedFd;

use crate::channel::{Message, no_fds};
use crate::frame::{self, Violation, clip, text};
use crate::generated::probe_capnp::{Status as WireStatus, reply, request};

pub const EDGE: &str = "probe";
pub const VERSION: u32 = crate::generated::probe_capnp::VERSION;
crate::edge!(
    /// This edge, for `edge::open`, `edge::accept` and `edge::serve`.
    Link,
    Request,
    Reply
);
const ADDR: usize = 512;
const TEXT: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub address: String,
    /// address_verify_sender; "" is the null sender.
    pub sender: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Deliverable,
    Undeliverable,
    Deferred,
    /// qmgr did not try (too many probes pending): nothing is recorded.
    NotTried,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: Status,
    pub dsn: String,
    pub text: String,
}

impl Message for Request {
    const MAX_FRAME: usize = 4096;

    fn encode(&self) -> Vec<u8> {
        let mut b = frame::builder();
        {
            let mut r = b.init_root::<request::Builder>();
            r.set_address(clip(&self.address, ADDR));
            r.set_sender(clip(&self.sender, ADDR));
        }
        frame::finish(&b)
    }

    fn decode(f: &[u8], fds: Vec<OwnedFd>) -> Result<Self, Violation> {
        no_fds(&fds)?;
        let msg = frame::open(f, Self::MAX_FRAME)?;
        let r = msg.get_root::<request::Reader>()?;
        Ok(Request {
            address: text(r.get_address(), "address", ADDR)?,
            sender: text(r.get_sender(), "sender", ADDR)?,
        })
    }
}

impl Message for Reply {
    const MAX_FRAME: usize = 4096;

    fn encode(&self) -> Vec<u8> {
        let mut b = frame::builder();
        {
            let mut r = b.init_root::<reply::Builder>();
            r.set_status(match self.status {
                Status::Deliverable => WireStatus::Deliverable,
                Status::Undeliverable => WireStatus::Undeliverable,
                Status::Deferred => WireStatus::Deferred,
                Status::NotTried => WireStatus::NotTried,
            });
            r.set_dsn(clip(&self.dsn, 16));
            r.set_text(clip(&self.text, TEXT));
        }
        frame::finish(&b)
    }

    fn decode(f: &[u8], fds: Vec<OwnedFd>) -> Result<Self, Violation> {
        no_fds(&fds)?;
        let msg = frame::open(f, Self::MAX_FRAME)?;
        let r = msg.get_root::<reply::Reader>()?;
        Ok(Reply {
            status: match r.get_status()? {
                WireStatus::Deliverable => Status::Deliverable,
                WireStatus::Undeliverable => Status::Undeliverable,
                WireStatus::Deferred => Status::Deferred,
                WireStatus::NotTried => Status::NotTried,
            },
            dsn: frame::status_code(text(r.get_dsn(), "dsn", 16)?, "dsn")?,
            text: text(r.get_text(), "text", TEXT)?,
        })
    }
}
