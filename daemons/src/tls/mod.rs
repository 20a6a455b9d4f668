//! TLS, with every private key in the broker.
//!
//! - [`keys`]: the broker side. It reads certificates and keys before its
//!   jail, signs on request, and holds the session-ticket keys.
//! - [`remote`]: the smtpd/smtp side. A rustls signing key and ticketer that
//!   forward each operation to the broker, and the task that keeps the
//!   channel to it.
//! - [`ccert`]: client certificates at smtpd (asked for, fingerprinted,
//!   checked against smtpd_tls_CAfile).
//! - [`selfsigned`]: the certificate a fresh install uses until the admin
//!   configures one.
pub mod ccert;
pub mod remote;
pub mod selfsigned;
pub mod stream;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::{CommonState, SupportedProtocolVersion};

/// TLS 1.3 and 1.2 only.
pub static VERSIONS: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

static ONLY_TLS12: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];
static ONLY_TLS13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// The one crypto provider (aws-lc-rs: X25519MLKEM768 first).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The provider and versions a protocol/cipher choice leaves
/// (`*_tls_protocols`, `*_tls_exclude_ciphers`, a policy entry's
/// `protocols=` and `exclude=`; postern_config::tlsproto read them).
pub fn chosen(
    c: &postern_config::tlsproto::Choice,
) -> (
    Arc<CryptoProvider>,
    &'static [&'static SupportedProtocolVersion],
) {
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    p.cipher_suites
        .retain(|s| openssl_name(s.suite()).is_none_or(|n| !c.exclude.contains(n)));
    let versions: &'static [&'static SupportedProtocolVersion] =
        match (c.versions.tls12, c.versions.tls13) {
            (true, false) => ONLY_TLS12,
            (false, true) => ONLY_TLS13,
            _ => VERSIONS,
        };
    (Arc::new(p), versions)
}

/// A suite's OpenSSL name, as exclusion lists spell it (TLS 1.3 suites by
/// their IANA names).
fn openssl_name(s: rustls::CipherSuite) -> Option<&'static str> {
    use rustls::CipherSuite as C;
    Some(match s {
        C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => "ECDHE-ECDSA-AES256-GCM-SHA384",
        C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => "ECDHE-ECDSA-AES128-GCM-SHA256",
        C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-ECDSA-CHACHA20-POLY1305",
        C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => "ECDHE-RSA-AES256-GCM-SHA384",
        C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => "ECDHE-RSA-AES128-GCM-SHA256",
        C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-RSA-CHACHA20-POLY1305",
        C::TLS13_AES_256_GCM_SHA384 => "TLS_AES_256_GCM_SHA384",
        C::TLS13_AES_128_GCM_SHA256 => "TLS_AES_128_GCM_SHA256",
        C::TLS13_CHACHA20_POLY1305_SHA256 => "TLS_CHACHA20_POLY1305_SHA256",
        _ => return None,
    })
}

/// Checks a handshake signature with the provider's algorithms. A
/// verifier that accepts any certificate must still do this: it proves the
/// peer holds the certificate's key.
pub fn check_signature(
    p: &CryptoProvider,
    tls13: bool,
    message: &[u8],
    cert: &rustls::pki_types::CertificateDer<'_>,
    dss: &rustls::DigitallySignedStruct,
) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
    let algs = &p.signature_verification_algorithms;
    if tls13 {
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    } else {
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }
}

#[cfg(test)]
mod choice_tests {
    use postern_config::tlsproto::{Choice, SUITES};

    /// Every suite of the provider has the OpenSSL name the exclusion
    /// lists use, and each of those names is a suite of the provider.
    #[test]
    fn the_provider_has_exactly_the_named_suites() {
        let p = rustls::crypto::aws_lc_rs::default_provider();
        let mut names: Vec<&str> = p
            .cipher_suites
            .iter()
            .map(|s| super::openssl_name(s.suite()).expect("a named suite"))
            .collect();
        names.sort();
        let mut want = SUITES.to_vec();
        want.sort();
        assert_eq!(names, want);
    }

    #[test]
    fn signature_words_as_postfix_logs_them() {
        use postern_proto::ccert::KeyKind;
        use rustls::SignatureScheme as S;
        for (kind, scheme, raw, want) in [
            (
                KeyKind::Ec("prime256v1"),
                S::ECDSA_NISTP256_SHA256,
                false,
                "server-signature ECDSA (prime256v1) server-digest SHA256",
            ),
            (
                KeyKind::Ec("prime256v1"),
                S::ECDSA_NISTP256_SHA256,
                true,
                "server-signature ECDSA (prime256v1 raw public key) server-digest SHA256",
            ),
            (
                KeyKind::Rsa(2048),
                S::RSA_PSS_SHA256,
                false,
                "server-signature RSA-PSS (2048 bits) server-digest SHA256",
            ),
            (
                KeyKind::Rsa(2048),
                S::RSA_PSS_SHA384,
                true,
                "server-signature RSA-PSS (2048 bit raw public key) server-digest SHA384",
            ),
            (
                KeyKind::Ed25519,
                S::ED25519,
                false,
                "server-signature ED25519",
            ),
            (
                KeyKind::Ed25519,
                S::ED25519,
                true,
                "server-signature ED25519 (raw public key)",
            ),
        ] {
            assert_eq!(super::signature_text(kind, scheme, raw), want);
        }
    }

