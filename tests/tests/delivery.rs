//! The delivery path against real peers: an aiosmtpd sink as next hop, a
//! hickory DNS server for MX paths, Maildirs on disk.
use std::time::Duration;

use postern_tests::{Instance, Sink, dns, python, unique_loopback, wait_for};

const FAST_RETRY: &str = "minimal_backoff_time = 1s\nmaximal_backoff_time = 2s\n";

/// An instance relaying everything non-local to a sink.
fn relay_setup(extra: &str) -> (Instance, Sink) {
    let inst = Instance::new(&format!("smtpd_error_sleep_time = 0\n{extra}"));
    let sink = Sink::start(&inst.ip, 2626, &inst.dir.path().join("sink"));
    let main = inst.config_dir().join("main.cf");
    let mut text = std::fs::read_to_string(&main).unwrap();
    text.push_str(&format!("relayhost = [{}]:{}\n", sink.ip, sink.port));
    std::fs::write(&main, text).unwrap();
    (inst, sink)
}

fn send(inst: &Instance, from: &str, to: &[&str], msg: &str) {
    let rcpts = to
        .iter()
        .map(|t| format!("{t:?}"))
        .collect::<Vec<_>>()
        .join(",");
    let script = format!(
        "import smtplib\ns = smtplib.SMTP({ip:?}, {port})\nr = s.sendmail({from:?}, [{rcpts}], {msg:?}.encode())\nassert r == {{}}, r\ns.quit()\n",
        ip = inst.ip,
        port = inst.smtp_port,
    );
    let out = python(&script);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn wait_queue_empty(inst: &Instance, timeout: Duration) {
    inst.wait_queue_empty(timeout);
}

#[test]
fn relayed_mail_is_byte_exact_apart_from_received() {
    let (mut inst, sink) = relay_setup("");
    inst.start();
    // The message already has Message-ID and Date: Postern only prepends
    // its Received header.
    let mut body = String::from(
        "From: Alice <alice@example.org>\r\nTo: bob@remote.example\r\nSubject: exact\r\nMessage-ID: <exact-1@example.org>\r\nDate: Tue, 24 Nov 2026 12:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
    );
    body.push_str(".a line that starts with a dot\r\n..two dots\r\n.\r\n\r\n\r\n");
    body.push_str("Grüße aus Köln, ünïcödé\r\n");
    body.push_str(&"x".repeat(990));
    body.push_str("\r\n\ttabbed line   with trailing spaces   \r\nlast line\r\n");
    send(
        &inst,
        "alice@example.org",
        &["bob@remote.example", "carol@remote.example"],
        &body,
    );
    wait_for("delivery", Duration::from_secs(15), || {
        (!sink.messages().is_empty()).then_some(())
    });
    let msgs = sink.messages();
    assert_eq!(msgs.len(), 1, "one transaction for both recipients");
    let (env, got) = &msgs[0];
    assert_eq!(env["from"], "alice@example.org");
    assert_eq!(
        env["to"],
        serde_json::json!(["bob@remote.example", "carol@remote.example"])
    );
    let got = String::from_utf8(got.clone()).unwrap();
    assert!(
        got.starts_with("Received: from client.example") || got.starts_with("Received: from "),
        "{got}"
    );
    let (prefix, rest) = got.split_at(got.len() - body.len());
    assert_eq!(rest, body, "content changed in transit");
    assert_eq!(
        prefix.matches("\r\n").count(),
        3,
        "only a three-line Received header was added: {prefix:?}"
    );
    inst.wait_log(
        "status=sent (250 2.0.0 Ok: stored as 0001)",
        Duration::from_secs(5),
    );
    inst.wait_log("relay=", Duration::from_secs(1));
    wait_queue_empty(&inst, Duration::from_secs(5));
    inst.wait_log(": removed", Duration::from_secs(5));
}

#[test]
fn local_mail_goes_to_maildir_following_aliases() {
    let inst = Instance::new("smtpd_error_sleep_time = 0\n");
    std::fs::write(
        inst.config_dir().join("aliases"),
        "team: root, staff\nstaff: daemon\npostmaster: root\n",
    )
    .unwrap();
    assert!(inst.postern(&["newaliases"]).status.success());
    let mut inst = inst;
    inst.start();
    send(
        &inst,
        "alice@example.org",
        &["team@localhost", "bin@localhost"],
        "Subject: to the team\r\nMessage-ID: <team-1@example.org>\r\n\r\nhello team\r\n",
    );
    wait_for("three maildirs", Duration::from_secs(15), || {
        (inst.maildir("root").len() == 1
            && inst.maildir("daemon").len() == 1
            && inst.maildir("bin").len() == 1)
            .then_some(())
    });
    let root = &inst.maildir("root")[0];
    assert!(
        root.starts_with("Return-Path: <alice@example.org>\nDelivered-To: team@localhost\n"),
        "{root}"
    );
    assert!(
        root.contains("\nSubject: to the team\n") && root.ends_with("\nhello team\n"),
        "{root}"
    );
    assert!(!root.contains('\r'), "Maildir files use LF line endings");
    assert!(inst.maildir("bin")[0].contains("Delivered-To: bin@localhost\n"));
    inst.wait_log("to=<team@localhost>, relay=local", Duration::from_secs(5));
    // Files are in new/, nothing left in tmp/.
    let tmp = inst.data_dir().join("mail/root/tmp");
    assert_eq!(std::fs::read_dir(tmp).unwrap().count(), 0);
}

#[test]
fn mailbox_size_limit_bounces_a_message_too_big_for_the_mailbox() {
    let mut inst = Instance::new(
        "smtpd_error_sleep_time = 0\nmessage_size_limit = 1000\nmailbox_size_limit = 1000\n",
    );
    inst.start();
    send(
        &inst,
        "",
        &["bin@localhost"],
        "Subject: small\r\n\r\nfits\r\n",
    );
    // Under message_size_limit as sent; over mailbox_size_limit once
    // cleanup and local added their headers.
    let big = format!("Subject: big\r\n\r\n{}\r\n", "x".repeat(900));
    send(&inst, "", &["bin@localhost"], &big);
    inst.wait_log(
        "dsn=5.2.2, status=bounced (maildir delivery failed: error writing message: File too large)",
        Duration::from_secs(30),
    );
    let got = wait_for("the small message", Duration::from_secs(30), || {
        let m = inst.maildir("bin");
        (!m.is_empty()).then_some(m)
    });
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].contains("Subject: small"));
}

