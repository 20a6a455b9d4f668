//! smtpd's channels to its peers: cleanup channels are pooled and reused
//! transaction after transaction (one transaction per channel at a time),
//! and lookups go to the broker.
use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use postern_config::Role;
use postern_ipc::edge::{ClientEnd, Edge};
use postern_ipc::smtpd_cleanup::{self as sc, Begin, Failure};
use postern_ipc::{ChannelError, Endpoint, smtpd_broker as sb};

use crate::daemon::Switchboard;
use crate::tls::remote::KeyClient;
use crate::warn;

pub type CleanupEp = Endpoint<sc::Request, sc::Reply>;
/// A channel to the policy role: lent to one session for its whole life.
pub type PolicyEp = ClientEnd<postern_ipc::policy::Link>;
/// A session's policy channel, once it asked.
pub type PolicyLease = RefCell<Option<PolicyEp>>;
/// A session's channel to the milter role (smtpd_milters), opened at
/// connect and held for the session's life: the milter role keeps the
/// session's Milter connections while it is open.
#[derive(Default)]
pub struct MilterLease {
    ep: RefCell<Option<ClientEnd<postern_ipc::milter::Link>>>,
    /// The session's ticket, which cleanup attaches with.
    pub ticket: std::cell::Cell<u64>,
    /// The channel failed: every later event is refused for a while.
    pub broken: std::cell::Cell<bool>,
}
/// A TLS acceptor per listener, by service name.
pub type TlsAcceptors = std::collections::HashMap<String, Arc<super::tlsconf::ServerTls>>;
use crate::peerpool::PeerPool;
use postern_ipc::auth;

const MAX_IDLE: usize = 64;

pub struct Shared {
    sb: Switchboard,
    query: Duration,
    transfer: Duration,
    idle: RefCell<Vec<CleanupEp>>,
    lookup: PeerPool<sb::Link>,
    /// Client names, DNS lists and domain checks, through the resolver.
    dns: PeerPool<postern_ipc::resolver::Link>,
    /// Checks are slow by design (Argon2): concurrent ones get their own
    /// channels.
    auth: PeerPool<auth::Link>,
    /// reject_unverified_*: the address-verification cache.
    verify: PeerPool<postern_ipc::verify::Link>,
    /// Recent messages per SASL account (smtpd_account_message_rate_limit).
    account_msgs:
        RefCell<std::collections::HashMap<String, std::collections::VecDeque<std::time::Instant>>>,
    /// The TLS server setup, once the broker sent the certificate chain,
    /// and the channel its key operations go through.
    tls: RefCell<Option<(TlsAcceptors, Arc<KeyClient>)>>,
    /// The client certificate request of each listener that asks for one.
    asks: RefCell<std::collections::HashMap<String, Arc<crate::tls::ccert::Ask>>>,
    /// Policy channels no session holds.
    policy_idle: RefCell<Vec<PolicyEp>>,
    /// Milter channels no session holds (each closed its Milter session).
    milter_idle: RefCell<Vec<ClientEnd<postern_ipc::milter::Link>>>,
    /// Numbers the sessions (the policy `instance` attribute).
    serial: std::cell::Cell<u64>,
    /// Per-client counts and rates (the smtpd_client_*_limit settings).
    anvil: RefCell<super::anvil::Anvil>,
}

fn write_error() -> Failure {
    Failure {
        code: 451,
        enhanced: "4.3.0".into(),
        text: "Error: queue file write error".into(),
    }
}

impl Shared {
    pub fn new(
        switchboard: Switchboard,
        query: Duration,
        transfer: Duration,
        anvil_unit: Duration,
    ) -> Shared {
        let sw = switchboard.clone();
        Shared {
            lookup: PeerPool::new(sw.clone(), Role::Broker, query, 16),
            dns: PeerPool::new(sw.clone(), Role::Resolver, query, 16),
            auth: PeerPool::new(sw.clone(), Role::Auth, query, 8),
            verify: PeerPool::new(sw, Role::Verify, query, 8),
            sb: switchboard,
            query,
            transfer,
            idle: RefCell::default(),
            account_msgs: RefCell::default(),
            tls: RefCell::default(),
            asks: RefCell::default(),
            policy_idle: RefCell::default(),
            milter_idle: RefCell::default(),
            serial: std::cell::Cell::new(0),
            anvil: RefCell::new(super::anvil::Anvil::new(anvil_unit)),
        }
    }

