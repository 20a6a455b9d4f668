//! Learning the queue: the subscription to the broker's commit notices,
//! reading a committed message's envelope, and routing its recipients.
use super::*;

/// Keeps a subscription to the broker; after a broker restart, subscribes
/// again and receives the whole queue anew.
pub(super) async fn subscribe_loop(
    sb: daemon::Switchboard,
    timeout: Duration,
    tx: mpsc::UnboundedSender<Ev>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let r: Result<Endpoint<qb::Request, qb::Event>, String> = async {
            let ep = crate::edges::open::<qb::Link>(&sb, Role::Broker, timeout).await?;
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
pub(super) async fn load(
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
pub(super) async fn resolve(s: &Settings, tables: &TableCache, address: &str) -> Route {
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
