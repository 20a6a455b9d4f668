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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders() {
        let r = Reply::new(250, "2.1.0", "Ok");
        assert_eq!(r.render(true), "250 2.1.0 Ok\r\n");
        assert_eq!(r.render(false), "250 Ok\r\n");
        let m = Reply::multi(250, vec!["mx".into(), "PIPELINING".into()]);
        assert_eq!(m.render(true), "250-mx\r\n250 PIPELINING\r\n");
    }
}
