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

fn master_cf(ip: &str, extra: &str) -> String {
    format!(
        "{ip}:2525 inet n - n - 1 postscreen\n{extra}\
         smtpd pass - - n - - smtpd\n\
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
        Some(&master_cf(&ip, extra_master)),
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
