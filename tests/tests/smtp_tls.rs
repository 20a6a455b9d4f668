//! The smtp client's TLS and SASL against a real TLS-enabled server
//! (aiosmtpd with STARTTLS, tests/tools/sink.py): verified delivery, a
//! wrong CA, TLS required but not offered, a smarthost login, a client
//! certificate whose key stays in the broker, and session resumption.
use std::time::Duration;

use postern_tests::pki::{self, Pki};
use postern_tests::{Instance, Sink, python_ok, unique_loopback, wait_for};

const FAST_RETRY: &str = "minimal_backoff_time = 1s\nmaximal_backoff_time = 2s\n";

/// A sink with STARTTLS, its certificate issued for its IP address by CA
/// `tag` (plus `extra` sink options), and an instance relaying to it with
/// `main` in main.cf (`{ca}`, `{client_cert}`, `{client_key}` and
/// `{passwords}` are replaced by the files of this setup).
fn setup(main: &str, sink_opts: &[&str]) -> (Instance, Sink, Pki) {
    let sink_ip = unique_loopback();
    let mut inst = Instance::new("smtpd_error_sleep_time = 0");
    let pki = pki::make(inst.config_dir(), "s", &sink_ip);
    let dir = inst.dir.path().join("sink");
    let mut opts = vec![
        "--tls".to_string(),
        pki.server_cert.display().to_string(),
        pki.server_key.display().to_string(),
        pki.ca.display().to_string(),
    ];
    opts.extend(sink_opts.iter().map(|s| s.to_string()));
    let opts: Vec<&str> = opts.iter().map(String::as_str).collect();
    let sink = Sink::start_with(&sink_ip, 2626, &dir, &opts);
    let passwords = inst.config_dir().join("relay-passwords");
    std::fs::write(
        &passwords,
        format!("[{sink_ip}]:2626 relayuser:relay pass\n"),
    )
    .unwrap();
    let main = main
        .replace("{ca}", &pki.ca.display().to_string())
        .replace("{client_cert}", &pki.client_cert.display().to_string())
        .replace("{client_key}", &pki.client_key.display().to_string())
        .replace("{passwords}", &passwords.display().to_string());
    inst.add_main_cf(&format!("relayhost = [{sink_ip}]:2626\n{FAST_RETRY}{main}"));
    inst.start();
    (inst, sink, pki)
}

fn send(inst: &Instance, subject: &str) {
    python_ok(&format!(
        "import smtplib\ns = smtplib.SMTP({ip:?}, {port})\nr = s.sendmail('a@example.org', ['b@remote.example'], 'Subject: {subject}\\r\\n\\r\\nhi\\r\\n')\nassert r == {{}}, r\ns.quit()\n",
        ip = inst.ip,
        port = inst.smtp_port
    ));
}

fn delivered(sink: &Sink, n: usize) -> Vec<serde_json::Value> {
    wait_for(
        &format!("{n} message(s) at the sink"),
        Duration::from_secs(30),
        || {
            let m = sink.messages();
            (m.len() >= n).then(|| m.into_iter().map(|(env, _)| env).collect())
        },
    )
}

#[test]
fn verify_level_delivers_over_starttls_and_a_wrong_ca_defers() {
    let (inst, sink, _) = setup(
        "smtp_tls_security_level = verify\nsmtp_tls_CAfile = {ca}\n",
        &[],
    );
    send(&inst, "verified");
    let env = &delivered(&sink, 1)[0];
    assert!(
        env["tls"].as_str().is_some_and(|v| v.starts_with("TLSv1")),
        "{env}"
    );
    inst.wait_log(
        "Verified TLS connection established to",
        Duration::from_secs(5),
    );
    inst.wait_queue_empty(Duration::from_secs(10));

    // Another instance that trusts a different CA: the certificate does
    // not verify, the message stays queued, nothing reaches the sink.
    let mut other = Instance::new("smtpd_error_sleep_time = 0");
    let wrong = pki::make(other.config_dir(), "w", "elsewhere.example");
    other.add_main_cf(&format!(
        "relayhost = [{}]:2626\n{FAST_RETRY}smtp_tls_security_level = verify\nsmtp_tls_CAfile = {}\n",
        sink.ip,
        wrong.ca.display()
    ));
    other.start();
    send(&other, "must not arrive");
    other.wait_log(
        "status=deferred (Server certificate not verified",
        Duration::from_secs(20),
    );
    assert!(other.log().contains("dsn=4.7.5"), "{}", other.log());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        sink.messages().len(),
        1,
        "a message went to an unverified server"
    );
    let q = other.postern(&["queue", "list", "--json"]);
    assert!(
        String::from_utf8_lossy(&q.stdout).contains("b@remote.example"),
        "the message left the queue"
    );
}

