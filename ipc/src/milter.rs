//! smtpd, cleanup -> milter (schema: milter.capnp).
use std::os::fd::OwnedFd;

use crate::channel::{Message, no_fds};
use crate::frame::{self, Violation, clip, list_len, range, text};
use crate::generated::milter_capnp::{reply, request};

pub const EDGE: &str = "milter";
pub const VERSION: u32 = crate::generated::milter_capnp::VERSION;
crate::edge!(
    /// This edge, for `edge::open`, `edge::accept` and `edge::serve`.
    Link,
    Request,
    Reply
);
/// Longest Milter entry (its key in the configuration).
pub const MAX_MILTER: usize = 1024;
/// Most macros, and their longest name and value.
pub const MAX_MACROS: usize = 64;
pub const MAX_MACRO_NAME: usize = 64;
pub const MAX_MACRO_VALUE: usize = 1024;
/// Longest client name, address, HELO, and MAIL or RCPT argument.
pub const MAX_ARG: usize = 1024;
/// Most MAIL arguments (the address and its ESMTP parameters).
pub const MAX_MAIL_ARGS: usize = 16;
/// Longest content chunk.
pub const MAX_CHUNK: usize = 64 * 1024;
/// Longest edit: one Milter packet (proto's MAX_PACKET, with its header).
pub const MAX_EDIT: usize = 65536 + 1024 + 5;
/// Most reply lines, and the longest.
pub const MAX_REPLY_LINES: usize = 16;
pub const MAX_REPLY_LINE: usize = 512;
const MAX_REASON: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    pub milter: String,
    pub macros: Vec<(String, String)>,
    pub host: String,
    pub addr: String,
    pub port: u16,
    pub helo: String,
    pub mail: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Open(Open),
    Rcpt(String),
    Content(Vec<u8>),
    End,
    Session(Open),
    Helo(String),
    Mail(Vec<String>),
    Macros(Vec<(String, String)>),
    Attach {
        ticket: u64,
        milter: String,
    },
    /// smtpd's session is over; the channel may serve another.
    Close,
}

/// How the Milter decided (or, after a failure, its default action).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Continue = 0,
    Accept = 1,
    Discard = 2,
    Reject = 3,
    Tempfail = 4,
    Shutdown = 5,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub outcome: Outcome,
    /// The reply lines ("550 5.7.1 text"), empty for the default text.
    pub reply: Vec<String>,
    pub quarantine: String,
    pub failure: String,
    /// A session's opening: what cleanup attaches with.
    pub ticket: u64,
}

impl Verdict {
    pub fn of(outcome: Outcome) -> Verdict {
        Verdict {
            outcome,
            reply: Vec::new(),
            quarantine: String::new(),
            failure: String::new(),
            ticket: 0,
        }
    }
}

fn set_macros(
    mut l: capnp::struct_list::Builder<'_, crate::generated::milter_capnp::macro_::Owned>,
    m: &[(String, String)],
) {
    for (i, (name, value)) in m.iter().take(MAX_MACROS).enumerate() {
        let mut b = l.reborrow().get(i as u32);
        b.set_name(clip(name, MAX_MACRO_NAME));
        b.set_value(clip(value, MAX_MACRO_VALUE));
    }
}

fn get_macros(
    l: capnp::struct_list::Reader<'_, crate::generated::milter_capnp::macro_::Owned>,
) -> Result<Vec<(String, String)>, Violation> {
    list_len(l.len(), "macros", MAX_MACROS)?;
    let mut macros = Vec::with_capacity(l.len() as usize);
    for m in l.iter() {
        macros.push((
            text(m.get_name(), "macro.name", MAX_MACRO_NAME)?,
            text(m.get_value(), "macro.value", MAX_MACRO_VALUE)?,
        ));
    }
    Ok(macros)
}

fn set_args(mut l: capnp::text_list::Builder<'_>, a: &[String]) {
    for (i, t) in a.iter().take(MAX_MAIL_ARGS).enumerate() {
        l.set(i as u32, clip(t, MAX_ARG));
    }
}

fn get_args(
    l: capnp::text_list::Reader<'_>,
    field: &'static str,
) -> Result<Vec<String>, Violation> {
    list_len(l.len(), field, MAX_MAIL_ARGS)?;
    l.iter().map(|t| text(t, field, MAX_ARG)).collect()
}

fn set_open(mut ob: crate::generated::milter_capnp::open::Builder<'_>, o: &Open) {
    ob.set_milter(clip(&o.milter, MAX_MILTER));
    ob.set_host(clip(&o.host, MAX_ARG));
    ob.set_addr(clip(&o.addr, MAX_ARG));
    ob.set_port(o.port);
    ob.set_helo(clip(&o.helo, MAX_ARG));
    set_macros(
        ob.reborrow()
            .init_macros(o.macros.len().min(MAX_MACROS) as u32),
        &o.macros,
    );
    set_args(
        ob.init_mail(o.mail.len().min(MAX_MAIL_ARGS) as u32),
        &o.mail,
    );
}

