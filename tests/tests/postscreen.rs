//! postscreen in front of smtpd, as Postfix admins configure it
//! (`smtp inet n - n - 1 postscreen` with `smtpd pass - - n - - smtpd`),
//! against a real DNS server on loopback serving weighted DNS lists, with
//! real clients (raw sockets, swaks, Python's smtplib): a client that talks
//! first, one listed by two lists, one allowlisted by a negative weight,
//! clean ones that pass, are handed to smtpd with their socket, deliver
//! mail (with STARTTLS after the hand-off), and come back as PASS OLD; the
//! deep protocol tests; the PROXY protocol from a real HAProxy.
use std::time::{Duration, Instant};

use postern_tests::{Instance, Smtp, dns, unique_loopback, wait_for};

const ZONE: &str = "@ 3600 IN SOA ns.test. admin.test. 1 3600 600 86400 60\n\
    @ 3600 IN NS ns.test.\n\
    ns 3600 IN A 127.0.0.1\n\
    2.0.0.127.zen 300 IN A 127.0.0.2\n\
    2.0.0.127.bl 300 IN A 127.0.0.2\n\
    7.0.0.127.zen 300 IN A 127.0.0.2\n\
    5.0.0.127.wl 300 IN A 127.0.9.2\n\
    5.0.0.127.zen 300 IN A 127.0.0.2\n";

fn logged(inst: &Instance, needle: &str) -> String {
    wait_for(needle, Duration::from_secs(15), || {
        inst.log()
            .lines()
            .find(|l| l.contains(needle))
            .map(String::from)
    })
}

/// postscreen on port 2525 (`extra`: its -o lines) in front of the smtpd
/// pass service (at most `pass_maxproc` sessions), and a plain smtpd on
/// 2587.
fn master_cf(ip: &str, extra: &str, pass_maxproc: &str) -> String {
    format!(
        "{ip}:2525 inet n - n - 1 postscreen\n{extra}\
         smtpd pass - - n - {pass_maxproc} smtpd\n\
         {ip}:2587 inet n - n - - smtpd\n"
    )
}

fn instance(dns: &str, extra_main: &str, extra_master: &str) -> Instance {
    let ip = unique_loopback();
    let mut inst = Instance::with_master_cf(
        &format!(
            "mynetworks = 10.0.0.0/8\n\
             dns_nameservers = {dns}\n\
             smtpd_error_sleep_time = 0\n\
             postscreen_greet_wait = 2s\n\
             {extra_main}"
        ),
        Some(&master_cf(&ip, extra_master, "-")),
    );
    inst.ip = ip;
    inst
}

/// The whole greeting (one multi-line reply), and how long it took.
fn greeting(c: &mut Smtp) -> (String, Duration) {
    let t = Instant::now();
    let g = c.reply();
    (g, t.elapsed())
}

