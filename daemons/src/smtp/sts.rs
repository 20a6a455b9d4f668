//! MTA-STS (RFC 8461) in the smtp client: the policy of a recipient
//! domain (the sts role fetches and keeps it), which MX hosts it admits,
//! and the verified TLS it asks for.
//!
//! It applies to MX next hops (a `[host]` next hop is the administrator's
//! choice, not the domain's) whose TLS policy is the global
//! smtp_tls_security_level at `may`, `encrypt`, `dane` or `dane-only`: an
//! smtp_tls_policy_maps entry for the destination is the administrator's
//! word and wins. In `enforce` mode, an MX host that no `mx:` pattern
//! matches is not used (logged), and every other host gets TLS verified
//! for its name against smtp_tls_CAfile (or the system CAs), unless DANE
//! authenticates it: DANE takes precedence where both exist. In `testing`
//! mode a host that would have been refused is logged and used. Sessions
//! are cached per next hop, so messages for two domains never share a
//! connection that only one domain's policy admitted.
use std::rc::Rc;

use postern_ipc::deliver::Status;
use postern_ipc::sts::{Mode, Policy, Reply, Request};

use super::{Smtp, dest, tls};
use crate::log;

type Failure = (Status, String, String);

/// Does the policy let the client use MX host `host` of `domain`? Err:
/// not in enforce mode (the reason the delivery gives if no host is left).
pub(super) fn admits(p: &Policy, domain: &str, host: &str) -> Result<(), Failure> {
    let pattern = postern_proto::mtasts::Policy {
        mode: postern_proto::mtasts::Mode::Enforce,
        mx: p.mx.clone(),
        max_age: p.max_age,
    };
    if pattern.matches(host) {
        return Ok(());
    }
    match p.mode {
        Mode::Enforce => {
            log::line(&format!(
                "MX host {host} does not match the MTA-STS policy of {domain} (id {}, enforce): not used",
                p.id
            ));
            Err((
                Status::Deferred,
                "4.7.5".into(),
                format!("MX host {host} does not match the MTA-STS policy of {domain}"),
            ))
        }
        Mode::Testing | Mode::None => {
            log::line(&format!(
                "MX host {host} does not match the MTA-STS policy of {domain} (id {}, testing): used all the same",
                p.id
            ));
            Ok(())
        }
    }
}

/// TLS-RPT's result type (RFC 8460 §4.3) of a failed attempt, from why
/// it failed (`dane`: the host was held to TLSA records); None: not a
/// failure of the policy (a refused connection, a timeout).
pub(super) fn result_type(dane: bool, why: &str) -> Option<&'static str> {
    Some(if why.starts_with("TLSA lookup error") {
        "dnssec-invalid"
    } else if why.contains("does not match the MTA-STS policy") {
        "validation-failure"
    } else if why.contains("TLS is required, but was not offered") {
        "starttls-not-supported"
    } else if !why.contains("Server certificate not verified") {
        return None;
    } else if dane {
        "validation-failure"
    } else if why.contains("NotValidForName") || why.contains("certificate not valid for name") {
        // rustls words an error with its context, or names it without.
        "certificate-host-mismatch"
    } else if why.contains("Expired") || why.contains("certificate expired") {
        "certificate-expired"
    } else {
        "certificate-not-trusted"
    })
}

/// Does the policy ask for verified TLS?
pub(super) fn enforces(p: Option<&Policy>) -> bool {
    p.is_some_and(|p| p.mode == Mode::Enforce)
}

impl Smtp {
    /// The MTA-STS policy that applies to next hop `nh` under `pol`, if
    /// any (mode none is none). The sts role unreachable defers: its
    /// cached policies would otherwise be skipped silently.
    pub(super) async fn sts_policy(
        &self,
        nh: &dest::Nexthop,
        pol: &Rc<tls::Policy>,
    ) -> Result<Option<Policy>, Failure> {
        let global = Rc::ptr_eq(pol, &self.tls);
        let level_applies = matches!(
            pol.level,
            tls::Level::May | tls::Level::Encrypt | tls::Level::Dane | tls::Level::DaneOnly
        );
        if !self.s.mta_sts || !nh.mx || !global || !level_applies {
            return Ok(None);
        }
        let req = Request::Policy(nh.host.clone());
        match self.sts.call(&req).await {
            Ok(Reply::Policy(p)) if p.mode != Mode::None => Ok(Some(p)),
            Ok(_) => Ok(None),
            Err(e) => {
                crate::warn!("{}: MTA-STS policy unavailable: {e}", nh.host);
                Err((
                    Status::Deferred,
                    "4.7.5".into(),
                    format!("MTA-STS policy of {} unavailable", nh.host),
                ))
            }
        }
    }