    /// A session of `k` starts: its open sessions and connection rate.
    pub fn anvil_connect(&self, k: &super::anvil::Key) -> (u32, u32) {
        self.anvil
            .borrow_mut()
            .connect(k, std::time::Instant::now())
    }

    pub fn anvil_disconnect(&self, k: &super::anvil::Key) {
        self.anvil.borrow_mut().disconnect(k);
    }

    /// Counts one event of `k`: its rate now.
    pub fn anvil_event(&self, k: &super::anvil::Key, e: super::anvil::Event) -> u32 {
        self.anvil
            .borrow_mut()
            .event(k, e, std::time::Instant::now())
    }

    /// The rate of `e` for `k`, not counting one.
    pub fn anvil_rate(&self, k: &super::anvil::Key, e: super::anvil::Event) -> u32 {
        self.anvil
            .borrow_mut()
            .rate(k, e, std::time::Instant::now())
    }

    /// A number for a new session, unique in this process.
    pub fn next_serial(&self) -> u64 {
        let n = self.serial.get() + 1;
        self.serial.set(n);
        n
    }

    /// One policy request over the session's channel (taken from the
    /// pool, or opened, at its first request), within `timeout`. A
    /// channel that turns out dead (the policy role restarted) is
    /// replaced once; one whose peer broke the protocol is dropped.
    pub async fn policy(
        &self,
        lease: &PolicyLease,
        req: &postern_ipc::policy::Request,
        timeout: Duration,
    ) -> Result<postern_ipc::policy::Reply, String> {
        for _ in 0..2 {
            let held = lease.borrow_mut().take();
            let held = held.or_else(|| self.policy_idle.borrow_mut().pop());
            let was_held = held.is_some();
            let mut ep = match held {
                Some(ep) => ep,
                None => {
                    self.connect::<postern_ipc::policy::Link>(Role::Policy, timeout)
                        .await?
                }
            };
            ep.channel().timeout = timeout;
            match ep.call(req).await {
                Ok(r) => {
                    *lease.borrow_mut() = Some(ep);
                    return Ok(r);
                }
                Err(e @ ChannelError::Violation(_)) => {
                    crate::edges::dropped(postern_ipc::policy::EDGE, Role::Policy, &e);
                    return Err(format!("policy: {e}"));
                }
                Err(_) if was_held => continue,
                Err(e) => return Err(format!("policy: {e}")),
            }
        }
        Err("policy service unavailable".into())
    }

    /// Milter events of the session: `reqs` sent in order, the last one
    /// answered. The session's opening opens the channel; a channel that
    /// fails is not replaced (the session's Milters are gone with it).
    pub async fn milter(
        &self,
        lease: &MilterLease,
        reqs: Vec<postern_ipc::milter::Request>,
        timeout: Duration,
    ) -> Result<postern_ipc::milter::Verdict, String> {
        use postern_ipc::milter::Request;
        if lease.broken.get() {
            return Err("the milter service failed earlier in this session".into());
        }
        let opening = matches!(reqs.first(), Some(Request::Session(_)));
        // A pooled channel may have died with a restarted milter role:
        // the opening is tried once more on a fresh one.
        for _ in 0..2 {
            let held = lease.ep.borrow_mut().take();
            let pooled = if held.is_none() && opening {
                self.milter_idle.borrow_mut().pop()
            } else {
                None
            };
            let was_pooled = pooled.is_some();
            let mut ep = match held.or(pooled) {
                Some(ep) => ep,
                None if opening => {
                    match self
                        .connect::<postern_ipc::milter::Link>(Role::Milter, timeout)
                        .await
                    {
                        Ok(ep) => ep,
                        Err(e) => {
                            lease.broken.set(true);
                            return Err(e);
                        }
                    }
                }
                None => {
                    lease.broken.set(true);
                    return Err("no milter session".into());
                }
            };
            ep.channel().timeout = timeout;
            match Self::milter_calls(&mut ep, &reqs).await {
                Ok(v) => {
                    *lease.ep.borrow_mut() = Some(ep);
                    return Ok(v);
                }
                Err(e) if was_pooled && !e.is_violation() => continue,
                Err(e) => {
                    crate::edges::dropped(postern_ipc::milter::EDGE, Role::Milter, &e);
                    lease.broken.set(true);
                    return Err(format!("milter: {e}"));
                }
            }
        }
        lease.broken.set(true);
        Err("milter service unavailable".into())
    }

