//! TLS with every private key in the broker: real clients (openssl
//! s_client, Python ssl/smtplib) against STARTTLS on port 25 and implicit
//! TLS on port 465, the STARTTLS injection class, the jails around the key
//! files, and what happens when the broker dies mid-handshake.
use std::process::Command;
use std::time::{Duration, Instant};

use postern_tests::pki::{self, Pki};
use postern_tests::{Instance, python_ok, wait_for};

const WRAPPER_PORT: u16 = 2465;

/// A Python function that reads one whole SMTP reply from a file object.
const PY_REPLY: &str = r#"def reply(f):
    lines = []
    while True:
        l = f.readline().decode()
        lines.append(l)
        if len(l) < 4 or l[3] == " ": return "".join(lines)
"#;

/// An instance with a CA-issued server certificate (chain file: key, leaf,
/// CA) and the three listeners of the embedded master.cf.
fn tls_instance(extra: &str) -> (Instance, Pki) {
    let mut inst = Instance::with_three_listeners("");
    let pki = pki::make(inst.config_dir(), "t", "mx.test.example");
    inst.add_main_cf(&format!(
        "smtpd_tls_chain_files = {}\nsmtpd_error_sleep_time = 0\n{extra}",
        pki.server_chain.display()
    ));
    inst.start();
    (inst, pki)
}

/// `openssl s_client` with the test CA; returns its whole output.
fn s_client(inst: &Instance, pki: &Pki, port: u16, starttls: bool) -> String {
    s_client_with(inst, pki, port, starttls, &[])
}

/// `openssl s_client` with `extra` arguments (`-tls1_2`, `-cipher ...`).
fn s_client_with(inst: &Instance, pki: &Pki, port: u16, starttls: bool, extra: &[&str]) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args(extra);
    cmd.args(["s_client", "-connect", &format!("{}:{port}", inst.ip)])
        .args(["-servername", "mx.test.example", "-showcerts"])
        .arg("-CAfile")
        .arg(&pki.ca)
        .args([
            "-verify_hostname",
            "mx.test.example",
            "-verify_return_error",
        ]);
    if starttls {
        cmd.args(["-starttls", "smtp"]);
    }
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl (apt-get install openssl)");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_verified_chain(out: &str) {
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    // The whole chain the admin configured: leaf first, then the CA.
    assert!(
        out.contains(" 0 s:CN = mx.test.example") || out.contains(" 0 s:CN=mx.test.example"),
        "{out}"
    );
    assert!(
        out.contains(" 1 s:CN = Postern Test CA t") || out.contains(" 1 s:CN=Postern Test CA t"),
        "{out}"
    );
    assert!(out.contains("TLSv1.3"), "{out}");
}

#[test]
fn openssl_completes_starttls_and_implicit_tls_with_the_configured_chain() {
    let (inst, pki) = tls_instance("");
    assert_verified_chain(&s_client(&inst, &pki, 2525, true));
    assert_verified_chain(&s_client(&inst, &pki, WRAPPER_PORT, false));
    inst.wait_log("postfix/submissions/smtpd", Duration::from_secs(5));
    inst.wait_log(
        "Anonymous TLS connection established from unknown[127.0.0.1]: TLSv1.3 with cipher",
        Duration::from_secs(5),
    );
    // TLS 1.2 works too, and nothing older.
    let tls12 = Command::new("openssl")
        .args([
            "s_client",
            "-tls1_2",
            "-connect",
            &format!("{}:{WRAPPER_PORT}", inst.ip),
        ])
        .arg("-CAfile")
        .arg(&pki.ca)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&tls12.stdout);
    assert!(
        text.contains("Protocol  : TLSv1.2") || text.contains("TLSv1.2"),
        "{text}"
    );
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    let tls11 = Command::new("openssl")
        .args([
            "s_client",
            "-tls1_1",
            "-connect",
            &format!("{}:{WRAPPER_PORT}", inst.ip),
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        !tls11.status.success(),
        "TLS 1.1 was accepted: {}",
        String::from_utf8_lossy(&tls11.stdout)
    );
}

