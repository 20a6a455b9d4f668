//! The receive path with real clients: Python's smtplib, swaks, and raw
//! sockets for the cases no polite client produces. Every case checks the
//! exact reply and that the daemon is still serving afterwards.
use std::time::{Duration, Instant};

use postern_tests::{Instance, python, wait_for};

/// An instance with no error sleep, so error-heavy tests run fast.
fn still_serving(inst: &Instance) {
    let mut c = inst.greeted();
    assert_eq!(c.cmd("NOOP"), "250 2.0.0 Ok\r\n");
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye\r\n");
}

#[test]
fn smtplib_sends_plain_utf8_and_reports_rejections() {
    let inst = Instance::started("");
    let script = format!(
        r#"
import smtplib
s = smtplib.SMTP("{ip}", {port})
code, caps = s.ehlo("client.example")
assert code == 250, caps
for ext in [b"PIPELINING", b"SIZE 10240000", b"8BITMIME", b"SMTPUTF8", b"ENHANCEDSTATUSCODES", b"CHUNKING", b"DSN"]:
    assert ext in caps, (ext, caps)
assert s.sendmail("alice@example.org", ["root@localhost"], "Subject: plain\r\n\r\nhello\r\n") == {{}}
# SMTPUTF8: a UTF-8 sender and recipient, declared.
msg = "Subject: =?utf-8?q?gr=C3=BC=C3=9Fe?=\r\n\r\nGr\u00fc\u00dfe\r\n".encode()
assert s.sendmail("j\u00f6ran@b\u00fccher.example", ["root@localhost"], msg, mail_options=["SMTPUTF8", "BODY=8BITMIME"]) == {{}}
try:
    s.sendmail("alice@example.org", ["nosuchuser@localhost"], "Subject: x\r\n\r\nx\r\n")
    raise SystemExit("unknown user accepted")
except smtplib.SMTPRecipientsRefused as e:
    code, text = e.recipients["nosuchuser@localhost"]
    assert code == 550 and text.startswith(b"5.1.1 <nosuchuser@localhost>: Recipient address rejected: User unknown"), e
s.quit()
print("ok")
"#,
        ip = inst.ip,
        port = inst.smtp_port
    );
    let out = python(&script);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("two queued", Duration::from_secs(5), || {
        (inst.queued_ids().len() == 2).then_some(())
    });
    // Log lines can reach the file a few milliseconds after the reply.
    let reject = "NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 550 5.1.1 <nosuchuser@localhost>";
    inst.wait_log(reject, Duration::from_secs(5));
    let rejects = inst.log_lines(reject);
    assert_eq!(rejects.len(), 1, "{}", inst.log());
    assert!(rejects[0].contains(
        "from=<alice@example.org> to=<nosuchuser@localhost> proto=ESMTP helo=<client.example>"
    ));
    assert_eq!(
        inst.log_lines("UTF8SMTP").len(),
        0,
        "no rejects for the UTF-8 mail"
    );
    still_serving(&inst);
}

