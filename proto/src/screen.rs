//! postscreen's SMTP engine after the 220 greeting (Postfix's "dummy"
//! engine): it answers commands but never takes mail, and it watches for
//! the three deep-protocol offences:
//!
//! - command pipelining: more input waiting after a command, though the
//!   EHLO reply offered no PIPELINING;
//! - a non-SMTP command: a header line (`Subject: ...`) or a word of
//!   `postscreen_forbidden_commands` (CONNECT, GET, POST) in command
//!   position;
//! - a bare newline: a line ending in LF without CR.
//!
//! A client passes these tests when it gets to RCPT TO without an offence;
//! RCPT is refused either way (450 for a client that passed: it comes back
//! and goes straight to smtpd). Sans-IO: the caller feeds what the client
//! sent and carries out what comes back (replies, log lines, closing).
//!
//! Memory per session is bounded: one command line of at most
//! `line_limit` bytes, a few short strings.

/// What to do with a client that failed a test (Postfix's
/// `postscreen_*_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Log it, and let the client on (it is tested again next time).
    Ignore,
    /// Go on, but refuse RCPT with 550.
    Enforce,
    /// 521, and hang up.
    Drop,
}

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "ignore" => Some(Action::Ignore),
            "enforce" => Some(Action::Enforce),
            "drop" => Some(Action::Drop),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Test {
    Pipelining,
    NonSmtp,
    BareNewline,
}

pub const TESTS: [Test; 3] = [Test::Pipelining, Test::NonSmtp, Test::BareNewline];

impl Test {
    fn index(self) -> usize {
        self as usize
    }
}

/// Where one test stands in this session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Not decided yet.
    Pending,
    /// The client reached RCPT TO without this offence.
    Passed,
    /// The offence was seen, and its action is enforce or drop.
    Failed,
    /// The offence was seen with action ignore: the client is let on for
    /// a short while, then tested again.
    Excused,
}

/// The engine's settings, shared by every session.
#[derive(Debug, Clone)]
pub struct Config {
    pub hostname: String,
    pub pipelining: Action,
    pub non_smtp: Action,
    pub bare_newline: Action,
    /// Longest command line (line_length_limit).
    pub line_limit: usize,
    /// postscreen_command_count_limit.
    pub command_count_limit: u32,
    pub helo_required: bool,
    pub disable_vrfy: bool,
    /// postscreen_forbidden_commands, uppercase.
    pub forbidden: Vec<String>,
    /// message_size_limit, for the EHLO reply (0: no limit).
    pub size_limit: u64,
    pub soft_bounce: bool,
}

impl Config {
    fn action(&self, t: Test) -> Action {
        match t {
            Test::Pipelining => self.pipelining,
            Test::NonSmtp => self.non_smtp,
            Test::BareNewline => self.bare_newline,
        }
    }
}

/// What the caller does next, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send these bytes (one or more complete replies).
    Send(String),
    /// Log this line.
    Log(String),
    /// Every pending test passed (at RCPT TO): the caller logs PASS NEW
    /// and remembers the client, when its other tests passed too.
    Passed,
    /// Hang up after sending what came before.
    Close,
}

/// The reply to RCPT for a client that passed (it is to come back).
pub const TRY_AGAIN: &str = "450 4.3.2 Service currently unavailable\r\n";
pub const PROTOCOL_ERROR: &str = "550 5.5.1 Protocol error\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    Helo,
    Ehlo,
    Starttls,
    Xclient,
    Xforward,
    Auth,
    Mail,
    Rcpt,
    Data,
    Rset,
    Noop,
    Vrfy,
    Etrn,
    Quit,
}

const COMMANDS: &[(&str, Cmd)] = &[
    ("HELO", Cmd::Helo),
    ("EHLO", Cmd::Ehlo),
    ("STARTTLS", Cmd::Starttls),
    ("XCLIENT", Cmd::Xclient),
    ("XFORWARD", Cmd::Xforward),
    ("AUTH", Cmd::Auth),
    ("MAIL", Cmd::Mail),
    ("RCPT", Cmd::Rcpt),
    ("DATA", Cmd::Data),
    ("RSET", Cmd::Rset),
    ("NOOP", Cmd::Noop),
    ("VRFY", Cmd::Vrfy),
    ("ETRN", Cmd::Etrn),
    ("QUIT", Cmd::Quit),
];

impl Cmd {
    fn name(self) -> &'static str {
        COMMANDS
            .iter()
            .find(|(_, c)| *c == self)
            .map_or("UNKNOWN", |(n, _)| n)
    }
}

