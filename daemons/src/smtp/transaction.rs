//! One mail transaction in a session: MAIL, RCPT, DATA or BDAT, with
//! pipelining; LMTP's reply per recipient; and the address-verification
//! probe (MAIL and RCPT, then RSET).
use postern_proto::smtp::esmtp::xtext_encode;

use super::session::{Envelope, Failure, Session, SmtpReply, Timeouts};

/// How a recipient came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Sent(String),
    Deferred(String, String),
    Bounced(String, String),
}

/// The result of a transaction; `reusable` when the session may carry
/// another message (never after a 421, a timeout or a lost connection).
pub struct TxResult {
    pub outcomes: Vec<(u32, Outcome)>,
    pub reusable: bool,
}

fn notify_param(bits: u8) -> Option<String> {
    use postern_proto::queue::notify;
    if bits == 0 {
        return None;
    }
    if bits & notify::NEVER != 0 {
        return Some("NEVER".into());
    }
    let mut v = Vec::new();
    for (b, n) in [
        (notify::SUCCESS, "SUCCESS"),
        (notify::FAILURE, "FAILURE"),
        (notify::DELAY, "DELAY"),
    ] {
        if bits & b != 0 {
            v.push(n);
        }
    }
    Some(v.join(","))
}

/// Dot-stuffs the content and folds lines longer than `limit`.
pub fn wire_data(content: &[u8], limit: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + content.len() / 50 + 8);
    for line in content.split_inclusive(|&b| b == b'\n') {
        let (body, eol): (&[u8], &[u8]) = match line.strip_suffix(b"\r\n") {
            Some(b) => (b, b"\r\n"),
            None => (line, b""),
        };
        if body.first() == Some(&b'.') {
            out.push(b'.');
        }
        let mut rest = body;
        while rest.len() > limit {
            let mut cut = limit;
            // Never split a UTF-8 character.
            while cut > 0 && (rest[cut] & 0xC0) == 0x80 {
                cut -= 1;
            }
            out.extend_from_slice(&rest[..cut]);
            out.extend_from_slice(b"\r\n ");
            rest = &rest[cut..];
        }
        out.extend_from_slice(rest);
        out.extend_from_slice(eol);
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

impl Session {
    fn said(&self, r: &SmtpReply, step: &str) -> String {
        format!(
            "host {}[{}] said: {} (in reply to {step} command)",
            self.host,
            self.peer,
            r.text()
        )
    }

    pub fn failed(&self, f: &Failure) -> String {
        match f {
            Failure::Reply(r, step) => self.said(r, step),
            Failure::Timeout(step) => format!(
                "conversation with {}[{}] timed out while sending {step}",
                self.host, self.peer
            ),
            Failure::Lost(step) => format!(
                "lost connection with {}[{}] while sending {step}",
                self.host, self.peer
            ),
            Failure::Tls(text) => text.clone(),
        }
    }

    /// An address-verification probe: MAIL and RCPT, then RSET, never
    /// DATA. The recipient's outcome is the RCPT reply (or what broke
    /// before it).
    pub async fn probe(&mut self, sender: &str, rcpt: &str, t: &Timeouts) -> (Outcome, bool) {
        let fail = |s: &Session, f: Failure| {
            let text = s.failed(&f);
            let reusable = matches!(&f, Failure::Reply(r, _) if r.code != 421);
            let outcome = match &f {
                Failure::Reply(r, _) if r.code >= 500 => Outcome::Bounced(r.dsn(), text),
                Failure::Reply(r, _) => Outcome::Deferred(r.dsn(), text),
                _ => Outcome::Deferred("4.4.2".into(), text),
            };
            (outcome, reusable)
        };
        let mail = format!("MAIL FROM:<{sender}>\r\n");
        if let Err(f) = self.write(mail.as_bytes(), t.mail, "MAIL FROM").await {
            return fail(self, f);
        }
        match self.read_reply(t.mail, "MAIL FROM").await {
            Ok(r) if r.code / 100 == 2 => {}
            Ok(r) => return fail(self, Failure::Reply(r, "MAIL FROM")),
            Err(f) => return fail(self, f),
        }
        let cmd = format!("RCPT TO:<{rcpt}>\r\n");
        if let Err(f) = self.write(cmd.as_bytes(), t.rcpt, "RCPT TO").await {
            return fail(self, f);
        }
        let r = match self.read_reply(t.rcpt, "RCPT TO").await {
            Ok(r) => r,
            Err(f) => return fail(self, f),
        };
        let outcome = match r.code / 100 {
            2 => Outcome::Sent(r.text()),
            _ if r.code == 421 => return fail(self, Failure::Reply(r, "RCPT TO")),
            4 => Outcome::Deferred(r.dsn(), self.said(&r, "RCPT TO")),
            _ => Outcome::Bounced(r.dsn(), self.said(&r, "RCPT TO")),
        };
        let reusable = self.rset(t).await;
        (outcome, reusable)
    }

    /// Sends one message. Recipients not yet final when something breaks
    /// are deferred with the reason.
    pub async fn send(
        &mut self,
        env: &Envelope<'_>,
        content: &[u8],
        line_limit: usize,
        t: &Timeouts,
    ) -> TxResult {
        let mut outcomes: Vec<(u32, Outcome)> = Vec::new();
        let pending = |outcomes: &Vec<(u32, Outcome)>| -> Vec<u32> {
            env.recipients
                .iter()
                .map(|r| r.0)
                .filter(|i| !outcomes.iter().any(|(j, _)| j == i))
                .collect()
        };
        macro_rules! abort {
            ($f:expr) => {{
                let f = $f;
                let text = self.failed(&f);
                let (dsn, permanent) = match &f {
                    Failure::Reply(r, _) if r.code >= 500 => (r.dsn(), true),
                    Failure::Reply(r, _) => (r.dsn(), false),
                    _ => ("4.4.2".to_string(), false),
                };
                for i in pending(&outcomes) {
                    outcomes.push((i, if permanent { Outcome::Bounced(dsn.clone(), text.clone()) } else { Outcome::Deferred(dsn.clone(), text.clone()) }));
                }
                let reusable = matches!(&f, Failure::Reply(r, _) if r.code != 421);
                return TxResult { outcomes, reusable };
            }};
        }
        let mut mail = format!("MAIL FROM:<{}>", env.sender);
        if self.ext.size.is_some() {
            mail.push_str(&format!(" SIZE={}", env.size));
        }
        if env.body_8bit && self.ext.eightbitmime {
            mail.push_str(" BODY=8BITMIME");
        }
        if env.smtputf8 {
            mail.push_str(" SMTPUTF8");
        }
        if env.requiretls && self.tls.is_some() && self.ext.requiretls {
            mail.push_str(" REQUIRETLS");
        }
        if self.ext.dsn {
            match env.ret {
                1 => mail.push_str(" RET=FULL"),
                2 => mail.push_str(" RET=HDRS"),
                _ => {}
            }
            if !env.envid.is_empty() {
                mail.push_str(&format!(" ENVID={}", xtext_encode(env.envid)));
            }
        }
        mail.push_str("\r\n");
        let mut rcpt_cmds = Vec::new();
        for (_, addr, orcpt, notify) in &env.recipients {
            let mut c = format!("RCPT TO:<{addr}>");
            if self.ext.dsn {
                if let Some(n) = notify_param(*notify) {
                    c.push_str(&format!(" NOTIFY={n}"));
                }
                if let Some((kind, a)) = orcpt.split_once(';') {
                    c.push_str(&format!(" ORCPT={kind};{}", xtext_encode(a)));
                }
            }
            c.push_str("\r\n");
            rcpt_cmds.push(c);
        }
        let use_bdat = self.ext.chunking;
        if self.ext.pipelining {
            let mut batch = mail.clone().into_bytes();
            for c in &rcpt_cmds {
                batch.extend_from_slice(c.as_bytes());
            }
            if !use_bdat {
                batch.extend_from_slice(b"DATA\r\n");
            }
            if let Err(f) = self.write(&batch, t.mail, "MAIL FROM").await {
                abort!(f);
            }
        } else if let Err(f) = self.write(mail.as_bytes(), t.mail, "MAIL FROM").await {
            abort!(f);
        }
        let r = match self.read_reply(t.mail, "MAIL FROM").await {
            Ok(r) => r,
            Err(f) => abort!(f),
        };
        let mail_ok = r.code / 100 == 2;
        if r.code == 421 || (!mail_ok && !self.ext.pipelining) {
            abort!(Failure::Reply(r, "MAIL FROM"));
        }
        let mail_reply = r;
        let mut accepted = Vec::new();
        for (k, c) in rcpt_cmds.iter().enumerate() {
            if !self.ext.pipelining
                && let Err(f) = self.write(c.as_bytes(), t.rcpt, "RCPT TO").await
            {
                abort!(f);
            }
            let r = match self.read_reply(t.rcpt, "RCPT TO").await {
                Ok(r) => r,
                Err(f) => abort!(f),
            };
            let idx = env.recipients[k].0;
            if r.code == 421 {
                abort!(Failure::Reply(r, "RCPT TO"));
            }
            if !mail_ok {
                continue;
            }
            match r.code / 100 {
                2 => accepted.push(idx),
                4 => outcomes.push((idx, Outcome::Deferred(r.dsn(), self.said(&r, "RCPT TO")))),
                _ => outcomes.push((idx, Outcome::Bounced(r.dsn(), self.said(&r, "RCPT TO")))),
            }
        }
        if !mail_ok {
            if self.ext.pipelining && !use_bdat {
                let _ = self.read_reply(t.data_init, "DATA").await;
            }
            abort!(Failure::Reply(mail_reply, "MAIL FROM"));
        }
        if use_bdat {
            if accepted.is_empty() {
                return TxResult {
                    outcomes,
                    reusable: self.rset(t).await,
                };
            }
            let mut data = format!("BDAT {} LAST\r\n", content.len()).into_bytes();
            data.extend_from_slice(content);
            if let Err(f) = self.write(&data, t.data_xfer, "message content").await {
                abort!(f);
            }
        } else {
            if !self.ext.pipelining
                && !accepted.is_empty()
                && let Err(f) = self.write(b"DATA\r\n", t.data_init, "DATA").await
            {
                abort!(f);
            }
            if self.ext.pipelining || !accepted.is_empty() {
                let r = match self.read_reply(t.data_init, "DATA").await {
                    Ok(r) => r,
                    Err(f) => abort!(f),
                };
                if accepted.is_empty() {
                    // Every recipient was refused; the server refused DATA too.
                    return TxResult {
                        outcomes,
                        reusable: r.code != 421,
                    };
                }
                if r.code != 354 {
                    abort!(Failure::Reply(r, "DATA"));
                }
            } else {
                return TxResult {
                    outcomes,
                    reusable: self.rset(t).await,
                };
            }
            if let Err(f) = self
                .write(
                    &wire_data(content, line_limit),
                    t.data_xfer,
                    "message content",
                )
                .await
            {
                abort!(f);
            }
        }
        if self.lmtp {
            // RFC 2033: one reply per accepted recipient, in their order.
            for i in accepted {
                let r = match self.read_reply(t.data_done, "end of DATA").await {
                    Ok(r) => r,
                    Err(f) => abort!(f),
                };
                if r.code == 421 {
                    abort!(Failure::Reply(r, "end of DATA"));
                }
                let text = self.said(&r, "end of DATA");
                outcomes.push((
                    i,
                    match r.code / 100 {
                        2 => Outcome::Sent(r.text()),
                        4 => Outcome::Deferred(r.dsn(), text),
                        _ => Outcome::Bounced(r.dsn(), text),
                    },
                ));
            }
            self.messages += 1;
            // (A 421 ended the session above.)
            return TxResult {
                outcomes,
                reusable: true,
            };
        }
        let r = match self.read_reply(t.data_done, "end of DATA").await {
            Ok(r) => r,
            Err(f) => abort!(f),
        };
        let text = self.said(&r, "end of DATA");
        for i in accepted {
            outcomes.push((
                i,
                match r.code / 100 {
                    2 => Outcome::Sent(r.text()),
                    4 => Outcome::Deferred(r.dsn(), text.clone()),
                    _ => Outcome::Bounced(r.dsn(), text.clone()),
                },
            ));
        }
        self.messages += 1;
        TxResult {
            outcomes,
            reusable: r.code != 421,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_stuffing_and_folding() {
        assert_eq!(
            wire_data(b"a\r\n.b\r\n..\r\n", 998),
            b"a\r\n..b\r\n...\r\n.\r\n"
        );
        assert_eq!(wire_data(b"abcdef\r\n", 4), b"abcd\r\n ef\r\n.\r\n");
        // A multi-byte character is never split.
        assert_eq!(
            wire_data("aé\r\n".as_bytes(), 2),
            "a\r\n é\r\n.\r\n".as_bytes()
        );
        assert_eq!(wire_data(b"no newline", 998), b"no newline\r\n.\r\n");
    }
}
