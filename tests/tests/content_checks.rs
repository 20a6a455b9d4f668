//! header_checks, mime_header_checks, nested_header_checks and body_checks
//! with real messages sent by Python's smtplib (MIME parts built by its
//! email package): an attachment-name check, a forwarded message's
//! headers, body lines, and the actions REJECT, DISCARD, HOLD, IGNORE,
//! PREPEND, REPLACE and WARN, each seen in the reply, the log, the queue
//! or at the next hop.
use std::time::Duration;

use postern_tests::{Instance, Sink, python, wait_for};

/// Sends one message built by Python's email package; returns smtplib's
/// outcome line ("ok" or "refused CODE TEXT").
fn send(inst: &Instance, build: &str) -> String {
    let script = format!(
        "import smtplib\n\
         from email.message import EmailMessage\n\
         m = EmailMessage()\n\
         m['From'] = 'sender@ok.example'\n\
         m['To'] = 'good@relay.example'\n\
         {build}\n\
         s = smtplib.SMTP({ip:?}, {port})\n\
         try:\n\
         \x20   s.send_message(m)\n\
         \x20   print('ok')\n\
         except smtplib.SMTPDataError as e:\n\
         \x20   print('refused', e.smtp_code, e.smtp_error.decode())\n\
         s.quit()\n",
        ip = inst.ip,
        port = inst.smtp_port
    );
    let out = python(&script);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn logged(inst: &Instance, needle: &str) {
    wait_for(needle, Duration::from_secs(10), || {
        inst.log().contains(needle).then_some(())
    });
}

#[test]
fn header_mime_nested_and_body_checks_on_real_messages() {
    let mut inst = Instance::new(
        "smtpd_error_sleep_time = 0\n\
         relay_domains = relay.example\n",
    );
    let dir = inst.config_dir().to_path_buf();
    let sink = Sink::start(&inst.ip, 2626, &dir.join("sink"));
    std::fs::write(
        dir.join("header_checks.pcre"),
        "/^Subject:.*viagra/ REJECT Spam subject\n\
         /^Content-(Disposition|Type):.*name\\s*=\\s*\"?[^\"]*\\.(exe|scr)\"?/ REJECT 5.7.0 Executable attachments are not accepted\n\
         /^Subject: hold me/ HOLD\n\
         /^Subject: .*invoice/ PREPEND X-Checked: invoice\n\
         /^X-Drop-Me:/ IGNORE\n\
         /^X-Watch:/ WARN watched header\n\
         /^From: .*@evil\\.example/ REJECT Forwarded from evil\n\
         /^Subject: filter me/ FILTER smtp:[127.0.0.1]:10025\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("body_checks.regexp"),
        "/^Click here to win/ DISCARD\n\
         /^secret-token-[0-9]+$/ REPLACE [redacted]\n",
    )
    .unwrap();
    inst.add_main_cf(&format!(
        "header_checks = pcre:{}/header_checks.pcre\n\
         body_checks = regexp:{}/body_checks.regexp\n\
         relayhost = [{}]:2626\n",
        dir.display(),
        dir.display(),
        inst.ip
    ));
    inst.start();

    // REJECT on a primary header, with the table's text.
    let r = send(&inst, "m['Subject'] = 'Cheap VIAGRA'\nm.set_content('x')");
    assert_eq!(r, "refused 550 5.7.1 Spam subject");
    logged(
        &inst,
        "reject: header Subject: Cheap VIAGRA from unknown[127.0.0.1]; from=<sender@ok.example> to=<good@relay.example> proto=ESMTP helo=<",
    );
    // An attachment name, in a MIME part header (mime_header_checks is
    // $header_checks by default).
    let r = send(
        &inst,
        "m['Subject'] = 'report'\n\
         m.set_content('see attached')\n\
         m.add_attachment(b'MZ\\x90\\x00', maintype='application', subtype='octet-stream', filename='evil.exe')",
    );
    assert_eq!(
        r,
        "refused 550 5.7.0 Executable attachments are not accepted"
    );
    logged(
        &inst,
        "reject: header Content-Disposition: attachment; filename=\"evil.exe\" from unknown[127.0.0.1]",
    );
    // The headers of a forwarded message (nested_header_checks).
    let r = send(
        &inst,
        "from email.message import EmailMessage as E\n\
         inner = E()\n\
         inner['From'] = 'boss@evil.example'\n\
         inner['Subject'] = 'inner'\n\
         inner.set_content('inner body')\n\
         m['Subject'] = 'fwd'\n\
         m.set_content('forwarding')\n\
         m.add_attachment(inner)",
    );
    assert_eq!(r, "refused 550 5.7.1 Forwarded from evil");
    // An action Postern lacks: a temporary error, never a pass.
    let r = send(&inst, "m['Subject'] = 'filter me'\nm.set_content('x')");
    assert_eq!(r, "refused 451 4.3.5 Server configuration error");
    logged(&inst, "action \"FILTER\" is not supported by Postern");
    // A harmless attachment passes.
    let r = send(
        &inst,
        "m['Subject'] = 'photo'\n\
         m.set_content('see attached')\n\
         m.add_attachment(b'\\x89PNG', maintype='image', subtype='png', filename='cat.png')",
    );
    assert_eq!(r, "ok");
    // DISCARD from the body: accepted, never delivered.
    let r = send(
        &inst,
        "m['Subject'] = 'prize'\nm.set_content('Hello\\nClick here to win\\n')",
    );
    assert_eq!(r, "ok");
    logged(
        &inst,
        "discard: body Click here to win from unknown[127.0.0.1]",
    );
    // HOLD: on hold in the queue.
    let r = send(&inst, "m['Subject'] = 'hold me'\nm.set_content('x')");
    assert_eq!(r, "ok");
    logged(
        &inst,
        "hold: header Subject: hold me from unknown[127.0.0.1]",
    );
    let held = wait_for("the held message", Duration::from_secs(10), || {
        inst.queue_json()
            .into_iter()
            .find(|e| e["queue_name"] == "hold")
    });
    assert_eq!(held["queue_name"], "hold");
    // PREPEND, IGNORE, WARN and REPLACE, seen at the next hop.
    let r = send(
        &inst,
        "m['Subject'] = 'your invoice'\n\
         m['X-Drop-Me'] = 'gone'\n\
         m['X-Watch'] = 'yes'\n\
         m.set_content('line one\\nsecret-token-42\\nline three\\n')",
    );
    assert_eq!(r, "ok");
    logged(
        &inst,
        "warning: header X-Watch: yes from unknown[127.0.0.1]",
    );
    let msgs = wait_for("deliveries", Duration::from_secs(30), || {
        let m = sink.messages();
        let n = m
            .iter()
            .filter(|(_, c)| {
                let c = String::from_utf8_lossy(c);
                c.contains("Subject: your invoice") || c.contains("Subject: photo")
            })
            .count();
        (n == 2).then_some(m)
    });
    let text: Vec<String> = msgs
        .iter()
        .map(|(_, c)| String::from_utf8_lossy(c).into_owned())
        .collect();
    let invoice = text
        .iter()
        .find(|c| c.contains("Subject: your invoice"))
        .unwrap();
    assert!(
        invoice.contains("X-Checked: invoice\r\nSubject: your invoice"),
        "{invoice}"
    );
    assert!(!invoice.contains("X-Drop-Me"), "{invoice}");
    assert!(invoice.contains("X-Watch: yes"), "{invoice}");
    assert!(
        invoice.contains("line one\r\n[redacted]\r\nline three"),
        "{invoice}"
    );
    assert!(!invoice.contains("secret-token"), "{invoice}");
    // Only those two went out: nothing rejected, discarded or held did.
    assert!(
        !text.iter().any(|c| c.contains("Click here to win")
            || c.contains("hold me")
            || c.contains("VIAGRA"))
    );
}
