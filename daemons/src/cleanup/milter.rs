//! Milters (smtpd_milters for mail from smtpd, non_smtpd_milters for mail
//! from sendmail), run by cleanup at the end of the message, one after
//! another, each on the message as the ones before it left it.
//!
//! For each Milter cleanup asks the milter role to hold one conversation:
//! the SMTP events (CONNECT, HELO, MAIL and each RCPT, as Postfix's
//! cleanup emulates them for non_smtpd_milters), then the message as
//! queued, then the end of the message. The Milter's changes come back
//! first and its verdict last; they are applied to the message only when
//! the verdict keeps it, so a Milter that fails half-way leaves nothing of
//! its changes (its default action decides instead). When anything
//! changed, the queue file is written again from its start, before the
//! recipients and the end record, so the broker never sees a half-edited
//! message.
use postern_config::Role;
use postern_config::milter::Class;
use postern_ipc::milter::{self as ml, Outcome, Verdict};
use postern_ipc::smtpd_cleanup::{Failure, Recipient};
use postern_ipc::{ChannelError, Endpoint};
use postern_proto::header::{self, Split};
use postern_proto::milter::{self as pm, Edit};
use postern_proto::queue as rec;

use super::{Settings, Txn, fail, write_error};
use crate::daemon::Switchboard;
use crate::warn;

pub(super) type MilterEp = Endpoint<ml::Request, ml::Reply>;

/// The Milters for mail from `from`: none for mail Postern made itself
/// (bounces, forwarding), as Postfix's internal_mail_filter_classes.
pub(super) fn class(from: Role) -> Option<Class> {
    match from {
        Role::Smtpd => Some(Class::Smtpd),
        Role::Pickup => Some(Class::NonSmtpd),
        _ => None,
    }
}

/// The message while Milters (and the authentication checks) look at it.
pub(super) struct Message {
    /// Each header field, raw (`Name: value\r\n` with its folding).
    pub(super) fields: Vec<header::Field>,
    body: Vec<u8>,
    sender: String,
    changed: bool,
}

