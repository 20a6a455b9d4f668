//! smtpd: the SMTP server. One process serves every inet listener and many
//! sessions; it has no filesystem, no network namespace of its own, and
//! cannot create sockets. It hands each transaction to cleanup.
mod anvil;
mod checks;
mod conn;
mod handoffs;
mod milter;
mod pool;
pub(crate) mod proxy;
mod session;
mod tlsconf;
pub(crate) use session::merge;

use crate::metrics::catalog::{CONNECTIONS, SESSIONS};
use std::cell::Cell;
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use postern_config::{Params, Role};

use crate::daemon::{self, Context};
use crate::tls::ccert::Ask;
use crate::{fatal, warn};
use conn::Conn;
use pool::Shared;
use postern_ipc::master::ListenerInfo;
use session::{Session, Settings};

pub fn main(ipc_fd: RawFd) -> ! {
    daemon::run(Role::Smtpd, ipc_fd, |params| {
        // Refuse to start on settings that cannot work, before the jail.
        Settings::new(params).map_err(|e| format!("smtpd: {e}"))?;
        // The CAs that make a client certificate trusted, read now: the
        // jail names no file.
        let cas = crate::tls::ccert::load_cas(params.str("smtpd_tls_CAfile"))?;
        Ok((move |ctx: Context| serve(ctx, cas), Vec::new()))
    })
}

