//! REQUIRETLS (RFC 8689) in the smtp client, with Postfix 3.11's
//! parameters.
//!
//! A message asks for REQUIRETLS with a `RequireTls` queue-file record
//! (the client sent MAIL FROM ... REQUIRETLS) or, when
//! `requiretls_esmtp_header` is on, a `Require-TLS-ESMTP: yes` header (how
//! the request survives a content filter or a forward). A message with
//! `TLS-Required: No` (and `tls_required_enable`) asks for the opposite:
//! no TLS policy is enforced for it, the level is `may`.
//!
//! `smtp_requiretls_policy` says, per next hop, what REQUIRETLS means:
//! - `enforce`: only a host whose certificate is matched (verify, secure,
//!   fingerprint, DANE, an enforced MTA-STS policy) and that offers
//!   REQUIRETLS after STARTTLS; the message goes out with REQUIRETLS, or
//!   comes back (5.7.10 when the level disables certificate matching,
//!   5.7.30 when no server offers TLS or REQUIRETLS);
//! - `opportunistic+starttls`: STARTTLS required, REQUIRETLS sent where
//!   offered;
//! - `opportunistic`: REQUIRETLS sent where offered inside TLS;
//! - `disable`: as if the sender had not asked.
//!
//! The policy is a list of those words and tables (tables without files:
//! `inline:{...}`, `cidr:{...}`, `static:`), looked up with the next hop
//! (no brackets or port), and for tables that want exact keys its parent
//! domains as `.parent`; the first answer decides, and no match at all is
//! `enforce`.
use postern_config::tables::Table;
use postern_ipc::deliver::Status;

type Failure = (Status, String, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Enforce,
    OpportunisticStarttls,
    Opportunistic,
    Disable,
}

