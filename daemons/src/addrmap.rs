//! Postfix's address lookups, as canonical(5), virtual(5) and the BCC maps
//! use them (mail_addr_find, mail_addr_map, cleanup_map11, cleanup_map1n,
//! cleanup_masquerade): the order of the keys, address extensions, and
//! one-to-many expansion with its limits.
//!
//! The algorithms take a [`Find`], so they are tested here without I/O;
//! daemons look up through [`Maps`] (the table cache).
use std::collections::HashSet;

use crate::tablecache::{TableCache, TableRef};

/// One key in a list of tables, in order. A partial key (anything but the
/// whole address) is asked only of tables that take partial keys
/// (Postfix's DICT_FLAG_FIXED: not regexp, pcre, cidr or a server).
#[allow(async_fn_in_trait)]
pub trait Find {
    async fn find(&self, key: &str, partial: bool) -> Result<Option<String>, String>;
}

/// A list of tables, looked up through the table cache.
pub struct Maps<'a> {
    pub cache: &'a TableCache,
    pub tables: &'a [TableRef],
}

impl Find for Maps<'_> {
    async fn find(&self, key: &str, partial: bool) -> Result<Option<String>, String> {
        for t in self.tables {
            let t = t.as_ref().map_err(Clone::clone)?;
            if partial && !t.fixed() {
                continue;
            }
            if let Some(v) = self.cache.lookup(t, key).await? {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }
}

/// What the lookups need to know about the site.
#[derive(Debug, Clone, Default)]
pub struct Site {
    /// recipient_delimiter: each character separates an extension.
    pub delimiter: String,
    pub myorigin: String,
    /// mydestination, lowercased: the domains whose bare local part is a key.
    pub mydestination: Vec<String>,
    /// double_bounce_sender and mail_owner: never split.
    pub unsplit: Vec<String>,
}

impl Site {
    pub fn new(p: &postern_config::Params) -> Site {
        Site {
            delimiter: p.str("recipient_delimiter").into(),
            myorigin: p.str("myorigin").to_ascii_lowercase(),
            mydestination: p
                .list("mydestination")
                .unwrap_or_default()
                .iter()
                .map(|d| d.to_ascii_lowercase())
                .collect(),
            unsplit: vec![p.str("double_bounce_sender").to_ascii_lowercase()],
        }
    }

    /// `domain` is $myorigin or in $mydestination (Postfix's
    /// resolve_local, without interface addresses).
    fn is_local(&self, domain: &str) -> bool {
        let d = domain.to_ascii_lowercase();
        d == self.myorigin || self.mydestination.contains(&d)
    }

    /// An unqualified address in the local context: `user@$myorigin`.
    pub fn qualify(&self, addr: &str) -> String {
        if addr.contains('@') || addr.is_empty() || self.myorigin.is_empty() {
            addr.to_string()
        } else {
            format!("{addr}@{}", self.myorigin)
        }
    }

    /// The local part without its extension, and the extension (with its
    /// delimiter), when the local part may be split (split_addr: never
    /// postmaster, MAILER-DAEMON, the double-bounce sender, or, with `-`
    /// as a delimiter, owner-x and x-request).
    pub fn split<'a>(&self, local: &'a str) -> Option<(&'a str, &'a str)> {
        if self.delimiter.is_empty() {
            return None;
        }
        let lower = local.to_ascii_lowercase();
        if ["postmaster", "mailer-daemon"].contains(&lower.as_str())
            || self.unsplit.contains(&lower)
        {
            return None;
        }
        if self.delimiter.contains('-')
            && (lower.starts_with("owner-") || lower.len() > 8 && lower.ends_with("-request"))
        {
            return None;
        }
        let i = local.find(|c| self.delimiter.contains(c))?;
        (i > 0).then(|| (&local[..i], &local[i..]))
    }
}

