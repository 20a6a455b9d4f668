//! kill -9 at random moments, with a printed seed: no message that got a
//! 250 is ever lost, and nothing is ever delivered half.
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use postern_tests::{Instance, Sink, numbered_message, try_send, verify_numbered, wait_for};

fn kill(inst: &Instance, role: &str) -> bool {
    match inst.pid_of(role) {
        Some(pid) => nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .is_ok(),
        None => false,
    }
}

fn relay_instance(extra: &str) -> (Instance, Sink) {
    let mut inst = Instance::new(&format!(
        "smtpd_error_sleep_time = 0\nminimal_backoff_time = 1s\nmaximal_backoff_time = 2s\n{extra}"
    ));
    let sink = Sink::start(&inst.ip, 2626, &inst.dir.path().join("sink"));
    let main = inst.config_dir().join("main.cf");
    let text = std::fs::read_to_string(&main).unwrap();
    std::fs::write(
        &main,
        format!("{text}relayhost = [{}]:{}\n", sink.ip, sink.port),
    )
    .unwrap();
    inst.start();
    (inst, sink)
}

/// Checks what reached the sink against what was accepted; returns
/// (delivered ids with counts).
fn audit(sink: &Sink, tag: &str, accepted: &[usize], attempted: usize) -> BTreeMap<usize, usize> {
    let mut seen: BTreeMap<usize, usize> = BTreeMap::new();
    for (_, content) in sink.messages() {
        match verify_numbered(&content, tag) {
            Ok(n) => *seen.entry(n).or_default() += 1,
            Err(e) => panic!("a half-delivered or damaged message reached the sink: {e}"),
        }
    }
    let lost: Vec<&usize> = accepted.iter().filter(|n| !seen.contains_key(n)).collect();
    let dups = seen.values().filter(|&&c| c > 1).count();
    let unacked = seen.keys().filter(|n| !accepted.contains(n)).count();
    eprintln!(
        "{tag}: attempted {attempted}, accepted {}, delivered {}, delivered without a 250 {unacked}, duplicates {dups}, lost {}",
        accepted.len(),
        seen.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "accepted but lost: {lost:?}");
    seen
}

#[test]
fn killing_cleanup_and_broker_mid_transaction_loses_nothing() {
    let s = postern_tests::seed("crash test");
    let mut rng = fastrand::Rng::with_seed(s);
    let (inst, sink) = relay_instance("");
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let attempted = Arc::new(Mutex::new(0usize));
    let mut clients = Vec::new();
    for c in 0..4 {
        let (ip, port, stop, accepted, attempted) = (
            inst.ip.clone(),
            inst.smtp_port,
            stop.clone(),
            accepted.clone(),
            attempted.clone(),
        );
        clients.push(std::thread::spawn(move || {
            let mut n = c * 100_000;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                *attempted.lock().unwrap() += 1;
                let r = try_send(
                    &ip,
                    port,
                    "crash@example.org",
                    &["dest@remote.example"],
                    &numbered_message("rx", n),
                );
                if r.is_ok_and(|r| r.starts_with("250")) {
                    accepted.lock().unwrap().push(n);
                }
            }
        }));
    }
    // Bounded in count and in time. Between kills, wait until at least one
    // more message got its 250, so kills and traffic interleave however
    // slow or loaded the machine is.
    let t0 = Instant::now();
    let deadline = Duration::from_secs(60);
    let mut kills = 0;
    while kills < 30 && t0.elapsed() < deadline {
        std::thread::sleep(Duration::from_millis(rng.u64(20..250)));
        let before = accepted.lock().unwrap().len();
        let role = if rng.bool() { "cleanup" } else { "broker" };
        if kill(&inst, role) {
            kills += 1;
        }
        while accepted.lock().unwrap().len() == before && t0.elapsed() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    eprintln!("kills: {kills}");
    let accepted = accepted.lock().unwrap().clone();
    assert!(
        accepted.len() >= 20,
        "too few messages got through to prove anything: {}",
        accepted.len()
    );
    wait_for(
        "every accepted message at the sink",
        Duration::from_secs(60),
        || {
            let got: Vec<usize> = sink
                .messages()
                .iter()
                .filter_map(|(_, c)| verify_numbered(c, "rx").ok())
                .collect();
            accepted.iter().all(|n| got.contains(n)).then_some(())
        },
    );
    inst.wait_queue_empty(Duration::from_secs(30));
    audit(&sink, "rx", &accepted, *attempted.lock().unwrap());
}

#[test]
fn killing_qmgr_and_smtp_mid_delivery_loses_nothing() {
    let s = postern_tests::seed("crash test");
    let mut rng = fastrand::Rng::with_seed(s);
    let (inst, sink) = relay_instance("");
    // Deliveries take a while, so kills land in the middle of them.
    sink.set_mode("slow");
    let mut accepted = Vec::new();
    for n in 1..=20 {
        let r = try_send(
            &inst.ip,
            inst.smtp_port,
            "crash@example.org",
            &["dest@remote.example"],
            &numbered_message("tx", n),
        )
        .unwrap();
        assert!(r.starts_with("250"), "{r}");
        accepted.push(n);
    }
    let t0 = Instant::now();
    let mut kills = 0;
    while kills < 12 && t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(rng.u64(100..700)));
        let role = if rng.bool() { "qmgr" } else { "smtp" };
        if kill(&inst, role) {
            kills += 1;
        }
    }
    eprintln!("kills: {kills}");
    sink.set_mode("accept");
    wait_for("every message at the sink", Duration::from_secs(90), || {
        let got: Vec<usize> = sink
            .messages()
            .iter()
            .filter_map(|(_, c)| verify_numbered(c, "tx").ok())
            .collect();
        accepted.iter().all(|n| got.contains(n)).then_some(())
    });
    inst.wait_queue_empty(Duration::from_secs(30));
    audit(&sink, "tx", &accepted, 20);
    // Restarts happened and were logged.
    assert!(inst.log().contains("killed by signal 9"));
}