impl Action {
    fn parse(word: &str) -> Option<Action> {
        match word.to_ascii_lowercase().as_str() {
            "enforce" => Some(Action::Enforce),
            "opportunistic+starttls" => Some(Action::OpportunisticStarttls),
            "opportunistic" => Some(Action::Opportunistic),
            "disable" => Some(Action::Disable),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
enum Item {
    Action(Action),
    Table(String, Table),
}

/// A parsed smtp_requiretls_policy (or lmtp_requiretls_policy).
#[derive(Debug, Clone)]
pub struct Policy {
    items: Vec<Item>,
}

impl Policy {
    /// Parses the parameter's list. Tables that need files or servers are
    /// refused here (and by conf --check): the smtp client has no files.
    pub fn parse(name: &str, list: &[String]) -> Result<Policy, String> {
        let mut items = Vec::new();
        for w in list {
            if let Some(a) = Action::parse(w) {
                items.push(Item::Action(a));
                continue;
            }
            if !w.contains(':') {
                return Err(format!("{name}: unknown action \"{w}\""));
            }
            let t = postern_config::tables::parse(w).map_err(|e| format!("{name}: {e}"))?;
            if !t.files().is_empty() || !t.remotes().is_empty() {
                return Err(format!(
                    "{name}: \"{w}\": only tables without files (inline:, cidr:{{...}}, static:) are supported by Postern yet"
                ));
            }
            items.push(Item::Table(w.clone(), t));
        }
        Ok(Policy { items })
    }

    /// The action for a next hop (`[host]:port` and `host:port` are looked
    /// up as `host`). Err: a table answered something that is no action.
    pub fn action(&self, nexthop: &str) -> Result<Action, String> {
        let host = bare(nexthop);
        for item in &self.items {
            match item {
                Item::Action(a) => return Ok(*a),
                Item::Table(spec, t) => {
                    let mut keys = vec![host.to_string()];
                    if t.fixed() {
                        let mut rest = host;
                        while let Some(i) = rest[1..].find('.') {
                            rest = &rest[i + 1..];
                            keys.push(rest.to_string());
                        }
                    }
                    for k in keys {
                        let found = t
                            .lookup_with(&k, &mut |_, _| Err("no files here".into()))
                            .map_err(|e| format!("{spec}: {e}"))?;
                        if let Some(v) = found {
                            return v
                                .split([' ', ','])
                                .find(|w| !w.is_empty())
                                .and_then(Action::parse)
                                .ok_or_else(|| format!("{spec}: \"{v}\" is no REQUIRETLS action"));
                        }
                    }
                }
            }
        }
        Ok(Action::Enforce)
    }
}

/// A next hop without brackets, port or `lmtp:inet:`.
fn bare(nexthop: &str) -> &str {
    let n = nexthop.strip_prefix("lmtp:").unwrap_or(nexthop);
    let n = n.strip_prefix("inet:").unwrap_or(n);
    if let Some(rest) = n.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match n.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => n,
    }
}

/// What a message asks of TLS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wants {
    pub requiretls: bool,
    /// `TLS-Required: No` (and no REQUIRETLS).
    pub tls_optional: bool,
}

/// Reads the message's wishes: `record` (a `RequireTls` queue-file
/// record), and the header section of `content`.
pub fn wants(record: bool, content: &[u8], esmtp_header: bool, tls_required: bool) -> Wants {
    let end = content
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(content.len(), |i| i + 2);
    let mut requiretls = record;
    let mut optional = false;
    for f in postern_proto::header::fields(&content[..end]) {
        let v = f.value();
        if esmtp_header && f.is("Require-TLS-ESMTP") && v.trim().eq_ignore_ascii_case("yes") {
            requiretls = true;
        }
        if tls_required && f.is("TLS-Required") && v.trim().eq_ignore_ascii_case("no") {
            optional = true;
        }
    }
    Wants {
        requiretls,
        tls_optional: optional && !requiretls,
    }
}

/// Whether a host whose TLS policy is `level` (`authenticated`: its
/// certificate will be matched) may be tried for a REQUIRETLS message
/// under `action`. Err: why not, the status for the last host tried.
pub fn admits(action: Action, level: &str, authenticated: bool, host: &str) -> Result<(), Failure> {
    let refuse = |what: &str| {
        Err((
            Status::Bounced,
            "5.7.10".to_string(),
            format!(
                "Sender requested REQUIRETLS, but my configured TLS security level '{level}' disables {what}. The last attempted server was {host}"
            ),
        ))
    };
    match action {
        Action::Enforce if !authenticated => refuse("certificate matching"),
        Action::OpportunisticStarttls if level == "none" => refuse("encryption"),
        _ => Ok(()),
    }
}

/// After the (second) EHLO: may this session carry the message? `tls`:
/// the session is TLS; `offered`: the server offered REQUIRETLS there.
pub fn session_ok(action: Action, tls: bool, offered: bool, server: &str) -> Result<(), Failure> {
    let fail = |text: String| Err((Status::Bounced, "5.7.30".to_string(), text));
    match action {
        Action::Enforce | Action::OpportunisticStarttls if !tls => fail(format!(
            "Sender requested REQUIRETLS, but TLS service was not offered by host {server}"
        )),
        Action::Enforce if !offered => fail(format!(
            "Sender requested REQUIRETLS, but no server was found that supports REQUIRETLS. The last attempted server was {server}"
        )),
        _ => Ok(()),
    }
}

/// What one delivery asks of the session: REQUIRETLS with the next
/// hop's action (None: not asked, or `disable`), or `TLS-Required: No`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Request {
    pub action: Option<Action>,
    pub tls_optional: bool,
}

