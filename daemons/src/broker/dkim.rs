//! The broker's DKIM keys: the only place a DKIM private key lives.
//!
//! Every key `dkim_key_table` names is read before the broker's jail (and
//! on `postern reload` from descriptors the master opened). The smtp
//! delivery agent asks which keys sign a From: address (the broker looks
//! the address up in `dkim_signing_table`), canonicalizes the message
//! itself, and sends the signing input here; the signature comes back.
//! RSA signatures are made on the blocking pool, never on the event loop
//! that commits queue files.
use std::collections::HashMap;
use std::sync::Arc;

use postern_config::Params;
use postern_config::dkim::{self, PrivateKey};
use postern_ipc::keys::{self as pk, DkimAlgorithm, DkimKey, Reply};

use super::keys::Reader;
use crate::tablecache::{TableCache, TableRef};
use crate::{info, warn};

struct Loaded {
    domain: String,
    selector: String,
    key: PrivateKey,
}

impl Loaded {
    fn algorithm(&self) -> DkimAlgorithm {
        if self.key.is_rsa() {
            DkimAlgorithm::RsaSha256
        } else {
            DkimAlgorithm::Ed25519Sha256
        }
    }
}

/// The loaded keys, by key name.
#[derive(Default)]
pub struct DkimStore {
    keys: HashMap<String, Arc<Loaded>>,
}

/// The key table files and every key file they name, for the master to
/// open on reload.
pub fn files(p: &Params) -> Vec<String> {
    let specs = p.list("dkim_key_table").unwrap_or_default();
    let tables = dkim::table_files(&specs).into_iter();
    let keys = dkim::key_entries(&specs)
        .unwrap_or_default()
        .into_iter()
        .map(|e| e.path);
    tables
        .chain(keys)
        .map(|p| p.display().to_string())
        .collect()
}

impl DkimStore {
    /// Reads every key the configuration names through `read`. A key that
    /// fails to load keeps `current`'s key of that name (a typo in a
    /// rotation must not stop signing); the failure is logged, and mail for
    /// a key that never loaded is deferred, not sent unsigned.
    pub fn load(p: &Params, read: Reader<'_>, current: Option<&DkimStore>) -> DkimStore {
        let specs = p.list("dkim_key_table").unwrap_or_default();
        let entries = match dkim::key_entries_with(&specs, read) {
            Ok(e) => e,
            Err(errs) => {
                for e in errs {
                    warn!("dkim_key_table: {e}");
                }
                return DkimStore {
                    keys: current.map(|c| c.keys.clone()).unwrap_or_default(),
                };
            }
        };
        let mut keys = HashMap::new();
        for e in entries {
            let path = e.path.display().to_string();
            let loaded = read(&path).and_then(|pem| PrivateKey::from_pem(&pem));
            match loaded {
                Ok(key) => {
                    info!(
                        "DKIM key {} for d={} s={} ({}) from {path}",
                        e.name,
                        e.domain,
                        e.selector,
                        key.describe()
                    );
                    keys.insert(
                        e.name,
                        Arc::new(Loaded {
                            domain: e.domain,
                            selector: e.selector,
                            key,
                        }),
                    );
                }
                Err(err) => {
                    let kept = current.and_then(|c| c.keys.get(&e.name)).cloned();
                    warn!(
                        "{}: DKIM key {}: {path}: {err}{}",
                        e.at,
                        e.name,
                        if kept.is_some() {
                            "; keeping the current key"
                        } else {
                            "; mail it would sign is deferred"
                        }
                    );
                    if let Some(k) = kept {
                        keys.insert(e.name, k);
                    }
                }
            }
        }
        DkimStore { keys }
    }
}

