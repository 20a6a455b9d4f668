//! Fault injection under load (issue 7): kill -9 of every role at random
//! moments, at least 100 times, with a printed seed. Every message that was
//! accepted (a 250 over SMTP, exit 0 from sendmail) must arrive, intact, at
//! the sink or in a Maildir; what arrived without an acceptance and what
//! arrived twice is counted and reported.
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use postern_tests::{Instance, Sink, bin, numbered_message, try_send, verify_numbered, wait_for};

const ROLES: [&str; 7] = [
    "smtpd", "cleanup", "broker", "qmgr", "smtp", "local", "pickup",
];

/// Where each kind of traffic goes, and how its deliveries are found.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Path {
    /// SMTP in, relayed to the sink.
    Relay,
    /// SMTP in, delivered to the Maildir of `daemon`.
    Local,
    /// sendmail in (pickup), delivered to the Maildir of `bin`.
    Pickup,
}

impl Path {
    fn tag(self) -> &'static str {
        match self {
            Path::Relay => "fr",
            Path::Local => "fl",
            Path::Pickup => "fp",
        }
    }
}

/// Every delivered copy, by path and number. A copy whose body is not
/// exactly what was sent fails the test: nothing is ever delivered half.
fn delivered(inst: &Instance, sink: &Sink) -> BTreeMap<(Path, usize), usize> {
    let mut seen = BTreeMap::new();
    for (_, content) in sink.messages() {
        let n = verify_numbered(&content, Path::Relay.tag())
            .unwrap_or_else(|e| panic!("a damaged message reached the sink: {e}"));
        *seen.entry((Path::Relay, n)).or_default() += 1;
    }
    for (user, path) in [("daemon", Path::Local), ("bin", Path::Pickup)] {
        for m in inst.maildir(user) {
            // Maildir files use LF; the message was sent with CRLF.
            let crlf = m.replace('\n', "\r\n");
            let n = verify_numbered(crlf.as_bytes(), path.tag())
                .unwrap_or_else(|e| panic!("a damaged message reached {user}'s Maildir: {e}"));
            *seen.entry((path, n)).or_default() += 1;
        }
    }
    seen
}

