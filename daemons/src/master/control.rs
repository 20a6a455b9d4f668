//! The control socket server. Local admins reach it, so a bad frame drops
//! only that connection; only root and the instance's own user are served.
use postern_ipc::control::{Reply, Request};
use postern_ipc::listener::SeqpacketListener;
use postern_ipc::{ChannelError, Endpoint};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

use super::Event;
use crate::warn;

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
