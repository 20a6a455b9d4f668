//! The PROXY protocol (HAProxy's, versions 1 and 2), sans-IO: the header
//! a load balancer sends before the client's first byte, naming the real
//! client and server addresses. As in Postfix (`smtpd_upstream_proxy_protocol
//! = haproxy`):
//! - version 1 `PROXY TCP4|TCP6 client server cport sport\r\n`; `UNKNOWN`
//!   is refused, since it would sidestep address-based access control;
//! - version 2 `PROXY` over TCP/IPv4 or TCP/IPv6 (TLVs skipped), and
//!   `LOCAL`, which means the connection's own addresses;
//! - the whole header is at most [`MAX_HEADER`] bytes (Postfix's 536),
//!   and the parser says exactly how many bytes it took, so nothing of the
//!   SMTP conversation after it is swallowed.
//!
//! The error texts are Postfix's (`warning: haproxy read: TEXT: header`).
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Longest header, either version.
pub const MAX_HEADER: usize = 536;
/// Version 1's own limit (the specification's 107 bytes).
const MAX_V1: usize = 107;
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// What the header said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The real client and the address it connected to.
    Proxied {
        client: SocketAddr,
        server: SocketAddr,
    },
    /// A connection of the proxy's own (health checks): use the
    /// connection's addresses.
    Local,
}

/// Reads the header from the front of `buf`: None until enough has come;
/// the header and its length once it has; an error (Postfix's words) as
/// soon as the bytes cannot be one.
pub fn parse(buf: &[u8]) -> Result<Option<(Header, usize)>, &'static str> {
    const V1: &[u8] = b"PROXY ";
    let prefix = |p: &[u8]| buf.len() < p.len() && p.starts_with(buf);
    if buf.is_empty() || prefix(V1) || prefix(V2_SIGNATURE) {
        return Ok(None);
    }
    if buf.starts_with(V1) {
        return v1(buf);
    }
    if buf.starts_with(V2_SIGNATURE) {
        return v2(buf);
    }
    Err(if buf.len() < 16 {
        "short protocol header"
    } else {
        "unrecognized protocol header"
    })
}

fn v1(buf: &[u8]) -> Result<Option<(Header, usize)>, &'static str> {
    let Some(nl) = buf.iter().take(MAX_V1).position(|b| *b == b'\n') else {
        return if buf.len() >= MAX_V1 {
            Err("missing protocol header terminator")
        } else {
            Ok(None)
        };
    };
    let line = std::str::from_utf8(&buf[..nl]).map_err(|_| "bad or missing protocol header")?;
    let line = line
        .strip_suffix('\r')
        .ok_or("missing protocol header terminator")?;
    let mut t = line.split(' ');
    if t.next() != Some("PROXY") {
        return Err("bad or missing protocol header");
    }
    let v6 = match t.next() {
        Some("TCP4") => false,
        Some("TCP6") => true,
        _ => return Err("bad or missing protocol type"),
    };
    let addr = |s: Option<&str>, what: &'static str| -> Result<IpAddr, &'static str> {
        let a: IpAddr = s.and_then(|s| s.parse().ok()).ok_or(what)?;
        if a.is_ipv6() != v6 {
            return Err(what);
        }
        Ok(a)
    };
    let port = |s: Option<&str>, what: &'static str| -> Result<u16, &'static str> {
        // Decimal digits only (no sign, no leading zeros beyond "0").
        let s = s.ok_or(what)?;
        if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(what);
        }
        if s.len() > 1 && s.starts_with('0') {
            return Err(what);
        }
        s.parse().map_err(|_| what)
    };
    let client = addr(t.next(), "bad or missing client address")?;
    let server = addr(t.next(), "bad or missing server address")?;
    let cport = port(t.next(), "bad or missing client port")?;
    let sport = port(t.next(), "bad or missing server port")?;
    if t.next().is_some() {
        return Err("bad or missing protocol header");
    }
    Ok(Some((
        Header::Proxied {
            client: SocketAddr::new(client, cport),
            server: SocketAddr::new(server, sport),
        },
        nl + 1,
    )))
}

fn v2(buf: &[u8]) -> Result<Option<(Header, usize)>, &'static str> {
    let Some(head) = buf.get(..16) else {
        return Ok(None);
    };
    if head[12] >> 4 != 2 {
        return Err("unrecognized protocol version");
    }
    let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
    if 16 + len > MAX_HEADER {
        return Err("unrecognized protocol header");
    }
    let Some(body) = buf.get(16..16 + len) else {
        return Ok(None);
    };
    let total = 16 + len;
    match head[12] & 0x0f {
        // LOCAL: the proxy's own connection.
        0 => Ok(Some((Header::Local, total))),
        1 => match head[13] {
            0x11 => {
                if len < 12 {
                    return Err("short address field");
                }
                let ip = |o: usize| Ipv4Addr::new(body[o], body[o + 1], body[o + 2], body[o + 3]);
                let port = |o: usize| u16::from_be_bytes([body[o], body[o + 1]]);
                Ok(Some((
                    Header::Proxied {
                        client: SocketAddr::new(IpAddr::V4(ip(0)), port(8)),
                        server: SocketAddr::new(IpAddr::V4(ip(4)), port(10)),
                    },
                    total,
                )))
            }
            0x21 => {
                if len < 36 {
                    return Err("short address field");
                }
                let ip = |o: usize| {
                    let mut b = [0u8; 16];
                    b.copy_from_slice(&body[o..o + 16]);
                    Ipv6Addr::from(b)
                };
                let port = |o: usize| u16::from_be_bytes([body[o], body[o + 1]]);
                Ok(Some((
                    Header::Proxied {
                        client: SocketAddr::new(IpAddr::V6(ip(0)), port(32)),
                        server: SocketAddr::new(IpAddr::V6(ip(16)), port(34)),
                    },
                    total,
                )))
            }
            _ => Err("unsupported network protocol"),
        },
        _ => Err("bad command in proxy header"),
    }
}

