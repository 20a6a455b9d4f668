//! From a next hop to the addresses to try: MX lookup with A/AAAA fallback,
//! null MX (RFC 7505), and mail loops (an MX that is this machine, L925).
use std::net::{IpAddr, SocketAddr};

use postern_ipc::resolver::{Reply, Request};

/// DNS as the smtp client sees it: the resolver daemon in production, a
/// table of canned answers in tests.
pub trait Dns {
    async fn query(&self, req: Request) -> Reply;
}

/// The resolver daemon, as the smtp client's DNS (and the queue manager's,
/// for `postern queue explain`, and cleanup's, for the authentication
/// checks).
pub(crate) struct ResolverClient(pub(crate) crate::peerpool::PeerPool<postern_ipc::resolver::Link>);

impl ResolverClient {
    pub(crate) fn new(sb: crate::daemon::Switchboard, timeout: std::time::Duration) -> Self {
        ResolverClient(crate::peerpool::PeerPool::new(
            sb,
            postern_config::Role::Resolver,
            timeout,
            2,
        ))
    }
}

impl Dns for ResolverClient {
    async fn query(&self, req: Request) -> Reply {
        self.0
            .call(&req)
            .await
            .unwrap_or_else(|e| Reply::Tempfail(format!("resolver unavailable: {e}")))
    }
}

/// One host to try, with its addresses, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    pub addrs: Vec<SocketAddr>,
    /// Its MX preference (0 for a next hop looked up without MX).
    pub preference: u16,
    /// With DNSSEC lookups ([`route_dnssec`]): whether the MX lookup
    /// that named it was secure (None: no MX lookup named it), and how
    /// its addresses were found.
    pub dnssec: Option<(Option<bool>, super::dane::SecureHost)>,
}

/// Why no host can be tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// Bounce: (DSN, text).
    Permanent(String, String),
    /// Defer: (DSN, text).
    Temporary(String, String),
}

/// A parsed next hop: `[host]:port` (no MX lookup), `host:port` or `host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nexthop {
    pub host: String,
    pub port: u16,
    pub mx: bool,
}

pub fn parse_nexthop(s: &str) -> Result<Nexthop, String> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("bad next hop {s}"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| format!("bad port in {s}"))?,
            None if after.is_empty() => 25,
            None => return Err(format!("bad next hop {s}")),
        };
        return Ok(Nexthop {
            host: host.to_string(),
            port,
            mx: false,
        });
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.parse().map_err(|_| format!("bad port in {s}"))?),
        _ => (s, 25),
    };
    if host.is_empty() {
        return Err("empty next hop".into());
    }
    Ok(Nexthop {
        host: host.to_string(),
        port,
        mx: host.parse::<IpAddr>().is_err(),
    })
}

fn not_found(name: &str, rtype: &str) -> String {
    format!(
        "Host or domain name not found. Name service error for name={name} type={rtype}: Host not found"
    )
}

fn try_again(name: &str, rtype: &str, why: &str) -> String {
    format!(
        "Host or domain name not found. Name service error for name={name} type={rtype}: Host not found, try again ({why})"
    )
}

/// smtp_address_preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefer {
    Any,
    Ipv4,
    Ipv6,
}

/// The addresses of one host that may be tried (inet_protocols), the
/// preferred family first (smtp_address_preference), otherwise in the
/// order DNS gave them.
pub fn usable(
    addrs: &[SocketAddr],
    protocols: postern_config::inet::Protocols,
    prefer: Prefer,
) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = addrs
        .iter()
        .copied()
        .filter(|a| {
            if a.is_ipv4() {
                protocols.ipv4
            } else {
                protocols.ipv6
            }
        })
        .collect();
    match prefer {
        Prefer::Any => {}
        Prefer::Ipv4 => out.sort_by_key(|a| !a.is_ipv4()),
        Prefer::Ipv6 => out.sort_by_key(|a| !a.is_ipv6()),
    }
    out
}

/// A host's addresses; with `dnssec`, also how they were found (an
/// address literal is secure: no DNS answer was trusted for it).
async fn addresses(
    dns: &impl Dns,
    host: &str,
    port: u16,
    dnssec: bool,
) -> Result<(Vec<SocketAddr>, Option<super::dane::SecureHost>), RouteError> {
    let secure = |rname: &str, secure: bool| {
        dnssec.then(|| super::dane::SecureHost {
            qname: host.to_string(),
            rname: rname.to_string(),
            secure,
        })
    };
    if let Ok(ip) = host.trim_start_matches("IPv6:").parse::<IpAddr>() {
        return Ok((vec![SocketAddr::new(ip, port)], secure(host, true)));
    }
    let req = if dnssec {
        Request::HostSec(host.to_string())
    } else {
        Request::Addresses(host.to_string())
    };
    let at = |a: Vec<IpAddr>| a.into_iter().map(|ip| SocketAddr::new(ip, port)).collect();
    match dns.query(req).await {
        Reply::Addresses(a) => Ok((at(a), None)),
        Reply::HostSec {
            secure: s,
            name,
            addrs,
        } => Ok((at(addrs), secure(&name, s))),
        Reply::Tempfail(e) => Err(RouteError::Temporary(
            "4.4.3".into(),
            try_again(host, "A", &e),
        )),
        _ => Err(RouteError::Permanent("5.4.4".into(), not_found(host, "A"))),
    }
}

