//! The anvil limits (smtpd_client_*_limit) through a running system:
//! each with Postfix's exact reply and warning, per client address (each
//! client here connects from its own loopback address), and
//! smtpd_client_event_limit_exceptions leaving its clients alone.
use std::time::Duration;

use postern_tests::{Instance, Smtp, python_ok, wait_for};

fn logged(inst: &Instance, needle: &str) {
    wait_for(needle, Duration::from_secs(10), || {
        inst.log().contains(needle).then_some(())
    });
}

fn from(inst: &Instance, src: &str) -> Smtp {
    Smtp::connect_from(src, &inst.ip, inst.smtp_port)
}

/// A greeted EHLO session from `src`.
fn session(inst: &Instance, src: &str) -> Smtp {
    let mut c = from(inst, src);
    let g = c.reply();
    assert!(g.starts_with("220 "), "{src}: {g}");
    assert!(c.cmd("EHLO client.example").starts_with("250"));
    c
}

#[test]
fn every_limit_answers_and_logs_as_postfix() {
    let mut inst = Instance::new(
        "smtpd_error_sleep_time = 0\n\
         mynetworks = 10.0.0.0/8\n\
         smtpd_client_event_limit_exceptions = $mynetworks, 127.0.9.0/24\n\
         smtpd_client_connection_count_limit = 2\n\
         smtpd_client_connection_rate_limit = 5\n\
         smtpd_client_message_rate_limit = 2\n\
         smtpd_client_recipient_rate_limit = 3\n\
         smtpd_client_auth_rate_limit = 2\n\
         smtpd_client_new_tls_session_rate_limit = 1\n\
         smtpd_sasl_auth_enable = yes\n\
         smtpd_tls_auth_only = no\n",
    );
    inst.start();
    let service = format!("{}:{}", inst.ip, inst.smtp_port);
    // Postfix's 421 4.7.0; before EHLO the session core leaves the
    // enhanced status code out (RFC 2034), as in every greeting-time reply.
    let refused_conn =
        |src: &str| format!("421 mx.test.example Error: too many connections from {src}\r\n");

    // Concurrency: two sessions at once, the third is told to go away.
    let a = "127.0.1.1";
    let c1 = session(&inst, a);
    let c2 = session(&inst, a);
    let mut c3 = from(&inst, a);
    assert_eq!(c3.reply(), refused_conn(a));
    assert!(c3.closed());
    logged(
        &inst,
        &format!(
            "warning: Connection concurrency limit exceeded: 3 from unknown[{a}] for service {service}"
        ),
    );
    // One ends: room again.
    drop(c1);
    wait_for("a slot for the client", Duration::from_secs(10), || {
        let mut c = from(&inst, a);
        c.reply().starts_with("220 ").then_some(())
    });
    drop(c2);

    // Rate: five connections a minute, one after the other; the sixth is
    // refused.
    let b = "127.0.1.2";
    for _ in 0..5 {
        let mut c = session(&inst, b);
        c.cmd("QUIT");
    }
    let mut c = from(&inst, b);
    assert_eq!(c.reply(), refused_conn(b));
    logged(
        &inst,
        &format!(
            "warning: Connection rate limit exceeded: 6 from unknown[{b}] for service {service}"
        ),
    );

    // Messages: two MAIL commands a minute.
    let m = "127.0.1.3";
    let mut c = session(&inst, m);
    for _ in 0..2 {
        assert!(c.cmd("MAIL FROM:<a@example.org>").starts_with("250"));
        assert!(c.cmd("RSET").starts_with("250"));
    }
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.org>"),
        format!("450 4.7.1 Error: too much mail from {m}\r\n")
    );
    logged(
        &inst,
        &format!(
            "warning: Message delivery request rate limit exceeded: 3 from unknown[{m}] for service {service}"
        ),
    );
    // Refused MAIL: no transaction.
    assert!(c.cmd("RCPT TO:<root@localhost>").starts_with("503"));

    // Recipients: three a minute.
    let r = "127.0.1.4";
    let mut c = session(&inst, r);
    assert!(c.cmd("MAIL FROM:<a@example.org>").starts_with("250"));
    for _ in 0..3 {
        assert!(c.cmd("RCPT TO:<root@localhost>").starts_with("250"));
    }
    assert_eq!(
        c.cmd("RCPT TO:<root@localhost>"),
        format!("450 4.7.1 Error: too many recipients from {r}\r\n")
    );
    logged(
        &inst,
        &format!(
            "warning: Recipient address rate limit exceeded: 4 from unknown[{r}] for service {service}"
        ),
    );

    // AUTH: two commands a minute, whatever their outcome.
    let u = "127.0.1.5";
    let mut c = session(&inst, u);
    for _ in 0..2 {
        let reply = c.cmd("AUTH PLAIN AHUAbm8=");
        assert!(!reply.starts_with("450"), "{reply}");
    }
    assert_eq!(
        c.cmd("AUTH PLAIN AHUAbm8="),
        format!("450 4.7.1 Error: too many AUTH commands from {u}\r\n")
    );
    logged(
        &inst,
        &format!(
            "warning: AUTH command rate limit exceeded: 3 from unknown[{u}] for service {service}"
        ),
    );

    // New TLS sessions: one a minute. The second handshake is counted when
    // it completes and ends the session with 421; after that STARTTLS
    // itself is refused.
    let t = "127.0.1.6";
    let tls = |expect: &str| {
        python_ok(&format!(
            r#"
import smtplib, ssl
s = smtplib.SMTP("{ip}", {port}, local_hostname="tls.example", source_address=("{t}", 0), timeout=30)
s.ehlo()
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
expect = "{expect}"
if expect == "454":
    code, text = s.docmd("STARTTLS")
    assert (code, text) == (454, b"4.7.0 Error: too many new TLS sessions from unknown[{t}]"), (code, text)
else:
    s.starttls(context=ctx)
    if expect == "ok":
        code, _ = s.ehlo()
        assert code == 250, code
        s.quit()
    else:
        line = s.sock.recv(200)
        assert line == b"421 mx.test.example Error: too many new TLS sessions from unknown[{t}]\r\n", line
"#,
            ip = inst.ip,
            port = inst.smtp_port,
        ));
    };
    tls("ok");
    tls("421");
    logged(
        &inst,
        &format!(
            "warning: New TLS session rate limit exceeded: 2 from unknown[{t}] for service {service}"
        ),
    );
    tls("454");
    logged(
        &inst,
        &format!("warning: Refusing STARTTLS request from unknown[{t}] for service {service}"),
    );

    // An excepted client is not counted at all.
    let x = "127.0.9.9";
    let held: Vec<Smtp> = (0..4).map(|_| session(&inst, x)).collect();
    let mut c = session(&inst, x);
    assert!(c.cmd("MAIL FROM:<a@example.org>").starts_with("250"));
    for _ in 0..5 {
        assert!(c.cmd("RCPT TO:<root@localhost>").starts_with("250"));
    }
    drop(held);
    assert!(
        !inst
            .log()
            .contains(&format!("from unknown[{x}] for service"))
    );
}

