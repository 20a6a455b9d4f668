//! qmgr -> broker queue requests (schema: qmgr_queue.capnp).
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::channel::{Message, no_fds};
use crate::cleanup_broker::{MAX_QUEUE_ID, check_queue_id};
use crate::frame::{self, Violation, clip, list_len, text};
use crate::generated::qmgr_queue_capnp::{reply, request, state};

pub const EDGE: &str = "qmgr-queue";
pub const VERSION: u32 = crate::generated::qmgr_queue_capnp::VERSION;
crate::edge!(
    /// This edge, for `edge::open`, `edge::accept` and `edge::serve`.
    Link,
    Request,
    Reply
);
pub const MAX_STATES: usize = 512;
pub const MAX_REASON: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    RcptDone(u32),
    RcptDeferred { index: u32, reason: String },
    NextAttempt { at_us: u64, attempts: u32 },
    Hold(bool),
    DelayWarned,
    TraceSent,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Open(String),
    Append {
        queue_id: String,
        states: Vec<State>,
    },
    Remove(String),
}

#[derive(Debug)]
pub enum Reply {
    Opened(OwnedFd),
    Ok,
    Failed(String),
}

impl Message for Request {
    const MAX_FRAME: usize = 96 * 1024;

    fn encode(&self) -> Vec<u8> {
        let mut b = frame::builder();
        {
            let mut r = b.init_root::<request::Builder>();
            match self {
                Request::Open(id) => r.set_open(clip(id, MAX_QUEUE_ID)),
                Request::Remove(id) => r.set_remove(clip(id, MAX_QUEUE_ID)),
                Request::Append { queue_id, states } => {
                    let mut a = r.init_append();
                    a.set_queue_id(clip(queue_id, MAX_QUEUE_ID));
                    let n = states.len().min(MAX_STATES);
                    let mut l = a.init_states(n as u32);
                    for (i, s) in states.iter().take(n).enumerate() {
                        let mut e = l.reborrow().get(i as u32);
                        match s {
                            State::RcptDone(x) => e.set_rcpt_done(*x),
                            State::RcptDeferred { index, reason } => {
                                let mut d = e.init_rcpt_deferred();
                                d.set_index(*index);
                                d.set_reason(clip(reason, MAX_REASON));
                            }
                            State::NextAttempt { at_us, attempts } => {
                                let mut t = e.init_next_attempt();
                                t.set_at_us(*at_us);
                                t.set_attempts(*attempts);
                            }
                            State::Hold(h) => e.set_hold(*h),
                            State::DelayWarned => e.set_delay_warned(()),
                            State::TraceSent => e.set_trace_sent(()),
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
        let r = msg.get_root::<request::Reader>()?;
        let id = |t, field| -> Result<String, Violation> {
            check_queue_id(text(t, field, MAX_QUEUE_ID)?, field)
        };
        Ok(match r.which()? {
            request::Open(t) => Request::Open(id(t, "open")?),
            request::Remove(t) => Request::Remove(id(t, "remove")?),
            request::Append(a) => {
                let a = a?;
                let l = a.get_states()?;
                list_len(l.len(), "append.states", MAX_STATES)?;
                let mut states = Vec::with_capacity(l.len() as usize);
                for e in l.iter() {
                    states.push(match e.which()? {
                        state::RcptDone(x) => State::RcptDone(x),
                        state::RcptDeferred(d) => {
                            let d = d?;
                            State::RcptDeferred {
                                index: d.get_index(),
                                reason: text(d.get_reason(), "deferred.reason", MAX_REASON)?,
                            }
                        }
                        state::NextAttempt(t) => {
                            let t = t?;
                            State::NextAttempt {
                                at_us: t.get_at_us(),
                                attempts: t.get_attempts(),
                            }
                        }
                        state::Hold(h) => State::Hold(h),
                        state::DelayWarned(()) => State::DelayWarned,
                        state::TraceSent(()) => State::TraceSent,
                    });
                }
                Request::Append {
                    queue_id: id(a.get_queue_id(), "append.queueId")?,
                    states,
                }
            }
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
                Reply::Opened(_) => r.set_opened(()),
                Reply::Ok => r.set_ok(()),
                Reply::Failed(s) => r.set_failed(clip(s, 1024)),
            }
        }
        frame::finish(&b)
    }

    fn fds(&self) -> Vec<BorrowedFd<'_>> {
        match self {
            Reply::Opened(fd) => vec![fd.as_fd()],
            _ => Vec::new(),
        }
    }

    fn decode(f: &[u8], mut fds: Vec<OwnedFd>) -> Result<Self, Violation> {
        let msg = frame::open(f, Self::MAX_FRAME)?;
        let r = msg.get_root::<reply::Reader>()?;
        Ok(match r.which()? {
            reply::Opened(()) => {
                if fds.len() != 1 {
                    return Err(Violation::FdCount {
                        got: fds.len(),
                        want: 1,
                    });
                }
                Reply::Opened(fds.remove(0))
            }
            reply::Ok(()) => {
                no_fds(&fds)?;
                Reply::Ok
            }
            reply::Failed(s) => {
                no_fds(&fds)?;
                Reply::Failed(text(s, "failed", 1024)?)
            }
        })
    }
}
