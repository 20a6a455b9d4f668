//! `cidr:` tables (cidr_table(5)): address patterns tried in order, with
//! `!pattern` negation and IF/ENDIF blocks. A key is an IPv4 or IPv6
//! address in text; a key that is not an address matches nothing, and a
//! pattern only ever matches keys of its own family (a negated IPv4
//! pattern does not match an IPv6 key), as in Postfix.
use std::net::IpAddr;

use super::lines::{self, keyword};

#[derive(Debug, Clone, PartialEq, Eq)]
struct Net {
    addr: IpAddr,
    bits: u8,
}

impl Net {
    /// `addr`, `addr/len`, `[addr]`, `[addr]/len` or `[addr/len]`. Host
    /// bits must be zero.
    fn parse(pattern: &str) -> Result<Net, String> {
        let text = match pattern.strip_prefix('[') {
            Some(rest) => {
                let (inner, after) = rest
                    .split_once(']')
                    .ok_or_else(|| format!("missing ']' character after \"{pattern}\""))?;
                if after.is_empty() {
                    inner.to_string()
                } else if after.starts_with('/') {
                    format!("{inner}{after}")
                } else {
                    return Err(format!("garbage after \"[{inner}]\""));
                }
            }
            None => pattern.to_string(),
        };
        let (addr, len) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text.as_str(), None),
        };
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| format!("bad address pattern: \"{text}\""))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let bits = match len {
            None => max,
            Some(l) if !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()) => {
                match l.parse::<u8>() {
                    Ok(b) if b <= max => b,
                    _ => return Err(format!("bad mask length in \"{text}\"")),
                }
            }
            Some(_) => return Err(format!("bad mask value in \"{text}\"")),
        };
        let net = Net { addr: ip, bits };
        if net.masked() != ip {
            return Err(format!(
                "non-null host address bits in \"{text}\", perhaps you should use \"{}/{bits}\" instead",
                net.masked()
            ));
        }
        Ok(net)
    }

    fn masked(&self) -> IpAddr {
        mask(self.addr, self.bits)
    }

    /// Some(contains) for a key of the same family, None otherwise.
    fn test(&self, key: IpAddr) -> Option<bool> {
        (key.is_ipv4() == self.addr.is_ipv4()).then(|| mask(key, self.bits) == self.addr)
    }
}

fn mask(ip: IpAddr, bits: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    Match {
        net: Net,
        want: bool,
        value: String,
    },
    /// `end` is the index just past the matching ENDIF.
    If {
        net: Net,
        want: bool,
        end: usize,
    },
    EndIf,
}

/// A parsed cidr table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CidrTable {
    rules: Vec<Rule>,
}

fn negations(mut s: &str) -> (bool, &str) {
    let mut want = true;
    loop {
        s = s.trim_start();
        match s.strip_prefix('!') {
            Some(rest) => {
                want = !want;
                s = rest;
            }
            None => return (want, s),
        }
    }
}

