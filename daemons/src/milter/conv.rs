//! One connection to one Milter, and the conversation over it: option
//! negotiation, the SMTP events, the message, the end of the message.
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use postern_config::milter::{DefaultAction, MilterSpec};
use postern_config::tables::Endpoint;
use postern_ipc::milter::{self as ml, Outcome, Verdict};
use postern_proto::header::{self, Split};
use postern_proto::milter::{
    self as pm, Collect, Command, Family, Negotiated, Stage, Step, action, step,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Ep, Settings};
use crate::daemon::Switchboard;
use crate::policy::io_text;
use crate::warn;

pub(super) enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

/// One conversation with one Milter.
pub(super) struct Conv {
    s: Rc<Settings>,
    name: String,
    default_action: DefaultAction,
    command_timeout: Duration,
    content_timeout: Duration,
    /// The entry of the Milter list this is.
    pub(super) entry: String,
    /// A transaction is open (MAIL sent, no end of message yet).
    in_txn: bool,
    stream: Stream,
    neg: Negotiated,
    /// Bytes read and not yet used.
    buf: Vec<u8>,
    macros: HashMap<String, String>,
    /// The Milter decided the message before its end (or failed).
    decided: Option<Verdict>,
    /// The header section while it is incomplete.
    headers: Vec<u8>,
    headers_done: bool,
    data_sent: bool,
    /// The Milter asked for no more body (SMFIR_SKIP).
    skip_body: bool,
}

impl Conv {
    /// Connects and negotiates; the default action's verdict if that
    /// fails.
    pub(super) async fn connect(
        s: &Rc<Settings>,
        sb: &Switchboard,
        spec: &MilterSpec,
        entry: &str,
        macros: &[(String, String)],
    ) -> Result<Conv, Verdict> {
        let name = spec.endpoint.to_string();
        let name = match name.strip_prefix("unix:") {
            Some(p)
                if entry
                    .trim_start()
                    .trim_start_matches(['{', ' '])
                    .starts_with("local:") =>
            {
                format!("local:{p}")
            }
            _ => name,
        };
        let default_action = spec.default_action.unwrap_or(s.default_action);
        let connect_timeout = spec.connect_timeout.unwrap_or(s.connect_timeout);
        let stream = match connect(sb, &spec.endpoint, connect_timeout).await {
            Ok(st) => st,
            Err(e) => {
                return Err(failed(
                    &name,
                    default_action,
                    &format!("can't connect: {e}"),
                ));
            }
        };
        let mut c = Conv {
            s: s.clone(),
            name,
            entry: entry.trim().to_string(),
            default_action,
            command_timeout: spec.command_timeout.unwrap_or(s.command_timeout),
            content_timeout: spec.content_timeout.unwrap_or(s.content_timeout),
            stream,
            neg: Negotiated {
                version: pm::VERSION,
                actions: 0,
                protocol: 0,
                macros: Vec::new(),
            },
            buf: Vec::new(),
            macros: macros.iter().cloned().collect(),
            decided: None,
            headers: Vec::new(),
            headers_done: false,
            data_sent: false,
            skip_body: false,
            in_txn: false,
        };
        c.macros.insert("j".into(), s.daemon_name.clone());
        c.macros
            .insert("{daemon_name}".into(), s.daemon_name.clone());
        c.macros.insert("v".into(), s.v.clone());
        let version = spec.protocol.unwrap_or(s.protocol);
        match c.negotiate(version, connect_timeout).await {
            Ok(n) => {
                c.neg = n;
                Ok(c)
            }
            Err(e) => Err(failed(&c.name, c.default_action, &e)),
        }
    }

