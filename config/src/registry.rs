//! Every parameter Postern knows: its Postfix name, default, type, and the
//! roles that receive it. A daemon gets only its slice of the configuration.
use crate::Role;

/// The type of a parameter's (expanded) value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Str,
    Bool,
    Int {
        min: i64,
        max: i64,
    },
    /// A time; the unit applies to bare numbers.
    Duration {
        unit: &'static str,
        min_ms: u64,
    },
    Size {
        min: u64,
    },
    List,
    Enum(&'static [&'static str]),
    /// A TLS protocol list (`>=TLSv1.2`, `!SSLv3`, ...), see tlsproto.
    TlsProtocols,
    /// A cipher grade (high, medium, low, export).
    TlsGrade,
    /// OpenSSL cipher names to exclude.
    TlsExclude,
    /// An absolute path once expanded (relative paths are resolved against
    /// the directory `postern start` runs in, for the embedded default only).
    Path,
}

#[derive(Debug)]
pub struct ParamDef {
    pub name: &'static str,
    pub default: &'static str,
    pub kind: Kind,
    /// Bitmask of [`Role::bit`]s that receive this parameter.
    pub roles: u32,
    /// Set by Postern itself; a main.cf setting is ignored with a warning.
    pub read_only: bool,
}

const fn roles(list: &[Role]) -> u32 {
    let mut bits = 0;
    let mut i = 0;
    while i < list.len() {
        bits |= list[i].bit();
        i += 1;
    }
    bits
}

const ALL: u32 = u32::MAX;
const M: u32 = roles(&[Role::Master]);
const SD: u32 = roles(&[Role::Smtpd]);
const CL: u32 = roles(&[Role::Cleanup]);
const BR: u32 = roles(&[Role::Broker]);
const QM: u32 = roles(&[Role::Qmgr]);
const SM: u32 = roles(&[Role::Smtp]);
const LO: u32 = roles(&[Role::Local]);
const BO: u32 = roles(&[Role::Bounce]);
const PK: u32 = roles(&[Role::Pickup]);
const RS: u32 = roles(&[Role::Resolver]);
const AU: u32 = roles(&[Role::Auth]);
const CA: u32 = roles(&[Role::Cache]);
const PX: u32 = roles(&[Role::Proxymap]);
const VE: u32 = roles(&[Role::Verify]);
const MX: u32 = roles(&[Role::Metrics]);
const PO: u32 = roles(&[Role::Policy]);
const MI: u32 = roles(&[Role::Milter]);
const PS: u32 = roles(&[Role::Postscreen]);
const ST: u32 = roles(&[Role::Sts]);

const fn p(name: &'static str, default: &'static str, kind: Kind, roles: u32) -> ParamDef {
    ParamDef {
        name,
        default,
        kind,
        roles,
        read_only: false,
    }
}

const fn ro(name: &'static str, default: &'static str, kind: Kind, roles: u32) -> ParamDef {
    ParamDef {
        name,
        default,
        kind,
        roles,
        read_only: true,
    }
}

const fn secs(unit: &'static str) -> Kind {
    Kind::Duration { unit, min_ms: 0 }
}
const fn int(min: i64, max: i64) -> Kind {
    Kind::Int { min, max }
}
const SIZE: Kind = Kind::Size { min: 0 };

/// Templates expanded by the daemon that uses them, with names of their
/// own: kept unexpanded in the configuration.
pub const LATE_EXPANSION: &[&str] = &["default_rbl_reply", "forward_path"];

