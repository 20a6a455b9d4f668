//! The smtp client's settings: main.cf read once at start.
use std::time::Duration;

use postern_config::Params;

use super::session::Timeouts;
use super::{dane, dest, requiretls, suites};

pub(super) struct Settings {
    pub(super) helo_name: String,
    pub(super) myhostname: String,
    pub(super) t: Timeouts,
    pub(super) budget: Duration,
    pub(super) line_limit: usize,
    pub(super) cache_idle: Duration,
    pub(super) reuse_time: Duration,
    pub(super) cache_size: usize,
    pub(super) starttls_timeout: Duration,
    /// smtp_tls_wrappermode: TLS from the first byte (port 465), no
    /// STARTTLS.
    pub(super) wrapper: bool,
    pub(super) sasl: bool,
    /// `smtp_sasl_security_options` contains noplaintext: PLAIN and LOGIN
    /// only inside TLS (`smtp_sasl_tls_security_options` allows them).
    pub(super) sasl_noplaintext: bool,
    pub(super) sasl_tls_noplaintext: bool,
    /// inet_protocols and smtp_address_preference.
    pub(super) protocols: postern_config::inet::Protocols,
    pub(super) prefer: dest::Prefer,
    /// smtp_generic_maps is set (the broker has the tables).
    pub(super) generic: bool,
    /// smtp_dns_support_level = dnssec: DANE can be used.
    pub(super) dnssec: bool,
    /// smtp_mta_sts_enable.
    pub(super) mta_sts: bool,
    /// smtp_requiretls_policy and lmtp_requiretls_policy.
    pub(super) reqtls: requiretls::Policy,
    pub(super) lmtp_reqtls: requiretls::Policy,
    /// requiretls_esmtp_header and tls_required_enable: what headers of
    /// a message say about TLS.
    pub(super) reqtls_header: bool,
    pub(super) tls_required: bool,
    /// smtp_log_tls_feature_status: the tls= field in delivery lines.
    pub(super) tls_features: bool,
    /// smtp_tls_rpt_enable: sessions to domains with a policy are counted.
    pub(super) tls_rpt: bool,
    pub(super) insecure_mx: dane::InsecureMx,
    /// smtp_tls_protocols, smtp_tls_ciphers, ... (and the mandatory ones).
    pub(super) suites: suites::Suites,
}

impl Settings {
    pub(super) fn new(p: &Params) -> Result<Settings, String> {
        let e = |x: postern_config::ParamError| x.to_string();
        let d = |n: &str| p.duration(n).map_err(e);
        Ok(Settings {
            helo_name: p.str("smtp_helo_name").into(),
            myhostname: p.str("myhostname").into(),
            t: Timeouts {
                connect: d("smtp_connect_timeout")?,
                helo: d("smtp_helo_timeout")?,
                mail: d("smtp_mail_timeout")?,
                rcpt: d("smtp_rcpt_timeout")?,
                data_init: d("smtp_data_init_timeout")?,
                data_xfer: d("smtp_data_xfer_timeout")?,
                data_done: d("smtp_data_done_timeout")?,
            },
            budget: d("smtp_connect_budget")?,
            line_limit: p.int("smtp_line_length_limit").map_err(e)? as usize,
            cache_idle: d("smtp_connection_cache_time_limit")?,
            reuse_time: d("smtp_connection_reuse_time_limit")?,
            cache_size: p.int("smtp_connection_cache_size").map_err(e)? as usize,
            starttls_timeout: d("smtp_starttls_timeout")?,
            wrapper: p.bool("smtp_tls_wrappermode").map_err(e)?,
            sasl: p.bool("smtp_sasl_auth_enable").map_err(e)?,
            sasl_noplaintext: p
                .list("smtp_sasl_security_options")
                .map_err(e)?
                .iter()
                .any(|o| o == "noplaintext"),
            sasl_tls_noplaintext: p
                .list("smtp_sasl_tls_security_options")
                .map_err(e)?
                .iter()
                .any(|o| o == "noplaintext"),
            protocols: postern_config::inet::of(p),
            generic: !p.list("smtp_generic_maps").map_err(e)?.is_empty(),
            dnssec: p.str("smtp_dns_support_level") == "dnssec",
            mta_sts: p.bool("smtp_mta_sts_enable").map_err(e)?,
            reqtls: requiretls::Policy::parse(
                "smtp_requiretls_policy",
                &p.list("smtp_requiretls_policy").map_err(e)?,
            )?,
            lmtp_reqtls: requiretls::Policy::parse(
                "lmtp_requiretls_policy",
                &p.list("lmtp_requiretls_policy").map_err(e)?,
            )?,
            reqtls_header: p.bool("requiretls_esmtp_header").map_err(e)?,
            tls_required: p.bool("tls_required_enable").map_err(e)?,
            tls_features: p.bool("smtp_log_tls_feature_status").map_err(e)?,
            tls_rpt: p.bool("smtp_tls_rpt_enable").map_err(e)?,
            insecure_mx: dane::InsecureMx::parse(p.str("smtp_tls_dane_insecure_mx_policy")),
            suites: suites::Suites::from_params(p, "smtp")?,
            prefer: match p.str("smtp_address_preference") {
                "ipv4" => dest::Prefer::Ipv4,
                "ipv6" => dest::Prefer::Ipv6,
                _ => dest::Prefer::Any,
            },
        })
    }
}
