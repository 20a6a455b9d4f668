//! The queue: slot files that are reused, never renamed.
//!
//! `queue_directory/slots/sNNNNNN` are the queue files. A free slot is an
//! empty file in the spare pool; allocating one creates nothing and an
//! aborted transaction deletes nothing (it truncates the file and returns it
//! to the pool). A message's state lives in its records and in memory, not
//! in which directory the file sits in. Corrupt files move to `corrupt/`.
//!
//! Emptying a file (ftruncate) waits on the filesystem journal, so it runs
//! on a reaper thread, off the broker's event loop: a removed message gets a
//! `Removed` record at once and its slot returns to the pool once emptied.
use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, mpsc};

use nix::fcntl::{OFlag, openat};
use nix::sys::stat::Mode;
use postern_proto::queue::{self as rec, Record, Tail};

use crate::{info, warn};

/// Who holds an allocated slot: a channel id from the broker's accept loop.
pub type Owner = u64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MsgInfo {
    pub queue_id: String,
    pub sender: String,
    pub size: u64,
    pub nrcpt: u32,
    pub arrival_us: u64,
}

#[derive(Debug)]
enum State {
    Free,
    /// Being emptied by the reaper thread.
    Reaping,
    Allocated {
        queue_id: String,
        owner: Owner,
    },
    Committed(MsgInfo),
}

struct Slot {
    file: Arc<File>,
    state: State,
}

/// A slot the reaper handled: emptied, or the error that kept it out.
type Reaped = (u32, Result<(), String>);

/// Empties released slot files on its own thread.
struct Reaper {
    tx: mpsc::Sender<(u32, Arc<File>)>,
    /// Slots emptied and ready for the pool.
    done: Arc<Mutex<Vec<Reaped>>>,
}

impl Reaper {
    fn start(dir: OwnedFd) -> std::io::Result<Reaper> {
        let (tx, rx) = mpsc::channel::<(u32, Arc<File>)>();
        let done = Arc::new(Mutex::new(Vec::new()));
        let out = done.clone();
        std::thread::Builder::new()
            .name("slot-reaper".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    for (n, file) in std::iter::once(first).chain(rx.try_iter()) {
                        let r = file.set_len(0).map_err(|e| e.to_string());
                        // ext4 flushes a file emptied this way when a writer
                        // closes it (auto_da_alloc), which would put one
                        // disk write per message on cleanup. Closing a
                        // writer of the empty file here uses that up, and
                        // the group commit writes the next message.
                        let _ = openat(
                            dir.as_fd(),
                            slot_name(n).as_str(),
                            OFlag::O_WRONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
                            Mode::empty(),
                        );
                        out.lock().unwrap_or_else(|e| e.into_inner()).push((n, r));
                    }
                }
            })?;
        Ok(Reaper { tx, done })
    }
}

pub struct Queue {
    slots_dir: OwnedFd,
    corrupt_dir: OwnedFd,
    slots: HashMap<u32, Slot>,
    free: Vec<u32>,
    by_id: HashMap<String, u32>,
    next_slot: u32,
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
            slots: HashMap::new(),
            free: Vec::new(),
            by_id: HashMap::new(),
            next_slot: 1,
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

    /// Empties released slots on a thread from now on (after recovery,
    /// which empties files itself).
    /// Without the thread, slots are emptied inline (slower, still correct).
    pub fn start_reaper(&mut self) -> std::io::Result<()> {
        self.reaper = Some(Reaper::start(self.slots_dir.try_clone()?)?);
        Ok(())
    }

    /// Takes back slots the reaper has emptied.
    fn collect_reaped(&mut self) {
        let Some(r) = &self.reaper else { return };
        let done = std::mem::take(&mut *r.done.lock().unwrap_or_else(|e| e.into_inner()));
        for (n, r) in done {
            match r {
                Ok(()) => {
                    if let Some(slot) = self.slots.get_mut(&n) {
                        slot.state = State::Free;
                        self.free.push(n);
                    }
                }
                // Left out of the pool: recovery on the next start sees
                // its Removed record (or no commit) and frees it.
                Err(e) => warn!("cannot empty queue file {}: {e}", slot_name(n)),
            }
        }
    }

