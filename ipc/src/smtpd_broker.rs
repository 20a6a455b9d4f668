//! smtpd and smtp -> broker lookups (schema: smtpd_broker.capnp).
use std::os::fd::OwnedFd;

use crate::channel::{Message, no_fds};
use crate::frame::{self, Violation, clip, text};
use crate::generated::smtpd_broker_capnp::{Table as WireTable, reply, request};

pub const EDGE: &str = "smtpd-broker";
pub const VERSION: u32 = crate::generated::smtpd_broker_capnp::VERSION;
crate::edge!(
    /// This edge, for `edge::open`, `edge::accept` and `edge::serve`.
    Link,
    Request,
    Reply
);
const KEY: usize = 512;
const VALUE: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// smtpd_sender_login_maps: sender address -> logins that may use it.
    SenderLogin,
    /// smtp_sasl_password_maps: next hop -> `user:password`.
    SaslPassword,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    LocalRecipient(String),
    Lookup(Table, String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// LocalRecipient's answer; for Lookup, Found(false) is "not found".
    Found(bool),
    Tempfail(String),
    Value(String),
}

impl Message for Request {
    const MAX_FRAME: usize = 1024;

    fn encode(&self) -> Vec<u8> {
        let mut b = frame::builder();
        {
            let mut r = b.init_root::<request::Builder>();
            match self {
                Request::LocalRecipient(l) => r.set_local_recipient(clip(l, 256)),
                Request::Lookup(t, k) => {
                    let mut g = r.init_lookup();
                    g.set_table(match t {
                        Table::SenderLogin => WireTable::SenderLogin,
                        Table::SaslPassword => WireTable::SaslPassword,
                    });
                    g.set_query(clip(k, KEY));
                }
            }
        }
        frame::finish(&b)
    }

    fn decode(f: &[u8], fds: Vec<OwnedFd>) -> Result<Self, Violation> {
        no_fds(&fds)?;
        let msg = frame::open(f, Self::MAX_FRAME)?;
        let r = msg.get_root::<request::Reader>()?;
        Ok(match r.which()? {
            request::LocalRecipient(l) => Request::LocalRecipient(text(l, "localRecipient", 256)?),
            request::Lookup(g) => Request::Lookup(
                match g.get_table()? {
                    WireTable::SenderLogin => Table::SenderLogin,
                    WireTable::SaslPassword => Table::SaslPassword,
                },
                text(g.get_query(), "lookup.query", KEY)?,
            ),
        })
    }
}

impl Message for Reply {
    const MAX_FRAME: usize = 2048;

    fn encode(&self) -> Vec<u8> {
        let mut b = frame::builder();
        {
            let mut r = b.init_root::<reply::Builder>();
            match self {
                Reply::Found(x) => r.set_found(*x),
                Reply::Tempfail(s) => r.set_tempfail(clip(s, 512)),
                Reply::Value(v) => r.set_value(clip(v, VALUE)),
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
            reply::Value(v) => Reply::Value(text(v, "value", VALUE)?),
        })
    }
}
