//! smtpd -> cleanup (schema: smtpd_cleanup.capnp).
use std::os::fd::OwnedFd;

use crate::channel::{Message, no_fds};
use crate::frame::{self, Violation, clip, list_len, range, text};
use crate::generated::smtpd_cleanup_capnp::{reply, request};

/// Every submitter (smtpd, local forwarding, bounce, pickup) speaks this edge.
pub const EDGE: &str = "cleanup";
pub const VERSION: u32 = crate::generated::smtpd_cleanup_capnp::VERSION;
crate::edge!(
    /// This edge, for `edge::open`, `edge::accept` and `edge::serve`.
    Link,
    Request,
    Reply
);
pub const MAX_CHUNK: usize = 64 * 1024;
pub const MAX_BATCH: usize = 100;
pub const MAX_ADDRESS: usize = 512;
const MAX_FRAME: usize = 96 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Client {
    pub name: String,
    pub addr: String,
    pub port: u16,
    pub helo: String,
    pub proto: String,
    pub log_name: String,
    /// `TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)`, or "".
    pub tls: String,
    /// Mail from pickup: the submitting user's uid (for the Received header).
    pub local_uid: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub address: String,
    pub orcpt: String,
    pub notify: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Begin {
    pub client: Client,
    pub sender: String,
    pub ret: u8,
    pub envid: String,
    pub smtputf8: bool,
    pub body_8bit: bool,
    /// sendmail -v: report the first delivery attempt to the sender.
    pub trace: bool,
    /// A remote client (not in local_header_rewrite_clients): cleanup
    /// leaves header addresses alone unless remote_header_rewrite_domain
    /// is set.
    pub remote_headers: bool,
    /// smtpd's Milter session (smtpd_milters), 0 for none.
    pub milter_ticket: u64,
    /// The source's mail may be DKIM-signed: mynetworks, a SASL login,
    /// sendmail, Postern's own notices (and forwards of such mail).
    pub signable: bool,
    /// MAIL FROM ... REQUIRETLS (RFC 8689): deliver only over verified TLS.
    pub requiretls: bool,
}

/// Access-table actions that accept and change the message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Effects {
    pub hold: bool,
    pub redirect: String,
    pub bcc: Vec<String>,
    pub prepend: Vec<String>,
}

pub const MAX_EFFECTS: usize = 16;
pub const MAX_HEADER_LINE: usize = 998;

impl Effects {
    pub fn is_empty(&self) -> bool {
        *self == Effects::default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Begin(Begin),
    Effects(Effects),
    Recipients(Vec<Recipient>),
    Content(Vec<u8>),
    /// The end of the content: cleanup finishes the file and has the
    /// broker commit it (durable and visible), or says why not.
    End,
    Abort,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: u16,
    pub enhanced: String,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Begun(String),
    Committed,
    Failed(Failure),
    Aborted,
}

impl Message for Request {
    const MAX_FRAME: usize = MAX_FRAME;

    fn encode(&self) -> Vec<u8> {
        let mut b = frame::builder();
        {
            let mut r = b.init_root::<request::Builder>();
            match self {
                Request::Begin(x) => {
                    let mut bb = r.init_begin();
                    {
                        let mut c = bb.reborrow().init_client();
                        c.set_name(clip(&x.client.name, 255));
                        c.set_addr(clip(&x.client.addr, 64));
                        c.set_port(x.client.port);
                        c.set_helo(clip(&x.client.helo, 255));
                        c.set_proto(clip(&x.client.proto, 16));
                        c.set_log_name(clip(&x.client.log_name, 64));
                        c.set_tls(clip(&x.client.tls, 200));
                        c.set_local_uid(x.client.local_uid.map_or(-1, i64::from));
                    }
                    bb.set_sender(clip(&x.sender, MAX_ADDRESS));
                    bb.set_ret(x.ret);
                    bb.set_envid(clip(&x.envid, 100));
                    bb.set_smtputf8(x.smtputf8);
                    bb.set_body8bit(x.body_8bit);
                    bb.set_trace(x.trace);
                    bb.set_remote_headers(x.remote_headers);
                    bb.set_milter_ticket(x.milter_ticket);
                    bb.set_signable(x.signable);
                    bb.set_requiretls(x.requiretls);
                }
                Request::Recipients(list) => {
                    let n = list.len().min(MAX_BATCH);
                    let mut l = r.init_recipients(n as u32);
                    for (i, rc) in list.iter().take(n).enumerate() {
                        let mut e = l.reborrow().get(i as u32);
                        e.set_address(clip(&rc.address, MAX_ADDRESS));
                        e.set_orcpt(clip(&rc.orcpt, MAX_ADDRESS));
                        e.set_notify(rc.notify);
                    }
                }
                Request::Content(d) => r.set_content(&d[..d.len().min(MAX_CHUNK)]),
                Request::Effects(e) => {
                    let mut g = r.init_effects();
                    g.set_hold(e.hold);
                    g.set_redirect(clip(&e.redirect, MAX_ADDRESS));
                    let n = e.bcc.len().min(MAX_EFFECTS);
                    let mut l = g.reborrow().init_bcc(n as u32);
                    for (i, a) in e.bcc.iter().take(n).enumerate() {
                        l.set(i as u32, clip(a, MAX_ADDRESS));
                    }
                    let n = e.prepend.len().min(MAX_EFFECTS);
                    let mut l = g.init_prepend(n as u32);
                    for (i, h) in e.prepend.iter().take(n).enumerate() {
                        l.set(i as u32, clip(h, MAX_HEADER_LINE));
                    }
                }
                Request::End => r.set_end(()),
                Request::Abort => r.set_abort(()),
            }
        }
        frame::finish(&b)
    }

