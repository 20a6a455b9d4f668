//! smtp and smtpd -> resolver (schema: resolver.capnp).
use std::os::fd::OwnedFd;

use crate::channel::{Message, no_fds};
use crate::frame::{self, Violation, clip, list_len, text};
use crate::generated::resolver_capnp::{reply, request};

pub const EDGE: &str = "resolver";
pub const VERSION: u32 = crate::generated::resolver_capnp::VERSION;
crate::edge!(
    /// This edge, for `edge::open`, `edge::accept` and `edge::serve`.
    Link,
    Request,
    Reply
);
pub const MAX_ANSWERS: usize = 64;
const NAME: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Mx(String),
    Addresses(String),
    Ptr(String),
    /// A records only (DNS list queries).
    A(String),
    Txt(String),
    /// Name servers (answered as `Names`).
    Ns(String),
    /// A records with their TTL (answered as `Listed`): postscreen's DNS
    /// lists, whose results it keeps as long as DNS says.
    Dnsbl(String),
    /// DNSSEC-aware lookups (smtp_dns_support_level = dnssec), asked with
    /// the DO bit; "secure" is the validating name server's AD bit.
    /// MX records (answered as `MxSec`, `NullMx`, `NotFound`).
    MxSec(String),
    /// A and AAAA records (answered as `HostSec`).
    HostSec(String),
    /// TLSA records at `_port._tcp.host` (answered as `Tlsa`).
    Tlsa(String),
    /// Whether the name's own CNAME record is secure (answered as
    /// `SecureCname`; `NotFound` when it is no alias).
    CnameSec(String),
}

/// One TLSA record (RFC 6698). Usage 255 stands for a record too large
/// to pass on: it is never usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tlsa {
    pub usage: u8,
    pub selector: u8,
    pub matching: u8,
    pub data: Vec<u8>,
}

/// Most TLSA records passed on, and the longest data of one (a full
/// certificate, matching type 0).
pub const MAX_TLSA: usize = 32;
pub const MAX_TLSA_DATA: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Mx(Vec<(u16, String)>),
    Addresses(Vec<std::net::IpAddr>),
    Names(Vec<String>),
    NotFound,
    Tempfail(String),
    NullMx,
    /// TXT strings, printable ASCII.
    Texts(Vec<String>),
    /// A DNS list's answer: its addresses (none: not listed) and the
    /// TTL of the answer, or of the negative answer (0: unknown).
    Listed {
        addrs: Vec<std::net::Ipv4Addr>,
        ttl: u32,
    },
    MxSec {
        secure: bool,
        mx: Vec<(u16, String)>,
    },
    /// A host's addresses; `name` is the name they belong to after any
    /// CNAMEs (the host's own name when there were none).
    HostSec {
        secure: bool,
        name: String,
        addrs: Vec<std::net::IpAddr>,
    },
    Tlsa {
        secure: bool,
        records: Vec<Tlsa>,
    },
    SecureCname(bool),
}

/// Longest TXT record passed on (its strings joined): an RSA-4096 DKIM
/// key record is about 750 bytes, an RSA-8192 one about 1,450.
pub const MAX_TXT: usize = 2048;

fn name(
    t: capnp::Result<capnp::text::Reader<'_>>,
    field: &'static str,
) -> Result<String, Violation> {
    let s = text(t, field, NAME)?;
    if s.is_empty() || s.contains(' ') {
        return Err(Violation::Field {
            field,
            why: "not a host name".into(),
        });
    }
    Ok(s)
}

impl Message for Request {
    const MAX_FRAME: usize = 1024;

    fn encode(&self) -> Vec<u8> {
        let mut b = frame::builder();
        {
            let mut r = b.init_root::<request::Builder>();
            match self {
                Request::Mx(d) => r.set_mx(clip(d, NAME)),
                Request::Addresses(h) => r.set_addresses(clip(h, NAME)),
                Request::Ptr(ip) => r.set_ptr(clip(ip, 64)),
                Request::A(n) => r.set_a(clip(n, NAME)),
                Request::Txt(n) => r.set_txt(clip(n, NAME)),
                Request::Ns(n) => r.set_ns(clip(n, NAME)),
                Request::Dnsbl(n) => r.set_dnsbl(clip(n, NAME)),
                Request::MxSec(n) => r.set_mx_sec(clip(n, NAME)),
                Request::HostSec(n) => r.set_host_sec(clip(n, NAME)),
                Request::Tlsa(n) => r.set_tlsa(clip(n, NAME)),
                Request::CnameSec(n) => r.set_cname_sec(clip(n, NAME)),
            }
        }
        frame::finish(&b)
    }

