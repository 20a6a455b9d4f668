//! Content inspection inside a transaction: each header field of the
//! message checked as it is written, and (when MIME headers or body lines
//! are inspected) the body read line by line through the MIME walker,
//! each line kept, dropped, replaced or preceded as the checks say.
use postern_proto::header::Field;
use postern_proto::mime::{HeaderClass, Item, Walker, is_mime_header};

use super::checks::LineAction;
use super::{Settings, Txn};

/// Longest partial line held while waiting for its end; a longer run of
/// bytes without a line ending is inspected as a line of its own.
const MAX_LINE: usize = 64 * 1024;

/// The body being read line by line.
pub struct BodyLines {
    walker: Walker,
    partial: Vec<u8>,
    /// Bytes of the current MIME part's body seen (body_checks_size_limit).
    segment: usize,
}

/// A logical header as the checks see it: CRLF line breaks as "\n", the
/// final line break gone.
fn logical(raw: &[u8]) -> Vec<u8> {
    let t = raw
        .strip_suffix(b"\r\n")
        .or_else(|| raw.strip_suffix(b"\n"))
        .unwrap_or(raw);
    let mut out = Vec::with_capacity(t.len());
    let mut i = 0;
    while i < t.len() {
        if t[i] == b'\r' && t.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(t[i]);
        i += 1;
    }
    out
}

/// Writes `line` (a logical line, "\n" between physical lines) as the
/// action says, each physical line ending in CRLF.
fn emit(out: &mut Vec<u8>, line: &[u8], action: &LineAction) {
    let put = |out: &mut Vec<u8>, l: &[u8]| {
        for (i, part) in l.split(|b| *b == b'\n').enumerate() {
            if i > 0 {
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(part);
        }
        out.extend_from_slice(b"\r\n");
    };
    match action {
        LineAction::Keep => put(out, line),
        LineAction::Drop => {}
        LineAction::Prepend(t) => {
            put(out, t.as_bytes());
            put(out, line);
        }
        LineAction::Replace(t) => put(out, t.as_bytes()),
    }
}

impl Txn {
    /// One header field of the message itself: header_checks, or
    /// mime_header_checks for a MIME field. Appends what to write.
    /// `rewritten` is the field with its addresses rewritten, written in
    /// its place when the checks keep it (they see the original).
    pub(super) async fn inspect_field(
        &mut self,
        f: &Field,
        rewritten: Option<Vec<u8>>,
        s: &Settings,
        out: &mut Vec<u8>,
    ) {
        if !s.checks.any() {
            let raw = rewritten.as_deref().unwrap_or(&f.raw);
            out.extend_from_slice(raw);
            if !raw.ends_with(b"\n") {
                out.extend_from_slice(b"\r\n");
            }
            return;
        }
        let class = if is_mime_header(f.name.as_bytes()) {
            HeaderClass::Mime
        } else {
            HeaderClass::Primary
        };
        let line = logical(&f.raw);
        let action = s
            .checks
            .check(&s.tables, Some(class), &line, &mut self.inspect)
            .await;
        match rewritten {
            Some(r) => emit(out, &logical(&r), &action),
            None => emit(out, &line, &action),
        }
    }

    /// Starts line-by-line reading of the body when MIME headers or body
    /// lines are inspected; `content_type` is the message's own.
    pub(super) fn start_body(&mut self, content_type: Option<&[u8]>, s: &Settings) {
        if s.checks.inspect_body() {
            self.body = Some(BodyLines {
                walker: Walker::new(content_type, s.checks.nesting_limit),
                partial: Vec::new(),
                segment: 0,
            });
        }
    }

    /// Body bytes: written as they come, or through the checks line by
    /// line.
    pub(super) async fn body_bytes(&mut self, data: &[u8], s: &Settings) {
        let Some(mut b) = self.body.take() else {
            self.write_content(data);
            return;
        };
        b.partial.extend_from_slice(data);
        let mut out = Vec::with_capacity(data.len() + 64);
        loop {
            let line: Vec<u8> = match b.partial.iter().position(|c| *c == b'\n') {
                Some(pos) => b.partial.drain(..=pos).collect(),
                None if b.partial.len() > MAX_LINE => std::mem::take(&mut b.partial),
                None => break,
            };
            let content = line
                .strip_suffix(b"\n")
                .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
                .unwrap_or(&line);
            let mut items = Vec::new();
            b.walker.line(content, &mut items);
            self.items(&mut b, items, s, &mut out).await;
        }
        self.body = Some(b);
        if !out.is_empty() {
            self.write_content(&out);
        }
    }

    /// The end of the body: a last line without its ending, and a header
    /// the walker still holds.
    pub(super) async fn body_end(&mut self, s: &Settings) {
        let Some(mut b) = self.body.take() else {
            return;
        };
        let mut out = Vec::new();
        let mut items = Vec::new();
        if !b.partial.is_empty() {
            let last = std::mem::take(&mut b.partial);
            b.walker.line(&last, &mut items);
        }
        b.walker.finish(&mut items);
        self.items(&mut b, items, s, &mut out).await;
        if !out.is_empty() {
            self.write_content(&out);
        }
    }

    async fn items(
        &mut self,
        b: &mut BodyLines,
        items: Vec<Item>,
        s: &Settings,
        out: &mut Vec<u8>,
    ) {
        for item in items {
            match item {
                Item::Header(class, h) => {
                    let action = s
                        .checks
                        .check(&s.tables, Some(class), &h, &mut self.inspect)
                        .await;
                    emit(out, &h, &action);
                }
                Item::EndOfHeaders => {
                    b.segment = 0;
                    out.extend_from_slice(b"\r\n");
                }
                Item::Body(line) => {
                    let action = if b.segment <= s.checks.body_limit {
                        s.checks
                            .check(&s.tables, None, &line, &mut self.inspect)
                            .await
                    } else {
                        LineAction::Keep
                    };
                    b.segment += line.len() + 2;
                    emit(out, &line, &action);
                }
            }
        }
    }

    /// Writes the inspection's log lines in Postfix's shape:
    /// `ID: reject: header Subject: x from host[addr]; from=<..> to=<..>
    /// proto=ESMTP helo=<..>: 5.7.1 text`.
    pub(super) fn log_inspection(&mut self) {
        let c = &self.begin.client;
        let client = if c.addr.is_empty() {
            "local".to_string()
        } else {
            format!("{}[{}]", c.name, c.addr)
        };
        for (what, line, text) in std::mem::take(&mut self.inspect.logs) {
            let mut l = format!(
                "{}: {what}: {line} from {client}; from=<{}> to=<{}>",
                self.id, self.begin.sender, self.first_rcpt
            );
            if !c.proto.is_empty() {
                l.push_str(&format!(" proto={}", c.proto));
            }
            if !c.helo.is_empty() {
                l.push_str(&format!(" helo=<{}>", c.helo));
            }
            if !text.is_empty() {
                l.push_str(&format!(": {text}"));
            }
            crate::log::line_as(Some(c.log_name.as_str()).filter(|n| !n.is_empty()), &l);
        }
    }
}
