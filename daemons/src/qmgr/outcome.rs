//! What happens after a delivery attempt: results become recipient fates,
//! durable through the broker, then notices (bounces, delay warnings,
//! success reports), expiry and removal.
use super::*;

impl Qmgr {
    pub(super) fn outcome_ctx(&self, id: &str) -> OutcomeCtx {
        let m = &self.msgs[id];
        OutcomeCtx {
            id: id.to_string(),
            sender: m.sender.clone(),
            envid: m.envid.clone(),
            ret: m.ret,
            arrival_us: m.arrival_us,
            active_us: m.active_us,
            trace: m.trace.is_some(),
            rcpts: m
                .rcpts
                .iter()
                .map(|r| (r.address.clone(), r.orcpt.clone(), r.notify))
                .collect(),
        }
    }

    /// Runs the outcome path for results that need no agent.
    pub(super) fn spawn_outcome(
        &mut self,
        id: &str,
        dest: Dest,
        r: Result<deliver::Reply, String>,
    ) {
        let ctx = self.outcome_ctx(id);
        let (agents, tx, qid) = (self.agents.clone(), self.tx.clone(), id.to_string());
        let idxs: Vec<u32> = match &r {
            Ok(rep) => rep.results.iter().map(|x| x.index).collect(),
            Err(_) => Vec::new(),
        };
        tokio::task::spawn_local(async move {
            let (fates, removed) =
                settle(&agents, ctx, &idxs, r, false, transport_label(&dest)).await;
            let _ = tx.send(Ev::Delivered {
                id: qid,
                dest,
                fates,
                removed,
            });
        });
    }

