//! smtpd: the SMTP server. One process serves every inet listener and many
//! sessions; it has no filesystem, no network namespace of its own, and
//! cannot create sockets. It hands each transaction to cleanup.
mod access;
mod conn;
mod pool;
mod session;

use std::cell::Cell;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::Duration;

use postern_config::{Params, Role};

use crate::daemon::{self, Context};
use crate::{fatal, warn};
use conn::Conn;
use pool::Shared;
use session::{Session, Settings};

pub fn main(ipc_fd: RawFd) -> ! {
    daemon::run(Role::Smtpd, ipc_fd, |params| {
        // Refuse to start on settings that cannot work, before the jail.
        Settings::new(params).map_err(|e| format!("smtpd: {e}"))?;
        Ok((serve, Vec::new()))
    })
}

async fn serve(mut ctx: Context) {
    let global = match Settings::new(&ctx.params) {
        Ok(s) => Rc::new(s),
        Err(e) => fatal!("{e}"),
    };
    let sh = Rc::new(Shared::new(
        ctx.switchboard.clone(),
        ctx.query_timeout(),
        ctx.transfer_timeout(),
    ));
    let active = Rc::new(Cell::new(0usize));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let local = tokio::task::LocalSet::new();
    let listeners = std::mem::take(&mut ctx.listeners);
    let sb = ctx.switchboard.clone();
    local
        .run_until(async move {
            for l in listeners {
                let settings = if l.params.is_empty() {
                    global.clone()
                } else {
                    match Params::from_pairs(l.params)
                        .map_err(|e| e.to_string())
                        .and_then(|p| Settings::new(&p))
                    {
                        Ok(s) => Rc::new(s),
                        Err(e) => fatal!("service {}: {e}", l.service),
                    }
                };
                let std_l = std::net::TcpListener::from(l.fd);
                if let Err(e) = std_l.set_nonblocking(true) {
                    fatal!("service {}: {e}", l.service);
                }
                let listener = match tokio::net::TcpListener::from_std(std_l) {
                    Ok(x) => x,
                    Err(e) => fatal!("service {}: {e}", l.service),
                };
                let (sh, active, mut stop, sb) =
                    (sh.clone(), active.clone(), stop_rx.clone(), sb.clone());
                tokio::task::spawn_local(async move {
                    loop {
                        let accepted = tokio::select! {
                            a = listener.accept() => a,
                            _ = stop.changed() => return,
                        };
                        let (stream, peer) = match accepted {
                            Ok(x) => x,
                            Err(e) => {
                                warn!("accept: {e}");
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                continue;
                            }
                        };
                        let _ = stream.set_nodelay(true);
                        sb.connection(true);
                        active.set(active.get() + 1);
                        let (sh, set, active, sb) =
                            (sh.clone(), settings.clone(), active.clone(), sb.clone());
                        tokio::task::spawn_local(async move {
                            let conn = Conn::new(stream, set.timeout);
                            Session::new(sh, set, conn, peer.ip(), peer.port())
                                .run()
                                .await;
                            active.set(active.get() - 1);
                            sb.connection(false);
                        });
                    }
                });
            }
            let _ = ctx.shutdown.changed().await;
            // Stop accepting; let sessions in progress finish.
            let _ = stop_tx.send(true);
            while active.get() > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
}
