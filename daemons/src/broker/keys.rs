//! The broker's key store: the only place a TLS private key lives.
//!
//! Keys are read before the broker's jail. The PEM bytes are dropped as
//! soon as aws-lc-rs has parsed them; what remains is an opaque
//! `Arc<dyn SigningKey>` that can sign and has no way to export itself.
//! Requests come from smtpd (server key, session tickets) and smtp (client
//! key); each is checked against what that role may ask for and rate
//! limited per channel.
use std::sync::Arc;
use std::time::{Duration, Instant};

use postern_config::{Params, Role};
use postern_ipc::keys::{self, Identity, KeyRole, Reply, Request};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ProducesTickets;
use rustls::sign::{CertifiedKey, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};

use crate::warn;

/// Schemes we offer, in our order of preference.
const SCHEMES: &[SignatureScheme] = &[
    SignatureScheme::ED25519,
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::ECDSA_NISTP521_SHA512,
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::RSA_PSS_SHA384,
    SignatureScheme::RSA_PSS_SHA512,
    SignatureScheme::RSA_PKCS1_SHA256,
    SignatureScheme::RSA_PKCS1_SHA384,
    SignatureScheme::RSA_PKCS1_SHA512,
];

/// Signatures one channel may ask for per second: far above any honest
/// handshake rate of one process, far below what would make the broker a
/// signing oracle worth hammering.
const SIGN_RATE: u32 = 2000;

pub struct Loaded {
    chain: Vec<CertificateDer<'static>>,
    key: Arc<dyn SigningKey>,
    schemes: Vec<SignatureScheme>,
}

impl Loaded {
    pub fn identity(&self) -> Identity {
        Identity {
            chain: self.chain.iter().map(|c| c.as_ref().to_vec()).collect(),
            schemes: self.schemes.iter().map(|s| u16::from(*s)).collect(),
            algorithm: u8::from(self.key.algorithm()),
        }
    }

    /// The leaf certificate's size and a short fingerprint, for the log.
    fn describe(&self) -> String {
        let leaf = self.chain.first().map_or(&[][..], |c| c.as_ref());
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, leaf);
        let hex: String = digest.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("(leaf sha256 {hex}..., {} in chain)", self.chain.len())
    }

    fn is_rsa(&self) -> bool {
        self.key.algorithm() == SignatureAlgorithm::RSA
    }
}

pub struct KeyStore {
    pub server: Option<Arc<Loaded>>,
    pub client: Option<Arc<Loaded>>,
    ticketer: Arc<dyn ProducesTickets>,
}

/// Reads one key or certificate file: by path before the jail, from a
/// descriptor the master opened on reload.
pub type Reader<'a> = &'a dyn Fn(&str) -> Result<Vec<u8>, String>;

/// A PEM error in words (the library's Display prints the missing end
/// marker as a list of byte values).
fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::MissingSectionEnd { end_marker } => format!(
            "no \"-----END {}-----\" line",
            String::from_utf8_lossy(end_marker)
        ),
        e => e.to_string(),
    }
}

/// Reads a file by path, with the small-file cap.
pub fn read_path(path: &str) -> Result<Vec<u8>, String> {
    crate::fsutil::read_path(path, crate::fsutil::SMALL_FILE_CAP)
        .map_err(|e| format!("cannot read {path}: {e}"))
}

/// Loads a key and its chain from PEM files (`certs` and `keys` may name
/// the same files: Postfix's `smtpd_tls_chain_files` puts the key first).
#[cfg(test)]
pub fn load_pair(certs: &[String], keys: &[String]) -> Result<Loaded, String> {
    load_pair_with(&read_path, certs, keys)
}

