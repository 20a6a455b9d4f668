//! `postern queue ...`: listing, showing, and steering the queue. The admin
//! channel is client-reachable, so a protocol violation drops only it.
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use postern_ipc::admin_qmgr::{self as aq, Entry, Rcpt, Reply, Request};
use postern_ipc::{Channel, ChannelError, Endpoint, Message};
use postern_proto::queue as rec;
use tokio::sync::mpsc;

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

impl Qmgr {
    fn ids(&self, ids: &[String]) -> (Vec<String>, Vec<String>) {
        if ids.iter().any(|i| i == "ALL") {
            return (
                self.order.keys().map(|(_, id)| id.clone()).collect(),
                Vec::new(),
            );
        }
        ids.iter()
            .cloned()
            .partition(|id| self.msgs.contains_key(id))
    }

    pub(crate) fn admin(&mut self, op: Op, reply: mpsc::UnboundedSender<Out>) {
        let Op::Request(req) = op;
        let send = |r: Reply| {
            let _ = reply.send(Out::Reply(r));
        };
        match req {
            Request::List => {
                let now = Instant::now();
                let mut batch = Vec::new();
                for (_, id) in self.order.keys() {
                    let m = &self.msgs[id];
                    let active =
                        m.in_flight > 0 || m.rcpts.iter().any(|r| r.state == RState::Queued);
                    let queue_name = if m.hold {
                        "hold"
                    } else if active || m.next_try <= now {
                        "active"
                    } else {
                        "deferred"
                    };
                    batch.push(Entry {
                        queue_id: id.clone(),
                        queue_name: queue_name.into(),
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
                if !batch.is_empty() {
                    send(Reply::Entries(batch));
                }
                send(Reply::End);
            }
            Request::Show(id) => match self.msgs.get(&id).map(|m| m.file.try_clone()) {
                Some(Ok(fd)) => {
                    let _ = reply.send(Out::File(fd));
                }
                Some(Err(e)) => send(Reply::Error(format!("{id}: {e}"))),
                None => send(Reply::Error(format!("{id}: no such message in the queue"))),
            },
            Request::Flush => {
                let ids: Vec<String> = self.msgs.keys().cloned().collect();
                for id in ids {
                    let m = self.msgs.get_mut(&id).expect("listed");
                    if !m.hold && m.in_flight == 0 && m.next_try > Instant::now() {
                        m.next_try = Instant::now();
                        self.activate(&id);
                    }
                }
                send(Reply::Done(Vec::new()));
            }
            Request::Delete(ids) => {
                let (found, missing) = self.ids(&ids);
                let mut lines: Vec<String> = missing
                    .iter()
                    .map(|id| format!("{id}: no such message in the queue"))
                    .collect();
                for id in &found {
                    let m = self.msgs.get_mut(id).expect("found");
                    m.deleted = true;
                    let busy = m.in_flight > 0;
                    if !busy {
                        self.forget(id);
                    }
                    let (agents, qid) = (self.agents.clone(), id.clone());
                    tokio::task::spawn_local(async move {
                        match agents
                            .queue(postern_ipc::qmgr_queue::Request::Remove(qid.clone()))
                            .await
                        {
                            Ok(postern_ipc::qmgr_queue::Reply::Ok) => info!("{qid}: removed"),
                            other => warn!("{qid}: cannot remove: {other:?}"),
                        }
                    });
                    lines.push(format!("{id}: removed"));
                }
                lines.push(format!(
                    "Deleted: {} message{}",
                    found.len(),
                    if found.len() == 1 { "" } else { "s" }
                ));
                send(Reply::Done(lines));
            }
            Request::Hold(ids) => self.set_hold(&ids, true, &reply),
            Request::Release(ids) => self.set_hold(&ids, false, &reply),
            Request::Requeue(ids) => {
                let (found, missing) = self.ids(&ids);
                let mut lines: Vec<String> = missing
                    .iter()
                    .map(|id| format!("{id}: no such message in the queue"))
                    .collect();
                let mut n = 0;
                for id in found {
                    if self.msgs.get(&id).is_some_and(|m| m.in_flight == 0) {
                        // Read and route it anew (transport_maps may have changed).
                        self.forget(&id);
                        self.handle(Ev::Committed(
                            postern_ipc::qmgr_broker::QueuedMessage {
                                queue_id: id,
                                sender: String::new(),
                                size: 0,
                                nrcpt: 0,
                                arrival_us: 0,
                            },
                            None,
                        ));
                        n += 1;
                    }
                }
                lines.push(format!(
                    "Requeued: {n} message{}",
                    if n == 1 { "" } else { "s" }
                ));
                send(Reply::Done(lines));
            }
        }
    }

    fn set_hold(&mut self, ids: &[String], on: bool, reply: &mpsc::UnboundedSender<Out>) {
        let (found, missing) = self.ids(ids);
        let mut lines: Vec<String> = missing
            .iter()
            .map(|id| format!("{id}: no such message in the queue"))
            .collect();
        let mut n = 0;
        for id in found {
            let m = self.msgs.get_mut(&id).expect("found");
            if m.hold == on {
                continue;
            }
            m.hold = on;
            n += 1;
            self.persist(&id, vec![postern_ipc::qmgr_queue::State::Hold(on)]);
            if on {
                info!("{id}: hold: by the administrator");
            } else {
                info!("{id}: released from hold");
                let m = self.msgs.get_mut(&id).expect("found");
                m.next_try = Instant::now();
                self.activate(&id);
            }
        }
        let what = if on {
            "Placed on hold"
        } else {
            "Released from hold"
        };
        lines.push(format!(
            "{what}: {n} message{}",
            if n == 1 { "" } else { "s" }
        ));
        let _ = reply.send(Out::Reply(Reply::Done(lines)));
    }
}
