//! sendmail -> pickup (schema: sendmail_pickup.capnp). The same frames go
//! over the public pickup socket and into maildrop files, so one decoder
//! serves both; either way the bytes come from an untrusted local user.
use std::os::fd::OwnedFd;

use crate::channel::{Message, no_fds};
use crate::frame::{self, Violation, clip, list_len, range, text};
use crate::generated::sendmail_pickup_capnp::{reply, request};

pub const EDGE: &str = "pickup";
pub const VERSION: u32 = crate::generated::sendmail_pickup_capnp::VERSION;
crate::edge!(
    /// This edge, for `edge::open`, `edge::accept` and `edge::serve`.
    Link,
    Request,
    Reply
);
pub const MAX_CHUNK: usize = 64 * 1024;
pub const MAX_BATCH: usize = 100;
pub const MAX_ADDRESS: usize = 512;
pub const MAX_FULL_NAME: usize = 256;
pub const MAX_ENVID: usize = 100;
const MAX_FRAME: usize = 96 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Begin {
    pub sender: String,
    pub sender_given: bool,
    pub full_name: String,
    pub extract: bool,
    pub notify: u8,
    pub ret: u8,
    pub envid: String,
    pub body_8bit: bool,
    pub smtputf8: bool,
    /// -v: mail the sender a report of the first delivery attempt.
    pub trace: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Begin(Begin),
    Recipients(Vec<String>),
    Content(Vec<u8>),
    End,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Queued(String),
    Failed { exit_code: u8, text: String },
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
                    bb.set_sender(clip(&x.sender, MAX_ADDRESS));
                    bb.set_sender_given(x.sender_given);
                    bb.set_trace(x.trace);
                    bb.set_full_name(clip(&x.full_name, MAX_FULL_NAME));
                    bb.set_extract(x.extract);
                    bb.set_notify(x.notify);
                    bb.set_ret(x.ret);
                    bb.set_envid(clip(&x.envid, MAX_ENVID));
                    bb.set_body8bit(x.body_8bit);
                    bb.set_smtputf8(x.smtputf8);
                }
                Request::Recipients(list) => {
                    let n = list.len().min(MAX_BATCH);
                    let mut l = r.init_recipients(n as u32);
                    for (i, a) in list.iter().take(n).enumerate() {
                        l.set(i as u32, clip(a, MAX_ADDRESS));
                    }
                }
                Request::Content(d) => r.set_content(&d[..d.len().min(MAX_CHUNK)]),
                Request::End => r.set_end(()),
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
                Request::Begin(Begin {
                    sender: text(b.get_sender(), "begin.sender", MAX_ADDRESS)?,
                    sender_given: b.get_sender_given(),
                    trace: b.get_trace(),
                    full_name: text(b.get_full_name(), "begin.fullName", MAX_FULL_NAME)?,
                    extract: b.get_extract(),
                    notify: range(b.get_notify().into(), "begin.notify", 0, 15)? as u8,
                    ret: range(b.get_ret().into(), "begin.ret", 0, 2)? as u8,
                    envid: text(b.get_envid(), "begin.envid", MAX_ENVID)?,
                    body_8bit: b.get_body8bit(),
                    smtputf8: b.get_smtputf8(),
                })
            }
            request::Recipients(l) => {
                let l = l?;
                list_len(l.len(), "recipients", MAX_BATCH)?;
                let mut out = Vec::with_capacity(l.len() as usize);
                for a in l.iter() {
                    out.push(text(a, "recipient", MAX_ADDRESS)?);
                }
                Request::Recipients(out)
            }
            request::Content(d) => Request::Content(frame::data(d, "content", MAX_CHUNK)?),
            request::End(()) => Request::End,
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
                Reply::Queued(id) => r.set_queued(clip(id, 32)),
                Reply::Failed { exit_code, text } => {
                    let mut x = r.init_failed();
                    x.set_exit_code(*exit_code);
                    x.set_text(clip(text, 1000));
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
            reply::Queued(id) => Reply::Queued(text(id, "queued", 32)?),
            reply::Failed(x) => {
                let x = x?;
                Reply::Failed {
                    exit_code: range(x.get_exit_code().into(), "failed.exitCode", 64, 78)? as u8,
                    text: text(x.get_text(), "failed.text", 1000)?,
                }
            }
        })
    }
}

/// Splits a maildrop file into its frames without trusting it: each
/// length is checked against the edge's limit before the frame is taken.
pub fn file_frames(mut data: &[u8]) -> impl Iterator<Item = Result<&[u8], Violation>> {
    std::iter::from_fn(move || {
        if data.is_empty() {
            return None;
        }
        if data.len() < frame::HEADER {
            data = &[];
            return Some(Err(Violation::Short));
        }
        let len = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize;
        if len > MAX_FRAME {
            data = &[];
            return Some(Err(Violation::TooLarge {
                len,
                max: MAX_FRAME,
            }));
        }
        if data.len() < frame::HEADER + len {
            let actual = data.len() - frame::HEADER;
            data = &[];
            return Some(Err(Violation::LengthMismatch {
                claimed: len,
                actual,
            }));
        }
        let (f, rest) = data.split_at(frame::HEADER + len);
        data = rest;
        Some(Ok(f))
    })
}
