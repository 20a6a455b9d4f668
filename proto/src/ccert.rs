//! What the SMTP server's checks need from a client certificate, which the
//! client sent and nobody has vouched for: its SubjectPublicKeyInfo (for
//! the public-key fingerprint) and its subject CommonName (Postfix's
//! `peer_CN`, the name in `check_ccert_access` replies and in logs). The
//! DER is parsed by x509-parser; whatever it yields is bounded and made
//! printable here.

/// Longest CommonName kept (an X.520 CN is at most 64 characters; a
/// certificate may claim more).
pub const MAX_CN: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The DER SubjectPublicKeyInfo, outer SEQUENCE included.
    pub spki: Vec<u8>,
    /// The first CommonName of the subject, printable ASCII ('?' for
    /// anything else), or "" when there is none.
    pub cn: String,
    /// The issuer's, likewise.
    pub issuer_cn: String,
}

/// A certificate's key as OpenSSL (and so Postfix's TLS log line) names
/// it: `RSA` with its size, `ECDSA` with its curve, `ED25519`, `ED448`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    Rsa(usize),
    Ec(&'static str),
    Ed25519,
    Ed448,
}

/// The key of one DER certificate; None when it is no certificate or a
/// key of another kind.
pub fn key_kind(der: &[u8]) -> Option<KeyKind> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    kind_of(cert.public_key())
}

/// The key of a DER SubjectPublicKeyInfo (an RFC 7250 raw public key);
/// None when it is none (or has bytes after it) or a key of another kind.
pub fn spki_key_kind(der: &[u8]) -> Option<KeyKind> {
    use x509_parser::prelude::FromDer;
    let (rest, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(der).ok()?;
    if !rest.is_empty() {
        return None;
    }
    kind_of(&spki)
}

fn kind_of(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> Option<KeyKind> {
    match spki.algorithm.algorithm.to_id_string().as_str() {
        "1.3.101.112" => return Some(KeyKind::Ed25519),
        "1.3.101.113" => return Some(KeyKind::Ed448),
        _ => {}
    }
    match spki.parsed().ok()? {
        x509_parser::public_key::PublicKey::RSA(rsa) => Some(KeyKind::Rsa(rsa.key_size())),
        x509_parser::public_key::PublicKey::EC(_) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string())?;
            Some(KeyKind::Ec(match curve.as_str() {
                "1.2.840.10045.3.1.7" => "prime256v1",
                "1.3.132.0.34" => "secp384r1",
                "1.3.132.0.35" => "secp521r1",
                _ => return None,
            }))
        }
        _ => None,
    }
}

/// Parses one DER certificate; None when it is not one (or has bytes
/// after it).
pub fn parse(der: &[u8]) -> Option<Parsed> {
    let (rest, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    if !rest.is_empty() {
        return None;
    }
    let cn = |name: &x509_parser::x509::X509Name<'_>| {
        printable(
            name.iter_common_name()
                .next()
                .and_then(|a| a.as_str().ok())
                .unwrap_or(""),
        )
    };
    Some(Parsed {
        spki: cert.public_key().raw.to_vec(),
        cn: cn(cert.subject()),
        issuer_cn: cn(cert.issuer()),
    })
}

/// The value of a DER TLV (what follows its tag and length), when `der`
/// is exactly one TLV with a one-byte tag.
pub fn der_value(der: &[u8]) -> Option<&[u8]> {
    let (&first_len, rest) = der.get(1..)?.split_first()?;
    let (len, body) = match first_len {
        n @ 0..=0x7f => (usize::from(n), rest),
        0x81..=0x84 => {
            let k = usize::from(first_len & 0x7f);
            let (len, body) = (rest.get(..k)?, rest.get(k..)?);
            if len[0] == 0 {
                return None;
            }
            (
                len.iter().fold(0usize, |a, b| (a << 8) | usize::from(*b)),
                body,
            )
        }
        _ => return None,
    };
    (body.len() == len).then_some(body)
}

/// The issuer Name of one DER certificate, as the value of its SEQUENCE
/// (the form a trust anchor's subject takes in webpki), and the
/// certificate's DER SubjectPublicKeyInfo; None when it is no
/// certificate.
pub fn issuer_and_spki(der: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let issuer = der_value(cert.issuer().as_raw())?.to_vec();
    Some((issuer, cert.public_key().raw.to_vec()))
}

