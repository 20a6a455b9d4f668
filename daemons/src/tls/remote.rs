//! The network-facing side: rustls keys and a ticketer that hold nothing
//! secret and ask the broker for every private-key operation.
//!
//! rustls calls a signer and a ticketer synchronously, inside the handshake,
//! so the call to the broker blocks this thread for one round trip (tens of
//! microseconds for ECDSA), bounded by a deadline. When the broker is gone
//! the call fails at once, the handshake ends with an alert, and
//! [`maintain`] reconnects in the background; handshakes work again as soon
//! as the broker is back.
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postern_config::Role;
use postern_ipc::ChannelError;
use postern_ipc::blocking::BlockingClient;
use postern_ipc::keys::{self, Identity, KeyRole, Reply, Request};
use rustls::pki_types::CertificateDer;
use rustls::server::ProducesTickets;
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};
use tokio::sync::Notify;

use crate::daemon::Switchboard;
use crate::{info, warn};

type Client = BlockingClient<Request, Reply>;

/// The synchronous channel to the broker's key service.
#[derive(Default)]
pub struct KeyClient {
    inner: Mutex<Option<Client>>,
    /// Notified when the channel breaks, so [`maintain`] reconnects.
    lost: Notify,
}

impl std::fmt::Debug for KeyClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyClient")
    }
}

impl KeyClient {
    pub fn call(&self, req: &Request) -> Result<Reply, String> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Some(c) = g.as_mut() else {
            return Err("the key service (broker) is not reachable".into());
        };
        match c.call(req) {
            Ok(r) => Ok(r),
            Err(ChannelError::Violation(v)) => {
                drop(g);
                Err(self.violation(&v.to_string()))
            }
            Err(e) => {
                *g = None;
                self.lost.notify_one();
                Err(format!("key service: {e}"))
            }
        }
    }

    /// The broker broke the protocol: the channel is dropped (and opened
    /// again by [`maintain`]), never the process.
    fn violation(&self, what: &str) -> String {
        warn!("protocol violation from broker keys: {what}; channel dropped");
        *self.inner.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.lost.notify_one();
        format!("protocol violation from the key service: {what}")
    }

    /// Is the channel to the broker up (as far as we know)?
    pub fn connected(&self) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    fn install(&self, c: Option<Client>) {
        *self.inner.lock().unwrap_or_else(|e| e.into_inner()) = c;
    }
}

tokio::task_local! {
    /// The key kind and scheme of the signature smtpd's handshake makes,
    /// for the task that drives that handshake: its TLS line and Received
    /// header name it (`server-signature ECDSA (prime256v1) server-digest
    /// SHA256`, see [`super::signature_text`]).
    pub static SERVER_SIGNATURE: std::rc::Rc<
        std::cell::RefCell<Option<(postern_proto::ccert::KeyKind, SignatureScheme)>>,
    >;
}

/// A signing key whose private half is in the broker.
#[derive(Debug)]
pub struct RemoteKey {
    client: Arc<KeyClient>,
    role: KeyRole,
    schemes: Vec<SignatureScheme>,
    algorithm: SignatureAlgorithm,
    /// The key's kind, from the certificate, for the TLS line.
    kind: Option<postern_proto::ccert::KeyKind>,
}

impl SigningKey for RemoteKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let scheme = *self.schemes.iter().find(|s| offered.contains(s))?;
        if let Some(kind) = &self.kind {
            let _ = SERVER_SIGNATURE.try_with(|c| *c.borrow_mut() = Some((kind.clone(), scheme)));
        }
        Some(Box::new(RemoteSigner {
            client: self.client.clone(),
            role: self.role,
            scheme,
        }))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        self.algorithm
    }
}

#[derive(Debug)]
struct RemoteSigner {
    client: Arc<KeyClient>,
    role: KeyRole,
    scheme: SignatureScheme,
}

impl Signer for RemoteSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        if message.len() > keys::MAX_SIGN_INPUT {
            return Err(rustls::Error::General("signature input too large".into()));
        }
        let req = Request::Sign {
            key: self.role,
            scheme: u16::from(self.scheme),
            message: message.to_vec(),
        };
        match self.client.call(&req) {
            Ok(Reply::Signature(s)) => Ok(s),
            Ok(Reply::Refused(why)) => Err(rustls::Error::General(format!(
                "broker refused to sign: {why}"
            ))),
            Ok(Reply::NoKey) => Err(rustls::Error::General("the broker has no such key".into())),
            Ok(_) => Err(rustls::Error::General(
                self.client.violation("wrong reply to sign"),
            )),
            Err(e) => Err(rustls::Error::General(e)),
        }
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

