//! sendmail, mailq and newaliases: Postfix's flags and sysexits codes, the
//! pickup socket and the maildrop while the daemons are down, permission
//! checks in pickup, dead.letter never through a symlink, and real programs
//! (s-nail, bsd-mailx, git send-email, swaks over -bs) that call sendmail.
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use postern_tests::{Instance, Sink, bin, python_ok, wait_for};

const NOBODY: u32 = 65534;

/// Links sendmail, mailq and newaliases to the postern binary in the
/// instance directory (what `postern install` does in /usr/sbin).
fn links(inst: &Instance) -> PathBuf {
    let d = inst.dir.path().join("bin");
    std::fs::create_dir_all(&d).unwrap();
    for n in ["sendmail", "mailq", "newaliases"] {
        let _ = std::fs::remove_file(d.join(n));
        std::os::unix::fs::symlink(bin(), d.join(n)).unwrap();
    }
    d
}

/// Runs `prog args` with `input` on stdin, MAIL_CONFIG naming the instance,
/// as `uid` when given (setpriv, no supplementary groups).
fn run(inst: &Instance, uid: Option<u32>, prog: &Path, args: &[&str], input: &[u8]) -> Output {
    let mut cmd = match uid {
        Some(u) => {
            let mut c = Command::new("setpriv");
            c.args([
                format!("--reuid={u}"),
                format!("--regid={u}"),
                "--clear-groups".into(),
                "--".into(),
            ])
            .arg(prog);
            c
        }
        None => Command::new(prog),
    };
    cmd.args(args)
        .env("MAIL_CONFIG", inst.config_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run sendmail");
    // A usage error exits before reading: a broken pipe is fine then.
    let _ = child.stdin.take().unwrap().write_all(input);
    child.wait_with_output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "exit {:?}: {}{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        stderr(o)
    );
}

/// Waits for a message containing `needle` in USER's Maildir.
fn arrived(inst: &Instance, user: &str, needle: &str) -> String {
    wait_for(
        &format!("a message with {needle:?} for {user}"),
        Duration::from_secs(30),
        || inst.maildir(user).into_iter().find(|m| m.contains(needle)),
    )
}