#[test]
fn encrypt_defers_when_the_server_offers_no_starttls() {
    // A plain sink (no --tls).
    let mut inst = Instance::new("smtpd_error_sleep_time = 0");
    let sink = Sink::start(&unique_loopback(), 2626, &inst.dir.path().join("sink"));
    inst.add_main_cf(&format!(
        "relayhost = [{}]:2626\n{FAST_RETRY}smtp_tls_security_level = encrypt\n",
        sink.ip
    ));
    inst.start();
    send(&inst, "needs tls");
    inst.wait_log(
        "status=deferred (TLS is required, but was not offered by host",
        Duration::from_secs(20),
    );
    assert!(sink.messages().is_empty());
}

#[test]
fn smarthost_login_and_a_client_certificate_from_the_broker() {
    let (inst, sink, _) = setup(
        "smtp_tls_security_level = encrypt\n\
         smtp_sasl_auth_enable = yes\n\
         smtp_sasl_password_maps = texthash:{passwords}\n\
         smtp_tls_cert_file = {client_cert}\n\
         smtp_tls_key_file = {client_key}\n",
        &["--auth", "relayuser:relay pass"],
    );
    send(&inst, "to the smarthost");
    let env = &delivered(&sink, 1)[0];
    assert_eq!(env["auth"], true, "{env}");
    assert_eq!(env["client_cert"], true, "{env}");
    assert!(env["tls"].as_str().is_some(), "{env}");
    inst.wait_log("status=sent", Duration::from_secs(5));
}

#[test]
fn a_refused_smarthost_login_defers() {
    let (inst, sink, _) = setup(
        "smtp_tls_security_level = encrypt\n\
         smtp_sasl_auth_enable = yes\n\
         smtp_sasl_password_maps = texthash:{passwords}\n",
        &["--auth", "relayuser:another password"],
    );
    send(&inst, "wrong password");
    inst.wait_log(
        "status=deferred (SASL authentication failed; server",
        Duration::from_secs(20),
    );
    assert!(inst.log().contains("said: 535"), "{}", inst.log());
    assert!(sink.messages().is_empty());
}

#[test]
fn tls_sessions_are_resumed_across_connections() {
    let (inst, sink, _) = setup(
        "smtp_tls_security_level = verify\nsmtp_tls_CAfile = {ca}\nsmtp_connection_cache_size = 0\n",
        &[],
    );
    send(&inst, "first");
    delivered(&sink, 1);
    send(&inst, "second");
    delivered(&sink, 2);
    wait_for("two TLS lines", Duration::from_secs(5), || {
        (inst.log_lines("TLS connection established to").len() >= 2).then_some(())
    });
    let established: Vec<String> = inst.log_lines("TLS connection established to");
    assert_eq!(established.len(), 2, "{established:?}");
    assert!(!established[0].contains("(resumed)"), "{established:?}");
    assert!(established[1].ends_with("(resumed)"), "{established:?}");
    // A full handshake names the server's signature (the test CA's keys
    // are P-256), as Postfix 3.11 does; a resumed one had none.
    assert!(
        established[0].ends_with("server-signature ECDSA (prime256v1) server-digest SHA256"),
        "{established:?}"
    );
    assert!(
        !established[1].contains("server-signature"),
        "{established:?}"
    );
}

