//! `postern dkim keygen`: a new DKIM key pair and the DNS record that
//! publishes it, as opendkim-genkey makes them (`SELECTOR.private`,
//! `SELECTOR.txt`), with the project's crypto provider (aws-lc-rs).
//!
//! The private key is PEM PKCS#8, which opendkim (OpenSSL) reads as well.
//! RSA keys are 2048 bits or more; Ed25519 keys (RFC 8463) publish the raw
//! 32-byte public key in `p=`, RSA keys the SubjectPublicKeyInfo.
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::ExitCode;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::signature::KeyPair;
use base64::Engine;
use postern_config::dkim::is_dns_name;

use super::fail;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyType {
    Rsa,
    Ed25519,
}

/// A generated key: the PKCS#8 DER private key and the `p=` value.
pub struct Generated {
    pub pkcs8: Vec<u8>,
    pub public: Vec<u8>,
}

pub fn generate(kind: KeyType, bits: u32) -> Result<Generated, String> {
    match kind {
        KeyType::Rsa => {
            let size = match bits {
                2048 => aws_lc_rs::rsa::KeySize::Rsa2048,
                3072 => aws_lc_rs::rsa::KeySize::Rsa3072,
                4096 => aws_lc_rs::rsa::KeySize::Rsa4096,
                other => {
                    return Err(format!(
                        "RSA keys of {other} bits are not offered: 2048, 3072 or 4096"
                    ));
                }
            };
            let kp = aws_lc_rs::rsa::KeyPair::generate(size)
                .map_err(|_| "RSA key generation failed".to_string())?;
            let pkcs8: Pkcs8V1Der = kp
                .as_der()
                .map_err(|_| "cannot encode the RSA key".to_string())?;
            let spki: PublicKeyX509Der = kp
                .public_key()
                .as_der()
                .map_err(|_| "cannot encode the RSA public key".to_string())?;
            Ok(Generated {
                pkcs8: pkcs8.as_ref().to_vec(),
                public: spki.as_ref().to_vec(),
            })
        }
        KeyType::Ed25519 => {
            let rng = aws_lc_rs::rand::SystemRandom::new();
            let doc = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8v1(&rng)
                .map_err(|_| "Ed25519 key generation failed".to_string())?;
            let kp = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(doc.as_ref())
                .map_err(|_| "cannot read back the Ed25519 key".to_string())?;
            Ok(Generated {
                pkcs8: doc.as_ref().to_vec(),
                public: kp.public_key().as_ref().to_vec(),
            })
        }
    }
}

/// The DNS record, in opendkim-genkey's layout: the `p=` value split into
/// strings of at most 250 characters (a TXT string holds 255).
pub fn txt_record(selector: &str, domain: &str, kind: KeyType, public: &[u8]) -> String {
    let k = match kind {
        KeyType::Rsa => "rsa",
        KeyType::Ed25519 => "ed25519",
    };
    let p = base64::engine::general_purpose::STANDARD.encode(public);
    let mut strings = vec![format!("\"v=DKIM1; k={k}; \"")];
    let mut rest = p.as_str();
    let mut first = true;
    while !rest.is_empty() || first {
        let take = rest.len().min(if first { 248 } else { 250 });
        let (chunk, tail) = rest.split_at(take);
        strings.push(if first {
            format!("\"p={chunk}\"")
        } else {
            format!("\"{chunk}\"")
        });
        rest = tail;
        first = false;
    }
    format!(
        "{selector}._domainkey\tIN\tTXT\t( {} )  ; ----- DKIM key {selector} for {domain}\n",
        strings.join("\n\t  ")
    )
}

fn pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END PRIVATE KEY-----\n");
    out
}

/// Writes `DIR/SELECTOR.private` (mode 0600, never over an existing file)
/// and `DIR/SELECTOR.txt`, and prints the record to publish.
pub fn keygen(domain: &str, selector: &str, kind: KeyType, bits: u32, dir: &Path) -> ExitCode {
    if !is_dns_name(domain) {
        return fail(format!("-d {domain}: not a domain name"));
    }
    if !is_dns_name(selector) {
        return fail(format!("-s {selector}: not a selector (DNS labels)"));
    }
    let key = match generate(kind, bits) {
        Ok(k) => k,
        Err(e) => return fail(e),
    };
    let private = dir.join(format!("{selector}.private"));
    let txt = dir.join(format!("{selector}.txt"));
    // A selector is made once: rotation means a new selector, and an
    // existing key is never overwritten.
    for f in [&private, &txt] {
        if f.exists() {
            return fail(format!(
                "{} exists: choose a new selector (-s) to rotate",
                f.display()
            ));
        }
    }
    let write = |path: &Path, text: &str, mode: u32| -> Result<(), String> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| format!("{}: {e}", path.display()))
    };
    let record = txt_record(selector, domain, kind, &key.public);
    if let Err(e) = write(&private, &pem(&key.pkcs8), 0o600) {
        return fail(e);
    }
    if let Err(e) = write(&txt, &record, 0o644) {
        return fail(e);
    }
    print!("{record}");
    eprintln!(
        "postern: wrote {} and {}; publish the record above in {domain}'s zone",
        private.display(),
        txt.display()
    );
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_split_long_keys_and_name_the_key_type() {
        let r = txt_record("s1", "example.com", KeyType::Ed25519, &[7u8; 32]);
        assert!(
            r.starts_with("s1._domainkey\tIN\tTXT\t( \"v=DKIM1; k=ed25519; \""),
            "{r}"
        );
        assert!(r.contains("\"p=BwcH"), "{r}");
        let big = txt_record("s2", "example.com", KeyType::Rsa, &[1u8; 550]);
        let strings: Vec<&str> = big.split('"').skip(1).step_by(2).collect();
        assert!(strings.iter().all(|s| s.len() <= 250), "{strings:?}");
        let joined: String = strings[1..].concat();
        assert_eq!(
            joined.trim_start_matches("p="),
            base64::engine::general_purpose::STANDARD.encode([1u8; 550])
        );
    }

    #[test]
    fn generated_keys_have_the_sizes_dkim_expects() {
        let ed = generate(KeyType::Ed25519, 0).unwrap();
        assert_eq!(ed.public.len(), 32);
        let rsa = generate(KeyType::Rsa, 2048).unwrap();
        // A 2048-bit SubjectPublicKeyInfo is 294 bytes.
        assert_eq!(rsa.public.len(), 294);
        assert!(generate(KeyType::Rsa, 1024).is_err());
    }
}