#[test]
fn flags_behave_like_postfix_sendmail() {
    let mut inst = Instance::new("");
    inst.start();
    let b = links(&inst);
    let sm = b.join("sendmail");

    // -t: recipients from To/Cc/Bcc (a bare `root` is local), Bcc removed.
    let o = run(
        &inst,
        None,
        &sm,
        &["-t", "-v"],
        b"To: root\nCc: Someone <nobody@mx.test.example>\nBcc: daemon@mx.test.example\nSubject: flag-t\n\nbody\n",
    );
    ok(&o);
    assert!(stderr(&o).contains("queued as"), "{}", stderr(&o));
    for user in ["root", "nobody", "daemon"] {
        let m = arrived(&inst, user, "Subject: flag-t");
        assert!(!m.contains("Bcc:"), "Bcc kept for {user}:\n{m}");
        assert!(m.contains("(Postern, from userid 0)"), "{m}");
    }

    // A lone dot ends the message; -i and -oi make it content.
    ok(&run(
        &inst,
        None,
        &sm,
        &["root"],
        b"Subject: dot-plain\n\nbefore\n.\nafter-plain\n",
    ));
    let m = arrived(&inst, "root", "Subject: dot-plain");
    assert!(m.contains("before") && !m.contains("after-plain"), "{m}");
    for flag in ["-i", "-oi"] {
        let subj = format!("Subject: dot{flag}");
        let msg = format!("{subj}\n\nbefore\n.\nafter{flag}\n");
        ok(&run(&inst, None, &sm, &[flag, "root"], msg.as_bytes()));
        let m = arrived(&inst, "root", &subj);
        assert!(m.contains("\n.\n") || m.contains("\r\n.\r\n"), "{m}");
        assert!(m.contains(&format!("after{flag}")), "{m}");
    }

    // -f and -r set the envelope sender; -F the full name in From.
    ok(&run(
        &inst,
        None,
        &sm,
        &["-f", "alerts@mx.test.example", "-F", "Alert Bot", "root"],
        b"Subject: flag-f\n\nx\n",
    ));
    let m = arrived(&inst, "root", "Subject: flag-f");
    assert!(m.contains("Return-Path: <alerts@mx.test.example>"), "{m}");
    assert!(
        m.contains("From: Alert Bot <alerts@mx.test.example>"),
        "{m}"
    );
    ok(&run(
        &inst,
        None,
        &sm,
        &["-rops@mx.test.example", "root"],
        b"Subject: flag-r\n\nx\n",
    ));
    let m = arrived(&inst, "root", "Subject: flag-r");
    assert!(m.contains("Return-Path: <ops@mx.test.example>"), "{m}");

    // -oX options Postfix ignores are accepted; -C chooses the instance.
    let o = Command::new(&sm)
        .args(["-odb", "-oem", "-om", "-C"])
        .arg(inst.config_dir())
        .arg("root")
        .env_remove("MAIL_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin
                .take()
                .unwrap()
                .write_all(b"Subject: flag-C\n\nx\n")?;
            c.wait_with_output()
        })
        .unwrap();
    ok(&o);
    arrived(&inst, "root", "Subject: flag-C");

    // An unknown flag is a usage error.
    let o = run(&inst, None, &sm, &["-k", "root"], b"x\n");
    assert_eq!(o.status.code(), Some(64), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("invalid option -- 'k'"),
        "{}",
        stderr(&o)
    );
    // No recipients and no -t: a usage error too.
    let o = run(&inst, None, &sm, &[], b"x\n");
    assert_eq!(o.status.code(), Some(64), "{}", stderr(&o));

    // -N, -R and -V reach the DSN: -N never gets no bounce, -N failure
    // with -R hdrs and -V gets one with headers only and the envelope id.
    ok(&run(
        &inst,
        None,
        &sm,
        &[
            "-N",
            "never",
            "-f",
            "root@mx.test.example",
            "nosuchuser1@mx.test.example",
        ],
        b"Subject: dsn-never\n\nsecret-never\n",
    ));
    ok(&run(
        &inst,
        None,
        &sm,
        &[
            "-N",
            "failure",
            "-R",
            "hdrs",
            "-V",
            "ENV-42",
            "-f",
            "root@mx.test.example",
            "nosuchuser2@mx.test.example",
        ],
        b"Subject: dsn-failure\n\nsecret-body\n",
    ));
    let bounce = arrived(&inst, "root", "Original-Envelope-Id: ENV-42");
    assert!(bounce.contains("text/rfc822-headers"), "{bounce}");
    assert!(
        bounce.contains("Subject: dsn-failure") && !bounce.contains("secret-body"),
        "{bounce}"
    );
    inst.wait_queue_empty(Duration::from_secs(30));
    let never: Vec<String> = inst
        .maildir("root")
        .into_iter()
        .filter(|m| m.contains("nosuchuser1"))
        .collect();
    assert!(never.is_empty(), "a bounce for -N never: {never:?}");

    // -bp and mailq print Postfix's mailq format.
    for (prog, args) in [(sm.clone(), vec!["-bp"]), (b.join("mailq"), vec![])] {
        let o = run(&inst, None, &prog, &args, b"");
        ok(&o);
        assert_eq!(String::from_utf8_lossy(&o.stdout), "Mail queue is empty\n");
    }

    // -bi and newaliases rebuild the aliases table.
    std::fs::write(inst.config_dir().join("aliases"), "ops: root\n").unwrap();
    for (prog, args) in [(sm.clone(), vec!["-bi"]), (b.join("newaliases"), vec![])] {
        let _ = std::fs::remove_file(inst.config_dir().join("aliases.cdb"));
        ok(&run(&inst, None, &prog, &args, b""));
        assert!(inst.config_dir().join("aliases.cdb").exists());
    }
    ok(&run(
        &inst,
        None,
        &sm,
        &["ops"],
        b"Subject: via-alias\n\nx\n",
    ));
    arrived(&inst, "root", "Subject: via-alias");

    // 8-bit bodies and SMTPUTF8 addresses.
    ok(&run(
        &inst,
        None,
        &sm,
        &["-B", "8BITMIME", "root"],
        "Subject: 8bit\n\nGrüße\n".as_bytes(),
    ));
    assert!(arrived(&inst, "root", "Subject: 8bit").contains("Grüße"));
    let o = run(&inst, None, &sm, &["-B", "9BIT", "root"], b"x\n");
    assert_eq!(o.status.code(), Some(64));
}

