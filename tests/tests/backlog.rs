//! A backlog, as an edge relay gets when its next hop is down for a while:
//! the whole instance under a 1024-descriptor limit (soft and hard), 50,000
//! messages of 1 KB accepted from 10 clients while the next hop refuses
//! connections, then the next hop comes back. Every accepted message is
//! delivered, byte for byte, and only retries that a kill explains are
//! delivered twice; no daemon restarts on its own, nothing logs EMFILE,
//! and the drain runs at no less than half the normal relay throughput
//! measured in the same test. In the middle of the drain the queue
//! manager, and then the broker, are killed with SIGKILL, and the drain
//! resumes.
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use postern_tests::countsink::{CountSink, sized_message};
use postern_tests::{Instance, wait_for};

const LIMIT: u64 = 1024;
const CLIENTS: usize = 10;
const NORMAL: usize = 5_000;
const SIZE: usize = 1024;
const SINK_PORT: u16 = 2626;
/// smtp_destination_concurrency_limit, and so the deliveries in flight
/// when a daemon is killed.
const CONCURRENCY: usize = 20;

/// One client: sends messages `tag`-n for each n in `ns` over one session
/// (reconnecting if it breaks), and returns the numbers accepted with 250
/// and the other final replies.
fn client(ip: String, port: u16, tag: String, ns: Vec<usize>) -> (Vec<usize>, Vec<String>) {
    let connect = || {
        let s = TcpStream::connect((ip.as_str(), port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        s.set_nodelay(true).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let w = s;
        assert!(reply(&mut r).starts_with("220"));
        (r, w)
    };
    let (mut r, mut w) = connect();
    let cmd = |r: &mut BufReader<TcpStream>, w: &mut TcpStream, line: &[u8]| {
        w.write_all(line).unwrap();
        reply(r)
    };
    assert!(cmd(&mut r, &mut w, b"EHLO load.example\r\n").starts_with("250"));
    let (mut ok, mut other) = (Vec::new(), Vec::new());
    for n in ns {
        let msg = sized_message(&tag, n, SIZE);
        let m = cmd(&mut r, &mut w, b"MAIL FROM:<load@client.example>\r\n");
        if !m.starts_with("250") {
            other.push(m);
            cmd(&mut r, &mut w, b"RSET\r\n");
            continue;
        }
        assert!(cmd(&mut r, &mut w, b"RCPT TO:<sink@remote.example>\r\n").starts_with("250"));
        assert!(cmd(&mut r, &mut w, b"DATA\r\n").starts_with("354"));
        w.write_all(&msg).unwrap();
        let end = cmd(&mut r, &mut w, b".\r\n");
        if end.starts_with("250") {
            ok.push(n);
        } else {
            other.push(end);
        }
    }
    let _ = w.write_all(b"QUIT\r\n");
    (ok, other)
}

fn reply(r: &mut BufReader<TcpStream>) -> String {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        assert!(r.read_line(&mut line).unwrap() > 0, "closed after {all:?}");
        all.push_str(&line);
        if line.len() < 4 || line.as_bytes()[3] != b'-' {
            return all;
        }
    }
}

/// Sends `count` messages from CLIENTS clients in parallel; returns the
/// numbers accepted, after checking that every message was.
fn load(inst: &Instance, tag: &str, count: usize) -> Vec<usize> {
    let threads: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let ns: Vec<usize> = (c..count).step_by(CLIENTS).collect();
            let (ip, tag) = (inst.ip.clone(), tag.to_string());
            let port = inst.smtp_port;
            std::thread::spawn(move || client(ip, port, tag, ns))
        })
        .collect();
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    for t in threads {
        let (ok, other) = t.join().expect("client");
        accepted.extend(ok);
        refused.extend(other);
    }
    assert!(
        refused.is_empty(),
        "{} of {count} refused, first: {:?}\n{}",
        refused.len(),
        refused.first(),
        tail(&inst.log())
    );
    accepted.sort_unstable();
    accepted
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn kill(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

#[test]
fn a_large_backlog_drains_under_a_low_descriptor_limit_through_kills() {
    // POSTERN_BACKLOG: a smaller backlog, when investigating.
    let backlog_size: usize = std::env::var("POSTERN_BACKLOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let mut inst = Instance::new("smtpd_error_sleep_time = 0\n");
    inst.add_main_cf(&format!(
        "relayhost = [{}]:{SINK_PORT}\n\
         minimal_backoff_time = 20s\n\
         maximal_backoff_time = 40s\n\
         smtp_destination_concurrency_limit = {CONCURRENCY}\n",
        inst.ip
    ));
    inst.start_with_nofile(LIMIT);
    // Every role runs with the limit, and status says so.
    for p in inst.status()["processes"].as_array().unwrap() {
        if p["state"] == "running" {
            assert_eq!(p["nofile"], LIMIT, "{p}");
        }
    }

    // The normal relay throughput, next hop up.
    let mut sink = CountSink::start(&inst.ip, SINK_PORT, "n", SIZE);
    let t0 = Instant::now();
    let accepted = load(&inst, "n", NORMAL);
    assert_eq!(accepted.len(), NORMAL);
    wait_for("the normal run delivered", Duration::from_secs(120), || {
        (sink.seen().len() == NORMAL).then_some(())
    });
    let normal = NORMAL as f64 / t0.elapsed().as_secs_f64();
    sink.stop();
    drop(sink);

    // The next hop goes down; the backlog builds.
    let t1 = Instant::now();
    let accepted = load(&inst, "b", backlog_size);
    assert_eq!(accepted.len(), backlog_size);
    let accept_rate = backlog_size as f64 / t1.elapsed().as_secs_f64();
    eprintln!(
        "normal relay: {normal:.0} msg/s; backlog accepted at {accept_rate:.0} msg/s in {:.1}s",
        t1.elapsed().as_secs_f64()
    );

    // It comes back; the admin flushes the deferred queue.
    let sink = CountSink::start(&inst.ip, SINK_PORT, "b", SIZE);
    let t2 = Instant::now();
    assert!(inst.postern(&["queue", "flush"]).status.success());
    let first = backlog_size * 3 / 10;
    wait_for("a third of the backlog", Duration::from_secs(300), || {
        (sink.seen().len() >= first).then_some(())
    });
    let drain = sink.seen().len() as f64 / t2.elapsed().as_secs_f64();
    eprintln!("drain: {drain:.0} msg/s ({:.2} of normal)", drain / normal);
    assert!(
        drain >= normal / 2.0,
        "drain {drain:.0} msg/s is below half the normal {normal:.0} msg/s"
    );

    // Killed in the middle of the drain: the queue manager, then the broker.
    let qmgr = inst.pid_of("qmgr").unwrap();
    kill(qmgr);
    let second = backlog_size * 6 / 10;
    wait_for(
        "the drain resumes after qmgr",
        Duration::from_secs(300),
        || (sink.seen().len() >= second).then_some(()),
    );
    let broker = inst.pid_of("broker").unwrap();
    kill(broker);
    let t3 = Instant::now();
    while sink.seen().len() < backlog_size {
        if t3.elapsed() > Duration::from_secs(300) {
            let out = inst.postern(&["queue", "list", "--json"]);
            panic!(
                "the whole backlog: {} of {backlog_size} delivered; {} listed\n{}",
                sink.seen().len(),
                String::from_utf8_lossy(&out.stdout).lines().count(),
                tail(&inst.log())
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    inst.wait_queue_empty(Duration::from_secs(120));
    // The drained backlog leaves no files behind: slots beyond twice the
    // spare pool are unlinked (through the broker's jail).
    let slots = inst.data_dir().join("queue/slots");
    let t4 = Instant::now();
    loop {
        let n = std::fs::read_dir(&slots).unwrap().count();
        if n <= 64 {
            break;
        }
        assert!(
            t4.elapsed() < Duration::from_secs(30),
            "{n} slot files left after the drain"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Exactly once, apart from the deliveries in flight at the two kills.
    let seen = sink.seen();
    assert_eq!(sink.damaged(), 0);
    assert!((0..backlog_size).all(|n| seen.contains_key(&n)));
    let again: u32 = seen.values().map(|c| c - 1).sum();
    assert!(
        again as usize <= 3 * CONCURRENCY,
        "{again} messages delivered twice"
    );
    eprintln!("delivered twice after the kills: {again}");
    let log = inst.log();
    assert!(!log.contains("Too many open files"), "{}", tail(&log));
    assert!(!log.contains("fatal:"), "{}", tail(&log));
    let died: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("warning: process ") || l.contains("exited unexpectedly"))
        .collect();
    assert_eq!(died.len(), 2, "{died:#?}");
    assert!(died[0].contains(&format!("qmgr pid {qmgr} killed by signal 9")));
    assert!(died[1].contains(&format!("broker pid {broker} killed by signal 9")));
    inst.stop();
}