    /// CONNECT, with the client as smtpd saw it.
    pub(super) async fn connect_event(&mut self, host: &str, addr: &str, port: u16) -> Verdict {
        let family = match addr.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(a)) => Family::Inet4(a),
            Ok(std::net::IpAddr::V6(a)) => Family::Inet6(a),
            Err(_) => Family::Unknown,
        };
        let cmd = Command::Connect {
            host: host.to_string(),
            family,
            port,
        };
        self.step(Step::Connect, Some(Stage::Connect), cmd).await
    }

    pub(super) async fn helo(&mut self, helo: &str) -> Verdict {
        self.step(
            Step::Helo,
            Some(Stage::Helo),
            Command::Helo(helo.to_string()),
        )
        .await
    }

    /// MAIL: a new transaction (the one before it, if any, aborted).
    pub(super) async fn mail(&mut self, args: &[String]) -> Verdict {
        if self.in_txn {
            let t = self.command_timeout;
            if let Err(e) = self.send(&Command::Abort, t).await {
                return self.broken(&e);
            }
        }
        self.reset_message();
        self.in_txn = true;
        self.step(Step::Mail, Some(Stage::Mail), Command::Mail(args.to_vec()))
            .await
    }

    pub(super) fn set_macros(&mut self, m: &[(String, String)]) {
        for (n, v) in m {
            self.macros.insert(n.clone(), v.clone());
        }
    }

    /// One SMTP event: its verdict (the default action's after a failure,
    /// which ends the conversation).
    async fn step(&mut self, st: Step, stage: Option<Stage>, cmd: Command) -> Verdict {
        match self.event(st, stage, cmd).await {
            Ok(out) => verdict(out, st),
            Err(e) => self.broken(&e),
        }
    }

    /// The conversation failed: the default action from here on.
    fn broken(&mut self, e: &str) -> Verdict {
        let v = failed(&self.name, self.default_action, e);
        self.decided = Some(v.clone());
        v
    }

    /// Whether the conversation failed (it is not used again).
    pub(super) fn is_broken(&self) -> bool {
        self.decided.as_ref().is_some_and(|v| !v.failure.is_empty())
    }

    fn reset_message(&mut self) {
        self.decided = None;
        self.headers.clear();
        self.headers_done = false;
        self.data_sent = false;
        self.skip_body = false;
    }

    /// Option negotiation: what Postern offers, what the Milter takes.
    async fn negotiate(&mut self, version: u32, t: Duration) -> Result<Negotiated, String> {
        let offer_protocol = if version >= 6 { step::ALL } else { 0x7f };
        self.send(
            &Command::OptNeg {
                version,
                actions: action::ALL,
                protocol: offer_protocol,
            },
            t,
        )
        .await?;
        let r = self.read(t, "SMFIC_OPTNEG").await?;
        Negotiated::from_reply(action::ALL, offer_protocol, r).map_err(|e| e.to_string())
    }

    pub(super) async fn rcpt(&mut self, addr: &str) -> Verdict {
        if let Some(v) = &self.decided {
            return v.clone();
        }
        let domain = addr
            .trim_matches(|c| c == '<' || c == '>')
            .rsplit_once('@')
            .map_or(String::new(), |(_, d)| d.to_string());
        let bare = addr.trim_matches(|c| c == '<' || c == '>').to_string();
        self.macros.insert("{rcpt_addr}".into(), bare);
        self.macros.insert("{rcpt_host}".into(), domain);
        self.macros.insert("{rcpt_mailer}".into(), "smtp".into());
        match self
            .event(
                Step::Rcpt,
                Some(Stage::Rcpt),
                Command::Rcpt(vec![addr.to_string()]),
            )
            .await
        {
            Ok(pm::Outcome::Continue) => Verdict::of(Outcome::Continue),
            // A refusal is this recipient's; the transaction goes on.
            Ok(out @ (pm::Outcome::Reject(_) | pm::Outcome::Tempfail(_))) => {
                verdict(out, Step::Rcpt)
            }
            // Accept, discard, shutdown: the whole message.
            Ok(out) => {
                let v = verdict(out, Step::Rcpt);
                self.decided = Some(v.clone());
                v
            }
            Err(e) => self.broken(&e),
        }
    }

    /// The message as queued: DATA first, then each header, the end of
    /// the headers, and the body in chunks.
    pub(super) async fn content(&mut self, mut d: &[u8]) {
        if self.decided.is_some() {
            return;
        }
        if let Err(e) = self.content_inner(&mut d).await {
            self.broken(&e);
        }
    }

    async fn content_inner(&mut self, d: &mut &[u8]) -> Result<(), String> {
        if !self.data_sent {
            self.data_sent = true;
            if !self
                .step_ok(Step::Data, Some(Stage::Data), Command::Data)
                .await?
            {
                return Ok(());
            }
        }
        if self.headers_done {
            return self.body(d).await;
        }
        self.headers.extend_from_slice(d);
        self.try_headers(false).await
    }

    async fn try_headers(&mut self, eof: bool) -> Result<(), String> {
        let Split::Done { headers, body } = header::split(&self.headers, eof) else {
            return Ok(());
        };
        self.headers_done = true;
        let buf = std::mem::take(&mut self.headers);
        let leadspc = self.neg.protocol & step::HDR_LEADSPC != 0;
        for f in header::fields(&buf[..headers]) {
            let value = pm::sent_header_value(&f.raw, leadspc);
            let cmd = Command::Header {
                name: f.name.clone(),
                value,
            };
            if !self.step_ok(Step::Header, None, cmd).await? {
                return Ok(());
            }
        }
        if !self
            .step_ok(
                Step::EndOfHeaders,
                Some(Stage::EndOfHeaders),
                Command::EndOfHeaders,
            )
            .await?
        {
            return Ok(());
        }
        let mut rest = &buf[body.max(headers)..];
        self.body(&mut rest).await
    }

    async fn body(&mut self, d: &mut &[u8]) -> Result<(), String> {
        if self.skip_body || !self.neg.sends(Step::Body) {
            return Ok(());
        }
        for chunk in d.chunks(pm::BODY_CHUNK) {
            let t = self.content_timeout;
            match self
                .event_within(Step::Body, None, Command::Body(chunk.to_vec()), t)
                .await?
            {
                pm::Outcome::Continue => {}
                pm::Outcome::Skip => {
                    self.skip_body = true;
                    return Ok(());
                }
                out => {
                    let v = verdict(out, Step::Body);
                    self.decide(v).await;
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// One step of the content: false when the Milter decided the message.
    async fn step_ok(
        &mut self,
        st: Step,
        stage: Option<Stage>,
        cmd: Command,
    ) -> Result<bool, String> {
        let t = self.content_timeout;
        match self.event_within(st, stage, cmd, t).await? {
            pm::Outcome::Continue => Ok(true),
            out => {
                let v = verdict(out, st);
                self.decide(v).await;
                Ok(false)
            }
        }
    }

    /// The end of the message: the changes as they come (sent on to
    /// cleanup only once the verdict is in), then the verdict.
    /// The end of the message: the changes (sent on to cleanup only
    /// once the verdict keeps the message), then the verdict. The
    /// transaction is over; a conversation that did not fail can carry
    /// the session's next one.
    pub(super) async fn end(&mut self, ep: &mut Ep) -> Verdict {
        let v = self.end_inner(ep).await;
        self.in_txn = false;
        if !self.is_broken() {
            self.reset_message();
        }
        v
    }

    async fn end_inner(&mut self, ep: &mut Ep) -> Verdict {
        if self.decided.is_none() {
            if !self.data_sent {
                self.content(&[]).await;
            }
            if self.decided.is_none()
                && !self.headers_done
                && let Err(e) = self.try_headers(true).await
            {
                return self.broken(&e);
            }
        }
        if let Some(v) = &self.decided {
            return v.clone();
        }
        match self.eom().await {
            Ok((out, collect)) => {
                let mut v = verdict(out, Step::EndOfMessage);
                if let Some(q) = collect.quarantine {
                    v.quarantine = if q.is_empty() { "milter".into() } else { q };
                }
                // Changes count only with a verdict that keeps the message.
                if matches!(v.outcome, Outcome::Continue | Outcome::Accept) {
                    for e in collect.edits {
                        for p in edit_packets(e) {
                            if ep.send(&ml::Reply::Edit(p)).await.is_err() {
                                return self.broken("cleanup went away");
                            }
                        }
                    }
                }
                v
            }
            Err(e) => self.broken(&e),
        }
    }

    async fn eom(&mut self) -> Result<(pm::Outcome, Collect), String> {
        let t = self.content_timeout;
        let mut p = self.macros_packet(Stage::EndOfMessage);
        p.extend(Command::EndOfMessage.encode());
        self.send_bytes(&p, t).await?;
        let mut c = Collect::new(Step::EndOfMessage, &self.neg, self.s.body_limit);
        loop {
            let r = self.read(t, "SMFIC_BODYEOB").await?;
            if let Some(out) = c.reply(r).map_err(|e| e.to_string())? {
                return Ok((out, c));
            }
        }
    }

    /// The Milter decided the message before its end: the conversation
    /// is over (ABORT tells it so).
    async fn decide(&mut self, v: Verdict) -> Verdict {
        let t = self.command_timeout;
        let _ = self.send(&Command::Abort, t).await;
        self.in_txn = false;
        self.decided = Some(v.clone());
        v
    }

    async fn event(
        &mut self,
        st: Step,
        stage: Option<Stage>,
        cmd: Command,
    ) -> Result<pm::Outcome, String> {
        let t = self.command_timeout;
        self.event_within(st, stage, cmd, t).await
    }

    /// Sends one event (with its macros) and reads the answer, if the
    /// Milter takes and answers that step.
    async fn event_within(
        &mut self,
        st: Step,
        stage: Option<Stage>,
        cmd: Command,
        t: Duration,
    ) -> Result<pm::Outcome, String> {
        if !self.neg.sends(st) {
            return Ok(pm::Outcome::Continue);
        }
        // The macros and the command in one write.
        let mut p = stage.map(|s| self.macros_packet(s)).unwrap_or_default();
        p.extend(cmd.encode());
        self.send_bytes(&p, t).await?;
        if !self.neg.answers(st) {
            return Ok(pm::Outcome::Continue);
        }
        let mut c = Collect::new(st, &self.neg, self.s.body_limit);
        loop {
            let r = self.read(t, command_name(st)).await?;
            if let Some(out) = c.reply(r).map_err(|e| e.to_string())? {
                return Ok(out);
            }
        }
    }

    /// The SMFIC_MACRO packet for `stage` (empty when there is nothing to
    /// send).
    fn macros_packet(&self, stage: Stage) -> Vec<u8> {
        let names: Vec<String> = match self.neg.macros_for(stage) {
            Some(l) => l.into_iter().map(str::to_string).collect(),
            None => self
                .s
                .macros
                .iter()
                .find(|(s, _)| *s == stage)
                .map(|(_, l)| l.clone())
                .unwrap_or_default(),
        };
        let pairs: Vec<(String, String)> = names
            .into_iter()
            .filter_map(|n| {
                let v = self.macros.get(&n)?.clone();
                Some((n, v))
            })
            .collect();
        if pairs.is_empty() {
            return Vec::new();
        }
        Command::Macros {
            command: stage.command(),
            pairs,
        }
        .encode()
    }

    async fn send(&mut self, cmd: &Command, t: Duration) -> Result<(), String> {
        self.send_bytes(&cmd.encode(), t).await
    }

    async fn send_bytes(&mut self, p: &[u8], t: Duration) -> Result<(), String> {
        let w = async {
            match &mut self.stream {
                Stream::Tcp(s) => s.write_all(p).await,
                Stream::Unix(s) => s.write_all(p).await,
            }
        };
        match tokio::time::timeout(t, w).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("error writing command: {}", io_text(&e))),
            Err(_) => Err("error writing command: Connection timed out".into()),
        }
    }

    /// Reads one packet within `t`.
    async fn read(&mut self, t: Duration, what: &str) -> Result<pm::Reply, String> {
        let deadline = tokio::time::Instant::now() + t;
        loop {
            match pm::read_reply(&self.buf) {
                Ok(Some((r, n))) => {
                    self.buf.drain(..n);
                    return Ok(r);
                }
                Ok(None) => {}
                Err(e) => return Err(format!("bad {what} reply packet: {e}")),
            }
            let mut chunk = [0u8; 8192];
            let rd = async {
                match &mut self.stream {
                    Stream::Tcp(s) => s.read(&mut chunk).await,
                    Stream::Unix(s) => s.read(&mut chunk).await,
                }
            };
            match tokio::time::timeout_at(deadline, rd).await {
                Ok(Ok(0)) => {
                    return Err(format!(
                        "can't read {what} reply packet header: Connection closed"
                    ));
                }
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) => {
                    return Err(format!("can't read {what} reply packet: {}", io_text(&e)));
                }
                Err(_) => {
                    return Err(format!(
                        "can't read {what} reply packet header: Connection timed out"
                    ));
                }
            }
        }
    }

    /// Ends the conversation (SMFIC_QUIT).
    pub(super) async fn quit(mut self: Box<Self>) {
        let t = self.command_timeout.min(Duration::from_secs(5));
        let _ = self.send(&Command::Quit, t).await;
    }
}

