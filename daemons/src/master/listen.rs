//! Binding the inet listeners of master.cf. The master binds them (it may be
//! root, for port 25) and hands them to smtpd, which accepts on them from an
//! empty network namespace of its own.
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, bind, listen, setsockopt, socket,
    sockopt,
};
use postern_config::{Config, Params, Service};

pub struct Bound {
    pub service: Service,
    /// The service's expanded parameters when it has -o overrides.
    pub params: Vec<(String, String)>,
    pub sockets: Vec<(SocketAddr, TcpListener)>,
}

pub fn bind_one(addr: SocketAddr) -> io::Result<TcpListener> {
    let fam = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(fam, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    if addr.is_ipv6() {
        // [::] and 0.0.0.0 are separate listeners.
        setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrStorage::from(addr),
    )?;
    listen(&fd, Backlog::new(1024).map_err(io::Error::from)?)?;
    Ok(TcpListener::from(fd))
}

/// The socket addresses an inet service listens on.
pub fn addresses_for(svc: &Service, params: &Params) -> Vec<SocketAddr> {
    let interfaces = params.list("inet_interfaces").unwrap_or_default();
    let protocols = postern_config::inet::of(params);
    svc.listen
        .iter()
        .flat_map(|l| {
            addresses(l.host.as_deref(), &interfaces, protocols)
                .into_iter()
                .map(|ip| SocketAddr::new(ip, l.port))
        })
        .collect()
}

/// The addresses of a listen host (or of inet_interfaces); the wildcard
/// and loopback names expand to the families inet_protocols turns on.
fn addresses(
    host: Option<&str>,
    interfaces: &[String],
    protocols: postern_config::inet::Protocols,
) -> Vec<IpAddr> {
    let families = |v4: IpAddr, v6: IpAddr| -> Vec<IpAddr> {
        let mut out = Vec::new();
        if protocols.ipv4 {
            out.push(v4);
        }
        if protocols.ipv6 {
            out.push(v6);
        }
        out
    };
    let expand = |h: &str| -> Vec<IpAddr> {
        match h {
            "all" => families(Ipv4Addr::UNSPECIFIED.into(), Ipv6Addr::UNSPECIFIED.into()),
            "loopback-only" | "localhost" => {
                families(Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into())
            }
            h => h
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .into_iter()
                .collect(),
        }
    };
    match host {
        Some(h) => expand(h),
        None => interfaces.iter().flat_map(|i| expand(i)).collect(),
    }
}

/// Binds every inet service. Errors name the service and its master.cf line.
pub fn bind_all(cfg: &Config, params: &Params) -> Result<Vec<Bound>, String> {
    let interfaces = params.list("inet_interfaces").map_err(|e| e.to_string())?;
    let protocols = postern_config::inet::of(params);
    let mut out = Vec::new();
    for (svc, l) in cfg
        .services
        .iter()
        .filter_map(|s| s.listen.as_ref().map(|l| (s, l)))
    {
        let svc_params = if svc.overrides.is_empty() {
            Vec::new()
        } else {
            let p = cfg.params_with(&svc.overrides).map_err(|e| {
                e.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            })?;
            p.slice(svc.role.unwrap_or(postern_config::Role::Smtpd))
        };
        let mut sockets = Vec::new();
        for ip in addresses(l.host.as_deref(), &interfaces, protocols) {
            let addr = SocketAddr::new(ip, l.port);
            match bind_one(addr) {
                Ok(s) => sockets.push((addr, s)),
                // An IPv6 wildcard on a host without IPv6 is not fatal.
                Err(e)
                    if ip.is_ipv6()
                        && l.host.is_none()
                        && e.raw_os_error() == Some(libc_eafnosupport()) => {}
                Err(e) => {
                    return Err(format!(
                        "{}:{}: cannot listen on {addr} for service {}: {e}",
                        cfg.master_name, svc.line, svc.name
                    ));
                }
            }
        }
        out.push(Bound {
            service: svc.clone(),
            params: svc_params,
            sockets,
        });
    }
    Ok(out)
}

fn libc_eafnosupport() -> i32 {
    nix::errno::Errno::EAFNOSUPPORT as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_config::inet::Protocols;

    #[test]
    fn wildcards_follow_inet_protocols() {
        let all = vec!["all".to_string()];
        assert_eq!(addresses(None, &all, Protocols::ALL).len(), 2);
        let v4 = Protocols {
            ipv4: true,
            ipv6: false,
        };
        assert_eq!(
            addresses(None, &all, v4),
            vec![IpAddr::from(Ipv4Addr::UNSPECIFIED)]
        );
        assert_eq!(
            addresses(Some("loopback-only"), &all, v4),
            vec![IpAddr::from(Ipv4Addr::LOCALHOST)]
        );
        let v6 = Protocols {
            ipv4: false,
            ipv6: true,
        };
        assert_eq!(
            addresses(None, &all, v6),
            vec![IpAddr::from(Ipv6Addr::UNSPECIFIED)]
        );
        // An address named outright is kept.
        assert_eq!(
            addresses(Some("127.0.0.5"), &all, v6),
            vec!["127.0.0.5".parse::<IpAddr>().unwrap()]
        );
    }
}
