//! `postern queue` -> qmgr (schema: admin_qmgr.capnp). Client-reachable:
//! qmgr drops a channel that breaks the protocol, and goes on.
use std::os::fd::OwnedFd;

use crate::channel::{Message, no_fds};
use crate::cleanup_broker::MAX_QUEUE_ID;
use crate::frame::{self, Violation, clip, list_len, text};
use crate::generated::admin_qmgr_capnp::{reply, request};

pub const EDGE: &str = "admin-qmgr";
pub const VERSION: u32 = crate::generated::admin_qmgr_capnp::VERSION;
crate::edge!(
    /// This edge, for `edge::open`, `edge::accept` and `edge::serve`.
    Link,
    Request,
    Reply
);
pub const MAX_IDS: usize = 1000;
pub const BATCH: usize = 50;
pub const MAX_CHUNK: usize = 32 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    List,
    Show(String),
    Flush,
    Delete(Vec<String>),
    Hold(Vec<String>),
    Release(Vec<String>),
    Requeue(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rcpt {
    pub address: String,
    pub delay_reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub queue_id: String,
    pub queue_name: String,
    pub arrival_time: u64,
    pub message_size: u64,
    pub sender: String,
    pub recipients: Vec<Rcpt>,
    pub forced_expire: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Entries(Vec<Entry>),
    Content(Vec<u8>),
    End,
    /// What an operation did, one line each.
    Done(Vec<String>),
    Error(String),
}

fn ids_of(
    l: capnp::Result<capnp::text_list::Reader<'_>>,
    field: &'static str,
) -> Result<Vec<String>, Violation> {
    let l = l?;
    list_len(l.len(), field, MAX_IDS)?;
    let mut out = Vec::with_capacity(l.len() as usize);
    for t in l.iter() {
        let id = text(t, field, MAX_QUEUE_ID)?;
        if !id.bytes().all(|c| c.is_ascii_alphanumeric()) || id.is_empty() {
            return Err(Violation::Field {
                field,
                why: "not a queue id".into(),
            });
        }
        out.push(id);
    }
    Ok(out)
}

impl Message for Request {
    const MAX_FRAME: usize = 64 * 1024;

    fn encode(&self) -> Vec<u8> {
        let mut b = frame::builder();
        {
            let mut r = b.init_root::<request::Builder>();
            let set = |l: capnp::text_list::Builder<'_>, ids: &[String]| {
                let mut l = l;
                for (i, id) in ids.iter().take(MAX_IDS).enumerate() {
                    l.set(i as u32, clip(id, MAX_QUEUE_ID));
                }
            };
            match self {
                Request::List => r.set_list(()),
                Request::Flush => r.set_flush(()),
                Request::Show(id) => r.set_show(clip(id, MAX_QUEUE_ID)),
                Request::Delete(ids) => set(r.init_delete(ids.len().min(MAX_IDS) as u32), ids),
                Request::Hold(ids) => set(r.init_hold(ids.len().min(MAX_IDS) as u32), ids),
                Request::Release(ids) => set(r.init_release(ids.len().min(MAX_IDS) as u32), ids),
                Request::Requeue(ids) => set(r.init_requeue(ids.len().min(MAX_IDS) as u32), ids),
            }
        }
        frame::finish(&b)
    }

    fn decode(f: &[u8], fds: Vec<OwnedFd>) -> Result<Self, Violation> {
        no_fds(&fds)?;
        let msg = frame::open(f, Self::MAX_FRAME)?;
        let r = msg.get_root::<request::Reader>()?;
        Ok(match r.which()? {
            request::List(()) => Request::List,
            request::Flush(()) => Request::Flush,
            request::Show(t) => Request::Show(text(t, "show", MAX_QUEUE_ID)?),
            request::Delete(l) => Request::Delete(ids_of(l, "delete")?),
            request::Hold(l) => Request::Hold(ids_of(l, "hold")?),
            request::Release(l) => Request::Release(ids_of(l, "release")?),
            request::Requeue(l) => Request::Requeue(ids_of(l, "requeue")?),
        })
    }
}

