//! access(5) lookup keys, in the order Postfix tries them. The first key
//! of each list is the full key (every table is asked); the rest are
//! partial keys, which pattern tables are not asked.
use std::net::IpAddr;

/// At most this many keys per list (the IPC limit).
const MAX: usize = postern_ipc::smtpd_broker::MAX_ACCESS_KEYS;

/// A host name and its parent domains: `a.b.example`, then `b.example`,
/// `example` (with `parent_style`), or `.b.example`, `.example`. A
/// numerical name gets no parents.
pub fn domain(name: &str, parent_style: bool) -> Vec<String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let mut out = vec![name.to_string()];
    if name.is_empty() || name.parse::<IpAddr>().is_ok() {
        return out;
    }
    let mut rest = name;
    while let Some(i) = rest.find('.') {
        let parent = &rest[i..];
        let key = if parent_style { &parent[1..] } else { parent };
        if key.is_empty() || out.len() >= MAX {
            break;
        }
        out.push(key.to_string());
        rest = &parent[1..];
    }
    out
}

/// A client address, then its parent networks: `192.0.2.1`, `192.0.2`,
/// `192.0`, `192` (IPv6 drops one `:` part at a time).
pub fn address(addr: &IpAddr) -> Vec<String> {
    let text = addr.to_string();
    let delim = if addr.is_ipv6() { ':' } else { '.' };
    let mut out = vec![text.clone()];
    let mut cur = text.as_str();
    while let Some(i) = cur.rfind(delim) {
        cur = &cur[..i];
        if cur.is_empty() || out.len() >= MAX {
            break;
        }
        out.push(cur.to_string());
    }
    out
}

/// A mail address: `user+ext@domain`, `user@domain`, the domain and its
/// parents, then `user+ext@`, `user@`. The null sender is looked up as
/// `null_key` (smtpd_null_access_lookup_key).
pub fn mail(addr: &str, delimiters: &str, parent_style: bool, null_key: &str) -> Vec<String> {
    if addr.is_empty() {
        return vec![null_key.to_string()];
    }
    let (local, domain) = match addr.rsplit_once('@') {
        Some((l, d)) => (l, Some(d)),
        None => (addr, None),
    };
    let base = strip_extension(local, delimiters);
    let mut out = vec![addr.to_string()];
    if let (Some(d), true) = (domain, base != local) {
        out.push(format!("{base}@{d}"));
    }
    if let Some(d) = domain {
        for k in domain_keys_of_address(d, parent_style) {
            if out.len() < MAX {
                out.push(k);
            }
        }
    }
    for k in [format!("{local}@"), format!("{base}@")] {
        if !out.contains(&k) && out.len() < MAX {
            out.push(k);
        }
    }
    out
}

fn domain_keys_of_address(d: &str, parent_style: bool) -> Vec<String> {
    if d.starts_with('[') {
        return vec![d.to_string()];
    }
    domain(d, parent_style)
}

/// The local part without its address extension (`recipient_delimiter`).
pub fn strip_extension<'a>(local: &'a str, delimiters: &str) -> &'a str {
    if delimiters.is_empty() || local.eq_ignore_ascii_case("postmaster") {
        return local;
    }
    match local.find(|c| delimiters.contains(c)) {
        Some(i) if i > 0 => &local[..i],
        _ => local,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn postfix_orders() {
        assert_eq!(
            domain("mail.sub.example.com", true),
            v(&[
                "mail.sub.example.com",
                "sub.example.com",
                "example.com",
                "com"
            ])
        );
        assert_eq!(
            domain("mail.sub.example.com", false),
            v(&[
                "mail.sub.example.com",
                ".sub.example.com",
                ".example.com",
                ".com"
            ])
        );
        assert_eq!(domain("unknown", true), v(&["unknown"]));
        assert_eq!(domain("192.0.2.1", true), v(&["192.0.2.1"]));
        assert_eq!(
            address(&"192.0.2.1".parse().unwrap()),
            v(&["192.0.2.1", "192.0.2", "192.0", "192"])
        );
        assert_eq!(
            address(&"2001:db8::1".parse().unwrap()),
            v(&["2001:db8::1", "2001:db8:", "2001:db8", "2001"])
        );
        assert_eq!(
            mail("joe+x@a.example.com", "+", true, "<>"),
            v(&[
                "joe+x@a.example.com",
                "joe@a.example.com",
                "a.example.com",
                "example.com",
                "com",
                "joe+x@",
                "joe@"
            ])
        );
        assert_eq!(
            mail("joe@example.com", "+", true, "<>"),
            v(&["joe@example.com", "example.com", "com", "joe@"])
        );
        assert_eq!(mail("", "+", true, "<>"), v(&["<>"]));
        assert_eq!(strip_extension("postmaster+x", "+"), "postmaster");
        assert_eq!(strip_extension("+x", "+"), "+x");
    }
}