/// Session tickets sealed and opened by the broker, which holds and
/// rotates the ticket keys. Each listener has its own scope: the scope is
/// sealed inside the ticket with the session state, and a ticket whose
/// scope is another listener's is refused (a full handshake follows), so a
/// ticket issued on port 25 never resumes a session on 587 or 465.
#[derive(Debug)]
pub struct RemoteTicketer {
    pub client: Arc<KeyClient>,
    scope: Vec<u8>,
}

impl RemoteTicketer {
    /// `scope`: the listener's service name (at most 255 bytes are used).
    pub fn new(client: Arc<KeyClient>, scope: &str) -> RemoteTicketer {
        let b = scope.as_bytes();
        RemoteTicketer {
            client,
            scope: b[..b.len().min(255)].to_vec(),
        }
    }

    /// The plaintext the broker seals: the scope's length, the scope, then
    /// rustls's session state.
    fn seal_input(&self, state: &[u8]) -> Option<Vec<u8>> {
        let mut v = Vec::with_capacity(1 + self.scope.len() + state.len());
        v.push(u8::try_from(self.scope.len()).ok()?);
        v.extend_from_slice(&self.scope);
        v.extend_from_slice(state);
        (v.len() <= keys::MAX_TICKET_PLAIN).then_some(v)
    }

    /// The session state of an opened ticket, if it was sealed for this
    /// listener.
    fn unsealed(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let (&n, rest) = plain.split_first()?;
        let scope = rest.get(..usize::from(n))?;
        (scope == self.scope.as_slice()).then(|| rest[usize::from(n)..].to_vec())
    }
}

impl ProducesTickets for RemoteTicketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        6 * 3600
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let sealed = self.seal_input(plain)?;
        match self.client.call(&Request::TicketEncrypt(sealed)) {
            Ok(Reply::Ticket(t)) => Some(t),
            _ => None,
        }
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        if cipher.len() > keys::MAX_TICKET {
            return None;
        }
        match self.client.call(&Request::TicketDecrypt(cipher.to_vec())) {
            Ok(Reply::Ticket(t)) => self.unsealed(&t),
            _ => None,
        }
    }
}

/// Builds the certified key for an identity the broker sent, after checking
/// that every entry of the chain is a certificate.
pub fn certified_key(
    client: &Arc<KeyClient>,
    role: KeyRole,
    id: Identity,
) -> Result<Arc<CertifiedKey>, String> {
    let chain: Vec<CertificateDer<'static>> =
        id.chain.into_iter().map(CertificateDer::from).collect();
    for (n, c) in chain.iter().enumerate() {
        webpki::EndEntityCert::try_from(c)
            .map_err(|e| format!("chain entry {n} from the broker is not a certificate: {e:?}"))?;
    }
    let key = RemoteKey {
        client: client.clone(),
        role,
        schemes: id.schemes.into_iter().map(SignatureScheme::from).collect(),
        algorithm: SignatureAlgorithm::from(id.algorithm),
        kind: chain
            .first()
            .and_then(|c| postern_proto::ccert::key_kind(c)),
    };
    Ok(Arc::new(CertifiedKey::new(chain, Arc::new(key))))
}

