//! What `postern conf --check` and `postern start` find beyond syntax and
//! types: Postfix parameters Postern does not implement, restriction
//! names, `mynetworks` entries, and every table a setting names (its type,
//! its path, and its file, read and parsed). Each problem carries the
//! file and line it comes from.
//!
//! A Postfix parameter that Postern does not implement is "not supported
//! by Postern". Where ignoring it would weaken mail security or filtering
//! (and it is set to something other than Postfix's default), it is an
//! error and Postern does not start; otherwise a warning.
use std::collections::{BTreeMap, BTreeSet};

use crate::masterfile::Override;
use crate::{Config, Diagnostic, expand, registry, restrictions, tables, value};

/// Postfix 3.7's parameters and defaults (`postconf -d`).
const POSTFIX_PARAMS: &str = include_str!("postfix-params.txt");

fn postfix_default(name: &str) -> Option<&'static str> {
    POSTFIX_PARAMS
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (n, v) = l
                .split_once(" = ")
                .or_else(|| l.strip_suffix(" =").map(|n| (n, "")))?;
            (n == name).then_some(v)
        })
}

/// Unimplemented Postfix parameters that filter, rewrite, route or limit
/// mail: ignoring one would let through what the admin meant to stop.
/// Each names what it does and the issue that will implement it.
const WEAKENING: &[(&str, &str)] = &[
    (
        "mailbox_transport",
        "delivery of local mailboxes through another transport",
    ),
    ("content_filter", "content filtering"),
    ("smtpd_proxy_filter", "before-queue filtering"),
    ("smtpd_etrn_restrictions", "ETRN restrictions"),
    (
        "smtp_tls_per_site",
        "per-destination TLS policy (the form Postfix made obsolete: write it as smtp_tls_policy_maps)",
    ),
    (
        "allow_mail_to_commands",
        "delivery to commands, which Postern never does",
    ),
    (
        "allow_mail_to_files",
        "delivery to files, which Postern never does",
    ),
];

/// Registry parameters whose code is not written yet: set to anything but
/// their default, they are refused, never silently ignored.
/// (None at present: the last two, the cert-match parameters, came with
/// issue #18.)
const NOT_YET: &[(&str, &str)] = &[];

/// Parameters whose values list tables (besides the restriction lists).
const TABLE_LISTS: &[&str] = &[
    "alias_maps",
    "alias_database",
    "local_recipient_maps",
    "relay_recipient_maps",
    "header_checks",
    "mime_header_checks",
    "nested_header_checks",
    "body_checks",
    "transport_maps",
    "address_verify_transport_maps",
    "smtpd_sender_login_maps",
    "smtp_sasl_password_maps",
    "local_login_sender_maps",
    "rbl_reply_maps",
    "relay_clientcerts",
];

/// Lists of names and tables: an item without a table type is a name.
const NAME_LISTS: &[&str] = &["virtual_alias_domains", "virtual_mailbox_domains"];

/// Certificate and key parameters, and the PEM blocks each file must hold
/// (`*X`: a block whose label ends in X, as in "EC PRIVATE KEY").
const KEY_FILES: &[(&str, &[&str])] = &[
    ("smtpd_tls_cert_file", &["CERTIFICATE"]),
    ("smtpd_tls_key_file", &["*PRIVATE KEY"]),
    ("smtpd_tls_chain_files", &["*PRIVATE KEY", "CERTIFICATE"]),
    ("smtp_tls_cert_file", &["CERTIFICATE"]),
    ("smtp_tls_key_file", &["*PRIVATE KEY"]),
    ("smtpd_tls_CAfile", &["CERTIFICATE"]),
];

/// The address classes of canonical_classes and masquerade_classes.
const ADDRESS_CLASSES: &[&str] = &[
    "envelope_sender",
    "envelope_recipient",
    "header_sender",
    "header_recipient",
];

/// User lists: names, `!name`, or tables.
const USER_LISTS: &[&str] = &["authorized_submit_users", "authorized_mailq_users"];

fn same_list(a: &str, b: &str) -> bool {
    value::split_list(a) == value::split_list(b)
}

/// Splits "file:line: message" as table errors are worded.
fn located(e: &str) -> Option<(&str, usize, &str)> {
    let (head, msg) = e.split_once(": ")?;
    let (file, line) = head.rsplit_once(':')?;
    Some((file, line.parse().ok()?, msg))
}