#[test]
fn pregreet_dnsbl_scores_allowlist_pass_new_and_pass_old() {
    let probe = unique_loopback();
    let server = dns::start_zones(&probe, &[("test.", ZONE)]);
    let mut inst = instance(
        &server.addr.to_string(),
        "postscreen_greet_action = enforce\n\
         postscreen_dnsbl_sites = zen.test*2 bl.test wl.test=127.0.[0..255].[1..3]*-5\n\
         postscreen_dnsbl_threshold = 3\n\
         postscreen_dnsbl_allowlist_threshold = -1\n\
         postscreen_dnsbl_action = enforce\n",
        "",
    );
    inst.start();
    let ip = inst.ip.clone();

    // A clean client: the teaser, the greeting wait, then smtpd's "220 "
    // completes the same reply on the same connection.
    let mut c = Smtp::connect_from("127.0.0.3", &ip, 2525);
    let (g, took) = greeting(&mut c);
    assert!(
        g.starts_with("220-mx.test.example ESMTP") && g.contains("\r\n220 mx.test.example ESMTP"),
        "{g:?}"
    );
    assert!(took >= Duration::from_millis(1900), "{took:?}");
    logged(&inst, "postscreen[");
    let pass = logged(&inst, "PASS NEW [127.0.0.3]:");
    assert!(pass.contains("postfix/postscreen["), "{pass}");
    assert!(c.cmd("EHLO client.example").contains("250-PIPELINING"));
    let r = c.send_mail(
        "someone@example.org",
        &["root@localhost"],
        "Subject: screened\r\n\r\nhello\r\n",
    );
    assert!(r.starts_with("250"), "{r}");
    c.cmd("QUIT");
    logged(&inst, "connect from unknown[127.0.0.3]");
    // Its second connection is a PASS OLD that smtpd greets at once,
    // and STARTTLS works on the handed-over socket (smtplib).
    let out = postern_tests::python_ok(&format!(
        r#"
import smtplib, ssl, time
t = time.monotonic()
s = smtplib.SMTP("{ip}", 2525, local_hostname="client.example", timeout=30, source_address=("127.0.0.3", 0))
took = time.monotonic() - t
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s.starttls(context=ctx)
s.ehlo()
assert s.sock.version() is not None
s.sendmail("someone@example.org", ["root@localhost"], "Subject: again, with TLS\r\n\r\nhello\r\n")
s.quit()
print("%.3f" % took)
"#
    ));
    let took: f64 = out.trim().parse().unwrap();
    assert!(took < 1.0, "PASS OLD waited {took}s");
    logged(&inst, "PASS OLD [127.0.0.3]:");
    let mail = wait_for("both messages delivered", Duration::from_secs(30), || {
        let m = inst.maildir("root");
        (m.len() >= 2).then_some(m)
    });
    assert!(mail.iter().any(|m| m.contains("Subject: screened")));
    let tls = mail
        .iter()
        .find(|m| m.contains("Subject: again, with TLS"))
        .unwrap();
    assert!(tls.contains("(unknown [127.0.0.3])"), "{tls}");
    assert!(tls.contains("with ESMTPS"), "{tls}");
    // swaks, with STARTTLS, from another clean client through the wait.
    let out = std::process::Command::new("swaks")
        .args([
            "--server",
            &format!("{ip}:2525"),
            "--local-interface",
            "127.0.0.6",
        ])
        .args(["--ehlo", "swaks.example", "--from", "a@example.org"])
        .args(["--to", "root@localhost", "--tls", "--timeout", "30"])
        .args(["--header", "Subject: from swaks"])
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("<-  220-mx.test.example") && t.contains("<-  220 mx.test.example"),
        "{t}"
    );
    logged(&inst, "PASS NEW [127.0.0.6]:");

    // Listed by zen.test (weight 2) and bl.test (1): rank 3, and RCPT is
    // refused by postscreen's own engine (enforce), naming the list.
    let mut c = Smtp::connect_from("127.0.0.2", &ip, 2525);
    let (g, _) = greeting(&mut c);
    assert!(
        g.ends_with("220 mx.test.example ESMTP Postern\r\n"),
        "{g:?}"
    );
    assert!(c.cmd("EHLO bot.example").starts_with("250"));
    assert_eq!(c.cmd("MAIL FROM:<bot@example.org>"), "250 2.1.0 Ok\r\n");
    assert_eq!(
        c.cmd("RCPT TO:<root@localhost>"),
        "550 5.7.1 Service unavailable; client [127.0.0.2] blocked using zen.test\r\n"
    );
    assert_eq!(c.cmd("DATA"), "554 5.5.1 Error: no valid recipients\r\n");
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    logged(&inst, "DNSBL rank 3 for [127.0.0.2]:");
    let l = logged(&inst, "NOQUEUE: reject: RCPT from [127.0.0.2]:");
    assert!(
        l.contains(": 550 5.7.1 Service unavailable; client [127.0.0.2] blocked using zen.test; from=<bot@example.org>, to=<root@localhost>, proto=ESMTP, helo=<bot.example>"),
        "{l}"
    );
    logged(&inst, "DISCONNECT [127.0.0.2]:");

    // Listed by zen.test (2) but allowlisted by wl.test (-5): it passes at
    // once, without the greeting wait.
    let mut c = Smtp::connect_from("127.0.0.5", &ip, 2525);
    let (g, took) = greeting(&mut c);
    assert!(g.contains("\r\n220 mx.test.example ESMTP"), "{g:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
    assert!(c.cmd("EHLO allowed.example").starts_with("250-"));
    c.cmd("QUIT");
    logged(&inst, "connect from unknown[127.0.0.5]");

    // Talks before its turn: PREGREET, no greeting from the engine, and
    // 550 at RCPT (postscreen_greet_action = enforce).
    let mut c = Smtp::connect_from("127.0.0.4", &ip, 2525);
    c.send(b"EHLO pregreet.example\r\n");
    // The teaser may come first (a bot does not wait for it); the EHLO
    // reply ends the exchange, and the engine sends no "220 " line.
    let mut saw = String::new();
    while !saw.ends_with("250 DSN\r\n") {
        saw.push_str(&c.reply());
    }
    assert!(!saw.contains("220 "), "{saw:?}");
    assert_eq!(c.cmd("MAIL FROM:<x@example.org>"), "250 2.1.0 Ok\r\n");
    assert_eq!(
        c.cmd("RCPT TO:<root@localhost>"),
        "550 5.5.1 Protocol error\r\n"
    );
    c.cmd("QUIT");
    let l = logged(&inst, "PREGREET 23 after ");
    assert!(
        l.contains(" from [127.0.0.4]:") && l.ends_with(": EHLO pregreet.example\\r\\n"),
        "{l}"
    );
    // Nothing but the clean clients reached smtpd.
    let log = inst.log();
    for bad in ["127.0.0.2]", "127.0.0.4]"] {
        assert!(
            !log.lines().any(
                |l| l.contains("/smtpd[") && l.contains(&format!("connect from unknown[{bad}"))
            ),
            "{bad} reached smtpd"
        );
    }
}

