//! qmgr: the queue manager. It holds the queue in memory, learned from the
//! broker (a snapshot at start, then one event per commit) and never scans a
//! directory. It routes recipients, schedules deliveries per destination
//! with a concurrency limit and a rate delay, retries deferred mail with a
//! jittered exponential backoff, bounces what expires, and is the only
//! process that changes a message's state (the broker makes it durable).
mod admin;
mod agents;
mod sched;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::os::fd::{OwnedFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use postern_config::{Params, Role};
use postern_ipc::deliver::{self, Status};
use postern_ipc::{
    Channel, ChannelError, Endpoint, Message, bounce, qmgr_broker as qb, qmgr_queue as qq,
};
use postern_proto::queue::{self as rec, notify};
use tokio::sync::mpsc;

use crate::clock::now_us;
use crate::daemon::{self, Context};
use crate::tablecache::TableCache;
use crate::tables::{self, Table};
use crate::{fatal, info, warn};
use agents::Agents;
use sched::Route;

pub fn main(ipc_fd: RawFd) -> ! {
    daemon::run(Role::Qmgr, ipc_fd, |params| {
        Settings::new(params).map_err(|e| format!("qmgr: {e}"))?;
        Ok((serve, Vec::new()))
    })
}

pub struct Settings {
    mydestination: Vec<String>,
    relayhost: String,
    transport_maps: Vec<Table>,
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
}

impl Settings {
    fn new(p: &Params) -> Result<Settings, String> {
        let e = |x: postern_config::ParamError| x.to_string();
        let tables = p
            .list("transport_maps")
            .map_err(e)?
            .iter()
            .map(|s| tables::parse(s).map_err(|x| format!("transport_maps: {x}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Settings {
            mydestination: p
                .list("mydestination")
                .map_err(e)?
                .into_iter()
                .map(|d| d.to_ascii_lowercase())
                .collect(),
            relayhost: p.str("relayhost").to_string(),
            transport_maps: tables,
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
    file: OwnedFd,
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
    Committed(qb::QueuedMessage, Option<OwnedFd>),
    Loaded(Result<Box<Msg>, (String, String)>),
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
    /// Every message by arrival, for listings.
    order: BTreeMap<(u64, String), ()>,
    loading: HashMap<String, ()>,
    dests: HashMap<Dest, DestQueue>,
    timers: BinaryHeap<Reverse<(Instant, String)>>,
    tx: mpsc::UnboundedSender<Ev>,
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
    let local = tokio::task::LocalSet::new();
    let mut q = Qmgr {
        s,
        agents,
        tables,
        msgs: HashMap::new(),
        order: BTreeMap::new(),
        loading: HashMap::new(),
        dests: HashMap::new(),
        timers: BinaryHeap::new(),
        tx: tx.clone(),
    };
    local
        .run_until(async move {
            tokio::task::spawn_local(subscribe_loop(
                ctx.switchboard.clone(),
                ctx.query_timeout(),
                tx.clone(),
            ));
            loop {
                let wake = q.next_wake();
                tokio::select! {
                    ev = rx.recv() => match ev {
                        Some(ev) => q.handle(ev),
                        None => return,
                    },
                    a = ctx.admin.recv() => if let Some((fd, read_only)) = a {
                        tokio::task::spawn_local(admin::serve(fd, read_only, tx.clone(), ctx.query_timeout()));
                    },
                    _ = sleep_until(wake) => {}
                    _ = ctx.shutdown.changed() => return,
                }
                q.fire_timers();
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

/// Keeps a subscription to the broker; after a broker restart, subscribes
/// again and receives the whole queue anew.
async fn subscribe_loop(sb: daemon::Switchboard, timeout: Duration, tx: mpsc::UnboundedSender<Ev>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let r: Result<Endpoint<qb::Request, qb::Event>, String> = async {
            let fd = sb.connect(Role::Broker).await.map_err(|e| e.to_string())?;
            let mut ch = Channel::new(fd, <qb::Event as Message>::MAX_FRAME, timeout)
                .map_err(|e| e.to_string())?;
            ch.hello_client(qb::EDGE, qb::VERSION)
                .await
                .map_err(|e| e.to_string())?;
            let ep = Endpoint::from_channel(ch);
            ep.send(&qb::Request::Subscribe)
                .await
                .map_err(|e| e.to_string())?;
            Ok(ep)
        }
        .await;
        let mut ep = match r {
            Ok(ep) => ep,
            Err(e) => {
                warn!("cannot subscribe to the broker: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        loop {
            match ep.recv().await {
                Ok(qb::Event::Committed(m, fd)) => {
                    if tx.send(Ev::Committed(m, fd)).is_err() {
                        return;
                    }
                }
                Ok(qb::Event::Current) => {}
                Err(ChannelError::Violation(v)) => fatal!("protocol violation from broker: {v}"),
                Err(_) => break,
            }
        }
    }
}

/// Reads a committed message and routes its recipients.
async fn load(
    agents: Rc<Agents>,
    tables: Rc<TableCache>,
    s: Rc<Settings>,
    id: String,
    file: Option<OwnedFd>,
) -> Result<Box<Msg>, (String, String)> {
    let err = |e: String| (id.clone(), e);
    let fd = match file {
        Some(fd) => fd,
        None => match agents
            .queue(qq::Request::Open(id.clone()))
            .await
            .map_err(err)?
        {
            qq::Reply::Opened(fd) => fd,
            qq::Reply::Failed(e) => return Err(err(e)),
            qq::Reply::Ok => return Err(err("broker answered open with ok".into())),
        },
    };
    let buf = crate::fsutil::read_queue_file(&fd).map_err(|e| err(e.to_string()))?;
    let (records, _) = rec::decode_all(&buf);
    let sum = rec::summarize(&records, buf.len() as u64);
    let (Some(h), Some(snd)) = (sum.header.clone(), sum.sender.clone()) else {
        return Err(err("queue file has no envelope".into()));
    };
    let mut rcpts = Vec::with_capacity(sum.recipients.len());
    for (i, r) in sum.recipients.iter().enumerate() {
        let done = sum.done.contains(&(i as u32));
        let route = if done {
            Route::Discard
        } else {
            resolve(&s, &tables, &r.address).await
        };
        let deferred = sum
            .deferred
            .iter()
            .find(|(x, _)| *x == i as u32)
            .map(|(_, why)| why.clone());
        rcpts.push(Rcpt {
            address: r.address.clone(),
            orcpt: r.orcpt.clone(),
            notify: r.notify,
            route,
            state: match (done, deferred) {
                (true, _) => RState::Done,
                (false, Some(why)) => RState::Deferred(why),
                (false, None) => RState::Idle,
            },
            last_dsn: "4.0.0".into(),
        });
    }
    let next_try = if sum.next_attempt_us > now_us() {
        Instant::now() + Duration::from_micros(sum.next_attempt_us - now_us())
    } else {
        Instant::now()
    };
    let traced = sum.trace && !snd.address.is_empty();
    Ok(Box::new(Msg {
        id: h.queue_id,
        sender: snd.address,
        size: sum.size,
        arrival_us: h.arrival_us,
        active_us: now_us(),
        envid: snd.envid,
        ret: snd.ret,
        smtputf8: snd.smtputf8,
        body_8bit: snd.body_8bit,
        rcpts,
        hold: sum.hold,
        attempts: sum.attempts,
        next_try,
        delay_warned: sum.delay_warned,
        file: fd,
        in_flight: 0,
        deleted: false,
        bounces: Vec::new(),
        successes: Vec::new(),
        // Recipients finished before a restart count as delivered.
        trace: traced.then(|| {
            sum.done
                .iter()
                .filter_map(|&i| {
                    let r = sum.recipients.get(i as usize)?;
                    Some((
                        i,
                        bounce::Rcpt {
                            address: r.address.clone(),
                            orcpt: r.orcpt.clone(),
                            dsn: "2.0.0".into(),
                            text: "delivered before the queue manager restarted".into(),
                            remote_mta: String::new(),
                        },
                    ))
                })
                .collect()
        }),
        trace_ready: Vec::new(),
    }))
}

/// Routes one recipient: local domains, then transport_maps, relayhost, MX.
async fn resolve(s: &Settings, tables: &TableCache, address: &str) -> Route {
    let domain = address
        .rsplit_once('@')
        .map_or("", |(_, d)| d)
        .to_ascii_lowercase();
    if !s.transport_maps.is_empty() {
        for key in sched::transport_keys(address, &domain) {
            match tables.lookup_any(&s.transport_maps, &key).await {
                Ok(Some(v)) => {
                    return sched::parse_transport(&v, &domain).unwrap_or_else(|e| {
                        warn!("{e}");
                        Route::Error("mail transport unavailable".into())
                    });
                }
                Ok(None) => {}
                Err(e) => {
                    warn!("transport_maps lookup of {key}: {e}");
                    break;
                }
            }
        }
    }
    if domain.is_empty() || s.mydestination.contains(&domain) {
        return Route::Local;
    }
    if !s.relayhost.is_empty() {
        return Route::Smtp(s.relayhost.clone());
    }
    Route::Smtp(domain)
}

impl Qmgr {
    fn next_wake(&self) -> Option<Instant> {
        let t = self.timers.peek().map(|Reverse((t, _))| *t);
        let d = self
            .dests
            .values()
            .filter(|d| !d.entries.is_empty())
            .filter_map(|d| d.next_start)
            .min();
        match (t, d) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn concurrency(&self, agent: Role) -> usize {
        if agent == Role::Local {
            self.s.local_concurrency
        } else {
            self.s.smtp_concurrency
        }
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Committed(m, file) => {
                if self.msgs.contains_key(&m.queue_id) || self.loading.contains_key(&m.queue_id) {
                    return;
                }
                self.loading.insert(m.queue_id.clone(), ());
                let (a, t, s, tx) = (
                    self.agents.clone(),
                    self.tables.clone(),
                    self.s.clone(),
                    self.tx.clone(),
                );
                tokio::task::spawn_local(async move {
                    let r = load(a, t, s, m.queue_id, file).await;
                    let _ = tx.send(Ev::Loaded(r));
                });
            }
            Ev::Loaded(Err((id, e))) => {
                self.loading.remove(&id);
                warn!("{id}: cannot read the queue file: {e}");
            }
            Ev::Loaded(Ok(m)) => {
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
                self.msgs.insert(id.clone(), *m);
                if !self.msgs[&id].pending() {
                    self.finish(&id);
                } else if next <= Instant::now() {
                    self.activate(&id);
                } else {
                    self.timers.push(Reverse((next, id.clone())));
                    self.arm_warning(&id);
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
                    immediate.extend(
                        idxs.into_iter()
                            .map(|i| (i, Status::Bounced, "5.0.0".to_string(), text.clone())),
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
            // through the same outcome path (DSNs, persistence).
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

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((t, _))) = self.timers.peek() {
            if *t > now {
                break;
            }
            let Reverse((_, id)) = self.timers.pop().expect("peeked");
            let Some(m) = self.msgs.get(&id) else {
                continue;
            };
            if m.deleted || m.in_flight > 0 {
                continue;
            }
            // A delay warning due now, while the next attempt is still ahead.
            let warn_due = !self.s.delay_warning.is_zero()
                && !m.delay_warned
                && m.age() >= self.s.delay_warning;
            if warn_due
                && m.rcpts
                    .iter()
                    .any(|r| matches!(r.state, RState::Deferred(_)))
            {
                self.delay_warning(&id);
            }
            let m = &self.msgs[&id];
            if m.next_try > now {
                continue;
            }
            if m.age() >= m.lifetime(&self.s) {
                self.expire(&id);
            } else {
                self.activate(&id);
            }
        }
    }

    fn arm_warning(&mut self, id: &str) {
        let Some(m) = self.msgs.get(id) else { return };
        if self.s.delay_warning.is_zero() || m.delay_warned {
            return;
        }
        let age = m.age();
        if age < self.s.delay_warning {
            let at = Instant::now() + (self.s.delay_warning - age);
            if at < m.next_try {
                self.timers.push(Reverse((at, id.to_string())));
            }
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
            let limit = self.concurrency(dest.0);
            let (rate, rcpt_limit) = if dest.0 == Role::Local {
                (self.s.local_rate_delay, self.s.local_rcpt_limit)
            } else {
                (self.s.smtp_rate_delay, self.s.smtp_rcpt_limit)
            };
            loop {
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
                let file = match m.file.try_clone() {
                    Ok(f) => f,
                    Err(e) => {
                        warn!("{id}: {e}");
                        continue;
                    }
                };
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
                if !rate.is_zero() {
                    dq.next_start = Some(now + rate);
                }
                let req = deliver::Request {
                    queue_id: id.clone(),
                    sender: m.sender.clone(),
                    nexthop: dest.1.clone(),
                    recipients: idxs
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
                        .collect(),
                    envid: m.envid.clone(),
                    ret: m.ret,
                    smtputf8: m.smtputf8,
                    body_8bit: m.body_8bit,
                    arrival_us: m.arrival_us,
                    active_us: m.active_us,
                    size: m.size,
                    file,
                };
                let agents = self.agents.clone();
                let (tx, d, qid) = (self.tx.clone(), dest.clone(), id.clone());
                let ctx = self.outcome_ctx(&id);
                tokio::task::spawn_local(async move {
                    let r = agents.deliver(d.0, req).await;
                    let (fates, removed) = settle(&agents, ctx, &idxs, r, last).await;
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

    fn outcome_ctx(&self, id: &str) -> OutcomeCtx {
        let m = &self.msgs[id];
        OutcomeCtx {
            id: id.to_string(),
            sender: m.sender.clone(),
            envid: m.envid.clone(),
            ret: m.ret,
            arrival_us: m.arrival_us,
            trace: m.trace.is_some(),
            rcpts: m
                .rcpts
                .iter()
                .map(|r| (r.address.clone(), r.orcpt.clone(), r.notify))
                .collect(),
            file: m.file.try_clone().ok(),
        }
    }

    /// Runs the outcome path for results that need no agent.
    fn spawn_outcome(&mut self, id: &str, dest: Dest, r: Result<deliver::Reply, String>) {
        let ctx = self.outcome_ctx(id);
        let (agents, tx, qid) = (self.agents.clone(), self.tx.clone(), id.to_string());
        let idxs: Vec<u32> = match &r {
            Ok(rep) => rep.results.iter().map(|x| x.index).collect(),
            Err(_) => Vec::new(),
        };
        tokio::task::spawn_local(async move {
            let (fates, removed) = settle(&agents, ctx, &idxs, r, false).await;
            let _ = tx.send(Ev::Delivered {
                id: qid,
                dest,
                fates,
                removed,
            });
        });
    }

    fn delivered(&mut self, id: String, dest: Dest, fates: Vec<(u32, Fate)>, removed: bool) {
        if let Some(dq) = self.dests.get_mut(&dest) {
            dq.in_flight = dq.in_flight.saturating_sub(1);
        }
        let Some(m) = self.msgs.get_mut(&id) else {
            return;
        };
        m.in_flight = m.in_flight.saturating_sub(1);
        if m.deleted {
            if m.in_flight == 0 {
                self.forget(&id);
            }
            return;
        }
        for (i, fate) in fates {
            let Some(r) = m.rcpts.get_mut(i as usize) else {
                continue;
            };
            if let Some(t) = m.trace.as_mut()
                && !t.iter().any(|(j, _)| *j == i)
            {
                t.push((i, first_outcome(r, &fate)));
            }
            match fate {
                Fate::Done { success } => {
                    r.state = RState::Done;
                    // With -v every delivery carries its details; only
                    // NOTIFY=SUCCESS recipients get a success notice.
                    if r.notify & notify::SUCCESS != 0 {
                        m.successes.extend(success);
                    }
                }
                Fate::Deferred { dsn, reason } => {
                    r.state = RState::Deferred(reason);
                    r.last_dsn = dsn;
                }
                Fate::Bounced(b) => {
                    r.state = RState::Bouncing;
                    m.bounces.push((i, b));
                }
            }
        }
        if m.trace.as_ref().is_some_and(|t| t.len() >= m.rcpts.len()) {
            let mut t = m.trace.take().unwrap_or_default();
            t.sort_by_key(|(i, _)| *i);
            m.trace_ready = t.into_iter().map(|(_, r)| r).collect();
        }
        if removed {
            // Only a delivery that held every open recipient, with nothing
            // else owed, removes the file itself (see `settle`).
            self.forget(&id);
            return;
        }
        if m.in_flight > 0 {
            return;
        }
        if !m.bounces.is_empty() || !m.successes.is_empty() || !m.trace_ready.is_empty() {
            self.notify(&id);
            return;
        }
        if !m.pending() {
            self.finish(&id);
            return;
        }
        if m.rcpts
            .iter()
            .all(|r| matches!(r.state, RState::Deferred(_) | RState::Done))
        {
            self.deferred(&id);
        }
    }

    /// Queues one notice for a message's failed recipients (and one for
    /// its NOTIFY=SUCCESS deliveries); failed recipients become final only
    /// once their notice is queued.
    fn notify(&mut self, id: &str) {
        let ctx = self.outcome_ctx(id);
        let m = self.msgs.get_mut(id).expect("message");
        let bounces = std::mem::take(&mut m.bounces);
        let successes = std::mem::take(&mut m.successes);
        let trace = std::mem::take(&mut m.trace_ready);
        m.in_flight += 1;
        let (agents, tx, qid) = (self.agents.clone(), self.tx.clone(), id.to_string());
        tokio::task::spawn_local(async move {
            let fates = notices(&agents, ctx, bounces, successes, trace).await;
            let _ = tx.send(Ev::Delivered {
                id: qid,
                dest: (Role::Bounce, String::new()),
                fates,
                removed: false,
            });
        });
    }

    /// Every delivery of a message came back and some recipients were
    /// deferred: schedule the next attempt (or expire the message).
    fn deferred(&mut self, id: &str) {
        let s = self.s.clone();
        let m = self.msgs.get_mut(id).expect("message");
        if m.age() >= m.lifetime(&s) {
            self.expire(id);
            return;
        }
        m.attempts += 1;
        let delay = sched::backoff(m.attempts, s.min_backoff, s.max_backoff, fastrand::f64());
        m.next_try = Instant::now() + delay;
        let at_us = now_us() + delay.as_micros() as u64;
        let attempts = m.attempts;
        self.timers.push(Reverse((m.next_try, id.to_string())));
        self.arm_warning(id);
        self.persist(id, vec![qq::State::NextAttempt { at_us, attempts }]);
    }

    /// The queue lifetime ran out: bounce every recipient still deferred.
    fn expire(&mut self, id: &str) {
        let Some(m) = self.msgs.get_mut(id) else {
            return;
        };
        info!(
            "{id}: from=<{}>, status=expired, returned to sender",
            m.sender
        );
        let results: Vec<deliver::DeliveryResult> = m
            .rcpts
            .iter_mut()
            .enumerate()
            .filter(|(_, r)| matches!(r.state, RState::Deferred(_) | RState::Idle | RState::Queued))
            .map(|(i, r)| {
                let why = match &r.state {
                    RState::Deferred(w) => w.clone(),
                    _ => "message expired".into(),
                };
                r.state = RState::InFlight;
                deliver::DeliveryResult {
                    index: i as u32,
                    status: Status::Bounced,
                    dsn: r.last_dsn.replacen('4', "5", 1),
                    text: format!("message delivery timed out ({why})"),
                    relay: "none".into(),
                    remote_mta: String::new(),
                }
            })
            .collect();
        m.in_flight += 1;
        self.spawn_outcome(
            id,
            (Role::Qmgr, String::new()),
            Ok(deliver::Reply { results }),
        );
    }

    fn delay_warning(&mut self, id: &str) {
        let Some(m) = self.msgs.get_mut(id) else {
            return;
        };
        m.delay_warned = true;
        let rcpts: Vec<bounce::Rcpt> = m
            .rcpts
            .iter()
            .filter(|r| matches!(r.state, RState::Deferred(_)))
            .filter(|r| r.notify == 0 || r.notify & notify::DELAY != 0)
            .map(|r| bounce::Rcpt {
                address: r.address.clone(),
                orcpt: r.orcpt.clone(),
                dsn: r.last_dsn.clone(),
                text: match &r.state {
                    RState::Deferred(w) => w.clone(),
                    _ => String::new(),
                },
                remote_mta: String::new(),
            })
            .collect();
        let ctx = self.outcome_ctx(id);
        let agents = self.agents.clone();
        let qid = id.to_string();
        tokio::task::spawn_local(async move {
            if !rcpts.is_empty()
                && let Some(file) = ctx.file
            {
                let req = bounce::Request {
                    queue_id: qid.clone(),
                    sender: ctx.sender.clone(),
                    envid: ctx.envid.clone(),
                    ret: 2,
                    kind: bounce::Kind::Delay,
                    arrival_us: ctx.arrival_us,
                    recipients: rcpts,
                    file,
                };
                match agents.bounce(req).await {
                    Ok(bounce::Reply::Queued(n)) => info!("{qid}: sender delay notification: {n}"),
                    Ok(other) => info!("{qid}: no delay notification: {other:?}"),
                    Err(e) => warn!("{qid}: delay notification failed: {e}"),
                }
            }
            let _ = agents
                .queue(qq::Request::Append {
                    queue_id: qid,
                    states: vec![qq::State::DelayWarned],
                })
                .await;
        });
    }

    /// Every recipient is done: the broker frees the file.
    fn finish(&mut self, id: &str) {
        self.forget(id);
        let (agents, qid) = (self.agents.clone(), id.to_string());
        tokio::task::spawn_local(async move {
            remove(&agents, &qid).await;
        });
    }

    fn forget(&mut self, id: &str) {
        if let Some(m) = self.msgs.remove(id) {
            self.order.remove(&(m.arrival_us, id.to_string()));
        }
    }

    /// Appends state records; failures are logged (the worst case after a
    /// crash is a repeated delivery attempt, never a lost message).
    fn persist(&self, id: &str, states: Vec<qq::State>) {
        let (agents, qid) = (self.agents.clone(), id.to_string());
        tokio::task::spawn_local(async move {
            match agents
                .queue(qq::Request::Append {
                    queue_id: qid.clone(),
                    states,
                })
                .await
            {
                Ok(qq::Reply::Ok) => {}
                other => warn!("{qid}: cannot record state: {}", append_error(other)),
            }
        });
    }
}

/// What the outcome path needs to know about a message.
pub(crate) struct OutcomeCtx {
    id: String,
    sender: String,
    envid: String,
    ret: u8,
    arrival_us: u64,
    /// sendmail -v: deliveries carry their details for the report.
    trace: bool,
    /// (address, orcpt, notify) by recipient index.
    rcpts: Vec<(String, String, u8)>,
    file: Option<OwnedFd>,
}

/// Turns an agent's results into recipient fates and makes them durable
/// before the queue manager learns of them. A result is never dropped:
/// anything unsettled is deferred (L209). Failures are not recorded here:
/// they become final with their notice (see [`notices`]).
async fn settle(
    agents: &Agents,
    ctx: OutcomeCtx,
    idxs: &[u32],
    r: Result<deliver::Reply, String>,
    last: bool,
) -> (Vec<(u32, Fate)>, bool) {
    let results = match r {
        Ok(rep) => rep.results,
        Err(e) => {
            warn!("{}: {e}", ctx.id);
            let fates = idxs
                .iter()
                .map(|&i| {
                    (
                        i,
                        Fate::Deferred {
                            dsn: "4.3.0".into(),
                            reason: format!("delivery temporarily suspended: {e}"),
                        },
                    )
                })
                .collect();
            return (fates, false);
        }
    };
    let mut fates: Vec<(u32, Fate)> = Vec::new();
    for x in &results {
        let Some((addr, orcpt, notify_bits)) = ctx.rcpts.get(x.index as usize).cloned() else {
            continue;
        };
        let entry = bounce::Rcpt {
            address: addr,
            orcpt,
            dsn: x.dsn.clone(),
            text: x.text.clone(),
            remote_mta: x.remote_mta.clone(),
        };
        fates.push((
            x.index,
            match x.status {
                Status::Sent => Fate::Done {
                    success: (notify_bits & notify::SUCCESS != 0 || ctx.trace).then_some(entry),
                },
                Status::Deferred => Fate::Deferred {
                    dsn: x.dsn.clone(),
                    reason: x.text.clone(),
                },
                // NOTIFY=NEVER: no notice, so final right away.
                Status::Bounced if notify_bits & notify::NEVER != 0 => Fate::Done { success: None },
                Status::Bounced => Fate::Bounced(entry),
            },
        ));
    }
    // Recipients the agent did not answer for are deferred, not forgotten.
    for &i in idxs {
        if !results.iter().any(|x| x.index == i) {
            fates.push((
                i,
                Fate::Deferred {
                    dsn: "4.3.0".into(),
                    reason: "delivery agent gave no result".into(),
                },
            ));
        }
    }
    // The last open recipients all delivered, with no notice owed: free the
    // file at once. Its Removed record is the durable mark that they are
    // done, so no separate done records are needed first.
    if last
        && fates
            .iter()
            .all(|(_, f)| matches!(f, Fate::Done { success: None }))
        && remove(agents, &ctx.id).await
    {
        return (fates, true);
    }
    (record(agents, &ctx.id, fates).await, false)
}

/// Has the broker free a finished message's file; logs the outcome.
async fn remove(agents: &Agents, id: &str) -> bool {
    match agents.queue(qq::Request::Remove(id.to_string())).await {
        Ok(qq::Reply::Ok) => {
            info!("{id}: removed");
            true
        }
        other => {
            warn!("{id}: cannot remove: {}", append_error(other));
            false
        }
    }
}

/// Records Done and Deferred fates durably; when that fails, every Done
/// becomes a deferral (delivered again later rather than lost track of).
async fn record(agents: &Agents, id: &str, fates: Vec<(u32, Fate)>) -> Vec<(u32, Fate)> {
    let states: Vec<qq::State> = fates
        .iter()
        .filter_map(|(i, f)| match f {
            Fate::Done { .. } => Some(qq::State::RcptDone(*i)),
            Fate::Deferred { reason, .. } => Some(qq::State::RcptDeferred {
                index: *i,
                reason: reason.clone(),
            }),
            Fate::Bounced(_) => None,
        })
        .collect();
    if states.is_empty() {
        return fates;
    }
    match agents
        .queue(qq::Request::Append {
            queue_id: id.to_string(),
            states,
        })
        .await
    {
        Ok(qq::Reply::Ok) => fates,
        other => {
            warn!(
                "{id}: cannot record delivery results ({}); will retry",
                append_error(other)
            );
            fates
                .into_iter()
                .map(|(i, f)| match f {
                    Fate::Done { .. } => (
                        i,
                        Fate::Deferred {
                            dsn: "4.3.0".into(),
                            reason: "delivery status not recorded".into(),
                        },
                    ),
                    other => (i, other),
                })
                .collect()
        }
    }
}

/// Queues the notices of one message and settles its failed recipients:
/// final once the notice is queued, deferred if it could not be.
async fn notices(
    agents: &Agents,
    ctx: OutcomeCtx,
    bounces: Vec<(u32, bounce::Rcpt)>,
    successes: Vec<bounce::Rcpt>,
    trace: Vec<bounce::Rcpt>,
) -> Vec<(u32, Fate)> {
    let mut fates = Vec::new();
    for (kind, list) in [
        (
            bounce::Kind::Failure,
            bounces.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>(),
        ),
        (bounce::Kind::Success, successes),
        (bounce::Kind::Trace, trace),
    ] {
        if list.is_empty() {
            continue;
        }
        let ok = match ctx.file.as_ref().and_then(|f| f.try_clone().ok()) {
            None => false,
            Some(file) => {
                let req = bounce::Request {
                    queue_id: ctx.id.clone(),
                    sender: ctx.sender.clone(),
                    envid: ctx.envid.clone(),
                    ret: ctx.ret,
                    kind,
                    arrival_us: ctx.arrival_us,
                    recipients: list,
                    file,
                };
                match agents.bounce(req).await {
                    Ok(bounce::Reply::Queued(n)) => {
                        let what = match kind {
                            bounce::Kind::Failure => "non-delivery",
                            bounce::Kind::Trace => "delivery report (-v)",
                            _ => "delivery status",
                        };
                        info!("{}: sender {what} notification: {n}", ctx.id);
                        true
                    }
                    Ok(bounce::Reply::Dropped(why)) => {
                        info!("{}: no notification: {why}", ctx.id);
                        true
                    }
                    Ok(bounce::Reply::Failed(e)) | Err(e) => {
                        warn!("{}: cannot queue the notification: {e}", ctx.id);
                        false
                    }
                }
            }
        };
        // The -v report is best effort, like Postfix's: once tried, it is
        // recorded as sent and never repeated.
        if kind == bounce::Kind::Trace {
            let r = agents
                .queue(qq::Request::Append {
                    queue_id: ctx.id.clone(),
                    states: vec![qq::State::TraceSent],
                })
                .await;
            if !matches!(r, Ok(qq::Reply::Ok)) {
                warn!(
                    "{}: cannot record the -v report: {}",
                    ctx.id,
                    append_error(r)
                );
            }
        }
        if kind == bounce::Kind::Failure {
            for (i, _) in &bounces {
                fates.push((
                    *i,
                    if ok {
                        Fate::Done { success: None }
                    } else {
                        Fate::Deferred {
                            dsn: "4.3.0".into(),
                            reason: "cannot send the non-delivery notification".into(),
                        }
                    },
                ));
            }
        }
    }
    record(agents, &ctx.id, fates).await
}

/// Why the broker did not record an append, for the log.
fn append_error<E: std::fmt::Display>(r: Result<qq::Reply, E>) -> String {
    match r {
        Ok(qq::Reply::Failed(why)) => why,
        Ok(qq::Reply::Ok) => "recorded".into(),
        Ok(qq::Reply::Opened(_)) => "unexpected answer from the broker".into(),
        Err(e) => e.to_string(),
    }
}

/// A recipient's first outcome, for the sendmail -v report.
fn first_outcome(r: &Rcpt, fate: &Fate) -> bounce::Rcpt {
    let base = |dsn: &str, text: &str| bounce::Rcpt {
        address: r.address.clone(),
        orcpt: r.orcpt.clone(),
        dsn: dsn.into(),
        text: text.into(),
        remote_mta: String::new(),
    };
    match fate {
        Fate::Done { success: Some(e) } | Fate::Bounced(e) => e.clone(),
        // Final without details: a failure whose sender asked NOTIFY=NEVER.
        Fate::Done { success: None } => base("5.0.0", "undeliverable (NOTIFY=NEVER)"),
        Fate::Deferred { dsn, reason } => base(dsn, reason),
    }
}