#[test]
fn kill_dash_nine_of_every_role_under_load_loses_nothing() {
    let s = postern_tests::seed("fault injection");
    let mut rng = fastrand::Rng::with_seed(s);
    // Quick retries, and no long crash throttle: kills are not crashes of
    // a bad build, and the test must end in bounded time.
    let mut inst = Instance::new(
        "smtpd_error_sleep_time = 0\nminimal_backoff_time = 1s\nmaximal_backoff_time = 2s\nservice_throttle_time = 1s\n",
    );
    let sink = Sink::start(&inst.ip, 2626, &inst.dir.path().join("sink"));
    inst.add_main_cf(&format!("relayhost = [{}]:{}\n", sink.ip, sink.port));
    inst.start();
    let home = inst.dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let accepted: Arc<Mutex<Vec<(Path, usize)>>> = Arc::default();
    let attempted = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for (c, path) in [Path::Relay, Path::Relay, Path::Local, Path::Pickup]
        .into_iter()
        .enumerate()
    {
        let (ip, port, stop, accepted, attempted) = (
            inst.ip.clone(),
            inst.smtp_port,
            stop.clone(),
            accepted.clone(),
            attempted.clone(),
        );
        let config = inst.config_dir().to_path_buf();
        let home = home.clone();
        clients.push(std::thread::spawn(move || {
            let mut n = c * 100_000;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                attempted.fetch_add(1, Ordering::SeqCst);
                let msg = numbered_message(path.tag(), n);
                let ok = match path {
                    Path::Relay | Path::Local => {
                        let to = if path == Path::Relay {
                            "dest@remote.example"
                        } else {
                            "daemon@localhost"
                        };
                        try_send(&ip, port, "faults@example.org", &[to], &msg)
                            .is_ok_and(|r| r.starts_with("250"))
                    }
                    // With its own From:, so pickup adds none to the header.
                    Path::Pickup => {
                        let mut m = b"From: faults@example.org\r\n".to_vec();
                        m.extend_from_slice(&msg);
                        sendmail(&config, &home, &m)
                    }
                };
                if ok {
                    accepted.lock().unwrap().push((path, n));
                } else {
                    // Do not spin while a role is down.
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }));
    }

    // At least 100 kills, bounded in time. Only running processes are
    // killed; a role that is being restarted (with backoff) is skipped.
    let t0 = Instant::now();
    let deadline = Duration::from_secs(240);
    let mut kills: BTreeMap<&str, usize> = BTreeMap::new();
    let mut total = 0;
    while total < 100 && t0.elapsed() < deadline {
        std::thread::sleep(Duration::from_millis(rng.u64(10..300)));
        let role = ROLES[rng.usize(..ROLES.len())];
        if let Some(pid) = inst.pid_of(role) {
            let r = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            if r.is_ok() {
                *kills.entry(role).or_default() += 1;
                total += 1;
            }
        }
    }
    // Let traffic run a little after the last kill, then stop it.
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    eprintln!("kills: {total} in {:?}: {kills:?}", t0.elapsed());
    assert!(total >= 100, "only {total} kills within {deadline:?}");
    for role in ROLES {
        assert!(kills.contains_key(role), "{role} was never killed");
    }
    let accepted = accepted.lock().unwrap().clone();
    for path in [Path::Relay, Path::Local, Path::Pickup] {
        let k = accepted.iter().filter(|(p, _)| *p == path).count();
        assert!(
            k >= 5,
            "too few {path:?} messages accepted to prove anything: {k}"
        );
    }

    // Settle: every accepted message arrives.
    wait_for(
        "every accepted message delivered",
        Duration::from_secs(120),
        || {
            let got = delivered(&inst, &sink);
            accepted.iter().all(|k| got.contains_key(k)).then_some(())
        },
    );
    inst.wait_queue_empty(Duration::from_secs(60));
    let got = delivered(&inst, &sink);
    let lost: Vec<_> = accepted.iter().filter(|k| !got.contains_key(k)).collect();
    let duplicates: usize = got.values().map(|c| c - 1).sum();
    let unacked = got.keys().filter(|k| !accepted.contains(k)).count();
    let report = format!(
        "fault injection: seed {s}, kills {total} {kills:?}, attempted {}, accepted {}, \
         delivered {}, delivered without acceptance {unacked}, duplicates {duplicates}, lost {}\n",
        attempted.load(Ordering::SeqCst),
        accepted.len(),
        got.len(),
        lost.len()
    );
    eprint!("{report}");
    // scripts/test.sh prints this after the run, pass or fail.
    let _ = std::fs::write(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("fault-injection.txt"),
        &report,
    );
    assert!(lost.is_empty(), "accepted but lost: {lost:?}");
    // Every kill was seen and followed by a restart.
    assert!(inst.log().contains("killed by signal 9"));
    // Every role runs again; the last one killed may still be in its
    // restart backoff (at most 10 s after repeated deaths).
    for role in ROLES {
        wait_for(
            &format!("{role} running again"),
            Duration::from_secs(30),
            || inst.pid_of(role),
        );
    }
}

/// One `sendmail -i` submission; true when sendmail exited 0 (accepted).
fn sendmail(config: &std::path::Path, home: &std::path::Path, msg: &[u8]) -> bool {
    use std::io::Write;
    let Ok(mut child) = Command::new(bin())
        .args([
            "sendmail",
            "-i",
            "-f",
            "faults@example.org",
            "bin@localhost",
        ])
        .env("MAIL_CONFIG", config)
        .env("HOME", home)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    let wrote = child.stdin.take().unwrap().write_all(msg).is_ok();
    child.wait().is_ok_and(|st| st.success()) && wrote
}

/// A tmpfs mounted over a directory for the length of a test.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .expect("mount");
        assert!(st.success(), "mount -t tmpfs on {}", dir.display());
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system holding `dir` with one file; returns its path.
fn fill(dir: &std::path::Path) -> std::path::PathBuf {
    use std::io::Write;
    let p = dir.join("filler");
    let mut f = std::fs::File::create(&p).unwrap();
    let block = vec![0x55u8; 64 * 1024];
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", p.display()),
        }
    }
    let _ = f.sync_all();
    p
}

