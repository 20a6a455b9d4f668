//! The queue: slot files that are reused, never renamed, and the order in
//! which the broker offers them to the queue manager.
//!
//! `queue_directory/slots/sNNNNNNN` are the queue files. A free slot is an
//! empty file in the spare pool; allocating one creates nothing and an
//! aborted transaction deletes nothing (it truncates the file and returns it
//! to the pool). A message's state lives in its records and in memory, not
//! in which directory the file sits in. Corrupt files move to `corrupt/`.
//!
//! **Descriptors.** The broker holds none per slot: a file is opened by name
//! for the one operation that needs it (allocation, commit, an append, a
//! read-only descriptor for the queue manager) and closed after it. So the
//! broker's descriptors are bounded by its channels, never by the queue.
//!
//! **Order.** The broker knows every committed message by a small entry
//! ([`Entry`], about 100 bytes with its index and set entries): where it is
//! ([`Place`]), when it arrived, when it is due. New mail waits in
//! `incoming` by arrival; mail tried before waits in `deferred` by its next
//! attempt; held mail in neither. The queue manager's active set is bounded
//! ([`Limits`]); [`Queue::offer`] fills it, alternating between new and
//! deferred mail so that neither starves the other (Postfix's qmgr scans its
//! incoming and deferred queues in turn).
//!
//! Emptying a file (ftruncate) waits on the filesystem journal, so it runs
//! on a reaper thread, off the broker's event loop: a removed message gets a
//! `Removed` record at once and its slot returns to the pool once emptied.
//! Beyond twice the pool size, released slots are unlinked instead, so a
//! drained backlog leaves no files (or memory) behind.
//!
//! **Recovery** lists the slot directory at start and reads the files in
//! batches ([`Queue::recover_some`]) while the broker already serves: new
//! mail and the first deliveries do not wait for a large backlog's scan.
use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, mpsc};

use nix::fcntl::{OFlag, openat};
use nix::sys::stat::Mode;
use postern_ipc::qmgr_broker::Limits;
pub use postern_ipc::qmgr_queue::Place;
use postern_proto::queue::{self as rec, Record, Tail};

use super::qid::{Qid, QueueIdGen};
use crate::{info, warn};

/// Who holds an allocated slot: a channel id from the broker's accept loop.
pub type Owner = u64;

/// A committed message, as the broker knows it between deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub qid: Qid,
    pub arrival_us: u64,
    /// When it may be offered (deferred), or 0.
    pub due_us: u64,
    pub nrcpt: u32,
    pub place: Place,
    /// The last hold record said on: given back, it goes on hold.
    pub hold: bool,
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// No file with this number.
    Vacant,
    /// Listed at start, not read yet.
    Unscanned,
    Free,
    /// Being emptied (or unlinked) by the reaper thread.
    Reaping,
    Allocated {
        qid: Qid,
        owner: Owner,
    },
    Committed(Entry),
    /// Left in place, unread and never reused: written by a newer Postern
    /// (a queue-file version above ours), for that version to deliver
    /// after an upgrade (an image rollback boots an older binary on the
    /// newer one's queue); or one this broker cannot read at all.
    Left,
}

/// What the reaper does with a released slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reap {
    Empty,
    Unlink,
}

/// A slot the reaper handled, and the error that kept it out if any.
type Reaped = (u32, Reap, Result<(), String>);

/// Empties or unlinks released slot files on its own thread.
struct Reaper {
    tx: mpsc::Sender<(u32, Reap)>,
    done: Arc<Mutex<Vec<Reaped>>>,
}

impl Reaper {
    fn start(dir: OwnedFd) -> std::io::Result<Reaper> {
        let (tx, rx) = mpsc::channel::<(u32, Reap)>();
        let done = Arc::new(Mutex::new(Vec::new()));
        let out = done.clone();
        std::thread::Builder::new()
            .name("slot-reaper".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    for (n, how) in std::iter::once(first).chain(rx.try_iter()) {
                        let r = reap(&dir, n, how).map_err(|e| e.to_string());
                        out.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((n, how, r));
                    }
                }
            })?;
        Ok(Reaper { tx, done })
    }
}

/// Empties a slot file through a writer of its own and closes it: ext4
/// flushes a file emptied this way when a writer closes it (auto_da_alloc),
/// and spending that here keeps the flush off cleanup's next write, which
/// the group commit covers. Or unlinks a slot the pool has no room for.
fn reap(dir: &OwnedFd, n: u32, how: Reap) -> std::io::Result<()> {
    match how {
        Reap::Unlink => nix::unistd::unlinkat(
            dir.as_fd(),
            slot_name(n).as_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        )
        .map_err(std::io::Error::from),
        Reap::Empty => {
            let f = File::from(openat(
                dir.as_fd(),
                slot_name(n).as_str(),
                OFlag::O_WRONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
                Mode::empty(),
            )?);
            f.set_len(0)
        }
    }
}