/// Bytes made printable for a log line, at most `max` of them.
pub fn escape(b: &[u8], max: usize) -> String {
    b[..b.len().min(max)].escape_ascii().to_string()
}

/// Postfix's is_header(): `Name:` where Name is a header field name.
fn is_header(word: &str) -> bool {
    word.len() > 1
        && word.ends_with(':')
        && word[..word.len() - 1]
            .bytes()
            .all(|c| c.is_ascii_graphic() && c != b':')
}

/// The address of `MAIL FROM:<a>` / `RCPT TO:<a>`, unquoted (Postfix's
/// psc_extract_addr: lenient, as nothing is delivered).
fn extract_addr(arg: &str) -> String {
    let s = arg.trim_start_matches(' ');
    let (s, stop) = match s.strip_prefix('<') {
        Some(r) => (r, '>'),
        None => (s, ' '),
    };
    let mut out = String::new();
    let mut quoted = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if !quoted && c == stop {
            break;
        }
        match c {
            '"' => quoted = !quoted,
            '\\' => match chars.next() {
                Some(n) => out.push(n),
                None => break,
            },
            c => out.push(c),
        }
        if out.len() > 512 {
            break;
        }
    }
    // A source route goes, as in smtpd.
    if out.starts_with('@')
        && let Some((_, a)) = out.split_once(':')
    {
        return a.to_string();
    }
    out
}

pub struct Engine {
    /// `[ip]:port`, for log lines.
    client: String,
    line: Vec<u8>,
    /// The last byte read was CR.
    cr: bool,
    helo: Option<String>,
    sender: Option<String>,
    esmtp: bool,
    /// The last command recognized ("CONNECT" before the first).
    last: &'static str,
    commands: u32,
    rcpt_reply: String,
    tests: [Outcome; 3],
    closed: bool,
}

impl Engine {
    /// A session whose RCPT reply is `rcpt_reply` until a test fails:
    /// [`TRY_AGAIN`], or the reply of a test before the greeting that
    /// failed with action enforce.
    pub fn new(client: String, rcpt_reply: String) -> Engine {
        Engine {
            client,
            line: Vec::new(),
            cr: false,
            helo: None,
            sender: None,
            esmtp: false,
            last: "CONNECT",
            commands: 0,
            rcpt_reply,
            tests: [Outcome::Pending; 3],
            closed: false,
        }
    }

    pub fn outcome(&self, t: Test) -> Outcome {
        self.tests[t.index()]
    }

    /// The last command the client sent, for "... after CMD" log lines.
    pub fn last_command(&self) -> &'static str {
        self.last
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Bytes of an unfinished command line held.
    pub fn held(&self) -> usize {
        self.line.len()
    }

    fn generic_421(cfg: &Config) -> String {
        format!(
            "421 {} Service unavailable - try again later\r\n",
            cfg.hostname
        )
    }

