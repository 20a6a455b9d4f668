//! Who may relay, and which domains are ours: `mynetworks`,
//! `mydestination`, `relay_domains`, and the restriction lists. Shared by
//! smtpd (the RCPT decision point) and pickup (local submission).
use std::net::IpAddr;

use postern_config::Params;

pub use postern_config::cidr::{Cidr, normalize};

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

pub struct Access {
    pub mynetworks: Vec<Cidr>,
    pub mydestination: Vec<String>,
    pub relay_domains: Vec<String>,
    /// `relay_domains` in parent_domain_matches_subdomains: `example.com`
    /// matches its subdomains too (Postfix's default).
    pub relay_parent: bool,
    pub bare_lf_exclusions: Vec<Cidr>,
    /// smtpd_client_event_limit_exceptions: clients the anvil limits
    /// leave alone.
    pub limit_exceptions: Vec<Cidr>,
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
            relay_parent: list("parent_domain_matches_subdomains")?
                .iter()
                .any(|s| s == "relay_domains"),
            bare_lf_exclusions: cidrs(list("smtpd_forbid_bare_newline_exclusions")?)
                .map_err(|e| format!("smtpd_forbid_bare_newline_exclusions: {e}"))?,
            limit_exceptions: cidrs(list("smtpd_client_event_limit_exceptions")?)
                .map_err(|e| format!("smtpd_client_event_limit_exceptions: {e}"))?,
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

    /// A domain `relay_domains` lists: by name, `.parent` patterns, and
    /// (with Postfix's default parent_domain_matches_subdomains) the
    /// subdomains of a listed name.
    pub fn is_relay_domain(&self, domain: &str) -> bool {
        domain_listed(&self.relay_domains, self.relay_parent, domain)
    }
}

/// A domain a list of lowercased names holds: by name, `.parent`
/// patterns, and with `parent` (parent_domain_matches_subdomains) the
/// subdomains of a listed name.
pub fn domain_listed(list: &[String], parent: bool, domain: &str) -> bool {
    let domain = domain.to_ascii_lowercase();
    let domain = domain.strip_suffix('.').unwrap_or(&domain);
    list.iter().any(|d| {
        if let Some(p) = d.strip_prefix('.') {
            return domain.ends_with(d.as_str()) && domain.len() > p.len();
        }
        domain == d
            || (parent
                && domain.len() > d.len()
                && domain.ends_with(d.as_str())
                && domain.as_bytes()[domain.len() - d.len() - 1] == b'.')
    })
}

#[cfg(test)]
mod tests {
    /// `conf --check` accepts exactly the names the evaluator knows: a
    /// name accepted there but unknown here would answer 451 at run time.
    #[test]
    fn the_check_and_the_evaluation_agree() {
        use crate::restrict::{R, parse};
        use postern_config::restrictions::{SUPPORTED, SUPPORTED_WITH_ARGUMENT};
        for n in SUPPORTED {
            let r = parse(&[n.to_string()], None);
            assert!(!matches!(r[0], R::Unknown(_)), "{n}");
        }
        for n in SUPPORTED_WITH_ARGUMENT {
            let arg = if *n == "sleep" { "1" } else { "cdb:/x" };
            let r = parse(&[n.to_string(), arg.to_string()], None);
            assert_eq!(r.len(), 1, "{n}");
            assert!(!matches!(r[0], R::Unknown(_)), "{n}");
        }
        let implicit = parse(
            &["cidr:/etc/postfix/c.cidr".to_string()],
            Some(crate::restrict::Class::Client),
        );
        assert!(matches!(implicit[0], R::Access(..)));
    }
}
