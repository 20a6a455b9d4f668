//! A real Dovecot LMTP server (Debian's dovecot-lmtpd) in a directory of
//! its own: an LMTP listener on a Unix socket and one on a loopback TCP
//! port, users from a passwd-file, Maildirs owned by `nobody`, and a quota
//! that a user can be over.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::wait_for;

pub struct Dovecot {
    pub dir: tempfile::TempDir,
    pub ip: String,
    pub port: u16,
    child: Child,
}

/// Whether Dovecot's LMTP server can run here (installed, and we are root).
pub fn available() -> bool {
    crate::is_root() && Path::new("/usr/lib/dovecot/lmtp").exists()
}

impl Dovecot {
    /// The LMTP Unix socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("lmtp.sock")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }

    /// The messages in `user@domain`'s Maildir (new/), oldest first.
    pub fn maildir(&self, user: &str, domain: &str) -> Vec<Vec<u8>> {
        let d = self
            .dir
            .path()
            .join("mail")
            .join(domain)
            .join(user)
            .join("new");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&d)
            .map(|rd| rd.filter_map(|e| Some(e.ok()?.path())).collect())
            .unwrap_or_default();
        files.sort();
        files.iter().filter_map(|f| std::fs::read(f).ok()).collect()
    }

    /// `doveadm fetch` of every message's text for `address`.
    pub fn fetch(&self, address: &str) -> String {
        let out = Command::new("doveadm")
            .args(["-c", &self.conf().display().to_string()])
            .args(["fetch", "-u", address, "text", "mailbox", "INBOX"])
            .output()
            .expect("doveadm");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("dovecot.conf")
    }

    /// Starts Dovecot with the users `users` (`name@domain`); `full` is a
    /// user whose 1-byte quota every message exceeds. With `tls` (a
    /// certificate and key file), its LMTP listeners offer STARTTLS.
    pub fn start(
        ip: &str,
        port: u16,
        users: &[&str],
        full: &str,
        tls: Option<(&Path, &Path)>,
    ) -> Dovecot {
        let dir = tempfile::Builder::new()
            .prefix("dovecot-test-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path();
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let mail = d.join("mail");
        std::fs::create_dir_all(&mail).unwrap();
        let chown = Command::new("chown")
            .args(["nobody:nogroup", &mail.display().to_string()])
            .status()
            .expect("chown");
        assert!(chown.success());
        let mut passwd = String::new();
        for u in users.iter().chain([&full]) {
            let extra = if *u == full {
                "userdb_quota_rule=*:bytes=1"
            } else {
                ""
            };
            passwd.push_str(&format!("{u}:{{PLAIN}}secret::::::{extra}\n"));
        }
        std::fs::write(d.join("users"), passwd).unwrap();
        let ssl = match tls {
            Some((cert, key)) => format!(
                "ssl = yes\nssl_cert = <{}\nssl_key = <{}\n",
                cert.display(),
                key.display()
            ),
            None => "ssl = no\n".to_string(),
        };
        let conf = format!(
            r#"base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
info_log_path = {d}/dovecot.log
protocols = lmtp
listen = {ip}
{ssl}auth_mechanisms = plain
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = 1
mail_location = maildir:{d}/mail/%d/%n
mail_plugins = quota
lmtp_rcpt_check_quota = no
quota_full_tempfail = yes
plugin {{
  quota = maildir:User quota
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {d}/users
  default_fields = uid=nobody gid=nogroup home={d}/mail/%d/%n
}}
service lmtp {{
  unix_listener {d}/lmtp.sock {{
    mode = 0666
  }}
  inet_listener lmtp {{
    address = {ip}
    port = {port}
  }}
}}
"#,
            d = d.display()
        );
        std::fs::write(d.join("dovecot.conf"), conf).unwrap();
        let child = Command::new("/usr/sbin/dovecot")
            .args(["-F", "-c", &d.join("dovecot.conf").display().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dovecot (apt-get install dovecot-lmtpd)");
        let dc = Dovecot {
            dir,
            ip: ip.into(),
            port,
            child,
        };
        wait_for("Dovecot's LMTP listeners", Duration::from_secs(30), || {
            (dc.socket().exists() && std::net::TcpStream::connect((ip, port)).is_ok()).then_some(())
        });
        dc
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}