/// One series' value from the metrics endpoint at `addr`, if present.
fn metric(addr: &str, series: &str) -> Option<f64> {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr).ok()?;
    c.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .ok()?;
    let mut body = String::new();
    c.read_to_string(&mut body).ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[test]
fn deep_protocol_tests_then_a_pass() {
    let mut inst = instance(
        "127.0.0.1:9",
        "postscreen_greet_wait = 1s\n\
         postscreen_pipelining_enable = yes\n\
         postscreen_non_smtp_command_enable = yes\n\
         postscreen_bare_newline_enable = yes\n\
         postscreen_bare_newline_action = enforce\n",
        "",
    );
    inst.add_main_cf(&format!("metrics_listen = {}:9188\n", inst.ip));
    inst.start();
    let ip = inst.ip.clone();
    // Pipelining without having been offered it.
    let mut c = Smtp::connect_from("127.0.1.1", &ip, 2525);
    let g = c.reply();
    assert!(
        g.ends_with("220 mx.test.example ESMTP Postern\r\n"),
        "{g:?}"
    );
    let ehlo = c.cmd("EHLO pipe.example");
    assert!(!ehlo.contains("PIPELINING"), "{ehlo}");
    c.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<root@localhost>\r\n");
    assert_eq!(c.reply(), "250 2.1.0 Ok\r\n");
    assert_eq!(c.reply(), "550 5.5.1 Protocol error\r\n");
    let l = logged(&inst, "COMMAND PIPELINING from [127.0.1.1]:");
    assert!(
        l.ends_with("after MAIL: RCPT TO:<root@localhost>\\r\\n"),
        "{l}"
    );
    c.cmd("QUIT");
    // A non-SMTP command: 521, and the connection is closed.
    let mut c = Smtp::connect_from("127.0.1.2", &ip, 2525);
    c.reply();
    assert_eq!(
        c.cmd("GET / HTTP/1.0"),
        "521 5.7.0 Error: I can break rules, too. Goodbye.\r\n"
    );
    assert!(c.closed());
    logged(&inst, "NON-SMTP COMMAND from [127.0.1.2]:");
    // A bare newline.
    let mut c = Smtp::connect_from("127.0.1.3", &ip, 2525);
    c.reply();
    c.send(b"HELO lf.example\n");
    assert_eq!(c.reply(), "250 mx.test.example\r\n");
    c.cmd("MAIL FROM:<a@example.org>");
    assert_eq!(
        c.cmd("RCPT TO:<root@localhost>"),
        "550 5.5.1 Protocol error\r\n"
    );
    logged(&inst, "BARE NEWLINE from [127.0.1.3]:");
    c.cmd("QUIT");
    // A clean client passes the deep tests, is told to come back (it is
    // not handed over in this session), and its next connection goes
    // straight to smtpd.
    let mut c = Smtp::connect_from("127.0.1.4", &ip, 2525);
    c.reply();
    c.cmd("EHLO good.example");
    c.cmd("MAIL FROM:<a@example.org>");
    assert_eq!(
        c.cmd("RCPT TO:<root@localhost>"),
        "450 4.3.2 Service currently unavailable\r\n"
    );
    c.cmd("QUIT");
    logged(&inst, "PASS NEW [127.0.1.4]:");
    let mut c = Smtp::connect_from("127.0.1.4", &ip, 2525);
    let t = Instant::now();
    let g = c.reply();
    assert!(t.elapsed() < Duration::from_millis(800));
    assert_eq!(g.lines().count(), 1, "{g:?}");
    assert!(c.cmd("EHLO good.example").contains("250-PIPELINING"));
    let r = c.send_mail(
        "a@example.org",
        &["root@localhost"],
        "Subject: deep\r\n\r\nx\r\n",
    );
    assert!(r.starts_with("250"), "{r}");
    c.cmd("QUIT");
    logged(&inst, "PASS OLD [127.0.1.4]:");
    // The verdicts, as Prometheus sees them.
    let addr = format!("{ip}:9188");
    for (verdict, n) in [
        ("pipelining", 1.0),
        ("non_smtp", 1.0),
        ("bare_newline", 1.0),
        ("pass_new", 1.0),
        ("pass_old", 1.0),
        ("handed", 1.0),
    ] {
        let series = format!("postern_postscreen_verdicts_total{{verdict=\"{verdict}\"}}");
        wait_for(&series, Duration::from_secs(10), || {
            (metric(&addr, &series) == Some(n)).then_some(())
        });
    }
    // The failing clients are remembered too: they are tested again.
    let mut c = Smtp::connect_from("127.0.1.2", &ip, 2525);
    let g = c.reply();
    assert!(g.starts_with("220"), "{g}");
    drop(c);
    // A restart keeps what postscreen learned (the state store).
    inst.stop();
    inst.start();
    let mut c = Smtp::connect_from("127.0.1.4", &ip, 2525);
    let t = Instant::now();
    let g = c.reply();
    assert!(t.elapsed() < Duration::from_millis(800), "{g:?}");
    assert!(c.cmd("EHLO good.example").contains("250-PIPELINING"));
    c.cmd("QUIT");
    logged(&inst, "PASS OLD [127.0.1.4]:");
}

