//! The broker: the only process that can see the queue directory (and, with
//! TLS, the private keys). It hands out queue files from a spare pool,
//! makes them durable and visible, tells the queue manager, and answers the
//! table lookups jailed daemons cannot do themselves.
mod dkim;
mod keys;
mod lookups;
mod qid;
mod queue;
mod reload;
mod sync;

use std::cell::RefCell;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::time::Duration;

use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;
use postern_config::{Params, Role};
use postern_ipc::{
    Channel, ChannelError, Endpoint, cleanup_broker as cb, keys as pk, qmgr_broker as qb,
    qmgr_queue as qq, smtpd_broker as sb,
};
use tokio::sync::{Notify, mpsc, watch};

use crate::clock::now_us;
use crate::daemon::{self, Context};
use crate::{fatal, info, warn};
pub use keys::files as key_files;
use keys::{Budget, KeyStore};
use lookups::lookup_conn;
pub use lookups::{Lookups, lookups};
use postern_ipc::edge::Answer;
use queue::Queue;
pub use reload::LIVE as LIVE_PARAMS;
use sync::Syncer;

struct Broker {
    queue: Queue,
    /// The queue manager's feed: fresh commits go straight to it, with
    /// their envelope, while its active set has room.
    fresh: Option<(u64, mpsc::UnboundedSender<qb::QueuedMessage>)>,
    next_feed: u64,
    /// Wakes the feed: a message became due or the active set has room.
    wake: Rc<Notify>,
    next_owner: u64,
    /// queue_minfree: new mail is refused while the queue file system has
    /// no more than this many bytes free.
    minfree: u64,
}

type Shared = Rc<RefCell<Broker>>;

pub fn main(ipc_fd: std::os::fd::RawFd) -> ! {
    daemon::run(Role::Broker, ipc_fd, |params: &Params| {
        let qpath = params.str("queue_directory");
        let qdir = open(
            qpath,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| format!("broker: cannot open queue directory {qpath}: {e}"))?;
        let pool = params.int("queue_file_pool_size").unwrap_or(32) as usize;
        let minfree = params.size("queue_minfree").unwrap_or(0);
        let queue = Queue::open(&qdir, pool)
            .map_err(|e| format!("broker: queue directory {qpath}: {e}"))?;
        let lookup = lookups(params)?;
        // The private keys are read here, before the jail, and never again.
        let keys = Rc::new(KeyStore::load(params));
        let dkim = Rc::new(dkim::DkimStore::load(params, &keys::read_path, None));
        let keep = vec![qdir.as_raw_fd(), queue.dir_fd().as_raw_fd()];
        let keep_all: Vec<_> = keep.into_iter().chain(queue_extra_fds(&queue)).collect();
        Ok((
            move |ctx: Context| serve(ctx, qdir, queue, minfree, lookup, (keys, dkim)),
            keep_all,
        ))
    })
}

fn queue_extra_fds(q: &Queue) -> Vec<std::os::fd::RawFd> {
    q.fds()
}

