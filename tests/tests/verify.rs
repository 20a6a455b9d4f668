//! Address verification (reject_unverified_recipient, verify(8)) through a
//! real instance and a real next hop (aiosmtpd) that accepts one address
//! and refuses another: the first RCPT is deferred while the probe runs,
//! then the results answer; they survive a restart; and neither a local
//! submission nor an SMTP message that poses as a probe can change them.
use std::time::Duration;

use postern_tests::{Instance, Sink, wait_for};

fn logged(inst: &Instance, needle: &str) {
    wait_for(needle, Duration::from_secs(30), || {
        inst.log().contains(needle).then_some(())
    });
}

fn rcpt_log(sink: &Sink) -> Vec<String> {
    std::fs::read_to_string(sink.dir.join("rcpt.log"))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

/// One smtplib session to the instance (see [`postern_tests::smtplib`]).
fn session(inst: &Instance, sender: &str, rcpts: &[&str], data: Option<&str>) -> Vec<String> {
    postern_tests::smtplib(&inst.ip, inst.smtp_port, sender, rcpts, data)
}

/// MAIL, then RCPT to each of `rcpts`; the RCPT replies.
fn try_rcpts(inst: &Instance, rcpts: &[&str]) -> Vec<String> {
    session(inst, "someone@client.example", rcpts, None)
}

const GOOD: &str = "good@relay.example";
const BAD: &str = "unknown@relay.example";
const IN_PROGRESS_GOOD: &str = "450 4.1.1 <good@relay.example>: Recipient address rejected: unverified address: Address verification in progress";
const IN_PROGRESS_BAD: &str = "450 4.1.1 <unknown@relay.example>: Recipient address rejected: unverified address: Address verification in progress";

#[test]
fn probes_decide_rcpt_survive_a_restart_and_cannot_be_poisoned() {
    let mut inst = Instance::new(
        "smtpd_error_sleep_time = 0\n\
         relay_domains = relay.example\n\
         smtpd_recipient_restrictions = reject_unauth_destination, reject_unverified_recipient\n\
         unverified_recipient_reject_code = 550\n\
         address_verify_poll_count = 1\n",
    );
    let sink = Sink::start(&inst.ip, 2626, &inst.config_dir().join("sink"));
    sink.set_mode("byname");
    inst.add_main_cf(&format!("relayhost = [{}]:2626\n", inst.ip));
    inst.start();

    // Nothing known yet: both are deferred while their probes run.
    let r = try_rcpts(&inst, &[GOOD, BAD]);
    assert_eq!(r[0].trim_end(), IN_PROGRESS_GOOD);
    assert_eq!(r[1].trim_end(), IN_PROGRESS_BAD);
    logged(
        &inst,
        &format!(
            "NOQUEUE: reject: RCPT from unknown[127.0.0.1]: {IN_PROGRESS_GOOD}; from=<someone@client.example> to=<good@relay.example> proto=ESMTP helo=<client.example>"
        ),
    );
    // The probes reach the next hop as MAIL and RCPT, never DATA.
    logged(&inst, "to=<good@relay.example>, relay=");
    logged(&inst, "status=deliverable (250 OK)");
    logged(&inst, "to=<unknown@relay.example>, relay=");
    logged(&inst, "status=undeliverable (host ");
    assert!(sink.messages().is_empty(), "a probe sent a message");
    let probes = rcpt_log(&sink);
    assert_eq!(probes.len(), 2, "{probes:?}");
    let log = inst.log();
    let probe_line = log
        .lines()
        .find(|l| l.contains("to=<good@relay.example>") && l.contains("deliverable"))
        .unwrap();
    assert!(probe_line.contains("postfix/smtp["), "{probe_line}");

    // Now the results answer: the good address is accepted, the bad one
    // refused for good with the next hop's reason.
    let r = session(
        &inst,
        "someone@client.example",
        &[BAD, GOOD],
        Some("Subject: verified\r\n\r\nhello\r\n"),
    );
    let ip = &inst.ip;
    let want = format!(
        "550 5.1.1 <unknown@relay.example>: Recipient address rejected: undeliverable address: host {ip}[{ip}] said: 550 5.1.1 No such user here (in reply to RCPT TO command)"
    );
    assert_eq!(r[0], want);
    logged(
        &inst,
        &format!(
            "NOQUEUE: reject: RCPT from unknown[127.0.0.1]: {want}; from=<someone@client.example> to=<unknown@relay.example> proto=ESMTP helo=<client.example>"
        ),
    );
    assert!(r[1].starts_with("250"), "{}", r[1]);
    // The transaction holds the good recipient only.
    assert!(r[2].starts_with("250"), "{}", r[2]);
    wait_for("the message at the sink", Duration::from_secs(30), || {
        (sink.messages().len() == 1).then_some(())
    });
    assert_eq!(sink.messages()[0].0["to"], serde_json::json!([GOOD]));

    // The results survive a restart: with the next hop now refusing
    // everything, the cached answers still hold (no new probe is due).
    inst.stop();
    sink.set_mode("reject");
    let before = rcpt_log(&sink).len();
    inst.start();
    let r = try_rcpts(&inst, &[GOOD, BAD]);
    assert!(r[0].starts_with("250"), "{}", r[0]);
    assert_eq!(r[1].trim_end(), want);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rcpt_log(&sink).len(), before, "a cached address was probed");

    // A message that poses as a probe: the probe sender, and a header
    // Postfix's probes would carry, submitted locally and over SMTP to
    // the good address, which the next hop now refuses. Its delivery
    // bounces, and the cache does not learn from it.
    let probe_sender = format!("double-bounce@{}", "mx.test.example");
    let mut child = std::process::Command::new(postern_tests::bin())
        .args(["sendmail", "-f", &probe_sender, GOOD])
        .env("MAIL_CONFIG", inst.config_dir())
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"X-Postfix-Verify: probe\nSubject: probe\n\nx\n")
            .unwrap();
    }
    assert!(child.wait().unwrap().success());
    let r = session(
        &inst,
        &probe_sender,
        &[GOOD],
        Some("X-Postfix-Verify: probe\r\nSubject: probe\r\n\r\nx\r\n"),
    );
    assert!(r[0].starts_with("250") && r[1].starts_with("250"), "{r:?}");
    wait_for("both deliveries bounced", Duration::from_secs(30), || {
        (inst
            .log()
            .lines()
            .filter(|l| l.contains("to=<good@relay.example>") && l.contains("status=bounced"))
            .count()
            == 2)
            .then_some(())
    });
    let r = try_rcpts(&inst, &[GOOD]);
    assert!(r[0].starts_with("250"), "the cache was poisoned: {}", r[0]);
    inst.stop();
    assert!(
        inst.data_dir().join("cache/address-verify.db").exists(),
        "no address-verify file in the state store"
    );
}

