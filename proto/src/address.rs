//! Mail addresses as they appear in SMTP paths (RFC 5321 section 4.1.2, with
//! RFC 6531 UTF-8 where the client declared SMTPUTF8).

/// Longest path Postern accepts (RFC 5321 says 256 octets).
pub const MAX_PATH: usize = 256;

/// A mailbox `local@domain`, or the null sender (both parts empty).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mailbox {
    /// The local part as it will be used in an SMTP path: quoted when it
    /// needs quoting, otherwise bare.
    pub local: String,
    /// The domain, or a bracketed address literal like `[192.0.2.1]`.
    pub domain: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("missing angle brackets")]
    Brackets,
    #[error("address too long")]
    TooLong,
    #[error("bad character in address")]
    BadChar,
    #[error("bad local part")]
    LocalPart,
    #[error("bad domain")]
    Domain,
    #[error("non-ASCII address without SMTPUTF8")]
    NeedsUtf8,
}

impl Mailbox {
    pub fn null() -> Self {
        Mailbox {
            local: String::new(),
            domain: String::new(),
        }
    }

    pub fn is_null(&self) -> bool {
        self.local.is_empty() && self.domain.is_empty()
    }

    /// `local@domain`, or an empty string for the null sender.
    pub fn address(&self) -> String {
        if self.is_null() {
            String::new()
        } else if self.domain.is_empty() {
            self.local.clone()
        } else {
            format!("{}@{}", self.local, self.domain)
        }
    }

    /// True when the address uses non-ASCII characters.
    pub fn is_utf8(&self) -> bool {
        !self.local.is_ascii() || !self.domain.is_ascii()
    }

    /// The local part with quoting removed, for table lookups.
    pub fn local_unquoted(&self) -> String {
        match self
            .local
            .strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
        {
            Some(inner) => {
                let mut out = String::new();
                let mut esc = false;
                for c in inner.chars() {
                    if esc {
                        out.push(c);
                        esc = false;
                    } else if c == '\\' {
                        esc = true;
                    } else {
                        out.push(c);
                    }
                }
                out
            }
            None => self.local.clone(),
        }
    }
}

impl std::fmt::Display for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.address())
    }
}

fn atext(c: char, utf8: bool) -> bool {
    c.is_ascii_alphanumeric()
        || "!#$%&'*+-/=?^_`{|}~".contains(c)
        || (utf8 && !c.is_ascii() && !c.is_control())
}

fn valid_dot_atom(s: &str, utf8: bool) -> bool {
    !s.is_empty()
        && s.split('.')
            .all(|p| !p.is_empty() && p.chars().all(|c| atext(c, utf8)))
}

/// Checks a domain name or address literal.
pub fn valid_domain(d: &str, utf8: bool) -> bool {
    if let Some(lit) = d.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        // The tag is case-insensitive (RFC 5234 strings).
        if lit.len() > 5 && lit.is_char_boundary(5) && lit[..5].eq_ignore_ascii_case("IPv6:") {
            return lit[5..].parse::<std::net::Ipv6Addr>().is_ok();
        }
        return lit.parse::<std::net::Ipv4Addr>().is_ok();
    }
    !d.is_empty()
        && d.len() <= 255
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| {
                    c.is_ascii_alphanumeric()
                        || c == '-'
                        || (utf8 && !c.is_ascii() && !c.is_control())
                })
        })
}

