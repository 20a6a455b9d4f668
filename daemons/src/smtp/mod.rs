//! smtp: the SMTP client. It resolves next hops through the resolver
//! daemon, tries MX hosts in order within one total connect budget (L1032),
//! pipelines commands, uses BDAT where offered, handles 421 at every step
//! and never reuses such a session (L876), and keeps a size-capped cache of
//! idle sessions per destination (L768, L929).
mod dest;
mod session;

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::{OwnedFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use postern_config::{Params, Role};
use postern_ipc::deliver::{self, DeliveryResult, Status};
use postern_ipc::resolver::{self as rs, Reply, Request};
use postern_ipc::{Channel, ChannelError, Endpoint, Message};

use crate::daemon::{self, Context, Switchboard};
use crate::{fatal, log, warn};
use dest::{Dns, RouteError};
use session::{Envelope, Outcome, Session, Timeouts};

pub fn main(ipc_fd: RawFd) -> ! {
    daemon::run(Role::Smtp, ipc_fd, |params: &Params| {
        let s = Settings::new(params)?;
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
        Ok((move |ctx: Context| serve(ctx, s, local), Vec::new()))
    })
}

struct Settings {
    helo_name: String,
    myhostname: String,
    t: Timeouts,
    budget: Duration,
    line_limit: usize,
    cache_idle: Duration,
    reuse_time: Duration,
    cache_size: usize,
}

impl Settings {
    fn new(p: &Params) -> Result<Settings, String> {
        let e = |x: postern_config::ParamError| x.to_string();
        let d = |n: &str| p.duration(n).map_err(e);
        Ok(Settings {
            helo_name: p.str("smtp_helo_name").into(),
            myhostname: p.str("myhostname").into(),
            t: Timeouts {
                connect: d("smtp_connect_timeout")?,
                helo: d("smtp_helo_timeout")?,
                mail: d("smtp_mail_timeout")?,
                rcpt: d("smtp_rcpt_timeout")?,
                data_init: d("smtp_data_init_timeout")?,
                data_xfer: d("smtp_data_xfer_timeout")?,
                data_done: d("smtp_data_done_timeout")?,
            },
            budget: d("smtp_connect_budget")?,
            line_limit: p.int("smtp_line_length_limit").map_err(e)? as usize,
            cache_idle: d("smtp_connection_cache_time_limit")?,
            reuse_time: d("smtp_connection_reuse_time_limit")?,
            cache_size: p.int("smtp_connection_cache_size").map_err(e)? as usize,
        })
    }
}

/// The resolver daemon, as the smtp client's DNS.
struct ResolverClient {
    sb: Switchboard,
    query: Duration,
    idle: RefCell<Vec<Endpoint<Request, Reply>>>,
}

impl Dns for ResolverClient {
    async fn query(&self, req: Request) -> Reply {
        for _ in 0..2 {
            let pooled = self.idle.borrow_mut().pop();
            let was_pooled = pooled.is_some();
            let mut ep = match pooled {
                Some(ep) => ep,
                None => match self.connect().await {
                    Ok(ep) => ep,
                    Err(e) => return Reply::Tempfail(format!("resolver unavailable: {e}")),
                },
            };
            match ep.call(&req).await {
                Ok(r) => {
                    self.idle.borrow_mut().push(ep);
                    return r;
                }
                Err(ChannelError::Violation(v)) => fatal!("protocol violation from resolver: {v}"),
                Err(_) if was_pooled => continue,
                Err(e) => return Reply::Tempfail(format!("resolver: {e}")),
            }
        }
        Reply::Tempfail("resolver unavailable".into())
    }
}

impl ResolverClient {
    async fn connect(&self) -> Result<Endpoint<Request, Reply>, String> {
        let fd = self
            .sb
            .connect(Role::Resolver)
            .await
            .map_err(|e| e.to_string())?;
        let mut ch = Channel::new(fd, <Reply as Message>::MAX_FRAME, self.query)
            .map_err(|e| e.to_string())?;
        ch.hello_client(rs::EDGE, rs::VERSION)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Endpoint::from_channel(ch))
    }
}