#[test]
fn smtplib_starttls_delivers_with_tls_in_the_received_header() {
    let (inst, pki) = tls_instance("");
    // smtplib checks the certificate against the address it connects to;
    // make it check the name the certificate is for.
    let script = format!(
        r#"
import smtplib, ssl
_wrap = ssl.SSLContext.wrap_socket
def wrap(self, sock, *a, **k):
    k["server_hostname"] = "mx.test.example"
    return _wrap(self, sock, *a, **k)
ssl.SSLContext.wrap_socket = wrap
ctx = ssl.create_default_context(cafile="{ca}")
s = smtplib.SMTP("{ip}", 2525, local_hostname="client.example", timeout=30)
s.ehlo()
assert s.has_extn("starttls")
s.starttls(context=ctx)
s.ehlo()
assert not s.has_extn("starttls"), "STARTTLS offered again inside TLS"
s.sendmail("a@example.org", ["root@localhost"], "Subject: over starttls\r\n\r\nhi\r\n")
s.quit()
# Port 465 completes the handshake and greets; it takes mail only after a
# login (tests/tests/sasl.rs).
s = smtplib.SMTP_SSL("{ip}", {wport}, local_hostname="client.example", context=ctx, timeout=30)
s.ehlo()
assert "PLAIN" in s.esmtp_features["auth"]
s.quit()
print("ok")
"#,
        ca = pki.ca.display(),
        ip = inst.ip,
        wport = WRAPPER_PORT
    );
    python_ok(&script);
    let msgs = wait_for("the message delivered", Duration::from_secs(20), || {
        let m = inst.maildir("root");
        (m.len() == 1).then_some(m)
    });
    for m in &msgs {
        assert!(m.contains("with ESMTPS id"), "{m}");
        assert!(m.contains("(using TLSv1.3 with cipher TLS_"), "{m}");
    }
}

/// RFC 3207 and CVE-2011-0411: commands pipelined with STARTTLS, before
/// the handshake, are never executed inside the TLS session.
#[test]
fn commands_pipelined_before_starttls_are_discarded() {
    let (inst, pki) = tls_instance("");
    let script = format!(
        r#"
import socket, ssl
s = socket.create_connection(("{ip}", 2525), timeout=30)
f = s.makefile("rb")
{reply_fn}assert reply(f).startswith("220")
s.sendall(b"EHLO client.example\r\n")
assert "STARTTLS" in reply(f)
s.sendall(b"STARTTLS\r\nMAIL FROM:<injected@example.org>\r\n")
r = reply(f)
assert r.startswith("220 2.0.0 Ready to start TLS"), r
ctx = ssl.create_default_context(cafile="{ca}")
t = ctx.wrap_socket(s, server_hostname="mx.test.example")
g = t.makefile("rb")
t.sendall(b"EHLO client.example\r\n")
r = reply(g)
assert r.startswith("250-"), r
t.sendall(b"RCPT TO:<root@localhost>\r\n")
r = reply(g)
assert r.startswith("503 5.5.1 Error: need MAIL command"), r
t.sendall(b"QUIT\r\n")
print(reply(g))
"#,
        ip = inst.ip,
        ca = pki.ca.display(),
        reply_fn = PY_REPLY
    );
    python_ok(&script);
    inst.wait_log(
        "discarding 34 bytes of input pipelined after STARTTLS",
        Duration::from_secs(5),
    );
    assert!(!inst.log().contains("injected@example.org"));
}

#[test]
fn encrypt_level_refuses_mail_before_starttls_and_repeats_are_refused() {
    let (inst, pki) = tls_instance("");
    let script = format!(
        r#"
import smtplib, ssl
s = smtplib.SMTP("{ip}", 2587, local_hostname="client.example", timeout=30)
s.ehlo()
code, msg = s.mail("a@example.org")
assert code == 530 and b"5.7.0 Must issue a STARTTLS command first" in msg, (code, msg)
ctx = ssl.create_default_context(cafile="{ca}")
ctx.check_hostname = False
s.starttls(context=ctx)
s.ehlo()
code, msg = s.docmd("STARTTLS")
assert code == 554 and b"TLS already active" in msg, (code, msg)
code, msg = s.mail("a@example.org")
assert code == 250, (code, msg)
s.quit()
print("ok")
"#,
        ip = inst.ip,
        ca = pki.ca.display()
    );
    python_ok(&script);
}

