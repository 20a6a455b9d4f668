//! The Prometheus endpoint through real processes: a known traffic mix
//! (delivered, deferred, bounced, rejected; TLS in and out) through an
//! instance with metrics_listen, scraped by a real Prometheus (Debian's
//! `prometheus`) whose HTTP API must then give the exact counts;
//! `promtool check metrics` on the endpoint's output; the oldest-message
//! gauge growing with the clock; and the endpoint off, and refusing a
//! client outside metrics_allowed_clients.
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use postern_tests::{Instance, Sink, pki, smtplib, wait_for};
use serde_json::Value;

const METRICS_PORT: u16 = 9187;

/// One HTTP/1.0 GET over a plain socket: (status, head, body).
fn get(addr: &str, path: &str, accept: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: {accept}\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

/// The value of one series in a text exposition.
fn value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

struct Prometheus {
    child: Child,
    addr: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(dir: &std::path::Path, ip: &str, target: &str) -> Prometheus {
        let cfg = dir.join("prometheus.yml");
        std::fs::write(
            &cfg,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: postern\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let addr = format!("{ip}:9090");
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus (apt-get install prometheus)");
        Prometheus { child, addr }
    }

    /// An instant query's result: (labels, value) per series.
    fn query(&self, q: &str) -> Vec<(Value, f64)> {
        let out = Command::new("curl")
            .args(["-s", "-G", "--max-time", "5"])
            .arg(format!("http://{}/api/v1/query", self.addr))
            .args(["--data-urlencode", &format!("query={q}")])
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        v["data"]["result"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| {
                        let n = r["value"][1].as_str().and_then(|s| s.parse().ok());
                        (r["metric"].clone(), n.unwrap_or(f64::NAN))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn swaks_tls(ip: &str, from: &str, to: &str) -> String {
    let out = Command::new("swaks")
        .args(["--server", &format!("{ip}:2525"), "--tls"])
        .args(["--ehlo", "client.example", "--from", from, "--to", to])
        .args(["--timeout", "30"])
        .output()
        .expect("swaks");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn prometheus_scrapes_exact_counts_for_a_known_traffic_mix() {
    let dir = tempfile::tempdir().unwrap();
    let transport = dir.path().join("transport");
    let mut inst = Instance::new(&format!(
        "mynetworks = [::1]/128\n\
         relay_domains = plain.test tls.test dead.test\n\
         transport_maps = texthash:{t}\n\
         smtp_tls_security_level = may\n\
         metrics_allowed_clients = 127.0.0.0/8\n",
        t = transport.display()
    ));
    let ip = inst.ip.clone();
    inst.add_main_cf(&format!("metrics_listen = {ip}:{METRICS_PORT}"));
    let tls = pki::make(dir.path(), "sink", "tls.test");
    let plain = Sink::start(&ip, 2601, &dir.path().join("plain"));
    let secure = Sink::start_with(
        &ip,
        2602,
        &dir.path().join("secure"),
        &[
            "--tls",
            tls.server_chain.to_str().unwrap(),
            tls.server_key.to_str().unwrap(),
        ],
    );
    std::fs::write(dir.path().join("plain").join("mode"), "byname").unwrap();
    // dead.test: nothing listens on that port (connection refused: deferred).
    std::fs::write(
        &transport,
        format!(
            "plain.test smtp:[{ip}]:2601\ntls.test smtp:[{ip}]:2602\ndead.test smtp:[{ip}]:2603\n"
        ),
    )
    .unwrap();
    inst.start();
    let target = format!("{ip}:{METRICS_PORT}");
    let prom = Prometheus::start(dir.path(), &ip, &target);

    let body = "Subject: m\r\n\r\nhello\r\n";
    for _ in 0..3 {
        let r = smtplib(
            &ip,
            2525,
            "alice@plain.test",
            &["bob@plain.test"],
            Some(body),
        );
        assert!(r.last().unwrap().starts_with("250"), "{r:?}");
    }
    let t = swaks_tls(&ip, "alice@plain.test", "carol@tls.test");
    assert!(t.contains("<~  250"), "{t}");
    let r = smtplib(
        &ip,
        2525,
        "alice@plain.test",
        &["dave@dead.test"],
        Some(body),
    );
    assert!(r.last().unwrap().starts_with("250"), "{r:?}");
    let r = smtplib(
        &ip,
        2525,
        "alice@plain.test",
        &["unknown1@plain.test"],
        Some(body),
    );
    assert!(r.last().unwrap().starts_with("250"), "{r:?}");
    for n in 0..2 {
        let r = smtplib(
            &ip,
            2525,
            "alice@plain.test",
            &[&format!("x{n}@elsewhere.test")],
            None,
        );
        assert!(r[0].starts_with("454 4.7.1"), "{r:?}");
    }
    // bob x3 and alice's bounce notice at one sink, carol at the other.
    wait_for("deliveries", Duration::from_secs(60), || {
        (plain.messages().len() == 4 && secure.messages().len() == 1).then_some(())
    });
    // The deferred message is back in the deferred queue.
    wait_for("one deferred message", Duration::from_secs(30), || {
        let q = inst.queue_json();
        (q.len() == 1 && q[0]["queue_name"] == "deferred").then_some(())
    });

    let service = format!("{ip}:2525");
    let want: Vec<(String, f64)> = vec![
        (
            format!("postern_messages_received_total{{service=\"{service}\",source=\"smtp\"}}"),
            6.0,
        ),
        (
            "postern_messages_received_total{service=\"bounce\",source=\"bounce\"}".into(),
            1.0,
        ),
        (
            "postern_recipients_total{status=\"sent\",transport=\"smtp\",dsn_class=\"2\"}".into(),
            5.0,
        ),
        (
            "postern_recipients_total{status=\"deferred\",transport=\"smtp\",dsn_class=\"4\"}"
                .into(),
            1.0,
        ),
        (
            "postern_recipients_total{status=\"bounced\",transport=\"smtp\",dsn_class=\"5\"}"
                .into(),
            1.0,
        ),
        (
            "postern_rejects_total{stage=\"rcpt\",check=\"defer_unauth_destination\"}".into(),
            2.0,
        ),
        ("postern_queue_messages{queue=\"deferred\"}".into(), 1.0),
        ("postern_delivery_latency_seconds_count".into(), 6.0),
    ];
    // The endpoint itself, in the text format.
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let (status, _, body) = get(&target, "/metrics", "*/*");
        let wrong: Vec<_> = want
            .iter()
            .filter(|(s, v)| value(&body, s) != Some(*v))
            .collect();
        if status == 200 && wrong.is_empty() {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "the endpoint's counts: {status}, wrong: {wrong:?}\n{body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // TLS: one session each way (the group depends on the peer's library).
    let tls = |direction: &str| -> f64 {
        let prefix =
            format!("postern_tls_sessions_total{{direction=\"{direction}\",version=\"TLSv1.3\"");
        body.lines()
            .filter(|l| l.starts_with(&prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let (tls_in, tls_out) = (tls("inbound"), tls("outbound"));
    assert_eq!((tls_in, tls_out), (1.0, 1.0), "{body}");

    // promtool's linter accepts the exposition as it is.
    let mut pt = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (apt-get install prometheus)");
    pt.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = pt.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "promtool check metrics: {}{}\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // OpenMetrics, as Prometheus asks for it.
    let (status, head, om) = get(
        &target,
        "/metrics",
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
    );
    assert_eq!(status, 200);
    assert!(
        head.contains("application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    assert!(om.ends_with("# EOF\n") && om.contains("# TYPE postern_rejects counter\n"));

    // Prometheus scraped the same figures.
    let pq = |q: &str| {
        wait_for(&format!("prometheus: {q}"), Duration::from_secs(60), || {
            let r = prom.query(q);
            (!r.is_empty()).then_some(r)
        })
    };
    wait_for(
        "prometheus has the final counts",
        Duration::from_secs(60),
        || {
            let r = prom.query("sum(postern_recipients_total)");
            (r.first().map(|x| x.1) == Some(7.0)).then_some(())
        },
    );
    let sent = pq("postern_recipients_total{status=\"sent\"}");
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0["transport"], "smtp");
    assert_eq!(sent[0].0["dsn_class"], "2");
    assert_eq!(sent[0].1, 5.0);
    for (q, n) in [
        ("postern_recipients_total{status=\"deferred\"}", 1.0),
        (
            "postern_recipients_total{status=\"bounced\",dsn_class=\"5\"}",
            1.0,
        ),
        (
            "postern_rejects_total{stage=\"rcpt\",check=\"defer_unauth_destination\"}",
            2.0,
        ),
        ("sum(postern_messages_received_total)", 7.0),
        ("postern_messages_received_total{source=\"bounce\"}", 1.0),
        ("sum(postern_tls_sessions_total)", 2.0),
        ("postern_queue_messages{queue=\"deferred\"}", 1.0),
        ("postern_delivery_latency_seconds_count", 6.0),
    ] {
        let r = pq(q);
        assert_eq!(r.iter().map(|x| x.1).sum::<f64>(), n, "{q}: {r:?}");
    }

    // The deferred message's age grows with the clock, between two scrapes.
    let series = "postern_queue_oldest_message_age_seconds{queue=\"deferred\"}";
    let (t1, a1) = (
        Instant::now(),
        value(&get(&target, "/metrics", "*/*").2, series).unwrap(),
    );
    std::thread::sleep(Duration::from_secs(3));
    let (t2, a2) = (
        Instant::now(),
        value(&get(&target, "/metrics", "*/*").2, series).unwrap(),
    );
    let elapsed = (t2 - t1).as_secs_f64();
    assert!(
        (a2 - a1 - elapsed).abs() < 0.5,
        "age {a1} then {a2} over {elapsed} s"
    );
    assert!(a1 > 0.0);
    // Other paths and methods get their error, and nothing breaks.
    assert_eq!(get(&target, "/", "*/*").0, 404);
    inst.stop();
}

#[test]
fn without_metrics_listen_nothing_listens_and_the_allowlist_refuses_others() {
    let mut inst = Instance::new("");
    inst.start();
    let target = format!("{}:{METRICS_PORT}", inst.ip);
    assert!(
        TcpStream::connect(&target).is_err(),
        "something listens on {target}"
    );
    let status = inst.try_status().unwrap();
    let metrics = status["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["role"] == "metrics")
        .cloned();
    assert_eq!(
        metrics
            .as_ref()
            .map(|p| (p["state"].clone(), p["pid"].clone())),
        Some(("off".into(), 0.into())),
        "{status}"
    );
    // On, but for another network only: loopback clients are refused. The
    // sockets are bound at start, so a reload says it cannot apply it.
    inst.add_main_cf(&format!(
        "metrics_listen = {target}\nmetrics_allowed_clients = 192.0.2.0/24\n"
    ));
    let out = inst.postern(&["reload"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("metrics_listen changed"), "{err}");
    inst.stop();
    inst.start();
    let (status, _, body) = get(&target, "/metrics", "*/*");
    assert_eq!(status, 403, "{body}");
    assert!(!body.contains("postern_"));
    inst.wait_log("not in metrics_allowed_clients", Duration::from_secs(5));
    inst.stop();
}