#[test]
fn behind_haproxy_with_connection_limits_and_fail2ban() {
    let probe = unique_loopback();
    let server = dns::start_zones(&probe, &[("test.", ZONE)]);
    let mut inst = instance(
        &server.addr.to_string(),
        "postscreen_greet_wait = 1s\n\
         postscreen_greet_action = drop\n\
         postscreen_dnsbl_sites = zen.test*3\n\
         postscreen_dnsbl_action = enforce\n\
         postscreen_client_connection_count_limit = 2\n\
         postscreen_command_count_limit = 5\n",
        "  -o postscreen_upstream_proxy_protocol=haproxy\n  -o postscreen_upstream_proxy_timeout=2s\n",
    );
    inst.start();
    let ip = inst.ip.clone();
    let lb_ip = unique_loopback();
    let dir = tempfile::tempdir().unwrap();
    let _lb = postern_tests::haproxy::start(&lb_ip, &format!("{ip}:2525"), dir.path());
    // PROXY v1 and v2: postscreen screens the real client, and smtpd,
    // given the socket, logs and greets it as that client.
    for (port, client) in [(2526, "127.0.5.5"), (2527, "127.0.5.6")] {
        let mut c = Smtp::connect_from(client, &lb_ip, port);
        let g = c.reply();
        assert!(g.contains("\r\n220 mx.test.example ESMTP"), "{g:?}");
        assert!(c.cmd("EHLO client.example").starts_with("250"));
        let r = c.send_mail(
            "someone@example.org",
            &["root@localhost"],
            &format!("Subject: via {port}\r\n\r\nhello\r\n"),
        );
        assert!(r.starts_with("250"), "{r}");
        c.cmd("QUIT");
        logged(&inst, &format!("PASS NEW [{client}]:"));
        logged(&inst, &format!("connect from unknown[{client}]"));
    }
    let mail = wait_for("both messages delivered", Duration::from_secs(30), || {
        let m = inst.maildir("root");
        (m.len() >= 2).then_some(m)
    });
    for client in ["127.0.5.5", "127.0.5.6"] {
        assert!(
            mail.iter()
                .any(|m| m.contains(&format!("(unknown [{client}])"))),
            "{mail:?}"
        );
    }
    // Through the balancer, a listed client gets the list's refusal.
    let mut c = Smtp::connect_from("127.0.0.7", &lb_ip, 2527);
    c.reply();
    c.cmd("EHLO bot.example");
    c.cmd("MAIL FROM:<bot@example.org>");
    assert_eq!(
        c.cmd("RCPT TO:<root@localhost>"),
        "550 5.7.1 Service unavailable; client [127.0.0.7] blocked using zen.test\r\n"
    );
    // Too many commands: 421, and the session ends.
    for _ in 0..2 {
        c.cmd("NOOP");
    }
    assert!(c.cmd("NOOP").starts_with("421 mx.test.example"));
    assert!(c.closed());
    logged(&inst, "COMMAND COUNT LIMIT from [127.0.0.7]:");
    // A malformed header drops that connection alone.
    let mut raw = std::net::TcpStream::connect((ip.as_str(), 2525)).unwrap();
    use std::io::{Read, Write};
    raw.write_all(b"PROXY TCP4 not-an-address 127.0.0.1 1 25\r\n")
        .unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(
        raw.read(&mut buf).unwrap_or(0),
        0,
        "a reply to a bad header"
    );
    logged(
        &inst,
        "warning: haproxy read: bad or missing client address: PROXY TCP4 not-an-address",
    );
    // A client that talks first through the balancer is dropped (521).
    let mut c = Smtp::connect_from("127.0.5.8", &lb_ip, 2526);
    c.send(b"EHLO hasty.example\r\n");
    let mut saw = String::new();
    while !saw.contains("521 ") {
        saw.push_str(&c.reply());
    }
    assert!(saw.ends_with("521 5.5.1 Protocol error\r\n"), "{saw:?}");
    logged(&inst, "PREGREET 20 after ");
    // postscreen_client_connection_count_limit = 2: a third connection
    // from one client while two wait in the tests is turned away.
    let held: Vec<Smtp> = (0..2)
        .map(|_| Smtp::connect_from("127.0.5.9", &lb_ip, 2527))
        .collect();
    logged(&inst, "CONNECT from [127.0.5.9]:");
    wait_for("two held", Duration::from_secs(10), || {
        (inst.log().matches("CONNECT from [127.0.5.9]:").count() == 2).then_some(())
    });
    let mut third = Smtp::connect_from("127.0.5.9", &lb_ip, 2527);
    assert_eq!(
        third.reply(),
        "421 4.7.0 Error: too many connections from 127.0.5.9\r\n"
    );
    logged(&inst, "NOQUEUE: reject: CONNECT from [127.0.5.9]:");
    drop(held);
    wait_for("the held ones hung up", Duration::from_secs(10), || {
        (inst.log().matches("from [127.0.5.9]:").count() >= 2
            && inst
                .log()
                .lines()
                .filter(|l| l.contains("HANGUP after") && l.contains("[127.0.5.9]"))
                .count()
                == 2)
            .then_some(())
    });
    // Debian's fail2ban reads these lines: the talker and the command
    // limit in its ddos mode, the listed client's refusal in the normal
    // (and aggressive) mode.
    logged(&inst, "DISCONNECT [127.0.0.7]:");
    // (Each client that hung up during the tests counts too: HAProxy's
    // own probes, the two held connections.)
    let log = inst.log();
    let want = log
        .lines()
        .filter(|l| {
            l.contains("postfix/postscreen[")
                && (l.contains(": PREGREET ")
                    || l.contains(": HANGUP after ")
                    || l.contains(": COMMAND COUNT LIMIT "))
        })
        .count() as u64;
    assert!(want >= 4, "{log}");
    let (ddos, text) = postern_tests::fail2ban_matched(&inst.log_path(), "postfix[mode=ddos]");
    assert_eq!(ddos, want, "{text}");
    let (aggressive, text) =
        postern_tests::fail2ban_matched(&inst.log_path(), "postfix[mode=aggressive]");
    assert_eq!(aggressive, want + 1, "{text}");
}