    /// TLS-RPT (smtp_tls_rpt_enable): tells the sts role about one
    /// attempt on `host` of next hop `nh`, when it was held to a policy:
    /// DANE's TLSA records (`pol`), else the domain's MTA-STS policy
    /// (`sts`), at the server's address `ip` from our `sending` address
    /// (each when known). `outcome`: success, or why it failed.
    pub(super) async fn tls_rpt(
        &self,
        nh: &dest::Nexthop,
        sts: Option<&Policy>,
        pol: Option<&tls::Policy>,
        (host, ip, sending): (&str, Option<std::net::IpAddr>, Option<std::net::IpAddr>),
        outcome: Result<(), &str>,
    ) {
        if !self.s.tls_rpt {
            return;
        }
        let tlsa = pol.filter(|p| !p.tlsa.is_empty());
        let lookup_error = outcome.is_err_and(|w| w.starts_with("TLSA lookup error"));
        let (kind, strings, mx) = match (tlsa, sts) {
            (Some(p), _) => ("tlsa", p.tlsa.clone(), vec![host.to_string()]),
            (None, _) if lookup_error => ("tlsa", Vec::new(), vec![host.to_string()]),
            (None, Some(s)) => {
                let mut lines = vec![
                    "version: STSv1".to_string(),
                    format!(
                        "mode: {}",
                        if s.mode == Mode::Enforce {
                            "enforce"
                        } else {
                            "testing"
                        }
                    ),
                ];
                lines.extend(s.mx.iter().map(|m| format!("mx: {m}")));
                lines.push(format!("max_age: {}", s.max_age));
                ("sts", lines, s.mx.clone())
            }
            (None, None) => return,
        };
        let result_type = match outcome {
            Ok(()) => "",
            Err(why) => match result_type(tlsa.is_some() || lookup_error, why) {
                Some(t) => t,
                None => return,
            },
        };
        let count = postern_ipc::sts::Count {
            domain: nh.host.clone(),
            kind: kind.into(),
            strings,
            mx,
            success: outcome.is_ok(),
            result_type: result_type.into(),
            sending_ip: sending.map(|i| i.to_string()).unwrap_or_default(),
            mx_host: host.to_string(),
            receiving_ip: ip.map(|i| i.to_string()).unwrap_or_default(),
        };
        if let Err(e) = self.sts.call(&Request::Count(count)).await {
            crate::warn!("TLS-RPT: {}: session not counted: {e}", nh.host);
        }
    }

    /// The policy an enforced MTA-STS policy gives a host DANE does not
    /// authenticate: TLS verified for the MX host's name (made once).
    pub(super) fn sts_verified(&self) -> Result<Rc<tls::Policy>, Failure> {
        let key = (tls::Level::Verify, tls::Overrides::default());
        if let Some(p) = self.fallback.borrow().get(&key) {
            return Ok(p.clone());
        }
        let p = self
            .s
            .suites
            .choice(tls::Level::Verify, &key.1)
            .and_then(|c| {
                tls::Policy::with_matches(
                    tls::Level::Verify,
                    "hostname",
                    (self.roots.clone().into(), self.cert.clone()),
                    vec!["hostname".into()],
                    crate::tls::ccert::Digest::Sha256,
                    &c,
                )
            })
            .map_err(|e| (Status::Deferred, "4.7.5".to_string(), e))?;
        let p = Rc::new(p);
        self.fallback.borrow_mut().insert(key, p.clone());
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::result_type;

    /// RFC 8460's result types from the reasons deliveries give, as the
    /// smtp client and rustls word them.
    #[test]
    fn result_types_from_reasons() {
        let not_verified =
            |e: &str| format!("Server certificate not verified (invalid peer certificate: {e})");
        for (dane, why, want) in [
            (
                false,
                not_verified(
                    "certificate not valid for name \"mx1.a.test\"; certificate is only valid for DnsName(\"mx1.b.test\")",
                ),
                Some("certificate-host-mismatch"),
            ),
            (
                false,
                not_verified("NotValidForName"),
                Some("certificate-host-mismatch"),
            ),
            (
                false,
                not_verified(
                    "certificate expired: verification time 2 (UNIX), but certificate is not valid after 1 (1 seconds ago)",
                ),
                Some("certificate-expired"),
            ),
            (
                false,
                not_verified("UnknownIssuer"),
                Some("certificate-not-trusted"),
            ),
            (
                true,
                not_verified("no TLSA record matches the server certificate chain"),
                Some("validation-failure"),
            ),
            (
                false,
                "TLSA lookup error for mx.a.test:25".into(),
                Some("dnssec-invalid"),
            ),
            (
                false,
                "MX host mx.a.test does not match the MTA-STS policy of a.test".into(),
                Some("validation-failure"),
            ),
            (
                false,
                "TLS is required, but was not offered by host mx.a.test[192.0.2.1]".into(),
                Some("starttls-not-supported"),
            ),
            (
                false,
                "connect to mx.a.test[192.0.2.1]:25: Connection refused".into(),
                None,
            ),
        ] {
            assert_eq!(result_type(dane, &why), want, "{why}");
        }
    }
}
