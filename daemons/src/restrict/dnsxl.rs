//! The restrictions that ask DNS: DNS allow and deny lists (Postfix's
//! reject_rbl_client, reject_rhsbl_*, permit_dnswl_client,
//! permit_rhswl_client) and the reject_unknown_* checks. A temporary DNS
//! error never rejects: a deny list counts it as not listed (with a
//! warning), an allow list defers what would be rejected, and the
//! reject_unknown_* checks answer 450.
use std::net::IpAddr;

use super::eval::{Run, Status, reply};
use super::{Class, Dns, DnsQuery, Dnsxl, Lookups, NameStatus};

/// The DNS list query name of an address: reversed octets (IPv4) or
/// reversed nibbles (IPv6).
pub fn reversed(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut out = Vec::with_capacity(32);
            for b in v6.octets().iter().rev() {
                out.push(format!("{:x}", b & 0x0f));
                out.push(format!("{:x}", b >> 4));
            }
            out.join(".")
        }
    }
}

/// Expands a `default_rbl_reply` template. The list's TXT answer and the
/// looked-up value come from outside: they go in after the expansion, so
/// a `$` in them is only text.
fn rbl_text(template: &str, code: u16, domain: &str, class: &str, what: &str, txt: &str) -> String {
    const WHAT: &str = "\u{1}W\u{1}";
    const TXT: &str = "\u{1}T\u{1}";
    let get = |n: &str| -> Option<String> {
        Some(match n {
            "rbl_code" => code.to_string(),
            "rbl_domain" => domain.to_string(),
            "rbl_class" => class.to_string(),
            "rbl_what" => WHAT.to_string(),
            "rbl_reason" | "rbl_txt" if txt.is_empty() => String::new(),
            "rbl_reason" | "rbl_txt" => TXT.to_string(),
            _ => return None,
        })
    };
    let expanded = postern_config::expand(template, &get).unwrap_or_else(|e| {
        crate::warn!("bad rbl reply template: {template}: {e}");
        format!("{code} Service unavailable; {class} [{WHAT}] blocked using {domain}")
    });
    expanded.replace(WHAT, what).replace(TXT, txt)
}

