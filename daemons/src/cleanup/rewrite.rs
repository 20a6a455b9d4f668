//! Address rewriting in cleanup, in Postfix's order
//! (ADDRESS_REWRITING_README):
//!
//! 1. canonical mapping: sender_canonical_maps or recipient_canonical_maps
//!    first, then canonical_maps, each for the classes its
//!    `*_canonical_classes` parameter names;
//! 2. masquerade_domains (with masquerade_exceptions), for
//!    masquerade_classes;
//! 3. automatic BCC: sender_bcc_maps, recipient_bcc_maps and always_bcc,
//!    for mail from smtpd and sendmail only; the BCC addresses are
//!    rewritten as recipients;
//! 4. virtual_alias_maps, expanded recursively for every recipient.
//!
//! A table that cannot be read refuses the message with a temporary error
//! (451 4.3.0), and an expansion that reaches a limit refuses it whole
//! (451 4.6.0): a recipient list is never truncated or left unmapped.
use postern_config::Params;
use postern_ipc::smtpd_cleanup::Failure;
use postern_proto::addrlist;
use postern_proto::header::Field;

pub use crate::addrmap::Kind;
use crate::addrmap::{self, Expansion, Limits, Maps, Site, header_kind};
use crate::tablecache::{TableCache, TableRef, table_list};
use crate::warn;

/// The places an address appears (Postfix's canonical_classes values).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Classes {
    pub envelope_sender: bool,
    pub envelope_recipient: bool,
    pub header_sender: bool,
    pub header_recipient: bool,
}

impl Classes {
    fn of(p: &Params, name: &str) -> Classes {
        let mut c = Classes::default();
        for v in p.list(name).unwrap_or_default() {
            match v.as_str() {
                "envelope_sender" => c.envelope_sender = true,
                "envelope_recipient" => c.envelope_recipient = true,
                "header_sender" => c.header_sender = true,
                "header_recipient" => c.header_recipient = true,
                // conf --check reports the value; an unknown class
                // rewrites nothing more.
                other => warn!("{name}: unknown address class \"{other}\": ignored"),
            }
        }
        c
    }
}

pub struct Rewriting {
    pub site: Site,
    canonical: Vec<TableRef>,
    sender_canonical: Vec<TableRef>,
    recipient_canonical: Vec<TableRef>,
    canonical_classes: Classes,
    sender_classes: Classes,
    recipient_classes: Classes,
    masq_domains: Vec<String>,
    masq_exceptions: Vec<String>,
    masq_classes: Classes,
    /// remote_header_rewrite_domain: with it, a remote client's header
    /// addresses are rewritten too (unqualified ones get this domain).
    remote_domain: String,
    always_bcc: String,
    sender_bcc: Vec<TableRef>,
    recipient_bcc: Vec<TableRef>,
    virtual_alias: Vec<TableRef>,
    limits: Limits,
    propagate_canonical: bool,
    propagate_virtual: bool,
}

fn lookup_failure() -> Failure {
    super::write_error()
}

fn expansion_failure() -> Failure {
    super::fail(451, "4.6.0", "Alias expansion error")
}

impl Rewriting {
    pub fn new(p: &Params) -> Rewriting {
        let propagate = p.list("propagate_unmatched_extensions").unwrap_or_default();
        let limit = |n: &str| p.int(n).unwrap_or(1000).max(1) as usize;
        Rewriting {
            site: Site::new(p),
            canonical: table_list(p, "canonical_maps"),
            sender_canonical: table_list(p, "sender_canonical_maps"),
            recipient_canonical: table_list(p, "recipient_canonical_maps"),
            canonical_classes: Classes::of(p, "canonical_classes"),
            sender_classes: Classes::of(p, "sender_canonical_classes"),
            recipient_classes: Classes::of(p, "recipient_canonical_classes"),
            masq_domains: p.list("masquerade_domains").unwrap_or_default(),
            masq_exceptions: p.list("masquerade_exceptions").unwrap_or_default(),
            masq_classes: Classes::of(p, "masquerade_classes"),
            remote_domain: p.str("remote_header_rewrite_domain").trim().to_string(),
            always_bcc: p.str("always_bcc").trim().to_string(),
            sender_bcc: table_list(p, "sender_bcc_maps"),
            recipient_bcc: table_list(p, "recipient_bcc_maps"),
            virtual_alias: table_list(p, "virtual_alias_maps"),
            limits: Limits {
                expansion: limit("virtual_alias_expansion_limit"),
                recursion: limit("virtual_alias_recursion_limit"),
                length: limit("virtual_alias_address_length_limit"),
            },
            propagate_canonical: propagate.iter().any(|v| v == "canonical"),
            propagate_virtual: propagate.iter().any(|v| v == "virtual"),
        }
    }

    pub fn always_bcc(&self) -> Option<&str> {
        (!self.always_bcc.is_empty()).then_some(self.always_bcc.as_str())
    }

