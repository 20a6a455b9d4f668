//! master.cf: `service type private unpriv chroot wakeup maxproc command args`.
use crate::lines::logical_lines;
use crate::{Diagnostic, Role};

/// The embedded master.cf, used when no `DIR/master.cf` exists.
pub const EMBEDDED_MASTER_CF: &str = "\
# Postern master.cf (embedded default). Same columns as Postfix's master.cf.
# ==========================================================================
# service        type  private unpriv  chroot  wakeup  maxproc command + args
# ==========================================================================
127.0.0.1:2525   inet  n       -       n       -       -       smtpd
127.0.0.1:2587   inet  n       -       n       -       -       smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
127.0.0.1:2465   inet  n       -       n       -       -       smtpd
  -o syslog_name=postfix/submissions
  -o smtpd_tls_wrappermode=yes
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceType {
    Inet,
    Unix,
    UnixDgram,
    Fifo,
    Pass,
}

/// A `-o name=value` override, with the master.cf line it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub name: String,
    pub value: String,
    pub line: usize,
}

/// Where an inet service listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// None: every address in `inet_interfaces`.
    pub host: Option<String>,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub kind: ServiceType,
    pub command: String,
    /// The Postern role that runs this entry, if any.
    pub role: Option<Role>,
    pub listen: Option<Listen>,
    pub maxproc: Option<u32>,
    pub overrides: Vec<Override>,
    pub line: usize,
}

/// Postfix services that Postern deliberately has no counterpart for: their
/// lines are accepted with a warning so a carried-over master.cf loads.
const POSTFIX_ONLY: &[&str] = &[
    "anvil",
    "discard",
    "dnsblog",
    "error",
    "flush",
    "lmtp",
    "oqmgr",
    "pipe",
    "postlogd",
    "proxymap",
    "scache",
    "showq",
    "spawn",
    "tlsmgr",
    "tlsproxy",
    "trivial-rewrite",
    "verify",
    "virtual",
];

fn role_for_command(command: &str) -> Option<Role> {
    match command {
        "smtpd" => Some(Role::Smtpd),
        "pickup" => Some(Role::Pickup),
        "cleanup" => Some(Role::Cleanup),
        "qmgr" => Some(Role::Qmgr),
        "bounce" => Some(Role::Bounce),
        "smtp" => Some(Role::Smtp),
        "local" => Some(Role::Local),
        "broker" => Some(Role::Broker),
        "resolver" => Some(Role::Resolver),
        "postscreen" => Some(Role::Postscreen),
        _ => None,
    }
}

fn port_number(s: &str) -> Option<u16> {
    match s {
        "smtp" => Some(25),
        "submission" => Some(587),
        "submissions" | "smtps" => Some(465),
        _ => s.parse().ok().filter(|&p| p > 0),
    }
}

/// Parses `[host:]port`, `[v6]:port`.
pub fn parse_listen(s: &str) -> Result<Listen, String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest
            .split_once("]:")
            .ok_or_else(|| format!("bad address \"{s}\": expected [address]:port"))?;
        (Some(h.to_string()), p)
    } else if let Some((h, p)) = s.rsplit_once(':') {
        if h.contains(':') {
            return Err(format!(
                "bad address \"{s}\": write IPv6 addresses as [address]:port"
            ));
        }
        (Some(h.to_string()), p)
    } else {
        (None, s)
    };
    let port = port_number(port).ok_or_else(|| format!("bad port in \"{s}\""))?;
    if let Some(h) = &host {
        let ok = h == "localhost"
            || h.parse::<std::net::IpAddr>().is_ok()
            || (s.starts_with('[') && h.parse::<std::net::Ipv6Addr>().is_ok());
        if !ok {
            return Err(format!(
                "bad address \"{s}\": use an IP address or localhost"
            ));
        }
    }
    Ok(Listen { host, port })
}

fn yn(field: &str) -> bool {
    matches!(field, "y" | "n" | "-")
}

