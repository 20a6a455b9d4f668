//! Lookup tables against Postfix's own `postmap -q`, the oracle: the same
//! table files and inline tables, a few thousand generated keys, and the
//! answers of `postern map query TABLE -` must equal those of
//! `postmap -q - TABLE`.
//!
//! Deliberate differences, each refused with the table file's name and
//! line instead of being matched differently (`refused_constructs` below
//! checks each one):
//! - backreferences (`\1`) and lookaround (`(?=`, `(?!`, `(?<=`): the
//!   linear-time engine has neither;
//! - POSIX basic syntax (a regexp: pattern with the `x` flag turned off);
//! - in regexp: tables, an escape that glibc reads as a plain letter (`\d`
//!   is `d` to glibc, a digit to other engines), and collating elements;
//! - in regexp: tables, a `$number` result from a pattern containing `|`:
//!   POSIX takes the leftmost-longest alternative, this engine the
//!   leftmost-first, and the captured text can differ;
//! - the pcre `X` flag (PCRE2 has none);
//! - a rule Postfix skips with a warning (a cidr pattern with host bits
//!   set, an unknown flag, a result with a bad `$` macro, no result) is
//!   an error that makes the whole table unusable: Postern never answers
//!   from a table with a rule silently dropped;
//! - keys that end in a newline (PCRE's `$` also matches before a final
//!   newline, this engine's only at the end); SMTP keys never contain one.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use postern_tests::tablesrv::{Protocol, TableServer};
use postern_tests::{Instance, Sink, wait_for};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tables")
}

/// Runs `cmd` with `keys` on stdin; returns its stdout lines.
fn answers(mut cmd: Command, keys: &[String]) -> Vec<String> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input: String = keys.iter().map(|k| format!("{k}\n")).collect();
    let writer = std::thread::spawn(move || {
        stdin.write_all(input.as_bytes()).unwrap();
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    // postern says on stderr that it reads the table itself (no running
    // system uses these); anything else there is a failure.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.lines().all(|l| l.ends_with("reading it directly")),
        "{cmd:?}: {}\n{err}",
        out.status,
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn postmap(conf: &Path, table: &str, keys: &[String]) -> Vec<String> {
    let mut c = Command::new("postmap");
    c.args(["-c", &conf.display().to_string(), "-q", "-", table]);
    answers(c, keys)
}

fn postern(table: &str, keys: &[String]) -> Vec<String> {
    let mut c = Command::new(postern_tests::bin());
    c.args(["map", "query", table, "-"]);
    answers(c, keys)
}

fn pick<'a>(r: &mut fastrand::Rng, v: &[&'a str]) -> &'a str {
    v[r.usize(..v.len())]
}

fn mixed_case(r: &mut fastrand::Rng, s: &str) -> String {
    match r.u8(..4) {
        0 => s.to_ascii_uppercase(),
        1 => s
            .chars()
            .map(|c| if r.bool() { c.to_ascii_uppercase() } else { c })
            .collect(),
        _ => s.to_string(),
    }
}