#[test]
fn dash_q_flushes_the_deferred_queue() {
    let ip = postern_tests::unique_loopback();
    let sink_dir = tempfile::tempdir().unwrap();
    let mut inst = Instance::with_master_cf(
        &format!("relayhost = [{ip}]:2626\nminimal_backoff_time = 1h\nmaximal_backoff_time = 2h"),
        Some(&format!("{ip}:2525 inet n - n - - smtpd\n")),
    );
    inst.ip = ip.clone();
    inst.start();
    let sink = Sink::start(&ip, 2626, sink_dir.path());
    sink.set_mode("tempfail");
    let sm = links(&inst).join("sendmail");
    ok(&run(
        &inst,
        None,
        &sm,
        &["-B", "8BITMIME", "far@remote.example"],
        "Subject: flush-me\n\nä\n".as_bytes(),
    ));
    wait_for("a deferred message", Duration::from_secs(30), || {
        inst.try_queue_json()
            .filter(|q| q.len() == 1 && q[0]["recipients"][0]["delay_reason"].is_string())
            .map(|_| ())
    });
    sink.set_mode("accept");
    let o = run(&inst, None, &sm, &["-q"], b"");
    ok(&o);
    let (env, body) = wait_for(
        "the flushed message at the sink",
        Duration::from_secs(30),
        || sink.messages().into_iter().next(),
    );
    assert!(String::from_utf8_lossy(&body).contains("flush-me"));
    // -B 8BITMIME travels as BODY=8BITMIME.
    let opts = env["mail_options"].to_string();
    assert!(opts.contains("BODY=8BITMIME"), "{env}");
}

