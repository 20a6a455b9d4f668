//! A shell without I/O around [`Server`], for the unit tests and the
//! stateful fuzz target: it frames input the way smtpd does, answers every
//! asking action at once (or as told), plays the cleanup side, and checks
//! the session's invariants on every action:
//! - every reply is well-formed SMTP;
//! - nothing is replied, sent or committed after the session closed;
//! - a commit comes only inside a transaction the peer opened, after a
//!   non-empty recipient list, and after complete content (the end of
//!   DATA, or a BDAT LAST chunk read to its end);
//! - no content reaches cleanup outside an open transaction.
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::smtp::command::{Command, parse_command};
use crate::smtp::reply::ReplyParser;

/// A message as cleanup received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub queue_id: String,
    pub sender: String,
    pub rcpts: Vec<String>,
    pub content: Vec<u8>,
}

#[derive(Debug, Default)]
struct Sink {
    queue_id: String,
    sender: String,
    rcpts: Vec<String>,
    content: Vec<u8>,
}

/// How the simulated peers answer. `None` in a one-shot queue means the
/// peer never answers: the shell's deadline turns that into `TimedOut`.
#[derive(Debug, Default)]
pub struct Peers {
    /// Verdicts per stage (default: accept).
    pub verdicts: Vec<(Stage, Verdict)>,
    /// One-shot answers, taken before any default.
    pub next: VecDeque<Option<Answer>>,
    /// The password every account has.
    pub password: Vec<u8>,
    pub tls_fails: bool,
}

pub struct Sim {
    pub server: Server,
    pub peers: Peers,
    /// Each reply as sent.
    pub replies: Vec<String>,
    pub logs: Vec<String>,
    pub committed: Vec<Message>,
    pub aborted: usize,
    pub closed: bool,
    input: Vec<u8>,
    discarding: bool,
    sink: Option<Sink>,
    next_id: u32,
    last_line: Vec<u8>,
    /// The last content bytes read (for the end-of-DATA check).
    content_tail: Vec<u8>,
}

/// A configuration like Postern's defaults, with every stage checked.
pub fn config() -> Config {
    Config {
        myhostname: "mx.example".into(),
        banner: "mx.example ESMTP Postern".into(),
        hard_error_limit: 20,
        soft_error_limit: 10,
        error_sleep: Duration::ZERO,
        junk_limit: 100,
        recipient_limit: 1000,
        message_size_limit: 10_240_000,
        line_length_limit: 2048,
        disable_vrfy: false,
        helo_required: false,
        tls: TlsPolicy::May,
        wrapper: false,
        sasl_enable: true,
        tls_auth_only: true,
        auth_without_tls: true,
        auth_with_tls: true,
        chunking: true,
        requiretls: true,
        content_chunk: 64 * 1024,
        checks: Stage::ALL
            .iter()
            .fold(Stages::default(), |s, st| s.with(*st)),
        soft_bounce: false,
        strict_rfc821: false,
    }
}

impl Sim {
    pub fn new(cfg: Config) -> Sim {
        let peer = Peer {
            name: "client.example".into(),
            addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            port: 40000,
        };
        let server = Server::start(Arc::new(cfg), peer, true, true);
        let mut s = Sim {
            server,
            peers: Peers {
                password: b"pw".to_vec(),
                ..Peers::default()
            },
            replies: Vec::new(),
            logs: Vec::new(),
            committed: Vec::new(),
            aborted: 0,
            closed: false,
            input: Vec::new(),
            discarding: false,
            sink: None,
            next_id: 0,
            last_line: Vec::new(),
            content_tail: Vec::new(),
        };
        s.pump();
        s
    }

    /// Bytes from the client.
    pub fn send(&mut self, bytes: &[u8]) {
        self.input.extend_from_slice(bytes);
        self.pump();
    }

    /// A transport event (EOF, timeout, TLS close_notify).
    pub fn event(&mut self, e: Event) {
        self.server.event(e);
        self.pump();
    }

    /// The replies since the last call, joined.
    pub fn take_replies(&mut self) -> String {
        std::mem::take(&mut self.replies).concat()
    }

    /// The codes of the replies since the last call.
    pub fn codes(&mut self) -> Vec<u16> {
        std::mem::take(&mut self.replies)
            .iter()
            .map(|r| r[..3].parse().unwrap_or(0))
            .collect()
    }

    fn answer_for(&mut self, default: Answer) -> Option<Answer> {
        match self.peers.next.pop_front() {
            Some(Some(a)) => Some(a),
            Some(None) => Some(Answer::TimedOut),
            None => Some(default),
        }
    }

