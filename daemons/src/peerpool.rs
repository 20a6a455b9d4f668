//! Request/answer channels to a peer role, reused call after call: a
//! pooled channel that turns out dead (its peer restarted) is replaced
//! once, and a protocol violation by the peer ends this daemon.
use std::cell::RefCell;
use std::time::Duration;

use postern_config::Role;
use postern_ipc::{Channel, ChannelError, Endpoint, Message};

use crate::daemon::Switchboard;
use crate::fatal;

pub struct PeerPool<Tx, Rx> {
    sb: Switchboard,
    role: Role,
    edge: &'static str,
    version: u32,
    timeout: Duration,
    max_idle: usize,
    idle: RefCell<Vec<Endpoint<Tx, Rx>>>,
}

impl<Tx: Message, Rx: Message> PeerPool<Tx, Rx> {
    pub fn new(
        sb: Switchboard,
        role: Role,
        edge: &'static str,
        version: u32,
        timeout: Duration,
        max_idle: usize,
    ) -> Self {
        PeerPool {
            sb,
            role,
            edge,
            version,
            timeout,
            max_idle,
            idle: RefCell::default(),
        }
    }

    async fn connect(&self) -> Result<Endpoint<Tx, Rx>, String> {
        let fd = self
            .sb
            .connect(self.role)
            .await
            .map_err(|e| e.to_string())?;
        let mut ch = Channel::new(fd, Rx::MAX_FRAME, self.timeout).map_err(|e| e.to_string())?;
        ch.hello_client(self.edge, self.version)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Endpoint::from_channel(ch))
    }

    /// Sends `req` and returns the answer.
    pub async fn call(&self, req: &Tx) -> Result<Rx, String> {
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
                Err(ChannelError::Violation(v)) => {
                    fatal!("protocol violation from {}: {v}", self.role)
                }
                // A pooled channel may have died with its peer: try a fresh one.
                Err(_) if was_pooled => continue,
                Err(e) => return Err(format!("{}: {e}", self.role)),
            }
        }
        Err(format!("{} unavailable", self.role))
    }
}