#[test]
fn a_tempfailing_next_hop_defers_with_backoff_then_delivers() {
    let (mut inst, sink) = relay_setup(FAST_RETRY);
    sink.set_mode("tempfail");
    inst.start();
    send(
        &inst,
        "alice@example.org",
        &["bob@remote.example"],
        "Subject: patience\r\n\r\nwait for it\r\n",
    );
    // Deferred, and retried by itself.
    wait_for("two deferrals", Duration::from_secs(20), || {
        (inst.log_lines("status=deferred").len() >= 2).then_some(())
    });
    let q = inst.queue_json();
    assert_eq!(q.len(), 1, "{q:?}");
    let reason = q[0]["recipients"][0]["delay_reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(reason.contains("451 4.3.0 Temporary failure"), "{reason}");
    sink.set_mode("accept");
    wait_for("delivery after recovery", Duration::from_secs(20), || {
        (sink.messages().len() == 1).then_some(())
    });
    wait_queue_empty(&inst, Duration::from_secs(10));
    assert!(inst.log().contains("dsn=4.3.0, status=deferred (host 127."));
}

#[test]
fn a_permanent_rejection_sends_a_dsn_to_the_sender() {
    let (mut inst, sink) = relay_setup("");
    sink.set_mode("reject");
    inst.start();
    send(
        &inst,
        "root@localhost",
        &["nobody@remote.example"],
        "Subject: doomed\r\nMessage-ID: <doomed-1@localhost>\r\n\r\nthis will bounce\r\n",
    );
    wait_for("a DSN in root's Maildir", Duration::from_secs(15), || {
        (inst.maildir("root").len() == 1).then_some(())
    });
    let dsn = &inst.maildir("root")[0];
    for want in [
        "Return-Path: <>",
        "Subject: Undelivered Mail Returned to Sender",
        "In-Reply-To: <doomed-1@localhost>",
        "References: <doomed-1@localhost>",
        "Content-Type: multipart/report; report-type=delivery-status;",
        "Final-Recipient: rfc822; nobody@remote.example",
        "Action: failed",
        "Status: 5.1.1",
        "550 5.1.1 No such user here",
        "this will bounce",
    ] {
        assert!(dsn.contains(want), "DSN lacks {want:?}:\n{dsn}");
    }
    inst.wait_log("status=bounced", Duration::from_secs(1));
    wait_queue_empty(&inst, Duration::from_secs(10));
    // The notice itself has the null sender: it can never bounce again.
    inst.wait_log("from=<>, size=", Duration::from_secs(5));
}

/// notify_classes = bounce, 2bounce: the postmaster gets a copy of each
/// bounce (headers only) from the double-bounce sender, and a bounce that
/// cannot be returned (null sender) goes to the postmaster instead of
/// being dropped.
#[test]
fn postmaster_notices_follow_notify_classes() {
    let (mut inst, sink) = relay_setup("notify_classes = bounce, 2bounce\n");
    sink.set_mode("reject");
    inst.start();
    send(
        &inst,
        "root@localhost",
        &["nobody@remote.example"],
        "Subject: doomed\r\n\r\nthe body stays private\r\n",
    );
    // root gets the DSN, and (through postmaster: root) the copy.
    wait_for(
        "the DSN and the postmaster copy",
        Duration::from_secs(15),
        || (inst.maildir("root").len() == 2).then_some(()),
    );
    let mail = inst.maildir("root");
    let copy = mail
        .iter()
        .find(|m| m.contains("Subject: Postmaster Copy: Undelivered Mail"))
        .expect("a postmaster copy");
    assert!(
        copy.contains("Return-Path: <double-bounce@mx.test.example>"),
        "{copy}"
    );
    assert!(
        copy.contains("Final-Recipient: rfc822; nobody@remote.example"),
        "{copy}"
    );
    assert!(copy.contains("Subject: doomed"), "{copy}");
    assert!(!copy.contains("the body stays private"), "{copy}");
    let dsn = mail
        .iter()
        .find(|m| m.contains("Subject: Undelivered Mail Returned to Sender"))
        .expect("the DSN");
    assert!(dsn.contains("the body stays private"), "{dsn}");
    // A message from the null sender bounces: a double bounce, to the
    // postmaster.
    send(
        &inst,
        "",
        &["other@remote.example"],
        "Subject: from nobody\r\n\r\nreturned to no one\r\n",
    );
    wait_for("the double bounce", Duration::from_secs(15), || {
        (inst.maildir("root").len() == 3).then_some(())
    });
    assert!(
        inst.maildir("root")
            .iter()
            .any(|m| m.contains("Postmaster Copy")
                && m.contains("Final-Recipient: rfc822; other@remote.example")),
    );
    wait_queue_empty(&inst, Duration::from_secs(10));
}

#[test]
fn mx_routing_null_mx_and_nxdomain_through_real_dns() {
    let mut inst = Instance::new("smtpd_error_sleep_time = 0\n");
    let sink_ip = unique_loopback();
    // MX hosts listen on port 25.
    let sink = Sink::start(&sink_ip, 25, &inst.dir.path().join("sink"));
    let zone = format!(
        "@ 3600 IN SOA ns.test. admin.test. 1 3600 600 86400 60\n\
         @ 3600 IN NS ns.test.\n\
         ns 3600 IN A 127.0.0.1\n\
         viamx 60 IN MX 10 mail.viamx.test.\n\
         mail.viamx 60 IN A {sink_ip}\n\
         nullmx 60 IN MX 0 .\n\
         implicit 60 IN A {sink_ip}\n"
    );
    let dns = dns::start(&inst.ip, "test.", &zone);
    let main = inst.config_dir().join("main.cf");
    let text = std::fs::read_to_string(&main).unwrap();
    std::fs::write(&main, format!("{text}dns_nameservers = {}\n", dns.addr)).unwrap();
    inst.start();
    send(
        &inst,
        "root@localhost",
        &["user@viamx.test", "other@implicit.test"],
        "Subject: via mx\r\n\r\nmx\r\n",
    );
    wait_for("both delivered", Duration::from_secs(20), || {
        (sink.messages().len() == 2).then_some(())
    });
    inst.wait_log(
        &format!("to=<user@viamx.test>, relay=mail.viamx.test[{sink_ip}]:25"),
        Duration::from_secs(5),
    );
    inst.wait_log(
        &format!("to=<other@implicit.test>, relay=implicit.test[{sink_ip}]:25"),
        Duration::from_secs(5),
    );
    // Null MX (RFC 7505) and a domain that does not exist bounce at once.
    send(
        &inst,
        "root@localhost",
        &["user@nullmx.test", "user@nosuch.test"],
        "Subject: no mail here\r\n\r\nx\r\n",
    );
    inst.wait_log("to=<user@nullmx.test>, relay=none", Duration::from_secs(15));
    assert!(
        inst.log().contains(
            "dsn=5.1.10, status=bounced (Domain nullmx.test does not accept mail (nullMX))"
        ),
        "{}",
        inst.log()
    );
    inst.wait_log("to=<user@nosuch.test>, relay=none", Duration::from_secs(15));
    assert!(
        inst.log()
            .contains("dsn=5.4.4, status=bounced (Host or domain name not found.")
    );
    wait_for("one DSN for both", Duration::from_secs(15), || {
        (inst.maildir("root").len() == 1).then_some(())
    });
    let dsn = &inst.maildir("root")[0];
    assert!(
        dsn.contains("Status: 5.1.10") && dsn.contains("Status: 5.4.4"),
        "{dsn}"
    );
}

#[test]
fn a_421_in_the_middle_of_a_session_defers_and_the_session_is_dropped() {
    let (mut inst, sink) = relay_setup("minimal_backoff_time = 60s\n");
    sink.set_mode("close421");
    inst.start();
    send(
        &inst,
        "alice@example.org",
        &["bob@remote.example"],
        "Subject: 421\r\n\r\nx\r\n",
    );
    inst.wait_log("status=deferred", Duration::from_secs(15));
    let line = inst.log_lines("status=deferred").remove(0);
    assert!(line.contains("421 4.3.2 Service shutting down"), "{line}");
    let q = inst.queue_json();
    assert_eq!(q[0]["queue_name"], "deferred", "{q:?}");
    sink.set_mode("accept");
    // A flush retries now instead of in a minute.
    assert!(inst.postern(&["queue", "flush"]).status.success());
    wait_for("delivered after flush", Duration::from_secs(15), || {
        (sink.messages().len() == 1).then_some(())
    });
    wait_queue_empty(&inst, Duration::from_secs(10));
}

#[test]
fn queue_listing_and_operations() {
    let (mut inst, sink) = relay_setup("minimal_backoff_time = 60s\n");
    sink.set_mode("tempfail");
    inst.start();
    for i in 0..3 {
        send(
            &inst,
            "alice@example.org",
            &[&format!("user{i}@remote.example")],
            &format!("Subject: q{i}\r\n\r\nbody {i}\r\n"),
        );
    }
    wait_for("three deferred", Duration::from_secs(15), || {
        (inst.log_lines("status=deferred").len() == 3).then_some(())
    });
    let q = inst.queue_json();
    assert_eq!(q.len(), 3, "{q:?}");
    for e in &q {
        for field in [
            "queue_name",
            "queue_id",
            "arrival_time",
            "message_size",
            "sender",
            "recipients",
        ] {
            assert!(e.get(field).is_some(), "{field} missing in {e}");
        }
        assert_eq!(e["queue_name"], "deferred");
        assert_eq!(e["sender"], "alice@example.org");
        assert!(
            e["recipients"][0]["delay_reason"]
                .as_str()
                .unwrap()
                .contains("451")
        );
        assert!(e["message_size"].as_u64().unwrap() > 0);
    }
    let ids: Vec<String> = q
        .iter()
        .map(|e| e["queue_id"].as_str().unwrap().to_string())
        .collect();
    // mailq text, as scripts parse it.
    let text = String::from_utf8_lossy(&inst.postern(&["queue", "list"]).stdout).to_string();
    assert!(
        text.starts_with("-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------\n"),
        "{text}"
    );
    assert!(
        text.contains("(host ") && text.contains("user0@remote.example"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("in 3 Requests."), "{text}");
    // Hold, release, show, delete.
    let out = inst.postern(&["queue", "hold", &ids[0]]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Placed on hold: 1 message"),
        "{out:?}"
    );
    let q = inst.queue_json();
    let held = q.iter().find(|e| e["queue_id"] == ids[0].as_str()).unwrap();
    assert_eq!(held["queue_name"], "hold");
    assert!(
        String::from_utf8_lossy(&inst.postern(&["queue", "list"]).stdout)
            .contains(&format!("{}!", ids[0]))
    );
    // A held message is not delivered, even when flushed.
    sink.set_mode("accept");
    assert!(inst.postern(&["queue", "flush"]).status.success());
    wait_for("two delivered", Duration::from_secs(15), || {
        (sink.messages().len() == 2).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sink.messages().len(), 2, "a held message went out");
    let shown = inst.postern(&["queue", "show", &ids[0]]);
    let shown = String::from_utf8_lossy(&shown.stdout).to_string();
    assert!(
        shown.contains("Subject: q0")
            && shown.contains("body 0")
            && shown.contains("sender: alice@example.org"),
        "{shown}"
    );
    let out = inst.postern(&["queue", "release", &ids[0]]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("Released from hold: 1 message"));
    wait_for("released one delivered", Duration::from_secs(15), || {
        (sink.messages().len() == 3).then_some(())
    });
    wait_queue_empty(&inst, Duration::from_secs(10));
    // Delete: park two messages, delete one by id and the rest with ALL.
    sink.set_mode("tempfail");
    for i in 0..2 {
        send(
            &inst,
            "alice@example.org",
            &[&format!("later{i}@remote.example")],
            "Subject: later\r\n\r\nx\r\n",
        );
    }
    wait_for("two more deferred", Duration::from_secs(15), || {
        (inst.queue_json().len() == 2 && inst.log_lines("status=deferred").len() >= 5).then_some(())
    });
    let id = inst.queue_json()[0]["queue_id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = inst.postern(&["queue", "delete", &id]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("{id}: removed")),
        "{out:?}"
    );
    assert_eq!(inst.queue_json().len(), 1);
    assert!(inst.postern(&["queue", "delete", "ALL"]).status.success());
    assert!(inst.queue_json().is_empty());
    assert_eq!(
        String::from_utf8_lossy(&inst.postern(&["queue", "list"]).stdout),
        "Mail queue is empty\n"
    );
    // An unknown id is reported, and the exit status says so.
    let out = inst.postern(&["queue", "show", "NOSUCHID"]);
    assert!(!out.status.success());
}

#[test]
fn expired_mail_bounces_and_delay_warnings_are_sent() {
    let (mut inst, sink) = relay_setup(
        "minimal_backoff_time = 1s\nmaximal_backoff_time = 1s\nmaximal_queue_lifetime = 4s\ndelay_warning_time = 1s\n",
    );
    sink.set_mode("tempfail");
    inst.start();
    send(
        &inst,
        "root@localhost",
        &["late@remote.example"],
        "Subject: too late\r\nMessage-ID: <late-1@localhost>\r\n\r\nx\r\n",
    );
    wait_for("a delay warning", Duration::from_secs(20), || {
        inst.maildir("root")
            .iter()
            .any(|m| m.contains("Subject: Delayed Mail (still being retried)"))
            .then_some(())
    });
    let warn = inst
        .maildir("root")
        .into_iter()
        .find(|m| m.contains("Delayed Mail"))
        .unwrap();
    assert!(
        warn.contains("Action: delayed") && warn.contains("Status: 4.3.0"),
        "{warn}"
    );
    inst.wait_log(
        "status=expired, returned to sender",
        Duration::from_secs(20),
    );
    wait_for("a non-delivery notice", Duration::from_secs(20), || {
        inst.maildir("root")
            .iter()
            .any(|m| m.contains("Undelivered Mail Returned to Sender"))
            .then_some(())
    });
    let dsn = inst
        .maildir("root")
        .into_iter()
        .find(|m| m.contains("Undelivered Mail"))
        .unwrap();
    assert!(
        dsn.contains("message delivery timed out") && dsn.contains("Action: failed"),
        "{dsn}"
    );
    wait_queue_empty(&inst, Duration::from_secs(10));
    assert!(sink.messages().is_empty());
}

#[test]
fn rate_delay_spaces_deliveries_to_one_destination() {
    let (mut inst, sink) = relay_setup(
        "default_destination_rate_delay = 400ms\nsmtp_destination_recipient_limit = 1\n",
    );
    inst.start();
    send(
        &inst,
        "alice@example.org",
        &[
            "a@remote.example",
            "b@remote.example",
            "c@remote.example",
            "d@remote.example",
        ],
        "Subject: spaced\r\n\r\nx\r\n",
    );
    wait_for("four deliveries", Duration::from_secs(20), || {
        (sink.messages().len() == 4).then_some(())
    });
    let mut times: Vec<f64> = sink
        .messages()
        .iter()
        .map(|(env, _)| env["time"].as_f64().unwrap())
        .collect();
    times.sort_by(f64::total_cmp);
    for w in times.windows(2) {
        assert!(
            w[1] - w[0] >= 0.35,
            "deliveries {:.3}s apart: {times:?}",
            w[1] - w[0]
        );
    }
}

#[test]
fn notify_success_gets_a_delivery_report() {
    let (mut inst, sink) = relay_setup("");
    inst.start();
    let mut c = inst.smtp();
    c.reply();
    c.cmd("EHLO client.example");
    assert!(
        c.cmd("MAIL FROM:<root@localhost> RET=HDRS ENVID=env-42")
            .starts_with("250")
    );
    assert!(
        c.cmd("RCPT TO:<happy@remote.example> NOTIFY=SUCCESS ORCPT=rfc822;happy@remote.example")
            .starts_with("250")
    );
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(b"Subject: tell me\r\n\r\nx\r\n.\r\n");
    assert!(c.reply().starts_with("250"));
    wait_for("delivered", Duration::from_secs(15), || {
        (sink.messages().len() == 1).then_some(())
    });
    // aiosmtpd does not offer DSN, so the parameters stay here (RFC 3461)
    // and Postern reports the hand-over itself: "relayed".
    let (env, _) = &sink.messages()[0];
    assert_eq!(env["rcpt_options"], serde_json::json!([]), "{env}");
    wait_for("a success report", Duration::from_secs(15), || {
        (inst.maildir("root").len() == 1).then_some(())
    });
    let r = &inst.maildir("root")[0];
    assert!(
        r.contains("Subject: Successful Mail Delivery Report") && r.contains("Action: relayed"),
        "{r}"
    );
    assert!(
        r.contains("Original-Envelope-Id: env-42")
            && r.contains("Original-Recipient: rfc822; happy@remote.example"),
        "{r}"
    );
}

/// A system user made for one test (useradd), with its home in a temporary
/// directory; removed again when dropped.
struct TempUser {
    name: String,
    home: std::path::PathBuf,
}

impl TempUser {
    fn create(dir: &std::path::Path, tag: &str) -> TempUser {
        let name = format!("p{tag}{}", std::process::id() % 100_000);
        let home = dir.join("home").join(&name);
        std::fs::create_dir_all(&home).unwrap();
        let _ = std::process::Command::new("userdel").arg(&name).status();
        let ok = std::process::Command::new("useradd")
            .args(["-M", "-s", "/usr/sbin/nologin", "-d"])
            .arg(&home)
            .arg(&name)
            .status()
            .expect("useradd");
        assert!(ok.success(), "useradd {name}");
        let ok = std::process::Command::new("chown")
            .arg(format!("{name}:"))
            .arg(&home)
            .status()
            .expect("chown");
        assert!(ok.success());
        TempUser { name, home }
    }

    /// Writes the user's .forward, owned by the user, with `mode`.
    fn forward(&self, text: &str, mode: u32) {
        let f = self.home.join(".forward");
        std::fs::write(&f, text).unwrap();
        let ok = std::process::Command::new("chown")
            .arg(format!("{}:", self.name))
            .arg(&f)
            .status()
            .expect("chown");
        assert!(ok.success());
        std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
    }
}

impl Drop for TempUser {
    fn drop(&mut self) {
        let _ = std::process::Command::new("userdel")
            .arg(&self.name)
            .status();
    }
}

#[test]
fn dot_forward_forwards_keeps_a_copy_and_never_runs_a_command() {
    if !postern_tests::is_root() {
        panic!("this test needs root (useradd)");
    }
    let (mut inst, sink) = relay_setup("");
    let user = TempUser::create(inst.dir.path(), "fwd");
    let u = user.name.clone();
    user.forward(&format!("bob@far.test, \\{u}\n"), 0o644);
    inst.start();
    send(
        &inst,
        "alice@example.org",
        &[&format!("{u}@localhost")],
        "Subject: fwd\r\n\r\nhello\r\n",
    );
    wait_for("the forwarded copy", Duration::from_secs(30), || {
        (sink.messages().len() == 1).then_some(())
    });
    assert_eq!(
        sink.messages()[0].0["to"],
        serde_json::json!(["bob@far.test"])
    );
    wait_for("the kept copy", Duration::from_secs(30), || {
        (inst.maildir(&u).len() == 1).then_some(())
    });

    // A command is refused, and nothing runs or is delivered.
    let marker = inst.dir.path().join("ran");
    user.forward(&format!("|/usr/bin/touch {}\n", marker.display()), 0o644);
    send(
        &inst,
        "",
        &[&format!("{u}@localhost")],
        "Subject: cmd\r\n\r\nhello\r\n",
    );
    inst.wait_log(
        &format!(
            "dsn=5.3.5, status=bounced (alias or .forward of {u}: command delivery is not supported by Postern)"
        ),
        Duration::from_secs(30),
    );
    assert!(!marker.exists(), "a .forward command ran");
    assert_eq!(inst.maildir(&u).len(), 1);

    // A .forward others may write is not followed: the mail waits.
    user.forward("bob@far.test\n", 0o666);
    send(
        &inst,
        "",
        &[&format!("{u}@localhost")],
        "Subject: insecure\r\n\r\nhello\r\n",
    );
    inst.wait_log(
        &format!("dsn=4.3.0, status=deferred (.forward of {u}: "),
        Duration::from_secs(30),
    );
    assert!(
        inst.log()
            .contains("/.forward: writable by group or others; not used)")
    );
    assert_eq!(sink.messages().len(), 1);
    assert_eq!(inst.maildir(&u).len(), 1);
}

#[test]
fn home_mailbox_delivers_into_the_users_home_as_the_user() {
    if !postern_tests::is_root() {
        panic!("this test needs root (useradd)");
    }
    let mut inst = Instance::new("smtpd_error_sleep_time = 0\nhome_mailbox = Maildir/\n");
    let user = TempUser::create(inst.dir.path(), "home");
    let u = user.name.clone();
    inst.start();
    send(
        &inst,
        "alice@example.org",
        &[&format!("{u}@localhost")],
        "Subject: home\r\n\r\nhello home\r\n",
    );
    let new = user.home.join("Maildir/new");
    let files = wait_for(
        "the message in the home Maildir",
        Duration::from_secs(30),
        || {
            let v: Vec<_> = std::fs::read_dir(&new)
                .ok()?
                .filter_map(|e| e.ok())
                .collect();
            (!v.is_empty()).then_some(v)
        },
    );
    assert_eq!(files.len(), 1);
    let path = files[0].path();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.starts_with(&format!(
            "Return-Path: <alice@example.org>\nDelivered-To: {u}@localhost\n"
        )),
        "{text}"
    );
    assert!(text.ends_with("\nhello home\n"), "{text}");
    use std::os::unix::fs::MetadataExt;
    let owner = std::fs::metadata(user.home.join("Maildir")).unwrap().uid();
    let m = std::fs::metadata(&path).unwrap();
    assert_eq!(m.uid(), owner, "the file belongs to the user");
    assert_ne!(m.uid(), 0);
    assert_eq!(m.mode() & 0o777, 0o600);
    assert_eq!(
        std::fs::read_dir(user.home.join("Maildir/tmp"))
            .unwrap()
            .count(),
        0
    );
    // Nothing in the spool for this user.
    assert!(inst.maildir(&u).is_empty());
    inst.wait_log(
        &format!("to=<{u}@localhost>, relay=local"),
        Duration::from_secs(5),
    );
}