impl Config {
    /// The "not supported by Postern" classification of a main.cf or -o
    /// name the registry does not know. None: not a Postfix parameter.
    pub(crate) fn unsupported(name: &str, value: &str) -> Option<(bool, String)> {
        let default = postfix_default(name)?;
        let weakening = WEAKENING.iter().find(|(n, _)| *n == name);
        // Delivery to commands and files is never done, whatever the
        // value: naming anything there is an error, Postfix's default too.
        let never = matches!(name, "allow_mail_to_commands" | "allow_mail_to_files")
            && !value.trim().is_empty();
        match weakening {
            Some((_, what)) if never || !same_list(value, default) => Some((
                true,
                format!(
                    "{name} is not supported by Postern, and ignoring it would drop {what}; remove the setting to run without it"
                ),
            )),
            _ => Some((
                false,
                format!("{name} is not supported by Postern; the setting is ignored"),
            )),
        }
    }

    /// Registry parameters set although their code is not written yet.
    pub(crate) fn check_not_yet(&self, overrides: &[Override], out: &mut Vec<Diagnostic>) {
        for (name, issue) in NOT_YET {
            let set = overrides
                .iter()
                .rev()
                .find(|o| o.name == *name)
                .map(|o| o.value.clone())
                .or_else(|| self.settings.get(*name).map(|s| s.value.clone()));
            let Some(v) = set else { continue };
            let default = registry::lookup(name).map_or("", |d| d.default);
            if !same_list(&v, default) {
                let (file, line) = self.origin(name, overrides);
                out.push(Diagnostic::error(
                    &file,
                    line,
                    format!(
                        "{name} = {v}: not supported by Postern yet ({issue}); only the default \"{default}\" is"
                    ),
                ));
            }
        }
    }

    pub(crate) fn expanded(&self, name: &str, overrides: &[Override]) -> Option<String> {
        let get = self.lookup_with(overrides);
        let raw = get(name)?;
        expand(&raw, &get).ok()
    }

    /// Every policy service a restriction list or class names, in main.cf
    /// and in every service's -o overrides, each with the settings of its
    /// context, as [`crate::policy::Resolved::key`]s: the services the
    /// policy role may talk to (`postern_policy_services`).
    pub(crate) fn policy_services(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let contexts =
            std::iter::once(&[][..]).chain(self.services.iter().map(|s| &s.overrides[..]));
        for overrides in contexts {
            let get = |n: &str| self.expanded(n, overrides);
            let mut lists: Vec<Vec<String>> = restrictions::LISTS
                .iter()
                .filter_map(|n| get(n))
                .map(|v| value::split_list(&v))
                .collect();
            lists.extend(
                self.restriction_classes()
                    .into_iter()
                    .map(|(_, items)| items),
            );
            for items in lists {
                for arg in crate::policy::services_in(&items) {
                    if let Ok(r) = crate::policy::resolve(&arg, &get) {
                        let key = r.key();
                        if !out.contains(&key) {
                            out.push(key);
                        }
                    }
                }
            }
        }
        out
    }

    /// Every access table a restriction list names, in main.cf and in
    /// every service's -o overrides: the tables the broker may answer
    /// smtpd's access lookups from (`postern_access_maps`).
    pub(crate) fn access_maps(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (_, items) in self.restriction_classes() {
            for t in restrictions::tables_in(&items) {
                if !out.contains(&t) {
                    out.push(t);
                }
            }
        }
        let contexts =
            std::iter::once(&[][..]).chain(self.services.iter().map(|s| &s.overrides[..]));
        for overrides in contexts {
            for name in restrictions::LISTS {
                if let Some(v) = self.expanded(name, overrides) {
                    for t in restrictions::tables_in(&value::split_list(&v)) {
                        if !out.contains(&t) {
                            out.push(t);
                        }
                    }
                }
            }
            // Reply templates of the DNS lists and the certificates of
            // permit_tls_clientcerts, looked up like access maps.
            for name in ["rbl_reply_maps", "relay_clientcerts"] {
                if let Some(v) = self.expanded(name, overrides) {
                    for t in value::split_list(&v) {
                        if !out.contains(&t) {
                            out.push(t);
                        }
                    }
                }
            }
        }
        out
    }

    /// `smtpd_restriction_classes`: each defined class with its items.
    pub(crate) fn restriction_classes(&self) -> Vec<(String, Vec<String>)> {
        let names = self
            .expanded("smtpd_restriction_classes", &[])
            .map(|v| value::split_list(&v))
            .unwrap_or_default();
        names
            .into_iter()
            .filter_map(|n| {
                let v = self.expanded(&n, &[])?;
                Some((n, value::split_list(&v)))
            })
            .collect()
    }