/// Through real DNS: `secure` checks the certificate against the next-hop
/// domain (which an MX lookup cannot spoof) and sends it as SNI; `verify`
/// checks the MX host name, so the same certificate fails there, until
/// smtp_tls_verify_cert_match names the next hop too.
#[test]
fn secure_matches_the_nexthop_and_verify_the_mx_host_name() {
    let sink_ip = unique_loopback();
    let mut a = Instance::new("smtpd_error_sleep_time = 0");
    let pki = pki::make(a.config_dir(), "d", "secure.test");
    let sink = Sink::start_with(
        &sink_ip,
        25,
        &a.dir.path().join("sink"),
        &[
            "--tls",
            &pki.server_cert.display().to_string(),
            &pki.server_key.display().to_string(),
        ],
    );
    let zone = format!(
        "@ 3600 IN SOA ns.test. admin.test. 1 3600 600 86400 60\n\
         @ 3600 IN NS ns.test.\n\
         ns 3600 IN A 127.0.0.1\n\
         secure 60 IN MX 10 mx.secure.test.\n\
         mx.secure 60 IN A {sink_ip}\n"
    );
    let dns = postern_tests::dns::start(&a.ip, "test.", &zone);
    let common = format!(
        "dns_nameservers = {}\n{FAST_RETRY}smtp_tls_CAfile = {}\n",
        dns.addr,
        pki.ca.display()
    );
    a.add_main_cf(&format!("{common}smtp_tls_security_level = secure\n"));
    a.start();
    let send_to = |inst: &Instance| {
        python_ok(&format!(
            "import smtplib\ns = smtplib.SMTP({ip:?}, {port})\ns.sendmail('a@example.org', ['user@secure.test'], 'Subject: s\\r\\n\\r\\nhi\\r\\n')\ns.quit()\n",
            ip = inst.ip,
            port = inst.smtp_port
        ));
    };
    send_to(&a);
    let env = &delivered(&sink, 1)[0];
    assert_eq!(env["sni"], "secure.test", "{env}");
    a.wait_log(
        &format!("Verified TLS connection established to mx.secure.test[{sink_ip}]:25"),
        Duration::from_secs(5),
    );

    let mut b = Instance::new("smtpd_error_sleep_time = 0");
    b.add_main_cf(&format!("{common}smtp_tls_security_level = verify\n"));
    b.start();
    send_to(&b);
    b.wait_log(
        "status=deferred (Server certificate not verified",
        Duration::from_secs(20),
    );
    assert_eq!(sink.messages().len(), 1);

    // smtp_tls_verify_cert_match: with the next hop among the names, the
    // same certificate verifies at the verify level (the host name fails,
    // the next hop matches).
    let mut c = Instance::new("smtpd_error_sleep_time = 0");
    c.add_main_cf(&format!(
        "{common}smtp_tls_security_level = verify
smtp_tls_verify_cert_match = hostname, nexthop
"
    ));
    c.start();
    send_to(&c);
    delivered(&sink, 2);
    c.wait_log(
        &format!("Verified TLS connection established to mx.secure.test[{sink_ip}]:25"),
        Duration::from_secs(5),
    );
}

#[test]
fn smtps_smarthost_with_wrapper_mode_and_a_login() {
    // A smarthost that speaks TLS from the first byte (port 465 style).
    let sink_ip = unique_loopback();
    let mut inst = Instance::new("smtpd_error_sleep_time = 0");
    let pki = pki::make(inst.config_dir(), "s", &sink_ip);
    let sink = Sink::start_with(
        &sink_ip,
        2465,
        &inst.dir.path().join("sink"),
        &[
            "--implicit-tls",
            &pki.server_cert.display().to_string(),
            &pki.server_key.display().to_string(),
            "--auth",
            "relayuser:relay pass",
        ],
    );
    let passwords = inst.config_dir().join("relay-passwords");
    std::fs::write(
        &passwords,
        format!("[{sink_ip}]:2465 relayuser:relay pass\n"),
    )
    .unwrap();
    // Plaintext is no option on such a port: conf --check says so.
    inst.add_main_cf(&format!(
        "relayhost = [{sink_ip}]:2465\n{FAST_RETRY}smtp_tls_wrappermode = yes\n"
    ));
    let check = inst.postern(&["conf", "--check"]);
    let err = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(1), "{err}");
    assert!(
        err.contains("smtp_tls_wrappermode = yes requires smtp_tls_security_level = encrypt or stronger (it is \"may\")"),
        "{err}"
    );
    inst.add_main_cf(&format!(
        "smtp_tls_security_level = verify\nsmtp_tls_CAfile = {}\n\
         smtp_sasl_auth_enable = yes\nsmtp_sasl_password_maps = texthash:{}\n",
        pki.ca.display(),
        passwords.display()
    ));
    inst.start();
    send(&inst, "over smtps");
    let env = &delivered(&sink, 1)[0];
    assert!(
        env["tls"].as_str().is_some_and(|v| v.starts_with("TLSv1")),
        "{env}"
    );
    assert_eq!(env["auth"], true, "{env}");
    inst.wait_log(
        &format!("Verified TLS connection established to {sink_ip}[{sink_ip}]:2465"),
        Duration::from_secs(10),
    );
    inst.wait_log("status=sent", Duration::from_secs(10));
}

