//! check_*_{a,mx,ns}_access (Postfix's check_server_access): the hosts
//! behind a name, looked up in an access table by host name, then by each
//! host's addresses. The name is the client's (confirmed or reverse), the
//! HELO name, or the domain of the sender or recipient.
//!
//! - MX: the domain's MX hosts, or the domain itself when it has none;
//! - NS: the domain's name servers, or those of the nearest parent that
//!   has some;
//! - A: the domain's own addresses (no name check).
//!
//! An OK answer would let a spammer allowlist itself by pointing its MX or
//! NS at a trusted host, so it is a configuration error, as in Postfix.
use std::net::IpAddr;

use super::eval::{Run, Status};
use super::{Class, Dns, DnsQuery, Lookups, keys};

/// Which hosts of the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    A,
    Mx,
    Ns,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::A => "A",
            Server::Mx => "MX",
            Server::Ns => "NS",
        }
    }
}

/// Hosts and addresses looked at, at most (Postfix's
/// smtpd_dns_rr_list_limit-like bound).
const MAX_HOSTS: usize = 16;
const MAX_ADDRESSES: usize = 16;

impl<L: Lookups> Run<'_, L> {
    pub(super) async fn server_access(&mut self, of: Class, kind: Server, map: &str) -> Status {
        let f = self.f;
        let (subject, reply_name) = match of {
            Class::Client => (Some(f.name), f.namaddr.to_string()),
            Class::ReverseClient => (Some(f.reverse_name), f.reverse_name.to_string()),
            Class::Helo => (f.helo, f.helo.unwrap_or("").to_string()),
            Class::Sender => (f.sender, f.sender.unwrap_or("").to_string()),
            Class::Recipient => (f.rcpt, f.rcpt.unwrap_or("").to_string()),
            Class::Data | Class::EndOfData | Class::Ccert => return Status::Dunno,
        };
        let Some(subject) = subject.filter(|s| !s.is_empty() && *s != "unknown") else {
            return Status::Dunno;
        };
        let domain = subject.rsplit_once('@').map_or(subject, |(_, d)| d);
        let domain = domain.trim_end_matches('.');
        if domain.is_empty() {
            return Status::Dunno;
        }
        // An address literal is its own mail server (not its own NS).
        if let Some(lit) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
            let lit = lit.strip_prefix("IPv6:").unwrap_or(lit);
            return match (kind, lit.parse::<IpAddr>()) {
                (Server::A | Server::Mx, Ok(ip)) => self
                    .server_keys(map, kind, keys::address(&ip), subject, &reply_name, of)
                    .await
                    .unwrap_or(Status::Dunno),
                _ => Status::Dunno,
            };
        }
        let Some(hosts) = self.servers(kind, domain).await else {
            return Status::Dunno;
        };
        let parent = self.policy.parent_style;
        for host in hosts.iter().take(MAX_HOSTS) {
            if let Ok(ip) = host.parse::<IpAddr>() {
                if let Some(st) = self
                    .server_keys(map, kind, keys::address(&ip), subject, &reply_name, of)
                    .await
                {
                    return st;
                }
                continue;
            }
            if kind != Server::A
                && let Some(st) = self
                    .server_keys(
                        map,
                        kind,
                        keys::domain(host, parent),
                        subject,
                        &reply_name,
                        of,
                    )
                    .await
            {
                return st;
            }
            let addrs = match self.lk.dns(DnsQuery::Addresses(host.clone())).await {
                Dns::Found(a) => a,
                _ => continue,
            };
            for a in addrs.iter().take(MAX_ADDRESSES) {
                let Ok(ip) = a.parse::<IpAddr>() else {
                    continue;
                };
                if let Some(st) = self
                    .server_keys(map, kind, keys::address(&ip), subject, &reply_name, of)
                    .await
                {
                    return st;
                }
            }
        }
        Status::Dunno
    }

    /// The hosts to look at; None when there are none (or DNS failed,
    /// which is logged and never rejects).
    async fn servers(&self, kind: Server, domain: &str) -> Option<Vec<String>> {
        let mut name = domain.to_string();
        loop {
            let q = match kind {
                Server::A => return Some(vec![domain.to_string()]),
                Server::Mx => DnsQuery::Mx(name.clone()),
                Server::Ns => DnsQuery::Ns(name.clone()),
            };
            match self.lk.dns(q).await {
                Dns::Found(h) => return Some(h),
                Dns::NotFound if kind == Server::Mx => return Some(vec![domain.to_string()]),
                Dns::NotFound => {
                    // NS: the nearest parent domain that has some.
                    match name.split_once('.') {
                        Some((_, parent)) if !parent.is_empty() => name = parent.to_string(),
                        _ => return None,
                    }
                }
                Dns::NullMx => return None,
                Dns::Temp(e) => {
                    crate::warn!("Unable to look up {} host for {name}: {e}", kind.name());
                    return None;
                }
            }
        }
    }

    /// One host's keys in the table: Some(status) when that ends the check.
    async fn server_keys(
        &mut self,
        map: &str,
        kind: Server,
        keys: Vec<String>,
        subject: &str,
        reply_name: &str,
        of: Class,
    ) -> Option<Status> {
        match self.lk.access(map, keys).await {
            Ok(Some((_, value))) => {
                let st = self.table_result(map, &value, reply_name, of).await;
                if matches!(st, Status::Ok) && self.effects.discard.is_none() {
                    let what = kind.name().to_ascii_lowercase();
                    crate::warn!("restriction check_*_{what}_access returns OK for {subject}");
                    crate::warn!("this is not allowed for security reasons");
                    crate::warn!("use DUNNO instead of OK if you want to make an exception");
                    return Some(self.server_error());
                }
                (!matches!(st, Status::Dunno)).then_some(st)
            }
            Ok(None) => None,
            Err(e) => {
                crate::warn!("{map}: {e}");
                Some(self.lookup_error(subject))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Class, R, parse};
    use super::Server;

    #[test]
    fn every_server_check_name_parses_with_its_table() {
        let subjects = [
            ("client", Class::Client),
            ("reverse_client_hostname", Class::ReverseClient),
            ("helo", Class::Helo),
            ("sender", Class::Sender),
            ("recipient", Class::Recipient),
        ];
        let kinds = [("a", Server::A), ("mx", Server::Mx), ("ns", Server::Ns)];
        for (s, class) in subjects {
            for (k, kind) in kinds {
                let name = format!("check_{s}_{k}_access");
                let got = parse(&[name.clone(), "hash:/t".into(), "permit".into()], None);
                assert_eq!(
                    got,
                    vec![R::ServerAccess(class, kind, "hash:/t".into()), R::Permit],
                    "{name}"
                );
            }
        }
        // Without its table it is not a check, and not a table either.
        assert_eq!(
            parse(&["check_sender_ns_access".into()], None),
            vec![R::Unknown("check_sender_ns_access".into())]
        );
        assert_eq!(
            parse(&["check_sender_xx_access".into(), "hash:/t".into()], None)[0],
            R::Unknown("check_sender_xx_access".into())
        );
    }
}
