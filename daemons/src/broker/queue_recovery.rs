//! Recovery: after a (re)start the broker lists the slot directory and
//! reads the files in batches while it already serves. Committed messages
//! join the order, uncommitted ones return to the pool, corrupt ones move
//! to corrupt/, and files this version must not touch (a newer queue-file
//! version, one it cannot open) are left where they are, named in the log.
use super::*;

/// What recovery did with a batch of files.
#[derive(Debug, Default)]
pub struct Recovered {
    pub committed: usize,
    pub freed: usize,
    pub set_aside: usize,
    /// Files still to read.
    pub left: usize,
    /// A shortage (descriptors, memory) stopped this batch; the file it
    /// hit is read again on the next call.
    pub shortage: Option<std::io::Error>,
}

/// An error that passes (no descriptor or memory to spare right now), as
/// opposed to one about the file itself.
fn is_shortage(e: &std::io::Error) -> bool {
    use nix::errno::Errno;
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(
            Errno::EMFILE
                | Errno::ENFILE
                | Errno::ENOMEM
                | Errno::ENOBUFS
                | Errno::EINTR
                | Errno::EAGAIN
        )
    ) || e.kind() == std::io::ErrorKind::OutOfMemory
}

impl Queue {
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
    pub fn recover_some(&mut self, max: usize) -> Recovered {
        let mut out = Recovered::default();
        for _ in 0..max {
            let Some(n) = self.unscanned.pop() else { break };
            match self.recover_one(n) {
                Ok(Some(true)) => out.committed += 1,
                Ok(Some(false)) => out.freed += 1,
                Ok(None) => out.set_aside += 1,
                Err(e) if is_shortage(&e) => {
                    self.unscanned.push(n);
                    out.shortage = Some(e);
                    break;
                }
                Err(e) => {
                    // Not ours to judge (its owner or mode changed by
                    // hand, a disk error): named, left where it is, its
                    // slot never reused.
                    warn!(
                        "{}: cannot recover queue file ({e}); left in place",
                        slot_name(n)
                    );
                    self.set(n, State::Left);
                    out.set_aside += 1;
                }
            }
        }
        out.left = self.unscanned.len();
        if out.left == 0 {
            self.flush_in_recovery = false;
        }
        out
    }

    /// Reads every listed file (tests, and small queues).
    #[cfg(test)]
    pub fn recover(&mut self) -> std::io::Result<Vec<Entry>> {
        self.begin_recovery()?;
        if let Some(e) = self.recover_some(usize::MAX).shortage {
            return Err(e);
        }
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

    /// Some(true): committed; Some(false): freed; None: set aside (or left
    /// in place for a newer version).
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
        if let Some(h) = s.header.as_ref().filter(|h| h.version > rec::VERSION) {
            warn!(
                "{}: queue file version {} is newer than this Postern's ({}); left in place as slots/{} for the newer version to deliver",
                h.queue_id,
                h.version,
                rec::VERSION,
                slot_name(n)
            );
            self.set(n, State::Left);
            return Ok(None);
        }
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
                due_us: if self.flush_in_recovery {
                    0
                } else {
                    s.next_attempt_us
                },
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

    /// A free file found by recovery: emptied into the pool, or unlinked
    /// when the pool is full. Slots the reaper is still emptying count as
    /// pool files already (as in `release`): recovery runs while mail is
    /// delivered, and without them the pool would end up over its cap.
    fn recovered_free(&mut self, n: u32, empty: bool) -> std::io::Result<()> {
        let how = if self.free.len() + self.reaping >= self.spare_cap() {
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
}