async fn serve(
    mut ctx: Context,
    qdir: OwnedFd,
    mut queue: Queue,
    minfree: u64,
    lookup: Lookups,
    (keys, dkim): (Rc<KeyStore>, Rc<dkim::DkimStore>),
) {
    let listed = match queue.begin_recovery() {
        Ok(n) => n,
        Err(e) => fatal!("cannot list the queue: {e}"),
    };
    // A full disk must not keep the broker down: the pool refills on
    // demand once there is room again.
    if let Err(e) = queue.fill_pool() {
        warn!("cannot create spare queue files: {e}");
    }
    info!(
        "queue: {listed} queue file(s) to recover, {} spare file(s)",
        queue.free_count()
    );
    if let Err(e) = queue.start_reaper() {
        warn!("cannot start the slot-reaper thread ({e}): emptying queue files inline");
    }
    let syncer = Syncer::start(qdir);
    // New spare files (and recovery's changes) become durable before use.
    if let Err(e) = syncer.sync().await {
        fatal!("{e}");
    }
    let st: Shared = Rc::new(RefCell::new(Broker {
        queue,
        fresh: None,
        next_feed: 0,
        wake: Rc::new(Notify::new()),
        next_owner: 1,
        minfree,
    }));
    let current = reload::Current {
        keys: watch::Sender::new(keys),
        dkim: watch::Sender::new(dkim),
        lookups: watch::Sender::new(Rc::new(lookup)),
    };
    let cache = Rc::new(crate::tablecache::TableCache::new(ctx.switchboard.clone()));
    let allowed: Rc<std::collections::BTreeSet<std::path::PathBuf>> = Rc::new(
        crate::tables::configured_files(&ctx.params)
            .into_iter()
            .collect(),
    );
    let query = ctx.query_timeout();
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async move {
            tokio::task::spawn_local(recover(st.clone()));
            if crate::metrics::enabled() {
                tokio::task::spawn_local(queue_figures(st.clone()));
            }
            loop {
                tokio::select! {
                    // A reload the master sent before a channel is applied
                    // before that channel: a new smtpd gets the new keys.
                    biased;
                    r = ctx.reloads.recv() => {
                        if let Some(r) = r {
                            reload::apply(&st, &current, r);
                        }
                    }
                    p = ctx.inbound.recv() => {
                        let Some((role, fd)) = p else { return };
                        let st = st.clone();
                        match role {
                            Role::Cleanup => { tokio::task::spawn_local(cleanup_conn(st, syncer.clone(), fd, query)); }
                            Role::Qmgr => { tokio::task::spawn_local(qmgr_conn(st, syncer.clone(), fd, query)); }
                            Role::Smtpd | Role::Smtp => {
                                let keys = KeyChannel {
                                    role,
                                    keys: current.keys.subscribe(),
                                    dkim: current.dkim.subscribe(),
                                    tables: current.lookups.subscribe(),
                                    cache: cache.clone(),
                                };
                                tokio::task::spawn_local(peer_conn(keys, fd, query));
                            }
                            other => warn!("unexpected channel from {other}"),
                        }
                    }
                    a = ctx.admin.recv() => {
                        // `postern map query` through the running system:
                        // the control socket's channel (never showq's).
                        if let Some((fd, false)) = a {
                            tokio::task::spawn_local(table_queries(cache.clone(), allowed.clone(), fd, query));
                        }
                    }
                    _ = ctx.shutdown.changed() => return,
                }
            }
        })
        .await;
}

/// Lookups for `postern map query`, answered by the daemons' own path:
/// the table cache over descriptors the master opened, and proxymap for
/// external tables. Only tables whose files the configuration names.
async fn table_queries(
    cache: Rc<crate::tablecache::TableCache>,
    allowed: Rc<std::collections::BTreeSet<std::path::PathBuf>>,
    fd: OwnedFd,
    timeout: Duration,
) {
    use postern_ipc::proxymap::{self as px, Reply};
    let Ok(ep) = postern_ipc::edge::accept::<px::Link>(fd, timeout).await else {
        return;
    };
    let _ = postern_ipc::edge::serve::<px::Link, _, _>(ep, |req| {
        let (cache, allowed) = (cache.clone(), allowed.clone());
        async move {
            let reply = match crate::tables::parse(&req.table) {
                Err(e) => Reply::Failed(e),
                Ok(t) if !t.files().iter().all(|(p, _)| allowed.contains(p)) => Reply::Failed(
                    "the running system does not use this table (it is named by no setting)".into(),
                ),
                Ok(t) => match cache.lookup(&t, &req.key).await {
                    Ok(Some(v)) => Reply::Found(v),
                    Ok(None) => Reply::NotFound,
                    Err(e) => Reply::Failed(e),
                },
            };
            Answer::Reply(reply)
        }
    })
    .await;
}

