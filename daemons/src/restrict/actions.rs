//! What an access table's answer means (Postfix's check_table_result):
//! OK, DUNNO, REJECT, DEFER, DEFER_IF_PERMIT, DEFER_IF_REJECT, 4NN/5NN
//! text, INFO, WARN, DISCARD, HOLD, REDIRECT, BCC, PREPEND, or a
//! restriction list evaluated in place.
use super::Class;
use super::Lookups;
use super::eval::{Run, Status, reply};
use super::parse;

/// A valid RFC 3463 code at the start of `s`, and the rest of the text.
pub(crate) fn split_dsn(s: &str) -> (Option<&str>, &str) {
    let s = s.trim_start();
    let end = s.find([' ', '\t']).unwrap_or(s.len());
    let head = &s[..end];
    let parts: Vec<&str> = head.split('.').collect();
    let ok = parts.len() == 3
        && matches!(parts[0], "2" | "4" | "5")
        && parts[1..]
            .iter()
            .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()));
    if ok {
        (Some(head), s[end..].trim_start())
    } else {
        (None, s)
    }
}

/// smtpd_dsn_fix: an address DSN (X.1.Y) fitted to what is rejected.
pub(super) fn dsn_fix(dsn: &str, class: Class) -> String {
    let b = dsn.as_bytes();
    if dsn.len() < 5 || &dsn[1..4] != ".1." {
        return dsn.to_string();
    }
    let micro = &dsn[4..];
    let fixed = match class {
        Class::Sender => match micro {
            "2" | "8" => "8",
            "3" | "7" => "7",
            _ => "0",
        },
        Class::Recipient => match micro {
            "1" | "2" | "3" | "4" | "5" | "6" => micro,
            "7" => "3",
            "8" => "2",
            _ => "0",
        },
        _ => return format!("{}.0.0", b[0] as char),
    };
    format!("{}.1.{fixed}", b[0] as char)
}

impl<L: Lookups> Run<'_, L> {
    /// check_table_result: what an access table's value means.
    pub(super) async fn table_result(
        &mut self,
        map: &str,
        value: &str,
        name: &str,
        class: Class,
    ) -> Status {
        let value = value.trim();
        let (cmd, text) = match value.find([' ', '\t']) {
            Some(i) => (&value[..i], value[i..].trim_start()),
            None => (value, ""),
        };
        let upper = cmd.to_ascii_uppercase();
        let what = class.text();
        let codes = self.policy.codes.clone();
        let denied = |dsn_default: &str, code: u16, default_text: &str| {
            let (dsn, rest) = split_dsn(text);
            let dsn = dsn_fix(dsn.unwrap_or(dsn_default), class);
            let rest = if rest.is_empty() { default_text } else { rest };
            reply(code, &dsn, format!("<{name}>: {what} rejected: {rest}"))
        };
        match upper.as_str() {
            "DUNNO" => Status::Dunno,
            "OK" | "RELAY" => Status::Ok,
            _ if !cmd.is_empty() && cmd.bytes().all(|b| b.is_ascii_digit()) && cmd.len() != 3 => {
                Status::Ok
            }
            "REJECT" => {
                let r = denied("5.7.1", codes.access_map_reject, "Access denied");
                self.reject(r)
            }
            "DEFER" => {
                let r = denied("4.7.1", codes.access_map_defer, "Access denied");
                self.reject(r)
            }
            "DEFER_IF_PERMIT" => {
                let r = denied("4.7.1", codes.access_map_defer, "Service unavailable");
                self.defer_if_permit(r)
            }
            "DEFER_IF_REJECT" => {
                let r = denied("4.7.1", codes.access_map_defer, "Service unavailable");
                if self.defer_if_reject.is_none() {
                    self.defer_if_reject = Some(r);
                }
                Status::Dunno
            }
            "INFO" | "WARN" => {
                let what = if upper == "INFO" { "info" } else { "warn" };
                self.note(what, text.to_string());
                Status::Dunno
            }
            "DISCARD" => {
                let t = if text.is_empty() {
                    "triggers DISCARD action"
                } else {
                    text
                };
                let line = format!("<{name}>: {what} {t}");
                self.note("discard", line.clone());
                self.effects.discard = Some(line);
                Status::Ok
            }
            "HOLD" => {
                if self.effects.hold.is_none() {
                    let t = if text.is_empty() {
                        "triggers HOLD action"
                    } else {
                        text
                    };
                    let line = format!("<{name}>: {what} {t}");
                    self.note("hold", line.clone());
                    self.effects.hold = Some(line);
                }
                Status::Dunno
            }
            "REDIRECT" | "BCC" if !text.contains('@') => {
                crate::warn!("access table {map} entry \"{value}\" requires user@domain target");
                Status::Dunno
            }
            "REDIRECT" => {
                self.note(
                    "redirect",
                    format!("<{name}>: {what} triggers REDIRECT {text}"),
                );
                self.effects.redirect = Some(text.to_string());
                Status::Dunno
            }
            "BCC" => {
                self.note("bcc", format!("<{name}>: {what} triggers BCC {text}"));
                self.effects.bcc.push(text.to_string());
                Status::Dunno
            }
            "PREPEND" => {
                let is_header = text
                    .split_once(':')
                    .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_graphic()));
                if self.eod {
                    crate::warn!(
                        "access table {map}: action PREPEND must be used before smtpd_end_of_data_restrictions"
                    );
                } else if matches!(class, Class::Client | Class::Helo) && !self.policy.delay_reject
                {
                    crate::warn!(
                        "access table {map}: with smtpd_delay_reject = no, action PREPEND is allowed only in sender, recipient, data and end-of-data restrictions"
                    );
                } else if !is_header {
                    crate::warn!("access table {map} entry \"{value}\" requires header: text");
                } else {
                    self.effects.prepend.push(text.to_string());
                }
                Status::Dunno
            }
            _ if cmd.len() == 3
                && matches!(cmd.as_bytes()[0], b'4' | b'5')
                && cmd.bytes().all(|b| b.is_ascii_digit())
                && !text.is_empty() =>
            {
                let code: u16 = cmd.parse().unwrap_or(450);
                let default = format!("{}.7.1", cmd.as_bytes()[0] as char);
                let r = denied(&default, code, "Access denied");
                self.reject(r)
            }
            "FILTER" => {
                crate::warn!(
                    "access table {map}: action FILTER is not supported by Postern (content_filter is not either)"
                );
                self.server_error()
            }
            _ if value.contains(':') => {
                crate::warn!("access table {map} has entry with lookup table: {value}");
                crate::warn!("do not specify lookup tables inside SMTPD access maps");
                self.server_error()
            }
            _ if value.is_empty() => Status::Ok,
            _ => {
                let items = postern_config::value::split_list(value);
                let nested = parse(&items, None);
                self.list(&nested, class).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsn_codes() {
        assert_eq!(split_dsn("5.7.0 go away"), (Some("5.7.0"), "go away"));
        assert_eq!(split_dsn("go away"), (None, "go away"));
        assert_eq!(dsn_fix("5.1.1", Class::Sender), "5.1.0");
        assert_eq!(dsn_fix("5.1.7", Class::Recipient), "5.1.3");
        assert_eq!(dsn_fix("5.1.1", Class::Client), "5.0.0");
        assert_eq!(dsn_fix("5.7.1", Class::Client), "5.7.1");
    }
}
