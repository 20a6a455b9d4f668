//! `check_policy_service`'s argument (SMTPD_POLICY_README): an endpoint,
//! `inet:host:port` or `unix:/path` (a relative path is relative to
//! queue_directory, as in Postfix), or Postfix 3.0's
//! `{ endpoint, name=value, ... }` form whose settings override the
//! `smtpd_policy_service_*` parameters for that service alone. A value
//! that holds commas or spaces is written in braces:
//! `default_action={450 4.7.1 try again, later}`.
use std::time::Duration;

use crate::tables::Endpoint;

/// One policy service, as the configuration writes it, with what its
/// `{ }` form overrides (None: the smtpd_policy_service_* parameter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyService {
    pub endpoint: Endpoint,
    pub timeout: Option<Duration>,
    pub default_action: Option<String>,
    pub max_idle: Option<Duration>,
    pub max_ttl: Option<Duration>,
    pub try_limit: Option<u32>,
    pub retry_delay: Option<Duration>,
    pub request_limit: Option<u32>,
    pub policy_context: Option<String>,
}

/// The per-service settings Postfix 3.0 defines.
pub const SETTINGS: &[&str] = &[
    "timeout",
    "default_action",
    "max_idle",
    "max_ttl",
    "try_limit",
    "retry_delay",
    "request_limit",
    "policy_context",
];

/// Parses an endpoint or a `{ }` group.
pub fn parse(arg: &str) -> Result<PolicyService, String> {
    let arg = arg.trim();
    let Some(inner) = arg.strip_prefix('{') else {
        return Ok(PolicyService::at(endpoint(arg)?));
    };
    let inner = inner
        .strip_suffix('}')
        .ok_or_else(|| format!("\"{arg}\": missing closing brace"))?;
    let items = split_group(inner)?;
    let (first, rest) = items
        .split_first()
        .ok_or_else(|| format!("\"{arg}\": no policy service endpoint"))?;
    let mut s = PolicyService::at(endpoint(first)?);
    for item in rest {
        let (name, value) = item
            .split_once('=')
            .map(|(n, v)| (n.trim(), unbrace(v.trim())))
            .ok_or_else(|| format!("\"{item}\": expected name=value"))?;
        let secs = |v: &str| -> Result<Duration, String> {
            crate::value::parse_duration(v, "s")
                .map(|d| d.value)
                .map_err(|e| format!("{name}={v}: {e}"))
        };
        let count = |v: &str| -> Result<u32, String> {
            v.parse()
                .map_err(|_| format!("{name}={v}: expected a number"))
        };
        match name {
            "timeout" => s.timeout = Some(secs(value)?),
            "max_idle" => s.max_idle = Some(secs(value)?),
            "max_ttl" => s.max_ttl = Some(secs(value)?),
            "retry_delay" => s.retry_delay = Some(secs(value)?),
            "try_limit" => s.try_limit = Some(count(value)?).filter(|n| *n > 0).or(Some(1)),
            "request_limit" => s.request_limit = Some(count(value)?),
            "default_action" if value.is_empty() => {
                return Err("default_action: empty".into());
            }
            "default_action" => s.default_action = Some(value.to_string()),
            "policy_context" => s.policy_context = Some(value.to_string()),
            other => {
                return Err(format!(
                    "unknown policy service setting \"{other}\" (known: {})",
                    SETTINGS.join(", ")
                ));
            }
        }
    }
    Ok(s)
}

impl PolicyService {
    fn at(endpoint: Endpoint) -> PolicyService {
        PolicyService {
            endpoint,
            timeout: None,
            default_action: None,
            max_idle: None,
            max_ttl: None,
            try_limit: None,
            retry_delay: None,
            request_limit: None,
            policy_context: None,
        }
    }
}

fn endpoint(text: &str) -> Result<Endpoint, String> {
    let text = text.trim();
    if let Some(addr) = text.strip_prefix("inet:") {
        return Ok(Endpoint::Inet(crate::tables::inet(text, addr)?));
    }
    // A relative path (`unix:private/policyd-spf`) is Postfix's: relative
    // to queue_directory, where spawn(8) services listen.
    if let Some(path) = text.strip_prefix("unix:") {
        if path.is_empty() || path.contains(char::is_whitespace) {
            return Err(format!("\"{text}\": expected unix:/path"));
        }
        return Ok(Endpoint::Unix(path.into()));
    }
    Err(format!("\"{text}\": expected inet:host:port or unix:/path"))
}

/// Splits a group's inside on top-level commas (braces group a value).
fn split_group(s: &str) -> Result<Vec<String>, String> {
    let (items, balanced) = crate::value::split_braced(s, |c| c == ',');
    if !balanced {
        return Err(format!("\"{s}\": unbalanced braces"));
    }
    Ok(items
        .into_iter()
        .map(|x| x.trim().to_string())
        .filter(|x| !x.is_empty())
        .collect())
}

fn unbrace(v: &str) -> &str {
    v.strip_prefix('{')
        .and_then(|x| x.strip_suffix('}'))
        .map_or(v, str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_groups() {
        let s = parse("inet:127.0.0.1:10023").unwrap();
        assert_eq!(
            s.endpoint,
            Endpoint::Inet("127.0.0.1:10023".parse().unwrap())
        );
        assert_eq!(s.timeout, None);
        let s = parse("unix:/run/policyd-spf.sock").unwrap();
        assert_eq!(s.endpoint, Endpoint::Unix("/run/policyd-spf.sock".into()));
        let s = parse(
            "{ inet:[::1]:9998, timeout=10s, default_action={450 4.7.1 try again, later}, try_limit=3, request_limit=100, policy_context=submission }",
        )
        .unwrap();
        assert_eq!(s.endpoint, Endpoint::Inet("[::1]:9998".parse().unwrap()));
        assert_eq!(s.timeout, Some(Duration::from_secs(10)));
        assert_eq!(
            s.default_action.as_deref(),
            Some("450 4.7.1 try again, later")
        );
        assert_eq!(s.try_limit, Some(3));
        assert_eq!(s.request_limit, Some(100));
        assert_eq!(s.policy_context.as_deref(), Some("submission"));
        let s = parse("{inet:localhost:9998,max_idle=5m,max_ttl=1h,retry_delay=2}").unwrap();
        assert_eq!(s.max_idle, Some(Duration::from_secs(300)));
        assert_eq!(s.max_ttl, Some(Duration::from_secs(3600)));
        assert_eq!(s.retry_delay, Some(Duration::from_secs(2)));
    }

    #[test]
    fn mistakes_are_named() {
        assert_eq!(
            parse("unix:private/policyd-spf").unwrap().endpoint,
            Endpoint::Unix("private/policyd-spf".into())
        );
        for (arg, why) in [
            ("unix:", "expected unix:/path"),
            ("tcp:127.0.0.1:9998", "expected inet:host:port"),
            ("inet:policy.example:9998", "not an IP address"),
            ("{ inet:127.0.0.1:9998, timeout=soon }", "timeout=soon"),
            (
                "{ inet:127.0.0.1:9998, frobnicate=1 }",
                "unknown policy service setting",
            ),
            ("{ inet:127.0.0.1:9998, timeout }", "expected name=value"),
            ("{ inet:127.0.0.1:9998", "missing closing brace"),
            ("{ }", "no policy service endpoint"),
            ("{ inet:127.0.0.1:9998, default_action={a }", "unbalanced"),
        ] {
            let e = parse(arg).unwrap_err();
            assert!(e.contains(why), "{arg}: {e}");
        }
    }
}
