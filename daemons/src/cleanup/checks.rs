//! Content inspection (header_checks(5)): header_checks on the message's
//! own headers, mime_header_checks on MIME headers, nested_header_checks
//! on the headers of attached messages, body_checks on body lines (the
//! first body_checks_size_limit bytes of each MIME part). The MIME
//! structure comes from `postern_proto::mime`.
//!
//! Actions: REJECT and 4NN/5NN text (the message is refused at the end of
//! data), DISCARD, HOLD, REDIRECT, BCC, IGNORE, STRIP, PREPEND, REPLACE,
//! WARN, INFO, PASS, DUNNO and OK. FILTER, and a table that cannot be
//! read, refuse the message with a temporary error: never let it through
//! unchecked.
use postern_config::Params;
use postern_ipc::smtpd_cleanup::Failure;
use postern_proto::mime::HeaderClass;

use crate::restrict::split_dsn;
use crate::tablecache::{TableCache, TableRef, table_list};

/// The inspection tables of this cleanup.
pub struct ContentChecks {
    header: Vec<TableRef>,
    mime: Vec<TableRef>,
    nested: Vec<TableRef>,
    body: Vec<TableRef>,
    pub body_limit: usize,
    pub nesting_limit: usize,
}

/// What happens to the line that was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineAction {
    Keep,
    Drop,
    /// Output this line first, then the original.
    Prepend(String),
    Replace(String),
}

/// What the checks decided for the whole message so far.
#[derive(Debug, Default)]
pub struct Outcome {
    pub failure: Option<Failure>,
    pub discard: bool,
    pub hold: bool,
    pub redirect: Option<String>,
    pub bcc: Vec<String>,
    /// PASS, REJECT or DISCARD: no more inspection.
    pub stopped: bool,
    /// Log lines (`what`, the line as shown, the text) for the caller to
    /// write with the message's context.
    pub logs: Vec<(&'static str, String, String)>,
}

impl ContentChecks {
    pub fn new(p: &Params) -> ContentChecks {
        ContentChecks {
            header: table_list(p, "header_checks"),
            mime: table_list(p, "mime_header_checks"),
            nested: table_list(p, "nested_header_checks"),
            body: table_list(p, "body_checks"),
            body_limit: p.int("body_checks_size_limit").unwrap_or(51_200) as usize,
            nesting_limit: p.int("mime_nesting_limit").unwrap_or(100) as usize,
        }
    }

    /// Whether the body must be read line by line (MIME headers or body
    /// lines are inspected).
    pub fn inspect_body(&self) -> bool {
        !self.mime.is_empty() || !self.nested.is_empty() || !self.body.is_empty()
    }

    pub fn any(&self) -> bool {
        !self.header.is_empty() || self.inspect_body()
    }

    fn tables(&self, class: Option<HeaderClass>) -> &[TableRef] {
        match class {
            Some(HeaderClass::Primary) => &self.header,
            Some(HeaderClass::Mime) => &self.mime,
            Some(HeaderClass::Nested) => &self.nested,
            None => &self.body,
        }
    }

