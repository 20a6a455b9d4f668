//! smtp -> sts: a recipient domain's MTA-STS policy (schema: sts.capnp).
use std::os::fd::OwnedFd;

use crate::channel::{Message, no_fds};
use crate::frame::{self, Violation, clip, list_len, text};
use crate::generated::sts_capnp::{Mode as WireMode, reply, request};

pub const EDGE: &str = "sts";
pub const VERSION: u32 = crate::generated::sts_capnp::VERSION;
crate::edge!(
    /// This edge, for `edge::open`, `edge::accept` and `edge::serve`.
    Link,
    Request,
    Reply
);
const NAME: usize = 255;
pub const MAX_MX: usize = 64;
pub const MAX_ID: usize = 32;
pub const MAX_WHY: usize = 512;
pub const MAX_AGE: u32 = 31_557_600;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The MTA-STS policy of a next-hop domain.
    Policy(String),
    /// A TLS session for TLS-RPT.
    Count(Count),
}

/// One TLS session (or attempt) to a domain with a policy, for TLS-RPT.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Count {
    pub domain: String,
    /// `sts` or `tlsa`.
    pub kind: String,
    pub strings: Vec<String>,
    pub mx: Vec<String>,
    pub success: bool,
    /// RFC 8460 4.3's result type, for a failure.
    pub result_type: String,
    pub sending_ip: String,
    pub mx_host: String,
    pub receiving_ip: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Enforce,
    Testing,
    None,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub mode: Mode,
    pub mx: Vec<String>,
    pub max_age: u32,
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Policy(Policy),
    /// No policy applies: why ("" when the domain publishes none).
    None(String),
    /// A count was taken.
    Counted,
}

fn domain(
    t: capnp::Result<capnp::text::Reader<'_>>,
    field: &'static str,
) -> Result<String, Violation> {
    let domain = text(t, field, NAME)?;
    if domain.is_empty() || domain.contains(' ') {
        return Err(Violation::Field {
            field,
            why: "not a domain name".into(),
        });
    }
    Ok(domain)
}

fn texts(
    l: capnp::Result<capnp::text_list::Reader<'_>>,
    field: &'static str,
) -> Result<Vec<String>, Violation> {
    let l = l?;
    list_len(l.len(), field, MAX_MX)?;
    let mut out = Vec::new();
    for t in l.iter() {
        out.push(text(t, field, NAME)?);
    }
    Ok(out)
}

impl Message for Request {
    const MAX_FRAME: usize = 2 * MAX_MX * (NAME + 16) + 4096;

    fn encode(&self) -> Vec<u8> {
        let mut b = frame::builder();
        {
            let mut r = b.init_root::<request::Builder>();
            match self {
                Request::Policy(d) => r.set_domain(clip(d, NAME)),
                Request::Count(c) => {
                    let mut w = r.init_count();
                    w.set_domain(clip(&c.domain, NAME));
                    w.set_kind(clip(&c.kind, 16));
                    w.set_success(c.success);
                    w.set_result_type(clip(&c.result_type, 64));
                    w.set_sending_ip(clip(&c.sending_ip, 64));
                    w.set_mx_host(clip(&c.mx_host, NAME));
                    w.set_receiving_ip(clip(&c.receiving_ip, 64));
                    let n = c.strings.len().min(MAX_MX);
                    let mut l = w.reborrow().init_strings(n as u32);
                    for (i, s) in c.strings.iter().take(n).enumerate() {
                        l.set(i as u32, clip(s, NAME));
                    }
                    let n = c.mx.len().min(MAX_MX);
                    let mut l = w.init_mx(n as u32);
                    for (i, s) in c.mx.iter().take(n).enumerate() {
                        l.set(i as u32, clip(s, NAME));
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
            request::Domain(t) => Request::Policy(domain(t, "domain")?),
            request::Count(c) => {
                let c = c?;
                let kind = text(c.get_kind(), "kind", 16)?;
                if kind != "sts" && kind != "tlsa" {
                    return Err(Violation::Field {
                        field: "kind",
                        why: "neither sts nor tlsa".into(),
                    });
                }
                Request::Count(Count {
                    domain: domain(c.get_domain(), "count.domain")?,
                    kind,
                    strings: texts(c.get_strings(), "count.strings")?,
                    mx: texts(c.get_mx(), "count.mx")?,
                    success: c.get_success(),
                    result_type: text(c.get_result_type(), "resultType", 64)?,
                    sending_ip: text(c.get_sending_ip(), "sendingIp", 64)?,
                    mx_host: text(c.get_mx_host(), "mxHost", NAME)?,
                    receiving_ip: text(c.get_receiving_ip(), "receivingIp", 64)?,
                })
            }
        })
    }
}

impl Message for Reply {
    const MAX_FRAME: usize = MAX_MX * (NAME + 16) + 4096;

    fn encode(&self) -> Vec<u8> {
        let mut b = frame::builder();
        {
            let mut r = b.init_root::<reply::Builder>();
            match self {
                Reply::Policy(p) => {
                    let mut w = r.init_policy();
                    w.set_mode(match p.mode {
                        Mode::Enforce => WireMode::Enforce,
                        Mode::Testing => WireMode::Testing,
                        Mode::None => WireMode::None,
                    });
                    w.set_max_age(p.max_age.min(MAX_AGE));
                    w.set_id(clip(&p.id, MAX_ID));
                    let n = p.mx.len().min(MAX_MX);
                    let mut l = w.init_mx(n as u32);
                    for (i, m) in p.mx.iter().take(n).enumerate() {
                        l.set(i as u32, clip(m, NAME));
                    }
                }
                Reply::None(why) => r.set_none(clip(why, MAX_WHY)),
                Reply::Counted => r.set_counted(()),
            }
        }
        frame::finish(&b)
    }

    fn decode(f: &[u8], fds: Vec<OwnedFd>) -> Result<Self, Violation> {
        no_fds(&fds)?;
        let msg = frame::open(f, Self::MAX_FRAME)?;
        let r = msg.get_root::<reply::Reader>()?;
        Ok(match r.which()? {
            reply::Policy(p) => {
                let p = p?;
                let l = p.get_mx()?;
                list_len(l.len(), "mx", MAX_MX)?;
                let mut mx = Vec::new();
                for t in l.iter() {
                    mx.push(text(t, "mx", NAME)?);
                }
                let max_age = p.get_max_age();
                if max_age > MAX_AGE {
                    return Err(Violation::Field {
                        field: "maxAge",
                        why: "over a year".into(),
                    });
                }
                Reply::Policy(Policy {
                    mode: match p.get_mode()? {
                        WireMode::Enforce => Mode::Enforce,
                        WireMode::Testing => Mode::Testing,
                        WireMode::None => Mode::None,
                    },
                    mx,
                    max_age,
                    id: text(p.get_id(), "id", MAX_ID)?,
                })
            }
            reply::None(t) => Reply::None(text(t, "none", MAX_WHY)?),
            reply::Counted(()) => Reply::Counted,
        })
    }
}