/// The value found for `addr`, and the extension it was found without
/// (mail_addr_find with Postfix's default strategy): `user+ext@domain`,
/// `user@domain`, then, for a local domain, `user+ext` and `user`, then
/// `@domain`.
pub async fn find(
    f: &impl Find,
    site: &Site,
    addr: &str,
) -> Result<Option<(String, Option<String>)>, String> {
    let full = site.qualify(addr);
    let (local, domain) = match full.rsplit_once('@') {
        Some((l, d)) => (l, Some(d)),
        None => (full.as_str(), None),
    };
    let split = site.split(local);
    if let Some(v) = f.find(&full, false).await? {
        return Ok(Some((v, None)));
    }
    let ext = || split.map(|(_, e)| e.to_string());
    if let (Some((bare, _)), Some(d)) = (split, domain)
        && let Some(v) = f.find(&format!("{bare}@{d}"), true).await?
    {
        return Ok(Some((v, ext())));
    }
    let Some(domain) = domain else {
        return Ok(None);
    };
    if site.is_local(domain) {
        if let Some(v) = f.find(local, true).await? {
            return Ok(Some((v, None)));
        }
        if let Some((bare, _)) = split
            && let Some(v) = f.find(bare, true).await?
        {
            return Ok(Some((v, ext())));
        }
    }
    if let Some(v) = f.find(&format!("@{domain}"), true).await? {
        return Ok(Some((v, None)));
    }
    Ok(None)
}

/// The addresses a table value names: separated by commas or white
/// space, `<>` removed, quotes kept together; an unqualified one gets
/// `@$myorigin`, and `ext` goes before each one's `@` (mail_addr_crunch).
pub fn crunch(value: &str, ext: Option<&str>, site: &Site) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut push = |cur: &mut String| {
        let a = cur.trim().trim_start_matches('<').trim_end_matches('>');
        if !a.is_empty() {
            let mut a = site.qualify(a);
            if let Some(e) = ext {
                let at = a.rfind('@').unwrap_or(a.len());
                a.insert_str(at, e);
            }
            out.push(a);
        }
        cur.clear();
    };
    for c in value.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' | ' ' | '\t' | '\r' | '\n' if !quoted => push(&mut cur),
            _ => cur.push(c),
        }
    }
    push(&mut cur);
    out
}

/// mail_addr_map: the addresses `addr` maps to, or None when no table
/// has it. A value `@domain` keeps the local part. With `propagate`, an
/// extension the value was found without is carried over. A value that
/// names no address is a lookup error, as in Postfix.
pub async fn map(
    f: &impl Find,
    site: &Site,
    addr: &str,
    propagate: bool,
) -> Result<Option<Vec<String>>, String> {
    let Some((value, ext)) = find(f, site, addr).await? else {
        return Ok(None);
    };
    let value = if value.starts_with('@') {
        let local = addr.rsplit_once('@').map_or(addr, |(l, _)| l);
        let local = match &ext {
            Some(e) => local.strip_suffix(e.as_str()).unwrap_or(local),
            None => local,
        };
        format!("{local}{value}")
    } else {
        value
    };
    let list = crunch(&value, ext.as_deref().filter(|_| propagate), site);
    if list.is_empty() {
        return Err(format!(
            "lookup of {addr} returns non-address result \"{value}\""
        ));
    }
    Ok(Some(list))
}

/// cleanup_map11: canonical mapping, followed until an address maps to
/// itself, at most 10 times. Several addresses in a value: the first one
/// is used, with a warning. Returns the address and whether the nesting
/// ran out (logged by the caller; the address is still used).
pub async fn map_one(
    f: &impl Find,
    site: &Site,
    addr: &str,
    propagate: bool,
) -> Result<(String, Option<&'static str>), String> {
    let mut cur = addr.to_string();
    let mut note = None;
    for _ in 0..10 {
        let Some(list) = map(f, site, &cur, propagate).await? else {
            return Ok((cur, note));
        };
        if list.len() > 1 {
            note = Some("multi-valued entry");
        }
        let next = list.into_iter().next().unwrap_or_default();
        let same = next.eq_ignore_ascii_case(&cur);
        cur = next;
        if same {
            return Ok((cur, note));
        }
    }
    Ok((cur, Some("unreasonable map nesting")))
}

/// How a one-to-many expansion failed: the message is not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expansion {
    /// virtual_alias_expansion_limit: too many addresses.
    TooMany,
    /// virtual_alias_recursion_limit: nested too deep.
    TooDeep,
    /// An address longer than virtual_alias_address_length_limit.
    TooLong,
    /// A table could not be read.
    Lookup(String),
}