/// Addresses, hostnames and IP addresses around what the fixtures match,
/// and edge cases.
fn keys() -> Vec<String> {
    let mut r = fastrand::Rng::with_seed(0x0705_7e27);
    let locals = [
        "postmaster",
        "list-outgoing",
        "owner-list-outgoing",
        "a-outgoing",
        "user+tag",
        "user+TAG9",
        "CaseSensitive",
        "casefold",
        "noddy",
        "admin",
        "root",
        "first.last",
        "12345",
        "aaa",
        "aaab",
        "aaabc",
        "bounce",
        "bouncer",
        "x_y",
        "x-y",
        "a.b",
        "a-b",
        "friend",
        "u s e r",
        "user",
        "a%b",
        "a!b",
        "-",
        "[]",
        "\\",
        "a..b",
        "",
        "xxxx",
        "xxxxxx",
        "x",
        "host-12",
    ];
    let domains = [
        "x",
        "example.com",
        "example.net",
        "example.org",
        "sub.bar.example",
        "my.domain",
        "digits.test",
        "words.test",
        "exact.test",
        "x.test",
        "dotall.test",
        "nodot.test",
        "rep.test",
        "lazy.test",
        "greedy.test",
        "brackets.test",
        "if.test",
        "keep.test",
        "plus.test",
        "dots.test",
        "7.example",
        "123.example",
        "q.example.org",
        "host-12.dyn.example.com",
        "foo.invalid",
        "x.test.",
        "a@b",
        "",
        "lists.example.test",
    ];
    let mut out = Vec::new();
    for _ in 0..2500 {
        let l = pick(&mut r, &locals);
        let d = pick(&mut r, &domains);
        let mut k = match r.u8(..10) {
            0 => l.to_string(),
            1 => d.to_string(),
            2 => format!("{l}@{d}@{}", pick(&mut r, &domains)),
            3 => format!("{l}{}@{d}", r.u16(..1000)),
            4 => (0..r.usize(1..60))
                .map(|_| {
                    pick(
                        &mut r,
                        &["a", "b", "x", ".", "@", "-", "%", "!", "_", "+", "1", "Z"],
                    )
                })
                .collect(),
            _ => format!("{l}@{d}"),
        };
        k = mixed_case(&mut r, &k);
        if !k.is_empty() {
            out.push(k);
        }
    }
    for _ in 0..1500 {
        let k = match r.u8(..9) {
            0 => format!("10.{}.{}.{}", r.u8(..4), r.u8(..), r.u8(..)),
            1 => format!("192.168.{}.{}", r.u8(..3), r.u8(..)),
            2 => format!("198.51.100.{}", r.u8(..)),
            3 => format!("{}.{}.{}.{}", r.u8(..), r.u8(..), r.u8(..), r.u8(..)),
            4 => format!("2001:db8:{:x}::{:x}", r.u16(..4), r.u16(..)),
            5 => format!("2001:db9:{:x}::{:x}", r.u8(..2), r.u16(..)),
            6 => format!("fe{:x}::{:x}", r.u8(0x70..0xc0), r.u16(..)),
            7 => format!("::ffff:{}.{}.{}.{}", r.u8(..), r.u8(..), r.u8(..), r.u8(..)),
            _ => format!("{:x}:{:x}::{:x}", r.u16(..), r.u16(..), r.u16(..)),
        };
        out.push(mixed_case(&mut r, &k));
    }
    for edge in [
        "192.168.1.1",
        "2001:db8::1",
        "2001:DB8:0::0:1",
        "2001:0db8::0001",
        "[192.168.1.1]",
        "010.1.1.1",
        "10.1.2.3",
        "10.2.0.1",
        "1.2.3",
        "1.2.3.4.5",
        "256.1.1.1",
        "::1",
        "::",
        "0.0.0.0",
        "::ffff:10.2.3.4",
        "fe80::1%eth0",
        "2001:db8::/32",
        "198.51.100.7",
        "198.51.100.127",
        "198.51.100.128",
        " 10.2.3.4",
        "10.2.3.4 ",
    ] {
        out.push(edge.to_string());
    }
    out.push("a".repeat(300) + "@example.com");
    out.push("x".repeat(4) + "@rep.test");
    out
}

#[test]
fn postmap_is_the_oracle() {
    let conf = tempfile::tempdir().unwrap();
    std::fs::write(conf.path().join("main.cf"), "").unwrap();
    let f = fixtures();
    let mut tables: Vec<String> = vec![
        format!("cidr:{}", f.join("client.cidr").display()),
        format!("regexp:{}", f.join("access.regexp").display()),
        format!("pcre:{}", f.join("access.pcre").display()),
    ];
    // The inline forms of cidr_table(5), regexp_table(5), pcre_table(5),
    // and postconf(5)'s inline, unionmap and pipemap.
    tables.extend(
        [
            "cidr:{ {192.168.1.1 OK}, {192.168.0.0/16 REJECT}, {2001:db8::1 OK}, {2001:db8::/32 REJECT} }",
            "regexp:{ {/^postmaster@/ OK}, {/^(.*)-outgoing@(.*)$/ 550 Use ${1}@${2} instead}, {/[%!@].*[%!@]/ 550 no routing} }",
            "pcre:{ {/^\\d+@/ digits}, {/^(\\w+)@(\\w+)\\.test$/ $2 $1} }",
            "inline:{ postmaster=root, Admin=root, { abuse = root, admin }, example.com=OK }",
            "unionmap:{ inline:{postmaster=a, root=r}, regexp:{ {/^p/ p-word} }, static:always }",
            "pipemap:{ inline:{postmaster=admin, admin=root}, inline:{admin=boss, root=top} }",
        ]
        .map(String::from),
    );
    let keys = keys();
    assert!(keys.len() > 3000);
    for t in &tables {
        let want = postmap(conf.path(), t, &keys);
        let got = postern(t, &keys);
        assert!(
            !want.is_empty(),
            "{t}: postmap found nothing; the fixture tests nothing"
        );
        let diff: Vec<String> = want
            .iter()
            .filter(|l| !got.contains(l))
            .map(|l| format!("postmap: {l}"))
            .chain(
                got.iter()
                    .filter(|l| !want.contains(l))
                    .map(|l| format!("postern: {l}")),
            )
            .collect();
        assert!(
            diff.is_empty(),
            "{t}: {} difference(s) over {} keys:\n{}",
            diff.len(),
            keys.len(),
            diff.join("\n")
        );
    }
}

