//! smtpd's restriction lists (`smtpd_*_restrictions`) with Postfix's
//! semantics (smtpd_check.c): the vocabulary parsed once per listener, the
//! access(5) lookup keys, and the actions an access table may answer.
//! Evaluation is in [`eval`]; smtpd (the RCPT and other decision points)
//! and pickup (local submission) both use it, each with its own way to
//! reach the tables ([`Lookups`]).
mod actions;
mod ccert;
mod delegate;
pub(crate) mod dnsxl;
pub mod eval;
pub mod keys;
mod recipients;
mod server;
mod unverified;

use std::future::Future;
use std::time::Duration;

use postern_config::Params;

pub(crate) use actions::split_dsn;
pub use delegate::SessionInfo;
pub use eval::{Effects, Facts, Memo, Outcome};
pub use server::Server;

/// What an access check looks at, which also words its rejection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Client,
    Helo,
    Sender,
    Recipient,
    Data,
    EndOfData,
    /// The client's reverse (PTR) name, not forward-confirmed.
    ReverseClient,
    /// The client's TLS certificate (by its CommonName).
    Ccert,
}

impl Class {
    /// Postfix's reply class: `<name>: Client host rejected: ...`.
    pub fn text(self) -> &'static str {
        match self {
            Class::Client => "Client host",
            Class::Helo => "Helo command",
            Class::Sender => "Sender address",
            Class::Recipient => "Recipient address",
            Class::Data => "Data command",
            Class::EndOfData => "End-of-data",
            Class::ReverseClient => "Unverified Client host",
            Class::Ccert => "Client certificate",
        }
    }
}

/// Which sender-login check (smtpd_sender_login_maps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginCheck {
    Any,
    Authenticated,
    Unauthenticated,
}

/// How a client name lookup ended (Postfix's name_status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameStatus {
    Ok,
    /// A temporary DNS error.
    Temp,
    /// No name, or a name that does not resolve back.
    Perm,
}

/// Which DNS list check, and what it looks up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dnsxl {
    RblClient,
    RhsblClient,
    RhsblReverseClient,
    RhsblHelo,
    RhsblSender,
    RhsblRecipient,
    DnswlClient,
    RhswlClient,
}

/// A DNS question for the restrictions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsQuery {
    /// A records (DNS lists).
    A(String),
    Txt(String),
    Mx(String),
    /// A and AAAA.
    Addresses(String),
    /// Name servers.
    Ns(String),
}

/// Its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dns {
    Found(Vec<String>),
    NotFound,
    NullMx,
    Temp(String),
}

/// One restriction of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum R {
    Permit,
    Reject,
    Defer,
    DeferIfPermit,
    DeferIfReject,
    /// Log the next restriction's rejection as `reject_warning` instead.
    WarnIfReject,
    PermitMynetworks,
    PermitSaslAuthenticated,
    PermitAuthDestination,
    RejectUnauthDestination,
    DeferUnauthDestination,
    SenderLogin(LoginCheck),
    /// `check_*_access table` (or an implicit `type:table`).
    Access(Class, String),
    RejectInvalidHelo,
    RejectNonFqdnHelo,
    RejectNonFqdnSender,
    RejectNonFqdnRecipient,
    RejectUnlistedSender,
    RejectUnlistedRecipient,
    RejectUnauthPipelining,
    RejectMultiRecipientBounce,
    RejectPlaintextSession,
    Sleep(u32),
    RejectUnknownClient,
    RejectUnknownReverseClient,
    RejectUnknownHelo,
    RejectUnknownSenderDomain,
    RejectUnknownRecipientDomain,
    /// A DNS list: the zone, with an optional `=filter`.
    Dnsxl(Dnsxl, String),
    /// reject_unverified_sender (Class::Sender), reject_unverified_recipient.
    RejectUnverified(Class),
    /// check_ccert_access table.
    CcertAccess(String),
    PermitTlsClientcerts,
    PermitTlsAllClientcerts,
    /// `check_{client,reverse_client_hostname,helo,sender,recipient}_{a,mx,ns}_access`:
    /// the hosts behind the name, by name and address, in an access table
    /// (OK not allowed).
    ServerAccess(Class, Server, String),
    /// check_policy_service, as the list writes its argument.
    Policy(String),
    /// A name Postern does not implement (`conf --check` refuses it, so
    /// only a table's answer can bring one here): 451 4.3.5.
    Unknown(String),
}