    /// `reqs` in order over one channel; the last one's verdict.
    async fn milter_calls(
        ep: &mut ClientEnd<postern_ipc::milter::Link>,
        reqs: &[postern_ipc::milter::Request],
    ) -> Result<postern_ipc::milter::Verdict, ChannelError> {
        use postern_ipc::milter::Reply;
        let Some((last, first)) = reqs.split_last() else {
            return Err(ChannelError::Closed);
        };
        for r in first {
            ep.send(r).await?;
        }
        match ep.call(last).await? {
            Reply::Verdict(v) => Ok(v),
            Reply::Edit(_) => Err(ChannelError::Violation(postern_ipc::Violation::Field {
                field: "edit",
                why: "a change before the end of the message".into(),
            })),
        }
    }

    /// A session is over: its Milter session ends, and its channel serves
    /// the next session.
    pub async fn release_milter(&self, lease: &MilterLease) {
        let Some(ep) = lease.ep.borrow_mut().take() else {
            return;
        };
        if lease.broken.get() || ep.send(&postern_ipc::milter::Request::Close).await.is_err() {
            return;
        }
        let mut idle = self.milter_idle.borrow_mut();
        if idle.len() < MAX_IDLE {
            idle.push(ep);
        }
    }

    /// A session is over: its policy channel (and the connections the
    /// policy role keeps for it) serves the next session.
    pub fn release_policy(&self, lease: &PolicyLease) {
        if let Some(ep) = lease.borrow_mut().take() {
            let mut idle = self.policy_idle.borrow_mut();
            if idle.len() < MAX_IDLE {
                idle.push(ep);
            }
        }
    }

    pub fn set_asks(&self, a: std::collections::HashMap<String, Arc<crate::tls::ccert::Ask>>) {
        *self.asks.borrow_mut() = a;
    }

    /// The client certificate request of the listener `scope`, if it asks.
    pub fn ask(&self, scope: &str) -> Option<Arc<crate::tls::ccert::Ask>> {
        self.asks.borrow().get(scope).cloned()
    }

    /// The TLS server setup of the listener `scope`, while the broker can
    /// sign for it: with the broker away, STARTTLS is not offered (and
    /// answered 454) rather than started and failed.
    pub fn tls(&self, scope: &str) -> Option<Arc<super::tlsconf::ServerTls>> {
        match &*self.tls.borrow() {
            Some((a, keys)) if keys.connected() => a.get(scope).cloned(),
            _ => None,
        }
    }

    /// Whether [`Shared::tls`] would give a setup now.
    pub fn tls_ready(&self) -> bool {
        matches!(&*self.tls.borrow(), Some((_, keys)) if keys.connected())
    }

    /// The acceptors, one per listener (each with its own ticket scope).
    pub fn set_tls(&self, t: Option<(TlsAcceptors, Arc<KeyClient>)>) {
        *self.tls.borrow_mut() = t;
    }

    /// A channel of edge `E` to `role`: the hello within the query
    /// deadline, then calls within `timeout`.
    async fn connect<E: Edge>(
        &self,
        role: Role,
        timeout: Duration,
    ) -> Result<ClientEnd<E>, String> {
        let mut ep = crate::edges::open::<E>(&self.sb, role, self.query).await?;
        ep.channel().timeout = timeout;
        Ok(ep)
    }

