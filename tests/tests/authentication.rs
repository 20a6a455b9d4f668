//! Inbound message authentication (issue 19): SPF, DKIM, DMARC and ARC
//! records in a real DNS server on loopback, messages signed and sealed by
//! dkimpy, sent by an outside client; the Authentication-Results and
//! Received-SPF fields at the sink compared field by field, and DMARC's
//! reject and quarantine enforced when configured.
use std::process::Command;
use std::time::Duration;

use postern_tests::{Instance, Sink, Smtp, unique_loopback, wait_for};

/// An RSA key for example.org (selector "sel") and its TXT record value.
fn key(dir: &std::path::Path) -> (String, String) {
    let st = Command::new("/usr/sbin/opendkim-genkey")
        .args(["-b", "2048", "-d", "example.org", "-s", "sel", "-D"])
        .arg(dir)
        .status()
        .expect("opendkim-genkey");
    assert!(st.success());
    let text = std::fs::read_to_string(dir.join("sel.txt")).unwrap();
    let inner = &text[text.find('(').unwrap() + 1..text.rfind(')').unwrap()];
    let strings: Vec<String> = inner
        .split('"')
        .skip(1)
        .step_by(2)
        .map(|s| format!("\"{s}\""))
        .collect();
    (
        dir.join("sel.private").display().to_string(),
        strings.join(" "),
    )
}

/// Runs a dkimpy script with the message on stdin; its stdout.
fn dkimpy(script: &str, args: &[&str], msg: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3-dkim");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(msg.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn sign(msg: &str, key: &str) -> String {
    dkimpy(
        "import sys, dkim\n\
         msg = sys.stdin.buffer.read()\n\
         sig = dkim.sign(msg, b'sel', b'example.org', open(sys.argv[1], 'rb').read(), include_headers=[b'from', b'to', b'subject'])\n\
         sys.stdout.write((sig + msg).decode())\n",
        &[key],
        msg,
    )
}

/// An ARC set by a forwarder (authserv-id forwarder.example.org) over
/// `msg`, which carries that forwarder's Authentication-Results.
fn arc_seal(msg: &str, key: &str) -> String {
    dkimpy(
        "import sys, dkim\n\
         msg = sys.stdin.buffer.read()\n\
         hs = dkim.arc_sign(msg, b'sel', b'example.org', open(sys.argv[1], 'rb').read(), b'forwarder.example.org', include_headers=[b'from', b'to', b'subject'])\n\
         sys.stdout.write((b''.join(hs) + msg).decode())\n",
        &[key],
        msg,
    )
}

fn message(from: &str, tag: &str) -> String {
    format!(
        "From: <{from}>\r\nTo: ops@example.net\r\nSubject: report {tag}\r\n\
         Message-ID: <{tag}@example.org>\r\nX-Test-Subject: {tag}\r\n\r\nbody of {tag}\r\n"
    )
}

/// The field NAME of a message, unfolded, or None.
fn fields(msg: &[u8], name: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(msg);
    let head = &text[..text.find("\r\n\r\n").unwrap_or(text.len())];
    head.replace("\r\n\t", " ")
        .replace("\r\n ", " ")
        .split("\r\n")
        .filter(|l| l.starts_with(&format!("{name}:")))
        .map(str::to_string)
        .collect()
}

/// The results of our one Authentication-Results field: method -> its
/// result and properties, in order.
fn results(msg: &[u8]) -> Vec<(String, String)> {
    let ar = fields(msg, "Authentication-Results");
    let ours: Vec<&String> = ar
        .iter()
        .filter(|f| f.starts_with("Authentication-Results: mx.test.example;"))
        .collect();
    assert_eq!(ours.len(), 1, "{ar:?}");
    ours[0]
        .split(';')
        .skip(1)
        .map(|r| {
            let r = r.trim();
            let (method, rest) = r.split_once('=').unwrap_or((r, ""));
            (method.to_string(), rest.to_string())
        })
        .collect()
}

fn delivered(sink: &Sink, tag: &str) -> Vec<u8> {
    wait_for(
        &format!("delivery of {tag}"),
        Duration::from_secs(30),
        || {
            sink.messages().into_iter().find_map(|(_, c)| {
                String::from_utf8_lossy(&c)
                    .contains(&format!("X-Test-Subject: {tag}\r\n"))
                    .then_some(c)
            })
        },
    )
}

