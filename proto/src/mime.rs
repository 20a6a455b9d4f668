//! The MIME structure of a message body, walked line by line for content
//! inspection (Postfix's mime_state): which lines are headers of a MIME
//! part or of an attached message, and which are body text. Untrusted
//! input: boundaries and nesting are bounded (`mime_nesting_limit`), and a
//! structure deeper than the limit is read as plain body text.

/// Which header_checks class a header belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderClass {
    /// A non-MIME header of the message itself (header_checks).
    Primary,
    /// A MIME header anywhere, or any header of a multipart part
    /// (mime_header_checks).
    Mime,
    /// A non-MIME header of an attached message/rfc822 (nested_header_checks).
    Nested,
}

/// One classified piece of the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A logical header (continuation lines joined with "\n").
    Header(HeaderClass, Vec<u8>),
    /// The blank line that ends a header section.
    EndOfHeaders,
    /// One body line (boundaries included), without its line ending.
    Body(Vec<u8>),
}

/// Longest boundary honoured (RFC 2046 allows 70).
const MAX_BOUNDARY: usize = 200;
/// Longest logical header kept whole; longer ones are cut for matching.
pub const MAX_HEADER: usize = 64 * 1024;

/// Is this header name one of MIME's (`Content-*`, `MIME-Version`)?
pub fn is_mime_header(name: &[u8]) -> bool {
    name.len() >= 8 && name[..8].eq_ignore_ascii_case(b"content-")
        || name.eq_ignore_ascii_case(b"mime-version")
}

/// The media type (lowercase `type/subtype`) and boundary of a
/// Content-Type value.
pub fn content_type(value: &[u8]) -> (String, Option<Vec<u8>>) {
    let text = String::from_utf8_lossy(value);
    let mut parts = text.split(';');
    let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let mut boundary = None;
    for p in parts {
        if let Some((k, v)) = p.split_once('=')
            && k.trim().eq_ignore_ascii_case("boundary")
        {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|x| x.split('"').next())
                .unwrap_or(v);
            if !v.is_empty() && v.len() <= MAX_BOUNDARY {
                boundary = Some(v.as_bytes().to_vec());
            }
        }
    }
    (media, boundary)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Body,
    /// The header section of a multipart part (`nested`: of an attached
    /// message).
    Headers {
        nested: bool,
    },
}

/// Walks a message body (after the primary header section).
#[derive(Debug)]
pub struct Walker {
    limit: usize,
    boundaries: Vec<Vec<u8>>,
    state: State,
    /// The logical header being collected.
    header: Vec<u8>,
    /// The media type and boundary of the part whose headers are read.
    part_type: Option<(String, Option<Vec<u8>>)>,
    /// The part being read is in a multipart/digest (default
    /// message/rfc822).
    digest: Vec<bool>,
}

impl Walker {
    /// A walker for the body of a message whose Content-Type is
    /// `content_type` (None: text/plain).
    pub fn new(content_type_value: Option<&[u8]>, nesting_limit: usize) -> Walker {
        let mut w = Walker {
            limit: nesting_limit,
            boundaries: Vec::new(),
            state: State::Body,
            header: Vec::new(),
            part_type: None,
            digest: Vec::new(),
        };
        if let Some(v) = content_type_value {
            let (media, boundary) = content_type(v);
            w.enter(&media, boundary);
        }
        w
    }

    /// What follows a header section of this media type.
    fn enter(&mut self, media: &str, boundary: Option<Vec<u8>>) {
        if self.boundaries.len() >= self.limit {
            self.state = State::Body;
            return;
        }
        match (media.split('/').next(), boundary) {
            (Some("multipart"), Some(b)) => {
                self.digest.push(media == "multipart/digest");
                self.boundaries.push(b);
                self.state = State::Body;
            }
            _ if media == "message/rfc822" => self.state = State::Headers { nested: true },
            _ => self.state = State::Body,
        }
    }

    /// Which boundary `line` is (its depth, and whether it closes).
    fn boundary(&self, line: &[u8]) -> Option<(usize, bool)> {
        let rest = line.strip_prefix(b"--")?;
        let rest = trim_end(rest);
        self.boundaries.iter().enumerate().rev().find_map(|(i, b)| {
            if rest == b.as_slice() {
                Some((i, false))
            } else if rest.len() == b.len() + 2 && rest.starts_with(b) && rest.ends_with(b"--") {
                Some((i, true))
            } else {
                None
            }
        })
    }

    fn flush_header(&mut self, nested: bool, out: &mut Vec<Item>) {
        if self.header.is_empty() {
            return;
        }
        let h = std::mem::take(&mut self.header);
        let name_end = h.iter().position(|b| *b == b':').unwrap_or(h.len());
        let name = trim_end(&h[..name_end]);
        if is_mime_header(name) && name.eq_ignore_ascii_case(b"content-type") {
            self.part_type = Some(content_type(&h[(name_end + 1).min(h.len())..]));
        }
        let class = if !nested || is_mime_header(name) {
            HeaderClass::Mime
        } else {
            HeaderClass::Nested
        };
        out.push(Item::Header(class, h));
    }

