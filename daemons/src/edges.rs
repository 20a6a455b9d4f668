//! Opening, accepting and serving edges from a daemon: the generic parts of
//! `postern_ipc::edge` plus the peer graph (`peers.rs`) and the log. A
//! protocol violation drops that peer's channel and is logged; it never
//! takes the receiving daemon down.
use std::future::Future;
use std::os::fd::OwnedFd;
use std::time::Duration;

use postern_config::Role;
use postern_ipc::ChannelError;
use postern_ipc::edge::{self, Answer, ClientEnd, Edge, ServerEnd};

use crate::daemon::Switchboard;
use crate::{peers, warn};

/// A channel of edge `E` to a `to` process, through the master.
pub async fn open<E: Edge>(
    sb: &Switchboard,
    to: Role,
    timeout: Duration,
) -> Result<ClientEnd<E>, String> {
    let fd = sb.connect(to).await.map_err(|e| e.to_string())?;
    edge::open::<E>(fd, timeout)
        .await
        .map_err(|e| e.to_string())
}

/// Accepts a channel `from` opened to `me`, as edge `E`: only when the
/// peer graph lists that edge for the pair.
pub async fn accept<E: Edge>(
    me: Role,
    from: Role,
    fd: OwnedFd,
    timeout: Duration,
) -> Option<ServerEnd<E>> {
    if !peers::carries(from, me, E::NAME) {
        warn!(
            "refused a {} channel from {from}: not in the peer graph",
            E::NAME
        );
        return None;
    }
    match edge::accept::<E>(fd, timeout).await {
        Ok(ep) => Some(ep),
        Err(e) => {
            dropped(E::NAME, from, &e);
            None
        }
    }
}

/// Accepts and serves a channel of edge `E` until either side ends it.
pub async fn serve<E, F, Fut>(me: Role, from: Role, fd: OwnedFd, timeout: Duration, handle: F)
where
    E: Edge,
    F: FnMut(E::Request) -> Fut,
    Fut: Future<Output = Answer<E::Reply>>,
{
    let Some(ep) = accept::<E>(me, from, fd, timeout).await else {
        return;
    };
    if let Err(e) = edge::serve::<E, _, _>(ep, handle).await {
        dropped(E::NAME, from, &e);
    }
}

/// Logs and counts a protocol violation that dropped a peer's channel of
/// `edge` (a peer that went away or timed out is routine and says nothing).
pub fn dropped(edge: &str, from: Role, e: &ChannelError) {
    if let ChannelError::Violation(v) = e {
        warn!("protocol violation from {from}: {v}; channel dropped");
        crate::metrics::inc(&crate::metrics::catalog::VIOLATIONS, &[edge]);
    }
}