/// Without a verify service answering in time, or with the probe still
/// running after the polls, the client is deferred, never accepted or
/// refused for good; `unverified_recipient_tempfail_action = defer` and
/// `unverified_recipient_defer_code` shape the reply.
#[test]
fn an_unreachable_next_hop_defers_and_never_refuses_for_good() {
    let mut inst = Instance::new(
        "smtpd_error_sleep_time = 0\n\
         relay_domains = relay.example\n\
         smtpd_recipient_restrictions = reject_unauth_destination, reject_unverified_recipient, permit\n\
         unverified_recipient_reject_code = 550\n\
         address_verify_poll_count = 3\n\
         address_verify_poll_delay = 1s\n",
    );
    // A next hop that refuses connections: the probe fails temporarily.
    inst.add_main_cf(&format!("relayhost = [{}]:2627\n", inst.ip));
    inst.start();
    let r = try_rcpts(&inst, &[GOOD]);
    // The probe fails within the polls: its reason answers, with 450.
    assert!(
        r[0].starts_with(
            "450 4.1.1 <good@relay.example>: Recipient address rejected: unverified address: "
        ),
        "{}",
        r[0]
    );
    assert!(!r[0].contains("in progress"), "{}", r[0]);
    logged(&inst, "status=undeliverable (connect to ");
}

/// reject_unverified_sender: the sender's probe, its 4.1.7 while pending
/// and the unverified_sender_reject_code once refused.
#[test]
fn sender_verification_defers_then_refuses_an_undeliverable_sender() {
    let mut inst = Instance::new(
        "smtpd_error_sleep_time = 0\n\
         relay_domains = relay.example\n\
         smtpd_sender_restrictions = reject_unverified_sender\n\
         unverified_sender_reject_code = 550\n\
         address_verify_poll_count = 1\n",
    );
    let sink = Sink::start(&inst.ip, 2628, &inst.config_dir().join("sink"));
    sink.set_mode("byname");
    inst.add_main_cf(&format!("relayhost = [{}]:2628\n", inst.ip));
    inst.start();
    let attempt = |from: &str| session(&inst, from, &["rcpt@relay.example"], None).remove(0);
    let r = attempt("unknown-sender@relay.example");
    assert_eq!(
        r.trim_end(),
        "450 4.1.7 <unknown-sender@relay.example>: Sender address rejected: unverified address: Address verification in progress"
    );
    assert!(attempt("sender@relay.example").starts_with("450 4.1.7"));
    logged(&inst, "to=<unknown-sender@relay.example>, relay=");
    logged(&inst, "to=<sender@relay.example>, relay=");
    let ip = &inst.ip;
    let want = format!(
        "550 5.1.7 <unknown-sender@relay.example>: Sender address rejected: undeliverable address: host {ip}[{ip}] said: 550 5.1.1 No such user here (in reply to RCPT TO command)"
    );
    assert_eq!(attempt("unknown-sender@relay.example").trim_end(), want);
    logged(
        &inst,
        &format!(
            "NOQUEUE: reject: RCPT from unknown[127.0.0.1]: {want}; from=<unknown-sender@relay.example> to=<rcpt@relay.example> proto=ESMTP helo=<client.example>"
        ),
    );
    assert!(attempt("sender@relay.example").starts_with("250"));
    // The null sender is never verified.
    assert!(attempt("").starts_with("250"));
}

/// Probes of local addresses ask the local delivery agent, which checks
/// the alias or user and writes nothing.
#[test]
fn local_probes_check_users_and_aliases_without_delivering() {
    let mut inst = Instance::new(
        "smtpd_error_sleep_time = 0\n\
         local_recipient_maps =\n\
         smtpd_recipient_restrictions = reject_unverified_recipient\n\
         unverified_recipient_reject_code = 550\n\
         address_verify_poll_count = 3\n\
         address_verify_poll_delay = 1s\n",
    );
    inst.start();
    let r = try_rcpts(
        &inst,
        &["postmaster@mx.test.example", "nosuch@mx.test.example"],
    );
    assert!(r[0].starts_with("250"), "{}", r[0]);
    assert_eq!(
        r[1].trim_end(),
        "550 5.1.1 <nosuch@mx.test.example>: Recipient address rejected: undeliverable address: unknown user: \"nosuch\""
    );
    logged(
        &inst,
        "to=<postmaster@mx.test.example>, relay=local, delay=",
    );
    let line = inst
        .log()
        .lines()
        .find(|l| l.contains("to=<postmaster@mx.test.example>, relay=local"))
        .unwrap()
        .to_string();
    assert!(line.contains("status=deliverable"), "{line}");
    assert!(inst.maildir("root").is_empty(), "a probe delivered mail");
}