/// Postfix's names for the command whose reply failed.
fn command_name(s: Step) -> &'static str {
    match s {
        Step::Connect => "SMFIC_CONNECT",
        Step::Helo => "SMFIC_HELO",
        Step::Mail => "SMFIC_MAIL",
        Step::Rcpt => "SMFIC_RCPT",
        Step::Data => "SMFIC_DATA",
        Step::Header => "SMFIC_HEADER",
        Step::EndOfHeaders => "SMFIC_EOH",
        Step::Body => "SMFIC_BODY",
        Step::EndOfMessage => "SMFIC_BODYEOB",
        Step::Unknown => "SMFIC_UNKNOWN",
    }
}

/// A Milter's decision as cleanup applies it.
fn verdict(out: pm::Outcome, _st: Step) -> Verdict {
    let (outcome, reply) = match out {
        pm::Outcome::Continue | pm::Outcome::Skip => (Outcome::Continue, None),
        pm::Outcome::Accept => (Outcome::Accept, None),
        pm::Outcome::Discard => (Outcome::Discard, None),
        pm::Outcome::Reject(r) => (Outcome::Reject, r),
        pm::Outcome::Tempfail(r) => (Outcome::Tempfail, r),
        pm::Outcome::Shutdown => (Outcome::Shutdown, None),
    };
    let mut v = Verdict::of(outcome);
    if let Some(r) = reply {
        v.reply = reply_lines(&r);
    }
    v
}

