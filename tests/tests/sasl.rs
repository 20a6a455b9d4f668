//! SASL AUTH on the submission ports, checked by the auth role against the
//! password file `postern passwd` writes: real clients (smtplib, swaks),
//! failure limits, live password changes, sender login maps and the
//! per-account message rate.
use std::process::Command;
use std::time::Duration;

use postern_tests::{Instance, python_ok, wait_for};

/// Started, with user alice (password "correct horse") and `extra` in main.cf.
fn instance(extra: &str) -> Instance {
    let mut inst = Instance::with_three_listeners(&format!("smtpd_error_sleep_time = 0\n{extra}"));
    let out = inst.passwd("alice", "correct horse");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    inst.start();
    inst
}

/// A Python prelude: `tls()` is a context that accepts the self-signed
/// certificate, `sub()` an SMTP session on 2587 after STARTTLS,
/// `login_code(user, pw, src)` the reply code of AUTH PLAIN from source
/// address `src`.
fn py(inst: &Instance, body: &str) -> String {
    format!(
        r#"
import smtplib, ssl, base64
IP = "{ip}"
def tls():
    c = ssl.create_default_context()
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    return c
def sub(src=None):
    s = smtplib.SMTP(IP, 2587, local_hostname="client.example", timeout=30,
                     source_address=(src, 0) if src else None)
    s.ehlo()
    s.starttls(context=tls())
    s.ehlo()
    return s
def login_code(user, pw, src=None):
    s = sub(src)
    arg = base64.b64encode(b"\0" + user.encode() + b"\0" + pw.encode()).decode()
    code, msg = s.docmd("AUTH", "PLAIN " + arg)
    s.close()
    return code, msg
{body}
print("ok")
"#,
        ip = inst.ip
    )
}

#[test]
fn submission_and_submissions_deliver_for_a_logged_in_user_only() {
    let inst = instance("");
    python_ok(&py(
        &inst,
        r#"
# Without a login, the submission port relays nothing.
s = sub()
s.mail("alice@example.org")
code, msg = s.rcpt("root@localhost")
assert code == 554 and b"Client host rejected: Access denied" in msg, (code, msg)
s.quit()
# STARTTLS + AUTH on 587.
s = sub()
assert "PLAIN" in s.esmtp_features["auth"] and "LOGIN" in s.esmtp_features["auth"]
s.login("alice", "correct horse")
s.sendmail("alice@example.org", ["root@localhost"], "Subject: via 587\r\n\r\nhi\r\n")
s.quit()
# Implicit TLS + AUTH LOGIN on 465.
s = smtplib.SMTP_SSL(IP, 2465, local_hostname="client.example", context=tls(), timeout=30)
s.ehlo()
s.user, s.password = "alice", "correct horse"
code, msg = s.auth("LOGIN", s.auth_login, initial_response_ok=False)
assert code == 235, (code, msg)
s.sendmail("alice@example.org", ["root@localhost"], "Subject: via 465\r\n\r\nhi\r\n")
s.quit()
"#,
    ));
    let msgs = wait_for("two messages for root", Duration::from_secs(20), || {
        let m = inst.maildir("root");
        (m.len() == 2).then_some(m)
    });
    for m in &msgs {
        assert!(m.contains("with ESMTPSA id"), "{m}");
    }
    inst.wait_log(
        "sasl_method=PLAIN, sasl_username=alice",
        Duration::from_secs(5),
    );
    inst.wait_log(
        "sasl_method=LOGIN, sasl_username=alice",
        Duration::from_secs(5),
    );
}

