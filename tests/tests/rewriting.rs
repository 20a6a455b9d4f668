//! Address rewriting (canonical, masquerade, automatic BCC, virtual
//! aliases) through real instances: mail comes in over SMTP (smtplib) and
//! sendmail, leaves through the smtp client, and the envelope is read at
//! a real next hop (aiosmtpd). A real Postfix, fed the same mail with the
//! same tables, gives the same envelopes.
use std::path::{Path, PathBuf};
use std::time::Duration;

use postern_tests::{Instance, Sink, postfix, smtplib, unique_loopback, wait_for};
use serde_json::Value;

fn logged(inst: &Instance, needle: &str) {
    wait_for(needle, Duration::from_secs(30), || {
        inst.log().contains(needle).then_some(())
    });
}

/// The envelopes the sink has received: (sender, sorted recipients).
fn envelopes(sink: &Sink) -> Vec<(String, Vec<String>)> {
    sink.messages()
        .into_iter()
        .map(|(env, _)| envelope(&env))
        .collect()
}

fn envelope(env: &Value) -> (String, Vec<String>) {
    let mut to: Vec<String> = env["to"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    to.sort();
    (env["from"].as_str().unwrap_or("").to_string(), to)
}

/// Waits until the sink holds `n` messages, and returns them.
fn wait_messages(sink: &Sink, n: usize) -> Vec<(Value, Vec<u8>)> {
    wait_for(
        &format!("{n} messages at the sink"),
        Duration::from_secs(60),
        || {
            let m = sink.messages();
            (m.len() >= n).then_some(m)
        },
    )
}

/// The value of header `name` in a message (unfolded, trimmed).
fn header(msg: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(msg);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    unfolded.split("\r\n").find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

const ADDRESS_HEADERS: &str = "From: Alice <alice@inside.test>\r\n\
To: old@corp.test, \"Bob B.\" <bob@legacy.test> (team)\r\n\
Cc: root, ops@host.corp.test\r\n\
Subject: headers\r\n\r\nhello\r\n";

fn table(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const VIRTUAL: &str = "\
list@virt.test     a@relay.test, b@virt.test
b@virt.test        b-real@relay.test
info@virt.test     info@relay.test
keep@relay.test    keep@relay.test, copy@relay.test
deep1@virt.test    deep2@virt.test
deep2@virt.test    deep3@virt.test
deep3@virt.test    deep4@virt.test
deep4@virt.test    final@relay.test
wide@virt.test     w1@relay.test w2@relay.test w3@relay.test w4@relay.test
@catch.test        catchall@relay.test
";

#[test]
fn virtual_aliases_expand_validate_recipients_and_defer_whole_at_their_limits() {
    let mut inst = Instance::new("smtpd_error_sleep_time = 0\n");
    let v = table(inst.config_dir(), "virtual", VIRTUAL);
    let sink = Sink::start(&inst.ip, 2626, &inst.config_dir().join("sink"));
    inst.add_main_cf(&format!(
        "relayhost = [{ip}]:2626\n\
         recipient_delimiter = +\n\
         virtual_alias_domains = virt.test, catch.test\n\
         virtual_alias_maps = texthash:{v}\n\
         smtpd_recipient_restrictions = reject_unauth_destination\n\
         mynetworks = 192.0.2.0/24\n",
        ip = inst.ip,
        v = v.display()
    ));
    inst.start();

    // The virtual alias domains are accepted destinations (not an open
    // relay: relay.test is refused, by smtpd_relay_restrictions'
    // defer_unauth_destination as in Postfix), and an address they do not
    // list is unknown.
    let r = smtplib(
        &inst.ip,
        inst.smtp_port,
        "sender@client.example",
        &[
            "list@virt.test",
            "info+tag@virt.test",
            "anyone@catch.test",
            "nobody@virt.test",
            "keep@relay.test",
        ],
        Some("Subject: virtual\r\n\r\nhello\r\n"),
    );
    assert!(r[0].starts_with("250"), "{r:?}");
    assert!(r[1].starts_with("250"), "{r:?}");
    assert!(r[2].starts_with("250"), "{r:?}");
    assert_eq!(
        r[3],
        "550 5.1.1 <nobody@virt.test>: Recipient address rejected: User unknown in virtual alias table"
    );
    assert_eq!(r[4], "454 4.7.1 <keep@relay.test>: Relay access denied");
    assert!(r[5].starts_with("250"), "{r:?}");
    logged(
        &inst,
        // (With a transaction open, the line starts with its queue id.)
        ": reject: RCPT from unknown[127.0.0.1]: 550 5.1.1 <nobody@virt.test>: Recipient address rejected: User unknown in virtual alias table; from=<sender@client.example> to=<nobody@virt.test> proto=ESMTP helo=<client.example>",
    );
    // The same through sendmail.
    inst.sendmail(
        &["-f", "cron@mx.test.example", "list@virt.test"],
        b"Subject: from cron\n\nnightly\n",
    );
    let m = wait_messages(&sink, 2);
    let mut by_sender: Vec<_> = m.iter().map(|(e, _)| envelope(e)).collect();
    by_sender.sort();
    assert_eq!(
        by_sender[0],
        (
            "cron@mx.test.example".to_string(),
            vec!["a@relay.test".to_string(), "b-real@relay.test".into()]
        )
    );
    let m: Vec<_> = m
        .into_iter()
        .filter(|(e, _)| e["from"] == "sender@client.example")
        .collect();
    // Recursive expansion, the extension carried over, the catch-all.
    assert_eq!(
        envelope(&m[0].0),
        (
            "sender@client.example".to_string(),
            vec![
                "a@relay.test".to_string(),
                "b-real@relay.test".into(),
                "catchall@relay.test".into(),
                "info+tag@relay.test".into(),
            ]
        )
    );

    // Too deep, and too wide: the whole message is refused with a
    // temporary error, never delivered to a truncated list.
    // Every delivery recorded before the stop (a message the sink took
    // but the queue had not yet marked would be sent again after it).
    inst.wait_queue_empty(Duration::from_secs(30));
    inst.stop();
    inst.add_main_cf(
        "virtual_alias_recursion_limit = 3\n\
         virtual_alias_expansion_limit = 3\n\
         relay_domains = relay.test\n",
    );
    inst.start();
    for (rcpt, why) in [
        ("deep1@virt.test", "map nesting for deep1@virt.test"),
        ("wide@virt.test", "map expansion size for wide@virt.test"),
    ] {
        let r = smtplib(
            &inst.ip,
            inst.smtp_port,
            "sender@client.example",
            &[rcpt],
            Some("Subject: limits\r\n\r\nhello\r\n"),
        );
        assert!(r[0].starts_with("250"), "{r:?}");
        assert_eq!(r[1], "451 4.6.0 Alias expansion error", "{rcpt}");
        logged(
            &inst,
            &format!(
                "unreasonable virtual_alias_maps {why} -- message not accepted, try again later"
            ),
        );
    }
    // An address that expands to itself is kept once, with the others.
    let r = smtplib(
        &inst.ip,
        inst.smtp_port,
        "sender@client.example",
        &["keep@relay.test"],
        Some("Subject: self\r\n\r\nhello\r\n"),
    );
    assert!(r[1].starts_with("250"), "{r:?}");
    let m = wait_messages(&sink, 3);
    assert_eq!(m.len(), 3, "a message over a limit was delivered");
    assert_eq!(
        envelope(&m[2].0).1,
        vec!["copy@relay.test".to_string(), "keep@relay.test".into()]
    );
}

const CANONICAL: &str = "\
@legacy.test        @corp.test
";
const SENDER_CANONICAL: &str = "\
alice@inside.test   alice.smith@host.corp.test
";
const RECIPIENT_CANONICAL: &str = "\
old@corp.test       new@corp.test
";
const SENDER_BCC: &str = "\
alice.smith@corp.test   archive-sent@relay.test
";
const RECIPIENT_BCC: &str = "\
new@corp.test       archive-new@relay.test
";

/// main.cf lines for the canonical, masquerade and BCC tables in `dir`.
fn rewriting_main_cf(dir: &Path) -> String {
    let t = |name: &str, text: &str| table(dir, name, text).display().to_string();
    format!(
        "canonical_maps = texthash:{}\n\
         sender_canonical_maps = texthash:{}\n\
         recipient_canonical_maps = texthash:{}\n\
         sender_bcc_maps = texthash:{}\n\
         recipient_bcc_maps = texthash:{}\n\
         always_bcc = journal@relay.test\n\
         masquerade_domains = corp.test\n\
         masquerade_exceptions = root\n",
        t("canonical", CANONICAL),
        t("sender_canonical", SENDER_CANONICAL),
        t("recipient_canonical", RECIPIENT_CANONICAL),
        t("sender_bcc", SENDER_BCC),
        t("recipient_bcc", RECIPIENT_BCC),
    )
}

#[test]
fn canonical_masquerade_and_bcc_rewrite_the_envelope_from_smtp_and_sendmail() {
    let mut inst = Instance::new("smtpd_error_sleep_time = 0\n");
    let sink = Sink::start(&inst.ip, 2626, &inst.config_dir().join("sink"));
    inst.add_main_cf(&format!(
        "relayhost = [{}]:2626\n{}",
        inst.ip,
        rewriting_main_cf(inst.config_dir())
    ));
    inst.start();

    // sender_canonical_maps, then masquerading (host.corp.test ->
    // corp.test), then sender_bcc_maps on the result; canonical_maps'
    // @domain form and recipient_canonical_maps on recipients, with
    // recipient_bcc_maps; always_bcc.
    let r = smtplib(
        &inst.ip,
        inst.smtp_port,
        "alice@inside.test",
        &["old@corp.test", "bob@legacy.test"],
        Some(ADDRESS_HEADERS),
    );
    assert!(r[2].starts_with("250"), "{r:?}");
    let m = wait_messages(&sink, 1);
    // A client on this machine (permit_inet_interfaces): its headers are
    // rewritten too, unqualified names get @$myorigin, and the rest of
    // each header stays as it was.
    assert_eq!(
        header(&m[0].1, "From").as_deref(),
        Some("Alice <alice.smith@corp.test>")
    );
    assert_eq!(
        header(&m[0].1, "To").as_deref(),
        Some("new@corp.test, \"Bob B.\" <bob@corp.test> (team)")
    );
    assert_eq!(
        header(&m[0].1, "Cc").as_deref(),
        Some("root@mx.test.example, ops@corp.test")
    );
    assert_eq!(
        envelope(&m[0].0),
        (
            "alice.smith@corp.test".to_string(),
            vec![
                "archive-new@relay.test".to_string(),
                "archive-sent@relay.test".into(),
                "bob@corp.test".into(),
                "journal@relay.test".into(),
                "new@corp.test".into(),
            ]
        )
    );

    // sendmail: the same rewriting; root is a masquerade exception.
    inst.sendmail(
        &["-f", "root@host.corp.test", "old@corp.test"],
        b"Subject: local\n\nfrom cron\n",
    );
    inst.sendmail(
        &["-f", "ops@host.corp.test", "bob@legacy.test"],
        b"Subject: local\n\nfrom cron\n",
    );
    inst.sendmail(
        &["-f", "alice@inside.test", "someone@far.test"],
        b"From: alice@inside.test\nSubject: local\n\nfrom alice\n",
    );
    let m = wait_messages(&sink, 4);
    let mut got: Vec<_> = m[1..].iter().map(|(e, _)| envelope(e)).collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (
                "alice.smith@corp.test".to_string(),
                vec![
                    "archive-sent@relay.test".to_string(),
                    "journal@relay.test".into(),
                    "someone@far.test".into()
                ]
            ),
            (
                "ops@corp.test".to_string(),
                vec!["bob@corp.test".to_string(), "journal@relay.test".into()]
            ),
            (
                "root@host.corp.test".to_string(),
                vec![
                    "archive-new@relay.test".to_string(),
                    "journal@relay.test".into(),
                    "new@corp.test".into()
                ]
            ),
        ]
    );
    let alice = m
        .iter()
        .map(|(_, c)| c)
        .find(|c| String::from_utf8_lossy(c).contains("from alice"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        header(&alice, "From").as_deref(),
        Some("alice.smith@corp.test")
    );
    // A remote client (local_header_rewrite_clients does not name it):
    // the envelope is rewritten, the headers are not; with
    // remote_header_rewrite_domain they are, with that domain.
    for (n, (setting, from, cc)) in [
        (
            "local_header_rewrite_clients = permit_sasl_authenticated",
            "Alice <alice@inside.test>",
            "root, ops@host.corp.test",
        ),
        (
            "remote_header_rewrite_domain = remote.invalid",
            "Alice <alice.smith@corp.test>",
            "root@remote.invalid, ops@corp.test",
        ),
        // The classes: sender_canonical_maps for the envelope only.
        (
            "local_header_rewrite_clients = permit_inet_interfaces\nsender_canonical_classes = envelope_sender",
            "Alice <alice@inside.test>",
            "root@mx.test.example, ops@corp.test",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        // Every delivery recorded before the stop (see above).
        inst.wait_queue_empty(Duration::from_secs(30));
        inst.stop();
        inst.add_main_cf(&format!("{setting}\n"));
        inst.start();
        let r = smtplib(
            &inst.ip,
            inst.smtp_port,
            "alice@inside.test",
            &["old@corp.test"],
            Some(ADDRESS_HEADERS),
        );
        assert!(r[1].starts_with("250"), "{r:?}");
        let m = wait_messages(&sink, 5 + n);
        assert_eq!(
            header(&m[4 + n].1, "From").as_deref(),
            Some(from),
            "{setting}"
        );
        assert_eq!(header(&m[4 + n].1, "Cc").as_deref(), Some(cc), "{setting}");
        assert_eq!(envelope(&m[4 + n].0).0, "alice.smith@corp.test");
    }

    // A table that cannot be read refuses the mail for now, never sends
    // it unrewritten.
    std::fs::remove_file(inst.config_dir().join("recipient_canonical")).unwrap();
    let r = smtplib(
        &inst.ip,
        inst.smtp_port,
        "someone@client.example",
        &["old@corp.test"],
        Some("Subject: broken table\r\n\r\nhello\r\n"),
    );
    assert_eq!(r[1], "451 4.3.0 Error: queue file write error", "{r:?}");
    logged(
        &inst,
        "recipient_canonical_maps map lookup problem for old@corp.test -- message not accepted, try again later",
    );
    assert_eq!(envelopes(&sink).len(), 7);
}

/// The same tables and mail through Postern and a real Postfix, both
/// relaying to one sink each: the envelopes match.
#[test]
fn postern_and_postfix_give_the_same_envelopes() {
    if !postfix::available() {
        panic!("this test needs Debian's postfix package and root (scripts/test.sh installs it)");
    }
    let mut inst = Instance::new("smtpd_error_sleep_time = 0\n");
    let dir = inst.config_dir().to_path_buf();
    let v = table(&dir, "virtual", VIRTUAL);
    let common = format!(
        "recipient_delimiter = +\n\
         virtual_alias_domains = virt.test, catch.test\n\
         virtual_alias_maps = texthash:{}\n\
         {}",
        v.display(),
        rewriting_main_cf(&dir)
    );
    let sink_a = Sink::start(&inst.ip, 2626, &dir.join("sink-postern"));
    inst.add_main_cf(&format!("relayhost = [{}]:2626\n{common}", inst.ip));
    inst.start();
    let pip = unique_loopback();
    let sink_b = Sink::start(&pip, 2626, &dir.join("sink-postfix"));
    let pf = postfix::Postfix::start(&pip, 2525, &format!("relayhost = [{pip}]:2626\n{common}"));

    // postmap -q agrees with the tables as Postern reads them.
    assert_eq!(
        pf.postmap_q("list@virt.test", &format!("texthash:{}", v.display()))
            .as_deref(),
        Some("a@relay.test, b@virt.test")
    );

    let cases: &[(&str, &[&str])] = &[
        ("alice@inside.test", &["old@corp.test", "bob@legacy.test"]),
        (
            "someone@client.example",
            &["list@virt.test", "info+tag@virt.test"],
        ),
        (
            "x@host.corp.test",
            &["anyone@catch.test", "keep@relay.test"],
        ),
        ("root@host.corp.test", &["b@virt.test", "old+ext@corp.test"]),
    ];
    for (n, (sender, rcpts)) in cases.iter().enumerate() {
        let body = ADDRESS_HEADERS.replace("Subject: headers", &format!("Subject: case {n}"));
        // The replies, without the queue ids.
        let plain = |v: Vec<String>| -> Vec<String> {
            v.into_iter()
                .map(|r| r.split(" queued as ").next().unwrap_or("").to_string())
                .collect()
        };
        let a = plain(smtplib(
            &inst.ip,
            inst.smtp_port,
            sender,
            rcpts,
            Some(&body),
        ));
        let b = plain(smtplib(&pip, 2525, sender, rcpts, Some(&body)));
        assert_eq!(a, b, "replies differ for {sender} -> {rcpts:?}");
        let ea = wait_messages(&sink_a, n + 1);
        pf.flush();
        let eb = wait_for("Postfix's message", Duration::from_secs(60), || {
            let m = sink_b.messages();
            (m.len() > n).then_some(m)
        });
        // The same addresses in the same headers. Postfix writes a
        // rewritten header out again from its tokens (dropping the space
        // before a comment); Postern keeps every byte but the addresses,
        // so white space is not compared.
        let squeeze = |v: Option<String>| v.map(|v| v.split_whitespace().collect::<String>());
        for h in ["From", "To", "Cc"] {
            assert_eq!(
                squeeze(header(&ea[n].1, h)),
                squeeze(header(&eb[n].1, h)),
                "{h} differs for {sender} -> {rcpts:?}"
            );
        }
        assert_eq!(
            envelope(&ea[n].0),
            envelope(&eb[n].0),
            "envelopes differ for {sender} -> {rcpts:?}\nPostfix log:\n{}",
            pf.log()
        );
    }
}

#[test]
fn generic_maps_rewrite_the_envelope_and_headers_as_mail_leaves() {
    let mut inst = Instance::new("smtpd_error_sleep_time = 0\n");
    let sink = Sink::start(&inst.ip, 2626, &inst.config_dir().join("sink"));
    let generic = table(
        inst.config_dir(),
        "generic",
        "root@mx.test.example   alerts@corp.test\n@box.lan   @corp.test\n",
    );
    inst.add_main_cf(&format!(
        "relayhost = [{}]:2626\nsmtp_generic_maps = texthash:{}\nrecipient_delimiter = +\n",
        inst.ip,
        generic.display()
    ));
    inst.start();
    // An appliance's cron mail: root's bare address is qualified by
    // cleanup, then made a real address by the smtp client.
    inst.sendmail(
        &["-f", "root", "ops+cron@box.lan"],
        b"From: root\nTo: ops+cron@box.lan\nCc: \"Dev\" <dev@box.lan>\nSubject: cron\n\nnightly job done\n",
    );
    let m = wait_messages(&sink, 1);
    assert_eq!(
        envelope(&m[0].0),
        (
            "alerts@corp.test".to_string(),
            vec!["ops+cron@corp.test".to_string()]
        )
    );
    assert_eq!(header(&m[0].1, "From").as_deref(), Some("alerts@corp.test"));
    assert_eq!(header(&m[0].1, "To").as_deref(), Some("ops+cron@corp.test"));
    assert_eq!(
        header(&m[0].1, "Cc").as_deref(),
        Some("\"Dev\" <dev@corp.test>")
    );
    // The log names the recipient as queued.
    logged(&inst, "to=<ops+cron@box.lan>, relay=");
    // The same through smtpd.
    let r = smtplib(
        &inst.ip,
        inst.smtp_port,
        "root@mx.test.example",
        &["dev@box.lan"],
        Some("From: root@mx.test.example\r\nSubject: smtp\r\n\r\nx\r\n"),
    );
    assert!(r[1].starts_with("250"), "{r:?}");
    let m = wait_messages(&sink, 2);
    assert_eq!(
        envelope(&m[1].0),
        (
            "alerts@corp.test".to_string(),
            vec!["dev@corp.test".to_string()]
        )
    );
    assert_eq!(header(&m[1].1, "From").as_deref(), Some("alerts@corp.test"));
    // A table that cannot be read defers the delivery.
    std::fs::remove_file(&generic).unwrap();
    inst.sendmail(&["-f", "root", "ops@box.lan"], b"Subject: again\n\nx\n");
    logged(&inst, "status=deferred (smtp_generic_maps lookup failure)");
    assert_eq!(sink.messages().len(), 2);
}

#[test]
fn address_classes_and_extension_propagation_through_smtpd_and_sendmail() {
    let mut inst = Instance::new("smtpd_error_sleep_time = 0\n");
    let sink = Sink::start(&inst.ip, 2626, &inst.config_dir().join("sink"));
    let v = table(inst.config_dir(), "virtual", VIRTUAL);
    inst.add_main_cf(&format!(
        "relayhost = [{}]:2626\n{}\
         recipient_delimiter = +\n\
         virtual_alias_domains = virt.test\n\
         virtual_alias_maps = texthash:{}\n\
         sender_canonical_classes = envelope_sender\n\
         recipient_canonical_classes = envelope_recipient\n\
         canonical_classes = envelope_recipient\n\
         masquerade_classes = envelope_sender\n\
         propagate_unmatched_extensions = canonical\n",
        inst.ip,
        rewriting_main_cf(inst.config_dir()),
        v.display()
    ));
    inst.start();
    let rcpts = ["old@corp.test", "bob@legacy.test", "info+tag@virt.test"];
    let r = smtplib(
        &inst.ip,
        inst.smtp_port,
        "alice@inside.test",
        &rcpts,
        Some(ADDRESS_HEADERS),
    );
    assert!(r[3].starts_with("250"), "{r:?}");
    let mut args = vec!["-f", "alice@inside.test"];
    args.extend(rcpts);
    inst.sendmail(&args, ADDRESS_HEADERS.replace("\r\n", "\n").as_bytes());
    let m = wait_messages(&sink, 2);
    for (env, content) in &m {
        // The envelope only: the headers keep their addresses (qualified).
        assert_eq!(
            envelope(env),
            (
                "alice.smith@corp.test".to_string(),
                vec![
                    "archive-new@relay.test".to_string(),
                    "archive-sent@relay.test".into(),
                    "bob@corp.test".into(),
                    // No extension carried: only canonical propagates.
                    "info@relay.test".into(),
                    "journal@relay.test".into(),
                    "new@corp.test".into(),
                ]
            )
        );
        assert_eq!(
            header(content, "From").as_deref(),
            Some("Alice <alice@inside.test>")
        );
        assert_eq!(
            header(content, "To").as_deref(),
            Some("old@corp.test, \"Bob B.\" <bob@legacy.test> (team)")
        );
        assert_eq!(
            header(content, "Cc").as_deref(),
            Some("root@mx.test.example, ops@host.corp.test")
        );
    }
}
