//! Test harness: runs real `postern` instances, each in its own temporary
//! directory and on its own loopback address, and talks to them only the way
//! an admin or a client would (command line, sockets, files, logs).
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod countsink;
pub mod dns;
pub mod dnssec;
pub mod dovecot;
pub mod haproxy;
pub mod pki;
pub mod policyd;
pub mod postfix;
pub mod swaks;
pub mod tablesrv;
pub mod vm;

/// The postern binary under test: $POSTERN_BIN, or target/debug/postern.
/// Tests run it as other users too (nobody, through setpriv), so when the
/// checkout is not reachable by them (a clone in a 0700 `mktemp -d`
/// directory), the binary is linked or copied once into a world-readable
/// directory under the system temporary directory, and that path is used.
pub fn bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let built = match std::env::var("POSTERN_BIN") {
            Ok(p) => PathBuf::from(p),
            Err(_) => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/postern"),
        };
        assert!(
            built.exists(),
            "{} not found: run `cargo build --bins` before the tests (the README test command does)",
            built.display()
        );
        let built = built.canonicalize().expect("canonical path of the binary");
        if reachable_by_everyone(&built) {
            built
        } else {
            shared_copy(&built)
        }
    })
    .clone()
}

/// Every directory above `p` searchable, and `p` executable, by others.
fn reachable_by_everyone(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let mode = |q: &Path| std::fs::metadata(q).map_or(0, |m| m.permissions().mode());
    mode(p) & 0o001 != 0 && p.ancestors().skip(1).all(|d| mode(d) & 0o001 != 0)
}

/// A copy (a hard link where possible) of `built` that every user can
/// execute, named after the build's size and mtime so that the test
/// binaries of one run share it and a rebuild gets a new one.
fn shared_copy(built: &Path) -> PathBuf {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let m = std::fs::metadata(built).expect("metadata of the binary");
    let dir = std::env::temp_dir().join(format!(
        "postern-test-bin-{}-{}.{}",
        m.size(),
        m.mtime(),
        m.mtime_nsec()
    ));
    let dest = dir.join("postern");
    if dest.exists() {
        return dest;
    }
    std::fs::create_dir_all(&dir).expect("create the shared binary directory");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Link or copy under a private name, then rename: concurrent test
    // binaries never see half a file.
    let tmp = dir.join(format!("postern.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    if std::fs::hard_link(built, &tmp).is_err() {
        std::fs::copy(built, &tmp).expect("copy the binary");
    }
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, &dest).expect("rename the shared binary");
    dest
}

pub fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// A loopback address no other test in any process uses at the same time.
pub fn unique_loopback() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let pid = std::process::id();
    format!(
        "127.{}.{}.{}",
        10 + pid % 240,
        (pid / 240) % 250,
        1 + n % 250
    )
}

/// Polls `f` until it returns Some, or panics after `timeout`.
/// main.cf lines under which [`Instance::wake_on_demand_roles`] wakes the
/// verify and policy roles too (one recipient is checked with
/// reject_unverified_recipient, another asks a policy service that is
/// down, whose default action lets it through).
pub const WAKE_VERIFY: &str = "smtpd_restriction_classes = wake_policy\n\
    wake_policy = check_policy_service { inet:127.0.0.1:9, try_limit=1, timeout=2s, default_action=DUNNO }\n\
    smtpd_recipient_restrictions = check_recipient_access inline:{ wake-verify@mx.test.example=reject_unverified_recipient, wake-policy@mx.test.example=wake_policy }\n\
    non_smtpd_milters = { inet:127.0.0.1:9, default_action=accept }\n\
    # wake-sts: a message relayed to an MX domain wakes the sts role; DNS\n\
    # questions go to a loopback port where nothing answers.\n\
    dns_nameservers = 127.0.0.1:9\n";

pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The embedded master.cf's three listeners on `ip`: smtp (2525),
/// submission (2587: TLS required, SASL, authenticated clients only) and
/// submissions (2465: implicit TLS, SASL, authenticated clients only).
pub fn three_listeners(ip: &str) -> String {
    format!(
        "{ip}:2525 inet n - n - - smtpd\n\
         {ip}:2587 inet n - n - - smtpd\n  -o syslog_name=postfix/submission\n  -o smtpd_tls_security_level=encrypt\n  -o smtpd_sasl_auth_enable=yes\n  -o smtpd_client_restrictions=permit_sasl_authenticated,reject\n\
         {ip}:2465 inet n - n - - smtpd\n  -o syslog_name=postfix/submissions\n  -o smtpd_tls_wrappermode=yes\n  -o smtpd_sasl_auth_enable=yes\n  -o smtpd_client_restrictions=permit_sasl_authenticated,reject\n"
    )
}

pub struct Instance {
    pub dir: tempfile::TempDir,
    pub ip: String,
    pub smtp_port: u16,
    pub submission_port: u16,
    master: Option<Child>,
    /// Run the master as this uid (non-root mode tests).
    pub run_as: Option<u32>,
}

impl Instance {
    /// An instance with `extra` appended to its main.cf.
    pub fn new(extra: &str) -> Instance {
        Self::with_master_cf(extra, None)
    }

    pub fn with_master_cf(extra: &str, master_cf: Option<&str>) -> Instance {
        let dir = tempfile::Builder::new()
            .prefix("postern-test-")
            .tempdir()
            .expect("tempdir");
        // Role users must be able to traverse to their directories.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let ip = unique_loopback();
        let inst = Instance {
            ip,
            smtp_port: 2525,
            submission_port: 2587,
            master: None,
            run_as: None,
            dir,
        };
        // Client names need DNS, and tests ask only the DNS servers they
        // start on loopback: a test that wants names turns the lookup on.
        let main = format!(
            "# written by the test harness\n\
             data_directory = {data}\n\
             myhostname = mx.test.example\n\
             mydomain = test.example\n\
             smtpd_peername_lookup = no\n\
             {extra}\n",
            data = inst.data_dir().display()
        );
        std::fs::write(inst.config_dir().join("main.cf"), main).unwrap();
        let mcf = master_cf.map(str::to_string).unwrap_or_else(|| {
            format!(
                "{ip}:{s} inet n - n - - smtpd\n{ip}:{m} inet n - n - - smtpd\n  -o syslog_name=postfix/submission\n",
                ip = inst.ip,
                s = inst.smtp_port,
                m = inst.submission_port
            )
        });
        std::fs::write(inst.config_dir().join("master.cf"), mcf).unwrap();
        inst
    }

    /// An instance with the three listeners of the embedded master.cf and
    /// `extra` in main.cf (not started).
    pub fn with_three_listeners(extra: &str) -> Instance {
        let ip = unique_loopback();
        let mut inst = Instance::with_master_cf(extra, Some(&three_listeners(&ip)));
        inst.ip = ip;
        inst
    }

    /// Adds a postscreen service on port 2526 in front of an smtpd pass
    /// service (before start), so that the postscreen role runs too.
    pub fn add_postscreen(&self) {
        let mcf = self.config_dir().join("master.cf");
        let text = std::fs::read_to_string(&mcf).unwrap();
        std::fs::write(
            &mcf,
            format!(
                "{text}{}:2526 inet n - n - 1 postscreen\nsmtpd pass - - n - - smtpd\n",
                self.ip
            ),
        )
        .unwrap();
    }

    /// Appends lines to main.cf (before start, or before a reload).
    pub fn add_main_cf(&self, lines: &str) {
        let main = self.config_dir().join("main.cf");
        let text = std::fs::read_to_string(&main).unwrap();
        std::fs::write(&main, format!("{text}{lines}\n")).unwrap();
    }

    /// `postern passwd USER`, the password given twice on stdin.
    pub fn passwd(&self, user: &str, password: &str) -> Output {
        let mut child = self
            .command()
            .args(["passwd", user])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("postern passwd");
        // A command that fails before reading closes its stdin: the write
        // then fails with EPIPE, and its status and stderr say why.
        let write = child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{password}\n{password}\n").as_bytes());
        let out = child.wait_with_output().unwrap();
        if let Err(e) = write {
            assert!(
                !out.status.success(),
                "postern passwd succeeded without reading its input ({e})"
            );
        }
        out
    }

