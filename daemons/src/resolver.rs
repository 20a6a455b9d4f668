//! resolver: every DNS query of the system, in one daemon that has network
//! access for DNS only. It serves MX, address and PTR lookups to smtp (and
//! smtpd) over IPC. Null MX (RFC 7505) is reported as such. IPv4-mapped IPv6
//! answers are normalized to IPv4 (L1035).
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{NameServerPool, PoolContext, TlsConfig, TokioResolver};
use postern_config::{Params, Role};
use postern_ipc::edge::Answer;
use postern_ipc::resolver::{self as rs, Reply, Request};

use crate::daemon::{self, Context};
use crate::fatal;

/// Nameservers: `dns_nameservers` (address or address:port), else the
/// system's /etc/resolv.conf, read before the jail.
pub fn nameservers(params: &Params) -> Result<Vec<SocketAddr>, String> {
    let configured = params.list("dns_nameservers").map_err(|e| e.to_string())?;
    let list: Vec<String> = if configured.is_empty() {
        crate::fsutil::read_path_string("/etc/resolv.conf", crate::fsutil::SMALL_FILE_CAP)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().strip_prefix("nameserver"))
            .map(|s| s.trim().to_string())
            .collect()
    } else {
        configured
    };
    let mut out = Vec::new();
    for s in list {
        let addr = if let Ok(a) = s.parse::<SocketAddr>() {
            a
        } else if let Ok(ip) = s.trim_matches(['[', ']']).parse::<IpAddr>() {
            SocketAddr::new(ip, 53)
        } else {
            return Err(format!(
                "dns_nameservers: bad nameserver \"{s}\" (address or address:port)"
            ));
        };
        out.push(addr);
    }
    if out.is_empty() {
        out.push(SocketAddr::from(([127, 0, 0, 1], 53)));
    }
    Ok(out)
}

pub fn main(ipc_fd: RawFd) -> ! {
    daemon::run(Role::Resolver, ipc_fd, |params: &Params| {
        let servers = nameservers(params)?;
        let protocols = postern_config::inet::of(params);
        Ok((
            move |ctx: Context| serve(ctx, servers, protocols),
            Vec::new(),
        ))
    })
}

fn name_servers(servers: &[SocketAddr]) -> Vec<NameServerConfig> {
    servers
        .iter()
        .map(|a| {
            let mut udp = ConnectionConfig::udp();
            udp.port = a.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = a.port();
            NameServerConfig::new(a.ip(), true, vec![udp, tcp])
        })
        .collect()
}

fn options(timeout: Duration, protocols: postern_config::inet::Protocols) -> ResolverOpts {
    use hickory_resolver::config::LookupIpStrategy;
    let mut opts = ResolverOpts::default();
    // inet_protocols: a family that is off is never asked for (no AAAA
    // query on an IPv4-only appliance).
    opts.ip_strategy = match (protocols.ipv4, protocols.ipv6) {
        (true, false) => LookupIpStrategy::Ipv4Only,
        (false, true) => LookupIpStrategy::Ipv6Only,
        _ => LookupIpStrategy::default(),
    };
    opts.timeout = timeout;
    opts.attempts = 2;
    // No /etc/hosts inside the jail, and none wanted: DNS answers only.
    opts.use_hosts_file = ResolveHosts::Never;
    opts.ndots = 0;
    // A bounded cache that honours each record's TTL: DNS list answers
    // repeat for every recipient of a session.
    opts.cache_size = 4096;
    opts
}

fn build(
    servers: &[SocketAddr],
    timeout: Duration,
    protocols: postern_config::inet::Protocols,
) -> Result<TokioResolver, String> {
    let opts = options(timeout, protocols);
    TokioResolver::builder_with_config(
        ResolverConfig::from_parts(None, vec![], name_servers(servers)),
        TokioRuntimeProvider::default(),
    )
    .with_options(opts)
    .with_tls_config(no_tls()?)
    .build()
    .map_err(|e| e.to_string())
}

/// hickory's DNS-over-TLS code is compiled in (mail-auth's aws-lc-rs
/// feature turns it on), and without a configuration of its own it reads
/// the system's CA store, which the jail does not have. Postern asks
/// plain DNS only: this configuration trusts no certificate at all.
pub(crate) fn no_tls() -> Result<rustls::ClientConfig, String> {
    Ok(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth(),
    )
}

/// The resolver, and the name servers asked directly for what the
/// resolver answers itself.
struct Dns {
    resolver: TokioResolver,
    raw: NameServerPool<TokioRuntimeProvider>,
    protocols: postern_config::inet::Protocols,
}

