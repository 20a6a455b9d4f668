//! `inet_protocols`: the address families Postern listens on and looks up
//! (Postfix's values: all, ipv4, ipv6, or both named).

/// Which families are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protocols {
    pub ipv4: bool,
    pub ipv6: bool,
}

impl Protocols {
    pub const ALL: Protocols = Protocols {
        ipv4: true,
        ipv6: true,
    };
}

/// Parses the list; an unknown word, or none at all, is an error.
pub fn parse(items: &[String]) -> Result<Protocols, String> {
    let mut p = Protocols {
        ipv4: false,
        ipv6: false,
    };
    for i in items {
        match i.to_ascii_lowercase().as_str() {
            "all" => p = Protocols::ALL,
            "ipv4" => p.ipv4 = true,
            "ipv6" => p.ipv6 = true,
            other => {
                return Err(format!(
                    "inet_protocols: unknown protocol \"{other}\" (all, ipv4 or ipv6)"
                ));
            }
        }
    }
    if !p.ipv4 && !p.ipv6 {
        return Err("inet_protocols: no protocol (all, ipv4 or ipv6)".into());
    }
    Ok(p)
}

/// The families of a loaded configuration (validated by `conf --check`).
pub fn of(params: &crate::Params) -> Protocols {
    params
        .list("inet_protocols")
        .ok()
        .and_then(|l| parse(&l).ok())
        .unwrap_or(Protocols::ALL)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn postfix_values() {
        assert_eq!(parse(&v(&["all"])).unwrap(), Protocols::ALL);
        assert_eq!(
            parse(&v(&["ipv4"])).unwrap(),
            Protocols {
                ipv4: true,
                ipv6: false
            }
        );
        assert_eq!(parse(&v(&["IPv6", "ipv4"])).unwrap(), Protocols::ALL);
        assert!(parse(&v(&["ipv5"])).unwrap_err().contains("ipv5"));
        assert!(parse(&[]).is_err());
    }
}

/// `metrics_listen`: IP addresses with ports (`127.0.0.1:9187`,
/// `[::1]:9187`), separated by commas or spaces. Names are refused: the
/// endpoint must bind where the admin says, not where DNS points.
pub fn metrics_listen(value: &str) -> Result<Vec<std::net::SocketAddr>, String> {
    crate::value::split_list(value)
        .iter()
        .map(|a| {
            a.parse().map_err(|_| {
                format!(
                    "metrics_listen: {a}: not an IP address and port (127.0.0.1:9187, [::1]:9187)"
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod metrics_tests {
    #[test]
    fn metrics_listen_takes_addresses_and_ports_only() {
        let v = super::metrics_listen("127.0.0.1:9187, [::1]:9187").unwrap();
        assert_eq!(v.len(), 2);
        assert!(super::metrics_listen("").unwrap().is_empty());
        assert!(super::metrics_listen("localhost:9187").is_err());
        assert!(super::metrics_listen("127.0.0.1").is_err());
    }
}