async fn serve(mut ctx: Context, cas: Option<rustls::RootCertStore>) {
    let global = match Settings::new(&ctx.params) {
        Ok(s) => Rc::new(s),
        Err(e) => fatal!("{e}"),
    };
    // Each listener's settings (its -o overrides), and the client
    // certificate request of those that ask for one.
    let mut listeners: Vec<(ListenerInfo, Rc<Settings>)> = Vec::new();
    for mut l in std::mem::take(&mut ctx.listeners) {
        let settings = if l.params.is_empty() {
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
        listeners.push((l, settings));
    }
    let mut pass_infos = Vec::new();
    for p in std::mem::take(&mut ctx.passes) {
        let settings = if p.params.is_empty() {
            global.clone()
        } else {
            match Params::from_pairs(p.params.clone())
                .map_err(|e| e.to_string())
                .and_then(|p| Settings::new(&p))
            {
                Ok(s) => Rc::new(s),
                Err(e) => fatal!("service {}: {e}", p.service),
            }
        };
        pass_infos.push(handoffs::Pass {
            service: p.service,
            settings,
            maxproc: p.maxproc,
        });
    }
    let inbound = std::mem::replace(&mut ctx.inbound, tokio::sync::mpsc::unbounded_channel().1);
    let mut asks: HashMap<String, Arc<Ask>> = HashMap::new();
    // Every service, listener or pass service, has its own TLS scope.
    let services: Vec<(String, Rc<Settings>)> = listeners
        .iter()
        .map(|(l, set)| (l.service.clone(), set.clone()))
        .chain(
            pass_infos
                .iter()
                .map(|p| (p.service.clone(), p.settings.clone())),
        )
        .collect();
    for (service, set) in &services {
        if set.ask_ccert && !asks.contains_key(service) {
            match Ask::new(crate::tls::provider(), cas.as_ref(), set.fingerprint_digest) {
                Ok(a) => {
                    asks.insert(service.clone(), Arc::new(a));
                }
                Err(e) => fatal!("service {service}: {e}"),
            }
        }
    }
    let sh = Rc::new(Shared::new(
        ctx.switchboard.clone(),
        ctx.query_timeout(),
        ctx.transfer_timeout(),
        ctx.params
            .duration("anvil_rate_time_unit")
            .unwrap_or(Duration::from_secs(60)),
    ));
    let active = Rc::new(Cell::new(0usize));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let local = tokio::task::LocalSet::new();
    let sb = ctx.switchboard.clone();
    let wants_tls = crate::tls::wants_server_tls(&ctx.params)
        || services.iter().any(|(_, set)| set.core.wrapper);
    sh.set_asks(asks.clone());
    let query = ctx.query_timeout();
    local
        .run_until(async move {
            if wants_tls {
                let (sh, sb) = (sh.clone(), sb.clone());
                let first = Rc::new(tokio::sync::Notify::new());
                let got = first.clone();
                // One ticket scope per listener (see RemoteTicketer).
                let mut scopes: Vec<String> = services.iter().map(|(s, _)| s.clone()).collect();
                scopes.dedup();
                tokio::task::spawn_local(async move {
                    let keys = Arc::new(crate::tls::remote::KeyClient::default());
                    let ticketers: Vec<(String, Arc<crate::tls::remote::RemoteTicketer>)> = scopes
                        .into_iter()
                        .map(|s| {
                            let t = crate::tls::remote::RemoteTicketer::new(keys.clone(), &s);
                            (s, Arc::new(t))
                        })
                        .collect();
                    let choices: HashMap<String, postern_config::tlsproto::Choice> = services
                        .iter()
                        .map(|(s, set)| (s.clone(), set.tls_choice.clone()))
                        .collect();
                    let timeout = query.min(Duration::from_secs(5));
                    let k = keys.clone();
                    crate::tls::remote::maintain(
                        sb,
                        keys,
                        postern_ipc::keys::KeyRole::Server,
                        timeout,
                        move |ck| {
                            let acceptors = ck.and_then(|ck| {
                                ticketers
                                    .iter()
                                    .map(|(s, t)| {
                                        let all = postern_config::tlsproto::Choice::all();
                                        let choice = choices.get(s).unwrap_or(&all);
                                        tlsconf::ServerTls::new(
                                            ck.clone(),
                                            t.clone(),
                                            asks.get(s).cloned(),
                                            choice,
                                        )
                                        .map(|a| (s.clone(), Arc::new(a)))
                                    })
                                    .collect::<Option<HashMap<_, _>>>()
                            });
                            sh.set_tls(acceptors.map(|a| (a, k.clone())));
                            got.notify_one();
                        },
                    )
                    .await;
                });
                // The first clients should be offered STARTTLS too: give the
                // broker a moment to send the certificate (it starts first),
                // but never hold mail up for long if it does not.
                let _ =
                    tokio::time::timeout(query.min(Duration::from_secs(5)), first.notified()).await;
            }
            // master.cf maxproc caps each service's concurrent sessions
            // (all of its addresses together); past it, new clients wait
            // in the listen queue, as with Postfix's process limit.
            let mut limits: std::collections::HashMap<String, Rc<Limit>> =
                std::collections::HashMap::new();
            let runner = Runner {
                sh: sh.clone(),
                active: active.clone(),
                sb: sb.clone(),
            };
            // The pass services: clients postscreen screened and handed
            // over, each with its service's settings and session limit.
            let mut passes: HashMap<String, (Rc<Settings>, Option<Rc<Limit>>)> = HashMap::new();
            for p in pass_infos {
                let limit = (p.maxproc > 0).then(|| Rc::new(Limit::new(p.maxproc)));
                passes.insert(p.service, (p.settings, limit));
            }
            tokio::task::spawn_local(handoffs::serve(
                inbound,
                Rc::new(passes),
                runner.clone(),
                query,
                stop_rx.clone(),
            ));
            for (l, settings) in listeners {
                let limit = (l.maxproc > 0).then(|| {
                    limits
                        .entry(l.service.clone())
                        .or_insert_with(|| Rc::new(Limit::new(l.maxproc)))
                        .clone()
                });
                let std_l = std::net::TcpListener::from(l.fd);
                if let Err(e) = std_l.set_nonblocking(true) {
                    fatal!("service {}: {e}", l.service);
                }
                let listener = match tokio::net::TcpListener::from_std(std_l) {
                    Ok(x) => x,
                    Err(e) => fatal!("service {}: {e}", l.service),
                };
                let (runner, mut stop) = (runner.clone(), stop_rx.clone());
                let service: Rc<str> = Rc::from(l.service.as_str());
                tokio::task::spawn_local(async move {
                    // Two descriptors held back for the moment the process
                    // runs out: freed, they let smtpd accept the waiting
                    // client and tell it 421 instead of leaving it hanging.
                    let mut reserve = std::os::unix::net::UnixStream::pair().ok();
                    loop {
                        let permit = match &limit {
                            Some(lim) => tokio::select! {
                                p = lim.acquire(&service) => match p {
                                    Some(p) => Some(p),
                                    None => return,
                                },
                                _ = stop.changed() => return,
                            },
                            None => None,
                        };
                        let accepted = tokio::select! {
                            a = listener.accept() => a,
                            _ = stop.changed() => return,
                        };
                        let (stream, peer) = match accepted {
                            Ok(x) => x,
                            Err(e) if is_fd_exhaustion(&e) && reserve.is_some() => {
                                drop(reserve.take());
                                let waiting =
                                    tokio::time::timeout(Duration::from_secs(1), listener.accept());
                                if let Ok(Ok((s, peer))) = waiting.await {
                                    warn!(
                                        "accept: {e}: refusing the connection from [{}]:{} with 421",
                                        peer.ip(),
                                        peer.port()
                                    );
                                    let _ = s.try_write(b"421 4.3.2 All server ports are busy\r\n");
                                    drop(s);
                                }
                                reserve = std::os::unix::net::UnixStream::pair().ok();
                                continue;
                            }
                            Err(e) => {
                                warn!("accept: {e}");
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                if reserve.is_none() {
                                    reserve = std::os::unix::net::UnixStream::pair().ok();
                                }
                                continue;
                            }
                        };
                        let local = stream.local_addr().ok();
                        let how = Admission::Listener(permit);
                        runner.spawn(stream, peer, local, settings.clone(), &service, how);
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

/// The process (EMFILE) or the system (ENFILE) has no descriptor left.
fn is_fd_exhaustion(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(nix::libc::EMFILE) | Some(nix::libc::ENFILE)
    )
}

/// A service's session limit (master.cf maxproc).
struct Limit {
    sem: std::sync::Arc<tokio::sync::Semaphore>,
    max: u32,
    warned: std::cell::Cell<Option<std::time::Instant>>,
    /// Sessions waiting for a slot (clients postscreen handed over).
    waiting: Cell<u32>,
}

impl Limit {
    fn new(max: u32) -> Limit {
        Limit {
            sem: std::sync::Arc::new(tokio::sync::Semaphore::new(max as usize)),
            max,
            warned: std::cell::Cell::new(None),
            waiting: Cell::new(0),
        }
    }

    /// Waits for room for one more session; warns (at most once a minute,
    /// in Postfix's words) when the service is at its limit.
    async fn acquire(&self, service: &str) -> Option<tokio::sync::OwnedSemaphorePermit> {
        if self.sem.available_permits() == 0
            && self
                .warned
                .get()
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
        {
            self.warned.set(Some(std::time::Instant::now()));
            warn!(
                "service \"{service}\" has reached its process limit \"{}\": new clients may experience noticeable delays",
                self.max
            );
        }
        self.sem.clone().acquire_owned().await.ok()
    }
}

/// How a session got its slot under its service's limit.
enum Admission {
    /// Accepted on a listener: the slot was taken before accept.
    Listener(Option<tokio::sync::OwnedSemaphorePermit>),
    /// Handed over by postscreen: the session waits for a slot itself.
    Handed(Option<Rc<Limit>>),
}

/// What starting a session needs.
#[derive(Clone)]
struct Runner {
    sh: Rc<Shared>,
    active: Rc<Cell<usize>>,
    sb: daemon::Switchboard,
}

impl Runner {
    /// Runs one client's session. A listener's client may first send a
    /// PROXY header (smtpd_upstream_proxy_protocol); a handed-over one
    /// comes with the addresses postscreen established.
    fn spawn(
        &self,
        stream: tokio::net::TcpStream,
        peer: std::net::SocketAddr,
        local: Option<std::net::SocketAddr>,
        set: Rc<Settings>,
        service: &Rc<str>,
        how: Admission,
    ) {
        let _ = stream.set_nodelay(true);
        self.sb.connection(true);
        self.active.set(self.active.get() + 1);
        let (sh, active, sb, scope) = (
            self.sh.clone(),
            self.active.clone(),
            self.sb.clone(),
            service.clone(),
        );
        // A handed-over client counts as waiting from now on, so that the
        // hand-off's answer includes it.
        if let Admission::Handed(Some(limit)) = &how {
            limit.waiting.set(limit.waiting.get() + 1);
        }
        tokio::task::spawn_local(async move {
            let (_permit, proxied) = match how {
                Admission::Listener(p) => (p, set.upstream_proxy),
                Admission::Handed(Some(limit)) => {
                    let p = limit.acquire(&scope).await;
                    limit.waiting.set(limit.waiting.get().saturating_sub(1));
                    (p, None)
                }
                Admission::Handed(None) => (None, None),
            };
            let mut conn = Conn::new(stream, set.timeout);
            conn.per_request = set.per_request_deadline;
            conn.min_data_rate = set.min_data_rate;
            let service = scope.clone();
            crate::metrics::inc(&CONNECTIONS, &[&service]);
            crate::metrics::shift(&SESSIONS, &[&service], 1.0);
            // Behind a load balancer: the client and server addresses its
            // PROXY header names.
            let ends = match proxied {
                Some(t) => proxy::read(&mut conn, t, peer, local).await,
                None => Some((peer, local)),
            };
            if let Some((client, server)) = ends {
                let own = server.is_some_and(|l| {
                    crate::access::normalize(l.ip()) == crate::access::normalize(client.ip())
                });
                let mut session = Session::new(sh, set, conn, client, server, scope).await;
                session.own_address |= own;
                session.run().await;
            }
            crate::metrics::shift(&SESSIONS, &[&service], -1.0);
            active.set(active.get() - 1);
            sb.connection(false);
        });
    }
}
