//! Address blocks as `mynetworks` writes them: `127.0.0.0/8`,
//! `[::1]/128`, `192.0.2.1`. Shared by the configuration check and the
//! daemons that match client addresses.
use std::net::IpAddr;

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

/// Parses one block (the check `conf --check` makes).
pub fn parse(s: &str) -> Result<Cidr, String> {
    Cidr::parse(s)
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

/// A DNS list reply filter (`reject_rbl_client zone=127.0.0.[2..11]`):
/// four octet patterns, each a number or `[a..b;c;...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsxlFilter(Vec<Vec<(u8, u8)>>);

/// Parses a filter; None when it is not one.
pub fn dnsxl_filter(s: &str) -> Option<DnsxlFilter> {
    // Dots inside [..] are range operators, not separators.
    let mut parts = Vec::new();
    let (mut start, mut depth) = (0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            '.' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    if parts.len() != 4 {
        return None;
    }
    let mut out = Vec::new();
    for p in parts {
        let ranges = if let Some(inner) = p.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            inner
                .split(';')
                .map(|item| match item.split_once("..") {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => item.parse().ok().map(|n| (n, n)),
                })
                .collect::<Option<Vec<(u8, u8)>>>()?
        } else {
            let n: u8 = p.parse().ok()?;
            vec![(n, n)]
        };
        if ranges.is_empty() || ranges.iter().any(|(a, b)| a > b) {
            return None;
        }
        out.push(ranges);
    }
    Some(DnsxlFilter(out))
}

impl DnsxlFilter {
    pub fn matches(&self, ip: std::net::Ipv4Addr) -> bool {
        ip.octets()
            .iter()
            .zip(&self.0)
            .all(|(o, ranges)| ranges.iter().any(|(a, b)| (a..=b).contains(&o)))
    }
}

#[cfg(test)]
mod dnsxl_tests {
    use super::*;

    #[test]
    fn filters() {
        let f = dnsxl_filter("127.0.0.[2..11]").unwrap();
        assert!(f.matches("127.0.0.2".parse().unwrap()));
        assert!(f.matches("127.0.0.11".parse().unwrap()));
        assert!(!f.matches("127.0.0.12".parse().unwrap()));
        let f = dnsxl_filter("127.0.[0..255].[1;3]").unwrap();
        assert!(f.matches("127.0.9.3".parse().unwrap()));
        assert!(!f.matches("127.0.9.2".parse().unwrap()));
        assert!(dnsxl_filter("127.0.0").is_none());
        assert!(dnsxl_filter("127.0.0.[5..2]").is_none());
        assert!(dnsxl_filter("127.0.0.x").is_none());
    }
}
