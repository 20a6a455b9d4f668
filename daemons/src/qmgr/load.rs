//! Learning the active set: the subscription to the broker's feed, a
//! message's envelope (from the feed for fresh mail, else from its file),
//! and routing its recipients.
use super::*;

/// Keeps a subscription to the broker's feed; after a broker restart,
/// subscribes again and is offered the queue anew.
pub(super) async fn subscribe_loop(
    sb: daemon::Switchboard,
    timeout: Duration,
    limits: qb::Limits,
    held: Rc<std::cell::Cell<usize>>,
    tx: mpsc::UnboundedSender<Ev>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let r: Result<Endpoint<qb::Request, qb::Event>, String> = async {
            let ep = crate::edges::open::<qb::Link>(&sb, Role::Broker, timeout).await?;
            ep.send(&qb::Request::Subscribe(limits))
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
        if tx.send(Ev::Subscribed).is_err() {
            return;
        }
        loop {
            match ep.recv().await {
                Ok(ev) => {
                    // Kept only within the descriptor budget.
                    let file = ev.file.and_then(|f| HeldFile::keep(&held, f));
                    if tx.send(Ev::Offered(ev.message, file)).is_err() {
                        return;
                    }
                }
                Err(ChannelError::Violation(v)) => {
                    warn!("protocol violation from broker on the feed: {v}; resubscribing");
                    break;
                }
                // One message's descriptor was lost (none free here): the
                // feed goes on, and that message is read through an open.
                Err(ChannelError::FdsLost) => {
                    warn!("broker feed: {}; resubscribing", ChannelError::FdsLost);
                    break;
                }
                Err(_) => break,
            }
        }
    }
}

/// The envelope of a fresh commit, as a queue-file summary: nothing
/// delivered, deferred or held yet.
fn fresh_summary(m: &qb::QueuedMessage, e: qb::Envelope) -> rec::Summary {
    rec::Summary {
        header: Some(rec::Header {
            version: rec::VERSION,
            queue_id: m.queue_id.clone(),
            arrival_us: m.arrival_us,
        }),
        sender: Some(rec::Sender {
            address: e.sender,
            ret: e.ret,
            envid: e.envid,
            smtputf8: e.smtputf8,
            body_8bit: e.body_8bit,
        }),
        recipients: e
            .recipients
            .into_iter()
            .map(|r| rec::Recipient {
                address: r.address,
                orcpt: r.orcpt,
                notify: r.notify,
            })
            .collect(),
        size: m.size,
        content_complete: true,
        committed: true,
        trace: e.trace,
        ..rec::Summary::default()
    }
}

/// Learns a message entering the active set, from the envelope the feed
/// carried or else from its file, and routes its recipients. The file's
/// descriptor is kept (the caller may drop it) only when it came along.
pub(super) async fn load(
    agents: Rc<Agents>,
    tables: Rc<TableCache>,
    s: Rc<Settings>,
    mut m: qb::QueuedMessage,
    file: Option<HeldFile>,
    held: &Rc<std::cell::Cell<usize>>,
) -> Result<Box<Msg>, (String, String)> {
    let id = m.queue_id.clone();
    let err = |e: String| (id.clone(), e);
    let (sum, file) = match m.envelope.take() {
        Some(e) => (fresh_summary(&m, e), file),
        None => {
            // Read through a descriptor of our own; keep one within budget.
            let (fd, file) = match file {
                Some(f) => (f.try_clone().map_err(|e| err(e.to_string()))?, Some(f)),
                None => (agents.open(&id).await.map_err(err)?, None),
            };
            let buf = crate::fsutil::read_queue_file(&fd).map_err(|e| err(e.to_string()))?;
            let (records, _) = rec::decode_all(&buf);
            let file = file.or_else(|| HeldFile::keep(held, fd));
            (rec::summarize(&records, buf.len() as u64), file)
        }
    };
    let (Some(h), Some(snd)) = (sum.header.clone(), sum.sender.clone()) else {
        return Err(err("queue file has no envelope".into()));
    };
    let mut rcpts = Vec::with_capacity(sum.recipients.len());
    for (i, r) in sum.recipients.iter().enumerate() {
        let done = sum.done.contains(&(i as u32));
        let route = if done {
            Route::Discard
        } else {
            resolve(&s, &s.route, &tables, &snd.address, &r.address).await
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
            last_dsn: sum
                .deferred_dsn
                .iter()
                .find(|(x, _)| *x == i as u32)
                .map_or_else(|| "4.0.0".into(), |(_, d)| d.clone()),
        });
    }
    // Offered at or after its next attempt (or at once: flushed, released,
    // recovered), it is tried now; offered before it, only its delay
    // warning is due.
    let early = m.due_us != 0 && m.due_us < sum.next_attempt_us;
    let next_try = if early && sum.next_attempt_us > now_us() {
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
        file,
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

/// Routes one recipient (see `route.rs`).
pub(super) async fn resolve(
    s: &Settings,
    how: &Routing,
    tables: &TableCache,
    sender: &str,
    address: &str,
) -> Route {
    super::route::resolve(&s.classes, how, tables, sender, address).await
}