/// The registry, sorted by name (checked by a test).
#[rustfmt::skip]
pub static PARAMS: &[ParamDef] = &[
    p("2bounce_notice_recipient", "postmaster", Kind::Str, BO),
    p("access_map_defer_code", "450", int(400, 599), SD | PK),
    p("access_map_reject_code", "554", int(400, 599), SD | PK),
    p("address_verify_map", "btree:${data_directory}/verify_cache", Kind::Str, VE),
    p("address_verify_negative_cache", "yes", Kind::Bool, VE),
    p("address_verify_negative_expire_time", "3d", Kind::Duration { unit: "d", min_ms: 1000 }, VE),
    p("address_verify_negative_refresh_time", "3h", Kind::Duration { unit: "h", min_ms: 1000 }, VE),
    p("address_verify_pending_request_limit", "5000", int(1, 1_000_000), QM),
    p("address_verify_poll_count", "3", int(1, 100), SD | PK),
    p("address_verify_poll_delay", "3s", Kind::Duration { unit: "s", min_ms: 1000 }, SD | PK),
    p("address_verify_positive_expire_time", "31d", Kind::Duration { unit: "d", min_ms: 1000 }, VE),
    p("address_verify_positive_refresh_time", "7d", Kind::Duration { unit: "d", min_ms: 1000 }, VE),
    p("address_verify_relayhost", "$relayhost", Kind::Str, QM),
    p("address_verify_sender", "$double_bounce_sender", Kind::Str, VE),
    p("address_verify_transport_maps", "$transport_maps", Kind::List, QM | PX | BR),
    p("alias_database", "cdb:${config_directory}/aliases", Kind::List, M | BR),
    p("alias_maps", "cdb:${config_directory}/aliases", Kind::List, SD | LO | BR | QM | PX),
    p("always_bcc", "", Kind::Str, CL),
    p("anvil_rate_time_unit", "60s", Kind::Duration { unit: "s", min_ms: 1000 }, SD),
    p("authentication_checks", "", Kind::List, CL),
    p("authentication_signature_limit", "10", int(1, 100), CL),
    p("authentication_time_limit", "10s", Kind::Duration { unit: "s", min_ms: 100 }, CL),
    p("authorized_mailq_users", "static:anyone", Kind::List, M),
    p("authorized_submit_users", "static:anyone", Kind::List, PK | PX),
    p("authserv_id", "$myhostname", Kind::Str, CL),
    p("body_checks", "", Kind::List, CL),
    p("body_checks_size_limit", "51200", int(0, 1 << 30), CL),
    p("bounce_notice_recipient", "postmaster", Kind::Str, BO),
    p("bounce_queue_lifetime", "5d", secs("d"), QM),
    p("canonical_classes", "envelope_sender, envelope_recipient, header_sender, header_recipient", Kind::List, CL),
    p("canonical_maps", "", Kind::List, CL | PX | BR),
    ro("config_directory", "", Kind::Str, ALL),
    p("daemon_scheduling_policy", "batch", Kind::Enum(&["batch", "normal"]), M),
    p("daemon_timeout", "60s", Kind::Duration { unit: "s", min_ms: 1000 }, M),
    p("data_directory", "postern-data", Kind::Path, M | LO | PK | BR | CA),
    p("default_destination_concurrency_limit", "20", int(1, 1000), QM),
    p("default_destination_rate_delay", "0s", secs("s"), QM),
    p("default_destination_recipient_limit", "50", int(1, 1000), QM),
    // Postfix: processes per service. Here: concurrent deliveries per
    // transport (qmgr), and concurrent sessions per smtpd service (master.cf
    // maxproc "-"; the master passes it with each listener).
    p("default_process_limit", "100", int(1, 10_000), QM | M | PS),
    p("default_rbl_reply", "$rbl_code Service unavailable; $rbl_class [$rbl_what] blocked using $rbl_domain${rbl_reason?; $rbl_reason}", Kind::Str, SD | PK),
    p("default_transport", "smtp", Kind::Str, QM),
    p("defer_code", "450", int(400, 599), SD | PK),
    p("delay_notice_recipient", "postmaster", Kind::Str, BO),
    p("delay_warning_time", "0h", secs("h"), QM),
    p("disable_vrfy_command", "yes", Kind::Bool, SD | PS),
    p("dkim_body_length", "no", Kind::Bool, SM),
    p("dkim_canonicalization", "relaxed/relaxed", Kind::Enum(&["relaxed/relaxed", "relaxed/simple", "simple/relaxed", "simple/simple", "relaxed", "simple"]), SM),
    p("dkim_key_table", "", Kind::List, BR),
    p("dkim_oversign_headers", "From", Kind::List, SM),
    p("dkim_signed_headers", "From, Reply-To, Subject, Date, To, Cc, Resent-Date, Resent-From, Resent-Sender, Resent-To, Resent-Cc, In-Reply-To, References, List-Id, List-Help, List-Unsubscribe, List-Subscribe, List-Post, List-Owner, List-Archive, Message-ID, MIME-Version, Content-Type, Content-Transfer-Encoding", Kind::List, SM),
    p("dkim_signing_table", "", Kind::List, BR | SM | CL | PX),
    p("dmarc_quarantine_enforce", "no", Kind::Bool, CL),
    p("dmarc_reject_enforce", "no", Kind::Bool, CL),
    p("dns_nameservers", "", Kind::List, RS),
    p("double_bounce_sender", "double-bounce", Kind::Str, BO | PK | SD | CL | BR | QM),
    p("empty_address_default_transport_maps_lookup_key", "<>", Kind::Str, QM),
    p("empty_address_relayhost_maps_lookup_key", "<>", Kind::Str, QM),
    p("forward_path", "$home/.forward${recipient_delimiter}${extension}, $home/.forward", Kind::List, LO),
    p("header_checks", "", Kind::List, CL),
    p("header_size_limit", "102400", Kind::Size { min: 1024 }, CL | SD | PK),
    p("home_mailbox", "", Kind::Str, LO | M),
    p("hopcount_limit", "50", int(1, 1000), CL),
    p("inet_interfaces", "all", Kind::List, M),
    p("inet_protocols", "all", Kind::List, M | RS | SM),
    p("invalid_hostname_reject_code", "501", int(400, 599), SD | PK),
    p("ipc_query_timeout", "10s", Kind::Duration { unit: "s", min_ms: 10 }, ALL),
    p("ipc_timeout", "3600s", Kind::Duration { unit: "s", min_ms: 10 }, ALL),
    p("landlock_enforcement", "required", Kind::Enum(&["required", "best_effort"]), ALL),
    p("line_length_limit", "2048", int(512, 1 << 20), SD | CL | PS),
    p("lmtp_connect_timeout", "0s", Kind::Duration { unit: "s", min_ms: 0 }, SM),
    p("lmtp_data_done_timeout", "600s", Kind::Duration { unit: "s", min_ms: 1000 }, SM),
    p("lmtp_data_init_timeout", "120s", Kind::Duration { unit: "s", min_ms: 1000 }, SM),
    p("lmtp_data_xfer_timeout", "180s", Kind::Duration { unit: "s", min_ms: 1000 }, SM),
    p("lmtp_destination_concurrency_limit", "$default_destination_concurrency_limit", int(1, 1000), QM),
    p("lmtp_destination_rate_delay", "$default_destination_rate_delay", secs("s"), QM),
    p("lmtp_destination_recipient_limit", "$default_destination_recipient_limit", int(1, 1000), QM),
    p("lmtp_lhlo_name", "$myhostname", Kind::Str, SM),
    p("lmtp_lhlo_timeout", "300s", Kind::Duration { unit: "s", min_ms: 1000 }, SM),
    p("lmtp_mail_timeout", "300s", Kind::Duration { unit: "s", min_ms: 1000 }, SM),
    p("lmtp_rcpt_timeout", "300s", Kind::Duration { unit: "s", min_ms: 1000 }, SM),
    p("lmtp_requiretls_policy", "opportunistic", Kind::List, SM),
    p("lmtp_tcp_port", "24", int(1, 65535), SM),
    p("lmtp_tls_ciphers", "medium", Kind::TlsGrade, SM),
    p("lmtp_tls_exclude_ciphers", "", Kind::TlsExclude, SM),
    p("lmtp_tls_fingerprint_cert_match", "", Kind::List, SM),
    p("lmtp_tls_fingerprint_digest", "sha256", Kind::Enum(&["sha256", "sha1"]), SM),
    p("lmtp_tls_mandatory_ciphers", "medium", Kind::TlsGrade, SM),
    p("lmtp_tls_mandatory_exclude_ciphers", "", Kind::TlsExclude, SM),
    p("lmtp_tls_mandatory_protocols", ">=TLSv1", Kind::TlsProtocols, SM),
    p("lmtp_tls_policy_maps", "", Kind::List, SM | BR | PX | QM),
    p("lmtp_tls_protocols", ">=TLSv1", Kind::TlsProtocols, SM),
    p("lmtp_tls_secure_cert_match", "nexthop", Kind::List, SM),
    p("lmtp_tls_security_level", "", Kind::Str, SM | QM),
    p("lmtp_tls_verify_cert_match", "hostname", Kind::List, SM),
    p("local_destination_concurrency_limit", "2", int(1, 1000), QM),
    p("local_destination_rate_delay", "$default_destination_rate_delay", secs("s"), QM),
    p("local_destination_recipient_limit", "1", int(1, 1000), QM),
    p("local_header_rewrite_clients", "permit_inet_interfaces", Kind::List, SD),
    p("local_login_sender_maps", "static:*", Kind::List, PK | PX),
    p("local_recipient_maps", "proxy:unix:passwd.byname $alias_maps", Kind::List, SD | BR | PX | PK),
    p("local_transport", "local:$myhostname", Kind::Str, QM),
    p("mail_name", "Postern", Kind::Str, ALL),
    p("mail_spool_directory", "${data_directory}/mail/", Kind::Path, M | LO),
    ro("mail_version", env!("CARGO_PKG_VERSION"), Kind::Str, ALL),
    p("mailbox_size_limit", "51200000", SIZE, LO),
    p("maillog_file", "", Kind::Str, M),
    p("maps_rbl_reject_code", "554", int(400, 599), SD | PK),
    p("masquerade_classes", "envelope_sender, header_sender, header_recipient", Kind::List, CL),
    p("masquerade_domains", "", Kind::List, CL),
    p("masquerade_exceptions", "", Kind::List, CL),
    p("maximal_backoff_time", "4000s", secs("s"), QM),
    p("maximal_queue_lifetime", "5d", secs("d"), QM),
    p("message_size_limit", "10240000", SIZE, SD | CL | PK | PS),
    p("metrics_allowed_clients", "", Kind::List, MX),
    p("metrics_listen", "", Kind::Str, ALL),
    p("milter_command_timeout", "30s", Kind::Duration { unit: "s", min_ms: 1000 }, MI),
    p("milter_connect_macros", "j {daemon_name} {daemon_addr} v _", Kind::List, MI),
    p("milter_connect_timeout", "30s", Kind::Duration { unit: "s", min_ms: 1000 }, MI),
    p("milter_content_timeout", "300s", Kind::Duration { unit: "s", min_ms: 1000 }, MI),
    p("milter_data_macros", "i", Kind::List, MI),
    p("milter_default_action", "shutdown", Kind::Enum(&["accept", "reject", "tempfail", "quarantine", "shutdown"]), MI),
    p("milter_end_of_data_macros", "i", Kind::List, MI),
    p("milter_end_of_header_macros", "i", Kind::List, MI),
    p("milter_helo_macros", "{tls_version} {cipher} {cipher_bits} {cert_subject} {cert_issuer}", Kind::List, MI),
    p("milter_macro_daemon_name", "$myhostname", Kind::Str, MI),
    p("milter_macro_v", "$mail_name $mail_version", Kind::Str, MI),
    p("milter_mail_macros", "i {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host} {mail_mailer}", Kind::List, MI),
    p("milter_protocol", "6", int(2, 6), MI),
    p("milter_rcpt_macros", "i {rcpt_addr} {rcpt_host} {rcpt_mailer}", Kind::List, MI),
    p("mime_header_checks", "$header_checks", Kind::List, CL),
    p("mime_nesting_limit", "100", int(1, 10_000), CL),
    p("minimal_backoff_time", "300s", secs("s"), QM),
    p("multi_recipient_bounce_reject_code", "550", int(400, 599), SD | PK),
    p("mydestination", "$myhostname, localhost.$mydomain, localhost", Kind::List, SD | CL | QM | LO | PK | BR),
    p("mydomain", "", Kind::Str, ALL),
    p("myhostname", "", Kind::Str, ALL),
    p("mynetworks", "127.0.0.0/8 [::1]/128", Kind::List, SD | PK | PS),
    p("myorigin", "$myhostname", Kind::Str, CL | PK | LO | BO | SD | VE | BR | QM),
    // Postmaster notices Postern sends: bounce, 2bounce and delay (the
    // other classes are accepted and not sent; conf --check says so).
    p("nested_header_checks", "$header_checks", Kind::List, CL),
    p("non_fqdn_reject_code", "504", int(400, 599), SD | PK),
    p("non_smtpd_milters", "", Kind::List, CL | MI),
    p("notify_classes", "resource, software", Kind::List, BO),
    // The active set (qmgr(8)): how many messages, and recipients, the
    // queue manager holds in memory; the rest wait on disk in the broker's
    // order. Postfix's defaults.
    p("parent_domain_matches_subdomains", "debug_peer_list,fast_flush_domains,mynetworks,permit_mx_backup_networks,qmqpd_authorized_clients,relay_domains,smtpd_access_maps", Kind::List, SD | PK | QM),
    p("plaintext_reject_code", "450", int(400, 599), SD | PK),
    ro("postern_access_maps", "", Kind::List, BR | PK | PX),
    ro("postern_policy_services", "", Kind::List, M | PO),
    ro("postern_postscreen_services", "", Kind::List, M),
    ro("postern_restriction_classes", "", Kind::List, SD | PK),
    // postscreen(8): Postfix's names and defaults (without the stress
    // variants); the cache is Postern's state store, not a table.
    p("postscreen_access_list", "permit_mynetworks", Kind::List, PS),
    p("postscreen_bare_newline_action", "ignore", Kind::Enum(&["ignore", "enforce", "drop"]), PS),
    p("postscreen_bare_newline_enable", "no", Kind::Bool, PS),
    p("postscreen_bare_newline_ttl", "30d", Kind::Duration { unit: "d", min_ms: 1000 }, PS),
    p("postscreen_blacklist_action", "ignore", Kind::Enum(&["ignore", "enforce", "drop"]), PS),
    p("postscreen_cache_retention_time", "7d", Kind::Duration { unit: "d", min_ms: 0 }, PS),
    p("postscreen_client_connection_count_limit", "$smtpd_client_connection_count_limit", int(0, 1_000_000_000), PS),
    p("postscreen_command_count_limit", "20", int(1, 100_000), PS),
    p("postscreen_command_time_limit", "300s", Kind::Duration { unit: "s", min_ms: 1000 }, PS),
    p("postscreen_denylist_action", "$postscreen_blacklist_action", Kind::Enum(&["ignore", "enforce", "drop"]), PS),
    p("postscreen_disable_vrfy_command", "$disable_vrfy_command", Kind::Bool, PS),
    p("postscreen_dnsbl_action", "ignore", Kind::Enum(&["ignore", "enforce", "drop"]), PS),
    p("postscreen_dnsbl_allowlist_threshold", "$postscreen_dnsbl_whitelist_threshold", int(-1_000_000, 1_000_000), PS),
    p("postscreen_dnsbl_max_ttl", "1h", Kind::Duration { unit: "h", min_ms: 1000 }, PS),
    p("postscreen_dnsbl_min_ttl", "60s", Kind::Duration { unit: "s", min_ms: 1000 }, PS),
    p("postscreen_dnsbl_sites", "", Kind::List, PS),
    p("postscreen_dnsbl_threshold", "1", int(1, 1_000_000), PS),
    p("postscreen_dnsbl_timeout", "10s", Kind::Duration { unit: "s", min_ms: 1000 }, PS),
    p("postscreen_dnsbl_whitelist_threshold", "0", int(-1_000_000, 1_000_000), PS),
    p("postscreen_forbidden_commands", "CONNECT GET POST", Kind::List, PS),
    p("postscreen_greet_action", "ignore", Kind::Enum(&["ignore", "enforce", "drop"]), PS),
    p("postscreen_greet_banner", "$smtpd_banner", Kind::Str, PS),
    p("postscreen_greet_ttl", "1d", Kind::Duration { unit: "d", min_ms: 1000 }, PS),
    p("postscreen_greet_wait", "6s", Kind::Duration { unit: "s", min_ms: 100 }, PS),
    p("postscreen_helo_required", "$smtpd_helo_required", Kind::Bool, PS),
    p("postscreen_non_smtp_command_action", "drop", Kind::Enum(&["ignore", "enforce", "drop"]), PS),
    p("postscreen_non_smtp_command_enable", "no", Kind::Bool, PS),
    p("postscreen_non_smtp_command_ttl", "30d", Kind::Duration { unit: "d", min_ms: 1000 }, PS),
    p("postscreen_pipelining_action", "enforce", Kind::Enum(&["ignore", "enforce", "drop"]), PS),
    p("postscreen_pipelining_enable", "no", Kind::Bool, PS),
    p("postscreen_pipelining_ttl", "30d", Kind::Duration { unit: "d", min_ms: 1000 }, PS),
    p("postscreen_post_queue_limit", "$default_process_limit", int(1, 1_000_000), PS),
    p("postscreen_pre_queue_limit", "$default_process_limit", int(1, 1_000_000), PS),
    p("postscreen_upstream_proxy_protocol", "", Kind::Enum(&["", "haproxy"]), PS),
    p("postscreen_upstream_proxy_timeout", "5s", Kind::Duration { unit: "s", min_ms: 1000 }, PS),
    p("propagate_unmatched_extensions", "canonical, virtual", Kind::List, CL | BR),
    p("qmgr_message_active_limit", "20000", int(1, 10_000_000), QM),
    p("qmgr_message_recipient_limit", "20000", int(1, 10_000_000), QM),
    p("queue_directory", "${data_directory}/queue", Kind::Path, M | BR | SD),
    p("queue_file_pool_size", "32", int(0, 100_000), BR),
    p("queue_minfree", "0", SIZE, BR),
    p("rbl_reply_maps", "", Kind::List, SD | PK),
    p("recipient_bcc_maps", "", Kind::List, CL | PX | BR),
    p("recipient_canonical_classes", "envelope_recipient, header_recipient", Kind::List, CL),
    p("recipient_canonical_maps", "", Kind::List, CL | PX | BR),
    p("recipient_delimiter", "", Kind::Str, SD | LO | BR | PK | CL | QM),
    p("reject_code", "554", int(400, 599), SD | PK),
    p("relay_clientcerts", "", Kind::List, SD | PK),
    p("relay_domains", "", Kind::List, SD | QM | PK),
    p("relay_domains_reject_code", "554", int(400, 599), SD | PK),
    p("relay_recipient_maps", "", Kind::List, SD | BR | PX | PK),
    p("relay_transport", "relay", Kind::Str, QM),
    p("relayhost", "", Kind::Str, QM | SM),
    p("relocated_maps", "", Kind::List, QM | PX | BR),
    p("remote_header_rewrite_domain", "", Kind::Str, CL),
    p("requiretls_enable", "yes", Kind::Bool, SD),
    p("requiretls_esmtp_header", "yes", Kind::Bool, CL | SM),
    p("requiretls_redact_dsn", "yes", Kind::Bool, BO),
    p("role_id_base", "60200", int(1000, 4_000_000_000), M),
    p("sandbox_seccomp_action", "errno", Kind::Enum(&["errno", "kill", "log"]), ALL),
    p("sender_bcc_maps", "", Kind::List, CL | PX | BR),
    p("sender_canonical_classes", "envelope_sender, header_sender", Kind::List, CL),
    p("sender_canonical_maps", "", Kind::List, CL | PX | BR),
    p("sender_dependent_default_transport_maps", "", Kind::List, QM | PX | BR),
    p("sender_dependent_relayhost_maps", "", Kind::List, QM | PX | BR),
    p("service_crash_throttle_minimum", "3", int(1, 10_000), M),
    p("service_crash_throttle_percent", "50", int(1, 100), M),
    p("service_crash_throttle_window", "300s", secs("s"), M),
    p("service_throttle_time", "60s", secs("s"), M),
    p("smtp_address_preference", "any", Kind::Enum(&["any", "ipv4", "ipv6"]), SM),
    p("smtp_connect_budget", "60s", Kind::Duration { unit: "s", min_ms: 100 }, SM),
    p("smtp_connect_timeout", "30s", Kind::Duration { unit: "s", min_ms: 100 }, SM),
    p("smtp_connection_cache_size", "100", int(0, 100_000), SM),
    p("smtp_connection_cache_time_limit", "2s", secs("s"), SM),
    p("smtp_connection_reuse_time_limit", "300s", secs("s"), SM),
    p("smtp_data_done_timeout", "600s", Kind::Duration { unit: "s", min_ms: 100 }, SM),
    p("smtp_data_init_timeout", "120s", Kind::Duration { unit: "s", min_ms: 100 }, SM),
    p("smtp_data_xfer_timeout", "180s", Kind::Duration { unit: "s", min_ms: 100 }, SM),
    p("smtp_destination_concurrency_limit", "$default_destination_concurrency_limit", int(1, 1000), QM),
    p("smtp_destination_rate_delay", "$default_destination_rate_delay", secs("s"), QM),
    p("smtp_destination_recipient_limit", "$default_destination_recipient_limit", int(1, 1000), QM),
    p("smtp_dns_support_level", "", Kind::Enum(&["", "disabled", "enabled", "dnssec"]), SM),
    p("smtp_generic_maps", "", Kind::List, SM | BR | PX),
    p("smtp_helo_name", "$myhostname", Kind::Str, SM),
    p("smtp_helo_timeout", "300s", Kind::Duration { unit: "s", min_ms: 100 }, SM),
    p("smtp_line_length_limit", "998", int(80, 1 << 20), SM),
    // Postfix 3.11 says yes; the pflogsumm of Debian 12 (1.1.5) cannot
    // read delivery lines with the tls= field, so Postern's default is no.
    p("smtp_log_tls_feature_status", "no", Kind::Bool, SM),
    p("smtp_mail_timeout", "300s", Kind::Duration { unit: "s", min_ms: 100 }, SM),
    p("smtp_mta_sts_ca_file", "", Kind::Str, ST),
    p("smtp_mta_sts_enable", "yes", Kind::Bool, SM),
    p("smtp_rcpt_timeout", "300s", Kind::Duration { unit: "s", min_ms: 100 }, SM),
    p("smtp_requiretls_policy", "inline:{ { $mydomain = opportunistic }, { .$mydomain = opportunistic }, { localhost = opportunistic } }, cidr:{ { 0.0.0.0/0 opportunistic }, { ::/0 opportunistic } }, enforce", Kind::List, SM),
    p("smtp_sasl_auth_enable", "no", Kind::Bool, SM),
    p("smtp_sasl_password_maps", "", Kind::List, SM | BR | PX),
    p("smtp_sasl_security_options", "noplaintext, noanonymous", Kind::List, SM),
    p("smtp_sasl_tls_security_options", "noanonymous", Kind::List, SM),
    p("smtp_starttls_timeout", "300s", Kind::Duration { unit: "s", min_ms: 100 }, SM),
    p("smtp_tls_CAfile", "", Kind::Str, SM),
    p("smtp_tls_cert_file", "", Kind::Str, BR | M),
    p("smtp_tls_ciphers", "medium", Kind::TlsGrade, SM),
    p("smtp_tls_dane_insecure_mx_policy", "dane", Kind::Enum(&["may", "encrypt", "dane"]), SM),
    p("smtp_tls_exclude_ciphers", "", Kind::TlsExclude, SM),
    p("smtp_tls_fingerprint_cert_match", "", Kind::List, SM),
    p("smtp_tls_fingerprint_digest", "sha256", Kind::Enum(&["sha256", "sha1"]), SM),
    p("smtp_tls_key_file", "$smtp_tls_cert_file", Kind::Str, BR | M),
    p("smtp_tls_mandatory_ciphers", "medium", Kind::TlsGrade, SM),
    p("smtp_tls_mandatory_exclude_ciphers", "", Kind::TlsExclude, SM),
    p("smtp_tls_mandatory_protocols", ">=TLSv1", Kind::TlsProtocols, SM),
    p("smtp_tls_policy_maps", "", Kind::List, SM | BR | PX | QM),
    p("smtp_tls_protocols", ">=TLSv1", Kind::TlsProtocols, SM),
    p("smtp_tls_rpt_clock_offset", "0s", Kind::Duration { unit: "s", min_ms: 0 }, ST),
    p("smtp_tls_rpt_contact", "postmaster@$mydomain", Kind::Str, ST),
    p("smtp_tls_rpt_enable", "no", Kind::Bool, M | SM | ST),
    p("smtp_tls_rpt_organization", "$myhostname", Kind::Str, ST),
    p("smtp_tls_secure_cert_match", "nexthop, dot-nexthop", Kind::List, SM),
    p("smtp_tls_security_level", "may", Kind::Enum(&["none", "may", "encrypt", "dane", "dane-only", "verify", "secure", "fingerprint"]), SM | QM),
    p("smtp_tls_servername", "hostname", Kind::Str, SM),
    p("smtp_tls_trust_anchor_file", "", Kind::List, SM),
    p("smtp_tls_verify_cert_match", "hostname", Kind::List, SM),
    p("smtp_tls_wrappermode", "no", Kind::Bool, SM),
    p("smtpd_account_message_rate_limit", "0", int(0, 1_000_000), SD),
    p("smtpd_banner", "$myhostname ESMTP $mail_name", Kind::Str, SD | PS),
    p("smtpd_client_auth_rate_limit", "0", int(0, 1_000_000_000), SD),
    p("smtpd_client_connection_count_limit", "50", int(0, 1_000_000_000), SD),
    // Postfix's older name for the exceptions, still its default's source.
    p("smtpd_client_connection_limit_exceptions", "", Kind::List, SD | PK),
    p("smtpd_client_connection_rate_limit", "0", int(0, 1_000_000_000), SD),
    p("smtpd_client_event_limit_exceptions", "${smtpd_client_connection_limit_exceptions:$mynetworks}", Kind::List, SD | PK),
    p("smtpd_client_ipv6_prefix_length", "84", int(0, 128), SD | PS),
    p("smtpd_client_message_rate_limit", "0", int(0, 1_000_000_000), SD),
    p("smtpd_client_new_tls_session_rate_limit", "0", int(0, 1_000_000_000), SD),
    p("smtpd_client_recipient_rate_limit", "0", int(0, 1_000_000_000), SD),
    p("smtpd_client_restrictions", "", Kind::List, SD | PK),
    p("smtpd_data_restrictions", "", Kind::List, SD | PK),
    p("smtpd_delay_reject", "yes", Kind::Bool, SD | PK),
    p("smtpd_end_of_data_restrictions", "", Kind::List, SD | PK),
    p("smtpd_error_sleep_time", "1s", secs("s"), SD),
    p("smtpd_forbid_bare_newline", "normalize", Kind::Enum(&["normalize", "yes", "reject", "no"]), SD),
    p("smtpd_forbid_bare_newline_exclusions", "$mynetworks", Kind::List, SD | PK),
    p("smtpd_hard_error_limit", "20", int(1, 100_000), SD),
    p("smtpd_helo_required", "no", Kind::Bool, SD | PS),
    p("smtpd_helo_restrictions", "", Kind::List, SD | PK),
    p("smtpd_junk_command_limit", "100", int(1, 100_000), SD),
    p("smtpd_milters", "", Kind::List, CL | MI | SD),
    p("smtpd_min_data_rate", "500", int(0, 1_000_000_000), SD),
    p("smtpd_null_access_lookup_key", "<>", Kind::Str, SD | PK),
    p("smtpd_peername_lookup", "yes", Kind::Bool, SD),
    p("smtpd_per_request_deadline", "yes", Kind::Bool, SD),
    p("smtpd_pipelining_limit", "1000", int(10, 100_000), SD),
    p("smtpd_policy_service_default_action", "451 4.3.5 Server configuration problem", Kind::Str, SD),
    p("smtpd_policy_service_max_idle", "300s", Kind::Duration { unit: "s", min_ms: 1000 }, SD),
    p("smtpd_policy_service_max_ttl", "1000s", Kind::Duration { unit: "s", min_ms: 1000 }, SD),
    p("smtpd_policy_service_policy_context", "", Kind::Str, SD),
    p("smtpd_policy_service_request_limit", "0", int(0, 1_000_000), SD),
    p("smtpd_policy_service_retry_delay", "1s", Kind::Duration { unit: "s", min_ms: 0 }, SD),
    p("smtpd_policy_service_timeout", "100s", Kind::Duration { unit: "s", min_ms: 1000 }, SD),
    p("smtpd_policy_service_try_limit", "2", int(1, 100), SD),
    p("smtpd_recipient_limit", "1000", int(100, 1_000_000), SD),
    p("smtpd_recipient_restrictions", "", Kind::List, SD | PK),
    p("smtpd_reject_unlisted_recipient", "yes", Kind::Bool, SD | PK),
    p("smtpd_reject_unlisted_sender", "no", Kind::Bool, SD | PK),
    p("smtpd_relay_restrictions", "permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination", Kind::List, SD | PK),
    p("smtpd_restriction_classes", "", Kind::List, 0),
    p("smtpd_sasl_account_failure_limit", "30", int(1, 1_000_000), AU),
    p("smtpd_sasl_auth_enable", "no", Kind::Bool, SD),
    p("smtpd_sasl_client_failure_limit", "10", int(1, 1_000_000), AU),
    p("smtpd_sasl_failure_window", "300s", Kind::Duration { unit: "s", min_ms: 1000 }, AU),
    p("smtpd_sasl_password_file", "${data_directory}/sasl/passwd", Kind::Path, AU | M),
    p("smtpd_sasl_security_options", "noanonymous", Kind::List, SD),
    p("smtpd_sasl_tls_security_options", "$smtpd_sasl_security_options", Kind::List, SD),
    p("smtpd_sender_login_maps", "", Kind::List, SD | BR | PK | PX),
    p("smtpd_sender_restrictions", "", Kind::List, SD | PK),
    // The pass service of master.cf that postscreen hands clients to.
    p("smtpd_service_name", "smtpd", Kind::Str, PS | M),
    p("smtpd_soft_error_limit", "10", int(1, 100_000), SD),
    p("smtpd_starttls_timeout", "300s", Kind::Duration { unit: "s", min_ms: 100 }, SD),
    p("smtpd_timeout", "300s", Kind::Duration { unit: "s", min_ms: 1000 }, SD),
    p("smtpd_tls_CAfile", "", Kind::Str, SD),
    p("smtpd_tls_ask_ccert", "no", Kind::Bool, SD | PK),
    p("smtpd_tls_auth_only", "yes", Kind::Bool, SD),
    p("smtpd_tls_cert_file", "", Kind::Str, BR | M),
    p("smtpd_tls_chain_files", "", Kind::List, BR | M),
    p("smtpd_tls_ciphers", "medium", Kind::TlsGrade, SD),
    p("smtpd_tls_exclude_ciphers", "", Kind::TlsExclude, SD),
    p("smtpd_tls_fingerprint_digest", "sha256", Kind::Enum(&["sha256", "sha1"]), SD),
    p("smtpd_tls_key_file", "$smtpd_tls_cert_file", Kind::Str, BR | M),
    p("smtpd_tls_mandatory_ciphers", "medium", Kind::TlsGrade, SD),
    p("smtpd_tls_mandatory_exclude_ciphers", "", Kind::TlsExclude, SD),
    p("smtpd_tls_mandatory_protocols", ">=TLSv1", Kind::TlsProtocols, SD),
    p("smtpd_tls_protocols", ">=TLSv1", Kind::TlsProtocols, SD),
    p("smtpd_tls_security_level", "may", Kind::Enum(&["none", "may", "encrypt"]), SD | M),
    p("smtpd_tls_wrappermode", "no", Kind::Bool, SD | M),
    p("smtpd_upstream_proxy_protocol", "", Kind::Enum(&["", "haproxy"]), SD),
    p("smtpd_upstream_proxy_timeout", "5s", Kind::Duration { unit: "s", min_ms: 1000 }, SD),
    p("soft_bounce", "no", Kind::Bool, SD | QM | PK | PS),
    p("strict_rfc821_envelopes", "no", Kind::Bool, SD),
    p("syslog_name", "postfix", Kind::Str, ALL),
    p("tls_required_enable", "yes", Kind::Bool, SM),
    p("transport_maps", "", Kind::List, QM | SM | PX | BR),
    p("unknown_address_reject_code", "450", int(400, 599), SD | PK),
    p("unknown_client_reject_code", "450", int(400, 599), SD | PK),
    p("unknown_hostname_reject_code", "450", int(400, 599), SD | PK),
    p("unknown_local_recipient_reject_code", "550", int(400, 599), SD | PK),
    p("unknown_relay_recipient_reject_code", "550", int(400, 599), SD | PK),
    p("unknown_virtual_alias_reject_code", "550", int(400, 599), SD | PK),
    p("unknown_virtual_mailbox_reject_code", "550", int(400, 599), SD | PK),
    p("unverified_recipient_defer_code", "450", int(200, 599), SD | PK),
    p("unverified_recipient_reject_code", "450", int(200, 599), SD | PK),
    p("unverified_recipient_reject_reason", "", Kind::Str, SD | PK),
    p("unverified_recipient_tempfail_action", "defer_if_permit", Kind::Enum(&["defer", "defer_if_permit"]), SD | PK),
    p("unverified_sender_defer_code", "450", int(200, 599), SD | PK),
    p("unverified_sender_reject_code", "450", int(200, 599), SD | PK),
    p("unverified_sender_reject_reason", "", Kind::Str, SD | PK),
    p("unverified_sender_tempfail_action", "defer_if_permit", Kind::Enum(&["defer", "defer_if_permit"]), SD | PK),
    p("virtual_alias_address_length_limit", "1000", int(1, 100_000), CL),
    p("virtual_alias_domains", "$virtual_alias_maps", Kind::List, SD | QM | BR | PX | PK),
    p("virtual_alias_expansion_limit", "1000", int(1, 100_000), CL),
    p("virtual_alias_maps", "", Kind::List, CL | SD | BR | QM | PX | PK),
    p("virtual_alias_recursion_limit", "1000", int(1, 100_000), CL),
    p("virtual_mailbox_domains", "$virtual_mailbox_maps", Kind::List, SD | QM | BR | PX | PK),
    p("virtual_mailbox_maps", "", Kind::List, SD | BR | PX | PK | QM),
    p("virtual_transport", "virtual", Kind::Str, QM),
];

pub fn lookup(name: &str) -> Option<&'static ParamDef> {
    PARAMS
        .binary_search_by(|d| d.name.cmp(name))
        .ok()
        .map(|i| &PARAMS[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_is_sorted_and_unique() {
        for w in PARAMS.windows(2) {
            assert!(w[0].name < w[1].name, "{} before {}", w[0].name, w[1].name);
        }
        assert!(lookup("smtpd_timeout").is_some());
        assert!(lookup("no_such_thing").is_none());
    }
}