#[test]
fn refused_constructs() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str, &str)] = &[
        (
            "pcre",
            "/^(?!owner-)(.*)-outgoing@(.*)/ 550 x\n",
            "look-around",
        ),
        ("pcre", "/(a)\\1/ x\n", "backreferences"),
        ("regexp", "/(a)\\1/ x\n", "backreferences"),
        ("regexp", "/^a\\d/ x\n", "not a POSIX escape"),
        ("regexp", "/^a/x basic\n", "basic regular expression"),
        ("regexp", "/[[.a.]]/ x\n", "collating"),
        ("regexp", "/^(a|b)@/ $1\n", "leftmost-longest"),
        ("pcre", "/a/X x\n", "X flag"),
        ("regexp", "/a/q x\n", "unknown regexp option"),
        ("regexp", "/a/\n", "no replacement text"),
        ("regexp", "/(a)/ $2\n", "out of range"),
        ("regexp", "!/(a)/ $1\n", "negative match"),
        ("cidr", "10.0.0.1/8 x\n", "non-null host address bits"),
        (
            "cidr",
            "if 10.0.0.0/8\n10.1.0.0/16 x\n",
            "IF has no matching ENDIF",
        ),
        ("cidr", "10.0.0.0/8\n", "no lookup result"),
    ];
    for (i, (kind, text, why)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("t{i}.{kind}"));
        std::fs::write(&path, format!("# line 1 is a comment\n{text}")).unwrap();
        let spec = format!("{kind}:{}", path.display());
        let out = Command::new(postern_tests::bin())
            .args(["map", "query", &spec, "key"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{spec}: {err}");
        assert!(
            err.contains(&format!("{}:2: ", path.display())) && err.contains(why),
            "{kind} {text:?}: expected file:2 and \"{why}\" in: {err}"
        );
    }
}