    /// Restriction names and mynetworks entries: no file is read.
    pub(crate) fn check_lists(&self, overrides: &[Override], out: &mut Vec<Diagnostic>) {
        let classes: Vec<String> = self
            .expanded("smtpd_restriction_classes", overrides)
            .map(|v| value::split_list(&v))
            .unwrap_or_default();
        for name in restrictions::LISTS {
            let Some(v) = self.expanded(name, overrides) else {
                continue;
            };
            let (file, line) = self.origin(name, overrides);
            for p in restrictions::check(&value::split_list(&v), &classes) {
                out.push(Diagnostic::error(&file, line, format!("{name}: {}", p.0)));
            }
        }
        // Each class is a restriction list of its own, defined in main.cf.
        for class in &classes {
            let (file, line) = self.origin("smtpd_restriction_classes", overrides);
            let Some(v) = self.expanded(class, overrides) else {
                out.push(Diagnostic::error(
                    &file,
                    line,
                    format!("smtpd_restriction_classes: class \"{class}\" is not defined (set {class} = a restriction list)"),
                ));
                continue;
            };
            let (file, line) = self.origin(class, overrides);
            for p in restrictions::check(&value::split_list(&v), &classes) {
                out.push(Diagnostic::error(&file, line, format!("{class}: {}", p.0)));
            }
        }
        // Milters: each entry an endpoint or a { } group Postern can use.
        for name in ["smtpd_milters", "non_smtpd_milters"] {
            let Some(v) = self.expanded(name, overrides) else {
                continue;
            };
            for item in value::split_list(&v) {
                if let Err(e) = crate::milter::parse(&item) {
                    let (file, line) = self.origin(name, overrides);
                    out.push(Diagnostic::error(
                        &file,
                        line,
                        format!("{name}: \"{item}\" is malformed: {e}"),
                    ));
                }
            }
        }
        if let Some(v) = self.expanded("inet_protocols", overrides)
            && let Err(e) = crate::inet::parse(&value::split_list(&v))
        {
            let (file, line) = self.origin("inet_protocols", overrides);
            out.push(Diagnostic::error(&file, line, e));
        }
        // Lists of fixed words: a word Postern does not know would change
        // which addresses are rewritten.
        for (name, known) in [
            (
                "local_header_rewrite_clients",
                &[
                    "permit_inet_interfaces",
                    "permit_mynetworks",
                    "permit_sasl_authenticated",
                    "static:all",
                ][..],
            ),
            ("canonical_classes", ADDRESS_CLASSES),
            ("sender_canonical_classes", ADDRESS_CLASSES),
            ("recipient_canonical_classes", ADDRESS_CLASSES),
            ("masquerade_classes", ADDRESS_CLASSES),
            (
                "propagate_unmatched_extensions",
                &["canonical", "virtual", "generic"][..],
            ),
            (
                "lmtp_tls_security_level",
                &["none", "may", "encrypt", "verify", "secure", "fingerprint"][..],
            ),
        ] {
            if let Some(v) = self.expanded(name, overrides) {
                let (file, line) = self.origin(name, overrides);
                for w in value::split_list(&v) {
                    if !known.contains(&w.as_str()) {
                        out.push(Diagnostic::error(
                            &file,
                            line,
                            format!(
                                "{name}: \"{w}\" is not supported by Postern (one of: {})",
                                known.join(", ")
                            ),
                        ));
                    }
                }
            }
        }
        // Transports: the delivery agents Postern has.
        let vmailbox = self
            .expanded("virtual_mailbox_domains", overrides)
            .is_some_and(|v| !value::split_list(&v).is_empty());
        for name in tables::TRANSPORT_PARAMS {
            let Some(v) = self.expanded(name, overrides) else {
                continue;
            };
            let (file, line) = self.origin(name, overrides);
            let (channel, nexthop) = v.trim().split_once(':').unwrap_or((v.trim(), ""));
            let problem = match channel {
                "local" | "smtp" | "relay" | "error" | "discard" => None,
                "lmtp" if nexthop.trim().is_empty() => Some(format!(
                    "{name} = {v}: lmtp needs a next hop (lmtp:unix:/path or lmtp:inet:host:port)"
                )),
                "lmtp" => None,
                "virtual" if *name == "virtual_transport" && !vmailbox => None,
                "virtual" => Some(format!(
                    "{name} = {v}: the virtual(8) delivery agent is not supported by Postern; deliver to the mailbox server with lmtp:unix:/path or lmtp:inet:host:port"
                )),
                other => Some(format!(
                    "{name} = {v}: the {other} transport is not supported by Postern (local, smtp, relay, lmtp, error or discard)"
                )),
            };
            if let Some(p) = problem {
                out.push(Diagnostic::error(&file, line, p));
            }
        }
        // home_mailbox: a Maildir (a name ending in /) inside the home.
        if let Some(v) = self.expanded("home_mailbox", overrides)
            && !v.trim().is_empty()
        {
            let v = v.trim();
            let problem = if !v.ends_with('/') {
                Some("mailbox files are not supported by Postern; name a Maildir (ending in /)")
            } else if v.starts_with('/') || v.split('/').any(|c| c == "..") {
                Some("it must be a path inside the home directory")
            } else {
                None
            };
            if let Some(p) = problem {
                let (file, line) = self.origin("home_mailbox", overrides);
                out.push(Diagnostic::error(
                    &file,
                    line,
                    format!("home_mailbox = {v}: {p}"),
                ));
            }
        }
        // A mailbox smaller than the largest message: Postfix's local
        // refuses to run; Postern's bounces local mail over the mailbox
        // limit, so this is worth a warning, not a refusal (an edge relay
        // that raised message_size_limit still starts).
        if let (Some(mbox), Some(msg)) = (
            self.expanded("mailbox_size_limit", overrides)
                .and_then(|v| v.trim().parse::<u64>().ok()),
            self.expanded("message_size_limit", overrides)
                .and_then(|v| v.trim().parse::<u64>().ok()),
        ) && mbox != 0
            && mbox < msg
        {
            let (mut file, mut line) = self.origin("mailbox_size_limit", overrides);
            if line.is_none() {
                (file, line) = self.origin("message_size_limit", overrides);
            }
            out.push(Diagnostic::warning(
                &file,
                line,
                format!(
                    "mailbox_size_limit ({mbox}) is smaller than message_size_limit ({msg}): local mail larger than {mbox} bytes bounces (Postfix's local(8) refuses to run so)"
                ),
            ));
        }
        if let Some(v) = self.expanded("notify_classes", overrides) {
            let (file, line) = self.origin("notify_classes", overrides);
            for c in value::split_list(&v) {
                match c.to_ascii_lowercase().as_str() {
                    "bounce" | "2bounce" | "delay" => {}
                    "resource" | "software" | "policy" | "protocol" | "data" => {
                        if !same_list(&v, "resource, software") {
                            out.push(Diagnostic::warning(
                                &file,
                                line,
                                format!("notify_classes: Postern sends no \"{c}\" notices (only bounce, 2bounce and delay); ignored"),
                            ));
                        }
                    }
                    other => out.push(Diagnostic::error(
                        &file,
                        line,
                        format!("notify_classes: unknown class \"{other}\" (bounce, 2bounce, delay, policy, protocol, resource, software, data)"),
                    )),
                }
            }
        }
        // The message authentication checks: an unknown name is an error,
        // never a check silently not made.
        if let Some(v) = self.expanded("authentication_checks", overrides) {
            let (file, line) = self.origin("authentication_checks", overrides);
            for c in value::split_list(&v) {
                if !["spf", "dkim", "dmarc", "arc"].contains(&c.to_ascii_lowercase().as_str()) {
                    out.push(Diagnostic::error(
                        &file,
                        line,
                        format!(
                            "authentication_checks: unknown check \"{c}\" (spf, dkim, dmarc, arc)"
                        ),
                    ));
                }
            }
        }
        // The names a verified server certificate may carry.
        for name in [
            "smtp_tls_verify_cert_match",
            "smtp_tls_secure_cert_match",
            "lmtp_tls_verify_cert_match",
            "lmtp_tls_secure_cert_match",
        ] {
            let Some(v) = self.expanded(name, overrides) else {
                continue;
            };
            let (file, line) = self.origin(name, overrides);
            for m in value::split_list(&v) {
                let m = m.to_ascii_lowercase();
                let name_ok = |n: &str| {
                    !n.is_empty()
                        && n.split('.').all(|l| {
                            !l.is_empty()
                                && l.len() <= 63
                                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        })
                };
                let ok = matches!(m.as_str(), "hostname" | "nexthop" | "dot-nexthop")
                    || m.strip_prefix('.').is_some_and(name_ok)
                    || name_ok(&m);
                if !ok {
                    out.push(Diagnostic::error(
                        &file,
                        line,
                        format!("{name}: \"{m}\" is neither hostname, nexthop, dot-nexthop, a DNS name nor .domain"),
                    ));
                }
            }
        }
        for name in [
            "smtpd_sasl_security_options",
            "smtpd_sasl_tls_security_options",
        ] {
            if let Some(v) = self.expanded(name, overrides)
                && let Err(e) = crate::sasl::plaintext_allowed(&v)
            {
                let (file, line) = self.origin(name, overrides);
                out.push(Diagnostic::error(&file, line, format!("{name}: {e}")));
            }
        }
        // Network lists: addresses and CIDR blocks (no host names).
        for name in [
            "mynetworks",
            "smtpd_client_event_limit_exceptions",
            "smtpd_forbid_bare_newline_exclusions",
        ] {
            let Some(v) = self.expanded(name, overrides) else {
                continue;
            };
            let (file, line) = self.origin(name, overrides);
            for item in value::split_list(&v) {
                if item.contains(':')
                    && !item.starts_with('[')
                    && item.parse::<std::net::IpAddr>().is_err()
                {
                    let why = match tables::parse(&item) {
                        Ok(_) => format!("tables in {name} are not supported by Postern yet"),
                        Err(e) => e,
                    };
                    out.push(Diagnostic::error(
                        &file,
                        line,
                        format!("{name}: {item}: {why}"),
                    ));
                } else if item.starts_with('/') {
                    out.push(Diagnostic::error(
                        &file,
                        line,
                        format!("{name}: {item}: reading networks from a file is not supported by Postern"),
                    ));
                } else if let Err(e) = crate::cidr::parse(&item) {
                    out.push(Diagnostic::error(&file, line, format!("{name}: {e}")));
                }
            }
        }
        // SMTPS to a smarthost has no plaintext to fall back to.
        if self
            .expanded("smtp_tls_wrappermode", overrides)
            .is_some_and(|v| matches!(v.trim(), "yes" | "true"))
        {
            let level = self
                .expanded("smtp_tls_security_level", overrides)
                .unwrap_or_default();
            if matches!(level.trim(), "none" | "may" | "") {
                let (file, line) = self.origin("smtp_tls_wrappermode", overrides);
                out.push(Diagnostic::error(
                    &file,
                    line,
                    format!(
                        "smtp_tls_wrappermode = yes requires smtp_tls_security_level = encrypt or stronger (it is \"{}\")",
                        level.trim()
                    ),
                ));
            }
        }
        // The fingerprint level with nothing to match would refuse every
        // server (and stop the smtp client at start).
        for prefix in ["smtp", "lmtp"] {
            let level = format!("{prefix}_tls_security_level");
            let matches = format!("{prefix}_tls_fingerprint_cert_match");
            if self
                .expanded(&level, overrides)
                .is_some_and(|v| v.trim() == "fingerprint")
                && self
                    .expanded(&matches, overrides)
                    .is_none_or(|v| v.trim().is_empty())
            {
                let (file, line) = self.origin(&level, overrides);
                out.push(Diagnostic::error(
                    &file,
                    line,
                    format!("{level} = fingerprint needs {matches} (the server certificates' fingerprints)"),
                ));
            }
        }
        // smtp_tls_trust_anchor_file: the smtp client reads it at start;
        // a file it cannot use would stop it.
        if let Some(v) = self.expanded("smtp_tls_trust_anchor_file", overrides) {
            let (file, line) = self.origin("smtp_tls_trust_anchor_file", overrides);
            for f in value::split_list(&v) {
                let why = match std::fs::read_to_string(&f) {
                    Err(e) => Some(format!("smtp_tls_trust_anchor_file: cannot read {f}: {e}")),
                    Ok(t)
                        if !t.contains("-----BEGIN CERTIFICATE-----")
                            && !t.contains("-----BEGIN PUBLIC KEY-----") =>
                    {
                        Some(format!(
                            "smtp_tls_trust_anchor_file: {f}: no trust-anchor certificate or public key"
                        ))
                    }
                    Ok(_) => None,
                };
                if let Some(why) = why {
                    out.push(Diagnostic::error(&file, line, why));
                }
            }
        }
        // REQUIRETLS policies: actions, and tables the smtp client can
        // read (it has no files); LMTP gets REQUIRETLS where offered only.
        for name in ["smtp_requiretls_policy", "lmtp_requiretls_policy"] {
            let Some(v) = self.expanded(name, overrides) else {
                continue;
            };
            let (file, line) = self.origin(name, overrides);
            for item in value::split_list(&v) {
                let word = item.to_ascii_lowercase();
                let lmtp_ok = matches!(word.as_str(), "opportunistic" | "disable");
                let why = match word.as_str() {
                    _ if name.starts_with("lmtp") && !item.contains(':') && !lmtp_ok => {
                        Some(format!(
                            "{name}: \"{item}\": only opportunistic and disable are supported by Postern yet"
                        ))
                    }
                    "enforce" | "opportunistic+starttls" | "opportunistic" | "disable" => None,
                    _ if !item.contains(':') => Some(format!("{name}: unknown action \"{item}\"")),
                    _ => match crate::tables::parse(&item) {
                        Err(e) => Some(format!("{name}: {e}")),
                        Ok(t) if !t.files().is_empty() || !t.remotes().is_empty() => Some(format!(
                            "{name}: \"{item}\": only tables without files (inline:, cidr:{{...}}, static:) are supported by Postern yet"
                        )),
                        Ok(_) => None,
                    },
                };
                if let Some(why) = why {
                    out.push(Diagnostic::error(&file, line, why));
                }
            }
        }
        // DANE trusts DNSSEC-validated answers only: without them `dane`
        // is `may` (as in Postfix, with a warning) and `dane-only` defers
        // every delivery.
        if let Some(level) = self
            .expanded("smtp_tls_security_level", overrides)
            .map(|v| v.trim().to_string())
            .filter(|v| v == "dane" || v == "dane-only")
            && self
                .expanded("smtp_dns_support_level", overrides)
                .is_none_or(|v| v.trim() != "dnssec")
        {
            let (file, line) = self.origin("smtp_tls_security_level", overrides);
            let text = format!(
                "smtp_tls_security_level = {level} needs smtp_dns_support_level = dnssec (and a validating name server in dns_nameservers or /etc/resolv.conf)"
            );
            out.push(if level == "dane" {
                Diagnostic::warning(&file, line, format!("{text}; until then it is \"may\""))
            } else {
                Diagnostic::error(&file, line, text)
            });
        }
        self.check_tls_choices(overrides, out);
        if let Some(v) = self.expanded("metrics_listen", overrides)
            && let Err(e) = crate::inet::metrics_listen(&v)
        {
            let (file, line) = self.origin("metrics_listen", overrides);
            out.push(Diagnostic::error(&file, line, e));
        }
        if let Some(v) = self.expanded("metrics_allowed_clients", overrides) {
            let (file, line) = self.origin("metrics_allowed_clients", overrides);
            for item in value::split_list(&v) {
                if let Err(e) = crate::cidr::parse(&item) {
                    out.push(Diagnostic::error(
                        &file,
                        line,
                        format!("metrics_allowed_clients: {e}"),
                    ));
                }
            }
        }
    }

