//! smtpd -> verify: address-verification status (schema: verify.capnp).
use std::os::fd::OwnedFd;

use crate::channel::{Message, no_fds};
use crate::frame::{self, Violation, clip, text};
use crate::generated::verify_capnp::{Status as WireStatus, reply, request};

pub const EDGE: &str = "verify";
pub const VERSION: u32 = crate::generated::verify_capnp::VERSION;
crate::edge!(
    /// This edge, for `edge::open`, `edge::accept` and `edge::serve`.
    Link,
    Request,
    Reply
);
/// Longest address.
pub const MAX_ADDRESS: usize = 512;
/// Longest reason.
pub const MAX_TEXT: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub address: String,
}

/// Postfix's DEL_RCPT_STAT_{OK,BOUNCE,DEFER,TODO}.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Deliverable,
    Undeliverable,
    Deferred,
    InProgress,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: Status,
    pub text: String,
}

impl Message for Request {
    const MAX_FRAME: usize = 2048;

    fn encode(&self) -> Vec<u8> {
        let mut b = frame::builder();
        b.init_root::<request::Builder>()
            .set_address(clip(&self.address, MAX_ADDRESS));
        frame::finish(&b)
    }

    fn decode(f: &[u8], fds: Vec<OwnedFd>) -> Result<Self, Violation> {
        no_fds(&fds)?;
        let msg = frame::open(f, Self::MAX_FRAME)?;
        let r = msg.get_root::<request::Reader>()?;
        Ok(Request {
            address: text(r.get_address(), "address", MAX_ADDRESS)?,
        })
    }
}

impl Message for Reply {
    const MAX_FRAME: usize = 2048;

    fn encode(&self) -> Vec<u8> {
        let mut b = frame::builder();
        {
            let mut r = b.init_root::<reply::Builder>();
            r.set_status(match self.status {
                Status::Deliverable => WireStatus::Deliverable,
                Status::Undeliverable => WireStatus::Undeliverable,
                Status::Deferred => WireStatus::Deferred,
                Status::InProgress => WireStatus::InProgress,
            });
            r.set_text(clip(&self.text, MAX_TEXT));
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
                WireStatus::InProgress => Status::InProgress,
            },
            text: text(r.get_text(), "text", MAX_TEXT)?,
        })
    }
}
