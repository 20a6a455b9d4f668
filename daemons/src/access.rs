//! Who may relay, and which domains are ours: `mynetworks`,
//! `mydestination`, `relay_domains`, and the restriction lists. Shared by
//! smtpd (the RCPT decision point) and pickup (local submission).
use std::net::IpAddr;

use postern_config::Params;

pub use postern_config::cidr::{Cidr, normalize};

/// A restriction in smtpd_*_restrictions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restriction {
    PermitMynetworks,
    PermitSaslAuthenticated,
    RejectUnauthDestination,
    DeferUnauthDestination,
    Permit,
    Reject,
    Defer,
    /// smtpd_sender_login_maps: an authenticated client must own the
    /// sender address, an unauthenticated one must not use an owned one.
    RejectSenderLoginMismatch,
    RejectAuthenticatedSenderLoginMismatch,
    RejectUnauthenticatedSenderLoginMismatch,
    /// A restriction Postern does not implement: a configuration error
    /// answered with 451 4.3.5, as Postfix does.
    Unknown(String),
}

impl Restriction {
    pub fn needs_sender_login(&self) -> bool {
        matches!(
            self,
            Restriction::RejectSenderLoginMismatch
                | Restriction::RejectAuthenticatedSenderLoginMismatch
                | Restriction::RejectUnauthenticatedSenderLoginMismatch
        )
    }
}

/// The keys `smtpd_sender_login_maps` is searched with, in order: the
/// whole address, then `@domain`.
pub fn sender_login_keys(sender: &str) -> Vec<String> {
    let mut keys = vec![sender.to_ascii_lowercase()];
    if let Some((_, d)) = sender.rsplit_once('@') {
        keys.push(format!("@{}", d.to_ascii_lowercase()));
    }
    keys
}

/// A `smtpd_sender_login_maps` value: the logins that own the address.
pub fn sender_owners(value: &str) -> Vec<String> {
    value
        .split([',', ' ', '\t'])
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Which list is being evaluated: it words the rejection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Client,
    Helo,
    Sender,
    Recipient,
}

/// What a restriction may look at.
pub struct Ctx<'a> {
    pub ip: IpAddr,
    /// `name[addr]`.
    pub client: &'a str,
    pub helo: &'a str,
    pub sender: &'a str,
    pub rcpt: &'a str,
    pub domain: &'a str,
    /// The SASL login, when the client authenticated.
    pub login: Option<&'a str>,
    /// Who owns the sender in smtpd_sender_login_maps (looked up before
    /// the check when a list needs it).
    pub sender_owners: Option<&'a [String]>,
}

fn restrictions(list: Vec<String>) -> Vec<Restriction> {
    list.into_iter()
        .map(|r| match r.as_str() {
            "permit_mynetworks" => Restriction::PermitMynetworks,
            "permit_sasl_authenticated" => Restriction::PermitSaslAuthenticated,
            "reject_unauth_destination" => Restriction::RejectUnauthDestination,
            "defer_unauth_destination" => Restriction::DeferUnauthDestination,
            "permit" => Restriction::Permit,
            "reject" => Restriction::Reject,
            "defer" => Restriction::Defer,
            "reject_sender_login_mismatch" => Restriction::RejectSenderLoginMismatch,
            "reject_authenticated_sender_login_mismatch" => {
                Restriction::RejectAuthenticatedSenderLoginMismatch
            }
            "reject_unauthenticated_sender_login_mismatch" => {
                Restriction::RejectUnauthenticatedSenderLoginMismatch
            }
            _ => Restriction::Unknown(r),
        })
        .collect()
}

/// The result of evaluating a restriction list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Permit,
    /// Nothing decided: go on.
    Dunno,
    Reject(u16, &'static str, String),
}

pub struct Access {
    pub mynetworks: Vec<Cidr>,
    pub mydestination: Vec<String>,
    pub relay_domains: Vec<String>,
    pub client_restrictions: Vec<Restriction>,
    pub helo_restrictions: Vec<Restriction>,
    pub sender_restrictions: Vec<Restriction>,
    pub relay_restrictions: Vec<Restriction>,
    pub recipient_restrictions: Vec<Restriction>,
    pub bare_lf_exclusions: Vec<Cidr>,
}

fn cidrs(list: Vec<String>) -> Result<Vec<Cidr>, String> {
    list.iter().map(|s| Cidr::parse(s)).collect()
}

impl Access {
    pub fn new(p: &Params) -> Result<Access, String> {
        let list = |n: &str| p.list(n).map_err(|e| e.to_string());
        let domains = |n: &str| -> Result<Vec<String>, String> {
            Ok(list(n)?
                .into_iter()
                .map(|d| d.to_ascii_lowercase())
                .collect())
        };
        Ok(Access {
            mynetworks: cidrs(list("mynetworks")?).map_err(|e| format!("mynetworks: {e}"))?,
            mydestination: domains("mydestination")?,
            relay_domains: domains("relay_domains")?,
            client_restrictions: restrictions(list("smtpd_client_restrictions")?),
            helo_restrictions: restrictions(list("smtpd_helo_restrictions")?),
            sender_restrictions: restrictions(list("smtpd_sender_restrictions")?),
            relay_restrictions: restrictions(list("smtpd_relay_restrictions")?),
            recipient_restrictions: restrictions(list("smtpd_recipient_restrictions")?),
            bare_lf_exclusions: cidrs(list("smtpd_forbid_bare_newline_exclusions")?)
                .map_err(|e| format!("smtpd_forbid_bare_newline_exclusions: {e}"))?,
        })
    }

