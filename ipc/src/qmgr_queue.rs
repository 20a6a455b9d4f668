//! qmgr -> broker queue requests (schema: qmgr_queue.capnp).
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::channel::{Message, no_fds};
use crate::cleanup_broker::{MAX_QUEUE_ID, check_queue_id};
use crate::frame::{self, Violation, clip, list_len, text};
use crate::generated::qmgr_queue_capnp::{Place as WirePlace, reply, request, state};

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
/// Entries per page of a listing.
pub const LIST_PAGE: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    RcptDone(u32),
    RcptDeferred {
        index: u32,
        dsn: String,
        reason: String,
    },
    NextAttempt {
        at_us: u64,
        attempts: u32,
    },
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
        /// The message leaves the active set, due again at this time (µs).
        give_back: Option<u64>,
    },
    Remove(String),
    /// A message outside the active set becomes due now.
    Wake(String),
    /// Every deferred message becomes due now.
    Flush,
    /// Messages outside the active set, from this cursor (0: the start).
    List(u32),
}

/// Where the broker keeps a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// New mail, never tried: offered in arrival order.
    Incoming,
    /// Tried before: offered from its next attempt on.
    Deferred,
    /// On hold: never offered until released.
    Hold,
    /// In the queue manager's active set.
    Active,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub queue_id: String,
    pub place: Place,
    pub due_us: u64,
}

#[derive(Debug)]
pub enum Reply {
    Opened(OwnedFd),
    Ok,
    Failed(String),
    /// One page of a listing and the cursor of the next (0: the last page).
    Listed(Vec<Listed>, u32),
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
                Request::Wake(id) => r.set_wake(clip(id, MAX_QUEUE_ID)),
                Request::Flush => r.set_flush(()),
                Request::List(cursor) => r.set_list(*cursor),
                Request::Append {
                    queue_id,
                    states,
                    give_back,
                } => {
                    let mut a = r.init_append();
                    a.set_queue_id(clip(queue_id, MAX_QUEUE_ID));
                    a.set_give_back(give_back.is_some());
                    a.set_due_us(give_back.unwrap_or(0));
                    let n = states.len().min(MAX_STATES);
                    let mut l = a.init_states(n as u32);
                    for (i, s) in states.iter().take(n).enumerate() {
                        let mut e = l.reborrow().get(i as u32);
                        match s {
                            State::RcptDone(x) => e.set_rcpt_done(*x),
                            State::RcptDeferred { index, dsn, reason } => {
                                let mut d = e.init_rcpt_deferred();
                                d.set_index(*index);
                                d.set_dsn(clip(dsn, 16));
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
            request::Wake(t) => Request::Wake(id(t, "wake")?),
            request::Flush(()) => Request::Flush,
            request::List(cursor) => Request::List(cursor),
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
                                dsn: text(d.get_dsn(), "deferred.dsn", 16)?,
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
                    give_back: a.get_give_back().then(|| a.get_due_us()),
                }
            }
        })
    }
}

impl Message for Reply {
    const MAX_FRAME: usize = 32 * 1024;

    fn encode(&self) -> Vec<u8> {
        let mut b = frame::builder();
        {
            let mut r = b.init_root::<reply::Builder>();
            match self {
                Reply::Opened(_) => r.set_opened(()),
                Reply::Ok => r.set_ok(()),
                Reply::Failed(s) => r.set_failed(clip(s, 1024)),
                Reply::Listed(entries, next) => {
                    let mut l = r.init_listed();
                    l.set_next(*next);
                    let n = entries.len().min(LIST_PAGE);
                    let mut v = l.init_entries(n as u32);
                    for (i, e) in entries.iter().take(n).enumerate() {
                        let mut w = v.reborrow().get(i as u32);
                        w.set_queue_id(clip(&e.queue_id, MAX_QUEUE_ID));
                        w.set_due_us(e.due_us);
                        w.set_place(match e.place {
                            Place::Incoming => WirePlace::Incoming,
                            Place::Deferred => WirePlace::Deferred,
                            Place::Hold => WirePlace::Hold,
                            Place::Active => WirePlace::Active,
                        });
                    }
                }
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
            reply::Listed(l) => {
                no_fds(&fds)?;
                let l = l?;
                let v = l.get_entries()?;
                list_len(v.len(), "listed.entries", LIST_PAGE)?;
                let mut entries = Vec::with_capacity(v.len() as usize);
                for e in v.iter() {
                    entries.push(Listed {
                        queue_id: check_queue_id(
                            text(e.get_queue_id(), "listed.queueId", MAX_QUEUE_ID)?,
                            "listed.queueId",
                        )?,
                        place: match e.get_place()? {
                            WirePlace::Incoming => Place::Incoming,
                            WirePlace::Deferred => Place::Deferred,
                            WirePlace::Hold => Place::Hold,
                            WirePlace::Active => Place::Active,
                        },
                        due_us: e.get_due_us(),
                    });
                }
                Reply::Listed(entries, l.get_next())
            }
        })
    }
}