/// Reads the queue files listed at start in batches, between other work:
/// the broker takes new mail and feeds the queue manager meanwhile. A
/// shortage (no descriptor, no memory) is retried with backoff, never fatal.
async fn recover(st: Shared) {
    let t0 = std::time::Instant::now();
    let mut total = queue::Recovered::default();
    let mut backoff = Duration::from_millis(100);
    loop {
        let r = st.borrow_mut().queue.recover_some(256);
        total.committed += r.committed;
        total.freed += r.freed;
        total.set_aside += r.set_aside;
        st.borrow().wake.notify_one();
        if let Some(e) = r.shortage {
            warn!(
                "queue recovery: {e}; retrying in {} ms",
                backoff.as_millis()
            );
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
            continue;
        }
        if r.left == 0 {
            info!(
                "queue: recovered {} message(s) in {} ms ({} freed, {} set aside)",
                total.committed,
                t0.elapsed().as_millis(),
                total.freed,
                total.set_aside
            );
            return;
        }
        backoff = Duration::from_millis(100);
        tokio::task::yield_now().await;
    }
}

/// A sibling broke the protocol (a bug or a compromise): its channel is
/// dropped and logged; the broker and every other channel go on. Whatever
/// that channel had not committed is aborted by its owner's cleanup.
fn dropped(peer: &str, e: impl std::fmt::Display) {
    warn!("protocol violation from {peer}: {e}; channel dropped");
}

async fn cleanup_conn(st: Shared, syncer: Syncer, fd: OwnedFd, timeout: Duration) {
    let owner = {
        let mut b = st.borrow_mut();
        b.next_owner += 1;
        b.next_owner
    };
    let Some(mut ep) =
        crate::edges::accept::<cb::Link>(Role::Broker, Role::Cleanup, fd, timeout).await
    else {
        return;
    };
    loop {
        let req = match ep.recv().await {
            Ok(r) => r,
            Err(ChannelError::Violation(v)) => {
                dropped("cleanup", v);
                break;
            }
            Err(_) => break,
        };
        let reply = match req {
            cb::Request::Allocate => {
                let mut b = st.borrow_mut();
                match b.queue.free_bytes() {
                    // Postfix's smtpd check: no room beyond queue_minfree.
                    Ok(free) if free <= b.minfree => cb::Reply::NoSpace(free),
                    _ => match b.queue.allocate(owner) {
                        Ok((id, fd)) => cb::Reply::Allocated(id, fd),
                        Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => {
                            cb::Reply::NoSpace(0)
                        }
                        Err(e) => {
                            warn!("cannot allocate a queue file: {e}");
                            cb::Reply::Failed(format!("queue file allocation: {e}"))
                        }
                    },
                }
            }
            cb::Request::Commit(c) => match commit(&st, &syncer, owner, c).await {
                Ok(r) => r,
                Err(e) => {
                    dropped("cleanup", e);
                    break;
                }
            },
            cb::Request::Abort(id) => match st.borrow_mut().queue.abort(&id, owner) {
                Ok(()) => cb::Reply::Aborted,
                Err(queue::QueueError::Io(e)) => cb::Reply::Failed(e.to_string()),
                Err(e) => {
                    dropped("cleanup", e);
                    break;
                }
            },
        };
        if ep.send(&reply).await.is_err() {
            break;
        }
    }
    // The channel is gone: whatever it had not committed never will be.
    for id in st.borrow_mut().queue.abort_owner(owner) {
        info!("{id}: removed: transaction abandoned before commit");
    }
}

