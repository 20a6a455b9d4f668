//! DKIM keys (issue 19's rotation command): `postern dkim keygen` makes
//! RSA and Ed25519 key pairs with aws-lc-rs and the DNS record for them;
//! dkimpy, an independent implementation, signs with each private key and
//! verifies against the published record.
use std::path::Path;
use std::process::Command;

use postern_tests::{bin, python_ok};

/// The TXT record's strings joined, as a resolver hands them to a verifier.
fn txt_value(file: &Path) -> String {
    let text = std::fs::read_to_string(file).unwrap();
    let inner = &text[text.find('(').unwrap() + 1..text.rfind(')').unwrap()];
    inner.split('"').skip(1).step_by(2).collect()
}

fn keygen(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(["dkim", "keygen", "-d", "example.com", "-D"])
        .arg(dir)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn keygen_makes_keys_that_dkimpy_signs_and_verifies_with() {
    let dir = tempfile::tempdir().unwrap();
    for (sel, ty) in [("rsa2026", "rsa"), ("ed2026", "ed25519")] {
        let out = keygen(dir.path(), &["-s", sel, "-t", ty]);
        assert!(out.status.success(), "{out:?}");
        let private = dir.path().join(format!("{sel}.private"));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&private).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let txt = txt_value(&dir.path().join(format!("{sel}.txt")));
        assert!(txt.starts_with(&format!("v=DKIM1; k={ty}; p=")), "{txt}");
        // The printed record is the file's.
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            std::fs::read_to_string(dir.path().join(format!("{sel}.txt"))).unwrap()
        );
        // dkimpy takes PEM for RSA, and the raw 32-byte seed (base64) for
        // Ed25519: the last 32 bytes of the PKCS#8 DER, through openssl.
        let alg = if ty == "rsa" {
            "rsa-sha256"
        } else {
            "ed25519-sha256"
        };
        let key_expr = if ty == "rsa" {
            format!("open({:?}, 'rb').read()", private.display().to_string())
        } else {
            format!(
                "base64.b64encode(subprocess.run(['openssl', 'pkey', '-in', {:?}, '-outform', 'DER'], capture_output=True, check=True).stdout[-32:])",
                private.display().to_string()
            )
        };
        let out = python_ok(&format!(
            "import base64, subprocess, dkim\n\
             msg = b'From: alerts@example.com\\r\\nTo: admin@example.net\\r\\nSubject: disk 91% full\\r\\n\\r\\nsee the appliance\\r\\n'\n\
             sig = dkim.sign(msg, b'{sel}', b'example.com', {key_expr}, include_headers=[b'from', b'to', b'subject'], signature_algorithm=b'{alg}')\n\
             txt = {txt:?}.encode()\n\
             def dns(name, timeout=5):\n    assert name == b'{sel}._domainkey.example.com.', name\n    return txt\n\
             print(dkim.verify(sig + msg, dnsfunc=dns))\n\
             print(dkim.verify(sig + msg.replace(b'91%', b'19%'), dnsfunc=dns))\n"
        ));
        assert_eq!(
            out.split_whitespace().collect::<Vec<_>>(),
            ["True", "False"],
            "{ty}: {out}"
        );
    }
    // Rotation is a new selector: an existing one is never overwritten.
    let before = std::fs::read(dir.path().join("rsa2026.private")).unwrap();
    let out = keygen(dir.path(), &["-s", "rsa2026"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("rsa2026.private exists"),
        "{out:?}"
    );
    assert_eq!(
        std::fs::read(dir.path().join("rsa2026.private")).unwrap(),
        before
    );
    let out = keygen(dir.path(), &["-s", "rsa1024", "-b", "1024"]);
    assert!(!out.status.success(), "a 1024-bit key was made");
}

// ---------------------------------------------------------------------
// Signing as mail leaves (issue 19): keys in the broker, the signature
// made by the smtp client after smtp_generic_maps, checked by dkimpy and
// by opendkim-testmsg against records in a real DNS server on loopback.

use std::time::Duration;

use postern_tests::dns::DnsServer;
use postern_tests::{Instance, Sink, Smtp, unique_loopback, wait_for};