    #[test]
    fn a_choice_shapes_the_provider() {
        let c = Choice::new("!TLSv1.3", "high", &["CHACHA20 aECDSA"]).unwrap();
        let (p, v) = super::chosen(&c);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].version, rustls::ProtocolVersion::TLSv1_2);
        let left: Vec<String> = p
            .cipher_suites
            .iter()
            .filter(|s| s.version().version == rustls::ProtocolVersion::TLSv1_2)
            .map(|s| format!("{:?}", s.suite()))
            .collect();
        assert_eq!(
            left,
            [
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
            ]
        );
        let (p, v) = super::chosen(&Choice::all());
        assert_eq!((p.cipher_suites.len(), v.len()), (9, 2));
    }
}

/// `TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)
/// key-exchange X25519MLKEM768`, the way Postfix 3.11 logs a session and
/// records it in the Received header.
pub fn describe(c: &CommonState) -> String {
    let (version, suite, bits) = parts(c);
    let mut d = format!("{version} with cipher {suite} ({bits}/{bits} bits)");
    if let Some(g) = c.negotiated_key_exchange_group() {
        d.push_str(&format!(" key-exchange {}", group_name(g.name())));
    }
    d
}

/// A key exchange group as Postfix (OpenSSL) names it.
fn group_name(g: rustls::NamedGroup) -> String {
    match g {
        rustls::NamedGroup::secp256r1 => "prime256v1".into(),
        other => format!("{other:?}"),
    }
}

/// The protocol version, the cipher suite's IANA name and its key size in
/// bits (the policy attributes `encryption_*`).
pub fn parts(c: &CommonState) -> (&'static str, String, u32) {
    let version = version(c).unwrap_or("TLS");
    let suite = c
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()))
        .unwrap_or_default();
    // rustls spells TLS 1.3 suites TLS13_*; their IANA names are TLS_*.
    let suite = suite
        .strip_prefix("TLS13_")
        .map_or(suite.clone(), |s| format!("TLS_{s}"));
    let bits = if suite.contains("AES_128") { 128 } else { 256 };
    (version, suite, bits)
}

fn version(c: &CommonState) -> Option<&'static str> {
    match c.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => Some("TLSv1.3"),
        Some(rustls::ProtocolVersion::TLSv1_2) => Some("TLSv1.2"),
        _ => None,
    }
}

/// The protocol version and key exchange group of an established session,
/// as the TLS counters label them (`TLSv1.3`, `X25519MLKEM768`).
pub fn labels(c: &CommonState) -> (&'static str, String) {
    let version = version(c).unwrap_or("other");
    let group = c
        .negotiated_key_exchange_group()
        .map_or("none".to_string(), |g| format!("{:?}", g.name()));
    (version, group)
}

/// Path of the certificate generated for a fresh install.
pub fn selfsigned_path(data_directory: &str) -> std::path::PathBuf {
    std::path::Path::new(data_directory)
        .join("tls")
        .join("selfsigned.pem")
}

/// Where smtpd's key and chain come from: `smtpd_tls_chain_files`, else
/// `smtpd_tls_cert_file` with `smtpd_tls_key_file`, else the generated
/// self-signed file (None: TLS is off for smtpd).
pub fn server_key_files(p: &postern_config::Params) -> Option<(Vec<String>, Vec<String>)> {
    let chain = p.list("smtpd_tls_chain_files").unwrap_or_default();
    if !chain.is_empty() {
        return Some((chain.clone(), chain));
    }
    let cert = p.str("smtpd_tls_cert_file");
    if !cert.is_empty() {
        let key = p.str("smtpd_tls_key_file");
        let key = if key.is_empty() { cert } else { key };
        return Some((vec![cert.to_string()], vec![key.to_string()]));
    }
    if wants_server_tls(p) {
        let f = selfsigned_path(p.str("data_directory"))
            .display()
            .to_string();
        return Some((vec![f.clone()], vec![f]));
    }
    None
}

/// Does any smtpd want TLS? (a security level other than none, or a
/// wrapper-mode listener; the master sees listener overrides too).
pub fn wants_server_tls(p: &postern_config::Params) -> bool {
    p.str("smtpd_tls_security_level") != "none" || p.bool("smtpd_tls_wrappermode").unwrap_or(false)
}

