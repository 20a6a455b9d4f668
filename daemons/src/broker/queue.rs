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

use crate::{info, warn};

/// Who holds an allocated slot: a channel id from the broker's accept loop.
pub type Owner = u64;

/// A queue id, inline: ASCII letters and digits, at most 16.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Qid([u8; 16]);

impl Qid {
    pub fn new(s: &str) -> Option<Qid> {
        if s.is_empty() || s.len() > 16 || !s.bytes().all(|c| c.is_ascii_alphanumeric()) {
            return None;
        }
        let mut b = [0u8; 16];
        b[..s.len()].copy_from_slice(s.as_bytes());
        Some(Qid(b))
    }

    pub fn as_str(&self) -> &str {
        let n = self.0.iter().position(|&c| c == 0).unwrap_or(16);
        std::str::from_utf8(&self.0[..n]).unwrap_or("")
    }
}

impl std::fmt::Debug for Qid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

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

/// What recovery did with a batch of files.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    pub committed: usize,
    pub freed: usize,
    pub set_aside: usize,
    /// Files still to read.
    pub left: usize,
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

    /// Lists the slot directory after a (re)start. The files are read by
    /// [`Queue::recover_some`]; until then new slots get numbers no listed
    /// file has.
    pub fn begin_recovery(&mut self) -> std::io::Result<usize> {
        let dir = File::from(self.slots_dir.try_clone()?);
        let mut names = Vec::new();
        // fdopendir through nix: the jail has no /proc path to list.
        let mut d = nix::dir::Dir::from_fd(dir.into())?;
        for e in d.iter().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(n) = name.strip_prefix('s').and_then(|n| n.parse::<u32>().ok())
                && n > 0
                && n < u32::MAX / 2
            {
                names.push(n);
            }
        }
        names.sort_unstable();
        names.dedup();
        let max = names.last().copied().unwrap_or(0) as usize;
        self.slots = vec![State::Vacant; max + 1];
        for &n in &names {
            self.slots[n as usize] = State::Unscanned;
        }
        self.vacant = (1..=max as u32)
            .rev()
            .filter(|&n| matches!(self.slots[n as usize], State::Vacant))
            .collect();
        names.reverse();
        self.unscanned = names;
        Ok(self.unscanned.len())
    }

    /// Reads up to `max` listed files: committed messages join the order,
    /// uncommitted ones return to the pool, corrupt ones move aside. The
    /// broker never dies over one file, so it cannot crash-loop over it.
    pub fn recover_some(&mut self, max: usize) -> std::io::Result<Recovered> {
        let mut out = Recovered::default();
        for _ in 0..max {
            let Some(n) = self.unscanned.pop() else { break };
            match self.recover_one(n)? {
                Some(true) => out.committed += 1,
                Some(false) => out.freed += 1,
                None => out.set_aside += 1,
            }
        }
        out.left = self.unscanned.len();
        Ok(out)
    }

    /// Reads every listed file (tests, and small queues).
    #[cfg(test)]
    pub fn recover(&mut self) -> std::io::Result<Vec<Entry>> {
        self.begin_recovery()?;
        self.recover_some(usize::MAX)?;
        let mut v: Vec<Entry> = self
            .slots
            .iter()
            .filter_map(|s| match s {
                State::Committed(e) => Some(*e),
                _ => None,
            })
            .collect();
        v.sort_by_key(|e| e.arrival_us);
        Ok(v)
    }

    /// Some(true): committed; Some(false): freed; None: set aside.
    fn recover_one(&mut self, n: u32) -> std::io::Result<Option<bool>> {
        let file = match self.open_slot(n, OFlag::O_RDWR) {
            Ok(f) => f,
            // Gone since the listing (nothing else writes here).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.set(n, State::Vacant);
                self.vacant.push(n);
                return Ok(Some(false));
            }
            Err(e) => return Err(e),
        };
        let buf = match crate::fsutil::read_queue_file(&file) {
            Ok(b) => b,
            Err(e) => {
                warn!(
                    "{}: cannot read queue file ({e}); moved to corrupt/{}",
                    slot_name(n),
                    slot_name(n)
                );
                self.set_aside(n)?;
                return Ok(None);
            }
        };
        let (records, tail) = rec::decode_all(&buf);
        let valid = records
            .last()
            .map_or(0, |(off, r)| off + rec::encode(r).len() as u64);
        let s = rec::summarize(&records, valid);
        // A tail of zeros is space the kernel extended but never wrote.
        let tail = match tail {
            Tail::Corrupt { offset, .. } if buf[offset as usize..].iter().all(|&b| b == 0) => {
                Tail::Torn { offset }
            }
            t => t,
        };
        let version_ok = s.header.as_ref().is_some_and(|h| h.version <= rec::VERSION);
        let qid = s.header.as_ref().and_then(|h| Qid::new(&h.queue_id));
        if s.committed && s.content_complete && version_ok && s.all_done() {
            // Delivered before the crash; only the removal was lost.
            let id = s.header.map(|h| h.queue_id).unwrap_or_default();
            info!("{id}: removed");
            drop(file);
            self.recovered_free(n, false)?;
            Ok(Some(false))
        } else if s.committed
            && s.content_complete
            && version_ok
            && let Some(qid) = qid.filter(|q| !self.by_id.contains_key(q))
        {
            let h = s.header.clone().expect("checked");
            if !matches!(tail, Tail::Clean) {
                // A state record was being appended; drop the torn part.
                file.set_len(valid)?;
            }
            let e = Entry {
                qid,
                arrival_us: h.arrival_us,
                due_us: s.next_attempt_us,
                nrcpt: s.recipients.len() as u32,
                place: if s.hold {
                    Place::Hold
                } else if s.attempts == 0 {
                    Place::Incoming
                } else {
                    Place::Deferred
                },
                hold: s.hold,
            };
            self.by_id.insert(qid, n);
            self.set(n, State::Committed(e));
            self.enqueue(n, e);
            Ok(Some(true))
        } else if buf.is_empty()
            || (!s.committed && matches!(tail, Tail::Clean | Tail::Torn { .. }) && version_ok)
            || (records.is_empty() && matches!(tail, Tail::Torn { .. }))
        {
            if !buf.is_empty() {
                let id = s.header.map(|h| h.queue_id).unwrap_or_default();
                info!("{id}: removed uncommitted queue file (the client never got an OK)");
            }
            drop(file);
            self.recovered_free(n, buf.is_empty())?;
            Ok(Some(false))
        } else {
            let id = s
                .header
                .as_ref()
                .map(|h| h.queue_id.clone())
                .unwrap_or_else(|| slot_name(n));
            let why = match &tail {
                Tail::Corrupt { why, offset } => format!("{why} at offset {offset}"),
                _ if s.committed && qid.is_none() => "unusable queue id".to_string(),
                _ if s.committed => "a second file with the same queue id".to_string(),
                _ => "unsupported queue file version or missing records".to_string(),
            };
            warn!(
                "{id}: corrupt queue file ({why}); moved to corrupt/{}",
                slot_name(n)
            );
            self.set_aside(n)?;
            Ok(None)
        }
    }

    /// How many empty files the pool keeps; released slots beyond it are
    /// unlinked.
    fn spare_cap(&self) -> usize {
        (2 * self.pool_size).max(64)
    }

    /// A free file found by recovery: emptied into the pool, or unlinked
    /// when the pool is full.
    fn recovered_free(&mut self, n: u32, empty: bool) -> std::io::Result<()> {
        let how = if self.free.len() >= self.spare_cap() {
            Reap::Unlink
        } else {
            Reap::Empty
        };
        if how == Reap::Unlink || !empty {
            reap(&self.slots_dir, n, how)?;
        }
        self.reaped(n, how);
        Ok(())
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

    /// Moves a slot file that recovery cannot use to corrupt/, where an
    /// admin can look at it; it is never reused.
    fn set_aside(&mut self, n: u32) -> std::io::Result<()> {
        nix::fcntl::renameat(
            self.slots_dir.as_fd(),
            slot_name(n).as_str(),
            self.corrupt_dir.as_fd(),
            format!("{}-{}", slot_name(n), std::process::id()).as_str(),
        )?;
        self.set(n, State::Vacant);
        self.vacant.push(n);
        Ok(())
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
            Some(h) if h.queue_id == id && h.version == rec::VERSION => {}
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
    pub fn mark_committed(&mut self, id: &str, arrival_us: u64, nrcpt: u32, active: bool) {
        let Ok(n) = self.slot_of(id) else { return };
        let State::Allocated { qid, .. } = self.state(n) else {
            return;
        };
        let e = Entry {
            qid,
            arrival_us,
            due_us: 0,
            nrcpt,
            place: if active {
                Place::Active
            } else {
                Place::Incoming
            },
            hold: false,
        };
        self.set(n, State::Committed(e));
        if active {
            self.active_msgs += 1;
            self.active_rcpts += u64::from(nrcpt);
        } else {
            self.incoming.insert((arrival_us, n));
        }
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
    fn enqueue(&mut self, n: u32, e: Entry) {
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
    fn dequeue(&mut self, n: u32, e: Entry) {
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

    /// Frees a committed message's file (every recipient is done, or the
    /// admin deleted it).
    pub fn remove(&mut self, id: &str) -> Result<(), QueueError> {
        let (n, _) = self.committed_slot(id)?;
        self.release(n)
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

    /// Active-set occupancy (messages, recipients).
    #[cfg(test)]
    pub fn active(&self) -> (u32, u64) {
        (self.active_msgs, self.active_rcpts)
    }
}

/// Long, time-sortable queue ids in Postfix's alphabet (no vowels): six
/// base-52 digits of seconds, four of microseconds, four of a counter.
#[derive(Default)]
pub struct QueueIdGen {
    counter: u64,
}

const ALPHABET: &[u8; 52] = b"0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz";

fn base52(mut v: u64, width: usize, out: &mut String) {
    let mut buf = vec![b'0'; width];
    for slot in buf.iter_mut().rev() {
        *slot = ALPHABET[(v % 52) as usize];
        v /= 52;
    }
    out.push_str(std::str::from_utf8(&buf).expect("ascii"));
}

impl QueueIdGen {
    pub fn next(&mut self) -> Qid {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.counter = self.counter.wrapping_add(1);
        let mut s = String::with_capacity(14);
        base52(now.as_secs(), 6, &mut s);
        base52(u64::from(now.subsec_micros()), 4, &mut s);
        base52(self.counter % 52u64.pow(4), 4, &mut s);
        Qid::new(&s).expect("14 letters and digits")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time_and_are_unique() {
        let mut g = QueueIdGen::default();
        let a = g.next();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = g.next();
        assert!(a < b, "{a:?} {b:?}");
        assert_eq!(a.as_str().len(), 14);
        let many: std::collections::HashSet<Qid> = (0..10_000).map(|_| g.next()).collect();
        assert_eq!(many.len(), 10_000);
    }

    fn queue_in(dir: &std::path::Path) -> Queue {
        for sub in ["slots", "corrupt"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let fd = OwnedFd::from(File::open(dir).unwrap());
        Queue::open(&fd, 2).unwrap()
    }

    /// Writes a complete message into an allocated slot, as cleanup would,
    /// and commits it.
    fn commit_one(q: &mut Queue, owner: Owner) -> (String, u32) {
        commit_at(q, owner, 1, false)
    }

    fn commit_at(q: &mut Queue, owner: Owner, arrival_us: u64, active: bool) -> (String, u32) {
        let (id, fd) = q.allocate(owner).unwrap();
        let recs = [
            Record::Header(rec::Header {
                version: rec::VERSION,
                queue_id: id.clone(),
                arrival_us,
            }),
            Record::Sender(rec::Sender {
                address: "a@example.org".into(),
                ret: 0,
                envid: String::new(),
                smtputf8: false,
                body_8bit: false,
            }),
            Record::Recipient(rec::Recipient {
                address: "b@example.org".into(),
                orcpt: String::new(),
                notify: 0,
            }),
            Record::Content(b"Subject: x\r\n\r\nbody\r\n".to_vec()),
            Record::EndOfContent {
                size: 22,
                nrcpt: 1,
                message_id: String::new(),
            },
        ];
        let mut f = File::from(fd);
        for r in &recs {
            std::io::Write::write_all(&mut f, &rec::encode(r)).unwrap();
        }
        let s = q.prepare_commit(&id, owner, 2).unwrap();
        q.mark_committed(&id, arrival_us, s.recipients.len() as u32, active);
        let n = q.slot_of(&id).unwrap();
        (id, n)
    }

    #[test]
    fn removed_slots_come_back_empty_through_the_reaper() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = queue_in(dir.path());
        q.recover().unwrap();
        q.fill_pool().unwrap();
        q.start_reaper().unwrap();
        let (id, n) = commit_one(&mut q, 7);
        assert!(
            std::fs::metadata(dir.path().join("slots").join(slot_name(n)))
                .unwrap()
                .len()
                > 0
        );
        q.remove(&id).unwrap();
        // Not in the pool until emptied; then back, with length zero.
        let t0 = std::time::Instant::now();
        while !q.free.contains(&n) {
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(10),
                "never reaped"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
            q.collect_reaped();
        }
        let len = std::fs::metadata(dir.path().join("slots").join(slot_name(n)))
            .unwrap()
            .len();
        assert_eq!(len, 0);
        assert_eq!(q.committed_count(), 0);
        assert!(matches!(q.remove(&id), Err(QueueError::Unknown(_))));
    }

    /// A slot file longer than the queue-file cap (here a sparse one, as a
    /// sibling gone wrong could write) is moved to corrupt/ with a log
    /// line; the broker recovers the rest and does not die over it.
    #[test]
    fn recovery_sets_aside_a_file_over_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = queue_in(dir.path());
        q.recover().unwrap();
        q.fill_pool().unwrap();
        let (big, big_n) = commit_one(&mut q, 7);
        let (kept, _) = commit_one(&mut q, 7);
        let path = dir.path().join("slots").join(slot_name(big_n));
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(crate::fsutil::queue_file_cap() + 1)
            .unwrap();
        drop(q);

        let mut q = queue_in(dir.path());
        let back: Vec<String> = q
            .recover()
            .unwrap()
            .into_iter()
            .map(|m| m.qid.as_str().to_string())
            .collect();
        assert_eq!(back, vec![kept]);
        assert!(!back.contains(&big));
        assert!(!path.exists());
        let aside: Vec<_> = std::fs::read_dir(dir.path().join("corrupt"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
        assert!(aside[0].starts_with(&slot_name(big_n)), "{aside:?}");
    }

    #[test]
    fn recovery_frees_a_removed_file_that_was_never_emptied() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = queue_in(dir.path());
        q.recover().unwrap();
        q.fill_pool().unwrap();
        // No reaper: but stop as if killed between the Removed record and the
        // emptying, by writing the record by hand.
        let (gone, gone_n) = commit_one(&mut q, 7);
        let (kept, _) = commit_one(&mut q, 7);
        let path = dir.path().join("slots").join(slot_name(gone_n));
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut f, &rec::encode(&Record::Removed)).unwrap();
        drop(q);

        let mut q = queue_in(dir.path());
        let back: Vec<String> = q
            .recover()
            .unwrap()
            .into_iter()
            .map(|m| m.qid.as_str().to_string())
            .collect();
        assert_eq!(back, vec![kept]);
        assert!(!back.contains(&gone));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        assert!(q.free.contains(&gone_n));
    }

    fn limits(messages: u32, recipients: u32) -> Limits {
        Limits {
            messages,
            recipients,
        }
    }

    /// The active set never holds more than its limits; new mail goes in
    /// arrival order; new and due deferred mail take turns; mail that is
    /// not yet due, or on hold, is never offered.
    #[test]
    fn the_active_set_is_bounded_ordered_and_fair() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = queue_in(dir.path());
        q.recover().unwrap();
        q.fill_pool().unwrap();
        // Nothing is offered without a subscriber.
        let (a, _) = commit_at(&mut q, 7, 30, false);
        assert!(q.offer(100).is_none());
        q.subscribe(limits(2, 100));
        let (b, _) = commit_at(&mut q, 7, 10, false);
        let (c, _) = commit_at(&mut q, 7, 20, false);
        // Arrival order, not commit order; two at most.
        assert_eq!(q.offer(100).unwrap().qid.as_str(), b);
        assert_eq!(q.offer(100).unwrap().qid.as_str(), c);
        assert!(q.offer(100).is_none());
        assert_eq!(q.active(), (2, 2));
        assert!(!q.room_for_fresh(1));
        // b is deferred until 500; c is done. a goes in.
        q.give_back(&b, 500).unwrap();
        q.remove(&c).unwrap();
        assert_eq!(q.offer(100).unwrap().qid.as_str(), a);
        assert!(q.offer(100).is_none(), "b is not due yet");
        assert_eq!(q.next_due(), Some(500));
        q.give_back(&a, 400).unwrap();
        // Two due deferred and two new: they alternate.
        let (d, _) = commit_at(&mut q, 7, 40, false);
        let (e, _) = commit_at(&mut q, 7, 50, false);
        let mut got = Vec::new();
        while let Some(x) = q.offer(1000) {
            got.push(x.qid.as_str().to_string());
            if got.len() == 2 {
                for id in &got {
                    q.remove(id).unwrap();
                }
            }
            if got.len() == 4 {
                break;
            }
        }
        assert_eq!(got.len(), 4, "{got:?}");
        let kinds: Vec<bool> = got.iter().map(|id| *id == a || *id == b).collect();
        assert!(
            kinds.windows(2).all(|w| w[0] != w[1]),
            "new and deferred alternate: {got:?}"
        );
        assert_eq!(
            got.iter().filter(|x| **x == d || **x == e).count(),
            2,
            "{got:?}"
        );
        // A held message is never offered; released, it is due at once.
        for id in &got[2..] {
            q.remove(id).unwrap();
        }
        let (h, _) = commit_at(&mut q, 7, 60, false);
        q.append_states(&h, &[Record::Hold(true)]).unwrap();
        assert!(q.offer(1000).is_none());
        q.append_states(&h, &[Record::Hold(false)]).unwrap();
        assert_eq!(q.offer(1000).unwrap().qid.as_str(), h);
        // A queue manager that goes away leaves its set due again.
        q.release_active();
        assert_eq!(q.active(), (0, 0));
        assert!(q.offer(1000).is_none(), "no subscriber");
        q.subscribe(limits(10, 10));
        assert_eq!(q.offer(1000).unwrap().qid.as_str(), h);
    }

    /// A message with more recipients than the recipient limit still gets
    /// in when the set is empty, and alone.
    #[test]
    fn a_message_larger_than_the_recipient_limit_goes_in_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = queue_in(dir.path());
        q.recover().unwrap();
        q.subscribe(limits(10, 1));
        let (a, _) = commit_at(&mut q, 7, 1, false);
        let (_b, _) = commit_at(&mut q, 7, 2, false);
        assert!(q.offer(10).is_some());
        assert!(q.offer(10).is_none());
        q.remove(&a).unwrap();
        assert!(q.offer(10).is_some());
    }

    /// Recovery reads listed files in batches; slots created meanwhile get
    /// numbers no listed file has; a backlog leaves no files behind once
    /// drained beyond twice the pool.
    #[test]
    fn recovery_in_batches_and_a_drained_backlog_leaves_no_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = queue_in(dir.path());
        q.recover().unwrap();
        let ids: Vec<String> = (0..150)
            .map(|i| commit_at(&mut q, 7, i + 1, false).0)
            .collect();
        drop(q);
        let mut q = queue_in(dir.path());
        assert_eq!(q.begin_recovery().unwrap(), 150);
        q.fill_pool().unwrap();
        let r = q.recover_some(100).unwrap();
        assert_eq!((r.committed, r.left), (100, 50));
        // New mail meanwhile does not reuse a listed slot.
        let (fresh, n) = commit_at(&mut q, 8, 1000, false);
        assert!(n as usize > 150, "slot {n}");
        let r = q.recover_some(100).unwrap();
        assert_eq!((r.committed, r.left), (50, 0));
        assert_eq!(q.committed_count(), 151);
        q.subscribe(limits(1000, 1000));
        q.start_reaper().unwrap();
        let mut offered = 0;
        while let Some(e) = q.offer(u64::MAX) {
            q.remove(e.qid.as_str()).unwrap();
            offered += 1;
        }
        assert_eq!(offered, 151);
        assert!(ids.iter().all(|id| q.entry(id).is_none()));
        assert!(q.entry(&fresh).is_none());
        let t0 = std::time::Instant::now();
        loop {
            q.collect_reaped();
            if q.reaping == 0 {
                break;
            }
            assert!(t0.elapsed() < std::time::Duration::from_secs(10));
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let files = std::fs::read_dir(dir.path().join("slots")).unwrap().count();
        assert!(files <= 64, "{files} slot files left");
        assert_eq!(files, q.free.len());
    }
}