    /// TLS protocol and cipher settings each valid alone (their kinds
    /// say) that together leave no protocol or suite: for smtp, lmtp and
    /// smtpd, opportunistic and mandatory.
    fn check_tls_choices(&self, overrides: &[Override], out: &mut Vec<Diagnostic>) {
        for prefix in ["smtp", "lmtp", "smtpd"] {
            for mandatory in [false, true] {
                let m = if mandatory { "mandatory_" } else { "" };
                let get = |n: &str| {
                    self.expanded(&format!("{prefix}_tls_{n}"), overrides)
                        .unwrap_or_default()
                };
                let mut excludes = vec![get("exclude_ciphers")];
                if mandatory {
                    excludes.push(get("mandatory_exclude_ciphers"));
                }
                let excludes: Vec<&str> = excludes.iter().map(String::as_str).collect();
                let protocols = format!("{prefix}_tls_{m}protocols");
                // Each value alone is checked by its kind.
                let (Ok(_), Ok(_)) = (
                    crate::tlsproto::protocols(&get(&format!("{m}protocols"))),
                    crate::tlsproto::grade(&get(&format!("{m}ciphers"))),
                ) else {
                    continue;
                };
                if excludes
                    .iter()
                    .any(|e| crate::tlsproto::exclusions(e).is_err())
                {
                    continue;
                }
                if let Err(e) = crate::tlsproto::Choice::new(
                    &get(&format!("{m}protocols")),
                    &get(&format!("{m}ciphers")),
                    &excludes,
                ) {
                    // Point at whichever of them is set.
                    let (file, line) = [
                        protocols.clone(),
                        format!("{prefix}_tls_mandatory_exclude_ciphers"),
                        format!("{prefix}_tls_exclude_ciphers"),
                    ]
                    .iter()
                    .map(|n| self.origin(n, overrides))
                    .find(|(_, line)| line.is_some())
                    .unwrap_or_else(|| self.origin(&protocols, overrides));
                    out.push(Diagnostic::error(
                        &file,
                        line,
                        format!(
                            "{protocols} with {prefix}_tls_exclude_ciphers{}: {e}",
                            if mandatory {
                                format!(" and {prefix}_tls_mandatory_exclude_ciphers")
                            } else {
                                String::new()
                            }
                        ),
                    ));
                }
            }
        }
    }

