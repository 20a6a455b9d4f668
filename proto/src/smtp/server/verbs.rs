//! The commands: each has a pure check (the replies that refuse it) and a
//! proceed (what the core asks of its peers, then the reply).
use super::*;
use crate::address::{AddressError, parse_path};
use crate::smtp::command::{Command, EsmtpParam, parse_command};
use crate::smtp::esmtp::{self, RcptParams, sasl_plain, sasl_response};

fn r(code: u16, enh: &str, text: &str) -> Reply {
    Reply::new(code, enh, text)
}

/// strict_rfc821_envelopes: the path after `FROM:` or `TO:` starts with
/// `<` (spaces after the colon are tolerated, as Postfix does).
fn bracketed(line: &[u8]) -> bool {
    line.iter()
        .position(|b| *b == b':')
        .map(|i| line[i + 1..].iter().find(|b| **b != b' ') == Some(&b'<'))
        .unwrap_or(false)
}

impl Server {
    /// After the connect (and on port 465, the handshake): the connect
    /// stage's checks, then the greeting.
    pub(super) fn connected(&mut self) {
        if self.cfg.checks.has(Stage::Connect) {
            self.ask(Pending::Connect, Action::Decide(Stage::Connect));
        } else {
            self.greet();
        }
    }

    fn greet(&mut self) {
        let banner = Reply::bare(220, &self.cfg.banner);
        self.say(&banner);
        self.next_command();
    }

    pub(super) fn tls_established(
        &mut self,
        summary: String,
        discarded: usize,
        peer: TlsPeer,
        wrapper: bool,
    ) {
        if discarded > 0 {
            self.log(format!(
                "warning: {}: discarding {discarded} bytes of input pipelined after STARTTLS",
                self.client
            ));
        }
        self.log(format!(
            "{} TLS connection established from {}: {summary}",
            peer.word(),
            self.client
        ));
        self.tls = Some(summary);
        if wrapper {
            self.connected();
        } else {
            // RFC 3207 4.2: forget everything learned before TLS.
            self.helo = None;
            self.esmtp = false;
            self.next_command();
        }
    }

    pub(super) fn command_line(&mut self, bytes: &[u8]) {
        let cmd = match parse_command(bytes) {
            Ok(c) => c,
            Err(reply) => {
                let verb = std::str::from_utf8(bytes)
                    .ok()
                    .and_then(|s| s.split(' ').next())
                    .map(str::to_ascii_lowercase)
                    .and_then(|v| ORDER.iter().find(|o| **o == v).copied())
                    .unwrap_or("unknown");
                self.done(verb, reply);
                return;
            }
        };
        let verb = cmd.verb();
        self.last = cmd.log_name();
        if self.cfg.strict_rfc821 && !self.denied && !bracketed(bytes) {
            match cmd {
                Command::Mail { .. } => {
                    return self.done(verb, r(501, "5.1.7", "Bad sender address syntax"));
                }
                Command::Rcpt { .. } => {
                    return self.done(verb, r(501, "5.1.3", "Bad recipient address syntax"));
                }
                _ => {}
            }
        }
        if matches!(
            cmd,
            Command::Noop | Command::Rset | Command::Vrfy(_) | Command::Etrn
        ) {
            self.junk += 1;
            if self.junk > self.cfg.junk_limit {
                self.errors += 1;
            }
        }
        if self.denied && !matches!(cmd, Command::Quit) {
            let text = format!("Error: access denied for {}", self.client);
            return self.done(verb, r(503, "5.7.0", &text));
        }
        let needs_tls = self.cfg.tls == TlsPolicy::Encrypt && self.tls.is_none();
        match cmd {
            Command::Helo(d) => self.helo_cmd(d, false),
            Command::Ehlo(d) => self.helo_cmd(d, true),
            Command::Starttls => self.starttls(),
            Command::Mail { .. }
            | Command::Rcpt { .. }
            | Command::Data
            | Command::Vrfy(_)
            | Command::Etrn
                if needs_tls =>
            {
                self.done(verb, r(530, "5.7.0", "Must issue a STARTTLS command first"))
            }
            Command::Mail { path, params } => self.mail(&path, &params),
            Command::Rcpt { path, params } => self.rcpt(&path, &params),
            Command::Data => self.data(),
            Command::Bdat { .. } if !self.cfg.chunking => {
                self.done(verb, r(502, "5.5.1", "Error: command not implemented"))
            }
            Command::Bdat { size, last } => self.bdat(size, last, needs_tls),
            Command::Rset => {
                self.abort_txn();
                self.done(verb, r(250, "2.0.0", "Ok"));
            }
            Command::Noop => self.done(verb, r(250, "2.0.0", "Ok")),
            Command::Quit => {
                self.count("quit", true);
                self.reply(r(221, "2.0.0", "Bye"));
                self.actions.push_back(Action::Flush);
                self.end(End::Quit);
            }
            Command::Vrfy(arg) => self.vrfy(&arg),
            Command::Help => self.done(
                verb,
                r(
                    214,
                    "2.0.0",
                    "Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP",
                ),
            ),
            Command::Auth(arg) => self.auth(&arg),
            Command::Etrn => self.done(verb, r(502, "5.5.1", "Error: command not implemented")),
            Command::Unknown(_) => {
                self.done(verb, r(502, "5.5.2", "Error: command not recognized"))
            }
        }
    }