    pub fn in_mynetworks(&self, ip: IpAddr) -> bool {
        self.mynetworks.iter().any(|c| c.contains(ip))
    }

    /// Domains delivered on this machine (an empty domain is local too).
    pub fn is_local_domain(&self, domain: &str) -> bool {
        domain.is_empty()
            || self
                .mydestination
                .iter()
                .any(|d| d.eq_ignore_ascii_case(domain))
    }

    fn authorized_destination(&self, domain: &str) -> bool {
        self.is_local_domain(domain)
            || self
                .relay_domains
                .iter()
                .any(|d| d.eq_ignore_ascii_case(domain))
    }

    /// The lists evaluated at RCPT time, in Postfix's order (with
    /// smtpd_delay_reject, client, HELO and sender restrictions wait for
    /// the recipient too).
    pub fn rcpt_lists(&self) -> [(Stage, &[Restriction]); 5] {
        [
            (Stage::Client, &self.client_restrictions),
            (Stage::Helo, &self.helo_restrictions),
            (Stage::Sender, &self.sender_restrictions),
            (Stage::Recipient, &self.relay_restrictions),
            (Stage::Recipient, &self.recipient_restrictions),
        ]
    }

    /// Evaluates one list.
    pub fn check(&self, list: &[Restriction], stage: Stage, c: &Ctx<'_>) -> Verdict {
        let what = match stage {
            Stage::Client => format!("<{}>: Client host rejected", c.client),
            Stage::Helo => format!("<{}>: Helo command rejected", c.helo),
            Stage::Sender => format!("<{}>: Sender address rejected", c.sender),
            Stage::Recipient => format!("<{}>: Recipient address rejected", c.rcpt),
        };
        for r in list {
            match r {
                Restriction::PermitMynetworks if self.in_mynetworks(c.ip) => {
                    return Verdict::Permit;
                }
                Restriction::PermitSaslAuthenticated if c.login.is_some() => {
                    return Verdict::Permit;
                }
                Restriction::PermitMynetworks | Restriction::PermitSaslAuthenticated => {}
                Restriction::RejectUnauthDestination | Restriction::DeferUnauthDestination
                    if !self.authorized_destination(c.domain) =>
                {
                    let (code, enh) = if *r == Restriction::RejectUnauthDestination {
                        (554, "5.7.1")
                    } else {
                        (454, "4.7.1")
                    };
                    return Verdict::Reject(
                        code,
                        enh,
                        format!("<{}>: Relay access denied", c.rcpt),
                    );
                }
                Restriction::RejectUnauthDestination | Restriction::DeferUnauthDestination => {}
                Restriction::Permit => return Verdict::Permit,
                Restriction::Reject => {
                    return Verdict::Reject(554, "5.7.1", format!("{what}: Access denied"));
                }
                Restriction::Defer => {
                    return Verdict::Reject(450, "4.7.1", format!("{what}: Try again later"));
                }
                Restriction::RejectSenderLoginMismatch
                | Restriction::RejectAuthenticatedSenderLoginMismatch
                | Restriction::RejectUnauthenticatedSenderLoginMismatch
                    if !c.sender.is_empty() =>
                {
                    let sender = format!("<{}>: Sender address rejected", c.sender);
                    let authenticated_check =
                        *r != Restriction::RejectUnauthenticatedSenderLoginMismatch;
                    let unauthenticated_check =
                        *r != Restriction::RejectAuthenticatedSenderLoginMismatch;
                    let owns = |u: &str| c.sender_owners.is_some_and(|o| o.iter().any(|x| x == u));
                    match c.login {
                        Some(user) if authenticated_check && !owns(user) => {
                            return Verdict::Reject(
                                553,
                                "5.7.1",
                                format!("{sender}: not owned by user {user}"),
                            );
                        }
                        None if unauthenticated_check && c.sender_owners.is_some() => {
                            return Verdict::Reject(
                                553,
                                "5.7.1",
                                format!("{sender}: not logged in"),
                            );
                        }
                        _ => {}
                    }
                }
                Restriction::RejectSenderLoginMismatch
                | Restriction::RejectAuthenticatedSenderLoginMismatch
                | Restriction::RejectUnauthenticatedSenderLoginMismatch => {}
                Restriction::Unknown(name) => {
                    crate::warn!("unknown smtpd restriction: \"{name}\"");
                    return Verdict::Reject(451, "4.3.5", "Server configuration error".into());
                }
            }
        }
        Verdict::Dunno
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `conf --check` accepts exactly the names this module evaluates: a
    /// name accepted there but unknown here would answer 451 at run time.
    #[test]
    fn the_check_and_the_evaluation_agree() {
        let names: Vec<String> = postern_config::restrictions::SUPPORTED
            .iter()
            .map(|s| s.to_string())
            .collect();
        for (r, n) in restrictions(names.clone()).iter().zip(&names) {
            assert!(!matches!(r, Restriction::Unknown(_)), "{n}");
        }
    }
}