    /// Every table reference: known type, absolute path, and its files
    /// read and parsed. Reads files, so only `conf --check`, `start` and
    /// `reload` call it (through [`Config::check_tables`]).
    fn check_table_refs(
        &self,
        overrides: &[Override],
        only: Option<&BTreeSet<&str>>,
        out: &mut Vec<Diagnostic>,
    ) {
        let built_at_start: Vec<std::path::PathBuf> = self
            .expanded("alias_database", overrides)
            .map(|v| value::split_list(&v))
            .unwrap_or_default()
            .iter()
            .filter_map(|s| match tables::parse(s) {
                Ok(tables::Table::Cdb(p)) => Some(p),
                _ => None,
            })
            .collect();
        let mut seen_files = BTreeMap::new();
        for name in TABLE_LISTS
            .iter()
            .chain(tables::REWRITE_PARAMS)
            .chain(tables::ROUTING_PARAMS)
            .chain(USER_LISTS)
            .chain(restrictions::LISTS)
        {
            if only.is_some_and(|o| !o.contains(name)) {
                continue;
            }
            let Some(v) = self.expanded(name, overrides) else {
                continue;
            };
            let (file, line) = self.origin(name, overrides);
            // mime_ and nested_header_checks default to $header_checks,
            // whose own line reports its tables.
            if line.is_none()
                && matches!(
                    *name,
                    "mime_header_checks"
                        | "nested_header_checks"
                        | "virtual_alias_domains"
                        | "virtual_mailbox_domains"
                )
            {
                continue;
            }
            let mut items = value::split_list(&v);
            if restrictions::LISTS.contains(name) {
                items = restrictions::tables_in(&items);
            }
            for item in items {
                if USER_LISTS.contains(name) && (!item.contains(':') || item.starts_with('!')) {
                    continue;
                }
                if NAME_LISTS.contains(name) && !item.contains(':') {
                    continue;
                }
                let t = match tables::parse(&item) {
                    Ok(t) => t,
                    Err(e) => {
                        out.push(Diagnostic::error(&file, line, format!("{name}: {e}")));
                        continue;
                    }
                };
                for (path, format) in t.files() {
                    if let tables::Table::Cdb(src) = &t
                        && built_at_start.contains(src)
                        && !path.exists()
                    {
                        // `postern start` builds it (and creates a source
                        // with "postmaster: root" when there is none).
                        if src.exists()
                            && let Err(errs) = std::fs::read_to_string(src)
                                .map_err(|e| vec![format!("{}: {e}", src.display())])
                                .and_then(|text| {
                                    tables::parse_source(&text, &src.display().to_string(), true)
                                })
                        {
                            for e in errs {
                                out.push(table_error(&e, name, &file, line));
                            }
                        }
                        continue;
                    }
                    let r = seen_files
                        .entry((path.clone(), format))
                        .or_insert_with(|| tables::read_and_load(&path, format).err());
                    if let Some(e) = r {
                        for one in e.split("; ") {
                            out.push(table_error(one, name, &file, line));
                        }
                    }
                }
            }
        }
    }

