//! The log a default `postern start` writes, read by the tools admins run
//! on Postfix logs, with no change to them: pflogsumm counts a known
//! traffic mix exactly, and fail2ban-regex with Debian's stock `postfix`
//! filter (its default mode, and `mode=auth`, which the `postfix-sasl`
//! jail uses) matches every reject and every failed AUTH.
use std::process::{Command, Stdio};
use std::time::Duration;

use postern_tests::{Instance, Sink, smtplib, wait_for};

/// Stops a detached instance even when the test fails.
struct Detached<'a>(&'a Instance);

impl Drop for Detached<'_> {
    fn drop(&mut self) {
        let _ = self.0.postern(&["stop"]);
    }
}

fn failed_auth(ip: &str) -> String {
    let out = Command::new("swaks")
        .args(["--server", &format!("{ip}:2525")])
        .args(["--ehlo", "client.example", "--auth", "PLAIN"])
        .args(["--auth-user", "alice", "--auth-password", "wrong"])
        .args(["--quit-after", "AUTH", "--timeout", "30"])
        .output()
        .expect("swaks");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// pflogsumm's Grand Totals figure for `what` (received, delivered, ...).
fn total(report: &str, what: &str) -> Option<u64> {
    report.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        let n = w.next()?.parse().ok()?;
        (w.next()? == what).then_some(n)
    })
}

#[test]
fn pflogsumm_and_fail2ban_read_the_default_log() {
    let dir = tempfile::tempdir().unwrap();
    let transport = dir.path().join("transport");
    let inst = Instance::new(&format!(
        "mynetworks = [::1]/128\n\
         relay_domains = plain.test dead.test\n\
         transport_maps = texthash:{t}\n\
         smtpd_sasl_auth_enable = yes\n\
         smtpd_tls_auth_only = no\n",
        t = transport.display()
    ));
    let ip = inst.ip.clone();
    // Where a default start logs with no syslog daemon; where one listens
    // on /dev/log, the same file is named, for the same lines.
    let maillog = inst.data_dir().join("maillog");
    if std::os::unix::net::UnixDatagram::unbound()
        .and_then(|s| s.connect("/dev/log"))
        .is_ok()
    {
        inst.add_main_cf(&format!("maillog_file = {}", maillog.display()));
    }
    let sink = Sink::start(&ip, 2601, &dir.path().join("sink"));
    std::fs::write(dir.path().join("sink").join("mode"), "byname").unwrap();
    std::fs::write(
        &transport,
        format!("plain.test smtp:[{ip}]:2601\ndead.test smtp:[{ip}]:2603\n"),
    )
    .unwrap();
    assert!(inst.passwd("alice", "correct horse").status.success());
    let out = inst.postern(&["start"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _guard = Detached(&inst);

    let body = "Subject: m\r\n\r\nhello\r\n";
    for _ in 0..2 {
        let r = smtplib(
            &ip,
            2525,
            "alice@plain.test",
            &["bob@plain.test"],
            Some(body),
        );
        assert!(r.last().unwrap().starts_with("250"), "{r:?}");
    }
    inst.sendmail(
        &["-f", "root@plain.test", "bob@plain.test"],
        b"Subject: from cron\n\nhello\n",
    );
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
    let r = smtplib(
        &ip,
        2525,
        "alice@plain.test",
        &["nosuchuser@mx.test.example"],
        None,
    );
    assert!(r[0].starts_with("550 5.1.1"), "{r:?}");
    for _ in 0..2 {
        let t = failed_auth(&ip);
        assert!(t.contains("<~* 535") || t.contains("<** 535"), "{t}");
    }
    // bob three times, and alice's bounce notice.
    wait_for("deliveries", Duration::from_secs(60), || {
        (sink.messages().len() == 4).then_some(())
    });
    wait_for(
        "the deferral and the AUTH failures logged",
        Duration::from_secs(30),
        || {
            let log = std::fs::read_to_string(&maillog).unwrap_or_default();
            (log.contains("status=deferred") && log.matches("authentication failed").count() == 2)
                .then_some(())
        },
    );

    let out = Command::new("pflogsumm")
        .arg(&maillog)
        .output()
        .expect("pflogsumm (apt-get install pflogsumm)");
    let report = String::from_utf8_lossy(&out.stdout);
    let log = std::fs::read_to_string(&maillog).unwrap();
    for (what, n) in [
        ("received", 5),
        ("delivered", 4),
        ("deferred", 1),
        ("bounced", 1),
        ("rejected", 3),
    ] {
        assert_eq!(total(&report, what), Some(n), "{what}:\n{report}\n{log}");
    }
    let (rejects, text) =
        postern_tests::fail2ban_matched(&maillog, "/etc/fail2ban/filter.d/postfix.conf");
    assert_eq!(rejects, 3, "{text}\n{log}");
    let (auth, text) = postern_tests::fail2ban_matched(&maillog, "postfix[mode=auth]");
    assert_eq!(auth, 2, "{text}\n{log}");
}

/// `start --foreground` honours a set maillog_file, as Postfix's
/// `start-fg` does: `/dev/stdout` puts the log on standard output (for a
/// container), and nothing on standard error.
#[test]
fn foreground_honours_maillog_file_dev_stdout() {
    let inst = Instance::new("maillog_file = /dev/stdout\n");
    let out_path = inst.dir.path().join("stdout");
    let err_path = inst.dir.path().join("stderr");
    let mut master = inst
        .command()
        .args(["start", "--foreground"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    wait_for(
        "the master's first lines on stdout",
        Duration::from_secs(30),
        || {
            let text = std::fs::read_to_string(&out_path).unwrap_or_default();
            text.contains("postfix/master[").then_some(())
        },
    );
    // The first log line comes before the control socket: stop once
    // `status` answers (a stop sent earlier finds nothing to stop).
    wait_for("the control socket", Duration::from_secs(30), || {
        inst.postern(&["status"]).status.success().then_some(())
    });
    let stop = inst.postern(&["stop"]);
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    let status = wait_for("the master to exit", Duration::from_secs(30), || {
        master.try_wait().ok().flatten()
    });
    assert!(status.success(), "{status}");
    let out = std::fs::read_to_string(&out_path).unwrap();
    assert!(out.contains("daemon started"), "{out}");
    assert!(out.contains("terminating on signal or request"), "{out}");
    let err = std::fs::read_to_string(&err_path).unwrap();
    assert!(!err.contains("postfix/"), "log lines on stderr: {err}");
}
