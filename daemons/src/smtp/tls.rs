//! The smtp client's TLS policy: `smtp_tls_security_level`.
//!
//! - `none`: never STARTTLS;
//! - `may`: STARTTLS when offered, certificate not checked; a failed
//!   handshake falls back to plaintext on a new connection;
//! - `encrypt`: TLS required, certificate not checked;
//! - `verify`: TLS required, the certificate chains to a trusted CA and
//!   carries a name of `smtp_tls_verify_cert_match` (default `hostname`:
//!   the server host);
//! - `secure`: as verify, with `smtp_tls_secure_cert_match` (default
//!   `nexthop, dot-nexthop`: the next-hop domain or a name below it, which
//!   an MX lookup cannot spoof);
//! - `fingerprint`: TLS required, and the server's certificate (or its
//!   public key) has one of the fingerprints `smtp_tls_fingerprint_cert_match`
//!   or a policy entry's `match=` lists, by `smtp_tls_fingerprint_digest`;
//!   no CA is involved, and names are not checked.
//!
//! - `dane`, `dane-only`: TLSA records found through DNSSEC decide, per MX
//!   host (smtp/dane.rs); `dane` falls back to `may` where there are none.
//!
//! A match list (those parameters, or a policy entry's `match=`) holds
//! `hostname`, `nexthop`, `dot-nexthop`, literal names and `.domain` (any
//! name below it). webpki decides whether a certificate is valid for a
//! name; for the patterns below a domain, the certificate's own DNS names
//! only choose which names to ask it about.
//!
//! Trusted CAs come from `smtp_tls_CAfile`, else the system bundle, read
//! before the jail. A client certificate (`smtp_tls_cert_file`) is used
//! when the broker holds one; its key never leaves the broker. TLS
//! sessions are cached per server name and resumed.
use std::sync::{Arc, RwLock};

use rustls::client::ResolvesClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

pub use super::anchors::Anchors;
use super::pin::{Fingerprints, normalize_fingerprint};
pub use super::suites::Overrides;
use crate::tls::ccert::Digest;
use postern_config::tlsproto::Choice;

const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    None,
    May,
    Encrypt,
    Verify,
    Secure,
    Fingerprint,
    /// Per host: DANE where DNSSEC-validated TLSA records exist, else
    /// `may` (`encrypt` when they are all unusable).
    Dane,
    /// Per host: DANE or nothing.
    DaneOnly,
}

impl Level {
    pub fn parse(s: &str) -> Level {
        match s {
            "none" => Level::None,
            "encrypt" => Level::Encrypt,
            "verify" => Level::Verify,
            "secure" => Level::Secure,
            "fingerprint" => Level::Fingerprint,
            "dane" => Level::Dane,
            "dane-only" => Level::DaneOnly,
            _ => Level::May,
        }
    }