/// A checked reply as the lines cleanup hands to smtpd.
fn reply_lines(r: &pm::SmtpReply) -> Vec<String> {
    r.lines
        .iter()
        .map(|l| match &r.enhanced {
            Some(e) => format!("{} {e} {l}", r.code),
            None => format!("{} {l}", r.code),
        })
        .collect()
}

/// A failed Milter's default action (Postfix's milter8_comm_error).
fn failed(name: &str, a: DefaultAction, why: &str) -> Verdict {
    warn!("milter {name}: {why}");
    let (outcome, text) = match a {
        DefaultAction::Accept => (Outcome::Accept, None),
        DefaultAction::Quarantine => (Outcome::Accept, None),
        DefaultAction::Reject => (Outcome::Reject, Some("550 5.5.0 Service unavailable")),
        DefaultAction::Tempfail => (
            Outcome::Tempfail,
            Some("451 4.7.1 Service unavailable - try again later"),
        ),
        DefaultAction::Shutdown => (
            Outcome::Shutdown,
            Some("421 4.7.1 Service unavailable - try again later"),
        ),
    };
    let mut v = Verdict::of(outcome);
    v.reply = text.map(|t| vec![t.to_string()]).unwrap_or_default();
    if a == DefaultAction::Quarantine {
        v.quarantine = "default_action".into();
    }
    v.failure = why.to_string();
    v
}