/// Commits one queue file. Err: the request broke the protocol (not the
/// caller's file, not allocated): the channel is dropped.
async fn commit(
    st: &Shared,
    syncer: &Syncer,
    owner: u64,
    c: cb::Commit,
) -> Result<cb::Reply, queue::QueueError> {
    let r = st
        .borrow_mut()
        .queue
        .prepare_commit(&c.queue_id, owner, now_us());
    let summary = match r {
        Ok(s) => s,
        Err(queue::QueueError::Malformed(id, why)) => {
            warn!("{id}: refusing to commit a malformed queue file: {why}");
            return Ok(cb::Reply::Failed(format!("malformed queue file: {why}")));
        }
        Err(queue::QueueError::Io(e)) => {
            warn!("{}: cannot commit: {e}", c.queue_id);
            return Ok(cb::Reply::Failed(e.to_string()));
        }
        Err(e) => return Err(e),
    };
    if let Err(e) = syncer.sync().await {
        warn!("{}: {e}", c.queue_id);
        return Ok(cb::Reply::Failed(e));
    }
    let nrcpt = summary.recipients.len() as u32;
    let arrival_us = summary.header.as_ref().map_or(0, |h| h.arrival_us);
    let mut b = st.borrow_mut();
    // Straight into the active set, envelope and all, when it has room and
    // no older mail waits; else in arrival order with the rest.
    // A message committed on hold (smtpd's HOLD action) waits for the
    // admin, outside the active set.
    let hold = summary.hold;
    let fresh = !hold && b.fresh.is_some() && b.queue.room_for_fresh(nrcpt);
    b.queue
        .mark_committed(&c.queue_id, arrival_us, nrcpt, fresh, hold);
    if hold {
        return Ok(cb::Reply::Committed);
    }
    if fresh {
        let m = qb::QueuedMessage {
            queue_id: c.queue_id.clone(),
            arrival_us,
            size: summary.size,
            nrcpt,
            due_us: 0,
            envelope: Some(envelope(summary)),
        };
        // A feed that just ended gives its set back when it cleans up.
        if let Some((_, tx)) = &b.fresh {
            let _ = tx.send(m);
        }
    } else {
        b.wake.notify_one();
    }
    Ok(cb::Reply::Committed)
}

fn envelope(s: postern_proto::queue::Summary) -> qb::Envelope {
    // prepare_commit refuses a file without a sender.
    let (sender, envid, ret, smtputf8, body_8bit) = s
        .sender
        .map(|x| (x.address, x.envid, x.ret, x.smtputf8, x.body_8bit))
        .unwrap_or_default();
    qb::Envelope {
        sender,
        envid,
        ret,
        smtputf8,
        body_8bit,
        trace: s.trace,
        recipients: s
            .recipients
            .into_iter()
            .map(|r| qb::Recipient {
                address: r.address,
                orcpt: r.orcpt,
                notify: r.notify,
            })
            .collect(),
    }
}

/// qmgr opens two kinds of channel: the subscription to committed
/// messages, and requests about them.
async fn qmgr_conn(st: Shared, syncer: Syncer, fd: OwnedFd, timeout: Duration) {
    let Ok(mut ch) = Channel::new(
        fd,
        <qq::Request as postern_ipc::Message>::MAX_FRAME,
        timeout,
    ) else {
        return;
    };
    let edge = match ch
        .hello_server_any(&[(qb::EDGE, qb::VERSION), (qq::EDGE, qq::VERSION)])
        .await
    {
        Ok(e) => e,
        Err(ChannelError::Violation(v)) => return dropped("qmgr", v),
        Err(_) => return,
    };
    if edge == qb::EDGE {
        subscription(st, ch, timeout).await;
    } else {
        queue_requests(st, syncer, ch).await;
    }
}

/// Messages carry their file's descriptor only while the queue manager has
/// fewer unread bytes than this waiting; beyond that it opens the files
/// itself.
const MAX_UNREAD_WITH_FDS: usize = 32 * 1024;

