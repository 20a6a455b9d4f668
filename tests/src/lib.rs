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

/// The postern binary under test: $POSTERN_BIN, or target/debug/postern.
pub fn bin() -> PathBuf {
    if let Ok(p) = std::env::var("POSTERN_BIN") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/postern");
    assert!(
        p.exists(),
        "{} not found: run `cargo build --bins` before the tests (the README test command does)",
        p.display()
    );
    p
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
        let main = format!(
            "# written by the test harness\n\
             data_directory = {data}\n\
             myhostname = mx.test.example\n\
             mydomain = test.example\n\
             {extra}\n",
            data = inst.data_dir().display()
        );
        std::fs::write(inst.config_dir().join("main.cf"), main).unwrap();
        let mcf = master_cf.map(str::to_string).unwrap_or_else(|| {
            format!(
                "{ip}:{s} inet n - n - - smtpd\n{ip}:{m} inet n - n - - smtpd\n  -o syslog_name=postern/submission\n",
                ip = inst.ip,
                s = inst.smtp_port,
                m = inst.submission_port
            )
        });
        std::fs::write(inst.config_dir().join("master.cf"), mcf).unwrap();
        inst
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
        let mut cmd = match self.run_as {
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
        };
        cmd.arg("-c").arg(self.config_dir());
        cmd
    }

    /// `postern -c DIR ARGS...`, waited for.
    pub fn postern(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("run postern")
    }

    /// Starts the master in the foreground (logging to master.log) and waits
    /// until every daemon reports running.
    pub fn start(&mut self) {
        let log = std::fs::File::create(self.log_path()).unwrap();
        let mut cmd = self.command();
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
            (ps.len() > 1 && ps.iter().all(|p| p["state"] == "running")).then_some(())
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