fn load_pair_with(read: Reader<'_>, certs: &[String], keys: &[String]) -> Result<Loaded, String> {
    let mut chain = Vec::new();
    for f in certs {
        let pem = read(f)?;
        for c in CertificateDer::pem_slice_iter(&pem) {
            chain.push(c.map_err(|e| format!("{f}: bad certificate: {}", pem_error(&e)))?);
        }
    }
    let first = certs.first().map_or("", String::as_str);
    if chain.is_empty() {
        return Err(format!("{first}: no certificate found"));
    }
    if chain.len() > keys::MAX_CHAIN || chain.iter().any(|c| c.len() > keys::MAX_CERT) {
        return Err(format!(
            "{first}: certificate chain longer than {} certificates of {} bytes",
            keys::MAX_CHAIN,
            keys::MAX_CERT
        ));
    }
    let mut key = None;
    for f in keys {
        let pem = read(f)?;
        match PrivateKeyDer::from_pem_slice(&pem) {
            Ok(k) => {
                key = Some((f, k));
                break;
            }
            Err(rustls::pki_types::pem::Error::NoItemsFound) => continue,
            Err(e) => return Err(format!("{f}: bad private key: {}", pem_error(&e))),
        }
    }
    let Some((kf, der)) = key else {
        return Err(format!("{}: no private key found", keys.join(", ")));
    };
    let key = rustls::crypto::aws_lc_rs::sign::any_supported_type(&der)
        .map_err(|e| format!("{kf}: unsupported private key: {e}"))?;
    drop(der);
    let ck = CertifiedKey::new(chain.clone(), key.clone());
    ck.keys_match().map_err(|e| {
        format!("{kf}: the private key does not match the certificate in {first}: {e}")
    })?;
    let schemes: Vec<SignatureScheme> = SCHEMES
        .iter()
        .copied()
        .filter(|s| key.choose_scheme(&[*s]).is_some())
        .collect();
    if schemes.is_empty() {
        return Err(format!("{kf}: the key supports no TLS signature scheme"));
    }
    Ok(Loaded {
        chain,
        key,
        schemes,
    })
}

/// The files of the client key pair (`smtp_tls_cert_file`, `_key_file`).
fn client_key_files(p: &Params) -> Option<(Vec<String>, Vec<String>)> {
    let cert = p.str("smtp_tls_cert_file");
    if cert.is_empty() {
        return None;
    }
    let key = p.str("smtp_tls_key_file");
    let key = if key.is_empty() { cert } else { key };
    Some((vec![cert.to_string()], vec![key.to_string()]))
}

/// Every key and certificate file the configuration names, for the master
/// to open on reload.
pub fn files(p: &Params) -> Vec<String> {
    let mut out: Vec<String> = super::dkim::files(p);
    let sides = [crate::tls::server_key_files(p), client_key_files(p)];
    for (certs, keys) in sides.into_iter().flatten() {
        for f in certs.into_iter().chain(keys) {
            if !out.contains(&f) {
                out.push(f);
            }
        }
    }
    out
}

/// Loads one side's key: Ok(None) when the configuration names none.
fn load_side(
    read: Reader<'_>,
    files: Option<(Vec<String>, Vec<String>)>,
) -> Result<Option<Arc<Loaded>>, String> {
    match files {
        None => Ok(None),
        Some((c, k)) => load_pair_with(read, &c, &k).map(|l| Some(Arc::new(l))),
    }
}

impl KeyStore {
    /// Reads every configured key. A broken TLS setting never stops the
    /// queue: it is logged, and TLS stays off for that side.
    pub fn load(p: &Params) -> KeyStore {
        let server = load_side(&read_path, crate::tls::server_key_files(p)).unwrap_or_else(|e| {
            warn!("TLS disabled for smtpd: {e}");
            None
        });
        let client = load_side(&read_path, client_key_files(p)).unwrap_or_else(|e| {
            warn!("no client certificate for smtp: {e}");
            None
        });
        let ticketer = match rustls::crypto::aws_lc_rs::Ticketer::new() {
            Ok(t) => t,
            Err(e) => crate::fatal!("cannot create session-ticket keys: {e}"),
        };
        KeyStore {
            server,
            client,
            ticketer,
        }
    }

