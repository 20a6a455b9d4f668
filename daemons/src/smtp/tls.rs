//! The smtp client's TLS policy: `smtp_tls_security_level`.
//!
//! - `none`: never STARTTLS;
//! - `may`: STARTTLS when offered, certificate not checked; a failed
//!   handshake falls back to plaintext on a new connection;
//! - `encrypt`: TLS required, certificate not checked;
//! - `verify`: TLS required, the certificate chains to a trusted CA and
//!   names the server host (`smtp_tls_verify_cert_match = hostname`);
//! - `secure`: as verify, but the name must be the next-hop domain
//!   (`smtp_tls_secure_cert_match = nexthop`), which an MX lookup cannot
//!   spoof.
//!
//! Trusted CAs come from `smtp_tls_CAfile`, else the system bundle, read
//! before the jail. A client certificate (`smtp_tls_cert_file`) is used
//! when the broker holds one; its key never leaves the broker. TLS
//! sessions are cached per server name and resumed.
use std::sync::{Arc, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    None,
    May,
    Encrypt,
    Verify,
    Secure,
}

impl Level {
    pub fn parse(s: &str) -> Level {
        match s {
            "none" => Level::None,
            "encrypt" => Level::Encrypt,
            "verify" => Level::Verify,
            "secure" => Level::Secure,
            _ => Level::May,
        }
    }

    pub fn required(self) -> bool {
        self >= Level::Encrypt
    }

    pub fn verifies(self) -> bool {
        self >= Level::Verify
    }
}

/// Reads the trusted CAs (before the jail). A missing or broken CA file is
/// an error only when a level needs it.
pub fn load_roots(ca_file: &str, level: Level) -> Result<RootCertStore, String> {
    let path = if ca_file.is_empty() {
        SYSTEM_BUNDLE
    } else {
        ca_file
    };
    let mut roots = RootCertStore::empty();
    let pem = match crate::fsutil::read_path(path, crate::fsutil::SMALL_FILE_CAP) {
        Ok(p) => p,
        Err(e) if level.verifies() || !ca_file.is_empty() => {
            return Err(format!("smtp_tls_CAfile: cannot read {path}: {e}"));
        }
        Err(_) => return Ok(roots),
    };
    for c in CertificateDer::pem_slice_iter(&pem) {
        let c = c.map_err(|e| format!("{path}: bad certificate: {e}"))?;
        // A bundle may hold certificates webpki cannot use; skip those.
        let _ = roots.add(c);
    }
    if roots.is_empty() && level.verifies() {
        return Err(format!("{path}: no usable CA certificate"));
    }
    Ok(roots)
}

/// Accepts any certificate (for `may` and `encrypt`: encryption without
/// authentication, as Postfix does), but still checks that the server holds
/// the key of the certificate it sent.
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crate::tls::check_signature(&self.0, false, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crate::tls::check_signature(&self.0, true, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The client certificate the broker holds, once it told us.
#[derive(Debug, Default)]
pub struct ClientCert(pub RwLock<Option<Arc<CertifiedKey>>>);

impl ResolvesClientCert for ClientCert {
    fn resolve(&self, _: &[&[u8]], schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        let ck = self.0.read().ok()?.clone()?;
        // Offer it only if its key can make one of the server's schemes.
        ck.key.choose_scheme(schemes).is_some().then_some(ck)
    }

    fn has_certs(&self) -> bool {
        self.0.read().is_ok_and(|c| c.is_some())
    }
}

pub struct Policy {
    pub level: Level,
    /// `smtp_tls_servername`: "" (no SNI), "hostname" or "nexthop".
    pub servername: String,
    connector: tokio_rustls::TlsConnector,
}

impl Policy {
    pub fn new(
        level: Level,
        servername: &str,
        roots: RootCertStore,
        cert: Arc<ClientCert>,
    ) -> Result<Policy, String> {
        let provider = crate::tls::provider();
        let verifier: Arc<dyn ServerCertVerifier> = if level.verifies() {
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| format!("smtp TLS: {e}"))?
        } else {
            Arc::new(Unverified(provider.clone()))
        };
        let mut c = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(crate::tls::VERSIONS)
            .map_err(|e| format!("smtp TLS: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(cert);
        c.enable_sni = !servername.is_empty();
        Ok(Policy {
            level,
            servername: servername.to_string(),
            connector: tokio_rustls::TlsConnector::from(Arc::new(c)),
        })
    }

    pub fn connector(&self) -> &tokio_rustls::TlsConnector {
        &self.connector
    }

    /// The name to verify (and send as SNI): the server's host name, or
    /// for `secure` (and `smtp_tls_servername = nexthop`) the next hop.
    pub fn name(&self, host: &str, nexthop: &str) -> Option<ServerName<'static>> {
        let n = if self.level == Level::Secure || self.servername == "nexthop" {
            nexthop
        } else {
            host
        };
        let n = n
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches('.');
        ServerName::try_from(n.to_string()).ok()
    }

    /// How Postfix words the established line.
    pub fn trust_word(&self) -> &'static str {
        if self.level.verifies() {
            "Verified"
        } else {
            "Untrusted"
        }
    }
}
