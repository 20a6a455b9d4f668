//! qmgr's channels: to the delivery agents (one delivery per channel at a
//! time, channels pooled), to bounce, and to the broker for queue requests.
use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use postern_config::Role;
use postern_ipc::edge::{ClientEnd, Edge};
use std::os::fd::OwnedFd;

use postern_ipc::{ChannelError, Endpoint, bounce, deliver, qmgr_queue as qq};

use crate::daemon::Switchboard;
use crate::warn;

const MAX_IDLE: usize = 64;
/// Requests to the broker in flight at once (each holds a channel). The
/// queue manager may have thousands of messages wanting an open or an
/// append; they wait their turn instead of each opening a channel.
const MAX_QUEUE_CALLS: usize = 16;
/// Messages whose notices are being queued at once (see `notice_turn`).
const MAX_BOUNCE_CALLS: usize = 8;

pub struct Agents {
    sb: Switchboard,
    query: Duration,
    transfer: Duration,
    deliver: RefCell<HashMap<Role, Vec<Endpoint<deliver::Request, deliver::Reply>>>>,
    bounce: RefCell<Vec<Endpoint<bounce::Request, bounce::Reply>>>,
    queue: RefCell<Vec<Endpoint<qq::Request, qq::Reply>>>,
    queue_calls: tokio::sync::Semaphore,
    bounce_calls: tokio::sync::Semaphore,
}

impl Agents {
    pub fn new(sb: Switchboard, query: Duration, transfer: Duration) -> Agents {
        Agents {
            sb,
            query,
            transfer,
            deliver: RefCell::default(),
            bounce: RefCell::default(),
            queue: RefCell::default(),
            queue_calls: tokio::sync::Semaphore::new(MAX_QUEUE_CALLS),
            bounce_calls: tokio::sync::Semaphore::new(MAX_BOUNCE_CALLS),
        }
    }

    /// A channel of edge `E` to `role`: the hello within the query
    /// deadline, then calls within `timeout`.
    async fn connect<E: Edge>(
        &self,
        role: Role,
        timeout: Duration,
    ) -> Result<ClientEnd<E>, String> {
        let mut ep = crate::edges::open::<E>(&self.sb, role, self.query).await?;
        ep.channel().timeout = timeout;
        Ok(ep)
    }

    /// One delivery by `agent` (local or smtp). Errors mean the agent could
    /// not be reached or went away mid-delivery: the caller defers.
    pub async fn deliver(
        &self,
        agent: Role,
        req: deliver::Request,
    ) -> Result<deliver::Reply, String> {
        let pooled = self.deliver.borrow_mut().entry(agent).or_default().pop();
        let mut ep = match pooled {
            Some(ep) => ep,
            None => self.connect::<deliver::Link>(agent, self.transfer).await?,
        };
        match ep.call(&req).await {
            Ok(r) => {
                let mut pool = self.deliver.borrow_mut();
                let v = pool.entry(agent).or_default();
                if v.len() < MAX_IDLE {
                    v.push(ep);
                }
                Ok(r)
            }
            // The channel is dropped (not pooled again); the delivery defers.
            Err(ChannelError::Violation(v)) => {
                warn!("protocol violation from {agent}: {v}; channel dropped");
                Err(format!("protocol violation by the {agent} delivery agent"))
            }
            Err(e) => Err(format!(
                "lost connection with the {agent} delivery agent: {e}"
            )),
        }
    }

    /// A turn to send notices: taken before the queue file is opened for
    /// them, so that waiting notices hold no descriptor.
    pub async fn notice_turn(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.bounce_calls.acquire().await.ok()
    }

    pub async fn bounce(&self, req: bounce::Request) -> Result<bounce::Reply, String> {
        let pooled = self.bounce.borrow_mut().pop();
        let mut ep = match pooled {
            Some(ep) => ep,
            None => {
                self.connect::<bounce::Link>(Role::Bounce, self.transfer)
                    .await?
            }
        };
        match ep.call(&req).await {
            Ok(r) => {
                self.bounce.borrow_mut().push(ep);
                Ok(r)
            }
            Err(ChannelError::Violation(v)) => {
                warn!("protocol violation from bounce: {v}; channel dropped");
                Err("protocol violation by bounce".into())
            }
            Err(e) => Err(format!("lost connection with bounce: {e}")),
        }
    }

    /// A request to the broker about a queued message. A pooled channel
    /// that went stale (the broker restarted) is replaced once.
    pub async fn queue(&self, req: qq::Request) -> Result<qq::Reply, String> {
        let _turn = self.queue_calls.acquire().await;
        let pooled = self.queue.borrow_mut().pop();
        let was_pooled = pooled.is_some();
        let mut ep = match pooled {
            Some(ep) => ep,
            None => {
                self.connect::<qq::Link>(Role::Broker, self.transfer)
                    .await?
            }
        };
        match ep.call(&req).await {
            Ok(r) => {
                self.queue.borrow_mut().push(ep);
                Ok(r)
            }
            Err(ChannelError::Violation(v)) => {
                warn!("protocol violation from broker: {v}; channel dropped");
                Err("protocol violation by the broker".into())
            }
            Err(_) if was_pooled => {
                let mut ep: Endpoint<qq::Request, qq::Reply> = self
                    .connect::<qq::Link>(Role::Broker, self.transfer)
                    .await?;
                let r = ep.call(&req).await.map_err(|e| format!("broker: {e}"))?;
                self.queue.borrow_mut().push(ep);
                Ok(r)
            }
            Err(e) => Err(format!("broker: {e}")),
        }
    }

    /// A read-only descriptor of a queued message's file.
    pub async fn open(&self, id: &str) -> Result<OwnedFd, String> {
        match self.queue(qq::Request::Open(id.to_string())).await? {
            qq::Reply::Opened(fd) => Ok(fd),
            qq::Reply::Failed(e) => Err(e),
            _ => Err("unexpected answer from the broker".into()),
        }
    }
}