    /// One physical line of the body, without its line ending.
    pub fn line(&mut self, line: &[u8], out: &mut Vec<Item>) {
        match self.state {
            State::Headers { nested } => {
                if line.is_empty() || line == b"\r" {
                    self.flush_header(nested, out);
                    out.push(Item::EndOfHeaders);
                    let in_digest = self.digest.last().copied().unwrap_or(false);
                    let (media, boundary) = self.part_type.take().unwrap_or_else(|| {
                        let default = if in_digest && !nested {
                            "message/rfc822"
                        } else {
                            "text/plain"
                        };
                        (default.to_string(), None)
                    });
                    self.enter(&media, boundary);
                } else if matches!(line.first(), Some(b' ' | b'\t')) && !self.header.is_empty() {
                    if self.header.len() + line.len() < MAX_HEADER {
                        self.header.push(b'\n');
                        self.header.extend_from_slice(line);
                    }
                } else if header_start(line) {
                    self.flush_header(nested, out);
                    self.header
                        .extend_from_slice(&line[..line.len().min(MAX_HEADER)]);
                } else {
                    // Not a header: the section ends without its blank line.
                    self.flush_header(nested, out);
                    self.part_type = None;
                    self.state = State::Body;
                    self.line(line, out);
                }
            }
            State::Body => {
                if let Some((depth, closing)) = self.boundary(line) {
                    self.boundaries.truncate(depth + 1);
                    self.digest.truncate(depth + 1);
                    out.push(Item::Body(line.to_vec()));
                    if closing {
                        self.boundaries.pop();
                        self.digest.pop();
                    } else {
                        self.state = State::Headers { nested: false };
                        self.part_type = None;
                    }
                } else {
                    out.push(Item::Body(line.to_vec()));
                }
            }
        }
    }

    /// The end of the body: a header still being collected.
    pub fn finish(&mut self, out: &mut Vec<Item>) {
        if let State::Headers { nested } = self.state {
            self.flush_header(nested, out);
        }
    }

    /// True while the walker is inside a part's header section.
    pub fn in_headers(&self) -> bool {
        matches!(self.state, State::Headers { .. })
    }
}

/// `Name:` at the start of a line (RFC 5322 field name: printable ASCII
/// other than the colon).
fn header_start(line: &[u8]) -> bool {
    match line.iter().position(|b| *b == b':') {
        Some(i) if i > 0 => line[..i].iter().all(|b| (33..=126).contains(b)),
        _ => false,
    }
}

fn trim_end(b: &[u8]) -> &[u8] {
    let mut end = b.len();
    while end > 0 && matches!(b[end - 1], b' ' | b'\t' | b'\r') {
        end -= 1;
    }
    &b[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(ct: &str, body: &str) -> Vec<Item> {
        let mut w = Walker::new(Some(ct.as_bytes()), 100);
        let mut out = Vec::new();
        for l in body.split("\r\n") {
            w.line(l.as_bytes(), &mut out);
        }
        w.finish(&mut out);
        out
    }

    fn headers(items: &[Item]) -> Vec<(HeaderClass, String)> {
        items
            .iter()
            .filter_map(|i| match i {
                Item::Header(c, h) => Some((*c, String::from_utf8_lossy(h).into_owned())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn parts_attachments_and_nested_messages() {
        let body = "preamble\r\n--b1\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b1\r\n\
                    Content-Type: application/octet-stream;\r\n name=\"evil.exe\"\r\n\
                    Content-Disposition: attachment; filename=\"evil.exe\"\r\n\r\nTVqQ\r\n--b1\r\n\
                    Content-Type: message/rfc822\r\n\r\nSubject: inner\r\nFrom: x@y\r\nContent-Type: text/plain\r\n\r\ninner body\r\n--b1--\r\nepilogue";
        let items = walk("multipart/mixed; boundary=\"b1\"", body);
        let h = headers(&items);
        assert_eq!(
            h,
            vec![
                (HeaderClass::Mime, "Content-Type: text/plain".into()),
                (
                    HeaderClass::Mime,
                    "Content-Type: application/octet-stream;\n name=\"evil.exe\"".into()
                ),
                (
                    HeaderClass::Mime,
                    "Content-Disposition: attachment; filename=\"evil.exe\"".into()
                ),
                (HeaderClass::Mime, "Content-Type: message/rfc822".into()),
                (HeaderClass::Nested, "Subject: inner".into()),
                (HeaderClass::Nested, "From: x@y".into()),
                (HeaderClass::Mime, "Content-Type: text/plain".into()),
            ]
        );
        let body_lines: Vec<String> = items
            .iter()
            .filter_map(|i| match i {
                Item::Body(b) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            })
            .collect();
        assert!(body_lines.contains(&"hello".to_string()));
        assert!(body_lines.contains(&"inner body".to_string()));
        assert!(body_lines.contains(&"--b1--".to_string()));
        assert!(body_lines.contains(&"epilogue".to_string()));
    }

    #[test]
    fn nesting_is_bounded() {
        let mut w = Walker::new(Some(b"multipart/mixed; boundary=a0"), 3);
        let mut out = Vec::new();
        for i in 1..10 {
            w.line(format!("--a{}", i - 1).as_bytes(), &mut out);
            w.line(
                format!("Content-Type: multipart/mixed; boundary=a{i}").as_bytes(),
                &mut out,
            );
            w.line(b"", &mut out);
        }
        assert!(w.boundaries.len() <= 3);
    }
}