pub struct Queue {
    slots_dir: OwnedFd,
    corrupt_dir: OwnedFd,
    /// By slot number.
    slots: Vec<State>,
    free: Vec<u32>,
    /// Numbers with no file, for new slots.
    vacant: Vec<u32>,
    /// Recovery's to-do list, highest first (popped from the end).
    unscanned: Vec<u32>,
    by_id: HashMap<Qid, u32>,
    /// New mail by (arrival, slot).
    incoming: BTreeSet<(u64, u32)>,
    /// Mail tried before by (due, slot).
    deferred: BTreeSet<(u64, u32)>,
    /// The active set's limits while a queue manager is subscribed.
    limits: Option<Limits>,
    active_msgs: u32,
    active_rcpts: u64,
    /// Which kind of mail [`Queue::offer`] prefers next.
    prefer_deferred: bool,
    /// A flush came while recovery was still reading files: the deferred
    /// mail it finds later is due at once too.
    flush_in_recovery: bool,
    reaping: usize,
    pool_size: usize,
    ids: QueueIdGen,
    reaper: Option<Reaper>,
    /// Slot files created since the last sync (their directory entries need
    /// the next sync too; syncfs covers them).
    pub created: u64,
}

fn slot_name(n: u32) -> String {
    format!("s{n:07}")
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("unknown queue id {0}")]
    Unknown(String),
    #[error("queue id {0} belongs to another channel")]
    NotOwner(String),
    #[error("queue file {0} is malformed: {1}")]
    Malformed(String, String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl Queue {
    /// Opens the slot and corrupt directories beneath the queue directory
    /// descriptor. Runs before the jail.
    pub fn open(queue_dir: &OwnedFd, pool_size: usize) -> std::io::Result<Queue> {
        // The master created both with the broker as owner.
        let sub = |name: &str| -> std::io::Result<OwnedFd> {
            Ok(openat(
                queue_dir.as_fd(),
                name,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?)
        };
        Ok(Queue {
            slots_dir: sub("slots")?,
            corrupt_dir: sub("corrupt")?,
            slots: vec![State::Vacant],
            free: Vec::new(),
            vacant: Vec::new(),
            unscanned: Vec::new(),
            by_id: HashMap::new(),
            incoming: BTreeSet::new(),
            deferred: BTreeSet::new(),
            limits: None,
            active_msgs: 0,
            active_rcpts: 0,
            prefer_deferred: false,
            flush_in_recovery: false,
            reaping: 0,
            pool_size,
            ids: QueueIdGen::default(),
            reaper: None,
            created: 0,
        })
    }

    pub fn dir_fd(&self) -> &OwnedFd {
        &self.slots_dir
    }

    /// Descriptors the jail must keep open.
    pub fn fds(&self) -> Vec<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        vec![self.slots_dir.as_raw_fd(), self.corrupt_dir.as_raw_fd()]
    }

    /// Empties released slots on a thread from now on. Without the thread,
    /// slots are emptied inline (slower, still correct).
    pub fn start_reaper(&mut self) -> std::io::Result<()> {
        self.reaper = Some(Reaper::start(self.slots_dir.try_clone()?)?);
        Ok(())
    }

    /// Takes back slots the reaper has handled.
    fn collect_reaped(&mut self) {
        let Some(r) = &self.reaper else { return };
        let done = std::mem::take(&mut *r.done.lock().unwrap_or_else(|e| e.into_inner()));
        for (n, how, r) in done {
            self.reaping = self.reaping.saturating_sub(1);
            match r {
                Ok(()) => self.reaped(n, how),
                // Left out of the pool: recovery on the next start sees
                // its Removed record (or no commit) and frees it.
                Err(e) => warn!("cannot empty queue file {}: {e}", slot_name(n)),
            }
        }
    }

    fn open_slot(&self, n: u32, flags: OFlag) -> std::io::Result<File> {
        Ok(File::from(openat(
            self.slots_dir.as_fd(),
            slot_name(n).as_str(),
            flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
            Mode::from_bits_truncate(0o600),
        )?))
    }

    fn state(&self, n: u32) -> State {
        self.slots.get(n as usize).copied().unwrap_or(State::Vacant)
    }

    fn set(&mut self, n: u32, st: State) {
        let i = n as usize;
        if i >= self.slots.len() {
            self.slots.resize(i + 1, State::Vacant);
        }
        self.slots[i] = st;
    }

    /// How many empty files the pool keeps; released slots beyond it are
    /// unlinked.
    fn spare_cap(&self) -> usize {
        (2 * self.pool_size).max(64)
    }

    /// A slot whose file was emptied (into the pool) or unlinked.
    fn reaped(&mut self, n: u32, how: Reap) {
        if how == Reap::Unlink {
            self.set(n, State::Vacant);
            self.vacant.push(n);
        } else {
            self.set(n, State::Free);
            self.free.push(n);
        }
    }

    /// Creates empty slot files until the pool holds `pool_size` of them.
    pub fn fill_pool(&mut self) -> std::io::Result<()> {
        self.collect_reaped();
        while self.free.len() < self.pool_size {
            self.create_slot()?;
        }
        Ok(())
    }

    fn create_slot(&mut self) -> std::io::Result<u32> {
        let n = match self.vacant.pop() {
            Some(n) => n,
            None => self.slots.len() as u32,
        };
        if let Err(e) = self.open_slot(n, OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL) {
            self.vacant.push(n);
            return Err(e);
        }
        self.set(n, State::Free);
        self.free.push(n);
        self.created += 1;
        Ok(n)
    }

    pub fn free_count(&mut self) -> usize {
        self.collect_reaped();
        self.free.len()
    }

    /// Bytes available to unprivileged writers on the queue file system.
    pub fn free_bytes(&self) -> std::io::Result<u64> {
        let st = nix::sys::statvfs::fstatvfs(&self.slots_dir)?;
        Ok(st.blocks_available() as u64 * st.fragment_size() as u64)
    }

    /// Hands out a queue id and a fresh descriptor of a pooled file.
    pub fn allocate(&mut self, owner: Owner) -> std::io::Result<(String, OwnedFd)> {
        self.collect_reaped();
        let n = match self.free.pop() {
            Some(n) => n,
            None => {
                self.create_slot()?;
                self.free.pop().expect("just created")
            }
        };
        let mut id = self.ids.next();
        while self.by_id.contains_key(&id) {
            id = self.ids.next();
        }
        // A new open file description: offset 0, independent of ours.
        let fd = match self.open_slot(n, OFlag::O_RDWR) {
            Ok(f) => OwnedFd::from(f),
            Err(e) => {
                self.free.push(n);
                return Err(e);
            }
        };
        self.set(n, State::Allocated { qid: id, owner });
        self.by_id.insert(id, n);
        Ok((id.as_str().to_string(), fd))
    }

    fn slot_of(&self, id: &str) -> Result<u32, QueueError> {
        Qid::new(id)
            .and_then(|q| self.by_id.get(&q).copied())
            .ok_or_else(|| QueueError::Unknown(id.into()))
    }

    fn owned(&self, id: &str, owner: Owner) -> Result<u32, QueueError> {
        let n = self.slot_of(id)?;
        match self.state(n) {
            State::Allocated { owner: o, .. } if o == owner => Ok(n),
            _ => Err(QueueError::NotOwner(id.into())),
        }
    }

    /// Checks that the file holds a complete, well-formed message for `id`
    /// (nothing half-written is ever made visible), then appends the commit
    /// record. The caller syncs and then calls [`Queue::mark_committed`].
    pub fn prepare_commit(
        &mut self,
        id: &str,
        owner: Owner,
        at_us: u64,
    ) -> Result<rec::Summary, QueueError> {
        let n = self.owned(id, owner)?;
        let file = self.open_slot(n, OFlag::O_RDWR)?;
        let buf = crate::fsutil::read_queue_file(&file)?;
        let (records, tail) = rec::decode_all(&buf);
        let s = rec::summarize(&records, buf.len() as u64);
        let bad = |why: &str| Err(QueueError::Malformed(id.into(), why.into()));
        if tail != Tail::Clean {
            return bad(&format!("{tail:?}"));
        }
        match &s.header {
            Some(h) if h.queue_id == id && h.version <= rec::VERSION => {}
            _ => return bad("missing or foreign header record"),
        }
        if !s.content_complete || s.recipients.is_empty() || s.committed || s.sender.is_none() {
            return bad("incomplete envelope or content");
        }
        file.write_all_at(&rec::encode(&Record::Commit { at_us }), buf.len() as u64)?;
        Ok(s)
    }

    /// Makes a commit visible: into the active set at once (`active`, its
    /// envelope goes along) or into the incoming queue.
    /// `hold`: the message was committed on hold (and is neither).
    pub fn mark_committed(
        &mut self,
        id: &str,
        arrival_us: u64,
        nrcpt: u32,
        active: bool,
        hold: bool,
    ) {
        let Ok(n) = self.slot_of(id) else { return };
        let State::Allocated { qid, .. } = self.state(n) else {
            return;
        };
        let e = Entry {
            qid,
            arrival_us,
            due_us: 0,
            nrcpt,
            place: if hold {
                Place::Hold
            } else if active {
                Place::Active
            } else {
                Place::Incoming
            },
            hold,
        };
        self.set(n, State::Committed(e));
        self.enqueue(n, e);
    }

    /// Returns an allocated (uncommitted) slot to the pool.
    pub fn abort(&mut self, id: &str, owner: Owner) -> Result<(), QueueError> {
        let n = self.owned(id, owner)?;
        self.release(n)
    }

    fn release(&mut self, n: u32) -> Result<(), QueueError> {
        let st = self.state(n);
        if let State::Committed(e) = st {
            // Marks the file free for recovery, should the broker stop
            // before the reaper empties it.
            self.open_slot(n, OFlag::O_WRONLY | OFlag::O_APPEND)
                .and_then(|mut f| {
                    std::io::Write::write_all(&mut f, &rec::encode(&Record::Removed))
                })?;
            self.dequeue(n, e);
        }
        if let State::Allocated { qid, .. } | State::Committed(Entry { qid, .. }) = st {
            self.by_id.remove(&qid);
        }
        self.collect_reaped();
        let how = if self.free.len() + self.reaping >= self.spare_cap() {
            Reap::Unlink
        } else {
            Reap::Empty
        };
        match &self.reaper {
            Some(r) => {
                r.tx.send((n, how))
                    .map_err(|_| std::io::Error::other("slot-reaper thread gone"))?;
                self.reaping += 1;
                self.set(n, State::Reaping);
            }
            None => {
                reap(&self.slots_dir, n, how)?;
                self.reaped(n, how);
            }
        }
        Ok(())
    }

    /// Aborts every uncommitted slot of a channel that went away.
    pub fn abort_owner(&mut self, owner: Owner) -> Vec<String> {
        let mine: Vec<(u32, Qid)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(n, s)| match s {
                State::Allocated { qid, owner: o } if *o == owner => Some((n as u32, *qid)),
                _ => None,
            })
            .collect();
        let mut ids = Vec::new();
        for (n, qid) in mine {
            if self.release(n).is_ok() {
                ids.push(qid.as_str().to_string());
            }
        }
        ids
    }

    fn committed_slot(&self, id: &str) -> Result<(u32, Entry), QueueError> {
        let n = self.slot_of(id)?;
        match self.state(n) {
            State::Committed(e) => Ok((n, e)),
            _ => Err(QueueError::Unknown(id.into())),
        }
    }

    /// A committed message's entry.
    #[cfg(test)]
    pub fn entry(&self, id: &str) -> Option<Entry> {
        self.committed_slot(id).ok().map(|(_, e)| e)
    }

    /// A read-only descriptor of a committed message, for the queue manager
    /// and (through it) the delivery agents.
    pub fn open_readonly(&self, id: &str) -> Result<OwnedFd, QueueError> {
        let (n, _) = self.committed_slot(id)?;
        Ok(OwnedFd::from(self.open_slot(n, OFlag::O_RDONLY)?))
    }

    /// Frees a committed message's file (every recipient is done, or the
    /// admin deleted it).
    pub fn remove(&mut self, id: &str) -> Result<(), QueueError> {
        let (n, _) = self.committed_slot(id)?;
        self.release(n)
    }

    /// Messages and the oldest arrival (µs) in each place, for the queue
    /// gauges: in the order incoming, active, deferred, hold.
    pub fn figures(&self) -> [(Place, u64, u64); 4] {
        let mut out = [
            (Place::Incoming, 0, u64::MAX),
            (Place::Active, 0, u64::MAX),
            (Place::Deferred, 0, u64::MAX),
            (Place::Hold, 0, u64::MAX),
        ];
        for s in &self.slots {
            if let State::Committed(e) = s {
                let i = match e.place {
                    Place::Incoming => 0,
                    Place::Active => 1,
                    Place::Deferred => 2,
                    Place::Hold => 3,
                };
                out[i].1 += 1;
                out[i].2 = out[i].2.min(e.arrival_us);
            }
        }
        out
    }

    /// Committed messages.
    #[cfg(test)]
    pub fn committed_count(&self) -> usize {
        self.by_id.len()
            - self
                .slots
                .iter()
                .filter(|s| matches!(s, State::Allocated { .. }))
                .count()
    }
}

#[path = "queue_order.rs"]
mod order;

#[path = "queue_recovery.rs"]
mod recovery;
pub use recovery::Recovered;

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