/// Parses the inside of `<...>` (source routes are accepted and dropped, as
/// RFC 5321 requires). An empty path is the null mailbox. `utf8` allows
/// non-ASCII characters (RFC 6531).
pub fn parse_path(path: &str, utf8: bool) -> Result<Mailbox, AddressError> {
    if path.len() > MAX_PATH {
        return Err(AddressError::TooLong);
    }
    if path.is_empty() {
        return Ok(Mailbox::null());
    }
    if !utf8 && !path.is_ascii() {
        return Err(AddressError::NeedsUtf8);
    }
    if path.chars().any(|c| c.is_control() || c == '<' || c == '>') {
        return Err(AddressError::BadChar);
    }
    // A-d-l ":" Mailbox
    let mbox = if path.starts_with('@') {
        path.split_once(':').ok_or(AddressError::Domain)?.1
    } else {
        path
    };
    let (local, domain) = if mbox.starts_with('"') {
        // Quoted string: find the closing quote, honouring backslash escapes.
        let b = mbox.as_bytes();
        let mut i = 1;
        loop {
            match b.get(i) {
                None => return Err(AddressError::LocalPart),
                Some(b'\\') => i += 2,
                Some(b'"') => break,
                Some(_) => i += 1,
            }
        }
        let local = &mbox[..=i];
        match &mbox[i + 1..] {
            "" => (local, ""),
            rest => (
                local,
                rest.strip_prefix('@').ok_or(AddressError::LocalPart)?,
            ),
        }
    } else {
        match mbox.rsplit_once('@') {
            Some((l, d)) => {
                if d.is_empty() {
                    return Err(AddressError::Domain);
                }
                if !valid_dot_atom(l, utf8) {
                    return Err(AddressError::LocalPart);
                }
                (l, d)
            }
            // A bare local part (`<postmaster>`; RFC 5321 requires accepting it
            // in RCPT TO).
            None => {
                if !valid_dot_atom(mbox, utf8) {
                    return Err(AddressError::LocalPart);
                }
                (mbox, "")
            }
        }
    };
    if local.is_empty() || local.len() > 64 * 4 {
        return Err(AddressError::LocalPart);
    }
    if !domain.is_empty() && !valid_domain(domain, utf8) {
        return Err(AddressError::Domain);
    }
    Ok(Mailbox {
        local: local.to_string(),
        domain: canonical_domain(domain),
    })
}

/// Domains compare in lower case; an IPv6 literal keeps its `IPv6:` tag in
/// the form RFC 5321 writes it.
fn canonical_domain(d: &str) -> String {
    let lower = d.to_ascii_lowercase();
    match lower.strip_prefix("[ipv6:") {
        Some(rest) => format!("[IPv6:{rest}"),
        None => lower,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_and_null() {
        let m = parse_path("User.Name+tag@Example.COM", false).unwrap();
        assert_eq!(m.local, "User.Name+tag");
        assert_eq!(m.domain, "example.com");
        assert!(parse_path("", false).unwrap().is_null());
        assert_eq!(
            parse_path("postmaster", false).unwrap().address(),
            "postmaster"
        );
    }

    #[test]
    fn quoted_and_routes_and_literals() {
        let m = parse_path("\"john doe\"@example.com", false).unwrap();
        assert_eq!(m.local, "\"john doe\"");
        assert_eq!(m.local_unquoted(), "john doe");
        let m = parse_path("@relay.example,@b.example:user@example.com", false).unwrap();
        assert_eq!(m.address(), "user@example.com");
        assert!(parse_path("u@[192.0.2.1]", false).is_ok());
        assert!(parse_path("u@[IPv6:::1]", false).is_ok());
        assert!(parse_path("u@[999.0.0.1]", false).is_err());
    }

    /// Found by the address fuzz target (fuzz/regressions/address/
    /// ipv6-literal-tag-case): the domain was lower-cased to `[ipv6:...]`,
    /// which no longer parsed as a literal.
    #[test]
    fn ipv6_literal_round_trips() {
        for given in ["u@[IPv6:::1]", "u@[ipv6:::1]", "u@[IPV6:2001:DB8::1]"] {
            let m = parse_path(given, false).unwrap();
            assert!(m.domain.starts_with("[IPv6:"), "{m:?}");
            assert_eq!(parse_path(&m.address(), false).unwrap(), m);
        }
        assert_eq!(
            parse_path("u@[IPV6:2001:DB8::1]", false).unwrap().domain,
            "[IPv6:2001:db8::1]"
        );
    }

    #[test]
    fn rejects_bad() {
        for bad in [
            "a@",
            "@x",
            "a..b@x",
            "a@-x.com",
            "a b@x",
            "a@x..com",
            "\"unterminated@x",
            "a@x\r\n",
        ] {
            assert!(parse_path(bad, false).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_path("jöran@example.com", false),
            Err(AddressError::NeedsUtf8)
        );
        assert!(parse_path("jöran@exämple.com", true).is_ok());
        assert_eq!(
            parse_path(&format!("{}@x", "a".repeat(300)), false),
            Err(AddressError::TooLong)
        );
    }
}
