//! smtpd and smtp -> broker lookups (schema: smtpd_broker.capnp).
use std::os::fd::OwnedFd;

use crate::channel::{Message, no_fds};
use crate::frame::{self, Violation, clip, list_len, text};
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
/// Keys of one access lookup: an address with its parent domains, or a
/// client name, its parents and its address with octets stripped.
pub const MAX_ACCESS_KEYS: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// smtpd_sender_login_maps: sender address -> logins that may use it.
    SenderLogin,
    /// smtp_sasl_password_maps: next hop -> `user:password`.
    SaslPassword,
    /// relay_recipient_maps: is this recipient at a relay domain valid?
    RelayRecipient,
    /// virtual_alias_maps: does this address have an alias? (The whole
    /// address; the broker tries Postfix's keys.)
    VirtualAlias,
    /// virtual_alias_domains: is this domain one?
    VirtualAliasDomain,
    /// virtual_mailbox_maps, as VirtualAlias.
    VirtualMailbox,
    /// virtual_mailbox_domains.
    VirtualMailboxDomain,
    /// smtp_generic_maps: the address an address becomes (smtp).
    Generic,
    /// smtp_tls_policy_maps: next hop -> TLS policy.
    TlsPolicy,
    /// lmtp_tls_policy_maps: LMTP next hop (`host:port`) -> TLS policy.
    LmtpTlsPolicy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    LocalRecipient(String),
    Lookup(Table, String),
    /// An access map of smtpd's restrictions: the first of `keys` found
    /// (`keys[0]` is the full key; pattern tables get only that one).
    Access {
        map: String,
        keys: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// LocalRecipient's answer; for Lookup, Found(false) is "not found".
    Found(bool),
    Tempfail(String),
    Value(String),
    /// Access's answer: the index of the key found, and its value.
    Hit(u32, String),
}

fn wire(t: Table) -> WireTable {
    match t {
        Table::SenderLogin => WireTable::SenderLogin,
        Table::SaslPassword => WireTable::SaslPassword,
        Table::RelayRecipient => WireTable::RelayRecipient,
        Table::VirtualAlias => WireTable::VirtualAlias,
        Table::VirtualAliasDomain => WireTable::VirtualAliasDomain,
        Table::VirtualMailbox => WireTable::VirtualMailbox,
        Table::VirtualMailboxDomain => WireTable::VirtualMailboxDomain,
        Table::Generic => WireTable::Generic,
        Table::TlsPolicy => WireTable::TlsPolicy,
        Table::LmtpTlsPolicy => WireTable::LmtpTlsPolicy,
    }
}

impl Message for Request {
    const MAX_FRAME: usize = 20 * 1024;

    fn encode(&self) -> Vec<u8> {
        let mut b = frame::builder();
        {
            let mut r = b.init_root::<request::Builder>();
            match self {
                Request::LocalRecipient(l) => r.set_local_recipient(clip(l, 256)),
                Request::Lookup(t, k) => {
                    let mut g = r.init_lookup();
                    g.set_table(wire(*t));
                    g.set_query(clip(k, KEY));
                }
                Request::Access { map, keys } => {
                    let mut g = r.init_access();
                    g.set_map(clip(map, KEY));
                    let n = keys.len().min(MAX_ACCESS_KEYS);
                    let mut l = g.init_candidates(n as u32);
                    for (i, k) in keys.iter().take(n).enumerate() {
                        l.set(i as u32, clip(k, KEY));
                    }
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
                    WireTable::RelayRecipient => Table::RelayRecipient,
                    WireTable::VirtualAlias => Table::VirtualAlias,
                    WireTable::VirtualAliasDomain => Table::VirtualAliasDomain,
                    WireTable::VirtualMailbox => Table::VirtualMailbox,
                    WireTable::VirtualMailboxDomain => Table::VirtualMailboxDomain,
                    WireTable::Generic => Table::Generic,
                    WireTable::TlsPolicy => Table::TlsPolicy,
                    WireTable::LmtpTlsPolicy => Table::LmtpTlsPolicy,
                },
                text(g.get_query(), "lookup.query", KEY)?,
            ),
            request::Access(g) => {
                let l = g.get_candidates()?;
                list_len(l.len(), "access.candidates", MAX_ACCESS_KEYS)?;
                let mut keys = Vec::with_capacity(l.len() as usize);
                for k in l.iter() {
                    keys.push(text(k, "access.candidates", KEY)?);
                }
                Request::Access {
                    map: text(g.get_map(), "access.map", KEY)?,
                    keys,
                }
            }
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
                Reply::Hit(i, v) => {
                    let mut g = r.init_hit();
                    g.set_index(*i);
                    g.set_result(clip(v, VALUE));
                }
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
            reply::Hit(g) => Reply::Hit(g.get_index(), text(g.get_result(), "hit.result", VALUE)?),
        })
    }
}