    /// Checks one header (`class`) or body line (`None`). `line` is the
    /// logical line, continuation lines joined with "\n".
    pub async fn check(
        &self,
        cache: &TableCache,
        class: Option<HeaderClass>,
        line: &[u8],
        out: &mut Outcome,
    ) -> LineAction {
        if out.stopped {
            return LineAction::Keep;
        }
        let tables = self.tables(class);
        if tables.is_empty() {
            return LineAction::Keep;
        }
        let text = String::from_utf8_lossy(line);
        let what = if class.is_some() { "header" } else { "body" };
        let shown: String = text
            .chars()
            .take(200)
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let value = match cache.lookup_any(tables, &text).await {
            Ok(Some(v)) => v,
            Ok(None) => return LineAction::Keep,
            Err(e) => {
                crate::warn!("{what} checks: {e}");
                out.failure = Some(Failure {
                    code: 451,
                    enhanced: "4.3.0".into(),
                    text: "Error: temporary lookup failure".into(),
                });
                out.stopped = true;
                return LineAction::Keep;
            }
        };
        let value = value.trim();
        let (cmd, arg) = match value.find([' ', '\t']) {
            Some(i) => (&value[..i], value[i..].trim_start()),
            None => (value, ""),
        };
        let log = |out: &mut Outcome, w: &'static str, text: &str| {
            out.logs
                .push((w, format!("{what} {shown}"), text.to_string()));
        };
        match cmd.to_ascii_uppercase().as_str() {
            "DUNNO" | "OK" => LineAction::Keep,
            c if c == "REJECT"
                || c.len() == 3
                    && matches!(c.as_bytes()[0], b'4' | b'5')
                    && c.bytes().all(|b| b.is_ascii_digit()) =>
            {
                // REJECT is 550 with 5.7.1; 4NN/5NN carry their own code.
                let code: u16 = c.parse().unwrap_or(550);
                let default = format!("{}.7.1", code / 100);
                let (dsn, rest) = split_dsn(arg);
                // The DSN's class follows the reply code's, as Postfix does.
                let mut dsn = dsn.unwrap_or(&default).to_string();
                dsn.replace_range(0..1, &(code / 100).to_string());
                let rest = if rest.is_empty() {
                    "message content rejected"
                } else {
                    rest
                };
                log(out, "reject", &format!("{dsn} {rest}"));
                out.failure = Some(Failure {
                    code,
                    enhanced: dsn,
                    text: rest.to_string(),
                });
                out.stopped = true;
                LineAction::Keep
            }
            "DISCARD" => {
                log(out, "discard", arg);
                out.discard = true;
                out.stopped = true;
                LineAction::Keep
            }
            "HOLD" => {
                log(out, "hold", arg);
                out.hold = true;
                LineAction::Keep
            }
            "PASS" => {
                log(out, "pass", arg);
                out.stopped = true;
                LineAction::Keep
            }
            "WARN" => {
                log(out, "warning", arg);
                LineAction::Keep
            }
            "INFO" => {
                log(out, "info", arg);
                LineAction::Keep
            }
            "IGNORE" => LineAction::Drop,
            "STRIP" => {
                log(out, "strip", arg);
                LineAction::Drop
            }
            "REDIRECT" | "BCC" if !arg.contains('@') => {
                crate::warn!("{what} checks: \"{value}\" needs a user@domain address; ignored");
                LineAction::Keep
            }
            "REDIRECT" => {
                log(out, "redirect", arg);
                out.redirect = Some(arg.to_string());
                LineAction::Keep
            }
            "BCC" => {
                log(out, "bcc", arg);
                if !out.bcc.iter().any(|b| b == arg) && out.bcc.len() < 16 {
                    out.bcc.push(arg.to_string());
                }
                LineAction::Keep
            }
            "PREPEND" | "REPLACE" if arg.is_empty() || arg.contains(['\r', '\n']) => {
                crate::warn!("{what} checks: \"{value}\" needs one line of text; ignored");
                LineAction::Keep
            }
            "PREPEND" | "REPLACE" if class.is_some() && !is_header(arg) => {
                crate::warn!("{what} checks: \"{value}\" must be a header (Name: value); ignored");
                LineAction::Keep
            }
            "PREPEND" => LineAction::Prepend(arg.to_string()),
            "REPLACE" => LineAction::Replace(arg.to_string()),
            other => {
                crate::warn!(
                    "{what} checks: action \"{other}\" is not supported by Postern; the message gets a temporary error"
                );
                out.failure = Some(Failure {
                    code: 451,
                    enhanced: "4.3.5".into(),
                    text: "Server configuration error".into(),
                });
                out.stopped = true;
                LineAction::Keep
            }
        }
    }
}

fn is_header(s: &str) -> bool {
    s.split_once(':')
        .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| (33..=126).contains(&b)))
}
