//! smtp_generic_maps (generic(5)): local addresses made valid on the
//! Internet as mail leaves, in the envelope sender, every recipient of
//! RCPT TO, and the addresses of the message's own address headers. The
//! queue file is never changed; logs keep the recipient as queued. LMTP
//! deliveries are not rewritten (Postfix's lmtp_generic_maps is empty by
//! default).
//!
//! The lookups are the broker's (this role has no table files): Postfix's
//! mail_addr_map, the first address of the value, extensions carried over
//! when propagate_unmatched_extensions says `generic`. A table that cannot
//! be read defers the delivery: mail never leaves half rewritten.
use std::collections::HashMap;

use postern_ipc::smtpd_broker as sb;
use postern_proto::addrlist;
use postern_proto::header::{self, Split};

use super::BrokerLookup;

/// The rewritten addresses of one delivery, asked once each.
pub struct Generic<'a> {
    broker: &'a BrokerLookup,
    seen: HashMap<String, String>,
}

impl<'a> Generic<'a> {
    pub fn new(broker: &'a BrokerLookup) -> Self {
        Generic {
            broker,
            seen: HashMap::new(),
        }
    }

    /// `addr` as generic maps it (itself when no table has it).
    pub async fn address(&mut self, addr: &str) -> Result<String, String> {
        if addr.is_empty() {
            return Ok(String::new());
        }
        if let Some(a) = self.seen.get(addr) {
            return Ok(a.clone());
        }
        let new = self
            .broker
            .lookup(sb::Table::Generic, addr)
            .await
            .map_err(|e| format!("smtp_generic_maps lookup failure for {addr}: {e}"))?
            .unwrap_or_else(|| addr.to_string());
        self.seen.insert(addr.to_string(), new.clone());
        Ok(new)
    }

    /// The content with its address headers rewritten, or None when
    /// nothing changed.
    pub async fn content(&mut self, content: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let Split::Done { headers, .. } = header::split(content, true) else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(content.len() + 64);
        let mut changed = false;
        for f in header::fields(&content[..headers]) {
            let colon = f.raw.iter().position(|&b| b == b':');
            let (Some(_), Some(colon)) = (crate::addrmap::header_kind(&f.name), colon) else {
                out.extend_from_slice(&f.raw);
                continue;
            };
            let value = &f.raw[colon + 1..];
            let mut edits = Vec::new();
            for span in addrlist::addresses(value) {
                let new = self.address(&span.address).await?;
                if new != span.address {
                    edits.push((span, addrlist::quote(&new)));
                }
            }
            if edits.is_empty() {
                out.extend_from_slice(&f.raw);
            } else {
                changed = true;
                out.extend_from_slice(&f.raw[..=colon]);
                out.extend_from_slice(&addrlist::replace(value, &edits));
            }
        }
        if !changed {
            return Ok(None);
        }
        out.extend_from_slice(&content[headers..]);
        Ok(Some(out))
    }
}
