//! DANE for SMTP (RFC 7672): the `dane` and `dane-only` TLS levels.
//!
//! Postern trusts the AD bit of a validating name server, as Postfix does
//! (`smtp_dns_support_level = dnssec`; SECURITY.md says why). For each MX
//! host this module decides, from DNSSEC-validated MX, address, CNAME and
//! TLSA answers, what TLS the connection gets ([`host_tls`]), and checks the
//! server's certificate chain against the TLSA records ([`Verifier`]).
//!
//! Downgrades it refuses:
//! - a TLSA lookup that fails (SERVFAIL: what a validating server answers
//!   for a bogus record) defers that host; it never falls back to `may`;
//! - an MX host whose addresses are insecure only because its secure CNAME
//!   points into an unsigned zone still has its TLSA records looked up, at
//!   the MX host's own name (RFC 7672 2.2.2);
//! - an insecure MX RRset leading to a host with secure TLSA records uses
//!   them (smtp_tls_dane_insecure_mx_policy = dane, Postern's default): the
//!   connection is then logged "Trusted", not "Verified";
//! - TLSA records that are all unusable mean mandatory TLS (`encrypt`).
use std::sync::Arc;

use postern_ipc::resolver::{Reply, Request, Tlsa};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::dest::Dns;
use super::tls::{Level, Unverified};

/// smtp_tls_dane_insecure_mx_policy: what TLSA records of an MX host found
/// through an insecure MX lookup are good for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsecureMx {
    /// Ignored: opportunistic TLS.
    May,
    /// They make TLS mandatory, without authentication.
    Encrypt,
    /// Used as with a secure MX lookup; logged as "Trusted".
    Dane,
}

impl InsecureMx {
    pub fn parse(s: &str) -> InsecureMx {
        match s.trim() {
            "may" => InsecureMx::May,
            "encrypt" => InsecureMx::Encrypt,
            _ => InsecureMx::Dane,
        }
    }
}

/// An MX host (or a next hop's host) as DNSSEC-aware lookups saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecureHost {
    /// The name asked for (the MX host name).
    pub qname: String,
    /// The name the addresses belong to, after CNAMEs.
    pub rname: String,
    /// Every address answer was authentic.
    pub secure: bool,
}

/// What one host's connection gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostTls {
    /// An ordinary level: `may` (no usable DANE), or `encrypt` (TLSA
    /// records that are all unusable, or found through an insecure MX
    /// under smtp_tls_dane_insecure_mx_policy = encrypt).
    Level(Level),
    /// TLS authenticated by these records. `names`: what a DANE-TA chain's
    /// certificate may be issued for (the TLSA base domain first).
    /// `verified`: the MX lookup was secure too ("Verified", else
    /// "Trusted").
    Dane {
        records: Vec<Tlsa>,
        names: Vec<String>,
        verified: bool,
    },
    /// This host cannot be used now: (DSN, text).
    Defer(String, String),
}

/// A TLSA record Postern can match: usage DANE-TA(2) or DANE-EE(3),
/// selector 0 or 1, matching type 0, 1 (SHA-256) or 2 (SHA-512) with data
/// of the right length. PKIX-TA(0) and PKIX-EE(1) do not apply to SMTP
/// (RFC 7672 3.1.3).
pub fn usable(t: &Tlsa) -> bool {
    matches!(t.usage, 2 | 3)
        && matches!(t.selector, 0 | 1)
        && match t.matching {
            0 => !t.data.is_empty(),
            1 => t.data.len() == 32,
            2 => t.data.len() == 64,
            _ => false,
        }
}

/// The level when DANE cannot be used for a reason on the remote side:
/// `dane` degrades (to `may`, or to `encrypt` for unusable records);
/// `dane-only` defers with the reason.
fn incompatible(level: Level, unusable: bool, why: &str) -> HostTls {
    match level {
        Level::DaneOnly => HostTls::Defer("4.7.5".into(), why.into()),
        _ if unusable => HostTls::Level(Level::Encrypt),
        _ => HostTls::Level(Level::May),
    }
}