/// Keeps `client` connected to the broker's key service. After each
/// (re)connection, `on_identity` gets the current identity of `role`'s key
/// (None: the broker has no such key). Runs until the process ends.
pub async fn maintain(
    sb: Switchboard,
    client: Arc<KeyClient>,
    role: KeyRole,
    timeout: Duration,
    on_identity: impl Fn(Option<Arc<CertifiedKey>>),
) {
    let mut delay = Duration::from_millis(100);
    let mut was_lost = false;
    loop {
        match connect(&sb, role, timeout).await {
            Ok((c, watch, id)) => {
                delay = Duration::from_millis(100);
                let ck = match id.map(|id| certified_key(&client, role, id)).transpose() {
                    Ok(ck) => ck,
                    Err(e) => {
                        // A chain that does not parse is the broker's
                        // fault: drop the channel and try again later.
                        warn!("protocol violation from broker keys: {e}; channel dropped");
                        was_lost = true;
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                        continue;
                    }
                };
                client.install(Some(c));
                if was_lost {
                    info!("key service reconnected");
                }
                on_identity(ck);
                wait_lost(&client, watch).await;
                warn!("lost the channel to the key service (broker); reconnecting");
                was_lost = true;
            }
            Err(e) => {
                if !was_lost {
                    warn!("cannot reach the key service (broker): {e}");
                    was_lost = true;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Returns when the channel broke: a call failed, or the broker went away
/// while no call was running (seen on a duplicate of the socket, so that
/// STARTTLS stops being offered at once rather than at the next handshake).
async fn wait_lost(client: &KeyClient, watch: Option<tokio::io::unix::AsyncFd<OwnedFd>>) {
    let Some(watch) = watch else {
        return client.lost.notified().await;
    };
    loop {
        tokio::select! {
            _ = client.lost.notified() => return,
            r = watch.readable() => {
                let Ok(mut g) = r else { return client.lost.notified().await };
                // Calls run on this thread too, so none is in flight now:
                // readable means end of file (or junk, which is a break too).
                let mut b = [0u8; 1];
                match nix::sys::socket::recv(
                    watch.get_ref().as_raw_fd(),
                    &mut b,
                    nix::sys::socket::MsgFlags::MSG_PEEK | nix::sys::socket::MsgFlags::MSG_DONTWAIT,
                ) {
                    Err(nix::errno::Errno::EAGAIN) => g.clear_ready(),
                    _ => {
                        client.install(None);
                        return;
                    }
                }
            }
        }
    }
}

async fn connect(
    sb: &Switchboard,
    role: KeyRole,
    timeout: Duration,
) -> Result<
    (
        Client,
        Option<tokio::io::unix::AsyncFd<OwnedFd>>,
        Option<Identity>,
    ),
    String,
> {
    let mut ep = crate::edges::open::<keys::Link>(sb, Role::Broker, timeout).await?;
    let id = match ep.call(&Request::Identity(role)).await {
        Ok(Reply::Identity(id)) => Some(id),
        Ok(Reply::NoKey) => None,
        Ok(other) => {
            warn!(
                "protocol violation from broker keys: {other:?} in answer to identity; channel dropped"
            );
            return Err("protocol violation by the key service".into());
        }
        Err(ChannelError::Violation(v)) => {
            warn!("protocol violation from broker keys: {v}; channel dropped");
            return Err("protocol violation by the key service".into());
        }
        Err(e) => return Err(e.to_string()),
    };
    let fd = ep.into_channel().into_fd();
    let watch = fd
        .try_clone()
        .ok()
        .and_then(|d| postern_sandbox::sys::async_fd(d).ok());
    Ok((BlockingClient::new(fd, timeout), watch, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A broker that answers with a malformed frame breaks only the
    /// channel: the call fails, the client reports itself disconnected
    /// (so STARTTLS stops being offered until `maintain` reconnects), and
    /// the process goes on.
    #[test]
    fn a_violation_from_the_broker_drops_the_channel_not_the_process() {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
        use std::os::fd::AsFd;
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        )
        .unwrap();
        let broker = std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            let mut pfd = [nix::poll::PollFd::new(
                theirs.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(5000u16)).unwrap();
            let n = nix::sys::socket::recv(
                theirs.as_raw_fd(),
                &mut buf,
                nix::sys::socket::MsgFlags::empty(),
            )
            .unwrap();
            assert!(n > 0);
            // A frame whose length header claims more than it carries.
            nix::sys::socket::send(
                theirs.as_raw_fd(),
                b"\xff\xff\xff\x7fjunk",
                nix::sys::socket::MsgFlags::empty(),
            )
            .unwrap();
            theirs
        });
        let client = KeyClient::default();
        client.install(Some(BlockingClient::new(ours, Duration::from_secs(5))));
        assert!(client.connected());
        let e = client
            .call(&Request::Identity(KeyRole::Server))
            .unwrap_err();
        assert!(e.contains("protocol violation"), "{e}");
        assert!(!client.connected());
        drop(broker.join().unwrap());
    }

    #[test]
    fn a_ticket_opens_only_in_its_own_scope() {
        let client = Arc::new(KeyClient::default());
        let smtp = RemoteTicketer::new(client.clone(), "127.0.0.1:25");
        let submission = RemoteTicketer::new(client, "127.0.0.1:587");
        let sealed = smtp.seal_input(b"state").unwrap();
        assert_eq!(smtp.unsealed(&sealed).as_deref(), Some(&b"state"[..]));
        assert_eq!(submission.unsealed(&sealed), None);
        assert_eq!(smtp.unsealed(b""), None);
        assert_eq!(smtp.unsealed(&[200, b'x']), None, "a length past the end");
        let long = RemoteTicketer::new(Arc::new(KeyClient::default()), &"s".repeat(400));
        assert_eq!(long.scope.len(), 255);
        assert!(smtp.seal_input(&vec![0; keys::MAX_TICKET_PLAIN]).is_none());
    }
}
