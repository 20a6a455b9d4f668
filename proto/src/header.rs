//! The header section of an RFC 5322 message, as cleanup sees it: split
//! from the body, one entry per header field (with its continuation lines).

/// One header field, raw (continuation lines and the final CRLF included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub raw: Vec<u8>,
}

impl Field {
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    /// The unfolded value, trimmed.
    pub fn value(&self) -> String {
        let s = String::from_utf8_lossy(&self.raw);
        let v = s.split_once(':').map_or("", |(_, v)| v);
        v.replace("\r\n", "").replace('\n', "").trim().to_string()
    }
}

/// Where the header section ends in a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Split {
    /// Need more bytes to decide.
    Incomplete,
    /// Headers are `buf[..headers]`; the body starts at `body` (after the
    /// blank line if there is one; equal to `headers` if the body starts
    /// with a non-header line instead).
    Done { headers: usize, body: usize },
}

fn is_field_name_char(c: u8) -> bool {
    (33..=126).contains(&c) && c != b':'
}

/// Finds the end of the header section. `eof`: no more bytes will come.
pub fn split(buf: &[u8], eof: bool) -> Split {
    let mut pos = 0;
    loop {
        let Some(nl) = buf[pos..].iter().position(|&b| b == b'\n') else {
            if eof {
                // The last line has no line ending.
                let line = &buf[pos..];
                return if line.is_empty()
                    || starts_field(line)
                    || (pos > 0 && line[0].is_ascii_whitespace())
                {
                    Split::Done {
                        headers: buf.len(),
                        body: buf.len(),
                    }
                } else {
                    Split::Done {
                        headers: pos,
                        body: pos,
                    }
                };
            }
            return Split::Incomplete;
        };
        let line = &buf[pos..pos + nl + 1];
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        if content.is_empty() {
            return Split::Done {
                headers: pos,
                body: pos + nl + 1,
            };
        }
        let continuation = pos > 0 && (line[0] == b' ' || line[0] == b'\t');
        if !continuation && !starts_field(content) {
            return Split::Done {
                headers: pos,
                body: pos,
            };
        }
        pos += nl + 1;
    }
}

fn starts_field(line: &[u8]) -> bool {
    let n = line.iter().take_while(|&&c| is_field_name_char(c)).count();
    n > 0 && line.get(n).is_some_and(|&c| c == b':')
        || (n > 0
            && line[n..]
                .iter()
                .take_while(|&&c| c == b' ' || c == b'\t')
                .count()
                > 0
            && {
                // "Name : value" (obsolete syntax, still seen in the wild)
                let ws = line[n..]
                    .iter()
                    .take_while(|&&c| c == b' ' || c == b'\t')
                    .count();
                line.get(n + ws) == Some(&b':')
            })
}

/// Splits a header section into fields.
pub fn fields(headers: &[u8]) -> Vec<Field> {
    let mut out: Vec<Field> = Vec::new();
    let mut pos = 0;
    while pos < headers.len() {
        let end = headers[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(headers.len(), |n| pos + n + 1);
        let line = &headers[pos..end];
        if (line[0] == b' ' || line[0] == b'\t') && !out.is_empty() {
            out.last_mut()
                .expect("non-empty")
                .raw
                .extend_from_slice(line);
        } else {
            let name_len = line.iter().take_while(|&&c| is_field_name_char(c)).count();
            out.push(Field {
                name: String::from_utf8_lossy(&line[..name_len]).into_owned(),
                raw: line.to_vec(),
            });
        }
        pos = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_folds() {
        let m = b"Subject: a\r\n  folded\r\nFrom: x\r\n\r\nbody\r\n";
        let Split::Done { headers, body } = split(m, false) else {
            panic!()
        };
        assert_eq!(&m[..headers], b"Subject: a\r\n  folded\r\nFrom: x\r\n");
        assert_eq!(&m[body..], b"body\r\n");
        let f = fields(&m[..headers]);
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].value(), "a  folded");
        assert!(f[1].is("from"));
    }

    #[test]
    fn no_headers_or_no_blank_line() {
        assert_eq!(
            split(b"just a body\r\n", false),
            Split::Done {
                headers: 0,
                body: 0
            }
        );
        assert_eq!(
            split(b"Subject: a\r\nnot a header\r\n", false),
            Split::Done {
                headers: 12,
                body: 12
            }
        );
        assert_eq!(split(b"Subject: a\r\n", false), Split::Incomplete);
        assert_eq!(
            split(b"Subject: a\r\n", true),
            Split::Done {
                headers: 12,
                body: 12
            }
        );
        assert_eq!(
            split(b"", true),
            Split::Done {
                headers: 0,
                body: 0
            }
        );
    }
}
