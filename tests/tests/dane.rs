//! DANE (RFC 7672): Postern's smtp client at the `dane` and `dane-only`
//! levels, against zones Debian's knot signs and Debian's unbound
//! validates (tests/src/dnssec.rs), with aiosmtpd sinks on port 25 of
//! their own loopback addresses.
//!
//! One instance, whose global level is `may`, sends to every case at
//! once; smtp_tls_policy_maps entries by parent domain (`.dane.test
//! dane`, `.unsigned.test dane`) ask for DANE, so without them every case
//! would be delivered untrusted:
//! - DANE-EE 3 1 1 and DANE-TA 2 1 1 verify and deliver ("Verified");
//! - a TLSA record that matches nothing defers ("Server certificate not
//!   verified"), nothing reaches that sink;
//! - an unsigned zone's TLSA records are ignored: `may`, delivered;
//! - a bogus TLSA answer (a child zone whose DS in the parent is wrong)
//!   defers with "TLSA lookup error"; that sink offers no TLS at all, so a
//!   fall back to cleartext would show as a delivery;
//! - an MX host that is a secure CNAME into an unsigned zone keeps DANE
//!   (its TLSA records at the MX host's name): a mismatch defers, a match
//!   delivers;
//! - an insecure MX RRset naming a host with secure TLSA records keeps
//!   DANE (smtp_tls_dane_insecure_mx_policy = dane): a mismatch defers, a
//!   match delivers, logged "Trusted";
//! - `dane-only` (smtp_tls_policy_maps) for a domain without TLSA defers;
//! - where every TLSA record names a key (3 1 x), the client asks for an
//!   RFC 7250 raw public key: another Postern instance as the MX sends
//!   one (both sides log "raw public key"); the aiosmtpd sinks, which
//!   have none, get a second connection that asks for certificates.
use std::process::Command;
use std::time::Duration;

use postern_tests::dnssec::{Dnssec, Signing, Zone};
use postern_tests::pki::{self, Pki};
use postern_tests::{Instance, Sink, python_ok, unique_loopback, wait_for};

