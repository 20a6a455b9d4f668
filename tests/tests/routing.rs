//! Routing through real instances: delivery to an inner mailbox server
//! over LMTP (Debian's Dovecot LMTP server with a Maildir store, on a Unix
//! socket and on a loopback TCP port; a virtual mailbox domain goes to it,
//! Dovecot answers per recipient after the content, and each recipient
//! ends as it said); sender-dependent relays and transports, and
//! relocated users, with real next hops (aiosmtpd).
use std::time::Duration;

use postern_tests::dovecot::{self, Dovecot};
use postern_tests::{Instance, Sink, smtplib, unique_loopback, wait_for};

fn logged(inst: &Instance, needle: &str) -> String {
    wait_for(needle, Duration::from_secs(60), || {
        inst.log()
            .lines()
            .find(|l| l.contains(needle))
            .map(String::from)
    })
}

const MESSAGE: &str = "From: Sender <sender@client.example>\r\n\
To: alice@vmail.test\r\n\
Subject: over LMTP\r\n\
Message-ID: <lmtp-test-1@client.example>\r\n\
Date: Sun, 06 Dec 2026 12:00:00 +0000\r\n\
\r\n\
Body line one.\r\n\
..a line that starts with a dot\r\n\
Last line.\r\n";

#[test]
fn a_virtual_mailbox_domain_is_delivered_to_dovecot_over_lmtp() {
    if !dovecot::available() {
        panic!("this test needs Debian's dovecot-lmtpd and root (scripts/test.sh installs it)");
    }
    let mut inst = Instance::new("smtpd_error_sleep_time = 0\n");
    let pki = postern_tests::pki::make(inst.dir.path(), "lmtp", "mailstore.test");
    let dc = Dovecot::start(
        &inst.ip,
        2424,
        &["alice@vmail.test", "bob@vmail.test"],
        "full@vmail.test",
        Some((&pki.server_cert, &pki.server_key)),
    );
    let users = inst.config_dir().join("vmailbox");
    std::fs::write(
        &users,
        "alice@vmail.test x\nbob@vmail.test x\nfull@vmail.test x\nghost@vmail.test x\n",
    )
    .unwrap();
    inst.add_main_cf(&format!(
        "virtual_mailbox_domains = vmail.test\n\
         virtual_mailbox_maps = texthash:{users}\n\
         virtual_transport = lmtp:unix:{sock}\n\
         transport_maps = inline:{{ bob@vmail.test=lmtp:inet:{ip}:2424 }}\n\
         smtp_connection_cache_time_limit = 30s\n\
         lmtp_tls_security_level = encrypt\n\
         smtpd_recipient_restrictions = reject_unauth_destination\n\
         mynetworks = 192.0.2.0/24\n",
        users = users.display(),
        sock = dc.socket().display(),
        ip = inst.ip,
    ));
    inst.start();

    // smtpd accepts the virtual mailbox domain (it is no open relay) and
    // refuses an address virtual_mailbox_maps does not list.
    let r = smtplib(
        &inst.ip,
        inst.smtp_port,
        "",
        &[
            "alice@vmail.test",
            "ghost@vmail.test",
            "full@vmail.test",
            "nobody@vmail.test",
        ],
        Some(MESSAGE),
    );
    assert!(r[0].starts_with("250"), "{r:?}");
    assert!(r[1].starts_with("250"), "{r:?}");
    assert!(r[2].starts_with("250"), "{r:?}");
    assert_eq!(
        r[3],
        "550 5.1.1 <nobody@vmail.test>: Recipient address rejected: User unknown in virtual mailbox table"
    );
    assert!(r[4].starts_with("250"), "{r:?}");

    // Dovecot answers each recipient after the content: delivered,
    // unknown (bounced), over quota (deferred).
    let sock = dc.socket().display().to_string();
    let relay = format!("relay=mx.test.example[{sock}]");
    let line = logged(&inst, "to=<alice@vmail.test>");
    assert!(line.contains(&relay), "{line}");
    assert!(
        line.contains("dsn=2.0.0, status=sent (250 2.0.0 <alice@vmail.test>"),
        "{line}"
    );
    let line = logged(&inst, "to=<ghost@vmail.test>");
    assert!(
        line.contains(&format!(
            "dsn=5.1.1, status=bounced (host mx.test.example[{sock}] said: 550 5.1.1 <ghost@vmail.test> User doesn't exist: ghost@vmail.test (in reply to RCPT TO command))"
        )),
        "{line}"
    );
    let line = logged(&inst, "to=<full@vmail.test>");
    assert!(line.contains(&relay) && line.contains(", delay="), "{line}");
    assert!(
        line.contains(&format!(
            "dsn=4.2.2, status=deferred (host mx.test.example[{sock}] said: 452 4.2.2 <full@vmail.test> Quota exceeded (mailbox for user is full) (in reply to end of DATA command))"
        )),
        "{line}"
    );

    // The Maildir holds the message byte for byte, after the headers
    // Dovecot and Postern added (Dovecot stores LF line ends).
    let stored = wait_for("alice's message", Duration::from_secs(30), || {
        dc.maildir("alice", "vmail.test").pop()
    });
    let stored = String::from_utf8(stored).unwrap();
    let sent = MESSAGE.replace("\r\n", "\n");
    assert!(stored.ends_with(&sent), "{stored}");
    let added = &stored[..stored.len() - sent.len()];
    for l in added.lines() {
        assert!(
            l.starts_with(' ')
                || l.starts_with('\t')
                || ["Return-Path:", "Delivered-To:", "Received:"]
                    .iter()
                    .any(|h| l.starts_with(h)),
            "an added line that is no trace header: {l:?}"
        );
    }
    assert!(added.contains("Received: from client.example"), "{added}");
    assert!(dc.fetch("alice@vmail.test").contains("Body line one."));

    // Over TCP (transport_maps names inet:), with STARTTLS
    // (lmtp_tls_security_level = encrypt; never over the Unix socket), and
    // a second message to the socket reuses the cached LMTP session.
    let body = MESSAGE.replace("lmtp-test-1", "lmtp-test-2");
    let r = smtplib(
        &inst.ip,
        inst.smtp_port,
        "",
        &["bob@vmail.test", "alice@vmail.test"],
        Some(&body),
    );
    assert!(r[2].starts_with("250"), "{r:?}");
    let ip = &inst.ip;
    let line = logged(&inst, "to=<bob@vmail.test>");
    assert!(
        line.contains(&format!("relay={ip}[{ip}]:2424")) && line.contains("status=sent"),
        "{line}"
    );
    logged(
        &inst,
        &format!("TLS connection established to {ip}[{ip}]:2424: TLSv1.3"),
    );
    assert!(
        !inst.log().contains(&format!(
            "TLS connection established to mx.test.example[{sock}]"
        )),
        "STARTTLS over a Unix socket"
    );
    wait_for("alice's second message", Duration::from_secs(30), || {
        (dc.maildir("alice", "vmail.test").len() == 2).then_some(())
    });
    assert_eq!(dc.maildir("bob", "vmail.test").len(), 1);
    let connects = dc.log().matches("Connect from local").count();
    assert_eq!(
        connects,
        1,
        "the Unix-socket session was not reused:\n{}",
        dc.log()
    );
}

