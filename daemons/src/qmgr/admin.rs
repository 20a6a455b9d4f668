//! `postern queue ...`: listing, showing, and steering the queue. The admin
//! channel is client-reachable, so a protocol violation drops only it.
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use postern_ipc::admin_qmgr::{self as aq, Entry, Rcpt, Reply, Request};
use postern_ipc::{Channel, ChannelError, Endpoint, Message};
use postern_proto::queue as rec;
use tokio::sync::mpsc;

use postern_ipc::qmgr_queue as qq;

use super::agents::Agents;
use super::{Ev, Qmgr, RState};
use crate::{info, warn};

/// An admin request, as the queue manager's event loop sees it.
pub enum Op {
    Request(Request),
}

/// What the event loop sends back to the admin task.
pub enum Out {
    Reply(Reply),
    /// The queue file of a message to show.
    File(OwnedFd),
}

/// Serves one admin channel. `read_only` (mailq through the public showq
/// socket): the listing only; anything else is refused on this channel.
pub(crate) async fn serve(
    fd: OwnedFd,
    read_only: bool,
    tx: mpsc::UnboundedSender<Ev>,
    timeout: Duration,
) {
    let Ok(mut ch) = Channel::new(fd, <Request as Message>::MAX_FRAME, timeout) else {
        return;
    };
    if let Err(e) = ch.hello_server(aq::EDGE, aq::VERSION).await {
        warn!("queue admin channel: {e}");
        return;
    }
    let mut ep = Endpoint::<Reply, Request>::from_channel(ch);
    loop {
        let req = match ep.recv().await {
            Ok(r) => r,
            Err(ChannelError::Closed) => return,
            Err(e) => {
                // Client-reachable: drop this channel, keep running.
                warn!("queue admin channel: {e}");
                return;
            }
        };
        if read_only && !matches!(req, Request::List) {
            warn!("queue listing channel: refused {req:?}: this channel may only list");
            if ep
                .send(&Reply::Error("permission denied: list only".into()))
                .await
                .is_err()
            {
                return;
            }
            continue;
        }
        let (otx, mut orx) = mpsc::unbounded_channel();
        if tx.send(Ev::Admin(Op::Request(req), otx)).is_err() {
            return;
        }
        while let Some(out) = orx.recv().await {
            let last = match out {
                Out::Reply(r) => {
                    let last = !matches!(r, Reply::Entries(_) | Reply::Content(_));
                    if ep.send(&r).await.is_err() {
                        return;
                    }
                    last
                }
                Out::File(fd) => {
                    let r = show(&fd);
                    for chunk in r.chunks(aq::MAX_CHUNK) {
                        if ep.send(&Reply::Content(chunk.to_vec())).await.is_err() {
                            return;
                        }
                    }
                    if ep.send(&Reply::End).await.is_err() {
                        return;
                    }
                    true
                }
            };
            if last {
                break;
            }
        }
    }
}

/// The message as `postqueue -p`'s neighbour `postcat -q` shows it: the
/// envelope, then the content.
fn show(fd: &OwnedFd) -> Vec<u8> {
    let buf = crate::fsutil::read_queue_file(fd).unwrap_or_default();
    let (records, _) = rec::decode_all(&buf);
    let s = rec::summarize(&records, 0);
    let mut out = String::new();
    if let Some(h) = &s.header {
        out.push_str(&format!("*** ENVELOPE RECORDS {} ***\n", h.queue_id));
        out.push_str(&format!(
            "message_arrival_time: {}\n",
            h.arrival_us / 1_000_000
        ));
    }
    out.push_str(&format!("message_size: {}\n", s.size));
    if let Some(snd) = &s.sender {
        out.push_str(&format!("sender: {}\n", snd.address));
    }
    for (i, r) in s.recipients.iter().enumerate() {
        let done = if s.done.contains(&(i as u32)) {
            " (done)"
        } else {
            ""
        };
        out.push_str(&format!("recipient: {}{done}\n", r.address));
    }
    out.push_str("*** MESSAGE CONTENTS ***\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&rec::content(&records));
    bytes.extend_from_slice(b"*** END OF MESSAGE ***\n");
    bytes
}

/// Which admin operation a request on many ids is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Bulk {
    Delete,
    Hold,
    Release,
    Requeue,
}