    /// Starts a transaction in cleanup: a queue id, and the channel that
    /// carries the rest of it.
    pub async fn begin(&self, b: Begin) -> Result<(String, CleanupEp), Failure> {
        for _ in 0..2 {
            let pooled = self.idle.borrow_mut().pop();
            let was_pooled = pooled.is_some();
            let mut ep = match pooled {
                Some(ep) => ep,
                None => match self.connect::<sc::Link>(Role::Cleanup, self.transfer).await {
                    Ok(ep) => ep,
                    Err(e) => {
                        warn!("cannot reach cleanup: {e}");
                        return Err(write_error());
                    }
                },
            };
            match ep.call(&sc::Request::Begin(b.clone())).await {
                Ok(sc::Reply::Begun(id)) => return Ok((id, ep)),
                Ok(sc::Reply::Failed(f)) => {
                    self.release(ep);
                    return Err(f);
                }
                // The channel is dropped, not released to the pool.
                Ok(other) => {
                    warn!(
                        "protocol violation from cleanup: {other:?} in answer to begin; channel dropped"
                    );
                    return Err(write_error());
                }
                Err(ChannelError::Violation(v)) => {
                    warn!("protocol violation from cleanup: {v}; channel dropped");
                    return Err(write_error());
                }
                // A pooled channel may have died with its cleanup: try a fresh one.
                Err(_) if was_pooled => continue,
                Err(e) => {
                    warn!("cleanup channel: {e}");
                    return Err(write_error());
                }
            }
        }
        Err(write_error())
    }

    pub fn release(&self, ep: CleanupEp) {
        let mut idle = self.idle.borrow_mut();
        if idle.len() < MAX_IDLE {
            idle.push(ep);
        }
    }

    /// Abandons a transaction; the channel is reused when cleanup agrees.
    pub async fn abort(&self, mut ep: CleanupEp) {
        if let Ok(sc::Reply::Aborted) = ep.call(&sc::Request::Abort).await {
            self.release(ep);
        }
    }

    async fn broker_lookup(&self, req: sb::Request) -> Result<sb::Reply, String> {
        self.lookup.call(&req).await
    }

    /// Checks SASL credentials with the auth role.
    pub async fn authenticate(&self, req: auth::Request) -> Result<auth::Reply, String> {
        self.auth.call(&req).await
    }

    /// Counts one message for `user`; false when that exceeds `limit` per
    /// `unit` (the message must be refused).
    pub fn account_message(&self, user: &str, limit: usize, unit: Duration) -> bool {
        let now = std::time::Instant::now();
        let mut all = self.account_msgs.borrow_mut();
        if all.len() > 10_000 {
            all.retain(|_, q| q.back().is_some_and(|t| now - *t < unit));
        }
        let q = all.entry(user.to_string()).or_default();
        while q.front().is_some_and(|t| now - *t >= unit) {
            q.pop_front();
        }
        if q.len() >= limit {
            return false;
        }
        q.push_back(now);
        true
    }

    /// Is `local` a local user or alias (local_recipient_maps)?
    pub async fn local_recipient(&self, local: &str) -> Result<bool, String> {
        match self
            .broker_lookup(sb::Request::LocalRecipient(local.to_string()))
            .await?
        {
            sb::Reply::Found(f) => Ok(f),
            sb::Reply::Tempfail(e) => Err(format!("local_recipient_maps: {e}")),
            r => {
                warn!("protocol violation from broker: {r:?} for a recipient check");
                Err("protocol violation by the broker".into())
            }
        }
    }