impl<L: Lookups> Run<'_, L> {
    /// One DNS list restriction.
    pub(super) async fn dnsxl(&mut self, kind: Dnsxl, spec: &str) -> Status {
        let f = self.f;
        let (zone, filter) = match spec.split_once('=') {
            Some((z, flt)) => (z, postern_config::cidr::dnsxl_filter(flt)),
            None => (spec, None),
        };
        let domain_of = |a: &str| a.rsplit_once('@').map(|(_, d)| d.to_string());
        let (what, class): (Option<String>, Class) = match kind {
            Dnsxl::RblClient | Dnsxl::DnswlClient => (Some(f.ip.to_string()), Class::Client),
            Dnsxl::RhsblClient | Dnsxl::RhswlClient => (
                Some(f.name.to_string()).filter(|n| n != "unknown"),
                Class::Client,
            ),
            Dnsxl::RhsblReverseClient => (
                Some(f.reverse_name.to_string()).filter(|n| n != "unknown"),
                Class::ReverseClient,
            ),
            Dnsxl::RhsblHelo => (
                f.helo
                    .map(|h| h.trim_end_matches('.').to_string())
                    .filter(|h| {
                        !h.is_empty() && !h.starts_with('[') && h.parse::<IpAddr>().is_err()
                    }),
                Class::Helo,
            ),
            Dnsxl::RhsblSender => (f.sender.and_then(domain_of), Class::Sender),
            Dnsxl::RhsblRecipient => (f.rcpt.and_then(domain_of), Class::Recipient),
        };
        let Some(what) = what.filter(|w| !w.is_empty() && !w.starts_with('[')) else {
            return Status::Dunno;
        };
        let allow = matches!(kind, Dnsxl::DnswlClient | Dnsxl::RhswlClient);
        // An allow list never lets through mail for other destinations.
        // (A lookup error counts as another destination.)
        if allow && f.rcpt.is_some() && !self.authorized_destination().await.unwrap_or(false) {
            return Status::Dunno;
        }
        let query = match kind {
            Dnsxl::RblClient | Dnsxl::DnswlClient => format!("{}.{zone}", reversed(&f.ip)),
            _ => format!("{what}.{zone}"),
        };
        let listed = match self.lk.dns(DnsQuery::A(query.clone())).await {
            Dns::Found(addrs) => addrs.iter().any(|a| match a.parse::<std::net::Ipv4Addr>() {
                Ok(ip) => filter.as_ref().is_none_or(|flt| flt.matches(ip)),
                Err(_) => false,
            }),
            Dns::NotFound | Dns::NullMx => false,
            Dns::Temp(e) => {
                crate::warn!("{query}: RBL lookup error: {e}");
                if allow {
                    let r = reply(
                        450,
                        "4.7.1",
                        format!("<{what}>: {} rejected: Service unavailable", class.text()),
                    );
                    if self.defer_if_reject.is_none() {
                        self.defer_if_reject = Some(r);
                    }
                }
                return Status::Dunno;
            }
        };
        if !listed {
            return Status::Dunno;
        }
        if allow {
            return Status::Ok;
        }
        let txt = match self.lk.dns(DnsQuery::Txt(query)).await {
            Dns::Found(t) => t.into_iter().next().unwrap_or_default(),
            _ => String::new(),
        };
        let code = self.policy.codes.maps_rbl;
        let template = match self.rbl_template(spec, zone).await {
            Ok(t) => t,
            Err(e) => {
                crate::warn!("rbl_reply_maps lookup of {spec}: {e}");
                return self.server_error();
            }
        };
        let text = rbl_text(&template, code, zone, class.text(), &what, &txt);
        let valid = text.len() > 4
            && matches!(text.as_bytes()[0], b'4' | b'5')
            && text.as_bytes()[1..3].iter().all(u8::is_ascii_digit)
            && text.as_bytes()[3] == b' ';
        if !valid {
            crate::warn!("rbl response code configuration error: {text}");
            return self.reject(reply(450, "4.7.1", "Service unavailable".into()));
        }
        let code: u16 = text[..3].parse().unwrap_or(450);
        let (dsn, rest) = super::actions::split_dsn(&text[4..]);
        let dsn = super::actions::dsn_fix(dsn.unwrap_or("4.7.1"), class);
        self.reject(reply(code, &dsn, rest.to_string()))
    }

    /// The reply template of a DNS list: rbl_reply_maps by the list as
    /// written (`zone=filter`), then by its zone, else default_rbl_reply.
    async fn rbl_template(&self, spec: &str, zone: &str) -> Result<String, String> {
        let mut keys = vec![spec.to_string()];
        if zone != spec {
            keys.push(zone.to_string());
        }
        for key in keys {
            for map in &self.policy.rbl_reply_maps {
                if let Some((_, t)) = self.lk.access(map, vec![key.clone()]).await? {
                    return Ok(t);
                }
            }
        }
        Ok(self.policy.rbl_reply.clone())
    }

    /// reject_unknown_client_hostname and
    /// reject_unknown_reverse_client_hostname.
    pub(super) fn unknown_client(&mut self, reverse: bool) -> Status {
        let f = self.f;
        let status = if reverse {
            f.reverse_status
        } else {
            f.name_status
        };
        if status == NameStatus::Ok {
            return Status::Dunno;
        }
        let code = if status == NameStatus::Perm {
            self.policy.codes.unknown_client
        } else {
            450
        };
        let which = if reverse {
            "reverse hostname"
        } else {
            "hostname"
        };
        self.reject(reply(
            code,
            "4.7.25",
            format!("Client host rejected: cannot find your {which}, [{}]", f.ip),
        ))
    }

    /// reject_unknown_helo_hostname: no address and no MX record.
    pub(super) async fn unknown_helo(&mut self) -> Status {
        let Some(h) = self.f.helo.map(|h| h.trim_end_matches('.').to_string()) else {
            return Status::Dunno;
        };
        if h.is_empty() || h.starts_with('[') || h.parse::<IpAddr>().is_ok() {
            return Status::Dunno;
        }
        let mut temp = false;
        for q in [DnsQuery::Addresses(h.clone()), DnsQuery::Mx(h.clone())] {
            match self.lk.dns(q).await {
                Dns::Found(_) | Dns::NullMx => return Status::Dunno,
                Dns::NotFound => {}
                Dns::Temp(_) => temp = true,
            }
        }
        let text = format!("<{h}>: Helo command rejected: Host not found");
        if temp {
            self.defer_if_permit(reply(450, "4.7.1", text))
        } else {
            self.reject(reply(self.policy.codes.unknown_hostname, "4.7.1", text))
        }
    }

    /// reject_unknown_sender_domain and reject_unknown_recipient_domain:
    /// an MX, else an address; a null MX refuses mail outright. Domains
    /// delivered here are not asked.
    pub(super) async fn unknown_domain(&mut self, class: Class) -> Status {
        let addr = match class {
            Class::Sender => self.f.sender,
            _ => self.f.rcpt,
        };
        let Some(addr) = addr.filter(|a| !a.is_empty()) else {
            return Status::Dunno;
        };
        let Some((_, domain)) = addr.rsplit_once('@') else {
            return Status::Dunno;
        };
        if domain.starts_with('[') || self.access.is_local_domain(domain) {
            return Status::Dunno;
        }
        let sender = class == Class::Sender;
        let dsn = if sender { "4.1.8" } else { "4.1.2" };
        let what = class.text();
        let mut temp = false;
        match self.lk.dns(DnsQuery::Mx(domain.to_string())).await {
            Dns::Found(_) => return Status::Dunno,
            Dns::NullMx => {
                return self.reject(reply(
                    if sender { 550 } else { 556 },
                    if sender { "4.7.27" } else { "4.1.10" },
                    format!(
                        "<{addr}>: {what} rejected: Domain {domain} does not accept mail (nullMX)"
                    ),
                ));
            }
            Dns::NotFound => {}
            Dns::Temp(_) => temp = true,
        }
        match self.lk.dns(DnsQuery::Addresses(domain.to_string())).await {
            Dns::Found(_) => return Status::Dunno,
            Dns::NullMx | Dns::NotFound => {}
            Dns::Temp(_) => temp = true,
        }
        let text = format!("<{addr}>: {what} rejected: Domain not found");
        if temp {
            self.defer_if_permit(reply(450, dsn, text))
        } else {
            self.reject(reply(self.policy.codes.unknown_address, dsn, text))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_names_and_replies() {
        assert_eq!(reversed(&"192.0.2.1".parse().unwrap()), "1.2.0.192");
        assert_eq!(
            reversed(&"2001:db8::1".parse().unwrap()),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2"
        );
        let t = "$rbl_code Service unavailable; $rbl_class [$rbl_what] blocked using $rbl_domain${rbl_reason?; $rbl_reason}";
        assert_eq!(
            rbl_text(
                t,
                554,
                "zen.test",
                "Client host",
                "127.0.0.2",
                "Listed: see $x"
            ),
            "554 Service unavailable; Client host [127.0.0.2] blocked using zen.test; Listed: see $x"
        );
        assert_eq!(
            rbl_text(t, 554, "zen.test", "Client host", "127.0.0.2", ""),
            "554 Service unavailable; Client host [127.0.0.2] blocked using zen.test"
        );
    }
}
