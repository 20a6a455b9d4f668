//! qmgr: the queue manager. It holds the queue in memory, learned from the
//! broker (a snapshot at start, then one event per commit) and never scans a
//! directory. It routes recipients, schedules deliveries per destination
//! with a concurrency limit and a rate delay, retries deferred mail with a
//! jittered exponential backoff, bounces what expires, and is the only
//! process that changes a message's state (the broker makes it durable).
mod admin;
mod agents;
mod load;
mod outcome;
mod sched;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
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
use crate::tablecache::TableCache;
use crate::tables::{self, Table};
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
}