/// A legitimate client: it waits out the greeting, is told 450 at RCPT by
/// the deep tests on its first visit, and comes back (after a 421 when
/// the screening slots are full, too), until its message is taken.
fn deliver_like_an_mta(ip: &str, src: &str, n: usize, deadline: Instant) {
    loop {
        assert!(Instant::now() < deadline, "{src}: not through in time");
        let mut c = Smtp::connect_from(src, ip, 2525);
        let g = c.reply();
        if g.starts_with("421") {
            std::thread::sleep(Duration::from_millis(300));
            continue;
        }
        assert!(g.contains("220 "), "{g:?}");
        assert!(c.cmd("EHLO legit.example").starts_with("250"));
        assert!(c.cmd("MAIL FROM:<legit@example.org>").starts_with("250"));
        let r = c.cmd("RCPT TO:<root@localhost>");
        if r.starts_with("450") {
            c.cmd("QUIT");
            continue;
        }
        assert!(r.starts_with("250"), "{src}: {r}");
        assert!(c.cmd("DATA").starts_with("354"));
        c.send(format!("Subject: legit {n}\r\n\r\nfrom {src}\r\n.\r\n").as_bytes());
        let r = c.reply();
        assert!(r.starts_with("250"), "{src}: {r}");
        c.cmd("QUIT");
        return;
    }
}

