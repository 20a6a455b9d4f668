//! check_policy_service (SMTPD_POLICY_README): the attributes of a
//! request, in the order Postfix's smtpd sends them, and the server's
//! action applied exactly like an access table's answer. When no action
//! comes (the server is down, slow, or answers garbage), the service's
//! default action applies; the policy role has logged why.
use postern_config::Params;
use postern_config::policy::Resolved;

use super::eval::{Run, Status};
use super::{Class, Lookups, Policy, R};

/// The Postfix compatibility level whose defaults Postern follows (the
/// `compatibility_level` attribute).
pub const COMPATIBILITY_LEVEL: &str = "3.11";

/// What a policy request tells of an smtpd session beyond the
/// restrictions' facts.
#[derive(Debug, Clone, Default)]
pub struct SessionInfo {
    /// CONNECT, EHLO, HELO, MAIL, RCPT, DATA, END-OF-MESSAGE or VRFY: the
    /// command being decided on (with smtpd_delay_reject, the client and
    /// HELO lists are evaluated at RCPT, and say RCPT).
    pub protocol_state: &'static str,
    /// ESMTP or SMTP.
    pub protocol_name: &'static str,
    pub client_port: u16,
    pub server_address: String,
    pub server_port: u16,
    pub queue_id: String,
    /// Changes with every transaction, so that a server can tell the
    /// requests about one message from the next.
    pub instance: String,
    /// MAIL's SIZE, or the content's size at END-OF-MESSAGE.
    pub size: u64,
    pub sasl_method: String,
    pub tls: Option<crate::tls::stream::TlsInfo>,
    /// At DATA and END-OF-MESSAGE: how many recipients were accepted, and
    /// the recipient when there is just one.
    pub recipient_count: usize,
    pub only_recipient: Option<String>,
}

/// Resolves every policy service the lists and classes of `pol` name,
/// with the listener's smtpd_policy_service_* settings.
pub fn services(pol: &Policy, p: &Params) -> Result<Vec<(String, Resolved)>, String> {
    let get = |n: &str| p.get(n).ok().map(str::to_string);
    let mut args: Vec<String> = Vec::new();
    for list in [
        &pol.client,
        &pol.helo,
        &pol.sender,
        &pol.relay,
        &pol.recipient,
        &pol.data,
        &pol.end_of_data,
    ] {
        for r in list {
            if let R::Policy(a) = r
                && !args.contains(a)
            {
                args.push(a.clone());
            }
        }
    }
    for (_, items) in &pol.classes {
        for a in postern_config::policy::services_in(items) {
            if !args.contains(&a) {
                args.push(a);
            }
        }
    }
    args.into_iter()
        .map(|a| {
            postern_config::policy::resolve(&a, &get)
                .map(|r| (a.clone(), r))
                .map_err(|e| format!("check_policy_service {a}: {e}"))
        })
        .collect()
}

