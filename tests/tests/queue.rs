//! The broker's queue: reusable slot files, nothing created or deleted for
//! an aborted transaction.
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use postern_tests::{Instance, wait_for};

/// Slot file name -> (inode, size).
fn slots(inst: &Instance) -> BTreeMap<String, (u64, u64)> {
    std::fs::read_dir(inst.data_dir().join("queue/slots"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                (m.ino(), m.len()),
            )
        })
        .collect()
}

#[test]
fn aborted_transactions_create_and_delete_nothing() {
    let mut inst = Instance::new(
        "smtpd_error_sleep_time = 0\nmessage_size_limit = 1000\nqueue_file_pool_size = 8\n",
    );
    inst.start();
    let before = slots(&inst);
    assert_eq!(before.len(), 8, "{before:?}");
    assert!(before.values().all(|(_, size)| *size == 0));
    for i in 0..60 {
        let mut c = inst.smtp();
        c.reply();
        c.cmd("EHLO client.example");
        assert!(c.cmd("MAIL FROM:<a@example.org>").starts_with("250"));
        assert!(c.cmd("RCPT TO:<root@localhost>").starts_with("250"));
        match i % 4 {
            // RSET after recipients.
            0 => assert_eq!(c.cmd("RSET"), "250 2.0.0 Ok\r\n"),
            // A message over the size limit, refused after DATA.
            1 => {
                assert!(c.cmd("DATA").starts_with("354"));
                c.send(format!("Subject: big\r\n\r\n{}\r\n.\r\n", "x".repeat(2000)).as_bytes());
                assert_eq!(c.reply(), "552 5.3.4 Error: message file too big\r\n");
            }
            // The client vanishes in the middle of DATA.
            2 => {
                assert!(c.cmd("DATA").starts_with("354"));
                c.send(b"Subject: half\r\n\r\nhalf a mess");
            }
            // The client vanishes after RCPT.
            _ => {}
        }
        drop(c);
    }
    // Every transaction ended; the pool is exactly as it was.
    wait_for("pool restored", Duration::from_secs(10), || {
        (slots(&inst) == before).then_some(())
    });
    assert!(inst.queued_ids().is_empty());
    // A committed message takes a pooled file; no new file is created.
    let mut c = inst.smtp();
    c.reply();
    c.cmd("EHLO client.example");
    assert!(
        c.send_mail(
            "a@example.org",
            &["root@localhost"],
            "Subject: kept\r\n\r\nkept\r\n"
        )
        .starts_with("250")
    );
    let after = slots(&inst);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    assert_eq!(after.iter().filter(|(_, (_, s))| *s > 0).count(), 1);
    assert!(
        after.iter().all(|(name, (ino, _))| before[name].0 == *ino),
        "a slot file was replaced"
    );
}
