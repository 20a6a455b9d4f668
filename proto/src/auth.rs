//! The sans-IO half of message authentication: which DNS names the SPF,
//! DKIM, DMARC and ARC checks of a hostile message will ask, read from its
//! signatures and from the SPF records it leads to (mail-auth parses them;
//! this module decides what to ask). cleanup asks the resolver role for
//! each and hands the answers to mail-auth as its cache.
use std::net::IpAddr;

use mail_auth::AuthenticatedMessage;
use mail_auth::spf::{Mechanism, Spf, Variables};

/// A name as mail-auth keys its caches: lower case, with the final dot.
pub fn fqdn(name: &str) -> String {
    let mut n = name.to_ascii_lowercase();
    if !n.ends_with('.') {
        n.push('.');
    }
    n
}

/// The key records (`selector._domainkey.domain.`) of the message's DKIM
/// signatures (with `dkim`) and ARC sets (with `arc`), each once, at most
/// `limit` of each kind of header.
pub fn key_names(
    msg: &AuthenticatedMessage<'_>,
    limit: usize,
    dkim: bool,
    arc: bool,
) -> Vec<String> {
    let key = |s: &str, d: &str| fqdn(&format!("{s}._domainkey.{d}"));
    let mut out: Vec<String> = Vec::new();
    if dkim {
        out.extend(
            msg.dkim_headers
                .iter()
                .take(limit)
                .map(|h| key(&h.header.s, &h.header.d)),
        );
    }
    if arc {
        out.extend(
            msg.ams_headers
                .iter()
                .take(limit)
                .map(|h| key(&h.header.s, &h.header.d)),
        );
        out.extend(
            msg.as_headers
                .iter()
                .take(limit)
                .map(|h| key(&h.header.s, &h.header.d)),
        );
    }
    out.sort();
    out.dedup();
    out
}

/// The `_dmarc` names DMARCbis's DNS tree walk (as mail-auth makes it) asks
/// for DOMAIN: the name itself, then (for eight labels or more) its last
/// seven, then one label fewer at a time down to the top-level domain.
pub fn dmarc_names(domain: &str) -> Vec<String> {
    let labels: Vec<&str> = domain.split('.').filter(|l| !l.is_empty()).collect();
    let total = labels.len();
    let mut out = Vec::new();
    if total < 2 {
        return out;
    }
    let mut count = total;
    loop {
        out.push(fqdn(&format!(
            "_dmarc.{}",
            labels[total - count..].join(".")
        )));
        if count == 1 {
            break;
        }
        count = if count >= 8 { 7 } else { count - 1 };
    }
    out
}

/// A question an SPF record leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpfQuestion {
    /// include: and redirect=: another SPF record.
    Record(String),
    /// a: the addresses of the client's family.
    Addresses(String),
    /// exists: A records (whatever the client's family).
    A(String),
    /// mx: the MX hosts, then their addresses.
    Mx(String),
    /// ptr or %{p}: the client's names.
    Ptr,
}

/// SPF's macro variables for one check (RFC 7208 7.3), as mail-auth sets
/// them: the sender is `postmaster@DOMAIN` when there is none (or for the
/// HELO identity).
pub fn spf_variables(ip: IpAddr, sender: &str, domain: &str, helo: &str) -> Variables<'static> {
    let mut vars = Variables::new();
    vars.set_ip(&ip);
    let sender = if sender.is_empty() {
        format!("postmaster@{domain}")
    } else {
        sender.to_string()
    };
    vars.set_sender(sender.into_bytes());
    vars.set_domain(domain.as_bytes().to_vec());
    vars.set_helo_domain(helo.as_bytes().to_vec());
    vars
}

/// The questions one SPF record of DOMAIN leads to, in the order mail-auth
/// evaluates it: its mechanisms, then its redirect. Macros are expanded
/// with mail-auth's own expansion (`vars` with the domain set to DOMAIN).
pub fn spf_questions(spf: &Spf, vars: &Variables<'_>, domain: &str) -> Vec<SpfQuestion> {
    let mut out = Vec::new();
    for dir in spf.directives.iter() {
        let name = |m: &mail_auth::spf::Macro, fq: bool| m.eval(vars, domain, fq).to_string();
        match &dir.mechanism {
            Mechanism::Include { macro_string } => {
                out.push(SpfQuestion::Record(name(macro_string, false)));
            }
            Mechanism::A { macro_string, .. } => {
                out.push(SpfQuestion::Addresses(name(macro_string, true)));
            }
            Mechanism::Exists { macro_string } => {
                out.push(SpfQuestion::A(name(macro_string, true)));
            }
            Mechanism::Mx { macro_string, .. } => {
                out.push(SpfQuestion::Mx(name(macro_string, true)));
            }
            Mechanism::Ptr { .. } => out.push(SpfQuestion::Ptr),
            Mechanism::All | Mechanism::Ip4 { .. } | Mechanism::Ip6 { .. } => {}
        }
    }
    if let Some(r) = &spf.redirect {
        out.push(SpfQuestion::Record(r.eval(vars, domain, false).to_string()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_auth::common::parse::TxtRecordParser;

    #[test]
    fn dmarc_names_follow_the_tree_walk() {
        assert_eq!(
            dmarc_names("a.b.example.org"),
            [
                "_dmarc.a.b.example.org.",
                "_dmarc.b.example.org.",
                "_dmarc.example.org.",
                "_dmarc.org."
            ]
        );
        // Nine labels: the name itself, then seven labels, then down.
        let n = dmarc_names("1.2.3.4.5.6.7.example.org");
        assert_eq!(n.len(), 8);
        assert_eq!(n[0], "_dmarc.1.2.3.4.5.6.7.example.org.");
        assert_eq!(n[1], "_dmarc.3.4.5.6.7.example.org.");
        assert!(dmarc_names("localhost").is_empty());
        assert_eq!(fqdn("Example.ORG"), "example.org.");
    }

    #[test]
    fn spf_questions_expand_macros_as_mail_auth_does() {
        let spf = Spf::parse(
            b"v=spf1 ip4:192.0.2.1 a mx:mail.example.org include:_spf.example.net exists:%{i}.%{d}.bl.example ptr redirect=other.example",
        )
        .unwrap();
        let vars = spf_variables(
            "192.0.2.7".parse().unwrap(),
            "u@example.org",
            "example.org",
            "h.example",
        );
        let q = spf_questions(&spf, &vars, "example.org");
        assert_eq!(
            q,
            [
                SpfQuestion::Addresses("example.org".into()),
                SpfQuestion::Mx("mail.example.org".into()),
                SpfQuestion::Record("_spf.example.net".into()),
                SpfQuestion::A("192.0.2.7.example.org.bl.example.".into()),
                SpfQuestion::Ptr,
                SpfQuestion::Record("other.example".into()),
            ]
        );
    }

    #[test]
    fn key_names_of_signatures_and_arc_sets() {
        let msg = b"DKIM-Signature: v=1; a=rsa-sha256; d=Example.org; s=Sel; h=from; bh=AAAA; b=AAAA\r\n\
                    DKIM-Signature: v=1; a=rsa-sha256; d=example.org; s=sel; h=from; bh=AAAA; b=AAAA\r\n\
                    From: a@example.org\r\n\r\nbody\r\n";
        let m = AuthenticatedMessage::parse(msg).unwrap();
        assert_eq!(
            key_names(&m, 10, true, true),
            ["sel._domainkey.example.org."]
        );
        assert!(key_names(&m, 0, true, true).is_empty());
        assert!(key_names(&m, 10, false, true).is_empty());
    }
}