/// The SHA-256 of the SubjectPublicKeyInfo of the first certificate in
/// `pem` (a TLSA "x 1 1" record's data), in hex.
fn spki_sha256(pem: &std::path::Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl x509 -in {} -noout -pubkey | openssl pkey -pubin -outform DER | openssl dgst -sha256 -r",
            pem.display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

struct Host {
    ip: String,
    sink: Sink,
}

/// A sink on port 25 of a fresh loopback address; with a certificate
/// (leaf and CA) when `pki` is given.
fn host(inst: &Instance, tag: &str, pki: Option<&Pki>) -> Host {
    let ip = unique_loopback();
    let dir = inst.dir.path().join(format!("sink-{tag}"));
    let opts: Vec<String> = match pki {
        Some(p) => vec![
            "--tls".into(),
            p.server_cert.display().to_string(),
            p.server_key.display().to_string(),
        ],
        None => Vec::new(),
    };
    let opts: Vec<&str> = opts.iter().map(String::as_str).collect();
    let sink = Sink::start_with(&ip, 25, &dir, &opts);
    Host { ip, sink }
}

#[test]
fn dane_verifies_defers_and_never_downgrades() {
    let mut inst = Instance::new("smtpd_error_sleep_time = 0");
    let cfg = inst.config_dir().to_path_buf();
    let ee_pki = pki::make(&cfg, "ee", "mx-ee.dane.test");
    let ta_pki = pki::make(&cfg, "ta", "mx-ta.dane.test");
    // Certificates nobody's TLSA records name.
    let other = pki::make(&cfg, "other", "mx.unsigned.test");
    let ee = host(&inst, "ee", Some(&ee_pki));
    let ta = host(&inst, "ta", Some(&ta_pki));
    let bad = host(&inst, "bad", Some(&other));
    let plain = host(&inst, "plain", Some(&other));
    let bogus = host(&inst, "bogus", None);
    let alias_bad = host(&inst, "alias-bad", Some(&other));
    let alias_ok = host(&inst, "alias-ok", Some(&ee_pki));
    // A Postern instance as an MX on port 25, which sends its key raw
    // when asked.
    let rpk_ip = unique_loopback();
    let mut rpk = Instance::with_master_cf(
        "myhostname = mx-rpk.dane.test\nsmtpd_error_sleep_time = 0\n",
        Some(&format!("{rpk_ip}:25 inet n - n - - smtpd\n")),
    );
    rpk.ip = rpk_ip.clone();
    let rpk_pki = pki::make(rpk.config_dir(), "rpk", "mx-rpk.dane.test");

    let ee_key = spki_sha256(&ee_pki.server_cert);
    let ta_key = spki_sha256(&ta_pki.ca);
    let wrong = spki_sha256(&other.ca);
    let rpk_key = spki_sha256(&rpk_pki.server_cert);
    let dane_zone = format!(
        "ee 60 IN MX 10 mx-ee\n\
         mx-ee 60 IN A {ee}\n\
         _25._tcp.mx-ee 60 IN TLSA 3 1 1 {ee_key}\n\
         ta 60 IN MX 10 mx-ta\n\
         mx-ta 60 IN A {ta}\n\
         _25._tcp.mx-ta 60 IN TLSA 2 1 1 {ta_key}\n\
         bad 60 IN MX 10 mx-bad\n\
         mx-bad 60 IN A {bad}\n\
         _25._tcp.mx-bad 60 IN TLSA 3 1 1 {wrong}\n\
         bogus 60 IN MX 10 mx-bogus\n\
         mx-bogus 60 IN A {bogus}\n\
         _25._tcp.mx-bogus 60 IN NS ns.test.\n\
         _25._tcp.mx-bogus 60 IN DS 4711 13 2 {zeros}\n\
         alias-bad 60 IN MX 10 mx-alias-bad\n\
         mx-alias-bad 60 IN CNAME host-alias-bad.unsigned.test.\n\
         _25._tcp.mx-alias-bad 60 IN TLSA 3 1 1 {wrong}\n\
         alias-ok 60 IN MX 10 mx-alias-ok\n\
         mx-alias-ok 60 IN CNAME host-alias-ok.unsigned.test.\n\
         _25._tcp.mx-alias-ok 60 IN TLSA 3 1 1 {ee_key}\n\
         rpk 60 IN MX 10 mx-rpk\n\
         mx-rpk 60 IN A {rpk_ip}\n\
         _25._tcp.mx-rpk 60 IN TLSA 3 1 1 {rpk_key}\n",
        ee = ee.ip,
        ta = ta.ip,
        bad = bad.ip,
        bogus = bogus.ip,
        zeros = "AB".repeat(32),
    );
    let bogus_zone = format!("@ 60 IN TLSA 3 1 1 {ee_key}\n");
    let unsigned_zone = format!(
        "plain 60 IN MX 10 mx\n\
         mx 60 IN A {plain}\n\
         _25._tcp.mx 60 IN TLSA 3 1 1 {wrong}\n\
         host-alias-bad 60 IN A {alias_bad}\n\
         host-alias-ok 60 IN A {alias_ok}\n\
         insecure-mx-bad 60 IN MX 10 mx-bad.dane.test.\n\
         insecure-mx-ok 60 IN MX 10 mx-ee.dane.test.\n\
         only 60 IN MX 10 mx\n",
        plain = plain.ip,
        alias_bad = alias_bad.ip,
        alias_ok = alias_ok.ip,
    );
    let dns = Dnssec::start(
        &inst.dir.path().join("dns"),
        &[
            Zone {
                origin: "dane.test.",
                records: &dane_zone,
                signing: Signing::Anchored,
            },
            Zone {
                origin: "_25._tcp.mx-bogus.dane.test.",
                records: &bogus_zone,
                signing: Signing::Child,
            },
            Zone {
                origin: "unsigned.test.",
                records: &unsigned_zone,
                signing: Signing::Unsigned,
            },
        ],
    );
    // The validating path as the cases need it.
    let f = dns.flags("_25._tcp.mx-ee.dane.test", "TLSA");
    assert!(f.contains(" ad"), "{f}\n{}", dns.logs());
    let f = dns.flags("_25._tcp.mx-bogus.dane.test", "TLSA");
    assert!(f.contains("SERVFAIL"), "{f}\n{}", dns.logs());
    let f = dns.flags("mx.unsigned.test", "A");
    assert!(f.contains("NOERROR") && !f.contains(" ad"), "{f}");

    let policies = cfg.join("tls_policy");
    // The global level is may: the table's entries ask for DANE, by
    // parent domain (`.dane.test` is any domain below it), and the exact
    // entry wins over its parent's.
    std::fs::write(
        &policies,
        "only.unsigned.test dane-only\n.dane.test dane\n.unsigned.test dane\n",
    )
    .unwrap();
    inst.add_main_cf(&format!(
        "dns_nameservers = {}\nsmtp_dns_support_level = dnssec\n\
         smtp_tls_security_level = may\nsmtp_log_tls_feature_status = yes\n\
         smtp_tls_policy_maps = texthash:{}\n",
        dns.resolver,
        policies.display()
    ));
    inst.start();
    // The receiving instance relays anything from loopback to a port
    // where nothing listens (it only has to take the message).
    rpk.add_main_cf(&format!(
        "smtpd_tls_chain_files = {}\nmynetworks = 127.0.0.0/8\nrelayhost = [127.0.0.1]:9\ndns_nameservers = {}\n",
        rpk_pki.server_chain.display(),
        dns.resolver
    ));
    rpk.start();

    let rcpts = [
        "u@ee.dane.test",
        "u@ta.dane.test",
        "u@bad.dane.test",
        "u@plain.unsigned.test",
        "u@bogus.dane.test",
        "u@alias-bad.dane.test",
        "u@alias-ok.dane.test",
        "u@insecure-mx-bad.unsigned.test",
        "u@insecure-mx-ok.unsigned.test",
        "u@only.unsigned.test",
        "u@rpk.dane.test",
    ];
    for r in rcpts {
        python_ok(&format!(
            "import smtplib\ns = smtplib.SMTP({ip:?}, {port})\nr = s.sendmail('a@example.org', [{r:?}], 'Subject: to {r}\\r\\n\\r\\nhi\\r\\n')\nassert r == {{}}, r\ns.quit()\n",
            ip = inst.ip,
            port = inst.smtp_port
        ));
    }
    let count = |h: &Host, n: usize, what: &str| {
        wait_for(what, Duration::from_secs(30), || {
            (h.sink.messages().len() >= n).then_some(())
        });
    };
    let log = |needle: &str| inst.wait_log(needle, Duration::from_secs(30));

    // DANE-EE and DANE-TA: verified and delivered.
    count(&ee, 1, "the DANE-EE host's message");
    log(&format!(
        "Verified TLS connection established to mx-ee.dane.test[{}]:25",
        ee.ip
    ));
    count(&ta, 1, "the DANE-TA host's message");
    log(&format!(
        "Verified TLS connection established to mx-ta.dane.test[{}]:25",
        ta.ip
    ));
    // The SNI is the TLSA base domain.
    assert_eq!(ee.sink.messages()[0].0["sni"], "mx-ee.dane.test");
    // The unsigned zone: opportunistic TLS, its TLSA records ignored.
    count(&plain, 1, "the unsigned zone's message");
    log(&format!(
        "Untrusted TLS connection established to mx.unsigned.test[{}]:25",
        plain.ip
    ));
    // The CNAME into an unsigned zone, and the insecure MX, keep DANE.
    count(&alias_ok, 1, "the secure CNAME's message");
    log(&format!(
        "Verified TLS connection established to mx-alias-ok.dane.test[{}]:25",
        alias_ok.ip
    ));
    count(&ee, 2, "the insecure MX's message at the DANE-EE host");
    log(&format!(
        "Trusted TLS connection established to mx-ee.dane.test[{}]:25",
        ee.ip
    ));

    // A raw public key from the Postern MX: both sides say so, as
    // Postfix does. The aiosmtpd sinks have none: a second connection
    // asked them for certificates.
    let words = "server-signature ECDSA (prime256v1 raw public key) server-digest SHA256";
    let out = wait_for("the client's TLS line", Duration::from_secs(30), || {
        inst.log_lines(&format!(
            "Verified TLS connection established to mx-rpk.dane.test[{rpk_ip}]:25: TLSv1.3"
        ))
        .pop()
    });
    assert!(out.ends_with(words), "{out}");
    let inb = wait_for("the MX's TLS line", Duration::from_secs(20), || {
        rpk.log_lines("TLS connection established from").pop()
    });
    assert!(inb.ends_with(words), "{inb}");
    log("to=<u@rpk.dane.test>, relay=mx-rpk.dane.test");
    log(&format!(
        "mx-ee.dane.test[{}]:25: no raw public key (",
        ee.ip
    ));
    assert!(
        !inst
            .log()
            .contains(&format!("mx-rpk.dane.test[{rpk_ip}]:25: no raw public key")),
        "{}",
        inst.log()
    );

    // Postfix 3.11's tls= field in the delivery lines.
    let text = std::fs::read_to_string(inst.log_path()).unwrap();
    for (rcpt, field) in [
        ("u@ee.dane.test", "tls=dane, dsn=2.0.0"),
        ("u@ta.dane.test", "tls=dane, dsn=2.0.0"),
        (
            "u@insecure-mx-ok.unsigned.test",
            "tls=dane:halfdane, dsn=2.0.0",
        ),
        ("u@plain.unsigned.test", "tls=may, dsn=2.0.0"),
    ] {
        let line = text
            .lines()
            .find(|l| l.contains(&format!("to=<{rcpt}>")) && l.contains("status=sent"))
            .unwrap_or_else(|| panic!("no delivery line for {rcpt}"));
        assert!(line.contains(field), "{rcpt}: {line}");
    }

    // The refusals, each with its reason.
    for (rcpt, why) in [
        ("u@bad.dane.test", "Server certificate not verified"),
        (
            "u@bogus.dane.test",
            "TLSA lookup error for mx-bogus.dane.test:25",
        ),
        ("u@alias-bad.dane.test", "Server certificate not verified"),
        (
            "u@insecure-mx-bad.unsigned.test",
            "Server certificate not verified",
        ),
        ("u@only.unsigned.test", "no TLSA records found"),
    ] {
        log(&format!("to=<{rcpt}>"));
        let text = std::fs::read_to_string(inst.log_path()).unwrap();
        let line = text
            .lines()
            .find(|l| l.contains(&format!("to=<{rcpt}>")) && l.contains("status="))
            .unwrap_or_else(|| panic!("no delivery line for {rcpt}"));
        assert!(
            line.contains("status=deferred") && line.contains(why),
            "{rcpt}: {line}"
        );
    }
    // Nothing went anywhere it should not, in the clear or otherwise.
    for (h, what) in [
        (&bad, "mismatch"),
        (&bogus, "bogus"),
        (&alias_bad, "CNAME mismatch"),
    ] {
        assert!(h.sink.messages().is_empty(), "{what}: delivered");
    }
    assert_eq!(ee.sink.messages().len(), 2);
    assert_eq!(plain.sink.messages().len(), 1, "dane-only went to mx");

    // The same as the global level, without a table: a second instance.
    let mut global = Instance::new("smtpd_error_sleep_time = 0");
    global.add_main_cf(&format!(
        "dns_nameservers = {}\nsmtp_dns_support_level = dnssec\nsmtp_tls_security_level = dane\n",
        dns.resolver
    ));
    global.start();
    for r in ["v@ta.dane.test", "v@bad.dane.test"] {
        python_ok(&format!(
            "import smtplib\ns = smtplib.SMTP({ip:?}, {port})\nr = s.sendmail('a@example.org', [{r:?}], 'Subject: to {r}\\r\\n\\r\\nhi\\r\\n')\nassert r == {{}}, r\ns.quit()\n",
            ip = global.ip,
            port = global.smtp_port
        ));
    }
    count(&ta, 2, "the DANE-TA host's second message");
    global.wait_log(
        &format!(
            "Verified TLS connection established to mx-ta.dane.test[{}]:25",
            ta.ip
        ),
        Duration::from_secs(30),
    );
    global.wait_log("to=<v@bad.dane.test>", Duration::from_secs(30));
    assert!(
        global
            .log()
            .contains("status=deferred (Server certificate not verified"),
        "{}",
        global.log()
    );
    assert!(bad.sink.messages().is_empty());
}

/// conf --check: the dane levels need DNSSEC lookups. `dane` without them
/// is `may` (a warning, as Postfix warns); `dane-only` would defer every
/// delivery (an error naming the line).
#[test]
fn conf_check_wants_dnssec_lookups_for_dane() {
    let c = Instance::new("smtp_tls_security_level = dane-only\n");
    let out = c.postern(&["conf", "--check"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("main.cf:") && err.contains("needs smtp_dns_support_level = dnssec"),
        "{err}"
    );
    let c = Instance::new("smtp_tls_security_level = dane\n");
    let out = c.postern(&["conf", "--check"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning") && err.contains("until then it is \"may\""),
        "{err}"
    );
    let c = Instance::new("smtp_tls_security_level = dane-only\nsmtp_dns_support_level = dnssec\n");
    let out = c.postern(&["conf", "--check"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
