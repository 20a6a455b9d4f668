//! smtpd's TLS setup per listener: the broker-held key with its
//! certificate chain, and the same key as an RFC 7250 raw public key for
//! clients that ask for one in their ClientHello (a Postfix 3.9+ client
//! does when every TLSA record of a DANE host names a public key). As in
//! Postfix, the raw key is sent whenever it is solicited; a client that
//! does not ask gets the chain. rustls does raw public keys in TLS 1.3
//! only, so a client must offer TLS 1.3 to get one.
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::{CertificateType, ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::tls::ccert::Ask;
use crate::warn;

pub struct ServerTls {
    x509: Arc<ServerConfig>,
    /// None when the listener's protocols leave no TLS 1.3, or the
    /// certificate's key cannot be read.
    raw: Option<Arc<ServerConfig>>,
}

#[derive(Debug)]
struct One(Arc<CertifiedKey>);

impl ResolvesServerCert for One {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The raw public key: the leaf's SubjectPublicKeyInfo as the one
/// "certificate", signed for by the same broker-held key.
#[derive(Debug)]
struct RawKey(Arc<CertifiedKey>);

impl ResolvesServerCert for RawKey {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn only_raw_public_keys(&self) -> bool {
        true
    }
}

impl ServerTls {
    /// The setups for a certificate whose key is in the broker; `ask`
    /// asks clients for a certificate (smtpd_tls_ask_ccert); `choice` is
    /// what the listener's protocol and cipher settings leave.
    pub fn new(
        ck: Arc<CertifiedKey>,
        ticketer: Arc<crate::tls::remote::RemoteTicketer>,
        ask: Option<Arc<Ask>>,
        choice: &postern_config::tlsproto::Choice,
    ) -> Option<ServerTls> {
        let build = |resolver: Arc<dyn ResolvesServerCert>,
                     versions: &[&'static rustls::SupportedProtocolVersion]|
         -> Option<Arc<ServerConfig>> {
            let (provider, _) = crate::tls::chosen(choice);
            let mut c = match ServerConfig::builder_with_provider(provider)
                .with_protocol_versions(versions)
            {
                Ok(b) => match &ask {
                    Some(ask) => b.with_client_cert_verifier(ask.clone()),
                    None => b.with_no_client_auth(),
                }
                .with_cert_resolver(resolver),
                Err(e) => {
                    warn!("TLS setup: {e}");
                    return None;
                }
            };
            c.ticketer = ticketer.clone();
            // One ticket per handshake: each costs a round trip to the
            // broker.
            c.send_tls13_tickets = 1;
            Some(Arc::new(c))
        };
        let (_, versions) = crate::tls::chosen(choice);
        let raw = if choice.versions.tls13 {
            ck.cert
                .first()
                .and_then(|leaf| postern_proto::ccert::parse(leaf))
                .and_then(|p| {
                    let key = CertifiedKey::new(vec![p.spki.into()], ck.key.clone());
                    build(Arc::new(RawKey(Arc::new(key))), &[&rustls::version::TLS13])
                })
        } else {
            None
        };
        Some(ServerTls {
            x509: build(Arc::new(One(ck)), versions)?,
            raw,
        })
    }

    /// The setup for this ClientHello, and whether it sends the raw key:
    /// it does when the client asks for one and offers TLS 1.3 (its TLS
    /// 1.3 suites say so); else the certificate chain.
    pub fn for_hello(&self, hello: &ClientHello<'_>) -> (Arc<ServerConfig>, bool) {
        let wants_raw = hello
            .server_cert_types()
            .is_some_and(|t| t.contains(&CertificateType::RawPublicKey));
        let tls13 = hello
            .cipher_suites()
            .iter()
            .any(|s| format!("{s:?}").starts_with("TLS13_"));
        match &self.raw {
            Some(raw) if wants_raw && tls13 => (raw.clone(), true),
            _ => (self.x509.clone(), false),
        }
    }
}
