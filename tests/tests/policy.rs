//! check_policy_service through a running system, against real policy
//! servers: a recording server (tests/tools/policy.py) that shows every
//! attribute Postern sends in every protocol state and answers every
//! access(5) action, the fault cases (a server that is down, slow, answers
//! garbage or a line of 1 MB, or hangs up mid-request), and Debian's
//! policyd-spf deciding by SPF records on a loopback DNS server.
use std::time::Duration;

use postern_tests::policyd::{PolicyServer, Request, Spawned};
use postern_tests::{Instance, Sink, Smtp, python_ok, unique_loopback, wait_for};

/// Every attribute of a Postfix 3.12 policy request (SMTPD_POLICY_README).
const DOCUMENTED: &[&str] = &[
    "request",
    "protocol_state",
    "protocol_name",
    "helo_name",
    "queue_id",
    "sender",
    "recipient",
    "recipient_count",
    "client_address",
    "client_name",
    "reverse_client_name",
    "instance",
    "sasl_method",
    "sasl_username",
    "sasl_sender",
    "size",
    "ccert_subject",
    "ccert_issuer",
    "ccert_fingerprint",
    "encryption_protocol",
    "encryption_cipher",
    "encryption_keysize",
    "etrn_domain",
    "stress",
    "ccert_pubkey_fingerprint",
    "client_port",
    "policy_context",
    "server_address",
    "server_port",
    "compatibility_level",
    "mail_version",
    "tls_sni",
];

fn logged(inst: &Instance, needle: &str) {
    wait_for(needle, Duration::from_secs(15), || {
        inst.log().contains(needle).then_some(())
    });
}

/// Each request carries exactly the documented attributes, once each.
fn documented(r: &Request) {
    let mut names = r.names();
    names.sort_unstable();
    let mut want = DOCUMENTED.to_vec();
    want.sort_unstable();
    assert_eq!(names, want, "{:?}", r.get("protocol_state"));
}