/// A broker that dies (and with it, the only copy of the key) makes
/// handshakes fail cleanly and STARTTLS answer 454, never crashes smtpd,
/// and TLS works again once the master has restarted the broker.
#[test]
fn killing_the_broker_fails_handshakes_cleanly_then_tls_recovers() {
    let (inst, pki) = tls_instance("");
    let smtpd = inst.pid_of("smtpd").unwrap();
    let handshake = || {
        let out = Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &format!("{}:{WRAPPER_PORT}", inst.ip),
            ])
            .arg("-CAfile")
            .arg(&pki.ca)
            .args(["-verify_return_error"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        out.status.success()
            && String::from_utf8_lossy(&out.stdout).contains("Verify return code: 0 (ok)")
    };
    let kill = |pid: u32| {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    };
    assert!(handshake());
    // Kill the broker as soon as it is back, five times: the master's
    // restart backoff doubles each time (100 ms ... 1.6 s), which leaves a
    // window with no key to sign with.
    let mut broker = inst.pid_of("broker").unwrap();
    for _ in 0..5 {
        kill(broker);
        let old = broker;
        broker = wait_for("the broker back", Duration::from_secs(30), || {
            inst.pid_of("broker").filter(|p| *p != old)
        });
    }
    kill(broker);
    let (mut failed, mut refused) = (0, 0);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) && (failed == 0 || refused == 0) {
        if !handshake() {
            failed += 1;
        }
        let mut c = inst.smtp();
        assert!(c.reply().starts_with("220"));
        assert!(c.cmd("EHLO client.example").starts_with("250"));
        let r = c.cmd("STARTTLS");
        if r.starts_with("454 4.7.0 TLS not available due to local problem") {
            refused += 1;
            // The session goes on in plaintext.
            assert!(c.cmd("NOOP").starts_with("250"));
        } else {
            assert!(r.starts_with("220"), "{r}");
        }
    }
    assert!(failed > 0, "no handshake failed while the broker was away");
    assert!(
        refused > 0,
        "STARTTLS was never answered 454 while the broker was away"
    );
    wait_for(
        "a handshake after the broker is back",
        Duration::from_secs(30),
        || handshake().then_some(()),
    );
    // smtpd never crashed.
    assert_eq!(inst.pid_of("smtpd"), Some(smtpd));
    inst.wait_log("key service reconnected", Duration::from_secs(5));
}

