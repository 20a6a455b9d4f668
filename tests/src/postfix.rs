//! A real Postfix (Debian's package) in a directory of its own, for tests
//! that hold Postern's behaviour against Postfix's: its own main.cf,
//! master.cf (one smtpd on a loopback address and port), queue and log.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::wait_for;

pub struct Postfix {
    pub dir: tempfile::TempDir,
    pub ip: String,
    pub port: u16,
}

/// Whether Postfix can run here (installed, and we are root).
pub fn available() -> bool {
    crate::is_root() && Path::new("/usr/sbin/postfix").exists()
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", args[0]))
}

impl Postfix {
    pub fn etc(&self) -> PathBuf {
        self.dir.path().join("etc")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }

    /// Starts Postfix listening on `ip:port`, with `main_extra` at the end
    /// of its main.cf (after the harness's settings, so it wins). The
    /// address is named in master.cf only: Postfix refuses an
    /// inet_interfaces address that no interface carries (lo has only
    /// 127.0.0.1, though it answers all of 127.0.0.0/8).
    pub fn start(ip: &str, port: u16, main_extra: &str) -> Postfix {
        let dir = tempfile::Builder::new()
            .prefix("postfix-test-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path();
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        for sub in ["etc", "spool", "data"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let ok = run(&[
            "chown",
            "postfix:postfix",
            &d.join("data").display().to_string(),
        ]);
        assert!(ok.status.success(), "chown: {ok:?}");
        std::fs::write(
            d.join("etc/main.cf"),
            format!(
                "compatibility_level = 3.6\n\
                 queue_directory = {d}/spool\n\
                 data_directory = {d}/data\n\
                 mail_owner = postfix\n\
                 setgid_group = postdrop\n\
                 myhostname = mx.test.example\n\
                 mydomain = test.example\n\
                 inet_interfaces = 127.0.0.1\n\
                 inet_protocols = ipv4\n\
                 mynetworks = 127.0.0.0/8\n\
                 smtp_dns_support_level = disabled\n\
                 smtpd_peername_lookup = no\n\
                 alias_maps =\n\
                 alias_database =\n\
                 maillog_file = {d}/maillog\n\
                 maillog_file_prefixes = {d}\n\
                 {main_extra}\n",
                d = d.display()
            ),
        )
        .unwrap();
        let dist = std::fs::read_to_string("/usr/share/postfix/master.cf.dist")
            .expect("/usr/share/postfix/master.cf.dist (apt-get install postfix)");
        let mut master: Vec<String> = dist
            .lines()
            .map(|l| {
                if l.starts_with("smtp      inet") {
                    format!("{ip}:{port} inet n - n - - smtpd")
                } else {
                    l.to_string()
                }
            })
            .collect();
        master.push("postlog   unix-dgram n  -       n       -       1       postlogd".into());
        std::fs::write(d.join("etc/master.cf"), master.join("\n") + "\n").unwrap();
        let pf = Postfix {
            dir,
            ip: ip.into(),
            port,
        };
        let etc = pf.etc().display().to_string();
        let out = run(&["postfix", "-c", &etc, "start"]);
        assert!(
            out.status.success(),
            "postfix start: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        wait_for("Postfix's smtpd", Duration::from_secs(30), || {
            std::net::TcpStream::connect((ip, port)).ok().map(|_| ())
        });
        pf
    }

    /// `postmap -q KEY TABLE` with this Postfix's configuration.
    pub fn postmap_q(&self, key: &str, table: &str) -> Option<String> {
        let etc = self.etc().display().to_string();
        let out = run(&["postmap", "-c", &etc, "-q", key, table]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Asks Postfix to deliver what it has queued now.
    pub fn flush(&self) {
        let etc = self.etc().display().to_string();
        let _ = run(&["postqueue", "-c", &etc, "-f"]);
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let etc = self.etc().display().to_string();
        let _ = run(&["postfix", "-c", &etc, "abort"]);
        // Its processes close their queue files before the directory goes.
        std::thread::sleep(Duration::from_millis(200));
    }
}