impl Expansion {
    /// The warning Postfix logs, after "<queue id>: ".
    pub fn warning(&self, map: &str, addr: &str) -> String {
        match self {
            Expansion::TooMany => format!(
                "unreasonable {map} map expansion size for {addr} -- message not accepted, try again later"
            ),
            Expansion::TooDeep => format!(
                "unreasonable {map} map nesting for {addr} -- message not accepted, try again later"
            ),
            Expansion::TooLong => format!(
                "unreasonable {map} result for {addr} -- message not accepted, try again later"
            ),
            Expansion::Lookup(e) => format!(
                "{map} map lookup problem for {addr} -- message not accepted, try again later ({e})"
            ),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub expansion: usize,
    pub recursion: usize,
    pub length: usize,
}

/// cleanup_map1n: virtual alias expansion. Each address is looked up
/// again until it maps to nothing or to itself (an address may expand to
/// itself once, and is then kept); every new address is expanded in turn.
/// A limit reached is an error for the whole message, never a truncated
/// list.
pub async fn expand(
    f: &impl Find,
    site: &Site,
    addr: &str,
    propagate: bool,
    limits: Limits,
) -> Result<Vec<String>, Expansion> {
    let mut list = vec![addr.to_string()];
    let mut kept: HashSet<String> = HashSet::new();
    let mut i = 0;
    while i < list.len() {
        if list.len() > limits.expansion {
            return Err(Expansion::TooMany);
        }
        let mut count = 0;
        loop {
            if kept.contains(&list[i].to_ascii_lowercase()) {
                break;
            }
            if count >= limits.recursion {
                return Err(Expansion::TooDeep);
            }
            count += 1;
            let found = map(f, site, &list[i], propagate)
                .await
                .map_err(Expansion::Lookup)?;
            let Some(found) = found else { break };
            let lhs = std::mem::take(&mut list[i]);
            for (n, a) in found.into_iter().enumerate() {
                if a.len() > limits.length {
                    return Err(Expansion::TooLong);
                }
                if a.eq_ignore_ascii_case(&lhs) {
                    kept.insert(lhs.to_ascii_lowercase());
                }
                if n == 0 {
                    list[i] = a;
                } else {
                    list.push(a);
                }
            }
        }
        i += 1;
    }
    Ok(list)
}

/// masquerade_domains: `user@host.sub.example.com` becomes
/// `user@example.com` when `example.com` is listed; a `!name` entry keeps
/// that domain's subdomains as they are; the first matching entry wins,
/// and an address whose domain is itself listed stays. Local parts in
/// `exceptions` are never masqueraded.
pub fn masquerade(addr: &str, domains: &[String], exceptions: &[String]) -> Option<String> {
    let (local, domain) = addr.rsplit_once('@')?;
    if exceptions.iter().any(|e| e.eq_ignore_ascii_case(local)) {
        return None;
    }
    let domain = domain.to_ascii_lowercase();
    for m in domains {
        let trimmed = m.trim_start_matches('!');
        let truncate = (m.len() - trimmed.len()) % 2 == 0;
        let masq = trimmed.to_ascii_lowercase();
        if masq.is_empty() {
            continue;
        }
        if masq == domain {
            return None;
        }
        if domain.len() > masq.len()
            && domain.ends_with(&masq)
            && domain.as_bytes()[domain.len() - masq.len() - 1] == b'.'
        {
            return truncate.then(|| format!("{local}@{masq}"));
        }
    }
    None
}

/// A list of domain names and tables (virtual_alias_domains): a domain is
/// in it when a name equals it or a table has it as a key.
pub struct Domains {
    names: Vec<String>,
    tables: Vec<TableRef>,
}

impl Domains {
    pub fn new(params: &postern_config::Params, name: &str) -> Domains {
        let items = params.list(name).unwrap_or_default();
        let (tables, names): (Vec<String>, Vec<String>) =
            items.into_iter().partition(|i| i.contains(':'));
        Domains {
            names: names.into_iter().map(|n| n.to_ascii_lowercase()).collect(),
            tables: tables
                .iter()
                .map(|t| crate::tables::parse(t).map_err(|e| format!("{name}: {e}")))
                .collect(),
        }
    }

    pub async fn contains(&self, cache: &TableCache, domain: &str) -> Result<bool, String> {
        let d = domain.to_ascii_lowercase();
        if d.is_empty() {
            return Ok(false);
        }
        if self.names.contains(&d) {
            return Ok(true);
        }
        Ok(cache.lookup_any(&self.tables, &d).await?.is_some())
    }
}

/// Which address is being rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sender,
    Recipient,
}

/// The address class of a header (Postfix's header_opts: HDR_OPT_SENDER
/// and HDR_OPT_RECIP).
pub fn header_kind(name: &str) -> Option<Kind> {
    const SENDER: &[&str] = &[
        "from",
        "sender",
        "reply-to",
        "errors-to",
        "return-receipt-to",
        "disposition-notification-to",
        "mail-followup-to",
        "resent-from",
        "resent-sender",
    ];
    const RECIPIENT: &[&str] = &[
        "to",
        "cc",
        "bcc",
        "apparently-to",
        "resent-to",
        "resent-cc",
        "resent-bcc",
        "resent-reply-to",
    ];
    let is = |list: &[&str]| list.iter().any(|h| h.eq_ignore_ascii_case(name));
    if is(SENDER) {
        Some(Kind::Sender)
    } else if is(RECIPIENT) {
        Some(Kind::Recipient)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;

    /// A fixed table (partial keys allowed) or a pattern table.
    struct Mem {
        map: HashMap<String, String>,
        fixed: bool,
        asked: RefCell<Vec<String>>,
        fail: Option<String>,
    }

    fn mem(pairs: &[(&str, &str)]) -> Mem {
        Mem {
            map: pairs
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
                .collect(),
            fixed: true,
            asked: RefCell::default(),
            fail: None,
        }
    }

    impl Find for Mem {
        async fn find(&self, key: &str, partial: bool) -> Result<Option<String>, String> {
            if partial && !self.fixed {
                return Ok(None);
            }
            self.asked.borrow_mut().push(key.to_string());
            if let Some(e) = &self.fail {
                return Err(e.clone());
            }
            Ok(self.map.get(&key.to_ascii_lowercase()).cloned())
        }
    }

    fn site() -> Site {
        Site {
            delimiter: "+".into(),
            myorigin: "here.test".into(),
            mydestination: vec!["here.test".into(), "localhost".into()],
            unsplit: vec!["double-bounce".into()],
        }
    }

    fn run<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn keys_are_tried_in_postfix_order() {
        let t = mem(&[]);
        assert_eq!(run(find(&t, &site(), "a+x@here.test")), Ok(None));
        assert_eq!(
            *t.asked.borrow(),
            ["a+x@here.test", "a@here.test", "a+x", "a", "@here.test"]
        );
        let t = mem(&[]);
        run(find(&t, &site(), "a+x@far.test")).unwrap();
        assert_eq!(
            *t.asked.borrow(),
            ["a+x@far.test", "a@far.test", "@far.test"]
        );
        // An unqualified address is in $myorigin.
        let t = mem(&[]);
        run(find(&t, &site(), "root")).unwrap();
        assert_eq!(*t.asked.borrow(), ["root@here.test", "root", "@here.test"]);
        // A pattern table sees only the whole address.
        let mut t = mem(&[]);
        t.fixed = false;
        run(find(&t, &site(), "a+x@here.test")).unwrap();
        assert_eq!(*t.asked.borrow(), ["a+x@here.test"]);
    }

    #[test]
    fn extensions_propagate_when_found_without_them() {
        let t = mem(&[
            ("a@far.test", "b@other.test, c"),
            ("@dom.test", "@new.test"),
        ]);
        let s = site();
        assert_eq!(
            run(map(&t, &s, "a+x@far.test", true)).unwrap(),
            Some(vec!["b+x@other.test".into(), "c+x@here.test".into()])
        );
        assert_eq!(
            run(map(&t, &s, "a+x@far.test", false)).unwrap(),
            Some(vec!["b@other.test".into(), "c@here.test".into()])
        );
        // Found with the extension: nothing to carry.
        let t2 = mem(&[("a+x@far.test", "z@far.test")]);
        assert_eq!(
            run(map(&t2, &s, "a+x@far.test", true)).unwrap(),
            Some(vec!["z@far.test".into()])
        );
        // @domain keeps the local part.
        assert_eq!(
            run(map(&t, &s, "u+e@dom.test", true)).unwrap(),
            Some(vec!["u+e@new.test".into()])
        );
        // MAILER-DAEMON is never split, whatever the delimiter.
        let dash = Site {
            delimiter: "-".into(),
            ..site()
        };
        let t3 = mem(&[
            ("mailer@far.test", "x@y.test"),
            ("owner@far.test", "x@y.test"),
        ]);
        assert_eq!(
            run(map(&t3, &dash, "mailer-daemon@far.test", true)).unwrap(),
            None
        );
        assert_eq!(
            run(map(&t3, &dash, "owner-list@far.test", true)).unwrap(),
            None
        );
        // A value with no address is an error.
        let t4 = mem(&[("a@far.test", " , ")]);
        assert!(run(map(&t4, &s, "a@far.test", true)).is_err());
    }

    #[test]
    fn canonical_follows_chains_and_stops_at_itself() {
        let t = mem(&[
            ("a@x.test", "b@x.test"),
            ("b@x.test", "c@x.test"),
            ("self@x.test", "self@x.test"),
        ]);
        let s = site();
        assert_eq!(
            run(map_one(&t, &s, "a@x.test", true)).unwrap(),
            ("c@x.test".to_string(), None)
        );
        assert_eq!(
            run(map_one(&t, &s, "self@x.test", true)).unwrap().0,
            "self@x.test"
        );
        let looped = mem(&[("p@x.test", "q@x.test"), ("q@x.test", "p@x.test")]);
        assert_eq!(
            run(map_one(&looped, &s, "p@x.test", true)).unwrap().1,
            Some("unreasonable map nesting")
        );
    }

    fn limits() -> Limits {
        Limits {
            expansion: 1000,
            recursion: 1000,
            length: 1000,
        }
    }

    #[test]
    fn virtual_expansion_is_recursive_and_bounded() {
        let s = site();
        let t = mem(&[
            ("list@v.test", "a@v.test, b@v.test, list@v.test"),
            ("a@v.test", "a1@real.test"),
            ("b@v.test", "b1@real.test, b2@real.test"),
        ]);
        let got = run(expand(&t, &s, "list@v.test", true, limits())).unwrap();
        assert_eq!(
            got,
            [
                "a1@real.test",
                "b1@real.test",
                "list@v.test",
                "b2@real.test"
            ]
        );
        // Unknown addresses stay as they are.
        assert_eq!(
            run(expand(&t, &s, "z@v.test", true, limits())).unwrap(),
            ["z@v.test"]
        );
        // A cycle that never maps to itself runs into the recursion limit.
        let cycle = mem(&[("p@v.test", "q@v.test"), ("q@v.test", "p@v.test")]);
        let l = Limits {
            recursion: 5,
            ..limits()
        };
        assert_eq!(
            run(expand(&cycle, &s, "p@v.test", true, l)),
            Err(Expansion::TooDeep)
        );
        // Too many addresses: an error, never a truncated list.
        let wide = mem(&[("w@v.test", "1@r.test 2@r.test 3@r.test 4@r.test")]);
        let l = Limits {
            expansion: 3,
            ..limits()
        };
        assert_eq!(
            run(expand(&wide, &s, "w@v.test", true, l)),
            Err(Expansion::TooMany)
        );
        let mut broken = mem(&[]);
        broken.fail = Some("table gone".into());
        assert!(matches!(
            run(expand(&broken, &s, "w@v.test", true, limits())),
            Err(Expansion::Lookup(_))
        ));
    }

    #[test]
    fn masquerading() {
        let d = vec!["!sub.example.com".to_string(), "example.com".to_string()];
        let ex = vec!["root".to_string()];
        assert_eq!(
            masquerade("u@host.example.com", &d, &ex).as_deref(),
            Some("u@example.com")
        );
        assert_eq!(masquerade("u@example.com", &d, &ex), None);
        assert_eq!(masquerade("u@host.sub.example.com", &d, &ex), None);
        assert_eq!(masquerade("root@host.example.com", &d, &ex), None);
        assert_eq!(masquerade("u@notexample.com", &d, &ex), None);
    }
}