fn get_open(o: crate::generated::milter_capnp::open::Reader<'_>) -> Result<Open, Violation> {
    Ok(Open {
        milter: text(o.get_milter(), "milter", MAX_MILTER)?,
        macros: get_macros(o.get_macros()?)?,
        host: text(o.get_host(), "host", MAX_ARG)?,
        addr: text(o.get_addr(), "addr", MAX_ARG)?,
        port: o.get_port(),
        helo: text(o.get_helo(), "helo", MAX_ARG)?,
        mail: get_args(o.get_mail()?, "mail")?,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Verdict(Verdict),
    Edit(Vec<u8>),
}

fn line(t: String, field: &'static str) -> Result<String, Violation> {
    if t.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f) {
        return Err(Violation::Field {
            field,
            why: "control characters".into(),
        });
    }
    Ok(t)
}

impl Message for Request {
    const MAX_FRAME: usize = MAX_CHUNK + 4096;

    fn encode(&self) -> Vec<u8> {
        let mut b = frame::builder();
        {
            let mut r = b.init_root::<request::Builder>();
            match self {
                Request::Open(o) => set_open(r.init_open(), o),
                Request::Session(o) => set_open(r.init_session(), o),
                Request::Helo(h) => r.set_helo(clip(h, MAX_ARG)),
                Request::Mail(a) => set_args(r.init_mail(a.len().min(MAX_MAIL_ARGS) as u32), a),
                Request::Macros(m) => set_macros(r.init_macros(m.len().min(MAX_MACROS) as u32), m),
                Request::Attach { ticket, milter } => {
                    let mut ab = r.init_attach();
                    ab.set_ticket(*ticket);
                    ab.set_milter(clip(milter, MAX_MILTER));
                }
                Request::Close => r.set_close(()),
                Request::Rcpt(a) => r.set_rcpt(clip(a, MAX_ARG)),
                Request::Content(d) => r.set_content(&d[..d.len().min(MAX_CHUNK)]),
                Request::End => r.set_end(()),
            }
        }
        frame::finish(&b)
    }

    fn decode(f: &[u8], fds: Vec<OwnedFd>) -> Result<Self, Violation> {
        no_fds(&fds)?;
        let msg = frame::open(f, Self::MAX_FRAME)?;
        let r = msg.get_root::<request::Reader>()?;
        Ok(match r.which()? {
            request::Open(o) => Request::Open(get_open(o?)?),
            request::Session(o) => Request::Session(get_open(o?)?),
            request::Helo(t) => Request::Helo(text(t, "helo", MAX_ARG)?),
            request::Mail(l) => Request::Mail(get_args(l?, "mail")?),
            request::Macros(l) => Request::Macros(get_macros(l?)?),
            request::Attach(a) => {
                let a = a?;
                Request::Attach {
                    ticket: a.get_ticket(),
                    milter: text(a.get_milter(), "attach.milter", MAX_MILTER)?,
                }
            }
            request::Close(()) => Request::Close,
            request::Rcpt(t) => Request::Rcpt(text(t, "rcpt", MAX_ARG)?),
            request::Content(d) => Request::Content(frame::data(d, "content", MAX_CHUNK)?),
            request::End(()) => Request::End,
        })
    }
}

impl Message for Reply {
    const MAX_FRAME: usize = MAX_EDIT + 1024;

    fn encode(&self) -> Vec<u8> {
        let mut b = frame::builder();
        {
            let mut r = b.init_root::<reply::Builder>();
            match self {
                Reply::Verdict(v) => {
                    let mut vb = r.init_verdict();
                    vb.set_outcome(v.outcome as u8);
                    vb.set_quarantine(clip(&v.quarantine, MAX_REASON));
                    vb.set_failure(clip(&v.failure, MAX_REASON));
                    vb.set_ticket(v.ticket);
                    let n = v.reply.len().min(MAX_REPLY_LINES);
                    let mut l = vb.init_reply(n as u32);
                    for (i, t) in v.reply.iter().take(n).enumerate() {
                        l.set(i as u32, clip(t, MAX_REPLY_LINE));
                    }
                }
                Reply::Edit(d) => r.set_edit(&d[..d.len().min(MAX_EDIT)]),
            }
        }
        frame::finish(&b)
    }

    fn decode(f: &[u8], fds: Vec<OwnedFd>) -> Result<Self, Violation> {
        no_fds(&fds)?;
        let msg = frame::open(f, Self::MAX_FRAME)?;
        let r = msg.get_root::<reply::Reader>()?;
        Ok(match r.which()? {
            reply::Verdict(v) => {
                let v = v?;
                let outcome = match range(v.get_outcome().into(), "verdict.outcome", 0, 5)? {
                    0 => Outcome::Continue,
                    1 => Outcome::Accept,
                    2 => Outcome::Discard,
                    3 => Outcome::Reject,
                    4 => Outcome::Tempfail,
                    _ => Outcome::Shutdown,
                };
                let l = v.get_reply()?;
                list_len(l.len(), "verdict.reply", MAX_REPLY_LINES)?;
                let reply = l
                    .iter()
                    .map(|t| line(text(t, "verdict.reply", MAX_REPLY_LINE)?, "verdict.reply"))
                    .collect::<Result<Vec<_>, _>>()?;
                Reply::Verdict(Verdict {
                    outcome,
                    reply,
                    quarantine: text(v.get_quarantine(), "verdict.quarantine", MAX_REASON)?,
                    failure: text(v.get_failure(), "verdict.failure", MAX_REASON)?,
                    ticket: v.get_ticket(),
                })
            }
            reply::Edit(d) => Reply::Edit(frame::data(d, "edit", MAX_EDIT)?),
        })
    }
}