#[test]
fn lmtp_tls_policy_maps_choose_the_tls_of_each_lmtp_next_hop() {
    if !dovecot::available() {
        panic!("this test needs Debian's dovecot-lmtpd and root (scripts/test.sh installs it)");
    }
    // One Dovecot LMTP server with STARTTLS (a certificate for
    // mailstore.test from the test CA), reached by two next hops that
    // name it differently, each with its own policy table entry (the
    // key is the next hop without inet:, as in Postfix). No global
    // lmtp_tls_security_level: without the table, no STARTTLS at all.
    let mut inst = Instance::new("smtpd_error_sleep_time = 0\n");
    let ip = unique_loopback();
    let pki = postern_tests::pki::make(inst.dir.path(), "lmtp", "mailstore.test");
    let dc = Dovecot::start(
        &ip,
        2424,
        &["bob@vmail.test", "carol@vmail.test", "dave@vmail.test"],
        "full@vmail.test",
        Some((&pki.server_cert, &pki.server_key)),
    );
    let users = inst.config_dir().join("vmailbox");
    std::fs::write(
        &users,
        "bob@vmail.test x\ncarol@vmail.test x\ndave@vmail.test x\n",
    )
    .unwrap();
    let table = inst.config_dir().join("lmtp_tls_policy");
    std::fs::write(
        &table,
        format!("[{ip}]:2424 verify match=mailstore.test\n{ip}:2424 secure match=other.example\n"),
    )
    .unwrap();
    inst.add_main_cf(&format!(
        "virtual_mailbox_domains = vmail.test\n\
         virtual_mailbox_maps = texthash:{users}\n\
         virtual_transport = lmtp:inet:{ip}\n\
         lmtp_tcp_port = 2424\n\
         transport_maps = inline:{{ bob@vmail.test=lmtp:inet:[{ip}]:2424, carol@vmail.test=lmtp:inet:{ip}:2424 }}\n\
         lmtp_tls_policy_maps = texthash:{table}\n\
         smtp_tls_CAfile = {ca}\n\
         smtpd_recipient_restrictions = reject_unauth_destination\n\
         mynetworks = 192.0.2.0/24\n",
        users = users.display(),
        table = table.display(),
        ca = pki.ca.display(),
    ));
    inst.start();
    let r = smtplib(
        &inst.ip,
        inst.smtp_port,
        "",
        &["bob@vmail.test", "carol@vmail.test"],
        Some(MESSAGE),
    );
    assert!(r[2].starts_with("250"), "{r:?}");
    // [ip]:2424: verify, and the certificate names mailstore.test.
    let line = logged(&inst, "to=<bob@vmail.test>");
    assert!(line.contains("status=sent"), "{line}");
    logged(
        &inst,
        &format!("Verified TLS connection established to {ip}[{ip}]:2424: TLSv1.3"),
    );
    // ip:2424: secure for a name the certificate lacks: deferred, never
    // sent unverified or in clear.
    let line = logged(&inst, "to=<carol@vmail.test>");
    assert!(
        line.contains("status=deferred") && line.contains("Server certificate not verified"),
        "{line}"
    );
    assert_eq!(dc.maildir("bob", "vmail.test").len(), 1);
    assert!(dc.maildir("carol", "vmail.test").is_empty());
    // queue explain names the entry that chose each policy.
    for (rcpt, level, why) in [
        (
            "bob@vmail.test",
            "verify match=mailstore.test",
            format!("lmtp_tls_policy_maps, key [{ip}]:2424"),
        ),
        (
            "dave@vmail.test",
            "none",
            "lmtp_tls_security_level (no lmtp_tls_policy_maps entry)".to_string(),
        ),
    ] {
        let out = inst.postern(&["queue", "explain", rcpt, "--json"]);
        let x: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            (x["tls_level"].as_str(), x["tls_reason"].as_str()),
            (Some(level), Some(why.as_str())),
            "{x}"
        );
    }
    // A next hop without an entry (lmtp:inet:ip, lmtp_tcp_port): no
    // STARTTLS (no global level).
    let r = smtplib(
        &inst.ip,
        inst.smtp_port,
        "",
        &["dave@vmail.test"],
        Some(MESSAGE),
    );
    assert!(r[1].starts_with("250"), "{r:?}");
    let line = logged(&inst, "to=<dave@vmail.test>");
    assert!(line.contains("status=sent"), "{line}");
    assert_eq!(
        inst.log().matches("TLS connection established").count(),
        1,
        "{}",
        inst.log()
    );
}