    /// Feeds what the client sent; returns what to do, in order. Nothing
    /// is read after a [`Output::Close`].
    pub fn feed(&mut self, cfg: &Config, data: &[u8]) -> Vec<Output> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < data.len() && !self.closed {
            let c = data[i];
            i += 1;
            if c == b'\n' {
                let bare = !self.cr;
                if self.cr {
                    self.line.pop();
                }
                self.cr = false;
                if bare {
                    self.offence(
                        cfg,
                        Test::BareNewline,
                        format!(
                            "BARE NEWLINE from {} after {}",
                            self.client,
                            escape(&self.line, 100)
                        ),
                        &mut out,
                    );
                    if self.closed {
                        break;
                    }
                }
                let line = std::mem::take(&mut self.line);
                self.command(cfg, &line, &data[i..], &mut out);
                // Keep the buffer's room for the next line, within bounds.
                self.line = line;
                self.line.clear();
                continue;
            }
            // A line ending in CR still waits for its LF, but a run of CRs
            // is no way past the limit (the out-of-memory hole Postfix's
            // engine had).
            if self.line.len() >= cfg.line_limit {
                out.push(Output::Log(format!(
                    "COMMAND LENGTH LIMIT from {} after {}",
                    self.client, self.last
                )));
                self.close(Self::generic_421(cfg), &mut out);
                break;
            }
            self.cr = c == b'\r';
            self.line.push(c);
        }
        out
    }

    fn close(&mut self, reply: String, out: &mut Vec<Output>) {
        out.push(Output::Send(reply));
        out.push(Output::Close);
        self.closed = true;
    }

    /// A test failed: log it, and act as its setting says (once per
    /// session and test).
    fn offence(&mut self, cfg: &Config, t: Test, log: String, out: &mut Vec<Output>) {
        if self.tests[t.index()] != Outcome::Pending {
            return;
        }
        out.push(Output::Log(log));
        match cfg.action(t) {
            Action::Drop => {
                self.tests[t.index()] = Outcome::Failed;
                let reply = match t {
                    Test::NonSmtp => "521 5.7.0 Error: I can break rules, too. Goodbye.\r\n",
                    _ => "521 5.5.1 Protocol error\r\n",
                };
                self.close(reply.into(), out);
            }
            Action::Enforce => {
                self.tests[t.index()] = Outcome::Failed;
                self.rcpt_reply = PROTOCOL_ERROR.into();
            }
            Action::Ignore => self.tests[t.index()] = Outcome::Excused,
        }
    }

    fn command(&mut self, cfg: &Config, line: &[u8], after: &[u8], out: &mut Vec<Output>) {
        let text = String::from_utf8_lossy(line);
        let trimmed = text.trim_start_matches([' ', '\t']);
        let (word, args) = match trimmed.split_once(' ') {
            Some((w, a)) => (w, a),
            None => (trimmed, ""),
        };
        let cmd = COMMANDS
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(word))
            .map(|(_, c)| *c);
        let before = self.last;
        self.last = cmd.map_or("UNIMPLEMENTED", Cmd::name);
        let shown_word: String = word
            .chars()
            .map(|c| if c.is_ascii_graphic() { c } else { '?' })
            .take(100)
            .collect();
        if cmd.is_none()
            && (is_header(word) || cfg.forbidden.iter().any(|f| f.eq_ignore_ascii_case(word)))
        {
            self.offence(
                cfg,
                Test::NonSmtp,
                format!(
                    "NON-SMTP COMMAND from {} after {before}: {shown_word} {}",
                    self.client,
                    escape(line, 100)
                ),
                out,
            );
            if self.closed {
                return;
            }
        }
        if !after.is_empty() {
            self.offence(
                cfg,
                Test::Pipelining,
                format!(
                    "COMMAND PIPELINING from {} after {shown_word}: {}",
                    self.client,
                    escape(after, 100)
                ),
                out,
            );
            if self.closed {
                return;
            }
        }
        // The deep tests pass at RCPT TO, unless failed before.
        if cmd == Some(Cmd::Rcpt) {
            let mut passed = false;
            for t in &mut self.tests {
                if *t == Outcome::Pending {
                    *t = Outcome::Passed;
                    passed = true;
                }
            }
            if passed {
                out.push(Output::Passed);
            }
        }
        self.commands += 1;
        if self.commands > cfg.command_count_limit && cmd != Some(Cmd::Quit) {
            out.push(Output::Log(format!(
                "COMMAND COUNT LIMIT from {} after {before}",
                self.client
            )));
            self.close(Self::generic_421(cfg), out);
            return;
        }
        let reply = match cmd {
            None | Some(Cmd::Xclient | Cmd::Xforward | Cmd::Auth) => {
                "502 5.5.2 Error: command not recognized\r\n".to_string()
            }
            Some(c) => self.execute(cfg, c, args, out),
        };
        if !reply.is_empty() {
            out.push(Output::Send(reply));
        }
        if cmd == Some(Cmd::Quit) {
            out.push(Output::Close);
            self.closed = true;
        }
    }

    fn helo_missing(&self, cfg: &Config) -> bool {
        cfg.helo_required && self.helo.is_none()
    }

    fn execute(&mut self, cfg: &Config, cmd: Cmd, args: &str, out: &mut Vec<Output>) -> String {
        let first = args.split(' ').find(|w| !w.is_empty());
        match cmd {
            Cmd::Helo | Cmd::Ehlo => {
                let Some(name) = first else {
                    return format!("501 Syntax: {} hostname\r\n", cmd.name());
                };
                self.helo = Some(name.chars().take(255).collect());
                self.sender = None;
                if cmd == Cmd::Helo {
                    return format!("250 {}\r\n", cfg.hostname);
                }
                self.esmtp = true;
                let mut r = format!("250-{}\r\n", cfg.hostname);
                if cfg.size_limit > 0 {
                    r.push_str(&format!("250-SIZE {}\r\n", cfg.size_limit));
                } else {
                    r.push_str("250-SIZE\r\n");
                }
                if !cfg.disable_vrfy {
                    r.push_str("250-VRFY\r\n");
                }
                r.push_str("250-ETRN\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250 DSN\r\n");
                r
            }
            // No TLS before the client has passed: it gets STARTTLS from
            // smtpd on its next connection.
            Cmd::Starttls => "502 5.5.1 Error: command not implemented\r\n".into(),
            Cmd::Mail => {
                if self.helo_missing(cfg) {
                    return "503 5.5.1 Error: send HELO/EHLO first\r\n".into();
                }
                if self.sender.is_some() {
                    return "503 5.5.1 Error: nested MAIL command\r\n".into();
                }
                let Some((_, a)) = args.split_once(':') else {
                    return "501 5.5.4 Syntax: MAIL FROM:<address>\r\n".into();
                };
                self.sender = Some(extract_addr(a));
                "250 2.1.0 Ok\r\n".into()
            }
            Cmd::Rcpt => {
                let Some(sender) = &self.sender else {
                    return "503 5.5.1 Error: need MAIL command\r\n".into();
                };
                let Some((_, a)) = args.split_once(':') else {
                    return "501 5.5.4 Syntax: RCPT TO:<address>\r\n".into();
                };
                let reply = self.rcpt_reply(cfg);
                out.push(Output::Log(format!(
                    "NOQUEUE: reject: RCPT from {}: {}; from=<{}>, to=<{}>, proto={}, helo=<{}>",
                    self.client,
                    reply.trim_end(),
                    escape(sender.as_bytes(), 512),
                    escape(extract_addr(a).as_bytes(), 512),
                    if self.esmtp { "ESMTP" } else { "SMTP" },
                    escape(self.helo.as_deref().unwrap_or("").as_bytes(), 255),
                )));
                reply
            }
            Cmd::Data => {
                if first.is_some() {
                    return "501 5.5.4 Syntax: DATA\r\n".into();
                }
                if self.sender.is_none() {
                    return "503 5.5.1 Error: need RCPT command\r\n".into();
                }
                "554 5.5.1 Error: no valid recipients\r\n".into()
            }
            Cmd::Rset => {
                self.sender = None;
                "250 2.0.0 Ok\r\n".into()
            }
            Cmd::Noop => "250 2.0.0 Ok\r\n".into(),
            Cmd::Vrfy => {
                if first.is_none() {
                    return "501 5.5.4 Syntax: VRFY address\r\n".into();
                }
                if cfg.disable_vrfy {
                    return "502 5.5.1 VRFY command is disabled\r\n".into();
                }
                self.rcpt_reply(cfg)
            }
            Cmd::Etrn => {
                if self.helo_missing(cfg) {
                    return "503 5.5.1 Error: send HELO/EHLO first\r\n".into();
                }
                if first.is_none() {
                    return "500 Syntax: ETRN domain\r\n".into();
                }
                "458 Unable to queue messages\r\n".into()
            }
            Cmd::Quit => "221 2.0.0 Bye\r\n".into(),
            Cmd::Xclient | Cmd::Xforward | Cmd::Auth => String::new(),
        }
    }

    /// The RCPT reply, softened under soft_bounce.
    fn rcpt_reply(&self, cfg: &Config) -> String {
        let mut r = self.rcpt_reply.clone();
        if cfg.soft_bounce && r.starts_with('5') {
            r.replace_range(0..1, "4");
            if r.get(4..5) == Some("5") {
                r.replace_range(4..5, "4");
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config {
            hostname: "mx.example".into(),
            pipelining: Action::Enforce,
            non_smtp: Action::Drop,
            bare_newline: Action::Ignore,
            line_limit: 64,
            command_count_limit: 20,
            helo_required: false,
            disable_vrfy: true,
            forbidden: vec!["CONNECT".into(), "GET".into(), "POST".into()],
            size_limit: 10240000,
            soft_bounce: false,
        }
    }

    fn sent(out: &[Output]) -> String {
        out.iter()
            .filter_map(|o| match o {
                Output::Send(s) => Some(s.as_str()),
                _ => None,
            })
            .collect()
    }

    fn logs(out: &[Output]) -> Vec<&str> {
        out.iter()
            .filter_map(|o| match o {
                Output::Log(s) => Some(s.as_str()),
                _ => None,
            })
            .collect()
    }

    fn engine() -> Engine {
        Engine::new("[192.0.2.1]:4000".into(), TRY_AGAIN.into())
    }

    #[test]
    fn a_polite_client_passes_at_rcpt_and_is_told_to_come_back() {
        let c = cfg();
        let mut e = engine();
        let mut all = Vec::new();
        for cmd in ["EHLO client.example\r\n", "MAIL FROM:<a@b.example>\r\n"] {
            all.extend(e.feed(&c, cmd.as_bytes()));
        }
        assert!(!sent(&all).contains("PIPELINING"), "{}", sent(&all));
        let out = e.feed(&c, b"RCPT TO:<u@mx.example>\r\n");
        assert!(out.contains(&Output::Passed));
        assert_eq!(sent(&out), TRY_AGAIN);
        assert_eq!(
            logs(&out),
            [
                "NOQUEUE: reject: RCPT from [192.0.2.1]:4000: 450 4.3.2 Service currently unavailable; from=<a@b.example>, to=<u@mx.example>, proto=ESMTP, helo=<client.example>"
            ]
        );
        for t in TESTS {
            assert_eq!(e.outcome(t), Outcome::Passed);
        }
        let out = e.feed(&c, b"QUIT\r\n");
        assert_eq!(sent(&out), "221 2.0.0 Bye\r\n");
        assert_eq!(out.last(), Some(&Output::Close));
    }

    #[test]
    fn pipelining_enforced_means_550_at_rcpt() {
        let c = cfg();
        let mut e = engine();
        let out = e.feed(&c, b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n");
        assert_eq!(
            logs(&out)[0],
            "COMMAND PIPELINING from [192.0.2.1]:4000 after EHLO: MAIL FROM:<a@b>\\r\\nRCPT TO:<c@d>\\r\\n"
        );
        assert!(sent(&out).ends_with(PROTOCOL_ERROR), "{}", sent(&out));
        assert_eq!(e.outcome(Test::Pipelining), Outcome::Failed);
        // The other tests still pass at RCPT.
        assert_eq!(e.outcome(Test::NonSmtp), Outcome::Passed);
    }

    #[test]
    fn non_smtp_commands_are_dropped_and_bare_newlines_excused() {
        let c = cfg();
        let mut e = engine();
        let out = e.feed(&c, b"GET / HTTP/1.0\r\n");
        assert_eq!(
            logs(&out),
            ["NON-SMTP COMMAND from [192.0.2.1]:4000 after CONNECT: GET GET / HTTP/1.0"]
        );
        assert_eq!(
            sent(&out),
            "521 5.7.0 Error: I can break rules, too. Goodbye.\r\n"
        );
        assert!(e.is_closed());
        assert!(e.feed(&c, b"EHLO x\r\n").is_empty());
        let mut e = engine();
        let out = e.feed(&c, b"Subject: hello\r\n");
        assert!(logs(&out)[0].contains("NON-SMTP COMMAND"));
        let mut e = engine();
        let out = e.feed(&c, b"HELO x\n");
        assert_eq!(
            logs(&out),
            ["BARE NEWLINE from [192.0.2.1]:4000 after HELO x"]
        );
        assert_eq!(sent(&out), "250 mx.example\r\n");
        assert_eq!(e.outcome(Test::BareNewline), Outcome::Excused);
    }

    #[test]
    fn long_lines_and_many_commands_end_the_session() {
        let c = cfg();
        let mut e = engine();
        let out = e.feed(&c, &[b'\r'; 100]);
        assert!(logs(&out)[0].starts_with("COMMAND LENGTH LIMIT"));
        assert!(e.held() <= c.line_limit);
        let mut e = engine();
        let out = e.feed(&c, &[b'A'; 100]);
        assert!(
            logs(&out)[0].starts_with("COMMAND LENGTH LIMIT from [192.0.2.1]:4000 after CONNECT")
        );
        assert!(sent(&out).starts_with("421 mx.example"));
        assert!(e.held() <= c.line_limit);
        let mut e = engine();
        let mut out = Vec::new();
        for _ in 0..21 {
            out.extend(e.feed(&c, b"NOOP\r\n"));
        }
        assert!(
            logs(&out)
                .iter()
                .any(|l| l.starts_with("COMMAND COUNT LIMIT"))
        );
        assert!(e.is_closed());
    }

    #[test]
    fn a_line_split_across_reads_is_one_command() {
        let c = cfg();
        let mut e = engine();
        assert!(e.feed(&c, b"HE").is_empty());
        assert!(e.feed(&c, b"LO x\r").is_empty());
        assert_eq!(sent(&e.feed(&c, b"\n")), "250 mx.example\r\n");
        assert_eq!(e.outcome(Test::BareNewline), Outcome::Pending);
        assert_eq!(e.outcome(Test::Pipelining), Outcome::Pending);
    }
}