/// A value as the protocol can carry it: no control characters (a
/// line break would end the attribute), and not longer than IPC allows.
fn clean(v: &str) -> String {
    let mut out: String = v
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if out.len() > postern_ipc::policy::MAX_VALUE {
        let mut end = postern_ipc::policy::MAX_VALUE;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    out
}

impl<L: Lookups> Run<'_, L> {
    /// check_policy_service: ask, then apply the action (or the default
    /// action when none came).
    pub(super) async fn delegate(&mut self, arg: &str, class: Class) -> Status {
        // Local submission asks no policy server, as in Postfix (whose
        // sendmail never meets smtpd's restrictions at all).
        let Some(session) = self.f.session else {
            return Status::Dunno;
        };
        let Some(svc) = self
            .policy
            .services
            .iter()
            .find(|(a, _)| a == arg)
            .map(|(_, r)| r.clone())
        else {
            // Only a table's answer can name a service the lists do not.
            crate::warn!(
                "check_policy_service {arg}: not a policy service the configuration names"
            );
            return self.server_error();
        };
        let attrs = self.attributes(session, &svc);
        let server = svc.endpoint.to_string();
        let action = match self.lk.policy(&svc, attrs).await {
            Ok(a) => a,
            Err(_) => svc.default_action.clone(),
        };
        let name = self.name_of(class);
        self.table_result(&server, &action, &name, class).await
    }

    /// The request, attribute by attribute (smtpd_check.c's order).
    fn attributes(&self, s: &SessionInfo, svc: &Resolved) -> Vec<(&'static str, String)> {
        let f = &self.f;
        let after_data = matches!(s.protocol_state, "DATA" | "END-OF-MESSAGE");
        let recipient = match (f.rcpt, &s.only_recipient) {
            (Some(r), _) => r.to_string(),
            (None, Some(r)) if after_data => r.clone(),
            _ => String::new(),
        };
        let ccert = f.ccert;
        let trusted_cn = |cn: &str| match ccert {
            Some(c) if c.trusted && !cn.is_empty() => postern_proto::smtp::esmtp::xtext_encode(cn),
            _ => String::new(),
        };
        let tls = s.tls.as_ref();
        let v: Vec<(&'static str, String)> = vec![
            ("request", "smtpd_access_policy".into()),
            ("protocol_state", s.protocol_state.into()),
            ("protocol_name", s.protocol_name.into()),
            ("client_address", f.ip.to_string()),
            ("client_name", f.name.into()),
            ("client_port", s.client_port.to_string()),
            ("reverse_client_name", f.reverse_name.into()),
            ("server_address", s.server_address.clone()),
            ("server_port", s.server_port.to_string()),
            ("helo_name", f.helo.unwrap_or("").into()),
            ("sender", f.sender.unwrap_or("").into()),
            ("recipient", recipient),
            (
                "recipient_count",
                if after_data { s.recipient_count } else { 0 }.to_string(),
            ),
            ("queue_id", s.queue_id.clone()),
            ("instance", s.instance.clone()),
            ("size", s.size.to_string()),
            ("etrn_domain", String::new()),
            ("stress", String::new()),
            ("sasl_method", s.sasl_method.clone()),
            ("sasl_username", f.login.unwrap_or("").into()),
            // MAIL's AUTH= parameter, which Postern does not take.
            ("sasl_sender", String::new()),
            (
                "ccert_subject",
                trusted_cn(ccert.map_or("", |c| c.cn.as_str())),
            ),
            (
                "ccert_issuer",
                trusted_cn(ccert.map_or("", |c| c.issuer_cn.as_str())),
            ),
            (
                "ccert_fingerprint",
                ccert.map_or(String::new(), |c| c.fingerprint.clone()),
            ),
            (
                "ccert_pubkey_fingerprint",
                ccert.map_or(String::new(), |c| c.pkey_fingerprint.clone()),
            ),
            (
                "encryption_protocol",
                tls.map_or(String::new(), |t| t.protocol.to_string()),
            ),
            (
                "encryption_cipher",
                tls.map_or(String::new(), |t| t.cipher.clone()),
            ),
            ("encryption_keysize", tls.map_or(0, |t| t.bits).to_string()),
            ("tls_sni", tls.map_or(String::new(), |t| t.sni.clone())),
            ("policy_context", svc.policy_context.clone()),
            ("compatibility_level", COMPATIBILITY_LEVEL.into()),
            ("mail_version", env!("CARGO_PKG_VERSION").into()),
        ];
        v.into_iter().map(|(n, x)| (n, clean(&x))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::clean;

    #[test]
    fn values_fit_the_protocol() {
        assert_eq!(clean("a\nb\rc\0d"), "a?b?c?d");
        let long = "é".repeat(postern_ipc::policy::MAX_VALUE);
        let c = clean(&long);
        assert!(c.len() <= postern_ipc::policy::MAX_VALUE && c.len().is_multiple_of(2));
    }
}