impl Message for Reply {
    const MAX_FRAME: usize = 128 * 1024;

    fn encode(&self) -> Vec<u8> {
        let mut b = frame::builder();
        {
            let mut r = b.init_root::<reply::Builder>();
            match self {
                Reply::Entries(list) => {
                    let n = list.len().min(BATCH);
                    let mut l = r.init_entries(n as u32);
                    for (i, e) in list.iter().take(n).enumerate() {
                        let mut x = l.reborrow().get(i as u32);
                        x.set_queue_id(clip(&e.queue_id, MAX_QUEUE_ID));
                        x.set_queue_name(clip(&e.queue_name, 16));
                        x.set_arrival_time(e.arrival_time);
                        x.set_message_size(e.message_size);
                        x.set_sender(clip(&e.sender, 512));
                        x.set_forced_expire(e.forced_expire);
                        let m = e.recipients.len().min(100);
                        let mut rl = x.init_recipients(m as u32);
                        for (j, rc) in e.recipients.iter().take(m).enumerate() {
                            let mut y = rl.reborrow().get(j as u32);
                            y.set_address(clip(&rc.address, 512));
                            y.set_delay_reason(clip(&rc.delay_reason, 512));
                        }
                    }
                }
                Reply::Content(d) => r.set_content(&d[..d.len().min(MAX_CHUNK)]),
                Reply::End => r.set_end(()),
                Reply::Done(lines) => {
                    let n = lines.len().min(MAX_IDS + 1);
                    let mut l = r.init_done(n as u32);
                    for (i, line) in lines.iter().take(n).enumerate() {
                        l.set(i as u32, clip(line, 1024));
                    }
                }
                Reply::Error(s) => r.set_error(clip(s, 1024)),
            }
        }
        frame::finish(&b)
    }

    fn decode(f: &[u8], fds: Vec<OwnedFd>) -> Result<Self, Violation> {
        no_fds(&fds)?;
        let msg = frame::open(f, Self::MAX_FRAME)?;
        let r = msg.get_root::<reply::Reader>()?;
        Ok(match r.which()? {
            reply::Entries(l) => {
                let l = l?;
                list_len(l.len(), "entries", BATCH)?;
                let mut out = Vec::new();
                for x in l.iter() {
                    let rl = x.get_recipients()?;
                    list_len(rl.len(), "entry.recipients", 100)?;
                    let mut recipients = Vec::new();
                    for y in rl.iter() {
                        recipients.push(Rcpt {
                            address: text(y.get_address(), "rcpt.address", 512)?,
                            delay_reason: text(y.get_delay_reason(), "rcpt.delayReason", 512)?,
                        });
                    }
                    out.push(Entry {
                        queue_id: text(x.get_queue_id(), "entry.queueId", MAX_QUEUE_ID)?,
                        queue_name: text(x.get_queue_name(), "entry.queueName", 16)?,
                        arrival_time: x.get_arrival_time(),
                        message_size: x.get_message_size(),
                        sender: text(x.get_sender(), "entry.sender", 512)?,
                        recipients,
                        forced_expire: x.get_forced_expire(),
                    });
                }
                Reply::Entries(out)
            }
            reply::Content(d) => Reply::Content(frame::data(d, "content", MAX_CHUNK)?),
            reply::End(()) => Reply::End,
            reply::Done(l) => {
                let l = l?;
                list_len(l.len(), "done", MAX_IDS + 1)?;
                let mut lines = Vec::with_capacity(l.len() as usize);
                for t in l.iter() {
                    lines.push(text(t, "done", 1024)?);
                }
                Reply::Done(lines)
            }
            reply::Error(t) => Reply::Error(text(t, "error", 1024)?),
        })
    }
}