/// The key files are read by the broker before its jail; no jailed process
/// (smtpd and smtp least of all) can open them.
#[test]
fn no_jailed_role_can_open_the_key_files() {
    let inst = Instance::new("");
    let pki = pki::make(inst.config_dir(), "j", "mx.test.example");
    let main = inst.config_dir().join("main.cf");
    let text = std::fs::read_to_string(&main).unwrap();
    std::fs::write(
        &main,
        format!(
            "{text}smtpd_tls_cert_file = {}\nsmtpd_tls_key_file = {}\nsmtp_tls_cert_file = {}\nsmtp_tls_key_file = {}\n",
            pki.server_cert.display(),
            pki.server_key.display(),
            pki.client_cert.display(),
            pki.client_key.display()
        ),
    )
    .unwrap();
    for role in [
        "smtpd", "smtp", "broker", "cleanup", "qmgr", "local", "bounce", "resolver",
    ] {
        let out = inst.postern(&["probe", role]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "probe {role}: {e}: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let c = &v["checks"]["open_tls_keys"];
        assert_eq!(c["ok"], false, "{role} opened a key file: {v}");
        let e = c["error"].as_str().unwrap_or_default();
        assert!(
            e.contains("denied") || e.contains("not permitted"),
            "{role}: {e}"
        );
    }
}

/// Exim CVE-2026-45185's shape: the client ends TLS (close_notify) in the
/// middle of a BDAT chunk and sends cleartext in the same segment. The
/// session ends there: nothing after the teardown is read as SMTP, and
/// nothing is queued.
#[test]
fn close_notify_in_the_middle_of_bdat_ends_the_session() {
    let (inst, pki) = tls_instance("");
    let script = format!(
        r#"
import socket, ssl
s = socket.create_connection(("{ip}", 2525), timeout=30)
f = s.makefile("rb")
{reply_fn}assert reply(f).startswith("220")
s.sendall(b"EHLO client.example\r\nSTARTTLS\r\n")
assert "STARTTLS" in reply(f)
assert reply(f).startswith("220 2.0.0")
# TLS over memory buffers, so the test decides what goes in each segment.
ctx = ssl.create_default_context(cafile="{ca}")
inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
o = ctx.wrap_bio(inc, out, server_hostname="mx.test.example")
def pump():
    data = out.read()
    if data: s.sendall(data)
def fill():
    d = s.recv(65536)
    assert d, "server closed during the handshake"
    inc.write(d)
while True:
    try:
        o.do_handshake(); pump(); break
    except ssl.SSLWantReadError:
        pump(); fill()
buf = b""
def treply():
    global buf
    while True:
        while b"\r\n" in buf:
            i = buf.index(b"\r\n") + 2
            l, buf = buf[:i], buf[i:]
            if len(l) < 6 or l[3:4] == b" ": return l.decode()
        try:
            buf += o.read(65536)
        except ssl.SSLWantReadError:
            fill()
o.write(b"EHLO client.example\r\n"); pump()
assert treply().startswith("250 ")
o.write(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<root@localhost>\r\n"); pump()
assert treply().startswith("250"); assert treply().startswith("250")
o.write(b"BDAT 100 LAST\r\nSubject: half\r\n\r\n"); pump()
# close_notify, then cleartext in the same write.
try:
    o.unwrap()
except ssl.SSLWantReadError:
    pass
s.sendall(out.read() + b"rest of the chunk\r\n" + b"x" * 64 + b"\r\nMAIL FROM:<evil@example.org>\r\nRCPT TO:<root@localhost>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n.\r\nQUIT\r\n")
s.settimeout(20)
got = b""
while True:
    try:
        d = s.recv(65536)
    except ConnectionResetError:
        break
    if not d: break
    got += d
# Anything the server sent is TLS records (an alert), never a cleartext reply.
assert not got[:1].isdigit(), got
print(len(got))
"#,
        ip = inst.ip,
        ca = pki.ca.display(),
        reply_fn = PY_REPLY
    );
    python_ok(&script);
    inst.wait_log("lost connection after BDAT from", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    let log = inst.log();
    assert!(!log.contains("evil@example.org"), "{log}");
    assert!(!log.contains("smuggled"), "{log}");
    assert!(inst.maildir("root").is_empty());
    assert!(inst.queue_json().is_empty(), "{:?}", inst.queue_json());
}

/// Postfix's 2026 ticket-scope fix: a session ticket issued on one
/// listener must not resume a session on another. A ticket from port 25
/// resumes on port 25 (the control: resumption works at all) and is
/// refused, with a full handshake, on 587 (STARTTLS) and 465 (implicit).
#[test]
fn a_ticket_from_port_25_is_not_resumed_on_587_or_465() {
    let (inst, pki) = tls_instance("");
    let script = format!(
        r#"
import socket, ssl
ctx = ssl.create_default_context(cafile="{ca}")
{reply_fn}def session(t):
    g = t.makefile("rb")
    # Reading application data lets the client take the ticket, which the
    # server sends right after the handshake.
    t.sendall(b"EHLO client.example\r\n"); assert reply(g).startswith("250")
    t.sendall(b"QUIT\r\n"); reply(g)
    out = (t.session_reused, t.session)
    t.close()
    return out
def starttls(port, sess=None):
    s = socket.create_connection(("{ip}", port), timeout=30)
    f = s.makefile("rb")
    assert reply(f).startswith("220")
    s.sendall(b"EHLO client.example\r\n"); assert "STARTTLS" in reply(f)
    s.sendall(b"STARTTLS\r\n"); assert reply(f).startswith("220")
    return session(ctx.wrap_socket(s, server_hostname="mx.test.example", session=sess))
def implicit(port, sess):
    s = socket.create_connection(("{ip}", port), timeout=30)
    t = ctx.wrap_socket(s, server_hostname="mx.test.example", session=sess)
    assert reply(t.makefile("rb")).startswith("220")
    return session(t)
reused, ticket = starttls(2525)
assert not reused
reused, _ = starttls(2525, ticket)
assert reused, "control: a port-25 ticket must resume on port 25"
reused, _ = starttls(2587, ticket)
assert not reused, "a port-25 ticket resumed a session on 587"
reused, _ = implicit({wport}, ticket)
assert not reused, "a port-25 ticket resumed a session on 465"
print("ok")
"#,
        ip = inst.ip,
        ca = pki.ca.display(),
        reply_fn = PY_REPLY,
        wport = WRAPPER_PORT
    );
    assert!(python_ok(&script).contains("ok"));
    still_handshakes(&inst, &pki);
}

/// After refused tickets, plain handshakes still work on every port.
fn still_handshakes(inst: &Instance, pki: &Pki) {
    assert_verified_chain(&s_client(inst, pki, 2525, true));
    assert_verified_chain(&s_client(inst, pki, WRAPPER_PORT, false));
}

/// A certificate renewal: `postern reload` hands the broker the renewed
/// files (opened by the master) and the broker keeps its pid. A broken
/// renewal keeps the current certificate; a good one is presented by the
/// next handshake.
#[test]
fn reload_renews_the_certificate_without_restarting_the_broker() {
    let (inst, pki) = tls_instance("");
    assert_verified_chain(&s_client(&inst, &pki, WRAPPER_PORT, false));
    let broker = inst.pid_of("broker").unwrap();
    let chain = pki.server_chain.clone();
    let reload = || {
        let out = inst.postern(&["reload"]);
        assert!(out.status.success(), "{out:?}");
        let said = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(said.contains("broker reloaded in place"), "{said}");
    };
    // A renewal gone wrong (a truncated file): TLS keeps the current pair.
    std::fs::write(&chain, "-----BEGIN PRIVATE KEY-----\n").unwrap();
    reload();
    inst.wait_log(
        "reload -- cannot load the new smtpd key",
        Duration::from_secs(10),
    );
    assert_verified_chain(&s_client(&inst, &pki, WRAPPER_PORT, false));
    // The renewal: a new key and certificate from another CA, in the file
    // the configuration already names.
    let renewed = pki::make(inst.config_dir(), "r", "mx.test.example");
    std::fs::copy(&renewed.server_chain, &chain).unwrap();
    reload();
    inst.wait_log(
        "reload -- smtpd key and certificate",
        Duration::from_secs(10),
    );
    let presents_renewed = |port: u16, starttls: bool| {
        let out = s_client(&inst, &renewed, port, starttls);
        (out.contains("Verify return code: 0 (ok)")
            && (out.contains(" 1 s:CN = Postern Test CA r")
                || out.contains(" 1 s:CN=Postern Test CA r")))
        .then_some(())
    };
    wait_for(
        "the renewed certificate on 465",
        Duration::from_secs(10),
        || presents_renewed(WRAPPER_PORT, false),
    );
    wait_for(
        "the renewed certificate on 25",
        Duration::from_secs(10),
        || presents_renewed(2525, true),
    );
    assert_eq!(inst.pid_of("broker"), Some(broker), "the broker restarted");
    // Mail still flows through the same broker.
    let mut c = inst.smtp();
    assert!(c.reply().starts_with("220"));
    assert!(c.cmd("EHLO client.example").starts_with("250"));
    assert!(c.cmd("QUIT").starts_with("221"));
}

/// `openssl` output of a certificate's SHA-256 fingerprint and its public
/// key's, in Postfix's `AB:CD:...` form.
fn fingerprints(cert: &std::path::Path) -> (String, String) {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(cert)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let fp = text.trim().rsplit('=').next().unwrap().to_string();
    let script = format!(
        "openssl x509 -pubkey -noout -in '{}' | openssl pkey -pubin -outform DER | openssl dgst -sha256 -c",
        cert.display()
    );
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let pk = text.trim().rsplit(' ').next().unwrap().to_ascii_uppercase();
    assert_eq!(fp.len(), 95, "{fp}");
    assert_eq!(pk.len(), 95, "{pk}");
    (fp, pk)
}

/// smtpd_tls_ask_ccert with check_ccert_access, permit_tls_clientcerts
/// (relay_clientcerts) and permit_tls_all_clientcerts, through Python's
/// ssl with real client certificates: one from the CA in smtpd_tls_CAfile,
/// one self-signed.
#[test]
fn client_certificates_decide_relaying_and_access() {
    let mut inst = Instance::with_three_listeners("");
    let pki = pki::make(inst.config_dir(), "t", "mx.test.example");
    let dir = inst.config_dir().to_path_buf();
    // A self-signed client certificate nobody vouches for.
    let rogue_key = dir.join("rogue-key.pem");
    let rogue_cert = dir.join("rogue-cert.pem");
    let st = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args([
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=rogue.example",
            "-keyout",
        ])
        .arg(&rogue_key)
        .arg("-out")
        .arg(&rogue_cert)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let (_, good_pk) = fingerprints(&pki.client_cert);
    let (rogue_fp, _) = fingerprints(&rogue_cert);
    let table = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let spec = format!("hash:{}", path.display());
        assert!(inst.postern(&["map", "build", &spec]).status.success());
        spec
    };
    let relay = table("relaycerts", &format!("{good_pk} client.mx.test.example\n"));
    let ccerts = table("ccerts", &format!("{rogue_fp} REJECT Not this one\n"));
    inst.add_main_cf(&format!(
        "smtpd_tls_chain_files = {chain}\n\
         smtpd_error_sleep_time = 0\n\
         mynetworks = 10.0.0.0/8\n\
         smtpd_tls_ask_ccert = yes\n\
         smtpd_tls_CAfile = {ca}\n\
         relay_clientcerts = {relay}\n\
         smtpd_relay_restrictions = check_recipient_access inline:{{ all@remote.example=permit_tls_all_clientcerts }}, permit_tls_clientcerts, reject_unauth_destination\n\
         smtpd_recipient_restrictions = check_ccert_access {ccerts}\n",
        chain = pki.server_chain.display(),
        ca = pki.ca.display(),
    ));
    inst.start();
    let script = format!(
        r#"
import smtplib, ssl, sys
def rcpts(cert, key, addrs):
    ctx = ssl.create_default_context(cafile="{ca}")
    ctx.check_hostname = False
    if cert:
        ctx.load_cert_chain(cert, key)
    s = smtplib.SMTP("{ip}", 2525, local_hostname="client.example", timeout=30)
    s.starttls(context=ctx)
    s.ehlo()
    s.mail("a@client.example")
    out = []
    for a in addrs:
        code, text = s.rcpt(a)
        out.append("%d %s" % (code, text.decode()))
        s.rset()
        s.mail("a@client.example")
    s.quit()
    return out
good = rcpts("{cc}", "{ck}", ["x@remote.example", "all@remote.example", "root@localhost"])
none = rcpts(None, None, ["x@remote.example", "all@remote.example", "root@localhost"])
rogue = rcpts("{rc}", "{rk}", ["x@remote.example", "all@remote.example", "root@localhost"])
for name, r in (("good", good), ("none", none), ("rogue", rogue)):
    for line in r:
        print(name, line)
"#,
        ca = pki.ca.display(),
        ip = inst.ip,
        cc = pki.client_cert.display(),
        ck = pki.client_key.display(),
        rc = rogue_cert.display(),
        rk = rogue_key.display(),
    );
    let out = python_ok(&script);
    let lines: Vec<&str> = out.lines().collect();
    let relay_denied = "554 5.7.1 <x@remote.example>: Relay access denied";
    let want = [
        // The CA's certificate, listed in relay_clientcerts by its public
        // key: relaying, and permit_tls_all_clientcerts too.
        "good 250 2.1.5 Ok".to_string(),
        "good 250 2.1.5 Ok".to_string(),
        "good 250 2.1.5 Ok".to_string(),
        // No certificate: no relaying.
        format!("none {relay_denied}"),
        "none 554 5.7.1 <all@remote.example>: Relay access denied".to_string(),
        "none 250 2.1.5 Ok".to_string(),
        // Self-signed: not trusted, not listed; and check_ccert_access
        // refuses it by its fingerprint, naming its CommonName.
        format!("rogue {relay_denied}"),
        "rogue 554 5.7.1 <all@remote.example>: Relay access denied".to_string(),
        "rogue 554 5.7.1 <rogue.example>: Client certificate rejected: Not this one".to_string(),
    ];
    assert_eq!(
        lines,
        want.iter().map(String::as_str).collect::<Vec<_>>(),
        "{out}"
    );
    // smtpd logs as it replies; the lines reach the log a moment later.
    for word in ["Trusted", "Anonymous", "Untrusted"] {
        inst.wait_log(
            &format!("{word} TLS connection established from unknown[127.0.0.1]: TLSv1.3"),
            Duration::from_secs(10),
        );
    }
    inst.wait_log(
        "NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 554 5.7.1 <rogue.example>: Client certificate rejected: Not this one; from=<a@client.example> to=<root@localhost> proto=ESMTP helo=<client.example>",
        Duration::from_secs(10),
    );
}

/// Postern relaying to Postern over STARTTLS: both ends offer
/// X25519MLKEM768 first (the aws-lc-rs provider), so it is what they
/// agree on, and each side's TLS log line names it.
#[test]
fn postern_to_postern_negotiates_post_quantum_key_exchange() {
    // Another name: A takes its own name in a greeting for a loop.
    let (mut b, _pki) = tls_instance("myhostname = peer.test.example\n");
    b.start();
    let mut a = Instance::new(&format!(
        "relayhost = [{}]:2525\nsmtp_tls_security_level = encrypt\n",
        b.ip
    ));
    a.start();
    let r = a.greeted().send_mail(
        "s@example.org",
        &["r@elsewhere.example"],
        "Subject: pq\r\n\r\nhybrid\r\n",
    );
    assert!(r.starts_with("250"), "{r}");
    let out = wait_for("A's TLS log line", Duration::from_secs(20), || {
        a.log_lines("TLS connection established to").pop()
    });
    assert!(
        out.contains("TLSv1.3") && out.contains("key-exchange X25519MLKEM768"),
        "{out}"
    );
    let inb = wait_for("B's TLS log line", Duration::from_secs(20), || {
        b.log_lines("TLS connection established from").pop()
    });
    assert!(inb.contains("key-exchange X25519MLKEM768"), "{inb}");
    // Both lines name B's handshake signature (its test key is P-256),
    // as Postfix 3.11 does.
    let words = "server-signature ECDSA (prime256v1) server-digest SHA256";
    assert!(out.ends_with(words), "{out}");
    assert!(inb.ends_with(words), "{inb}");
    a.stop();
    b.stop();
}

/// Debian's testssl.sh (3.0.8) against the three listeners: `-p -E -f -U`
/// (protocols, every cipher, forward secrecy, vulnerabilities) on port 25's
/// STARTTLS and `-p` on 587 (STARTTLS) and 465 (implicit TLS). No SSLv2,
/// SSLv3, TLS 1.0 or 1.1, forward secrecy offered, and no protocol, cipher
/// or vulnerability finding of severity MEDIUM or above. Certificate
/// findings (`cert_*`) are exempt: the test's own CA and 127.0.0.x.
///
/// Cipher-order policy: rustls follows the client's order among the
/// server's suites (`ignore_client_order` off). Every suite offered is an
/// AEAD with an ephemeral key exchange, so no client preference can choose
/// a weak one. testssl 3.0.8 does not know the post-quantum groups, so it
/// lists only the classic curves; tls::postern_to_postern_negotiates_post_quantum_key_exchange
/// covers X25519MLKEM768.
#[test]
fn smtpd_tls_protocols_and_cipher_exclusions_narrow_each_service() {
    // Port 25 (opportunistic): no TLS 1.3, and no CHACHA20 or AES256
    // suite; 587 (encrypt) and 465 (wrapper mode) take the mandatory
    // settings: TLS 1.3 only.
    let (inst, pki) = tls_instance(
        "smtpd_tls_protocols = !TLSv1.3\n\
         smtpd_tls_exclude_ciphers = CHACHA20, AES256\n\
         smtpd_tls_mandatory_protocols = >=TLSv1.3\n",
    );
    let out = s_client(&inst, &pki, inst.smtp_port, true);
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    assert!(
        out.contains("Protocol  : TLSv1.2") || out.contains("Protocol: TLSv1.2"),
        "{out}"
    );
    assert!(
        out.contains("Cipher is ECDHE-ECDSA-AES128-GCM-SHA256"),
        "{out}"
    );
    let handshake =
        |out: &str| out.contains("Verify return code: 0 (ok)") && out.contains("Cipher is ");
    // A client that offers only excluded suites, or only TLS 1.3, gets
    // no handshake on port 25.
    for extra in [
        &["-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305"][..],
        &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384"],
        &["-tls1_3"],
    ] {
        let out = s_client_with(&inst, &pki, inst.smtp_port, true, extra);
        assert!(!handshake(&out), "{extra:?}: {out}");
    }
    // 587 and 465: TLS 1.3 (mandatory), and nothing below it.
    for (port, starttls) in [(inst.submission_port, true), (WRAPPER_PORT, false)] {
        let out = s_client(&inst, &pki, port, starttls);
        assert!(handshake(&out) && out.contains("TLSv1.3"), "{port}: {out}");
        let out = s_client_with(&inst, &pki, port, starttls, &["-tls1_2"]);
        assert!(!handshake(&out), "{port}: {out}");
    }
    // A combination that leaves nothing is refused by conf --check, with
    // the file and line.
    let bad = Instance::new(
        "smtpd_tls_mandatory_protocols = TLSv1.2\nsmtpd_tls_mandatory_exclude_ciphers = HIGH\n",
    );
    let out = bad.postern(&["conf", "--check"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("main.cf:") && err.contains("leave no cipher suite"),
        "{err}"
    );
}

/// `gnutls-cli` (Debian's gnutls-bin) with a priority string; its whole
/// output.
fn gnutls_cli(inst: &Instance, port: u16, starttls: bool, priority: &str) -> String {
    let mut cmd = Command::new("timeout");
    cmd.args(["20", "gnutls-cli", "--insecure", "--priority", priority])
        .args(["-p", &port.to_string()]);
    if starttls {
        cmd.args(["--starttls-proto", "smtp"]);
    }
    let out = cmd
        .arg(&inst.ip)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("gnutls-cli (apt-get install gnutls-bin)");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_client_that_asks_for_a_raw_public_key_gets_one() {
    // As Postfix 3.9+ does: the key alone (RFC 7250) whenever a client
    // asks for it, on STARTTLS and in wrapper mode; rustls does that in
    // TLS 1.3 only, so a TLS 1.2 client gets the chain, as does a client
    // that does not ask. Debian's gnutls-cli asks.
    let (inst, _pki) = tls_instance("");
    let rpk = "NORMAL:-CTYPE-SRV-ALL:+CTYPE-SRV-RAWPK:+CTYPE-SRV-X509";
    let done = |out: &str| out.contains("- Handshake was completed");
    for (port, starttls) in [(inst.smtp_port, true), (WRAPPER_PORT, false)] {
        let out = gnutls_cli(&inst, port, starttls, rpk);
        assert!(
            done(&out) && out.contains("- Certificate type: Raw Public Key"),
            "{port}: {out}"
        );
        for p in ["NORMAL".to_string(), format!("{rpk}:-VERS-TLS1.3")] {
            let out = gnutls_cli(&inst, port, starttls, &p);
            assert!(
                done(&out) && out.contains("- Certificate type: X.509"),
                "{port} {p}: {out}"
            );
        }
    }
    // smtpd's TLS line says which, in Postfix's words.
    let raw = inst.log_lines("TLS connection established from");
    let raw: Vec<&String> = raw
        .iter()
        .filter(|l| {
            l.ends_with("server-signature ECDSA (prime256v1 raw public key) server-digest SHA256")
        })
        .collect();
    assert_eq!(raw.len(), 2, "{}", inst.log());
}

#[test]
fn testssl_finds_no_weak_protocol_cipher_or_vulnerability() {
    let (inst, _pki) = tls_instance("");
    let dir = tempfile::tempdir().unwrap();
    let run = |port: u16, starttls: bool, checks: &[&str]| -> Vec<serde_json::Value> {
        let json = dir.path().join(format!("testssl-{port}.json"));
        let mut cmd = Command::new("timeout");
        cmd.args([
            "300",
            "testssl",
            "--quiet",
            "--color",
            "0",
            "--warnings",
            "off",
        ])
        .args(["--connect-timeout", "10", "--openssl-timeout", "10"])
        .args(checks)
        .arg("--jsonfile")
        .arg(&json);
        if starttls {
            cmd.args(["--starttls", "smtp"]);
        }
        let out = cmd
            .arg(format!("{}:{port}", inst.ip))
            .output()
            .expect("testssl (apt-get install testssl.sh)");
        let text = std::fs::read_to_string(&json).unwrap_or_else(|e| {
            panic!(
                "testssl wrote no JSON for port {port} ({e}): {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let findings: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
        assert!(
            findings
                .iter()
                .any(|f| f["id"] == "TLS1_2" || f["id"] == "TLS1_3"),
            "port {port}: testssl saw no protocol at all: {text}"
        );
        findings
    };
    let full = run(inst.smtp_port, true, &["-p", "-E", "-f", "-U"]);
    let sub = run(inst.submission_port, true, &["-p"]);
    let wrapper = run(WRAPPER_PORT, false, &["-p"]);
    let finding = |fs: &[serde_json::Value], id: &str| -> String {
        fs.iter()
            .find(|f| f["id"] == id)
            .and_then(|f| f["finding"].as_str())
            .unwrap_or_else(|| panic!("no {id} finding"))
            .to_string()
    };
    for (port, fs) in [
        (inst.smtp_port, &full),
        (inst.submission_port, &sub),
        (WRAPPER_PORT, &wrapper),
    ] {
        for old in ["SSLv2", "SSLv3", "TLS1", "TLS1_1"] {
            assert_eq!(finding(fs, old), "not offered", "port {port}: {old}");
        }
        assert!(finding(fs, "TLS1_3").starts_with("offered"), "port {port}");
        for f in fs.iter() {
            let id = f["id"].as_str().unwrap_or("");
            let sev = f["severity"].as_str().unwrap_or("");
            if id.starts_with("cert") {
                continue;
            }
            assert!(
                !matches!(sev, "MEDIUM" | "HIGH" | "CRITICAL"),
                "port {port}: {f}"
            );
        }
    }
    // Forward secrecy, and every cipher offered is an AEAD of 128 bits or
    // more with an ephemeral key exchange.
    assert!(finding(&full, "PFS").starts_with("offered"), "{full:?}");
    let ciphers: Vec<&serde_json::Value> = full
        .iter()
        .filter(|f| f["id"].as_str().is_some_and(|i| i.starts_with("cipher-")))
        .collect();
    assert!(!ciphers.is_empty(), "no cipher findings: {full:?}");
    for c in ciphers {
        let text = c["finding"].as_str().unwrap();
        assert!(
            (text.contains("AESGCM") || text.contains("ChaCha20")) && text.contains("ECDH"),
            "{text}"
        );
    }
}
