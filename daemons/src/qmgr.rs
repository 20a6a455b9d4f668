//! qmgr: the queue manager. It learns the queue from the broker (a snapshot
//! at start, then one event per commit) and never scans a directory.
use std::os::fd::RawFd;
use std::time::Duration;

use postern_config::Role;
use postern_ipc::{Channel, ChannelError, Endpoint, Message, qmgr_broker as qb};

use crate::daemon::{self, Context};
use crate::{fatal, info, warn};

pub fn main(ipc_fd: RawFd) -> ! {
    daemon::run(Role::Qmgr, ipc_fd, |_params| Ok((serve, Vec::new())))
}

async fn subscribe(ctx: &Context) -> Result<Endpoint<qb::Request, qb::Event>, String> {
    let fd = ctx
        .switchboard
        .connect(Role::Broker)
        .await
        .map_err(|e| e.to_string())?;
    let mut ch = Channel::new(fd, <qb::Event as Message>::MAX_FRAME, ctx.query_timeout())
        .map_err(|e| e.to_string())?;
    ch.hello_client(qb::EDGE, qb::VERSION)
        .await
        .map_err(|e| e.to_string())?;
    let ep = Endpoint::from_channel(ch);
    ep.send(&qb::Request::Subscribe)
        .await
        .map_err(|e| e.to_string())?;
    Ok(ep)
}

async fn serve(mut ctx: Context) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut ep = match subscribe(&ctx).await {
            Ok(ep) => ep,
            Err(e) => {
                warn!("cannot subscribe to the broker: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = ctx.shutdown.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        loop {
            let ev = tokio::select! {
                ev = ep.recv() => ev,
                _ = ctx.shutdown.changed() => return,
            };
            match ev {
                Ok(qb::Event::Committed(m)) => {
                    info!(
                        "{}: from=<{}>, size={}, nrcpt={} (queue active)",
                        m.queue_id, m.sender, m.size, m.nrcpt
                    );
                }
                Ok(qb::Event::Current) => {}
                Err(ChannelError::Violation(v)) => fatal!("protocol violation from broker: {v}"),
                // The broker restarted: subscribe again; it sends the queue anew.
                Err(_) => break,
            }
        }
    }
}
