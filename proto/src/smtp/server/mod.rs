//! The SMTP server session (RFC 5321 with PIPELINING, SIZE, 8BITMIME,
//! SMTPUTF8, ENHANCEDSTATUSCODES, CHUNKING, DSN, STARTTLS and AUTH) as a
//! state machine without I/O, in the manner of rustls's `Expect*` states.
//!
//! The I/O shell (smtpd, `sendmail -bs`) drives it:
//! - it asks [`Server::wants`] what to read next and feeds what it read:
//!   [`Server::line`], [`Server::content`], or a transport [`Event`];
//! - it drains [`Server::poll`] and carries out each [`Action`]. An action
//!   that asks a peer (a decision, a transaction, a commit, a credential
//!   check, a TLS handshake) is answered with [`Server::answer`] or a TLS
//!   event before the shell reads anything else.
//!
//! Every SMTP stage has one decision point ([`Stage`]): the core emits
//! [`Action::Decide`] and the shell's chain of checks answers with a
//! [`Verdict`]. Stages without checks (see [`Config::checks`]) are not asked.
//!
//! The transaction lives in one `Option<Txn>`: every reject or error point
//! that ends a transaction drops it whole, so no per-recipient decision can
//! outlive it, and the core never emits [`Action::Commit`] without a MAIL
//! the peer opened, at least one accepted RCPT, and complete content.
mod content;
pub mod sim;
mod types;
mod verbs;

pub use types::*;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::Arc;

use super::data::{DataDecoder, LineNormalizer};
use super::esmtp::MailParams;
use super::reply::Reply;
use crate::address::Mailbox;

/// Longest SASL response line (RFC 4954 4 allows 12288 octets).
pub const SASL_LINE_LIMIT: usize = 12288;

/// How a session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Quit,
    Closed,
    Timeout,
    TooManyErrors,
    BareLf,
    HungUp,
}

/// BDAT state kept across the chunks of one message.
#[derive(Debug)]
struct Bdat {
    norm: LineNormalizer,
    size: u64,
    too_big: bool,
}

#[derive(Debug)]
struct Txn {
    queue_id: String,
    sender: Mailbox,
    smtputf8: bool,
    rcpts: Vec<Recipient>,
    /// `ID: client=...` was logged (at the first accepted recipient).
    announced: bool,
    bdat: Option<Bdat>,
    /// The channel to cleanup broke: the content is read and dropped.
    lost: bool,
    /// A check said DISCARD: acknowledge, then throw away.
    discard: Option<String>,
    /// MAIL's SIZE, then the content's size once it is all in.
    size: u64,
}

/// The command or content being decided on while a peer answers.
#[derive(Debug)]
enum Pending {
    Connect,
    Helo {
        name: String,
        esmtp: bool,
    },
    Mail {
        sender: Mailbox,
        params: MailParams,
    },
    Begin {
        sender: Mailbox,
        params: MailParams,
    },
    Rcpt {
        rcpt: Mailbox,
        params: super::esmtp::RcptParams,
    },
    Vrfy(Mailbox),
    Data,
    /// Recipients sent at DATA (`bdat`: None) or the first BDAT chunk.
    Sink {
        bdat: Option<Chunk>,
    },
    EndOfData {
        verb: &'static str,
    },
    Commit {
        verb: &'static str,
    },
    Auth {
        user: String,
        method: &'static str,
    },
    /// AUTH's argument, while its decision point is asked.
    AuthCommand(String),
    StartTls,
}

/// A BDAT chunk being read.
#[derive(Debug, Clone)]
struct Chunk {
    size: u64,
    remaining: u64,
    last: bool,
    /// The chunk is read and dropped, then this is the reply.
    refused: Option<Reply>,
}

/// A SASL exchange waiting for the client's next line.
#[derive(Debug, Clone)]
enum AuthStep {
    Plain,
    LoginUser,
    LoginPass { user: String },
}

#[derive(Debug)]
enum Phase {
    Command,
    AuthLine(AuthStep),
    Data {
        dec: DataDecoder,
        out: Vec<u8>,
        size: u64,
        too_big: bool,
    },
    Chunk(Chunk),
    Await(Pending),
    /// A handshake: `wrapper` on a port-465 connect, else after STARTTLS.
    Tls {
        wrapper: bool,
    },
    Done,
}

