//! DKIM signing as a message leaves (RFC 6376, RFC 8463 for Ed25519).
//!
//! The signature covers exactly what goes on the wire: it is made after
//! smtp_generic_maps rewrote the headers, so every header cleanup,
//! header_checks or a Milter added is covered. This process canonicalizes
//! (mail-auth) and hashes the body; the broker, the only holder of the
//! private keys, says which keys sign the From: address (its
//! `dkim_signing_table`) and makes each signature over the signing input
//! sent to it. Only messages cleanup marked signable (a trusted source)
//! are signed.
//!
//! One message's DKIM-Signature fields are kept for its later deliveries
//! (other next hops, retries) while the content they covered is the same.
use std::cell::RefCell;
use std::collections::HashMap;

use mail_auth::common::crypto::{Algorithm, Sha256, SigningKey};
use mail_auth::common::headers::{HeaderWriter, Writable};
use mail_auth::dkim::{Canonicalization, DkimSigner};
use postern_config::Params;
use postern_ipc::keys::{self as pk, DkimAlgorithm};
use postern_proto::addrlist;
use postern_proto::header::{self, Split};

use crate::info;
use crate::peerpool::PeerPool;

/// Signed messages whose fields are kept for later deliveries.
const CACHE: usize = 512;

pub struct Settings {
    /// dkim_signed_headers: signed where present.
    headers: Vec<String>,
    /// dkim_oversign_headers: signed once more than present (or once when
    /// absent), so that none can be added after signing.
    oversign: Vec<String>,
    header_c: Canonicalization,
    body_c: Canonicalization,
    /// dkim_body_length: the l= tag (off by default).
    body_length: bool,
}

fn canonicalization(s: &str) -> Canonicalization {
    if s == "simple" {
        Canonicalization::Simple
    } else {
        Canonicalization::Relaxed
    }
}

impl Settings {
    /// None when dkim_signing_table is empty: nothing is signed.
    pub fn new(p: &Params) -> Option<Settings> {
        if p.list("dkim_signing_table").unwrap_or_default().is_empty() {
            return None;
        }
        let c = p.str("dkim_canonicalization");
        let (h, b) = c.split_once('/').unwrap_or((c, "simple"));
        Some(Settings {
            headers: p.list("dkim_signed_headers").unwrap_or_default(),
            oversign: p.list("dkim_oversign_headers").unwrap_or_default(),
            header_c: canonicalization(h),
            body_c: canonicalization(b),
            body_length: p.bool("dkim_body_length").unwrap_or(false),
        })
    }
}

/// A mail-auth signing key that signs nothing: it keeps the signing input
/// for the broker.
struct Capture {
    algorithm: Algorithm,
    input: RefCell<Vec<u8>>,
}

impl SigningKey for Capture {
    type Hasher = Sha256;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        let mut v = Vec::with_capacity(1024);
        input.write(&mut v);
        *self.input.borrow_mut() = v;
        Ok(Vec::new())
    }

    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

/// The address of the message's one From: field, or None (no From:, or
/// several: such a message is not signed).
pub fn from_address(content: &[u8]) -> Option<String> {
    let Split::Done { headers, .. } = header::split(content, true) else {
        return None;
    };
    let mut from = header::fields(&content[..headers])
        .into_iter()
        .filter(|f| f.is("From"));
    let f = from.next()?;
    if from.next().is_some() {
        return None;
    }
    let colon = f.raw.iter().position(|&b| b == b':')?;
    addrlist::addresses(&f.raw[colon + 1..])
        .into_iter()
        .next()
        .map(|s| s.address)
        .filter(|a| a.contains('@'))
}

/// The header names to sign: the configured ones the message has, then
/// the oversigned ones again.
fn header_list(s: &Settings, content: &[u8]) -> Vec<String> {
    let present: Vec<String> = match header::split(content, true) {
        Split::Done { headers, .. } => header::fields(&content[..headers])
            .into_iter()
            .map(|f| f.name)
            .collect(),
        Split::Incomplete => Vec::new(),
    };
    let mut out: Vec<String> = s
        .headers
        .iter()
        .filter(|h| present.iter().any(|p| p.eq_ignore_ascii_case(h)))
        .cloned()
        .collect();
    out.extend(s.oversign.iter().cloned());
    out
}

