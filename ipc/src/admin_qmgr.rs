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
    /// An address or a domain (at most [`MAX_TARGET`] bytes).
    Explain(String),
}

/// Longest address or domain `explain` takes.
pub const MAX_TARGET: usize = 512;
/// Most hosts, and addresses per host, in an explanation.
pub const MAX_HOPS: usize = 16;
/// Longest TLS policy (a policy table value) and its reason.
pub const MAX_TLS_TEXT: usize = 512;

/// One host a delivery would try.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hop {
    pub host: String,
    pub preference: u16,
    pub addresses: Vec<String>,
}

/// How mail for an address is routed now (`postern queue explain`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Explanation {
    pub address: String,
    pub transport: String,
    pub nexthop: String,
    pub outcome: String,
    pub hops: Vec<Hop>,
    pub dns_error: String,
    pub tls_level: String,
    pub tls_why: String,
    pub concurrency: u32,
    pub rate_delay_ms: u64,
    pub recipient_limit: u32,
    pub in_flight: u32,
    pub waiting: u32,
    pub deferred: u32,
    pub next_retry: u64,
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
    Explained(Box<Explanation>),
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
                Request::Explain(t) => r.set_explain(clip(t, MAX_TARGET)),
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
            request::Explain(t) => {
                let t = text(t, "explain", MAX_TARGET)?;
                if t.is_empty() || t.contains(char::is_whitespace) {
                    return Err(Violation::Field {
                        field: "explain",
                        why: "not an address or domain".into(),
                    });
                }
                Request::Explain(t)
            }
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
                Reply::Explained(x) => {
                    let mut e = r.init_explained();
                    e.set_address(clip(&x.address, MAX_TARGET));
                    e.set_transport(clip(&x.transport, 32));
                    e.set_nexthop(clip(&x.nexthop, MAX_TARGET));
                    e.set_outcome(clip(&x.outcome, 1024));
                    e.set_dns_error(clip(&x.dns_error, 1024));
                    e.set_tls_level(clip(&x.tls_level, MAX_TLS_TEXT));
                    e.set_tls_why(clip(&x.tls_why, MAX_TLS_TEXT));
                    e.set_concurrency(x.concurrency);
                    e.set_rate_delay_ms(x.rate_delay_ms);
                    e.set_recipient_limit(x.recipient_limit);
                    e.set_in_flight(x.in_flight);
                    e.set_waiting(x.waiting);
                    e.set_deferred(x.deferred);
                    e.set_next_retry(x.next_retry);
                    let n = x.hops.len().min(MAX_HOPS);
                    let mut hl = e.init_hops(n as u32);
                    for (i, h) in x.hops.iter().take(n).enumerate() {
                        let mut y = hl.reborrow().get(i as u32);
                        y.set_host(clip(&h.host, 255));
                        y.set_preference(h.preference);
                        let m = h.addresses.len().min(MAX_HOPS);
                        let mut al = y.init_addresses(m as u32);
                        for (j, a) in h.addresses.iter().take(m).enumerate() {
                            al.set(j as u32, clip(a, 64));
                        }
                    }
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
            reply::Explained(e) => {
                let e = e?;
                let hl = e.get_hops()?;
                list_len(hl.len(), "hops", MAX_HOPS)?;
                let mut hops = Vec::with_capacity(hl.len() as usize);
                for h in hl.iter() {
                    let al = h.get_addresses()?;
                    list_len(al.len(), "hop.addresses", MAX_HOPS)?;
                    let mut addresses = Vec::with_capacity(al.len() as usize);
                    for a in al.iter() {
                        addresses.push(text(a, "hop.address", 64)?);
                    }
                    hops.push(Hop {
                        host: text(h.get_host(), "hop.host", 255)?,
                        preference: h.get_preference(),
                        addresses,
                    });
                }
                Reply::Explained(Box::new(Explanation {
                    address: text(e.get_address(), "explained.address", MAX_TARGET)?,
                    transport: text(e.get_transport(), "explained.transport", 32)?,
                    nexthop: text(e.get_nexthop(), "explained.nexthop", MAX_TARGET)?,
                    outcome: text(e.get_outcome(), "explained.outcome", 1024)?,
                    hops,
                    dns_error: text(e.get_dns_error(), "explained.dnsError", 1024)?,
                    tls_level: text(e.get_tls_level(), "explained.tlsLevel", MAX_TLS_TEXT)?,
                    tls_why: text(e.get_tls_why(), "explained.tlsWhy", MAX_TLS_TEXT)?,
                    concurrency: e.get_concurrency(),
                    rate_delay_ms: e.get_rate_delay_ms(),
                    recipient_limit: e.get_recipient_limit(),
                    in_flight: e.get_in_flight(),
                    waiting: e.get_waiting(),
                    deferred: e.get_deferred(),
                    next_retry: e.get_next_retry(),
                }))
            }
        })
    }
}
