//! Trust anchors for `verify` and `secure` (smtp_tls_trust_anchor_file, a
//! policy entry's `tafile=`), as Postfix takes them: PEM certificates
//! and public keys, which replace the CAs, need not be roots, and do not
//! expire. A certificate is a webpki trust anchor (a root, an
//! intermediate found in the middle of the chain, or a self-signed
//! server certificate). A public key anchors a chain one of whose
//! certificates it signed (its own certificate need not be sent), or
//! whose intermediate certificate carries it: for each connection, the
//! key becomes a webpki trust anchor named as each certificate's issuer,
//! and webpki's signature checks decide which, if any, it signed.
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, Der, ServerName, SubjectPublicKeyInfoDer, TrustAnchor, UnixTime,
};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

#[derive(Debug, Clone)]
pub struct Anchors {
    pub roots: RootCertStore,
    /// Public keys: whole DER SubjectPublicKeyInfos.
    pub keys: Vec<Vec<u8>>,
}

impl From<RootCertStore> for Anchors {
    fn from(roots: RootCertStore) -> Anchors {
        Anchors {
            roots,
            keys: Vec::new(),
        }
    }
}

impl Anchors {
    pub fn empty() -> Anchors {
        RootCertStore::empty().into()
    }

    /// Adds the certificates and public keys of one PEM file (`name` in
    /// messages); a file with neither is an error.
    pub fn add_pem(&mut self, pem: &[u8], name: &str) -> Result<(), String> {
        let mut found = false;
        for c in CertificateDer::pem_slice_iter(pem) {
            let c = c.map_err(|e| format!("{name}: bad certificate: {e}"))?;
            self.roots
                .add(c)
                .map_err(|e| format!("{name}: not a usable trust anchor: {e}"))?;
            found = true;
        }
        for k in SubjectPublicKeyInfoDer::pem_slice_iter(pem) {
            let k = k.map_err(|e| format!("{name}: bad public key: {e}"))?;
            if postern_proto::ccert::spki_key_kind(&k).is_none() {
                return Err(format!("{name}: a public key of a kind Postern cannot use"));
            }
            self.keys.push(k.to_vec());
            found = true;
        }
        if !found {
            return Err(format!("{name}: no trust-anchor certificate or public key"));
        }
        Ok(())
    }

    /// The certificate check for `verify` and `secure` under these
    /// anchors (the names are checked by whoever asks for `name`).
    pub fn verifier(
        &self,
        provider: Arc<CryptoProvider>,
    ) -> Result<Arc<dyn ServerCertVerifier>, String> {
        if self.keys.is_empty() {
            return Ok(WebPkiServerVerifier::builder_with_provider(
                Arc::new(self.roots.clone()),
                provider,
            )
            .build()
            .map_err(|e| format!("smtp TLS: {e}"))?);
        }
        Ok(Arc::new(KeyAnchored {
            anchors: self.clone(),
            signatures: super::tls::Unverified(provider.clone()),
            provider,
        }))
    }
}

/// webpki with public-key anchors added for each chain.
#[derive(Debug)]
struct KeyAnchored {
    anchors: Anchors,
    provider: Arc<CryptoProvider>,
    /// Handshake signatures against the server's key.
    signatures: super::tls::Unverified,
}

impl KeyAnchored {
    /// The anchors for this chain: the certificates, each key named as
    /// every certificate's issuer, and every intermediate that carries a
    /// key.
    fn roots_for(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> RootCertStore {
        let mut roots = self.anchors.roots.clone();
        let chain = std::iter::once(end_entity).chain(intermediates);
        for (i, c) in chain.enumerate() {
            let Some((issuer, spki)) = postern_proto::ccert::issuer_and_spki(c) else {
                continue;
            };
            for k in &self.anchors.keys {
                let Some(key) = postern_proto::ccert::der_value(k) else {
                    continue;
                };
                roots.roots.push(TrustAnchor {
                    subject: Der::from(issuer.clone()),
                    subject_public_key_info: Der::from(key.to_vec()),
                    name_constraints: None,
                });
                if i > 0 && spki == *k {
                    let _ = roots.add(c.clone().into_owned());
                }
            }
        }
        roots
    }
}

impl ServerCertVerifier for KeyAnchored {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let roots = self.roots_for(end_entity, intermediates);
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(format!("trust anchors: {e}")))?
            .verify_server_cert(end_entity, intermediates, name, ocsp, now)
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
    use super::*;

