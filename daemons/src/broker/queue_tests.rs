//! Tests of the queue: slots, the order, recovery.
use super::*;

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
    q.mark_committed(&id, arrival_us, s.recipients.len() as u32, active, s.hold);
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

/// A queue file from a newer Postern (an image rolled back to an older
/// version on the newer one's data partition) is left exactly where and as
/// it is, and its slot is never handed out: the newer version delivers it
/// after the next upgrade.
#[test]
fn recovery_leaves_a_newer_version_s_file_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = queue_in(dir.path());
    q.recover().unwrap();
    q.fill_pool().unwrap();
    let (newer, newer_n) = commit_one(&mut q, 7);
    let (kept, _) = commit_one(&mut q, 7);
    drop(q);
    // Rewrite the first file's header as version VERSION + 1, with a
    // record type this version does not know after it.
    let path = dir.path().join("slots").join(slot_name(newer_n));
    let mut bytes = rec::encode(&Record::Header(rec::Header {
        version: rec::VERSION + 1,
        queue_id: newer.clone(),
        arrival_us: 1,
    }));
    bytes.extend_from_slice(&[0xff; 64]);
    std::fs::write(&path, &bytes).unwrap();

    let mut q = queue_in(dir.path());
    let back: Vec<String> = q
        .recover()
        .unwrap()
        .into_iter()
        .map(|m| m.qid.as_str().to_string())
        .collect();
    assert_eq!(back, vec![kept]);
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert_eq!(
        std::fs::read_dir(dir.path().join("corrupt"))
            .unwrap()
            .count(),
        0
    );
    q.fill_pool().unwrap();
    for _ in 0..8 {
        let (id, _fd) = q.allocate(9).unwrap();
        assert_ne!(q.slot_of(&id).unwrap(), newer_n);
    }
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
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
    let r = q.recover_some(100);
    assert_eq!((r.committed, r.left), (100, 50));
    // New mail meanwhile does not reuse a listed slot.
    let (fresh, n) = commit_at(&mut q, 8, 1000, false);
    assert!(n as usize > 150, "slot {n}");
    let r = q.recover_some(100);
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

/// A flush while recovery is still reading files also reaches the
/// deferred mail recovery finds afterwards (an admin's `postqueue -f`
/// right after a restart).
#[test]
fn a_flush_during_recovery_reaches_files_read_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = queue_in(dir.path());
    q.recover().unwrap();
    let ids: Vec<String> = (0..10)
        .map(|i| commit_at(&mut q, 7, i + 1, false).0)
        .collect();
    for id in &ids {
        q.append_states(
            id,
            &[Record::NextAttempt {
                at_us: u64::MAX / 2,
                attempts: 1,
            }],
        )
        .unwrap();
    }
    drop(q);
    let mut q = queue_in(dir.path());
    q.begin_recovery().unwrap();
    q.recover_some(4);
    q.flush();
    q.recover_some(100);
    q.subscribe(limits(100, 100));
    let mut n = 0;
    while q.offer(1000).is_some() {
        n += 1;
    }
    assert_eq!(n, 10, "every deferred message is due after the flush");
    // Without a flush, recovered deferred mail waits for its next attempt.
    drop(q);
    let mut q = queue_in(dir.path());
    q.recover().unwrap();
    q.subscribe(limits(100, 100));
    assert!(q.offer(1000).is_none());
}
