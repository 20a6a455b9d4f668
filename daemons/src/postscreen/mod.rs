//! postscreen: screens port-25 clients before smtpd sees them (Postfix's
//! postscreen(8)). One process accepts on the postscreen services'
//! listeners, runs the tests, and hands each client that passes to smtpd
//! over SCM_RIGHTS (edge postscreen-smtpd), so one connection gets one
//! "220 " greeting, from smtpd. It has no files and no network of its own:
//! DNS lists go through the resolver, results into the state store.
mod memory;
mod proxy;
mod session;
mod settings;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::Duration;

use postern_config::{Params, Role};

use crate::daemon::{self, Context};
use crate::peerpool::PeerPool;
use crate::{fatal, warn};
use settings::Settings;

pub fn main(ipc_fd: RawFd) -> ! {
    daemon::run(Role::Postscreen, ipc_fd, |params| {
        // Refuse to start on settings that cannot work, before the jail.
        Settings::new(params).map_err(|e| format!("postscreen: {e}"))?;
        Ok((serve, Vec::new()))
    })
}

/// What every session shares.
pub struct Shared {
    resolver: PeerPool<postern_ipc::resolver::Link>,
    smtpd: PeerPool<postern_ipc::postscreen_smtpd::Link>,
    memory: RefCell<memory::Memory>,
    tables: crate::tablecache::TableCache,
    /// Clients in the tests now (postscreen_pre_queue_limit).
    screening: Cell<usize>,
    clients: Clients,
}

/// Connections per client (an IPv6 client by its network), for
/// postscreen_client_connection_count_limit. An entry lives as long as
/// the client has a connection here, so the map is bounded by them.
#[derive(Default)]
pub struct Clients(Rc<RefCell<HashMap<(bool, u128), u32>>>);

pub struct Held {
    map: Rc<RefCell<HashMap<(bool, u128), u32>>>,
    key: (bool, u128),
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut m = self.map.borrow_mut();
        if let Some(n) = m.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.key);
            }
        }
    }
}

impl Clients {
    /// Counts one more connection of `ip`; None when that is over `limit`
    /// (0: no limit).
    pub fn hold(&self, ip: IpAddr, ipv6_prefix: u8, limit: u32) -> Option<Held> {
        let key = match crate::access::normalize(ip) {
            IpAddr::V4(a) => (false, u128::from(u32::from(a))),
            IpAddr::V6(a) => {
                let keep = u32::from(ipv6_prefix.min(128));
                let mask = if keep == 0 {
                    0
                } else {
                    u128::MAX << (128 - keep)
                };
                (true, u128::from(a) & mask)
            }
        };
        let mut m = self.0.borrow_mut();
        let n = m.entry(key).or_insert(0);
        if limit > 0 && *n >= limit {
            if *n == 0 {
                m.remove(&key);
            }
            return None;
        }
        *n += 1;
        Some(Held {
            map: self.0.clone(),
            key,
        })
    }
}

async fn serve(mut ctx: Context) {
    let global = match Settings::new(&ctx.params) {
        Ok(s) => Rc::new(s),
        Err(e) => fatal!("{e}"),
    };
    let query = ctx.query_timeout();
    let sh = Rc::new(Shared {
        resolver: PeerPool::new(ctx.switchboard.clone(), Role::Resolver, query, 4),
        smtpd: PeerPool::new(ctx.switchboard.clone(), Role::Smtpd, query, 4),
        memory: RefCell::new(memory::Memory::new(ctx.switchboard.clone())),
        tables: crate::tablecache::TableCache::new(ctx.switchboard.clone()),
        screening: Cell::new(0),
        clients: Clients::default(),
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let local = tokio::task::LocalSet::new();
    let listeners = std::mem::take(&mut ctx.listeners);
    local
        .run_until(async move {
            for mut l in listeners {
                let set = if l.params.is_empty() {
                    global.clone()
                } else {
                    match Params::from_pairs(std::mem::take(&mut l.params))
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
                let (sh, mut stop, sb) = (sh.clone(), stop_rx.clone(), ctx.switchboard.clone());
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
                        let local = stream.local_addr().ok();
                        let (sh, set, sb) = (sh.clone(), set.clone(), sb.clone());
                        sb.connection(true);
                        tokio::task::spawn_local(async move {
                            session::run(sh, set, stream, peer, local).await;
                            sb.connection(false);
                        });
                    }
                });
            }
            let _ = ctx.shutdown.changed().await;
            let _ = stop_tx.send(true);
        })
        .await;
}
