//! One SMTP session: RFC 5321 with PIPELINING, SIZE, 8BITMIME, SMTPUTF8,
//! ENHANCEDSTATUSCODES, CHUNKING and DSN. Replies and log lines follow
//! Postfix's shapes.
use std::net::IpAddr;
use std::rc::Rc;
use std::time::Duration;

use postern_config::Params;
use postern_ipc::smtpd_cleanup::{self as sc, Begin, Client, Recipient};
use postern_proto::address::{AddressError, Mailbox, parse_path};
use postern_proto::queue::notify;
use postern_proto::smtp::{
    BareLf, Command, DataDecoder, EsmtpParam, LineNormalizer, Progress, Reply, parse_command,
};

use super::Shared;
use super::access::{Access, Ctx, Verdict};
use super::conn::{Conn, ConnError, Line};
use super::pool::CleanupEp;
use crate::log;

/// A listener's settings (main.cf with the service's -o overrides).
pub struct Settings {
    pub log_name: String,
    pub myhostname: String,
    pub banner: String,
    pub timeout: Duration,
    pub per_request_deadline: bool,
    pub min_data_rate: u64,
    pub hard_error_limit: u32,
    pub soft_error_limit: u32,
    pub error_sleep: Duration,
    pub junk_limit: u32,
    pub recipient_limit: usize,
    pub message_size_limit: u64,
    pub line_length_limit: usize,
    pub bare_lf_reject: bool,
    pub disable_vrfy: bool,
    pub helo_required: bool,
    pub pipelining_limit: usize,
    pub unknown_local_code: u16,
    pub check_local: bool,
    pub recipient_delimiter: String,
    pub access: Access,
    pub tls_level: TlsLevel,
    /// Port 465: TLS from the first byte.
    pub wrapper: bool,
    pub starttls_timeout: Duration,
    pub sasl_enable: bool,
    pub tls_auth_only: bool,
    /// Messages per `anvil_rate_time_unit` per SASL account (0: no limit).
    pub account_rate: usize,
    pub rate_unit: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsLevel {
    None,
    May,
    Encrypt,
}

impl Settings {
    pub fn new(p: &Params) -> Result<Settings, String> {
        let e = |x: postern_config::ParamError| x.to_string();
        Ok(Settings {
            log_name: p.str("syslog_name").into(),
            myhostname: p.str("myhostname").into(),
            banner: p.str("smtpd_banner").into(),
            timeout: p.duration("smtpd_timeout").map_err(e)?,
            per_request_deadline: p.bool("smtpd_per_request_deadline").map_err(e)?,
            min_data_rate: p.int("smtpd_min_data_rate").map_err(e)? as u64,
            hard_error_limit: p.int("smtpd_hard_error_limit").map_err(e)? as u32,
            soft_error_limit: p.int("smtpd_soft_error_limit").map_err(e)? as u32,
            error_sleep: p.duration("smtpd_error_sleep_time").map_err(e)?,
            junk_limit: p.int("smtpd_junk_command_limit").map_err(e)? as u32,
            recipient_limit: p.int("smtpd_recipient_limit").map_err(e)? as usize,
            message_size_limit: p.size("message_size_limit").map_err(e)?,
            line_length_limit: p.int("line_length_limit").map_err(e)? as usize,
            bare_lf_reject: p.str("smtpd_forbid_bare_newline") == "reject",
            disable_vrfy: p.bool("disable_vrfy_command").map_err(e)?,
            helo_required: p.bool("smtpd_helo_required").map_err(e)?,
            pipelining_limit: p.int("smtpd_pipelining_limit").map_err(e)? as usize,
            unknown_local_code: p.int("unknown_local_recipient_reject_code").map_err(e)? as u16,
            check_local: !p.list("local_recipient_maps").map_err(e)?.is_empty(),
            recipient_delimiter: p.str("recipient_delimiter").into(),
            access: Access::new(p)?,
            tls_level: match p.str("smtpd_tls_security_level") {
                "none" => TlsLevel::None,
                "encrypt" => TlsLevel::Encrypt,
                _ => TlsLevel::May,
            },
            wrapper: p.bool("smtpd_tls_wrappermode").map_err(e)?,
            starttls_timeout: p.duration("smtpd_starttls_timeout").map_err(e)?,
            sasl_enable: p.bool("smtpd_sasl_auth_enable").map_err(e)?,
            tls_auth_only: p.bool("smtpd_tls_auth_only").map_err(e)?,
            account_rate: p.int("smtpd_account_message_rate_limit").map_err(e)? as usize,
            rate_unit: p.duration("anvil_rate_time_unit").map_err(e)?,
        })
    }
}

struct Txn {
    queue_id: String,
    sender: Mailbox,
    smtputf8: bool,
    body_8bit: bool,
    ret: u8,
    envid: String,
    rcpts: Vec<Recipient>,
    /// `ID: client=...` was logged (at the first accepted recipient).
    announced: bool,
    ep: CleanupEp,
    /// BDAT chunks so far (None: no BDAT in this transaction).
    bdat: Option<Bdat>,
}

struct Bdat {
    norm: LineNormalizer,
    size: u64,
    too_big: bool,
}

/// How a session ends.
enum End {
    Quit,
    Closed,
    Timeout,
    TooManyErrors,
    BareLf,
    HungUp,
}

pub struct Session {
    sh: Rc<Shared>,
    set: Rc<Settings>,
    conn: Conn,
    ip: IpAddr,
    port: u16,
    name: String,
    helo: Option<String>,
    esmtp: bool,
    txn: Option<Txn>,
    errors: u32,
    junk: u32,
    counts: Vec<(&'static str, u32, u32)>,
    last: &'static str,
    /// The TLS session, once there is one.
    tls: Option<String>,
    /// The SASL login and mechanism, once the client authenticated.
    sasl: Option<(String, &'static str)>,
}

const ORDER: [&str; 14] = [
    "helo", "ehlo", "starttls", "auth", "mail", "rcpt", "data", "bdat", "rset", "noop", "vrfy",
    "etrn", "quit", "unknown",
];

/// A client's SASL line: base64, `=` for empty, `*` to cancel.
fn decode_sasl(line: &[u8]) -> Result<Vec<u8>, Reply> {
    use base64::Engine;
    match line {
        b"*" => Err(Reply::new(501, "5.7.0", "Authentication aborted")),
        b"=" => Ok(Vec::new()),
        l => base64::engine::general_purpose::STANDARD
            .decode(l)
            .map_err(|_| Reply::new(501, "5.5.2", "Cannot decode response")),
    }
}

/// Decodes RFC 3461 xtext; None when malformed.
fn xtext(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                let h = s.get(i + 1..i + 3)?;
                if !h
                    .bytes()
                    .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c))
                {
                    return None;
                }
                out.push(u8::from_str_radix(h, 16).ok()?);
                i += 3;
            }
            c @ 33..=126 if c != b'=' => {
                out.push(c);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

impl Session {
    pub fn new(sh: Rc<Shared>, set: Rc<Settings>, conn: Conn, ip: IpAddr, port: u16) -> Session {
        Session {
            sh,
            set,
            conn,
            ip: super::access::normalize(ip),
            port,
            name: "unknown".into(),
            helo: None,
            esmtp: false,
            txn: None,
            errors: 0,
            junk: 0,
            counts: ORDER.iter().map(|v| (*v, 0, 0)).collect(),
            last: "CONNECT",
            tls: None,
            sasl: None,
        }
    }

    fn log(&self, text: &str) {
        log::line_as(Some(&self.set.log_name), text);
    }

    fn client(&self) -> String {
        format!("{}[{}]", self.name, self.ip)
    }

    /// Postfix's protocol names: SMTP, ESMTP, UTF8SMTP, plus S with TLS.
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

    fn count(&mut self, verb: &'static str, ok: bool) {
        if let Some(c) = self.counts.iter_mut().find(|c| c.0 == verb) {
            c.2 += 1;
            if ok {
                c.1 += 1;
            }
        }
    }

    /// Queues a reply, sleeping first once the client made many errors.
    async fn reply(&mut self, r: Reply) -> Result<(), ConnError> {
        if r.is_error() {
            self.errors += 1;
            if self.errors > self.set.soft_error_limit && !self.set.error_sleep.is_zero() {
                self.conn.flush().await?;
                tokio::time::sleep(self.set.error_sleep).await;
            }
        }
        self.conn.queue(&r.render(self.esmtp));
        if !self.conn.has_line() || self.conn.pending_replies >= self.set.pipelining_limit {
            self.conn.flush().await?;
        }
        Ok(())
    }

    fn r(code: u16, enh: &str, text: &str) -> Reply {
        Reply::new(code, enh, text)
    }

    pub async fn run(mut self) {
        self.log(&format!("connect from {}", self.client()));
        if self.set.wrapper && !self.wrapper_handshake().await {
            self.log(&format!(
                "lost connection after CONNECT from {}",
                self.client()
            ));
            self.log(&format!("disconnect from {} commands=0", self.client()));
            return;
        }
        let banner = Reply::bare(220, &self.set.banner);
        let end = match self.reply(banner).await {
            Ok(()) => self.commands().await,
            Err(e) => self.conn_end(e),
        };
        match end {
            End::Timeout => {
                let r = Reply::new(
                    421,
                    "4.4.2",
                    &format!("{} Error: timeout exceeded", self.set.myhostname),
                );
                self.conn.queue(&r.render(self.esmtp));
                let _ = self.conn.flush().await;
                self.log(&format!(
                    "timeout after {} from {}",
                    self.last,
                    self.client()
                ));
            }
            End::Closed => self.log(&format!(
                "lost connection after {} from {}",
                self.last,
                self.client()
            )),
            End::TooManyErrors => {
                let r = Reply::new(
                    421,
                    "4.7.0",
                    &format!("{} Error: too many errors", self.set.myhostname),
                );
                self.conn.queue(&r.render(self.esmtp));
                let _ = self.conn.flush().await;
                self.log(&format!(
                    "too many errors after {} from {}",
                    self.last,
                    self.client()
                ));
            }
            End::HungUp => self.log(&format!(
                "lost connection after {} from {}",
                self.last,
                self.client()
            )),
            End::BareLf | End::Quit => {}
        }
        self.abort_txn().await;
        let mut parts = Vec::new();
        let (mut ok, mut total) = (0, 0);
        for (verb, o, t) in &self.counts {
            if *t > 0 {
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
        self.log(
            &format!(
                "disconnect from {} {} {commands}",
                self.client(),
                parts.join(" ")
            )
            .replace("  ", " "),
        );
    }

    /// Port 465: the handshake comes before the banner.
    async fn wrapper_handshake(&mut self) -> bool {
        let Some(acceptor) = self.sh.tls() else {
            self.log(&format!(
                "warning: TLS is not available (no key from the broker); dropping {}",
                self.client()
            ));
            return false;
        };
        match self
            .conn
            .start_tls(&acceptor, self.set.starttls_timeout)
            .await
        {
            Ok(_) => {
                self.tls_established();
                true
            }
            Err(e) => {
                self.log(&format!("SSL_accept error from {}: {e}", self.client()));
                false
            }
        }
    }

    fn tls_established(&mut self) {
        let summary = self.conn.stream.tls_summary().unwrap_or_default();
        self.log(&format!(
            "Anonymous TLS connection established from {}: {summary}",
            self.client()
        ));
        self.tls = Some(summary);
    }

    /// STARTTLS (RFC 3207). The SMTP state starts over afterwards, and
    /// anything the client pipelined after the command is discarded.
    async fn starttls(&mut self) -> Result<Option<End>, ConnError> {
        let refuse = if self.tls.is_some() {
            Some(Self::r(554, "5.5.1", "Error: TLS already active"))
        } else if self.set.tls_level == TlsLevel::None || !self.esmtp {
            // Never announced (no TLS here, or a HELO session): unknown.
            Some(Self::r(502, "5.5.1", "Error: command not implemented"))
        } else if self.txn.is_some() {
            Some(Self::r(503, "5.5.1", "Error: MAIL transaction in progress"))
        } else {
            None
        };
        let acceptor = match (refuse, self.sh.tls()) {
            (None, Some(a)) => a,
            (refuse, _) => {
                let r = refuse.unwrap_or_else(|| {
                    Self::r(454, "4.7.0", "TLS not available due to local problem")
                });
                self.count("starttls", false);
                self.reply(r).await?;
                return Ok(None);
            }
        };
        self.count("starttls", true);
        self.conn
            .queue(&Self::r(220, "2.0.0", "Ready to start TLS").render(self.esmtp));
        self.conn.flush().await?;
        match self
            .conn
            .start_tls(&acceptor, self.set.starttls_timeout)
            .await
        {
            Ok(discarded) => {
                if discarded > 0 {
                    self.log(&format!(
                        "warning: {}: discarding {discarded} bytes of input pipelined after STARTTLS",
                        self.client()
                    ));
                }
                self.tls_established();
                // RFC 3207 4.2: forget everything learned before TLS.
                self.helo = None;
                self.esmtp = false;
                Ok(None)
            }
            Err(e) => {
                self.log(&format!("SSL_accept error from {}: {e}", self.client()));
                Ok(Some(End::Closed))
            }
        }
    }

    /// AUTH is offered (and accepted) only where it was announced: with
    /// SASL on for this service, in an EHLO session, and under TLS unless
    /// `smtpd_tls_auth_only = no`.
    fn auth_offered(&self) -> bool {
        self.set.sasl_enable && self.esmtp && (self.tls.is_some() || !self.set.tls_auth_only)
    }

    /// One line of a SASL exchange: a 334 challenge, then the client's
    /// base64 answer. Err(reply) ends the exchange with that reply.
    async fn sasl_step(&mut self, challenge: &str) -> Result<Result<Vec<u8>, Reply>, ConnError> {
        self.conn.queue(&format!("334 {challenge}\r\n"));
        self.conn.flush().await?;
        self.conn.begin_request(false);
        let line = match self.conn.read_line(12288, false).await? {
            Line::Command(l) => l,
            Line::TooLong | Line::BareLf => {
                return Ok(Err(Self::r(
                    500,
                    "5.5.6",
                    "Error: authentication exchange line too long",
                )));
            }
        };
        Ok(decode_sasl(&line))
    }

    /// AUTH PLAIN and AUTH LOGIN (RFC 4954), checked by the auth role.
    async fn auth(&mut self, arg: &str) -> Result<Option<End>, ConnError> {
        let refuse = if !self.auth_offered() {
            Some(Self::r(503, "5.5.1", "Error: authentication not enabled"))
        } else if self.sasl.is_some() {
            Some(Self::r(503, "5.5.1", "Error: already authenticated"))
        } else if self.txn.is_some() {
            Some(Self::r(503, "5.5.1", "Error: MAIL transaction in progress"))
        } else {
            None
        };
        if let Some(r) = refuse {
            self.count("auth", false);
            self.reply(r).await?;
            return Ok(None);
        }
        let (mech, initial) = match arg.trim().split_once(' ') {
            Some((m, i)) => (m.to_ascii_uppercase(), Some(i.trim().as_bytes().to_vec())),
            None => (arg.trim().to_ascii_uppercase(), None),
        };
        let creds: Result<(String, Vec<u8>, &'static str), Reply> = match mech.as_str() {
            "PLAIN" => {
                let resp = match initial {
                    Some(i) => decode_sasl(&i),
                    None => self.sasl_step("").await?,
                };
                resp.and_then(|r| {
                    let mut parts = r.splitn(3, |&b| b == 0);
                    let (authz, user, pass) = (parts.next(), parts.next(), parts.next());
                    match (authz, user, pass) {
                        (Some(z), Some(u), Some(p)) if z.is_empty() || z == u => {
                            Ok((String::from_utf8_lossy(u).into_owned(), p.to_vec(), "PLAIN"))
                        }
                        _ => Err(Self::r(
                            535,
                            "5.7.8",
                            "Error: authentication failed: Invalid authentication message",
                        )),
                    }
                })
            }
            "LOGIN" => {
                let user = match initial {
                    Some(i) => decode_sasl(&i),
                    None => self.sasl_step("VXNlcm5hbWU6").await?,
                };
                match user {
                    Ok(u) => self
                        .sasl_step("UGFzc3dvcmQ6")
                        .await?
                        .map(|p| (String::from_utf8_lossy(&u).into_owned(), p, "LOGIN")),
                    Err(r) => Err(r),
                }
            }
            "" => Err(Self::r(501, "5.5.4", "Syntax: AUTH mechanism")),
            _ => Err(Self::r(
                504,
                "5.5.4",
                "Unsupported authentication mechanism",
            )),
        };
        let reply = match creds {
            Err(r) => r,
            Ok((user, pass, method)) => {
                let req = postern_ipc::auth::Request {
                    username: user.clone(),
                    password: pass,
                    client: self.ip.to_string(),
                };
                match self.sh.authenticate(req).await {
                    Ok(postern_ipc::auth::Reply::Ok(login)) => {
                        self.sasl = Some((login, method));
                        Self::r(235, "2.7.0", "Authentication successful")
                    }
                    Ok(postern_ipc::auth::Reply::Failed) => {
                        self.log(&format!(
                            "warning: {}: SASL {method} authentication failed: authentication failure, sasl_username={}",
                            self.client(),
                            user.escape_debug()
                        ));
                        Self::r(
                            535,
                            "5.7.8",
                            "Error: authentication failed: authentication failure",
                        )
                    }
                    Ok(postern_ipc::auth::Reply::Locked(secs)) => {
                        self.log(&format!(
                            "warning: {}: SASL {method} authentication refused: too many failures, sasl_username={}",
                            self.client(),
                            user.escape_debug()
                        ));
                        Self::r(
                            454,
                            "4.7.0",
                            &format!(
                                "Error: too many failed authentication attempts; try again in {secs}s"
                            ),
                        )
                    }
                    Ok(postern_ipc::auth::Reply::Tempfail(e)) | Err(e) => {
                        self.log(&format!("warning: SASL authentication: {e}"));
                        Self::r(454, "4.7.0", "Temporary authentication failure")
                    }
                }
            }
        };
        self.count("auth", reply.code == 235);
        self.reply(reply).await?;
        Ok(None)
    }

    /// With `smtpd_tls_security_level = encrypt`, mail commands wait for TLS.
    fn needs_tls(&self) -> Option<Reply> {
        (self.set.tls_level == TlsLevel::Encrypt && self.tls.is_none())
            .then(|| Self::r(530, "5.7.0", "Must issue a STARTTLS command first"))
    }

    fn conn_end(&self, e: ConnError) -> End {
        match e {
            ConnError::Timeout => End::Timeout,
            ConnError::Closed | ConnError::Io => End::Closed,
        }
    }

    async fn commands(&mut self) -> End {
        loop {
            if self.errors >= self.set.hard_error_limit {
                return End::TooManyErrors;
            }
            let bare_ok = !self.set.bare_lf_reject
                || self
                    .set
                    .access
                    .bare_lf_exclusions
                    .iter()
                    .any(|c| c.contains(self.ip));
            self.conn.begin_request(false);
            let line = match self
                .conn
                .read_line(self.set.line_length_limit, bare_ok)
                .await
            {
                Ok(l) => l,
                Err(e) => return self.conn_end(e),
            };
            let r = match line {
                Line::TooLong => {
                    self.reply(Self::r(500, "5.5.0", "Error: line too long"))
                        .await
                }
                Line::BareLf => return self.bare_lf().await,
                Line::Command(bytes) => match parse_command(&bytes) {
                    Err(reply) => {
                        let verb = std::str::from_utf8(&bytes)
                            .ok()
                            .and_then(|s| s.split(' ').next())
                            .map(str::to_ascii_lowercase)
                            .and_then(|v| ORDER.iter().find(|o| **o == v).copied())
                            .unwrap_or("unknown");
                        self.count(verb, false);
                        self.reply(reply).await
                    }
                    Ok(cmd) => match self.command(cmd).await {
                        Ok(None) => Ok(()),
                        Ok(Some(end)) => return end,
                        Err(e) => return self.conn_end(e),
                    },
                },
            };
            if let Err(e) = r {
                return self.conn_end(e);
            }
        }
    }

    async fn bare_lf(&mut self) -> End {
        let r = Self::r(550, "5.5.2", "Error: bare <LF> received");
        self.conn.queue(&r.render(self.esmtp));
        let _ = self.conn.flush().await;
        self.log(&format!(
            "warning: disconnect: bare <LF> received from {} after {}",
            self.client(),
            self.last
        ));
        End::BareLf
    }

    async fn command(&mut self, cmd: Command) -> Result<Option<End>, ConnError> {
        let verb = cmd.verb();
        self.last = match &cmd {
            Command::Unknown(_) => "UNKNOWN",
            c => match c.verb() {
                "helo" => "HELO",
                "ehlo" => "EHLO",
                "mail" => "MAIL",
                "rcpt" => "RCPT",
                "data" => "DATA",
                "bdat" => "BDAT",
                "rset" => "RSET",
                "noop" => "NOOP",
                "quit" => "QUIT",
                "vrfy" => "VRFY",
                "starttls" => "STARTTLS",
                "auth" => "AUTH",
                "etrn" => "ETRN",
                _ => "HELP",
            },
        };
        if matches!(
            cmd,
            Command::Noop | Command::Rset | Command::Vrfy(_) | Command::Etrn
        ) {
            self.junk += 1;
            if self.junk > self.set.junk_limit {
                self.errors += 1;
            }
        }
        let reply = match cmd {
            Command::Helo(d) | Command::Ehlo(d) => {
                self.abort_txn().await;
                self.esmtp = verb == "ehlo";
                self.helo = Some(d);
                if self.esmtp {
                    let mut lines = vec![
                        self.set.myhostname.clone(),
                        "PIPELINING".into(),
                        format!("SIZE {}", self.set.message_size_limit),
                    ];
                    if !self.set.disable_vrfy {
                        lines.push("VRFY".into());
                    }
                    if self.tls.is_none()
                        && self.set.tls_level != TlsLevel::None
                        && self.sh.tls().is_some()
                    {
                        lines.push("STARTTLS".into());
                    }
                    if self.auth_offered() {
                        lines.push("AUTH PLAIN LOGIN".into());
                    }
                    lines.extend(
                        [
                            "ENHANCEDSTATUSCODES",
                            "8BITMIME",
                            "DSN",
                            "SMTPUTF8",
                            "CHUNKING",
                        ]
                        .map(String::from),
                    );
                    Reply::multi(250, lines)
                } else {
                    Reply::bare(250, &self.set.myhostname)
                }
            }
            Command::Starttls => return self.starttls().await,
            Command::Mail { .. }
            | Command::Rcpt { .. }
            | Command::Data
            | Command::Vrfy(_)
            | Command::Etrn
                if let Some(r) = self.needs_tls() =>
            {
                r
            }
            Command::Mail { path, params } => self.mail(path, params).await,
            Command::Rcpt { path, params } => self.rcpt(path, params).await,
            Command::Data => return self.data().await,
            Command::Bdat { size, last } => return self.bdat(size, last).await,
            Command::Rset => {
                self.abort_txn().await;
                Self::r(250, "2.0.0", "Ok")
            }
            Command::Noop => Self::r(250, "2.0.0", "Ok"),
            Command::Quit => {
                self.count("quit", true);
                self.reply(Self::r(221, "2.0.0", "Bye")).await?;
                self.conn.flush().await?;
                return Ok(Some(End::Quit));
            }
            Command::Vrfy(arg) => self.vrfy(&arg).await,
            Command::Help => Self::r(
                214,
                "2.0.0",
                "Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP",
            ),
            Command::Auth(arg) => return self.auth(&arg).await,
            Command::Etrn => Self::r(502, "5.5.1", "Error: command not implemented"),
            Command::Unknown(_) => Self::r(502, "5.5.2", "Error: command not recognized"),
        };
        self.count(verb, !reply.is_error());
        self.reply(reply).await?;
        Ok(None)
    }

    async fn mail(&mut self, path: String, params: Vec<EsmtpParam>) -> Reply {
        if self.txn.is_some() {
            return Self::r(503, "5.5.1", "Error: nested MAIL command");
        }
        if self.set.helo_required && self.helo.is_none() {
            return Self::r(503, "5.5.1", "Error: send HELO/EHLO first");
        }
        let (mut smtputf8, mut body_8bit, mut ret, mut envid) = (false, false, 0u8, String::new());
        for p in &params {
            if !self.esmtp {
                return Self::r(555, "5.5.4", &format!("Unsupported option: {}", p.key));
            }
            let v = p.value.as_deref();
            match (p.key.as_str(), v) {
                ("SIZE", Some(v)) => match v.parse::<u64>() {
                    Ok(n) if n > self.set.message_size_limit => {
                        return Self::r(552, "5.3.4", "Message size exceeds fixed limit");
                    }
                    Ok(_) => {}
                    Err(_) => return Self::r(501, "5.5.4", "Bad message size syntax"),
                },
                ("BODY", Some(v)) if v.eq_ignore_ascii_case("8BITMIME") => body_8bit = true,
                ("BODY", Some(v)) if v.eq_ignore_ascii_case("7BIT") => {}
                ("BODY", _) => return Self::r(501, "5.5.4", "Bad BODY keyword syntax"),
                ("SMTPUTF8", None) => smtputf8 = true,
                ("RET", Some(v)) if v.eq_ignore_ascii_case("FULL") => ret = 1,
                ("RET", Some(v)) if v.eq_ignore_ascii_case("HDRS") => ret = 2,
                ("RET", _) => return Self::r(501, "5.5.4", "Bad RET parameter syntax"),
                ("ENVID", Some(v)) => match xtext(v).filter(|s| !s.is_empty() && s.len() <= 100) {
                    Some(s) => envid = s,
                    None => return Self::r(501, "5.5.4", "Bad ENVID parameter syntax"),
                },
                _ => return Self::r(555, "5.5.4", &format!("Unsupported option: {}", p.key)),
            }
        }
        let sender = match parse_path(&path, smtputf8) {
            Ok(m) => m,
            Err(AddressError::NeedsUtf8) => {
                return Self::r(
                    553,
                    "5.6.7",
                    "Must declare SMTPUTF8 to send unicode address",
                );
            }
            Err(_) => return Self::r(501, "5.1.7", "Bad sender address syntax"),
        };
        if !sender.is_null()
            && sender.domain.is_empty()
            && !sender.local.eq_ignore_ascii_case("postmaster")
        {
            // An unqualified sender is accepted (Postfix appends myorigin in
            // cleanup for local mail); keep it as given.
        }
        if let Some((user, _)) = &self.sasl
            && self.set.account_rate > 0
            && !self
                .sh
                .account_message(user, self.set.account_rate, self.set.rate_unit)
        {
            self.log(&format!(
                "warning: message rate limit exceeded: {} messages per {}s for sasl_username={user} from {}",
                self.set.account_rate,
                self.set.rate_unit.as_secs(),
                self.client()
            ));
            return Self::r(450, "4.7.1", &format!("Error: too much mail from {user}"));
        }
        let begin = Begin {
            client: Client {
                name: self.name.clone(),
                addr: self.ip.to_string(),
                port: self.port,
                helo: self.helo.clone().unwrap_or_default(),
                proto: self.proto(smtputf8),
                log_name: self.set.log_name.clone(),
                tls: self.tls.clone().unwrap_or_default(),
                local_uid: None,
            },
            sender: sender.address(),
            ret,
            envid: envid.clone(),
            smtputf8,
            body_8bit,
            trace: false,
        };
        match self.sh.begin(begin).await {
            Ok((queue_id, ep)) => {
                self.txn = Some(Txn {
                    queue_id,
                    sender,
                    smtputf8,
                    body_8bit,
                    ret,
                    envid,
                    rcpts: Vec::new(),
                    announced: false,
                    ep,
                    bdat: None,
                });
                Self::r(250, "2.1.0", "Ok")
            }
            Err(f) => {
                let r = Reply::new(f.code, &f.enhanced, &f.text);
                // The sender is logged too, so a full queue does not hide
                // whose mail was turned away (WISHLIST L1103).
                self.log(&format!(
                    "NOQUEUE: reject: MAIL from {}: {}; from=<{}> proto={} helo=<{}>",
                    self.client(),
                    r.summary(),
                    sender.address(),
                    self.proto(smtputf8),
                    self.helo.as_deref().unwrap_or("")
                ));
                r
            }
        }
    }

    fn reject_log(&self, r: &Reply, rcpt: &str) {
        let id = match &self.txn {
            Some(t) if t.announced => t.queue_id.clone(),
            _ => "NOQUEUE".into(),
        };
        let from = self
            .txn
            .as_ref()
            .map(|t| t.sender.address())
            .unwrap_or_default();
        self.log(&format!(
            "{id}: reject: RCPT from {}: {}; from=<{from}> to=<{rcpt}> proto={} helo=<{}>",
            self.client(),
            r.summary(),
            self.proto(self.txn.as_ref().is_some_and(|t| t.smtputf8)),
            self.helo.as_deref().unwrap_or("")
        ));
    }

    async fn rcpt(&mut self, path: String, params: Vec<EsmtpParam>) -> Reply {
        let Some(txn) = &self.txn else {
            return Self::r(503, "5.5.1", "Error: need MAIL command");
        };
        if txn.bdat.is_some() {
            return Self::r(503, "5.5.1", "Error: RCPT after BDAT");
        }
        if txn.rcpts.len() >= self.set.recipient_limit {
            return Self::r(452, "4.5.3", "Error: too many recipients");
        }
        let (mut notify_bits, mut orcpt) = (0u8, String::new());
        for p in &params {
            if !self.esmtp {
                return Self::r(555, "5.5.4", &format!("Unsupported option: {}", p.key));
            }
            match (p.key.as_str(), p.value.as_deref()) {
                ("NOTIFY", Some(v)) => {
                    for word in v.split(',') {
                        notify_bits |= match word.to_ascii_uppercase().as_str() {
                            "NEVER" => notify::NEVER,
                            "SUCCESS" => notify::SUCCESS,
                            "FAILURE" => notify::FAILURE,
                            "DELAY" => notify::DELAY,
                            _ => {
                                return Self::r(501, "5.5.4", "Error: Bad NOTIFY parameter syntax");
                            }
                        };
                    }
                    if notify_bits & notify::NEVER != 0 && notify_bits != notify::NEVER {
                        return Self::r(501, "5.5.4", "Error: Bad NOTIFY parameter syntax");
                    }
                }
                ("ORCPT", Some(v)) => {
                    let ok = v.split_once(';').is_some_and(|(t, a)| {
                        (t.eq_ignore_ascii_case("rfc822") || t.eq_ignore_ascii_case("utf-8"))
                            && xtext(a).is_some_and(|a| !a.is_empty())
                    });
                    if !ok {
                        return Self::r(501, "5.5.4", "Error: Bad ORCPT parameter syntax");
                    }
                    orcpt = v.to_string();
                }
                _ => return Self::r(555, "5.5.4", &format!("Unsupported option: {}", p.key)),
            }
        }
        let smtputf8 = txn.smtputf8;
        let rcpt = match parse_path(&path, smtputf8) {
            Ok(m) if !m.is_null() => m,
            Err(AddressError::NeedsUtf8) => {
                return Self::r(
                    553,
                    "5.6.7",
                    "Must declare SMTPUTF8 to send unicode address",
                );
            }
            _ => return Self::r(501, "5.1.3", "Bad recipient address syntax"),
        };
        let addr = rcpt.address();
        // Who owns the sender, when a list asks (smtpd_sender_login_maps).
        let sender = self
            .txn
            .as_ref()
            .map(|t| t.sender.address())
            .unwrap_or_default();
        let needs_owner = self
            .set
            .access
            .rcpt_lists()
            .iter()
            .any(|(_, l)| l.iter().any(|r| r.needs_sender_login()));
        let owners = if needs_owner && !sender.is_empty() {
            match self.sh.sender_logins(&sender).await {
                Ok(o) => o,
                Err(e) => {
                    self.log(&format!("warning: {e}"));
                    let r = Self::r(
                        451,
                        "4.3.0",
                        &format!("<{sender}>: Temporary lookup failure"),
                    );
                    self.reject_log(&r, &addr);
                    return r;
                }
            }
        } else {
            None
        };
        let client = self.client();
        let helo = self.helo.clone().unwrap_or_default();
        let ctx = Ctx {
            ip: self.ip,
            client: &client,
            helo: &helo,
            sender: &sender,
            rcpt: &addr,
            domain: &rcpt.domain,
            login: self.sasl.as_ref().map(|(u, _)| u.as_str()),
            sender_owners: owners.as_deref(),
        };
        // Each list decides for itself: a permit ends that list, a reject
        // ends the command (Postfix's semantics).
        for (stage, list) in self.set.access.rcpt_lists() {
            if let Verdict::Reject(code, enh, text) = self.set.access.check(list, stage, &ctx) {
                let r = Self::r(code, enh, &text);
                self.reject_log(&r, &addr);
                return r;
            }
        }
        if self.set.check_local && self.set.access.is_local_domain(&rcpt.domain) {
            let mut local = rcpt.local_unquoted().to_ascii_lowercase();
            if !self.set.recipient_delimiter.is_empty()
                && let Some(i) = local.find(|c| self.set.recipient_delimiter.contains(c))
            {
                local.truncate(i);
            }
            // RFC 5321 4.5.1: postmaster is always accepted.
            if local != "postmaster" {
                match self.sh.local_recipient(&local).await {
                    Ok(true) => {}
                    Ok(false) => {
                        let r = Reply::new(
                            self.set.unknown_local_code,
                            if self.set.unknown_local_code >= 500 {
                                "5.1.1"
                            } else {
                                "4.1.1"
                            },
                            &format!(
                                "<{addr}>: Recipient address rejected: User unknown in local recipient table"
                            ),
                        );
                        self.reject_log(&r, &addr);
                        return r;
                    }
                    Err(e) => {
                        self.log(&format!("warning: {e}"));
                        let r =
                            Self::r(451, "4.3.0", &format!("<{addr}>: Temporary lookup failure"));
                        self.reject_log(&r, &addr);
                        return r;
                    }
                }
            }
        }
        let client = self.client();
        let txn = self.txn.as_mut().expect("checked");
        if !txn.announced {
            txn.announced = true;
            let id = txn.queue_id.clone();
            let sasl = match &self.sasl {
                Some((user, method)) => format!(", sasl_method={method}, sasl_username={user}"),
                None => String::new(),
            };
            self.log(&format!("{id}: client={client}{sasl}"));
        }
        let txn = self.txn.as_mut().expect("checked");
        txn.rcpts.push(Recipient {
            address: addr,
            orcpt,
            notify: notify_bits,
        });
        Self::r(250, "2.1.5", "Ok")
    }

    async fn vrfy(&mut self, arg: &str) -> Reply {
        if self.set.disable_vrfy {
            return Self::r(
                252,
                "2.0.0",
                "Cannot VRFY user; try RCPT to attempt delivery",
            );
        }
        let arg = arg.trim_start_matches('<').trim_end_matches('>');
        let Ok(m) = parse_path(arg, true) else {
            return Self::r(501, "5.1.3", "Bad recipient address syntax");
        };
        if self.set.access.is_local_domain(&m.domain) {
            match self
                .sh
                .local_recipient(&m.local_unquoted().to_ascii_lowercase())
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    return Self::r(
                        550,
                        "5.1.1",
                        &format!(
                            "<{}>: Recipient address rejected: User unknown in local recipient table",
                            m.address()
                        ),
                    );
                }
                Err(_) => return Self::r(451, "4.3.0", "Temporary lookup failure"),
            }
        }
        Self::r(252, "2.0.0", &m.address())
    }

    async fn abort_txn(&mut self) {
        if let Some(t) = self.txn.take() {
            self.sh.abort(t.ep).await;
        }
    }

    /// Sends the accepted recipients to cleanup, in batches.
    async fn send_recipients(&mut self) -> Result<(), ()> {
        let txn = self.txn.as_mut().expect("txn");
        for batch in txn.rcpts.chunks(sc::MAX_BATCH) {
            txn.ep
                .send(&sc::Request::Recipients(batch.to_vec()))
                .await
                .map_err(|_| ())?;
        }
        Ok(())
    }

    async fn send_content(&mut self, data: &[u8]) -> Result<(), ()> {
        let txn = self.txn.as_mut().expect("txn");
        for piece in data.chunks(sc::MAX_CHUNK) {
            txn.ep
                .send(&sc::Request::Content(piece.to_vec()))
                .await
                .map_err(|_| ())?;
        }
        Ok(())
    }

    fn need_txn(&self) -> Option<Reply> {
        match &self.txn {
            None => Some(Self::r(503, "5.5.1", "Error: need MAIL command")),
            Some(t) if t.rcpts.is_empty() => {
                Some(Self::r(503, "5.5.1", "Error: need RCPT command"))
            }
            _ => None,
        }
    }

    async fn data(&mut self) -> Result<Option<End>, ConnError> {
        if let Some(r) = self.need_txn() {
            self.count("data", false);
            self.reply(r).await?;
            return Ok(None);
        }
        if self.txn.as_ref().is_some_and(|t| t.bdat.is_some()) {
            self.count("data", false);
            self.reply(Self::r(503, "5.5.1", "Error: DATA after BDAT"))
                .await?;
            return Ok(None);
        }
        if self.send_recipients().await.is_err() {
            return self.cleanup_lost("data").await;
        }
        self.conn
            .queue(&Reply::bare(354, "End data with <CR><LF>.<CR><LF>").render(false));
        self.conn.flush().await?;
        let bare_ok = !self.set.bare_lf_reject
            || self
                .set
                .access
                .bare_lf_exclusions
                .iter()
                .any(|c| c.contains(self.ip));
        let mut dec = DataDecoder::new(if bare_ok {
            BareLf::Normalize
        } else {
            BareLf::Reject
        });
        let mut out = Vec::with_capacity(sc::MAX_CHUNK);
        let mut size = 0u64;
        let mut too_big = false;
        let mut lost = false;
        self.conn.begin_request(true);
        loop {
            if self.conn.buffered().is_empty()
                && let Err(e) = self.conn.fill().await
            {
                self.abort_txn().await;
                self.count("data", false);
                return Err(e);
            }
            let (n, p) = dec.feed(self.conn.buffered(), &mut out);
            self.conn.consume(n);
            size += out.len() as u64;
            if size > self.set.message_size_limit {
                too_big = true;
            }
            if too_big || lost {
                out.clear();
            } else if out.len() >= sc::MAX_CHUNK / 2 || p == Progress::End {
                let chunk = std::mem::take(&mut out);
                lost = self.send_content(&chunk).await.is_err();
            }
            match p {
                Progress::More => {}
                Progress::End => break,
                Progress::BareLf => {
                    self.abort_txn().await;
                    self.count("data", false);
                    return Ok(Some(self.bare_lf().await));
                }
            }
        }
        self.last = "END-OF-MESSAGE";
        if lost {
            return self.cleanup_lost("data").await;
        }
        if too_big {
            self.abort_txn().await;
            self.count("data", false);
            self.reply(Self::r(552, "5.3.4", "Error: message file too big"))
                .await?;
            return Ok(None);
        }
        self.finish("data").await
    }

    async fn bdat(&mut self, size: u64, last: bool) -> Result<Option<End>, ConnError> {
        // The chunk must be read whatever the answer, or its bytes would be
        // taken for commands. A chunk no message could be made of ends the
        // session instead.
        let refuse = if let Some(r) = self.needs_tls() {
            Some(r)
        } else if !self.esmtp {
            Some(Self::r(503, "5.5.1", "Error: BDAT without EHLO"))
        } else {
            self.need_txn()
        };
        if size > self.set.message_size_limit.saturating_add(1 << 20) {
            self.count("bdat", false);
            self.abort_txn().await;
            let r = Self::r(552, "5.3.4", "Error: message file too big");
            self.conn.queue(&r.render(self.esmtp));
            self.conn.flush().await?;
            return Ok(Some(End::Quit));
        }
        if let Some(r) = refuse {
            self.skip(size).await?;
            self.count("bdat", false);
            self.reply(r).await?;
            return Ok(None);
        }
        let first = self.txn.as_ref().is_some_and(|t| t.bdat.is_none());
        if first {
            if self.send_recipients().await.is_err() {
                self.skip(size).await?;
                return self.cleanup_lost("bdat").await;
            }
            self.txn.as_mut().expect("txn").bdat = Some(Bdat {
                norm: LineNormalizer::default(),
                size: 0,
                too_big: false,
            });
        }
        let bare_ok = !self.set.bare_lf_reject
            || self
                .set
                .access
                .bare_lf_exclusions
                .iter()
                .any(|c| c.contains(self.ip));
        let mode = if bare_ok {
            BareLf::Normalize
        } else {
            BareLf::Reject
        };
        let mut remaining = size;
        let mut lost = false;
        self.conn.begin_request(true);
        while remaining > 0 {
            let data = match self
                .conn
                .read_some(remaining.min(sc::MAX_CHUNK as u64) as usize)
                .await
            {
                Ok(d) => d,
                Err(e) => {
                    self.abort_txn().await;
                    self.count("bdat", false);
                    return Err(e);
                }
            };
            remaining -= data.len() as u64;
            let limit = self.set.message_size_limit;
            let txn = self.txn.as_mut().expect("txn");
            let b = txn.bdat.as_mut().expect("bdat");
            let mut out = Vec::with_capacity(data.len() + 16);
            if b.norm.feed(&data, mode, &mut out).is_err() {
                self.abort_txn().await;
                self.count("bdat", false);
                return Ok(Some(self.bare_lf().await));
            }
            b.size += out.len() as u64;
            if b.size > limit {
                b.too_big = true;
            }
            if !b.too_big && !lost {
                lost = self.send_content(&out).await.is_err();
            }
        }
        if lost {
            return self.cleanup_lost("bdat").await;
        }
        let too_big = self
            .txn
            .as_ref()
            .and_then(|t| t.bdat.as_ref())
            .is_some_and(|b| b.too_big);
        if too_big && last {
            self.abort_txn().await;
            self.count("bdat", false);
            self.reply(Self::r(552, "5.3.4", "Error: message file too big"))
                .await?;
            return Ok(None);
        }
        if !last {
            self.count("bdat", true);
            self.reply(Self::r(250, "2.0.0", &format!("Ok: {size} bytes")))
                .await?;
            return Ok(None);
        }
        self.last = "END-OF-MESSAGE";
        self.finish("bdat").await
    }

    /// Reads and drops `n` bytes of a refused BDAT chunk.
    async fn skip(&mut self, mut n: u64) -> Result<(), ConnError> {
        self.conn.begin_request(true);
        while n > 0 {
            let d = self.conn.read_some(n.min(64 * 1024) as usize).await?;
            n -= d.len() as u64;
        }
        Ok(())
    }

    async fn cleanup_lost(&mut self, verb: &'static str) -> Result<Option<End>, ConnError> {
        self.log(&format!(
            "warning: {}: lost the channel to cleanup",
            self.txn.as_ref().map_or("NOQUEUE", |t| t.queue_id.as_str())
        ));
        self.txn = None;
        self.count(verb, false);
        self.reply(Self::r(451, "4.3.0", "Error: queue file write error"))
            .await?;
        Ok(None)
    }

    /// End of content: the hang-up check, then the commit.
    async fn finish(&mut self, verb: &'static str) -> Result<Option<End>, ConnError> {
        let mut txn = self.txn.take().expect("txn");
        // A client that has already gone would never see our 250: do not
        // deliver what it will send again.
        if self.conn.peer_hung_up() {
            let _ = txn.ep.call(&sc::Request::Abort).await;
            self.sh.release(txn.ep);
            self.log(&format!(
                "{}: discarded: the client hung up before the final commit",
                txn.queue_id
            ));
            self.count(verb, false);
            return Ok(Some(End::HungUp));
        }
        let reply = match txn.ep.call(&sc::Request::End).await {
            Ok(sc::Reply::Committed) => {
                self.sh.release(txn.ep);
                Self::r(250, "2.0.0", &format!("Ok: queued as {}", txn.queue_id))
            }
            Ok(sc::Reply::Failed(f)) => {
                self.sh.release(txn.ep);
                Reply::new(f.code, &f.enhanced, &f.text)
            }
            _ => Self::r(451, "4.3.0", "Error: queue file write error"),
        };
        if reply.is_error() {
            self.log(&format!(
                "{}: reject: END-OF-MESSAGE from {}: {}; from=<{}> proto={} helo=<{}>",
                txn.queue_id,
                self.client(),
                reply.summary(),
                txn.sender.address(),
                self.proto(txn.smtputf8),
                self.helo.as_deref().unwrap_or("")
            ));
        }
        let _ = (txn.body_8bit, txn.ret, &txn.envid);
        self.count(verb, !reply.is_error());
        self.reply(reply).await?;
        Ok(None)
    }
}