/// The keys `dkim_signing_table` names for mail from `address`, looked
/// up as OpenDKIM's SigningTable with refile: semantics: `user@domain`,
/// `*@domain`, `domain`, then each parent domain as `.parent`. The first
/// entry found wins; its value lists key names.
pub async fn keys_for(
    store: &DkimStore,
    table: &[TableRef],
    cache: &TableCache,
    address: &str,
) -> Reply {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return Reply::DkimKeys(Vec::new());
    };
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    if local.is_empty() || domain.is_empty() {
        return Reply::DkimKeys(Vec::new());
    }
    let mut keys = vec![
        format!("{local}@{domain}"),
        format!("*@{domain}"),
        domain.clone(),
    ];
    let mut rest = domain.as_str();
    while let Some((_, parent)) = rest.split_once('.') {
        keys.push(format!(".{parent}"));
        rest = parent;
    }
    for k in &keys {
        let value = match cache.lookup_any(table, k).await {
            Ok(Some(v)) => v,
            Ok(None) => continue,
            Err(e) => {
                warn!("dkim_signing_table: {e}");
                return Reply::Tempfail(format!("dkim_signing_table lookup failure: {e}"));
            }
        };
        let mut out = Vec::new();
        for name in dkim::names(&value).take(pk::MAX_DKIM_KEYS) {
            let Some(l) = store.keys.get(&name) else {
                warn!(
                    "dkim_signing_table: {k} names the key {name}, which dkim_key_table does not have or which did not load"
                );
                return Reply::Tempfail(format!("DKIM key {name} is not available"));
            };
            out.push(DkimKey {
                name,
                domain: l.domain.clone(),
                selector: l.selector.clone(),
                algorithm: l.algorithm(),
            });
        }
        return Reply::DkimKeys(out);
    }
    Reply::DkimKeys(Vec::new())
}

/// Whether `input` ends with a DKIM-Signature field of this key's domain
/// and selector (its tags as canonicalization leaves them): the key signs
/// DKIM signing inputs for its own d= and s=, and nothing else.
fn names_key(input: &[u8], l: &Loaded) -> bool {
    const FIELD: &[u8] = b"dkim-signature:";
    let Some(at) = input
        .windows(FIELD.len())
        .rposition(|w| w.eq_ignore_ascii_case(FIELD))
    else {
        return false;
    };
    if at != 0 && input[at - 1] != b'\n' {
        return false;
    }
    let value = String::from_utf8_lossy(&input[at + FIELD.len()..]);
    let mut d = None;
    let mut s = None;
    for tag in value.split(';') {
        let tag: String = tag.chars().filter(|c| !c.is_whitespace()).collect();
        match tag.split_once('=') {
            Some(("d", v)) => d = Some(v.trim_end_matches('.').to_ascii_lowercase()),
            Some(("s", v)) => s = Some(v.to_string()),
            _ => {}
        }
    }
    d.as_deref() == Some(l.domain.as_str()) && s.as_deref() == Some(l.selector.as_str())
}

/// Signs `input` with the named key.
pub async fn sign(store: &DkimStore, name: &str, input: Vec<u8>) -> Reply {
    let Some(l) = store.keys.get(name).cloned() else {
        return Reply::Tempfail(format!("DKIM key {name} is not available"));
    };
    if !names_key(&input, &l) {
        return Reply::Refused(format!(
            "the input's DKIM-Signature field is not for d={} s={}",
            l.domain, l.selector
        ));
    }
    let r = if l.key.is_rsa() {
        // About a millisecond per RSA-2048 signature: off the event loop.
        tokio::task::spawn_blocking(move || l.key.sign(&input))
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
    } else {
        l.key.sign(&input)
    };
    match r {
        Ok(s) if s.len() <= pk::MAX_SIGNATURE => Reply::Signature(s),
        Ok(_) => Reply::Refused("signature too large".into()),
        Err(e) => Reply::Tempfail(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded() -> Loaded {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let doc = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let key = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(doc.as_ref()).unwrap();
        Loaded {
            domain: "example.com".into(),
            selector: "s1".into(),
            key: PrivateKey::Ed25519(key),
        }
    }

    #[test]
    fn a_key_signs_only_inputs_for_its_own_domain_and_selector() {
        let l = loaded();
        let ok = b"from:a@example.com\r\ndkim-signature:v=1; a=ed25519-sha256; d=example.com; s=s1; h=from; bh=x; b=";
        assert!(names_key(ok, &l));
        let simple = b"From: a@example.com\r\nDKIM-Signature: v=1; d=Example.COM;\r\n s=s1; b=";
        assert!(names_key(simple, &l));
        for bad in [
            &b"dkim-signature:v=1; d=other.example; s=s1; b="[..],
            b"dkim-signature:v=1; d=example.com; s=s2; b=",
            b"a TLS 1.3 CertificateVerify input",
            b"x-dkim-signature:v=1; d=example.com; s=s1; b=",
        ] {
            assert!(!names_key(bad, &l), "{}", String::from_utf8_lossy(bad));
        }
    }
}