    fn helo_cmd(&mut self, name: String, esmtp: bool) {
        // A new HELO/EHLO is an implicit RSET (RFC 5321 4.1.4).
        self.abort_txn();
        if self.cfg.checks.has(Stage::Helo) {
            self.ask(Pending::Helo { name, esmtp }, Action::Decide(Stage::Helo));
        } else {
            self.helo_accepted(name, esmtp);
        }
    }

    fn helo_accepted(&mut self, name: String, esmtp: bool) {
        self.esmtp = esmtp;
        self.helo = Some(name);
        let verb = if esmtp { "ehlo" } else { "helo" };
        if !esmtp {
            let reply = Reply::bare(250, &self.cfg.myhostname);
            return self.done(verb, reply);
        }
        let mut lines = vec![
            self.cfg.myhostname.clone(),
            "PIPELINING".into(),
            format!("SIZE {}", self.cfg.message_size_limit),
        ];
        if !self.cfg.disable_vrfy {
            lines.push("VRFY".into());
        }
        if self.tls.is_none() && self.cfg.tls != TlsPolicy::None && self.tls_available {
            lines.push("STARTTLS".into());
        }
        if self.auth_offered() {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        lines.extend(["ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "SMTPUTF8"].map(String::from));
        if self.cfg.chunking {
            lines.push("CHUNKING".into());
        }
        // RFC 8689: only inside TLS.
        if self.cfg.requiretls && self.tls.is_some() {
            lines.push("REQUIRETLS".into());
        }
        self.done(verb, Reply::multi(250, lines));
    }

    /// STARTTLS (RFC 3207). Whatever the client pipelined after it is
    /// discarded by the shell, and the SMTP state starts over afterwards.
    fn starttls(&mut self) {
        let refuse = if self.tls.is_some() {
            Some(r(554, "5.5.1", "Error: TLS already active"))
        } else if self.cfg.tls == TlsPolicy::None || !self.esmtp {
            // Never announced (no TLS here, or a HELO session): unknown.
            Some(r(502, "5.5.1", "Error: command not implemented"))
        } else if self.txn.is_some() {
            Some(r(503, "5.5.1", "Error: MAIL transaction in progress"))
        } else if !self.tls_available {
            Some(r(454, "4.7.0", "TLS not available due to local problem"))
        } else {
            None
        };
        if let Some(reply) = refuse {
            return self.done("starttls", reply);
        }
        if self.cfg.checks.has(Stage::StartTls) {
            return self.ask(Pending::StartTls, Action::Decide(Stage::StartTls));
        }
        self.start_tls_now();
    }

    fn start_tls_now(&mut self) {
        self.count("starttls", true);
        self.say(&r(220, "2.0.0", "Ready to start TLS"));
        self.phase = Phase::Tls { wrapper: false };
        self.actions.push_back(Action::StartTls);
    }

    /// AUTH is offered (and accepted) only where it was announced: with
    /// SASL on for this service, in an EHLO session, under TLS unless
    /// `smtpd_tls_auth_only = no`, and where the SASL security options
    /// of the session (with or without TLS) leave a mechanism.
    fn auth_offered(&self) -> bool {
        self.cfg.sasl_enable
            && self.esmtp
            && if self.tls.is_some() {
                self.cfg.auth_with_tls
            } else {
                !self.cfg.tls_auth_only && self.cfg.auth_without_tls
            }
    }

    /// AUTH PLAIN and AUTH LOGIN (RFC 4954).
    fn auth(&mut self, arg: &str) {
        let refuse = if !self.auth_offered() {
            Some(r(503, "5.5.1", "Error: authentication not enabled"))
        } else if self.sasl.is_some() {
            Some(r(503, "5.5.1", "Error: already authenticated"))
        } else if self.txn.is_some() {
            Some(r(503, "5.5.1", "Error: MAIL transaction in progress"))
        } else {
            None
        };
        if let Some(reply) = refuse {
            return self.done("auth", reply);
        }
        if self.cfg.checks.has(Stage::Auth) {
            return self.ask(
                Pending::AuthCommand(arg.to_string()),
                Action::Decide(Stage::Auth),
            );
        }
        self.auth_start(arg);
    }

    /// The SASL exchange of an accepted AUTH command.
    fn auth_start(&mut self, arg: &str) {
        let (mech, initial) = match arg.trim().split_once(' ') {
            Some((m, i)) => (m.to_ascii_uppercase(), Some(i.trim().as_bytes())),
            None => (arg.trim().to_ascii_uppercase(), None),
        };
        match (mech.as_str(), initial) {
            ("PLAIN", Some(i)) => self.auth_line(AuthStep::Plain, i),
            ("PLAIN", None) => self.challenge("", AuthStep::Plain),
            ("LOGIN", Some(i)) => self.auth_line(AuthStep::LoginUser, i),
            ("LOGIN", None) => self.challenge("VXNlcm5hbWU6", AuthStep::LoginUser),
            ("", _) => self.auth_done(r(501, "5.5.4", "Syntax: AUTH mechanism")),
            _ => self.auth_done(r(504, "5.5.4", "Unsupported authentication mechanism")),
        }
    }

    fn challenge(&mut self, text: &str, step: AuthStep) {
        self.actions
            .push_back(Action::Reply(format!("334 {text}\r\n")));
        self.actions.push_back(Action::Flush);
        self.phase = Phase::AuthLine(step);
    }

    /// One response of the SASL exchange (or the initial response).
    pub(super) fn auth_line(&mut self, step: AuthStep, line: &[u8]) {
        let resp = match sasl_response(line) {
            Ok(r) => r,
            Err(reply) => return self.auth_done(reply),
        };
        match step {
            AuthStep::Plain => match sasl_plain(&resp) {
                Ok((user, password)) => self.authenticate(user, password, "PLAIN"),
                Err(reply) => self.auth_done(reply),
            },
            AuthStep::LoginUser => {
                let user = String::from_utf8_lossy(&resp).into_owned();
                self.challenge("UGFzc3dvcmQ6", AuthStep::LoginPass { user });
            }
            AuthStep::LoginPass { user } => self.authenticate(user, resp, "LOGIN"),
        }
    }

    fn authenticate(&mut self, user: String, password: Vec<u8>, method: &'static str) {
        self.ask(
            Pending::Auth {
                user: user.clone(),
                method,
            },
            Action::Authenticate {
                user,
                password,
                method,
            },
        );
    }

    pub(super) fn auth_done(&mut self, reply: Reply) {
        self.done("auth", reply);
    }

    fn auth_answer(&mut self, user: String, method: &'static str, a: Answer) {
        let reply = match a {
            Answer::Auth(AuthOutcome::Ok(login)) => {
                self.sasl = Some((login, method));
                r(235, "2.7.0", "Authentication successful")
            }
            Answer::Auth(AuthOutcome::Failed) => {
                self.log(format!(
                    "warning: {}: SASL {method} authentication failed: authentication failure, sasl_username={}",
                    self.client,
                    user.escape_debug()
                ));
                r(
                    535,
                    "5.7.8",
                    "Error: authentication failed: authentication failure",
                )
            }
            Answer::Auth(AuthOutcome::Locked(secs)) => {
                self.log(format!(
                    "warning: {}: SASL {method} authentication refused: too many failures, sasl_username={}",
                    self.client,
                    user.escape_debug()
                ));
                r(
                    454,
                    "4.7.0",
                    &format!(
                        "Error: too many failed authentication attempts; try again in {secs}s"
                    ),
                )
            }
            other => {
                let why = match other {
                    Answer::Auth(AuthOutcome::Tempfail(e)) => e,
                    _ => "no answer from the authentication service".into(),
                };
                self.log(format!("warning: SASL authentication: {why}"));
                r(454, "4.7.0", "Temporary authentication failure")
            }
        };
        self.auth_done(reply);
    }

    fn mail(&mut self, path: &str, params: &[EsmtpParam]) {
        if self.txn.is_some() {
            return self.done("mail", r(503, "5.5.1", "Error: nested MAIL command"));
        }
        if self.cfg.helo_required && self.helo.is_none() {
            return self.done("mail", r(503, "5.5.1", "Error: send HELO/EHLO first"));
        }
        let requiretls = self.cfg.requiretls && self.tls.is_some();
        let params =
            match esmtp::mail_params(params, self.esmtp, self.cfg.message_size_limit, requiretls) {
                Ok(p) => p,
                Err(reply) => return self.done("mail", reply),
            };
        let sender = match parse_path(path, params.smtputf8) {
            Ok(m) => m,
            Err(AddressError::NeedsUtf8) => {
                return self.done(
                    "mail",
                    r(
                        553,
                        "5.6.7",
                        "Must declare SMTPUTF8 to send unicode address",
                    ),
                );
            }
            Err(_) => return self.done("mail", r(501, "5.1.7", "Bad sender address syntax")),
        };
        if self.cfg.checks.has(Stage::Mail) {
            self.ask(
                Pending::Mail { sender, params },
                Action::Decide(Stage::Mail),
            );
        } else {
            self.begin(sender, params);
        }
    }

    fn begin(&mut self, sender: Mailbox, params: MailParams) {
        let env = Envelope {
            sender: sender.clone(),
            proto: self.proto(params.smtputf8),
            helo: self.helo.clone().unwrap_or_default(),
            tls: self.tls.clone().unwrap_or_default(),
            params: params.clone(),
        };
        self.ask(Pending::Begin { sender, params }, Action::Begin(env));
    }

    fn begin_answer(&mut self, sender: Mailbox, params: MailParams, a: Answer) {
        match a {
            Answer::Begun { queue_id } => {
                self.txn = Some(Txn {
                    queue_id,
                    sender,
                    smtputf8: params.smtputf8,
                    rcpts: Vec::new(),
                    announced: false,
                    bdat: None,
                    lost: false,
                    discard: None,
                    size: params.size.unwrap_or(0),
                });
                self.done("mail", r(250, "2.1.0", "Ok"));
            }
            other => {
                let reply = match other {
                    Answer::Failed(reply) => reply,
                    _ => r(451, "4.3.0", "Error: queue file write error"),
                };
                // The sender is logged too, so a full queue does not hide
                // whose mail was turned away (WISHLIST L1103).
                let line = format!(
                    "NOQUEUE: reject: MAIL from {}: {}; from=<{}> proto={} helo=<{}>",
                    self.client,
                    reply.summary(),
                    sender.address(),
                    self.log_proto(),
                    self.helo.as_deref().unwrap_or("")
                );
                self.log(line);
                self.done("mail", reply);
            }
        }
    }

    fn rcpt(&mut self, path: &str, params: &[EsmtpParam]) {
        let Some(txn) = &self.txn else {
            return self.done("rcpt", r(503, "5.5.1", "Error: need MAIL command"));
        };
        if txn.bdat.is_some() {
            return self.done("rcpt", r(503, "5.5.1", "Error: RCPT after BDAT"));
        }
        if txn.rcpts.len() >= self.cfg.recipient_limit {
            return self.done("rcpt", r(452, "4.5.3", "Error: too many recipients"));
        }
        let smtputf8 = txn.smtputf8;
        let params = match esmtp::rcpt_params(params, self.esmtp) {
            Ok(p) => p,
            Err(reply) => return self.done("rcpt", reply),
        };
        let rcpt = match parse_path(path, smtputf8) {
            Ok(m) if !m.is_null() => m,
            Err(AddressError::NeedsUtf8) => {
                return self.done(
                    "rcpt",
                    r(
                        553,
                        "5.6.7",
                        "Must declare SMTPUTF8 to send unicode address",
                    ),
                );
            }
            _ => return self.done("rcpt", r(501, "5.1.3", "Bad recipient address syntax")),
        };
        if self.cfg.checks.has(Stage::Rcpt) {
            self.ask(Pending::Rcpt { rcpt, params }, Action::Decide(Stage::Rcpt));
        } else {
            self.rcpt_accepted(rcpt, params);
        }
    }

    fn rcpt_accepted(&mut self, rcpt: Mailbox, params: RcptParams) {
        let Some(txn) = self.txn.as_mut() else {
            return self.done("rcpt", r(503, "5.5.1", "Error: need MAIL command"));
        };
        let announce = !txn.announced;
        txn.announced = true;
        txn.rcpts.push(Recipient {
            address: rcpt.address(),
            orcpt: params.orcpt,
            notify: params.notify,
        });
        if announce {
            let id = txn.queue_id.clone();
            let sasl = match &self.sasl {
                Some((user, method)) => format!(", sasl_method={method}, sasl_username={user}"),
                None => String::new(),
            };
            self.log(format!("{id}: client={}{sasl}", self.client));
        }
        self.done("rcpt", r(250, "2.1.5", "Ok"));
    }

    fn vrfy(&mut self, arg: &str) {
        if self.cfg.disable_vrfy {
            return self.done(
                "vrfy",
                r(
                    252,
                    "2.0.0",
                    "Cannot VRFY user; try RCPT to attempt delivery",
                ),
            );
        }
        let arg = arg.trim_start_matches('<').trim_end_matches('>');
        let Ok(m) = parse_path(arg, true) else {
            return self.done("vrfy", r(501, "5.1.3", "Bad recipient address syntax"));
        };
        if self.cfg.checks.has(Stage::Vrfy) {
            self.ask(Pending::Vrfy(m), Action::Decide(Stage::Vrfy));
        } else {
            self.done("vrfy", r(252, "2.0.0", &m.address()));
        }
    }

    /// A check's verdict, or a temporary failure when none came.
    fn verdict(a: Answer) -> Verdict {
        match a {
            Answer::Verdict(v) => v,
            _ => Verdict::reject(r(451, "4.3.0", "Error: temporary failure of a check")),
        }
    }

    /// Routes an answer to what was waiting for it.
    pub(super) fn answered(&mut self, p: Pending, a: Answer) {
        match p {
            Pending::Connect => match Self::verdict(a) {
                Verdict::Accept | Verdict::Discard(_) => self.greet(),
                // 421: go away now. Any other refusal replaces the
                // greeting, and then every command but QUIT gets 503
                // (Postfix's smtpd_delay_reject = no).
                Verdict::Reject { reply, log } => {
                    if log {
                        self.reject_log(Stage::Connect, &reply, None, None);
                    }
                    if reply.code == 421 {
                        self.say(&reply);
                        self.end(End::Quit);
                    } else {
                        let reply = self.soften(reply);
                        self.actions.push_back(Action::Reply(reply.render(true)));
                        self.denied = true;
                        self.next_command();
                    }
                }
            },
            Pending::Helo { name, esmtp } => match Self::verdict(a) {
                Verdict::Accept | Verdict::Discard(_) => self.helo_accepted(name, esmtp),
                Verdict::Reject { reply, log } => {
                    if log {
                        self.reject_log(Stage::Helo, &reply, None, None);
                    }
                    self.done(if esmtp { "ehlo" } else { "helo" }, reply);
                }
            },
            Pending::Mail { sender, params } => match Self::verdict(a) {
                Verdict::Accept => self.begin(sender, params),
                Verdict::Discard(text) => {
                    self.begin(sender, params);
                    self.pending_discard = Some(text);
                }
                Verdict::Reject { reply, log } => {
                    if log {
                        self.reject_log(Stage::Mail, &reply, Some(&sender.address()), None);
                    }
                    self.done("mail", reply);
                }
            },
            Pending::Begin { sender, params } => {
                self.begin_answer(sender, params, a);
                if let (Some(t), Some(d)) = (self.txn.as_mut(), self.pending_discard.take()) {
                    t.discard = Some(d);
                }
            }
            Pending::Rcpt { rcpt, params } => match Self::verdict(a) {
                Verdict::Accept => self.rcpt_accepted(rcpt, params),
                Verdict::Discard(text) => {
                    if let Some(t) = self.txn.as_mut() {
                        t.discard = Some(text);
                    }
                    self.rcpt_accepted(rcpt, params);
                }
                Verdict::Reject { reply, log } => {
                    if log {
                        self.reject_log(Stage::Rcpt, &reply, None, Some(&rcpt.address()));
                    }
                    self.done("rcpt", reply);
                }
            },
            Pending::Vrfy(m) => match Self::verdict(a) {
                Verdict::Accept | Verdict::Discard(_) => {
                    self.done("vrfy", r(252, "2.0.0", &m.address()))
                }
                Verdict::Reject { reply, .. } => self.done("vrfy", reply),
            },
            Pending::Data => self.data_verdict(Self::verdict(a)),
            Pending::Sink { bdat } => self.sink_answer(bdat, a),
            Pending::EndOfData { verb } => self.eod_verdict(verb, Self::verdict(a)),
            Pending::Commit { verb } => self.commit_answer(verb, a),
            Pending::Auth { user, method } => self.auth_answer(user, method, a),
            Pending::AuthCommand(arg) => match Self::verdict(a) {
                Verdict::Accept | Verdict::Discard(_) => self.auth_start(&arg),
                Verdict::Reject { reply, log } => {
                    if log {
                        self.reject_log(Stage::Auth, &reply, None, None);
                    }
                    self.done("auth", reply);
                }
            },
            Pending::StartTls => match Self::verdict(a) {
                Verdict::Accept | Verdict::Discard(_) => self.start_tls_now(),
                Verdict::Reject { reply, log } => {
                    if log {
                        self.reject_log(Stage::StartTls, &reply, None, None);
                    }
                    self.done("starttls", reply);
                }
            },
        }
    }
}
