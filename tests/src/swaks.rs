//! swaks (Debian's swaks), the SMTP client admins test with, for black-box
//! tests of the restrictions: one session from a chosen loopback source
//! address, and the server's replies as swaks saw them.
use std::process::Command;

/// What one swaks session said and heard.
pub struct Session {
    /// swaks's transcript (`->` client lines, `<-`/`<**` server lines).
    pub transcript: String,
}

impl Session {
    /// The server's reply to the first command that starts with `verb`
    /// (`"MAIL"`, `"RCPT"`, `"DATA"`), its last line without swaks's
    /// marker; None when swaks never sent it.
    pub fn reply_to(&self, verb: &str) -> Option<String> {
        let mut lines = self.transcript.lines();
        lines.find(|l| {
            let l = l.trim_start();
            l.strip_prefix("->")
                .or_else(|| l.strip_prefix("**>"))
                .is_some_and(|c| c.trim_start().to_ascii_uppercase().starts_with(verb))
        })?;
        let mut last = None;
        for l in lines {
            let l = l.trim_start();
            let Some(r) = l.strip_prefix("<**").or_else(|| l.strip_prefix("<-")) else {
                break;
            };
            let r = r.trim_start().to_string();
            let more = r.as_bytes().get(3) == Some(&b'-');
            last = Some(r);
            if !more {
                break;
            }
        }
        last
    }
}

/// EHLO `helo`, MAIL FROM `sender` ("" for <>), RCPT TO `rcpt`, then QUIT,
/// from the loopback address `src` to `ip:port`.
pub fn rcpt(src: &str, ip: &str, port: u16, helo: &str, sender: &str, rcpt: &str) -> Session {
    let from = if sender.is_empty() { "<>" } else { sender };
    let out = Command::new("swaks")
        .args(["--server", &format!("{ip}:{port}")])
        .args(["--local-interface", src])
        .args(["--ehlo", helo, "--from", from, "--to", rcpt])
        .args(["--quit-after", "RCPT", "--timeout", "30"])
        .output()
        .expect("swaks (apt-get install swaks)");
    Session {
        transcript: String::from_utf8_lossy(&out.stdout).into_owned(),
    }
}