    fn decode(f: &[u8], fds: Vec<OwnedFd>) -> Result<Self, Violation> {
        no_fds(&fds)?;
        let msg = frame::open(f, Self::MAX_FRAME)?;
        let r = msg.get_root::<request::Reader>()?;
        Ok(match r.which()? {
            request::Mx(t) => Request::Mx(name(t, "mx")?),
            request::Addresses(t) => Request::Addresses(name(t, "addresses")?),
            request::Ptr(t) => {
                let ip = text(t, "ptr", 64)?;
                ip.parse::<std::net::IpAddr>()
                    .map_err(|_| Violation::Field {
                        field: "ptr",
                        why: "not an IP address".into(),
                    })?;
                Request::Ptr(ip)
            }
            request::A(t) => Request::A(name(t, "a")?),
            request::Txt(t) => Request::Txt(name(t, "txt")?),
            request::Ns(t) => Request::Ns(name(t, "ns")?),
            request::Dnsbl(t) => Request::Dnsbl(name(t, "dnsbl")?),
            request::MxSec(t) => Request::MxSec(name(t, "mxSec")?),
            request::HostSec(t) => Request::HostSec(name(t, "hostSec")?),
            request::Tlsa(t) => Request::Tlsa(name(t, "tlsa")?),
            request::CnameSec(t) => Request::CnameSec(name(t, "cnameSec")?),
        })
    }
}

impl Message for Reply {
    /// 64 TXT records of the longest kind, with room for framing.
    const MAX_FRAME: usize = MAX_ANSWERS * (MAX_TXT + 16) + 4096;

    fn encode(&self) -> Vec<u8> {
        let mut b = frame::builder();
        {
            let mut r = b.init_root::<reply::Builder>();
            match self {
                Reply::Mx(list) => {
                    let n = list.len().min(MAX_ANSWERS);
                    let mut l = r.init_mx(n as u32);
                    for (i, (p, h)) in list.iter().take(n).enumerate() {
                        let mut e = l.reborrow().get(i as u32);
                        e.set_preference(*p);
                        e.set_exchange(clip(h, NAME));
                    }
                }
                Reply::Addresses(list) => {
                    let n = list.len().min(MAX_ANSWERS);
                    let mut l = r.init_addresses(n as u32);
                    for (i, a) in list.iter().take(n).enumerate() {
                        l.set(i as u32, a.to_string().as_str());
                    }
                }
                Reply::Names(list) => {
                    let n = list.len().min(MAX_ANSWERS);
                    let mut l = r.init_names(n as u32);
                    for (i, a) in list.iter().take(n).enumerate() {
                        l.set(i as u32, clip(a, NAME));
                    }
                }
                Reply::NotFound => r.set_not_found(()),
                Reply::Tempfail(s) => r.set_tempfail(clip(s, 512)),
                Reply::NullMx => r.set_null_mx(()),
                Reply::Texts(list) => {
                    let n = list.len().min(MAX_ANSWERS);
                    let mut l = r.init_texts(n as u32);
                    for (i, a) in list.iter().take(n).enumerate() {
                        l.set(i as u32, clip(a, MAX_TXT));
                    }
                }
                Reply::Listed { addrs, ttl } => {
                    let mut b = r.init_listed();
                    b.set_ttl(*ttl);
                    let n = addrs.len().min(MAX_ANSWERS);
                    let mut l = b.init_addresses(n as u32);
                    for (i, a) in addrs.iter().take(n).enumerate() {
                        l.set(i as u32, a.to_string().as_str());
                    }
                }
                Reply::MxSec { secure, mx } => {
                    let mut b = r.init_mx_sec();
                    b.set_secure(*secure);
                    let n = mx.len().min(MAX_ANSWERS);
                    let mut l = b.init_mx(n as u32);
                    for (i, (p, h)) in mx.iter().take(n).enumerate() {
                        let mut e = l.reborrow().get(i as u32);
                        e.set_preference(*p);
                        e.set_exchange(clip(h, NAME));
                    }
                }
                Reply::HostSec {
                    secure,
                    name,
                    addrs,
                } => {
                    let mut b = r.init_host_sec();
                    b.set_secure(*secure);
                    b.set_name(clip(name, NAME));
                    let n = addrs.len().min(MAX_ANSWERS);
                    let mut l = b.init_addresses(n as u32);
                    for (i, a) in addrs.iter().take(n).enumerate() {
                        l.set(i as u32, a.to_string().as_str());
                    }
                }
                Reply::Tlsa { secure, records } => {
                    let mut b = r.init_tlsa();
                    b.set_secure(*secure);
                    let n = records.len().min(MAX_TLSA);
                    let mut l = b.init_records(n as u32);
                    for (i, t) in records.iter().take(n).enumerate() {
                        let mut e = l.reborrow().get(i as u32);
                        let big = t.data.len() > MAX_TLSA_DATA;
                        e.set_usage(if big { 255 } else { t.usage });
                        e.set_selector(t.selector);
                        e.set_matching(t.matching);
                        e.set_data(if big { &[] } else { &t.data });
                    }
                }
                Reply::SecureCname(secure) => r.set_secure_cname(*secure),
            }
        }
        frame::finish(&b)
    }