/// The feed of the queue manager's active set: fresh commits (from
/// [`commit`]) and whatever [`Queue::offer`] finds due, while the set has
/// room. A second subscription replaces the first.
async fn subscription(st: Shared, ch: Channel, timeout: Duration) {
    let mut ep = Endpoint::<qb::Event, qb::Request>::from_channel(ch);
    // A violation drops this feed, never the broker: the queue manager
    // subscribes again, and its active set is due again meanwhile.
    let limits = match ep.recv_within(timeout).await {
        Ok(qb::Request::Subscribe(l)) => l,
        Err(ChannelError::Violation(v)) => {
            warn!("qmgr feed: protocol violation: {v}; dropping the channel");
            return;
        }
        Err(_) => return,
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (me, wake) = {
        let mut b = st.borrow_mut();
        b.queue.subscribe(limits);
        b.next_feed += 1;
        let me = b.next_feed;
        b.fresh = Some((me, tx));
        (me, b.wake.clone())
    };
    enum Next {
        Fresh(qb::QueuedMessage),
        Look,
        Stop,
    }
    'feed: loop {
        // One clock reading decides both what is offered and what the
        // timer waits for: a message due between two readings would
        // otherwise be neither offered nor waited for.
        let mut now = now_us();
        loop {
            let e = st.borrow_mut().queue.offer(now);
            let Some(e) = e else { break };
            let m = qb::QueuedMessage {
                queue_id: e.qid.as_str().to_string(),
                arrival_us: e.arrival_us,
                size: 0,
                nrcpt: e.nrcpt,
                due_us: e.due_us,
                envelope: None,
            };
            if feed(&st, &ep, m).await.is_err() {
                break 'feed;
            }
            now = now_us();
        }
        // A due message that could not be offered waits for room (a wake);
        // only a later due time arms the timer, so this never spins.
        let due = st.borrow().queue.next_due().filter(|&t| t > now);
        let next = tokio::select! {
            m = rx.recv() => m.map_or(Next::Stop, Next::Fresh),
            _ = wake.notified() => Next::Look,
            _ = sleep_until_us(due) => Next::Look,
            // The queue manager sends nothing after subscribing.
            r = ep.recv() => {
                match r {
                    Err(ChannelError::Violation(v)) => {
                        warn!("qmgr feed: protocol violation: {v}; dropping the channel");
                    }
                    Ok(_) => warn!("qmgr feed: a second subscription on one feed; dropping the channel"),
                    Err(_) => {}
                }
                Next::Stop
            }
        };
        match next {
            Next::Fresh(m) => {
                if feed(&st, &ep, m).await.is_err() {
                    break;
                }
            }
            Next::Look => {}
            Next::Stop => break,
        }
    }
    // Gone: its active set is due again for the next queue manager.
    let mut b = st.borrow_mut();
    if b.fresh.as_ref().is_some_and(|(id, _)| *id == me) {
        b.fresh = None;
        b.queue.release_active();
    }
}

/// Sends one message into the active set. Its file goes along, which saves
/// the queue manager an open request, while it keeps up: descriptors in
/// flight count against its limits, so a stalled queue manager gets
/// messages without, and the descriptors it holds stay bounded.
async fn feed(
    st: &Shared,
    ep: &Endpoint<qb::Event, qb::Request>,
    message: qb::QueuedMessage,
) -> Result<(), ChannelError> {
    let file = if ep.unread_by_peer().is_ok_and(|n| n < MAX_UNREAD_WITH_FDS) {
        st.borrow().queue.open_readonly(&message.queue_id).ok()
    } else {
        None
    };
    ep.send(&qb::Event { message, file }).await
}

async fn sleep_until_us(due: Option<u64>) {
    match due {
        Some(at) => {
            let now = now_us();
            if at > now {
                tokio::time::sleep(Duration::from_micros(at - now)).await;
            }
        }
        None => std::future::pending().await,
    }
}

fn to_record(s: qq::State) -> postern_proto::queue::Record {
    use postern_proto::queue::Record;
    match s {
        qq::State::RcptDone(index) => Record::RcptDone { index },
        qq::State::RcptDeferred { index, dsn, reason } => {
            Record::RcptDeferredStatus { index, dsn, reason }
        }
        qq::State::NextAttempt { at_us, attempts } => Record::NextAttempt { at_us, attempts },
        qq::State::Hold(h) => Record::Hold(h),
        qq::State::DelayWarned => Record::DelayWarned,
        qq::State::TraceSent => Record::TraceSent,
    }
}