    pub fn config_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("master.log")
    }

    /// `postern -c DIR`, as `run_as` when set (through setpriv, which also
    /// clears supplementary groups).
    pub fn command(&self) -> Command {
        let mut cmd = self.bare_command();
        cmd.arg("-c").arg(self.config_dir());
        cmd
    }

    /// `postern`, as `run_as` when set, with no arguments yet.
    fn bare_command(&self) -> Command {
        match self.run_as {
            Some(uid) => {
                let mut c = Command::new("setpriv");
                c.args([
                    format!("--reuid={uid}"),
                    format!("--regid={uid}"),
                    "--clear-groups".into(),
                    "--".into(),
                ])
                .arg(bin());
                c
            }
            None => Command::new(bin()),
        }
    }

    /// The sendmail command (a `sendmail` link to the binary, with
    /// MAIL_CONFIG naming this instance) with `args`, `input` on stdin;
    /// it must succeed.
    pub fn sendmail(&self, args: &[&str], input: &[u8]) {
        use std::io::Write;
        let d = self.dir.path().join("bin");
        std::fs::create_dir_all(&d).unwrap();
        let sm = d.join("sendmail");
        if !sm.exists() {
            std::os::unix::fs::symlink(bin(), &sm).unwrap();
        }
        let mut child = Command::new(&sm)
            .args(args)
            .env("MAIL_CONFIG", self.config_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sendmail");
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "sendmail: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `postern -c DIR ARGS...`, waited for.
    pub fn postern(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("run postern")
    }

    /// Starts the master in the foreground (logging to master.log) and waits
    /// until every daemon reports running.
    pub fn start(&mut self) {
        self.start_command(self.command());
    }

    /// Starts the master with RLIMIT_NOFILE set to `n` (soft and hard),
    /// which every daemon inherits (prlimit from util-linux).
    pub fn start_with_nofile(&mut self, n: u64) {
        let inner = self.command();
        let mut cmd = Command::new("prlimit");
        cmd.arg(format!("--nofile={n}:{n}"))
            .arg("--")
            .arg(inner.get_program())
            .args(inner.get_args());
        self.start_command(cmd);
    }

    fn start_command(&mut self, mut cmd: Command) {
        let log = std::fs::File::create(self.log_path()).unwrap();
        cmd.args(["start", "--foreground"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.master = Some(cmd.spawn().expect("start postern"));
        self.wait_running();
    }

    pub fn wait_running(&mut self) {
        let log = self.log_path();
        wait_for("every daemon running", Duration::from_secs(30), || {
            if let Some(m) = self.master.as_mut()
                && let Ok(Some(st)) = m.try_wait()
            {
                panic!(
                    "master exited ({st}):\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            let s = self.try_status()?;
            let ps = s["processes"].as_array()?;
            // Roles that start on first use (bounce, auth) are "on demand"
            // until something needs them.
            (ps.len() > 1
                && ps.iter().all(|p| {
                    p["state"] == "running" || p["state"] == "on demand" || p["state"] == "off"
                }))
            .then_some(())
        });
    }

    pub fn try_status(&self) -> Option<Value> {
        let out = self.postern(&["status", "--json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    pub fn status(&self) -> Value {
        self.try_status().expect("postern status --json")
    }

    /// Pid of the running process of `role`, if there is exactly one running.
    pub fn pid_of(&self, role: &str) -> Option<u32> {
        let s = self.try_status()?;
        let running: Vec<u32> = s["processes"]
            .as_array()?
            .iter()
            .filter(|p| p["role"] == role && p["state"] == "running")
            .map(|p| p["pid"].as_u64().unwrap() as u32)
            .collect();
        (running.len() == 1).then(|| running[0])
    }

    pub fn master_pid(&self) -> u32 {
        self.master.as_ref().expect("started").id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        wait_for(&format!("log line containing {needle:?}"), timeout, || {
            self.log().contains(needle).then_some(())
        });
    }

    /// Stops the instance with `postern stop` and waits for the master to exit.
    pub fn stop(&mut self) {
        if let Some(mut m) = self.master.take() {
            let out = self.postern(&["stop"]);
            if !out.status.success() {
                let _ = m.kill();
            }
            let end = Instant::now() + Duration::from_secs(30);
            while Instant::now() < end {
                if let Ok(Some(_)) = m.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = m.kill();
            let _ = m.wait();
            panic!("master did not stop within 30s");
        }
    }

    pub fn smtp(&self) -> Smtp {
        Smtp::connect(&self.ip, self.smtp_port)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The mail log is the first thing to read when a test fails.
            let log = self.log();
            let keep = std::env::temp_dir().join(format!("postern-failed-{}.log", self.ip));
            let _ = std::fs::write(&keep, &log);
            let tail: Vec<&str> = log.lines().rev().take(80).collect();
            eprintln!(
                "---- last lines of the mail log (whole log kept in {}) ----",
                keep.display()
            );
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        if let Some(mut m) = self.master.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(m.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let end = Instant::now() + Duration::from_secs(15);
            while Instant::now() < end {
                if let Ok(Some(_)) = m.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = m.kill();
            let _ = m.wait();
        }
    }
}

/// A raw SMTP client over TCP, for exact-reply tests.
pub struct Smtp {
    pub r: BufReader<TcpStream>,
    pub w: TcpStream,
}

impl Smtp {
    pub fn connect(ip: &str, port: u16) -> Smtp {
        let s = wait_for("smtp connect", Duration::from_secs(10), || {
            TcpStream::connect((ip, port)).ok()
        });
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Smtp {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        }
    }

    /// Connects from the loopback address `src` (a client other than
    /// 127.0.0.1, for client restrictions).
    pub fn connect_from(src: &str, ip: &str, port: u16) -> Smtp {
        use nix::sys::socket::{
            AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, socket,
        };
        let parse = |a: &str, p: u16| -> SockaddrIn {
            let v4: std::net::Ipv4Addr = a.parse().expect("an IPv4 loopback address");
            SockaddrIn::from(std::net::SocketAddrV4::new(v4, p))
        };
        let fd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .expect("socket");
        bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &parse(src, 0)).expect("bind the source");
        wait_for("smtp connect", Duration::from_secs(10), || {
            connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &parse(ip, port)).ok()
        });
        let s = TcpStream::from(fd);
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Smtp {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        }
    }

    /// Reads one (possibly multi-line) reply; returns the whole text.
    pub fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = self.r.read_line(&mut line).expect("read reply");
            assert!(n > 0, "connection closed; reply so far: {all:?}");
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return all;
            }
        }
    }

    pub fn send(&mut self, raw: &[u8]) {
        self.w.write_all(raw).expect("send");
    }

    pub fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// True when the server closed the connection (EOF within the timeout,
    /// or a reset when it closed with our unread commands pending).
    pub fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        match self.r.read(&mut b) {
            Ok(0) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            Ok(_) => false,
        }
    }
}

/// Debian's python3 (which has aiosmtpd), with `script` on stdin.
/// Runs a Python script that must succeed; returns its standard output
/// (panics with both outputs when it fails).
pub fn python_ok(script: &str) -> String {
    let out = python(script);
    assert!(
        out.status.success(),
        "python failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn python(script: &str) -> Output {
    let mut child = Command::new("/usr/bin/python3")
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run /usr/bin/python3 (install python3)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

impl Instance {
    /// Log lines containing `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    }

    /// Queue ids logged by qmgr as active.
    pub fn queued_ids(&self) -> Vec<String> {
        self.log_lines("(queue active)")
            .iter()
            .filter_map(|l| l.split("]: ").nth(1)?.split(':').next().map(str::to_string))
            .collect()
    }
}

impl Smtp {
    /// Reads replies until one starts with a final (non-continuation) line
    /// with `code`, returning every reply read.
    pub fn replies(&mut self, n: usize) -> Vec<String> {
        (0..n).map(|_| self.reply()).collect()
    }

    /// A complete transaction; returns the reply to the end of data.
    pub fn send_mail(&mut self, from: &str, to: &[&str], body: &str) -> String {
        assert!(
            self.cmd(&format!("MAIL FROM:<{from}>")).starts_with("250"),
            "MAIL"
        );
        for t in to {
            let r = self.cmd(&format!("RCPT TO:<{t}>"));
            assert!(r.starts_with("250"), "RCPT {t}: {r}");
        }
        assert!(self.cmd("DATA").starts_with("354"));
        self.send(body.as_bytes());
        self.send(b".\r\n");
        self.reply()
    }
}

/// A real SMTP server (Python's aiosmtpd, tests/tools/sink.py) as next hop.
pub struct Sink {
    pub ip: String,
    pub port: u16,
    pub dir: PathBuf,
    child: Child,
}

impl Sink {
    pub fn start(ip: &str, port: u16, dir: &Path) -> Sink {
        Self::start_with(ip, port, dir, &[])
    }

    /// With sink.py's options (`--tls CHAIN KEY [CA]`, `--auth USER:PASS`).
    pub fn start_with(ip: &str, port: u16, dir: &Path, opts: &[&str]) -> Sink {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/sink.py");
        let child = Command::new("/usr/bin/python3")
            .arg(script)
            .args([ip, &port.to_string()])
            .arg(dir)
            .args(opts)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the aiosmtpd sink (apt-get install python3-aiosmtpd)");
        let ready = dir.join("ready");
        wait_for("sink ready", Duration::from_secs(20), || {
            ready.exists().then_some(())
        });
        Sink {
            ip: ip.into(),
            port,
            dir: dir.into(),
            child,
        }
    }

    /// accept | tempfail | reject | close421 | slow
    pub fn set_mode(&self, mode: &str) {
        std::fs::write(self.dir.join("mode"), mode).unwrap();
    }

    /// Messages received so far: (envelope JSON, content bytes), in order.
    pub fn messages(&self) -> Vec<(Value, Vec<u8>)> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".eml"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|n| {
                let base = n.trim_end_matches(".eml");
                let env = std::fs::read_to_string(self.dir.join(format!("{base}.env")))
                    .unwrap_or_default();
                (
                    serde_json::from_str(&env).unwrap_or(Value::Null),
                    std::fs::read(self.dir.join(n)).unwrap(),
                )
            })
            .collect()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Instance {
    /// Every message in USER's Maildir (new/), oldest first.
    pub fn maildir(&self, user: &str) -> Vec<String> {
        let dir = self.data_dir().join("mail").join(user).join("new");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|rd| rd.filter_map(|e| Some(e.ok()?.path())).collect())
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap_or_default())
            .collect()
    }

    /// `postern queue list --json`, or None while the queue manager is
    /// (re)starting.
    pub fn try_queue_json(&self) -> Option<Vec<Value>> {
        let out = self.postern(&["queue", "list", "--json"]);
        if !out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits until the queue is empty.
    pub fn wait_queue_empty(&self, timeout: Duration) {
        wait_for("an empty queue", timeout, || {
            self.try_queue_json().filter(|q| q.is_empty()).map(|_| ())
        });
    }

    /// `postern queue list --json`, parsed.
    pub fn queue_json(&self) -> Vec<Value> {
        let out = self.postern(&["queue", "list", "--json"]);
        assert!(
            out.status.success(),
            "queue list: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect()
    }
}

/// One SMTP transaction that never panics: the final reply, or why there
/// was none (for crash tests, where connections break on purpose).
pub fn try_send(
    ip: &str,
    port: u16,
    from: &str,
    to: &[&str],
    body: &[u8],
) -> Result<String, String> {
    let s = TcpStream::connect((ip, port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s.try_clone().map_err(|e| e.to_string())?);
    let mut w = s;
    let reply = |r: &mut BufReader<TcpStream>| -> Result<String, String> {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
                return Err(format!("connection closed after {all:?}"));
            }
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return Ok(all);
            }
        }
    };
    let expect = |got: String, code: &str| {
        if got.starts_with(code) {
            Ok(got)
        } else {
            Err(got)
        }
    };
    expect(reply(&mut r)?, "220")?;
    let cmd = |w: &mut TcpStream,
               r: &mut BufReader<TcpStream>,
               line: &str,
               code: &str|
     -> Result<String, String> {
        w.write_all(format!("{line}\r\n").as_bytes())
            .map_err(|e| e.to_string())?;
        expect(reply(r)?, code)
    };
    cmd(&mut w, &mut r, "EHLO crash.example", "250")?;
    cmd(&mut w, &mut r, &format!("MAIL FROM:<{from}>"), "250")?;
    for t in to {
        cmd(&mut w, &mut r, &format!("RCPT TO:<{t}>"), "250")?;
    }
    cmd(&mut w, &mut r, "DATA", "354")?;
    w.write_all(body).map_err(|e| e.to_string())?;
    w.write_all(b".\r\n").map_err(|e| e.to_string())?;
    let end = reply(&mut r)?;
    let _ = w.write_all(b"QUIT\r\n");
    Ok(end)
}

/// A test message whose body can be checked for integrity: its id, and
/// lines derived from the id.
pub fn numbered_message(tag: &str, n: usize) -> Vec<u8> {
    // Complete headers (Date, Message-ID), so cleanup only prepends Received.
    let mut m = format!(
        "Subject: {tag} {n}\r\nDate: Tue, 24 Nov 2026 12:00:00 +0000\r\nMessage-ID: <{tag}-{n}@crash.example>\r\nX-Test-Id: {tag}-{n}\r\n\r\n"
    );
    for k in 0..60 {
        m.push_str(&format!(
            "{tag}-{n} line {k} {}\r\n",
            "abcdefghij".repeat(4)
        ));
    }
    m.into_bytes()
}

/// The test id of a delivered message, if its body is exactly what
/// [`numbered_message`] made (after any added Received headers).
pub fn verify_numbered(content: &[u8], tag: &str) -> Result<usize, String> {
    let text = String::from_utf8_lossy(content);
    let id = text
        .lines()
        .find_map(|l| l.strip_prefix("X-Test-Id: "))
        .ok_or("no X-Test-Id header")?
        .trim();
    let n: usize = id
        .strip_prefix(&format!("{tag}-"))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("bad id {id}"))?;
    let want = numbered_message(tag, n);
    if content.ends_with(&want) {
        Ok(n)
    } else {
        Err(format!("{id}: body damaged"))
    }
}

/// The seed of a randomized test: POSTERN_TEST_SEED, or a fresh one. It is
/// printed either way, so that a failing run can be replayed.
pub fn seed(what: &str) -> u64 {
    let s = std::env::var("POSTERN_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("{what} seed: {s} (replay with POSTERN_TEST_SEED={s})");
    s
}

impl Instance {
    /// A started instance with no SMTP error sleep, so error-heavy tests
    /// run fast, and `extra` in main.cf.
    pub fn started(extra: &str) -> Instance {
        let mut i = Instance::new(&format!("smtpd_error_sleep_time = 0\n{extra}"));
        i.start();
        i
    }

    /// A client past the greeting and EHLO.
    /// Starts the roles that start on first use (bounce, auth) by using
    /// them, and waits until all run: an AUTH attempt on the SMTP port
    /// (the instance must offer AUTH without TLS: `smtpd_sasl_auth_enable
    /// = yes`, `smtpd_tls_auth_only = no`), and a locally submitted message
    /// to an unknown local user, which bounces. The failed login wakes the
    /// state store (cache) too, where auth keeps its failure counts.
    pub fn wake_on_demand_roles(&self) {
        let mut c = self.greeted();
        let r = c.cmd("AUTH PLAIN AHUAcHc=");
        assert!(r.starts_with("535") || r.starts_with("454"), "{r}");
        // Under WAKE_VERIFY, this recipient asks verify (and its probe the
        // state store); otherwise it is an ordinary local recipient.
        assert!(c.cmd("MAIL FROM:<>").starts_with("250"));
        c.cmd("RCPT TO:<wake-verify@mx.test.example>");
        c.cmd("RCPT TO:<wake-policy@mx.test.example>");
        c.cmd("QUIT");
        // Under WAKE_VERIFY, a relayed message asks the sts role for its
        // domain's MTA-STS policy (the delivery then defers: no DNS).
        let main_cf =
            std::fs::read_to_string(self.config_dir().join("main.cf")).unwrap_or_default();
        if main_cf.contains("# wake-sts") {
            let mut c = self.greeted();
            let r = c.send_mail(
                "",
                &["wake-sts@wake-sts.invalid"],
                "Subject: wake sts\r\n\r\nx\r\n",
            );
            assert!(r.starts_with("250"), "{r}");
            c.cmd("QUIT");
        }
        let mut child = self
            .bare_command()
            .args(["sendmail", "-f", "root@localhost", "nosuchuser@localhost"])
            .env("MAIL_CONFIG", self.config_dir())
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("postern sendmail");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"Subject: wake bounce\n\nx\n")
            .unwrap();
        assert!(child.wait().unwrap().success());
        wait_for(
            "bounce, auth, cache and pickup running",
            Duration::from_secs(30),
            || {
                ["bounce", "auth", "cache", "pickup"]
                    .iter()
                    .all(|r| self.pid_of(r).is_some())
                    .then_some(())
            },
        );
    }

    pub fn greeted(&self) -> Smtp {
        let mut c = self.smtp();
        assert!(c.reply().starts_with("220 mx.test.example ESMTP Postern"));
        assert!(
            c.cmd("EHLO client.example")
                .starts_with("250-mx.test.example")
        );
        c
    }
}

/// One smtplib session to `ip:port`: EHLO client.example, MAIL FROM
/// `sender`, RCPT to each of `rcpts`, then (with `data`, and a recipient
/// accepted) DATA. The replies, `code text` each: the RCPTs', then DATA's.
pub fn smtplib(
    ip: &str,
    port: u16,
    sender: &str,
    rcpts: &[&str],
    data: Option<&str>,
) -> Vec<String> {
    const SCRIPT: &str = r#"
import smtplib, sys
ip, port, sender, data = sys.argv[1:5]
s = smtplib.SMTP(ip, int(port), local_hostname="client.example", timeout=60)
s.ehlo()
code, text = s.mail(sender)
assert code == 250, (code, text)
ok = False
for r in sys.argv[5:]:
    code, text = s.rcpt(r)
    ok = ok or code == 250
    print("%d %s" % (code, text.decode()))
if data and ok:
    code, text = s.data(data.encode())
    print("%d %s" % (code, text.decode()))
s.quit()
"#;
    let out = Command::new("/usr/bin/python3")
        .args([
            "-c",
            SCRIPT,
            ip,
            &port.to_string(),
            sender,
            data.unwrap_or(""),
        ])
        .args(rcpts)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "smtplib: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

/// fail2ban-regex's count of matched lines of `log` under `filter` (a
/// filter file, or `postfix[mode=...]`), and its whole report.
pub fn fail2ban_matched(log: &Path, filter: &str) -> (u64, String) {
    let out = Command::new("fail2ban-regex")
        .arg(log)
        .arg(filter)
        .output()
        .expect("fail2ban-regex (apt-get install fail2ban)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let n = text
        .lines()
        .find_map(|l| {
            let rest = l.trim().strip_prefix("Lines:")?;
            rest.split(',')
                .find_map(|p| p.trim().strip_suffix(" matched")?.parse().ok())
        })
        .unwrap_or(u64::MAX);
    (n, text)
}

/// VmRSS of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

impl Sink {
    /// A STARTTLS sink on port 25 of a fresh loopback address, with the
    /// certificate chain and key given (and sink.py's `extra` options),
    /// its files under `parent`/sink-`tag`: an MX host.
    pub fn mx(
        parent: &Path,
        tag: &str,
        chain: &Path,
        key: &Path,
        extra: &[&str],
    ) -> (String, Sink) {
        let ip = unique_loopback();
        let (chain, key) = (chain.display().to_string(), key.display().to_string());
        let mut opts = vec!["--tls", chain.as_str(), key.as_str()];
        opts.extend_from_slice(extra);
        let s = Sink::start_with(&ip, 25, &parent.join(format!("sink-{tag}")), &opts);
        (ip, s)
    }
}

/// A real HTTPS server on `ip`:443 serving MTA-STS policy files from
/// `dir` (tests/tools/https_policy.py), once it listens.
pub fn https_policy_server(ip: &str, chain: &Path, key: &Path, dir: &Path) -> Child {
    let child = Command::new("/usr/bin/python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/https_policy.py"))
        .args([ip, "443"])
        .arg(chain)
        .arg(key)
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the HTTPS policy server");
    wait_for("the HTTPS policy server", Duration::from_secs(20), || {
        dir.join("ready").exists().then_some(())
    });
    child
}
