//! Who may relay, and which domains are ours: `mynetworks`,
//! `mydestination`, `relay_domains`, and the restriction lists. Shared by
//! smtpd (the RCPT decision point) and pickup (local submission).
use std::net::IpAddr;

use postern_config::Params;

/// An address block from `mynetworks`: `127.0.0.0/8`, `[::1]/128`, `192.0.2.1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

/// IPv4-mapped IPv6 addresses compare as IPv4 (L1035).
pub fn normalize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, bits) = match s.rsplit_once('/') {
            Some((a, b)) => (
                a,
                Some(
                    b.parse::<u8>()
                        .map_err(|_| format!("bad prefix length in {s}"))?,
                ),
            ),
            None => (s, None),
        };
        let addr = addr.trim_start_matches('[').trim_end_matches(']');
        let net: IpAddr = addr
            .parse()
            .map_err(|_| format!("bad network address {s}"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits = bits.unwrap_or(max);
        if bits > max {
            return Err(format!("prefix length too long in {s}"));
        }
        Ok(Cidr {
            net: normalize(net),
            bits: if net.is_ipv6() && normalize(net).is_ipv4() {
                bits.saturating_sub(96)
            } else {
                bits
            },
        })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, normalize(ip)) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = if self.bits == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(self.bits))
                };
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = if self.bits == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(self.bits))
                };
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

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

    #[test]
    fn cidr_matching() {
        let c = Cidr::parse("127.0.0.0/8").unwrap();
        assert!(c.contains("127.1.2.3".parse().unwrap()));
        assert!(c.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!c.contains("128.0.0.1".parse().unwrap()));
        let v6 = Cidr::parse("[2001:db8::]/32").unwrap();
        assert!(v6.contains("2001:db8:1::5".parse().unwrap()));
        assert!(!v6.contains("2001:db9::5".parse().unwrap()));
        assert!(
            Cidr::parse("[::1]/128")
                .unwrap()
                .contains("::1".parse().unwrap())
        );
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("host.example").is_err());
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
    }
}