impl R {
    /// The restriction's name as main.cf writes it (the `check` label of
    /// postern_rejects_total): a bounded set, never a table or zone name.
    pub fn check_name(&self) -> &'static str {
        let subject = |c: &Class| match c {
            Class::Client => "client",
            Class::ReverseClient => "reverse_client_hostname",
            Class::Helo => "helo",
            Class::Sender => "sender",
            Class::Recipient => "recipient",
            Class::Data | Class::EndOfData | Class::Ccert => "",
        };
        match self {
            R::Permit => "permit",
            R::Reject => "reject",
            R::Defer => "defer",
            R::DeferIfPermit => "defer_if_permit",
            R::DeferIfReject => "defer_if_reject",
            R::WarnIfReject => "warn_if_reject",
            R::PermitMynetworks => "permit_mynetworks",
            R::PermitSaslAuthenticated => "permit_sasl_authenticated",
            R::PermitAuthDestination => "permit_auth_destination",
            R::RejectUnauthDestination => "reject_unauth_destination",
            R::DeferUnauthDestination => "defer_unauth_destination",
            R::SenderLogin(LoginCheck::Any) => "reject_sender_login_mismatch",
            R::SenderLogin(LoginCheck::Authenticated) => {
                "reject_authenticated_sender_login_mismatch"
            }
            R::SenderLogin(LoginCheck::Unauthenticated) => {
                "reject_unauthenticated_sender_login_mismatch"
            }
            R::Access(c, _) => match subject(c) {
                "client" => "check_client_access",
                "reverse_client_hostname" => "check_reverse_client_hostname_access",
                "helo" => "check_helo_access",
                "sender" => "check_sender_access",
                "recipient" => "check_recipient_access",
                _ => "check_access",
            },
            R::RejectInvalidHelo => "reject_invalid_helo_hostname",
            R::RejectNonFqdnHelo => "reject_non_fqdn_helo_hostname",
            R::RejectNonFqdnSender => "reject_non_fqdn_sender",
            R::RejectNonFqdnRecipient => "reject_non_fqdn_recipient",
            R::RejectUnlistedSender => "reject_unlisted_sender",
            R::RejectUnlistedRecipient => "reject_unlisted_recipient",
            R::RejectUnauthPipelining => "reject_unauth_pipelining",
            R::RejectMultiRecipientBounce => "reject_multi_recipient_bounce",
            R::RejectPlaintextSession => "reject_plaintext_session",
            R::Sleep(_) => "sleep",
            R::RejectUnknownClient => "reject_unknown_client_hostname",
            R::RejectUnknownReverseClient => "reject_unknown_reverse_client_hostname",
            R::RejectUnknownHelo => "reject_unknown_helo_hostname",
            R::RejectUnknownSenderDomain => "reject_unknown_sender_domain",
            R::RejectUnknownRecipientDomain => "reject_unknown_recipient_domain",
            R::Dnsxl(k, _) => match k {
                Dnsxl::RblClient => "reject_rbl_client",
                Dnsxl::RhsblClient => "reject_rhsbl_client",
                Dnsxl::RhsblReverseClient => "reject_rhsbl_reverse_client",
                Dnsxl::RhsblHelo => "reject_rhsbl_helo",
                Dnsxl::RhsblSender => "reject_rhsbl_sender",
                Dnsxl::RhsblRecipient => "reject_rhsbl_recipient",
                Dnsxl::DnswlClient => "permit_dnswl_client",
                Dnsxl::RhswlClient => "permit_rhswl_client",
            },
            R::RejectUnverified(Class::Sender) => "reject_unverified_sender",
            R::RejectUnverified(_) => "reject_unverified_recipient",
            R::CcertAccess(_) => "check_ccert_access",
            R::PermitTlsClientcerts => "permit_tls_clientcerts",
            R::PermitTlsAllClientcerts => "permit_tls_all_clientcerts",
            R::ServerAccess(c, k, _) => match (subject(c), k) {
                ("client", Server::A) => "check_client_a_access",
                ("client", Server::Mx) => "check_client_mx_access",
                ("client", Server::Ns) => "check_client_ns_access",
                ("reverse_client_hostname", Server::A) => "check_reverse_client_hostname_a_access",
                ("reverse_client_hostname", Server::Mx) => {
                    "check_reverse_client_hostname_mx_access"
                }
                ("reverse_client_hostname", Server::Ns) => {
                    "check_reverse_client_hostname_ns_access"
                }
                ("helo", Server::A) => "check_helo_a_access",
                ("helo", Server::Mx) => "check_helo_mx_access",
                ("helo", Server::Ns) => "check_helo_ns_access",
                ("sender", Server::A) => "check_sender_a_access",
                ("sender", Server::Mx) => "check_sender_mx_access",
                ("sender", Server::Ns) => "check_sender_ns_access",
                (_, Server::A) => "check_recipient_a_access",
                (_, Server::Mx) => "check_recipient_mx_access",
                (_, Server::Ns) => "check_recipient_ns_access",
            },
            R::Policy(_) => "check_policy_service",
            R::Unknown(_) => "unknown",
        }
    }
}

