//! qmgr -> broker: the feed of the active set (schema: qmgr_broker.capnp).
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::channel::{Message, no_fds};
use crate::cleanup_broker::{MAX_QUEUE_ID, check_queue_id};
use crate::frame::{self, Violation, clip, list_len, text};
use crate::generated::qmgr_broker_capnp::{event, request};

pub const EDGE: &str = "qmgr-broker";
pub const VERSION: u32 = crate::generated::qmgr_broker_capnp::VERSION;
crate::edge!(
    /// This edge, for `edge::open`, `edge::accept` and `edge::serve`.
    Link,
    Request,
    Event
);

/// Envelopes with more recipients than this are not carried: the queue
/// manager reads them from the file.
pub const MAX_ENVELOPE_RECIPIENTS: usize = 256;
const ADDR: usize = 512;
const ENVID: usize = 512;

/// The size of the active set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub messages: u32,
    pub recipients: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Subscribe(Limits),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub address: String,
    pub orcpt: String,
    pub notify: u8,
}

/// A fresh commit's envelope: nothing delivered or deferred yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub sender: String,
    pub envid: String,
    pub ret: u8,
    pub smtputf8: bool,
    pub body_8bit: bool,
    pub trace: bool,
    pub recipients: Vec<Recipient>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMessage {
    pub queue_id: String,
    pub arrival_us: u64,
    pub size: u64,
    pub nrcpt: u32,
    /// When it fell due (0: at once); earlier than the file's next attempt
    /// only when it was given back for a delay warning.
    pub due_us: u64,
    pub envelope: Option<Envelope>,
}

/// A message entering the active set, with a read-only descriptor of its
/// file while the queue manager keeps up (it opens the file itself
/// otherwise).
#[derive(Debug)]
pub struct Event {
    pub message: QueuedMessage,
    pub file: Option<OwnedFd>,
}

impl Message for Request {
    const MAX_FRAME: usize = 256;

    fn encode(&self) -> Vec<u8> {
        let mut b = frame::builder();
        {
            let Request::Subscribe(l) = self;
            let mut s = b.init_root::<request::Builder>().init_subscribe();
            s.set_messages(l.messages);
            s.set_recipients(l.recipients);
        }
        frame::finish(&b)
    }

    fn decode(f: &[u8], fds: Vec<OwnedFd>) -> Result<Self, Violation> {
        no_fds(&fds)?;
        let msg = frame::open(f, Self::MAX_FRAME)?;
        let r = msg.get_root::<request::Reader>()?;
        let l = r.get_subscribe()?;
        let limits = Limits {
            messages: frame::range(l.get_messages().into(), "subscribe.messages", 1, 10_000_000)?
                as u32,
            recipients: frame::range(
                l.get_recipients().into(),
                "subscribe.recipients",
                1,
                10_000_000,
            )? as u32,
        };
        Ok(Request::Subscribe(limits))
    }
}

impl Message for Event {
    const MAX_FRAME: usize = 512 * 1024;

    fn encode(&self) -> Vec<u8> {
        let mut b = frame::builder();
        {
            let m = &self.message;
            let mut x = b.init_root::<event::Builder>().init_message();
            x.set_queue_id(clip(&m.queue_id, MAX_QUEUE_ID));
            x.set_arrival_us(m.arrival_us);
            x.set_size(m.size);
            x.set_nrcpt(m.nrcpt);
            x.set_due_us(m.due_us);
            match &m.envelope {
                Some(e) if e.recipients.len() <= MAX_ENVELOPE_RECIPIENTS => {
                    x.set_has_envelope(true);
                    let mut v = x.init_envelope();
                    v.set_sender(clip(&e.sender, ADDR));
                    v.set_envid(clip(&e.envid, ENVID));
                    v.set_ret(e.ret);
                    v.set_smtputf8(e.smtputf8);
                    v.set_body8bit(e.body_8bit);
                    v.set_trace(e.trace);
                    let mut l = v.init_recipients(e.recipients.len() as u32);
                    for (i, r) in e.recipients.iter().enumerate() {
                        let mut w = l.reborrow().get(i as u32);
                        w.set_address(clip(&r.address, ADDR));
                        w.set_orcpt(clip(&r.orcpt, ADDR));
                        w.set_notify(r.notify);
                    }
                }
                _ => x.set_has_envelope(false),
            }
        }
        frame::finish(&b)
    }

    fn fds(&self) -> Vec<BorrowedFd<'_>> {
        self.file.iter().map(|f| f.as_fd()).collect()
    }

    fn decode(f: &[u8], mut fds: Vec<OwnedFd>) -> Result<Self, Violation> {
        if fds.len() > 1 {
            return Err(Violation::FdCount {
                got: fds.len(),
                want: 1,
            });
        }
        let msg = frame::open(f, Self::MAX_FRAME)?;
        let m = msg.get_root::<event::Reader>()?.get_message()?;
        let envelope = if m.get_has_envelope() {
            let v = m.get_envelope()?;
            let l = v.get_recipients()?;
            list_len(l.len(), "envelope.recipients", MAX_ENVELOPE_RECIPIENTS)?;
            let mut recipients = Vec::with_capacity(l.len() as usize);
            for r in l.iter() {
                recipients.push(Recipient {
                    address: text(r.get_address(), "recipient.address", ADDR)?,
                    orcpt: text(r.get_orcpt(), "recipient.orcpt", ADDR)?,
                    notify: r.get_notify(),
                });
            }
            Some(Envelope {
                sender: text(v.get_sender(), "envelope.sender", ADDR)?,
                envid: text(v.get_envid(), "envelope.envid", ENVID)?,
                ret: v.get_ret(),
                smtputf8: v.get_smtputf8(),
                body_8bit: v.get_body8bit(),
                trace: v.get_trace(),
                recipients,
            })
        } else {
            None
        };
        Ok(Event {
            message: QueuedMessage {
                queue_id: check_queue_id(
                    text(m.get_queue_id(), "message.queueId", MAX_QUEUE_ID)?,
                    "message.queueId",
                )?,
                arrival_us: m.get_arrival_us(),
                size: m.get_size(),
                nrcpt: m.get_nrcpt(),
                due_us: m.get_due_us(),
                envelope,
            },
            file: fds.pop(),
        })
    }
}