/// Unknown ids are answered, not punished: an admin may have deleted a
/// message while a delivery of it was under way.
async fn queue_requests(st: Shared, syncer: Syncer, ch: Channel) {
    let mut ep = Endpoint::<qq::Reply, qq::Request>::from_channel(ch);
    loop {
        let req = match ep.recv().await {
            Ok(r) => r,
            Err(ChannelError::Violation(v)) => return dropped("qmgr", v),
            Err(_) => return,
        };
        let reply = match req {
            qq::Request::Open(id) => match st.borrow().queue.open_readonly(&id) {
                Ok(fd) => qq::Reply::Opened(fd),
                Err(e) => qq::Reply::Failed(e.to_string()),
            },
            qq::Request::Append {
                queue_id,
                states,
                give_back,
            } => {
                // Delivery progress is not synced: losing it in a crash means
                // delivering again (at least once), never losing mail, and it
                // saves a disk flush per message (Postfix does not fsync its
                // delivery marks either). A hold is synced: a lost hold would
                // let out mail the admin stopped.
                let durable = states.iter().any(|s| matches!(s, qq::State::Hold(_)));
                let records: Vec<_> = states.into_iter().map(to_record).collect();
                let r = {
                    let mut b = st.borrow_mut();
                    let r = b.queue.append_states(&queue_id, &records);
                    // Given back even when the append failed: the message
                    // must not stay in an active set that forgot it.
                    if let Some(due) = give_back {
                        let _ = b.queue.give_back(&queue_id, due);
                        b.wake.notify_one();
                    } else if durable {
                        b.wake.notify_one();
                    }
                    r
                };
                match r {
                    Ok(()) if durable => match syncer.sync().await {
                        Ok(()) => qq::Reply::Ok,
                        Err(e) => qq::Reply::Failed(e),
                    },
                    Ok(()) => qq::Reply::Ok,
                    Err(e) => qq::Reply::Failed(e.to_string()),
                }
            }
            qq::Request::Remove(id) => {
                let mut b = st.borrow_mut();
                let r = b.queue.remove(&id);
                b.wake.notify_one();
                match r {
                    Ok(()) => qq::Reply::Ok,
                    Err(e) => qq::Reply::Failed(e.to_string()),
                }
            }
            qq::Request::Wake(id) => {
                let mut b = st.borrow_mut();
                let r = b.queue.wake(&id);
                b.wake.notify_one();
                match r {
                    Ok(()) => qq::Reply::Ok,
                    Err(e) => qq::Reply::Failed(e.to_string()),
                }
            }
            qq::Request::Flush => {
                let mut b = st.borrow_mut();
                b.queue.flush();
                b.wake.notify_one();
                qq::Reply::Ok
            }
            qq::Request::List(cursor) => {
                let (page, next) = st.borrow().queue.list(cursor, qq::LIST_PAGE);
                qq::Reply::Listed(
                    page.into_iter()
                        .map(|e| qq::Listed {
                            queue_id: e.qid.as_str().to_string(),
                            place: e.place,
                            due_us: e.due_us,
                        })
                        .collect(),
                    next,
                )
            }
        };
        if ep.send(&reply).await.is_err() {
            return;
        }
    }
}

/// What a channel from smtpd or smtp may reach: the keys (TLS and DKIM)
/// and the tables, each as the latest reload left them.
struct KeyChannel {
    role: Role,
    keys: watch::Receiver<Rc<KeyStore>>,
    dkim: watch::Receiver<Rc<dkim::DkimStore>>,
    tables: watch::Receiver<Rc<Lookups>>,
    cache: Rc<crate::tablecache::TableCache>,
}

