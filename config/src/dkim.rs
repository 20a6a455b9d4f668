//! DKIM signing keys: `dkim_key_table` (OpenDKIM's KeyTable: a key name,
//! then `domain:selector:/path/to/key.pem`) and the private keys it names.
//!
//! The broker loads every key before its jail (and on reload from
//! descriptors the master opens), so the key table must be one whose
//! entries can be listed: `texthash:` (OpenDKIM's flat file) or `inline:`.
//! `dkim_signing_table` (which address signs with which key names) may be
//! any table type; the broker looks it up per message.
use std::path::PathBuf;

use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

use crate::tables::{self, Table};

/// RFC 8301: verifiers must refuse RSA keys below 1024 bits.
pub const MIN_RSA_BITS: usize = 1024;
/// Below this a key still works; `conf --check` warns (RFC 8301 says
/// signers should use 2048).
pub const GOOD_RSA_BITS: usize = 2048;

/// One key table entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    /// The key name, folded to lower case as texthash keys are.
    pub name: String,
    /// d=
    pub domain: String,
    /// s=
    pub selector: String,
    pub path: PathBuf,
    /// Where the entry is: `file:line`, or the parameter for inline tables.
    pub at: String,
}

/// A name as d= and s= may carry (RFC 6376 3.1/3.5: RFC 5321
/// sub-domains): letters, digits, hyphens, dots between labels.
pub fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// `domain:selector:/path` of one entry.
fn parse_value(name: &str, value: &str, at: &str) -> Result<KeyEntry, String> {
    let mut parts = value.trim().splitn(3, ':');
    let (Some(domain), Some(selector), Some(path)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(format!(
            "{at}: {name}: expected domain:selector:/path/to/key, not \"{value}\""
        ));
    };
    let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    let selector = selector.trim();
    if !is_dns_name(&domain) {
        return Err(format!("{at}: {name}: \"{domain}\" is not a domain name"));
    }
    if !is_dns_name(selector) {
        return Err(format!("{at}: {name}: \"{selector}\" is not a selector"));
    }
    let path = path.trim();
    if !path.starts_with('/') {
        return Err(format!(
            "{at}: {name}: the key must be an absolute path to a PEM file, not \"{path}\""
        ));
    }
    Ok(KeyEntry {
        name: name.to_ascii_lowercase(),
        domain,
        selector: selector.to_string(),
        path: PathBuf::from(path),
        at: at.to_string(),
    })
}

/// The key table's entries, in order, first entry of a name winning.
/// Errors name the file and line (or the parameter for inline tables).
pub fn key_entries(specs: &[String]) -> Result<Vec<KeyEntry>, Vec<String>> {
    key_entries_with(specs, &|p: &str| {
        std::fs::read(p).map_err(|e| format!("{p}: {}", tables::io_text(&e)))
    })
}

/// The key table files (texthash:) the specs name.
pub fn table_files(specs: &[String]) -> Vec<PathBuf> {
    specs
        .iter()
        .filter_map(|s| match tables::parse(s) {
            Ok(Table::TextHash(p)) => Some(p),
            _ => None,
        })
        .collect()
}

/// [`key_entries`], reading each table file through `read` (the broker on
/// reload reads from descriptors the master opened).
pub fn key_entries_with(
    specs: &[String],
    read: &dyn Fn(&str) -> Result<Vec<u8>, String>,
) -> Result<Vec<KeyEntry>, Vec<String>> {
    let mut out: Vec<KeyEntry> = Vec::new();
    let mut errs = Vec::new();
    fn push(e: Result<KeyEntry, String>, out: &mut Vec<KeyEntry>, errs: &mut Vec<String>) {
        match e {
            Ok(e) if out.iter().any(|o| o.name == e.name) => {}
            Ok(e) => out.push(e),
            Err(e) => errs.push(e),
        }
    }
    for spec in specs {
        match tables::parse(spec) {
            Ok(Table::TextHash(path)) => {
                let file = path.display().to_string();
                let text = match read(&file) {
                    Ok(d) => String::from_utf8_lossy(&d).into_owned(),
                    Err(e) => {
                        errs.push(e);
                        continue;
                    }
                };
                match tables::lines::logical(&text, &file) {
                    Ok(lines) => {
                        for l in lines {
                            let at = format!("{file}:{}", l.number);
                            let (name, value) = l
                                .text
                                .split_once(char::is_whitespace)
                                .unwrap_or((&l.text, ""));
                            push(
                                parse_value(name.trim_end_matches(':'), value, &at),
                                &mut out,
                                &mut errs,
                            );
                        }
                    }
                    Err(e) => errs.extend(e),
                }
            }
            Ok(Table::Inline(map)) => {
                let mut pairs: Vec<_> = map.into_iter().collect();
                pairs.sort();
                for (k, v) in pairs {
                    push(parse_value(&k, &v, "dkim_key_table"), &mut out, &mut errs);
                }
            }
            Ok(_) => errs.push(format!(
                "dkim_key_table: {spec}: the broker loads every key at start, so the key table must be one it can list: texthash: (OpenDKIM's KeyTable file) or inline:"
            )),
            Err(e) => errs.push(format!("dkim_key_table: {e}")),
        }
    }
    if errs.is_empty() { Ok(out) } else { Err(errs) }
}