struct Smtp {
    s: Settings,
    dns: ResolverClient,
    local: Vec<IpAddr>,
    /// Idle sessions by next hop, with the time they went idle.
    cache: RefCell<HashMap<String, Vec<(Session, Instant)>>>,
}

async fn serve(mut ctx: Context, s: Settings, local: Vec<IpAddr>) {
    let smtp = Rc::new(Smtp {
        dns: ResolverClient {
            sb: ctx.switchboard.clone(),
            query: ctx.query_timeout(),
            idle: RefCell::default(),
        },
        s,
        local,
        cache: RefCell::default(),
    });
    let transfer = ctx.transfer_timeout();
    let ls = tokio::task::LocalSet::new();
    ls.run_until(async move {
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
    let Ok(mut ch) = Channel::new(fd, <deliver::Request as Message>::MAX_FRAME, timeout) else {
        return;
    };
    match ch.hello_server(deliver::EDGE, deliver::VERSION).await {
        Ok(()) => {}
        Err(ChannelError::Violation(v)) => fatal!("protocol violation from qmgr: {v}"),
        Err(_) => return,
    }
    let mut ep = Endpoint::<deliver::Reply, deliver::Request>::from_channel(ch);
    loop {
        let req = match ep.recv().await {
            Ok(r) => r,
            Err(ChannelError::Violation(v)) => fatal!("protocol violation from qmgr: {v}"),
            Err(_) => return,
        };
        let reply = smtp.deliver(req).await;
        if ep.send(&reply).await.is_err() {
            return;
        }
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64
}

fn secs(us: u64) -> String {
    format!("{:.2}", us as f64 / 1e6)
}

impl Smtp {
    async fn expire_idle(&self) {
        let stale: Vec<Session> = {
            let mut cache = self.cache.borrow_mut();
            let mut out = Vec::new();
            for list in cache.values_mut() {
                let (keep, old): (Vec<_>, Vec<_>) = list
                    .drain(..)
                    .partition(|(_, t)| t.elapsed() < self.s.cache_idle);
                *list = keep;
                out.extend(old.into_iter().map(|(s, _)| s));
            }
            cache.retain(|_, v| !v.is_empty());
            out
        };
        for s in stale {
            s.quit().await;
        }
    }

    fn take_cached(&self, nexthop: &str) -> Option<Session> {
        let mut cache = self.cache.borrow_mut();
        let list = cache.get_mut(nexthop)?;
        let s = list.pop().map(|(s, _)| s);
        if list.is_empty() {
            cache.remove(nexthop);
        }
        s
    }

    /// Keeps an idle session, within the cache's size cap (L929).
    async fn put_cached(&self, nexthop: &str, s: Session) {
        let total: usize = self.cache.borrow().values().map(Vec::len).sum();
        if total >= self.s.cache_size || s.started.elapsed() >= self.s.reuse_time {
            s.quit().await;
            return;
        }
        self.cache
            .borrow_mut()
            .entry(nexthop.to_string())
            .or_default()
            .push((s, Instant::now()));
    }

    /// A session to the next hop: a cached one that still answers, or a
    /// new one to the first host that talks to us, within the budget.
    async fn session(
        &self,
        nexthop: &str,
        setup: &mut Duration,
    ) -> Result<Session, (Status, String, String)> {
        while let Some(mut s) = self.take_cached(nexthop) {
            if s.rset(&self.s.t).await {
                return Ok(s);
            }
        }
        let t0 = Instant::now();
        let nh = dest::parse_nexthop(nexthop).map_err(|e| {
            (
                Status::Bounced,
                "5.3.5".to_string(),
                format!("bad next hop: {e}"),
            )
        })?;
        let hosts = dest::route(&self.dns, &nh, &self.local)
            .await
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
            for addr in &h.addrs {
                let left = self.s.budget.saturating_sub(t0.elapsed());
                if left.is_zero() {
                    *setup = t0.elapsed();
                    return Err(last);
                }
                let mut s = match Session::connect(&h.name, *addr, self.s.t.connect.min(left)).await
                {
                    Ok(s) => s,
                    Err(e) => {
                        last = (Status::Deferred, "4.4.1".into(), e);
                        continue;
                    }
                };
                match s.handshake(&self.s.helo_name, &self.s.t).await {
                    Ok(()) => {
                        if s.remote_name.eq_ignore_ascii_case(&self.s.myhostname) {
                            *setup = t0.elapsed();
                            return Err((
                                Status::Bounced,
                                "5.4.6".into(),
                                format!("mail for {} loops back to myself", nh.host),
                            ));
                        }
                        *setup = t0.elapsed();
                        return Ok(s);
                    }
                    Err(session::Failure::Reply(r, step)) => {
                        last = (
                            Status::Deferred,
                            r.dsn().replacen('5', "4", 1),
                            format!(
                                "host {}[{}] refused to talk to me: {} (in reply to {step})",
                                h.name,
                                addr.ip(),
                                r.text()
                            ),
                        );
                    }
                    Err(_) => {
                        last = (
                            Status::Deferred,
                            "4.4.2".into(),
                            format!(
                                "lost connection with {}[{}] while receiving the initial server greeting",
                                h.name,
                                addr.ip()
                            ),
                        );
                    }
                }
            }
        }
        *setup = t0.elapsed();
        Err(last)
    }

    async fn deliver(&self, req: deliver::Request) -> deliver::Reply {
        let start_us = now_us();
        let mut setup = Duration::ZERO;
        let content = match crate::fsutil::read_whole(&req.file) {
            Ok(buf) => {
                let (records, _) = postern_proto::queue::decode_all(&buf);
                postern_proto::queue::content(&records)
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
        let mut s = match self.session(&req.nexthop, &mut setup).await {
            Ok(s) => s,
            Err((status, dsn, text)) => {
                return self.all(&req, status, &dsn, &text, "none", start_us, setup);
            }
        };
        let relay = s.relay();
        if req.smtputf8 && !s.ext.smtputf8 {
            let text = format!(
                "SMTPUTF8 is required, but was not offered by host {}[{}]",
                s.host,
                s.addr.ip()
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
                req.size,
                s.host,
                s.addr.ip()
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
            sender: &req.sender,
            recipients: req
                .recipients
                .iter()
                .map(|r| (r.index, r.address.as_str(), r.orcpt.as_str(), r.notify))
                .collect(),
            size: req.size,
            body_8bit: req.body_8bit,
            smtputf8: req.smtputf8,
            ret: req.ret,
            envid: &req.envid,
        };
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
                &req, &r.address, &relay, &dsn, status, &text, start_us, setup, xfer,
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

    #[allow(clippy::too_many_arguments)]
    fn log(
        &self,
        req: &deliver::Request,
        to: &str,
        relay: &str,
        dsn: &str,
        status: Status,
        text: &str,
        start_us: u64,
        setup: Duration,
        xfer: Duration,
    ) {
        let word = match status {
            Status::Sent => "sent",
            Status::Deferred => "deferred",
            Status::Bounced => "bounced",
        };
        log::line(&format!(
            "{}: to=<{to}>, relay={relay}, delay={}, delays={}/{}/{}/{}, dsn={dsn}, status={word} ({text})",
            req.queue_id,
            secs(now_us().saturating_sub(req.arrival_us)),
            secs(req.active_us.saturating_sub(req.arrival_us)),
            secs(start_us.saturating_sub(req.active_us)),
            secs(setup.as_micros() as u64),
            secs(xfer.as_micros() as u64),
        ));
    }

    #[allow(clippy::too_many_arguments)]
    fn all(
        &self,
        req: &deliver::Request,
        status: Status,
        dsn: &str,
        text: &str,
        relay: &str,
        start_us: u64,
        setup: Duration,
    ) -> deliver::Reply {
        let results = req
            .recipients
            .iter()
            .map(|r| {
                self.log(
                    req,
                    &r.address,
                    relay,
                    dsn,
                    status,
                    text,
                    start_us,
                    setup,
                    Duration::ZERO,
                );
                DeliveryResult {
                    index: r.index,
                    status,
                    dsn: dsn.into(),
                    text: text.into(),
                    relay: relay.into(),
                    remote_mta: String::new(),
                }
            })
            .collect();
        deliver::Reply { results }
    }
}