const ORDER: [&str; 14] = [
    "helo", "ehlo", "starttls", "auth", "mail", "rcpt", "data", "bdat", "rset", "noop", "vrfy",
    "etrn", "quit", "unknown",
];

/// One SMTP session.
#[derive(Debug)]
pub struct Server {
    cfg: Arc<Config>,
    peer: Peer,
    client: String,
    bare_lf_ok: bool,
    tls_available: bool,
    phase: Phase,
    actions: VecDeque<Action>,
    helo: Option<String>,
    esmtp: bool,
    txn: Option<Txn>,
    tls: Option<String>,
    /// The SASL login and mechanism, once the client authenticated.
    sasl: Option<(String, &'static str)>,
    errors: u32,
    junk: u32,
    counts: [(u32, u32); 14],
    /// The last command, for "lost connection after X".
    last: &'static str,
    /// A DISCARD verdict at MAIL, for the transaction being opened.
    pending_discard: Option<String>,
    /// The connect check refused the client (Postfix with
    /// smtpd_delay_reject = no): every command but QUIT gets 503.
    denied: bool,
}

impl Server {
    /// A session for a client that just connected. `bare_lf_ok`: a bare LF
    /// ends a line for this client; `tls_available`: the shell can run a
    /// handshake now (see [`Server::set_tls_available`]).
    pub fn start(cfg: Arc<Config>, peer: Peer, bare_lf_ok: bool, tls_available: bool) -> Server {
        let client = format!("{}[{}]", peer.name, peer.addr);
        let mut s = Server {
            cfg,
            peer,
            client,
            bare_lf_ok,
            tls_available,
            phase: Phase::Command,
            actions: VecDeque::new(),
            helo: None,
            esmtp: false,
            txn: None,
            tls: None,
            sasl: None,
            errors: 0,
            junk: 0,
            counts: [(0, 0); 14],
            last: "CONNECT",
            pending_discard: None,
            denied: false,
        };
        s.log(format!("connect from {}", s.client));
        if s.cfg.wrapper {
            if s.tls_available {
                s.phase = Phase::Tls { wrapper: true };
                s.actions.push_back(Action::StartTls);
            } else {
                s.log(format!(
                    "warning: TLS is not available (no key from the broker); dropping {}",
                    s.client
                ));
                s.end(End::Closed);
            }
        } else {
            s.connected();
        }
        s
    }