    /// Canonical mapping and masquerading of one address, in the
    /// envelope (`header` false) or in a header.
    pub async fn address(
        &self,
        tables: &TableCache,
        id: &str,
        kind: Kind,
        header: bool,
        addr: &str,
    ) -> Result<String, Failure> {
        if addr.is_empty() {
            return Ok(String::new());
        }
        let wants = |c: Classes| match (kind, header) {
            (Kind::Sender, false) => c.envelope_sender,
            (Kind::Recipient, false) => c.envelope_recipient,
            (Kind::Sender, true) => c.header_sender,
            (Kind::Recipient, true) => c.header_recipient,
        };
        let (specific, specific_classes, specific_name) = match kind {
            Kind::Sender => (
                &self.sender_canonical,
                self.sender_classes,
                "sender_canonical_maps",
            ),
            Kind::Recipient => (
                &self.recipient_canonical,
                self.recipient_classes,
                "recipient_canonical_maps",
            ),
        };
        let mut cur = addr.to_string();
        for (maps, classes, name) in [
            (specific, specific_classes, specific_name),
            (&self.canonical, self.canonical_classes, "canonical_maps"),
        ] {
            if maps.is_empty() || !wants(classes) {
                continue;
            }
            let f = Maps {
                cache: tables,
                tables: maps,
            };
            match addrmap::map_one(&f, &self.site, &cur, self.propagate_canonical).await {
                Ok((next, note)) => {
                    if let Some(n) = note {
                        warn!("{id}: {n} in {name} for {cur}");
                    }
                    cur = next;
                }
                Err(e) => {
                    warn!(
                        "{id}: {name} map lookup problem for {cur} -- message not accepted, try again later ({e})"
                    );
                    return Err(lookup_failure());
                }
            }
        }
        if !self.masq_domains.is_empty()
            && wants(self.masq_classes)
            && let Some(m) = addrmap::masquerade(&cur, &self.masq_domains, &self.masq_exceptions)
        {
            cur = m;
        }
        Ok(cur)
    }

    /// A message header with its addresses rewritten (Postfix's
    /// cleanup_rewrite_sender and cleanup_rewrite_recip): each address is
    /// qualified (`@$myorigin`, or for a remote client
    /// `@$remote_header_rewrite_domain`), then mapped and masqueraded as
    /// the header classes say. None when the header is not an address
    /// header, nothing changed, or a remote client's headers are left
    /// alone (remote_header_rewrite_domain empty).
    pub async fn header(
        &self,
        tables: &TableCache,
        id: &str,
        remote: bool,
        f: &Field,
    ) -> Result<Option<Vec<u8>>, Failure> {
        let Some(kind) = header_kind(&f.name) else {
            return Ok(None);
        };
        let domain = if remote {
            if self.remote_domain.is_empty() {
                return Ok(None);
            }
            self.remote_domain.as_str()
        } else {
            self.site.myorigin.as_str()
        };
        let Some(colon) = f.raw.iter().position(|&b| b == b':') else {
            return Ok(None);
        };
        let value = &f.raw[colon + 1..];
        let mut edits = Vec::new();
        for span in addrlist::addresses(value) {
            let mut a = span.address.clone();
            if !a.contains('@') && !domain.is_empty() {
                a = format!("{a}@{domain}");
            }
            let a = self.address(tables, id, kind, true, &a).await?;
            if a != span.address {
                edits.push((span, addrlist::quote(&a)));
            }
        }
        if edits.is_empty() {
            return Ok(None);
        }
        let mut out = f.raw[..=colon].to_vec();
        out.extend_from_slice(&addrlist::replace(value, &edits));
        Ok(Some(out))
    }

    /// The BCC address sender_bcc_maps or recipient_bcc_maps give for
    /// `addr` (looked up without extension propagation), qualified.
    pub async fn bcc(
        &self,
        tables: &TableCache,
        id: &str,
        kind: Kind,
        addr: &str,
    ) -> Result<Option<String>, Failure> {
        let (maps, name) = match kind {
            Kind::Sender => (&self.sender_bcc, "sender_bcc_maps"),
            Kind::Recipient => (&self.recipient_bcc, "recipient_bcc_maps"),
        };
        if maps.is_empty() || addr.is_empty() {
            return Ok(None);
        }
        let f = Maps {
            cache: tables,
            tables: maps,
        };
        match addrmap::find(&f, &self.site, addr).await {
            Ok(found) => Ok(found.map(|(v, _)| self.site.qualify(v.trim()))),
            Err(e) => {
                warn!(
                    "{id}: {name} map lookup problem -- message not accepted, try again later ({e})"
                );
                Err(lookup_failure())
            }
        }
    }

    /// Virtual alias expansion of one recipient.
    pub async fn expand(
        &self,
        tables: &TableCache,
        id: &str,
        addr: &str,
    ) -> Result<Vec<String>, Failure> {
        if self.virtual_alias.is_empty() {
            return Ok(vec![addr.to_string()]);
        }
        let f = Maps {
            cache: tables,
            tables: &self.virtual_alias,
        };
        addrmap::expand(&f, &self.site, addr, self.propagate_virtual, self.limits)
            .await
            .map_err(|e| {
                warn!("{id}: {}", e.warning("virtual_alias_maps", addr));
                match e {
                    Expansion::Lookup(_) => lookup_failure(),
                    _ => expansion_failure(),
                }
            })
    }
}