#[test]
fn every_state_sends_postfix_attributes_over_a_kept_connection() {
    let ip = unique_loopback();
    let pdir = tempfile::tempdir().unwrap();
    let server = PolicyServer::tcp(&ip, 9998, pdir.path());
    let svc = format!("{{ {}, policy_context=edge }}", server.endpoint);
    let mut inst = Instance::new(&format!(
        "smtpd_delay_reject = no\n\
         smtpd_client_restrictions = check_policy_service {svc}\n\
         smtpd_helo_restrictions = check_policy_service {svc}\n\
         smtpd_sender_restrictions = check_policy_service {svc}\n\
         smtpd_recipient_restrictions = check_policy_service {svc}, permit_mynetworks, reject\n\
         smtpd_data_restrictions = check_policy_service {svc}\n\
         smtpd_end_of_data_restrictions = check_policy_service {svc}\n\
         relayhost = [{ip}]:2626\n"
    ));
    let _sink = Sink::start(&ip, 2626, &inst.config_dir().join("sink"));
    inst.start();

    // One ESMTP transaction with a declared size.
    let mut c = Smtp::connect(&inst.ip, inst.smtp_port);
    let client = c.w.local_addr().unwrap();
    assert!(c.reply().starts_with("220"));
    assert!(c.cmd("EHLO client.example").starts_with("250"));
    assert!(
        c.cmd("MAIL FROM:<sender@example.org> SIZE=200")
            .starts_with("250")
    );
    assert!(c.cmd("RCPT TO:<rcpt@relay.example>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    let body = "Subject: attributes\r\n\r\nhello\r\n";
    c.send(format!("{body}.\r\n").as_bytes());
    let end = c.reply();
    assert!(end.starts_with("250"), "{end}");
    c.cmd("QUIT");

    let reqs = server.wait_requests(6);
    let states: Vec<&str> = reqs
        .iter()
        .map(|r| r.get("protocol_state").unwrap())
        .collect();
    assert_eq!(
        states,
        ["CONNECT", "EHLO", "MAIL", "RCPT", "DATA", "END-OF-MESSAGE"]
    );
    for r in &reqs {
        documented(r);
        let g = |n: &str| r.get(n).unwrap();
        assert_eq!(g("request"), "smtpd_access_policy");
        // SMTP until the client says EHLO.
        let esmtp = g("protocol_state") != "CONNECT";
        assert_eq!(g("protocol_name"), if esmtp { "ESMTP" } else { "SMTP" });
        assert_eq!(g("client_address"), client.ip().to_string());
        assert_eq!(g("client_port"), client.port().to_string());
        assert_eq!(g("client_name"), "unknown");
        assert_eq!(g("server_address"), inst.ip);
        assert_eq!(g("server_port"), "2525");
        assert_eq!(g("policy_context"), "edge");
        assert_eq!(g("encryption_keysize"), "0");
        assert_eq!(g("encryption_protocol"), "");
        assert_eq!(g("sasl_username"), "");
        assert_eq!(g("compatibility_level"), "3.11");
        assert!(!g("mail_version").is_empty());
        // The whole session went over one connection.
        assert_eq!(r.conn, reqs[0].conn);
    }
    let at = |i: usize, n: &str| reqs[i].get(n).unwrap().to_string();
    assert_eq!(at(0, "helo_name"), "");
    assert_eq!(at(1, "helo_name"), "client.example");
    assert_eq!(at(1, "sender"), "");
    assert_eq!(at(2, "sender"), "sender@example.org");
    assert_eq!(at(2, "recipient"), "");
    // The recipient at RCPT, and at DATA and END-OF-MESSAGE since there
    // is only one; the count only after RCPT.
    for i in 3..6 {
        assert_eq!(at(i, "recipient"), "rcpt@relay.example");
    }
    let counts: Vec<String> = (0..6).map(|i| at(i, "recipient_count")).collect();
    assert_eq!(counts, ["0", "0", "0", "0", "1", "1"]);
    // The queue id and the instance exist once MAIL is accepted, and stay
    // the same for the transaction.
    assert_eq!(at(2, "queue_id"), "");
    assert_eq!(at(2, "instance"), "");
    let qid = at(3, "queue_id");
    assert!(!qid.is_empty());
    logged(&inst, &format!("{qid}: client="));
    let instance = at(3, "instance");
    assert!(instance.ends_with(&qid), "{instance}");
    for i in 4..6 {
        assert_eq!(at(i, "queue_id"), qid);
        assert_eq!(at(i, "instance"), instance);
    }
    // SIZE as declared, then the size of what came.
    assert_eq!(at(2, "size"), "200");
    assert_eq!(at(4, "size"), "200");
    let size: u64 = at(5, "size").parse().unwrap();
    assert!(size > 0 && size != 200, "{size}");

    // The next session (HELO, two transactions) reuses the connection.
    let mut c = Smtp::connect(&inst.ip, inst.smtp_port);
    c.reply();
    assert!(c.cmd("HELO plain.example").starts_with("250"));
    for n in 0..2 {
        let r = c.send_mail(
            "sender@example.org",
            &["rcpt@relay.example"],
            &format!("Subject: {n}\r\n\r\n{n}\r\n"),
        );
        assert!(r.starts_with("250"), "{r}");
    }
    c.cmd("QUIT");
    let all = server.wait_requests(6 + 2 + 2 * 4);
    let second = &all[6..];
    assert!(second.iter().all(|r| r.conn == reqs[0].conn));
    assert_eq!(second[1].get("protocol_state"), Some("HELO"));
    assert!(
        second
            .iter()
            .all(|r| r.get("protocol_name") == Some("SMTP"))
    );
    let instances: std::collections::BTreeSet<&str> = second
        .iter()
        .filter(|r| r.get("protocol_state") == Some("RCPT"))
        .map(|r| r.get("instance").unwrap())
        .collect();
    assert_eq!(
        instances.len(),
        2,
        "one instance per transaction: {instances:?}"
    );
    assert!(!instances.contains(&instance.as_str()));

    // Over TLS, with a server name: the encryption attributes.
    python_ok(&format!(
        r#"
import smtplib, ssl
s = smtplib.SMTP("{ip}", 2525, local_hostname="tls.example", timeout=30)
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s._host = "sni.test.example"
s.starttls(context=ctx)
s.ehlo("tls.example")
s.sendmail("sender@example.org", ["rcpt@relay.example"], b"Subject: tls\r\n\r\ntls\r\n")
s.quit()
"#,
        ip = inst.ip
    ));
    let all = server.wait_requests(16 + 6);
    let tls = all
        .iter()
        .rev()
        .find(|r| r.get("protocol_state") == Some("RCPT"))
        .unwrap();
    documented(tls);
    assert_eq!(tls.get("encryption_protocol"), Some("TLSv1.3"));
    assert!(
        tls.get("encryption_cipher").unwrap().starts_with("TLS_"),
        "{tls:?}"
    );
    assert!(matches!(tls.get("encryption_keysize"), Some("128" | "256")));
    assert_eq!(tls.get("tls_sni"), Some("sni.test.example"));
    assert_eq!(tls.get("helo_name"), Some("tls.example"));
    // No certificate was sent.
    assert_eq!(tls.get("ccert_fingerprint"), Some(""));
}

#[test]
fn policy_actions_apply_like_access_table_answers() {
    let ip = unique_loopback();
    let pdir = tempfile::tempdir().unwrap();
    let server = PolicyServer::unix(pdir.path());
    let mut inst = Instance::new(&format!(
        "smtpd_error_sleep_time = 0\n\
         smtpd_recipient_restrictions = check_policy_service {}, permit_mynetworks, reject\n\
         relayhost = [{ip}]:2626\n",
        server.endpoint
    ));
    let sink = Sink::start(&ip, 2626, &inst.config_dir().join("sink"));
    inst.start();
    let r = |local: &str| format!("{local}@relay.example");
    server.set_actions(&[
        (&r("ok"), "OK"),
        (&r("dunno"), "DUNNO"),
        (&r("reject"), "REJECT"),
        (&r("reject-text"), "REJECT no thanks"),
        (&r("code"), "550 5.7.23 SPF says no"),
        (&r("defer"), "DEFER come back later"),
        (&r("dip"), "DEFER_IF_PERMIT maybe later"),
        (&r("dir"), "DEFER_IF_REJECT only if refused"),
        (&r("grey"), "451 4.7.1 greylisted"),
        (&r("filter"), "FILTER smtp:[127.0.0.1]:10025"),
        (&r("nested"), "reject_unauth_destination"),
        (&r("warn"), "WARN watch this one"),
        (&r("info"), "INFO noted"),
        (&r("hold"), "HOLD keep it"),
        (&r("discard"), "DISCARD drop it"),
        (&r("prepend"), "PREPEND X-Policy: checked"),
        (&r("redirect"), "REDIRECT trap@relay.example"),
        (&r("bcc"), "BCC archive@relay.example"),
    ]);
    let rcpt = |local: &str| {
        let mut c = Smtp::connect(&inst.ip, inst.smtp_port);
        c.reply();
        c.cmd("EHLO client.example");
        assert!(c.cmd("MAIL FROM:<s@example.org>").starts_with("250"));
        let reply = c.cmd(&format!("RCPT TO:<{}>", r(local)));
        // After a refused RCPT the transaction holds no recipient: DATA
        // is refused for want of one.
        if !reply.starts_with("250") {
            assert!(c.cmd("DATA").starts_with("554"), "{local}");
        }
        c.cmd("QUIT");
        reply.trim_end().to_string()
    };
    for (local, want) in [
        ("ok", "250 2.1.5 Ok"),
        ("dunno", "250 2.1.5 Ok"),
        ("dir", "250 2.1.5 Ok"),
        (
            "reject",
            "554 5.7.1 <reject@relay.example>: Recipient address rejected: Access denied",
        ),
        (
            "reject-text",
            "554 5.7.1 <reject-text@relay.example>: Recipient address rejected: no thanks",
        ),
        (
            "code",
            "550 5.7.23 <code@relay.example>: Recipient address rejected: SPF says no",
        ),
        (
            "defer",
            "450 4.7.1 <defer@relay.example>: Recipient address rejected: come back later",
        ),
        (
            "dip",
            "450 4.7.1 <dip@relay.example>: Recipient address rejected: maybe later",
        ),
        (
            "grey",
            "451 4.7.1 <grey@relay.example>: Recipient address rejected: greylisted",
        ),
        ("filter", "451 4.3.5 Server configuration error"),
        (
            "nested",
            "554 5.7.1 <nested@relay.example>: Relay access denied",
        ),
        ("warn", "250 2.1.5 Ok"),
        ("info", "250 2.1.5 Ok"),
    ] {
        assert_eq!(rcpt(local), want, "{local}");
    }
    logged(&inst, "warn: RCPT from unknown[");
    logged(
        &inst,
        "watch this one; from=<s@example.org> to=<warn@relay.example>",
    );
    logged(&inst, "info: RCPT from unknown[");
    logged(&inst, "NOQUEUE: reject: RCPT from unknown[");
    logged(
        &inst,
        "550 5.7.23 <code@relay.example>: Recipient address rejected: SPF says no; from=<s@example.org> to=<code@relay.example> proto=ESMTP helo=<client.example>",
    );
    // The actions that change what happens to the message.
    let send = |local: &str| {
        let mut c = Smtp::connect(&inst.ip, inst.smtp_port);
        c.reply();
        c.cmd("EHLO client.example");
        let reply = c.send_mail(
            "s@example.org",
            &[&r(local)],
            &format!("Subject: {local}\r\n\r\n{local}\r\n"),
        );
        assert!(reply.starts_with("250"), "{local}: {reply}");
        c.cmd("QUIT");
    };
    for local in ["hold", "discard", "prepend", "redirect", "bcc"] {
        send(local);
    }
    logged(&inst, "<hold@relay.example>: Recipient address keep it");
    logged(&inst, "<discard@relay.example>: Recipient address drop it");
    let held = wait_for("the held message", Duration::from_secs(15), || {
        let q = inst.queue_json();
        (q.len() == 1).then(|| q[0].clone())
    });
    assert_eq!(held["queue_name"], "hold", "{held}");
    let msgs = wait_for("three deliveries", Duration::from_secs(30), || {
        let m = sink.messages();
        let has = |s: &str| {
            m.iter()
                .any(|(_, c)| String::from_utf8_lossy(c).contains(&format!("Subject: {s}")))
        };
        (has("prepend") && has("redirect") && has("bcc")).then_some(m)
    });
    let with = |subject: &str| -> Vec<(serde_json::Value, String)> {
        msgs.iter()
            .map(|(e, c)| (e.clone(), String::from_utf8_lossy(c).into_owned()))
            .filter(|(_, c)| c.contains(&format!("Subject: {subject}")))
            .collect()
    };
    assert!(with("discard").is_empty());
    assert!(with("prepend")[0].1.starts_with("X-Policy: checked\r\n"));
    assert_eq!(
        with("redirect")[0].0["to"],
        serde_json::json!(["trap@relay.example"])
    );
    let mut bcc: Vec<String> = with("bcc")
        .iter()
        .flat_map(|(e, _)| {
            e["to"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    bcc.sort();
    assert_eq!(bcc, ["archive@relay.example", "bcc@relay.example"]);
}

#[test]
fn a_failing_policy_server_gets_the_default_action_and_a_warning() {
    let ip = unique_loopback();
    let pdir = tempfile::tempdir().unwrap();
    let server = PolicyServer::tcp(&ip, 9998, pdir.path());
    // Nothing listens on port 1.
    let down = format!("inet:{ip}:1");
    let mut inst = Instance::new(&format!(
        "smtpd_error_sleep_time = 0\n\
         smtpd_restriction_classes = down, lenient\n\
         down = check_policy_service {{ {down}, retry_delay=0s }}\n\
         lenient = check_policy_service {{ {down}, try_limit=1, default_action=DUNNO }}\n\
         smtpd_recipient_restrictions = check_recipient_access inline:{{ down@relay.example=down, lenient@relay.example=lenient }}, check_policy_service {{ {}, timeout=2s, retry_delay=0s }}, permit_mynetworks, reject\n",
        server.endpoint
    ));
    inst.start();
    server.set_actions(&[
        ("slow@relay.example", "!sleep 6"),
        ("garbage@relay.example", "!garbage"),
        ("huge@relay.example", "!huge"),
        ("close@relay.example", "!close"),
        ("ok@relay.example", "OK"),
    ]);
    let mut c = Smtp::connect(&inst.ip, inst.smtp_port);
    c.reply();
    c.cmd("EHLO client.example");
    assert!(c.cmd("MAIL FROM:<s@example.org>").starts_with("250"));
    let refused = |local: &str| {
        format!(
            "451 4.3.5 <{local}@relay.example>: Recipient address rejected: Server configuration problem"
        )
    };
    let mut ask = |local: &str| {
        c.cmd(&format!("RCPT TO:<{local}@relay.example>"))
            .trim_end()
            .to_string()
    };
    // Down: the default action, and Postfix's warning.
    assert_eq!(ask("down"), refused("down"));
    logged(
        &inst,
        &format!("warning: problem talking to server {down}: Connection refused"),
    );
    // A service whose own default action is DUNNO lets the list go on.
    assert_eq!(ask("lenient"), "250 2.1.5 Ok");
    // Slow: each of the two tries times out after 2s.
    let t = std::time::Instant::now();
    assert_eq!(ask("slow"), refused("slow"));
    assert!(t.elapsed() >= Duration::from_secs(4), "{:?}", t.elapsed());
    logged(
        &inst,
        &format!(
            "warning: problem talking to server {}: Connection timed out",
            server.endpoint
        ),
    );
    assert_eq!(ask("garbage"), refused("garbage"));
    logged(
        &inst,
        &format!(
            "warning: problem talking to server {}: missing attribute action",
            server.endpoint
        ),
    );
    assert_eq!(ask("huge"), refused("huge"));
    logged(
        &inst,
        &format!(
            "warning: problem talking to server {}: reply too long",
            server.endpoint
        ),
    );
    // Hung up mid-request, twice: nothing of it is kept.
    assert_eq!(ask("close"), refused("close"));
    logged(
        &inst,
        &format!(
            "warning: problem talking to server {}: premature end-of-input",
            server.endpoint
        ),
    );
    // The server still answers, on a fresh connection.
    assert_eq!(ask("ok"), "250 2.1.5 Ok");
    let reqs = server.requests();
    let tries = |local: &str| {
        reqs.iter()
            .filter(|r| r.get("recipient") == Some(&format!("{local}@relay.example")))
            .count()
    };
    // try_limit (2) attempts for each failure.
    for local in ["slow", "garbage", "huge", "close"] {
        assert_eq!(tries(local), 2, "{local}");
    }
    let last = reqs.last().unwrap();
    assert_eq!(last.get("recipient"), Some("ok@relay.example"));
    assert!(reqs.iter().filter(|r| r.conn == last.conn).count() == 1);
    // Every refusal was logged as Postfix does.
    logged(
        &inst,
        "451 4.3.5 <huge@relay.example>: Recipient address rejected: Server configuration problem; from=<s@example.org> to=<huge@relay.example>",
    );
    c.cmd("QUIT");
    // Nothing crashed: every process is the one that started.
    assert!(!inst.log().contains("exited"), "a daemon exited");
}

#[test]
fn policyd_spf_passes_and_rejects_by_the_sender_domains_records() {
    let dns_ip = unique_loopback();
    let zone = "@ 3600 IN SOA ns.spf.test. admin.spf.test. 1 3600 600 86400 60\n\
                @ 3600 IN NS ns.spf.test.\n\
                ns 3600 IN A 127.0.0.1\n\
                pass 3600 IN TXT \"v=spf1 ip4:127.0.0.0/8 -all\"\n\
                fail 3600 IN TXT \"v=spf1 ip4:192.0.2.1 -all\"\n";
    let _dns = postern_tests::dns::start_zones_at(&dns_ip, 53, &[("spf.test.", zone)]);
    let ip = unique_loopback();
    let sdir = tempfile::tempdir().unwrap();
    let spf = Spawned::policyd_spf(
        &ip,
        10023,
        dns_ip.parse().unwrap(),
        "debugLevel = 0\nTestOnly = 1\nHELO_reject = Fail\nMail_From_reject = Fail\n\
         PermError_reject = False\nTempError_Defer = False\nskip_addresses = 192.0.2.250/32\n",
        sdir.path(),
    );
    let mut inst = Instance::new(&format!(
        "smtpd_error_sleep_time = 0\n\
         smtpd_recipient_restrictions = permit_sasl_authenticated, check_policy_service {}, permit_mynetworks, reject\n\
         relayhost = [{ip}]:2626\n",
        spf.endpoint
    ));
    let sink = Sink::start(&ip, 2626, &inst.config_dir().join("sink"));
    inst.start();
    let mut c = Smtp::connect(&inst.ip, inst.smtp_port);
    c.reply();
    c.cmd("EHLO pass.spf.test");
    // Pass: accepted, with policyd-spf's Received-SPF header prepended.
    let r = c.send_mail(
        "someone@pass.spf.test",
        &["rcpt@relay.example"],
        "Subject: spf pass\r\n\r\nhello\r\n",
    );
    assert!(r.starts_with("250"), "{r}");
    // Fail: refused at RCPT with policyd-spf's own text.
    assert!(
        c.cmd("MAIL FROM:<someone@fail.spf.test>")
            .starts_with("250")
    );
    let r = c.cmd("RCPT TO:<rcpt@relay.example>");
    assert!(
        r.starts_with(
            "550 5.7.23 <rcpt@relay.example>: Recipient address rejected: Message rejected due to: SPF fail - not authorized."
        ),
        "{r}"
    );
    c.cmd("QUIT");
    let msgs = wait_for("the SPF-passed message", Duration::from_secs(30), || {
        let m = sink.messages();
        (!m.is_empty()).then_some(m)
    });
    let text = String::from_utf8_lossy(&msgs[0].1).into_owned();
    assert!(
        text.starts_with("Received-SPF: Pass (mailfrom) identity=mailfrom; client-ip="),
        "{text}"
    );
    assert!(
        text.contains("envelope-from=someone@pass.spf.test;"),
        "{text}"
    );
}