fn num_or_dash(field: &str) -> Result<Option<u32>, ()> {
    if field == "-" {
        Ok(None)
    } else {
        field.parse().map(Some).map_err(|_| ())
    }
}

/// Parses master.cf text. Problems go to `diags` with the file's name.
pub fn parse(text: &str, file: &str, diags: &mut Vec<Diagnostic>) -> Vec<Service> {
    let mut services: Vec<Service> = Vec::new();
    for ll in logical_lines(text) {
        let err = |m: String| Diagnostic::error(file, Some(ll.line), m);
        let warn = |m: String| Diagnostic::warning(file, Some(ll.line), m);
        if ll.text.starts_with([' ', '\t']) {
            diags.push(err(
                "continuation line without a service line before it".into()
            ));
            continue;
        }
        // Fields with their byte offsets, so a continued -o reports its own line.
        let mut offsets = Vec::new();
        let mut fields: Vec<&str> = Vec::new();
        let mut rest = ll.text.as_str();
        let mut base = 0;
        while let Some(start) = rest.find(|c: char| !c.is_whitespace()) {
            let len = rest[start..]
                .find(char::is_whitespace)
                .unwrap_or(rest.len() - start);
            fields.push(&ll.text[base + start..base + start + len]);
            offsets.push(base + start);
            base += start + len;
            rest = &ll.text[base..];
        }
        if fields.len() < 8 {
            diags.push(err(format!(
                "expected 8 or more fields (service type private unpriv chroot wakeup maxproc command), found {}",
                fields.len()
            )));
            continue;
        }
        let kind = match fields[1] {
            "inet" => ServiceType::Inet,
            "unix" => ServiceType::Unix,
            "unix-dgram" => ServiceType::UnixDgram,
            "fifo" => ServiceType::Fifo,
            "pass" => ServiceType::Pass,
            other => {
                diags.push(err(format!(
                    "bad service type \"{other}\" (inet, unix, unix-dgram, fifo or pass)"
                )));
                continue;
            }
        };
        let mut bad = false;
        for (i, name) in [(2, "private"), (3, "unpriv"), (4, "chroot")] {
            if !yn(fields[i]) {
                diags.push(err(format!(
                    "bad {name} field \"{}\": expected y, n or -",
                    fields[i]
                )));
                bad = true;
            }
        }
        let wakeup = fields[5].trim_end_matches('?');
        if num_or_dash(wakeup).is_err() {
            diags.push(err(format!("bad wakeup field \"{}\"", fields[5])));
            bad = true;
        }
        let maxproc = match num_or_dash(fields[6]) {
            Ok(m) => m,
            Err(()) => {
                diags.push(err(format!("bad maxproc field \"{}\"", fields[6])));
                bad = true;
                None
            }
        };
        let command = fields[7].to_string();
        let mut overrides = Vec::new();
        let mut args = fields[8..].iter().zip(&offsets[8..]);
        while let Some((&a, _)) = args.next() {
            match a {
                "-o" => match args.next() {
                    Some((kv, &off)) => match kv.split_once('=') {
                        Some((n, v))
                            if !n.is_empty()
                                && n.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_') =>
                        {
                            overrides.push(Override {
                                name: n.to_string(),
                                value: v.to_string(),
                                line: ll.line_at(off),
                            })
                        }
                        _ => {
                            diags.push(err(format!(
                                "bad -o argument \"{kv}\": expected name=value"
                            )));
                            bad = true;
                        }
                    },
                    None => {
                        diags.push(err("-o without name=value".into()));
                        bad = true;
                    }
                },
                "-v" | "-D" => {}
                other => {
                    diags.push(warn(format!(
                        "ignoring unsupported argument \"{other}\" for {command}"
                    )));
                }
            }
        }
        if bad {
            continue;
        }
        let role = role_for_command(&command);
        let mut listen = None;
        match (kind, role) {
            (ServiceType::Inet, Some(Role::Smtpd | Role::Postscreen)) => {
                match parse_listen(fields[0]) {
                    Ok(l) => listen = Some(l),
                    Err(m) => {
                        diags.push(err(m));
                        continue;
                    }
                }
            }
            (ServiceType::Inet, _) => {
                diags.push(err(format!("inet service \"{}\" runs \"{command}\": Postern serves only smtpd and postscreen on inet services", fields[0])));
                continue;
            }
            // The smtpd that postscreen hands passed clients to.
            (ServiceType::Pass, Some(Role::Smtpd)) => {
                if let Some(prev) = services
                    .iter()
                    .find(|s| s.kind == ServiceType::Pass && s.name == fields[0])
                {
                    diags.push(err(format!(
                        "duplicate pass service \"{}\" (also at line {})",
                        fields[0], prev.line
                    )));
                    continue;
                }
            }
            (_, Some(Role::Postscreen)) => {
                diags.push(warn(format!("ignoring {} service \"{}\" for postscreen: postscreen listens on inet services only", fields[1], fields[0])));
                continue;
            }
            (_, Some(Role::Smtpd)) => {
                diags.push(warn(format!("ignoring {} service \"{}\" for smtpd: Postern's smtpd listens on inet services only", fields[1], fields[0])));
                continue;
            }
            (_, Some(r)) => {
                if let Some(prev) = services.iter().find(|s| s.role == Some(r)) {
                    diags.push(warn(format!("ignoring service \"{}\": only one {r} service is supported (first at line {})", fields[0], prev.line)));
                    continue;
                }
            }
            (_, None) => {
                let why = if POSTFIX_ONLY.contains(&command.as_str()) {
                    "Postern has no counterpart for this Postfix service"
                } else {
                    "unknown command"
                };
                diags.push(warn(format!(
                    "ignoring service \"{}\" ({command}): {why}",
                    fields[0]
                )));
                continue;
            }
        }
        if role == Some(Role::Postscreen) && maxproc != Some(1) {
            diags.push(warn(format!(
                "postscreen runs as one process, as in Postfix: maxproc \"{}\" is taken as 1",
                fields[6]
            )));
        }
        if let Some(l) = &listen
            && let Some(prev) = services.iter().find(|s| s.listen.as_ref() == Some(l))
        {
            diags.push(err(format!(
                "duplicate listener {} (also at line {})",
                fields[0], prev.line
            )));
            continue;
        }
        services.push(Service {
            name: fields[0].to_string(),
            kind,
            command,
            role,
            listen,
            maxproc,
            overrides,
            line: ll.line,
        });
    }
    services
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_parses_cleanly() {
        let mut d = vec![];
        let s = parse(EMBEDDED_MASTER_CF, "master.cf", &mut d);
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(s.len(), 3);
        assert_eq!(s[2].listen.as_ref().unwrap().port, 2465);
        assert_eq!(s[1].overrides[0].name, "syslog_name");
        assert_eq!(s[1].listen.as_ref().unwrap().port, 2587);
    }

    #[test]
    fn errors_and_postfix_lines() {
        let text = "\
smtp inet n - y - - smtpd
[::1]:2525 inet n - n - - smtpd -o smtpd_timeout=5s
bad
x unix q - n - - cleanup
tlsmgr unix - - y 1000? 1 tlsmgr
1.2.3.4.5:25 inet n - n - - smtpd
smtp inet n - y - - smtpd
";
        let mut d = vec![];
        let s = parse(text, "master.cf", &mut d);
        assert_eq!(s.len(), 2);
        let lines: Vec<_> = d.iter().map(|x| (x.line.unwrap(), x.is_error())).collect();
        assert_eq!(
            lines,
            vec![(3, true), (4, true), (5, false), (6, true), (7, true)]
        );
    }

    #[test]
    fn listen_forms() {
        assert_eq!(
            parse_listen("smtp").unwrap(),
            Listen {
                host: None,
                port: 25
            }
        );
        assert_eq!(
            parse_listen("[::1]:587").unwrap().host.as_deref(),
            Some("::1")
        );
        assert!(parse_listen("::1:25").is_err());
        assert!(parse_listen("example.com:25").is_err());
        assert!(parse_listen("127.0.0.1:0").is_err());
    }
}
