//! Client certificates at smtpd (smtpd_tls_ask_ccert): asked for, never
//! required, and never a reason to fail a handshake. The handshake still
//! proves the client holds the certificate's key; whether the certificate
//! chains to smtpd_tls_CAfile is decided after it, for
//! permit_tls_all_clientcerts. check_ccert_access and
//! permit_tls_clientcerts match fingerprints, trusted or not, as Postfix
//! does.
use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DistinguishedName, RootCertStore, SignatureScheme};

/// What the restrictions know about a client's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ccert {
    /// Of the whole certificate (smtpd_tls_fingerprint_digest), `AB:CD:..`.
    pub fingerprint: String,
    /// Of its SubjectPublicKeyInfo.
    pub pkey_fingerprint: String,
    /// The subject CommonName, printable ("" when none).
    pub cn: String,
    /// The issuer's CommonName, likewise.
    pub issuer_cn: String,
    /// It chains to a CA in smtpd_tls_CAfile.
    pub trusted: bool,
}

/// smtpd_tls_fingerprint_digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Digest {
    Sha256,
    Sha1,
}

impl Digest {
    pub fn from_name(name: &str) -> Option<Digest> {
        match name.to_ascii_lowercase().as_str() {
            "sha256" => Some(Digest::Sha256),
            "sha1" => Some(Digest::Sha1),
            _ => None,
        }
    }

    pub fn hex(self, data: &[u8]) -> String {
        let alg = match self {
            Digest::Sha256 => &aws_lc_rs::digest::SHA256,
            Digest::Sha1 => &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
        };
        postern_proto::ccert::fingerprint(aws_lc_rs::digest::digest(alg, data).as_ref())
    }
}

/// The CAs of smtpd_tls_CAfile, read before the jail.
pub fn load_cas(path: &str) -> Result<Option<RootCertStore>, String> {
    if path.is_empty() {
        return Ok(None);
    }
    let pem = crate::fsutil::read_path(path, crate::fsutil::SMALL_FILE_CAP)
        .map_err(|e| format!("smtpd_tls_CAfile: cannot read {path}: {e}"))?;
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pem) {
        let c = c.map_err(|e| format!("smtpd_tls_CAfile: {path}: bad certificate: {e}"))?;
        roots
            .add(c)
            .map_err(|e| format!("smtpd_tls_CAfile: {path}: unusable CA certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("smtpd_tls_CAfile: {path}: no CA certificate"));
    }
    Ok(Some(roots))
}

/// Asks for a client certificate and accepts any (or none); checks only
/// the handshake signature, which proves the client holds the key.
#[derive(Debug)]
pub struct Ask {
    provider: Arc<CryptoProvider>,
    /// Chains to smtpd_tls_CAfile, when one is set.
    trust: Option<Arc<dyn ClientCertVerifier>>,
    digest: Digest,
}

impl Ask {
    pub fn new(
        provider: Arc<CryptoProvider>,
        cas: Option<&RootCertStore>,
        digest: Digest,
    ) -> Result<Ask, String> {
        let trust = match cas {
            Some(roots) => Some(
                WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots.clone()),
                    provider.clone(),
                )
                .allow_unauthenticated()
                .build()
                .map_err(|e| format!("smtpd_tls_CAfile: {e}"))?,
            ),
            None => None,
        };
        Ok(Ask {
            provider,
            trust,
            digest,
        })
    }

    /// The certificate the client presented, if any, after the handshake.
    pub fn inspect(&self, chain: Option<&[CertificateDer<'_>]>) -> Option<Ccert> {
        let (end, intermediates) = chain?.split_first()?;
        let parsed = postern_proto::ccert::parse(end)?;
        let trusted = self.trust.as_ref().is_some_and(|t| {
            t.verify_client_cert(end, intermediates, UnixTime::now())
                .is_ok()
        });
        Some(Ccert {
            fingerprint: self.digest.hex(end),
            pkey_fingerprint: self.digest.hex(&parsed.spki),
            cn: parsed.cn,
            issuer_cn: parsed.issuer_cn,
            trusted,
        })
    }
}

impl ClientCertVerifier for Ask {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.trust.as_ref().map_or(&[], |t| t.root_hint_subjects())
    }

    fn verify_client_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crate::tls::check_signature(&self.provider, false, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crate::tls::check_signature(&self.provider, true, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