#[test]
fn swaks_tls_auth_works_and_a_wrong_password_gets_535() {
    let inst = instance("");
    let swaks = |password: &str| {
        let out = Command::new("swaks")
            .args(["--server", &format!("{}:2587", inst.ip)])
            .args(["--tls", "--auth", "PLAIN", "--auth-user", "alice"])
            .args(["--auth-password", password])
            .args(["--from", "alice@example.org", "--to", "root@localhost"])
            .args(["--helo", "swaks.example"])
            .output()
            .expect("swaks (apt-get install swaks libnet-ssleay-perl)");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, text) = swaks("correct horse");
    assert!(ok, "{text}");
    assert!(
        text.contains("<~  235 2.7.0 Authentication successful"),
        "{text}"
    );
    assert!(text.contains("<~  250 2.0.0 Ok: queued as "), "{text}");
    let (ok, text) = swaks("wrong horse");
    assert!(!ok, "{text}");
    assert!(
        text.contains("535 5.7.8 Error: authentication failed: authentication failure"),
        "{text}"
    );
    inst.wait_log(
        "SASL PLAIN authentication failed: authentication failure, sasl_username=alice",
        Duration::from_secs(5),
    );
}

#[test]
fn auth_is_refused_unless_announced() {
    let inst = instance("");
    python_ok(&py(
        &inst,
        r#"
# Before STARTTLS on 587: not announced, and refused.
s = smtplib.SMTP(IP, 2587, local_hostname="client.example", timeout=30)
s.ehlo()
assert not s.has_extn("auth"), s.esmtp_features
code, msg = s.docmd("AUTH", "PLAIN AGFsaWNlAGNvcnJlY3QgaG9yc2U=")
assert code == 503 and b"5.5.1 Error: authentication not enabled" in msg, (code, msg)
s.quit()
# Port 25 has no SASL at all, even under TLS.
s = smtplib.SMTP(IP, 2525, local_hostname="client.example", timeout=30)
s.ehlo()
s.starttls(context=tls())
s.ehlo()
assert not s.has_extn("auth"), s.esmtp_features
code, msg = s.docmd("AUTH", "PLAIN AGFsaWNlAGNvcnJlY3QgaG9yc2U=")
assert code == 503, (code, msg)
s.quit()
# After a login, a second AUTH is refused; a cancelled exchange is 501.
s = sub()
code, msg = s.docmd("AUTH", "PLAIN")
assert code == 334, (code, msg)
code, msg = s.docmd("*")
assert code == 501 and b"Authentication aborted" in msg, (code, msg)
code, msg = s.docmd("AUTH", "PLAIN !!!notbase64")
assert code == 501 and b"Cannot decode response" in msg, (code, msg)
code, msg = s.docmd("AUTH", "CRAM-MD5")
assert code == 504, (code, msg)
s.login("alice", "correct horse")
code, msg = s.docmd("AUTH", "PLAIN AGFsaWNlAGNvcnJlY3QgaG9yc2U=")
assert code == 503 and b"already authenticated" in msg, (code, msg)
s.quit()
"#,
    ));
}

#[test]
fn failed_logins_are_limited_per_client_and_per_account() {
    let inst = instance(
        "smtpd_sasl_client_failure_limit = 3\n\
         smtpd_sasl_account_failure_limit = 5\n\
         smtpd_sasl_failure_window = 3s\n",
    );
    python_ok(&py(
        &inst,
        r#"
import time
# Three typos from one client: the next try, even a right one, waits.
for _ in range(3):
    code, _ = login_code("alice", "typo")
    assert code == 535, code
code, msg = login_code("alice", "correct horse")
assert code == 454 and b"too many failed authentication attempts" in msg, (code, msg)
# Another client is not affected.
code, msg = login_code("alice", "correct horse", "127.0.0.91")
assert code == 235, (code, msg)
# The window passes: the first client gets in.
time.sleep(3.5)
code, msg = login_code("alice", "correct horse")
assert code == 235, (code, msg)
# Guessing one account from many addresses hits the account limit.
for i in range(5):
    code, _ = login_code("alice", "guess", "127.0.0.%d" % (100 + i))
    assert code == 535, code
code, msg = login_code("alice", "correct horse", "127.0.0.120")
assert code == 454, (code, msg)
"#,
    ));
    inst.wait_log(
        "3 failed logins from [127.0.0.1] within 3s",
        Duration::from_secs(5),
    );
    inst.wait_log("failed logins for account alice", Duration::from_secs(5));
}