/// The message at the sink whose X-Test-Subject is `subject`.
fn delivered(sink: &Sink, subject: &str) -> Vec<u8> {
    wait_for(
        &format!("delivery of {subject}"),
        Duration::from_secs(30),
        || {
            sink.messages().into_iter().find_map(|(_, c)| {
                String::from_utf8_lossy(&c)
                    .contains(&format!("X-Test-Subject: {subject}\r\n"))
                    .then_some(c)
            })
        },
    )
}

/// (d=, s=) of each DKIM-Signature field, top first.
fn signatures(msg: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(msg);
    let head = &text[..text.find("\r\n\r\n").unwrap_or(text.len())];
    let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    unfolded
        .split("\r\n")
        .filter(|l| l.to_ascii_lowercase().starts_with("dkim-signature:"))
        .map(|l| {
            let tag = |t: &str| {
                l.split(';')
                    .map(|p| p.trim())
                    .find_map(|p| p.strip_prefix(&format!("{t}=")))
                    .unwrap_or_default()
                    .trim()
                    .to_string()
            };
            // The first tag follows the field name.
            let l = l.split_once(':').map_or(l, |(_, v)| v);
            let _ = l;
            (tag("d"), tag("s"))
        })
        .collect()
}

/// dkimpy's verdict on each signature (by index), the keys asked of the
/// loopback DNS server through dnspython.
fn dkimpy(msg: &[u8], dns: &DnsServer) -> Vec<bool> {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m.eml");
    std::fs::write(&m, msg).unwrap();
    let script = format!(
        "import sys, dkim, dns.resolver\n\
         r = dns.resolver.Resolver(configure=False)\n\
         r.nameservers = ['{ip}']\n\
         r.port = {port}\n\
         def txt(name, timeout=5):\n\
         \x20   a = r.resolve(name.decode().rstrip('.'), 'TXT', lifetime=timeout)\n\
         \x20   return b''.join(b''.join(x.strings) for x in a)\n\
         msg = open(sys.argv[1], 'rb').read()\n\
         d = dkim.DKIM(msg)\n\
         n = len([l for l in msg.split(b'\\r\\n\\r\\n')[0].split(b'\\r\\n') if l.lower().startswith(b'dkim-signature:')])\n\
         def ok(i):\n\
         \x20   try:\n\
         \x20       return d.verify(idx=i, dnsfunc=txt)\n\
         \x20   except dkim.ValidationError as e:\n\
         \x20       print(e, file=sys.stderr)\n\
         \x20       return False\n\
         print(' '.join(str(ok(i)) for i in range(n)))\n",
        ip = dns.addr.ip(),
        port = dns.addr.port()
    );
    let out = Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .arg(&m)
        .output()
        .expect("python3-dkim");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|w| w == "True")
        .collect()
}

/// opendkim-testmsg's verdict (it verifies the first signature), with
/// /etc/resolv.conf naming the loopback DNS server in a mount namespace
/// of its own. Ok, or its complaint.
fn opendkim_testmsg(msg: &[u8], dns: &DnsServer, dir: &Path) -> Result<(), String> {
    let resolv = dir.join("resolv.conf");
    std::fs::write(&resolv, format!("nameserver {}\n", dns.addr.ip())).unwrap();
    let m = dir.join("testmsg.eml");
    // opendkim-testmsg reads the message with LF line ends.
    std::fs::write(&m, String::from_utf8_lossy(msg).replace("\r\n", "\n")).unwrap();
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c"])
        .arg(format!(
            "mount --bind {} /etc/resolv.conf && exec /usr/sbin/opendkim-testmsg < {}",
            resolv.display(),
            m.display()
        ))
        .output()
        .expect("unshare, opendkim-testmsg");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("{}: {said}", out.status))
    }
}

/// A key pair of each kind for example.org, the DNS zone publishing them,
/// and the key and signing tables.
struct Keys {
    dir: tempfile::TempDir,
    zone: String,
}

