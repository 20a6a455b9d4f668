//! Command lines (without their line ending) to [`Command`]s.
use super::reply::Reply;

/// An ESMTP parameter of MAIL or RCPT: `KEY[=VALUE]`, key upper-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EsmtpParam {
    pub key: String,
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Helo(String),
    Ehlo(String),
    /// The path inside the angle brackets, unparsed (the address grammar
    /// depends on SMTPUTF8, a parameter on the same line).
    Mail {
        path: String,
        params: Vec<EsmtpParam>,
    },
    Rcpt {
        path: String,
        params: Vec<EsmtpParam>,
    },
    Data,
    Bdat {
        size: u64,
        last: bool,
    },
    Rset,
    Noop,
    Quit,
    Vrfy(String),
    Help,
    Starttls,
    Auth(String),
    Etrn,
    /// A verb Postern does not know.
    Unknown(String),
}

impl Command {
    /// The verb in lower case (per-command counters) and as Postfix logs it
    /// ("lost connection after X").
    fn names(&self) -> (&'static str, &'static str) {
        match self {
            Command::Helo(_) => ("helo", "HELO"),
            Command::Ehlo(_) => ("ehlo", "EHLO"),
            Command::Mail { .. } => ("mail", "MAIL"),
            Command::Rcpt { .. } => ("rcpt", "RCPT"),
            Command::Data => ("data", "DATA"),
            Command::Bdat { .. } => ("bdat", "BDAT"),
            Command::Rset => ("rset", "RSET"),
            Command::Noop => ("noop", "NOOP"),
            Command::Quit => ("quit", "QUIT"),
            Command::Vrfy(_) => ("vrfy", "VRFY"),
            Command::Help => ("help", "HELP"),
            Command::Starttls => ("starttls", "STARTTLS"),
            Command::Auth(_) => ("auth", "AUTH"),
            Command::Etrn => ("etrn", "ETRN"),
            Command::Unknown(_) => ("unknown", "UNKNOWN"),
        }
    }

    /// The verb, for per-command counters.
    pub fn verb(&self) -> &'static str {
        self.names().0
    }

    /// The name in "lost connection after X" and "timeout after X".
    pub fn log_name(&self) -> &'static str {
        self.names().1
    }
}

fn syntax(text: &str) -> Reply {
    Reply::new(501, "5.5.4", text)
}

/// Splits `FROM:<path> PARAMS` (or `TO:`). Accepts a space after the colon
/// and a missing pair of brackets, as Postfix does.
fn path_and_params(
    rest: &str,
    prefix: &str,
    usage: &str,
) -> Result<(String, Vec<EsmtpParam>), Reply> {
    let head = rest.get(..prefix.len()).ok_or_else(|| syntax(usage))?;
    if !head.eq_ignore_ascii_case(prefix) {
        return Err(syntax(usage));
    }
    let rest = rest[prefix.len()..].trim_start();
    let (path, params) = if let Some(inner) = rest.strip_prefix('<') {
        // The path ends at the first '>' outside a quoted local part.
        let b = inner.as_bytes();
        let mut i = 0;
        let mut quoted = false;
        loop {
            match b.get(i) {
                None => return Err(syntax(usage)),
                Some(b'\\') if quoted => i += 2,
                Some(b'"') => {
                    quoted = !quoted;
                    i += 1;
                }
                Some(b'>') if !quoted => break,
                Some(_) => i += 1,
            }
        }
        let after = &inner[i + 1..];
        if !after.is_empty() && !after.starts_with(' ') {
            return Err(syntax(usage));
        }
        (inner[..i].to_string(), after)
    } else {
        let (p, after) = rest.split_once(' ').unwrap_or((rest, ""));
        if p.is_empty() {
            return Err(syntax(usage));
        }
        (p.to_string(), after)
    };
    let mut out = Vec::new();
    for word in params.split(' ').filter(|w| !w.is_empty()) {
        let (k, v) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (word, None),
        };
        if k.is_empty()
            || !k.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
            || k.starts_with('-')
        {
            return Err(Reply::new(
                555,
                "5.5.4",
                &format!("Unsupported option: {word}"),
            ));
        }
        if let Some(v) = v
            && (v.is_empty() || v.chars().any(|c| c.is_control() || c == '=' || c == ' '))
        {
            return Err(Reply::new(
                501,
                "5.5.4",
                &format!("Bad parameter syntax: {word}"),
            ));
        }
        out.push(EsmtpParam {
            key: k.to_ascii_uppercase(),
            value: v.map(str::to_string),
        });
    }
    Ok((path, out))
}

