//! Queue selectors through the control socket, on a real queue of 200
//! deferred messages across 10 domains: every combination of --sender,
//! --recipient-domain, --older-than, --queue and --reason picks exactly the
//! expected messages; --dry-run changes nothing; hold, release and delete
//! act on what they select; `queue summary --json` matches the queue.
use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use postern_tests::{Instance, Sink, wait_for};
use serde_json::Value;

const N: usize = 200;

// Message i: from alice (even i) or bob (odd), to u{i}@d{i%10}.test.

/// Sends messages `range` over one SMTP session.
fn send(ip: &str, range: std::ops::Range<usize>) {
    const SCRIPT: &str = r#"
import smtplib, sys
ip, first, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = smtplib.SMTP(ip, 2525, local_hostname="client.example", timeout=60)
for i in range(first, last):
    sender = "alice@s.test" if i % 2 == 0 else "bob@s.test"
    s.sendmail(sender, ["u%d@d%d.test" % (i, i % 10)], "Subject: %d\r\n\r\nbody\r\n" % i)
s.quit()
"#;
    let out = Command::new("/usr/bin/python3")
        .args(["-c", SCRIPT, ip])
        .arg(range.start.to_string())
        .arg(range.end.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `postern queue ARGS`: (status ok, stdout).
fn queue(inst: &Instance, args: &[&str]) -> (bool, String) {
    let mut all = vec!["queue"];
    all.extend_from_slice(args);
    let out = inst.postern(&all);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// The message numbers a `queue list --json` with these selectors gives.
fn listed(inst: &Instance, args: &[&str]) -> BTreeSet<usize> {
    let mut all = vec!["list", "--json"];
    all.extend_from_slice(args);
    let (ok, out) = queue(inst, &all);
    assert!(ok, "{out}");
    out.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let a = v["recipients"][0]["address"].as_str().unwrap().to_string();
            a[1..a.find('@').unwrap()].parse().unwrap()
        })
        .collect()
}

#[test]
fn selectors_pick_exactly_the_expected_messages() {
    let mut inst = Instance::new("");
    let ip = inst.ip.clone();
    let dir = tempfile::tempdir().unwrap();
    // d7-d9: a next hop that says 451 to every RCPT; the others: nothing
    // listens (connection refused).
    let _sink = Sink::start(&ip, 2601, &dir.path().join("sink"));
    std::fs::write(dir.path().join("sink").join("mode"), "tempfail").unwrap();
    let mut transport = String::new();
    for d in 0..10 {
        let port = if d >= 7 { 2601 } else { 2603 };
        transport.push_str(&format!("d{d}.test smtp:[{ip}]:{port}\n"));
    }
    let t = dir.path().join("transport");
    std::fs::write(&t, transport).unwrap();
    inst.add_main_cf(&format!(
        "relay_domains = {}\ntransport_maps = texthash:{}\n",
        (0..10)
            .map(|d| format!("d{d}.test"))
            .collect::<Vec<_>>()
            .join(" "),
        t.display()
    ));
    inst.start();
    send(&ip, 0..N / 2);
    // Batch A arrived before `split`, batch B after it, two seconds or more
    // either side.
    std::thread::sleep(Duration::from_secs(2));
    let split = now();
    std::thread::sleep(Duration::from_secs(3));
    send(&ip, N / 2..N);
    wait_for("every message deferred", Duration::from_secs(120), || {
        let q = inst.queue_json();
        (q.len() == N && q.iter().all(|e| e["queue_name"] == "deferred")).then_some(())
    });
    let batch_a = |i: usize| i < N / 2;
    let refused = |i: usize| i % 10 < 7;

    // Hold bob's mail for d3 by selector.
    let (ok, out) = queue(
        &inst,
        &[
            "hold",
            "--sender",
            "bob@s.test",
            "--recipient-domain",
            "d3.test",
        ],
    );
    assert!(ok, "{out}");
    let held: BTreeSet<usize> = (0..N).filter(|i| i % 2 == 1 && i % 10 == 3).collect();
    assert_eq!(held.len(), 20);
    wait_for("held", Duration::from_secs(10), || {
        (listed(&inst, &["--queue", "hold"]) == held).then_some(())
    });

    // Every combination of the five selectors. --older-than is worked out
    // again before each command, so that it always splits the batches.
    let older = || format!("{}s", now() - split);
    type Pred = Box<dyn Fn(usize) -> bool>;
    let selectors: Vec<(Vec<String>, Pred)> = vec![
        (
            vec!["--sender".into(), "alice@s.test".into()],
            Box::new(|i| i % 2 == 0),
        ),
        (
            vec!["--recipient-domain".into(), "d5.test".into()],
            Box::new(|i| i % 10 == 5),
        ),
        (
            vec!["--older-than".into(), "OLDER".into()],
            Box::new(batch_a),
        ),
        (
            vec!["--queue".into(), "deferred".into()],
            Box::new(move |i| !(i % 2 == 1 && i % 10 == 3)),
        ),
        (
            vec!["--reason".into(), "Connection refused".into()],
            Box::new(refused),
        ),
    ];
    let started = Instant::now();
    for mask in 0u32..(1 << selectors.len()) {
        let mut args: Vec<String> = Vec::new();
        for (k, (a, _)) in selectors.iter().enumerate() {
            if mask & (1 << k) != 0 {
                args.extend(a.iter().cloned());
            }
        }
        let want: BTreeSet<usize> = (0..N)
            .filter(|&i| {
                selectors
                    .iter()
                    .enumerate()
                    .all(|(k, (_, p))| mask & (1 << k) == 0 || p(i))
            })
            .collect();
        let o = older();
        let refs: Vec<&str> = args
            .iter()
            .map(|a| if a == "OLDER" { o.as_str() } else { a.as_str() })
            .collect();
        assert_eq!(listed(&inst, &refs), want, "selectors {refs:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(60));
    // A regular expression: bob's mail where the next hop said 451 (d7
    // and d9; his numbers are odd, so none for d8).
    assert_eq!(
        listed(
            &inst,
            &["--sender", "bob@s.test", "--reason", "said: 451 4\\.3\\.0"]
        )
        .len(),
        40
    );

    // --dry-run names what it would touch and changes nothing.
    let (ok, out) = queue(&inst, &["delete", "--dry-run", "--sender", "alice@s.test"]);
    assert!(ok, "{out}");
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("would delete: "))
            .count(),
        100
    );
    assert_eq!(inst.queue_json().len(), N);

    // summary --json matches the queue: recipients by domain and age.
    let (ok, out) = queue(&inst, &["summary", "--json", "--queue", "deferred"]);
    assert!(ok, "{out}");
    let v: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(v["total"]["count"], N - held.len());
    let domains = v["domains"].as_array().unwrap();
    // d3's mail is all bob's, and all of it is on hold.
    assert_eq!(domains.len(), 9, "{v}");
    for d in domains {
        let name = d["domain"].as_str().unwrap();
        let n: usize = name[1..2].parse().unwrap();
        let want = (0..N).filter(|i| i % 10 == n && !held.contains(i)).count();
        assert_eq!(d["count"], want, "{d}");
        // Everything is minutes old at most: the first age bucket.
        assert_eq!(d["by_age"][0], want, "{d}");
    }
    let (ok, out) = queue(&inst, &["summary", "--top", "3"]);
    assert!(
        ok && out.contains("TOTAL") && out.lines().count() == 5,
        "{out}"
    );

    // Release what is held; delete bob's batch-A mail for d9.
    let (ok, out) = queue(&inst, &["release", "--queue", "hold"]);
    assert!(ok, "{out}");
    wait_for("released", Duration::from_secs(10), || {
        listed(&inst, &["--queue", "hold"]).is_empty().then_some(())
    });
    let (ok, out) = queue(
        &inst,
        &[
            "delete",
            "--recipient-domain",
            "d9.test",
            "--older-than",
            &older(),
        ],
    );
    assert!(ok, "{out}");
    let gone: BTreeSet<usize> = (0..N / 2).filter(|i| i % 10 == 9).collect();
    wait_for("deleted", Duration::from_secs(10), || {
        let left = listed(&inst, &[]);
        (left.len() == N - gone.len() && left.is_disjoint(&gone)).then_some(())
    });
    // A bad selector is an error that names it.
    let (ok, out) = queue(&inst, &["list", "--older-than", "soon"]);
    assert!(!ok && out.contains("--older-than soon"), "{out}");
    let (ok, out) = queue(&inst, &["hold"]);
    assert!(!ok && out.contains("selector"), "{out}");
    inst.stop();
}

/// `queue explain` names the transport, next hop, MX hosts and addresses
/// that a real delivery then uses, through a real DNS server on loopback.
#[test]
fn explain_gives_the_route_a_delivery_then_takes() {
    let mut inst = Instance::new("");
    let sink_ip = postern_tests::unique_loopback();
    // MX hosts listen on port 25.
    let sink = Sink::start(&sink_ip, 25, &inst.dir.path().join("sink"));
    let zone = format!(
        "@ 3600 IN SOA ns.test. admin.test. 1 3600 600 86400 60\n\
         @ 3600 IN NS ns.test.\n\
         ns 3600 IN A 127.0.0.1\n\
         viamx 60 IN MX 10 mail.viamx.test.\n\
         viamx 60 IN MX 20 backup.viamx.test.\n\
         mail.viamx 60 IN A {sink_ip}\n\
         backup.viamx 60 IN A 127.0.0.1\n"
    );
    let dns = postern_tests::dns::start(&inst.ip, "test.", &zone);
    inst.add_main_cf(&format!("dns_nameservers = {}\n", dns.addr));
    inst.start();
    let (ok, out) = queue(&inst, &["explain", "viamx.test", "--json"]);
    assert!(ok, "{out}");
    let x: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(x["address"], "postmaster@viamx.test", "{x}");
    assert_eq!(x["transport"], "smtp", "{x}");
    assert_eq!(x["nexthop"], "viamx.test", "{x}");
    assert_eq!(x["hosts"][0]["host"], "mail.viamx.test", "{x}");
    assert_eq!(x["hosts"][0]["preference"], 10, "{x}");
    assert_eq!(
        x["hosts"][0]["addresses"][0],
        format!("{sink_ip}:25"),
        "{x}"
    );
    assert_eq!(x["hosts"][1]["host"], "backup.viamx.test", "{x}");
    assert_eq!(x["tls_level"], "may", "{x}");
    assert_eq!(x["concurrency_limit"], 20, "{x}");
    assert_eq!(x["deferred_messages"], 0, "{x}");
    // A real delivery takes that route.
    let r = postern_tests::smtplib(
        &inst.ip,
        2525,
        "alice@s.test",
        &["user@viamx.test"],
        Some("Subject: x\r\n\r\nx\r\n"),
    );
    assert!(r.last().unwrap().starts_with("250"), "{r:?}");
    wait_for("delivered", Duration::from_secs(20), || {
        (sink.messages().len() == 1).then_some(())
    });
    inst.wait_log(
        &format!("to=<user@viamx.test>, relay=mail.viamx.test[{sink_ip}]:25"),
        Duration::from_secs(5),
    );
    // Local mail, and the text form.
    let (ok, out) = queue(&inst, &["explain", "root@localhost"]);
    assert!(ok && out.contains("transport:  local"), "{out}");
    inst.wait_queue_empty(Duration::from_secs(10));
    inst.stop();
}