impl Keys {
    fn new() -> Keys {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        // RSA from opendkim-genkey, turned into PKCS#1 as older
        // opendkim-genkey wrote it (Debian 12's writes PKCS#8); Ed25519 from
        // ours (PKCS#8).
        let st = Command::new("/usr/sbin/opendkim-genkey")
            .args(["-b", "2048", "-d", "example.org", "-s", "rsa2026", "-D"])
            .arg(dir.path())
            .status()
            .expect("opendkim-genkey");
        assert!(st.success());
        let k = dir.path().join("rsa2026.private");
        let st = Command::new("openssl")
            .args(["rsa", "-traditional", "-in"])
            .arg(&k)
            .arg("-out")
            .arg(&k)
            .output()
            .expect("openssl");
        assert!(st.status.success(), "{st:?}");
        let out = Command::new(bin())
            .args([
                "dkim",
                "keygen",
                "-d",
                "example.org",
                "-s",
                "ed2026",
                "-t",
                "ed25519",
                "-D",
            ])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let pem = std::fs::read_to_string(dir.path().join("rsa2026.private")).unwrap();
        assert!(
            pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"),
            "PKCS#1 expected"
        );
        let mut k = Keys {
            dir,
            zone: "@ 3600 IN SOA ns.example.org. admin.example.org. 1 3600 600 86400 60\n\
                   @ 3600 IN NS ns.example.org.\n\
                   ns 3600 IN A 127.0.0.1\n"
                .into(),
        };
        // The next RSA selector, for the rotation: published ahead of use.
        let out = Command::new(bin())
            .args(["dkim", "keygen", "-d", "example.org", "-s", "rsa2027", "-D"])
            .arg(k.dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        k.publish("rsa2026");
        k.publish("ed2026");
        k.publish("rsa2027");
        k.write_tables("rsa2026");
        k
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// Adds SEL's record to the zone (TXT strings as the .txt file has them).
    fn publish(&mut self, sel: &str) {
        let text = std::fs::read_to_string(self.dir.path().join(format!("{sel}.txt"))).unwrap();
        let inner = &text[text.find('(').unwrap() + 1..text.rfind(')').unwrap()];
        let strings: Vec<&str> = inner.split('"').skip(1).step_by(2).collect();
        let quoted: Vec<String> = strings.iter().map(|s| format!("\"{s}\"")).collect();
        self.zone.push_str(&format!(
            "{sel}._domainkey 3600 IN TXT {}\n",
            quoted.join(" ")
        ));
    }

    /// The key table (the RSA key of selector RSA named "rsa") and the
    /// signing table: alerts@ signs with RSA, ed@ with Ed25519, the rest of
    /// example.org with both.
    fn write_tables(&self, rsa: &str) {
        std::fs::write(
            self.dir.path().join("KeyTable"),
            format!(
                "rsa  example.org:{rsa}:{}\ned   example.org:ed2026:{}\n",
                self.path(&format!("{rsa}.private")),
                self.path("ed2026.private")
            ),
        )
        .unwrap();
        std::fs::write(
            self.dir.path().join("SigningTable"),
            "alerts@example.org  rsa\ned@example.org  ed\n*@example.org  rsa, ed\n",
        )
        .unwrap();
    }

    fn main_cf(&self) -> String {
        format!(
            "dkim_key_table = texthash:{}\ndkim_signing_table = texthash:{}\n",
            self.path("KeyTable"),
            self.path("SigningTable")
        )
    }
}

fn message(from: &str, subject: &str) -> String {
    format!(
        "From: Appliance <{from}>\r\nTo: ops@example.net\r\nSubject: disk nearly full\r\n\
         Date: Mon, 7 Dec 2026 08:00:00 +0000\r\nMessage-ID: <{subject}@example.org>\r\n\
         X-Test-Subject: {subject}\r\n\r\n/var is 91% full\r\n.leading dot\r\n"
    )
}

fn smtp_send(c: &mut Smtp, from: &str, subject: &str) {
    let r = c.send_mail(from, &["ops@example.net"], &message(from, subject));
    assert!(r.starts_with("250"), "{subject}: {r}");
}

#[test]
fn trusted_mail_leaves_signed_and_independent_verifiers_accept_it() {
    let keys = Keys::new();
    let dns_ip = unique_loopback();
    let dns = postern_tests::dns::start_zones_at(&dns_ip, 53, &[("example.org.", &keys.zone)]);
    let ip = unique_loopback();
    let mut inst = Instance::with_three_listeners(&format!(
        "{}relayhost = [{ip}]:2626\nmynetworks = 127.0.0.1/32\nrelay_domains = example.net\n\
         myorigin = example.org\n\
         transport_maps = inline:{{ nowhere.example=error:nowhere }}\n\
         smtp_generic_maps = inline:{{ root@mx.test.example=alerts@example.org }}\n",
        keys.main_cf()
    ));
    let sink = Sink::start(&ip, 2626, &inst.config_dir().join("sink"));
    assert!(inst.passwd("alice", "correct horse").status.success());
    inst.start();
    let tmp = tempfile::tempdir().unwrap();

    // A SASL login from outside mynetworks, on the submission port: signed.
    python_ok(&format!(
        "import smtplib, ssl\n\
         c = ssl.create_default_context()\n\
         c.check_hostname = False\n\
         c.verify_mode = ssl.CERT_NONE\n\
         s = smtplib.SMTP('{ip}', 2587, local_hostname='laptop.example', timeout=30,\n\
         \x20   source_address=('{src}', 0))\n\
         s.starttls(context=c)\n\
         s.login('alice', 'correct horse')\n\
         s.sendmail('alerts@example.org', ['ops@example.net'], {msg:?}.encode())\n\
         s.quit()\n\
         print('ok')\n",
        ip = inst.ip,
        src = unique_loopback(),
        msg = message("alerts@example.org", "sasl"),
    ));

    // From mynetworks: RSA (alerts@), both (ops@); an outside client with
    // the same From: is not signed.
    let mut c = inst.smtp();
    c.reply();
    c.cmd("EHLO appliance.example.org");
    smtp_send(&mut c, "alerts@example.org", "rsa");
    smtp_send(&mut c, "ops@example.org", "both");
    c.cmd("QUIT");
    let mut o = Smtp::connect_from(&unique_loopback(), &inst.ip, 2525);
    o.reply();
    o.cmd("EHLO outside.example");
    smtp_send(&mut o, "alerts@example.org", "outside");
    o.cmd("QUIT");
    // From sendmail: Ed25519 (ed@); a message whose From: smtp_generic_maps
    // rewrites to alerts@ (RSA) as it leaves.
    inst.sendmail(
        &["-f", "ed@example.org", "ops@example.net"],
        message("ed@example.org", "ed").as_bytes(),
    );
    inst.sendmail(
        &["-f", "root@mx.test.example", "ops@example.net"],
        message("root@mx.test.example", "generic").as_bytes(),
    );
    // A bounce (From: MAILER-DAEMON@example.org), signed with both keys.
    inst.sendmail(
        &["-f", "alerts@example.org", "someone@nowhere.example"],
        message("alerts@example.org", "bounced").as_bytes(),
    );

    let rsa = delivered(&sink, "rsa");
    assert_eq!(signatures(&rsa), [("example.org".into(), "rsa2026".into())]);
    assert_eq!(
        dkimpy(&rsa, &dns),
        [true],
        "{}",
        String::from_utf8_lossy(&rsa)
    );
    opendkim_testmsg(&rsa, &dns, tmp.path()).expect("opendkim-testmsg: RSA from mynetworks");

    let both = delivered(&sink, "both");
    let sigs = signatures(&both);
    assert_eq!(sigs.len(), 2, "{}", String::from_utf8_lossy(&both));
    assert!(
        sigs.contains(&("example.org".into(), "ed2026".into())),
        "{sigs:?}"
    );
    assert_eq!(dkimpy(&both, &dns), [true, true]);

    let ed = delivered(&sink, "ed");
    assert_eq!(signatures(&ed), [("example.org".into(), "ed2026".into())]);
    assert_eq!(
        dkimpy(&ed, &dns),
        [true],
        "{}",
        String::from_utf8_lossy(&ed)
    );
    opendkim_testmsg(&ed, &dns, tmp.path()).expect("opendkim-testmsg: Ed25519 from sendmail");

    let generic = delivered(&sink, "generic");
    let text = String::from_utf8_lossy(&generic);
    assert!(
        text.contains("From: Appliance <alerts@example.org>"),
        "{text}"
    );
    assert_eq!(
        signatures(&generic),
        [("example.org".into(), "rsa2026".into())]
    );
    assert_eq!(dkimpy(&generic, &dns), [true], "{text}");
    opendkim_testmsg(&generic, &dns, tmp.path()).expect("opendkim-testmsg: generic-mapped");

    let bounce = wait_for("the bounce", Duration::from_secs(30), || {
        sink.messages().into_iter().map(|(_, c)| c).find(|c| {
            let t = String::from_utf8_lossy(c);
            t.contains("From: MAILER-DAEMON@example.org") && t.contains("X-Test-Subject: bounced")
        })
    });
    assert_eq!(
        signatures(&bounce).len(),
        2,
        "{}",
        String::from_utf8_lossy(&bounce)
    );
    assert_eq!(dkimpy(&bounce, &dns), [true, true]);

    let sasl = delivered(&sink, "sasl");
    assert_eq!(
        signatures(&sasl),
        [("example.org".into(), "rsa2026".into())]
    );
    assert_eq!(
        dkimpy(&sasl, &dns),
        [true],
        "{}",
        String::from_utf8_lossy(&sasl)
    );

    let outside = delivered(&sink, "outside");
    assert!(
        signatures(&outside).is_empty(),
        "{}",
        String::from_utf8_lossy(&outside)
    );

    // The verifiers can say no: a changed body fails both.
    let tampered = String::from_utf8_lossy(&rsa).replace("91%", "19%");
    assert_eq!(dkimpy(tampered.as_bytes(), &dns), [false]);
    assert!(opendkim_testmsg(tampered.as_bytes(), &dns, tmp.path()).is_err());

    // Rotation: the next selector (made by `postern dkim keygen` and
    // published beside the current one at the start), then a reload.
    keys.write_tables("rsa2027");
    let out = inst.postern(&["reload"]);
    assert!(out.status.success(), "{out:?}");
    inst.wait_log(
        "DKIM key rsa for d=example.org s=rsa2027",
        Duration::from_secs(10),
    );
    let mut c = inst.smtp();
    c.reply();
    c.cmd("EHLO appliance.example.org");
    smtp_send(&mut c, "alerts@example.org", "rotated");
    c.cmd("QUIT");
    let rotated = delivered(&sink, "rotated");
    assert_eq!(
        signatures(&rotated),
        [("example.org".into(), "rsa2027".into())]
    );
    assert_eq!(dkimpy(&rotated, &dns), [true]);
    opendkim_testmsg(&rotated, &dns, tmp.path()).expect("opendkim-testmsg: the new selector");
    // Mail signed before still verifies: its selector is still published.
    assert_eq!(dkimpy(&rsa, &dns), [true]);
    let log = inst.log();
    assert!(
        log.contains("DKIM-Signature field added (s=rsa2027, d=example.org)"),
        "{log}"
    );
    inst.stop();
}

/// No jailed role can open a DKIM key file: the broker read them before
/// its jail. (The test, as root, can: the check is not vacuous.)
#[test]
fn no_jailed_role_can_open_a_dkim_key() {
    let keys = Keys::new();
    let inst = Instance::new(&keys.main_cf());
    for k in ["rsa2026.private", "ed2026.private"] {
        assert!(std::fs::File::open(keys.dir.path().join(k)).is_ok());
    }
    for role in [
        "broker", "smtpd", "cleanup", "qmgr", "local", "bounce", "resolver", "smtp", "auth",
        "pickup",
    ] {
        let out = inst.postern(&["probe", role]);
        assert!(out.status.success(), "probe {role}: {out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let check = &v["checks"]["open_dkim_keys"];
        assert_eq!(check["ok"], false, "{role} opened a DKIM key: {v}");
        assert!(
            check["error"]
                .as_str()
                .unwrap_or_default()
                .contains("2 key file(s)"),
            "{role}: {check}"
        );
    }
}

/// `postern conf --check` reads the key table and every key, and names the
/// file and line of what is wrong; a signing table without keys is an error.
#[test]
fn conf_check_names_the_key_table_line_of_a_bad_key() {
    let keys = Keys::new();
    let table = keys.dir.path().join("KeyTable");
    let weak = keys.dir.path().join("weak.private");
    let st = Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&weak)
        .arg("512")
        .output()
        .unwrap();
    assert!(st.status.success(), "{st:?}");
    std::fs::write(
        &table,
        format!(
            "rsa   example.org:rsa2026:{}\nweak  example.org:weak:{}\nlost  example.org:lost:{}\nbad   example.org-no-selector\n",
            keys.path("rsa2026.private"),
            weak.display(),
            keys.path("missing.private")
        ),
    )
    .unwrap();
    let inst = Instance::new(&keys.main_cf());
    let out = inst.postern(&["conf", "--check"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    let t = table.display().to_string();
    assert!(err.contains(&format!("{t}:4")), "{err}");
    std::fs::write(
        &table,
        format!(
            "rsa   example.org:rsa2026:{}\nweak  example.org:weak:{}\nlost  example.org:lost:{}\n",
            keys.path("rsa2026.private"),
            weak.display(),
            keys.path("missing.private")
        ),
    )
    .unwrap();
    let out = inst.postern(&["conf", "--check"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("{t}:2: error: dkim_key_table: weak")),
        "{err}"
    );
    assert!(err.contains("RFC 8301"), "{err}");
    assert!(
        err.contains(&format!("{t}:3: error: dkim_key_table: lost")),
        "{err}"
    );
    // The signing table names "ed", which the key table no longer has.
    assert!(
        err.contains("the key name \"ed\" is not in dkim_key_table"),
        "{err}"
    );
    // A signing table without a key table.
    let inst = Instance::new(&format!(
        "dkim_signing_table = texthash:{}\n",
        keys.path("SigningTable")
    ));
    let out = inst.postern(&["conf", "--check"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("dkim_key_table is empty"),
        "{err}"
    );
}

/// `msg` signed by dkimpy with KEY's private key (selector = the file's stem).
fn dkimpy_sign(msg: &str, keys: &Keys, selector: &str) -> String {
    let out = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import sys, dkim\n\
             msg = sys.argv[1].encode()\n\
             key = open(sys.argv[2], 'rb').read()\n\
             sig = dkim.sign(msg, sys.argv[3].encode(), b'example.org', key, include_headers=[b'from', b'to', b'subject'])\n\
             sys.stdout.write((sig + msg).decode())\n",
            msg,
            &keys.path(&format!("{selector}.private")),
            selector,
        ])
        .output()
        .expect("python3-dkim");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The Authentication-Results fields of a message, unfolded.
fn auth_results(msg: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(msg);
    let head = &text[..text.find("\r\n\r\n").unwrap_or(text.len())];
    head.replace("\r\n\t", " ")
        .replace("\r\n ", " ")
        .split("\r\n")
        .filter(|l| l.starts_with("Authentication-Results:"))
        .map(str::to_string)
        .collect()
}

/// The DKIM signatures of mail from outside are checked (keys from the
/// loopback DNS server through the resolver role) and the verdict is one
/// Authentication-Results field; a forged one claiming our authserv-id is
/// removed; mail from mynetworks is not checked.
#[test]
fn inbound_dkim_is_checked_and_the_verdict_written() {
    let keys = Keys::new();
    let dns_ip = unique_loopback();
    let _dns = postern_tests::dns::start_zones_at(&dns_ip, 53, &[("example.org.", &keys.zone)]);
    let ip = unique_loopback();
    let mut inst = Instance::new(&format!(
        "relayhost = [{ip}]:2626\nmynetworks = 127.0.0.1/32\nrelay_domains = example.net\n\
         dns_nameservers = {dns_ip}\nauthentication_checks = dkim\n\
         authentication_signature_limit = 3\n"
    ));
    let sink = Sink::start(&ip, 2626, &inst.config_dir().join("sink"));
    inst.start();
    let signed = dkimpy_sign(&message("alerts@example.org", "good"), &keys, "rsa2026");
    let broken = dkimpy_sign(&message("alerts@example.org", "broken"), &keys, "rsa2026")
        .replace("91%", "19%");
    let resubjected = dkimpy_sign(
        &message("alerts@example.org", "resubjected"),
        &keys,
        "rsa2026",
    )
    .replace("Subject: disk nearly full", "Subject: disk empty");
    let forged = format!(
        "Authentication-Results: mx.test.example; dkim=pass header.d=example.org\r\n\
         Authentication-Results: other.example; spf=pass\r\n{}",
        message("alerts@example.org", "forged")
    );
    // Four signatures, over the limit of three: the first three count.
    let mut many = message("alerts@example.org", "many");
    for _ in 0..4 {
        many = dkimpy_sign(&many, &keys, "rsa2026");
    }
    let mut o = Smtp::connect_from(&unique_loopback(), &inst.ip, 2525);
    o.reply();
    o.cmd("EHLO outside.example");
    for m in [&signed, &broken, &resubjected, &forged, &many] {
        // Dot-stuffed, as any SMTP client sends it.
        let r = o.send_mail(
            "alerts@example.org",
            &["ops@example.net"],
            &m.replace("\r\n.", "\r\n.."),
        );
        assert!(r.starts_with("250"), "{r}");
    }
    o.cmd("QUIT");
    let mut c = inst.smtp();
    c.reply();
    c.cmd("EHLO appliance.example.org");
    let r = c.send_mail(
        "alerts@example.org",
        &["ops@example.net"],
        &message("alerts@example.org", "inside"),
    );
    assert!(r.starts_with("250"), "{r}");
    c.cmd("QUIT");

    let ar = auth_results(&delivered(&sink, "good"));
    assert_eq!(ar.len(), 1, "{ar:?}");
    let fields: Vec<&str> = ar[0]
        .trim_start_matches("Authentication-Results:")
        .split(';')
        .map(str::trim)
        .collect();
    assert_eq!(fields[0], "mx.test.example");
    let dkim: Vec<&str> = fields[1].split_whitespace().collect();
    assert_eq!(dkim[0], "dkim=pass", "{ar:?}");
    // dkimpy sets i=@example.org, which RFC 8601 reports instead of d=.
    assert!(dkim.contains(&"header.i=@example.org"), "{ar:?}");
    assert!(dkim.contains(&"header.s=rsa2026"), "{ar:?}");

    // A changed body: the body hash fails (reported as Gmail and mail-auth
    // do); a changed signed header: the signature fails.
    let ar = auth_results(&delivered(&sink, "broken"));
    assert_eq!(ar.len(), 1, "{ar:?}");
    assert!(
        ar[0].contains("; dkim=neutral (body hash did not verify)"),
        "{ar:?}"
    );
    let ar = auth_results(&delivered(&sink, "resubjected"));
    assert_eq!(ar.len(), 1, "{ar:?}");
    assert!(ar[0].contains("; dkim=fail"), "{ar:?}");

    let ar = auth_results(&delivered(&sink, "forged"));
    assert_eq!(ar.len(), 2, "{ar:?}");
    assert!(
        ar[0].starts_with("Authentication-Results: mx.test.example; dkim=none"),
        "{ar:?}"
    );
    assert_eq!(ar[1], "Authentication-Results: other.example; spf=pass");
    assert!(
        inst.log()
            .contains("removed 1 Authentication-Results header(s) claiming mx.test.example")
    );

    let ar = auth_results(&delivered(&sink, "many"));
    assert_eq!(ar.len(), 1, "{ar:?}");
    assert_eq!(ar[0].matches("dkim=pass").count(), 3, "{ar:?}");
    assert!(
        inst.log()
            .contains("4 DKIM signatures, the first 3 checked")
    );

    assert!(auth_results(&delivered(&sink, "inside")).is_empty());
    inst.stop();
}
