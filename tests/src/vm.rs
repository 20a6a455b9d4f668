//! The appliance image under qemu: builds it with image/build.sh, makes
//! data disks, boots guests with user-mode networking whose host side is
//! only 127.0.0.1, runs commands on the guest's service console (its
//! second serial port, a root shell when the data partition asks for one)
//! and pulls the plug (SIGKILL to qemu).
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::wait_for;

fn top() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Installs the Debian packages the image tests run (qemu; image/build.sh
/// installs its own), once per test binary.
pub fn install_qemu() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        if Path::new("/usr/bin/qemu-system-x86_64").exists() {
            return;
        }
        let sh = "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-system-x86 >/dev/null";
        let st = Command::new("sh").args(["-c", sh]).status().unwrap();
        assert!(st.success(), "apt-get install qemu-system-x86 failed");
    });
}

/// The image of this version, built by image/build.sh under target/image
/// (the release build and the image are rebuilt only where they changed).
pub fn image(version: &str) -> PathBuf {
    static BUILD: Mutex<()> = Mutex::new(());
    let _one = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let out = Command::new("bash")
        .arg(top().join("image/build.sh"))
        .args(["--version", version])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "image/build.sh --version {version} failed"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let path = PathBuf::from(text.lines().last().unwrap_or("").trim());
    assert!(path.is_file(), "image/build.sh printed no image: {text}");
    path
}

/// A data disk of `mb` MiB at `path`, seeded with the files under `seed`
/// (image/mkdata.sh).
pub fn data_disk(path: &Path, mb: u32, seed: Option<&Path>) {
    let mut c = Command::new("bash");
    c.arg(top().join("image/mkdata.sh"))
        .arg(path)
        .arg(mb.to_string());
    if let Some(s) = seed {
        c.arg(s);
    }
    assert!(c.status().unwrap().success(), "image/mkdata.sh failed");
}

/// `kvm` when /dev/kvm runs a stock kernel, else `tcg`. Some hosts have a
/// /dev/kvm that cannot (a paravirtual nested hypervisor such as PVM runs
/// only kernels built for it): a short probe boot tells.
pub fn accel() -> &'static str {
    static ACCEL: OnceLock<&'static str> = OnceLock::new();
    ACCEL.get_or_init(|| {
        let accel = if kvm_boots_a_kernel() { "kvm" } else { "tcg" };
        eprintln!(
            "image tests: qemu accelerator {accel}{}",
            if accel == "tcg" && Path::new("/dev/kvm").exists() {
                " (/dev/kvm is present but does not boot Debian's kernel)"
            } else {
                ""
            }
        );
        accel
    })
}

fn kvm_boots_a_kernel() -> bool {
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return false;
    }
    let Some(kernel) = newest_kernel() else {
        return false;
    };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("console");
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-machine", "q35", "-accel", "kvm", "-m", "128", "-display", "none",
        ])
        .args(["-monitor", "none", "-no-reboot", "-kernel"])
        .arg(&kernel)
        .args(["-append", "console=ttyS0 panic=-1 rdinit=/nonexistent"])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Debian's kernel prints its banner well within a second under KVM.
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut booted = false;
    while Instant::now() < deadline {
        let text = std::fs::read(&log).unwrap_or_default();
        if String::from_utf8_lossy(&text).contains("Linux version") {
            booted = true;
            break;
        }
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = child.kill();
    let _ = child.wait();
    booted
}

fn newest_kernel() -> Option<PathBuf> {
    let mut ks: Vec<PathBuf> = std::fs::read_dir("/boot")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .collect();
    ks.sort();
    ks.pop()
}

/// A free TCP port on 127.0.0.1 (bound, then released for qemu to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A booted (or booting) guest.
pub struct Guest {
    child: Option<Child>,
    /// The guest's port 25, forwarded from 127.0.0.1.
    pub smtp_port: u16,
    /// The first serial port: the kernel's and init's console.
    pub console: PathBuf,
    service: PathBuf,
    started: Instant,
}

