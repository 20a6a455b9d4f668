//! postscreen's settings that need parsing: the DNS lists of
//! `postscreen_dnsbl_sites`, as Postfix writes them:
//! `domain[=filter][*weight]`, e.g. `zen.example*2`,
//! `list.dnswl.example=127.0.[0..255].[1..3]*-5`.
use crate::cidr::{DnsxlFilter, dnsxl_filter};

/// One DNS list entry: a domain may be listed several times, each with
/// its own filter and weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    pub domain: String,
    /// Only answers matching it count; None: any answer counts.
    pub filter: Option<DnsxlFilter>,
    /// Added to the client's score when it counts; negative for allow
    /// lists.
    pub weight: i32,
}

fn valid_domain(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        })
}

/// Parses one `postscreen_dnsbl_sites` item.
pub fn site(item: &str) -> Result<Site, String> {
    let (rest, weight) = match item.split_once('*') {
        Some((r, w)) => (
            r,
            w.parse::<i32>()
                .ok()
                .filter(|w| w.unsigned_abs() <= 1_000_000)
                .ok_or_else(|| format!("bad DNSBL weight factor \"{w}\" in \"{item}\""))?,
        ),
        None => (item, 1),
    };
    let (domain, filter) = match rest.split_once('=') {
        Some((d, f)) => (
            d,
            Some(
                dnsxl_filter(f)
                    .ok_or_else(|| format!("bad DNSBL filter syntax \"{f}\" in \"{item}\""))?,
            ),
        ),
        None => (rest, None),
    };
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    if !valid_domain(&domain) {
        return Err(format!("bad DNSBL domain name \"{domain}\" in \"{item}\""));
    }
    Ok(Site {
        domain,
        filter,
        weight,
    })
}

/// Every item of the list, or the first bad one.
pub fn sites(items: &[String]) -> Result<Vec<Site>, String> {
    items.iter().map(|i| site(i)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postfix_site_forms() {
        let s = site("zen.example*2").unwrap();
        assert_eq!(
            (s.domain.as_str(), s.filter.is_none(), s.weight),
            ("zen.example", true, 2)
        );
        let s = site("list.dnswl.example=127.0.[0..255].[1..3]*-5").unwrap();
        assert_eq!(s.weight, -5);
        let f = s.filter.unwrap();
        assert!(f.matches("127.0.9.2".parse().unwrap()));
        assert!(!f.matches("127.0.9.4".parse().unwrap()));
        assert_eq!(site("b.example=127.0.0.2").unwrap().weight, 1);
        for bad in [
            "",
            "zen*x",
            "zen.example*",
            "a..b",
            "zen=300.0.0.1",
            "bl=127.0.0",
            "x y",
        ] {
            assert!(site(bad).is_err(), "{bad}");
        }
    }
}
