//! qmgr: the queue manager. It holds the active set in memory: at most
//! `qmgr_message_active_limit` messages and `qmgr_message_recipient_limit`
//! recipients, fed by the broker, which keeps the order of the rest of the
//! queue on disk (new mail by arrival, deferred mail by next attempt). It
//! never scans a directory. It routes recipients, schedules deliveries per
//! destination with a concurrency limit and a rate delay, gives deferred
//! mail back to the broker with its jittered exponential backoff, bounces
//! what expires, and is the only process that changes a message's state
//! (the broker makes it durable). It holds a queue file's descriptor only
//! while it works on the message, and at most [`held::MAX_HELD_FILES`] between.
mod admin;
mod agents;
mod explain;
mod held;
mod load;
mod outcome;
mod probe;
mod route;
mod sched;

pub use held::HeldFile;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::os::fd::{OwnedFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use postern_config::{Params, Role};
use postern_ipc::deliver::{self, Status};
use postern_ipc::{ChannelError, Endpoint, bounce, qmgr_broker as qb, qmgr_queue as qq};
use postern_proto::queue::{self as rec, notify};
use tokio::sync::mpsc;

use crate::clock::now_us;
use crate::daemon::{self, Context};
use crate::tablecache::{TableCache, TableRef, table_list};
use crate::{fatal, info, warn};
use agents::Agents;
use load::*;
use outcome::*;
use sched::Route;

pub fn main(ipc_fd: RawFd) -> ! {
    daemon::run(Role::Qmgr, ipc_fd, |params| {
        Settings::new(params).map_err(|e| format!("qmgr: {e}"))?;
        Ok((serve, Vec::new()))
    })
}

/// Where mail goes besides local domains: regular mail, and
/// address-verification probes (address_verify_relayhost,
/// address_verify_transport_maps).
pub struct Routing {
    relayhost: String,
    transport_maps: Vec<TableRef>,
}

pub struct Settings {
    /// Address classes and their transports.
    classes: route::Classes,
    route: Routing,
    verify_route: Routing,
    /// address_verify_pending_request_limit.
    probe_limit: usize,
    min_backoff: Duration,
    max_backoff: Duration,
    max_lifetime: Duration,
    bounce_lifetime: Duration,
    delay_warning: Duration,
    local_concurrency: usize,
    smtp_concurrency: usize,
    local_rate_delay: Duration,
    smtp_rate_delay: Duration,
    local_rcpt_limit: usize,
    smtp_rcpt_limit: usize,
    /// The lmtp_destination_* limits, for next hops marked `lmtp:`.
    lmtp_concurrency: usize,
    lmtp_rate_delay: Duration,
    lmtp_rcpt_limit: usize,
    active_limit: u32,
    recipient_limit: u32,
    process_limit: usize,
    /// smtp_tls_security_level and lmtp_tls_security_level, for explain.
    smtp_tls_level: String,
    lmtp_tls_level: String,
    /// smtp_tls_policy_maps and lmtp_tls_policy_maps, for `queue explain`.
    tls_policy_maps: Vec<TableRef>,
    lmtp_tls_policy_maps: Vec<TableRef>,
}

/// Messages read and routed at once (each may hold a descriptor).
const MAX_LOADING: usize = 64;

impl Settings {
    /// A destination's concurrency, rate delay and recipient limits: the
    /// local_, lmtp_ (a next hop marked `lmtp:`) or smtp_destination_ ones.
    fn limits(&self, dest: &Dest) -> (usize, Duration, usize) {
        if dest.0 == Role::Local {
            (
                self.local_concurrency,
                self.local_rate_delay,
                self.local_rcpt_limit,
            )
        } else if dest.1.starts_with("lmtp:") {
            (
                self.lmtp_concurrency,
                self.lmtp_rate_delay,
                self.lmtp_rcpt_limit,
            )
        } else {
            (
                self.smtp_concurrency,
                self.smtp_rate_delay,
                self.smtp_rcpt_limit,
            )
        }
    }

    fn new(p: &Params) -> Result<Settings, String> {
        let e = |x: postern_config::ParamError| x.to_string();
        Ok(Settings {
            classes: route::Classes::new(p),
            route: Routing {
                relayhost: p.str("relayhost").to_string(),
                transport_maps: table_list(p, "transport_maps"),
            },
            verify_route: Routing {
                relayhost: p.str("address_verify_relayhost").to_string(),
                transport_maps: table_list(p, "address_verify_transport_maps"),
            },
            probe_limit: p.int("address_verify_pending_request_limit").map_err(e)? as usize,
            min_backoff: p.duration("minimal_backoff_time").map_err(e)?,
            max_backoff: p.duration("maximal_backoff_time").map_err(e)?,
            max_lifetime: p.duration("maximal_queue_lifetime").map_err(e)?,
            bounce_lifetime: p.duration("bounce_queue_lifetime").map_err(e)?,
            delay_warning: p.duration("delay_warning_time").map_err(e)?,
            local_concurrency: p.int("local_destination_concurrency_limit").map_err(e)? as usize,
            smtp_concurrency: p.int("smtp_destination_concurrency_limit").map_err(e)? as usize,
            local_rate_delay: p.duration("local_destination_rate_delay").map_err(e)?,
            smtp_rate_delay: p.duration("smtp_destination_rate_delay").map_err(e)?,
            local_rcpt_limit: p.int("local_destination_recipient_limit").map_err(e)? as usize,
            smtp_rcpt_limit: p.int("smtp_destination_recipient_limit").map_err(e)? as usize,
            lmtp_concurrency: p.int("lmtp_destination_concurrency_limit").map_err(e)? as usize,
            lmtp_rate_delay: p.duration("lmtp_destination_rate_delay").map_err(e)?,
            lmtp_rcpt_limit: p.int("lmtp_destination_recipient_limit").map_err(e)? as usize,
            active_limit: p.int("qmgr_message_active_limit").map_err(e)? as u32,
            recipient_limit: p.int("qmgr_message_recipient_limit").map_err(e)? as u32,
            process_limit: p.int("default_process_limit").map_err(e)? as usize,
            smtp_tls_level: p.str("smtp_tls_security_level").to_string(),
            lmtp_tls_level: p.str("lmtp_tls_security_level").to_string(),
            tls_policy_maps: table_list(p, "smtp_tls_policy_maps"),
            lmtp_tls_policy_maps: table_list(p, "lmtp_tls_policy_maps"),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum RState {
    /// Waiting for its message to be ready.
    Idle,
    /// In a destination queue.
    Queued,
    InFlight,
    Deferred(String),
    /// Failed: waiting for its non-delivery notice to be queued.
    Bouncing,
    Done,
}

struct Rcpt {
    address: String,
    orcpt: String,
    notify: u8,
    route: Route,
    state: RState,
    /// The last deferral's DSN status, for an expiry bounce.
    last_dsn: String,
}

pub struct Msg {
    id: String,
    sender: String,
    size: u64,
    arrival_us: u64,
    active_us: u64,
    envid: String,
    ret: u8,
    smtputf8: bool,
    body_8bit: bool,
    rcpts: Vec<Rcpt>,
    hold: bool,
    attempts: u32,
    next_try: Instant,
    delay_warned: bool,
    /// Its queue file, while the descriptor budget allows.
    file: Option<HeldFile>,
    in_flight: usize,
    /// Set by `postern queue delete`: results still in flight are ignored.
    deleted: bool,
    /// Failed recipients gathered for one notice per message.
    bounces: Vec<(u32, bounce::Rcpt)>,
    /// Delivered recipients that asked for NOTIFY=SUCCESS.
    successes: Vec<bounce::Rcpt>,
    /// sendmail -v: each recipient's first outcome, gathered until every
    /// recipient has one; None once the report is on its way (or never
    /// asked for).
    trace: Option<Vec<(u32, bounce::Rcpt)>>,
    /// The complete first-attempt report, waiting to be queued.
    trace_ready: Vec<bounce::Rcpt>,
}

impl Msg {
    fn lifetime(&self, s: &Settings) -> Duration {
        if self.sender.is_empty() {
            s.bounce_lifetime
        } else {
            s.max_lifetime
        }
    }

    fn age(&self) -> Duration {
        Duration::from_micros(now_us().saturating_sub(self.arrival_us))
    }

    fn pending(&self) -> bool {
        self.rcpts.iter().any(|r| r.state != RState::Done)
    }

    /// When it should be offered again: its next attempt, or sooner, when
    /// its delay warning falls due.
    fn due(&self, s: &Settings) -> Instant {
        if s.delay_warning.is_zero()
            || self.delay_warned
            || !self
                .rcpts
                .iter()
                .any(|r| matches!(r.state, RState::Deferred(_)))
        {
            return self.next_try;
        }
        let age = self.age();
        let warn_at = Instant::now() + s.delay_warning.saturating_sub(age);
        warn_at.min(self.next_try)
    }
}

/// (agent, next hop): concurrency and rate delay are per destination.
type Dest = (Role, String);

#[derive(Default)]
struct DestQueue {
    entries: VecDeque<(String, Vec<u32>)>,
    in_flight: usize,
    next_start: Option<Instant>,
}

/// How one recipient of a delivery came out.
#[derive(Debug, Clone)]
pub(crate) enum Fate {
    /// Final and recorded; `success` when the sender wants to hear of it.
    Done { success: Option<bounce::Rcpt> },
    /// Recorded as deferred.
    Deferred { dsn: String, reason: String },
    /// Failed; final only once its notice is queued (nothing recorded yet).
    Bounced(bounce::Rcpt),
}

pub(crate) enum Ev {
    /// A new subscription to the broker: messages not in flight are
    /// forgotten, the broker offers them again.
    Subscribed,
    /// A message enters the active set.
    Offered(qb::QueuedMessage, Option<HeldFile>),
    /// A message was read and routed, for subscription generation.
    Loaded(u64, Result<Box<Msg>, (String, String)>),
    Delivered {
        id: String,
        dest: Dest,
        fates: Vec<(u32, Fate)>,
        /// The delivery finished the message and its file is already freed.
        removed: bool,
    },
    Admin(admin::Op, mpsc::UnboundedSender<admin::Out>),
}

struct Qmgr {
    s: Rc<Settings>,
    agents: Rc<Agents>,
    tables: Rc<TableCache>,
    msgs: HashMap<String, Msg>,
    /// The active set by arrival, for listings.
    order: BTreeMap<(u64, String), ()>,
    loading: HashMap<String, ()>,
    dests: HashMap<Dest, DestQueue>,
    /// Deliveries in flight per agent (default_process_limit).
    agent_busy: HashMap<Role, usize>,
    /// Queue-file descriptors kept between deliveries.
    held_files: Rc<std::cell::Cell<usize>>,
    /// Loads in progress (MAX_LOADING).
    loading_slots: Rc<tokio::sync::Semaphore>,
    /// The subscription generation; loads from an older one are dropped.
    generation: u64,
    tx: mpsc::UnboundedSender<Ev>,
    /// DNS for `postern queue explain` (deliveries resolve in smtp).
    resolver: Rc<crate::smtp::ResolverClient>,
}

async fn serve(mut ctx: Context) {
    let s = match Settings::new(&ctx.params) {
        Ok(s) => Rc::new(s),
        Err(e) => fatal!("{e}"),
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Ev>();
    let agents = Rc::new(Agents::new(
        ctx.switchboard.clone(),
        ctx.query_timeout(),
        ctx.transfer_timeout(),
    ));
    let tables = Rc::new(TableCache::new(ctx.switchboard.clone()));
    let prober = Rc::new(probe::Prober {
        agents: agents.clone(),
        tables: tables.clone(),
        s: s.clone(),
        pending: Default::default(),
        serial: Default::default(),
    });
    let local = tokio::task::LocalSet::new();
    let mut q = Qmgr {
        s,
        agents,
        tables,
        msgs: HashMap::new(),
        order: BTreeMap::new(),
        loading: HashMap::new(),
        dests: HashMap::new(),
        agent_busy: HashMap::new(),
        held_files: Rc::default(),
        loading_slots: Rc::new(tokio::sync::Semaphore::new(MAX_LOADING)),
        generation: 0,
        tx: tx.clone(),
        resolver: Rc::new(crate::smtp::ResolverClient::new(
            ctx.switchboard.clone(),
            ctx.query_timeout(),
        )),
    };
    let limits = qb::Limits {
        messages: q.s.active_limit,
        recipients: q.s.recipient_limit,
    };
    local
        .run_until(async move {
            tokio::task::spawn_local(subscribe_loop(
                ctx.switchboard.clone(),
                ctx.query_timeout(),
                limits,
                q.held_files.clone(),
                tx.clone(),
            ));
            let mut figures = tokio::time::interval(crate::metrics::PUSH_EVERY);
            loop {
                let wake = q.next_wake();
                tokio::select! {
                    _ = figures.tick(), if crate::metrics::enabled() => q.figures(),
                    ev = rx.recv() => match ev {
                        Some(ev) => q.handle(ev),
                        None => return,
                    },
                    a = ctx.admin.recv() => if let Some((fd, read_only)) = a {
                        tokio::task::spawn_local(admin::serve(fd, read_only, tx.clone(), ctx.query_timeout()));
                    },
                    c = ctx.inbound.recv() => if let Some((from, fd)) = c {
                        tokio::task::spawn_local(probe::serve(prober.clone(), from, fd, ctx.query_timeout()));
                    },
                    _ = sleep_until(wake) => {}
                    _ = ctx.shutdown.changed() => return,
                }
                q.dispatch();
            }
        })
        .await;
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

impl Qmgr {
    fn next_wake(&self) -> Option<Instant> {
        self.dests
            .values()
            .filter(|d| !d.entries.is_empty())
            .filter_map(|d| d.next_start)
            .min()
    }

    fn limits(&self, dest: &Dest) -> (usize, Duration, usize) {
        self.s.limits(dest)
    }

    /// The deliveries in flight for the busiest destinations
    /// (postern_active_deliveries): at most [`TOP_DESTINATIONS`] by name,
    /// the rest summed as "other", so the series stay few.
    fn figures(&mut self) {
        const TOP_DESTINATIONS: usize = 10;
        let mut busy: Vec<(String, usize)> = self
            .dests
            .iter()
            .filter(|(_, dq)| dq.in_flight > 0)
            .map(|((role, hop), dq)| {
                let name = if hop.is_empty() {
                    role.name().to_string()
                } else {
                    hop.clone()
                };
                (name, dq.in_flight)
            })
            .collect();
        busy.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let other: usize = busy.iter().skip(TOP_DESTINATIONS).map(|(_, n)| n).sum();
        let mut series: Vec<(Vec<String>, f64)> = busy
            .into_iter()
            .take(TOP_DESTINATIONS)
            .map(|(d, n)| (vec![d], n as f64))
            .collect();
        if other > 0 {
            series.push((vec!["other".into()], other as f64));
        }
        series.sort_by(|a, b| a.0.cmp(&b.0));
        crate::metrics::replace(&crate::metrics::catalog::ACTIVE, &series);
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Subscribed => {
                self.generation += 1;
                self.loading.clear();
                let idle: Vec<String> = self
                    .msgs
                    .iter()
                    .filter(|(_, m)| m.in_flight == 0)
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in idle {
                    self.forget(&id);
                }
            }
            Ev::Offered(m, file) => {
                if self.msgs.contains_key(&m.queue_id) || self.loading.contains_key(&m.queue_id) {
                    return;
                }
                self.loading.insert(m.queue_id.clone(), ());
                let (a, t, s, tx, generation) = (
                    self.agents.clone(),
                    self.tables.clone(),
                    self.s.clone(),
                    self.tx.clone(),
                    self.generation,
                );
                let (slots, held) = (self.loading_slots.clone(), self.held_files.clone());
                tokio::task::spawn_local(async move {
                    let _slot = slots.acquire().await;
                    let r = load(a, t, s, m, file, &held).await;
                    let _ = tx.send(Ev::Loaded(generation, r));
                });
            }
            Ev::Loaded(g, _) if g != self.generation => {}
            Ev::Loaded(_, Err((id, e))) => {
                self.loading.remove(&id);
                warn!("{id}: cannot read the queue file: {e}");
                // Offered again later, not lost from the broker's order.
                self.give_back(&id, Vec::new(), Instant::now() + self.s.min_backoff);
            }
            Ev::Loaded(_, Ok(m)) => {
                self.loading.remove(&m.id);
                info!(
                    "{}: from=<{}>, size={}, nrcpt={} (queue active)",
                    m.id,
                    m.sender,
                    m.size,
                    m.rcpts.len()
                );
                let id = m.id.clone();
                self.order.insert((m.arrival_us, id.clone()), ());
                let next = m.next_try;
                let expired = m.attempts > 0 && m.age() >= m.lifetime(&self.s);
                let (hold, pending) = (m.hold, m.pending());
                self.msgs.insert(id.clone(), *m);
                if !pending {
                    self.finish(&id);
                } else if hold {
                    self.give_back(&id, Vec::new(), next);
                } else if expired {
                    self.expire(&id);
                } else if next <= Instant::now() {
                    self.activate(&id);
                } else {
                    // Offered for its delay warning, before its next attempt.
                    let m = &self.msgs[&id];
                    if !self.s.delay_warning.is_zero()
                        && !m.delay_warned
                        && m.age() >= self.s.delay_warning
                        && m.rcpts
                            .iter()
                            .any(|r| matches!(r.state, RState::Deferred(_)))
                    {
                        self.delay_warning(&id);
                    }
                    self.give_back(&id, Vec::new(), next);
                }
            }
            Ev::Delivered {
                id,
                dest,
                fates,
                removed,
            } => self.delivered(id, dest, fates, removed),
            Ev::Admin(op, reply) => self.admin(op, reply),
        }
    }

    /// The message leaves the active set: its state records (if any) and
    /// the give-back go in one request, so the broker offers it again only
    /// with them on disk.
    pub(super) fn give_back(&mut self, id: &str, states: Vec<qq::State>, due: Instant) {
        let due_us = now_us() + due.saturating_duration_since(Instant::now()).as_micros() as u64;
        self.forget(id);
        let (agents, qid) = (self.agents.clone(), id.to_string());
        tokio::task::spawn_local(async move {
            match agents
                .queue(qq::Request::Append {
                    queue_id: qid.clone(),
                    states,
                    give_back: Some(due_us),
                })
                .await
            {
                Ok(qq::Reply::Ok) => {}
                other => warn!("{qid}: cannot give back: {}", append_error(other)),
            }
        });
    }

    /// Puts a message's waiting recipients into their destination queues.
    fn activate(&mut self, id: &str) {
        let Some(m) = self.msgs.get_mut(id) else {
            return;
        };
        if m.hold || m.deleted {
            return;
        }
        let mut groups: BTreeMap<Route, Vec<u32>> = BTreeMap::new();
        for (i, r) in m.rcpts.iter_mut().enumerate() {
            if matches!(r.state, RState::Idle | RState::Deferred(_)) {
                r.state = RState::Queued;
                groups.entry(r.route.clone()).or_default().push(i as u32);
            }
        }
        let mut immediate = Vec::new();
        for (route, idxs) in groups {
            let dest = match route {
                Route::Local => (Role::Local, String::new()),
                Route::Smtp(h) => (Role::Smtp, h),
                Route::Error(text) => {
                    // error:5.1.1 text: the DSN the admin wrote, if any.
                    let (dsn, text) = match crate::restrict::split_dsn(&text) {
                        (Some(d), t) if d.starts_with('5') => (d.to_string(), t.to_string()),
                        _ => ("5.0.0".to_string(), text.clone()),
                    };
                    immediate.extend(
                        idxs.into_iter()
                            .map(|i| (i, Status::Bounced, dsn.clone(), text.clone())),
                    );
                    continue;
                }
                Route::Defer(text) => {
                    immediate.extend(
                        idxs.into_iter()
                            .map(|i| (i, Status::Deferred, "4.3.0".to_string(), text.clone())),
                    );
                    continue;
                }
                Route::Discard => {
                    immediate.extend(idxs.into_iter().map(|i| {
                        (
                            i,
                            Status::Sent,
                            "2.0.0".to_string(),
                            "discarded".to_string(),
                        )
                    }));
                    continue;
                }
            };
            self.dests
                .entry(dest)
                .or_default()
                .entries
                .push_back((id.to_string(), idxs));
        }
        if !immediate.is_empty() {
            // error: and discard: transports need no agent; they go
            // through the same outcome path (DSNs, persistence), with the
            // log line a delivery agent would write (relay=none).
            if let Some(m) = self.msgs.get(id) {
                let delay = crate::clock::now_us().saturating_sub(m.arrival_us) as f64 / 1e6;
                for (i, status, dsn, text) in &immediate {
                    let word = match status {
                        Status::Sent => "sent",
                        Status::Deferred => "deferred",
                        Status::Bounced => "bounced",
                    };
                    let to = m.rcpts.get(*i as usize).map_or("", |r| r.address.as_str());
                    crate::log::line(&format!(
                        "{id}: to=<{to}>, relay=none, delay={delay:.2}, delays={delay:.2}/0/0/0, dsn={dsn}, status={word} ({text})"
                    ));
                }
            }
            let m = self.msgs.get_mut(id).expect("message");
            m.in_flight += 1;
            let results = immediate
                .into_iter()
                .map(|(index, status, dsn, text)| deliver::DeliveryResult {
                    index,
                    status,
                    dsn,
                    text,
                    relay: "none".into(),
                    remote_mta: String::new(),
                })
                .collect();
            self.spawn_outcome(
                id,
                (Role::Qmgr, String::new()),
                Ok(deliver::Reply { results }),
            );
        }
    }

    /// Starts deliveries wherever a destination has room.
    fn dispatch(&mut self) {
        let now = Instant::now();
        let dests: Vec<Dest> = self
            .dests
            .iter()
            .filter(|(_, d)| !d.entries.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        for dest in dests {
            let (limit, rate, rcpt_limit) = self.limits(&dest);
            let process_limit = self.s.process_limit;
            loop {
                if self.agent_busy.get(&dest.0).copied().unwrap_or(0) >= process_limit {
                    break;
                }
                let dq = self.dests.get_mut(&dest).expect("dest");
                if dq.in_flight >= limit || dq.next_start.is_some_and(|t| t > now) {
                    break;
                }
                let Some((id, mut idxs)) = dq.entries.pop_front() else {
                    break;
                };
                let rest = if idxs.len() > rcpt_limit {
                    idxs.split_off(rcpt_limit)
                } else {
                    Vec::new()
                };
                if !rest.is_empty() {
                    dq.entries.push_front((id.clone(), rest));
                }
                let Some(m) = self.msgs.get_mut(&id) else {
                    continue;
                };
                if m.deleted || m.hold {
                    for &i in &idxs {
                        if m.rcpts[i as usize].state == RState::Queued {
                            m.rcpts[i as usize].state = RState::Idle;
                        }
                    }
                    continue;
                }
                // The descriptor goes with the delivery and closes after it.
                let file = m.file.take().map(HeldFile::into_fd);
                // This delivery holds every recipient still open, and nothing
                // else is owed: if it succeeds, the message is finished.
                let last = m.in_flight == 0
                    && m.trace.is_none()
                    && m.bounces.is_empty()
                    && m.successes.is_empty()
                    && m.trace_ready.is_empty()
                    && m.rcpts
                        .iter()
                        .enumerate()
                        .all(|(i, r)| r.state == RState::Done || idxs.contains(&(i as u32)));
                for &i in &idxs {
                    m.rcpts[i as usize].state = RState::InFlight;
                }
                m.in_flight += 1;
                dq.in_flight += 1;
                *self.agent_busy.entry(dest.0).or_default() += 1;
                if !rate.is_zero() {
                    dq.next_start = Some(now + rate);
                }
                let (sender, nexthop, envid) = (m.sender.clone(), dest.1.clone(), m.envid.clone());
                let (ret, smtputf8, body_8bit, arrival_us, active_us, size) = (
                    m.ret,
                    m.smtputf8,
                    m.body_8bit,
                    m.arrival_us,
                    m.active_us,
                    m.size,
                );
                let recipients: Vec<deliver::Recipient> = idxs
                    .iter()
                    .map(|&i| {
                        let r = &m.rcpts[i as usize];
                        deliver::Recipient {
                            index: i,
                            address: r.address.clone(),
                            orcpt: r.orcpt.clone(),
                            notify: r.notify,
                        }
                    })
                    .collect();
                let qid_for_req = id.clone();
                let request = move |file| deliver::Request {
                    queue_id: qid_for_req,
                    sender,
                    nexthop,
                    recipients,
                    envid,
                    ret,
                    smtputf8,
                    body_8bit,
                    arrival_us,
                    active_us,
                    size,
                    file,
                };
                let agents = self.agents.clone();
                let (tx, d, qid) = (self.tx.clone(), dest.clone(), id.clone());
                let ctx = self.outcome_ctx(&id);
                tokio::task::spawn_local(async move {
                    let r = match file {
                        Some(f) => Ok(f),
                        None => agents.open(&qid).await,
                    };
                    let r = match r {
                        Ok(file) => agents.deliver(d.0, request(Some(file))).await,
                        Err(e) => Err(format!("cannot open the queue file: {e}")),
                    };
                    let transport = outcome::transport_label(&d);
                    let (fates, removed) = settle(&agents, ctx, &idxs, r, last, transport).await;
                    let _ = tx.send(Ev::Delivered {
                        id: qid,
                        dest: d,
                        fates,
                        removed,
                    });
                });
            }
        }
    }
}