impl Guest {
    /// Boots `image` with `data` as its data disk. `dir` holds the console
    /// log and the service console's socket.
    pub fn boot(image: &Path, data: &Path, dir: &Path, tag: &str) -> Guest {
        install_qemu();
        let smtp_port = free_port();
        let console = dir.join(format!("{tag}-console.log"));
        let service = dir.join(format!("{tag}-service.sock"));
        let _ = std::fs::remove_file(&service);
        let accel = accel();
        let mut c = Command::new("qemu-system-x86_64");
        c.args(["-machine", "q35", "-accel"]);
        c.arg(if accel == "tcg" {
            "tcg,thread=multi"
        } else {
            "kvm"
        });
        c.args([
            "-m", "256", "-smp", "2", "-display", "none", "-monitor", "none",
        ])
        // The system disk is read-only media. The data disk goes
        // through the host's page cache (cache=writeback, qemu's
        // default): guest flushes become fdatasync on the host file.
        .arg("-drive")
        .arg(format!(
            "file={},format=raw,if=virtio,readonly=on",
            image.display()
        ))
        .arg("-drive")
        .arg(format!(
            "file={},format=raw,if=virtio,cache=writeback",
            data.display()
        ))
        .args(["-device", "virtio-rng-pci"])
        .arg("-netdev")
        .arg(format!("user,id=n0,hostfwd=tcp:127.0.0.1:{smtp_port}-:25"))
        .args(["-device", "virtio-net-pci,netdev=n0"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-serial")
        .arg(format!("unix:{},server=on,wait=off", service.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
        let child = c.spawn().expect("start qemu-system-x86_64");
        Guest {
            child: Some(child),
            smtp_port,
            console,
            service,
            started: Instant::now(),
        }
    }

    /// Waits for the first `220 ` greeting on the forwarded port 25 and
    /// returns the time since qemu started.
    pub fn wait_greeting(&mut self, timeout: Duration) -> Duration {
        let port = self.smtp_port;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                panic!(
                    "qemu exited ({st}) before a greeting:\n{}",
                    self.console_text()
                );
            }
            // slirp accepts at once and closes when nothing listens in the
            // guest: only a 220 line counts.
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
                let mut buf = [0u8; 4];
                if s.read_exact(&mut buf).is_ok() && &buf == b"220 " {
                    let _ = s.write_all(b"QUIT\r\n");
                    return self.started.elapsed();
                }
            }
            assert!(
                Instant::now() < deadline,
                "no 220 from the guest within {timeout:?}:\n{}",
                self.console_text()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// What the guest printed on its console so far.
    pub fn console_text(&self) -> String {
        let raw = std::fs::read(&self.console).unwrap_or_default();
        String::from_utf8_lossy(&raw).replace('\r', "")
    }

    /// Runs `cmd` in the guest's root shell on the service console and
    /// returns its output (stdout and stderr) and exit status.
    pub fn sh(&self, cmd: &str, timeout: Duration) -> (String, i32) {
        let mut s = wait_for("the service console", Duration::from_secs(30), || {
            UnixStream::connect(&self.service).ok()
        });
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let tag = format!("{:x}", fastrand::u64(..));
        let deadline = Instant::now() + timeout;
        // Echo and prompt off first, and everything the console held until
        // then (a prompt, the echo of this very line, wrapped by the
        // shell's line editor) read and dropped. The markers come from
        // printf, so their text differs from the command lines that ask
        // for them.
        s.write_all(format!("stty -echo; PS1=''; printf '@@%s@@\\n' ready-{tag}\n").as_bytes())
            .unwrap();
        let ready = format!("@@ready-{tag}@@\n");
        read_until(&mut s, deadline, cmd, |t| t.contains(&ready));
        s.write_all(format!("( {cmd} ) 2>&1; printf '@@%s@@%d@@\\n' {tag} $?\n").as_bytes())
            .unwrap();
        // The output, then @@TAG@@STATUS@@.
        let needle = format!("@@{tag}@@");
        let text = read_until(&mut s, deadline, cmd, |t| {
            t.rfind(&needle)
                .is_some_and(|at| t[at + needle.len()..].contains("@@"))
        });
        let at = text.rfind(&needle).unwrap();
        let rest = &text[at + needle.len()..];
        let rc = rest[..rest.find("@@").unwrap()].parse().unwrap_or(-1);
        (text[..at].to_string(), rc)
    }

    /// [`Guest::sh`], asserting exit status 0.
    pub fn sh_ok(&self, cmd: &str) -> String {
        let (out, rc) = self.sh(cmd, Duration::from_secs(60));
        assert_eq!(rc, 0, "`{cmd}` in the guest: {out}");
        out
    }

    /// Pulls the plug: SIGKILL to qemu, so the guest flushes nothing.
    pub fn pull_plug(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Shuts the guest down cleanly (init's shutdown actions), within a bound;
    /// pulls the plug if it does not power off in time.
    pub fn poweroff(&mut self) {
        if self.child.is_none() {
            return;
        }
        let _ = self.sh("poweroff", Duration::from_secs(5));
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(_)) = c.try_wait()
            {
                self.child = None;
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        self.pull_plug();
    }
}

/// Reads from the console until what arrived (\r dropped) satisfies
/// `done`; returns all of it.
fn read_until(
    s: &mut UnixStream,
    deadline: Instant,
    cmd: &str,
    done: impl Fn(&str) -> bool,
) -> String {
    let mut got = Vec::new();
    loop {
        let mut buf = [0u8; 4096];
        match s.read(&mut buf) {
            Ok(0) => panic!("service console closed"),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        let text = String::from_utf8_lossy(&got).replace('\r', "");
        if done(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "`{cmd}` did not finish on the service console in time; got {text:?}"
        );
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.pull_plug();
    }
}