#[test]
fn smtp_tls_policy_maps_set_the_level_per_destination() {
    // One STARTTLS sink whose certificate names its IP address, and two
    // instances with the global level may: the table asks the first for
    // verify, with a match= list whose second name is the certificate's;
    // the second asks for dane-only, which needs DNSSEC lookups.
    let sink_ip = unique_loopback();
    let mut a = Instance::new("smtpd_error_sleep_time = 0");
    let pki = pki::make(a.config_dir(), "s", &sink_ip);
    let sink = Sink::start_with(
        &sink_ip,
        2626,
        &a.dir.path().join("sink"),
        &[
            "--tls",
            &pki.server_cert.display().to_string(),
            &pki.server_key.display().to_string(),
        ],
    );
    let table = |inst: &Instance, value: &str| {
        let f = inst.config_dir().join("tls_policy");
        std::fs::write(&f, format!("[{sink_ip}]:2626 {value}\n")).unwrap();
        inst.add_main_cf(&format!(
            "relayhost = [{sink_ip}]:2626\n{FAST_RETRY}smtp_tls_CAfile = {}\nsmtp_tls_policy_maps = texthash:{}\n",
            pki.ca.display(),
            f.display()
        ));
    };
    table(
        &a,
        "verify match=mx.elsewhere.example:hostname protocols=!SSLv2,!SSLv3",
    );
    a.start();
    send(&a, "verified by the table");
    let env = &delivered(&sink, 1)[0];
    assert!(env["tls"].as_str().is_some(), "{env}");
    a.wait_log(
        &format!("Verified TLS connection established to {sink_ip}[{sink_ip}]:2626"),
        Duration::from_secs(10),
    );
    // queue explain names the policy and the table entry that chose it.
    let out = a.postern(&["queue", "explain", "b@remote.example", "--json"]);
    let x: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        x["tls_level"], "verify match=mx.elsewhere.example:hostname protocols=!SSLv2,!SSLv3",
        "{x}"
    );
    assert_eq!(
        x["tls_reason"],
        format!("smtp_tls_policy_maps, key [{sink_ip}]:2626"),
        "{x}"
    );
    // A policy that cannot be met here defers; it is never downgraded:
    // dane-only without DNSSEC lookups (smtp_dns_support_level).
    let mut b = Instance::new("smtpd_error_sleep_time = 0");
    table(&b, "dane-only");
    b.start();
    send(&b, "needs dane");
    b.wait_log(
        &format!("status=deferred ({sink_ip}: dane-only configured with dnssec lookups disabled)"),
        Duration::from_secs(20),
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(sink.messages().len(), 1, "the dane-only message went out");
    // servername= sets the SNI (any certificate will do at encrypt).
    let mut c = Instance::new("smtpd_error_sleep_time = 0");
    table(&c, "encrypt servername=smtp.example.net");
    c.start();
    send(&c, "named");
    let env = &delivered(&sink, 2)[1];
    assert_eq!(env["sni"], "smtp.example.net", "{env}");

    // tafile=: the sink's CA as the one trust anchor of this entry, with
    // no smtp_tls_CAfile at all (the system CAs do not know it); and
    // smtp_tls_trust_anchor_file, for the global level; and the CA's
    // public key alone, as `openssl x509 -pubkey` writes it (Postfix's
    // recipe). An anchor file that names another CA, or its key, defers.
    let other = pki::make(a.config_dir(), "o", "other.example");
    let public_key = |ca: &std::path::Path, name: &str| {
        let f = a.config_dir().join(name);
        let out = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-pubkey", "-in"])
            .arg(ca)
            .output()
            .unwrap();
        assert!(out.status.success());
        std::fs::write(&f, &out.stdout).unwrap();
        f
    };
    let sink_key = public_key(&pki.ca, "sink-ca-key.pem");
    let other_key = public_key(&other.ca, "other-ca-key.pem");
    let mut delivered_so_far = 2;
    for (n, (main, entry, delivers)) in [
        ("", format!("verify tafile={}", pki.ca.display()), true),
        (
            "smtp_tls_security_level = verify\nsmtp_tls_trust_anchor_file = {ca}\n",
            String::new(),
            true,
        ),
        ("", format!("verify tafile={}", sink_key.display()), true),
        ("", format!("verify tafile={}", other.ca.display()), false),
        ("", format!("verify tafile={}", other_key.display()), false),
    ]
    .into_iter()
    .enumerate()
    {
        let mut i = Instance::new("smtpd_error_sleep_time = 0");
        let f = i.config_dir().join("tls_policy");
        std::fs::write(&f, format!("[{sink_ip}]:2626 {entry}\n")).unwrap();
        let maps = if entry.is_empty() {
            String::new()
        } else {
            format!("smtp_tls_policy_maps = texthash:{}\n", f.display())
        };
        i.add_main_cf(&format!(
            "relayhost = [{sink_ip}]:2626\n{FAST_RETRY}{maps}{}",
            main.replace("{ca}", &pki.ca.display().to_string())
        ));
        i.start();
        send(&i, &format!("anchored {n}"));
        if delivers {
            delivered_so_far += 1;
            delivered(&sink, delivered_so_far);
            i.wait_log(
                &format!("Verified TLS connection established to {sink_ip}[{sink_ip}]:2626"),
                Duration::from_secs(10),
            );
        } else {
            i.wait_log(
                "status=deferred (Server certificate not verified",
                Duration::from_secs(20),
            );
            assert_eq!(sink.messages().len(), delivered_so_far, "case {n}");
        }
    }
}

