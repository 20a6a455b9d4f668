//! smtpd_upstream_proxy_protocol = haproxy behind a real HAProxy (Debian's,
//! started by the test): PROXY version 1 and version 2 headers give smtpd
//! the real client address, as its log and the Received header show; a
//! malformed header drops only that connection, with Postfix's warning.
use std::time::Duration;

use postern_tests::{Instance, Smtp, unique_loopback, wait_for};

fn logged(inst: &Instance, needle: &str) {
    wait_for(needle, Duration::from_secs(10), || {
        inst.log().contains(needle).then_some(())
    });
}

#[test]
fn proxy_headers_from_haproxy_give_the_real_client() {
    let ip = unique_loopback();
    let master = format!(
        "{ip}:2525 inet n - n - - smtpd\n  -o smtpd_upstream_proxy_protocol=haproxy\n  -o smtpd_upstream_proxy_timeout=2s\n"
    );
    let mut inst = Instance::with_master_cf("", Some(&master));
    inst.ip = ip.clone();
    inst.start();
    let lb_ip = unique_loopback();
    let dir = tempfile::tempdir().unwrap();
    let _lb = postern_tests::haproxy::start(&lb_ip, &format!("{ip}:2525"), dir.path());
    for (port, client) in [(2526, "127.0.5.5"), (2527, "127.0.5.6")] {
        let mut c = Smtp::connect_from(client, &lb_ip, port);
        let greeting = c.reply();
        assert!(
            greeting.starts_with("220 mx.test.example ESMTP"),
            "{greeting}"
        );
        assert!(c.cmd("EHLO client.example").starts_with("250"));
        let r = c.send_mail(
            "someone@example.org",
            &["root@localhost"],
            &format!("Subject: via {port}\r\n\r\nhello\r\n"),
        );
        assert!(r.starts_with("250"), "{r}");
        c.cmd("QUIT");
        logged(&inst, &format!("connect from unknown[{client}]"));
    }
    let mail = wait_for("both messages delivered", Duration::from_secs(30), || {
        let m = inst.maildir("root");
        (m.len() >= 2).then_some(m)
    });
    for (port, client) in [(2526, "127.0.5.5"), (2527, "127.0.5.6")] {
        let msg = mail
            .iter()
            .find(|m| m.contains(&format!("Subject: via {port}")))
            .unwrap();
        assert!(
            msg.contains(&format!("from client.example (unknown [{client}])")),
            "{msg}"
        );
    }
    // Straight to smtpd with a broken header: dropped without a word.
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
        "warning: haproxy read: bad or missing client address: PROXY TCP4 not-an-address 127.0.0.1 1 25\\r\\n",
    );
    // No header at all: the same.
    let mut raw = std::net::TcpStream::connect((ip.as_str(), 2525)).unwrap();
    raw.write_all(b"EHLO sneaky.example\r\n").unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(raw.read(&mut buf).unwrap_or(0), 0);
    logged(
        &inst,
        "warning: haproxy read: unrecognized protocol header: EHLO sneaky.example\\r\\n",
    );
    // Silence: dropped after smtpd_upstream_proxy_timeout.
    let mut raw = std::net::TcpStream::connect((ip.as_str(), 2525)).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t = std::time::Instant::now();
    assert_eq!(raw.read(&mut buf).unwrap_or(0), 0);
    assert!(t.elapsed() >= Duration::from_secs(2), "{:?}", t.elapsed());
    logged(&inst, "warning: haproxy read: timeout error");
    // Only those connections were dropped: the balancer still gets through.
    let mut c = Smtp::connect_from("127.0.5.7", &lb_ip, 2527);
    assert!(c.reply().starts_with("220 "));
    c.cmd("QUIT");
    logged(&inst, "connect from unknown[127.0.5.7]");
    assert!(
        !inst
            .log()
            .contains(&format!("connect from unknown[{lb_ip}]"))
    );
}