/// A version 2 header (for tests and the fuzz round trip).
pub fn encode_v2(h: &Header) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    match h {
        Header::Local => {
            out.extend_from_slice(&[0x20, 0x00, 0, 0]);
        }
        Header::Proxied { client, server } => {
            let mut addrs = Vec::new();
            let fam = match (client.ip(), server.ip()) {
                (IpAddr::V4(c), IpAddr::V4(s)) => {
                    addrs.extend_from_slice(&c.octets());
                    addrs.extend_from_slice(&s.octets());
                    0x11
                }
                (c, s) => {
                    let v6 = |a: IpAddr| match a {
                        IpAddr::V4(a) => a.to_ipv6_mapped(),
                        IpAddr::V6(a) => a,
                    };
                    addrs.extend_from_slice(&v6(c).octets());
                    addrs.extend_from_slice(&v6(s).octets());
                    0x21
                }
            };
            addrs.extend_from_slice(&client.port().to_be_bytes());
            addrs.extend_from_slice(&server.port().to_be_bytes());
            out.push(0x21);
            out.push(fam);
            out.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
            out.extend_from_slice(&addrs);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn version_1() {
        let h = b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\r\nEHLO x\r\n";
        assert_eq!(
            parse(h),
            Ok(Some((
                Header::Proxied {
                    client: sa("192.0.2.7:40000"),
                    server: sa("198.51.100.1:25")
                },
                44
            )))
        );
        let h6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 25\r\n";
        assert!(matches!(parse(h6), Ok(Some((Header::Proxied { .. }, n))) if n == h6.len()));
        // Not yet complete.
        assert_eq!(parse(b"PROXY TCP4 192.0.2.7"), Ok(None));
        assert_eq!(parse(b"PRO"), Ok(None));
        for (bad, why) in [
            (&b"PROXY UNKNOWN\r\n"[..], "bad or missing protocol type"),
            (
                b"PROXY TCP4 192.0.2.7 198.51.100.1 40000\r\n",
                "bad or missing server port",
            ),
            (
                b"PROXY TCP4 2001:db8::7 198.51.100.1 1 25\r\n",
                "bad or missing client address",
            ),
            (
                b"PROXY TCP4 192.0.2.7 198.51.100.1 70000 25\r\n",
                "bad or missing client port",
            ),
            (
                b"PROXY TCP4 192.0.2.7 198.51.100.1 +1 25\r\n",
                "bad or missing client port",
            ),
            (
                b"PROXY TCP4 192.0.2.7 198.51.100.1 1 25 x\r\n",
                "bad or missing protocol header",
            ),
            (
                b"PROXY TCP4 192.0.2.7 198.51.100.1 1 25\n",
                "missing protocol header terminator",
            ),
            (b"EHLO client.example\r\n", "unrecognized protocol header"),
        ] {
            assert_eq!(parse(bad), Err(why), "{}", String::from_utf8_lossy(bad));
        }
        let long = format!("PROXY TCP4 {}", "1".repeat(200));
        assert_eq!(
            parse(long.as_bytes()),
            Err("missing protocol header terminator")
        );
    }

    #[test]
    fn version_2() {
        for h in [
            Header::Local,
            Header::Proxied {
                client: sa("192.0.2.7:40000"),
                server: sa("198.51.100.1:25"),
            },
            Header::Proxied {
                client: sa("[2001:db8::7]:40000"),
                server: sa("[2001:db8::1]:25"),
            },
        ] {
            let mut b = encode_v2(&h);
            let n = b.len();
            b.extend_from_slice(b"EHLO x\r\n");
            assert_eq!(parse(&b), Ok(Some((h, n))));
            // Byte by byte: nothing until it is whole.
            for cut in 0..n {
                assert_eq!(parse(&b[..cut]), Ok(None), "{cut}");
            }
        }
        // TLVs after the addresses are skipped.
        let mut b = encode_v2(&Header::Proxied {
            client: sa("192.0.2.7:1"),
            server: sa("198.51.100.1:25"),
        });
        b[15] += 5;
        b.extend_from_slice(&[0x04, 0x00, 0x02, b'x', b'y']);
        assert!(matches!(parse(&b), Ok(Some((_, n))) if n == b.len()));
        let mut bad = encode_v2(&Header::Local);
        bad[12] = 0x22;
        assert_eq!(parse(&bad), Err("bad command in proxy header"));
        bad[12] = 0x31;
        assert_eq!(parse(&bad), Err("unrecognized protocol version"));
        let mut udp = encode_v2(&Header::Proxied {
            client: sa("192.0.2.7:1"),
            server: sa("198.51.100.1:25"),
        });
        udp[13] = 0x12;
        assert_eq!(parse(&udp), Err("unsupported network protocol"));
        let mut short = encode_v2(&Header::Local);
        short[12] = 0x21;
        short[13] = 0x11;
        short[15] = 4;
        short.extend_from_slice(&[0; 4]);
        assert_eq!(parse(&short), Err("short address field"));
        let mut huge = encode_v2(&Header::Local);
        huge[14] = 0x03;
        assert_eq!(parse(&huge), Err("unrecognized protocol header"));
    }
}
