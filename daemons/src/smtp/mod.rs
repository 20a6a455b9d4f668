//! smtp: the SMTP client. It resolves next hops through the resolver
//! daemon, tries MX hosts in order within one total connect budget (L1032),
//! pipelines commands, uses BDAT where offered, handles 421 at every step
//! and never reuses such a session (L876), and keeps a size-capped cache of
//! idle sessions per destination (L768, L929).
mod anchors;
mod auth;
mod dane;
pub(crate) mod dest;
mod dkim;
mod generic;
mod idle;
mod lmtp;
mod pin;
mod report;
mod requiretls;
mod secure;
mod session;
mod settings;
mod sts;
mod suites;
mod tls;
mod transaction;

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::{OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use postern_config::{Params, Role};
use postern_ipc::deliver::{self, DeliveryResult, Status};
use postern_ipc::edge::Answer;
use postern_ipc::smtpd_broker as sb;

use crate::clock::now_us;
use crate::daemon::{self, Context};
use crate::peerpool::PeerPool;
use crate::{log, warn};
pub(crate) use dest::ResolverClient;
use dest::RouteError;
use secure::PolicyMaps;
use session::{Envelope, Session};
use settings::Settings;
pub(crate) use tls::{Level as TlsLevel, load_roots, parse_entry as parse_tls_entry, policy_keys};
use transaction::Outcome;

pub fn main(ipc_fd: RawFd) -> ! {
    daemon::run(Role::Smtp, ipc_fd, |params: &Params| {
        let s = Settings::new(params)?;
        // Trusted CAs are files: read them before the jail.
        let level = tls::Level::parse(params.str("smtp_tls_security_level"));
        let roots = tls::load_roots(params.str("smtp_tls_CAfile"), level)?;
        // smtp_tls_trust_anchor_file: anchors that replace the CAs for
        // verify and secure (MTA-STS keeps the CAs).
        let anchors = secure::trust_anchor_file(params)?.unwrap_or_else(|| roots.clone().into());
        let cert = Arc::new(tls::ClientCert::default());
        let cert_match = tls::CertMatch::from_params(params, "smtp");
        let policy = tls::Policy::with_matches(
            level,
            params.str("smtp_tls_servername"),
            (anchors.clone(), cert.clone()),
            cert_match.for_level(level, &[]),
            cert_match.digest,
            &s.suites.choice(level, &Default::default())?,
        )?;
        // smtp_tls_policy_maps: what per-destination policies are made of.
        let maps = (!params
            .list("smtp_tls_policy_maps")
            .unwrap_or_default()
            .is_empty())
        .then(|| PolicyMaps {
            table: sb::Table::TlsPolicy,
            param: "smtp_tls_policy_maps",
            dane: true,
            roots: anchors,
            servername: params.str("smtp_tls_servername").to_string(),
            cert_match: cert_match.clone(),
            suites: s.suites.clone(),
            made: RefCell::default(),
        });
        let lmtp = lmtp::LmtpSettings::new(params, &cert)?;
        // This machine's addresses, for mail-loop detection, read before
        // the jail (it cannot open a netlink socket afterwards).
        let local = nix::ifaddrs::getifaddrs()
            .map(|it| {
                it.filter_map(|i| i.address)
                    .filter_map(|a| {
                        a.as_sockaddr_in()
                            .map(|v4| IpAddr::V4(v4.ip()))
                            .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
                    })
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        Ok((
            move |ctx: Context| serve(ctx, s, lmtp, local, (policy, maps, roots), cert),
            Vec::new(),
        ))
    })
}

/// Lookups the broker does for us (smtp_sasl_password_maps).
struct BrokerLookup(PeerPool<sb::Link>);

impl BrokerLookup {
    async fn lookup(&self, table: sb::Table, key: &str) -> Result<Option<String>, String> {
        match self
            .0
            .call(&sb::Request::Lookup(table, key.to_string()))
            .await?
        {
            sb::Reply::Value(v) => Ok(Some(v)),
            sb::Reply::Found(false) => Ok(None),
            sb::Reply::Tempfail(e) => Err(e),
            other => {
                warn!("protocol violation from broker: {other:?} for a lookup");
                Err("protocol violation by the broker".into())
            }
        }
    }
}

/// How many DANE hosts without raw public keys one smtp process keeps in
/// mind; past it, it forgets them all (each then costs one more
/// connection).
const NO_RAW_KEY_MAX: usize = 4096;

struct Smtp {
    s: Settings,
    lmtp: lmtp::LmtpSettings,
    /// For Unix sockets the master connects (LMTP).
    sb: daemon::Switchboard,
    dns: ResolverClient,
    local: Vec<IpAddr>,
    /// smtp_tls_security_level's policy.
    tls: Rc<tls::Policy>,
    /// smtp_tls_policy_maps, when set.
    maps: Option<PolicyMaps>,
    cert: Arc<tls::ClientCert>,
    /// DANE hosts that sent no raw public key when asked: asked for
    /// certificates from then on (at most [`NO_RAW_KEY_MAX`] remembered).
    no_raw_key: RefCell<std::collections::HashSet<String>>,
    /// The `may` and `encrypt` policies DANE falls back to per host, and
    /// the `verify` one an MTA-STS policy in enforce mode asks for.
    fallback: RefCell<HashMap<(tls::Level, tls::Overrides), Rc<tls::Policy>>>,
    /// The CAs of smtp_tls_CAfile (or the system's), for MTA-STS.
    roots: rustls::RootCertStore,
    /// The sts role, for MTA-STS policies (smtp_mta_sts_enable).
    sts: PeerPool<postern_ipc::sts::Link>,
    broker: BrokerLookup,
    /// DKIM signing, when dkim_signing_table is set.
    dkim: Option<dkim::Signer>,
    /// Idle sessions by next hop, with the time they went idle.
    cache: RefCell<HashMap<String, Vec<(Session, Instant)>>>,
}

async fn serve(
    mut ctx: Context,
    s: Settings,
    lmtp: lmtp::LmtpSettings,
    local: Vec<IpAddr>,
    (policy, maps, roots): (tls::Policy, Option<PolicyMaps>, rustls::RootCertStore),
    cert: Arc<tls::ClientCert>,
) {
    let dkim_settings = dkim::Settings::new(&ctx.params);
    let smtp = Rc::new(Smtp {
        dns: ResolverClient(PeerPool::new(
            ctx.switchboard.clone(),
            Role::Resolver,
            ctx.query_timeout(),
            16,
        )),
        s,
        lmtp,
        sb: ctx.switchboard.clone(),
        local,
        tls: Rc::new(policy),
        maps,
        cert: cert.clone(),
        fallback: RefCell::default(),
        no_raw_key: RefCell::default(),
        roots,
        // A policy fetch may take the sts role 10 s on top of its DNS.
        sts: PeerPool::new(
            ctx.switchboard.clone(),
            Role::Sts,
            ctx.query_timeout() + Duration::from_secs(15),
            4,
        ),
        broker: BrokerLookup(PeerPool::new(
            ctx.switchboard.clone(),
            Role::Broker,
            ctx.query_timeout(),
            4,
        )),
        cache: RefCell::default(),
        dkim: dkim_settings.map(|d| {
            dkim::Signer::new(
                d,
                PeerPool::new(
                    ctx.switchboard.clone(),
                    Role::Broker,
                    ctx.query_timeout(),
                    2,
                ),
            )
        }),
    });
    let transfer = ctx.transfer_timeout();
    let query = ctx.query_timeout();
    let sbd = ctx.switchboard.clone();
    let ls = tokio::task::LocalSet::new();
    ls.run_until(async move {
        if smtp.tls.level != tls::Level::None || smtp.maps.is_some() {
            // The client certificate, if the broker holds one; signing
            // with its key is a request to the broker.
            tokio::task::spawn_local(async move {
                let keys = Arc::new(crate::tls::remote::KeyClient::default());
                crate::tls::remote::maintain(
                    sbd,
                    keys,
                    postern_ipc::keys::KeyRole::Client,
                    query.min(Duration::from_secs(5)),
                    move |ck| {
                        if let Ok(mut c) = cert.0.write() {
                            *c = ck;
                        }
                    },
                )
                .await;
            });
        }
        let janitor = smtp.clone();
        tokio::task::spawn_local(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                janitor.expire_idle().await;
            }
        });
        loop {
            tokio::select! {
                p = ctx.inbound.recv() => match p {
                    Some((Role::Qmgr, fd)) => { tokio::task::spawn_local(channel(smtp.clone(), fd, transfer)); }
                    Some((other, _)) => warn!("unexpected channel from {other}"),
                    None => return,
                },
                _ = ctx.shutdown.changed() => return,
            }
        }
    })
    .await;
}

async fn channel(smtp: Rc<Smtp>, fd: OwnedFd, timeout: Duration) {
    crate::edges::serve::<deliver::Link, _, _>(Role::Smtp, Role::Qmgr, fd, timeout, |req| {
        let smtp = smtp.clone();
        async move { Answer::Reply(smtp.deliver(req).await) }
    })
    .await;
}

fn secs(us: u64) -> String {
    format!("{:.2}", us as f64 / 1e6)
}

impl Smtp {
    /// A session to the next hop: a cached one that still answers, or a
    /// new one to the first host that talks to us, within the budget.
    /// `want`: what the message asks of TLS (REQUIRETLS: no cached
    /// session, only hosts and sessions that meet the policy's action;
    /// `TLS-Required: No`: the level is `may`, no TLS policy applies).
    async fn session(
        &self,
        nexthop: &str,
        setup: &mut Duration,
        want: &requiretls::Request,
    ) -> Result<Session, (Status, String, String)> {
        while want.action.is_none()
            && let Some(mut s) = self.take_cached(nexthop)
        {
            if s.rset(&self.s.t).await {
                return Ok(s);
            }
        }
        if nexthop.starts_with("lmtp:") {
            return self.lmtp_session(nexthop, setup).await;
        }
        let t0 = Instant::now();
        let nh = dest::parse_nexthop(nexthop).map_err(|e| {
            (
                Status::Bounced,
                "5.3.5".to_string(),
                format!("bad next hop: {e}"),
            )
        })?;
        let (pol, sts) = if want.tls_optional {
            (
                self.fallback_for(tls::Level::May, &Default::default())?,
                None,
            )
        } else {
            let pol = self.tls_policy(nexthop).await?;
            let sts = self.sts_policy(&nh, &pol).await?;
            (pol, sts)
        };
        let hosts = if pol.level.is_dane() && self.s.dnssec {
            dest::route_dnssec(&self.dns, &nh, &self.local).await
        } else {
            dest::route(&self.dns, &nh, &self.local).await
        }
        .map_err(|e| match e {
            RouteError::Permanent(d, t) => (Status::Bounced, d, t),
            RouteError::Temporary(d, t) => (Status::Deferred, d, t),
        })?;
        let mut last = (
            Status::Deferred,
            "4.4.1".to_string(),
            format!("connect to {nexthop}: no address"),
        );
        for h in hosts {
            if let Some(p) = &sts
                && let Err(e) = sts::admits(p, &nh.host, &h.name)
            {
                self.tls_rpt(&nh, sts.as_ref(), None, (&h.name, None, None), Err(&e.2))
                    .await;
                last = e;
                continue;
            }
            // DANE decides per host; MTA-STS (enforce) asks for verified
            // TLS where DANE does not; other levels are the next hop's.
            let pol = match self.host_policy(&pol, &nh, &h, sts.as_ref()).await {
                Ok(p) => p,
                Err(e) => {
                    log::line(&format!(
                        "Failed to establish session to {nexthop} via {}: {}",
                        h.name, e.2
                    ));
                    self.tls_rpt(&nh, sts.as_ref(), None, (&h.name, None, None), Err(&e.2))
                        .await;
                    last = e;
                    continue;
                }
            };
            if let Some(a) = want.action
                && let Err(e) =
                    requiretls::admits(a, pol.level.name(), pol.authenticates(), &h.name)
            {
                last = e;
                continue;
            }
            for addr in &dest::usable(&h.addrs, self.s.protocols, self.s.prefer) {
                let left = self.s.budget.saturating_sub(t0.elapsed());
                if left.is_zero() {
                    *setup = t0.elapsed();
                    return Err(last);
                }
                // Our address on this connection, once connected.
                let local = std::cell::Cell::new(None);
                match self
                    .connect_one(
                        &pol,
                        &nh,
                        nexthop,
                        (&h.name, *addr, &local),
                        left,
                        want.action,
                    )
                    .await
                {
                    Ok(s) => {
                        let to = (h.name.as_str(), Some(addr.ip()), s.local);
                        self.tls_rpt(&nh, sts.as_ref(), Some(&pol), to, Ok(()))
                            .await;
                        *setup = t0.elapsed();
                        return Ok(s);
                    }
                    // A loop is final: no other host will do better.
                    Err(e) if e.1 == "5.4.6" => {
                        *setup = t0.elapsed();
                        return Err(e);
                    }
                    Err(e) => {
                        let to = (h.name.as_str(), Some(addr.ip()), local.get());
                        self.tls_rpt(&nh, sts.as_ref(), Some(&pol), to, Err(&e.2))
                            .await;
                        last = e;
                    }
                }
            }
        }
        *setup = t0.elapsed();
        Err(last)
    }

    /// One server: connect, greet, STARTTLS as the policy says, AUTH when
    /// a password is configured. With `may`, a failed handshake is retried
    /// once in plaintext on a new connection.
    async fn connect_one(
        &self,
        mut pol: &tls::Policy,
        nh: &dest::Nexthop,
        nexthop: &str,
        (host, addr, local): (&str, std::net::SocketAddr, &std::cell::Cell<Option<IpAddr>>),
        left: Duration,
        reqtls: Option<requiretls::Action>,
    ) -> Result<Session, (Status, String, String)> {
        let deferred = |dsn: &str, text: String| (Status::Deferred, dsn.to_string(), text);
        let mut use_tls = pol.level != tls::Level::None;
        loop {
            let mut s = Session::connect(host, addr, self.s.t.connect.min(left))
                .await
                .map_err(|e| deferred("4.4.1", e))?;
            local.set(s.local);
            if self.s.wrapper {
                // SUBMISSIONS/SMTPS: TLS before the greeting; no plaintext
                // fallback (the configuration requires encrypt or more).
                self.wrap_tls(pol, &mut s, nexthop)
                    .await
                    .map_err(|f| deferred("4.7.5", s.failed(&f)))?;
                use_tls = false;
            }
            match s.handshake(&self.s.helo_name, &self.s.t).await {
                Ok(()) => {}
                Err(session::Failure::Reply(r, step)) => {
                    return Err(deferred(
                        &r.dsn().replacen('5', "4", 1),
                        format!(
                            "host {host}[{}] refused to talk to me: {} (in reply to {step})",
                            addr.ip(),
                            r.text()
                        ),
                    ));
                }
                Err(_) => {
                    return Err(deferred(
                        "4.4.2",
                        format!(
                            "lost connection with {host}[{}] while receiving the initial server greeting",
                            addr.ip()
                        ),
                    ));
                }
            }
            if s.remote_name.eq_ignore_ascii_case(&self.s.myhostname) {
                return Err((
                    Status::Bounced,
                    "5.4.6".into(),
                    format!("mail for {} loops back to myself", nh.host),
                ));
            }
            if use_tls {
                match self.start_tls(pol, &mut s, nexthop).await {
                    Ok(()) => {}
                    // DANE asked for a raw public key and the handshake
                    // failed short of a key check: ask for certificates
                    // on a new connection, and from now on.
                    Err(session::Failure::Tls(e))
                        if pol.x509.is_some()
                            && !e.starts_with("Server certificate not verified") =>
                    {
                        log::line(&format!(
                            "{host}[{}]:{}: no raw public key ({e}); asking for certificates",
                            addr.ip(),
                            addr.port()
                        ));
                        let mut no_raw = self.no_raw_key.borrow_mut();
                        if no_raw.len() >= NO_RAW_KEY_MAX {
                            no_raw.clear();
                        }
                        no_raw.insert(host.to_string());
                        if let Some(x) = &pol.x509 {
                            pol = x;
                        }
                        continue;
                    }
                    // Opportunistic: the handshake failed, go plain.
                    Err(session::Failure::Tls(e)) if !pol.level.required() => {
                        log::line(&format!(
                            "warning: TLS handshake with {host}[{}]:{} failed ({e}); retrying in plaintext",
                            addr.ip(),
                            addr.port()
                        ));
                        use_tls = false;
                        continue;
                    }
                    Err(session::Failure::Reply(r, _)) if !pol.level.required() => {
                        log::line(&format!(
                            "{host}[{}]:{} refused STARTTLS ({}); continuing in plaintext",
                            addr.ip(),
                            addr.port(),
                            r.text()
                        ));
                    }
                    Err(f) => return Err(deferred("4.7.5", s.failed(&f))),
                }
            }
            s.matched = s.tls.is_some() && pol.authenticates();
            s.features = match (pol.dane_word(), s.tls.is_some()) {
                (Some(w), _) => w.to_string(),
                (None, false) if pol.level == tls::Level::May => "may:none".into(),
                (None, _) => pol.level.name().into(),
            };
            if let Some(a) = reqtls {
                let server = format!("{host}[{}]", addr.ip());
                requiretls::session_ok(a, s.tls.is_some(), s.ext.requiretls, &server)?;
            }
            if self.s.sasl {
                self.sasl_login(&mut s, nexthop).await?;
            }
            return Ok(s);
        }
    }

    async fn deliver(&self, req: deliver::Request) -> deliver::Reply {
        let start_us = now_us();
        let mut setup = Duration::ZERO;
        let Some(file) = &req.file else {
            return self.probe(&req, start_us).await;
        };
        let (content, signable, reqtls) = match crate::fsutil::read_queue_file(file) {
            Ok(buf) => {
                let (records, _) = postern_proto::queue::decode_all(&buf);
                let has =
                    |want: postern_proto::queue::Record| records.iter().any(|(_, r)| *r == want);
                let signable = has(postern_proto::queue::Record::Signable);
                let reqtls = has(postern_proto::queue::Record::RequireTls);
                (postern_proto::queue::content(&records), signable, reqtls)
            }
            Err(e) => {
                warn!("{}: cannot read the queue file: {e}", req.queue_id);
                return self.all(
                    &req,
                    Status::Deferred,
                    "4.3.0",
                    "queue file read error",
                    "none",
                    start_us,
                    setup,
                );
            }
        };
        // smtp_generic_maps, before any connection: a table that cannot be
        // read defers the delivery.
        let (rewritten, content) = match self.generic(&req, content).await {
            Ok(x) => x,
            Err(e) => {
                warn!("{}: {e}", req.queue_id);
                return self.all(
                    &req,
                    Status::Deferred,
                    "4.3.0",
                    "smtp_generic_maps lookup failure",
                    "none",
                    start_us,
                    setup,
                );
            }
        };
        // DKIM, over the content as it goes out: a signature that is due
        // and cannot be made defers the delivery.
        let content = match (&self.dkim, signable) {
            (Some(d), true) => match d.fields(&req.queue_id, &content).await {
                Ok(f) if f.is_empty() => content,
                Ok(mut f) => {
                    f.extend_from_slice(&content);
                    f
                }
                Err(e) => {
                    warn!("{}: DKIM signing failed: {e}", req.queue_id);
                    return self.all(
                        &req,
                        Status::Deferred,
                        "4.7.0",
                        "DKIM signing failure",
                        "none",
                        start_us,
                        setup,
                    );
                }
            },
            _ => content,
        };
        let want = match self.tls_request(&req.nexthop, reqtls, &content) {
            Ok(w) => w,
            Err(text) => {
                warn!("{}: {text}", req.queue_id);
                let why = "REQUIRETLS policy configuration error";
                return self.all(
                    &req,
                    Status::Deferred,
                    "4.7.10",
                    why,
                    "none",
                    start_us,
                    setup,
                );
            }
        };
        let mut s = match self.session(&req.nexthop, &mut setup, &want).await {
            Ok(s) => s,
            Err((status, dsn, text)) => {
                return self.all(&req, status, &dsn, &text, "none", start_us, setup);
            }
        };
        let relay = s.relay();
        if req.smtputf8 && !s.ext.smtputf8 {
            let text = format!(
                "SMTPUTF8 is required, but was not offered by host {}[{}]",
                s.host, s.peer
            );
            self.put_cached(&req.nexthop, s).await;
            return self.all(
                &req,
                Status::Bounced,
                "5.6.7",
                &text,
                &relay,
                start_us,
                setup,
            );
        }
        if let Some(limit) = s.ext.size
            && req.size > limit
        {
            let text = format!(
                "message size {} exceeds size limit {limit} of server {}[{}]",
                req.size, s.host, s.peer
            );
            self.put_cached(&req.nexthop, s).await;
            return self.all(
                &req,
                Status::Bounced,
                "5.3.4",
                &text,
                &relay,
                start_us,
                setup,
            );
        }
        let t_xfer = Instant::now();
        let env = Envelope {
            sender: rewritten.as_ref().map_or(&req.sender, |(s, _)| s),
            recipients: req
                .recipients
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let a = rewritten.as_ref().map_or(&r.address, |(_, v)| &v[i]);
                    (r.index, a.as_str(), r.orcpt.as_str(), r.notify)
                })
                .collect(),
            size: req.size.max(content.len() as u64),
            body_8bit: req.body_8bit,
            smtputf8: req.smtputf8,
            ret: req.ret,
            envid: &req.envid,
            requiretls: want.action.is_some(),
        };
        // The tls= field: the session's level, and what became of a
        // REQUIRETLS request.
        let mut features = s.features.clone();
        if want.action.is_some() && !features.is_empty() {
            features.push_str(match (s.tls.is_some() && s.ext.requiretls, s.matched) {
                (true, true) => "/requiretls",
                (true, false) => "/requiretls:nocertmatch",
                (false, _) => "/requiretls:none",
            });
        }
        let tx = s.send(&env, &content, self.s.line_limit, &self.s.t).await;
        let xfer = t_xfer.elapsed();
        let remote = s.remote_name.clone();
        if tx.reusable {
            self.put_cached(&req.nexthop, s).await;
        }
        let mut results = Vec::new();
        for r in &req.recipients {
            let (status, dsn, text) = match tx
                .outcomes
                .iter()
                .find(|(i, _)| *i == r.index)
                .map(|(_, o)| o.clone())
            {
                Some(Outcome::Sent(t)) => (Status::Sent, "2.0.0".to_string(), t),
                Some(Outcome::Deferred(d, t)) => (Status::Deferred, d, t),
                Some(Outcome::Bounced(d, t)) => (Status::Bounced, d, t),
                None => (
                    Status::Deferred,
                    "4.4.2".to_string(),
                    "no reply for this recipient".to_string(),
                ),
            };
            self.log(
                &req,
                &r.address,
                &relay,
                &dsn,
                status,
                &text,
                start_us,
                setup,
                xfer,
                Some(&features),
            );
            results.push(DeliveryResult {
                index: r.index,
                status,
                dsn,
                text,
                relay: relay.clone(),
                remote_mta: remote.clone(),
            });
        }
        deliver::Reply { results }
    }

    /// With smtp_generic_maps (never for LMTP): the sender and the
    /// recipients (in the request's order) as they go out, and the content
    /// with its address headers rewritten. Without: None, and the content
    /// as queued (nothing copied).
    async fn generic(
        &self,
        req: &deliver::Request,
        content: Vec<u8>,
    ) -> Result<(Option<(String, Vec<String>)>, Vec<u8>), String> {
        if !self.s.generic || req.nexthop.starts_with("lmtp:") {
            return Ok((None, content));
        }
        let mut g = generic::Generic::new(&self.broker);
        let sender = g.address(&req.sender).await?;
        let mut out = Vec::with_capacity(req.recipients.len());
        for r in &req.recipients {
            out.push(g.address(&r.address).await?);
        }
        let content = g.content(&content).await?.unwrap_or(content);
        Ok((Some((sender, out)), content))
    }
}