    /// Certificate and key files: each one named must exist and hold what
    /// its parameter promises (PEM certificates, a private key), or TLS
    /// would be silently unavailable at run time.
    fn check_key_files(
        &self,
        overrides: &[Override],
        only: Option<&BTreeSet<&str>>,
        out: &mut Vec<Diagnostic>,
    ) {
        for (name, wants) in KEY_FILES {
            if only.is_some_and(|o| !o.contains(name)) {
                continue;
            }
            let Some(v) = self.expanded(name, overrides) else {
                continue;
            };
            let (file, line) = self.origin(name, overrides);
            for path in value::split_list(&v) {
                let problem = match std::fs::read(&path) {
                    Err(e) => Some(format!("{name}: {path}: {}", tables::io_text(&e))),
                    Ok(data) => {
                        let text = String::from_utf8_lossy(&data);
                        let has = |w: &str| match w.strip_prefix('*') {
                            Some(tail) => text.contains(&format!("{tail}-----")),
                            None => text.contains(&format!("-----BEGIN {w}-----")),
                        };
                        let missing: Vec<&str> =
                            wants.iter().filter(|w| !has(w)).copied().collect();
                        (!missing.is_empty()).then(|| {
                            format!(
                                "{name}: {path}: no PEM {} in the file",
                                missing
                                    .iter()
                                    .map(|m| m.trim_start_matches('*').to_ascii_lowercase())
                                    .collect::<Vec<_>>()
                                    .join(" or ")
                            )
                        })
                    }
                };
                if let Some(p) = problem {
                    out.push(Diagnostic::error(&file, line, p));
                }
            }
        }
    }

