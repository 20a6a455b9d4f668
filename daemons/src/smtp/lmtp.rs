//! LMTP (RFC 2033), Postfix's lmtp(8) in the same client: a next hop
//! `lmtp:unix:/path` or `lmtp:inet:host:port` (`lmtp:host:port`,
//! `lmtp:[host]:port`; port lmtp_tcp_port by default; never an MX lookup).
//! LHLO instead of EHLO, and one reply per recipient after the content.
//!
//! A Unix socket is connected by the master, and only one the
//! configuration names in an `lmtp:unix:` next hop (a transport parameter
//! or a transport_maps table): this role cannot create a Unix socket of
//! its own, so it cannot reach any other.
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use postern_config::Params;
use postern_ipc::deliver::Status;
use postern_ipc::smtpd_broker as sb;

use super::dest;
use super::secure::PolicyMaps;
use super::session::{Session, Timeouts};
use super::{Smtp, suites, tls};

/// Where an LMTP next hop points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    Unix(String),
    Inet { host: String, port: u16 },
}

/// Parses what follows `lmtp:` in a next hop.
pub fn parse(s: &str, default_port: u16) -> Result<Dest, String> {
    let s = s.trim();
    if let Some(path) = s.strip_prefix("unix:") {
        if !path.starts_with('/') {
            return Err(format!(
                "lmtp:unix:{path}: the socket must be an absolute path"
            ));
        }
        return Ok(Dest::Unix(path.to_string()));
    }
    let s = s.strip_prefix("inet:").unwrap_or(s);
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("bad LMTP next hop {s}"))?;
        (h, after.strip_prefix(':'))
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, Some(p)),
            _ => (s, None),
        }
    };
    if host.is_empty() {
        return Err("LMTP next hop without a host".into());
    }
    let port = match port {
        Some(p) => p
            .parse()
            .map_err(|_| format!("bad port in LMTP next hop {s}"))?,
        None => default_port,
    };
    Ok(Dest::Inet {
        host: host.to_string(),
        port,
    })
}

/// The lmtp_* parameters that differ from the smtp client's.
pub struct LmtpSettings {
    pub lhlo_name: String,
    pub tcp_port: u16,
    pub t: Timeouts,
    /// lmtp_tls_security_level's policy (None: no STARTTLS).
    pub tls: Option<Rc<tls::Policy>>,
    /// lmtp_tls_policy_maps, when set.
    pub maps: Option<PolicyMaps>,
}

impl LmtpSettings {
    /// Reads the CAs (smtp_tls_CAfile, or the system's): call before the
    /// jail.
    pub fn new(p: &Params, cert: &Arc<tls::ClientCert>) -> Result<LmtpSettings, String> {
        let e = |x: postern_config::ParamError| x.to_string();
        let level = tls_level(p);
        let roots = tls::load_roots(p.str("smtp_tls_CAfile"), level.unwrap_or(tls::Level::May))?;
        let suites = suites::Suites::from_params(p, "lmtp")?;
        let cert_match = tls::CertMatch::from_params(p, "lmtp");
        let tls = match level {
            Some(l) => Some(Rc::new(tls::Policy::with_matches(
                l,
                "",
                (roots.clone().into(), cert.clone()),
                cert_match.for_level(l, &[]),
                cert_match.digest,
                &suites.choice(l, &Default::default())?,
            )?)),
            None => None,
        };
        let maps = (!p.list("lmtp_tls_policy_maps").map_err(e)?.is_empty()).then(|| PolicyMaps {
            table: sb::Table::LmtpTlsPolicy,
            param: "lmtp_tls_policy_maps",
            dane: false,
            roots: roots.into(),
            servername: String::new(),
            cert_match,
            suites,
            made: RefCell::default(),
        });
        let d = |n: &str| p.duration(n).map_err(e);
        let connect = d("lmtp_connect_timeout")?;
        Ok(LmtpSettings {
            lhlo_name: p.str("lmtp_lhlo_name").into(),
            tcp_port: p.int("lmtp_tcp_port").map_err(e)? as u16,
            t: Timeouts {
                // 0s: as long as the smtp client would wait.
                connect: if connect.is_zero() {
                    d("smtp_connect_timeout")?
                } else {
                    connect
                },
                helo: d("lmtp_lhlo_timeout")?,
                mail: d("lmtp_mail_timeout")?,
                rcpt: d("lmtp_rcpt_timeout")?,
                data_init: d("lmtp_data_init_timeout")?,
                data_xfer: d("lmtp_data_xfer_timeout")?,
                data_done: d("lmtp_data_done_timeout")?,
            },
            tls,
            maps,
        })
    }
}