/// The key names a signing table value lists (comma or space separated).
pub fn names(value: &str) -> impl Iterator<Item = String> + '_ {
    value
        .split([',', ' ', '\t'])
        .filter(|s| !s.is_empty())
        .map(str::to_ascii_lowercase)
}

/// A loaded private key.
pub enum PrivateKey {
    Rsa(aws_lc_rs::rsa::KeyPair),
    Ed25519(aws_lc_rs::signature::Ed25519KeyPair),
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe().as_str())
    }
}

impl PrivateKey {
    /// Reads a PEM private key: RSA in PKCS#1 (what opendkim-genkey
    /// writes) or PKCS#8, Ed25519 in PKCS#8. RSA keys below
    /// [`MIN_RSA_BITS`] are refused.
    pub fn from_pem(pem: &[u8]) -> Result<PrivateKey, String> {
        let der = PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
            rustls_pki_types::pem::Error::NoItemsFound => "no PEM private key in the file".into(),
            e => format!("bad PEM private key: {e:?}"),
        })?;
        let small =
            || format!("an RSA key below {MIN_RSA_BITS} bits: verifiers refuse it (RFC 8301)");
        let key = match &der {
            PrivateKeyDer::Pkcs1(k) => aws_lc_rs::rsa::KeyPair::from_der(k.secret_pkcs1_der())
                .map(PrivateKey::Rsa)
                .map_err(|e| match e.to_string().as_str() {
                    "TooSmall" => small(),
                    e => format!("bad RSA private key: {e}"),
                })?,
            PrivateKeyDer::Pkcs8(k) => {
                let d = k.secret_pkcs8_der();
                match aws_lc_rs::rsa::KeyPair::from_pkcs8(d) {
                    Ok(r) => PrivateKey::Rsa(r),
                    Err(e) if e.to_string() == "TooSmall" => return Err(small()),
                    Err(_) => aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(d)
                        .map(PrivateKey::Ed25519)
                        .map_err(|_| {
                            "the PKCS#8 key is neither RSA nor Ed25519 (DKIM signs with those only)"
                                .to_string()
                        })?,
                }
            }
            _ => return Err("an EC (SEC1) key: DKIM signs with RSA or Ed25519 only".into()),
        };
        if let PrivateKey::Rsa(r) = &key
            && r.public_modulus_len() * 8 < MIN_RSA_BITS
        {
            return Err(format!(
                "a {}-bit RSA key: verifiers refuse keys below {MIN_RSA_BITS} bits (RFC 8301)",
                r.public_modulus_len() * 8
            ));
        }
        Ok(key)
    }

    pub fn is_rsa(&self) -> bool {
        matches!(self, PrivateKey::Rsa(_))
    }

    /// The RSA modulus size in bits (0 for Ed25519).
    pub fn rsa_bits(&self) -> usize {
        match self {
            PrivateKey::Rsa(r) => r.public_modulus_len() * 8,
            PrivateKey::Ed25519(_) => 0,
        }
    }

    /// "rsa-sha256, 2048 bits" or "ed25519-sha256", for log lines.
    pub fn describe(&self) -> String {
        match self {
            PrivateKey::Rsa(r) => format!("rsa-sha256, {} bits", r.public_modulus_len() * 8),
            PrivateKey::Ed25519(_) => "ed25519-sha256".into(),
        }
    }

    /// The DKIM signature over `input` (the canonicalized signed header
    /// fields and the DKIM-Signature field without its b= value):
    /// RSASSA-PKCS1-v1_5 with SHA-256 (RFC 6376), or Ed25519 over the
    /// input's SHA-256 digest (RFC 8463).
    pub fn sign(&self, input: &[u8]) -> Result<Vec<u8>, String> {
        match self {
            PrivateKey::Rsa(r) => {
                let mut sig = vec![0; r.public_modulus_len()];
                r.sign(
                    &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                    &aws_lc_rs::rand::SystemRandom::new(),
                    input,
                    &mut sig,
                )
                .map_err(|e| format!("RSA signing failed: {e}"))?;
                Ok(sig)
            }
            PrivateKey::Ed25519(k) => {
                let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, input);
                Ok(k.sign(digest.as_ref()).as_ref().to_vec())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_table_entries_and_their_errors() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("keys");
        std::fs::write(
            &t,
            "# OpenDKIM KeyTable\n\
             Mail2026  example.com:mail2026:/etc/keys/a.pem\n\
             ed        example.com:ed:/etc/keys/ed.pem\n\
             mail2026  other.example:x:/etc/keys/dup.pem\n\
             bad       example.com:/etc/keys/b.pem\n\
             rel       example.com:s:keys/c.pem\n",
        )
        .unwrap();
        let spec = format!("texthash:{}", t.display());
        let errs = key_entries(std::slice::from_ref(&spec)).unwrap_err();
        let f = t.display().to_string();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].starts_with(&format!("{f}:5: bad:")), "{errs:?}");
        assert!(errs[1].starts_with(&format!("{f}:6: rel:")), "{errs:?}");
        std::fs::write(
            &t,
            "Mail2026  Example.COM:mail2026:/etc/keys/a.pem\n\
             ed        example.com:ed:/etc/keys/ed.pem\n\
             mail2026  other.example:x:/etc/keys/dup.pem\n",
        )
        .unwrap();
        let e = key_entries(&[spec]).unwrap();
        assert_eq!(e.len(), 2, "the first entry of a name wins");
        assert_eq!(
            (
                e[0].name.as_str(),
                e[0].domain.as_str(),
                e[0].selector.as_str()
            ),
            ("mail2026", "example.com", "mail2026")
        );
        assert_eq!(e[0].at, format!("{f}:1"));
        let e = key_entries(&["inline:{ k1=a.example:s1:/k1.pem }".into()]).unwrap();
        assert_eq!(e[0].path, PathBuf::from("/k1.pem"));
        let errs = key_entries(&["regexp:{ {/x/ a:b:/c} }".into()]).unwrap_err();
        assert!(errs[0].contains("must be one it can list"), "{errs:?}");
        assert_eq!(names("a, B c").collect::<Vec<_>>(), ["a", "b", "c"]);
    }

    #[test]
    fn keys_load_from_pkcs1_and_pkcs8_and_small_rsa_is_refused() {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let ed = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pem = |label: &str, der: &[u8]| {
            use std::fmt::Write;
            let b64 = base64_encode(der);
            let mut s = format!("-----BEGIN {label}-----\n");
            for c in b64.as_bytes().chunks(64) {
                let _ = writeln!(s, "{}", std::str::from_utf8(c).unwrap());
            }
            let _ = writeln!(s, "-----END {label}-----");
            s
        };
        let k = PrivateKey::from_pem(pem("PRIVATE KEY", ed.as_ref()).as_bytes()).unwrap();
        assert!(!k.is_rsa());
        assert_eq!(k.sign(b"input").unwrap().len(), 64);
        let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
        let p8: Pkcs8V1Der = rsa.as_der().unwrap();
        let k = PrivateKey::from_pem(pem("PRIVATE KEY", p8.as_ref()).as_bytes()).unwrap();
        assert_eq!(k.rsa_bits(), 2048);
        assert_eq!(k.sign(b"input").unwrap().len(), 256);
        assert!(PrivateKey::from_pem(b"no key here").is_err());
    }

    fn base64_encode(d: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for c in d.chunks(3) {
            let n = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            for i in 0..4 {
                if i <= c.len() {
                    out.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}
