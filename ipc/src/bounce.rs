//! qmgr -> bounce (schema: bounce.capnp).
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::channel::{Message, no_fds};
use crate::cleanup_broker::{MAX_QUEUE_ID, check_queue_id};
use crate::frame::{self, Violation, clip, list_len, range, text};
use crate::generated::bounce_capnp::{Kind as WireKind, reply, request};

pub const EDGE: &str = "bounce";
pub const VERSION: u32 = crate::generated::bounce_capnp::VERSION;
crate::edge!(
    /// This edge, for `edge::open`, `edge::accept` and `edge::serve`.
    Link,
    Request,
    Reply
);
pub const MAX_RECIPIENTS: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Failure,
    Delay,
    Success,
    /// sendmail -v: how the first attempt went for every recipient (the
    /// action of each follows from its DSN code's class).
    Trace,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rcpt {
    pub address: String,
    pub orcpt: String,
    pub dsn: String,
    pub text: String,
    pub remote_mta: String,
}

#[derive(Debug)]
pub struct Request {
    pub queue_id: String,
    pub sender: String,
    pub envid: String,
    pub ret: u8,
    pub kind: Kind,
    pub arrival_us: u64,
    pub recipients: Vec<Rcpt>,
    /// The original queue file, read-only.
    pub file: OwnedFd,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Queued(String),
    Dropped(String),
    Failed(String),
}

impl Message for Request {
    const MAX_FRAME: usize = 128 * 1024;

    fn encode(&self) -> Vec<u8> {
        let mut b = frame::builder();
        {
            let mut r = b.init_root::<request::Builder>();
            r.set_queue_id(clip(&self.queue_id, MAX_QUEUE_ID));
            r.set_sender(clip(&self.sender, 512));
            r.set_envid(clip(&self.envid, 100));
            r.set_ret(self.ret);
            r.set_kind(match self.kind {
                Kind::Failure => WireKind::Failure,
                Kind::Delay => WireKind::Delay,
                Kind::Success => WireKind::Success,
                Kind::Trace => WireKind::Trace,
            });
            r.set_arrival_us(self.arrival_us);
            let n = self.recipients.len().min(MAX_RECIPIENTS);
            let mut l = r.init_recipients(n as u32);
            for (i, x) in self.recipients.iter().take(n).enumerate() {
                let mut e = l.reborrow().get(i as u32);
                e.set_address(clip(&x.address, 512));
                e.set_orcpt(clip(&x.orcpt, 512));
                e.set_dsn(clip(&x.dsn, 16));
                e.set_text(clip(&x.text, 1024));
                e.set_remote_mta(clip(&x.remote_mta, 255));
            }
        }
        frame::finish(&b)
    }

    fn fds(&self) -> Vec<BorrowedFd<'_>> {
        vec![self.file.as_fd()]
    }

    fn decode(f: &[u8], mut fds: Vec<OwnedFd>) -> Result<Self, Violation> {
        if fds.len() != 1 {
            return Err(Violation::FdCount {
                got: fds.len(),
                want: 1,
            });
        }
        let msg = frame::open(f, Self::MAX_FRAME)?;
        let r = msg.get_root::<request::Reader>()?;
        let l = r.get_recipients()?;
        list_len(l.len(), "recipients", MAX_RECIPIENTS)?;
        let mut recipients = Vec::new();
        for e in l.iter() {
            recipients.push(Rcpt {
                address: text(e.get_address(), "rcpt.address", 512)?,
                orcpt: text(e.get_orcpt(), "rcpt.orcpt", 512)?,
                dsn: text(e.get_dsn(), "rcpt.dsn", 16)?,
                text: text(e.get_text(), "rcpt.text", 1024)?,
                remote_mta: text(e.get_remote_mta(), "rcpt.remoteMta", 255)?,
            });
        }
        Ok(Request {
            queue_id: check_queue_id(text(r.get_queue_id(), "queueId", MAX_QUEUE_ID)?, "queueId")?,
            sender: text(r.get_sender(), "sender", 512)?,
            envid: text(r.get_envid(), "envid", 100)?,
            ret: range(r.get_ret().into(), "ret", 0, 2)? as u8,
            kind: match r.get_kind()? {
                WireKind::Failure => Kind::Failure,
                WireKind::Delay => Kind::Delay,
                WireKind::Success => Kind::Success,
                WireKind::Trace => Kind::Trace,
            },
            arrival_us: r.get_arrival_us(),
            recipients,
            file: fds.remove(0),
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
                Reply::Queued(id) => r.set_queued(clip(id, MAX_QUEUE_ID)),
                Reply::Dropped(s) => r.set_dropped(clip(s, 512)),
                Reply::Failed(s) => r.set_failed(clip(s, 512)),
            }
        }
        frame::finish(&b)
    }

    fn decode(f: &[u8], fds: Vec<OwnedFd>) -> Result<Self, Violation> {
        no_fds(&fds)?;
        let msg = frame::open(f, Self::MAX_FRAME)?;
        let r = msg.get_root::<reply::Reader>()?;
        Ok(match r.which()? {
            reply::Queued(t) => {
                Reply::Queued(check_queue_id(text(t, "queued", MAX_QUEUE_ID)?, "queued")?)
            }
            reply::Dropped(t) => Reply::Dropped(text(t, "dropped", 512)?),
            reply::Failed(t) => Reply::Failed(text(t, "failed", 512)?),
        })
    }
}