/// The sink certificate's SHA-256 fingerprint, as openssl prints it.
fn fingerprint(cert: &std::path::Path) -> String {
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(cert)
        .output()
        .expect("openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .split_once('=')
        .map(|(_, f)| f.to_string())
        .unwrap_or_else(|| panic!("openssl said {text}"))
}

#[test]
fn fingerprint_level_pins_the_server_certificate() {
    // The sink's certificate is issued by a CA neither instance trusts:
    // only its fingerprint makes it acceptable.
    let sink_ip = unique_loopback();
    let mut a = Instance::new("smtpd_error_sleep_time = 0");
    let pki = pki::make(a.config_dir(), "s", &sink_ip);
    let sink = Sink::start_with(
        &sink_ip,
        2626,
        &a.dir.path().join("sink"),
        &[
            "--tls",
            &pki.server_cert.display().to_string(),
            &pki.server_key.display().to_string(),
        ],
    );
    let fp = fingerprint(&pki.server_cert);
    // From the policy table: one of two fingerprints, written in lower
    // case, matches.
    let f = a.config_dir().join("tls_policy");
    std::fs::write(
        &f,
        format!(
            "[{sink_ip}]:2626 fingerprint match=00:11:22|{}\n",
            fp.to_ascii_lowercase()
        ),
    )
    .unwrap();
    a.add_main_cf(&format!(
        "relayhost = [{sink_ip}]:2626\n{FAST_RETRY}smtp_tls_policy_maps = texthash:{}\n",
        f.display()
    ));
    a.start();
    send(&a, "pinned");
    let env = &delivered(&sink, 1)[0];
    assert!(env["tls"].as_str().is_some(), "{env}");
    a.wait_log(
        &format!("Verified TLS connection established to {sink_ip}[{sink_ip}]:2626"),
        Duration::from_secs(10),
    );
    // smtp_tls_security_level = fingerprint with another certificate's
    // fingerprint: deferred, never sent in clear or unchecked.
    let mut b = Instance::new(&format!(
        "smtpd_error_sleep_time = 0\nrelayhost = [{sink_ip}]:2626\n{FAST_RETRY}\
         smtp_tls_security_level = fingerprint\n\
         smtp_tls_fingerprint_cert_match = {}\n",
        "AB:".repeat(31) + "CD"
    ));
    b.start();
    send(&b, "wrong pin");
    b.wait_log("status=deferred", Duration::from_secs(20));
    let line = b
        .log()
        .lines()
        .find(|l| l.contains("status=deferred"))
        .unwrap()
        .to_string();
    assert!(
        line.contains("dsn=4.7.5") && line.contains("Server certificate not verified"),
        "{line}"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        sink.messages().len(),
        1,
        "the wrongly pinned message went out"
    );
    // conf --check names the level without fingerprints.
    let c = Instance::new("smtp_tls_security_level = fingerprint\n");
    let out = c.postern(&["conf", "--check"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("main.cf:") && err.contains("needs smtp_tls_fingerprint_cert_match"),
        "{err}"
    );
}

#[test]
fn policy_entries_set_protocols_ciphers_and_the_plaintext_levels() {
    // A STARTTLS sink that speaks TLS 1.2 at most, and a sink with no TLS;
    // one instance per case, each relaying to one of them with its own
    // main.cf lines and policy table entry.
    let tls_ip = unique_loopback();
    let plain_ip = unique_loopback();
    let dir = tempfile::tempdir().unwrap();
    let pki = pki::make(dir.path(), "s", &tls_ip);
    let tls_sink = Sink::start_with(
        &tls_ip,
        2626,
        &dir.path().join("tls-sink"),
        &[
            "--tls",
            &pki.server_cert.display().to_string(),
            &pki.server_key.display().to_string(),
            "--tls-max",
            "1.2",
        ],
    );
    let plain_sink = Sink::start_with(&plain_ip, 2626, &dir.path().join("plain-sink"), &[]);
    // Each instance must live until its message is out (drop stops it).
    let run = |ip: &str, main: &str, entry: &str, subject: &str| -> Instance {
        let mut i = Instance::new("smtpd_error_sleep_time = 0");
        let table = i.config_dir().join("tls_policy");
        std::fs::write(&table, format!("[{ip}]:2626 {entry}\n")).unwrap();
        i.add_main_cf(&format!(
            "relayhost = [{ip}]:2626\n{FAST_RETRY}smtp_tls_CAfile = {}\nsmtp_tls_policy_maps = texthash:{}\n{main}",
            pki.ca.display(),
            table.display()
        ));
        i.start();
        send(&i, subject);
        i
    };
    let deferred = |i: &Instance, why: &str| {
        i.wait_log(&format!("status=deferred ({why}"), Duration::from_secs(20));
    };

    // protocols= asks for TLS 1.3, which this server lacks: deferred,
    // never sent over TLS 1.2 or in clear.
    let a = run(&tls_ip, "", "encrypt protocols=>=TLSv1.3", "tls13 only");
    deferred(&a, "");
    // protocols= and exclude= that leave this server's TLS 1.2 and one
    // suite: delivered with that suite.
    let _b = run(
        &tls_ip,
        "",
        "encrypt protocols=TLSv1.2 exclude=AES128:CHACHA20",
        "aes256",
    );
    let env = &delivered(&tls_sink, 1)[0];
    assert_eq!(env["tls"], "TLSv1.2", "{env}");
    assert_eq!(env["cipher"], "ECDHE-ECDSA-AES256-GCM-SHA384", "{env}");
    // smtp_tls_mandatory_protocols holds the levels that require TLS
    // (deferred at encrypt), smtp_tls_protocols opportunistic TLS (may
    // delivers over TLS 1.2).
    let tls13 = "smtp_tls_mandatory_protocols = >=TLSv1.3\n";
    let c = run(&tls_ip, tls13, "encrypt", "mandatory");
    deferred(&c, "");
    let _c2 = run(&tls_ip, tls13, "may", "opportunistic");
    let env = &delivered(&tls_sink, 2)[1];
    assert_eq!(env["tls"], "TLSv1.2", "{env}");
    // ciphers=null cannot be honoured: the entry defers, never ignored.
    let d = run(&tls_ip, "", "encrypt ciphers=null", "null");
    deferred(&d, "smtp_tls_policy_maps: [");
    assert!(d.log().contains("ciphers=null"), "{}", d.log());
    // secure with a match= the certificate does not carry: deferred,
    // where the global may would deliver.
    let e = run(&tls_ip, "", "secure match=mx.elsewhere.example", "secure");
    deferred(&e, "Server certificate not verified");

    // none and may entries deliver to a server without STARTTLS although
    // the global level is encrypt; without the entry it defers.
    let enc = "smtp_tls_security_level = encrypt\n";
    let _n = run(&plain_ip, enc, "none", "none entry");
    let _m = run(&plain_ip, enc, "may", "may entry");
    let got = delivered(&plain_sink, 2);
    assert!(got.iter().all(|env| env["tls"].is_null()), "{got:?}");
    let f = run(&plain_ip, enc, "encrypt", "encrypt entry");
    deferred(&f, "TLS is required, but was not offered");

    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(tls_sink.messages().len(), 2, "a deferred message went out");
    assert_eq!(
        plain_sink.messages().len(),
        2,
        "a deferred message went out"
    );
}