/// Parses one restriction list. `implicit`: the access check an implicit
/// `type:table` entry stands for (None where Postfix allows none).
pub fn parse(items: &[String], implicit: Option<Class>) -> Vec<R> {
    let mut out = Vec::new();
    let mut it = items.iter();
    while let Some(item) = it.next() {
        let n = item.to_ascii_lowercase();
        let arg = |it: &mut std::slice::Iter<'_, String>| it.next().cloned();
        if let Some((class, kind)) = server_check(&n) {
            out.push(match arg(&mut it) {
                Some(t) => R::ServerAccess(class, kind, t),
                None => R::Unknown(n),
            });
            continue;
        }
        let r = match n.as_str() {
            "permit" => R::Permit,
            "reject" => R::Reject,
            "defer" => R::Defer,
            "defer_if_permit" => R::DeferIfPermit,
            "defer_if_reject" => R::DeferIfReject,
            "warn_if_reject" => R::WarnIfReject,
            "permit_mynetworks" => R::PermitMynetworks,
            "permit_sasl_authenticated" => R::PermitSaslAuthenticated,
            "permit_auth_destination" => R::PermitAuthDestination,
            "reject_unauth_destination" => R::RejectUnauthDestination,
            "defer_unauth_destination" => R::DeferUnauthDestination,
            "reject_sender_login_mismatch" => R::SenderLogin(LoginCheck::Any),
            "reject_authenticated_sender_login_mismatch" => {
                R::SenderLogin(LoginCheck::Authenticated)
            }
            "reject_unauthenticated_sender_login_mismatch" => {
                R::SenderLogin(LoginCheck::Unauthenticated)
            }
            "reject_invalid_helo_hostname" | "reject_invalid_hostname" => R::RejectInvalidHelo,
            "reject_non_fqdn_helo_hostname" | "reject_non_fqdn_hostname" => R::RejectNonFqdnHelo,
            "reject_non_fqdn_sender" => R::RejectNonFqdnSender,
            "reject_non_fqdn_recipient" => R::RejectNonFqdnRecipient,
            "reject_unlisted_sender" => R::RejectUnlistedSender,
            "reject_unlisted_recipient" | "check_recipient_maps" => R::RejectUnlistedRecipient,
            "reject_unauth_pipelining" => R::RejectUnauthPipelining,
            "reject_multi_recipient_bounce" => R::RejectMultiRecipientBounce,
            "reject_plaintext_session" => R::RejectPlaintextSession,
            "reject_unknown_client_hostname" | "reject_unknown_client" => R::RejectUnknownClient,
            "reject_unknown_reverse_client_hostname" => R::RejectUnknownReverseClient,
            "reject_unknown_helo_hostname" | "reject_unknown_hostname" => R::RejectUnknownHelo,
            "reject_unknown_sender_domain" => R::RejectUnknownSenderDomain,
            "reject_unknown_recipient_domain" => R::RejectUnknownRecipientDomain,
            "reject_unverified_sender" => R::RejectUnverified(Class::Sender),
            "reject_unverified_recipient" => R::RejectUnverified(Class::Recipient),
            "permit_tls_clientcerts" => R::PermitTlsClientcerts,
            "permit_tls_all_clientcerts" => R::PermitTlsAllClientcerts,
            "check_ccert_access" => match arg(&mut it) {
                Some(t) => R::CcertAccess(t),
                None => R::Unknown(n),
            },
            "reject_rbl_client"
            | "reject_rhsbl_client"
            | "reject_rhsbl_reverse_client"
            | "reject_rhsbl_helo"
            | "reject_rhsbl_sender"
            | "reject_rhsbl_recipient"
            | "permit_dnswl_client"
            | "permit_rhswl_client" => {
                let kind = match n.as_str() {
                    "reject_rbl_client" => Dnsxl::RblClient,
                    "reject_rhsbl_client" => Dnsxl::RhsblClient,
                    "reject_rhsbl_reverse_client" => Dnsxl::RhsblReverseClient,
                    "reject_rhsbl_helo" => Dnsxl::RhsblHelo,
                    "reject_rhsbl_sender" => Dnsxl::RhsblSender,
                    "reject_rhsbl_recipient" => Dnsxl::RhsblRecipient,
                    "permit_dnswl_client" => Dnsxl::DnswlClient,
                    _ => Dnsxl::RhswlClient,
                };
                match arg(&mut it) {
                    Some(zone) => R::Dnsxl(kind, zone.to_ascii_lowercase()),
                    None => R::Unknown(n),
                }
            }
            "check_client_access"
            | "check_reverse_client_hostname_access"
            | "check_helo_access"
            | "check_sender_access"
            | "check_recipient_access" => {
                let class = match n.as_str() {
                    "check_client_access" => Class::Client,
                    "check_reverse_client_hostname_access" => Class::ReverseClient,
                    "check_helo_access" => Class::Helo,
                    "check_sender_access" => Class::Sender,
                    _ => Class::Recipient,
                };
                match arg(&mut it) {
                    Some(t) => R::Access(class, t),
                    None => R::Unknown(n),
                }
            }
            "check_policy_service" => match arg(&mut it) {
                Some(service) => R::Policy(service),
                None => R::Unknown(n),
            },
            "sleep" => match arg(&mut it).and_then(|s| s.parse().ok()) {
                Some(secs) => R::Sleep(secs),
                None => R::Unknown(n),
            },
            _ if n.contains(':') && !n.starts_with('{') => match implicit {
                Some(class) => R::Access(class, item.clone()),
                None => R::Unknown(item.clone()),
            },
            _ => {
                // A restriction with an argument Postern lacks: keep the
                // argument out of the list.
                if postern_config::restrictions::takes_argument(&n) {
                    it.next();
                }
                R::Unknown(item.clone())
            }
        };
        out.push(r);
    }
    out
}