    /// Postfix's name of the level.
    pub fn name(self) -> &'static str {
        match self {
            Level::None => "none",
            Level::May => "may",
            Level::Encrypt => "encrypt",
            Level::Verify => "verify",
            Level::Secure => "secure",
            Level::Fingerprint => "fingerprint",
            Level::Dane => "dane",
            Level::DaneOnly => "dane-only",
        }
    }

    /// Decided per host from TLSA records (smtp/dane.rs).
    pub fn is_dane(self) -> bool {
        matches!(self, Level::Dane | Level::DaneOnly)
    }

    pub fn required(self) -> bool {
        self >= Level::Encrypt
    }

    /// The certificate must chain to a trusted CA (verify, secure).
    pub fn verifies(self) -> bool {
        matches!(self, Level::Verify | Level::Secure)
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
pub(super) struct Unverified(pub(super) Arc<rustls::crypto::CryptoProvider>);

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

/// A name a verified certificate may carry: exactly this one, or (for
/// `dot-nexthop` and `.domain`) any name below a domain.
#[derive(Debug, Clone)]
enum Wanted {
    Exact(ServerName<'static>),
    Below(String),
}

/// `match=` and the `*_cert_match` parameters: the chain must verify, and
/// name any one of `names`.
#[derive(Debug)]
struct AnyName {
    inner: Arc<dyn ServerCertVerifier>,
    names: Vec<Wanted>,
}

/// The certificate's own DNS names below `domain`, as names webpki can
/// check it against: `mx1.example.com`, and for a wildcard `*.example.com`
/// one name it covers. They only choose what to ask webpki; webpki alone
/// decides whether the certificate is valid for that name.
fn names_below(end_entity: &CertificateDer<'_>, domain: &str) -> Vec<ServerName<'static>> {
    let Ok(ee) = webpki::EndEntityCert::try_from(end_entity) else {
        return Vec::new();
    };
    let suffix = format!(".{domain}");
    ee.valid_dns_names()
        .filter_map(|n| {
            let n = n.trim_end_matches('.').to_ascii_lowercase();
            let probe = match n.strip_prefix("*.") {
                Some(rest) if rest == domain || rest.ends_with(&suffix) => {
                    format!("wildcard-match.{rest}")
                }
                Some(_) => return None,
                None if n.ends_with(&suffix) => n,
                None => return None,
            };
            ServerName::try_from(probe).ok()
        })
        .collect()
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
        for w in &self.names {
            let candidates = match w {
                Wanted::Exact(n) => vec![n.clone()],
                Wanted::Below(d) => names_below(end_entity, d),
            };
            for n in &candidates {
                match self
                    .inner
                    .verify_server_cert(end_entity, intermediates, n, ocsp, now)
                {
                    Ok(v) => return Ok(v),
                    Err(e) => last = e,
                }
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

/// The names a verified certificate may carry at `level` when no `match=`
/// says otherwise: `smtp_tls_verify_cert_match` (default `hostname`) for
/// verify, `smtp_tls_secure_cert_match` (default `nexthop, dot-nexthop`)
/// for secure.
#[derive(Debug, Clone)]
pub struct CertMatch {
    pub verify: Vec<String>,
    pub secure: Vec<String>,
    /// smtp_tls_fingerprint_cert_match, for the fingerprint level.
    pub fingerprints: Vec<String>,
    /// smtp_tls_fingerprint_digest.
    pub digest: crate::tls::ccert::Digest,
}

impl Default for CertMatch {
    fn default() -> CertMatch {
        CertMatch {
            verify: Vec::new(),
            secure: Vec::new(),
            fingerprints: Vec::new(),
            digest: crate::tls::ccert::Digest::Sha256,
        }
    }
}

impl CertMatch {
    /// `prefix` is smtp or lmtp.
    pub fn from_params(p: &postern_config::Params, prefix: &str) -> CertMatch {
        let list = |n: &str| {
            p.list(n)
                .unwrap_or_default()
                .into_iter()
                .map(|m| m.to_ascii_lowercase())
                .collect()
        };
        CertMatch {
            verify: list(&format!("{prefix}_tls_verify_cert_match")),
            secure: list(&format!("{prefix}_tls_secure_cert_match")),
            fingerprints: p
                .list(&format!("{prefix}_tls_fingerprint_cert_match"))
                .unwrap_or_default()
                .iter()
                .map(|f| normalize_fingerprint(f))
                .collect(),
            digest: crate::tls::ccert::Digest::from_name(
                p.str(&format!("{prefix}_tls_fingerprint_digest")),
            )
            .unwrap_or(crate::tls::ccert::Digest::Sha256),
        }
    }

    /// The level's names, or `matches` when a policy entry gave some.
    pub fn for_level(&self, level: Level, matches: &[String]) -> Vec<String> {
        if !matches.is_empty() {
            return matches.to_vec();
        }
        match level {
            Level::Verify => self.verify.clone(),
            Level::Secure => self.secure.clone(),
            Level::Fingerprint => self.fingerprints.clone(),
            _ => Vec::new(),
        }
    }
}

/// One destination's policy as `smtp_tls_policy_maps` writes it:
/// `level [match=name:name...] [protocols=...] [ciphers=...] [exclude=...]`;
/// for `fingerprint`, `match=fp|fp` (each fingerprint's colons are its
/// own), and several match= attributes add up.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Entry {
    pub level: Level,
    /// `match=`: the names a verified certificate may carry (`hostname`,
    /// `nexthop`, or literal names); empty: the level's own.
    pub matches: Vec<String>,
    /// `servername=`: the SNI (`hostname`, `nexthop` or a literal name);
    /// None: smtp_tls_servername.
    pub servername: Option<String>,
    /// `tafile=`: trust-anchor files that replace the CAs for this
    /// destination (several add up).
    pub tafiles: Vec<String>,
    /// `protocols=`, `ciphers=`, `exclude=`.
    pub overrides: Overrides,
}

/// Parses a policy table value. Levels and attributes Postern cannot
/// honour are errors (the delivery is deferred), never ignored into a
/// weaker policy; `protocols=`, `ciphers=` and `exclude=` are read as
/// smtp/suites.rs says.
pub fn parse_entry(v: &str) -> Result<Entry, String> {
    let mut words = v.split_whitespace();
    let level = match words.next() {
        Some("none") => Level::None,
        Some("may") => Level::May,
        Some("encrypt") => Level::Encrypt,
        Some("verify") => Level::Verify,
        Some("secure") => Level::Secure,
        Some("fingerprint") => Level::Fingerprint,
        Some("dane") => Level::Dane,
        Some("dane-only") => Level::DaneOnly,
        Some(other) => return Err(format!("unknown TLS security level \"{other}\"")),
        None => return Err("empty TLS policy".into()),
    };
    let mut matches = Vec::new();
    let mut servername = None;
    let mut tafiles = Vec::new();
    let mut overrides = Overrides::default();
    for w in words {
        let (name, value) = w
            .split_once('=')
            .ok_or_else(|| format!("\"{w}\": expected name=value"))?;
        match name {
            "match" if level == Level::Fingerprint => {
                for f in value.split('|').filter(|f| !f.is_empty()) {
                    let n = normalize_fingerprint(f);
                    if n.is_empty() || !n.bytes().all(|c| c.is_ascii_hexdigit()) {
                        return Err(format!("bad fingerprint \"{f}\" in match="));
                    }
                    matches.push(n);
                }
            }
            "match" if level.is_dane() => {
                return Err(
                    "match= does not apply to the dane levels (TLSA records decide)".into(),
                );
            }
            "match" => {
                matches = value
                    .split(':')
                    .filter(|m| !m.is_empty())
                    .map(|m| m.to_ascii_lowercase())
                    .collect();
            }
            "servername" if value.is_empty() || value.contains(['[', ']', '/', '@']) => {
                return Err(format!("bad servername \"{value}\""));
            }
            "servername" => servername = Some(value.to_ascii_lowercase()),
            "tafile" if value.starts_with('/') && !value.contains('$') => {
                tafiles.push(value.to_string());
            }
            "tafile" => return Err(format!("bad tafile \"{value}\": an absolute path")),
            other if overrides.take(other, value)? => {}
            other => {
                return Err(format!(
                    "TLS policy attribute \"{other}\" is not supported by Postern"
                ));
            }
        }
    }
    if level == Level::Fingerprint && matches.is_empty() {
        return Err("fingerprint without a match= fingerprint".into());
    }
    Ok(Entry {
        level,
        matches,
        servername,
        tafiles,
        overrides,
    })
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
    /// A DANE connection's TLSA base domain (the name sent as SNI) and
    /// whether its MX lookup was secure too ("Verified", else "Trusted").
    dane: Option<(ServerName<'static>, bool)>,
    /// A DANE connection's TLSA records as text (`3 1 1 ab12...`), for
    /// TLS-RPT.
    pub tlsa: Vec<String>,
    /// `smtp_tls_servername`: "" (no SNI), "hostname" or "nexthop".
    pub servername: String,
    connector: tokio_rustls::TlsConnector,
    /// `match=` names (verify, secure), resolved per connection.
    matches: Vec<String>,
    /// What a per-connection setup for `matches` is made of.
    base: Option<(Arc<dyn ServerCertVerifier>, Arc<ClientConfig>)>,
    /// The policy entry's `protocols=`, `ciphers=`, `exclude=`, for the
    /// per-host policies DANE makes from this one.
    pub overrides: Overrides,
    /// A DANE policy that asks for a raw public key: the same policy with
    /// certificates, for a server that has no raw key to send.
    pub x509: Option<Box<Policy>>,
}

impl Policy {
    pub fn new(
        level: Level,
        servername: &str,
        roots: Anchors,
        cert: Arc<ClientCert>,
        choice: &Choice,
    ) -> Result<Policy, String> {
        Policy::with_matches(
            level,
            servername,
            (roots, cert),
            Vec::new(),
            Digest::Sha256,
            choice,
        )
    }

    /// A policy whose verified certificate may name any of `matches`.
    /// For `fingerprint`, `matches` are the fingerprints, by `digest`.
    /// `choice`: the protocols and suites it may negotiate.
    pub fn with_matches(
        level: Level,
        servername: &str,
        (anchors, cert): (Anchors, Arc<ClientCert>),
        matches: Vec<String>,
        digest: Digest,
        choice: &Choice,
    ) -> Result<Policy, String> {
        let (provider, versions) = crate::tls::chosen(choice);
        let webpki = if level.verifies() {
            Some(anchors.verifier(provider.clone())?)
        } else {
            None
        };
        let verifier: Arc<dyn ServerCertVerifier> = match &webpki {
            Some(w) => w.clone(),
            None if level == Level::Fingerprint => {
                if matches.is_empty() {
                    return Err(
                        "smtp TLS: the fingerprint level needs smtp_tls_fingerprint_cert_match (or match= in smtp_tls_policy_maps)".into(),
                    );
                }
                Arc::new(Fingerprints {
                    signatures: Unverified(provider.clone()),
                    digest,
                    wanted: matches.clone(),
                })
            }
            None => Arc::new(Unverified(provider.clone())),
        };
        let mut c = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(|e| format!("smtp TLS: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(crate::tls::Noting(verifier)))
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
            dane: None,
            tlsa: Vec::new(),
            servername: servername.to_string(),
            connector: tokio_rustls::TlsConnector::from(c.clone()),
            // One exact name is what the shared connector checks already.
            base: webpki
                .filter(|_| {
                    matches.len() > 1
                        || matches
                            .first()
                            .is_some_and(|m| m == "dot-nexthop" || m.starts_with('.'))
                })
                .map(|w| (w, c)),
            matches,
            overrides: Overrides::default(),
            x509: None,
        })
    }

    /// One DANE connection's policy (smtp/dane.rs decided it): TLS is
    /// required, the certificate must match `records`, the SNI is the TLSA
    /// base domain (`names[0]`). No session is resumed: a resumed session
    /// would skip the check against today's TLSA records.
    ///
    /// With `raw`, when every record names a key and TLS 1.3 is allowed,
    /// the policy asks for an RFC 7250 raw public key. rustls cannot offer
    /// both kinds, as OpenSSL does: it requires the raw key, so a server
    /// without raw key support fails the handshake, and the policy carries
    /// its certificate twin ([`Policy::x509`]) for a second connection.
    pub fn dane(
        records: Vec<postern_ipc::resolver::Tlsa>,
        names: &[String],
        (verified, raw): (bool, bool),
        cert: Arc<ClientCert>,
        choice: &Choice,
    ) -> Result<Policy, String> {
        let x509 = Policy::dane_one(
            records.clone(),
            names,
            verified,
            cert.clone(),
            choice,
            false,
        )?;
        if !(raw && choice.versions.tls13 && super::dane::all_keys(&records)) {
            return Ok(x509);
        }
        let mut p = Policy::dane_one(records, names, verified, cert, choice, true)?;
        p.x509 = Some(Box::new(x509));
        Ok(p)
    }

    fn dane_one(
        records: Vec<postern_ipc::resolver::Tlsa>,
        names: &[String],
        verified: bool,
        cert: Arc<ClientCert>,
        choice: &Choice,
        raw: bool,
    ) -> Result<Policy, String> {
        let base = names
            .first()
            .and_then(|n| ServerName::try_from(bare(n).to_string()).ok())
            .ok_or_else(|| "no TLSA base domain".to_string())?;
        let tlsa = records
            .iter()
            .map(|t| {
                let hex: String = t.data.iter().map(|b| format!("{b:02x}")).collect();
                format!("{} {} {} {hex}", t.usage, t.selector, t.matching)
            })
            .collect();
        let verifier = Arc::new(super::dane::Verifier::new(records, names, raw));
        let (provider, versions) = crate::tls::chosen(choice);
        // rustls does raw public keys in TLS 1.3 only.
        let versions = if raw {
            &[&rustls::version::TLS13][..]
        } else {
            versions
        };
        let mut c = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(|e| format!("smtp TLS: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(crate::tls::Noting(verifier)))
            .with_client_cert_resolver(cert);
        c.resumption = rustls::client::Resumption::disabled();
        c.enable_sni = true;
        Ok(Policy {
            level: Level::Dane,
            dane: Some((base, verified)),
            tlsa,
            servername: String::new(),
            connector: tokio_rustls::TlsConnector::from(Arc::new(c)),
            matches: Vec::new(),
            base: None,
            overrides: Overrides::default(),
            x509: None,
        })
    }

    /// The connector for one connection: the shared one, or with `match=`
    /// names, one whose verifier accepts any of them (sessions are still
    /// resumed through the shared cache).
    pub fn connector_for(&self, host: &str, nexthop: &str) -> tokio_rustls::TlsConnector {
        let Some((webpki, base)) = &self.base else {
            return self.connector.clone();
        };
        let names = self.wanted(host, nexthop);
        let mut c = (**base).clone();
        c.dangerous()
            .set_certificate_verifier(Arc::new(crate::tls::Noting(Arc::new(AnyName {
                inner: webpki.clone(),
                names,
            }))));
        tokio_rustls::TlsConnector::from(Arc::new(c))
    }

    /// The match list for one connection: `hostname` and `nexthop` become
    /// those names, `dot-nexthop` and `.domain` any name below a domain.
    fn wanted(&self, host: &str, nexthop: &str) -> Vec<Wanted> {
        self.matches
            .iter()
            .filter_map(|m| match m.as_str() {
                "hostname" => ServerName::try_from(bare(host).to_string())
                    .ok()
                    .map(Wanted::Exact),
                "nexthop" => ServerName::try_from(bare(nexthop).to_string())
                    .ok()
                    .map(Wanted::Exact),
                "dot-nexthop" => Some(Wanted::Below(bare(nexthop).to_ascii_lowercase())),
                below if below.starts_with('.') => {
                    Some(Wanted::Below(bare(&below[1..]).to_string()))
                }
                literal => ServerName::try_from(bare(literal).to_string())
                    .ok()
                    .map(Wanted::Exact),
            })
            .collect()
    }

    /// The name to verify (and send as SNI): the first exact name of the
    /// match list, else the server's host name, or for `secure` (and
    /// `smtp_tls_servername = nexthop`) the next hop, or a literal
    /// `smtp_tls_servername` (or `servername=`) as it is.
    pub fn name(&self, host: &str, nexthop: &str) -> Option<ServerName<'static>> {
        if let Some((base, _)) = &self.dane {
            return Some(base.clone());
        }
        let exact = self
            .matches
            .iter()
            .map(String::as_str)
            .find(|m| *m != "dot-nexthop" && !m.starts_with('.'));
        let n = match exact {
            Some("hostname") => host,
            Some("nexthop") => nexthop,
            Some(literal) => literal,
            None if self.level == Level::Secure || self.servername == "nexthop" => nexthop,
            None if !matches!(self.servername.as_str(), "" | "hostname") => &self.servername,
            None => host,
        };
        ServerName::try_from(bare(n).to_string()).ok()
    }

    /// The server's certificate is matched: verify, secure, fingerprint,
    /// or a DANE connection (REQUIRETLS's "enforce" wants one of these).
    pub fn authenticates(&self) -> bool {
        self.dane.is_some() || self.level.verifies() || self.level == Level::Fingerprint
    }

    /// A DANE connection's `tls=` word: `dane`, or `dane:halfdane` when
    /// the MX lookup was insecure (Postfix's words).
    pub fn dane_word(&self) -> Option<&'static str> {
        self.dane
            .as_ref()
            .map(|(_, verified)| if *verified { "dane" } else { "dane:halfdane" })
    }

    /// How Postfix words the established line.
    pub fn trust_word(&self) -> &'static str {
        if let Some((_, verified)) = self.dane {
            return if verified { "Verified" } else { "Trusted" };
        }
        if self.level.verifies() || self.level == Level::Fingerprint {
            "Verified"
        } else {
            "Untrusted"
        }
    }
}

#[cfg(test)]
#[path = "tls_tests.rs"]
pub(super) mod tests;