impl Bulk {
    fn summary(self, n: usize) -> String {
        let what = match self {
            Bulk::Delete => "Deleted",
            Bulk::Hold => "Placed on hold",
            Bulk::Release => "Released from hold",
            Bulk::Requeue => "Requeued",
        };
        format!("{what}: {n} message{}", if n == 1 { "" } else { "s" })
    }
}

/// Every message outside the active set, from the broker, a page at a time.
pub(super) async fn each_listed(
    agents: &Agents,
    mut f: impl AsyncFnMut(qq::Listed) -> bool,
) -> Result<(), String> {
    let mut cursor = 0;
    loop {
        match agents.queue(qq::Request::List(cursor)).await? {
            qq::Reply::Listed(page, next) => {
                for e in page {
                    if !f(e).await {
                        return Ok(());
                    }
                }
                if next == 0 {
                    return Ok(());
                }
                cursor = next;
            }
            qq::Reply::Failed(e) => return Err(e),
            _ => return Err("unexpected answer from the broker".into()),
        }
    }
}

/// A listing entry for a message outside the active set, read from its
/// file, with its arrival time in microseconds (for the order).
pub(super) async fn entry_of(agents: &Agents, l: &qq::Listed) -> Option<(u64, Entry)> {
    let fd = agents.open(&l.queue_id).await.ok()?;
    let buf = crate::fsutil::read_queue_file(&fd).ok()?;
    let (records, _) = rec::decode_all(&buf);
    let s = rec::summarize(&records, 0);
    let queue_name = match l.place {
        qq::Place::Hold => "hold",
        qq::Place::Incoming => "incoming",
        qq::Place::Active => "active",
        qq::Place::Deferred if l.due_us <= crate::clock::now_us() => "active",
        qq::Place::Deferred => "deferred",
    };
    let arrival_us = s.header.as_ref().map_or(0, |h| h.arrival_us);
    Some((
        arrival_us,
        Entry {
            queue_id: l.queue_id.clone(),
            queue_name: queue_name.into(),
            arrival_time: arrival_us / 1_000_000,
            message_size: s.size,
            sender: s
                .sender
                .as_ref()
                .map(|x| x.address.clone())
                .unwrap_or_default(),
            recipients: s
                .recipients
                .iter()
                .enumerate()
                .filter(|(i, _)| !s.done.contains(&(*i as u32)))
                .map(|(i, r)| Rcpt {
                    address: r.address.clone(),
                    delay_reason: s
                        .deferred
                        .iter()
                        .find(|(x, _)| *x == i as u32)
                        .map(|(_, w)| w.clone())
                        .unwrap_or_default(),
                })
                .collect(),
            forced_expire: false,
        },
    ))
}

