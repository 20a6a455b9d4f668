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

pub(crate) fn endpoint(text: &str) -> Result<Endpoint, String> {
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

/// A policy service with every setting decided: the `{ }` overrides,
/// else the `smtpd_policy_service_*` parameters of the listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// A Unix socket path is absolute here (queue_directory-relative
    /// paths resolved).
    pub endpoint: Endpoint,
    pub timeout: Duration,
    pub max_idle: Duration,
    pub max_ttl: Duration,
    /// At least 1.
    pub try_limit: u32,
    pub retry_delay: Duration,
    /// 0: no limit.
    pub request_limit: u32,
    pub default_action: String,
    pub policy_context: String,
}

/// The parameter each `{ }` setting overrides.
fn param(setting: &str) -> String {
    format!("smtpd_policy_service_{setting}")
}

/// Decides every setting of the service written `arg`; `get` gives a
/// parameter's expanded value in the listener's context (main.cf with its
/// -o overrides).
pub fn resolve(arg: &str, get: &dyn Fn(&str) -> Option<String>) -> Result<Resolved, String> {
    let s = parse(arg)?;
    let text = |setting: &str| -> Result<String, String> {
        get(&param(setting)).ok_or_else(|| format!("{} is not set", param(setting)))
    };
    let secs = |over: Option<Duration>, setting: &str| -> Result<Duration, String> {
        match over {
            Some(d) => Ok(d),
            None => crate::value::parse_duration(&text(setting)?, "s")
                .map(|d| d.value)
                .map_err(|e| format!("{}: {e}", param(setting))),
        }
    };
    let count = |over: Option<u32>, setting: &str| -> Result<u32, String> {
        match over {
            Some(n) => Ok(n),
            None => text(setting)?
                .trim()
                .parse()
                .map_err(|_| format!("{}: expected a number", param(setting))),
        }
    };
    let endpoint = match s.endpoint {
        Endpoint::Unix(p) if p.is_relative() => {
            let queue = get("queue_directory").unwrap_or_default();
            Endpoint::Unix(std::path::Path::new(&queue).join(p))
        }
        e => e,
    };
    Ok(Resolved {
        endpoint,
        timeout: secs(s.timeout, "timeout")?,
        max_idle: secs(s.max_idle, "max_idle")?,
        max_ttl: secs(s.max_ttl, "max_ttl")?,
        try_limit: count(s.try_limit, "try_limit")?.max(1),
        retry_delay: secs(s.retry_delay, "retry_delay")?,
        request_limit: count(s.request_limit, "request_limit")?,
        default_action: match s.default_action {
            Some(a) => a,
            None => text("default_action")?,
        },
        policy_context: match s.policy_context {
            Some(c) => c,
            None => text("policy_context")?,
        },
    })
}

impl Resolved {
    /// The connection settings in one canonical `{ }` form: how smtpd
    /// names the service to the policy role, which knows each configured
    /// service by it (`postern_policy_services`). The default action and
    /// the context are smtpd's business and stay out.
    pub fn key(&self) -> String {
        format!(
            "{{ {}, timeout={}ms, max_idle={}ms, max_ttl={}ms, try_limit={}, retry_delay={}ms, request_limit={} }}",
            self.endpoint,
            self.timeout.as_millis(),
            self.max_idle.as_millis(),
            self.max_ttl.as_millis(),
            self.try_limit,
            self.retry_delay.as_millis(),
            self.request_limit
        )
    }

    /// Parses a [`Resolved::key`] back (the policy role's side).
    pub fn from_key(key: &str) -> Result<Resolved, String> {
        let s = parse(key)?;
        let missing = || format!("\"{key}\": not a complete policy service key");
        Ok(Resolved {
            endpoint: s.endpoint,
            timeout: s.timeout.ok_or_else(missing)?,
            max_idle: s.max_idle.ok_or_else(missing)?,
            max_ttl: s.max_ttl.ok_or_else(missing)?,
            try_limit: s.try_limit.ok_or_else(missing)?,
            retry_delay: s.retry_delay.ok_or_else(missing)?,
            request_limit: s.request_limit.ok_or_else(missing)?,
            default_action: String::new(),
            policy_context: String::new(),
        })
    }
}

/// Every policy service the configuration names
/// (`postern_policy_services`), by key.
pub fn configured(params: &crate::Params) -> std::collections::BTreeMap<String, Resolved> {
    params
        .list("postern_policy_services")
        .unwrap_or_default()
        .into_iter()
        .filter_map(|k| Resolved::from_key(&k).ok().map(|r| (k, r)))
        .collect()
}

/// The policy services a restriction list names (the arguments of
/// check_policy_service).
pub fn services_in(items: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = items.iter();
    while let Some(item) = it.next() {
        if item.eq_ignore_ascii_case("check_policy_service")
            && let Some(arg) = it.next()
            && !out.contains(arg)
        {
            out.push(arg.clone());
        }
    }
    out
}

/// Splits a group's inside on top-level commas (braces group a value).
pub(crate) fn split_group(s: &str) -> Result<Vec<String>, String> {
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

pub(crate) fn unbrace(v: &str) -> &str {
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
    fn resolved_settings_and_keys() {
        let params = |n: &str| -> Option<String> {
            Some(
                match n {
                    "smtpd_policy_service_timeout" => "100s",
                    "smtpd_policy_service_max_idle" => "300s",
                    "smtpd_policy_service_max_ttl" => "1000s",
                    "smtpd_policy_service_try_limit" => "2",
                    "smtpd_policy_service_retry_delay" => "1s",
                    "smtpd_policy_service_request_limit" => "0",
                    "smtpd_policy_service_default_action" => {
                        "451 4.3.5 Server configuration problem"
                    }
                    "smtpd_policy_service_policy_context" => "",
                    "queue_directory" => "/var/spool/postern",
                    _ => return None,
                }
                .to_string(),
            )
        };
        let r = resolve("unix:private/policyd-spf", &params).unwrap();
        assert_eq!(
            r.endpoint,
            Endpoint::Unix("/var/spool/postern/private/policyd-spf".into())
        );
        assert_eq!(r.timeout, Duration::from_secs(100));
        assert_eq!(r.default_action, "451 4.3.5 Server configuration problem");
        let r2 = resolve(
            "{ inet:127.0.0.1:9998, timeout=5s, try_limit=1, default_action=DUNNO, policy_context=x }",
            &params,
        )
        .unwrap();
        assert_eq!((r2.timeout, r2.try_limit), (Duration::from_secs(5), 1));
        assert_eq!(
            (r2.default_action.as_str(), r2.policy_context.as_str()),
            ("DUNNO", "x")
        );
        for r in [r, r2] {
            let back = Resolved::from_key(&r.key()).unwrap();
            assert_eq!(back.key(), r.key());
            assert_eq!(back.endpoint, r.endpoint);
        }
        assert!(Resolved::from_key("inet:127.0.0.1:1").is_err());
        assert_eq!(
            services_in(&[
                "permit_mynetworks".into(),
                "check_policy_service".into(),
                "inet:127.0.0.1:1".into(),
                "check_policy_service".into(),
                "inet:127.0.0.1:1".into(),
            ]),
            vec!["inet:127.0.0.1:1".to_string()]
        );
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