/// The hosts for a next hop, best first. `local` is every interface
/// address of this machine (as Postfix compares them): an MX host that
/// resolves to one of them, and every MX host that is not preferred over
/// it, are dropped.
pub async fn route(
    dns: &impl Dns,
    nexthop: &Nexthop,
    local: &[IpAddr],
) -> Result<Vec<Host>, RouteError> {
    route_with(dns, nexthop, local, false).await
}

/// As [`route`], asking DNSSEC-aware questions: each host says how
/// secure the way to it was (for DANE).
pub async fn route_dnssec(
    dns: &impl Dns,
    nexthop: &Nexthop,
    local: &[IpAddr],
) -> Result<Vec<Host>, RouteError> {
    route_with(dns, nexthop, local, true).await
}

async fn route_with(
    dns: &impl Dns,
    nexthop: &Nexthop,
    local: &[IpAddr],
    dnssec: bool,
) -> Result<Vec<Host>, RouteError> {
    if !nexthop.mx {
        let (addrs, sec) = addresses(dns, &nexthop.host, nexthop.port, dnssec).await?;
        return Ok(vec![Host {
            name: nexthop.host.clone(),
            addrs,
            preference: 0,
            dnssec: sec.map(|h| (None, h)),
        }]);
    }
    let domain = &nexthop.host;
    let req = if dnssec {
        Request::MxSec(domain.clone())
    } else {
        Request::Mx(domain.clone())
    };
    // None: the domain is its own mail host (no MX lookup named it).
    let mut mx_secure = None;
    let mx = match dns.query(req).await {
        Reply::Mx(list) => list,
        Reply::MxSec { secure, mx } => {
            mx_secure = Some(secure);
            mx
        }
        Reply::NullMx => {
            return Err(RouteError::Permanent(
                "5.1.10".into(),
                format!("Domain {domain} does not accept mail (nullMX)"),
            ));
        }
        Reply::Tempfail(e) => {
            return Err(RouteError::Temporary(
                "4.4.3".into(),
                try_again(domain, "MX", &e),
            ));
        }
        // No MX: the domain itself is the implicit MX (RFC 5321 5.1).
        _ => vec![(0, domain.clone())],
    };
    let mut hosts: Vec<(u16, Host)> = Vec::new();
    let mut last_err = None;
    for (pref, name) in mx {
        match addresses(dns, &name, nexthop.port, dnssec).await {
            Ok((addrs, sec)) => hosts.push((
                pref,
                Host {
                    name,
                    addrs,
                    preference: pref,
                    dnssec: sec.map(|h| (mx_secure, h)),
                },
            )),
            Err(e) => last_err = Some(e),
        }
    }
    let is_local = |a: &SocketAddr| {
        let ip = match a.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a.ip(), IpAddr::V4),
            v4 => v4,
        };
        local.contains(&ip)
    };
    if let Some(cut) = hosts
        .iter()
        .filter(|(_, h)| h.addrs.iter().any(is_local))
        .map(|(p, _)| *p)
        .min()
    {
        hosts.retain(|(p, _)| *p < cut);
        if hosts.is_empty() {
            return Err(RouteError::Permanent(
                "5.4.6".into(),
                format!("mail for {domain} loops back to myself"),
            ));
        }
    }
    if hosts.is_empty() {
        return Err(last_err
            .unwrap_or_else(|| RouteError::Permanent("5.4.4".into(), not_found(domain, "MX"))));
    }
    hosts.sort_by_key(|(p, _)| *p);
    Ok(hosts.into_iter().map(|(_, h)| h).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inet_protocols_and_the_address_preference() {
        use postern_config::inet::Protocols;
        let a = |s: &str| -> SocketAddr { s.parse().unwrap() };
        let mixed = [
            a("[2001:db8::1]:25"),
            a("192.0.2.1:25"),
            a("[2001:db8::2]:25"),
            a("192.0.2.2:25"),
        ];
        assert_eq!(usable(&mixed, Protocols::ALL, Prefer::Any), mixed.to_vec());
        assert_eq!(
            usable(&mixed, Protocols::ALL, Prefer::Ipv4),
            vec![mixed[1], mixed[3], mixed[0], mixed[2]]
        );
        assert_eq!(
            usable(&mixed, Protocols::ALL, Prefer::Ipv6),
            vec![mixed[0], mixed[2], mixed[1], mixed[3]]
        );
        let v4 = Protocols {
            ipv4: true,
            ipv6: false,
        };
        assert_eq!(usable(&mixed, v4, Prefer::Ipv6), vec![mixed[1], mixed[3]]);
        let v6 = Protocols {
            ipv4: false,
            ipv6: true,
        };
        assert_eq!(usable(&mixed, v6, Prefer::Any), vec![mixed[0], mixed[2]]);
    }
    use std::collections::HashMap;

    /// Canned answers; anything not listed is NXDOMAIN.
    struct Fake(HashMap<String, Reply>);

    impl Dns for Fake {
        async fn query(&self, req: Request) -> Reply {
            let key = match &req {
                Request::Mx(d) => format!("MX {d}"),
                Request::Addresses(h) => format!("A {h}"),
                Request::Ptr(ip) => format!("PTR {ip}"),
                Request::A(h) => format!("A4 {h}"),
                Request::Ns(d) => format!("NS {d}"),
                Request::Txt(h) => format!("TXT {h}"),
                Request::Dnsbl(h) => format!("DNSBL {h}"),
                Request::MxSec(d) => format!("MXSEC {d}"),
                Request::HostSec(h) => format!("HOSTSEC {h}"),
                Request::Tlsa(n) => format!("TLSA {n}"),
                Request::CnameSec(n) => format!("CNAMESEC {n}"),
            };
            self.0.get(&key).cloned().unwrap_or(Reply::NotFound)
        }
    }

    fn fake(entries: &[(&str, Reply)]) -> Fake {
        Fake(
            entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn run<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn nexthops() {
        assert_eq!(
            parse_nexthop("[127.0.0.1]:2626").unwrap(),
            Nexthop {
                host: "127.0.0.1".into(),
                port: 2626,
                mx: false
            }
        );
        assert_eq!(
            parse_nexthop("example.com").unwrap(),
            Nexthop {
                host: "example.com".into(),
                port: 25,
                mx: true
            }
        );
        assert_eq!(parse_nexthop("smarthost.example:587").unwrap().port, 587);
        assert!(!parse_nexthop("[mail.example]").unwrap().mx);
        assert!(parse_nexthop("[x:").is_err());
    }

    #[test]
    fn mx_order_and_fallback() {
        let dns = fake(&[
            (
                "MX example.com",
                Reply::Mx(vec![
                    (20, "b.example.com".into()),
                    (10, "a.example.com".into()),
                ]),
            ),
            ("A a.example.com", Reply::Addresses(vec![ip("192.0.2.1")])),
            (
                "A b.example.com",
                Reply::Addresses(vec![ip("192.0.2.2"), ip("2001:db8::2")]),
            ),
            ("A nomx.example", Reply::Addresses(vec![ip("192.0.2.9")])),
        ]);
        let hosts = run(route(&dns, &parse_nexthop("example.com").unwrap(), &[])).unwrap();
        assert_eq!(
            hosts.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(),
            vec!["a.example.com", "b.example.com"]
        );
        assert_eq!(hosts[1].addrs.len(), 2);
        // No MX record: the domain is its own mail host.
        let hosts = run(route(&dns, &parse_nexthop("nomx.example").unwrap(), &[])).unwrap();
        assert_eq!(hosts[0].addrs, vec!["192.0.2.9:25".parse().unwrap()]);
    }

    #[test]
    fn null_mx_nxdomain_tempfail_and_loops() {
        let dns = fake(&[
            ("MX null.example", Reply::NullMx),
            ("MX broken.example", Reply::Tempfail("SERVFAIL".into())),
            (
                "MX loop.example",
                Reply::Mx(vec![
                    (10, "me.loop.example".into()),
                    (20, "backup.loop.example".into()),
                ]),
            ),
            (
                "A me.loop.example",
                Reply::Addresses(vec![ip("198.51.100.7")]),
            ),
            (
                "A backup.loop.example",
                Reply::Addresses(vec![ip("198.51.100.8")]),
            ),
            (
                "MX half.example",
                Reply::Mx(vec![
                    (10, "primary.half.example".into()),
                    (20, "me.loop.example".into()),
                ]),
            ),
            (
                "A primary.half.example",
                Reply::Addresses(vec![ip("::ffff:192.0.2.55")]),
            ),
        ]);
        let nh = |s: &str| parse_nexthop(s).unwrap();
        assert!(
            matches!(run(route(&dns, &nh("null.example"), &[])), Err(RouteError::Permanent(d, _)) if d == "5.1.10")
        );
        assert!(
            matches!(run(route(&dns, &nh("nosuch.example"), &[])), Err(RouteError::Permanent(d, _)) if d == "5.4.4")
        );
        assert!(
            matches!(run(route(&dns, &nh("broken.example"), &[])), Err(RouteError::Temporary(d, _)) if d == "4.4.3")
        );
        // The best MX is this machine: mail loops (the backup is not better).
        let me = [ip("198.51.100.7")];
        assert!(
            matches!(run(route(&dns, &nh("loop.example"), &me)), Err(RouteError::Permanent(d, t)) if d == "5.4.6" && t.contains("loops back to myself"))
        );
        // A local MX with lower preference only cuts the list there.
        let hosts = run(route(&dns, &nh("half.example"), &me)).unwrap();
        assert_eq!(hosts.len(), 1);
        assert_eq!(hosts[0].name, "primary.half.example");
        // IPv4-mapped answers compare as IPv4 (L1035).
        let mapped = [ip("192.0.2.55")];
        assert!(
            matches!(run(route(&dns, &nh("half.example"), &mapped)), Err(RouteError::Permanent(d, _)) if d == "5.4.6")
        );
    }
}
