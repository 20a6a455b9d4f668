//! Postfix's policy delegation protocol (SMTPD_POLICY_README), sans-IO:
//! a request is `name=value` lines and an empty line; the reply is the
//! same, and Postern, like Postfix, reads only its `action` attribute,
//! skipping any other, up to the empty line. The server is an untrusted
//! peer: a line longer than [`MAX_LINE`], a reply longer than
//! [`MAX_REPLY`], a reply without an action, or an action that is not
//! UTF-8 is an error (the caller then applies the default action), never
//! a partial result.

/// Longest reply line (Postfix's 4 × line_length_limit).
pub const MAX_LINE: usize = 8192;
/// Longest reply, all lines together.
pub const MAX_REPLY: usize = 64 * 1024;

/// Encodes one request. Values are printed as they are, except that a
/// byte that would break the line format (CR, LF, NUL) becomes `?`, and
/// the first `=` of a name is never part of it: names are Postern's own.
pub fn encode(attrs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    for (name, value) in attrs {
        debug_assert!(!name.contains(['=', '\n', '\r']));
        out.extend_from_slice(name.as_bytes());
        out.push(b'=');
        out.extend(value.bytes().map(|b| {
            if matches!(b, b'\r' | b'\n' | 0) {
                b'?'
            } else {
                b
            }
        }));
        out.push(b'\n');
    }
    out.push(b'\n');
    out
}

/// Why a reply cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyError {
    /// A line longer than [`MAX_LINE`], or a reply longer than [`MAX_REPLY`].
    TooLong,
    /// The empty line came without an `action` attribute.
    NoAction,
    /// `action` without a value, or an empty one.
    EmptyAction,
    /// The action is not UTF-8, or holds a control character.
    BadAction,
}

impl std::fmt::Display for ReplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReplyError::TooLong => "reply too long",
            ReplyError::NoAction => "missing attribute action",
            ReplyError::EmptyAction => "empty action",
            ReplyError::BadAction => "malformed action",
        })
    }
}

/// Reads one reply, fed in pieces as they arrive.
#[derive(Debug, Default)]
pub struct ReplyParser {
    line: Vec<u8>,
    total: usize,
    action: Option<Result<String, ReplyError>>,
}

impl ReplyParser {
    pub fn new() -> ReplyParser {
        ReplyParser::default()
    }

    /// Takes bytes; returns how many it used and, once the reply is
    /// complete (or broken), its outcome. Bytes after the end are not
    /// used: a server that sends more than one reply is out of step, and
    /// the caller closes the connection.
    pub fn feed(&mut self, data: &[u8]) -> (usize, Option<Result<String, ReplyError>>) {
        for (i, &b) in data.iter().enumerate() {
            self.total += 1;
            if self.total > MAX_REPLY {
                return (i + 1, Some(Err(ReplyError::TooLong)));
            }
            if b != b'\n' {
                if self.line.len() >= MAX_LINE {
                    return (i + 1, Some(Err(ReplyError::TooLong)));
                }
                self.line.push(b);
                continue;
            }
            let line = std::mem::take(&mut self.line);
            if line.is_empty() {
                let outcome = self.action.take().unwrap_or(Err(ReplyError::NoAction));
                return (i + 1, Some(outcome));
            }
            // The first action counts; other attributes are skipped.
            if self.action.is_none()
                && let Some(value) = attribute(&line, b"action")
            {
                self.action = Some(action(value));
            }
        }
        (data.len(), None)
    }
}

/// The value of `name=value`, when the line names `name` (a line that
/// names it without `=` has no value: an empty one).
fn attribute<'a>(line: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    match line.iter().position(|&b| b == b'=') {
        Some(eq) if &line[..eq] == name => Some(&line[eq + 1..]),
        None if line == name => Some(&[]),
        _ => None,
    }
}

fn action(value: &[u8]) -> Result<String, ReplyError> {
    let value = value.strip_suffix(b"\r").unwrap_or(value);
    let s = std::str::from_utf8(value).map_err(|_| ReplyError::BadAction)?;
    if s.chars().any(char::is_control) {
        return Err(ReplyError::BadAction);
    }
    let s = s.trim();
    if s.is_empty() {
        return Err(ReplyError::EmptyAction);
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(data: &[u8]) -> (usize, Option<Result<String, ReplyError>>) {
        ReplyParser::new().feed(data)
    }

    #[test]
    fn requests_are_lines_and_an_empty_line() {
        let r = encode(&[
            ("request", "smtpd_access_policy"),
            ("protocol_state", "RCPT"),
            ("helo_name", "evil\r\nrecipient=x"),
            ("sender", ""),
        ]);
        assert_eq!(
            r,
            b"request=smtpd_access_policy\nprotocol_state=RCPT\nhelo_name=evil??recipient=x\nsender=\n\n"
        );
    }

    #[test]
    fn the_action_is_read_and_everything_else_skipped() {
        let data = b"foo=bar\naction=DEFER_IF_PERMIT Service temporarily unavailable\nx=y\n\nnext";
        let (n, r) = parse_all(data);
        assert_eq!(
            r,
            Some(Ok("DEFER_IF_PERMIT Service temporarily unavailable".into()))
        );
        // What follows the reply is left alone.
        assert_eq!(n, data.len() - 4);
        assert_eq!(parse_all(b"action=dunno\r\n\n").1, Some(Ok("dunno".into())));
        assert_eq!(
            parse_all(b"action=OK\naction=REJECT\n\n").1,
            Some(Ok("OK".into()))
        );
        assert_eq!(
            parse_all(b"actions=OK\n\n").1,
            Some(Err(ReplyError::NoAction))
        );
        assert_eq!(parse_all(b"\n").1, Some(Err(ReplyError::NoAction)));
        assert_eq!(
            parse_all(b"action\n\n").1,
            Some(Err(ReplyError::EmptyAction))
        );
        assert_eq!(
            parse_all(b"action=  \n\n").1,
            Some(Err(ReplyError::EmptyAction))
        );
        assert_eq!(
            parse_all(b"action=\xff\n\n").1,
            Some(Err(ReplyError::BadAction))
        );
        assert_eq!(
            parse_all(b"action=a\x1bb\n\n").1,
            Some(Err(ReplyError::BadAction))
        );
        assert_eq!(parse_all(b"action=OK\n").1, None, "no end yet");
    }

    #[test]
    fn pieces_give_the_same_answer_as_the_whole() {
        let data = b"a=1\naction=REJECT go away\n\n";
        let mut p = ReplyParser::new();
        let mut got = None;
        for b in data.chunks(1) {
            let (_, r) = p.feed(b);
            if r.is_some() {
                got = r;
            }
        }
        assert_eq!(got, parse_all(data).1);
    }

    #[test]
    fn hostile_replies_are_bounded() {
        let long = vec![b'a'; MAX_LINE + 1];
        let (n, r) = parse_all(&long);
        assert_eq!(r, Some(Err(ReplyError::TooLong)));
        assert_eq!(n, MAX_LINE + 1);
        // A megabyte in one line stops at the line cap.
        let mb = vec![b'x'; 1 << 20];
        assert_eq!(parse_all(&mb).0, MAX_LINE + 1);
        // Many short lines stop at the reply cap.
        let many = b"x=y\n".repeat(MAX_REPLY);
        let (n, r) = parse_all(&many);
        assert_eq!(r, Some(Err(ReplyError::TooLong)));
        assert_eq!(n, MAX_REPLY + 1);
    }
}
