//! The smtpd restriction vocabulary: which names Postfix has, which of
//! them Postern implements, and which take an argument. `conf --check`
//! uses it so that a restriction Postern lacks is refused at start, never
//! answered with `451 4.3.5` at run time.

/// Restrictions Postern implements (smtpd and pickup evaluate them).
pub const SUPPORTED: &[&str] = &[
    "permit",
    "defer",
    "reject",
    "permit_mynetworks",
    "permit_sasl_authenticated",
    "reject_unauth_destination",
    "defer_unauth_destination",
    "reject_sender_login_mismatch",
    "reject_authenticated_sender_login_mismatch",
    "reject_unauthenticated_sender_login_mismatch",
    "defer_if_permit",
    "defer_if_reject",
    "warn_if_reject",
    "permit_auth_destination",
    "reject_invalid_helo_hostname",
    "reject_invalid_hostname",
    "reject_non_fqdn_helo_hostname",
    "reject_non_fqdn_hostname",
    "reject_non_fqdn_sender",
    "reject_non_fqdn_recipient",
    "reject_unlisted_recipient",
    "check_recipient_maps",
    "reject_unlisted_sender",
    "reject_unauth_pipelining",
    "reject_multi_recipient_bounce",
    "reject_plaintext_session",
    "reject_unknown_client_hostname",
    "reject_unknown_client",
    "reject_unknown_reverse_client_hostname",
    "reject_unknown_helo_hostname",
    "reject_unknown_hostname",
    "reject_unknown_sender_domain",
    "reject_unknown_recipient_domain",
    "reject_unverified_recipient",
    "reject_unverified_sender",
    "permit_tls_clientcerts",
    "permit_tls_all_clientcerts",
];

/// Restrictions Postern implements that take one argument: an access
/// table, or a time.
pub const SUPPORTED_WITH_ARGUMENT: &[&str] = &[
    "check_client_access",
    "check_helo_access",
    "check_sender_access",
    "check_recipient_access",
    "check_reverse_client_hostname_access",
    "check_client_a_access",
    "check_client_mx_access",
    "check_client_ns_access",
    "check_reverse_client_hostname_a_access",
    "check_reverse_client_hostname_mx_access",
    "check_reverse_client_hostname_ns_access",
    "check_helo_a_access",
    "check_helo_mx_access",
    "check_helo_ns_access",
    "check_sender_a_access",
    "check_sender_mx_access",
    "check_sender_ns_access",
    "check_recipient_a_access",
    "check_recipient_mx_access",
    "check_recipient_ns_access",
    "check_ccert_access",
    "sleep",
    "reject_rbl_client",
    "reject_rhsbl_client",
    "reject_rhsbl_reverse_client",
    "reject_rhsbl_helo",
    "reject_rhsbl_sender",
    "reject_rhsbl_recipient",
    "permit_dnswl_client",
    "permit_rhswl_client",
    "check_policy_service",
];

/// Whether a Postfix restriction takes an argument.
pub fn takes_argument(name: &str) -> bool {
    SUPPORTED_WITH_ARGUMENT.contains(&name) || WITH_ARGUMENT.contains(&name)
}

/// The access-map restrictions among [`SUPPORTED_WITH_ARGUMENT`].
pub fn is_access_check(name: &str) -> bool {
    name.starts_with("check_") && name.ends_with("_access")
}

/// Postfix restrictions that take one argument (a table, a DNS zone, a
/// policy service, a time).
const WITH_ARGUMENT: &[&str] = &["check_sasl_access", "check_etrn_access"];

/// Postfix restrictions without an argument that Postern does not have.
const POSTFIX_ONLY: &[&str] = &[
    "permit_inet_interfaces",
    "permit_mx_backup",
    "permit_naked_ip_address",
    "reject_authenticated_sender_login_mismatch_known",
    "reject_known_sender_login_mismatch",
    "reject_maps_rbl",
    "reject_unknown_forward_client_hostname",
    "check_relay_domains",
    "reject_unknown_address",
];

/// The restriction lists whose names are checked.
pub const LISTS: &[&str] = &[
    "smtpd_client_restrictions",
    "smtpd_helo_restrictions",
    "smtpd_sender_restrictions",
    "smtpd_relay_restrictions",
    "smtpd_recipient_restrictions",
    "smtpd_data_restrictions",
    "smtpd_end_of_data_restrictions",
    "smtpd_etrn_restrictions",
];

/// One problem in a restriction list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem(pub String);