/// The TLS for one host at `level` (`dane` or `dane-only`). `mx_secure`:
/// None when the host was not found through an MX lookup (a `[host]` next
/// hop, or a domain with no MX records), else whether the MX RRset was
/// authentic. `nexthop`: the next-hop domain, a name a DANE-TA
/// certificate may carry when the host came from its MX records.
pub async fn host_tls(
    dns: &impl Dns,
    level: Level,
    insecure_mx: InsecureMx,
    mx_secure: Option<bool>,
    host: &SecureHost,
    nexthop: &str,
    port: u16,
) -> HostTls {
    if mx_secure == Some(false) && insecure_mx == InsecureMx::May {
        return incompatible(level, false, "non DNSSEC destination");
    }
    let lookup_error = || {
        HostTls::Defer(
            "4.7.5".into(),
            format!("TLSA lookup error for {}:{port}", host.qname),
        )
    };
    let is_cname = !host.rname.eq_ignore_ascii_case(&host.qname);
    // A host in an unsigned zone has no TLSA records worth asking for,
    // unless its addresses are insecure only because a secure CNAME at
    // its name points into an unsigned zone.
    let qname_secure = if host.secure {
        true
    } else if is_cname {
        match dns.query(Request::CnameSec(host.qname.clone())).await {
            Reply::SecureCname(s) => s,
            _ => return lookup_error(),
        }
    } else {
        false
    };
    if !qname_secure {
        return incompatible(level, false, "no TLSA records found");
    }
    // The name after CNAMEs first, when the whole chain is secure; then
    // the MX host's own name.
    let mut candidates = Vec::new();
    if host.secure && is_cname {
        candidates.push(host.rname.clone());
    }
    candidates.push(host.qname.clone());
    let mut found = None;
    for base in candidates {
        match dns
            .query(Request::Tlsa(format!("_{port}._tcp.{base}")))
            .await
        {
            Reply::Tlsa {
                secure: true,
                records,
            } => {
                found = Some((base, records));
                break;
            }
            // Insecure TLSA records are no TLSA records (RFC 7672 2.2).
            Reply::Tlsa { secure: false, .. } | Reply::NotFound => {}
            _ => return lookup_error(),
        }
    }
    let Some((base, records)) = found else {
        return incompatible(level, false, "no TLSA records found");
    };
    let records: Vec<Tlsa> = records.into_iter().filter(usable).collect();
    if records.is_empty() {
        return incompatible(level, true, "TLSA records unusable");
    }
    if mx_secure == Some(false) && insecure_mx == InsecureMx::Encrypt {
        return HostTls::Level(Level::Encrypt);
    }
    let mut names = vec![base];
    for n in [&host.qname, &host.rname] {
        if !names.iter().any(|m| m.eq_ignore_ascii_case(n)) {
            names.push(n.clone());
        }
    }
    if mx_secure.is_some() && !names.iter().any(|m| m.eq_ignore_ascii_case(nexthop)) {
        names.push(nexthop.to_string());
    }
    HostTls::Dane {
        records,
        names,
        verified: mx_secure != Some(false),
    }
}

/// Whether `t` matches certificate `der`: the certificate itself
/// (selector 0) or its SubjectPublicKeyInfo (selector 1), exactly or by
/// SHA-256 or SHA-512.
pub fn matches(t: &Tlsa, der: &[u8]) -> bool {
    match t.selector {
        0 => matches_data(t, der),
        1 => postern_proto::ccert::parse(der).is_some_and(|p| matches_data(t, &p.spki)),
        _ => false,
    }
}

/// Whether `t` (DANE-EE, selector 1) matches an RFC 7250 raw public key
/// (a DER SubjectPublicKeyInfo).
pub fn matches_key(t: &Tlsa, spki: &[u8]) -> bool {
    t.usage == 3 && t.selector == 1 && matches_data(t, spki)
}

/// Whether every record names the server's public key (DANE-EE,
/// selector 1): then a raw public key is all the server need send (RFC
/// 7672 3.1.1, RFC 7250).
pub fn all_keys(records: &[Tlsa]) -> bool {
    !records.is_empty() && records.iter().all(|t| t.usage == 3 && t.selector == 1)
}

fn matches_data(t: &Tlsa, subject: &[u8]) -> bool {
    let digest = |alg| aws_lc_rs::digest::digest(alg, subject);
    match t.matching {
        0 => subject == t.data.as_slice(),
        1 => digest(&aws_lc_rs::digest::SHA256).as_ref() == t.data.as_slice(),
        2 => digest(&aws_lc_rs::digest::SHA512).as_ref() == t.data.as_slice(),
        _ => false,
    }
}

/// The certificate check of a DANE connection. DANE-EE(3): the server's
/// own certificate (or key) matches; its names and dates are not checked
/// (RFC 7672 3.1.1). DANE-TA(2): a certificate the server sent after its
/// own matches, and the server's certificate chains to it (webpki, dates
/// included) and is valid for one of `names` (RFC 7672 3.1.2). The
/// handshake signatures are checked against the server's key either way.
#[derive(Debug)]
pub struct Verifier {
    signatures: Unverified,
    records: Vec<Tlsa>,
    names: Vec<ServerName<'static>>,
    /// Ask for an RFC 7250 raw public key (every record names a key):
    /// rustls then requires one, and TLS 1.3.
    raw: bool,
}