    fn decode(f: &[u8], fds: Vec<OwnedFd>) -> Result<Self, Violation> {
        no_fds(&fds)?;
        let msg = frame::open(f, MAX_FRAME)?;
        let r = msg.get_root::<request::Reader>()?;
        Ok(match r.which()? {
            request::Begin(b) => {
                let b = b?;
                let c = b.get_client()?;
                Request::Begin(Begin {
                    client: Client {
                        name: text(c.get_name(), "client.name", 255)?,
                        addr: text(c.get_addr(), "client.addr", 64)?,
                        port: c.get_port(),
                        helo: text(c.get_helo(), "client.helo", 255)?,
                        proto: text(c.get_proto(), "client.proto", 16)?,
                        log_name: text(c.get_log_name(), "client.logName", 64)?,
                        tls: text(c.get_tls(), "client.tls", 200)?,
                        local_uid: match c.get_local_uid() {
                            -1 => None,
                            n => {
                                Some(range(n as u64, "client.localUid", 0, u32::MAX as u64)? as u32)
                            }
                        },
                    },
                    sender: text(b.get_sender(), "begin.sender", MAX_ADDRESS)?,
                    ret: range(b.get_ret().into(), "begin.ret", 0, 2)? as u8,
                    envid: text(b.get_envid(), "begin.envid", 100)?,
                    smtputf8: b.get_smtputf8(),
                    body_8bit: b.get_body8bit(),
                    trace: b.get_trace(),
                    remote_headers: b.get_remote_headers(),
                    milter_ticket: b.get_milter_ticket(),
                    signable: b.get_signable(),
                    requiretls: b.get_requiretls(),
                })
            }
            request::Recipients(l) => {
                let l = l?;
                list_len(l.len(), "recipients", MAX_BATCH)?;
                let mut out = Vec::with_capacity(l.len() as usize);
                for e in l.iter() {
                    out.push(Recipient {
                        address: text(e.get_address(), "recipient.address", MAX_ADDRESS)?,
                        orcpt: text(e.get_orcpt(), "recipient.orcpt", MAX_ADDRESS)?,
                        notify: range(e.get_notify().into(), "recipient.notify", 0, 15)? as u8,
                    });
                }
                Request::Recipients(out)
            }
            request::Content(d) => Request::Content(frame::data(d, "content", MAX_CHUNK)?),
            request::Effects(g) => {
                let g = g?;
                let line = |t: String, field: &'static str| {
                    if t.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f) {
                        Err(Violation::Field {
                            field,
                            why: "control characters".into(),
                        })
                    } else {
                        Ok(t)
                    }
                };
                let list = |l: capnp::text_list::Reader<'_>,
                            field: &'static str,
                            max: usize|
                 -> Result<Vec<String>, Violation> {
                    list_len(l.len(), field, MAX_EFFECTS)?;
                    l.iter()
                        .map(|t| line(text(t, field, max)?, field))
                        .collect()
                };
                Request::Effects(Effects {
                    hold: g.get_hold(),
                    redirect: line(
                        text(g.get_redirect(), "effects.redirect", MAX_ADDRESS)?,
                        "effects.redirect",
                    )?,
                    bcc: list(g.get_bcc()?, "effects.bcc", MAX_ADDRESS)?,
                    prepend: list(g.get_prepend()?, "effects.prepend", MAX_HEADER_LINE)?,
                })
            }
            request::End(()) => Request::End,
            request::Abort(()) => Request::Abort,
        })
    }
}

impl Message for Reply {
    const MAX_FRAME: usize = 4096;

    fn encode(&self) -> Vec<u8> {
        let mut b = frame::builder();
        {
            let mut r = b.init_root::<reply::Builder>();
            match self {
                Reply::Begun(id) => r.set_begun(clip(id, 32)),
                Reply::Committed => r.set_committed(()),
                Reply::Failed(f) => {
                    let mut x = r.init_failed();
                    x.set_code(f.code);
                    x.set_enhanced(clip(&f.enhanced, 16));
                    x.set_text(clip(&f.text, 512));
                }
                Reply::Aborted => r.set_aborted(()),
            }
        }
        frame::finish(&b)
    }

    fn decode(f: &[u8], fds: Vec<OwnedFd>) -> Result<Self, Violation> {
        no_fds(&fds)?;
        let msg = frame::open(f, Self::MAX_FRAME)?;
        let r = msg.get_root::<reply::Reader>()?;
        Ok(match r.which()? {
            reply::Begun(id) => Reply::Begun(text(id, "begun", 32)?),
            reply::Committed(()) => Reply::Committed,
            reply::Failed(x) => {
                let x = x?;
                Reply::Failed(Failure {
                    code: range(x.get_code().into(), "failed.code", 400, 599)? as u16,
                    enhanced: text(x.get_enhanced(), "failed.enhanced", 16)?,
                    text: text(x.get_text(), "failed.text", 512)?,
                })
            }
            reply::Aborted(()) => Reply::Aborted,
        })
    }
}