    /// The next action for the shell.
    pub fn poll(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub fn wants(&self) -> Want {
        match &self.phase {
            Phase::Command => Want::Line {
                limit: self.cfg.line_length_limit,
                bare_lf_ok: self.bare_lf_ok,
            },
            Phase::AuthLine(_) => Want::Line {
                limit: SASL_LINE_LIMIT,
                bare_lf_ok: false,
            },
            Phase::Data { .. } => Want::Data,
            Phase::Chunk(c) => Want::Chunk {
                remaining: c.remaining,
            },
            Phase::Await(_) => Want::Answer,
            Phase::Tls { .. } => Want::Tls,
            Phase::Done => Want::Done,
        }
    }

    /// Whether the shell has a TLS certificate now (it can arrive late).
    pub fn set_tls_available(&mut self, yes: bool) {
        self.tls_available = yes;
    }

    /// True while a transaction is open.
    pub fn in_transaction(&self) -> bool {
        self.txn.is_some()
    }

    /// Recipients accepted in the open transaction.
    pub fn recipient_count(&self) -> usize {
        self.txn.as_ref().map_or(0, |t| t.rcpts.len())
    }

    /// The client said EHLO: replies carry enhanced status codes.
    pub fn esmtp(&self) -> bool {
        self.esmtp
    }

    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    /// What the checks of the stage being decided can see.
    pub fn facts(&self) -> Facts<'_> {
        let declared = match &self.phase {
            Phase::Await(Pending::Mail { params, .. }) => params.size,
            _ => None,
        };
        let (stage, sender, recipient) = match &self.phase {
            Phase::Await(p) => match p {
                Pending::Connect => (Some(Stage::Connect), None, None),
                Pending::Helo { .. } => (Some(Stage::Helo), None, None),
                Pending::Mail { sender, .. } => (Some(Stage::Mail), Some(sender), None),
                Pending::Rcpt { rcpt, .. } => (Some(Stage::Rcpt), None, Some(rcpt)),
                Pending::Vrfy(m) => (Some(Stage::Vrfy), None, Some(m)),
                Pending::Data => (Some(Stage::Data), None, None),
                Pending::EndOfData { .. } => (Some(Stage::EndOfData), None, None),
                Pending::AuthCommand(_) => (Some(Stage::Auth), None, None),
                Pending::StartTls => (Some(Stage::StartTls), None, None),
                _ => (None, None, None),
            },
            _ => (None, None, None),
        };
        let (helo, esmtp) = match &self.phase {
            Phase::Await(Pending::Helo { name, esmtp }) => (Some(name.as_str()), *esmtp),
            _ => (self.helo.as_deref(), self.esmtp),
        };
        Facts {
            stage,
            peer: &self.peer,
            client: &self.client,
            helo,
            esmtp,
            tls: self.tls.as_deref(),
            login: self.sasl.as_ref().map(|(u, _)| u.as_str()),
            sasl_method: self.sasl.as_ref().map(|(_, m)| *m),
            size: declared.or(self.txn.as_ref().map(|t| t.size)).unwrap_or(0),
            queue_id: self.txn.as_ref().map(|t| t.queue_id.as_str()),
            sender: sender.or(self.txn.as_ref().map(|t| &t.sender)),
            recipient,
            recipient_count: self.recipient_count(),
            sole_recipient: match self.txn.as_ref().map(|t| t.rcpts.as_slice()) {
                Some([only]) => Some(only.address.as_str()),
                _ => None,
            },
        }
    }

    /// A transport event. Ignored once the session is over.
    pub fn event(&mut self, e: Event) {
        match (e, std::mem::replace(&mut self.phase, Phase::Done)) {
            (_, Phase::Done) => {}
            (Event::Closed, phase) => self.lost(phase, End::Closed),
            (Event::Timeout, phase) => self.lost(phase, End::Timeout),
            (Event::SinkLost, phase) => {
                if let Some(t) = self.txn.as_mut() {
                    t.lost = true;
                }
                self.phase = phase;
            }
            (Event::LineTooLong, Phase::Command) => {
                self.reply(Reply::new(500, "5.5.0", "Error: line too long"));
                self.next_command();
            }
            (Event::LineBareLf, Phase::Command) => self.bare_lf(),
            (Event::LineTooLong | Event::LineBareLf, Phase::AuthLine(_)) => {
                self.auth_done(Reply::new(
                    500,
                    "5.5.6",
                    "Error: authentication exchange line too long",
                ));
            }
            (
                Event::TlsEstablished {
                    summary,
                    discarded,
                    peer,
                },
                Phase::Tls { wrapper },
            ) => self.tls_established(summary, discarded, peer, wrapper),
            (Event::Refuse(reply), Phase::Command) => {
                self.say(&reply);
                self.end(End::Quit);
            }
            (Event::TlsFailed(e), Phase::Tls { .. }) => {
                self.log(format!("SSL_accept error from {}: {e}", self.client));
                self.end(End::Closed);
            }
            // Not what this phase waits for: the shell's mistake, or input
            // that must not be read (after STARTTLS, before the handshake).
            (_, phase) => self.phase = phase,
        }
    }

    /// A command line (without its line ending), or a SASL response line.
    pub fn line(&mut self, bytes: &[u8]) {
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Command => {
                self.phase = Phase::Command;
                self.command_line(bytes);
            }
            Phase::AuthLine(step) => {
                self.phase = Phase::Command;
                self.auth_line(step, bytes);
            }
            other => self.phase = other,
        }
    }

