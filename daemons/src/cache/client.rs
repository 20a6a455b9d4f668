//! The client side of the `cache` edge, for the roles that own a
//! namespace. The store is a cache: when it cannot be reached the caller
//! goes on with what it holds in memory (as before the store existed), and
//! the channel is opened again at the next call.
use std::time::Duration;

use postern_config::Role;
use postern_ipc::ChannelError;
use postern_ipc::cache::{self, Op, Reply, Request};
use postern_ipc::edge::ClientEnd;
use tokio::sync::Mutex;

use crate::daemon::Switchboard;
use crate::warn;

/// How long one call may take: a cache that does not answer must not hold
/// up the caller's own work for long.
const DEADLINE: Duration = Duration::from_secs(2);

pub struct Client {
    sb: Switchboard,
    namespace: &'static str,
    ep: Mutex<Option<ClientEnd<cache::Link>>>,
    /// A failure was logged and nothing has worked since (one line per
    /// outage, not one per call).
    failing: std::cell::Cell<bool>,
}

impl Client {
    pub fn new(sb: Switchboard, namespace: &'static str) -> Client {
        Client {
            sb,
            namespace,
            ep: Mutex::new(None),
            failing: std::cell::Cell::new(false),
        }
    }

    async fn open(&self) -> Result<ClientEnd<cache::Link>, String> {
        crate::edges::open::<cache::Link>(&self.sb, Role::Cache, DEADLINE).await
    }

    /// One request; None when the store is unreachable or refused it
    /// (logged).
    async fn call(&self, key: &str, op: Op) -> Option<Reply> {
        let mut g = self.ep.lock().await;
        if g.is_none() {
            match self.open().await {
                Ok(ep) => *g = Some(ep),
                Err(e) => {
                    self.failed(&e);
                    return None;
                }
            }
        }
        let ep = g.as_mut()?;
        let req = Request {
            namespace: self.namespace.into(),
            key: key.into(),
            op,
        };
        match ep.call(&req).await {
            Ok(Reply::Refused(why)) => {
                warn!("state store refused {}: {why}", self.namespace);
                *g = None;
                None
            }
            Ok(r) => {
                if self.failing.replace(false) {
                    crate::info!("state store reachable again");
                }
                Some(r)
            }
            Err(ChannelError::Violation(v)) => {
                warn!("protocol violation from cache: {v}");
                *g = None;
                None
            }
            Err(e) => {
                self.failed(&e.to_string());
                *g = None;
                None
            }
        }
    }

    fn failed(&self, e: &str) {
        if !self.failing.replace(true) {
            warn!("state store: {e}; going on without it");
        }
    }

    /// The record under `key` and its seconds left, if any.
    pub async fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        match self.call(key, Op::Get).await? {
            Reply::Found { value, expires_in } => Some((value, expires_in)),
            _ => None,
        }
    }

    pub async fn put(&self, key: &str, value: Vec<u8>, ttl: Duration) {
        let ttl_seconds = ttl.as_secs().clamp(1, u64::from(cache::MAX_TTL)) as u32;
        self.call(key, Op::Put { value, ttl_seconds }).await;
    }

    pub async fn delete(&self, key: &str) {
        self.call(key, Op::Delete).await;
    }
}