/// `check_<subject>_<a|mx|ns>_access`: its subject and kind.
fn server_check(name: &str) -> Option<(Class, Server)> {
    let rest = name.strip_prefix("check_")?.strip_suffix("_access")?;
    let (subject, kind) = rest.rsplit_once('_')?;
    let kind = match kind {
        "a" => Server::A,
        "mx" => Server::Mx,
        "ns" => Server::Ns,
        _ => return None,
    };
    let class = match subject {
        "client" => Class::Client,
        "reverse_client_hostname" => Class::ReverseClient,
        "helo" => Class::Helo,
        "sender" => Class::Sender,
        "recipient" => Class::Recipient,
        _ => return None,
    };
    Some((class, kind))
}

/// Reply codes and lookup settings of the restrictions.
#[derive(Debug, Clone)]
pub struct Codes {
    pub access_map_reject: u16,
    pub access_map_defer: u16,
    pub defer: u16,
    pub reject: u16,
    pub relay_domains_reject: u16,
    pub invalid_hostname: u16,
    pub non_fqdn: u16,
    pub plaintext: u16,
    pub multi_recipient_bounce: u16,
    pub unknown_client: u16,
    pub unknown_hostname: u16,
    pub unknown_address: u16,
    pub maps_rbl: u16,
    pub unknown_local_recipient: u16,
    pub unknown_relay_recipient: u16,
    pub unknown_virtual_alias: u16,
    pub unknown_virtual_mailbox: u16,
}