    /// The DKIM tables: every key table entry well formed, every key file
    /// a usable private key, and (for tables that can be listed) every key
    /// name the signing table uses in the key table. A signing table
    /// without a key table is an error: mail would go out unsigned.
    fn check_dkim(&self, out: &mut Vec<Diagnostic>) {
        let list = |n: &str| {
            self.expanded(n, &[])
                .map(|v| value::split_list(&v))
                .unwrap_or_default()
        };
        let (specs, signing) = (list("dkim_key_table"), list("dkim_signing_table"));
        let (kfile, kline) = self.origin("dkim_key_table", &[]);
        let (sfile, sline) = self.origin("dkim_signing_table", &[]);
        if specs.is_empty() {
            if !signing.is_empty() {
                out.push(Diagnostic::error(
                    &sfile,
                    sline,
                    "dkim_signing_table is set but dkim_key_table is empty: no mail could be signed"
                        .into(),
                ));
            }
            return;
        }
        let entries = match crate::dkim::key_entries(&specs) {
            Ok(e) => e,
            Err(errs) => {
                for e in errs {
                    out.push(table_error(&e, "dkim_key_table", &kfile, kline));
                }
                return;
            }
        };
        for e in &entries {
            let (file, line) = match e.at.rsplit_once(':').map(|(f, l)| (f, l.parse().ok())) {
                Some((f, Some(l))) => (f.to_string(), Some(l)),
                _ => (kfile.clone(), kline),
            };
            let path = e.path.display();
            match std::fs::read(&e.path) {
                Err(err) => out.push(Diagnostic::error(
                    &file,
                    line,
                    format!("dkim_key_table: {}: {path}: {}", e.name, tables::io_text(&err)),
                )),
                Ok(pem) => match crate::dkim::PrivateKey::from_pem(&pem) {
                    Err(err) => out.push(Diagnostic::error(
                        &file,
                        line,
                        format!("dkim_key_table: {}: {path}: {err}", e.name),
                    )),
                    Ok(k) if k.is_rsa() && k.rsa_bits() < crate::dkim::GOOD_RSA_BITS => {
                        out.push(Diagnostic::warning(
                            &file,
                            line,
                            format!(
                                "dkim_key_table: {}: {path}: a {}-bit RSA key; RFC 8301 asks for {} bits or more",
                                e.name,
                                k.rsa_bits(),
                                crate::dkim::GOOD_RSA_BITS
                            ),
                        ))
                    }
                    Ok(_) => {}
                },
            }
        }
        // Key names the signing table uses, where its entries can be read.
        for spec in &signing {
            let values: Vec<String> = match tables::parse(spec) {
                Ok(tables::Table::TextHash(p)) => {
                    match tables::read_and_load(&p, tables::Format::TextHash) {
                        Ok(tables::Loaded::TextHash(m)) => m.into_values().collect(),
                        _ => continue,
                    }
                }
                Ok(tables::Table::Inline(m)) => m.into_values().collect(),
                _ => continue,
            };
            for v in values {
                for n in crate::dkim::names(&v) {
                    if !entries.iter().any(|e| e.name == n) {
                        out.push(Diagnostic::error(
                            &sfile,
                            sline,
                            format!("dkim_signing_table: {spec}: the key name \"{n}\" is not in dkim_key_table"),
                        ));
                    }
                }
            }
        }
    }

