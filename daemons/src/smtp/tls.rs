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

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
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

/// A host or next hop without brackets, port or trailing dot.
fn bare(n: &str) -> &str {
    let n = n
        .strip_prefix('[')
        .map_or(n, |r| r.split(']').next().unwrap_or(r));
    n.trim_end_matches('.')
}

/// `match=`: the chain must verify, and name any one of `names`.
#[derive(Debug)]
struct AnyName {
    inner: Arc<WebPkiServerVerifier>,
    names: Vec<ServerName<'static>>,
}

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut last = rustls::Error::General("no name to match".into());
        for n in &self.names {
            match self
                .inner
                .verify_server_cert(end_entity, intermediates, n, ocsp, now)
            {
                Ok(v) => return Ok(v),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
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

/// One destination's policy as `smtp_tls_policy_maps` writes it:
/// `level [match=name:name...] [protocols=...] [ciphers=...] [exclude=...]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Entry {
    pub level: Level,
    /// `match=`: the names a verified certificate may carry (`hostname`,
    /// `nexthop`, or literal names); empty: the level's own.
    pub matches: Vec<String>,
}

/// Parses a policy table value. Levels and attributes Postern cannot
/// honour are errors (the delivery is deferred), never ignored into a
/// weaker policy; `protocols=`, `ciphers=` and `exclude=` are accepted as
/// met, since Postern speaks only TLS 1.2 and 1.3 with strong suites.
pub fn parse_entry(v: &str) -> Result<Entry, String> {
    let mut words = v.split_whitespace();
    let level = match words.next() {
        Some("none") => Level::None,
        Some("may") => Level::May,
        Some("encrypt") => Level::Encrypt,
        Some("verify") => Level::Verify,
        Some("secure") => Level::Secure,
        Some(l @ ("dane" | "dane-only" | "fingerprint")) => {
            return Err(format!(
                "TLS security level \"{l}\" is not supported by Postern yet (issue 18)"
            ));
        }
        Some(other) => return Err(format!("unknown TLS security level \"{other}\"")),
        None => return Err("empty TLS policy".into()),
    };
    let mut matches = Vec::new();
    for w in words {
        let (name, value) = w
            .split_once('=')
            .ok_or_else(|| format!("\"{w}\": expected name=value"))?;
        match name {
            "match" => {
                matches = value
                    .split(':')
                    .filter(|m| !m.is_empty())
                    .map(|m| m.to_ascii_lowercase())
                    .collect();
                if matches
                    .iter()
                    .any(|m| m == "dot-nexthop" || m.starts_with('.'))
                {
                    return Err(format!(
                        "match={value}: subdomain patterns are not supported by Postern yet"
                    ));
                }
            }
            "protocols" | "ciphers" | "exclude" => {}
            other => {
                return Err(format!(
                    "TLS policy attribute \"{other}\" is not supported by Postern"
                ));
            }
        }
    }
    Ok(Entry { level, matches })
}

/// The smtp_tls_policy_maps keys of a next hop: as written (`[host]:port`
/// keeps its brackets and port), then, for a bare domain, its parents as
/// `.parent`, as transport(5) does.
pub fn policy_keys(nexthop: &str) -> Vec<String> {
    let mut keys = vec![nexthop.to_string()];
    if !nexthop.starts_with('[') && !nexthop.contains(':') {
        let mut rest = nexthop;
        while let Some((_, parent)) = rest.split_once('.') {
            keys.push(format!(".{parent}"));
            rest = parent;
        }
    }
    keys
}

pub struct Policy {
    pub level: Level,
    /// `smtp_tls_servername`: "" (no SNI), "hostname" or "nexthop".
    pub servername: String,
    connector: tokio_rustls::TlsConnector,
    /// `match=` names (verify, secure), resolved per connection.
    matches: Vec<String>,
    /// What a per-connection setup for `matches` is made of.
    base: Option<(Arc<rustls::client::WebPkiServerVerifier>, Arc<ClientConfig>)>,
}

impl Policy {
    pub fn new(
        level: Level,
        servername: &str,
        roots: RootCertStore,
        cert: Arc<ClientCert>,
    ) -> Result<Policy, String> {
        Policy::with_matches(level, servername, roots, cert, Vec::new())
    }

    /// A policy whose verified certificate may name any of `matches`.
    pub fn with_matches(
        level: Level,
        servername: &str,
        roots: RootCertStore,
        cert: Arc<ClientCert>,
        matches: Vec<String>,
    ) -> Result<Policy, String> {
        let provider = crate::tls::provider();
        let webpki = if level.verifies() {
            Some(
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| format!("smtp TLS: {e}"))?,
            )
        } else {
            None
        };
        let verifier: Arc<dyn ServerCertVerifier> = match &webpki {
            Some(w) => w.clone(),
            None => Arc::new(Unverified(provider.clone())),
        };
        let mut c = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(crate::tls::VERSIONS)
            .map_err(|e| format!("smtp TLS: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(cert);
        c.enable_sni = !servername.is_empty();
        let c = Arc::new(c);
        let matches = if level.verifies() {
            matches
        } else {
            Vec::new()
        };
        Ok(Policy {
            level,
            servername: servername.to_string(),
            connector: tokio_rustls::TlsConnector::from(c.clone()),
            base: webpki.filter(|_| !matches.is_empty()).map(|w| (w, c)),
            matches,
        })
    }

    /// The connector for one connection: the shared one, or with `match=`
    /// names, one whose verifier accepts any of them (sessions are still
    /// resumed through the shared cache).
    pub fn connector_for(&self, host: &str, nexthop: &str) -> tokio_rustls::TlsConnector {
        let Some((webpki, base)) = &self.base else {
            return self.connector.clone();
        };
        let names: Vec<ServerName<'static>> = self
            .matches
            .iter()
            .map(|m| match m.as_str() {
                "hostname" => host,
                "nexthop" => nexthop,
                literal => literal,
            })
            .filter_map(|n| ServerName::try_from(bare(n).to_string()).ok())
            .collect();
        let mut c = (**base).clone();
        c.dangerous().set_certificate_verifier(Arc::new(AnyName {
            inner: webpki.clone(),
            names,
        }));
        tokio_rustls::TlsConnector::from(Arc::new(c))
    }

    pub fn connector(&self) -> &tokio_rustls::TlsConnector {
        &self.connector
    }

    /// The name to verify (and send as SNI): the server's host name, or
    /// for `secure` (and `smtp_tls_servername = nexthop`) the next hop.
    pub fn name(&self, host: &str, nexthop: &str) -> Option<ServerName<'static>> {
        let n = match self.matches.first().map(String::as_str) {
            Some("hostname") => host,
            Some("nexthop") => nexthop,
            Some(literal) => literal,
            None if self.level == Level::Secure || self.servername == "nexthop" => nexthop,
            None => host,
        };
        ServerName::try_from(bare(n).to_string()).ok()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_table_values_and_keys() {
        assert_eq!(
            parse_entry("verify match=hostname:mx.example.com protocols=!SSLv2,!SSLv3").unwrap(),
            Entry {
                level: Level::Verify,
                matches: vec!["hostname".into(), "mx.example.com".into()],
            }
        );
        assert_eq!(parse_entry("encrypt").unwrap().level, Level::Encrypt);
        assert_eq!(parse_entry("none").unwrap().level, Level::None);
        for (bad, why) in [
            ("dane", "not supported by Postern yet"),
            ("dane-only", "not supported by Postern yet"),
            ("fingerprint match=AB:CD", "not supported by Postern yet"),
            ("secure match=nexthop:dot-nexthop", "subdomain patterns"),
            ("verify tafile=/etc/ta.pem", "\"tafile\" is not supported"),
            ("verify match", "expected name=value"),
            ("strict", "unknown TLS security level"),
            ("", "empty"),
        ] {
            let e = parse_entry(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert_eq!(
            policy_keys("mail.sub.example.com"),
            [
                "mail.sub.example.com",
                ".sub.example.com",
                ".example.com",
                ".com"
            ]
        );
        assert_eq!(policy_keys("[192.0.2.1]:587"), ["[192.0.2.1]:587"]);
        assert_eq!(policy_keys("[relay.example.com]"), ["[relay.example.com]"]);
    }
}