    fn open_slot(&self, n: u32, create: bool) -> std::io::Result<File> {
        let mut flags = OFlag::O_RDWR | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
        if create {
            flags |= OFlag::O_CREAT | OFlag::O_EXCL;
        }
        Ok(File::from(openat(
            self.slots_dir.as_fd(),
            slot_name(n).as_str(),
            flags,
            Mode::from_bits_truncate(0o600),
        )?))
    }

    /// Reads every slot after a (re)start: committed messages come back,
    /// uncommitted ones return to the pool, corrupt ones move aside.
    /// Returns the committed messages in arrival order.
    pub fn recover(&mut self) -> std::io::Result<Vec<MsgInfo>> {
        let dir = File::from(self.slots_dir.try_clone()?);
        let mut names = Vec::new();
        // Read the directory through /proc-free means: fdopendir is not in
        // std, so list through a dup of the descriptor with read_dir on its
        // /proc path is unavailable in the jail; use getdents via nix's Dir.
        let mut d = nix::dir::Dir::from_fd(dir.into())?;
        for e in d.iter().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(n) = name.strip_prefix('s').and_then(|n| n.parse::<u32>().ok()) {
                names.push(n);
            }
        }
        names.sort_unstable();
        let mut committed = Vec::new();
        for n in names {
            self.next_slot = self.next_slot.max(n + 1);
            let file = Arc::new(self.open_slot(n, false)?);
            // A file that cannot be read whole (over the cap, or an I/O
            // error) is set aside; the others are recovered. The broker
            // never dies over one file, so it cannot crash-loop over it.
            let buf = match crate::fsutil::read_queue_file(&*file) {
                Ok(b) => b,
                Err(e) => {
                    warn!(
                        "{}: cannot read queue file ({e}); moved to corrupt/{}",
                        slot_name(n),
                        slot_name(n)
                    );
                    self.set_aside(n)?;
                    continue;
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
            if s.committed && s.content_complete && version_ok && s.all_done() {
                // Delivered before the crash; only the removal was lost.
                let id = s.header.map(|h| h.queue_id).unwrap_or_default();
                info!("{id}: removed");
                file.set_len(0)?;
                self.slots.insert(
                    n,
                    Slot {
                        file,
                        state: State::Free,
                    },
                );
                self.free.push(n);
            } else if s.committed && s.content_complete && version_ok {
                let h = s.header.clone().expect("checked");
                if !matches!(tail, Tail::Clean) {
                    // A state record was being appended; drop the torn part.
                    file.set_len(valid)?;
                }
                let info = MsgInfo {
                    queue_id: h.queue_id.clone(),
                    sender: s.sender.map(|x| x.address).unwrap_or_default(),
                    size: s.size,
                    nrcpt: s.recipients.len() as u32,
                    arrival_us: h.arrival_us,
                };
                self.by_id.insert(h.queue_id.clone(), n);
                committed.push(info.clone());
                self.slots.insert(
                    n,
                    Slot {
                        file,
                        state: State::Committed(info),
                    },
                );
            } else if buf.is_empty()
                || (!s.committed && matches!(tail, Tail::Clean | Tail::Torn { .. }) && version_ok)
                || (records.is_empty() && matches!(tail, Tail::Torn { .. }))
            {
                if !buf.is_empty() {
                    let id = s.header.map(|h| h.queue_id).unwrap_or_default();
                    info!("{id}: removed uncommitted queue file (the client never got an OK)");
                    file.set_len(0)?;
                }
                self.slots.insert(
                    n,
                    Slot {
                        file,
                        state: State::Free,
                    },
                );
                self.free.push(n);
            } else {
                let id = s.header.map(|h| h.queue_id).unwrap_or_else(|| slot_name(n));
                let why = match &tail {
                    Tail::Corrupt { why, offset } => format!("{why} at offset {offset}"),
                    _ => "unsupported queue file version or missing records".to_string(),
                };
                warn!(
                    "{id}: corrupt queue file ({why}); moved to corrupt/{}",
                    slot_name(n)
                );
                self.set_aside(n)?;
            }
        }
        committed.sort_by_key(|m| m.arrival_us);
        Ok(committed)
    }

    /// Moves a slot file that recovery cannot use to corrupt/, where an
    /// admin can look at it; it is never reused.
    fn set_aside(&self, n: u32) -> std::io::Result<()> {
        nix::fcntl::renameat(
            self.slots_dir.as_fd(),
            slot_name(n).as_str(),
            self.corrupt_dir.as_fd(),
            format!("{}-{}", slot_name(n), std::process::id()).as_str(),
        )?;
        Ok(())
    }

    /// Creates empty slot files until the pool holds `pool_size` of them.
    pub fn fill_pool(&mut self) -> std::io::Result<()> {
        while self.free.len() < self.pool_size {
            self.create_slot()?;
        }
        Ok(())
    }

    fn create_slot(&mut self) -> std::io::Result<u32> {
        let n = self.next_slot;
        self.next_slot += 1;
        let file = Arc::new(self.open_slot(n, true)?);
        self.slots.insert(
            n,
            Slot {
                file,
                state: State::Free,
            },
        );
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
        let fd = match self.open_slot(n, false) {
            Ok(f) => OwnedFd::from(f),
            Err(e) => {
                self.free.push(n);
                return Err(e);
            }
        };
        let slot = self.slots.get_mut(&n).expect("slot exists");
        slot.state = State::Allocated {
            queue_id: id.clone(),
            owner,
        };
        self.by_id.insert(id.clone(), n);
        Ok((id, fd))
    }

    fn owned(&mut self, id: &str, owner: Owner) -> Result<u32, QueueError> {
        let n = *self
            .by_id
            .get(id)
            .ok_or_else(|| QueueError::Unknown(id.into()))?;
        match &self.slots[&n].state {
            State::Allocated { owner: o, .. } if *o == owner => Ok(n),
            _ => Err(QueueError::NotOwner(id.into())),
        }
    }

    /// Checks that the file holds a complete, well-formed message for `id`
    /// before it can be committed: nothing half-written is ever made visible.
    pub fn validate(&mut self, id: &str, owner: Owner) -> Result<rec::Summary, QueueError> {
        let n = self.owned(id, owner)?;
        let buf = crate::fsutil::read_queue_file(&*self.slots[&n].file)?;
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
        Ok(s)
    }

    /// Appends the commit record. The caller syncs and then calls
    /// [`Queue::mark_committed`].
    pub fn append_commit(&mut self, id: &str, owner: Owner, at_us: u64) -> Result<(), QueueError> {
        let n = self.owned(id, owner)?;
        let file = &self.slots[&n].file;
        let end = file.metadata()?.len();
        file.write_all_at(&rec::encode(&Record::Commit { at_us }), end)?;
        Ok(())
    }

    pub fn mark_committed(&mut self, id: &str, info: MsgInfo) {
        if let Some(&n) = self.by_id.get(id) {
            self.slots.get_mut(&n).expect("slot").state = State::Committed(info);
        }
    }

    /// Returns an allocated (uncommitted) slot to the pool.
    pub fn abort(&mut self, id: &str, owner: Owner) -> Result<(), QueueError> {
        let n = self.owned(id, owner)?;
        self.release(n)
    }

    fn release(&mut self, n: u32) -> Result<(), QueueError> {
        let slot = self.slots.get_mut(&n).expect("slot");
        if let State::Committed(_) = slot.state {
            // Marks the file free for recovery, should the broker stop
            // before the reaper empties it.
            let end = slot.file.metadata()?.len();
            slot.file
                .write_all_at(&rec::encode(&Record::Removed), end)?;
        }
        match &self.reaper {
            Some(r) => {
                r.tx.send((n, slot.file.clone()))
                    .map_err(|_| std::io::Error::other("slot-reaper thread gone"))?;
            }
            None => slot.file.set_len(0)?,
        }
        if let State::Allocated { queue_id, .. } | State::Committed(MsgInfo { queue_id, .. }) =
            &slot.state
        {
            self.by_id.remove(queue_id);
        }
        if self.reaper.is_some() {
            slot.state = State::Reaping;
        } else {
            slot.state = State::Free;
            self.free.push(n);
        }
        Ok(())
    }

    /// Aborts every uncommitted slot of a channel that went away.
    pub fn abort_owner(&mut self, owner: Owner) -> Vec<String> {
        let mine: Vec<(u32, String)> = self
            .slots
            .iter()
            .filter_map(|(n, s)| match &s.state {
                State::Allocated { queue_id, owner: o } if *o == owner => {
                    Some((*n, queue_id.clone()))
                }
                _ => None,
            })
            .collect();
        let mut ids = Vec::new();
        for (n, id) in mine {
            if self.release(n).is_ok() {
                ids.push(id);
            }
        }
        ids
    }

    fn committed_slot(&self, id: &str) -> Result<u32, QueueError> {
        let n = *self
            .by_id
            .get(id)
            .ok_or_else(|| QueueError::Unknown(id.into()))?;
        match self.slots[&n].state {
            State::Committed(_) => Ok(n),
            _ => Err(QueueError::Unknown(id.into())),
        }
    }

    /// A read-only descriptor of a committed message, for the queue manager
    /// and (through it) the delivery agents.
    pub fn open_readonly(&self, id: &str) -> Result<OwnedFd, QueueError> {
        let n = self.committed_slot(id)?;
        let fd = openat(
            self.slots_dir.as_fd(),
            slot_name(n).as_str(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )
        .map_err(std::io::Error::from)?;
        Ok(fd)
    }

    /// Appends state records to a committed message (the caller syncs).
    pub fn append_states(&mut self, id: &str, records: &[Record]) -> Result<(), QueueError> {
        let n = self.committed_slot(id)?;
        let file = &self.slots[&n].file;
        let mut buf = Vec::new();
        for r in records {
            buf.extend_from_slice(&rec::encode(r));
        }
        let end = file.metadata()?.len();
        file.write_all_at(&buf, end)?;
        Ok(())
    }

    /// Frees a committed message's file (every recipient is done, or the
    /// admin deleted it).
    pub fn remove(&mut self, id: &str) -> Result<(), QueueError> {
        let n = self.committed_slot(id)?;
        self.release(n)
    }

    pub fn committed(&self) -> Vec<MsgInfo> {
        let mut v: Vec<MsgInfo> = self
            .slots
            .values()
            .filter_map(|s| match &s.state {
                State::Committed(m) => Some(m.clone()),
                _ => None,
            })
            .collect();
        v.sort_by_key(|m| m.arrival_us);
        v
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
    pub fn next(&mut self) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.counter = self.counter.wrapping_add(1);
        let mut s = String::with_capacity(14);
        base52(now.as_secs(), 6, &mut s);
        base52(u64::from(now.subsec_micros()), 4, &mut s);
        base52(self.counter % 52u64.pow(4), 4, &mut s);
        s
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
        assert!(a < b, "{a} {b}");
        assert_eq!(a.len(), 14);
        let many: std::collections::HashSet<String> = (0..10_000).map(|_| g.next()).collect();
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
        let (id, fd) = q.allocate(owner).unwrap();
        let recs = [
            Record::Header(rec::Header {
                version: rec::VERSION,
                queue_id: id.clone(),
                arrival_us: 1,
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
        let s = q.validate(&id, owner).unwrap();
        q.append_commit(&id, owner, 2).unwrap();
        q.mark_committed(
            &id,
            MsgInfo {
                queue_id: id.clone(),
                sender: s.sender.unwrap().address,
                size: s.size,
                nrcpt: 1,
                arrival_us: 1,
            },
        );
        let n = q.by_id[&id];
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
        assert!(q.committed().is_empty());
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
            .map(|m| m.queue_id)
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
            .map(|m| m.queue_id)
            .collect();
        assert_eq!(back, vec![kept]);
        assert!(!back.contains(&gone));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        assert!(q.free.contains(&gone_n));
    }
}