/// 2,200 connections from 500 loopback addresses (idle ones held in the
/// tests, ones that talk first, ones that hang up at once, and more idle
/// ones than postscreen_pre_queue_limit allows), while 20 legitimate
/// clients deliver: postscreen and smtpd stay up, postscreen's memory
/// stays within 16 KiB per waiting connection, the excess is told 421,
/// and every legitimate message arrives.
#[test]
fn a_flood_from_500_addresses() {
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    nix::sys::resource::setrlimit(
        nix::sys::resource::Resource::RLIMIT_NOFILE,
        hard.min(8192),
        hard,
    )
    .unwrap();
    let mut inst = instance(
        "127.0.0.1:9",
        "postscreen_greet_wait = 1s\n\
         postscreen_greet_action = drop\n\
         postscreen_non_smtp_command_enable = yes\n\
         postscreen_bare_newline_enable = yes\n\
         postscreen_pre_queue_limit = 600\n\
         postscreen_command_time_limit = 60s\n",
        "",
    );
    inst.start();
    let ip = inst.ip.clone();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(150);
    let postscreen = inst.pid_of("postscreen").unwrap();
    let smtpd = inst.pid_of("smtpd").unwrap();
    let addr = |i: usize| format!("127.2.{}.{}", i / 250, 1 + i % 250);
    // Warm up: a few clients through the whole screen.
    for i in 0..5 {
        let mut c = Smtp::connect_from(&format!("127.4.0.{}", i + 1), &ip, 2525);
        c.reply();
        c.cmd("QUIT");
    }
    let before = postern_tests::rss_kib(postscreen);
    // Every address: one client that will sit in the tests, one that
    // talks first, two that hang up at once.
    let mut idle = Vec::new();
    let mut talkers = Vec::new();
    for i in 0..500 {
        idle.push(Smtp::connect_from(&addr(i), &ip, 2525));
        let mut t = Smtp::connect_from(&addr(i), &ip, 2525);
        t.send(b"EHLO bot.example\r\n");
        talkers.push(t);
        for _ in 0..2 {
            drop(Smtp::connect_from(&addr(i), &ip, 2525).w);
        }
        assert!(Instant::now() < deadline);
    }
    // Legitimate clients meanwhile.
    let legit: Vec<_> = (0..20)
        .map(|n| {
            let ip = ip.clone();
            std::thread::spawn(move || {
                deliver_like_an_mta(&ip, &format!("127.3.0.{}", n + 1), n, deadline)
            })
        })
        .collect();
    // The talkers are dropped with 521.
    for t in &mut talkers {
        let mut saw = String::new();
        while !saw.contains("521 ") {
            saw.push_str(&t.reply());
        }
        assert!(saw.ends_with("521 5.5.1 Protocol error\r\n"), "{saw:?}");
    }
    drop(talkers);
    // The idle ones wait in the engine after the greeting.
    for c in &mut idle {
        let g = c.reply();
        assert!(g.contains("220 ") || g.starts_with("421 4.3.2"), "{g:?}");
    }
    let held = postern_tests::rss_kib(postscreen);
    eprintln!(
        "postscreen: {before} KiB before, {held} KiB with 500 idle clients in the tests ({} bytes each)",
        held.saturating_sub(before) * 1024 / 500
    );
    assert!(
        held.saturating_sub(before) < 500 * 16,
        "postscreen grew from {before} KiB to {held} KiB"
    );
    // More idle clients than the screening slots: the excess is told 421.
    let mut excess = Vec::new();
    let mut busy = 0;
    for i in 0..200 {
        let mut c = Smtp::connect_from(&addr(i), &ip, 2525);
        c.w.set_read_timeout(Some(Duration::from_millis(2000)))
            .unwrap();
        let mut line = String::new();
        use std::io::BufRead;
        if c.r.read_line(&mut line).is_ok() && line == "421 4.3.2 All screening ports are busy\r\n"
        {
            busy += 1;
        }
        excess.push(c);
    }
    assert!(busy >= 50, "{busy} of 200 over the limit were told 421");
    logged(&inst, "all screening ports busy");
    for l in legit {
        l.join().unwrap();
    }
    drop(idle);
    drop(excess);
    let mail = wait_for("20 messages delivered", Duration::from_secs(60), || {
        let m = inst.maildir("root");
        (m.iter().filter(|m| m.contains("Subject: legit ")).count() >= 20).then_some(m)
    });
    for n in 0..20 {
        assert!(
            mail.iter()
                .any(|m| m.contains(&format!("Subject: legit {n}\n"))),
            "legit {n} lost"
        );
    }
    assert_eq!(
        inst.pid_of("postscreen"),
        Some(postscreen),
        "postscreen restarted"
    );
    assert_eq!(inst.pid_of("smtpd"), Some(smtpd), "smtpd restarted");
    let log = inst.log();
    assert!(
        !log.contains("panicked") && !log.contains("fatal:"),
        "{log}"
    );
    assert!(started.elapsed() < Duration::from_secs(150));
}