/// The two virtual address classes smtpd asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Virtual {
    Alias,
    Mailbox,
}

/// A listener's restriction lists and their settings.
#[derive(Debug, Clone)]
pub struct Policy {
    pub client: Vec<R>,
    pub helo: Vec<R>,
    pub sender: Vec<R>,
    pub relay: Vec<R>,
    pub recipient: Vec<R>,
    pub data: Vec<R>,
    pub end_of_data: Vec<R>,
    /// smtpd_delay_reject: client, HELO and sender lists wait for RCPT.
    pub delay_reject: bool,
    pub reject_unlisted_recipient: bool,
    pub reject_unlisted_sender: bool,
    /// `relay_recipient_maps` is set.
    pub relay_recipient_maps: bool,
    /// `local_recipient_maps` is set.
    pub local_recipient_maps: bool,
    /// `virtual_alias_maps` is set: an aliased recipient is known, and an
    /// unaliased one in virtual_alias_domains is not.
    pub virtual_alias_maps: bool,
    /// virtual_mailbox_domains is set: mail for them is accepted, and
    /// with `virtual_mailbox_maps` set, only for the addresses it lists.
    pub virtual_mailbox_domains: bool,
    pub virtual_mailbox_maps: bool,
    pub codes: Codes,
    pub soft_bounce: bool,
    pub recipient_delimiter: String,
    /// Parent domains match as `example.com`, not `.example.com`
    /// (`smtpd_access_maps` in parent_domain_matches_subdomains).
    pub parent_style: bool,
    pub null_sender_key: String,
    pub double_bounce_sender: String,
    /// `default_rbl_reply`, unexpanded.
    pub rbl_reply: String,
    /// `rbl_reply_maps`: templates by DNS list (`domain=filter`, then
    /// `domain`), before `default_rbl_reply`.
    pub rbl_reply_maps: Vec<String>,
    /// `relay_clientcerts`: certificate fingerprints permit_tls_clientcerts
    /// allows.
    pub relay_clientcerts: Vec<String>,
    /// smtpd_tls_ask_ccert.
    pub ask_ccert: bool,
    /// smtpd_restriction_classes: each class name with its items.
    pub classes: Vec<(String, Vec<String>)>,
    pub verify_recipient: unverified::Codes,
    pub verify_sender: unverified::Codes,
    /// address_verify_poll_count, address_verify_poll_delay.
    pub verify_poll_count: u32,
    pub verify_poll_delay: Duration,
    /// The policy services the lists and classes name, by their argument
    /// there, with the listener's settings.
    pub services: Vec<(String, postern_config::policy::Resolved)>,
}