/// Checks the items of one restriction list. `classes` are the names
/// `smtpd_restriction_classes` defines (which are themselves reported
/// where that parameter is set).
pub fn check(items: &[String], classes: &[String]) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut it = items.iter().peekable();
    while let Some(name) = it.next() {
        let n = name.as_str();
        if SUPPORTED.contains(&n) || classes.iter().any(|c| c == n) {
            continue;
        }
        if SUPPORTED_WITH_ARGUMENT.contains(&n) {
            match it.next() {
                None => out.push(Problem(format!("restriction \"{n}\" requires an argument"))),
                Some(arg) if n == "sleep" => {
                    if arg.parse::<u32>().is_err() {
                        out.push(Problem(format!(
                            "sleep {arg}: the argument must be a number of seconds"
                        )));
                    }
                }
                Some(arg) if n == "check_policy_service" => {
                    if let Err(e) = crate::policy::parse(arg) {
                        out.push(Problem(format!(
                            "restriction \"{n} {arg}\" is malformed: {e}"
                        )));
                    }
                }
                Some(arg) if is_access_check(n) => {
                    if let Err(e) = crate::tables::parse(arg) {
                        out.push(Problem(format!("{n} {arg}: {e}")));
                    }
                }
                Some(arg) => {
                    if let Err(e) = dns_list_zone(arg) {
                        out.push(Problem(format!("{n} {arg}: {e}")));
                    }
                }
            }
            continue;
        }
        if WITH_ARGUMENT.contains(&n) {
            match it.next() {
                Some(arg) => out.push(Problem(format!(
                    "restriction \"{n} {arg}\" is not supported by Postern"
                ))),
                None => out.push(Problem(format!(
                    "restriction \"{n}\" requires an argument (and is not supported by Postern)"
                ))),
            }
            continue;
        }
        if n.contains(':') && !n.starts_with('{') {
            // An implicit check_*_access of the list's own kind.
            if let Err(e) = crate::tables::parse(n) {
                out.push(Problem(format!("{n}: {e}")));
            }
            continue;
        }
        if POSTFIX_ONLY.contains(&n) {
            out.push(Problem(format!(
                "restriction \"{n}\" is not supported by Postern"
            )));
        } else if n.starts_with('{') {
            out.push(Problem(format!(
                "\"{n}\": a {{ }} group must follow the restriction it belongs to"
            )));
        } else if n.contains('.') {
            out.push(Problem(format!(
                "unknown restriction \"{n}\" (a DNS zone belongs after reject_rbl_client or a similar restriction)"
            )));
        } else {
            out.push(Problem(format!("unknown restriction \"{n}\"")));
        }
    }
    out
}

/// A DNS list argument: `zone` or `zone=filter`, the filter an address
/// pattern (`127.0.0.2`, `127.0.0.[2..11]`, `127.0.[0..255].[1;3]`).
pub fn dns_list_zone(arg: &str) -> Result<(), String> {
    let (zone, filter) = match arg.split_once('=') {
        Some((z, f)) => (z, Some(f)),
        None => (arg, None),
    };
    if zone.is_empty()
        || zone.contains(':')
        || !zone.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
    {
        return Err(format!("\"{zone}\" is not a DNS zone name"));
    }
    if let Some(f) = filter
        && crate::cidr::dnsxl_filter(f).is_none()
    {
        return Err(format!(
            "\"{f}\" is not an address pattern like 127.0.0.[2..11]"
        ));
    }
    Ok(())
}

/// The access tables a restriction list names: the arguments of
/// `check_*_access`, and implicit `type:table` entries.
pub fn tables_in(items: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = items.iter();
    while let Some(n) = it.next() {
        if SUPPORTED_WITH_ARGUMENT.contains(&n.as_str()) || WITH_ARGUMENT.contains(&n.as_str()) {
            if let Some(arg) = it.next()
                && is_access_check(n)
                && SUPPORTED_WITH_ARGUMENT.contains(&n.as_str())
            {
                out.push(arg.clone());
            }
        } else if n.contains(':') && !n.starts_with('{') {
            out.push(n.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn vocabulary() {
        assert!(check(&v(&["permit_mynetworks", "reject_unauth_destination"]), &[]).is_empty());
        let p = check(
            &v(&[
                "reject_rbl_client",
                "zen.spamhaus.org=127.0.0.x",
                "check_policy_service",
                "{ unix:private/policy, timeout=10s }",
                "zen.spamhaus.org",
                "hash:/etc/postfix/access",
                "nis:mail.access",
                "permit_naked_ip_address",
                "frobnicate",
                "myclass",
                "check_client_access",
            ]),
            &v(&["myclass"]),
        );
        let text: Vec<&str> = p.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(text.len(), 6, "{text:?}");
        assert!(text[0].contains("not an address pattern"), "{}", text[0]);
        let bad = check(
            &v(&[
                "check_policy_service",
                "{ inet:127.0.0.1:9998, timeout=soon }",
            ]),
            &[],
        );
        assert!(
            bad[0].0.contains("is malformed: timeout=soon"),
            "{}",
            bad[0].0
        );
        assert!(text[1].contains("DNS zone"));
        assert!(text[2].contains("nis:mail.access: "), "{}", text[2]);
        assert!(text[3].contains("permit_naked_ip_address"));
        assert!(text[4].contains("unknown restriction \"frobnicate\""));
        assert!(text[5].contains("requires an argument"));
        let items = v(&[
            "check_client_access",
            "cidr:/etc/postfix/clients.cidr",
            "sleep",
            "1",
            "hash:/etc/postfix/access",
            "reject_rbl_client",
            "zen.example=127.0.0.[2..11]",
        ]);
        assert!(check(&items, &[]).is_empty());
        assert_eq!(
            tables_in(&items),
            v(&["cidr:/etc/postfix/clients.cidr", "hash:/etc/postfix/access"])
        );
    }
}