/// The pass service's session slots are taken and postscreen_post_queue_limit
/// clients wait for one: the next client is told 421 by postscreen; once a
/// slot frees, clients get through again.
#[test]
fn busy_smtpd_means_421_from_postscreen() {
    let ip = unique_loopback();
    let mut inst = Instance::with_master_cf(
        "smtpd_error_sleep_time = 0\n\
         postscreen_post_queue_limit = 1\n",
        Some(&master_cf(&ip, "", "1")),
    );
    inst.ip = ip.clone();
    inst.start();
    // mynetworks (127.0.0.0/8) is allowlisted: straight to smtpd.
    let mut first = Smtp::connect_from("127.0.7.1", &ip, 2525);
    assert!(first.reply().starts_with("220 mx.test.example"));
    logged(&inst, "ALLOWLISTED [127.0.7.1]:");
    // The second waits for the one slot (no greeting yet).
    let mut second = Smtp::connect_from("127.0.7.2", &ip, 2525);
    logged(&inst, "ALLOWLISTED [127.0.7.2]:");
    // The third finds one client waiting already.
    let mut third = Smtp::connect_from("127.0.7.3", &ip, 2525);
    assert_eq!(third.reply(), "421 4.3.2 All server ports are busy\r\n");
    logged(&inst, "NOQUEUE: reject: CONNECT from [127.0.7.3]:");
    logged(&inst, "has reached its process limit \"1\"");
    first.cmd("QUIT");
    assert!(second.reply().starts_with("220 mx.test.example"));
    second.cmd("QUIT");
    let mut again = Smtp::connect_from("127.0.7.3", &ip, 2525);
    assert!(again.reply().starts_with("220 mx.test.example"));
    again.cmd("QUIT");
}

