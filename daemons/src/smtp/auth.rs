//! SMTP AUTH as a client (smtp_sasl_auth_enable): the password comes from
//! the broker (smtp_sasl_password_maps), PLAIN or LOGIN as the security
//! options allow.
use postern_ipc::deliver::Status;
use postern_ipc::smtpd_broker as sb;

use super::Smtp;
use super::session::{self, Session};

impl Smtp {
    /// AUTH with the password smtp_sasl_password_maps has for this next
    /// hop (`[host]:port`, then the host, then the server's own name).
    pub(super) async fn sasl_login(
        &self,
        s: &mut Session,
        nexthop: &str,
    ) -> Result<(), (Status, String, String)> {
        let bare = nexthop
            .trim_start_matches('[')
            .split(']')
            .next()
            .unwrap_or(nexthop)
            .to_string();
        let mut found = None;
        for key in [nexthop.to_string(), bare, s.host.clone()] {
            match self.broker.lookup(sb::Table::SaslPassword, &key).await {
                Ok(Some(v)) => {
                    found = Some(v);
                    break;
                }
                Ok(None) => {}
                Err(e) => {
                    return Err((
                        Status::Deferred,
                        "4.3.0".into(),
                        format!("smtp_sasl_password_maps lookup error: {e}"),
                    ));
                }
            }
        }
        // No password for this destination: deliver without AUTH.
        let Some(v) = found else { return Ok(()) };
        let Some((user, password)) = v.split_once(':') else {
            return Err((
                Status::Deferred,
                "4.3.5".into(),
                format!("smtp_sasl_password_maps: the entry for {nexthop} is not user:password"),
            ));
        };
        let plaintext_ok = if s.tls.is_some() {
            !self.s.sasl_tls_noplaintext
        } else {
            !self.s.sasl_noplaintext
        };
        let mech = ["PLAIN", "LOGIN"]
            .into_iter()
            .find(|m| plaintext_ok && s.ext.auth.iter().any(|a| a == m));
        let Some(mech) = mech else {
            return Err((
                Status::Deferred,
                "4.7.0".into(),
                format!(
                    "SASL authentication failed; cannot authenticate to server {}[{}]: no mechanism available{}",
                    s.host,
                    s.peer,
                    if plaintext_ok {
                        ""
                    } else {
                        " (plaintext mechanisms need TLS)"
                    }
                ),
            ));
        };
        match s.auth(mech, user, password, &self.s.t).await {
            Ok(()) => Ok(()),
            Err(session::Failure::Reply(r, _)) => Err((
                Status::Deferred,
                r.dsn().replacen('5', "4", 1),
                format!(
                    "SASL authentication failed; server {}[{}] said: {}",
                    s.host,
                    s.peer,
                    r.text()
                ),
            )),
            Err(f) => Err((Status::Deferred, "4.4.2".into(), s.failed(&f))),
        }
    }
}