    /// The peer's answer to the last asking action. An answer nobody waits
    /// for (late, or twice) is ignored.
    pub fn answer(&mut self, a: Answer) {
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Await(p) => {
                self.phase = Phase::Command;
                self.answered(p, a);
            }
            other => self.phase = other,
        }
    }

    // ---- helpers shared by the verbs ----

    fn log(&mut self, text: String) {
        self.actions.push_back(Action::Log(text));
    }

    fn ask(&mut self, p: Pending, a: Action) {
        self.phase = Phase::Await(p);
        self.actions.push_back(a);
    }

    /// Queues a reply; an error counts toward the limits, and past the
    /// soft limit each one is delayed.
    fn reply(&mut self, r: Reply) {
        let r = self.soften(r);
        if r.is_error() {
            self.errors += 1;
            if self.errors > self.cfg.soft_error_limit && !self.cfg.error_sleep.is_zero() {
                self.actions.push_back(Action::Pause(self.cfg.error_sleep));
            }
        }
        self.actions.push_back(Action::Reply(r.render(self.esmtp)));
    }

    /// A reply that counts neither as a command result nor an error
    /// (greetings, 354, 334 challenges, final 421s).
    fn say(&mut self, r: &Reply) {
        let r = self.soften(r.clone());
        self.actions.push_back(Action::Reply(r.render(self.esmtp)));
    }

    /// soft_bounce: 5xx becomes 4xx.
    fn soften(&self, mut r: Reply) -> Reply {
        if self.cfg.soft_bounce && (500..600).contains(&r.code) {
            r.code -= 100;
            if let Some(e) = r.enhanced.as_mut()
                && e.starts_with('5')
            {
                e.replace_range(0..1, "4");
            }
        }
        r
    }

    fn count(&mut self, verb: &str, ok: bool) {
        if let Some(i) = ORDER.iter().position(|v| *v == verb) {
            self.counts[i].1 += 1;
            if ok {
                self.counts[i].0 += 1;
            }
        }
    }

    /// Ends a command: counts it, replies, and reads the next.
    fn done(&mut self, verb: &str, r: Reply) {
        self.count(verb, !r.is_error());
        self.reply(r);
        self.next_command();
    }

    /// Back to reading commands, unless the client made too many errors.
    fn next_command(&mut self) {
        if self.errors >= self.cfg.hard_error_limit {
            self.end(End::TooManyErrors);
        } else {
            self.phase = Phase::Command;
        }
    }

    /// Postfix's protocol names: SMTP, ESMTP, UTF8SMTP, plus S with TLS
    /// and A after AUTH.
    fn proto(&self, smtputf8: bool) -> String {
        let base = match (smtputf8, self.esmtp) {
            (true, _) => "UTF8SMTP",
            (false, true) => "ESMTP",
            (false, false) => "SMTP",
        };
        let tls = if self.tls.is_some() { "S" } else { "" };
        let auth = if self.sasl.is_some() { "A" } else { "" };
        format!("{base}{tls}{auth}")
    }

    /// The protocol in log lines: Postfix's `state->protocol`, SMTP or
    /// ESMTP (the Received header's name, from [`Self::proto`], adds S, A
    /// and UTF8).
    pub(super) fn log_proto(&self) -> &'static str {
        if self.esmtp { "ESMTP" } else { "SMTP" }
    }

    /// Drops the open transaction (RSET, HELO, an error point, the end).
    fn abort_txn(&mut self) {
        if self.txn.take().is_some() {
            self.actions.push_back(Action::Abort);
        }
    }

    /// Postfix's reject line: `ID: reject: STAGE from CLIENT: REPLY; from=<..> [to=<..>] proto=.. helo=<..>`.
    fn reject_log(&mut self, stage: Stage, r: &Reply, sender: Option<&str>, rcpt: Option<&str>) {
        let summary = self.soften(r.clone()).summary();
        self.whatsup_log(stage, "reject", &summary, sender, rcpt);
    }

    /// A check's log line about the command being decided, in the shape
    /// of Postfix's reject lines: `warn`, `info`, `reject_warning`,
    /// `hold`, `discard`, `redirect`, `bcc`.
    pub fn note(&mut self, what: &str, text: &str) {
        let (stage, sender, rcpt) = match &self.phase {
            Phase::Await(p) => match p {
                Pending::Connect => (Stage::Connect, None, None),
                Pending::Helo { .. } => (Stage::Helo, None, None),
                Pending::Mail { sender, .. } => (Stage::Mail, Some(sender.address()), None),
                Pending::Rcpt { rcpt, .. } => (Stage::Rcpt, None, Some(rcpt.address())),
                Pending::Vrfy(m) => (Stage::Vrfy, None, Some(m.address())),
                Pending::Data => (Stage::Data, None, None),
                Pending::EndOfData { .. } => (Stage::EndOfData, None, None),
                Pending::AuthCommand(_) => (Stage::Auth, None, None),
                Pending::StartTls => (Stage::StartTls, None, None),
                _ => return,
            },
            _ => return,
        };
        self.whatsup_log(stage, what, text, sender.as_deref(), rcpt.as_deref());
    }

    fn whatsup_log(
        &mut self,
        stage: Stage,
        what: &str,
        text: &str,
        sender: Option<&str>,
        rcpt: Option<&str>,
    ) {
        let id = match &self.txn {
            Some(t) if t.announced => t.queue_id.clone(),
            _ => "NOQUEUE".into(),
        };
        let from = sender
            .map(str::to_string)
            .or_else(|| self.txn.as_ref().map(|t| t.sender.address()));
        let mut line = format!(
            "{id}: {what}: {} from {}: {text};",
            stage.log_name(),
            self.client,
        );
        if let Some(f) = from {
            line.push_str(&format!(" from=<{f}>"));
        }
        if let Some(t) = rcpt {
            line.push_str(&format!(" to=<{t}>"));
        }
        line.push_str(&format!(
            " proto={} helo=<{}>",
            self.log_proto(),
            self.helo.as_deref().unwrap_or("")
        ));
        self.log(line);
    }

    fn bare_lf(&mut self) {
        self.say(&Reply::new(550, "5.5.2", "Error: bare <LF> received"));
        self.log(format!(
            "warning: disconnect: bare <LF> received from {} after {}",
            self.client, self.last
        ));
        self.end(End::BareLf);
    }

    /// Input ended while in `phase`.
    fn lost(&mut self, phase: Phase, how: End) {
        match phase {
            Phase::Data { .. } => self.count("data", false),
            Phase::Chunk(_) => self.count("bdat", false),
            Phase::AuthLine(_) => self.count("auth", false),
            _ => {}
        }
        self.end(how);
    }

    fn end(&mut self, how: End) {
        // Nothing is asked of a peer once the session is over: a queued
        // commit or content for a client that is gone is dropped.
        self.actions.retain(|a| {
            matches!(
                a,
                Action::Reply(_) | Action::Log(_) | Action::Flush | Action::Pause(_)
            )
        });
        match how {
            End::Timeout => {
                self.say(&Reply::new(
                    421,
                    "4.4.2",
                    &format!("{} Error: timeout exceeded", self.cfg.myhostname),
                ));
                self.log(format!("timeout after {} from {}", self.last, self.client));
            }
            End::TooManyErrors => {
                self.say(&Reply::new(
                    421,
                    "4.7.0",
                    &format!("{} Error: too many errors", self.cfg.myhostname),
                ));
                self.log(format!(
                    "too many errors after {} from {}",
                    self.last, self.client
                ));
            }
            End::Closed | End::HungUp => self.log(format!(
                "lost connection after {} from {}",
                self.last, self.client
            )),
            End::BareLf | End::Quit => {}
        }
        self.abort_txn();
        let mut parts = Vec::new();
        let (mut ok, mut total) = (0, 0);
        for (verb, (o, t)) in ORDER.iter().zip(self.counts) {
            if t > 0 {
                parts.push(if o == t {
                    format!("{verb}={t}")
                } else {
                    format!("{verb}={o}/{t}")
                });
                ok += o;
                total += t;
            }
        }
        let commands = if ok == total {
            format!("commands={total}")
        } else {
            format!("commands={ok}/{total}")
        };
        let mid = if parts.is_empty() {
            String::new()
        } else {
            format!("{} ", parts.join(" "))
        };
        self.log(format!("disconnect from {} {mid}{commands}", self.client));
        self.actions.push_back(Action::Close);
        self.phase = Phase::Done;
    }
}
