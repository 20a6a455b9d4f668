//! The control socket server. Local admins reach it, so a bad frame drops
//! only that connection; only root and the instance's own user are served.
use postern_ipc::control::{Reply, Request};
use postern_ipc::listener::SeqpacketListener;
use postern_ipc::{ChannelError, Endpoint};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

use super::Event;
use crate::{info, warn};

pub(super) async fn serve(listener: SeqpacketListener, tx: mpsc::UnboundedSender<Event>) {
    let me = nix::unistd::Uid::effective().as_raw();
    loop {
        let (fd, cred) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!("control socket: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if cred.uid != 0 && cred.uid != me {
            warn!(
                "control socket: refusing uid {} (pid {})",
                cred.uid, cred.pid
            );
            continue;
        }
        let tx = tx.clone();
        tokio::spawn(async move {
            let Ok(mut ep) = Endpoint::<Reply, Request>::new(fd, Duration::from_secs(10)) else {
                return;
            };
            loop {
                let req = match ep.recv_within(Duration::from_secs(60)).await {
                    Ok(r) => r,
                    Err(ChannelError::Closed) | Err(ChannelError::Timeout(_)) => return,
                    Err(e) => {
                        warn!("control socket: dropping client pid {}: {e}", cred.pid);
                        return;
                    }
                };
                let (rtx, rrx) = oneshot::channel();
                if tx.send(Event::Control { req, reply: rtx }).is_err() {
                    return;
                }
                let Ok(reply) = rrx.await else { return };
                if ep.send(&reply).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// The public showq socket: `mailq` for any user in
/// `authorized_mailq_users` (default `static:anyone`, as in Postfix). A
/// connection may ask for one thing, a queue channel, and the queue manager
/// serves that channel as list-only.
pub(super) async fn serve_showq(
    listener: SeqpacketListener,
    tx: mpsc::UnboundedSender<Event>,
    users: Vec<String>,
) {
    loop {
        let (fd, cred) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!("showq socket: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (tx, users) = (tx.clone(), users.clone());
        tokio::spawn(async move {
            let Ok(mut ep) = Endpoint::<Reply, Request>::new(fd, Duration::from_secs(10)) else {
                return;
            };
            let req = match ep.recv_within(Duration::from_secs(10)).await {
                Ok(r) => r,
                Err(ChannelError::Closed) | Err(ChannelError::Timeout(_)) => return,
                Err(e) => {
                    warn!("showq socket: dropping client pid {}: {e}", cred.pid);
                    return;
                }
            };
            let login = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(cred.uid))
                .ok()
                .flatten()
                .map(|u| u.name);
            let allowed = cred.uid == 0
                || cred.uid == nix::unistd::Uid::effective().as_raw()
                || login.as_deref().is_some_and(|l| {
                    crate::tables::user_listed(&users, l).unwrap_or_else(|e| {
                        warn!("authorized_mailq_users: {e}");
                        false
                    })
                });
            let reply = if !allowed {
                let who = login.unwrap_or_else(|| "unknown".into());
                info!(
                    "showq: refusing the queue listing to {who}({}): not in authorized_mailq_users",
                    cred.uid
                );
                Reply::Error(format!(
                    "User {who}({}) is not allowed to view the mail queue",
                    cred.uid
                ))
            } else if !matches!(req, Request::Queue) {
                Reply::Error("only the queue listing is served here".into())
            } else {
                let (rtx, rrx) = oneshot::channel();
                if tx.send(Event::Showq { reply: rtx }).is_err() {
                    return;
                }
                let Ok(r) = rrx.await else { return };
                r
            };
            let _ = ep.send(&reply).await;
        });
    }
}