#[test]
fn passwords_changed_on_a_running_instance_apply_at_once() {
    let inst = instance("");
    let out = inst.passwd("bob", "first one");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    python_ok(&py(
        &inst,
        r#"assert login_code("bob", "first one")[0] == 235"#,
    ));
    let out = inst.passwd("bob", "second one");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    python_ok(&py(
        &inst,
        r#"
assert login_code("bob", "first one")[0] == 535
assert login_code("bob", "second one")[0] == 235
"#,
    ));
    let out = inst.postern(&["passwd", "-d", "bob"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    python_ok(&py(
        &inst,
        r#"assert login_code("bob", "second one")[0] == 535"#,
    ));
    // Bad input changes nothing and says why.
    let mut child = inst
        .command()
        .args(["passwd", "alice"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"one\ntwo\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("the two passwords differ"));
    let out = inst.passwd("bad:name", "x");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad user name"));
    python_ok(&py(
        &inst,
        r#"assert login_code("alice", "correct horse")[0] == 235"#,
    ));
}

#[test]
fn sender_login_maps_and_the_account_message_rate() {
    let inst = Instance::with_three_listeners("");
    let map = inst.config_dir().join("senders");
    std::fs::write(
        &map,
        "alice@example.org alice\n@shared.example alice, bob\n",
    )
    .unwrap();
    inst.add_main_cf(&format!(
        "smtpd_error_sleep_time = 0\n\
         smtpd_sender_login_maps = texthash:{}\n\
         smtpd_sender_restrictions = reject_sender_login_mismatch\n\
         smtpd_account_message_rate_limit = 3\n",
        map.display()
    ));
    let mut inst = inst;
    assert!(inst.passwd("alice", "correct horse").status.success());
    inst.start();
    python_ok(&py(
        &inst,
        r#"
s = sub()
s.login("alice", "correct horse")
# Her own address, and one of a domain she shares: accepted.
for sender in ["alice@example.org", "x@shared.example"]:
    assert s.mail(sender)[0] == 250
    assert s.rcpt("root@localhost")[0] == 250, sender
    s.rset()
# Someone else's address: refused.
s.mail("carol@example.org")
code, msg = s.rcpt("root@localhost")
assert code == 553 and b"Sender address rejected: not owned by user alice" in msg, (code, msg)
s.rset()
# The third message of the minute was the last one allowed.
code, msg = s.mail("alice@example.org")
assert code == 450 and b"too much mail from alice" in msg, (code, msg)
s.quit()
# Without a login, an owned address is refused on port 25 too.
s = smtplib.SMTP(IP, 2525, local_hostname="client.example", timeout=30)
s.ehlo()
s.mail("alice@example.org")
code, msg = s.rcpt("root@localhost")
assert code == 553 and b"not logged in" in msg, (code, msg)
s.rset()
# An address nobody owns is fine there.
s.mail("nobody@elsewhere.example")
assert s.rcpt("root@localhost")[0] == 250
s.quit()
"#,
    ));
    inst.wait_log("message rate limit exceeded", Duration::from_secs(5));
}

/// The failure counts live in the state store: a crash of auth, a reload
/// (auth and cache restart) and a stop and start of the whole system all
/// leave a locked-out client locked out. A corrupt record in the store's
/// file is dropped with a log line, and the rest is kept.
#[test]
fn login_failures_survive_restarts_of_auth_and_of_the_system() {
    let mut inst = instance(
        "smtpd_sasl_client_failure_limit = 3\n\
         smtpd_sasl_account_failure_limit = 1000\n\
         smtpd_sasl_failure_window = 600s\n",
    );
    let locked = |inst: &Instance| {
        python_ok(&py(
            inst,
            r#"
code, msg = login_code("alice", "correct horse")
assert code == 454 and b"too many failed authentication attempts" in msg, (code, msg)
"#,
        ));
    };
    // Three typos lock 127.0.0.1 out; one from 127.0.0.92 does not. A
    // login from 127.0.0.91 works, and clears the account's count: the
    // store keeps two records, one per failing client.
    python_ok(&py(
        &inst,
        r#"
for _ in range(3):
    code, _ = login_code("alice", "typo")
    assert code == 535, code
code, _ = login_code("alice", "typo", "127.0.0.92")
assert code == 535, code
code, msg = login_code("alice", "correct horse", "127.0.0.91")
assert code == 235, (code, msg)
"#,
    ));
    locked(&inst);
    // auth crashes: the new process reads the counts back.
    let auth = inst.pid_of("auth").unwrap();
    let cache = inst
        .pid_of("cache")
        .expect("the state store started on first use");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(auth as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    inst.wait_log(
        &format!("auth pid {auth} killed by signal 9"),
        Duration::from_secs(5),
    );
    locked(&inst);
    // A reload restarts auth and the store (which saves, then loads).
    let out = inst.postern(&["reload"]);
    assert!(out.status.success(), "{out:?}");
    wait_for("a new state store", Duration::from_secs(20), || {
        inst.pid_of("cache").filter(|p| *p != cache)
    });
    locked(&inst);
    // The whole system stops and starts again.
    inst.stop();
    let file = inst.data_dir().join("cache/auth-failures.db");
    assert!(file.exists(), "no state file at {}", file.display());
    inst.start();
    locked(&inst);
    inst.wait_log("auth-failures.db: 2 record(s)", Duration::from_secs(5));
    // A record damaged on disk (127.0.0.92's) is dropped, and the other
    // one is kept.
    inst.stop();
    let mut data = std::fs::read(&file).unwrap();
    let at = data
        .windows(17)
        .position(|w| w == b"client:127.0.0.92")
        .expect("the record of 127.0.0.92");
    data[at + 8] ^= 0x5a;
    std::fs::write(&file, &data).unwrap();
    inst.start();
    locked(&inst);
    inst.wait_log(
        "auth-failures.db: 1 corrupt record(s) dropped",
        Duration::from_secs(5),
    );
    inst.wait_log("auth-failures.db: 1 record(s)", Duration::from_secs(5));
}

/// The restrictions that look at the login, and the list-level ones the
/// other tests reach only through parameters, named in restriction lists
/// (chosen per recipient through restriction classes): each refuses once
/// and passes once, with smtplib, logged in or not.
#[test]
fn login_restrictions_and_named_list_restrictions() {
    let inst = Instance::with_three_listeners("");
    let dir = inst.config_dir().to_path_buf();
    std::fs::write(
        dir.join("senders"),
        "alice@example.org alice\nbob@example.org bob\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("relayrcpts"),
        "known@valid.example x\n@relay.example x\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("dispatch"),
        "auth@relay.example authonly\n\
         unauth@relay.example unauthonly\n\
         sasl@relay.example saslonly\n\
         dip@relay.example dip\n\
         valid.example unlisted\n\
         us@relay.example unlistedsender\n",
    )
    .unwrap();
    inst.add_main_cf(&format!(
        "smtpd_error_sleep_time = 0\n\
         mynetworks = 10.0.0.0/8\n\
         relay_domains = relay.example, valid.example\n\
         relay_recipient_maps = texthash:{d}/relayrcpts\n\
         smtpd_reject_unlisted_recipient = no\n\
         smtpd_sender_login_maps = texthash:{d}/senders\n\
         smtpd_restriction_classes = authonly, unauthonly, saslonly, dip, unlisted, unlistedsender\n\
         authonly = reject_authenticated_sender_login_mismatch\n\
         unauthonly = reject_unauthenticated_sender_login_mismatch\n\
         saslonly = permit_sasl_authenticated, reject\n\
         dip = defer_if_permit\n\
         unlisted = reject_unlisted_recipient\n\
         unlistedsender = reject_unlisted_sender\n\
         smtpd_relay_restrictions = permit_sasl_authenticated, defer_unauth_destination\n\
         smtpd_recipient_restrictions = check_recipient_access texthash:{d}/dispatch\n",
        d = dir.display()
    ));
    let mut inst = inst;
    assert!(inst.passwd("alice", "correct horse").status.success());
    inst.start();
    python_ok(&py(
        &inst,
        r#"
def rcpt(s, sender, to):
    assert s.mail(sender)[0] == 250
    code, msg = s.rcpt(to)
    s.rset()
    return "%d %s" % (code, msg.decode())
def anon():
    s = smtplib.SMTP(IP, 2525, local_hostname="client.example", timeout=30)
    s.ehlo()
    return s
a = sub()
a.login("alice", "correct horse")
n = anon()
checks = [
    # reject_authenticated_sender_login_mismatch: only for a login.
    (a, "bob@example.org", "auth@relay.example",
     "553 5.7.1 <bob@example.org>: Sender address rejected: not owned by user alice"),
    (n, "bob@example.org", "auth@relay.example", "250 2.1.5 Ok"),
    # reject_unauthenticated_sender_login_mismatch: only without one.
    (n, "alice@example.org", "unauth@relay.example",
     "553 5.7.1 <alice@example.org>: Sender address rejected: not logged in"),
    (a, "bob@example.org", "unauth@relay.example", "250 2.1.5 Ok"),
    # permit_sasl_authenticated.
    (a, "x@example.org", "sasl@relay.example", "250 2.1.5 Ok"),
    (n, "x@example.org", "sasl@relay.example",
     "554 5.7.1 <sasl@relay.example>: Recipient address rejected: Access denied"),
    # defer_unauth_destination, and a login that may relay.
    (n, "x@example.org", "x@elsewhere.example",
     "454 4.7.1 <x@elsewhere.example>: Relay access denied"),
    (a, "x@example.org", "x@elsewhere.example", "250 2.1.5 Ok"),
    # defer_if_permit: the list ends in a permit, so 450.
    (n, "x@example.org", "dip@relay.example",
     "450 4.7.0 <dip@relay.example>: Recipient address rejected: defer_if_permit requested"),
    # reject_unlisted_recipient, named in a list.
    (n, "x@example.org", "known@valid.example", "250 2.1.5 Ok"),
    (n, "x@example.org", "nobody@valid.example",
     "550 5.1.1 <nobody@valid.example>: Recipient address rejected: User unknown in relay recipient table"),
    # reject_unlisted_sender, named in a list.
    (n, "known@valid.example", "us@relay.example", "250 2.1.5 Ok"),
    (n, "nobody@valid.example", "us@relay.example",
     "550 5.1.0 <nobody@valid.example>: Sender address rejected: User unknown in relay recipient table"),
]
for s, sender, to, want in checks:
    got = rcpt(s, sender, to)
    assert got == want, (sender, to, got, want)
a.quit()
n.quit()
print("ok")
"#,
    ));
    for line in [
        "NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 553 5.7.1 <alice@example.org>: Sender address rejected: not logged in; from=<alice@example.org> to=<unauth@relay.example> proto=ESMTP helo=<client.example>",
        "NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 454 4.7.1 <x@elsewhere.example>: Relay access denied; from=<x@example.org> to=<x@elsewhere.example> proto=ESMTP helo=<client.example>",
        "NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 550 5.1.0 <nobody@valid.example>: Sender address rejected: User unknown in relay recipient table; from=<nobody@valid.example> to=<us@relay.example> proto=ESMTP helo=<client.example>",
    ] {
        inst.wait_log(line, Duration::from_secs(10));
    }
}
