//! The Received: header cleanup puts on top of every message (Postfix's
//! shapes for SMTP, sendmail and mail made on this machine).
use super::{Settings, Txn};

impl Txn {
    pub(super) fn received(&self, s: &Settings) -> String {
        let c = &self.begin.client;
        let helo = if c.helo.is_empty() {
            c.name.as_str()
        } else {
            c.helo.as_str()
        };
        // Mail made on this machine (forwarded by local, notices from
        // bounce) has no client to name.
        let mut r = if let Some(uid) = c.local_uid {
            // From sendmail, through pickup (Postfix's shape).
            format!(
                "Received: by {} ({}, from userid {uid})\r\n\tid {}",
                s.myhostname, s.mail_name, self.id
            )
        } else if c.addr.is_empty() {
            format!(
                "Received: by {} ({}) id {}",
                s.myhostname, s.mail_name, self.id
            )
        } else {
            let tls = if c.tls.is_empty() {
                String::new()
            } else {
                format!("\r\n\t(using {})", c.tls)
            };
            format!(
                "Received: from {helo} ({} [{}]){tls}\r\n\tby {} ({}) with {} id {}",
                c.name, c.addr, s.myhostname, s.mail_name, c.proto, self.id
            )
        };
        let date = self
            .arrival
            .strftime("%a, %e %b %Y %H:%M:%S %z (%Z)")
            .to_string()
            .replace("  ", " ");
        if self.nrcpt == 1 {
            r.push_str(&format!("\r\n\tfor <{}>; {date}\r\n", self.first_rcpt));
        } else {
            r.push_str(&format!(";\r\n\t{date}\r\n"));
        }
        r
    }
}