/// One change as the Milter's packets (a body replacement in chunks).
fn edit_packets(e: pm::Edit) -> Vec<Vec<u8>> {
    match e {
        pm::Edit::ReplaceBody(b) if b.len() > pm::BODY_CHUNK => b
            .chunks(pm::BODY_CHUNK)
            .map(|c| pm::Reply::Edit(pm::Edit::ReplaceBody(c.to_vec())).encode())
            .collect(),
        e => vec![pm::Reply::Edit(e).encode()],
    }
}

async fn connect(sb: &Switchboard, ep: &Endpoint, t: Duration) -> Result<Stream, String> {
    match ep {
        Endpoint::Inet(a) => match tokio::time::timeout(t, tokio::net::TcpStream::connect(a)).await
        {
            Ok(Ok(s)) => {
                // Small packets, each waiting for its answer: no Nagle.
                s.set_nodelay(true).map_err(|e| io_text(&e))?;
                Ok(Stream::Tcp(s))
            }
            Ok(Err(e)) => Err(io_text(&e)),
            Err(_) => Err("Connection timed out".into()),
        },
        Endpoint::Unix(p) => {
            let fd = match tokio::time::timeout(t, sb.open_table(p)).await {
                Ok(Ok(Some(fd))) => fd,
                Ok(Ok(None)) => return Err("No such file or directory".into()),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err("Connection timed out".into()),
            };
            let s = std::os::unix::net::UnixStream::from(fd);
            s.set_nonblocking(true).map_err(|e| io_text(&e))?;
            tokio::net::UnixStream::from_std(s)
                .map(Stream::Unix)
                .map_err(|e| io_text(&e))
        }
    }
}
