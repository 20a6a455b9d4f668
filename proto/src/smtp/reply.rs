//! SMTP replies.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// RFC 3463 enhanced status code, sent only in ESMTP sessions.
    pub enhanced: Option<String>,
    /// One entry per line.
    pub lines: Vec<String>,
}

impl Reply {
    pub fn new(code: u16, enhanced: &str, text: &str) -> Reply {
        Reply {
            code,
            enhanced: Some(enhanced.to_string()),
            lines: vec![text.to_string()],
        }
    }

    /// A reply that never carries an enhanced status code.
    pub fn bare(code: u16, text: &str) -> Reply {
        Reply {
            code,
            enhanced: None,
            lines: vec![text.to_string()],
        }
    }

    pub fn multi(code: u16, lines: Vec<String>) -> Reply {
        Reply {
            code,
            enhanced: None,
            lines,
        }
    }

    pub fn is_error(&self) -> bool {
        self.code >= 400
    }

    /// Text of the first line with its enhanced code, for log lines.
    pub fn summary(&self) -> String {
        let first = self.lines.first().map_or("", String::as_str);
        match &self.enhanced {
            Some(e) => format!("{} {} {}", self.code, e, first),
            None => format!("{} {}", self.code, first),
        }
    }

    /// Wire form. `enhanced`: the client used EHLO (RFC 2034: no enhanced
    /// codes otherwise, and never before a greeting).
    pub fn render(&self, enhanced: bool) -> String {
        let mut out = String::new();
        let n = self.lines.len().max(1);
        for i in 0..n {
            let text = self.lines.get(i).map_or("", String::as_str);
            let sep = if i + 1 < n { '-' } else { ' ' };
            out.push_str(&self.code.to_string());
            out.push(sep);
            if enhanced && let Some(e) = &self.enhanced {
                out.push_str(e);
                out.push(' ');
            }
            out.push_str(text);
            out.push_str("\r\n");
        }
        out
    }
}

/// Longest reply line a client reads, CRLF included (RFC 5321 4.5.3.1.5
/// says 512; real servers send longer text, so allow some room).
pub const MAX_REPLY_LINE: usize = 4096;
/// Most lines in one multi-line reply.
pub const MAX_REPLY_LINES: usize = 100;

/// Why a server's reply was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyError {
    /// A line that does not start with three digits.
    Malformed,
    /// More than [`MAX_REPLY_LINES`] lines, or a line over [`MAX_REPLY_LINE`].
    TooLong,
}

/// The client side: assembles a server's reply, one line at a time, like
/// Postfix's smtp_chat. The code is taken from the last line; a line is
/// `ddd-text` (more follow) or `ddd text` / `ddd` (the last).
#[derive(Debug, Default)]
pub struct ReplyParser {
    lines: Vec<String>,
}

impl ReplyParser {
    /// Feeds one line, with or without its line ending. Returns the code and
    /// the text lines once the reply is complete; the parser is then empty.
    pub fn line(&mut self, raw: &[u8]) -> Result<Option<(u16, Vec<String>)>, ReplyError> {
        if raw.len() > MAX_REPLY_LINE {
            return Err(ReplyError::TooLong);
        }
        let s = String::from_utf8_lossy(raw);
        let s = s.trim_end_matches(['\r', '\n']);
        let b = s.as_bytes();
        if b.len() < 3 || !b[..3].iter().all(u8::is_ascii_digit) {
            return Err(ReplyError::Malformed);
        }
        let code =
            u16::from(b[0] - b'0') * 100 + u16::from(b[1] - b'0') * 10 + u16::from(b[2] - b'0');
        let more = b.get(3) == Some(&b'-');
        self.lines.push(s.get(4..).unwrap_or("").to_string());
        if !more {
            return Ok(Some((code, std::mem::take(&mut self.lines))));
        }
        if self.lines.len() >= MAX_REPLY_LINES {
            return Err(ReplyError::TooLong);
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_side_parsing() {
        let mut p = ReplyParser::default();
        assert_eq!(p.line(b"250-mx.example\r\n"), Ok(None));
        assert_eq!(p.line(b"250-PIPELINING\r\n"), Ok(None));
        assert_eq!(
            p.line(b"250 SMTPUTF8\r\n"),
            Ok(Some((
                250,
                vec!["mx.example".into(), "PIPELINING".into(), "SMTPUTF8".into()]
            )))
        );
        assert_eq!(p.line(b"354\n"), Ok(Some((354, vec![String::new()]))));
        assert_eq!(p.line(b"25\r\n"), Err(ReplyError::Malformed));
        assert_eq!(p.line(b"abc def\r\n"), Err(ReplyError::Malformed));
        // A multi-byte character in the first three bytes is not a code.
        assert_eq!(p.line("2\u{e9}0 x".as_bytes()), Err(ReplyError::Malformed));
        let mut p = ReplyParser::default();
        for _ in 0..MAX_REPLY_LINES - 1 {
            assert_eq!(p.line(b"250-x"), Ok(None));
        }
        assert_eq!(p.line(b"250-x"), Err(ReplyError::TooLong));
        assert_eq!(
            ReplyParser::default().line(&[b'2'; MAX_REPLY_LINE + 1]),
            Err(ReplyError::TooLong)
        );
    }

    #[test]
    fn renders() {
        let r = Reply::new(250, "2.1.0", "Ok");
        assert_eq!(r.render(true), "250 2.1.0 Ok\r\n");
        assert_eq!(r.render(false), "250 Ok\r\n");
        let m = Reply::multi(250, vec!["mx".into(), "PIPELINING".into()]);
        assert_eq!(m.render(true), "250-mx\r\n250 PIPELINING\r\n");
    }
}