/// `postern reload` turns postscreen on when master.cf gains a postscreen
/// service, and off (its port closed) when it loses it.
#[test]
fn reload_adds_and_removes_postscreen() {
    let ip = unique_loopback();
    let plain = format!("{ip}:2587 inet n - n - - smtpd\n");
    let mut inst = Instance::with_master_cf(
        "mynetworks = 10.0.0.0/8\npostscreen_greet_wait = 1s\n",
        Some(&plain),
    );
    inst.ip = ip.clone();
    inst.start();
    let st = inst.status();
    let ps = st["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["role"] == "postscreen")
        .cloned()
        .unwrap();
    assert_eq!(ps["state"], "off", "{st}");
    assert!(std::net::TcpStream::connect((ip.as_str(), 2525)).is_err());
    // On.
    std::fs::write(inst.config_dir().join("master.cf"), master_cf(&ip, "", "-")).unwrap();
    let out = inst.postern(&["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid = wait_for("postscreen running", Duration::from_secs(20), || {
        inst.pid_of("postscreen")
    });
    let mut c = Smtp::connect_from("127.0.8.1", &ip, 2525);
    let g = c.reply();
    assert!(g.contains("\r\n220 mx.test.example"), "{g:?}");
    c.cmd("QUIT");
    logged(&inst, "PASS NEW [127.0.8.1]:");
    // Off again: the process goes, and so does the port.
    std::fs::write(inst.config_dir().join("master.cf"), &plain).unwrap();
    let out = inst.postern(&["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("postscreen stopped", Duration::from_secs(20), || {
        (inst.pid_of("postscreen").is_none()
            && std::net::TcpStream::connect((ip.as_str(), 2525)).is_err())
        .then_some(())
    });
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    // smtpd on 2587 went on serving throughout.
    let mut c = Smtp::connect(&ip, 2587);
    assert!(c.reply().starts_with("220 mx.test.example"));
}