async fn serve(
    mut ctx: Context,
    servers: Vec<SocketAddr>,
    protocols: postern_config::inet::Protocols,
) {
    let timeout = Duration::from_secs(5);
    let resolver = match build(&servers, timeout, protocols) {
        Ok(r) => r,
        Err(e) => fatal!("cannot start the resolver: {e}"),
    };
    let tls = match no_tls() {
        Ok(config) => TlsConfig { config },
        Err(e) => fatal!("cannot start the resolver: {e}"),
    };
    let raw = NameServerPool::from_config(
        name_servers(&servers),
        Arc::new(PoolContext::new(options(timeout, protocols), tls)),
        TokioRuntimeProvider::default(),
    );
    let dns = Rc::new(Dns {
        resolver,
        raw,
        protocols,
    });
    let query = ctx.query_timeout();
    crate::daemon::serve_channels(&mut ctx, |from, fd| channel(dns.clone(), from, fd, query)).await;
}

async fn channel(dns: Rc<Dns>, from: Role, fd: OwnedFd, timeout: Duration) {
    crate::edges::serve::<rs::Link, _, _>(Role::Resolver, from, fd, timeout, |req| {
        let dns = dns.clone();
        async move { Answer::Reply(answer(&dns, req).await) }
    })
    .await;
}

fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

fn failure(e: &hickory_resolver::net::NetError) -> Reply {
    if e.is_nx_domain() || e.is_no_records_found() {
        Reply::NotFound
    } else {
        Reply::Tempfail(e.to_string())
    }
}

/// The host names in answer records (PTR or NS), bounded; NotFound when
/// there are none.
fn names(records: &[hickory_resolver::proto::rr::Record]) -> Reply {
    let names: Vec<String> = records
        .iter()
        .filter_map(|r| match &r.data {
            RData::PTR(p) => Some(p.0.to_ascii()),
            RData::NS(n) => Some(n.0.to_ascii()),
            _ => None,
        })
        .map(|n| n.trim_end_matches('.').to_string())
        .filter(|n| !n.is_empty())
        .take(rs::MAX_ANSWERS)
        .collect();
    if names.is_empty() {
        Reply::NotFound
    } else {
        Reply::Names(names)
    }
}

/// The PTR names of a loopback address other than 127.0.0.1, asked of the
/// name servers: hickory answers every 127/8 PTR with "localhost" itself
/// (RFC 6761), where Postfix's system resolver would ask DNS for anything
/// /etc/hosts does not name (only 127.0.0.1 is localhost there).
async fn loopback_ptr(raw: &NameServerPool<TokioRuntimeProvider>, addr: IpAddr) -> Reply {
    use hickory_resolver::net::xfer::DnsHandle;
    use hickory_resolver::proto::op::{DnsRequestOptions, Query, ResponseCode};
    use hickory_resolver::proto::rr::{Name, RecordType};
    let name = Name::from(addr);
    let mut stream = raw.lookup(
        Query::query(name, RecordType::PTR),
        DnsRequestOptions::default(),
    );
    let next = std::future::poll_fn(|cx| {
        futures_core::Stream::poll_next(std::pin::Pin::new(&mut stream), cx)
    });
    match next.await {
        Some(Ok(resp)) => match resp.metadata.response_code {
            ResponseCode::NoError => names(&resp.answers),
            ResponseCode::NXDomain => Reply::NotFound,
            other => Reply::Tempfail(format!("{other}")),
        },
        Some(Err(e)) => failure(&e),
        None => Reply::Tempfail("no answer".into()),
    }
}

/// The MX hosts of an answer, best first; Err: a null MX (RFC 7505: a
/// single MX with the root as exchange) or none at all.
fn mx_hosts(records: &[hickory_resolver::proto::rr::Record]) -> Result<Vec<(u16, String)>, Reply> {
    let mut mx: Vec<(u16, String)> = records
        .iter()
        .filter_map(|r| match &r.data {
            RData::MX(m) => Some((
                m.preference,
                m.exchange.to_ascii().trim_end_matches('.').to_string(),
            )),
            _ => None,
        })
        .take(rs::MAX_ANSWERS)
        .collect();
    if mx.len() == 1 && mx[0].1.is_empty() {
        return Err(Reply::NullMx);
    }
    mx.retain(|(_, h)| !h.is_empty());
    mx.sort();
    if mx.is_empty() {
        Err(Reply::NotFound)
    } else {
        Ok(mx)
    }
}

