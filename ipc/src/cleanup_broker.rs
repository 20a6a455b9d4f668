//! cleanup -> broker (schema: cleanup_broker.capnp).
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::channel::{Message, no_fds};
use crate::frame::{self, Violation, clip, text};
use crate::generated::cleanup_broker_capnp::{reply, request};

pub const EDGE: &str = "cleanup-broker";
pub const VERSION: u32 = crate::generated::cleanup_broker_capnp::VERSION;
crate::edge!(
    /// This edge, for `edge::open`, `edge::accept` and `edge::serve`.
    Link,
    Request,
    Reply
);
pub const MAX_QUEUE_ID: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub queue_id: String,
    pub sender: String,
    pub size: u64,
    pub nrcpt: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Allocate,
    Commit(Commit),
    Abort(String),
}

#[derive(Debug)]
pub enum Reply {
    /// A queue id and the open queue file.
    Allocated(String, OwnedFd),
    Committed,
    Aborted,
    Failed(String),
    /// Allocate refused: the queue file system has this many bytes free,
    /// not more than `queue_minfree` (Postfix: "Insufficient system storage").
    NoSpace(u64),
}

/// Queue ids are short, printable and safe in file names and log lines.
pub fn check_queue_id(id: String, field: &'static str) -> Result<String, Violation> {
    if id.is_empty() || !id.bytes().all(|c| c.is_ascii_alphanumeric()) {
        return Err(Violation::Field {
            field,
            why: "not a queue id".into(),
        });
    }
    Ok(id)
}

impl Message for Request {
    const MAX_FRAME: usize = 2048;

    fn encode(&self) -> Vec<u8> {
        let mut b = frame::builder();
        {
            let mut r = b.init_root::<request::Builder>();
            match self {
                Request::Allocate => r.set_allocate(()),
                Request::Commit(c) => {
                    let mut x = r.init_commit();
                    x.set_queue_id(clip(&c.queue_id, MAX_QUEUE_ID));
                    x.set_sender(clip(&c.sender, 512));
                    x.set_size(c.size);
                    x.set_nrcpt(c.nrcpt);
                }
                Request::Abort(id) => r.set_abort(clip(id, MAX_QUEUE_ID)),
            }
        }
        frame::finish(&b)
    }

    fn decode(f: &[u8], fds: Vec<OwnedFd>) -> Result<Self, Violation> {
        no_fds(&fds)?;
        let msg = frame::open(f, Self::MAX_FRAME)?;
        let r = msg.get_root::<request::Reader>()?;
        Ok(match r.which()? {
            request::Allocate(()) => Request::Allocate,
            request::Commit(c) => {
                let c = c?;
                Request::Commit(Commit {
                    queue_id: check_queue_id(
                        text(c.get_queue_id(), "commit.queueId", MAX_QUEUE_ID)?,
                        "commit.queueId",
                    )?,
                    sender: text(c.get_sender(), "commit.sender", 512)?,
                    size: c.get_size(),
                    nrcpt: c.get_nrcpt(),
                })
            }
            request::Abort(id) => {
                Request::Abort(check_queue_id(text(id, "abort", MAX_QUEUE_ID)?, "abort")?)
            }
        })
    }
}

impl Message for Reply {
    const MAX_FRAME: usize = 1024;

    fn encode(&self) -> Vec<u8> {
        let mut b = frame::builder();
        {
            let mut r = b.init_root::<reply::Builder>();
            match self {
                Reply::Allocated(id, _) => r.set_allocated(clip(id, MAX_QUEUE_ID)),
                Reply::Committed => r.set_committed(()),
                Reply::Aborted => r.set_aborted(()),
                Reply::Failed(s) => r.set_failed(clip(s, 512)),
                Reply::NoSpace(n) => r.set_no_space(*n),
            }
        }
        frame::finish(&b)
    }

    fn fds(&self) -> Vec<BorrowedFd<'_>> {
        match self {
            Reply::Allocated(_, fd) => vec![fd.as_fd()],
            _ => Vec::new(),
        }
    }

    fn decode(f: &[u8], mut fds: Vec<OwnedFd>) -> Result<Self, Violation> {
        let msg = frame::open(f, Self::MAX_FRAME)?;
        let r = msg.get_root::<reply::Reader>()?;
        if !matches!(r.which()?, reply::Allocated(_)) {
            no_fds(&fds)?;
        }
        Ok(match r.which()? {
            reply::Allocated(id) => {
                if fds.len() != 1 {
                    return Err(Violation::FdCount {
                        got: fds.len(),
                        want: 1,
                    });
                }
                Reply::Allocated(
                    check_queue_id(text(id, "allocated", MAX_QUEUE_ID)?, "allocated")?,
                    fds.remove(0),
                )
            }
            reply::Committed(()) => Reply::Committed,
            reply::Aborted(()) => Reply::Aborted,
            reply::Failed(s) => Reply::Failed(text(s, "failed", 512)?),
            reply::NoSpace(n) => Reply::NoSpace(n),
        })
    }
}