#[test]
fn thousands_of_client_addresses_cost_bounded_memory() {
    let mut inst = Instance::new(
        "mynetworks = 10.0.0.0/8\n\
         smtpd_client_connection_rate_limit = 100\n",
    );
    inst.start();
    let smtpd = inst.pid_of("smtpd").expect("smtpd runs");
    // One session from each address: greeting, QUIT.
    let visit = |src: &str| {
        let mut c = from(&inst, src);
        let greeting = c.reply();
        assert!(greeting.starts_with("220 "), "{src}: {greeting}");
        assert!(c.cmd("QUIT").starts_with("221"));
        assert!(c.closed());
    };
    let addrs: Vec<String> = (0..3000u32)
        .map(|i| format!("127.1.{}.{}", i / 250, 1 + i % 250))
        .collect();
    // Warm up (the first sessions grow buffers and tables once).
    for a in &addrs[..200] {
        visit(a);
    }
    let before = postern_tests::rss_kib(smtpd);
    let started = std::time::Instant::now();
    for a in &addrs[200..] {
        visit(a);
        assert!(started.elapsed() < Duration::from_secs(120), "too slow");
    }
    let after = postern_tests::rss_kib(smtpd);
    // 2,800 new entries of well under 256 bytes each, with room for the
    // allocator: far from the 65,536-client cap, and nothing per session
    // kept after it ends.
    assert!(
        after.saturating_sub(before) < 4 * 1024,
        "smtpd grew from {before} KiB to {after} KiB"
    );
    // Every client was counted on its own: none was refused.
    assert!(!inst.log().contains("limit exceeded"));
}

#[test]
fn no_single_client_holds_every_session_slot() {
    // Four sessions for the service (master.cf maxproc), two per client.
    let ip = postern_tests::unique_loopback();
    let master = format!("{ip}:2525 inet n - n - 4 smtpd\n");
    let mut inst = Instance::with_master_cf(
        "mynetworks = 10.0.0.0/8\nsmtpd_client_connection_count_limit = 2\n",
        Some(&master),
    );
    inst.ip = ip;
    inst.start();
    let greedy = "127.0.2.1";
    let held: Vec<Smtp> = (0..2).map(|_| session(&inst, greedy)).collect();
    // Its third is refused at once, and gives its slot back.
    let mut c = from(&inst, greedy);
    assert!(c.reply().starts_with("421 "));
    assert!(c.closed());
    // The other half of the slots are there for someone else.
    let mut other: Vec<Smtp> = (0..2).map(|_| session(&inst, "127.0.2.2")).collect();
    assert_eq!(held.len() + other.len(), 4);
    // The service is full: a fifth client waits for a slot (no greeting
    // yet), and gets one when a session ends.
    let mut fifth = from(&inst, "127.0.2.3");
    fifth
        .w
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut line = String::new();
    use std::io::BufRead;
    assert!(fifth.r.read_line(&mut line).is_err(), "greeted: {line}");
    drop(other.pop());
    fifth
        .w
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert!(fifth.reply().starts_with("220 "));
}