/// The broker's part of an operation on messages outside the active set:
/// one request per message. Returns the lines for the admin and how many
/// messages it changed.
async fn bulk_outside(
    agents: &Agents,
    op: Bulk,
    ids: Vec<String>,
    all: bool,
) -> (Vec<String>, usize) {
    let mut targets: Vec<String> = ids;
    if all {
        let r = each_listed(agents, async |l: qq::Listed| {
            let wanted = match op {
                Bulk::Hold => l.place != qq::Place::Hold,
                Bulk::Release => l.place == qq::Place::Hold,
                _ => true,
            };
            if wanted {
                targets.push(l.queue_id);
            }
            true
        })
        .await;
        if let Err(e) = r {
            return (vec![format!("cannot list the queue: {e}")], 0);
        }
    }
    let mut lines = Vec::new();
    let mut n = 0;
    for id in targets {
        let req = match op {
            Bulk::Delete => qq::Request::Remove(id.clone()),
            Bulk::Hold | Bulk::Release => qq::Request::Append {
                queue_id: id.clone(),
                states: vec![qq::State::Hold(op == Bulk::Hold)],
                give_back: None,
            },
            Bulk::Requeue => qq::Request::Wake(id.clone()),
        };
        match agents.queue(req).await {
            Ok(qq::Reply::Ok) => {
                n += 1;
                match op {
                    Bulk::Delete => {
                        info!("{id}: removed");
                        lines.push(format!("{id}: removed"));
                    }
                    Bulk::Hold => info!("{id}: hold: by the administrator"),
                    Bulk::Release => info!("{id}: released from hold"),
                    Bulk::Requeue => {}
                }
            }
            Ok(qq::Reply::Failed(e)) if e.starts_with("unknown queue id") => {
                lines.push(format!("{id}: no such message in the queue"));
            }
            other => {
                let why = super::outcome::append_error(other);
                warn!("{id}: {why}");
                lines.push(format!("{id}: {why}"));
            }
        }
    }
    (lines, n)
}

impl Qmgr {
    pub(crate) fn admin(&mut self, op: Op, reply: mpsc::UnboundedSender<Out>) {
        let Op::Request(req) = op;
        let send = |r: Reply| {
            let _ = reply.send(Out::Reply(r));
        };
        match req {
            Request::List => {
                // The active set from memory, then the rest from the broker.
                let mut batch = Vec::new();
                for (_, id) in self.order.keys() {
                    let m = &self.msgs[id];
                    batch.push(Entry {
                        queue_id: id.clone(),
                        queue_name: if m.hold { "hold" } else { "active" }.into(),
                        arrival_time: m.arrival_us / 1_000_000,
                        message_size: m.size,
                        sender: m.sender.clone(),
                        recipients: m
                            .rcpts
                            .iter()
                            .filter(|r| r.state != RState::Done)
                            .map(|r| Rcpt {
                                address: r.address.clone(),
                                delay_reason: match &r.state {
                                    RState::Deferred(w) => w.clone(),
                                    _ => String::new(),
                                },
                            })
                            .collect(),
                        forced_expire: false,
                    });
                    if batch.len() == aq::BATCH {
                        send(Reply::Entries(std::mem::take(&mut batch)));
                    }
                }
                let agents = self.agents.clone();
                tokio::task::spawn_local(async move {
                    let mut rest: Vec<(u64, Entry)> = Vec::new();
                    let r = each_listed(&agents, async |l: qq::Listed| {
                        if let Some(e) = entry_of(&agents, &l).await {
                            rest.push(e);
                        }
                        if rest.len() == aq::BATCH {
                            rest.sort_by_key(|e| e.0);
                            batch.extend(rest.drain(..).map(|e| e.1));
                        }
                        if batch.len() >= aq::BATCH {
                            let b = std::mem::take(&mut batch);
                            return reply.send(Out::Reply(Reply::Entries(b))).is_ok();
                        }
                        true
                    })
                    .await;
                    rest.sort_by_key(|e| e.0);
                    batch.extend(rest.into_iter().map(|e| e.1));
                    if !batch.is_empty() {
                        let _ = reply.send(Out::Reply(Reply::Entries(batch)));
                    }
                    let _ = reply.send(Out::Reply(match r {
                        Ok(()) => Reply::End,
                        Err(e) => Reply::Error(format!("cannot list the queue: {e}")),
                    }));
                });
            }
            Request::Show(id) => {
                let held = self
                    .msgs
                    .get(&id)
                    .and_then(|m| m.file.as_ref())
                    .and_then(|f| f.try_clone().ok());
                if let Some(fd) = held {
                    let _ = reply.send(Out::File(fd));
                    return;
                }
                let agents = self.agents.clone();
                tokio::task::spawn_local(async move {
                    let _ = reply.send(match agents.open(&id).await {
                        Ok(fd) => Out::File(fd),
                        Err(_) => {
                            Out::Reply(Reply::Error(format!("{id}: no such message in the queue")))
                        }
                    });
                });
            }
            Request::Flush => {
                let ids: Vec<String> = self.msgs.keys().cloned().collect();
                for id in ids {
                    let m = self.msgs.get_mut(&id).expect("listed");
                    if !m.hold && m.in_flight == 0 {
                        m.next_try = Instant::now();
                        self.activate(&id);
                    }
                }
                let agents = self.agents.clone();
                tokio::task::spawn_local(async move {
                    let _ = reply.send(Out::Reply(match agents.queue(qq::Request::Flush).await {
                        Ok(qq::Reply::Ok) => Reply::Done(Vec::new()),
                        other => Reply::Error(format!(
                            "cannot flush the deferred queue: {}",
                            super::outcome::append_error(other)
                        )),
                    }));
                });
            }
            Request::Delete(ids) => self.bulk(Bulk::Delete, ids, reply),
            Request::Hold(ids) => self.bulk(Bulk::Hold, ids, reply),
            Request::Release(ids) => self.bulk(Bulk::Release, ids, reply),
            Request::Requeue(ids) => self.bulk(Bulk::Requeue, ids, reply),
            Request::Explain(target) => self.explain(target, reply),
        }
    }