#[test]
fn a_missing_table_is_an_error_not_an_empty_table() {
    let inst = Instance::new("");
    let spec = format!("cdb:{}/nonexistent", inst.config_dir().display());
    let out = inst.postern(&["map", "query", &spec, "key"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nonexistent.cdb: No such file or directory"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An SMTP client sends one message per recipient, from a mynetworks
/// address.
fn relay(inst: &Instance, rcpts: &[&str]) {
    for r in rcpts {
        let mut c = inst.smtp();
        assert!(c.reply().starts_with("220"));
        c.cmd("EHLO client.example");
        let reply = c.send_mail(
            "alice@example.org",
            &[r],
            "Subject: routed\r\n\r\nhello\r\n",
        );
        assert!(reply.starts_with("250"), "{r}: {reply}");
        c.cmd("QUIT");
    }
}

#[test]
fn socketmap_routes_mail_and_a_failing_server_defers_it() {
    let inst = Instance::new(
        "smtpd_error_sleep_time = 0\nminimal_backoff_time = 3600s\nmaximal_backoff_time = 3600s\n",
    );
    let next_hop = format!("smtp:[{}]:2626", inst.ip);
    let srv = TableServer::start(
        &inst.ip,
        Protocol::Socketmap,
        &[("routed.example", &next_hop)],
    );
    let spec = format!("socketmap:inet:{}:{}:transport", inst.ip, srv.port);
    inst.add_main_cf(&format!("transport_maps = {spec}\n"));
    // The command answers by itself before the system runs.
    let out = inst.postern(&["map", "query", &spec, "routed.example"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{next_hop}\n")
    );
    let out = inst.postern(&["map", "query", &spec, "temp.example"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("says: TEMP database down"));

    let sink = Sink::start(&inst.ip, 2626, &inst.dir.path().join("sink"));
    let mut inst = inst;
    inst.start();
    relay(
        &inst,
        &["bob@routed.example", "x@temp.example", "y@die.example"],
    );
    wait_for("the routed message", Duration::from_secs(30), || {
        (sink.messages().len() == 1).then_some(())
    });
    // A server that says TEMP, and one that hangs up half-way through its
    // reply: the mail waits, it is not routed around the table.
    wait_for("two deferrals", Duration::from_secs(30), || {
        (inst
            .log_lines("status=deferred (transport_maps lookup failure)")
            .len()
            >= 2)
            .then_some(())
    });
    assert_eq!(inst.queue_json().len(), 2);
    assert!(
        !inst.log_lines("says: TEMP database down").is_empty(),
        "{}",
        inst.log()
    );
    assert!(
        !inst
            .log_lines("connection closed before the reply ended")
            .is_empty(),
        "{}",
        inst.log()
    );
    assert!(inst.pid_of("proxymap").is_some());
    assert!(inst.log_lines("exited").is_empty(), "{}", inst.log());
}

/// Debian's postsrsd 1.10 speaks tcp_table(5): its forward map rewrites a
/// sender to an SRS address. Through a running instance, a pipemap turns
/// that rewriting into a route: the message reaches the sink only if
/// postsrsd answered through proxymap.
#[test]
fn tcp_table_with_postsrsd() {
    let inst = Instance::new("smtpd_error_sleep_time = 0\n");
    let secret = inst.config_dir().join("srs-secret");
    std::fs::write(&secret, "a test secret, not a real one\n").unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _srs = Kill(
        Command::new("postsrsd")
            .args([
                "-4",
                "-l",
                &inst.ip,
                "-f",
                "10001",
                "-r",
                "10002",
                "-d",
                "srs.example",
            ])
            .arg(format!("-s{}", secret.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("postsrsd (apt-get install postsrsd)"),
    );
    wait_for("postsrsd listening", Duration::from_secs(10), || {
        std::net::TcpStream::connect((inst.ip.as_str(), 10001)).ok()
    });
    let forward = format!("tcp:{}:10001", inst.ip);
    let out = inst.postern(&["map", "query", &forward, "bob@remote.example"]);
    let srs = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        srs.starts_with("SRS0=") && srs.ends_with("=remote.example=bob@srs.example"),
        "{srs:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reverse = format!("tcp:{}:10002", inst.ip);
    let out = inst.postern(&["map", "query", &reverse, &srs]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "bob@remote.example"
    );

    inst.add_main_cf(&format!(
        "transport_maps = pipemap:{{ {forward}, regexp:{{ {{/^SRS0=.*@srs\\.example$$/ smtp:[{ip}]:2626}} }} }}\n",
        ip = inst.ip
    ));
    let sink = Sink::start(&inst.ip, 2626, &inst.dir.path().join("sink"));
    let mut inst = inst;
    inst.start();
    relay(&inst, &["bob@remote.example"]);
    wait_for(
        "the message routed by postsrsd's answer",
        Duration::from_secs(30),
        || (sink.messages().len() == 1).then_some(()),
    );
    assert!(inst.pid_of("proxymap").is_some());
    // The running system answers the query now (broker, then proxymap),
    // and says nothing about reading directly.
    let out = inst.postern(&["map", "query", &forward, "bob@remote.example"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), srs);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn json_names_the_unionmap_members_that_answered() {
    let spec = "unionmap:{ inline:{a=1}, inline:{a=2, b=3}, static:s }";
    let out = Command::new(postern_tests::bin())
        .args(["map", "query", "--json", spec, "a", "b"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["value"], "1,2,s");
    assert_eq!(
        lines[0]["from"],
        serde_json::json!(["inline:{a=1}", "inline:{a=2, b=3}", "static:s"])
    );
    assert_eq!(lines[1]["value"], "3,s");
    assert_eq!(
        lines[1]["from"],
        serde_json::json!(["inline:{a=2, b=3}", "static:s"])
    );
}

/// socketmap over a Unix socket: the master connects for proxymap (whose
/// jail has no Unix sockets of its own) and hands it the connection.
#[test]
fn socketmap_over_a_unix_socket() {
    let inst = Instance::new("smtpd_error_sleep_time = 0\n");
    let path = inst.config_dir().join("socketmap.sock");
    let next_hop = format!("smtp:[{}]:2626", inst.ip);
    let _srv =
        TableServer::start_unix(&path, Protocol::Socketmap, &[("routed.example", &next_hop)]);
    let spec = format!("socketmap:unix:{}:transport", path.display());
    inst.add_main_cf(&format!("transport_maps = {spec}\n"));
    let out = inst.postern(&["map", "query", &spec, "routed.example"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{next_hop}\n")
    );
    let sink = Sink::start(&inst.ip, 2626, &inst.dir.path().join("sink"));
    let mut inst = inst;
    inst.start();
    relay(&inst, &["bob@routed.example"]);
    wait_for("the routed message", Duration::from_secs(30), || {
        (sink.messages().len() == 1).then_some(())
    });
    let out = inst.postern(&["map", "query", &spec, "routed.example"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{next_hop}\n")
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
