//! smtpd -> auth: SASL credential checks (schema: auth.capnp).
use std::os::fd::OwnedFd;

use crate::channel::{Message, no_fds};
use crate::frame::{self, Violation, clip, data, text};
use crate::generated::auth_capnp::{reply, request};

pub const EDGE: &str = "auth";
pub const VERSION: u32 = crate::generated::auth_capnp::VERSION;
crate::edge!(
    /// This edge, for `edge::open`, `edge::accept` and `edge::serve`.
    Link,
    Request,
    Reply
);
pub const MAX_USER: usize = 256;
pub const MAX_PASSWORD: usize = 1024;

#[derive(Clone, PartialEq, Eq)]
pub struct Request {
    pub username: String,
    pub password: Vec<u8>,
    pub client: String,
}

/// Never prints the password.
impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .field("client", &self.client)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ok(String),
    Failed,
    Locked(u32),
    Tempfail(String),
}

impl Message for Request {
    const MAX_FRAME: usize = 2048;

    fn encode(&self) -> Vec<u8> {
        let mut b = frame::builder();
        {
            let mut r = b.init_root::<request::Builder>();
            r.set_username(clip(&self.username, MAX_USER));
            r.set_password(&self.password[..self.password.len().min(MAX_PASSWORD)]);
            r.set_client(clip(&self.client, 64));
        }
        frame::finish(&b)
    }

    fn decode(f: &[u8], fds: Vec<OwnedFd>) -> Result<Self, Violation> {
        no_fds(&fds)?;
        let msg = frame::open(f, Self::MAX_FRAME)?;
        let r = msg.get_root::<request::Reader>()?;
        Ok(Request {
            username: text(r.get_username(), "username", MAX_USER)?,
            password: data(r.get_password(), "password", MAX_PASSWORD)?,
            client: text(r.get_client(), "client", 64)?,
        })
    }
}

impl Message for Reply {
    const MAX_FRAME: usize = 1024;

    fn encode(&self) -> Vec<u8> {
        let mut b = frame::builder();
        {
            let mut r = b.init_root::<reply::Builder>();
            match self {
                Reply::Ok(u) => r.set_ok(clip(u, MAX_USER)),
                Reply::Failed => r.set_failed(()),
                Reply::Locked(s) => r.set_locked(*s),
                Reply::Tempfail(t) => r.set_tempfail(clip(t, 256)),
            }
        }
        frame::finish(&b)
    }

    fn decode(f: &[u8], fds: Vec<OwnedFd>) -> Result<Self, Violation> {
        no_fds(&fds)?;
        let msg = frame::open(f, Self::MAX_FRAME)?;
        let r = msg.get_root::<reply::Reader>()?;
        Ok(match r.which()? {
            reply::Ok(u) => Reply::Ok(text(u, "ok", MAX_USER)?),
            reply::Failed(()) => Reply::Failed,
            reply::Locked(s) => Reply::Locked(s),
            reply::Tempfail(t) => Reply::Tempfail(text(t, "tempfail", 256)?),
        })
    }
}
