//! The public vocabulary of the session core: what goes in, what comes
//! out, and what a check can see.
use std::net::IpAddr;
use std::time::Duration;

use crate::address::Mailbox;
use crate::smtp::esmtp::MailParams;
use crate::smtp::reply::Reply;

/// `smtpd_tls_security_level` as the session sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsPolicy {
    None,
    May,
    Encrypt,
}

/// The SMTP stages, each with one decision point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Connect,
    Helo,
    Mail,
    Rcpt,
    Data,
    EndOfData,
    Vrfy,
    /// The AUTH command, before the SASL exchange starts.
    Auth,
    /// The STARTTLS command, before the handshake.
    StartTls,
}

impl Stage {
    pub const ALL: [Stage; 9] = [
        Stage::Connect,
        Stage::Helo,
        Stage::Mail,
        Stage::Rcpt,
        Stage::Data,
        Stage::EndOfData,
        Stage::Vrfy,
        Stage::Auth,
        Stage::StartTls,
    ];

    /// The name in Postfix's reject log lines (`reject: RCPT from ...`).
    pub fn log_name(self) -> &'static str {
        match self {
            Stage::Connect => "CONNECT",
            Stage::Helo => "HELO",
            Stage::Mail => "MAIL",
            Stage::Rcpt => "RCPT",
            Stage::Data => "DATA",
            Stage::EndOfData => "END-OF-MESSAGE",
            Stage::Vrfy => "VRFY",
            Stage::Auth => "AUTH",
            Stage::StartTls => "STARTTLS",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of stages: where the shell has checks to ask.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stages(u16);

impl Stages {
    pub fn with(self, s: Stage) -> Stages {
        Stages(self.0 | s.bit())
    }
    pub fn has(self, s: Stage) -> bool {
        self.0 & s.bit() != 0
    }
}

/// What a chain of checks decided at one stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go on (no check objected).
    Accept,
    /// Refuse the command with this reply. `log`: write Postfix's
    /// `reject: STAGE from ...` line (a check that logged its own warning,
    /// as the rate limits do, says false).
    Reject { reply: Reply, log: bool },
    /// Accept the command, then throw the whole message away (Postfix's
    /// DISCARD): the client is told it was queued.
    Discard(String),
}

impl Verdict {
    pub fn reject(reply: Reply) -> Verdict {
        Verdict::Reject { reply, log: true }
    }
}

/// The outcome of a credential check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// The login name.
    Ok(String),
    Failed,
    /// Too many failures: locked for this many seconds.
    Locked(u64),
    Tempfail(String),
}

/// A peer's answer to the last asking action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// To [`Action::Decide`].
    Verdict(Verdict),
    /// To [`Action::Begin`]: the transaction is open.
    Begun { queue_id: String },
    /// To [`Action::Recipients`]: cleanup has them.
    Sent,
    /// To [`Action::Commit`]: the message is safe on disk.
    Committed,
    /// To [`Action::Commit`], from a peer that words its own outcome (the
    /// `sendmail -bs` hand-over): a 2xx reply means committed.
    CommitReply(Reply),
    /// To [`Action::Authenticate`].
    Auth(AuthOutcome),
    /// To [`Action::Begin`], [`Action::Recipients`] or [`Action::Commit`]:
    /// refused, with the reply for the client.
    Failed(Reply),
    /// The peer did not answer in time (any asking action).
    TimedOut,
    /// To [`Action::Commit`]: the client hung up before the commit, so
    /// nothing was committed (it will send again and must not get a copy
    /// it never saw acknowledged).
    PeerGone,
}

/// A TLS client as Postfix logs it: no certificate, one that does not
/// chain to a trusted CA, or one that does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsPeer {
    Anonymous,
    Untrusted,
    Trusted,
}

impl TlsPeer {
    pub fn word(self) -> &'static str {
        match self {
            TlsPeer::Anonymous => "Anonymous",
            TlsPeer::Untrusted => "Untrusted",
            TlsPeer::Trusted => "Trusted",
        }
    }
}

/// Something that happened on the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A command or SASL line exceeded the limit (read and dropped).
    LineTooLong,
    /// A line ended in a bare LF where bare LFs are refused.
    LineBareLf,
    TlsEstablished {
        summary: String,
        discarded: usize,
        /// What the client's certificate showed (Postfix's log word).
        peer: TlsPeer,
    },
    TlsFailed(String),
    /// A limit outside the command flow ends the session (Postfix's new
    /// TLS session rate after a handshake): this reply, then close.
    /// Heeded between commands only.
    Refuse(Reply),
    /// The channel to cleanup broke while content was streaming.
    SinkLost,
    /// End of input: EOF, an I/O error, or a TLS close_notify. Nothing
    /// after it is read.
    Closed,
    Timeout,
}