#[test]
fn a_full_queue_file_system_refuses_new_mail_loses_nothing_and_recovers() {
    if !postern_tests::is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root (CI runs as root)");
        return;
    }
    let mut inst = Instance::new(
        "smtpd_error_sleep_time = 0\nminimal_backoff_time = 1s\nmaximal_backoff_time = 2s\n",
    );
    let sink = Sink::start(&inst.ip, 2626, &inst.dir.path().join("sink"));
    inst.add_main_cf(&format!("relayhost = [{}]:{}\n", sink.ip, sink.port));
    let queue = inst.data_dir().join("queue");
    let _tmpfs = Tmpfs::mount(&queue, "4m");
    inst.start();

    // Mail accepted before the disk fills stays queued: the next hop
    // answers 4xx for now.
    sink.set_mode("tempfail");
    let mut accepted = Vec::new();
    for n in 1..=5 {
        let r = try_send(
            &inst.ip,
            inst.smtp_port,
            "early@example.org",
            &["dest@remote.example"],
            &numbered_message("df", n),
        )
        .unwrap();
        assert!(r.starts_with("250"), "{r}");
        accepted.push(n);
    }
    let filler = fill(&queue);

    // New mail gets 452 at MAIL FROM, and the log names the sender.
    let mut c = inst.smtp();
    c.reply();
    assert!(c.cmd("EHLO client.example").starts_with("250"));
    assert_eq!(
        c.cmd("MAIL FROM:<full@example.org>"),
        "452 4.3.1 Insufficient system storage\r\n"
    );
    // The session goes on; the client may try again later.
    assert_eq!(c.cmd("NOOP"), "250 2.0.0 Ok\r\n");
    inst.wait_log(
        "NOQUEUE: reject: MAIL from unknown[127.0.0.1]: 452 4.3.1 Insufficient system storage; from=<full@example.org>",
        Duration::from_secs(5),
    );
    inst.wait_log(
        "not enough free space in mail queue",
        Duration::from_secs(5),
    );
    // Retries of the queued mail happen on the full disk meanwhile: their
    // results cannot be written, and are tried again, not lost.
    inst.wait_log("No space left on device", Duration::from_secs(15));
    inst.wait_log("will retry", Duration::from_secs(5));

    // Space that runs out in the middle of DATA: 4xx, nothing half-queued.
    std::fs::remove_file(&filler).unwrap();
    let free = {
        let st = nix::sys::statvfs::statvfs(&queue).unwrap();
        st.blocks_available() as u64 * st.fragment_size() as u64
    };
    std::fs::write(&filler, vec![0u8; (free - 256 * 1024) as usize]).unwrap();
    assert!(c.cmd("MAIL FROM:<big@example.org>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<dest@remote.example>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    // 600 KB of content where 256 KB are left.
    let line = format!("{}\r\n", "x".repeat(76));
    let big = format!("Subject: big\r\n\r\n{}", line.repeat(8000));
    c.send(big.as_bytes());
    assert_eq!(c.cmd("."), "451 4.3.0 Error: queue file write error\r\n");
    assert_eq!(c.cmd("RSET"), "250 2.0.0 Ok\r\n");

    // Space returns: Postern recovers by itself.
    std::fs::remove_file(&filler).unwrap();
    sink.set_mode("accept");
    wait_for("MAIL accepted again", Duration::from_secs(30), || {
        let r = c.cmd("MAIL FROM:<full@example.org>");
        if r.starts_with("250") {
            Some(())
        } else {
            assert!(r.starts_with("452"), "{r}");
            std::thread::sleep(Duration::from_millis(200));
            None
        }
    });
    assert!(c.cmd("RCPT TO:<dest@remote.example>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(&numbered_message("df", 6));
    let r = c.cmd(".");
    assert!(r.starts_with("250 2.0.0 Ok: queued as "), "{r}");
    accepted.push(6);
    wait_for(
        "every accepted message delivered",
        Duration::from_secs(60),
        || {
            let got: Vec<usize> = sink
                .messages()
                .iter()
                .map(|(_, c)| verify_numbered(c, "df").expect("intact"))
                .collect();
            accepted.iter().all(|n| got.contains(n)).then_some(())
        },
    );
    inst.wait_queue_empty(Duration::from_secs(30));
    inst.wait_queue_empty(Duration::from_secs(30));
    // No daemon died of it.
    let log = inst.log();
    assert!(
        !log.contains("killed by signal") && !log.contains("exited unexpectedly"),
        "{log}"
    );
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
fn at_the_descriptor_limit_new_clients_get_421_and_sessions_finish() {
    // Every daemon inherits a low RLIMIT_NOFILE from the master (raising a
    // running process's limit would need CAP_SYS_RESOURCE).
    const LIMIT: usize = 64;
    let mut inst = Instance::new("smtpd_error_sleep_time = 0\nqueue_file_pool_size = 4\n");
    inst.start_with_nofile(LIMIT as u64);
    let pid = inst.pid_of("smtpd").unwrap();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.contains(&format!(" {LIMIT} "))),
        "{limits}"
    );
    // Sessions in the middle of a transaction when the limit is reached.
    let mut busy: Vec<postern_tests::Smtp> = (0..3)
        .map(|_| {
            let mut c = inst.smtp();
            assert!(c.reply().starts_with("220"));
            assert!(c.cmd("EHLO client.example").starts_with("250"));
            assert!(c.cmd("MAIL FROM:<busy@example.org>").starts_with("250"));
            assert!(c.cmd("RCPT TO:<root@localhost>").starts_with("250"));
            c
        })
        .collect();

    // Connect until the limit is reached: the first client past it is
    // told 421 at once, not left waiting in the backlog.
    let mut idle = Vec::new();
    let mut refused = None;
    for _ in 0..LIMIT {
        let mut c = inst.smtp();
        c.w.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let r = c.reply();
        if r.starts_with("220") {
            idle.push(c);
        } else {
            refused = Some((r, c));
            break;
        }
    }
    let (r, mut c) = refused.expect("no connection was refused at the descriptor limit");
    assert_eq!(r, "421 4.3.2 All server ports are busy\r\n");
    assert!(c.closed());
    assert!(!idle.is_empty(), "the limit left no room for any session");
    assert!(open_fds(pid) >= LIMIT - 2, "smtpd was not at its limit");
    inst.wait_log("refusing the connection from", Duration::from_secs(5));
    // Again: the reserve is rebuilt after each refusal.
    let mut c = inst.smtp();
    assert_eq!(c.reply(), "421 4.3.2 All server ports are busy\r\n");

    // The sessions in progress finish their mail.
    for c in &mut busy {
        assert!(c.cmd("DATA").starts_with("354"));
        c.send(b"Subject: under pressure\r\n\r\nstill delivered\r\n");
        let r = c.cmd(".");
        assert!(r.starts_with("250 2.0.0 Ok: queued as "), "{r}");
        assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    }
    // Same smtpd throughout, and it serves again once descriptors free up.
    assert_eq!(inst.pid_of("smtpd"), Some(pid));
    drop(idle);
    wait_for("a greeting again", Duration::from_secs(10), || {
        let mut c = inst.smtp();
        c.reply().starts_with("220").then_some(())
    });
    wait_for("three deliveries", Duration::from_secs(20), || {
        (inst.maildir("root").len() == 3).then_some(())
    });
}

#[test]
fn a_stalled_daemon_hits_the_ipc_deadline_and_the_watchdog_restarts_it() {
    let mut inst =
        Instance::new("smtpd_error_sleep_time = 0\nipc_query_timeout = 2s\ndaemon_timeout = 3s\n");
    inst.start();
    let cleanup = inst.pid_of("cleanup").unwrap();
    let smtpd = inst.pid_of("smtpd").unwrap();
    // Alive but silent: stopped, as a daemon stuck in a loop would be.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(cleanup as i32),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    let mut c = inst.smtp();
    assert!(c.reply().starts_with("220"));
    assert!(c.cmd("EHLO client.example").starts_with("250"));
    let t = Instant::now();
    // smtpd's call to cleanup hits its deadline: a temporary error, and
    // the session goes on.
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.org>"),
        "451 4.3.0 Error: queue file write error\r\n"
    );
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(c.cmd("NOOP"), "250 2.0.0 Ok\r\n");
    // The master's watchdog kills the silent daemon; supervision restarts it.
    inst.wait_log(
        &format!("cleanup pid {cleanup}: no answer to the watchdog"),
        Duration::from_secs(15),
    );
    let fresh = wait_for("a new cleanup", Duration::from_secs(15), || {
        inst.pid_of("cleanup").filter(|&p| p != cleanup)
    });
    assert_ne!(fresh, cleanup);
    // Only the stalled daemon was restarted.
    assert_eq!(inst.pid_of("smtpd"), Some(smtpd));
    wait_for("mail accepted again", Duration::from_secs(15), || {
        let r = c.send_mail(
            "a@example.org",
            &["root@localhost"],
            "Subject: after the stall\r\n\r\nok\r\n",
        );
        if r.starts_with("250") {
            Some(())
        } else {
            assert_eq!(c.cmd("RSET"), "250 2.0.0 Ok\r\n");
            None
        }
    });
    wait_for("delivered", Duration::from_secs(15), || {
        (inst.maildir("root").len() == 1).then_some(())
    });
}

#[test]
fn a_stalled_queue_manager_catches_up_on_everything_committed_meanwhile() {
    let mut inst = Instance::new("smtpd_error_sleep_time = 0\ndaemon_timeout = 300s\n");
    inst.start();
    let qmgr = inst.pid_of("qmgr").unwrap();
    let broker = inst.pid_of("broker").unwrap();
    let signal =
        |sig| nix::sys::signal::kill(nix::unistd::Pid::from_raw(qmgr as i32), sig).unwrap();
    // Commit notices pile up unread: the first ones carry their file, the
    // rest (once the queue manager is behind) make it open the file itself.
    signal(nix::sys::signal::Signal::SIGSTOP);
    let before = open_fds(broker);
    const N: usize = 150;
    let mut c = inst.greeted();
    for i in 0..N {
        let r = c.send_mail(
            "a@example.org",
            &["root@localhost"],
            &format!("Subject: stalled {i}\r\n\r\nx\r\n"),
        );
        assert!(r.starts_with("250"), "{i}: {r}");
    }
    // The broker holds each queued message's file and nothing more for
    // the notices waiting to be read.
    let during = open_fds(broker);
    assert!(
        during <= before + N + 8,
        "broker descriptors went from {before} to {during}"
    );
    signal(nix::sys::signal::Signal::SIGCONT);
    wait_for("every message delivered", Duration::from_secs(120), || {
        (inst.maildir("root").len() == N).then_some(())
    });
    assert_eq!(inst.pid_of("qmgr"), Some(qmgr));
    assert!(
        !inst.log().contains("cannot read the queue file"),
        "{}",
        inst.log()
    );
}
