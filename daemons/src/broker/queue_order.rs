//! The order of the queue (see the module above): which set each
//! committed message waits in, the queue manager's active set and its
//! limits, which message is offered next, and the state records that
//! move a message between the sets (hold, release, the next attempt).
use nix::fcntl::OFlag;
use postern_ipc::qmgr_broker::Limits;
use postern_proto::queue::{self as rec, Record};

use super::{Entry, Place, Queue, QueueError, State};

impl Queue {
    /// Appends state records to a committed message (the caller syncs). A
    /// hold record moves a message outside the active set on or off hold.
    pub fn append_states(&mut self, id: &str, records: &[Record]) -> Result<(), QueueError> {
        let (n, mut e) = self.committed_slot(id)?;
        let mut buf = Vec::new();
        for r in records {
            buf.extend_from_slice(&rec::encode(r));
        }
        let mut f = self.open_slot(n, OFlag::O_WRONLY | OFlag::O_APPEND)?;
        std::io::Write::write_all(&mut f, &buf)?;
        drop(f);
        let mut hold = e.hold;
        for r in records {
            match r {
                Record::Hold(h) => hold = *h,
                Record::NextAttempt { at_us, .. } if e.place != Place::Active => {
                    self.dequeue(n, e);
                    e.due_us = *at_us;
                    if e.place == Place::Incoming {
                        e.place = Place::Deferred;
                    }
                    self.enqueue(n, e);
                }
                _ => {}
            }
        }
        if hold != e.hold {
            self.dequeue(n, e);
            e.hold = hold;
            if e.place != Place::Active {
                e.place = if hold {
                    Place::Hold
                } else {
                    // Released: due now, in its old order.
                    e.due_us = 0;
                    Place::Deferred
                };
            }
            self.enqueue(n, e);
        }
        self.set(n, State::Committed(e));
        Ok(())
    }

    /// Puts an entry into the set its place says (and counts the active).
    pub(super) fn enqueue(&mut self, n: u32, e: Entry) {
        match e.place {
            Place::Incoming => {
                self.incoming.insert((e.arrival_us, n));
            }
            Place::Deferred => {
                self.deferred.insert((e.due_us, n));
            }
            Place::Hold => {}
            Place::Active => {
                self.active_msgs += 1;
                self.active_rcpts += u64::from(e.nrcpt);
            }
        }
    }

    /// Takes an entry out of its set (or the active count).
    pub(super) fn dequeue(&mut self, n: u32, e: Entry) {
        match e.place {
            Place::Incoming => {
                self.incoming.remove(&(e.arrival_us, n));
            }
            Place::Deferred => {
                self.deferred.remove(&(e.due_us, n));
            }
            Place::Hold => {}
            Place::Active => {
                self.active_msgs = self.active_msgs.saturating_sub(1);
                self.active_rcpts = self.active_rcpts.saturating_sub(u64::from(e.nrcpt));
            }
        }
    }

    /// The queue manager gives a message back: it leaves the active set and
    /// waits until `due_us` (or on hold).
    pub fn give_back(&mut self, id: &str, due_us: u64) -> Result<(), QueueError> {
        let (n, mut e) = self.committed_slot(id)?;
        if e.place != Place::Active {
            return Ok(());
        }
        self.dequeue(n, e);
        e.due_us = due_us;
        e.place = if e.hold { Place::Hold } else { Place::Deferred };
        self.enqueue(n, e);
        self.set(n, State::Committed(e));
        Ok(())
    }

    /// A message outside the active set and not on hold becomes due now.
    pub fn wake(&mut self, id: &str) -> Result<(), QueueError> {
        let (n, mut e) = self.committed_slot(id)?;
        if e.place == Place::Deferred {
            self.dequeue(n, e);
            e.due_us = 0;
            self.enqueue(n, e);
            self.set(n, State::Committed(e));
        }
        Ok(())
    }

    /// Every deferred message becomes due now (`postqueue -f`).
    pub fn flush(&mut self) -> usize {
        // Files recovery has yet to read are flushed as it reads them.
        self.flush_in_recovery = !self.unscanned.is_empty();
        let all = std::mem::take(&mut self.deferred);
        let count = all.len();
        for (_, n) in all {
            if let State::Committed(mut e) = self.state(n) {
                e.due_us = 0;
                self.deferred.insert((0, n));
                self.set(n, State::Committed(e));
            }
        }
        count
    }

    /// A queue manager subscribed with these active-set limits.
    pub fn subscribe(&mut self, limits: Limits) {
        self.release_active();
        self.limits = Some(limits);
    }

    /// The queue manager went away: its active set is due again at once,
    /// and nothing is offered until one subscribes.
    pub fn release_active(&mut self) {
        self.limits = None;
        for n in 0..self.slots.len() as u32 {
            if let State::Committed(mut e) = self.state(n)
                && e.place == Place::Active
            {
                self.dequeue(n, e);
                e.place = if e.hold { Place::Hold } else { Place::Deferred };
                e.due_us = 0;
                self.enqueue(n, e);
                self.set(n, State::Committed(e));
            }
        }
    }

    /// Whether a fresh commit of `nrcpt` recipients may go straight into
    /// the active set: there is room, and no older new mail waits.
    pub fn room_for_fresh(&self, nrcpt: u32) -> bool {
        self.incoming.is_empty() && self.room(nrcpt)
    }

    fn room(&self, nrcpt: u32) -> bool {
        let Some(l) = self.limits else { return false };
        self.active_msgs < l.messages
            && (self.active_msgs == 0
                || self.active_rcpts + u64::from(nrcpt) <= u64::from(l.recipients))
    }

    /// The next message for the active set, if one is due and fits:
    /// new and deferred mail in turn.
    pub fn offer(&mut self, now_us: u64) -> Option<Entry> {
        let new = self.incoming.first().map(|&(_, n)| (n, false));
        let old = self
            .deferred
            .first()
            .filter(|(due, _)| *due <= now_us)
            .map(|&(_, n)| (n, true));
        let order = if self.prefer_deferred {
            [old, new]
        } else {
            [new, old]
        };
        for (n, was_deferred) in order.into_iter().flatten() {
            let State::Committed(mut e) = self.state(n) else {
                continue;
            };
            if !self.room(e.nrcpt) {
                continue;
            }
            self.dequeue(n, e);
            e.place = Place::Active;
            self.enqueue(n, e);
            self.set(n, State::Committed(e));
            self.prefer_deferred = !was_deferred;
            return Some(e);
        }
        None
    }

    /// When the next deferred message falls due, if later than now.
    pub fn next_due(&self) -> Option<u64> {
        self.deferred.first().map(|(due, _)| *due)
    }

    /// Messages outside the active set by slot number, from `cursor`:
    /// one page and the next cursor (0 at the end).
    pub fn list(&self, cursor: u32, max: usize) -> (Vec<Entry>, u32) {
        let mut out = Vec::new();
        let start = cursor.max(1) as usize;
        for n in start..self.slots.len() {
            if let State::Committed(e) = self.slots[n]
                && e.place != Place::Active
            {
                if out.len() == max {
                    return (out, n as u32);
                }
                out.push(e);
            }
        }
        (out, 0)
    }

    /// Active-set occupancy (messages, recipients).
    #[cfg(test)]
    pub fn active(&self) -> (u32, u64) {
        (self.active_msgs, self.active_rcpts)
    }
}