    pub(super) fn delivered(
        &mut self,
        id: String,
        dest: Dest,
        fates: Vec<(u32, Fate)>,
        removed: bool,
    ) {
        if let Some(dq) = self.dests.get_mut(&dest) {
            dq.in_flight = dq.in_flight.saturating_sub(1);
        }
        if matches!(dest.0, Role::Local | Role::Smtp)
            && let Some(n) = self.agent_busy.get_mut(&dest.0)
        {
            *n = n.saturating_sub(1);
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
        if m.hold {
            // Put on hold while in flight: out of the active set now.
            let next = m.next_try;
            self.give_back(&id, Vec::new(), next);
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
    pub(super) fn notify(&mut self, id: &str) {
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
    pub(super) fn deferred(&mut self, id: &str) {
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
        // Back to the broker, which offers it again when it is due (or
        // sooner, for its delay warning).
        let due = m.due(&s);
        self.give_back(id, vec![qq::State::NextAttempt { at_us, attempts }], due);
    }

    /// The queue lifetime ran out: bounce every recipient still deferred.
    pub(super) fn expire(&mut self, id: &str) {
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

    pub(super) fn delay_warning(&mut self, id: &str) {
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
            let turn = agents.notice_turn().await;
            if !rcpts.is_empty()
                && let Some(file) = open_logged(&agents, &qid).await
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
            drop(turn);
            let _ = agents
                .queue(qq::Request::Append {
                    queue_id: qid,
                    states: vec![qq::State::DelayWarned],
                    give_back: None,
                })
                .await;
        });
    }

    /// Every recipient is done: the broker frees the file.
    pub(super) fn finish(&mut self, id: &str) {
        self.forget(id);
        let (agents, qid) = (self.agents.clone(), id.to_string());
        tokio::task::spawn_local(async move {
            remove(&agents, &qid).await;
        });
    }

    pub(super) fn forget(&mut self, id: &str) {
        if let Some(m) = self.msgs.remove(id) {
            self.order.remove(&(m.arrival_us, id.to_string()));
        }
    }

    /// Appends state records; failures are logged (the worst case after a
    /// crash is a repeated delivery attempt, never a lost message).
    pub(super) fn persist(&self, id: &str, states: Vec<qq::State>) {
        let (agents, qid) = (self.agents.clone(), id.to_string());
        tokio::task::spawn_local(async move {
            match agents
                .queue(qq::Request::Append {
                    queue_id: qid.clone(),
                    states,
                    give_back: None,
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
    /// When the message entered the active queue (µs since the epoch).
    active_us: u64,
    /// sendmail -v: deliveries carry their details for the report.
    trace: bool,
    /// (address, orcpt, notify) by recipient index.
    rcpts: Vec<(String, String, u8)>,
}

/// The queue file, from the broker, for a notice; None (logged) when it
/// cannot be had, and the notice waits for a later attempt.
async fn open_logged(agents: &Agents, id: &str) -> Option<OwnedFd> {
    match agents.open(id).await {
        Ok(f) => Some(f),
        Err(e) => {
            warn!("{id}: cannot open the queue file: {e}");
            None
        }
    }
}

/// Turns an agent's results into recipient fates and makes them durable
/// before the queue manager learns of them. A result is never dropped:
/// anything unsettled is deferred (L209). Failures are not recorded here:
/// they become final with their notice (see [`notices`]).
/// The transport a destination's deliveries count under.
pub(super) fn transport_label(dest: &Dest) -> &'static str {
    match dest.0 {
        Role::Local => "local",
        Role::Smtp if dest.1.starts_with("lmtp:") => "lmtp",
        Role::Smtp => "smtp",
        // Expired messages: bounced by the queue manager itself.
        _ => "none",
    }
}

/// Counts one delivery attempt's results (postern_recipients_total, the
/// delivery latency of final ones, the time the message was active).
fn count(ctx: &OutcomeCtx, transport: &str, results: &[deliver::DeliveryResult], idxs: &[u32]) {
    use crate::metrics::{self, catalog};
    if !metrics::enabled() {
        return;
    }
    let now = now_us();
    let since_arrival = now.saturating_sub(ctx.arrival_us) as f64 / 1e6;
    for x in results {
        let status = match x.status {
            Status::Sent => "sent",
            Status::Deferred => "deferred",
            Status::Bounced => "bounced",
        };
        let class = x.dsn.get(..1).unwrap_or("4");
        metrics::inc(&catalog::RECIPIENTS, &[status, transport, class]);
        if x.status != Status::Deferred {
            metrics::observe(&catalog::LATENCY, &[], since_arrival);
        }
    }
    for _ in idxs
        .iter()
        .filter(|i| !results.iter().any(|x| x.index == **i))
    {
        metrics::inc(&catalog::RECIPIENTS, &["deferred", transport, "4"]);
    }
    if ctx.active_us > 0 {
        metrics::observe(
            &catalog::ACTIVE_TIME,
            &[],
            now.saturating_sub(ctx.active_us) as f64 / 1e6,
        );
    }
}

pub(super) async fn settle(
    agents: &Agents,
    ctx: OutcomeCtx,
    idxs: &[u32],
    r: Result<deliver::Reply, String>,
    last: bool,
    transport: &str,
) -> (Vec<(u32, Fate)>, bool) {
    let results = match r {
        Ok(rep) => {
            count(&ctx, transport, &rep.results, idxs);
            rep.results
        }
        Err(e) => {
            count(&ctx, transport, &[], idxs);
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
pub(super) async fn remove(agents: &Agents, id: &str) -> bool {
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
pub(super) async fn record(agents: &Agents, id: &str, fates: Vec<(u32, Fate)>) -> Vec<(u32, Fate)> {
    let states: Vec<qq::State> = fates
        .iter()
        .filter_map(|(i, f)| match f {
            Fate::Done { .. } => Some(qq::State::RcptDone(*i)),
            Fate::Deferred { dsn, reason } => Some(qq::State::RcptDeferred {
                index: *i,
                dsn: dsn.clone(),
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
            give_back: None,
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
pub(super) async fn notices(
    agents: &Agents,
    ctx: OutcomeCtx,
    bounces: Vec<(u32, bounce::Rcpt)>,
    successes: Vec<bounce::Rcpt>,
    trace: Vec<bounce::Rcpt>,
) -> Vec<(u32, Fate)> {
    let mut fates = Vec::new();
    let _turn = agents.notice_turn().await;
    let file = open_logged(agents, &ctx.id).await;
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
        let ok = match file.as_ref().and_then(|f| f.try_clone().ok()) {
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
                    give_back: None,
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
pub(super) fn append_error<E: std::fmt::Display>(r: Result<qq::Reply, E>) -> String {
    match r {
        Ok(qq::Reply::Failed(why)) => why,
        Ok(qq::Reply::Ok) => "recorded".into(),
        Ok(qq::Reply::Opened(_) | qq::Reply::Listed(..)) => {
            "unexpected answer from the broker".into()
        }
        Err(e) => e.to_string(),
    }
}

/// A recipient's first outcome, for the sendmail -v report.
pub(super) fn first_outcome(r: &Rcpt, fate: &Fate) -> bounce::Rcpt {
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