/// One question asked straight of the name servers with the DO bit (the
/// caching resolver keeps no AD bit): whether the validating server
/// marked the answer authentic, and its answer records. NXDOMAIN is
/// `NotFound`; SERVFAIL (what a validating server answers for a bogus
/// answer), a timeout or any other failure is `Tempfail`.
async fn ask_dnssec(
    raw: &NameServerPool<TokioRuntimeProvider>,
    name: &str,
    rtype: hickory_resolver::proto::rr::RecordType,
) -> Result<(bool, Vec<hickory_resolver::proto::rr::Record>), Reply> {
    use hickory_resolver::net::xfer::DnsHandle;
    use hickory_resolver::proto::op::{DnsRequestOptions, Query, ResponseCode};
    use hickory_resolver::proto::rr::Name;
    let Ok(qname) = Name::from_ascii(fqdn(name)) else {
        return Err(Reply::NotFound);
    };
    let mut opts = DnsRequestOptions::default();
    opts.use_edns = true;
    opts.edns_set_dnssec_ok = true;
    let mut stream = raw.lookup(Query::query(qname, rtype), opts);
    let next = std::future::poll_fn(|cx| {
        futures_core::Stream::poll_next(std::pin::Pin::new(&mut stream), cx)
    });
    match next.await {
        Some(Ok(resp)) => match resp.metadata.response_code {
            ResponseCode::NoError => Ok((resp.metadata.authentic_data, resp.answers.clone())),
            ResponseCode::NXDomain => Err(Reply::NotFound),
            other => Err(Reply::Tempfail(format!("{other}"))),
        },
        Some(Err(e)) if e.is_nx_domain() => Err(Reply::NotFound),
        Some(Err(e)) if e.is_no_records_found() => Ok((false, Vec::new())),
        Some(Err(e)) => Err(Reply::Tempfail(e.to_string())),
        None => Err(Reply::Tempfail("no answer".into())),
    }
}

/// The DNSSEC-aware questions (smtp_dns_support_level = dnssec).
async fn answer_dnssec(dns: &Dns, req: Request) -> Reply {
    use hickory_resolver::proto::rr::RecordType;
    let raw = &dns.raw;
    match req {
        Request::MxSec(domain) => {
            let (secure, records) = match ask_dnssec(raw, &domain, RecordType::MX).await {
                Ok(x) => x,
                Err(r) => return r,
            };
            match mx_hosts(&records) {
                Ok(mx) => Reply::MxSec { secure, mx },
                Err(r) => r,
            }
        }
        Request::HostSec(host) => {
            let mut types = Vec::new();
            if dns.protocols.ipv4 {
                types.push(RecordType::A);
            }
            if dns.protocols.ipv6 {
                types.push(RecordType::AAAA);
            }
            let mut secure = true;
            let mut name = host.trim_end_matches('.').to_string();
            let mut addrs = Vec::new();
            for t in types {
                let (ad, records) = match ask_dnssec(raw, &host, t).await {
                    Ok(x) => x,
                    Err(Reply::NotFound) => continue,
                    Err(r) => return r,
                };
                let mut found = false;
                for r in &records {
                    let ip = match &r.data {
                        RData::A(a) => IpAddr::V4(a.0),
                        RData::AAAA(a) => IpAddr::V6(a.0).to_canonical(),
                        _ => continue,
                    };
                    found = true;
                    // The owner of the addresses: the name after CNAMEs.
                    name = r.name.to_ascii().trim_end_matches('.').to_string();
                    if addrs.len() < rs::MAX_ANSWERS {
                        addrs.push(ip);
                    }
                }
                if found {
                    secure &= ad;
                }
            }
            if addrs.is_empty() {
                Reply::NotFound
            } else {
                Reply::HostSec {
                    secure,
                    name,
                    addrs,
                }
            }
        }
        Request::Tlsa(name) => {
            let (secure, records) = match ask_dnssec(raw, &name, RecordType::TLSA).await {
                Ok(x) => x,
                Err(r) => return r,
            };
            let records: Vec<rs::Tlsa> = records
                .iter()
                .filter_map(|r| match &r.data {
                    RData::TLSA(t) => Some(rs::Tlsa {
                        usage: u8::from(t.cert_usage),
                        selector: u8::from(t.selector),
                        matching: u8::from(t.matching),
                        data: t.cert_data.clone(),
                    }),
                    _ => None,
                })
                .take(rs::MAX_TLSA)
                .collect();
            if records.is_empty() {
                Reply::NotFound
            } else {
                Reply::Tlsa { secure, records }
            }
        }
        Request::CnameSec(name) => match ask_dnssec(raw, &name, RecordType::CNAME).await {
            Ok((secure, records)) => {
                if records.iter().any(|r| matches!(r.data, RData::CNAME(_))) {
                    Reply::SecureCname(secure)
                } else {
                    Reply::NotFound
                }
            }
            Err(r) => r,
        },
        // answer() sends only the four questions above here.
        _ => Reply::Tempfail("not a DNSSEC question".into()),
    }
}