impl Message {
    pub(super) fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 4096);
        for f in &self.fields {
            out.extend_from_slice(&f.raw);
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

/// A header line from a Milter's name and value (folding given as `\n`).
fn field(name: &str, value: &str) -> header::Field {
    let v = value.replace("\r\n", "\n").replace('\n', "\r\n");
    let sep = if v.starts_with([' ', '\t']) || v.is_empty() {
        ""
    } else {
        " "
    };
    header::Field {
        name: name.to_string(),
        raw: format!("{name}:{sep}{v}\r\n").into_bytes(),
    }
}

/// A body from a Milter, with every line ending CRLF.
fn crlf(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len() + b.len() / 32);
    for (i, &c) in b.iter().enumerate() {
        if c == b'\n' && (i == 0 || b[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(c);
    }
    out
}

fn bare(a: &str) -> &str {
    a.trim().trim_start_matches('<').trim_end_matches('>')
}

/// Applies one Milter's changes, in the order it asked for them.
fn apply(m: &mut Message, rcpts: &mut Vec<Recipient>, edits: Vec<Edit>) {
    let mut replaced = false;
    for e in edits {
        m.changed = true;
        match e {
            Edit::AddHeader { name, value } => m.fields.push(field(&name, &value)),
            Edit::InsertHeader { index, name, value } => {
                let at = (index as usize).min(m.fields.len());
                m.fields.insert(at, field(&name, &value));
            }
            Edit::ChangeHeader { index, name, value } => {
                // Index 1 is the first field of that name (0 too, as
                // Sendmail 8); none there: a new one is added.
                let n = index.max(1) as usize;
                let at = m
                    .fields
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| f.is(&name))
                    .nth(n - 1)
                    .map(|(i, _)| i);
                match (at, value.is_empty()) {
                    (Some(i), true) => {
                        m.fields.remove(i);
                    }
                    (Some(i), false) => m.fields[i] = field(&m.fields[i].name.clone(), &value),
                    (None, true) => {}
                    (None, false) => m.fields.push(field(&name, &value)),
                }
            }
            // Every body chunk of one Milter is one new body.
            Edit::ReplaceBody(b) => {
                if !replaced {
                    m.body.clear();
                    replaced = true;
                }
                m.body.extend_from_slice(&crlf(&b));
            }
            Edit::ChangeFrom(addr, _args) => m.sender = bare(&addr).to_string(),
            Edit::AddRcpt(addr, _args) => {
                let a = bare(&addr);
                if !rcpts.iter().any(|r| r.address.eq_ignore_ascii_case(a)) {
                    rcpts.push(Recipient {
                        address: a.to_string(),
                        orcpt: String::new(),
                        notify: 0,
                    });
                }
            }
            Edit::DelRcpt(addr) => {
                let a = bare(&addr);
                rcpts.retain(|r| !r.address.eq_ignore_ascii_case(a));
            }
        }
    }
    if replaced && !m.body.is_empty() && !m.body.ends_with(b"\r\n") {
        m.body.extend_from_slice(b"\r\n");
    }
}

impl Txn {
    /// Runs the Milters of `class` on the written message. Ok: go on
    /// (perhaps changed, held, or discarded); Err: the reply for the
    /// client.
    pub(super) async fn milters(
        &mut self,
        s: &Settings,
        sb: &Switchboard,
        ep: &mut Option<MilterEp>,
        class: Class,
    ) -> Result<(), Failure> {
        let list = &s.milters[class as usize];
        if list.is_empty() {
            return Ok(());
        }
        let mut m = self.read_back().map_err(|e| {
            warn!("{}: cannot read the queue file back: {e}", self.id);
            write_error()
        })?;
        for entry in list {
            if ep.is_none() {
                match crate::edges::open::<ml::Link>(sb, Role::Milter, s.query).await {
                    Ok(e) => *ep = Some(e),
                    Err(e) => {
                        warn!("{}: cannot reach the milter service: {e}", self.id);
                        return Err(fail(451, "4.3.0", "Error: internal error"));
                    }
                }
            }
            let Some(e) = ep.as_mut() else {
                return Err(write_error());
            };
            let (v, edits) = match self.converse(e, entry, &m, class).await {
                Ok(r) => r,
                Err(err) => {
                    warn!("{}: milter service: {err}", self.id);
                    *ep = None;
                    return Err(fail(451, "4.3.0", "Error: internal error"));
                }
            };
            match v.outcome {
                Outcome::Continue | Outcome::Accept => {
                    apply(&mut m, &mut self.rcpts, edits);
                    if !v.quarantine.is_empty() {
                        self.effects.hold = true;
                        self.milter_log(
                            "milter-hold",
                            "milter triggers HOLD action",
                            &v.quarantine,
                        );
                    }
                }
                Outcome::Discard => {
                    self.milter_log("milter-discard", "milter triggers DISCARD action", "");
                    self.inspect.discard = true;
                    return Ok(());
                }
                Outcome::Reject | Outcome::Tempfail | Outcome::Shutdown => {
                    let f = failure(&v);
                    let text = format!("{} {}", f.enhanced, f.text);
                    self.milter_log("milter-reject", &text, "");
                    return Err(f);
                }
            }
        }
        if self.rcpts.is_empty() {
            self.milter_log(
                "milter-discard",
                "milter removed every recipient: message discarded",
                "",
            );
            self.inspect.discard = true;
            return Ok(());
        }
        if m.changed {
            self.rewrite(&m).map_err(|e| {
                warn!("{}: queue file write error: {e}", self.id);
                write_error()
            })?;
        }
        Ok(())
    }

    /// One Milter's conversation: its verdict, and its changes.
    async fn converse(
        &self,
        ep: &mut MilterEp,
        entry: &str,
        m: &Message,
        class: Class,
    ) -> Result<(Verdict, Vec<Edit>), String> {
        // smtpd's session: its Milters heard the SMTP events as they
        // happened; attach to this one for the message.
        if class == Class::Smtpd && self.begin.milter_ticket != 0 {
            let attach = ml::Request::Attach {
                ticket: self.begin.milter_ticket,
                milter: entry.to_string(),
            };
            let v = call(ep, attach).await?;
            if v.outcome != Outcome::Continue {
                return Ok((v, Vec::new()));
            }
            return self.content_and_end(ep, m).await;
        }
        let c = &self.begin.client;
        let local = class == Class::NonSmtpd || c.addr.is_empty();
        let host = if local {
            "localhost".to_string()
        } else {
            c.name.clone()
        };
        let helo = if c.helo.is_empty() {
            host.clone()
        } else {
            c.helo.clone()
        };
        let open = ml::Open {
            milter: entry.to_string(),
            macros: self.macros(m),
            host,
            addr: if local { String::new() } else { c.addr.clone() },
            port: c.port,
            helo,
            mail: vec![format!("<{}>", m.sender)],
        };
        let v = call(ep, ml::Request::Open(open)).await?;
        if v.outcome != Outcome::Continue {
            return Ok((v, Vec::new()));
        }
        for r in &self.rcpts {
            let v = call(ep, ml::Request::Rcpt(format!("<{}>", r.address))).await?;
            match v.outcome {
                Outcome::Continue => {}
                // A recipient refused after smtpd said 250 for it: the
                // whole message gets the Milter's reply (Postfix defers a
                // non-SMTP submission the same way), never a silent drop.
                Outcome::Reject | Outcome::Tempfail | Outcome::Shutdown => {
                    return Ok((v, Vec::new()));
                }
                _ => return Ok((v, Vec::new())),
            }
        }
        self.content_and_end(ep, m).await
    }

    /// The message, the end of it, the changes and the verdict.
    async fn content_and_end(
        &self,
        ep: &mut MilterEp,
        m: &Message,
    ) -> Result<(Verdict, Vec<Edit>), String> {
        let bytes = m.bytes();
        for chunk in bytes.chunks(ml::MAX_CHUNK) {
            ep.send(&ml::Request::Content(chunk.to_vec()))
                .await
                .map_err(|e| e.to_string())?;
        }
        ep.send(&ml::Request::End)
            .await
            .map_err(|e| e.to_string())?;
        let mut edits = Vec::new();
        loop {
            match ep.recv().await.map_err(|e: ChannelError| e.to_string())? {
                ml::Reply::Edit(p) => match pm::read_reply(&p) {
                    Ok(Some((pm::Reply::Edit(e), n))) if n == p.len() => {
                        if edits.len() >= pm::MAX_EDITS * 2 {
                            return Err("too many changes".into());
                        }
                        edits.push(e)
                    }
                    other => return Err(format!("an edit that is not one: {other:?}")),
                },
                ml::Reply::Verdict(v) => return Ok((v, edits)),
            }
        }
    }

    /// The macros cleanup knows (Postfix's names); the milter role adds
    /// j, {daemon_name} and v, and the recipient's.
    fn macros(&self, m: &Message) -> Vec<(String, String)> {
        let c = &self.begin.client;
        let mut v: Vec<(String, String)> = vec![("i".into(), self.id.clone())];
        if !c.addr.is_empty() {
            v.push(("_".into(), format!("{} [{}]", c.name, c.addr)));
            v.push(("{client_addr}".into(), c.addr.clone()));
            v.push(("{client_name}".into(), c.name.clone()));
            v.push(("{client_ptr}".into(), c.name.clone()));
            v.push(("{client_port}".into(), c.port.to_string()));
        } else {
            v.push(("_".into(), "localhost [127.0.0.1]".into()));
        }
        // "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)"
        if let Some((version, rest)) = c.tls.split_once(" with cipher ") {
            v.push(("{tls_version}".into(), version.to_string()));
            let (cipher, bits) = rest.split_once(" (").unwrap_or((rest, ""));
            v.push(("{cipher}".into(), cipher.to_string()));
            if let Some((used, _)) = bits.split_once('/') {
                v.push(("{cipher_bits}".into(), used.to_string()));
            }
        }
        v.push(("{mail_addr}".into(), m.sender.clone()));
        let host = m.sender.rsplit_once('@').map_or("", |(_, d)| d);
        v.push(("{mail_host}".into(), host.to_string()));
        v.push((
            "{mail_mailer}".into(),
            if m.sender.is_empty() { "local" } else { "smtp" }.into(),
        ));
        v
    }

    /// The message as written so far, read back from the queue file.
    pub(super) fn read_back(&mut self) -> std::io::Result<Message> {
        use std::io::Write;
        use std::os::unix::fs::FileExt;
        self.out.flush()?;
        let mut buf = vec![0u8; self.written as usize];
        self.out.get_ref().read_exact_at(&mut buf, 0)?;
        let (records, _) = rec::decode_all(&buf);
        let content = rec::content(&records);
        let (headers, body) = match header::split(&content, true) {
            Split::Done { headers, body } => (headers, body.max(headers)),
            Split::Incomplete => (content.len(), content.len()),
        };
        Ok(Message {
            fields: header::fields(&content[..headers]),
            body: content[body..].to_vec(),
            sender: self.begin.sender.clone(),
            changed: false,
        })
    }

    /// Writes the queue file again from its start with the changed
    /// message (the recipients and the end record follow as always).
    pub(super) fn rewrite(&mut self, m: &Message) -> std::io::Result<()> {
        use std::io::{Seek, SeekFrom, Write};
        self.out.flush()?;
        self.out.get_mut().set_len(0)?;
        self.out.get_mut().seek(SeekFrom::Start(0))?;
        self.written = 0;
        self.size = 0;
        self.begin.sender = m.sender.clone();
        self.write_head()?;
        self.write_content(&m.bytes());
        match self.failure.take() {
            Some(_) => Err(std::io::Error::other("content write failed")),
            None => Ok(()),
        }
    }

    fn milter_log(&self, what: &str, text: &str, reason: &str) {
        let c = &self.begin.client;
        let client = if c.addr.is_empty() {
            "local".to_string()
        } else {
            format!("{}[{}]", c.name, c.addr)
        };
        let mut l = format!(
            "{}: {what}: END-OF-MESSAGE from {client}: {text}; from=<{}> to=<{}>",
            self.id, self.begin.sender, self.first_rcpt
        );
        if !c.proto.is_empty() {
            l.push_str(&format!(" proto={}", c.proto));
        }
        if !c.helo.is_empty() {
            l.push_str(&format!(" helo=<{}>", c.helo));
        }
        if !reason.is_empty() {
            l.push_str(&format!(": {reason}"));
        }
        crate::log::line_as(Some(c.log_name.as_str()).filter(|n| !n.is_empty()), &l);
    }
}

async fn call(ep: &mut MilterEp, r: ml::Request) -> Result<Verdict, String> {
    match ep.call(&r).await.map_err(|e| e.to_string())? {
        ml::Reply::Verdict(v) => Ok(v),
        ml::Reply::Edit(_) => Err("a change before the end of the message".into()),
    }
}

/// The reply a refusing verdict gives the client.
fn failure(v: &Verdict) -> Failure {
    let dflt = match v.outcome {
        Outcome::Reject => fail(550, "5.7.1", "Command rejected"),
        Outcome::Shutdown => fail(421, "4.7.0", "Server closing connection"),
        _ => fail(451, "4.7.1", "Service unavailable - try again later"),
    };
    let Some(first) = v.reply.first() else {
        return dflt;
    };
    let (code, rest) = first.split_once(' ').unwrap_or((first, ""));
    let Ok(code) = code.parse::<u16>() else {
        return dflt;
    };
    let (enhanced, text) = match rest.split_once(' ') {
        Some((e, t)) if e.split('.').count() == 3 && e.starts_with(['2', '4', '5']) => {
            (e.to_string(), t.to_string())
        }
        _ => (
            if code >= 500 { "5.7.1" } else { "4.7.1" }.to_string(),
            rest.to_string(),
        ),
    };
    // Further lines join the first (smtpd gives one line).
    let mut text = text;
    for l in &v.reply[1..] {
        let t = l.splitn(3, ' ').nth(2).unwrap_or("");
        text.push(' ');
        text.push_str(t);
    }
    Failure {
        code,
        enhanced,
        text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg() -> Message {
        let content = b"Received: by x\r\nSubject: one\r\nX-A: 1\r\nX-A: 2\r\n\r\nbody\r\n";
        let Split::Done { headers, body } = header::split(content, true) else {
            panic!()
        };
        Message {
            fields: header::fields(&content[..headers]),
            body: content[body..].to_vec(),
            sender: "a@example.com".into(),
            changed: false,
        }
    }

    #[test]
    fn changes_apply_in_order() {
        let mut m = msg();
        let mut rcpts = vec![Recipient {
            address: "b@example.net".into(),
            orcpt: String::new(),
            notify: 0,
        }];
        apply(
            &mut m,
            &mut rcpts,
            vec![
                Edit::AddHeader {
                    name: "X-Added".into(),
                    value: "yes\n\tfolded".into(),
                },
                Edit::InsertHeader {
                    index: 0,
                    name: "X-Top".into(),
                    value: "first".into(),
                },
                Edit::ChangeHeader {
                    index: 2,
                    name: "x-a".into(),
                    value: "two".into(),
                },
                Edit::ChangeHeader {
                    index: 1,
                    name: "Subject".into(),
                    value: String::new(),
                },
                Edit::ReplaceBody(b"new\nbody".to_vec()),
                Edit::ReplaceBody(b" more\r\n".to_vec()),
                Edit::ChangeFrom("<c@example.org>".into(), String::new()),
                Edit::AddRcpt("<d@example.net>".into(), String::new()),
                Edit::DelRcpt("<B@example.net>".into()),
            ],
        );
        assert!(m.changed);
        assert_eq!(
            String::from_utf8(m.bytes()).unwrap(),
            "X-Top: first\r\nReceived: by x\r\nX-A: 1\r\nX-A: two\r\nX-Added: yes\r\n\tfolded\r\n\r\nnew\r\nbody more\r\n"
        );
        assert_eq!(m.sender, "c@example.org");
        assert_eq!(rcpts.len(), 1);
        assert_eq!(rcpts[0].address, "d@example.net");
    }

    #[test]
    fn refusals_keep_the_milters_reply() {
        let mut v = Verdict::of(Outcome::Reject);
        assert_eq!(failure(&v).code, 550);
        v.reply = vec!["554 5.7.1 spam".into()];
        let f = failure(&v);
        assert_eq!(
            (f.code, f.enhanced.as_str(), f.text.as_str()),
            (554, "5.7.1", "spam")
        );
        v.outcome = Outcome::Shutdown;
        v.reply = vec!["421 4.7.1 Service unavailable - try again later".into()];
        assert_eq!(failure(&v).code, 421);
    }
}