/// What the shell should read next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Line {
        limit: usize,
        bare_lf_ok: bool,
    },
    /// DATA content: feed bytes to [`Server::content`].
    Data,
    /// BDAT chunk bytes: feed at most `remaining` to [`Server::content`].
    Chunk {
        remaining: u64,
    },
    /// An answer to the last asking action.
    Answer,
    /// The result of a TLS handshake.
    Tls,
    /// The session is over.
    Done,
}

/// The envelope of a transaction being opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub sender: Mailbox,
    pub params: MailParams,
    /// Postfix's protocol name: SMTP, ESMTP, UTF8SMTP, plus S and A.
    pub proto: String,
    pub helo: String,
    /// The TLS summary; empty without TLS.
    pub tls: String,
}

/// An accepted recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub address: String,
    pub orcpt: String,
    pub notify: u8,
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Queue this reply text (one or more CRLF-terminated lines).
    Reply(String),
    /// Send queued replies now.
    Flush,
    /// Send queued replies, then wait this long (smtpd_error_sleep_time).
    Pause(Duration),
    Log(String),
    /// Ask the checks of this stage; see [`Server::facts`].
    Decide(Stage),
    /// Open a transaction with cleanup.
    Begin(Envelope),
    /// Send the accepted recipients to cleanup.
    Recipients(Vec<Recipient>),
    /// Content for cleanup, at most [`Config::content_chunk`] bytes.
    Content(Vec<u8>),
    /// Commit the message (after the hang-up check).
    Commit,
    /// Drop the open transaction at cleanup.
    Abort,
    Authenticate {
        user: String,
        password: Vec<u8>,
        method: &'static str,
    },
    /// Flush, discard unread input, and run the TLS handshake.
    StartTls,
    /// Flush and close the connection.
    Close,
}

/// A listener's settings, as far as the session needs them.
#[derive(Debug, Clone)]
pub struct Config {
    pub myhostname: String,
    pub banner: String,
    pub hard_error_limit: u32,
    pub soft_error_limit: u32,
    pub error_sleep: Duration,
    pub junk_limit: u32,
    pub recipient_limit: usize,
    pub message_size_limit: u64,
    pub line_length_limit: usize,
    pub disable_vrfy: bool,
    pub helo_required: bool,
    pub tls: TlsPolicy,
    /// Port 465: TLS from the first byte.
    pub wrapper: bool,
    pub sasl_enable: bool,
    pub tls_auth_only: bool,
    /// PLAIN and LOGIN allowed without TLS (`smtpd_sasl_security_options`)
    /// and under TLS (`smtpd_sasl_tls_security_options`).
    pub auth_without_tls: bool,
    pub auth_with_tls: bool,
    /// Offer CHUNKING (BDAT); without it BDAT is an unimplemented command.
    pub chunking: bool,
    /// `requiretls_enable`: offer REQUIRETLS (RFC 8689) inside TLS.
    pub requiretls: bool,
    /// Largest [`Action::Content`].
    pub content_chunk: usize,
    /// Stages the shell has checks for.
    pub checks: Stages,
    /// `soft_bounce`: every 5xx reply goes out as 4xx (and its 5.x.x
    /// enhanced code as 4.x.x), as Postfix's safety net does.
    pub soft_bounce: bool,
    /// `strict_rfc821_envelopes`: MAIL FROM and RCPT TO addresses must be
    /// enclosed in `<>`.
    pub strict_rfc821: bool,
}

/// The client, for log lines and checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    pub addr: IpAddr,
    pub port: u16,
}

/// What a check can see of the session.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub stage: Option<Stage>,
    pub peer: &'a Peer,
    /// `name[addr]`.
    pub client: &'a str,
    pub helo: Option<&'a str>,
    /// The client said EHLO (at the HELO stage: the command decided on).
    pub esmtp: bool,
    pub tls: Option<&'a str>,
    pub login: Option<&'a str>,
    /// The SASL mechanism of the login.
    pub sasl_method: Option<&'a str>,
    /// The size MAIL declared (0 when none), or the content's once it is
    /// all in (end of data).
    pub size: u64,
    pub queue_id: Option<&'a str>,
    /// The sender being decided on (MAIL), or the transaction's.
    pub sender: Option<&'a Mailbox>,
    /// The recipient being decided on (RCPT, VRFY).
    pub recipient: Option<&'a Mailbox>,
    pub recipient_count: usize,
    /// The transaction's recipient when it has exactly one.
    pub sole_recipient: Option<&'a str>,
}
