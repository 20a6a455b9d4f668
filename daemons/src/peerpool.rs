//! Request/answer channels of one edge to a peer role, reused call after
//! call: a pooled channel that turns out dead (its peer restarted) is
//! replaced once, and one whose peer broke the protocol is dropped.
use std::cell::RefCell;
use std::time::Duration;

use postern_config::Role;
use postern_ipc::ChannelError;
use postern_ipc::edge::{ClientEnd, Edge};

use crate::daemon::Switchboard;

pub struct PeerPool<E: Edge> {
    sb: Switchboard,
    role: Role,
    timeout: Duration,
    max_idle: usize,
    idle: RefCell<Vec<ClientEnd<E>>>,
}

impl<E: Edge> PeerPool<E> {
    pub fn new(sb: Switchboard, role: Role, timeout: Duration, max_idle: usize) -> Self {
        PeerPool {
            sb,
            role,
            timeout,
            max_idle,
            idle: RefCell::default(),
        }
    }

    async fn connect(&self) -> Result<ClientEnd<E>, String> {
        crate::edges::open::<E>(&self.sb, self.role, self.timeout).await
    }

    /// Sends `req` and returns the answer.
    pub async fn call(&self, req: &E::Request) -> Result<E::Reply, String> {
        for _ in 0..2 {
            let pooled = self.idle.borrow_mut().pop();
            let was_pooled = pooled.is_some();
            let mut ep = match pooled {
                Some(ep) => ep,
                None => self.connect().await?,
            };
            match ep.call(req).await {
                Ok(r) => {
                    let mut idle = self.idle.borrow_mut();
                    if idle.len() < self.max_idle {
                        idle.push(ep);
                    }
                    return Ok(r);
                }
                Err(e @ ChannelError::Violation(_)) => {
                    crate::edges::dropped(E::NAME, self.role, &e);
                    return Err(format!("{}: {e}", self.role));
                }
                // A pooled channel may have died with its peer: try a fresh one.
                Err(_) if was_pooled => continue,
                Err(e) => return Err(format!("{}: {e}", self.role)),
            }
        }
        Err(format!("{} unavailable", self.role))
    }
}