impl Policy {
    pub fn new(p: &Params) -> Result<Policy, String> {
        let e = |x: postern_config::ParamError| x.to_string();
        let list = |n: &str, implicit: Option<Class>| -> Result<Vec<R>, String> {
            Ok(parse(&p.list(n).map_err(e)?, implicit))
        };
        let code = |n: &str| -> Result<u16, String> { Ok(p.int(n).map_err(e)? as u16) };
        Ok(Policy {
            client: list("smtpd_client_restrictions", Some(Class::Client))?,
            helo: list("smtpd_helo_restrictions", Some(Class::Helo))?,
            sender: list("smtpd_sender_restrictions", Some(Class::Sender))?,
            relay: list("smtpd_relay_restrictions", Some(Class::Recipient))?,
            recipient: list("smtpd_recipient_restrictions", Some(Class::Recipient))?,
            data: list("smtpd_data_restrictions", None)?,
            end_of_data: list("smtpd_end_of_data_restrictions", None)?,
            delay_reject: p.bool("smtpd_delay_reject").map_err(e)?,
            reject_unlisted_recipient: p.bool("smtpd_reject_unlisted_recipient").map_err(e)?,
            reject_unlisted_sender: p.bool("smtpd_reject_unlisted_sender").map_err(e)?,
            relay_recipient_maps: !p.list("relay_recipient_maps").map_err(e)?.is_empty(),
            local_recipient_maps: !p.list("local_recipient_maps").map_err(e)?.is_empty(),
            virtual_alias_maps: !p.list("virtual_alias_maps").map_err(e)?.is_empty()
                || !p.list("virtual_alias_domains").map_err(e)?.is_empty(),
            virtual_mailbox_domains: !p.list("virtual_mailbox_domains").map_err(e)?.is_empty(),
            virtual_mailbox_maps: !p.list("virtual_mailbox_maps").map_err(e)?.is_empty(),
            codes: Codes {
                access_map_reject: code("access_map_reject_code")?,
                access_map_defer: code("access_map_defer_code")?,
                defer: code("defer_code")?,
                reject: code("reject_code")?,
                relay_domains_reject: code("relay_domains_reject_code")?,
                invalid_hostname: code("invalid_hostname_reject_code")?,
                non_fqdn: code("non_fqdn_reject_code")?,
                plaintext: code("plaintext_reject_code")?,
                multi_recipient_bounce: code("multi_recipient_bounce_reject_code")?,
                unknown_client: code("unknown_client_reject_code")?,
                unknown_hostname: code("unknown_hostname_reject_code")?,
                unknown_address: code("unknown_address_reject_code")?,
                maps_rbl: code("maps_rbl_reject_code")?,
                unknown_local_recipient: code("unknown_local_recipient_reject_code")?,
                unknown_relay_recipient: code("unknown_relay_recipient_reject_code")?,
                unknown_virtual_alias: code("unknown_virtual_alias_reject_code")?,
                unknown_virtual_mailbox: code("unknown_virtual_mailbox_reject_code")?,
            },
            soft_bounce: p.bool("soft_bounce").map_err(e)?,
            recipient_delimiter: p.str("recipient_delimiter").into(),
            parent_style: p
                .list("parent_domain_matches_subdomains")
                .map_err(e)?
                .iter()
                .any(|s| s == "smtpd_access_maps"),
            null_sender_key: p.str("smtpd_null_access_lookup_key").into(),
            double_bounce_sender: p.str("double_bounce_sender").into(),
            rbl_reply: p.str("default_rbl_reply").into(),
            rbl_reply_maps: p.list("rbl_reply_maps").map_err(e)?,
            relay_clientcerts: p.list("relay_clientcerts").map_err(e)?,
            ask_ccert: p.bool("smtpd_tls_ask_ccert").map_err(e)?,
            classes: classes(p.str("postern_restriction_classes")),
            verify_recipient: verify_codes(p, "recipient")?,
            verify_sender: verify_codes(p, "sender")?,
            verify_poll_count: p.int("address_verify_poll_count").map_err(e)?.max(1) as u32,
            verify_poll_delay: p.duration("address_verify_poll_delay").map_err(e)?,
            services: Vec::new(),
        })
    }

    /// Resolves the policy services the lists name (smtpd's listeners;
    /// local submission asks none).
    pub fn resolve_services(&mut self, p: &Params) -> Result<(), String> {
        self.services = delegate::services(self, p)?;
        Ok(())
    }