fn printable(s: &str) -> String {
    s.chars()
        .take(MAX_CN)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// Postfix's fingerprint format: upper-case hex bytes joined by colons.
pub fn fingerprint(digest: &[u8]) -> String {
    let mut out = String::with_capacity(digest.len() * 3);
    for (i, b) in digest.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push_str(&format!("{b:02X}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_colon_separated_upper_hex() {
        assert_eq!(fingerprint(&[0x0a, 0xff, 0x00]), "0A:FF:00");
        assert_eq!(fingerprint(&[]), "");
    }

    #[test]
    fn key_kinds_as_openssl_names_them() {
        // The certificate's key, and the same key as a raw public key.
        let kind = |alg: &'static rcgen::SignatureAlgorithm| {
            let key = rcgen::KeyPair::generate_for(alg).unwrap();
            let params = rcgen::CertificateParams::new(vec!["mx.example".into()]).unwrap();
            let der = params.self_signed(&key).unwrap().der().to_vec();
            let from_cert = key_kind(&der);
            let spki = parse(&der).unwrap().spki;
            assert_eq!(spki_key_kind(&spki), from_cert);
            assert_eq!(spki_key_kind(&der), None, "a certificate is no raw key");
            assert_eq!(key_kind(&spki), None, "a raw key is no certificate");
            from_cert
        };
        assert_eq!(
            kind(&rcgen::PKCS_ECDSA_P256_SHA256),
            Some(KeyKind::Ec("prime256v1"))
        );
        assert_eq!(
            kind(&rcgen::PKCS_ECDSA_P384_SHA384),
            Some(KeyKind::Ec("secp384r1"))
        );
        assert_eq!(kind(&rcgen::PKCS_ED25519), Some(KeyKind::Ed25519));
        assert_eq!(kind(&rcgen::PKCS_RSA_SHA256), Some(KeyKind::Rsa(2048)));
        assert_eq!(key_kind(b"not a certificate"), None);
    }

    #[test]
    fn der_values_and_a_certificates_issuer() {
        assert_eq!(der_value(&[0x30, 0x02, 1, 2]), Some(&[1u8, 2][..]));
        assert_eq!(der_value(&[0x30, 0x03, 1, 2]), None, "short");
        assert_eq!(der_value(&[0x30, 0x01, 1, 2]), None, "trailing bytes");
        let mut long = vec![0x30, 0x81, 0x80];
        long.extend([7u8; 0x80]);
        assert_eq!(der_value(&long).map(<[u8]>::len), Some(0x80));
        assert_eq!(der_value(&[0x30, 0x81, 0x00]), None, "non-minimal");
        assert_eq!(der_value(&[0x30, 0x80]), None, "indefinite");
        assert_eq!(der_value(&[]), None);
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["mx.example".into()]).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "Some Issuer");
        let der = p.self_signed(&key).unwrap().der().to_vec();
        let (issuer, spki) = issuer_and_spki(&der).unwrap();
        // Self-signed: the issuer is the subject; its value holds the CN.
        assert!(issuer.windows(11).any(|w| w == b"Some Issuer"));
        assert_eq!(issuer[0], 0x31, "a SET of the RDN, not the outer SEQUENCE");
        assert_eq!(spki, parse(&der).unwrap().spki);
        assert_eq!(issuer_and_spki(b"junk"), None);
    }

    #[test]
    fn a_real_certificate_gives_its_key_and_name() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["client.example".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Client \u{1}One");
        let cert = params.self_signed(&key).unwrap();
        let p = parse(cert.der()).unwrap();
        assert_eq!(p.cn, "Client ?One");
        use rcgen::PublicKeyData;
        assert_eq!(p.spki, key.subject_public_key_info());
        let mut longer = cert.der().to_vec();
        longer.push(0);
        assert_eq!(parse(&longer), None);
    }

    #[test]
    fn junk_and_trailing_bytes_are_not_certificates() {
        assert_eq!(parse(b""), None);
        assert_eq!(parse(b"\x30\x03\x02\x01\x01"), None);
        assert_eq!(printable("a\u{7}b\u{e9}"), "a?b?");
        assert_eq!(printable(&"x".repeat(1000)).len(), MAX_CN);
    }
}