    /// The store after `postern reload`: the keys the new configuration
    /// names, read through `read`. A key that fails to load keeps the
    /// current one (a typo in a renewal must not turn TLS off on an edge
    /// relay); a key the configuration no longer names is gone. Session
    /// ticket keys carry over, so resumption keeps working.
    pub fn reloaded(&self, p: &Params, read: Reader<'_>) -> KeyStore {
        let side = |what: &str, files, current: &Option<Arc<Loaded>>| match load_side(read, files) {
            Ok(l) => {
                if let Some(l) = &l {
                    crate::info!("reload -- {what} key and certificate {}", l.describe());
                }
                l
            }
            Err(e) => {
                warn!("reload -- cannot load the new {what} key: {e}; keeping the current one");
                current.clone()
            }
        };
        KeyStore {
            server: side("smtpd", crate::tls::server_key_files(p), &self.server),
            client: side("smtp client", client_key_files(p), &self.client),
            ticketer: self.ticketer.clone(),
        }
    }

    /// Both sides present the same certificate chains (a reload that
    /// loaded the same files, or kept the current keys after an error):
    /// key channels need not reconnect.
    pub fn same_identities(&self, other: &KeyStore) -> bool {
        let chain = |s: &KeyStore, k| s.key(k).map(|l| l.chain.clone());
        [KeyRole::Server, KeyRole::Client]
            .into_iter()
            .all(|k| chain(self, k) == chain(other, k))
    }

    fn key(&self, k: KeyRole) -> Option<&Arc<Loaded>> {
        match k {
            KeyRole::Server => self.server.as_ref(),
            KeyRole::Client => self.client.as_ref(),
        }
    }
}

/// One channel's budget of signatures.
pub struct Budget {
    window: Instant,
    used: u32,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            window: Instant::now(),
            used: 0,
        }
    }
}

impl Budget {
    pub(super) fn take(&mut self) -> bool {
        if self.window.elapsed() >= Duration::from_secs(1) {
            self.window = Instant::now();
            self.used = 0;
        }
        self.used += 1;
        self.used <= SIGN_RATE
    }
}

/// Which key a role may use: smtpd the server key and tickets, smtp the
/// client key. Anything else is a protocol violation (Err).
fn allowed(role: Role, req: &Request) -> Result<(), &'static str> {
    use KeyRole::{Client, Server};
    let ok = matches!(
        (role, req),
        (Role::Smtpd, Request::Identity(Server))
            | (Role::Smtpd, Request::Sign { key: Server, .. })
            | (Role::Smtpd, Request::TicketEncrypt(_))
            | (Role::Smtpd, Request::TicketDecrypt(_))
            | (Role::Smtp, Request::Identity(Client))
            | (Role::Smtp, Request::Sign { key: Client, .. })
    );
    if ok {
        Ok(())
    } else {
        Err("request outside this role's keys")
    }
}

