//! smtpd's restriction lists through a real instance: access maps and
//! their actions, the host and address checks, smtpd_delay_reject both
//! ways, warn_if_reject and the defer_if_* flags, recipient validation
//! (no backscatter), soft_bounce, and the transaction-reset invariant
//! after restriction rejects. Each refusal is checked with its exact
//! reply and Postfix's `NOQUEUE: reject:` log line.
use std::time::Duration;

use postern_tests::{Instance, Sink, Smtp, wait_for};

/// Builds `hash:` tables in the instance's configuration directory and
/// returns their specs.
fn tables(inst: &Instance, files: &[(&str, &str)]) -> Vec<String> {
    let dir = inst.config_dir();
    files
        .iter()
        .map(|(name, text)| {
            std::fs::write(dir.join(name), text).unwrap();
            if name.ends_with(".cidr") || name.ends_with(".regexp") || name.ends_with(".pcre") {
                let ty = name.rsplit('.').next().unwrap();
                return format!("{ty}:{}", dir.join(name).display());
            }
            let spec = format!("hash:{}", dir.join(name).display());
            let out = inst.postern(&["map", "build", &spec]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            spec
        })
        .collect()
}

fn from(inst: &Instance, src: &str) -> Smtp {
    Smtp::connect_from(src, &inst.ip, inst.smtp_port)
}

/// Waits for a log line holding `needle` (smtpd logs it as it replies).
fn logged(inst: &Instance, needle: &str) {
    wait_for(needle, Duration::from_secs(10), || {
        inst.log().contains(needle).then_some(())
    });
}

fn screening_instance() -> Instance {
    let mut inst = Instance::new(
        "smtpd_error_sleep_time = 0\n\
         mynetworks = 10.0.0.0/8\n\
         relay_domains = relay.example, closed.example\n",
    );
    let t = tables(
        &inst,
        &[
            (
                "clients.cidr",
                "127.0.0.66/32 REJECT Go away\n\
                 127.0.0.77/32 554 5.7.2 Not from here\n\
                 127.0.0.88/32 DEFER_IF_PERMIT Come back later\n\
                 127.0.0.99/32 OK\n",
            ),
            (
                "helo",
                "bad.helo.example REJECT\n\
                 warn.helo.example WARN suspicious greeting\n\
                 info.helo.example INFO noted greeting\n",
            ),
            (
                "senders",
                "spammer.example REJECT Spam source\n\
                 friend@ok.example OK\n\
                 joe@ DEFER\n\
                 discard@ok.example DISCARD\n\
                 strict@ok.example reject_non_fqdn_recipient, permit\n\
                 held@ok.example HOLD\n",
            ),
            (
                "rcpts",
                "blocked@relay.example 550 5.1.1 No such person here\n\
                 maybe@relay.example DEFER_IF_REJECT Try later\n\
                 relay.example DUNNO\n\
                 closed.example REJECT\n",
            ),
            (
                "relay_rcpts",
                "good@relay.example OK\nblocked@relay.example OK\nfriendly@relay.example OK\n",
            ),
        ],
    );
    inst.add_main_cf(&format!(
        "smtpd_client_restrictions = check_client_access {}\n\
         smtpd_helo_restrictions = check_helo_access {}, reject_invalid_helo_hostname, reject_non_fqdn_helo_hostname\n\
         smtpd_sender_restrictions = check_sender_access {}, reject_non_fqdn_sender\n\
         smtpd_recipient_restrictions = check_recipient_access {}, reject_non_fqdn_recipient, reject_multi_recipient_bounce, reject_unauth_destination\n\
         relay_recipient_maps = {}\n",
        t[0], t[1], t[2], t[3], t[4]
    ));
    inst.start();
    inst
}

/// One RCPT attempt with Python's smtplib from the loopback address `src`:
/// EHLO `helo`, MAIL FROM `sender`, RCPT TO `rcpt`; returns the RCPT reply
/// as `code text`. After a refusal the transaction must hold nothing:
/// DATA is refused, as Postfix refuses it: 554 5.5.1 "no valid
/// recipients" while MAIL stands, 503 5.5.1 once MAIL itself was refused.
fn attempt(inst: &Instance, src: &str, helo: &str, sender: &str, rcpt: &str) -> String {
    const SCRIPT: &str = r#"
import smtplib, sys
ip, port, src, helo, sender, rcpt = sys.argv[1:]
s = smtplib.SMTP(ip, int(port), local_hostname=helo, source_address=(src, 0), timeout=30)
code, text = s.ehlo()
assert code == 250, (code, text)
code, text = s.docmd("MAIL FROM:<%s>" % sender)
assert code == 250, ("MAIL", code, text)
code, text = s.docmd("RCPT TO:<%s>" % rcpt)
print("%d %s" % (code, text.decode()))
if code != 250:
    dcode, dtext = s.docmd("DATA")
    assert (dcode, dtext) in ((554, b"5.5.1 Error: no valid recipients"), (503, b"5.5.1 Error: need MAIL command")), ("DATA after a refused RCPT", dcode, dtext)
s.quit()
"#;
    let port = inst.smtp_port.to_string();
    let out = std::process::Command::new("/usr/bin/python3")
        .args(["-c", SCRIPT, &inst.ip, &port, src, helo, sender, rcpt])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "smtplib: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

#[test]
fn access_maps_and_checks_refuse_with_postfix_replies_and_log_lines() {
    let inst = screening_instance();
    let ok = |src: &str, helo: &str, sender: &str, rcpt: &str| {
        let r = attempt(&inst, src, helo, sender, rcpt);
        assert!(
            r.starts_with("250 2.1.5"),
            "{src} {helo} {sender} {rcpt}: {r}"
        );
    };
    let refused = |src: &str, helo: &str, sender: &str, rcpt: &str, reply: &str, log: &str| {
        let r = attempt(&inst, src, helo, sender, rcpt);
        assert_eq!(r.trim_end(), reply, "{src} {helo} {sender} {rcpt}");
        logged(&inst, log);
    };
    // The pass for every refusal below.
    ok(
        "127.0.0.1",
        "client.example",
        "someone@ok.example",
        "good@relay.example",
    );

    // check_client_access (cidr): REJECT with text, and NNN with its own code.
    refused(
        "127.0.0.66",
        "client.example",
        "someone@ok.example",
        "good@relay.example",
        "554 5.7.1 <unknown[127.0.0.66]>: Client host rejected: Go away",
        "NOQUEUE: reject: RCPT from unknown[127.0.0.66]: 554 5.7.1 <unknown[127.0.0.66]>: Client host rejected: Go away; from=<someone@ok.example> to=<good@relay.example> proto=ESMTP helo=<client.example>",
    );
    refused(
        "127.0.0.77",
        "client.example",
        "someone@ok.example",
        "good@relay.example",
        "554 5.7.2 <unknown[127.0.0.77]>: Client host rejected: Not from here",
        "NOQUEUE: reject: RCPT from unknown[127.0.0.77]: 554 5.7.2 <unknown[127.0.0.77]>: Client host rejected: Not from here;",
    );
    // DEFER_IF_PERMIT: the recipient would pass, so it is deferred ...
    refused(
        "127.0.0.88",
        "client.example",
        "someone@ok.example",
        "good@relay.example",
        "450 4.7.1 <unknown[127.0.0.88]>: Client host rejected: Come back later",
        "NOQUEUE: reject: RCPT from unknown[127.0.0.88]: 450 4.7.1 <unknown[127.0.0.88]>: Client host rejected: Come back later;",
    );
    // ... and a recipient refused anyway keeps its own reply.
    refused(
        "127.0.0.88",
        "client.example",
        "someone@ok.example",
        "x@elsewhere.example",
        "454 4.7.1 <x@elsewhere.example>: Relay access denied",
        "NOQUEUE: reject: RCPT from unknown[127.0.0.88]: 454 4.7.1 <x@elsewhere.example>: Relay access denied;",
    );
    // OK in the client list ends that list only: relaying is still
    // refused (by the default smtpd_relay_restrictions, with 454).
    refused(
        "127.0.0.99",
        "client.example",
        "someone@ok.example",
        "x@elsewhere.example",
        "454 4.7.1 <x@elsewhere.example>: Relay access denied",
        "NOQUEUE: reject: RCPT from unknown[127.0.0.99]: 454 4.7.1 <x@elsewhere.example>: Relay access denied; from=<someone@ok.example> to=<x@elsewhere.example>",
    );

    // check_helo_access, reject_invalid_helo_hostname, reject_non_fqdn_helo_hostname.
    refused(
        "127.0.0.1",
        "bad.helo.example",
        "someone@ok.example",
        "good@relay.example",
        "554 5.7.1 <bad.helo.example>: Helo command rejected: Access denied",
        "NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 554 5.7.1 <bad.helo.example>: Helo command rejected: Access denied; from=<someone@ok.example> to=<good@relay.example> proto=ESMTP helo=<bad.helo.example>",
    );
    refused(
        "127.0.0.1",
        "bad..name",
        "someone@ok.example",
        "good@relay.example",
        "501 5.5.2 <bad..name>: Helo command rejected: Invalid name",
        "NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 501 5.5.2 <bad..name>: Helo command rejected: Invalid name;",
    );
    refused(
        "127.0.0.1",
        "localhostonly",
        "someone@ok.example",
        "good@relay.example",
        "504 5.5.2 <localhostonly>: Helo command rejected: need fully-qualified hostname",
        "NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 504 5.5.2 <localhostonly>: Helo command rejected: need fully-qualified hostname;",
    );
    ok(
        "127.0.0.1",
        "[127.0.0.1]",
        "someone@ok.example",
        "good@relay.example",
    );
    // WARN and INFO log and go on.
    ok(
        "127.0.0.1",
        "warn.helo.example",
        "someone@ok.example",
        "good@relay.example",
    );
    logged(
        &inst,
        "NOQUEUE: warn: RCPT from unknown[127.0.0.1]: suspicious greeting; from=<someone@ok.example> to=<good@relay.example> proto=ESMTP helo=<warn.helo.example>",
    );
    ok(
        "127.0.0.1",
        "info.helo.example",
        "someone@ok.example",
        "good@relay.example",
    );
    logged(
        &inst,
        "NOQUEUE: info: RCPT from unknown[127.0.0.1]: noted greeting;",
    );

    // check_sender_access: domain key, user@ key, OK, a restriction list
    // as the result; reject_non_fqdn_sender.
    refused(
        "127.0.0.1",
        "client.example",
        "a@spammer.example",
        "good@relay.example",
        "554 5.7.1 <a@spammer.example>: Sender address rejected: Spam source",
        "NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 554 5.7.1 <a@spammer.example>: Sender address rejected: Spam source; from=<a@spammer.example> to=<good@relay.example>",
    );
    refused(
        "127.0.0.1",
        "client.example",
        "a@mail.spammer.example",
        "good@relay.example",
        "554 5.7.1 <a@mail.spammer.example>: Sender address rejected: Spam source",
        "<a@mail.spammer.example>: Sender address rejected: Spam source;",
    );
    refused(
        "127.0.0.1",
        "client.example",
        "joe@anywhere.example",
        "good@relay.example",
        "450 4.7.1 <joe@anywhere.example>: Sender address rejected: Access denied",
        "NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 450 4.7.1 <joe@anywhere.example>: Sender address rejected: Access denied;",
    );
    refused(
        "127.0.0.1",
        "client.example",
        "nodomain",
        "good@relay.example",
        "504 5.5.2 <nodomain>: Sender address rejected: need fully-qualified address",
        "NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 504 5.5.2 <nodomain>: Sender address rejected: need fully-qualified address;",
    );
    refused(
        "127.0.0.1",
        "client.example",
        "strict@ok.example",
        "bare",
        "504 5.5.2 <bare>: Recipient address rejected: need fully-qualified address",
        "NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 504 5.5.2 <bare>: Recipient address rejected: need fully-qualified address; from=<strict@ok.example> to=<bare>",
    );
    ok(
        "127.0.0.1",
        "client.example",
        "friend@ok.example",
        "good@relay.example",
    );
    // DEFER_IF_REJECT from a table: a later 5xx of the same command (here
    // the relay recipient check) becomes the table's 450.
    refused(
        "127.0.0.1",
        "client.example",
        "someone@ok.example",
        "maybe@relay.example",
        "450 4.7.1 <maybe@relay.example>: Recipient address rejected: Try later",
        "NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 450 4.7.1 <maybe@relay.example>: Recipient address rejected: Try later; from=<someone@ok.example> to=<maybe@relay.example>",
    );

    // check_recipient_access: NNN with an enhanced code, parent domains.
    refused(
        "127.0.0.1",
        "client.example",
        "someone@ok.example",
        "blocked@relay.example",
        "550 5.1.1 <blocked@relay.example>: Recipient address rejected: No such person here",
        "NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 550 5.1.1 <blocked@relay.example>: Recipient address rejected: No such person here; from=<someone@ok.example> to=<blocked@relay.example>",
    );
    refused(
        "127.0.0.1",
        "client.example",
        "someone@ok.example",
        "a@mx.closed.example",
        "554 5.7.1 <a@mx.closed.example>: Recipient address rejected: Access denied",
        "<a@mx.closed.example>: Recipient address rejected: Access denied;",
    );
    // relay_recipient_maps: an unknown recipient at a relay domain is
    // refused at RCPT time (no backscatter).
    refused(
        "127.0.0.1",
        "client.example",
        "someone@ok.example",
        "nobody@relay.example",
        "550 5.1.1 <nobody@relay.example>: Recipient address rejected: User unknown in relay recipient table",
        "NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 550 5.1.1 <nobody@relay.example>: Recipient address rejected: User unknown in relay recipient table; from=<someone@ok.example> to=<nobody@relay.example>",
    );

    // reject_multi_recipient_bounce: the null sender may have one recipient.
    let mut c = from(&inst, "127.0.0.1");
    c.reply();
    c.cmd("EHLO client.example");
    assert!(c.cmd("MAIL FROM:<>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<good@relay.example>").starts_with("250"));
    let r = c.cmd("RCPT TO:<friendly@relay.example>");
    assert_eq!(
        r.trim_end(),
        "550 5.5.3 <friendly@relay.example>: Recipient address rejected: Multi-recipient bounce"
    );
    logged(
        &inst,
        "reject: RCPT from unknown[127.0.0.1]: 550 5.5.3 <friendly@relay.example>: Recipient address rejected: Multi-recipient bounce; from=<> to=<friendly@relay.example>",
    );
    c.cmd("QUIT");
    // Nothing of any refused transaction reached the queue.
    assert!(inst.queue_json().is_empty(), "{:?}", inst.queue_json());
}

#[test]
fn discard_hold_redirect_bcc_and_prepend_show_in_the_queue_and_at_the_sink() {
    let mut inst = Instance::new(
        "smtpd_error_sleep_time = 0\n\
         mynetworks = 10.0.0.0/8\n\
         relay_domains = relay.example\n",
    );
    let sink_port = 2626;
    let sink = Sink::start(&inst.ip, sink_port, &inst.config_dir().join("sink"));
    let t = tables(
        &inst,
        &[(
            "senders",
            "discard@ok.example DISCARD\n\
             held@ok.example HOLD\n\
             redirect@ok.example REDIRECT trap@relay.example\n\
             bcc@ok.example BCC archive@relay.example\n\
             prepend@ok.example PREPEND X-Screened: by the edge\n",
        )],
    );
    inst.add_main_cf(&format!(
        "smtpd_sender_restrictions = check_sender_access {}\nrelayhost = [{}]:{sink_port}\n",
        t[0], inst.ip
    ));
    inst.start();
    let send = |sender: &str, tag: &str| {
        let mut c = from(&inst, "127.0.0.1");
        c.reply();
        c.cmd("EHLO client.example");
        let r = c.send_mail(
            sender,
            &["good@relay.example"],
            &format!("Subject: {tag}\r\n\r\n{tag}\r\n"),
        );
        assert!(r.starts_with("250"), "{sender}: {r}");
        c.cmd("QUIT");
    };
    // DISCARD: the client is told the message is queued; nothing is.
    send("discard@ok.example", "discarded");
    logged(
        &inst,
        "discard: RCPT from unknown[127.0.0.1]: <discard@ok.example>: Sender address triggers DISCARD action; from=<discard@ok.example> to=<good@relay.example>",
    );
    // HOLD: queued on hold, not delivered.
    // HOLD, then a second message on the same connection: the second is
    // not held (nothing carries over into the next transaction).
    let mut c = from(&inst, "127.0.0.1");
    c.reply();
    c.cmd("EHLO client.example");
    for (sender, tag) in [
        ("held@ok.example", "held"),
        ("after@ok.example", "after-hold"),
    ] {
        let r = c.send_mail(
            sender,
            &["good@relay.example"],
            &format!("Subject: {tag}\r\n\r\n{tag}\r\n"),
        );
        assert!(r.starts_with("250"), "{sender}: {r}");
    }
    c.cmd("QUIT");
    logged(
        &inst,
        "hold: RCPT from unknown[127.0.0.1]: <held@ok.example>: Sender address triggers HOLD action; from=<held@ok.example> to=<good@relay.example>",
    );
    let held = wait_for("the held message", Duration::from_secs(10), || {
        let q = inst.queue_json();
        (q.len() == 1).then(|| q[0].clone())
    });
    assert_eq!(held["queue_name"], "hold", "{held}");
    // REDIRECT, BCC and PREPEND reach the next hop.
    send("redirect@ok.example", "redirected");
    send("bcc@ok.example", "copied");
    send("prepend@ok.example", "prepended");
    let msgs = wait_for("three deliveries", Duration::from_secs(30), || {
        let m = sink.messages();
        let subjects = |m: &[(serde_json::Value, Vec<u8>)], s: &str| {
            m.iter()
                .filter(|(_, c)| String::from_utf8_lossy(c).contains(&format!("Subject: {s}")))
                .count()
        };
        (subjects(&m, "redirected") >= 1
            && subjects(&m, "copied") >= 1
            && subjects(&m, "prepended") >= 1
            && subjects(&m, "after-hold") >= 1)
            .then_some(m)
    });
    let find = |s: &str| -> Vec<(serde_json::Value, String)> {
        msgs.iter()
            .map(|(e, c)| (e.clone(), String::from_utf8_lossy(c).into_owned()))
            .filter(|(_, c)| c.contains(&format!("Subject: {s}")))
            .collect()
    };
    let redirected = find("redirected");
    assert_eq!(redirected.len(), 1);
    assert_eq!(
        redirected[0].0["to"],
        serde_json::json!(["trap@relay.example"])
    );
    let mut copied: Vec<String> = find("copied")
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
    copied.sort();
    assert_eq!(copied, ["archive@relay.example", "good@relay.example"]);
    let prepended = find("prepended");
    assert!(
        prepended[0]
            .1
            .starts_with("X-Screened: by the edge\r\nReceived: from client.example"),
        "{}",
        prepended[0].1
    );
    // None of the discarded or held content went out.
    assert!(find("discarded").is_empty() && find("held").is_empty());
}

#[test]
fn delay_reject_no_refuses_at_each_stage() {
    let mut inst = Instance::new(
        "smtpd_error_sleep_time = 0\n\
         mynetworks = 10.0.0.0/8\n\
         smtpd_delay_reject = no\n",
    );
    let t = tables(
        &inst,
        &[
            ("clients.cidr", "127.0.0.66/32 REJECT Go away\n"),
            ("helo", "bad.helo.example REJECT\n"),
            ("senders", "spammer.example REJECT\n"),
        ],
    );
    inst.add_main_cf(&format!(
        "smtpd_client_restrictions = check_client_access {}\n\
         smtpd_helo_restrictions = check_helo_access {}\n\
         smtpd_sender_restrictions = check_sender_access {}\n",
        t[0], t[1], t[2]
    ));
    inst.start();
    // The client list at connect: the refusal replaces the greeting, and
    // every command but QUIT gets 503.
    let mut c = from(&inst, "127.0.0.66");
    assert_eq!(
        c.reply().trim_end(),
        "554 5.7.1 <unknown[127.0.0.66]>: Client host rejected: Go away"
    );
    assert_eq!(
        c.cmd("EHLO client.example").trim_end(),
        "503 Error: access denied for unknown[127.0.0.66]"
    );
    assert!(
        c.cmd("MAIL FROM:<a@b.example>")
            .starts_with("503 Error: access denied")
    );
    assert!(c.cmd("QUIT").starts_with("221"));
    logged(
        &inst,
        "NOQUEUE: reject: CONNECT from unknown[127.0.0.66]: 554 5.7.1 <unknown[127.0.0.66]>: Client host rejected: Go away;",
    );
    // The HELO list at HELO, the sender list at MAIL.
    let mut c = from(&inst, "127.0.0.1");
    assert!(c.reply().starts_with("220"));
    assert_eq!(
        c.cmd("EHLO bad.helo.example").trim_end(),
        "554 <bad.helo.example>: Helo command rejected: Access denied"
    );
    logged(
        &inst,
        "NOQUEUE: reject: HELO from unknown[127.0.0.1]: 554 5.7.1 <bad.helo.example>: Helo command rejected: Access denied;",
    );
    assert!(c.cmd("EHLO client.example").starts_with("250"));
    assert_eq!(
        c.cmd("MAIL FROM:<a@spammer.example>").trim_end(),
        "554 5.7.1 <a@spammer.example>: Sender address rejected: Access denied"
    );
    logged(
        &inst,
        "NOQUEUE: reject: MAIL from unknown[127.0.0.1]: 554 5.7.1 <a@spammer.example>: Sender address rejected: Access denied; from=<a@spammer.example> proto=ESMTP helo=<client.example>",
    );
    // Refused at MAIL: no transaction is open.
    assert!(c.cmd("RCPT TO:<root@localhost>").starts_with("503 5.5.1"));
    assert!(c.cmd("MAIL FROM:<a@good.example>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<root@localhost>").starts_with("250"));
    c.cmd("QUIT");
}

#[test]
fn warn_if_reject_defer_if_reject_soft_bounce_and_session_checks() {
    let mut inst = Instance::new(
        "smtpd_error_sleep_time = 0\n\
         mynetworks = 10.0.0.0/8\n\
         relay_domains = relay.example\n\
         smtpd_relay_restrictions =\n\
         smtpd_sender_restrictions = warn_if_reject reject_non_fqdn_sender\n\
         smtpd_recipient_restrictions = defer_if_reject, reject_non_fqdn_recipient, check_recipient_access inline:{ plain@relay.example=reject_plaintext_session }, reject_unauth_destination\n\
         smtpd_data_restrictions = reject_unauth_pipelining, reject_multi_recipient_bounce\n\
         smtpd_end_of_data_restrictions = check_sender_access inline:{ { eod@ok.example = REJECT Not at the end } }\n\
         smtpd_tls_security_level = none\n",
    );
    inst.start();
    // warn_if_reject: logged as reject_warning, and the command passes on
    // to the next list, which here defers what it would reject.
    let mut c = from(&inst, "127.0.0.1");
    c.reply();
    c.cmd("EHLO client.example");
    assert!(c.cmd("MAIL FROM:<nodomain>").starts_with("250"));
    let r = c.cmd("RCPT TO:<bare>");
    assert_eq!(
        r.trim_end(),
        "450 4.7.0 <bare>: Recipient address rejected: defer_if_reject requested"
    );
    logged(
        &inst,
        "NOQUEUE: reject_warning: RCPT from unknown[127.0.0.1]: 504 5.5.2 <nodomain>: Sender address rejected: need fully-qualified address; from=<nodomain> to=<bare>",
    );
    // defer_if_reject turns the relay refusal into 450 too.
    let r = c.cmd("RCPT TO:<x@elsewhere.example>");
    assert_eq!(
        r.trim_end(),
        "450 4.7.0 <x@elsewhere.example>: Recipient address rejected: defer_if_reject requested"
    );
    // reject_plaintext_session (a restriction list as a table's answer),
    // with Postfix's text.
    let r = c.cmd("RCPT TO:<plain@relay.example>");
    assert_eq!(r.trim_end(), "450 4.7.1 Session encryption is required");
    assert!(c.cmd("RCPT TO:<other@relay.example>").starts_with("250"));
    c.cmd("QUIT");

    // reject_unauth_pipelining at DATA: a HELO client that sends ahead.
    let mut c = from(&inst, "127.0.0.1");
    c.reply();
    c.send(
        b"HELO client.example\r\nMAIL FROM:<a@ok.example>\r\nRCPT TO:<r@relay.example>\r\nDATA\r\n",
    );
    let replies = c.replies(4);
    assert!(replies[2].starts_with("250"), "{replies:?}");
    assert_eq!(
        replies[3].trim_end(),
        "503 <DATA>: Data command rejected: Improper use of SMTP command pipelining"
    );
    c.cmd("QUIT");
    logged(
        &inst,
        "reject: DATA from unknown[127.0.0.1]: 503 5.5.0 <DATA>: Data command rejected: Improper use of SMTP command pipelining; from=<a@ok.example> proto=SMTP helo=<client.example>",
    );
    // The same client in lock step passes; an end-of-data reject then
    // leaves no transaction behind (RCPT and DATA want a new MAIL).
    let mut c = from(&inst, "127.0.0.1");
    c.reply();
    c.cmd("EHLO client.example");
    let r = c.send_mail(
        "eod@ok.example",
        &["r@relay.example"],
        "Subject: x\r\n\r\nx\r\n",
    );
    assert_eq!(
        r.trim_end(),
        "554 5.7.1 <eod@ok.example>: Sender address rejected: Not at the end"
    );
    assert!(c.cmd("RCPT TO:<r@relay.example>").starts_with("503 5.5.1"));
    assert!(c.cmd("DATA").starts_with("503 5.5.1"));
    let r = c.send_mail(
        "fine@ok.example",
        &["r@relay.example"],
        "Subject: y\r\n\r\ny\r\n",
    );
    assert!(r.starts_with("250"), "{r}");
    c.cmd("QUIT");
    logged(
        &inst,
        "reject: END-OF-MESSAGE from unknown[127.0.0.1]: 554 5.7.1 <eod@ok.example>: Sender address rejected: Not at the end; from=<eod@ok.example>",
    );

    // soft_bounce turns 5xx refusals into 4xx.
    inst.add_main_cf(
        "smtpd_recipient_restrictions = reject_non_fqdn_recipient, reject_unauth_destination\nsoft_bounce = yes\n",
    );
    assert!(inst.postern(&["reload"]).status.success());
    wait_for("the reload", Duration::from_secs(20), || {
        let mut c = from(&inst, "127.0.0.1");
        c.reply();
        c.cmd("EHLO client.example");
        c.cmd("MAIL FROM:<a@ok.example>");
        let r = c.cmd("RCPT TO:<x@elsewhere.example>");
        c.cmd("QUIT");
        r.starts_with("454 4.7.1 <x@elsewhere.example>: Relay access denied")
            .then_some(())
    });
    logged(
        &inst,
        "NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 454 4.7.1 <x@elsewhere.example>: Relay access denied;",
    );
    let mut c = from(&inst, "127.0.0.1");
    c.reply();
    c.cmd("EHLO client.example");
    c.cmd("MAIL FROM:<a@ok.example>");
    assert!(c.cmd("RCPT TO:<bare>").starts_with("404 4.5.2 <bare>"));
    c.cmd("QUIT");
}

#[test]
fn restriction_classes_chosen_by_an_access_table() {
    let mut inst = Instance::new(
        "smtpd_error_sleep_time = 0\n\
         mynetworks = 10.0.0.0/8\n\
         relay_domains = relay.example\n",
    );
    let t = tables(
        &inst,
        &[(
            "rcpt_class",
            "open@relay.example permissive\nstrict@relay.example restrictive\n",
        )],
    );
    inst.add_main_cf(&format!(
        "smtpd_restriction_classes = permissive, restrictive\n\
         permissive = permit\n\
         restrictive = reject_non_fqdn_sender, check_sender_access inline:{{ {{ bad@ok.example = REJECT Class says no }} }}, permit\n\
         smtpd_recipient_restrictions = check_recipient_access {}, reject_unauth_destination\n",
        t[0]
    ));
    let check = inst.postern(&["conf", "--check"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    inst.start();
    let r = attempt(
        &inst,
        "127.0.0.1",
        "client.example",
        "bad@ok.example",
        "strict@relay.example",
    );
    assert_eq!(
        r.trim_end(),
        "554 5.7.1 <bad@ok.example>: Sender address rejected: Class says no"
    );
    logged(
        &inst,
        "NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 554 5.7.1 <bad@ok.example>: Sender address rejected: Class says no; from=<bad@ok.example> to=<strict@relay.example>",
    );
    let r = attempt(
        &inst,
        "127.0.0.1",
        "client.example",
        "bad@ok.example",
        "open@relay.example",
    );
    assert!(r.starts_with("250"), "{r}");
    let r = attempt(
        &inst,
        "127.0.0.1",
        "client.example",
        "nodomain",
        "strict@relay.example",
    );
    assert!(r.starts_with("504 5.5.2 <nodomain>"), "{r}");
}

#[test]
fn unlisted_senders_auth_destinations_and_sleep() {
    let mut inst = Instance::new(
        "smtpd_error_sleep_time = 0\n\
         mynetworks = 10.0.0.0/8\n\
         relay_domains = relay.example\n\
         smtpd_reject_unlisted_sender = yes\n\
         smtpd_relay_restrictions =\n\
         smtpd_recipient_restrictions = check_recipient_access inline:{ { slow@relay.example = sleep 1, permit } }, permit_auth_destination, reject\n",
    );
    inst.start();
    // smtpd_reject_unlisted_sender: a sender in a local domain must exist.
    let r = attempt(
        &inst,
        "127.0.0.1",
        "client.example",
        "nosuchuser@mx.test.example",
        "a@relay.example",
    );
    assert_eq!(
        r.trim_end(),
        "550 5.1.0 <nosuchuser@mx.test.example>: Sender address rejected: User unknown in local recipient table"
    );
    logged(
        &inst,
        "NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 550 5.1.0 <nosuchuser@mx.test.example>: Sender address rejected: User unknown in local recipient table; from=<nosuchuser@mx.test.example> to=<a@relay.example>",
    );
    let r = attempt(
        &inst,
        "127.0.0.1",
        "client.example",
        "root@mx.test.example",
        "a@relay.example",
    );
    assert!(r.starts_with("250"), "{r}");
    // permit_auth_destination: ours and our relay domains pass, the rest
    // reaches the final reject.
    let r = attempt(
        &inst,
        "127.0.0.1",
        "client.example",
        "a@ok.example",
        "a@other.example",
    );
    assert_eq!(
        r.trim_end(),
        "554 5.7.1 <a@other.example>: Recipient address rejected: Access denied"
    );
    // sleep N waits, then the list goes on.
    let t = std::time::Instant::now();
    let r = attempt(
        &inst,
        "127.0.0.1",
        "client.example",
        "a@ok.example",
        "slow@relay.example",
    );
    assert!(r.starts_with("250"), "{r}");
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
}