    /// The logins that own `sender` in smtpd_sender_login_maps: the full
    /// address first, then `@domain` (None: nobody owns it).
    pub async fn sender_logins(&self, sender: &str) -> Result<Option<Vec<String>>, String> {
        for k in crate::access::sender_login_keys(sender) {
            match self
                .broker_lookup(sb::Request::Lookup(sb::Table::SenderLogin, k))
                .await?
            {
                sb::Reply::Value(v) => return Ok(Some(crate::access::sender_owners(&v))),
                sb::Reply::Found(false) => continue,
                sb::Reply::Tempfail(e) => return Err(format!("smtpd_sender_login_maps: {e}")),
                r => {
                    warn!("protocol violation from broker: {r:?} for a lookup");
                    return Err("protocol violation by the broker".into());
                }
            }
        }
        Ok(None)
    }

    /// An access map of the restrictions: the first of `keys` found.
    pub async fn access(
        &self,
        map: &str,
        keys: Vec<String>,
    ) -> Result<Option<(usize, String)>, String> {
        let req = sb::Request::Access {
            map: map.to_string(),
            keys,
        };
        match self.broker_lookup(req).await? {
            sb::Reply::Hit(i, v) => Ok(Some((i as usize, v))),
            sb::Reply::Found(false) => Ok(None),
            sb::Reply::Tempfail(e) => Err(e),
            r => {
                warn!("protocol violation from broker: {r:?} for an access lookup");
                Err("protocol violation by the broker".into())
            }
        }
    }

    /// Is `address` listed in relay_recipient_maps? Keys as Postfix's
    /// mail_addr_find: the address, without its extension, then `@domain`.
    pub async fn relay_recipient(&self, address: &str, base: &str) -> Result<bool, String> {
        let (local, domain) = address.rsplit_once('@').unwrap_or((address, ""));
        let mut keys = vec![address.to_string()];
        if base != local {
            keys.push(format!("{base}@{domain}"));
        }
        keys.push(format!("@{domain}"));
        for k in keys {
            match self
                .broker_lookup(sb::Request::Lookup(sb::Table::RelayRecipient, k))
                .await?
            {
                sb::Reply::Value(_) => return Ok(true),
                sb::Reply::Found(false) => continue,
                sb::Reply::Tempfail(e) => return Err(format!("relay_recipient_maps: {e}")),
                r => {
                    warn!("protocol violation from broker: {r:?} for a lookup");
                    return Err("protocol violation by the broker".into());
                }
            }
        }
        Ok(false)
    }

    /// virtual_alias_maps and virtual_alias_domains (or the virtual
    /// mailbox ones), through the broker: is the address listed, is its
    /// domain one.
    pub async fn virtual_table(
        &self,
        which: crate::restrict::Virtual,
        address: &str,
    ) -> Result<(bool, bool), String> {
        let domain = address.rsplit_once('@').map_or("", |(_, d)| d);
        let (maps, domains) = match which {
            crate::restrict::Virtual::Alias => {
                (sb::Table::VirtualAlias, sb::Table::VirtualAliasDomain)
            }
            crate::restrict::Virtual::Mailbox => {
                (sb::Table::VirtualMailbox, sb::Table::VirtualMailboxDomain)
            }
        };
        let mut answers = [false; 2];
        for (i, (t, q)) in [(maps, address), (domains, domain)].into_iter().enumerate() {
            match self
                .broker_lookup(sb::Request::Lookup(t, q.to_string()))
                .await?
            {
                sb::Reply::Found(f) => answers[i] = f,
                sb::Reply::Tempfail(e) => return Err(format!("{which:?} lookup: {e}")),
                r => {
                    warn!("protocol violation from broker: {r:?} for a lookup");
                    return Err("protocol violation by the broker".into());
                }
            }
        }
        Ok((answers[0], answers[1]))
    }

    /// One DNS question to the resolver.
    pub async fn dns(
        &self,
        req: postern_ipc::resolver::Request,
    ) -> Result<postern_ipc::resolver::Reply, String> {
        self.dns.call(&req).await
    }

    pub async fn verify(&self, address: &str) -> Result<postern_ipc::verify::Reply, String> {
        let req = postern_ipc::verify::Request {
            address: address.into(),
        };
        self.verify.call(&req).await
    }
}