/// Answers one request. Err is a protocol violation by the peer.
pub async fn answer(
    store: &KeyStore,
    role: Role,
    budget: &mut Budget,
    req: Request,
) -> Result<Reply, &'static str> {
    allowed(role, &req)?;
    Ok(match req {
        Request::Identity(k) => match store.key(k) {
            Some(l) => Reply::Identity(l.identity()),
            None => Reply::NoKey,
        },
        Request::Sign {
            key,
            scheme,
            message,
        } => {
            let Some(l) = store.key(key).cloned() else {
                return Ok(Reply::NoKey);
            };
            if !budget.take() {
                return Ok(Reply::Refused("signing rate limit exceeded".into()));
            }
            let scheme = SignatureScheme::from(scheme);
            if !l.schemes.contains(&scheme) {
                return Ok(Reply::Refused(format!(
                    "the key cannot sign with {scheme:?}"
                )));
            }
            let sign = move || {
                l.key
                    .choose_scheme(&[scheme])
                    .ok_or_else(|| format!("the key cannot sign with {scheme:?}"))
                    .and_then(|s| s.sign(&message).map_err(|e| e.to_string()))
            };
            // RSA signatures take a millisecond or more: off the event loop.
            let is_rsa = store.key(key).is_some_and(|l| l.is_rsa());
            let r = if is_rsa {
                tokio::task::spawn_blocking(sign)
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()))
            } else {
                sign()
            };
            match r {
                Ok(s) if s.len() <= keys::MAX_SIGNATURE => Reply::Signature(s),
                Ok(_) => Reply::Refused("signature too large".into()),
                Err(e) => Reply::Refused(e),
            }
        }
        Request::TicketEncrypt(plain) => match store.ticketer.encrypt(&plain) {
            Some(t) if t.len() <= keys::MAX_TICKET => Reply::Ticket(t),
            _ => Reply::Refused("cannot encrypt the ticket".into()),
        },
        Request::TicketDecrypt(t) => match store.ticketer.decrypt(&t) {
            Some(p) if p.len() <= keys::MAX_TICKET_PLAIN => Reply::Ticket(p),
            _ => Reply::Refused("bad or expired ticket".into()),
        },
        // Answered from the DKIM store (broker/dkim.rs), smtp's only.
        Request::DkimKeys(_) | Request::DkimSign { .. } => {
            return Err("a DKIM request from a role that does not sign");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_ipc::Message;

    /// A P-256 key and self-signed certificate in one PEM file, and the
    /// key's private scalar.
    fn pair(dir: &std::path::Path, name: &str) -> (String, Vec<u8>) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec![format!("{name}.example")])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, format!("{}{}", key.serialize_pem(), cert.pem())).unwrap();
        // ECPrivateKey inside PKCS#8: OCTET STRING (04 20) of the scalar.
        let der = key.serialize_der();
        let at = der.windows(2).position(|w| w == [0x04, 0x20]).unwrap() + 2;
        (path.display().to_string(), der[at..at + 32].to_vec())
    }

    fn store(dir: &std::path::Path) -> (KeyStore, Vec<Vec<u8>>) {
        let (s, s_secret) = pair(dir, "server");
        let (c, c_secret) = pair(dir, "client");
        let store = KeyStore {
            server: Some(Arc::new(
                load_pair(std::slice::from_ref(&s), std::slice::from_ref(&s)).unwrap(),
            )),
            client: Some(Arc::new(
                load_pair(std::slice::from_ref(&c), std::slice::from_ref(&c)).unwrap(),
            )),
            ticketer: rustls::crypto::aws_lc_rs::Ticketer::new().unwrap(),
        };
        (store, vec![s_secret, c_secret])
    }

    fn run<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn replies_never_contain_the_private_key() {
        let dir = tempfile::tempdir().unwrap();
        let (store, secrets) = store(dir.path());
        let mut budget = Budget::default();
        let mut wire = Vec::new();
        let requests = [
            (Role::Smtpd, Request::Identity(KeyRole::Server)),
            (Role::Smtp, Request::Identity(KeyRole::Client)),
            (
                Role::Smtpd,
                Request::Sign {
                    key: KeyRole::Server,
                    scheme: u16::from(SignatureScheme::ECDSA_NISTP256_SHA256),
                    message: vec![0x20; 130],
                },
            ),
            (
                Role::Smtp,
                Request::Sign {
                    key: KeyRole::Client,
                    scheme: u16::from(SignatureScheme::ECDSA_NISTP256_SHA256),
                    message: b"tls 1.3 client signature input".to_vec(),
                },
            ),
            (Role::Smtpd, Request::TicketEncrypt(vec![5; 100])),
        ];
        for (role, req) in requests {
            let r = run(answer(&store, role, &mut budget, req)).unwrap();
            assert!(!matches!(r, Reply::Refused(_) | Reply::NoKey), "{r:?}");
            wire.extend(r.encode());
        }
        for secret in &secrets {
            assert!(
                !wire.windows(secret.len()).any(|w| w == secret.as_slice()),
                "a private key went on the wire"
            );
            // Not even a 16-byte piece of it.
            for piece in secret.chunks(16) {
                assert!(!wire.windows(16).any(|w| w == piece));
            }
        }
    }

    #[test]
    fn roles_get_only_their_own_keys() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = store(dir.path());
        let mut b = Budget::default();
        // smtp may not sign with the server key or use tickets; smtpd may
        // not use the client key.
        for (role, req) in [
            (Role::Smtp, Request::Identity(KeyRole::Server)),
            (Role::Smtp, Request::TicketDecrypt(vec![1; 40])),
            (
                Role::Smtpd,
                Request::Sign {
                    key: KeyRole::Client,
                    scheme: 0x0403,
                    message: vec![1],
                },
            ),
            (Role::Cleanup, Request::Identity(KeyRole::Server)),
        ] {
            assert!(run(answer(&store, role, &mut b, req)).is_err());
        }
        // A scheme the key cannot make is refused, not attempted.
        let r = run(answer(
            &store,
            Role::Smtpd,
            &mut b,
            Request::Sign {
                key: KeyRole::Server,
                scheme: u16::from(SignatureScheme::RSA_PSS_SHA256),
                message: vec![1; 10],
            },
        ))
        .unwrap();
        assert!(matches!(r, Reply::Refused(_)), "{r:?}");
        // A forged ticket does not open.
        let r = run(answer(
            &store,
            Role::Smtpd,
            &mut b,
            Request::TicketDecrypt(vec![7; 90]),
        ))
        .unwrap();
        assert!(matches!(r, Reply::Refused(_)), "{r:?}");
    }

    #[test]
    fn signing_is_rate_limited_per_channel() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = store(dir.path());
        let mut b = Budget::default();
        let req = || Request::Sign {
            key: KeyRole::Server,
            scheme: u16::from(SignatureScheme::ECDSA_NISTP256_SHA256),
            message: vec![1; 64],
        };
        let refused = run(async {
            let mut refused = 0;
            for _ in 0..SIGN_RATE + 50 {
                if let Ok(Reply::Refused(_)) = answer(&store, Role::Smtpd, &mut b, req()).await {
                    refused += 1;
                }
            }
            refused
        });
        // Within one second (ECDSA signs in microseconds), the excess is refused.
        assert!(refused >= 1, "no signature was refused");
    }

    #[test]
    fn a_reload_swaps_good_keys_keeps_the_current_on_error_and_keeps_tickets() {
        let dir = tempfile::tempdir().unwrap();
        let (old, _) = store(dir.path());
        let sealed = match run(answer(
            &old,
            Role::Smtpd,
            &mut Budget::default(),
            Request::TicketEncrypt(vec![9; 40]),
        )) {
            Ok(Reply::Ticket(t)) => t,
            other => panic!("{other:?}"),
        };
        let (fresh, _) = pair(dir.path(), "fresh");
        let params = |pairs: &[(&str, &str)]| {
            Params::from_pairs(
                pairs
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect::<Vec<_>>(),
            )
            .unwrap()
        };
        // The server key renewed; the client key's file is unreadable.
        let p = params(&[
            ("smtpd_tls_chain_files", &fresh),
            ("smtp_tls_cert_file", "/nonexistent/client.pem"),
        ]);
        let new = old.reloaded(&p, &read_path);
        let id = |s: &KeyStore, k| s.key(k).unwrap().identity().chain;
        assert_ne!(id(&new, KeyRole::Server), id(&old, KeyRole::Server));
        assert_eq!(
            id(&new, KeyRole::Client),
            id(&old, KeyRole::Client),
            "a key that fails to load keeps the current one"
        );
        // Channels reconnect only when an identity changed.
        assert!(!new.same_identities(&old));
        let again = new.reloaded(&p, &read_path);
        assert!(again.same_identities(&new));
        // Tickets sealed before the reload still open.
        let r = run(answer(
            &new,
            Role::Smtpd,
            &mut Budget::default(),
            Request::TicketDecrypt(sealed),
        ));
        assert!(matches!(r, Ok(Reply::Ticket(t)) if t == vec![9; 40]));
        // A key the configuration no longer names is gone.
        let none = new.reloaded(&params(&[("smtpd_tls_security_level", "none")]), &read_path);
        assert!(none.server.is_none() && none.client.is_none());
        assert_eq!(files(&p), [fresh, "/nonexistent/client.pem".to_string()]);
    }

    #[test]
    fn mismatched_key_and_certificate_are_refused_with_the_file_names() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = pair(dir.path(), "a");
        let (b, _) = pair(dir.path(), "b");
        let e = match load_pair(std::slice::from_ref(&a), std::slice::from_ref(&b)) {
            Err(e) => e,
            Ok(_) => panic!("mismatched pair loaded"),
        };
        assert!(
            e.contains(&a) && e.contains(&b) && e.contains("does not match"),
            "{e}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let e = match load_pair(&[empty.display().to_string()], &[a]) {
            Err(e) => e,
            Ok(_) => panic!("empty chain loaded"),
        };
        assert!(e.contains("no certificate found"), "{e}");
    }
}