/// Parses one command line (no CRLF). Errors are the reply to send.
pub fn parse_command(line: &[u8]) -> Result<Command, Reply> {
    let line = std::str::from_utf8(line)
        .map_err(|_| Reply::new(500, "5.5.2", "Error: bad UTF-8 syntax"))?;
    if line.chars().any(|c| c.is_control() && c != '\t') {
        return Err(Reply::new(500, "5.5.2", "Error: bad syntax"));
    }
    let line = line.trim_end_matches([' ', '\t']);
    if line.is_empty() {
        return Err(Reply::new(500, "5.5.2", "Error: bad syntax"));
    }
    let (verb, rest) = match line.split_once([' ', '\t']) {
        Some((v, r)) => (v, r.trim_start_matches([' ', '\t'])),
        None => (line, ""),
    };
    let verb_uc = verb.to_ascii_uppercase();
    let none = |cmd: Command, usage: &str| {
        if rest.is_empty() {
            Ok(cmd)
        } else {
            Err(syntax(usage))
        }
    };
    match verb_uc.as_str() {
        "HELO" | "EHLO" => {
            let arg = rest.split([' ', '\t']).next().unwrap_or("");
            if arg.is_empty() {
                let text = format!("Syntax: {verb_uc} hostname");
                return Err(Reply::bare(501, &text));
            }
            Ok(if verb_uc == "HELO" {
                Command::Helo(arg.into())
            } else {
                Command::Ehlo(arg.into())
            })
        }
        "MAIL" => {
            let (path, params) = path_and_params(rest, "FROM:", "Syntax: MAIL FROM:<address>")?;
            Ok(Command::Mail { path, params })
        }
        "RCPT" => {
            let (path, params) = path_and_params(rest, "TO:", "Syntax: RCPT TO:<address>")?;
            Ok(Command::Rcpt { path, params })
        }
        "DATA" => none(Command::Data, "Syntax: DATA"),
        "BDAT" => {
            let mut it = rest.split(' ').filter(|w| !w.is_empty());
            let size = it
                .next()
                .filter(|s| !s.is_empty() && s.len() <= 18 && s.bytes().all(|c| c.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| syntax("Syntax: BDAT count [LAST]"))?;
            let last = match it.next() {
                None => false,
                Some(w) if w.eq_ignore_ascii_case("LAST") => true,
                Some(_) => return Err(syntax("Syntax: BDAT count [LAST]")),
            };
            if it.next().is_some() {
                return Err(syntax("Syntax: BDAT count [LAST]"));
            }
            Ok(Command::Bdat { size, last })
        }
        "RSET" => none(Command::Rset, "Syntax: RSET"),
        "NOOP" => Ok(Command::Noop),
        "QUIT" => Ok(Command::Quit),
        "VRFY" => {
            if rest.is_empty() {
                return Err(syntax("Syntax: VRFY address"));
            }
            Ok(Command::Vrfy(rest.into()))
        }
        "HELP" => Ok(Command::Help),
        "STARTTLS" => none(Command::Starttls, "Syntax: STARTTLS"),
        "AUTH" => Ok(Command::Auth(rest.into())),
        "ETRN" => Ok(Command::Etrn),
        _ => Ok(Command::Unknown(verb.chars().take(32).collect())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Command {
        parse_command(s.as_bytes()).unwrap()
    }
    fn err(s: &[u8]) -> String {
        parse_command(s).unwrap_err().render(true)
    }

    #[test]
    fn verbs() {
        assert_eq!(
            ok("ehlo client.example"),
            Command::Ehlo("client.example".into())
        );
        assert_eq!(ok("QUIT"), Command::Quit);
        assert_eq!(
            ok("BDAT 100 LAST"),
            Command::Bdat {
                size: 100,
                last: true
            }
        );
        assert_eq!(ok("xyzzy"), Command::Unknown("xyzzy".into()));
        assert_eq!(err(b"HELO"), "501 Syntax: HELO hostname\r\n");
        assert_eq!(err(b"BDAT x"), "501 5.5.4 Syntax: BDAT count [LAST]\r\n");
        assert_eq!(err(b"DATA now"), "501 5.5.4 Syntax: DATA\r\n");
        assert!(err(b"NOOP \xff").starts_with("500 5.5.2"));
        assert!(err(b"NOOP\x00").starts_with("500 5.5.2"));
    }

    #[test]
    fn mail_and_rcpt() {
        assert_eq!(
            ok("MAIL FROM:<a@b.example> SIZE=100 BODY=8BITMIME"),
            Command::Mail {
                path: "a@b.example".into(),
                params: vec![
                    EsmtpParam {
                        key: "SIZE".into(),
                        value: Some("100".into())
                    },
                    EsmtpParam {
                        key: "BODY".into(),
                        value: Some("8BITMIME".into())
                    }
                ]
            }
        );
        assert_eq!(
            ok("mail from: <>"),
            Command::Mail {
                path: "".into(),
                params: vec![]
            }
        );
        assert_eq!(
            ok("RCPT TO:user@x"),
            Command::Rcpt {
                path: "user@x".into(),
                params: vec![]
            }
        );
        assert_eq!(
            ok("RCPT TO:<\"a>b\"@x> NOTIFY=NEVER"),
            Command::Rcpt {
                path: "\"a>b\"@x".into(),
                params: vec![EsmtpParam {
                    key: "NOTIFY".into(),
                    value: Some("NEVER".into())
                }]
            }
        );
        assert_eq!(
            err(b"MAIL TO:<a@b>"),
            "501 5.5.4 Syntax: MAIL FROM:<address>\r\n"
        );
        assert_eq!(
            err(b"RCPT TO:<a@b"),
            "501 5.5.4 Syntax: RCPT TO:<address>\r\n"
        );
        assert!(err(b"MAIL FROM:<a@b> =x").starts_with("555 5.5.4"));
    }
}