    /// An operation on named messages (or ALL): those in the active set
    /// here, the rest through the broker.
    fn bulk(&mut self, op: Bulk, ids: Vec<String>, reply: mpsc::UnboundedSender<Out>) {
        let all = ids.iter().any(|i| i == "ALL");
        let (mine, others): (Vec<String>, Vec<String>) = if all {
            (self.msgs.keys().cloned().collect(), Vec::new())
        } else {
            ids.into_iter().partition(|id| self.msgs.contains_key(id))
        };
        let mut lines = Vec::new();
        let mut n = 0;
        for id in mine {
            if self.bulk_active(op, &id) {
                n += 1;
                if op == Bulk::Delete {
                    lines.push(format!("{id}: removed"));
                }
            }
        }
        let agents = self.agents.clone();
        tokio::task::spawn_local(async move {
            let (more, m) = bulk_outside(&agents, op, others, all).await;
            lines.extend(more);
            lines.push(op.summary(n + m));
            let _ = reply.send(Out::Reply(Reply::Done(lines)));
        });
    }

    /// One message of the active set; true when it changed.
    fn bulk_active(&mut self, op: Bulk, id: &str) -> bool {
        let Some(m) = self.msgs.get_mut(id) else {
            return false;
        };
        match op {
            Bulk::Delete => {
                m.deleted = true;
                if m.in_flight == 0 {
                    self.forget(id);
                }
                let (agents, qid) = (self.agents.clone(), id.to_string());
                tokio::task::spawn_local(async move {
                    match agents.queue(qq::Request::Remove(qid.clone())).await {
                        Ok(qq::Reply::Ok) => info!("{qid}: removed"),
                        other => warn!("{qid}: cannot remove: {other:?}"),
                    }
                });
                true
            }
            Bulk::Hold if m.hold => false,
            Bulk::Hold => {
                m.hold = true;
                info!("{id}: hold: by the administrator");
                if m.in_flight == 0 {
                    // Out of the active set, on hold, in one request.
                    let next = m.next_try;
                    self.give_back(id, vec![qq::State::Hold(true)], next);
                } else {
                    // Given back when its deliveries return.
                    self.persist(id, vec![qq::State::Hold(true)]);
                }
                true
            }
            Bulk::Release if !m.hold => false,
            Bulk::Release => {
                m.hold = false;
                m.next_try = Instant::now();
                info!("{id}: released from hold");
                self.persist(id, vec![qq::State::Hold(false)]);
                self.activate(id);
                true
            }
            Bulk::Requeue if m.in_flight > 0 => false,
            Bulk::Requeue => {
                // Read and routed anew (transport_maps may have changed).
                self.give_back(id, Vec::new(), Instant::now());
                true
            }
        }
    }
}