impl CidrTable {
    pub fn parse(text: &str, file: &str) -> Result<CidrTable, Vec<String>> {
        let mut rules = Vec::new();
        let mut errs = Vec::new();
        let mut open: Vec<(usize, usize)> = Vec::new();
        for line in lines::logical(text, file)? {
            let at = |m: String| format!("{file}:{}: {m}", line.number);
            let t = line.text.as_str();
            if let Some(rest) = keyword(t, "if") {
                let (want, p) = negations(rest);
                if p.is_empty() {
                    errs.push(at("no address pattern".into()));
                    continue;
                }
                match Net::parse(p.trim_end()) {
                    Ok(net) => {
                        open.push((rules.len(), line.number));
                        rules.push(Rule::If { net, want, end: 0 });
                    }
                    Err(e) => errs.push(at(e)),
                }
            } else if let Some(rest) = keyword(t, "endif") {
                if !rest.trim().is_empty() {
                    errs.push(at("garbage after ENDIF".into()));
                    continue;
                }
                match open.pop() {
                    Some((i, _)) => {
                        rules.push(Rule::EndIf);
                        let end = rules.len();
                        if let Rule::If { end: e, .. } = &mut rules[i] {
                            *e = end;
                        }
                    }
                    None => errs.push(at("ENDIF without IF".into())),
                }
            } else {
                let (want, rest) = negations(t);
                let (pattern, value) = rest
                    .split_once(char::is_whitespace)
                    .map_or((rest, ""), |(p, v)| (p, v.trim()));
                if pattern.is_empty() {
                    errs.push(at("no address pattern".into()));
                    continue;
                }
                match Net::parse(pattern) {
                    Ok(_) if value.is_empty() => errs.push(at("no lookup result".into())),
                    Ok(net) => rules.push(Rule::Match {
                        net,
                        want,
                        value: value.to_string(),
                    }),
                    Err(e) => errs.push(at(e)),
                }
            }
        }
        for (_, n) in open {
            errs.push(format!("{file}:{n}: IF has no matching ENDIF"));
        }
        if errs.is_empty() {
            Ok(CidrTable { rules })
        } else {
            Err(errs)
        }
    }

    /// The first rule that matches `key`, or None (also for a key that is
    /// not an address).
    pub fn lookup(&self, key: &str) -> Option<&str> {
        let ip: IpAddr = key.parse().ok()?;
        let mut i = 0;
        while let Some(r) = self.rules.get(i) {
            i += 1;
            match r {
                Rule::Match { net, want, value } => {
                    if net.test(ip) == Some(*want) {
                        return Some(value);
                    }
                }
                Rule::If { net, want, end } => {
                    if net.test(ip) != Some(*want) {
                        i = *end;
                    }
                }
                Rule::EndIf => {}
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_page_example() {
        let t = CidrTable::parse(
            "# Rule order matters.\n192.168.1.1 OK\n192.168.0.0/16 REJECT\n2001:db8::1 OK\n2001:db8::/32 REJECT\n",
            "client.cidr",
        )
        .unwrap();
        assert_eq!(t.lookup("192.168.1.1"), Some("OK"));
        assert_eq!(t.lookup("192.168.7.1"), Some("REJECT"));
        assert_eq!(t.lookup("2001:db8::1"), Some("OK"));
        assert_eq!(t.lookup("2001:0db8:0::7"), Some("REJECT"));
        assert_eq!(t.lookup("10.0.0.1"), None);
        assert_eq!(t.lookup("[192.168.1.1]"), None);
        assert_eq!(t.lookup("host.example"), None);
    }

    #[test]
    fn negation_if_endif_and_families() {
        let t = CidrTable::parse(
            "if 10.0.0.0/8\n!10.1.0.0/16 inside\nendif\n![::1] notv6loop\n0.0.0.0/0 any4\n",
            "t",
        )
        .unwrap();
        assert_eq!(t.lookup("10.2.3.4"), Some("inside"));
        assert_eq!(t.lookup("10.1.3.4"), Some("any4"));
        assert_eq!(t.lookup("::2"), Some("notv6loop"));
        assert_eq!(t.lookup("::1"), None);
        assert_eq!(t.lookup("192.0.2.1"), Some("any4"));
    }

    #[test]
    fn errors_name_the_line() {
        let e = CidrTable::parse(
            "10.0.0.1/8 x\n10.0.0.0/33 y\nendif\nif 10.0.0.0/8\n1.2.3.4\n",
            "f",
        )
        .unwrap_err();
        assert!(e[0].starts_with("f:1: non-null host address bits"), "{e:?}");
        assert!(e[1].starts_with("f:2: bad mask length"), "{e:?}");
        assert!(e[2].starts_with("f:3: ENDIF without IF"), "{e:?}");
        assert!(e[3].starts_with("f:5: no lookup result"), "{e:?}");
        assert!(e[4].starts_with("f:4: IF has no matching ENDIF"), "{e:?}");
    }
}
