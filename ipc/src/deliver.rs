//! qmgr -> delivery agents (schema: deliver.capnp).
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::channel::{Message, no_fds};
use crate::cleanup_broker::{MAX_QUEUE_ID, check_queue_id};
use crate::frame::{self, Violation, clip, list_len, range, text};
use crate::generated::deliver_capnp::{Status as WireStatus, reply, request};

pub const EDGE: &str = "deliver";
pub const VERSION: u32 = crate::generated::deliver_capnp::VERSION;
crate::edge!(
    /// This edge, for `edge::open`, `edge::accept` and `edge::serve`.
    Link,
    Request,
    Reply
);
pub const MAX_RECIPIENTS: usize = 100;
const ADDR: usize = 512;
const TEXT: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub index: u32,
    pub address: String,
    pub orcpt: String,
    pub notify: u8,
}

#[derive(Debug)]
pub struct Request {
    pub queue_id: String,
    pub sender: String,
    pub nexthop: String,
    pub recipients: Vec<Recipient>,
    pub envid: String,
    pub ret: u8,
    pub smtputf8: bool,
    pub body_8bit: bool,
    pub arrival_us: u64,
    pub active_us: u64,
    pub size: u64,
    /// The queue file, read-only; None for an address-verification probe
    /// (the agent stops before the content).
    pub file: Option<OwnedFd>,
}

impl Request {
    pub fn is_probe(&self) -> bool {
        self.file.is_none()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Sent,
    Deferred,
    Bounced,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryResult {
    pub index: u32,
    pub status: Status,
    pub dsn: String,
    pub text: String,
    pub relay: String,
    pub remote_mta: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub results: Vec<DeliveryResult>,
}

impl Message for Request {
    const MAX_FRAME: usize = 96 * 1024;

    fn encode(&self) -> Vec<u8> {
        let mut b = frame::builder();
        {
            let mut r = b.init_root::<request::Builder>();
            r.set_queue_id(clip(&self.queue_id, MAX_QUEUE_ID));
            r.set_sender(clip(&self.sender, ADDR));
            r.set_nexthop(clip(&self.nexthop, 512));
            r.set_envid(clip(&self.envid, 100));
            r.set_ret(self.ret);
            r.set_smtputf8(self.smtputf8);
            r.set_body8bit(self.body_8bit);
            r.set_arrival_us(self.arrival_us);
            r.set_active_us(self.active_us);
            r.set_size(self.size);
            r.set_probe(self.file.is_none());
            let n = self.recipients.len().min(MAX_RECIPIENTS);
            let mut l = r.init_recipients(n as u32);
            for (i, x) in self.recipients.iter().take(n).enumerate() {
                let mut e = l.reborrow().get(i as u32);
                e.set_index(x.index);
                e.set_address(clip(&x.address, ADDR));
                e.set_orcpt(clip(&x.orcpt, ADDR));
                e.set_notify(x.notify);
            }
        }
        frame::finish(&b)
    }

    fn fds(&self) -> Vec<BorrowedFd<'_>> {
        self.file.iter().map(|f| f.as_fd()).collect()
    }

    fn decode(f: &[u8], mut fds: Vec<OwnedFd>) -> Result<Self, Violation> {
        let msg = frame::open(f, Self::MAX_FRAME)?;
        let r = msg.get_root::<request::Reader>()?;
        // A probe carries no descriptor; a delivery exactly one.
        let want = if r.get_probe() { 0 } else { 1 };
        if fds.len() != want {
            return Err(Violation::FdCount {
                got: fds.len(),
                want,
            });
        }
        let l = r.get_recipients()?;
        list_len(l.len(), "recipients", MAX_RECIPIENTS)?;
        let mut recipients = Vec::with_capacity(l.len() as usize);
        for e in l.iter() {
            recipients.push(Recipient {
                index: e.get_index(),
                address: text(e.get_address(), "recipient.address", ADDR)?,
                orcpt: text(e.get_orcpt(), "recipient.orcpt", ADDR)?,
                notify: range(e.get_notify().into(), "recipient.notify", 0, 15)? as u8,
            });
        }
        Ok(Request {
            queue_id: check_queue_id(text(r.get_queue_id(), "queueId", MAX_QUEUE_ID)?, "queueId")?,
            sender: text(r.get_sender(), "sender", ADDR)?,
            nexthop: text(r.get_nexthop(), "nexthop", 512)?,
            recipients,
            envid: text(r.get_envid(), "envid", 100)?,
            ret: range(r.get_ret().into(), "ret", 0, 2)? as u8,
            smtputf8: r.get_smtputf8(),
            body_8bit: r.get_body8bit(),
            arrival_us: r.get_arrival_us(),
            active_us: r.get_active_us(),
            size: r.get_size(),
            file: fds.pop(),
        })
    }
}

impl Message for Reply {
    const MAX_FRAME: usize = 256 * 1024;

    fn encode(&self) -> Vec<u8> {
        let mut b = frame::builder();
        {
            let r = b.init_root::<reply::Builder>();
            let n = self.results.len().min(MAX_RECIPIENTS);
            let mut l = r.init_results(n as u32);
            for (i, x) in self.results.iter().take(n).enumerate() {
                let mut e = l.reborrow().get(i as u32);
                e.set_index(x.index);
                e.set_status(match x.status {
                    Status::Sent => WireStatus::Sent,
                    Status::Deferred => WireStatus::Deferred,
                    Status::Bounced => WireStatus::Bounced,
                });
                e.set_dsn(clip(&x.dsn, 16));
                e.set_text(clip(&x.text, TEXT));
                e.set_relay(clip(&x.relay, 512));
                e.set_remote_mta(clip(&x.remote_mta, 255));
            }
        }
        frame::finish(&b)
    }

    fn decode(f: &[u8], fds: Vec<OwnedFd>) -> Result<Self, Violation> {
        no_fds(&fds)?;
        let msg = frame::open(f, Self::MAX_FRAME)?;
        let r = msg.get_root::<reply::Reader>()?;
        let l = r.get_results()?;
        list_len(l.len(), "results", MAX_RECIPIENTS)?;
        let mut results = Vec::with_capacity(l.len() as usize);
        for e in l.iter() {
            let dsn = frame::status_code(text(e.get_dsn(), "result.dsn", 16)?, "result.dsn")?;
            results.push(DeliveryResult {
                index: e.get_index(),
                status: match e.get_status()? {
                    WireStatus::Sent => Status::Sent,
                    WireStatus::Deferred => Status::Deferred,
                    WireStatus::Bounced => Status::Bounced,
                },
                dsn,
                text: text(e.get_text(), "result.text", TEXT)?,
                relay: text(e.get_relay(), "result.relay", 512)?,
                remote_mta: text(e.get_remote_mta(), "result.remoteMta", 255)?,
            });
        }
        Ok(Reply { results })
    }
}