#[test]
fn bs_speaks_smtp_on_stdin_and_stdout() {
    let mut inst = Instance::new("");
    inst.start();
    let sm = links(&inst).join("sendmail");
    let out = python_ok(&format!(
        r#"
import os, subprocess
p = subprocess.Popen(["{sm}", "-bs"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                     env=dict(os.environ, MAIL_CONFIG="{cfg}"))
def reply():
    lines = []
    while True:
        l = p.stdout.readline().decode()
        lines.append(l)
        if len(l) < 4 or l[3] != "-":
            return "".join(lines)
def cmd(c):
    p.stdin.write(c.encode() + b"\r\n"); p.stdin.flush()
    return reply()
assert reply().startswith("220 mx.test.example ESMTP")
r = cmd("EHLO client.example"); assert r.startswith("250-mx.test.example") and "8BITMIME" in r, r
assert cmd("RCPT TO:<root>").startswith("503")
assert cmd("MAIL FROM:<cron@mx.test.example>").startswith("250")
assert cmd("RCPT TO:<root@mx.test.example>").startswith("250")
assert cmd("DATA").startswith("354")
p.stdin.write(b"Subject: over-bs\r\n\r\n..leading dot\r\n.\r\n"); p.stdin.flush()
r = reply(); assert r.startswith("250 2.0.0 Ok: queued as "), r
assert cmd("NOOP").startswith("250")
assert cmd("VRFY root").startswith("252")
assert cmd("BDAT 10 LAST").startswith("502")
assert cmd("QUIT").startswith("221")
print("ok")
"#,
        sm = sm.display(),
        cfg = inst.config_dir().display()
    ));
    assert!(out.contains("ok"));
    let m = arrived(&inst, "root", "Subject: over-bs");
    assert!(m.contains("Return-Path: <cron@mx.test.example>"), "{m}");
    assert!(
        m.contains("\n.leading dot") || m.contains("\r\n.leading dot"),
        "{m}"
    );

    // swaks, a real SMTP client, through a pipe to -bs.
    let o = Command::new("swaks")
        .args(["--pipe", &format!("{} -bs", sm.display())])
        .args([
            "--to",
            "root@mx.test.example",
            "--from",
            "swaks@mx.test.example",
        ])
        .args(["--h-Subject", "swaks-over-bs"])
        .env("MAIL_CONFIG", inst.config_dir())
        .output()
        .expect("swaks");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    arrived(&inst, "root", "Subject: swaks-over-bs");
}

#[test]
fn real_programs_that_call_sendmail_deliver() {
    let mut inst = Instance::new("");
    inst.start();
    let b = links(&inst);
    let sm = b.join("sendmail");

    // s-nail (Debian's mailx) with its mta variable.
    let o = run(
        &inst,
        None,
        Path::new("s-nail"),
        &[
            "-n",
            "-S",
            &format!("mta={}", sm.display()),
            "-s",
            "via-s-nail",
            "root@mx.test.example",
        ],
        b"hello from s-nail\n",
    );
    ok(&o);
    assert!(arrived(&inst, "root", "Subject: via-s-nail").contains("hello from s-nail"));

    // bsd-mailx, pointed at our sendmail by its `sendmail` variable.
    let rc = inst.dir.path().join("mailrc");
    std::fs::write(&rc, format!("set sendmail={}\n", sm.display())).unwrap();
    let o = Command::new("bsd-mailx")
        .args(["-s", "via-bsd-mailx", "root@mx.test.example"])
        .env("MAILRC", &rc)
        .env("MAIL_CONFIG", inst.config_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin
                .take()
                .unwrap()
                .write_all(b"hello from bsd-mailx\n")?;
            c.wait_with_output()
        })
        .expect("bsd-mailx");
    ok(&o);
    assert!(arrived(&inst, "root", "Subject: via-bsd-mailx").contains("hello from bsd-mailx"));

    // git send-email with --sendmail-cmd, as a non-root developer would.
    let repo = inst.dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let git = |args: &[&str]| {
        let o = Command::new("git")
            .args([
                "-c",
                "user.name=Dev",
                "-c",
                "user.email=dev@mx.test.example",
            ])
            .args(args)
            .current_dir(&repo)
            .env("MAIL_CONFIG", inst.config_dir())
            .output()
            .expect("git");
        assert!(
            o.status.success(),
            "git {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            stderr(&o)
        );
    };
    git(&["init", "-q"]);
    git(&[
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "postern send-email test",
    ]);
    git(&["format-patch", "-q", "-1", "-o", "out"]);
    let patch = std::fs::read_dir(repo.join("out"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    git(&[
        "send-email",
        &format!("--sendmail-cmd={}", sm.display()),
        "--to=root@mx.test.example",
        "--from=dev@mx.test.example",
        "--suppress-cc=all",
        "--confirm=never",
        patch.to_str().unwrap(),
    ]);
    arrived(&inst, "root", "postern send-email test");
}

#[test]
fn nonroot_sendmail_queues_while_down_and_delivers_after_start() {
    let mut inst = Instance::new("");
    // `postern install` makes the links and the maildrop: no start needed.
    let root = inst.dir.path().join("root");
    let out = inst.postern(&["install", "--root", root.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    for l in [
        "usr/sbin/sendmail",
        "usr/lib/sendmail",
        "usr/bin/mailq",
        "usr/bin/newaliases",
    ] {
        assert_eq!(
            std::fs::read_link(root.join(l)).unwrap(),
            bin().canonicalize().unwrap(),
            "{l}"
        );
    }
    let sm = root.join("usr/sbin/sendmail");
    let o = run(
        &inst,
        Some(NOBODY),
        &sm,
        &["-t", "-v"],
        b"To: root\nSubject: written-while-down\n\nqueued by nobody\n",
    );
    ok(&o);
    assert!(stderr(&o).contains("queued in maildrop"), "{}", stderr(&o));
    // Nobody but Postern can see what is waiting.
    let drop = inst.data_dir().join("maildrop");
    let o = Command::new("setpriv")
        .args([
            format!("--reuid={NOBODY}"),
            format!("--regid={NOBODY}"),
            "--clear-groups".into(),
            "ls".into(),
        ])
        .arg(&drop)
        .output()
        .unwrap();
    assert!(!o.status.success(), "nobody listed the maildrop");
    assert_eq!(std::fs::read_dir(&drop).unwrap().count(), 1);
    inst.start();
    let m = arrived(&inst, "root", "Subject: written-while-down");
    assert!(m.contains("(Postern, from userid 65534)"), "{m}");
    assert!(m.contains("Return-Path: <nobody@mx.test.example>"), "{m}");
    wait_for("an empty maildrop", Duration::from_secs(10), || {
        (std::fs::read_dir(&drop).unwrap().count() == 0).then_some(())
    });
    // While running, the same user goes through the socket.
    let o = run(
        &inst,
        Some(NOBODY),
        &sm,
        &["-v", "root"],
        b"Subject: nobody-online\n\nx\n",
    );
    ok(&o);
    assert!(stderr(&o).contains("queued as"), "{}", stderr(&o));
    arrived(&inst, "root", "Subject: nobody-online");
}

#[test]
fn unauthorized_submitters_get_ex_noperm() {
    let mut inst = Instance::new(
        "authorized_submit_users = root\nlocal_login_sender_maps = inline:{ root=* }",
    );
    inst.start();
    let sm = links(&inst).join("sendmail");
    let o = run(
        &inst,
        Some(NOBODY),
        &sm,
        &["root"],
        b"Subject: refused\n\nx\n",
    );
    assert_eq!(o.status.code(), Some(77), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("User nobody(65534) is not allowed to submit mail"),
        "{}",
        stderr(&o)
    );
    ok(&run(
        &inst,
        None,
        &sm,
        &["-f", "anyone@else.example", "root"],
        b"Subject: root-may\n\nx\n",
    ));
    arrived(&inst, "root", "Subject: root-may");
    assert!(
        !inst
            .maildir("root")
            .iter()
            .any(|m| m.contains("Subject: refused"))
    );

    // While the mail system is down, sendmail cannot know: it queues into
    // the maildrop and exits 0. pickup refuses the file when it starts, and
    // returns the message to its writer by mail, from the null sender.
    inst.stop();
    let o = run(
        &inst,
        Some(NOBODY),
        &sm,
        &["root"],
        b"Subject: refused-later\n\nwritten while down\n",
    );
    ok(&o);
    let maildrop = inst.data_dir().join("maildrop");
    let waiting = || std::fs::read_dir(&maildrop).unwrap().count();
    assert_eq!(waiting(), 1);
    inst.start();
    let notice = arrived(&inst, "nobody", "Undelivered Mail Returned to Sender");
    assert!(notice.starts_with("Return-Path: <>\n"), "{notice}");
    assert!(
        notice.contains("User nobody(65534) is not allowed to submit mail"),
        "{notice}"
    );
    assert!(
        notice.contains("Subject: refused-later") && notice.contains("written while down"),
        "{notice}"
    );
    inst.wait_log(
        "refused maildrop submission returned to <nobody@",
        Duration::from_secs(5),
    );
    assert!(
        !inst
            .maildir("root")
            .iter()
            .any(|m| m.contains("refused-later"))
    );
    assert_eq!(waiting(), 0);
}

#[test]
fn sender_restrictions_apply_to_local_submissions() {
    let mut inst = Instance::new(
        "local_login_sender_maps = inline:{ nobody=nobody@mx.test.example, root=* }\n\
         smtpd_sender_restrictions = reject_sender_login_mismatch\n\
         smtpd_sender_login_maps = inline:{ boss@mx.test.example=root, nobody@mx.test.example=nobody }",
    );
    inst.start();
    let sm = links(&inst).join("sendmail");
    // local_login_sender_maps: nobody may send only as itself.
    let o = run(
        &inst,
        Some(NOBODY),
        &sm,
        &["-f", "boss@mx.test.example", "root"],
        b"x\n",
    );
    assert_eq!(o.status.code(), Some(77), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("not allowed to use sender address <boss@mx.test.example>"),
        "{}",
        stderr(&o)
    );
    ok(&run(
        &inst,
        Some(NOBODY),
        &sm,
        &["root"],
        b"Subject: own-address\n\nx\n",
    ));
    arrived(&inst, "root", "Subject: own-address");
    // reject_sender_login_mismatch: root does not own nobody@.
    let o = run(
        &inst,
        None,
        &sm,
        &["-f", "nobody@mx.test.example", "root"],
        b"x\n",
    );
    assert_eq!(o.status.code(), Some(77), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(
            "553 5.7.1 <nobody@mx.test.example>: Sender address rejected: not owned by user root"
        ),
        "{}",
        stderr(&o)
    );
    // The smtpd restriction with the login as the authenticated user:
    // root owns boss@, so root may use it.
    ok(&run(
        &inst,
        None,
        &sm,
        &["-f", "boss@mx.test.example", "root"],
        b"Subject: boss\n\nx\n",
    ));
    arrived(&inst, "root", "Subject: boss");
}

#[test]
fn dead_letter_is_used_when_nothing_else_works_and_never_through_a_symlink() {
    // Never started: no socket, no maildrop.
    let inst = Instance::new("");
    let sm = links(&inst).join("sendmail");
    let home = inst.dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(NOBODY), Some(NOBODY)).unwrap();
    let target = home.join("target");
    std::fs::write(&target, "untouched\n").unwrap();
    std::os::unix::fs::chown(&target, Some(NOBODY), Some(NOBODY)).unwrap();
    std::os::unix::fs::symlink(&target, home.join("dead.letter")).unwrap();
    let send = || {
        let mut c = Command::new("setpriv");
        c.args([
            format!("--reuid={NOBODY}"),
            format!("--regid={NOBODY}"),
            "--clear-groups".into(),
            "--".into(),
        ])
        .arg(&sm)
        .arg("root")
        .env("MAIL_CONFIG", inst.config_dir())
        .env("HOME", &home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"Subject: lost?\n\nFrom the body\n")
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let o = send();
    assert_eq!(o.status.code(), Some(75), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("is a symbolic link; not followed"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched\n");

    std::fs::remove_file(home.join("dead.letter")).unwrap();
    let o = send();
    assert_eq!(o.status.code(), Some(75), "{}", stderr(&o));
    assert!(stderr(&o).contains("saved in"), "{}", stderr(&o));
    let saved = std::fs::read_to_string(home.join("dead.letter")).unwrap();
    assert!(saved.starts_with("From "), "{saved}");
    assert!(
        saved.contains("Subject: lost?\n") && saved.contains("\n>From the body\n"),
        "{saved}"
    );
    let mode = std::fs::metadata(home.join("dead.letter"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

/// Connects to a SEQPACKET socket and hangs up (pickup's socket type).
fn seqpacket_connect(path: &std::path::Path) -> std::io::Result<()> {
    let out = std::process::Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import socket,sys; s=socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); s.connect(sys.argv[1]); s.close()",
        ])
        .arg(path)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[test]
fn garbage_on_the_pickup_socket_drops_only_that_connection() {
    let mut inst = Instance::new("");
    inst.start();
    // pickup starts on first use: an empty connection wakes it.
    assert!(
        inst.pid_of("pickup").is_none(),
        "pickup started before first use"
    );
    let sock = inst.data_dir().join("public").join("pickup");
    seqpacket_connect(&sock).unwrap();
    let pid = wait_for(
        "pickup started by a connection",
        Duration::from_secs(10),
        || inst.pid_of("pickup"),
    );
    inst.wait_log(
        "starting pickup on first use (work is waiting)",
        Duration::from_secs(5),
    );
    python_ok(&format!(
        r#"
import socket, struct
path = "{sock}"
def conn():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.settimeout(10)
    s.connect(path)
    return s
def closed(s):
    # Whatever pickup said first, it must hang up on us.
    for _ in range(10):
        if s.recv(200000) == b"":
            return True
    return False
# Not a frame at all.
s = conn(); s.send(b"\xff" * 64)
assert closed(s)
# A length header claiming 4 GiB.
s = conn(); s.send(struct.pack("<I", 0xffffffff) + b"x" * 16)
assert closed(s)
# Random bytes after a plausible header.
s = conn(); s.send(struct.pack("<I", 24) + b"\x00\x01" * 12)
assert closed(s)
# Connect and hang up at once.
s = conn(); s.close()
print("ok")
"#,
        sock = sock.display()
    ));
    assert_eq!(inst.pid_of("pickup"), Some(pid), "pickup restarted");
    wait_for(
        "three dropped connections in the log",
        Duration::from_secs(5),
        || (inst.log_lines("pickup socket: dropping uid 0").len() >= 3).then_some(()),
    );
    let sm = links(&inst).join("sendmail");
    ok(&run(
        &inst,
        Some(NOBODY),
        &sm,
        &["root"],
        b"Subject: after-garbage\n\nx\n",
    ));
    arrived(&inst, "root", "Subject: after-garbage");
    assert_eq!(inst.pid_of("pickup"), Some(pid));
}

#[test]
fn mailq_works_for_ordinary_users_in_authorized_mailq_users() {
    // A next hop that is never there, so the message stays in the queue.
    let mut inst = Instance::new("relayhost = [127.0.0.1]:9\n");
    inst.start();
    let d = links(&inst);
    let o = run(
        &inst,
        None,
        &d.join("sendmail"),
        &["-f", "root", "user@remote.example"],
        b"Subject: waiting\n\nstays queued\n",
    );
    ok(&o);
    let id = wait_for("a deferred message", Duration::from_secs(20), || {
        inst.queue_json()
            .first()
            .filter(|e| e["queue_name"] == "deferred")
            .map(|e| e["queue_id"].as_str().unwrap().to_string())
    });
    // nobody cannot use the control socket, but mailq works through the
    // public showq socket, in Postfix's format.
    let o = run(&inst, Some(NOBODY), &d.join("mailq"), &[], b"");
    ok(&o);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.starts_with("-Queue ID-"), "{out}");
    assert!(
        out.contains(&id) && out.contains("user@remote.example"),
        "{out}"
    );
    let o = run(&inst, Some(NOBODY), &d.join("sendmail"), &["-bp"], b"");
    ok(&o);
    assert!(String::from_utf8_lossy(&o.stdout).contains(&id));
    // The admin commands stay closed to nobody.
    let o = Command::new("setpriv")
        .args([
            format!("--reuid={NOBODY}"),
            format!("--regid={NOBODY}"),
            "--clear-groups".into(),
            "--".into(),
        ])
        .arg(bin())
        .args(["queue", "delete", "ALL"])
        .env("MAIL_CONFIG", inst.config_dir())
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert_eq!(inst.queue_json().len(), 1, "nobody deleted the queue");

    // authorized_mailq_users without nobody: refused, with a clear message.
    inst.add_main_cf("authorized_mailq_users = root\n");
    inst.stop();
    inst.start();
    let o = run(&inst, Some(NOBODY), &d.join("mailq"), &[], b"");
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("User nobody(65534) is not allowed to view the mail queue"),
        "{}",
        stderr(&o)
    );
    inst.wait_log(
        "refusing the queue listing to nobody(65534)",
        Duration::from_secs(5),
    );
    // root still sees it.
    let o = run(&inst, None, &d.join("mailq"), &[], b"");
    ok(&o);
    assert!(String::from_utf8_lossy(&o.stdout).contains(&id));
}

#[test]
fn dash_v_mails_a_report_of_the_first_delivery_attempt() {
    let ip = postern_tests::unique_loopback();
    let sink_dir = tempfile::tempdir().unwrap();
    let mut inst = Instance::with_master_cf(
        &format!("relayhost = [{ip}]:2626\nminimal_backoff_time = 1s\nmaximal_backoff_time = 2s"),
        Some(&format!("{ip}:2525 inet n - n - - smtpd\n")),
    );
    inst.ip = ip.clone();
    inst.start();
    let sink = Sink::start(&ip, 2626, sink_dir.path());
    sink.set_mode("tempfail");
    let sm = links(&inst).join("sendmail");
    // Postfix: "-v  Send an email report of the first delivery attempt".
    let o = run(
        &inst,
        None,
        &sm,
        &["-v", "daemon", "far@remote.example"],
        b"Subject: traced\nMessage-ID: <traced-1@test.example>\n\nwith a report\n",
    );
    ok(&o);
    let report = arrived(&inst, "root", "Subject: Mail Delivery Status Report");
    assert!(report.starts_with("Return-Path: <>\n"), "{report}");
    assert!(
        report.contains("Enclosed is the mail delivery report that you requested."),
        "{report}"
    );
    assert!(
        report.contains("In-Reply-To: <traced-1@test.example>"),
        "{report}"
    );
    // One entry per recipient, each with its own action.
    let delivered = report
        .find("Final-Recipient: rfc822; daemon@")
        .expect("the local recipient");
    assert!(
        report[delivered..].contains("Action: delivered\nStatus: 2."),
        "{report}"
    );
    let far = report
        .find("Final-Recipient: rfc822; far@remote.example")
        .expect("the remote recipient");
    assert!(
        report[far..].contains("Action: delayed\nStatus: 4."),
        "{report}"
    );
    arrived(&inst, "daemon", "Subject: traced");
    // Only the first attempt is reported: the later delivery sends nothing.
    sink.set_mode("accept");
    wait_for("the remote delivery", Duration::from_secs(30), || {
        (!sink.messages().is_empty()).then_some(())
    });
    inst.wait_queue_empty(Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    let reports = inst
        .maildir("root")
        .iter()
        .filter(|m| m.contains("Subject: Mail Delivery Status Report"))
        .count();
    assert_eq!(reports, 1);
    // Without -v, no report.
    ok(&run(
        &inst,
        None,
        &sm,
        &["daemon"],
        b"Subject: quiet\n\nx\n",
    ));
    arrived(&inst, "daemon", "Subject: quiet");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(inst.maildir("root").len(), 1);
}