/// The signature scheme each server certificate last signed a full
/// handshake with (keyed by the certificate's SHA-256), which rustls does
/// not report after the handshake: for the `server-signature` and
/// `server-digest` words of the smtp client's TLS line. A few hundred
/// entries at most.
static SCHEMES: std::sync::Mutex<Vec<([u8; 32], rustls::SignatureScheme)>> =
    std::sync::Mutex::new(Vec::new());
const MAX_SCHEMES: usize = 256;

fn cert_key(cert: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert);
    let mut k = [0u8; 32];
    k.copy_from_slice(d.as_ref());
    k
}

fn note_scheme(cert: &[u8], scheme: rustls::SignatureScheme) {
    let k = cert_key(cert);
    if let Ok(mut v) = SCHEMES.lock() {
        v.retain(|(c, _)| *c != k);
        if v.len() >= MAX_SCHEMES {
            v.remove(0);
        }
        v.push((k, scheme));
    }
}

/// `server-signature ECDSA (prime256v1) server-digest SHA256`, as Postfix
/// 3.11 words the server's handshake signature, for a full handshake
/// whose leaf certificate (or RFC 7250 raw public key: `ECDSA (prime256v1
/// raw public key)`) is `cert`; None when it is not known.
pub fn signature_words(cert: &[u8]) -> Option<String> {
    let (kind, raw) = match postern_proto::ccert::key_kind(cert) {
        Some(k) => (k, false),
        None => (postern_proto::ccert::spki_key_kind(cert)?, true),
    };
    let k = cert_key(cert);
    let scheme = SCHEMES
        .lock()
        .ok()?
        .iter()
        .rev()
        .find(|(c, _)| *c == k)
        .map(|(_, s)| *s)?;
    Some(signature_text(kind, scheme, raw))
}

/// The words for a handshake signature made with `scheme` by a key of
/// `key`'s kind; `raw`: the key went as a raw public key, not in a
/// certificate (Postfix's wording).
pub fn signature_text(
    key: postern_proto::ccert::KeyKind,
    scheme: rustls::SignatureScheme,
    raw: bool,
) -> String {
    use postern_proto::ccert::KeyKind;
    use rustls::SignatureScheme as S;
    let digest = match scheme {
        S::ECDSA_NISTP256_SHA256 | S::RSA_PSS_SHA256 | S::RSA_PKCS1_SHA256 => Some("SHA256"),
        S::ECDSA_NISTP384_SHA384 | S::RSA_PSS_SHA384 | S::RSA_PKCS1_SHA384 => Some("SHA384"),
        S::ECDSA_NISTP521_SHA512 | S::RSA_PSS_SHA512 | S::RSA_PKCS1_SHA512 => Some("SHA512"),
        _ => None,
    };
    let bits = |b: usize| {
        if raw {
            format!("{b} bit raw public key")
        } else {
            format!("{b} bits")
        }
    };
    let rpk = if raw { " raw public key" } else { "" };
    let alg = match (key, scheme) {
        (KeyKind::Rsa(b), S::RSA_PSS_SHA256 | S::RSA_PSS_SHA384 | S::RSA_PSS_SHA512) => {
            format!("RSA-PSS ({})", bits(b))
        }
        (KeyKind::Rsa(b), _) => format!("RSA ({})", bits(b)),
        (KeyKind::Ec(curve), _) => format!("ECDSA ({curve}{rpk})"),
        (KeyKind::Ed25519, _) if raw => "ED25519 (raw public key)".into(),
        (KeyKind::Ed448, _) if raw => "ED448 (raw public key)".into(),
        (KeyKind::Ed25519, _) => "ED25519".into(),
        (KeyKind::Ed448, _) => "ED448".into(),
    };
    match digest {
        Some(d) => format!("server-signature {alg} server-digest {d}"),
        None => format!("server-signature {alg}"),
    }
}

/// A server certificate verifier that notes the scheme of each handshake
/// signature it accepts (see [`signature_words`]); the checks are the
/// inner verifier's.
#[derive(Debug)]
pub struct Noting(pub Arc<dyn rustls::client::danger::ServerCertVerifier>);

impl rustls::client::danger::ServerCertVerifier for Noting {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        name: &rustls::pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.0
            .verify_server_cert(end_entity, intermediates, name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let ok = self.0.verify_tls12_signature(message, cert, dss)?;
        note_scheme(cert, dss.scheme);
        Ok(ok)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let ok = self.0.verify_tls13_signature(message, cert, dss)?;
        note_scheme(cert, dss.scheme);
        Ok(ok)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.0.requires_raw_public_keys()
    }
}
