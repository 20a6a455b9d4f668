//! Milters through a running system, against a real Milter: Debian's
//! pymilter (libmilter underneath, tests/tools/test_milter.py), which records
//! what it is told and makes every change the Milter protocol has, on the
//! message's own command. Also: a Milter that is down (each default
//! action), one killed in the middle of its body replacement (the message
//! is neither half-edited nor lost), non_smtpd_milters for mail from
//! sendmail, and the transaction-reset invariant after a Milter's reject.
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use postern_tests::policyd::Spawned;
use postern_tests::{Instance, Sink, unique_loopback, wait_for};
use serde_json::Value;

struct Filter {
    dir: PathBuf,
    child: Child,
}

impl Filter {
    fn start(ip: &str, port: u16, dir: &Path) -> Filter {
        std::fs::create_dir_all(dir).unwrap();
        let ready = dir.join("ready");
        let _ = std::fs::remove_file(&ready);
        let child = Command::new("/usr/bin/python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/test_milter.py"))
            .args(["--listen", &format!("inet:{port}@{ip}")])
            .arg("--log")
            .arg(dir.join("milter.jsonl"))
            .arg("--ready")
            .arg(&ready)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tests/tools/test_milter.py (apt-get install python3-milter)");
        wait_for("the Milter listening", Duration::from_secs(20), || {
            TcpStream::connect((ip, port)).ok().map(|_| ())
        });
        Filter {
            dir: dir.into(),
            child,
        }
    }

    fn records(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.join("milter.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits for the process to end (die-in-body).
    fn wait_exit(&mut self) {
        wait_for("the Milter to exit", Duration::from_secs(20), || {
            self.child.try_wait().ok().flatten().map(|_| ())
        });
    }
}

impl Drop for Filter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn logged(inst: &Instance, needle: &str) {
    wait_for(needle, Duration::from_secs(15), || {
        inst.log().contains(needle).then_some(())
    });
}

/// One message with X-Test-Do: `todo`; the final reply.
fn send(inst: &Instance, subject: &str, todo: &str, rcpts: &[&str], extra: &str) -> String {
    let mut c = inst.smtp();
    c.reply();
    c.cmd("EHLO client.example");
    let r = c.send_mail(
        "s@example.org",
        rcpts,
        &format!(
            "Subject: {subject}\r\nX-Test-Do: {todo}\r\nX-Delete-Me: gone\r\n{extra}\r\noriginal body\r\n"
        ),
    );
    c.cmd("QUIT");
    r
}

fn delivered(sink: &Sink, subject: &str) -> (Value, String) {
    wait_for(
        &format!("delivery of {subject}"),
        Duration::from_secs(30),
        || {
            sink.messages().into_iter().find_map(|(e, c)| {
                let c = String::from_utf8_lossy(&c).into_owned();
                c.contains(&format!("X-Test-Subject: {subject}"))
                    .then_some((e, c))
            })
        },
    )
}

#[test]
fn a_real_milter_sees_the_session_and_every_change_lands_in_the_queue_file() {
    let ip = unique_loopback();
    let mdir = tempfile::tempdir().unwrap();
    let filter = Filter::start(&ip, 8891, mdir.path());
    let mut inst = Instance::new(&format!(
        "smtpd_milters = inet:{ip}:8891\n\
         milter_default_action = tempfail\n\
         relayhost = [{ip}]:2626\n"
    ));
    let sink = Sink::start(&ip, 2626, &inst.config_dir().join("sink"));
    inst.start();

    // Every change, in one message.
    let r = send(
        &inst,
        "changed",
        "add insert change delete body from addrcpt addrcptpar delrcpt",
        &["b@example.net", "c@example.net"],
        "X-Test-Subject: changed\r\nX-Test-Del: c@example.net\r\n",
    );
    assert!(r.starts_with("250"), "{r}");
    let (env, content) = delivered(&sink, "changed");
    // The Milter saw the session and the message as queued.
    let rec = filter.records();
    let rec = rec
        .iter()
        .find(|r| r["todo"].as_array().is_some_and(|t| t.len() > 3))
        .expect("a record");
    assert_eq!(rec["helo"], "client.example", "{rec}");
    assert_eq!(rec["mail"][0], "<s@example.org>", "{rec}");
    assert_eq!(rec["rcpt"].as_array().unwrap().len(), 2, "{rec}");
    let headers: Vec<&str> = rec["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h[0].as_str().unwrap())
        .collect();
    assert!(headers.contains(&"Received"), "{headers:?}");
    assert!(headers.contains(&"Message-Id"), "{headers:?}");
    let macros = &rec["macros"];
    assert_eq!(macros["connect"]["j"], "mx.test.example", "{macros}");
    assert_eq!(
        macros["connect"]["{daemon_name}"], "mx.test.example",
        "{macros}"
    );
    assert_eq!(macros["connect"]["_"], "unknown [127.0.0.1]", "{macros}");
    assert_eq!(macros["mail"]["{mail_addr}"], "s@example.org", "{macros}");
    assert_eq!(macros["rcpt"]["{rcpt_addr}"], "c@example.net", "{macros}");
    // The queue id from RCPT on (Postfix opens the queue file at the
    // first accepted recipient, smtpd_delay_open_until_valid_rcpt).
    assert!(macros["mail"].get("i").is_none(), "{macros}");
    let qid = macros["eom"]["i"].as_str().unwrap();
    assert!(!qid.is_empty(), "{macros}");
    // Each change is in the delivered message.
    let top = content
        .find("X-Milter-Top: first")
        .expect("inserted at the top");
    let received = content.find("Received:").expect("Received");
    assert!(top < received, "{content}");
    assert!(content.contains("X-Milter-Added: yes\r\n"), "{content}");
    assert!(
        content.contains("Subject: changed by milter\r\n"),
        "{content}"
    );
    assert!(!content.contains("X-Delete-Me"), "{content}");
    assert!(
        content.contains("\r\n\r\nreplaced by the milter\r\nsecond line\r\n"),
        "{content}"
    );
    assert!(!content.contains("original body"), "{content}");
    assert_eq!(env["from"], "changed@example.org", "{env}");
    let mut to: Vec<&str> = env["to"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    to.sort_unstable();
    assert_eq!(
        to,
        [
            "added-par@example.net",
            "added@example.net",
            "b@example.net"
        ],
        "{env}"
    );

    // Reject, tempfail and discard; quarantine holds.
    let r = send(
        &inst,
        "rejected",
        "reject",
        &["b@example.net"],
        "X-Test-Subject: rejected\r\n",
    );
    assert!(r.starts_with("554 5.7.1 milter says no"), "{r}");
    logged(&inst, "milter-reject: END-OF-MESSAGE from");
    let r = send(
        &inst,
        "later",
        "tempfail",
        &["b@example.net"],
        "X-Test-Subject: later\r\n",
    );
    assert!(r.starts_with("451 4.7.1 milter says later"), "{r}");
    let r = send(
        &inst,
        "dropped",
        "discard",
        &["b@example.net"],
        "X-Test-Subject: dropped\r\n",
    );
    assert!(r.starts_with("250"), "{r}");
    logged(&inst, "milter-discard: END-OF-MESSAGE from");
    let r = send(
        &inst,
        "held",
        "quarantine",
        &["b@example.net"],
        "X-Test-Subject: held\r\n",
    );
    assert!(r.starts_with("250"), "{r}");
    logged(&inst, "milter-hold: END-OF-MESSAGE from");
    let held = wait_for("the held message", Duration::from_secs(15), || {
        let q = inst.queue_json();
        (q.len() == 1).then(|| q[0].clone())
    });
    assert_eq!(held["queue_name"], "hold", "{held}");

    // The transaction-reset invariant: after a Milter's reject at the end
    // of data, the next transaction on the same session goes through the
    // Milter again (and is accepted unchanged).
    let mut c = inst.smtp();
    c.reply();
    c.cmd("EHLO client.example");
    let r = c.send_mail(
        "s@example.org",
        &["b@example.net"],
        "Subject: r1\r\nX-Test-Do: reject\r\nX-Test-Subject: r1\r\n\r\nx\r\n",
    );
    assert!(r.starts_with("554"), "{r}");
    let r = c.send_mail(
        "s@example.org",
        &["b@example.net"],
        "Subject: r2\r\nX-Test-Do: add\r\nX-Test-Subject: r2\r\n\r\nx\r\n",
    );
    assert!(r.starts_with("250"), "{r}");
    // A body of many chunks: the Milter skips the rest of it after 4 KiB
    // (SMFIR_SKIP); the message goes through whole.
    let big: String = (0..3000)
        .map(|i| format!("line {i:05} of a long body\r\n"))
        .collect();
    let r = c.send_mail(
        "s@example.org",
        &["b@example.net"],
        &format!("Subject: big\r\nX-Test-Do: add\r\nX-Test-Subject: big\r\n\r\n{big}"),
    );
    assert!(r.starts_with("250"), "{r}");
    // A client the Milter refuses at CONNECT: Postfix's words, and
    // nothing after it.
    let src = format!("{}.250", ip.rsplit_once('.').unwrap().0);
    let mut refused = postern_tests::Smtp::connect_from(&src, &inst.ip, 2525);
    let g = refused.reply();
    assert!(
        g.starts_with("554 mx.test.example ESMTP not accepting connections"),
        "{g}"
    );
    assert!(refused.cmd("MAIL FROM:<s@example.org>").starts_with("503"));
    refused.cmd("QUIT");
    logged(&inst, "NOQUEUE: milter-reject: CONNECT from");
    // A recipient the Milter refuses at RCPT is refused there; the others
    // go on.
    assert!(c.cmd("MAIL FROM:<s@example.org>").starts_with("250"));
    let r = c.cmd("RCPT TO:<reject-rcpt@example.net>");
    assert!(r.starts_with("550 5.1.1 no such user here"), "{r}");
    assert!(c.cmd("RCPT TO:<b@example.net>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(b"Subject: r3\r\nX-Test-Do: add\r\nX-Test-Subject: r3\r\n\r\nx\r\n.\r\n");
    assert!(c.reply().starts_with("250"));
    c.cmd("QUIT");
    logged(&inst, "milter-reject: RCPT from");
    let (env, _) = delivered(&sink, "r3");
    let (_, content) = delivered(&sink, "big");
    assert!(
        content.contains("X-Milter-Added: yes"),
        "big: the Milter's header"
    );
    assert!(content.ends_with(&big), "big: the body is whole");
    assert_eq!(env["to"], serde_json::json!(["b@example.net"]), "{env}");
    let (_, content) = delivered(&sink, "r2");
    assert!(content.contains("X-Milter-Added: yes"), "{content}");
    for s in ["rejected", "later", "dropped", "r1"] {
        assert!(
            !sink
                .messages()
                .iter()
                .any(|(_, c)| String::from_utf8_lossy(c)
                    .contains(&format!("X-Test-Subject: {s}\r\n"))),
            "{s} was delivered"
        );
    }

    // The milter role killed (kill -9): smtpd's pooled channels to it are
    // dead. Sessions are refused with 4xx, never accepted unfiltered, until
    // the master has started it again; then mail goes through the Milter.
    let old = inst.pid_of("milter").expect("the milter role runs");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    loop {
        n += 1;
        let subject = format!("after-kill-{n}");
        let mut c = inst.smtp();
        let g = c.reply();
        let ok = if g.starts_with("220") {
            c.cmd("EHLO client.example");
            let r = c.cmd("MAIL FROM:<s@example.org>");
            if r.starts_with("250") {
                let r = c.cmd("RCPT TO:<b@example.net>");
                assert!(r.starts_with("250") || r.starts_with('4'), "{r}");
                if r.starts_with("250") {
                    assert!(c.cmd("DATA").starts_with("354"));
                    c.send(
                        format!("Subject: k\r\nX-Test-Do: add\r\nX-Test-Subject: {subject}\r\n\r\nx\r\n.\r\n")
                            .as_bytes(),
                    );
                    let r = c.reply();
                    assert!(r.starts_with("250") || r.starts_with('4'), "{r}");
                    r.starts_with("250")
                } else {
                    false
                }
            } else {
                assert!(r.starts_with('4'), "{r}");
                false
            }
        } else {
            assert!(g.starts_with('4'), "{g}");
            false
        };
        c.cmd("QUIT");
        if ok {
            let (_, content) = delivered(&sink, &subject);
            assert!(content.contains("X-Milter-Added: yes"), "{content}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no recovery after the milter role was killed"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_ne!(inst.pid_of("milter"), Some(old));
    inst.stop();
}

#[test]
fn a_milter_that_dies_or_is_down_gets_its_default_action_and_sendmail_mail_is_filtered() {
    let ip = unique_loopback();
    let mdir = tempfile::tempdir().unwrap();
    let mut filter = Filter::start(&ip, 8892, mdir.path());
    let mut inst = Instance::new(&format!(
        "smtpd_milters = {{ inet:{ip}:8892, default_action=tempfail }}\n\
         non_smtpd_milters = {{ inet:{ip}:8892, default_action=tempfail }}\n\
         relayhost = [{ip}]:2626\n"
    ));
    let sink = Sink::start(&ip, 2626, &inst.config_dir().join("sink"));
    inst.start();

    // Mail from sendmail goes through non_smtpd_milters.
    inst.sendmail(
        &["-f", "root@localhost", "b@example.net"],
        b"Subject: local\nX-Test-Do: add\nX-Test-Subject: local\n\nfrom cron\n",
    );
    let (_, content) = delivered(&sink, "local");
    assert!(content.contains("X-Milter-Added: yes"), "{content}");
    let rec = filter.records();
    assert_eq!(rec[0]["mail"][0], "<root@localhost>", "{rec:?}");

    // Killed in the middle of its body replacement: the client is told
    // 451 (the default action) and nothing half-edited is queued.
    let r = send(
        &inst,
        "dying",
        "die-in-body",
        &["b@example.net"],
        "X-Test-Subject: dying\r\n",
    );
    assert!(r.starts_with("451 4.7.1"), "{r}");
    filter.wait_exit();
    logged(&inst, "milter-reject: END-OF-MESSAGE from");
    // Down: the client is greeted (a 4xx default action does not refuse
    // the connection, as in Postfix), and every event after it gets the
    // default action; nothing is accepted.
    let mut c = inst.smtp();
    let r = c.reply();
    assert!(r.starts_with("220"), "{r}");
    // (No enhanced status code before EHLO has succeeded.)
    let r = c.cmd("EHLO client.example");
    assert!(r.starts_with("451 Service unavailable"), "{r}");
    let r = c.cmd("MAIL FROM:<s@example.org>");
    assert!(r.starts_with("451 Service unavailable"), "{r}");
    c.cmd("QUIT");
    logged(&inst, &format!("milter inet:{ip}:8892: can't connect"));
    logged(&inst, "NOQUEUE: milter-reject: MAIL from");
    std::thread::sleep(Duration::from_secs(2));
    for (_, c) in sink.messages() {
        let c = String::from_utf8_lossy(&c);
        assert!(!c.contains("X-Before-Death"), "{c}");
        assert!(!c.contains("half of a new body"), "{c}");
        assert!(!c.contains("X-Test-Subject: down"), "{c}");
    }
    assert!(inst.queue_json().is_empty(), "{:?}", inst.queue_json());
    inst.stop();
}

/// The TXT record data of opendkim-genkey's `SELECTOR.txt`: its quoted
/// strings, as one line of strings of at most 255 bytes.
fn txt_record(genkey_txt: &str) -> String {
    genkey_txt
        .split('"')
        .skip(1)
        .step_by(2)
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Checks a DKIM signature with dkimpy, the public key given directly.
fn dkimpy_verifies(message: &[u8], txt: &str) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m.eml");
    std::fs::write(&m, message).unwrap();
    let key: String = txt.split('"').skip(1).step_by(2).collect();
    let script = "import sys, dkim\n\
                  key = sys.argv[2].encode()\n\
                  msg = open(sys.argv[1], 'rb').read()\n\
                  ok = dkim.verify(msg, dnsfunc=lambda name, timeout=5: key)\n\
                  sys.exit(0 if ok else 1)\n";
    Command::new("/usr/bin/python3")
        .args(["-c", script])
        .arg(&m)
        .arg(&key)
        .status()
        .expect("python3-dkim")
        .success()
}

#[test]
fn opendkim_signs_mail_from_mynetworks_and_verifies_inbound() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let st = Command::new("/usr/sbin/opendkim-genkey")
        .args(["-b", "2048", "-d", "example.org", "-s", "sel", "-D"])
        .arg(&keys)
        .status()
        .expect("opendkim-genkey (apt-get install opendkim-tools)");
    assert!(st.success());
    let txt = txt_record(&std::fs::read_to_string(keys.join("sel.txt")).unwrap());
    let dns_ip = unique_loopback();
    let zone = format!(
        "@ 3600 IN SOA ns.example.org. admin.example.org. 1 3600 600 86400 60\n\
         @ 3600 IN NS ns.example.org.\n\
         ns 3600 IN A 127.0.0.1\n\
         sel._domainkey 3600 IN TXT {txt}\n"
    );
    let _dns = postern_tests::dns::start_zones_at(&dns_ip, 53, &[("example.org.", &zone)]);
    // opendkim resolves with libunbound: forward everything to the
    // loopback server (unbound will not query loopback addresses unless
    // told it may).
    let unbound = dir.path().join("unbound.conf");
    std::fs::write(
        &unbound,
        format!(
            "server:\n  do-not-query-localhost: no\n  module-config: \"iterator\"\n\
             forward-zone:\n  name: \".\"\n  forward-addr: {dns_ip}@53\n"
        ),
    )
    .unwrap();
    let ip = unique_loopback();
    let dkim = Spawned::opendkim(
        &ip,
        8891,
        dns_ip.parse().unwrap(),
        &format!(
            "Mode sv\nDomain example.org\nSelector sel\nKeyFile {}\n\
             InternalHosts 127.0.0.1\nAuthservID mx.test.example\nPidFile {}\n\
             ResolverConfiguration {}\n",
            keys.join("sel.private").display(),
            dir.path().join("opendkim.pid").display(),
            unbound.display()
        ),
        &dir.path().join("opendkim"),
    );
    let mut inst = Instance::new(&format!(
        "smtpd_milters = {}\nmilter_default_action = tempfail\nrelayhost = [{ip}]:2626\n\
         authentication_checks = dkim\ndns_nameservers = {dns_ip}\n\
         mynetworks = 127.0.0.1/32\nrelay_domains = example.net\n",
        dkim.endpoint
    ));
    let sink = Sink::start(&ip, 2626, &inst.config_dir().join("sink"));
    inst.start();

    // From 127.0.0.1 (opendkim's InternalHosts): signed.
    let mut c = inst.smtp();
    c.reply();
    c.cmd("EHLO client.example");
    let r = c.send_mail(
        "alerts@example.org",
        &["ops@example.net"],
        "From: Appliance <alerts@example.org>\r\nTo: ops@example.net\r\n\
         Subject: disk nearly full\r\nX-Test-Subject: signed\r\n\r\n/var is 91% full\r\n",
    );
    assert!(r.starts_with("250"), "{r}");
    c.cmd("QUIT");
    let (_, signed) = delivered(&sink, "signed");
    assert!(signed.starts_with("DKIM-Signature: "), "{signed}");
    assert!(signed.contains("d=example.org"), "{signed}");
    assert!(dkimpy_verifies(signed.as_bytes(), &txt), "dkimpy: {signed}");

    // The signed message again, from an outside client: opendkim verifies
    // it (the key from the loopback DNS server) and says so.
    let mut c = postern_tests::Smtp::connect_from(&unique_loopback(), &inst.ip, 2525);
    c.reply();
    c.cmd("EHLO outside.example");
    let resent = signed.replace("X-Test-Subject: signed", "X-Test-Subject: resent");
    // X-Test-Subject is not among the headers opendkim signs.
    let r = c.send_mail("alerts@example.org", &["ops@example.net"], &resent);
    assert!(r.starts_with("250"), "{r}");
    c.cmd("QUIT");
    let (_, verified) = delivered(&sink, "resent");
    let ar = verified
        .lines()
        .find(|l| l.starts_with("Authentication-Results: "))
        .unwrap_or_else(|| {
            panic!(
                "no Authentication-Results: {verified}\n{:?}",
                _dns.queries()
            )
        });
    assert!(ar.contains("mx.test.example"), "{ar}");
    assert!(verified.contains("dkim=pass"), "{verified}");
    // Postern's own verdict (authentication_checks, before the Milters) and
    // opendkim's, both under the authserv-id mx.test.example: both stay.
    let ars: Vec<&str> = verified
        .split("\r\n")
        .filter(|l| l.starts_with("Authentication-Results: mx.test.example;"))
        .collect();
    assert_eq!(ars.len(), 2, "{verified}");
    inst.stop();
}

/// Debian's rspamd, its proxy worker in Milter mode scanning by itself,
/// with the GTUBE test patterns on and DNS pointed at a loopback server.
struct Rspamd {
    child: Child,
}

impl Rspamd {
    fn start(ip: &str, port: u16, dns: &str, dir: &Path) -> Rspamd {
        let local = dir.join("local.d");
        for d in ["local.d", "db", "run", "log"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let files = [
            (
                "options.inc",
                format!(
                    "enable_test_patterns = true;\n\
                     dns {{ nameserver = [\"{dns}:53\"]; timeout = 1s; retransmits = 1; }}\n"
                ),
            ),
            (
                "worker-proxy.inc",
                format!(
                    "bind_socket = \"{ip}:{port}\";\nmilter = yes;\n\
                     upstream \"local\" {{ default = yes; self_scan = yes; }}\n"
                ),
            ),
            ("worker-normal.inc", "enabled = false;\n".into()),
            ("worker-controller.inc", "enabled = false;\n".into()),
            ("worker-fuzzy.inc", "enabled = false;\n".into()),
            (
                "logging.inc",
                format!(
                    "type = \"file\";\nfilename = \"{}\";\nlevel = \"notice\";\n",
                    dir.join("log/rspamd.log").display()
                ),
            ),
        ];
        for (name, text) in files {
            std::fs::write(local.join(name), text).unwrap();
        }
        let var = |n: &str, p: &Path| format!("{n}={}", p.display());
        // Its own process group: rspamd forks workers, which must go with it.
        use std::os::unix::process::CommandExt;
        let child = Command::new("rspamd")
            .process_group(0)
            .args([
                "-f",
                "-i",
                "-u",
                "root",
                "-g",
                "root",
                "-c",
                "/etc/rspamd/rspamd.conf",
            ])
            .arg("--var")
            .arg(var("LOCAL_CONFDIR", dir))
            .arg("--var")
            .arg(var("DBDIR", &dir.join("db")))
            .arg("--var")
            .arg(var("RUNDIR", &dir.join("run")))
            .arg("--var")
            .arg(var("LOGDIR", &dir.join("log")))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rspamd (apt-get install rspamd)");
        // Its start compiles the TLD list and the regular expressions.
        wait_for("rspamd's Milter listening", Duration::from_secs(90), || {
            TcpStream::connect((ip, port)).ok().map(|_| ())
        });
        Rspamd { child }
    }
}

impl Drop for Rspamd {
    fn drop(&mut self) {
        // The main process and every worker it forked.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.child.wait();
    }
}

#[test]
fn rspamd_rejects_adds_a_header_and_rewrites_the_subject_for_its_gtube_variants() {
    const GTUBE: &str = "JS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";
    let dir = tempfile::tempdir().unwrap();
    let dns_ip = unique_loopback();
    let zone = "@ 3600 IN SOA ns.example.org. admin.example.org. 1 3600 600 86400 60\n\
                @ 3600 IN NS ns.example.org.\n\
                ns 3600 IN A 127.0.0.1\n";
    let _dns = postern_tests::dns::start_zones_at(&dns_ip, 53, &[("example.org.", zone)]);
    let ip = unique_loopback();
    let _rspamd = Rspamd::start(&ip, 11332, &dns_ip, &dir.path().join("rspamd"));
    let mut inst = Instance::new(&format!(
        "smtpd_milters = inet:{ip}:11332\nmilter_default_action = tempfail\n\
         relayhost = [{ip}]:2626\n"
    ));
    let sink = Sink::start(&ip, 2626, &inst.config_dir().join("sink"));
    inst.start();
    let send = |variant: char, subject: &str| -> String {
        let mut c = postern_tests::Smtp::connect_from(&unique_loopback(), &inst.ip, 2525);
        c.reply();
        c.cmd("EHLO client.example");
        let r = c.send_mail(
            "s@example.org",
            &["b@example.net"],
            &format!(
                "From: s@example.org\r\nTo: b@example.net\r\nSubject: {subject}\r\n\
                 X-Test-Subject: {subject}\r\n\r\n{variant}{GTUBE}\r\n"
            ),
        );
        c.cmd("QUIT");
        r
    };
    let r = send('X', "reject");
    assert!(r.starts_with("554 5.7.1"), "{r}");
    logged(&inst, "milter-reject: END-OF-MESSAGE from");
    let r = send('Y', "add-header");
    assert!(r.starts_with("250"), "{r}");
    let (_, added) = delivered(&sink, "add-header");
    assert!(added.contains("X-Spam: Yes"), "{added}");
    let r = send('Z', "rewrite");
    assert!(r.starts_with("250"), "{r}");
    let (_, rewritten) = delivered(&sink, "rewrite");
    let subject = rewritten
        .lines()
        .find(|l| l.starts_with("Subject: "))
        .unwrap_or_default();
    assert!(
        subject.contains("SPAM") && subject.contains("rewrite"),
        "{rewritten}"
    );
    assert!(
        !sink
            .messages()
            .iter()
            .any(|(_, c)| String::from_utf8_lossy(c).contains("X-Test-Subject: reject")),
        "the rejected message was delivered"
    );
    inst.stop();
}