/// The content a message's DKIM-Signature fields covered (its length and
/// CRC-32), and the fields.
type Kept = ((usize, u32), Vec<u8>);

pub struct Signer {
    s: Settings,
    broker: PeerPool<pk::Link>,
    /// queue id -> (the content's length and CRC-32, the DKIM-Signature
    /// fields): a delivery whose content differs (LMTP, which
    /// smtp_generic_maps does not rewrite) is signed afresh.
    cache: RefCell<HashMap<String, Kept>>,
}

impl Signer {
    pub fn new(s: Settings, broker: PeerPool<pk::Link>) -> Signer {
        Signer {
            s,
            broker,
            cache: RefCell::default(),
        }
    }

    async fn call(&self, req: pk::Request) -> Result<pk::Reply, String> {
        match self.broker.call(&req).await {
            Ok(pk::Reply::Tempfail(e)) => Err(e),
            Ok(pk::Reply::Refused(e)) => Err(format!("the broker refused: {e}")),
            Ok(r) => Ok(r),
            Err(e) => Err(format!("broker unavailable: {e}")),
        }
    }

    /// The DKIM-Signature fields to put before `content` (empty when the
    /// signing table has no key for its From: address). Err: signing was
    /// due and failed; the delivery is deferred, never sent unsigned.
    pub async fn fields(&self, queue_id: &str, content: &[u8]) -> Result<Vec<u8>, String> {
        let id = (content.len(), crc32fast::hash(content));
        if let Some((seen, fields)) = self.cache.borrow().get(queue_id)
            && *seen == id
        {
            return Ok(fields.clone());
        }
        let Some(from) = from_address(content) else {
            return Ok(Vec::new());
        };
        let keys = match self.call(pk::Request::DkimKeys(from.clone())).await? {
            pk::Reply::DkimKeys(k) => k,
            other => return Err(format!("unexpected reply from the broker: {other:?}")),
        };
        let headers = header_list(&self.s, content);
        let mut out = Vec::new();
        for k in &keys {
            let capture = Capture {
                algorithm: match k.algorithm {
                    DkimAlgorithm::RsaSha256 => Algorithm::RsaSha256,
                    DkimAlgorithm::Ed25519Sha256 => Algorithm::Ed25519Sha256,
                },
                input: RefCell::default(),
            };
            let signer = DkimSigner::from_key(capture)
                .domain(k.domain.clone())
                .selector(k.selector.clone())
                .headers(headers.iter().cloned())
                .header_canonicalization(self.s.header_c)
                .body_canonicalization(self.s.body_c)
                .body_length(self.s.body_length);
            let mut sig = signer
                .sign(content)
                .map_err(|e| format!("cannot canonicalize the message for DKIM: {e}"))?;
            let input = std::mem::take(&mut *signer.key.input.borrow_mut());
            if input.len() > pk::MAX_DKIM_INPUT {
                return Err(format!(
                    "the signed headers are larger than {} bytes",
                    pk::MAX_DKIM_INPUT
                ));
            }
            let reply = self
                .call(pk::Request::DkimSign {
                    name: k.name.clone(),
                    input,
                })
                .await?;
            let pk::Reply::Signature(b) = reply else {
                return Err(format!("unexpected reply from the broker: {reply:?}"));
            };
            sig.b = b;
            out.extend_from_slice(sig.to_header().as_bytes());
            info!(
                "{queue_id}: DKIM-Signature field added (s={}, d={})",
                k.selector, k.domain
            );
        }
        let mut cache = self.cache.borrow_mut();
        if cache.len() >= CACHE {
            cache.clear();
        }
        cache.insert(queue_id.to_string(), (id, out.clone()));
        Ok(out)
    }
}