    fn exec(&mut self, a: Action) {
        let after_close = self.closed;
        match a {
            Action::Reply(text) => {
                assert!(!after_close, "reply after close: {text:?}");
                let mut p = ReplyParser::default();
                let lines: Vec<&str> = text.split_inclusive("\r\n").collect();
                assert!(text.ends_with("\r\n"), "reply without CRLF: {text:?}");
                for (i, l) in lines.iter().enumerate() {
                    let done = p.line(l.as_bytes()).expect("well-formed reply");
                    assert_eq!(done.is_some(), i + 1 == lines.len(), "{text:?}");
                }
                self.replies.push(text);
            }
            Action::Flush | Action::Pause(_) => {}
            Action::Log(l) => self.logs.push(l),
            Action::Decide(stage) => {
                let v = self
                    .peers
                    .verdicts
                    .iter()
                    .find(|(s, _)| *s == stage)
                    .map_or(Verdict::Accept, |(_, v)| v.clone());
                let f = self.server.facts();
                assert_eq!(f.stage, Some(stage), "facts name the stage asked");
                if let Some(a) = self.answer_for(Answer::Verdict(v)) {
                    self.server.answer(a);
                }
            }
            Action::Begin(env) => {
                assert!(!after_close);
                assert!(
                    self.sink.is_none(),
                    "a second transaction while one is open"
                );
                self.next_id += 1;
                let id = format!("Q{}", self.next_id);
                let a = self.answer_for(Answer::Begun {
                    queue_id: id.clone(),
                });
                if let Some(Answer::Begun { queue_id }) = &a {
                    self.sink = Some(Sink {
                        queue_id: queue_id.clone(),
                        sender: env.sender.address(),
                        ..Sink::default()
                    });
                }
                if let Some(a) = a {
                    self.server.answer(a);
                }
            }
            Action::Recipients(list) => {
                assert!(!after_close);
                let sink = self
                    .sink
                    .as_mut()
                    .expect("recipients outside a transaction");
                assert!(!list.is_empty(), "an empty recipient list");
                sink.rcpts = list.into_iter().map(|r| r.address).collect();
                if let Some(a) = self.answer_for(Answer::Sent) {
                    if a != Answer::Sent {
                        self.sink = None;
                    }
                    self.server.answer(a);
                }
            }
            Action::Content(c) => {
                assert!(!after_close, "content after close");
                let sink = self.sink.as_mut().expect("content outside a transaction");
                assert!(!sink.rcpts.is_empty(), "content before recipients");
                sink.content.extend_from_slice(&c);
            }
            Action::Commit => {
                assert!(!after_close, "commit after close");
                let sink = self.sink.take().expect("commit outside a transaction");
                assert!(!sink.rcpts.is_empty(), "commit without recipients");
                // The command that led here: a BDAT (whose chunk may have
                // been empty) must be the LAST one; otherwise DATA's content
                // must have ended at CRLF "." CRLF.
                if let Ok(Command::Bdat { last, .. }) = parse_command(&self.last_line) {
                    assert!(last, "BDAT commit without a LAST chunk");
                } else {
                    assert!(
                        self.content_tail.ends_with(b"\r\n.\r\n") || self.content_tail == b".\r\n",
                        "DATA commit without the end of data: {:?}",
                        self.content_tail
                    );
                }
                let a = self.answer_for(Answer::Committed);
                if a == Some(Answer::Committed) {
                    self.committed.push(Message {
                        queue_id: sink.queue_id,
                        sender: sink.sender,
                        rcpts: sink.rcpts,
                        content: sink.content,
                    });
                } else {
                    self.aborted += 1;
                }
                if let Some(a) = a {
                    self.server.answer(a);
                }
            }
            Action::Abort => {
                if self.sink.take().is_some() {
                    self.aborted += 1;
                }
            }
            Action::Authenticate { user, password, .. } => {
                let ok = if password == self.peers.password {
                    AuthOutcome::Ok(user)
                } else {
                    AuthOutcome::Failed
                };
                if let Some(a) = self.answer_for(Answer::Auth(ok)) {
                    self.server.answer(a);
                }
            }
            Action::StartTls => {
                // The shell throws away whatever was pipelined after STARTTLS.
                let discarded = self.input.len();
                self.input.clear();
                if self.peers.tls_fails {
                    self.server
                        .event(Event::TlsFailed("handshake failure".into()));
                } else {
                    self.server.event(Event::TlsEstablished {
                        summary: "TLSv1.3 with cipher TLS_AES_128_GCM_SHA256".into(),
                        discarded,
                        peer: TlsPeer::Anonymous,
                    });
                }
            }
            Action::Close => {
                self.closed = true;
                self.sink = None;
            }
        }
    }

    fn drain(&mut self) {
        while let Some(a) = self.server.poll() {
            self.exec(a);
        }
    }

    fn pump(&mut self) {
        loop {
            self.drain();
            match self.server.wants() {
                Want::Line { limit, bare_lf_ok } => {
                    self.content_tail.clear();
                    let Some(pos) = self.input.iter().position(|&b| b == b'\n') else {
                        if self.input.len() > limit {
                            self.discarding = true;
                            self.input.clear();
                        }
                        return;
                    };
                    let line: Vec<u8> = self.input.drain(..=pos).collect();
                    let line = &line[..line.len() - 1];
                    let (body, bare) = match line.strip_suffix(b"\r") {
                        Some(b) => (b, false),
                        None => (line, true),
                    };
                    if std::mem::take(&mut self.discarding) || body.len() > limit {
                        self.server.event(Event::LineTooLong);
                    } else if bare && !bare_lf_ok {
                        self.server.event(Event::LineBareLf);
                    } else {
                        self.last_line = body.to_vec();
                        self.server.line(body);
                    }
                }
                Want::Data => {
                    if self.input.is_empty() {
                        return;
                    }
                    let n = self.server.content(&self.input);
                    self.tail(n);
                }
                Want::Chunk { remaining } => {
                    if self.input.is_empty() {
                        return;
                    }
                    let take = self.input.len().min(remaining as usize);
                    let n = self.server.content(&self.input[..take]);
                    assert!(n <= take);
                    self.tail(n);
                }
                Want::Answer | Want::Tls | Want::Done => return,
            }
        }
    }

    fn tail(&mut self, n: usize) {
        self.content_tail.extend(self.input.drain(..n));
        let keep = self.content_tail.len().saturating_sub(5);
        self.content_tail.drain(..keep);
    }
}