#[test]
fn smtplib_pipelined_transaction() {
    let inst = Instance::started("");
    // smtplib pipelines nothing by itself; send the whole transaction in one
    // write, as PIPELINING clients do, and read the replies afterwards.
    let script = format!(
        r#"
import socket
s = socket.create_connection(("{ip}", {port}))
f = s.makefile("rb")
def reply():
    lines = []
    while True:
        l = f.readline().decode()
        lines.append(l)
        if l[3] == " ": return "".join(lines)
assert reply().startswith("220")
s.sendall(b"EHLO client.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<root@localhost>\r\nRCPT TO:<postmaster@localhost>\r\nDATA\r\n")
got = [reply() for _ in range(5)]
assert got[0].startswith("250-"), got
assert got[1:] == ["250 2.1.0 Ok\r\n", "250 2.1.5 Ok\r\n", "250 2.1.5 Ok\r\n", "354 End data with <CR><LF>.<CR><LF>\r\n"], got
s.sendall(b"Subject: pipelined\r\n\r\nbody\r\n.\r\nQUIT\r\n")
r = reply(); assert r.startswith("250 2.0.0 Ok: queued as "), r
assert reply() == "221 2.0.0 Bye\r\n"
print("ok")
"#,
        ip = inst.ip,
        port = inst.smtp_port
    );
    let out = python(&script);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The first message queued is this one, with both recipients (a bounce
    // for the unknown postmaster may follow it).
    wait_for("queued", Duration::from_secs(5), || {
        (!inst.queued_ids().is_empty()).then_some(())
    });
    assert!(inst.log().contains("nrcpt=2 (queue active)"));
}

#[test]
fn swaks_delivers_a_message() {
    let inst = Instance::started("");
    let out = std::process::Command::new("swaks")
        .args(["--server", &format!("{}:{}", inst.ip, inst.smtp_port)])
        .args([
            "--from",
            "sender@example.org",
            "--to",
            "root@localhost",
            "--helo",
            "swaks.example",
        ])
        .args([
            "--header",
            "Subject: from swaks",
            "--body",
            "Hello from swaks",
        ])
        .output()
        .expect("swaks (apt-get install swaks)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("<-  250 2.0.0 Ok: queued as "), "{text}");
    wait_for("queued", Duration::from_secs(5), || {
        (inst.queued_ids().len() == 1).then_some(())
    });
    // swaks with a recipient we refuse gets the exact code, and exits non-zero.
    let out = std::process::Command::new("swaks")
        .args(["--server", &format!("{}:{}", inst.ip, inst.smtp_port)])
        .args(["--from", "sender@example.org", "--to", "ghost@localhost"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("<** 550 5.1.1 <ghost@localhost>"));
}

/// Each variant tries to end DATA early and start a second transaction.
#[test]
fn smuggling_variants_never_end_data() {
    let inst = Instance::started("");
    let variants: &[&[u8]] = &[
        b"\n.\n",
        b"\r.\r",
        b"\r\n.\r",
        b"\r\n.\n",
        b"\n.\r\n",
        b"\r\n.\x00\r\n",
        b"\r\n\x00.\r\n",
    ];
    for v in variants {
        let mut c = inst.greeted();
        assert!(c.cmd("MAIL FROM:<a@example.org>").starts_with("250"));
        assert!(c.cmd("RCPT TO:<root@localhost>").starts_with("250"));
        assert!(c.cmd("DATA").starts_with("354"));
        let mut payload = b"Subject: smuggle\r\n\r\nfirst".to_vec();
        payload.extend_from_slice(v);
        payload.extend_from_slice(b"MAIL FROM:<evil@example.org>\r\nRCPT TO:<postmaster@localhost>\r\nDATA\r\nsmuggled\r\n");
        c.send(&payload);
        // Nothing may answer yet: the data has not ended.
        c.w.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut probe = [0u8; 1];
        let early = std::io::Read::read(&mut c.r, &mut probe);
        assert!(
            early.is_err(),
            "{v:?}: server answered before the real end of data"
        );
        c.w.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        c.send(b"\r\n.\r\n");
        let r = c.reply();
        assert!(r.starts_with("250 2.0.0 Ok: queued as "), "{v:?}: {r}");
        // The next line is read as a command.
        assert_eq!(c.cmd("NOOP"), "250 2.0.0 Ok\r\n", "{v:?}");
        assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    }
    wait_for("all queued", Duration::from_secs(5), || {
        (inst.queued_ids().len() == variants.len()).then_some(())
    });
    // One message per variant, each from the real sender only.
    assert!(
        !inst.log().contains("from=<evil@example.org>"),
        "{}",
        inst.log()
    );
    assert_eq!(inst.log_lines("client=").len(), variants.len());
}

#[test]
fn bare_lf_is_normalized_by_default() {
    let inst = Instance::started("");
    let mut c = inst.greeted();
    // A command ending in a bare LF is read as if it ended in CRLF.
    c.send(b"NOOP\n");
    assert_eq!(c.reply(), "250 2.0.0 Ok\r\n");
    assert!(c.cmd("MAIL FROM:<a@example.org>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<root@localhost>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(b"Subject: lf\n\nline one\nline two\r\n.\r\n");
    assert!(c.reply().starts_with("250 2.0.0 Ok: queued as "));
}

#[test]
fn bare_lf_rejected_when_configured() {
    let inst = Instance::started(
        "smtpd_forbid_bare_newline = reject\nsmtpd_forbid_bare_newline_exclusions =\n",
    );
    let mut c = inst.greeted();
    c.send(b"NOOP\n");
    assert_eq!(c.reply(), "550 5.5.2 Error: bare <LF> received\r\n");
    assert!(c.closed());
    let mut c = inst.greeted();
    assert!(c.cmd("MAIL FROM:<a@example.org>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<root@localhost>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(b"Subject: x\r\n\r\nbad\nline\r\n.\r\n");
    assert_eq!(c.reply(), "550 5.5.2 Error: bare <LF> received\r\n");
    assert!(c.closed());
    // Not one message was queued, and smtpd still serves.
    inst.wait_log(
        "bare <LF> received from unknown[127.0.0.1]",
        Duration::from_secs(5),
    );
    assert!(inst.queued_ids().is_empty());
    still_serving(&inst);
}

#[test]
fn bare_cr_never_ends_a_command() {
    let inst = Instance::started("");
    let mut c = inst.greeted();
    c.send(b"NOOP\rMAIL FROM:<evil@example.org>\r\n");
    assert_eq!(c.reply(), "500 5.5.2 Error: bad syntax\r\n");
    // No MAIL happened.
    assert_eq!(
        c.cmd("RCPT TO:<root@localhost>"),
        "503 5.5.1 Error: need MAIL command\r\n"
    );
}

#[test]
fn long_lines_and_sizes_get_the_right_codes() {
    let inst = Instance::started("message_size_limit = 20000\n");
    let mut c = inst.greeted();
    // 2048 is line_length_limit: a longer command is refused, the session goes on.
    c.send(format!("NOOP {}\r\n", "x".repeat(3000)).as_bytes());
    assert_eq!(c.reply(), "500 5.5.0 Error: line too long\r\n");
    assert_eq!(c.cmd("NOOP"), "250 2.0.0 Ok\r\n");
    // SIZE above the limit.
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.org> SIZE=20001"),
        "552 5.3.4 Message size exceeds fixed limit\r\n"
    );
    assert!(
        c.cmd("MAIL FROM:<a@example.org> SIZE=100")
            .starts_with("250")
    );
    assert!(c.cmd("RCPT TO:<root@localhost>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    let body = format!("Subject: big\r\n\r\n{}\r\n", "y".repeat(25_000));
    c.send(body.as_bytes());
    c.send(b".\r\n");
    assert_eq!(c.reply(), "552 5.3.4 Error: message file too big\r\n");
    // The session survives; a message of the right size goes through.
    assert_eq!(c.cmd("RSET"), "250 2.0.0 Ok\r\n");
    let r = c.send_mail(
        "a@example.org",
        &["root@localhost"],
        "Subject: small\r\n\r\nok\r\n",
    );
    assert!(r.starts_with("250 2.0.0 Ok: queued as "), "{r}");
    // Long content lines are kept whole (no line limit in DATA).
    let r = c.send_mail(
        "a@example.org",
        &["root@localhost"],
        &format!("Subject: long\r\n\r\n{}\r\n", "z".repeat(5000)),
    );
    assert!(r.starts_with("250 2.0.0 Ok: queued as "), "{r}");
}

#[test]
fn header_section_over_the_limit_is_refused() {
    let inst = Instance::started("header_size_limit = 2048\n");
    let mut c = inst.greeted();
    let mut body = String::new();
    for i in 0..100 {
        body.push_str(&format!("X-Filler-{i}: {}\r\n", "h".repeat(40)));
    }
    body.push_str("\r\nbody\r\n");
    assert!(c.cmd("MAIL FROM:<a@example.org>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<root@localhost>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(body.as_bytes());
    c.send(b".\r\n");
    assert_eq!(
        c.reply(),
        "552 5.3.4 Error: message header size exceeds limit\r\n"
    );
    assert_eq!(c.cmd("NOOP"), "250 2.0.0 Ok\r\n");
}

#[test]
fn pipelined_recipient_flood_is_bounded() {
    let inst = Instance::started(
        "smtpd_recipient_limit = 100\nsmtpd_hard_error_limit = 20\nrecipient_delimiter = +\n",
    );
    let mut c = inst.greeted();
    assert!(c.cmd("MAIL FROM:<a@example.org>").starts_with("250"));
    let mut flood = String::new();
    for i in 0..10_000 {
        flood.push_str(&format!("RCPT TO:<root+{i}@localhost>\r\n"));
    }
    // Write from another thread: the server must not need to read it all.
    let mut w = c.w.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = std::io::Write::write_all(&mut w, flood.as_bytes());
    });
    let mut ok = 0;
    let mut limited = 0;
    loop {
        let r = c.reply();
        if r == "250 2.1.5 Ok\r\n" {
            ok += 1;
        } else if r == "452 4.5.3 Error: too many recipients\r\n" {
            limited += 1;
        } else {
            assert_eq!(r, "421 4.7.0 mx.test.example Error: too many errors\r\n");
            break;
        }
    }
    assert_eq!(ok, 100);
    assert_eq!(limited, 20, "after the 20th error the session ends");
    assert!(c.closed());
    let _ = writer.join();
    still_serving(&inst);
}

#[test]
fn unannounced_extensions_and_helo_sessions() {
    let inst = Instance::started("");
    let mut c = inst.smtp();
    c.reply();
    assert_eq!(c.cmd("HELO client.example"), "250 mx.test.example\r\n");
    // No enhanced status codes in a HELO session; no ESMTP extensions.
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.org> SIZE=100"),
        "555 Unsupported option: SIZE\r\n"
    );
    assert_eq!(
        c.cmd("AUTH PLAIN"),
        "503 Error: authentication not enabled\r\n"
    );
    assert_eq!(c.cmd("STARTTLS"), "502 Error: command not implemented\r\n");
    // BDAT is refused, and its chunk is consumed, not read as commands.
    let chunk = b"MAIL FROM:<e@x.y>\r\n";
    c.send(format!("BDAT {} LAST\r\n", chunk.len()).as_bytes());
    c.send(chunk);
    assert_eq!(c.reply(), "503 Error: BDAT without EHLO\r\n");
    assert_eq!(
        c.cmd("RCPT TO:<root@localhost>"),
        "503 Error: need MAIL command\r\n"
    );
    assert!(c.cmd("MAIL FROM:<a@example.org>").starts_with("250 Ok"));
    assert_eq!(
        c.cmd("VRFY root"),
        "252 Cannot VRFY user; try RCPT to attempt delivery\r\n"
    );
    assert!(c.cmd("HELP").starts_with("214 "));
    assert_eq!(c.cmd("XYZZY"), "502 Error: command not recognized\r\n");
    assert_eq!(c.cmd("QUIT"), "221 Bye\r\n");
    inst.wait_log("unknown=0/1", Duration::from_secs(5));
}

#[test]
fn sequence_errors_count_toward_the_hard_limit() {
    let inst = Instance::started("smtpd_hard_error_limit = 3\n");
    let mut c = inst.greeted();
    assert_eq!(c.cmd("DATA"), "503 5.5.1 Error: need MAIL command\r\n");
    assert_eq!(
        c.cmd("RCPT TO:<root@localhost>"),
        "503 5.5.1 Error: need MAIL command\r\n"
    );
    assert_eq!(
        c.cmd("BOGUS"),
        "502 5.5.2 Error: command not recognized\r\n"
    );
    assert_eq!(
        c.cmd("NOOP"),
        "421 4.7.0 mx.test.example Error: too many errors\r\n"
    );
    assert!(c.closed());
    inst.wait_log(
        "too many errors after UNKNOWN from unknown[127.0.0.1]",
        Duration::from_secs(5),
    );
    still_serving(&inst);
}

#[test]
fn chunking_with_bdat() {
    let inst = Instance::started("");
    let mut c = inst.greeted();
    assert!(c.cmd("MAIL FROM:<a@example.org>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<root@localhost>").starts_with("250"));
    let first = b"Subject: chunks\r\n\r\n.\r\nnot an end\r\n";
    c.send(format!("BDAT {}\r\n", first.len()).as_bytes());
    c.send(first);
    assert_eq!(
        c.reply(),
        format!("250 2.0.0 Ok: {} bytes\r\n", first.len())
    );
    c.send(b"BDAT 6 LAST\r\nlast\r\n");
    assert!(c.reply().starts_with("250 2.0.0 Ok: queued as "));
    // DATA after BDAT in the same transaction is refused.
    assert!(c.cmd("MAIL FROM:<a@example.org>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<root@localhost>").starts_with("250"));
    c.send(b"BDAT 3\r\nabc");
    assert!(c.reply().starts_with("250 2.0.0 Ok: 3 bytes"));
    assert_eq!(c.cmd("DATA"), "503 5.5.1 Error: DATA after BDAT\r\n");
    assert_eq!(c.cmd("RSET"), "250 2.0.0 Ok\r\n");
    wait_for("queued", Duration::from_secs(5), || {
        (inst.queued_ids().len() == 1).then_some(())
    });
}

#[test]
fn dsn_parameters_are_checked() {
    let inst = Instance::started("");
    let mut c = inst.greeted();
    assert!(
        c.cmd("MAIL FROM:<a@example.org> RET=HDRS ENVID=QQ+2B314")
            .starts_with("250")
    );
    assert!(
        c.cmd("RCPT TO:<root@localhost> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;root@localhost")
            .starts_with("250")
    );
    assert_eq!(
        c.cmd("RCPT TO:<root@localhost> NOTIFY=NEVER,SUCCESS"),
        "501 5.5.4 Error: Bad NOTIFY parameter syntax\r\n"
    );
    assert_eq!(
        c.cmd("RCPT TO:<root@localhost> ORCPT=nonsense"),
        "501 5.5.4 Error: Bad ORCPT parameter syntax\r\n"
    );
    assert_eq!(c.cmd("RSET"), "250 2.0.0 Ok\r\n");
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.org> RET=MAYBE"),
        "501 5.5.4 Bad RET parameter syntax\r\n"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.org> XFOO=1"),
        "555 5.5.4 Unsupported option: XFOO\r\n"
    );
    // A UTF-8 address without SMTPUTF8.
    assert_eq!(
        c.cmd("MAIL FROM:<jöran@example.org>"),
        "553 5.6.7 Must declare SMTPUTF8 to send unicode address\r\n"
    );
}

#[test]
fn relaying_is_refused_outside_mynetworks() {
    // No loopback address is in mynetworks here.
    let inst = Instance::started("mynetworks = 192.0.2.0/24\nrelay_domains = relay.example\n");
    let mut c = inst.greeted();
    assert!(c.cmd("MAIL FROM:<a@example.org>").starts_with("250"));
    assert_eq!(
        c.cmd("RCPT TO:<user@elsewhere.example>"),
        "454 4.7.1 <user@elsewhere.example>: Relay access denied\r\n"
    );
    assert_eq!(c.cmd("RCPT TO:<user@relay.example>"), "250 2.1.5 Ok\r\n");
    assert_eq!(c.cmd("RCPT TO:<root@localhost>"), "250 2.1.5 Ok\r\n");
    inst.wait_log("reject: RCPT from", Duration::from_secs(5));
    let lines = inst.log_lines("reject: RCPT from");
    assert!(
        lines[0].contains("NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 454 4.7.1 <user@elsewhere.example>: Relay access denied; from=<a@example.org> to=<user@elsewhere.example> proto=ESMTP helo=<client.example>"),
        "{lines:?}"
    );
    // reject_unauth_destination gives the permanent code.
    let inst2 = Instance::started(
        "mynetworks = 192.0.2.0/24\nsmtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n",
    );
    let mut c = inst2.greeted();
    assert!(c.cmd("MAIL FROM:<a@example.org>").starts_with("250"));
    assert_eq!(
        c.cmd("RCPT TO:<user@elsewhere.example>"),
        "554 5.7.1 <user@elsewhere.example>: Relay access denied\r\n"
    );
}

#[test]
fn local_recipients_follow_passwd_and_aliases() {
    let inst = Instance::new("smtpd_error_sleep_time = 0\n");
    // An aliases table built with postern map build (config_directory/aliases).
    std::fs::write(
        inst.config_dir().join("aliases"),
        "# aliases\nwebmaster: root\ninfo: root,\n  daemon\n",
    )
    .unwrap();
    let out = inst.postern(&["newaliases"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut inst = inst;
    inst.start();
    let mut c = inst.greeted();
    assert!(c.cmd("MAIL FROM:<a@example.org>").starts_with("250"));
    for ok in [
        "root@localhost",
        "webmaster@localhost",
        "INFO@mx.test.example",
        "postmaster@localhost",
        "daemon@localhost",
    ] {
        assert_eq!(
            c.cmd(&format!("RCPT TO:<{ok}>")),
            "250 2.1.5 Ok\r\n",
            "{ok}"
        );
    }
    assert!(c.cmd("RCPT TO:<nobody-here@localhost>").starts_with("550 5.1.1 <nobody-here@localhost>: Recipient address rejected: User unknown in local recipient table"));
}

#[test]
fn idle_clients_time_out() {
    let inst = Instance::started("smtpd_timeout = 2s\n");
    let mut c = inst.smtp();
    // The timer starts when smtpd has sent its greeting, which is after
    // the connection and may reach us a moment later on a busy machine.
    let t = Instant::now();
    assert!(c.reply().starts_with("220"));
    // No EHLO yet, so no enhanced status code (RFC 2034, WISHLIST L261).
    assert_eq!(c.reply(), "421 mx.test.example Error: timeout exceeded\r\n");
    assert!(t.elapsed() >= Duration::from_secs(2) && t.elapsed() < Duration::from_secs(10));
    assert!(c.closed());
    inst.wait_log(
        "timeout after CONNECT from unknown[127.0.0.1]",
        Duration::from_secs(5),
    );
    still_serving(&inst);
}

#[test]
fn a_client_that_hangs_up_before_the_commit_gets_nothing_queued() {
    let inst = Instance::started("");
    let mut c = inst.greeted();
    assert!(c.cmd("MAIL FROM:<a@example.org>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<root@localhost>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    // Corked, the end of the data and the FIN leave in one segment: the
    // server sees the hang-up with the final dot, every time.
    nix::sys::socket::setsockopt(&c.w, nix::sys::socket::sockopt::TcpCork, &true).unwrap();
    c.send(b"Subject: gone\r\n\r\nbye\r\n.\r\n");
    c.w.shutdown(std::net::Shutdown::Write).unwrap();
    drop(c);
    inst.wait_log(
        "discarded: the client hung up before the final commit",
        Duration::from_secs(5),
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(inst.queued_ids().is_empty(), "{}", inst.log());
    still_serving(&inst);
}

#[test]
fn disconnect_line_counts_commands_like_postfix() {
    let inst = Instance::started("");
    let mut c = inst.greeted();
    let r = c.send_mail(
        "a@example.org",
        &["root@localhost"],
        "Subject: x\r\n\r\nx\r\n",
    );
    assert!(r.starts_with("250"));
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    inst.wait_log(
        "disconnect from unknown[127.0.0.1] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5",
        Duration::from_secs(5),
    );
    let id = inst.log_lines(": client=unknown[127.0.0.1]")[0]
        .split("]: ")
        .nth(1)
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .to_string();
    inst.wait_log(&format!("{id}: message-id=<"), Duration::from_secs(5));
    inst.wait_log(
        &format!("{id}: from=<a@example.org>, size="),
        Duration::from_secs(5),
    );
}

/// Postfix's 2026 state-reset bug: after an end-of-data reject, RCPT and
/// DATA without a new MAIL must get 503, and the next transaction starts
/// clean. Through DATA and through BDAT.
#[test]
fn after_an_end_of_data_reject_the_transaction_is_gone() {
    let inst = Instance::started("header_size_limit = 2048\nsmtpd_error_sleep_time = 0\n");
    let mut c = inst.greeted();
    let mut big = String::new();
    for i in 0..100 {
        big.push_str(&format!("X-Filler-{i}: {}\r\n", "h".repeat(40)));
    }
    big.push_str("\r\nbody\r\n");
    for via_bdat in [false, true] {
        assert!(c.cmd("MAIL FROM:<a@example.org>").starts_with("250"));
        assert!(c.cmd("RCPT TO:<root@localhost>").starts_with("250"));
        let r = if via_bdat {
            c.send(format!("BDAT {} LAST\r\n", big.len()).as_bytes());
            c.send(big.as_bytes());
            c.reply()
        } else {
            assert!(c.cmd("DATA").starts_with("354"));
            c.send(big.as_bytes());
            c.send(b".\r\n");
            c.reply()
        };
        assert!(r.starts_with("552 5.3.4"), "{r}");
        assert_eq!(
            c.cmd("RCPT TO:<root@localhost>"),
            "503 5.5.1 Error: need MAIL command\r\n"
        );
        assert_eq!(c.cmd("DATA"), "503 5.5.1 Error: need MAIL command\r\n");
        c.send(b"BDAT 1 LAST\r\nx");
        assert_eq!(c.reply(), "503 5.5.1 Error: need MAIL command\r\n");
    }
    let r = c.send_mail(
        "b@example.org",
        &["root@localhost"],
        "Subject: clean\r\n\r\nok\r\n",
    );
    assert!(r.starts_with("250 2.0.0 Ok: queued as "), "{r}");
    still_serving(&inst);
}

#[test]
fn maxproc_caps_a_services_sessions_and_the_rest_wait() {
    // maxproc 2 on port 2525; the submission port keeps the default.
    let ip = postern_tests::unique_loopback();
    let mut inst = Instance::with_master_cf(
        "",
        Some(&format!(
            "{ip}:2525 inet n - n - 2 smtpd\n{ip}:2587 inet n - n - - smtpd\n"
        )),
    );
    inst.ip = ip;
    inst.start();
    let mut first = inst.smtp();
    assert!(first.reply().starts_with("220"));
    let mut second = inst.smtp();
    assert!(second.reply().starts_with("220"));
    // The third waits in the listen queue: connected, but not greeted.
    let mut third = inst.smtp();
    third
        .w
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut b = [0u8; 1];
    let early = std::io::Read::read(&mut third.r, &mut b);
    assert!(
        matches!(&early, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the third client was served past maxproc: {early:?}"
    );
    // Another service has its own limit.
    let mut other = postern_tests::Smtp::connect(&inst.ip, 2587);
    assert!(other.reply().starts_with("220"));
    inst.wait_log("has reached its process limit", Duration::from_secs(5));
    assert!(
        !inst
            .log_lines(
                "has reached its process limit \"2\": new clients may experience noticeable delays"
            )
            .is_empty(),
        "{}",
        inst.log()
    );
    // One session ends: the waiting client is greeted.
    assert!(first.cmd("QUIT").starts_with("221"));
    third
        .w
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert!(third.reply().starts_with("220"));
    assert!(third.cmd("QUIT").starts_with("221"));
    assert!(second.cmd("QUIT").starts_with("221"));
}