    /// Runs the checks that read files (tables, certificates and keys),
    /// adding what they find to the diagnostics: for the global settings,
    /// then for each master.cf service's -o overrides. For `conf --check`
    /// and `start`.
    pub fn check_tables(&mut self) {
        self.check_files(true);
    }

    /// The same for `reload`, without the certificate and key files: a
    /// renewal gone wrong is the broker's to handle (it keeps the pair it
    /// has and logs why), not a reason to refuse every other change.
    pub fn check_tables_for_reload(&mut self) {
        self.check_files(false);
    }

    fn check_files(&mut self, keys: bool) {
        let mut out = Vec::new();
        self.check_table_refs(&[], None, &mut out);
        if keys {
            self.check_key_files(&[], None, &mut out);
            self.check_dkim(&mut out);
        }
        for svc in &self.services {
            let names: BTreeSet<&str> = svc.overrides.iter().map(|o| o.name.as_str()).collect();
            if !names.is_empty() {
                self.check_table_refs(&svc.overrides, Some(&names), &mut out);
                if keys {
                    self.check_key_files(&svc.overrides, Some(&names), &mut out);
                }
            }
        }
        let mut seen = BTreeSet::new();
        out.retain(|d| seen.insert((d.file.clone(), d.line, d.message.clone())));
        self.diagnostics.extend(out);
        self.diagnostics
            .sort_by(|a, b| (a.file.as_str(), a.line).cmp(&(b.file.as_str(), b.line)));
    }
}

/// A table problem: at the table file's line when it has one, else at the
/// setting that names the table.
fn table_error(e: &str, param: &str, file: &str, line: Option<usize>) -> Diagnostic {
    let at = match line {
        Some(l) => format!("{file}:{l}"),
        None => format!("{file} (default)"),
    };
    match located(e) {
        Some((tf, tl, msg)) => {
            Diagnostic::error(tf, Some(tl), format!("{msg} (a table in {param}, {at})"))
        }
        None => Diagnostic::error(file, line, format!("{param}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postfix_defaults_are_known() {
        assert_eq!(postfix_default("smtpd_helo_required"), Some("no"));
        assert_eq!(postfix_default("smtpd_restriction_classes"), Some(""));
        assert_eq!(postfix_default("no_such_parameter"), None);
        let (err, m) = Config::unsupported("content_filter", "smtp:[127.0.0.1]:10025").unwrap();
        assert!(err, "{m}");
        let (err, _) = Config::unsupported("content_filter", "").unwrap();
        assert!(!err);
        // Implemented now: a registry parameter, not an unsupported one.
        assert!(crate::registry::lookup("header_checks").is_some());
        let (err, m) = Config::unsupported("biff", "no").unwrap();
        assert!(!err && m.contains("not supported by Postern"), "{m}");
        assert!(Config::unsupported("frobnicate", "x").is_none());
        assert_eq!(
            located("/t/x.cidr:4: bad mask"),
            Some(("/t/x.cidr", 4, "bad mask"))
        );
    }
}