impl Verifier {
    pub fn new(records: Vec<Tlsa>, names: &[String], raw: bool) -> Verifier {
        Verifier {
            signatures: Unverified(crate::tls::provider()),
            raw,
            records,
            names: names
                .iter()
                .filter_map(|n| ServerName::try_from(n.trim_end_matches('.').to_string()).ok())
                .collect(),
        }
    }

    /// DANE-TA: the chain from the server's certificate to `anchor`
    /// (one of the certificates it sent) verifies for one of the names.
    fn chains_to(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        anchor: &CertificateDer<'_>,
        now: UnixTime,
    ) -> bool {
        let mut roots = RootCertStore::empty();
        if roots.add(anchor.clone().into_owned()).is_err() {
            return false;
        }
        let Ok(webpki) =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.signatures.0.clone())
                .build()
        else {
            return false;
        };
        self.names.iter().any(|n| {
            webpki
                .verify_server_cert(end_entity, intermediates, n, &[], now)
                .is_ok()
        })
    }
}

/// Why a DANE connection's certificate was refused, as rustls reports it.
#[derive(Debug)]
struct NoMatch;

impl std::fmt::Display for NoMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no TLSA record matches the server certificate chain")
    }
}

impl std::error::Error for NoMatch {}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.raw {
            // The one "certificate" is the server's SubjectPublicKeyInfo.
            return if self.records.iter().any(|t| matches_key(t, end_entity)) {
                Ok(ServerCertVerified::assertion())
            } else {
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::Other(rustls::OtherError(Arc::new(NoMatch))),
                ))
            };
        }
        let ee = self.records.iter().filter(|t| t.usage == 3);
        if ee.clone().any(|t| matches(t, end_entity)) {
            return Ok(ServerCertVerified::assertion());
        }
        for t in self.records.iter().filter(|t| t.usage == 2) {
            for (i, c) in intermediates.iter().enumerate() {
                if matches(t, c) && self.chains_to(end_entity, &intermediates[..i], c, now) {
                    return Ok(ServerCertVerified::assertion());
                }
            }
        }
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::Other(rustls::OtherError(Arc::new(NoMatch))),
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if self.raw {
            return rustls::crypto::verify_tls13_signature_with_raw_key(
                message,
                &rustls::pki_types::SubjectPublicKeyInfoDer::from(cert.as_ref()),
                dss,
                &self.signatures.0.signature_verification_algorithms,
            );
        }
        self.signatures.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.raw
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn tlsa(usage: u8, selector: u8, matching: u8, data: &[u8]) -> Tlsa {
        Tlsa {
            usage,
            selector,
            matching,
            data: data.to_vec(),
        }
    }

    fn sha256(b: &[u8]) -> Vec<u8> {
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b)
            .as_ref()
            .to_vec()
    }

    fn sha512(b: &[u8]) -> Vec<u8> {
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA512, b)
            .as_ref()
            .to_vec()
    }

    /// A CA and a leaf it issued for `name`, as DER.
    fn ca_and_leaf(name: &str) -> (CertificateDer<'static>, CertificateDer<'static>) {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let leaf = CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .signed_by(&KeyPair::generate().unwrap(), &ca)
            .unwrap();
        (ca.der().clone(), leaf.der().clone())
    }

    #[test]
    fn usable_records_and_matching() {
        assert!(usable(&tlsa(3, 1, 1, &[0; 32])));
        assert!(usable(&tlsa(2, 0, 2, &[0; 64])));
        assert!(usable(&tlsa(3, 0, 0, &[1])));
        for bad in [
            tlsa(0, 1, 1, &[0; 32]),   // PKIX-TA: not for SMTP
            tlsa(1, 1, 1, &[0; 32]),   // PKIX-EE
            tlsa(255, 1, 1, &[0; 32]), // too large to pass on
            tlsa(3, 2, 1, &[0; 32]),
            tlsa(3, 1, 255, &[0; 32]), // private use
            tlsa(3, 1, 1, &[0; 31]),
            tlsa(3, 1, 2, &[0; 32]),
            tlsa(3, 1, 0, &[]),
        ] {
            assert!(!usable(&bad), "{bad:?}");
        }
        let (_, leaf) = ca_and_leaf("mx.example.com");
        let spki = postern_proto::ccert::parse(&leaf).unwrap().spki;
        assert!(matches(&tlsa(3, 0, 0, &leaf), &leaf));
        assert!(matches(&tlsa(3, 0, 1, &sha256(&leaf)), &leaf));
        assert!(matches(&tlsa(3, 0, 2, &sha512(&leaf)), &leaf));
        assert!(matches(&tlsa(3, 1, 0, &spki), &leaf));
        assert!(matches(&tlsa(3, 1, 1, &sha256(&spki)), &leaf));
        assert!(matches(&tlsa(3, 1, 2, &sha512(&spki)), &leaf));
        assert!(!matches(&tlsa(3, 1, 1, &sha256(&leaf)), &leaf));
        assert!(!matches(&tlsa(3, 0, 1, &sha256(&spki)), &leaf));
        // A raw public key is matched by DANE-EE key records only.
        assert!(matches_key(&tlsa(3, 1, 1, &sha256(&spki)), &spki));
        assert!(matches_key(&tlsa(3, 1, 0, &spki), &spki));
        assert!(!matches_key(&tlsa(2, 1, 1, &sha256(&spki)), &spki));
        assert!(!matches_key(&tlsa(3, 0, 1, &sha256(&spki)), &spki));
        assert!(!matches_key(&tlsa(3, 1, 1, &sha256(&leaf)), &spki));
        // A raw key is asked for only when every record names a key.
        let key = tlsa(3, 1, 1, &sha256(&spki));
        assert!(all_keys(&[key.clone(), tlsa(3, 1, 2, &sha512(&spki))]));
        assert!(!all_keys(&[key.clone(), tlsa(3, 0, 1, &sha256(&leaf))]));
        assert!(!all_keys(&[key, tlsa(2, 1, 1, &[0; 32])]));
        assert!(!all_keys(&[]));
    }

    #[test]
    fn the_verifier_matches_ee_and_ta_records() {
        let (ca, leaf) = ca_and_leaf("mx.example.com");
        let (other_ca, other_leaf) = ca_and_leaf("mx.other.net");
        let key = |c: &CertificateDer<'_>| sha256(&postern_proto::ccert::parse(c).unwrap().spki);
        let names = ["mx.example.com".to_string(), "example.com".to_string()];
        let any = ServerName::try_from("ignored.invalid").unwrap();
        let ok = |records: Vec<Tlsa>, ee: &CertificateDer<'_>, chain: &[CertificateDer<'_>]| {
            Verifier::new(records, &names, false)
                .verify_server_cert(ee, chain, &any, &[], UnixTime::now())
                .is_ok()
        };
        // DANE-EE: the key alone decides, whatever names it carries.
        assert!(ok(vec![tlsa(3, 1, 1, &key(&other_leaf))], &other_leaf, &[]));
        assert!(!ok(vec![tlsa(3, 1, 1, &key(&leaf))], &other_leaf, &[]));
        // DANE-TA: the CA the server sent, and a leaf it issued for one
        // of the names.
        let ta = vec![tlsa(2, 1, 1, &key(&ca))];
        assert!(ok(ta.clone(), &leaf, std::slice::from_ref(&ca)));
        // ... not when the server leaves the CA out, nor for a leaf
        // issued for another name, nor for a record naming the leaf.
        assert!(!ok(ta.clone(), &leaf, &[]));
        assert!(!ok(
            vec![tlsa(2, 1, 1, &key(&other_ca))],
            &other_leaf,
            std::slice::from_ref(&other_ca)
        ));
        assert!(!ok(vec![tlsa(2, 1, 1, &key(&leaf))], &leaf, &[]));
        // A chain that claims the CA but whose leaf another CA issued.
        assert!(!ok(ta, &other_leaf, std::slice::from_ref(&ca)));
    }

    /// Canned DNSSEC answers by "TYPE name"; anything else is NXDOMAIN.
    struct Fake(HashMap<String, Reply>);

    impl Dns for Fake {
        async fn query(&self, req: Request) -> Reply {
            let key = match req {
                Request::Tlsa(n) => format!("TLSA {n}"),
                Request::CnameSec(n) => format!("CNAME {n}"),
                other => format!("{other:?}"),
            };
            self.0.get(&key).cloned().unwrap_or(Reply::NotFound)
        }
    }

    #[test]
    fn what_each_host_gets() {
        let good = vec![tlsa(3, 1, 1, &[7; 32])];
        let fake = Fake(HashMap::from([
            (
                "TLSA _25._tcp.mx.signed.example".to_string(),
                Reply::Tlsa {
                    secure: true,
                    records: good.clone(),
                },
            ),
            (
                "TLSA _25._tcp.mx.unusable.example".to_string(),
                Reply::Tlsa {
                    secure: true,
                    records: vec![tlsa(1, 1, 1, &[7; 32])],
                },
            ),
            (
                "TLSA _25._tcp.mx.insecure.example".to_string(),
                Reply::Tlsa {
                    secure: false,
                    records: good.clone(),
                },
            ),
            (
                "TLSA _25._tcp.mx.bogus.example".to_string(),
                Reply::Tempfail("SERVFAIL".into()),
            ),
            (
                "CNAME alias.signed.example".to_string(),
                Reply::SecureCname(true),
            ),
            (
                "TLSA _25._tcp.alias.signed.example".to_string(),
                Reply::Tlsa {
                    secure: true,
                    records: good.clone(),
                },
            ),
            (
                "CNAME alias.unsigned.example".to_string(),
                Reply::SecureCname(false),
            ),
        ]));
        let host = |q: &str, r: &str, secure: bool| SecureHost {
            qname: q.into(),
            rname: r.into(),
            secure,
        };
        let run = |level, insecure_mx, mx_secure, h: &SecureHost| {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(host_tls(
                    &fake,
                    level,
                    insecure_mx,
                    mx_secure,
                    h,
                    "example.com",
                    25,
                ))
        };
        use InsecureMx as I;
        use Level::{Dane, DaneOnly};
        let signed = host("mx.signed.example", "mx.signed.example", true);
        let dane = |verified: bool, base: &str| HostTls::Dane {
            records: good.clone(),
            names: if base == "mx.signed.example" {
                vec![base.to_string(), "example.com".into()]
            } else {
                vec![
                    base.to_string(),
                    "host.elsewhere.example".into(),
                    "example.com".into(),
                ]
            },
            verified,
        };
        let defer = |why: &str| HostTls::Defer("4.7.5".into(), why.into());
        assert_eq!(
            run(Dane, I::Dane, Some(true), &signed),
            dane(true, "mx.signed.example")
        );
        // An insecure MX: "Trusted", or encrypt, or ignored.
        assert_eq!(
            run(Dane, I::Dane, Some(false), &signed),
            dane(false, "mx.signed.example")
        );
        assert_eq!(
            run(Dane, I::Encrypt, Some(false), &signed),
            HostTls::Level(Level::Encrypt)
        );
        assert_eq!(
            run(Dane, I::May, Some(false), &signed),
            HostTls::Level(Level::May)
        );
        assert_eq!(
            run(DaneOnly, I::May, Some(false), &signed),
            defer("non DNSSEC destination")
        );
        // An unsigned host: may, or for dane-only a deferral.
        let unsigned = host("mx.unsigned.example", "mx.unsigned.example", false);
        assert_eq!(
            run(Dane, I::Dane, Some(true), &unsigned),
            HostTls::Level(Level::May)
        );
        assert_eq!(
            run(DaneOnly, I::Dane, Some(true), &unsigned),
            defer("no TLSA records found")
        );
        // Insecure TLSA records count as none; unusable ones mean encrypt.
        let insecure = host("mx.insecure.example", "mx.insecure.example", true);
        assert_eq!(
            run(Dane, I::Dane, None, &insecure),
            HostTls::Level(Level::May)
        );
        let unusable = host("mx.unusable.example", "mx.unusable.example", true);
        assert_eq!(
            run(Dane, I::Dane, None, &unusable),
            HostTls::Level(Level::Encrypt)
        );
        assert_eq!(
            run(DaneOnly, I::Dane, None, &unusable),
            defer("TLSA records unusable")
        );
        // A bogus TLSA answer defers, whatever the level.
        let bogus = host("mx.bogus.example", "mx.bogus.example", true);
        assert_eq!(
            run(Dane, I::Dane, None, &bogus),
            defer("TLSA lookup error for mx.bogus.example:25")
        );
        // A secure CNAME into an unsigned zone: the TLSA records at the
        // alias's own name; an insecure CNAME: none.
        let alias = host("alias.signed.example", "host.elsewhere.example", false);
        assert_eq!(
            run(Dane, I::Dane, Some(true), &alias),
            dane(true, "alias.signed.example")
        );
        let alias = host("alias.unsigned.example", "host.elsewhere.example", false);
        assert_eq!(
            run(Dane, I::Dane, Some(true), &alias),
            HostTls::Level(Level::May)
        );
        // A secure CNAME chain: the target's name first, then the alias's.
        let chain = host("alias.signed.example", "host.elsewhere.example", true);
        assert_eq!(
            run(Dane, I::Dane, Some(true), &chain),
            dane(true, "alias.signed.example")
        );
    }
}
