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

fn seed() -> u64 {
    let s = std::env::var("POSTERN_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("fault injection seed: {s} (replay with POSTERN_TEST_SEED={s})");
    s
}

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
    let s = seed();
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
    for role in ROLES {
        assert!(
            inst.pid_of(role).is_some(),
            "{role} is not running at the end"
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