    fn decode(f: &[u8], fds: Vec<OwnedFd>) -> Result<Self, Violation> {
        no_fds(&fds)?;
        let msg = frame::open(f, Self::MAX_FRAME)?;
        let r = msg.get_root::<reply::Reader>()?;
        Ok(match r.which()? {
            reply::Mx(l) => {
                let l = l?;
                list_len(l.len(), "mx", MAX_ANSWERS)?;
                let mut out = Vec::new();
                for e in l.iter() {
                    out.push((e.get_preference(), name(e.get_exchange(), "mx.exchange")?));
                }
                Reply::Mx(out)
            }
            reply::Addresses(l) => {
                let l = l?;
                list_len(l.len(), "addresses", MAX_ANSWERS)?;
                let mut out = Vec::new();
                for t in l.iter() {
                    let s = text(t, "address", 64)?;
                    out.push(s.parse().map_err(|_| Violation::Field {
                        field: "address",
                        why: "not an IP address".into(),
                    })?);
                }
                Reply::Addresses(out)
            }
            reply::Names(l) => {
                let l = l?;
                list_len(l.len(), "names", MAX_ANSWERS)?;
                let mut out = Vec::new();
                for t in l.iter() {
                    out.push(name(t, "name")?);
                }
                Reply::Names(out)
            }
            reply::NotFound(()) => Reply::NotFound,
            reply::Tempfail(t) => Reply::Tempfail(text(t, "tempfail", 512)?),
            reply::NullMx(()) => Reply::NullMx,
            reply::Texts(l) => {
                let l = l?;
                list_len(l.len(), "texts", MAX_ANSWERS)?;
                let mut out = Vec::new();
                for t in l.iter() {
                    out.push(text(t, "texts", MAX_TXT)?);
                }
                Reply::Texts(out)
            }
            reply::Listed(b) => {
                let b = b?;
                let l = b.get_addresses()?;
                list_len(l.len(), "listed", MAX_ANSWERS)?;
                let mut addrs = Vec::new();
                for t in l.iter() {
                    let s = text(t, "listed.address", 64)?;
                    addrs.push(s.parse().map_err(|_| Violation::Field {
                        field: "listed.address",
                        why: "not an IPv4 address".into(),
                    })?);
                }
                Reply::Listed {
                    addrs,
                    ttl: b.get_ttl(),
                }
            }
            reply::MxSec(b) => {
                let b = b?;
                let l = b.get_mx()?;
                list_len(l.len(), "mxSec", MAX_ANSWERS)?;
                let mut mx = Vec::new();
                for e in l.iter() {
                    mx.push((
                        e.get_preference(),
                        name(e.get_exchange(), "mxSec.exchange")?,
                    ));
                }
                Reply::MxSec {
                    secure: b.get_secure(),
                    mx,
                }
            }
            reply::HostSec(b) => {
                let b = b?;
                let l = b.get_addresses()?;
                list_len(l.len(), "hostSec", MAX_ANSWERS)?;
                let mut addrs = Vec::new();
                for t in l.iter() {
                    let s = text(t, "hostSec.address", 64)?;
                    addrs.push(s.parse().map_err(|_| Violation::Field {
                        field: "hostSec.address",
                        why: "not an IP address".into(),
                    })?);
                }
                Reply::HostSec {
                    secure: b.get_secure(),
                    name: name(b.get_name(), "hostSec.name")?,
                    addrs,
                }
            }
            reply::Tlsa(b) => {
                let b = b?;
                let l = b.get_records()?;
                list_len(l.len(), "tlsa", MAX_TLSA)?;
                let mut records = Vec::new();
                for e in l.iter() {
                    let data = e.get_data()?;
                    if data.len() > MAX_TLSA_DATA {
                        return Err(Violation::Field {
                            field: "tlsa.data",
                            why: "too long".into(),
                        });
                    }
                    records.push(Tlsa {
                        usage: e.get_usage(),
                        selector: e.get_selector(),
                        matching: e.get_matching(),
                        data: data.to_vec(),
                    });
                }
                Reply::Tlsa {
                    secure: b.get_secure(),
                    records,
                }
            }
            reply::SecureCname(b) => Reply::SecureCname(b),
        })
    }
}