/// The TLS level LMTP over inet: uses (lmtp_tls_security_level; empty
/// or none: no STARTTLS).
pub fn tls_level(p: &Params) -> Option<tls::Level> {
    match p.str("lmtp_tls_security_level") {
        "" | "none" => None,
        other => Some(tls::Level::parse(other)),
    }
}

type Failed = (Status, String, String);

impl Smtp {
    /// A new LMTP session for `nexthop` (`lmtp:...`).
    pub(super) async fn lmtp_session(
        &self,
        nexthop: &str,
        setup: &mut Duration,
    ) -> Result<Session, Failed> {
        let t0 = Instant::now();
        let l = &self.lmtp;
        let spec = nexthop.strip_prefix("lmtp:").unwrap_or(nexthop);
        let dest =
            parse(spec, l.tcp_port).map_err(|e| (Status::Bounced, "5.3.5".to_string(), e))?;
        let deferred = |dsn: &str, text: String| (Status::Deferred, dsn.to_string(), text);
        let r = match dest {
            Dest::Unix(path) => {
                let host = self.s.myhostname.clone();
                let fd = match self.sb.open_table(std::path::Path::new(&path)).await {
                    Ok(Some(fd)) => fd,
                    Ok(None) => {
                        return Err(deferred(
                            "4.4.1",
                            format!("connect to {host}[{path}]: No such file or directory"),
                        ));
                    }
                    Err(e) => {
                        return Err(deferred("4.4.1", format!("connect to {host}[{path}]: {e}")));
                    }
                };
                let mut s =
                    Session::from_unix(&host, &path, fd).map_err(|e| deferred("4.4.1", e))?;
                self.lmtp_greet(&mut s, None).await.map(|()| s)
            }
            Dest::Inet { host, port } => {
                let policy = self.lmtp_tls_policy(spec).await?;
                let nh = dest::Nexthop {
                    host: host.clone(),
                    port,
                    mx: false,
                };
                let hosts = dest::route(&self.dns, &nh, &[])
                    .await
                    .map_err(|e| match e {
                        dest::RouteError::Permanent(d, t) => (Status::Bounced, d, t),
                        dest::RouteError::Temporary(d, t) => (Status::Deferred, d, t),
                    })?;
                let mut last = deferred("4.4.1", format!("connect to {host}: no address"));
                let mut found = None;
                'hosts: for h in hosts {
                    for addr in dest::usable(&h.addrs, self.s.protocols, self.s.prefer) {
                        match Session::connect(&h.name, addr, l.t.connect).await {
                            Ok(mut s) => {
                                s.lmtp = true;
                                match self.lmtp_greet(&mut s, policy.as_deref()).await {
                                    Ok(()) => {
                                        found = Some(s);
                                        break 'hosts;
                                    }
                                    Err(e) => last = e,
                                }
                            }
                            Err(e) => last = deferred("4.4.1", e),
                        }
                    }
                }
                found.ok_or(last)
            }
        };
        *setup = t0.elapsed();
        r
    }

    /// The TLS policy of an inet: next hop: lmtp_tls_policy_maps by the
    /// next hop as written without `inet:` (`[host]:port`, `host:port`,
    /// `host`), as Postfix looks it up; else lmtp_tls_security_level's.
    /// None: no STARTTLS.
    async fn lmtp_tls_policy(&self, spec: &str) -> Result<Option<Rc<tls::Policy>>, Failed> {
        let l = &self.lmtp;
        let Some(maps) = &l.maps else {
            return Ok(l.tls.clone());
        };
        let key = spec.strip_prefix("inet:").unwrap_or(spec);
        Ok(
            match self.table_policy(maps, key, vec![key.to_string()]).await? {
                Some(p) if p.level == tls::Level::None => None,
                Some(p) => Some(p),
                None => l.tls.clone(),
            },
        )
    }

    /// Greeting, LHLO, and STARTTLS over inet when `policy` asks for it
    /// (lmtp_tls_security_level, or lmtp_tls_policy_maps).
    async fn lmtp_greet(
        &self,
        s: &mut Session,
        policy: Option<&tls::Policy>,
    ) -> Result<(), Failed> {
        let l = &self.lmtp;
        let deferred = |dsn: String, text: String| (Status::Deferred, dsn, text);
        if let Err(f) = s.handshake(&l.lhlo_name, &l.t).await {
            return Err(match f {
                super::session::Failure::Reply(r, step) => deferred(
                    r.dsn().replacen('5', "4", 1),
                    format!(
                        "host {}[{}] refused to talk to me: {} (in reply to {step})",
                        s.host,
                        s.peer,
                        r.text()
                    ),
                ),
                other => deferred("4.4.2".into(), s.failed(&other)),
            });
        }
        // The tls= field: none, unless TLS is tried below.
        s.features = "none".into();
        let Some(policy) = policy else { return Ok(()) };
        if s.tls.is_some() || s.is_unix() {
            return Ok(());
        }
        s.features = match policy.level {
            tls::Level::May => "may:none".into(),
            l => l.name().into(),
        };
        if !s.ext.starttls {
            if policy.level.required() {
                return Err(deferred(
                    "4.7.4".into(),
                    format!(
                        "TLS is required, but was not offered by host {}[{}]",
                        s.host, s.peer
                    ),
                ));
            }
            return Ok(());
        }
        let name = policy.name(&s.host, &s.host).ok_or_else(|| {
            deferred(
                "4.7.5".into(),
                format!("no usable TLS server name for {}", s.host),
            )
        })?;
        let connector = policy.connector_for(&s.host, &s.host);
        match s
            .starttls(
                &connector,
                name,
                &l.lhlo_name,
                &l.t,
                self.s.starttls_timeout,
            )
            .await
        {
            Ok(()) => {
                s.features = policy.level.name().into();
                s.matched = policy.authenticates();
                crate::log::line(&format!(
                    "{} TLS connection established to {}[{}]:{}: {}",
                    policy.trust_word(),
                    s.host,
                    s.peer,
                    s.addr.port(),
                    s.tls.clone().unwrap_or_default()
                ));
                Ok(())
            }
            Err(f) if policy.level.required() => Err(deferred("4.7.5".into(), s.failed(&f))),
            // Opportunistic: a refused STARTTLS goes on in plaintext; a
            // failed handshake took the connection with it.
            Err(super::session::Failure::Reply(..)) => Ok(()),
            Err(f) => Err(deferred("4.7.5".into(), s.failed(&f))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_hops() {
        assert_eq!(
            parse("unix:/run/dovecot/lmtp", 24).unwrap(),
            Dest::Unix("/run/dovecot/lmtp".into())
        );
        assert!(parse("unix:private/dovecot-lmtp", 24).is_err());
        assert_eq!(
            parse("inet:127.0.0.1:2424", 24).unwrap(),
            Dest::Inet {
                host: "127.0.0.1".into(),
                port: 2424
            }
        );
        assert_eq!(
            parse("[mail.example]", 24).unwrap(),
            Dest::Inet {
                host: "mail.example".into(),
                port: 24
            }
        );
        assert_eq!(
            parse("inet:mail.example", 24).unwrap(),
            Dest::Inet {
                host: "mail.example".into(),
                port: 24
            }
        );
        assert!(parse("inet::24", 24).is_err());
    }
}