impl super::Smtp {
    /// The request for a message (`record`: it has a `RequireTls`
    /// record) to `nexthop`. Err: the policy could not be evaluated.
    pub(super) fn tls_request(
        &self,
        nexthop: &str,
        record: bool,
        content: &[u8],
    ) -> Result<Request, String> {
        let w = wants(record, content, self.s.reqtls_header, self.s.tls_required);
        if !w.requiretls {
            return Ok(Request {
                action: None,
                tls_optional: w.tls_optional,
            });
        }
        let policy = if nexthop.starts_with("lmtp:") {
            &self.s.lmtp_reqtls
        } else {
            &self.s.reqtls
        };
        let action = policy.action(nexthop)?;
        // LMTP sessions get REQUIRETLS where offered, nothing stricter yet.
        if nexthop.starts_with("lmtp:")
            && matches!(action, Action::Enforce | Action::OpportunisticStarttls)
        {
            return Err(format!(
                "lmtp_requiretls_policy for {nexthop}: only opportunistic and disable are supported by Postern yet"
            ));
        }
        Ok(Request {
            action: (action != Action::Disable).then_some(action),
            tls_optional: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(v: &str) -> Policy {
        Policy::parse(
            "smtp_requiretls_policy",
            &postern_config::value::split_list(v),
        )
        .unwrap()
    }

    /// Postfix 3.11's default, with this machine's domain: opportunistic
    /// for it, its subdomains, localhost and address literals; enforce
    /// elsewhere.
    #[test]
    fn the_default_policy() {
        let p = policy(
            "inline:{ { example.net = opportunistic }, { .example.net = opportunistic }, { localhost = opportunistic } }, \
             cidr:{ { 0.0.0.0/0 opportunistic }, { ::/0 opportunistic } }, enforce",
        );
        for (nh, want) in [
            ("example.net", Action::Opportunistic),
            ("mail.example.net", Action::Opportunistic),
            ("[mail.example.net]:587", Action::Opportunistic),
            ("localhost", Action::Opportunistic),
            ("[192.0.2.1]:25", Action::Opportunistic),
            ("[2001:db8::1]", Action::Opportunistic),
            ("example.com", Action::Enforce),
            ("notexample.net", Action::Enforce),
        ] {
            assert_eq!(p.action(nh).unwrap(), want, "{nh}");
        }
        assert_eq!(
            policy("disable").action("x.example").unwrap(),
            Action::Disable
        );
        assert!(
            Policy::parse("p", &["hash:/etc/postfix/requiretls".into()])
                .unwrap_err()
                .contains("only tables without files")
        );
        assert!(Policy::parse("p", &["sometimes".into()]).is_err());
        assert!(
            policy("inline:{ { a.example = maybe } }")
                .action("a.example")
                .is_err()
        );
    }

    #[test]
    fn what_a_message_wants() {
        let m = b"Subject: x\r\nRequire-TLS-ESMTP: yes\r\n\r\nbody\r\nTLS-Required: no\r\n";
        assert_eq!(
            wants(false, m, true, true),
            Wants {
                requiretls: true,
                tls_optional: false
            }
        );
        assert!(!wants(false, m, false, true).requiretls);
        let m = b"Subject: x\r\nTLS-Required: No\r\n\r\nbody\r\n";
        assert!(wants(false, m, true, true).tls_optional);
        assert!(!wants(false, m, true, false).tls_optional);
        // REQUIRETLS overrides TLS-Required: No.
        assert_eq!(
            wants(true, m, true, true),
            Wants {
                requiretls: true,
                tls_optional: false
            }
        );
    }

    #[test]
    fn hosts_and_sessions() {
        assert!(admits(Action::Enforce, "verify", true, "mx").is_ok());
        let e = admits(Action::Enforce, "may", false, "mx.example").unwrap_err();
        assert_eq!(e.1, "5.7.10");
        assert!(e.2.contains("level 'may' disables certificate matching"));
        assert!(admits(Action::OpportunisticStarttls, "may", false, "mx").is_ok());
        assert!(admits(Action::OpportunisticStarttls, "none", false, "mx").is_err());
        assert!(admits(Action::Opportunistic, "none", false, "mx").is_ok());
        assert_eq!(
            session_ok(Action::Enforce, true, false, "mx[192.0.2.1]")
                .unwrap_err()
                .1,
            "5.7.30"
        );
        assert!(session_ok(Action::Enforce, true, true, "mx").is_ok());
        assert!(session_ok(Action::OpportunisticStarttls, false, false, "mx").is_err());
        assert!(session_ok(Action::OpportunisticStarttls, true, false, "mx").is_ok());
        assert!(session_ok(Action::Opportunistic, false, false, "mx").is_ok());
    }
}
