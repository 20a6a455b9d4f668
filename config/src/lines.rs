//! Postfix's logical lines: a line that starts with whitespace continues the
//! previous one; blank lines and lines whose first non-blank is `#` are
//! skipped (also inside a continued value).

/// One logical line with the number of the physical line it started on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalLine {
    pub line: usize,
    pub text: String,
    /// (byte offset in `text`, physical line) where each physical line starts.
    pub segments: Vec<(usize, usize)>,
}

impl LogicalLine {
    /// The physical line that holds byte `offset` of `text`.
    pub fn line_at(&self, offset: usize) -> usize {
        self.segments
            .iter()
            .rev()
            .find(|(o, _)| *o <= offset)
            .map_or(self.line, |(_, l)| *l)
    }
}

pub fn logical_lines(text: &str) -> Vec<LogicalLine> {
    let mut out: Vec<LogicalLine> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let continues = raw.starts_with([' ', '\t']);
        match out.last_mut() {
            Some(last) if continues => {
                last.text.push(' ');
                last.segments.push((last.text.len(), i + 1));
                last.text.push_str(trimmed.trim_end());
            }
            _ => out.push(LogicalLine {
                line: i + 1,
                text: raw.trim_end().to_string(),
                segments: vec![(0, i + 1)],
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_and_comments() {
        let t = "a = 1\n  2\n# c\n\n  # indented comment\n  3\nb=4\r\n";
        let l = logical_lines(t);
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].text, "a = 1 2 3");
        assert_eq!(l[0].line, 1);
        assert_eq!(l[1].text, "b=4");
        assert_eq!(l[1].line, 7);
        assert_eq!(l[0].line_at(l[0].text.find('3').unwrap()), 6);
        assert_eq!(l[0].line_at(0), 1);
    }

    #[test]
    fn leading_continuation_is_its_own_line() {
        let l = logical_lines("  orphan = 1\n");
        assert_eq!(l[0].text, "  orphan = 1");
    }
}