#[test]
fn sender_dependent_relays_and_transports_and_relocated_users() {
    let mut inst = Instance::new("smtpd_error_sleep_time = 0\n");
    let dir = inst.config_dir().to_path_buf();
    let a = Sink::start(&inst.ip, 2626, &dir.join("sink-a"));
    let bip = unique_loopback();
    let b = Sink::start(&bip, 2626, &dir.join("sink-b"));
    let relays = dir.join("sender_relay");
    std::fs::write(
        &relays,
        format!(
            "@one.test      [{}]:2626\n@two.test      [{bip}]:2626\nboss@one.test  DUNNO\n<>  [{bip}]:2626\n",
            inst.ip
        ),
    )
    .unwrap();
    let transports = dir.join("sender_transport");
    std::fs::write(
        &transports,
        "@blocked.test  error:5.7.1 this sender may not send out\n",
    )
    .unwrap();
    let relocated = dir.join("relocated");
    std::fs::write(&relocated, "old@far.test   new@far.test\n").unwrap();
    inst.add_main_cf(&format!(
        "sender_dependent_relayhost_maps = texthash:{}\n\
         sender_dependent_default_transport_maps = texthash:{}\n\
         relocated_maps = texthash:{}\n\
         recipient_delimiter = +\n\
         relayhost = [{ip}]:2626\n",
        relays.display(),
        transports.display(),
        relocated.display(),
        ip = inst.ip
    ));
    inst.start();
    let send = |from: &str, to: &str| {
        let r = smtplib(
            &inst.ip,
            inst.smtp_port,
            from,
            &[to],
            Some("Subject: routing\r\n\r\nhello\r\n"),
        );
        assert!(r[1].starts_with("250"), "{from} -> {to}: {r:?}");
    };
    send("x@one.test", "r1@far.test");
    send("y@two.test", "r2@far.test");
    // DUNNO: the global relayhost.
    send("boss@one.test", "r3@far.test");
    send("", "r4@far.test");
    send("z@blocked.test", "r5@far.test");
    // Found without its extension (qmgr knows recipient_delimiter).
    send("x@one.test", "old+news@far.test");
    let at = |s: &Sink| -> Vec<String> {
        let mut v: Vec<String> = s
            .messages()
            .iter()
            .flat_map(|(e, _)| {
                e["to"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|v| v.as_str().map(String::from))
            })
            .collect();
        v.sort();
        v
    };
    // The two bounces below come from the null sender: its key sends them
    // to b as well.
    wait_for("the relays' mail", Duration::from_secs(60), || {
        (at(&a).len() == 2 && at(&b).len() == 4).then_some(())
    });
    assert_eq!(at(&a), ["r1@far.test", "r3@far.test"]);
    assert_eq!(
        at(&b),
        ["r2@far.test", "r4@far.test", "x@one.test", "z@blocked.test"]
    );
    let line = logged(&inst, "to=<r5@far.test>");
    assert!(
        line.contains("dsn=5.7.1, status=bounced (this sender may not send out)"),
        "{line}"
    );
    let line = logged(&inst, "to=<old+news@far.test>");
    assert!(
        line.contains("dsn=5.1.6, status=bounced (User has moved to new@far.test)"),
        "{line}"
    );
}