async fn answer(all: &Dns, req: Request) -> Reply {
    let raw = &all.raw;
    let dns = &all.resolver;
    match req {
        r @ (Request::MxSec(_) | Request::HostSec(_) | Request::Tlsa(_) | Request::CnameSec(_)) => {
            answer_dnssec(all, r).await
        }
        Request::Mx(domain) => match dns.mx_lookup(fqdn(&domain)).await {
            Ok(l) => match mx_hosts(l.answers()) {
                Ok(mx) => Reply::Mx(mx),
                Err(r) => r,
            },
            Err(e) => failure(&e),
        },
        Request::Addresses(host) => match dns.lookup_ip(fqdn(&host)).await {
            Ok(l) => {
                let ips: Vec<IpAddr> = l
                    .iter()
                    .map(|ip| match ip {
                        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
                        v4 => v4,
                    })
                    .collect();
                if ips.is_empty() {
                    Reply::NotFound
                } else {
                    Reply::Addresses(ips)
                }
            }
            Err(e) => failure(&e),
        },
        Request::A(name) => match dns.ipv4_lookup(fqdn(&name)).await {
            Ok(l) => {
                let ips: Vec<IpAddr> = l
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::A(a) => Some(IpAddr::V4(a.0)),
                        _ => None,
                    })
                    .collect();
                if ips.is_empty() {
                    Reply::NotFound
                } else {
                    Reply::Addresses(ips)
                }
            }
            Err(e) => failure(&e),
        },
        Request::Dnsbl(name) => match dns.ipv4_lookup(fqdn(&name)).await {
            Ok(l) => {
                let mut ttl = u32::MAX;
                let addrs: Vec<Ipv4Addr> = l
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::A(a) => {
                            ttl = ttl.min(r.ttl);
                            Some(a.0)
                        }
                        _ => None,
                    })
                    .take(rs::MAX_ANSWERS)
                    .collect();
                let ttl = if addrs.is_empty() { 0 } else { ttl };
                Reply::Listed { addrs, ttl }
            }
            Err(hickory_resolver::net::NetError::Dns(
                hickory_resolver::net::DnsError::NoRecordsFound(nr),
            )) => Reply::Listed {
                addrs: Vec::new(),
                ttl: nr.negative_ttl.unwrap_or(0),
            },
            Err(e) => failure(&e),
        },
        Request::Ns(domain) => match dns.ns_lookup(fqdn(&domain)).await {
            Ok(l) => names(l.answers()),
            Err(e) => failure(&e),
        },
        Request::Txt(name) => match dns.txt_lookup(fqdn(&name)).await {
            Ok(l) => {
                let texts: Vec<String> = l
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::TXT(t) => Some(t),
                        _ => None,
                    })
                    .map(|t| {
                        let joined: Vec<u8> =
                            t.txt_data.iter().flat_map(|d| d.iter().copied()).collect();
                        // Untrusted bytes: printable ASCII only, bounded.
                        joined
                            .iter()
                            .take(rs::MAX_TXT)
                            .map(|&b| {
                                if (0x20..0x7f).contains(&b) {
                                    b as char
                                } else {
                                    '?'
                                }
                            })
                            .collect()
                    })
                    .collect();
                if texts.is_empty() {
                    Reply::NotFound
                } else {
                    Reply::Texts(texts)
                }
            }
            Err(e) => failure(&e),
        },
        Request::Ptr(ip) => match ip.parse::<IpAddr>() {
            Ok(addr @ IpAddr::V4(v4)) if v4.is_loopback() && v4 != Ipv4Addr::LOCALHOST => {
                loopback_ptr(raw, addr).await
            }
            Ok(addr) => match dns.reverse_lookup(addr).await {
                Ok(l) => names(l.answers()),
                Err(e) => failure(&e),
            },
            Err(_) => Reply::NotFound,
        },
    }
}
