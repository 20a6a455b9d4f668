//! The `fingerprint` TLS level's check of a server certificate
//! (smtp_tls_fingerprint_cert_match, `match=` in smtp_tls_policy_maps).
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use super::tls::Unverified;

/// `fingerprint`: the end-entity certificate, or its public key, must have
/// one of the listed digests (upper-case hex without colons). The
/// handshake signatures are still checked against its key.
#[derive(Debug)]
pub(super) struct Fingerprints {
    /// Checks the handshake signatures, as for `encrypt`.
    pub(super) signatures: Unverified,
    pub(super) digest: crate::tls::ccert::Digest,
    pub(super) wanted: Vec<String>,
}

/// A fingerprint as written (`AB:CD:...`, any case), for comparing.
pub(super) fn normalize_fingerprint(f: &str) -> String {
    f.chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

impl ServerCertVerifier for Fingerprints {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = normalize_fingerprint(&self.digest.hex(end_entity));
        let pkey = postern_proto::ccert::parse(end_entity)
            .map(|p| normalize_fingerprint(&self.digest.hex(&p.spki)));
        let hit = self
            .wanted
            .iter()
            .any(|w| *w == cert || pkey.as_ref() == Some(w));
        if hit {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
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
        self.signatures.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tls::parse_entry;
    use super::*;
    use crate::tls::ccert::Digest;

    /// fingerprint: the certificate's or its public key's digest, as the
    /// entry lists them (case and colons do not matter); any other
    /// certificate is refused.
    #[test]
    fn fingerprints_match_the_certificate_or_its_key() {
        let (_, leaves) =
            super::super::tls::tests::chain(&[&["mx.example.com"], &["other.example.com"]]);
        let d = Digest::Sha256;
        let cert_fp = d.hex(&leaves[0]);
        let pkey_fp = d.hex(&postern_proto::ccert::parse(&leaves[0]).unwrap().spki);
        let v = |wanted: &str| {
            let e = parse_entry(&format!("fingerprint match={wanted}")).unwrap();
            Fingerprints {
                signatures: Unverified(crate::tls::provider()),
                digest: d,
                wanted: e.matches,
            }
        };
        let any = ServerName::try_from("ignored.invalid").unwrap();
        let ok = |v: &Fingerprints, leaf: &CertificateDer<'_>| {
            v.verify_server_cert(leaf, &[], &any, &[], UnixTime::now())
                .is_ok()
        };
        let lower = cert_fp.to_ascii_lowercase();
        let both = format!("00:11|{lower}");
        assert!(ok(&v(&both), &leaves[0]));
        assert!(ok(&v(&pkey_fp), &leaves[0]));
        assert!(!ok(&v(&cert_fp), &leaves[1]));
        assert!(parse_entry("fingerprint").is_err());
        assert!(parse_entry("fingerprint match=zz:yy").is_err());
        // Two match= attributes add up.
        let e = parse_entry(&format!("fingerprint match=AA match={cert_fp}")).unwrap();
        assert_eq!(e.matches.len(), 2);
    }
}