/// A channel from smtpd (lookups or key operations) or smtp (key
/// operations): the hello says which.
async fn peer_conn(k: KeyChannel, fd: OwnedFd, timeout: Duration) {
    let role = k.role;
    use postern_ipc::Message;
    let max = <sb::Request as Message>::MAX_FRAME.max(<pk::Request as Message>::MAX_FRAME);
    let Ok(mut ch) = Channel::new(fd, max, timeout) else {
        return;
    };
    let edges = [(sb::EDGE, sb::VERSION), (pk::EDGE, pk::VERSION)];
    match ch.hello_server_any(&edges).await {
        Ok(e) if !crate::peers::carries(role, Role::Broker, e) => {
            warn!("refused a {e} channel from {role}: not in the peer graph");
        }
        Ok(e) if e == pk::EDGE => key_conn(k, ch).await,
        Ok(_) => lookup_conn(role, k.tables, k.cache, ch).await,
        Err(ChannelError::Violation(v)) => dropped(role.name(), v),
        Err(_) => {}
    }
}

/// Private-key operations for smtpd and smtp: the keys never leave. The
/// channel serves the TLS keys it started with and closes when a reload
/// changes them (the peer reconnects and learns the new identity). DKIM
/// requests (smtp only) use the latest keys and signing table: a
/// signature names its own selector, so nothing needs to reconnect.
async fn key_conn(k: KeyChannel, ch: Channel) {
    let KeyChannel {
        role,
        keys: mut current,
        dkim: dkim_keys,
        tables,
        cache,
    } = k;
    let keys = current.borrow_and_update().clone();
    let mut ep = Endpoint::<pk::Reply, pk::Request>::from_channel(ch);
    let mut budget = Budget::default();
    loop {
        let req = tokio::select! {
            r = ep.recv() => match r {
                Ok(r) => r,
                Err(ChannelError::Violation(v)) => return dropped(role.name(), v),
                Err(_) => return,
            },
            _ = current.changed() => return,
        };
        let reply = match (role, req) {
            (Role::Smtp, pk::Request::DkimKeys(address)) => {
                let store = dkim_keys.borrow().clone();
                let table = tables.borrow().clone();
                dkim::keys_for(&store, &table.dkim_signing, &cache, &address).await
            }
            (Role::Smtp, pk::Request::DkimSign { name, input }) => {
                if budget.take() {
                    let store = dkim_keys.borrow().clone();
                    dkim::sign(&store, &name, input).await
                } else {
                    pk::Reply::Refused("signing rate limit exceeded".into())
                }
            }
            (_, req) => match keys::answer(&keys, role, &mut budget, req).await {
                Ok(r) => r,
                Err(why) => return dropped(role.name(), why),
            },
        };
        if ep.send(&reply).await.is_err() {
            return;
        }
    }
}

/// The queue gauges (postern_queue_messages and the oldest message's age,
/// by place), once a report interval.
async fn queue_figures(st: Shared) {
    use crate::metrics::{self, catalog};
    use postern_ipc::qmgr_queue::Place;
    let mut tick = tokio::time::interval(metrics::PUSH_EVERY);
    loop {
        tick.tick().await;
        let figures = st.borrow().queue.figures();
        let name = |p: Place| match p {
            Place::Incoming => "incoming",
            Place::Active => "active",
            Place::Deferred => "deferred",
            Place::Hold => "hold",
        };
        let counts: Vec<(Vec<String>, f64)> = figures
            .iter()
            .map(|(p, n, _)| (vec![name(*p).to_string()], *n as f64))
            .collect();
        let oldest: Vec<(Vec<String>, f64)> = figures
            .iter()
            .filter(|(_, n, _)| *n > 0)
            .map(|(p, _, at)| (vec![name(*p).to_string()], *at as f64 / 1e6))
            .collect();
        metrics::replace(&catalog::QUEUE, &counts);
        metrics::replace(&catalog::OLDEST, &oldest);
    }
}
