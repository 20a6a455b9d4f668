//! smtpd -> broker lookups (schema: smtpd_broker.capnp).
use std::os::fd::OwnedFd;

use crate::channel::{Message, no_fds};
use crate::frame::{self, Violation, clip, text};
use crate::generated::smtpd_broker_capnp::{reply, request};

pub const EDGE: &str = "smtpd-broker";
pub const VERSION: u32 = crate::generated::smtpd_broker_capnp::VERSION;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    LocalRecipient(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Found(bool),
    Tempfail(String),
}

impl Message for Request {
    const MAX_FRAME: usize = 1024;

    fn encode(&self) -> Vec<u8> {
        let mut b = frame::builder();
        let Request::LocalRecipient(l) = self;
        b.init_root::<request::Builder>()
            .set_local_recipient(clip(l, 256));
        frame::finish(&b)
    }

    fn decode(f: &[u8], fds: Vec<OwnedFd>) -> Result<Self, Violation> {
        no_fds(&fds)?;
        let msg = frame::open(f, Self::MAX_FRAME)?;
        let r = msg.get_root::<request::Reader>()?;
        Ok(Request::LocalRecipient(text(
            r.get_local_recipient(),
            "localRecipient",
            256,
        )?))
    }
}

impl Message for Reply {
    const MAX_FRAME: usize = 1024;

    fn encode(&self) -> Vec<u8> {
        let mut b = frame::builder();
        {
            let mut r = b.init_root::<reply::Builder>();
            match self {
                Reply::Found(x) => r.set_found(*x),
                Reply::Tempfail(s) => r.set_tempfail(clip(s, 512)),
            }
        }
        frame::finish(&b)
    }

    fn decode(f: &[u8], fds: Vec<OwnedFd>) -> Result<Self, Violation> {
        no_fds(&fds)?;
        let msg = frame::open(f, Self::MAX_FRAME)?;
        let r = msg.get_root::<reply::Reader>()?;
        Ok(match r.which()? {
            reply::Found(x) => Reply::Found(x),
            reply::Tempfail(s) => Reply::Tempfail(text(s, "tempfail", 512)?),
        })
    }
}