    /// A CA, an intermediate it signed, and a leaf for `mx.example.com`
    /// the intermediate signed: DER certificates and the PEM public keys.
    struct Chain {
        leaf: CertificateDer<'static>,
        inter: CertificateDer<'static>,
        ca_key_pem: String,
        inter_key_pem: String,
    }

    fn chain(tag: &str) -> Chain {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
        let ca_params = |cn: String| {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.distinguished_name.push(DnType::CommonName, cn);
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p
        };
        let ca_key = KeyPair::generate().unwrap();
        let ca_key_pem = ca_key.public_key_pem();
        let ca = CertifiedIssuer::self_signed(ca_params(format!("CA {tag}")), ca_key).unwrap();
        let inter_key = KeyPair::generate().unwrap();
        let inter_key_pem = inter_key.public_key_pem();
        let inter =
            CertifiedIssuer::signed_by(ca_params(format!("Intermediate {tag}")), inter_key, &ca)
                .unwrap();
        let p = CertificateParams::new(vec!["mx.example.com".to_string()]).unwrap();
        let leaf = p.signed_by(&KeyPair::generate().unwrap(), &inter).unwrap();
        Chain {
            leaf: leaf.der().clone(),
            inter: inter.der().clone(),
            ca_key_pem,
            inter_key_pem,
        }
    }

    fn verdict(a: &Anchors, c: &Chain, sent: &[CertificateDer<'static>]) -> bool {
        let v = a.verifier(crate::tls::provider()).unwrap();
        let name = ServerName::try_from("mx.example.com").unwrap();
        v.verify_server_cert(&c.leaf, sent, &name, &[], UnixTime::now())
            .is_ok()
    }

    #[test]
    fn a_public_key_anchors_the_chains_it_signed() {
        let c = chain("a");
        let other = chain("b");
        let with = |pem: &str| {
            let mut a = Anchors::empty();
            a.add_pem(pem.as_bytes(), "ta.pem").unwrap();
            a
        };
        // The root's key: its certificate is never sent.
        let root = with(&c.ca_key_pem);
        assert!(verdict(&root, &c, std::slice::from_ref(&c.inter)));
        // The intermediate's key: it signed the leaf, and it is the key of
        // the intermediate sent.
        let inter = with(&c.inter_key_pem);
        assert!(verdict(&inter, &c, &[]));
        assert!(verdict(&inter, &c, std::slice::from_ref(&c.inter)));
        // Another chain's keys anchor nothing here; nor does the root's key
        // when the intermediate is missing.
        assert!(!verdict(
            &with(&other.ca_key_pem),
            &c,
            std::slice::from_ref(&c.inter)
        ));
        assert!(!verdict(
            &with(&other.inter_key_pem),
            &c,
            std::slice::from_ref(&c.inter)
        ));
        assert!(!verdict(&root, &c, &[]));
        // The name is still checked.
        let v = root.verifier(crate::tls::provider()).unwrap();
        let wrong = ServerName::try_from("mx.other.example").unwrap();
        assert!(
            v.verify_server_cert(
                &c.leaf,
                std::slice::from_ref(&c.inter),
                &wrong,
                &[],
                UnixTime::now()
            )
            .is_err()
        );
    }

    #[test]
    fn files_hold_certificates_or_keys() {
        let c = chain("c");
        let mut a = Anchors::empty();
        assert!(
            a.add_pem(b"nothing here", "x.pem")
                .unwrap_err()
                .contains("no trust-anchor")
        );
        let junk = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        assert!(a.add_pem(junk.as_bytes(), "x.pem").is_err());
        a.add_pem(c.ca_key_pem.as_bytes(), "ta.pem").unwrap();
        assert_eq!((a.roots.len(), a.keys.len()), (0, 1));
    }
}