    /// Whether any list or class names a policy service.
    pub fn asks_policy(&self) -> bool {
        !self.services.is_empty()
    }

    /// A restriction class's items.
    pub fn class(&self, name: &str) -> Option<&[String]> {
        self.classes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, items)| items.as_slice())
    }

    /// Whether RCPT needs a decision at all.
    pub fn decides_rcpt(&self) -> bool {
        self.reject_unlisted_recipient
            && (self.relay_recipient_maps
                || self.local_recipient_maps
                || self.virtual_alias_maps
                || self.virtual_mailbox_maps)
            || [
                &self.client,
                &self.helo,
                &self.sender,
                &self.relay,
                &self.recipient,
            ]
            .iter()
            .any(|l| !l.is_empty())
    }
}

/// The unverified_{recipient,sender}_* settings.
fn verify_codes(p: &Params, which: &str) -> Result<unverified::Codes, String> {
    let e = |x: postern_config::ParamError| x.to_string();
    let n = |s: &str| format!("unverified_{which}_{s}");
    Ok(unverified::Codes {
        defer: p.int(&n("defer_code")).map_err(e)? as u16,
        reject: p.int(&n("reject_code")).map_err(e)? as u16,
        reason: p.str(&n("reject_reason")).trim().to_string(),
        defer_if_permit: p.str(&n("tempfail_action")) != "defer",
    })
}

/// `postern_restriction_classes` ("name {items} name {items}", which the
/// configuration builds from smtpd_restriction_classes) as pairs.
fn classes(v: &str) -> Vec<(String, Vec<String>)> {
    let tokens = postern_config::value::split_list(v);
    tokens
        .chunks(2)
        .filter_map(|pair| match pair {
            [name, group] => {
                let inner = group.strip_prefix('{')?.strip_suffix('}')?;
                Some((name.clone(), postern_config::value::split_list(inner)))
            }
            _ => None,
        })
        .collect()
}

/// The tables behind the restrictions, as the evaluating role reaches them.
pub trait Lookups {
    /// An access map: the first of `keys` found (`keys[0]` is the full
    /// key; pattern tables are asked only that one), with its index.
    fn access(
        &self,
        map: &str,
        keys: Vec<String>,
    ) -> impl Future<Output = Result<Option<(usize, String)>, String>>;

    /// The logins that own `sender` in smtpd_sender_login_maps.
    fn sender_owners(
        &self,
        sender: &str,
    ) -> impl Future<Output = Result<Option<Vec<String>>, String>>;

    /// Is `address` a known recipient? `local`: in a local domain (with
    /// `local_part`, extension stripped); else at a relay domain.
    fn listed(
        &self,
        address: &str,
        local_part: &str,
        local: bool,
    ) -> impl Future<Output = Result<bool, String>>;

    /// virtual_alias_maps and virtual_alias_domains (or virtual_mailbox_maps
    /// and virtual_mailbox_domains): whether `address` is listed, and
    /// whether its domain is one of the list's domains.
    fn virtual_table(
        &self,
        which: Virtual,
        address: &str,
    ) -> impl Future<Output = Result<(bool, bool), String>>;

    /// A DNS question (DNS lists, the reject_unknown_* checks).
    fn dns(&self, q: DnsQuery) -> impl Future<Output = Dns>;

    /// What address verification knows about `address` (asking may start
    /// a probe). An error is a failure of the verify service.
    fn verify(
        &self,
        address: &str,
    ) -> impl Future<Output = Result<postern_ipc::verify::Reply, String>>;

    /// One policy delegation request (check_policy_service): the server's
    /// action, or why none came (the caller applies the default action).
    fn policy(
        &self,
        service: &postern_config::policy::Resolved,
        attrs: Vec<(&'static str, String)>,
    ) -> impl Future<Output = Result<String, String>>;

    /// Waits (the `sleep` restriction).
    fn sleep(&self, d: Duration) -> impl Future<Output = ()> {
        tokio::time::sleep(d)
    }
}