#[test]
fn spf_dkim_dmarc_and_arc_verdicts_reach_the_sink() {
    let dir = tempfile::tempdir().unwrap();
    let (key, txt) = key(dir.path());
    let client = unique_loopback();
    // Eleven includes: one DNS mechanism over RFC 7208's ten.
    let mut many = String::from("\"v=spf1");
    for i in 1..=11 {
        many.push_str(&format!(" include:l{i}.spf.test"));
    }
    many.push_str(" -all\"");
    let mut spf_zone = format!(
        "@ 3600 IN SOA ns.spf.test. admin.spf.test. 1 3600 600 86400 60\n\
         @ 3600 IN NS ns.spf.test.\n\
         ns 3600 IN A 127.0.0.1\n\
         helo 3600 IN TXT \"v=spf1 ip4:{client} -all\"\n\
         pass 3600 IN TXT \"v=spf1 ip4:192.0.2.1 ip4:{client} -all\"\n\
         fail 3600 IN TXT \"v=spf1 ip4:192.0.2.1 -all\"\n\
         softfail 3600 IN TXT \"v=spf1 ~all\"\n\
         neutral 3600 IN TXT \"v=spf1 ?all\"\n\
         mx 3600 IN TXT \"v=spf1 mx -all\"\n\
         mx 3600 IN MX 10 relay.spf.test.\n\
         relay 3600 IN A {client}\n\
         exists 3600 IN TXT \"v=spf1 exists:%{{i}}.ok.spf.test -all\"\n\
         {client}.ok 3600 IN A 127.0.0.2\n\
         redirect 3600 IN TXT \"v=spf1 redirect=pass.spf.test\"\n\
         many 3600 IN TXT {many}\n"
    );
    for i in 1..=11 {
        spf_zone.push_str(&format!(
            "l{i} 3600 IN TXT \"v=spf1 ip4:192.0.2.{i} -all\"\n"
        ));
    }
    let org_zone = format!(
        "@ 3600 IN SOA ns.example.org. admin.example.org. 1 3600 600 86400 60\n\
         @ 3600 IN NS ns.example.org.\n\
         @ 3600 IN TXT \"v=spf1 ip4:{client} -all\"\n\
         ns 3600 IN A 127.0.0.1\n\
         sel._domainkey 3600 IN TXT {txt}\n\
         _dmarc 3600 IN TXT \"v=DMARC1; p=reject\"\n\
         _dmarc.pnone 3600 IN TXT \"v=DMARC1; p=none\"\n\
         _dmarc.pquarantine 3600 IN TXT \"v=DMARC1; p=quarantine\"\n\
         _dmarc.preject 3600 IN TXT \"v=DMARC1; p=reject\"\n"
    );
    let dns_ip = unique_loopback();
    let _dns = postern_tests::dns::start_zones_at(
        &dns_ip,
        53,
        &[
            ("spf.test.", &spf_zone),
            ("example.org.", &org_zone),
            // DMARC's tree walk asks _dmarc.org too: NXDOMAIN, not refused.
            (
                "org.",
                "@ 3600 IN SOA ns.org. admin.org. 1 3600 600 86400 60\n@ 3600 IN NS ns.org.\n",
            ),
        ],
    );
    let ip = unique_loopback();
    let mut inst = Instance::new(&format!(
        "relayhost = [{ip}]:2626\nmynetworks = 127.0.0.1/32\nrelay_domains = example.net\n\
         dns_nameservers = {dns_ip}\nauthentication_checks = spf, dkim, dmarc, arc\n\
         dmarc_reject_enforce = yes\ndmarc_quarantine_enforce = yes\n"
    ));
    let sink = Sink::start(&ip, 2626, &inst.config_dir().join("sink"));
    inst.start();
    let mut o = Smtp::connect_from(&client, &inst.ip, 2525);
    o.reply();
    o.cmd("EHLO helo.spf.test");
    let mut send =
        |sender: &str, msg: &str| -> String { o.send_mail(sender, &["ops@example.net"], msg) };

    // SPF: each result of the MAIL FROM identity.
    let spf_cases = [
        ("pass", "pass"),
        ("fail", "fail"),
        ("softfail", "softfail"),
        ("neutral", "neutral"),
        ("none", "none"),
        ("mx", "pass"),
        ("exists", "pass"),
        ("redirect", "pass"),
        ("many", "permerror"),
    ];
    for (d, _) in spf_cases {
        let from = format!("u@{d}.spf.test");
        let r = send(&from, &message(&from, &format!("spf-{d}")));
        assert!(r.starts_with("250"), "{d}: {r}");
    }
    // A domain outside every zone: the server refuses, a temporary error.
    let r = send(
        "u@nowhere.example",
        &message("u@nowhere.example", "spf-temperror"),
    );
    assert!(r.starts_with("250"), "{r}");
    for (d, want) in spf_cases
        .iter()
        .map(|(d, w)| (d.to_string(), *w))
        .chain([("temperror".to_string(), "temperror")])
    {
        let m = delivered(&sink, &format!("spf-{d}"));
        let res = results(&m);
        let helo = &res[0];
        assert_eq!(helo.0, "spf", "{res:?}");
        assert!(
            helo.1.starts_with("pass ") && helo.1.contains("smtp.helo=helo.spf.test"),
            "{res:?}"
        );
        let mail = &res[1];
        assert_eq!(mail.0, "spf", "{res:?}");
        assert!(mail.1.starts_with(&format!("{want} ")), "{d}: {res:?}");
        assert!(mail.1.contains("smtp.mailfrom="), "{d}: {res:?}");
        let rspf = fields(&m, "Received-SPF");
        assert_eq!(rspf.len(), 1, "{rspf:?}");
        assert!(
            rspf[0].starts_with(&format!("Received-SPF: {want} ")),
            "{d}: {rspf:?}"
        );
        assert!(rspf[0].contains(&format!("client-ip={client}")), "{rspf:?}");
        let dkim = res.iter().find(|(m, _)| m == "dkim").unwrap();
        assert_eq!(dkim.1, "none", "{res:?}");
    }

    // DKIM and DMARC: example.org publishes p=reject; a good signature
    // passes DMARC through DKIM alignment.
    let signed = sign(&message("a@example.org", "dkim-good"), &key);
    let r = send("u@fail.spf.test", &signed);
    assert!(r.starts_with("250"), "{r}");
    let broken = sign(&message("a@example.org", "dkim-broken"), &key)
        .replace("Subject: report dkim-broken", "Subject: changed");
    // SPF fails and the signature fails: DMARC p=reject refuses it.
    let r = send("u@fail.spf.test", &broken);
    assert!(
        r.starts_with("550 5.7.1 "),
        "{r}: {:?}",
        results(&delivered(&sink, "dkim-broken"))
    );
    assert!(r.contains("DMARC policy for example.org"), "{r}");
    let m = delivered(&sink, "dkim-good");
    let res = results(&m);
    let get = |res: &[(String, String)], k: &str| {
        res.iter()
            .find(|(m, _)| m == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {k} in {res:?}"))
    };
    assert!(get(&res, "dkim").starts_with("pass "), "{res:?}");
    assert!(get(&res, "dmarc").starts_with("pass "), "{res:?}");
    assert!(
        get(&res, "dmarc").contains("header.from=example.org"),
        "{res:?}"
    );

    // DMARC by SPF alignment: MAIL FROM example.org passes SPF.
    let r = send("u@example.org", &message("b@example.org", "dmarc-spf"));
    assert!(r.starts_with("250"), "{r}");
    let res = results(&delivered(&sink, "dmarc-spf"));
    assert!(get(&res, "dmarc").starts_with("pass "), "{res:?}");

    // DMARC pass under p=none and p=quarantine: the subdomains' own
    // records, the signature's d=example.org aligned (relaxed).
    for (sub, tag) in [
        ("pnone", "dmarc-none-pass"),
        ("pquarantine", "dmarc-quarantine-pass"),
    ] {
        let from = format!("a@{sub}.example.org");
        let r = send("u@fail.spf.test", &sign(&message(&from, tag), &key));
        assert!(r.starts_with("250"), "{r}");
        let res = results(&delivered(&sink, tag));
        assert!(get(&res, "dmarc").starts_with("pass "), "{tag}: {res:?}");
        assert!(
            get(&res, "dmarc").contains(&format!("header.from={sub}.example.org")),
            "{res:?}"
        );
    }
    // DMARC fail under p=none: delivered, the failure noted.
    let r = send(
        "u@fail.spf.test",
        &message("a@pnone.example.org", "dmarc-none"),
    );
    assert!(r.starts_with("250"), "{r}");
    let res = results(&delivered(&sink, "dmarc-none"));
    assert!(get(&res, "dmarc").starts_with("fail "), "{res:?}");
    // p=quarantine: held, not delivered.
    let r = send(
        "u@fail.spf.test",
        &message("a@pquarantine.example.org", "dmarc-quarantine"),
    );
    assert!(r.starts_with("250"), "{r}");
    let held = wait_for("the held message", Duration::from_secs(10), || {
        inst.queue_json()
            .into_iter()
            .find(|q| q["queue_name"] == "hold")
    });
    assert_eq!(held["sender"], "u@fail.spf.test", "{held}");
    // p=reject: refused at the end of data.
    let r = send(
        "u@fail.spf.test",
        &message("a@preject.example.org", "dmarc-reject"),
    );
    assert!(r.starts_with("550 5.7.1 "), "{r}");
    assert!(r.contains("preject.example.org"), "{r}");

    // ARC: a chain dkimpy's arcsign made passes; a signed header changed
    // after it fails.
    let forwarded = format!(
        "Authentication-Results: forwarder.example.org; dkim=pass header.d=example.org\r\n{}",
        message("a@example.org", "arc-good")
    );
    let sealed = arc_seal(&forwarded, &key);
    assert!(sealed.contains("ARC-Seal:"), "{sealed}");
    let r = send("u@example.org", &sealed);
    assert!(r.starts_with("250"), "{r}");
    let bad = arc_seal(&forwarded.replace("arc-good", "arc-bad"), &key)
        .replace("Subject: report arc-bad", "Subject: changed");
    let r = send("u@example.org", &bad);
    assert!(r.starts_with("250"), "{r}");
    let res = results(&delivered(&sink, "arc-good"));
    assert!(get(&res, "arc").starts_with("pass"), "{res:?}");
    let res = results(&delivered(&sink, "arc-bad"));
    assert!(get(&res, "arc").starts_with("fail"), "{res:?}");
    o.cmd("QUIT");
    inst.stop();
}

/// A name server that never answers: the checks give up at
/// authentication_time_limit, every method `temperror`, and the message
/// is still accepted (no verdict is no reason to refuse).
#[test]
fn checks_stop_at_the_time_limit() {
    let dns_ip = unique_loopback();
    // Bound and never read: questions go unanswered.
    let _silent = std::net::UdpSocket::bind((dns_ip.as_str(), 53)).unwrap();
    let ip = unique_loopback();
    let mut inst = Instance::new(&format!(
        "relayhost = [{ip}]:2626\nmynetworks = 127.0.0.1/32\nrelay_domains = example.net\n\
         dns_nameservers = {dns_ip}\nauthentication_checks = spf, dkim, dmarc\n\
         authentication_time_limit = 1s\n"
    ));
    let sink = Sink::start(&ip, 2626, &inst.config_dir().join("sink"));
    inst.start();
    let mut o = Smtp::connect_from(&unique_loopback(), &inst.ip, 2525);
    o.reply();
    o.cmd("EHLO client.example.com");
    let t = std::time::Instant::now();
    let r = o.send_mail(
        "u@example.com",
        &["ops@example.net"],
        &message("a@example.com", "slow"),
    );
    assert!(r.starts_with("250"), "{r}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    o.cmd("QUIT");
    let res = results(&delivered(&sink, "slow"));
    assert_eq!(
        res,
        ["spf", "dkim", "dmarc"]
            .map(|m| (m.to_string(), "temperror (time limit exceeded)".to_string()))
    );
    inst.stop();
}

/// Crafted messages against the caps: forty signatures (ten are checked,
/// and only their ten keys are asked of DNS), and a header section over
/// header_size_limit (refused before any check runs).
#[test]
fn hostile_messages_hit_the_caps() {
    let dns_ip = unique_loopback();
    let dns = postern_tests::dns::start_zones_at(
        &dns_ip,
        53,
        &[(
            "example.org.",
            "@ 3600 IN SOA ns.example.org. admin.example.org. 1 3600 600 86400 60\n\
             @ 3600 IN NS ns.example.org.\n",
        )],
    );
    let ip = unique_loopback();
    let mut inst = Instance::new(&format!(
        "relayhost = [{ip}]:2626\nmynetworks = 127.0.0.1/32\nrelay_domains = example.net\n\
         dns_nameservers = {dns_ip}\nauthentication_checks = dkim\n\
         header_size_limit = 16384\n"
    ));
    let sink = Sink::start(&ip, 2626, &inst.config_dir().join("sink"));
    inst.start();
    let mut sigs = String::new();
    for i in 0..40 {
        sigs.push_str(&format!(
            "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.org; s=s{i}; h=from; bh=frcCV1k9oG9oKj3dpUqdJg1PxRT2RSN/XKdLCPjaYaY=; b=dGVzdA==\r\n"
        ));
    }
    let mut o = Smtp::connect_from(&unique_loopback(), &inst.ip, 2525);
    o.reply();
    o.cmd("EHLO client.example.com");
    let r = o.send_mail(
        "u@example.org",
        &["ops@example.net"],
        &format!("{sigs}{}", message("a@example.org", "forty")),
    );
    assert!(r.starts_with("250"), "{r}");
    let padding = format!("X-Padding: {}\r\n", "p".repeat(900)).repeat(20);
    let r = o.send_mail(
        "u@example.org",
        &["ops@example.net"],
        &format!("{padding}{}", message("a@example.org", "huge")),
    );
    assert!(r.starts_with("552 5.3.4"), "{r}");
    o.cmd("QUIT");
    let res = results(&delivered(&sink, "forty"));
    assert_eq!(
        res.iter().filter(|(m, _)| m == "dkim").count(),
        10,
        "{res:?}"
    );
    let asked: Vec<_> = dns
        .queries()
        .into_iter()
        .filter(|(n, _)| n.contains("._domainkey."))
        .collect();
    assert!(!asked.is_empty() && asked.len() <= 10, "{asked:?}");
    assert!(
        inst.log()
            .contains("40 DKIM signatures, the first 10 checked")
    );
    inst.stop();
}
