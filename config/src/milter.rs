//! The entries of `smtpd_milters` and `non_smtpd_milters`: an endpoint
//! (`inet:host:port`, `unix:/path`, `local:/path`; a relative path is
//! under queue_directory, as in Postfix), or Postfix 3.0's
//! `{ endpoint, connect_timeout=..., command_timeout=...,
//! content_timeout=..., default_action=..., protocol=... }` form.
use std::time::Duration;

use crate::tables::Endpoint;

/// milter_default_action's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultAction {
    Accept,
    Reject,
    Tempfail,
    Quarantine,
    Shutdown,
}

impl DefaultAction {
    pub fn parse(v: &str) -> Result<DefaultAction, String> {
        Ok(match v.trim() {
            "accept" => DefaultAction::Accept,
            "reject" => DefaultAction::Reject,
            "tempfail" => DefaultAction::Tempfail,
            "quarantine" => DefaultAction::Quarantine,
            "shutdown" => DefaultAction::Shutdown,
            other => {
                return Err(format!(
                    "default_action={other}: expected accept, reject, tempfail, quarantine or shutdown"
                ));
            }
        })
    }
}

/// One Milter, with what its `{ }` form overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MilterSpec {
    pub endpoint: Endpoint,
    pub connect_timeout: Option<Duration>,
    pub command_timeout: Option<Duration>,
    pub content_timeout: Option<Duration>,
    pub default_action: Option<DefaultAction>,
    pub protocol: Option<u32>,
}

/// Which list a Milter comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// smtpd_milters: mail from SMTP clients.
    Smtpd,
    /// non_smtpd_milters: mail from sendmail.
    NonSmtpd,
}

impl Class {
    pub fn param(self) -> &'static str {
        match self {
            Class::Smtpd => "smtpd_milters",
            Class::NonSmtpd => "non_smtpd_milters",
        }
    }
}

/// The Milters of one list, in order; malformed entries (which `conf
/// --check` refuses) are left out.
pub fn list(params: &crate::Params, class: Class) -> Vec<MilterSpec> {
    params
        .list(class.param())
        .unwrap_or_default()
        .iter()
        .filter_map(|i| parse(i).ok())
        .collect()
}

/// Every Milter of both lists.
pub fn configured(params: &crate::Params) -> Vec<MilterSpec> {
    let mut v = list(params, Class::Smtpd);
    v.extend(list(params, Class::NonSmtpd));
    v
}

/// Parses one entry of a Milter list.
pub fn parse(item: &str) -> Result<MilterSpec, String> {
    let item = item.trim();
    let (first, rest) = match item.strip_prefix('{') {
        Some(inner) => {
            let inner = inner
                .strip_suffix('}')
                .ok_or_else(|| format!("\"{item}\": missing closing brace"))?;
            let items = crate::policy::split_group(inner)?;
            let (first, rest) = items
                .split_first()
                .ok_or_else(|| format!("\"{item}\": no Milter endpoint"))?;
            (first.clone(), rest.to_vec())
        }
        None => (item.to_string(), Vec::new()),
    };
    let first = match first.strip_prefix("local:") {
        Some(p) => format!("unix:{p}"),
        None => first,
    };
    let mut m = MilterSpec {
        endpoint: crate::policy::endpoint(&first)?,
        connect_timeout: None,
        command_timeout: None,
        content_timeout: None,
        default_action: None,
        protocol: None,
    };
    for setting in rest {
        let (name, value) = setting
            .split_once('=')
            .map(|(n, v)| (n.trim(), crate::policy::unbrace(v.trim())))
            .ok_or_else(|| format!("\"{setting}\": expected name=value"))?;
        let secs = |v: &str| -> Result<Duration, String> {
            crate::value::parse_duration(v, "s")
                .map(|d| d.value)
                .map_err(|e| format!("{name}={v}: {e}"))
        };
        match name {
            "connect_timeout" => m.connect_timeout = Some(secs(value)?),
            "command_timeout" => m.command_timeout = Some(secs(value)?),
            "content_timeout" => m.content_timeout = Some(secs(value)?),
            "default_action" => m.default_action = Some(DefaultAction::parse(value)?),
            "protocol" => {
                m.protocol = Some(
                    value
                        .parse()
                        .ok()
                        .filter(|v| (2..=6).contains(v))
                        .ok_or_else(|| format!("protocol={value}: expected 2 to 6"))?,
                )
            }
            other => {
                return Err(format!(
                    "unknown Milter setting \"{other}\" (known: connect_timeout, command_timeout, content_timeout, default_action, protocol)"
                ));
            }
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_and_groups() {
        let m = parse("inet:127.0.0.1:8891").unwrap();
        assert_eq!(
            m.endpoint,
            Endpoint::Inet("127.0.0.1:8891".parse().unwrap())
        );
        let m = parse("local:/run/opendkim/opendkim.sock").unwrap();
        assert_eq!(
            m.endpoint,
            Endpoint::Unix("/run/opendkim/opendkim.sock".into())
        );
        let m = parse(
            "{ unix:/run/rspamd.sock, connect_timeout=10s, command_timeout=30s, content_timeout=5m, default_action=accept, protocol=6 }",
        )
        .unwrap();
        assert_eq!(m.connect_timeout, Some(Duration::from_secs(10)));
        assert_eq!(m.content_timeout, Some(Duration::from_secs(300)));
        assert_eq!(m.default_action, Some(DefaultAction::Accept));
        assert_eq!(m.protocol, Some(6));
        for (bad, why) in [
            ("tcp:127.0.0.1:8891", "expected inet:host:port"),
            (
                "{ inet:127.0.0.1:8891, default_action=ignore }",
                "default_action=ignore",
            ),
            ("{ inet:127.0.0.1:8891, protocol=7 }", "protocol=7"),
            ("{ inet:127.0.0.1:8891, frob=1 }", "unknown Milter setting"),
            ("{ inet:127.0.0.1:8891", "missing closing brace"),
            ("{ }", "no Milter endpoint"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
