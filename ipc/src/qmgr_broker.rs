//! qmgr -> broker subscription (schema: qmgr_broker.capnp).
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::channel::{Message, no_fds};
use crate::cleanup_broker::{MAX_QUEUE_ID, check_queue_id};
use crate::frame::{self, Violation, clip, text};
use crate::generated::qmgr_broker_capnp::{event, request};

pub const EDGE: &str = "qmgr-broker";
pub const VERSION: u32 = crate::generated::qmgr_broker_capnp::VERSION;
crate::edge!(
    /// This edge, for `edge::open`, `edge::accept` and `edge::serve`.
    Link,
    Request,
    Event
);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Subscribe,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMessage {
    pub queue_id: String,
    pub sender: String,
    pub size: u64,
    pub nrcpt: u32,
    pub arrival_us: u64,
}

#[derive(Debug)]
pub enum Event {
    /// A committed message. A new commit carries a read-only descriptor of
    /// its file, which saves the queue manager an open request; the initial
    /// snapshot does not.
    Committed(QueuedMessage, Option<OwnedFd>),
    /// The initial snapshot is complete.
    Current,
}

impl Message for Request {
    const MAX_FRAME: usize = 256;

    fn encode(&self) -> Vec<u8> {
        let mut b = frame::builder();
        b.init_root::<request::Builder>()
            .set_kind(request::Kind::Subscribe);
        frame::finish(&b)
    }

    fn decode(f: &[u8], fds: Vec<OwnedFd>) -> Result<Self, Violation> {
        no_fds(&fds)?;
        let msg = frame::open(f, Self::MAX_FRAME)?;
        let r = msg.get_root::<request::Reader>()?;
        match r.get_kind()? {
            request::Kind::Subscribe => Ok(Request::Subscribe),
        }
    }
}

impl Message for Event {
    const MAX_FRAME: usize = 2048;

    fn encode(&self) -> Vec<u8> {
        let mut b = frame::builder();
        {
            let mut r = b.init_root::<event::Builder>();
            match self {
                Event::Committed(m, _) => {
                    let mut x = r.init_committed();
                    x.set_queue_id(clip(&m.queue_id, MAX_QUEUE_ID));
                    x.set_sender(clip(&m.sender, 512));
                    x.set_size(m.size);
                    x.set_nrcpt(m.nrcpt);
                    x.set_arrival_us(m.arrival_us);
                }
                Event::Current => r.set_current(()),
            }
        }
        frame::finish(&b)
    }

    fn fds(&self) -> Vec<BorrowedFd<'_>> {
        match self {
            Event::Committed(_, Some(fd)) => vec![fd.as_fd()],
            _ => Vec::new(),
        }
    }

    fn decode(f: &[u8], mut fds: Vec<OwnedFd>) -> Result<Self, Violation> {
        let msg = frame::open(f, Self::MAX_FRAME)?;
        let r = msg.get_root::<event::Reader>()?;
        if !matches!(r.which()?, event::Committed(_)) {
            no_fds(&fds)?;
        }
        if fds.len() > 1 {
            return Err(Violation::FdCount {
                got: fds.len(),
                want: 1,
            });
        }
        Ok(match r.which()? {
            event::Committed(m) => {
                let m = m?;
                Event::Committed(
                    QueuedMessage {
                        queue_id: check_queue_id(
                            text(m.get_queue_id(), "message.queueId", MAX_QUEUE_ID)?,
                            "message.queueId",
                        )?,
                        sender: text(m.get_sender(), "message.sender", 512)?,
                        size: m.get_size(),
                        nrcpt: m.get_nrcpt(),
                        arrival_us: m.get_arrival_us(),
                    },
                    fds.pop(),
                )
            }
            event::Current(()) => Event::Current,
        })
    }
}
