//! The master: reads the configuration, binds the listeners, starts every
//! role by a fresh exec of this binary, supervises them, acts as the
//! switchboard between them, and serves the control socket.
//!
//! It runs one event loop over one queue of events, so its state needs no
//! locks: child messages, child exits, timers, control requests and signals
//! all arrive as [`Event`]s.
mod control;
pub mod dirs;
mod listen;
pub mod logsink;
pub mod peers;
pub mod supervise;

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use postern_config::{Config, Params, Role};
use postern_ipc::control::{ProcessInfo, Reply, Request};
use postern_ipc::master::{FromDaemon, ListenerInfo, Setup, ToDaemon};
use postern_ipc::{Channel, Message};
use tokio::sync::{mpsc, oneshot};

use crate::roles;
use crate::{info, warn};
use supervise::CrashLedger;

pub struct Options {
    pub foreground: bool,
    pub config_dir: Option<PathBuf>,
}

#[derive(Debug)]
enum Event {
    Msg {
        role: Role,
        epoch: u64,
        msg: FromDaemon,
    },
    Broken {
        role: Role,
        epoch: u64,
        why: String,
    },
    Exited {
        role: Role,
        epoch: u64,
        status: std::io::Result<ExitStatus>,
    },
    Restart {
        role: Role,
    },
    DrainDeadline {
        role: Role,
        epoch: u64,
    },
    Control {
        req: Request,
        reply: oneshot::Sender<Reply>,
    },
    Stop,
    ReloadAll,
    KillAll,
    /// The watchdog's round: ping every daemon, kill the silent ones.
    Watchdog,
    /// A list-only queue channel for mailq (the public showq socket).
    Showq {
        reply: oneshot::Sender<Reply>,
    },
}

struct Ready {
    landlock: String,
    netns: String,
}

struct Child {
    epoch: u64,
    pid: u32,
    out: mpsc::UnboundedSender<ToDaemon>,
    ready: Option<Ready>,
    open_conns: u32,
    started: Instant,
    draining: bool,
    /// The watchdog's unanswered ping: its number and when it was sent.
    ping: Option<(u64, Instant)>,
}

struct PendingConnect {
    from: Role,
    from_epoch: u64,
    request_id: u32,
    at: Instant,
}

struct Slot {
    role: Role,
    children: Vec<Child>,
    restarts: u32,
    backoff: Duration,
    throttled_until: Option<Instant>,
    restart_scheduled: bool,
    /// Start a fresh process once the draining one has exited (exclusive roles).
    start_after_drain: bool,
    ledger: CrashLedger,
    pending: Vec<PendingConnect>,
}

impl Slot {
    fn current(&self) -> Option<&Child> {
        self.children.iter().rev().find(|c| !c.draining)
    }
    fn current_ready(&self) -> Option<&Child> {
        self.current().filter(|c| c.ready.is_some())
    }
}

struct Master {
    cfg: Config,
    params: Params,
    opts: Options,
    exe: PathBuf,
    layout: dirs::Layout,
    listeners: Vec<listen::Bound>,
    /// The public pickup socket sendmail connects to, handed to pickup.
    pickup_socket: Option<OwnedFd>,
    slots: BTreeMap<Role, Slot>,
    tx: mpsc::UnboundedSender<Event>,
    next_epoch: u64,
    stopping: bool,
    sink: Arc<logsink::LogSink>,
}

/// Opens a table file read-only for a jailed daemon: never a symlink, never
/// anything but a regular file (a FIFO would block the master).
fn open_table(p: &std::path::Path) -> Result<Option<OwnedFd>, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let flags = (nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK).bits();
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(p)
    {
        Ok(f) => match f.metadata() {
            Ok(m) if m.is_file() => Ok(Some(OwnedFd::from(f))),
            Ok(_) => Err(format!("{}: not a regular file", p.display())),
            Err(e) => Err(format!("{}: {e}", p.display())),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", p.display())),
    }
}

fn describe(status: &std::io::Result<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exit status {c}"),
            (_, Some(sig)) => format!("killed by signal {sig}"),
            _ => "exited".into(),
        },
        Err(e) => format!("cannot be waited for: {e}"),
    }
}

fn abnormal(status: &std::io::Result<ExitStatus>) -> bool {
    !matches!(status, Ok(s) if s.success())
}

/// A fresh install gets a self-signed certificate, so that STARTTLS and the
/// wrapper-mode port work before the admin configures a real one.
fn ensure_server_certificate(cfg: &Config, params: &postern_config::Params) {
    let configured = !params.str("smtpd_tls_cert_file").is_empty()
        || !params
            .list("smtpd_tls_chain_files")
            .unwrap_or_default()
            .is_empty();
    let wanted = crate::tls::wants_server_tls(params)
        || cfg.services.iter().any(|s| {
            !s.overrides.is_empty()
                && cfg
                    .params_with(&s.overrides)
                    .is_ok_and(|p| crate::tls::wants_server_tls(&p))
        });
    if configured || !wanted {
        return;
    }
    let path = crate::tls::selfsigned_path(params.str("data_directory"));
    match crate::tls::selfsigned::ensure(&path, params.str("myhostname")) {
        Ok(true) => info!(
            "created a self-signed certificate for {} in {}; set smtpd_tls_chain_files (or smtpd_tls_cert_file and smtpd_tls_key_file) to use your own",
            params.str("myhostname"),
            path.display()
        ),
        Ok(false) => {}
        Err(e) => warn!("cannot create a self-signed certificate: {e}; TLS stays off"),
    }
}

/// Starts the master in this process. Returns when the instance has stopped.
pub fn run(cfg: Config, opts: Options) -> Result<(), String> {
    let params = cfg.params().map_err(|e| {
        e.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    let layout = dirs::prepare(&params)?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&layout.lock_file)
        .map_err(|e| format!("cannot open {}: {e}", layout.lock_file.display()))?;
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|_| {
            let pid = crate::fsutil::read_path_string(&layout.pid_file, 64).unwrap_or_default();
            format!(
                "the Postern mail system is already running (pid {})",
                pid.trim()
            )
        })?;
    let sink = Arc::new(logsink::LogSink::open(
        opts.foreground,
        params.str("maillog_file"),
        &layout.data,
        params.str("syslog_name"),
    )?);
    sink.start_collector()
        .map_err(|e| format!("cannot start the log collector: {e}"))?;
    let s2 = sink.clone();
    crate::log::set_sink(Box::new(move |_name, text| s2.master(text)));
    std::fs::write(&layout.pid_file, format!("{}\n", std::process::id()))
        .map_err(|e| format!("cannot write {}: {e}", layout.pid_file.display()))?;
    for d in &cfg.diagnostics {
        warn!("{d}");
    }
    ensure_server_certificate(&cfg, &params);
    let listeners = listen::bind_all(&cfg, &params)?;
    let pickup_path = crate::paths::pickup_socket(&params);
    let showq_path = crate::paths::showq_socket(&params);
    let pickup_socket = match postern_ipc::listener::bind_raw(&pickup_path, 0o666) {
        Ok(fd) => Some(fd),
        Err(e) => {
            warn!(
                "cannot create the pickup socket {}: {e}; sendmail will use the maildrop",
                pickup_path.display()
            );
            None
        }
    };
    // Before any thread or daemon starts: they inherit the policy.
    if params.str("daemon_scheduling_policy") == "batch"
        && let Err(e) = postern_sandbox::sys::batch_scheduling()
    {
        warn!("cannot switch to batch scheduling: {e}");
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find my own binary: {e}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the event loop: {e}"))?;
    rt.block_on(async move {
        let (tx, rx) = mpsc::unbounded_channel();
        let control = postern_ipc::listener::SeqpacketListener::bind(&layout.control, 0o600)
            .map_err(|e| {
                format!(
                    "cannot create control socket {}: {e}",
                    layout.control.display()
                )
            })?;
        tokio::spawn(control::serve(control, tx.clone()));
        match postern_ipc::listener::SeqpacketListener::bind(&showq_path, 0o666) {
            Ok(l) => {
                let users = params.list("authorized_mailq_users").unwrap_or_default();
                tokio::spawn(control::serve_showq(l, tx.clone(), users));
            }
            Err(e) => warn!(
                "cannot create the showq socket {}: {e}; mailq works for root only",
                showq_path.display()
            ),
        }
        signals(tx.clone())?;
        let mut m = Master {
            cfg,
            params,
            opts,
            exe,
            layout,
            listeners,
            pickup_socket,
            slots: BTreeMap::new(),
            tx,
            next_epoch: 1,
            stopping: false,
            sink,
        };
        info!(
            "daemon started -- version {}, configuration {}",
            env!("CARGO_PKG_VERSION"),
            m.opts
                .config_dir
                .as_ref()
                .map_or("(embedded)".to_string(), |d| d.display().to_string())
        );
        for role in roles::started() {
            let slot = m.new_slot(role);
            m.slots.insert(role, slot);
            m.spawn(role);
        }
        m.after(m.watchdog_round(), Event::Watchdog);
        m.event_loop(rx).await;
        let _ = std::fs::remove_file(&m.layout.control);
        let _ = std::fs::remove_file(&pickup_path);
        let _ = std::fs::remove_file(&showq_path);
        let _ = std::fs::remove_file(&m.layout.pid_file);
        info!("terminating on signal or request");
        Ok::<(), String>(())
    })
}

fn signals(tx: mpsc::UnboundedSender<Event>) -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mk = |k: SignalKind| signal(k).map_err(|e| format!("cannot handle signals: {e}"));
    let (mut term, mut int, mut hup) = (
        mk(SignalKind::terminate())?,
        mk(SignalKind::interrupt())?,
        mk(SignalKind::hangup())?,
    );
    tokio::spawn(async move {
        loop {
            let ev = tokio::select! {
                _ = term.recv() => Event::Stop,
                _ = int.recv() => Event::Stop,
                _ = hup.recv() => Event::ReloadAll,
            };
            if tx.send(ev).is_err() {
                return;
            }
        }
    });
    Ok(())
}

impl Master {
    fn new_slot(&self, role: Role) -> Slot {
        let p = &self.params;
        Slot {
            role,
            children: Vec::new(),
            restarts: 0,
            backoff: Duration::ZERO,
            throttled_until: None,
            restart_scheduled: false,
            start_after_drain: false,
            ledger: CrashLedger::new(
                p.duration("service_crash_throttle_window")
                    .unwrap_or(Duration::from_secs(300)),
                p.int("service_crash_throttle_minimum").unwrap_or(3) as u32,
                p.int("service_crash_throttle_percent").unwrap_or(50) as u32,
            ),
            pending: Vec::new(),
        }
    }

    /// daemon_timeout: how long a daemon may leave the watchdog's ping
    /// unanswered before it is killed and restarted.
    fn daemon_timeout(&self) -> Duration {
        self.params
            .duration("daemon_timeout")
            .unwrap_or(Duration::from_secs(60))
    }

    /// Pings go out four times per daemon_timeout.
    fn watchdog_round(&self) -> Duration {
        (self.daemon_timeout() / 4).max(Duration::from_millis(250))
    }

    fn watchdog(&mut self) {
        let limit = self.daemon_timeout();
        let seq = self.next_epoch;
        self.next_epoch += 1;
        let mut silent = Vec::new();
        for slot in self.slots.values_mut() {
            for c in slot
                .children
                .iter_mut()
                .filter(|c| c.ready.is_some() && !c.draining)
            {
                match c.ping {
                    Some((_, at)) if at.elapsed() > limit => silent.push((slot.role, c.pid, at)),
                    Some(_) => {}
                    None => {
                        c.ping = Some((seq, Instant::now()));
                        let _ = c.out.send(ToDaemon::Ping(seq));
                    }
                }
            }
        }
        for (role, pid, at) in silent {
            warn!(
                "{role} pid {pid}: no answer to the watchdog for {:.1}s (daemon_timeout {}s) -- killing it",
                at.elapsed().as_secs_f64(),
                limit.as_secs_f64()
            );
            Self::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        if !self.stopping {
            self.after(self.watchdog_round(), Event::Watchdog);
        }
    }

    fn after(&self, d: Duration, ev: Event) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            let _ = tx.send(ev);
        });
    }

    /// Fork+exec `postern daemon ROLE --ipc-fd N` and send it its Setup.
    fn spawn(&mut self, role: Role) {
        match self.try_spawn(role) {
            Ok(child) => {
                let slot = self.slots.get_mut(&role).expect("slot");
                slot.children.push(child);
            }
            Err(e) => {
                warn!("cannot start {role}: {e}");
                self.schedule_restart(role, Duration::ZERO);
            }
        }
    }

    fn try_spawn(&mut self, role: Role) -> Result<Child, String> {
        use nix::fcntl::{FcntlArg, FdFlag, fcntl};
        let (parent, child_end) =
            postern_sandbox::fdpass::seqpacket_pair().map_err(|e| e.to_string())?;
        // The child end survives exec; everything else we hold is CLOEXEC.
        // Spawns happen one at a time on this thread, so no other child can
        // inherit it by accident.
        fcntl(&child_end, FcntlArg::F_SETFD(FdFlag::empty())).map_err(|e| e.to_string())?;
        let fdnum = std::os::fd::AsRawFd::as_raw_fd(&child_end);
        let mut cmd = tokio::process::Command::new(&self.exe);
        cmd.arg("daemon")
            .arg(role.name())
            .arg("--ipc-fd")
            .arg(fdnum.to_string())
            .env_clear()
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(false)
            // Its own process group: a terminal's ^C reaches only the
            // master, which then stops the daemons in order.
            .process_group(0);
        if let Ok(tz) = std::env::var("TZ") {
            cmd.env("TZ", tz);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("exec {}: {e}", self.exe.display()))?;
        drop(child_end);
        let pid = child.id().ok_or("child vanished")?;
        let epoch = self.next_epoch;
        self.next_epoch += 1;

        // Log lines from the child's stderr, read by the log collector.
        if let Some(err) = child.stderr.take() {
            let err = err
                .into_owned_fd()
                .map_err(|e| format!("{} log pipe: {e}", role.name()))?;
            self.sink
                .add_daemon(role.name(), pid, err)
                .map_err(|e| format!("{} log pipe: {e}", role.name()))?;
        }
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            let _ = tx.send(Event::Exited {
                role,
                epoch,
                status,
            });
        });

        // Control channel: a reader task and a writer task on two
        // descriptors of the same socket.
        let wfd = parent.try_clone().map_err(|e| e.to_string())?;
        let timeout = self
            .params
            .duration("ipc_query_timeout")
            .unwrap_or(Duration::from_secs(10));
        let mut reader = Channel::new(parent, <FromDaemon as Message>::MAX_FRAME, timeout)
            .map_err(|e| e.to_string())?;
        let writer = Channel::new(wfd, postern_ipc::master::MAX_FRAME, timeout)
            .map_err(|e| e.to_string())?;
        let tx = self.tx.clone();
        tokio::spawn(async move {
            loop {
                let ev = match reader.recv().await {
                    Ok((f, fds)) => match FromDaemon::decode(f, fds) {
                        Ok(msg) => Event::Msg { role, epoch, msg },
                        Err(e) => Event::Broken {
                            role,
                            epoch,
                            why: format!("protocol violation: {e}"),
                        },
                    },
                    Err(e) => Event::Broken {
                        role,
                        epoch,
                        why: e.to_string(),
                    },
                };
                let done = matches!(ev, Event::Broken { .. });
                if tx.send(ev).is_err() || done {
                    return;
                }
            }
        });
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<ToDaemon>();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                let fds: Vec<_> = m.fds();
                if let Err(e) = writer.send(&m.encode(), &fds).await {
                    let _ = tx.send(Event::Broken {
                        role,
                        epoch,
                        why: format!("cannot write: {e}"),
                    });
                    return;
                }
            }
        });

        let setup = self.setup_for(role)?;
        let _ = out_tx.send(ToDaemon::Setup(setup));
        Ok(Child {
            epoch,
            pid,
            out: out_tx,
            ready: None,
            open_conns: 0,
            started: Instant::now(),
            draining: false,
            ping: None,
        })
    }

    fn setup_for(&self, role: Role) -> Result<Setup, String> {
        let mut listeners = Vec::new();
        if roles::spec(role).is_some_and(|s| s.listeners) {
            for b in &self.listeners {
                for (_, sock) in &b.sockets {
                    listeners.push(ListenerInfo {
                        service: b.service.name.clone(),
                        params: b.params.clone(),
                        fd: OwnedFd::from(sock.try_clone().map_err(|e| e.to_string())?),
                    });
                }
            }
        }
        if role == Role::Pickup
            && let Some(s) = &self.pickup_socket
        {
            listeners.push(ListenerInfo {
                service: "pickup".into(),
                params: Vec::new(),
                fd: s.try_clone().map_err(|e| e.to_string())?,
            });
        }
        Ok(Setup {
            role: role.name().into(),
            params: self.params.slice(role),
            listeners,
        })
    }

    fn schedule_restart(&mut self, role: Role, delay: Duration) {
        let slot = self.slots.get_mut(&role).expect("slot");
        if slot.restart_scheduled || self.stopping {
            return;
        }
        slot.restart_scheduled = true;
        self.after(delay, Event::Restart { role });
    }

    fn kill(pid: u32, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
    }

    async fn event_loop(&mut self, mut rx: mpsc::UnboundedReceiver<Event>) {
        while let Some(ev) = rx.recv().await {
            match ev {
                Event::Msg { role, epoch, msg } => self.on_message(role, epoch, msg),
                Event::Broken { role, epoch, why } => self.on_broken(role, epoch, &why),
                Event::Exited {
                    role,
                    epoch,
                    status,
                } => self.on_exit(role, epoch, status),
                Event::Restart { role } => {
                    let slot = self.slots.get_mut(&role).expect("slot");
                    slot.restart_scheduled = false;
                    slot.throttled_until = None;
                    if !self.stopping && slot.current().is_none() {
                        slot.restarts += 1;
                        self.spawn(role);
                    }
                }
                Event::DrainDeadline { role, epoch } => {
                    if let Some(c) = self.slots[&role].children.iter().find(|c| c.epoch == epoch) {
                        warn!("{role} pid {} did not finish in time; killing it", c.pid);
                        Self::kill(c.pid, nix::sys::signal::Signal::SIGKILL);
                    }
                }
                Event::Control { req, reply } => {
                    let r = self.on_control(req);
                    let _ = reply.send(r);
                }
                Event::Stop => self.stop(),
                Event::Watchdog => self.watchdog(),
                Event::Showq { reply } => {
                    let _ = reply.send(self.queue_channel("showq"));
                }
                Event::ReloadAll => {
                    if let Reply::Error(e) = self.reload("") {
                        warn!("reload failed: {e}");
                    }
                }
                Event::KillAll => {
                    for slot in self.slots.values() {
                        for c in &slot.children {
                            warn!(
                                "{} pid {} did not stop in time; killing it",
                                slot.role, c.pid
                            );
                            Self::kill(c.pid, nix::sys::signal::Signal::SIGKILL);
                        }
                    }
                }
            }
            if self.stopping && self.slots.values().all(|s| s.children.is_empty()) {
                return;
            }
        }
    }

    fn child_mut(&mut self, role: Role, epoch: u64) -> Option<&mut Child> {
        self.slots
            .get_mut(&role)?
            .children
            .iter_mut()
            .find(|c| c.epoch == epoch)
    }

    fn on_message(&mut self, role: Role, epoch: u64, msg: FromDaemon) {
        let tables_allowed = match &msg {
            FromDaemon::OpenTable { .. } => crate::tables::allowed_files(role, &self.params),
            _ => Vec::new(),
        };
        let Some(child) = self.child_mut(role, epoch) else {
            return;
        };
        match msg {
            FromDaemon::Ready {
                landlock, netns, ..
            } => {
                if child.ready.is_some() {
                    return self.violation(role, epoch, "ready twice");
                }
                let pid = child.pid;
                child.ready = Some(Ready { landlock, netns });
                info!("{role} pid {pid} ready");
                // A reload: the new process is up, so the old one may drain.
                let slot = self.slots.get_mut(&role).expect("slot");
                let mut drained = Vec::new();
                for old in slot
                    .children
                    .iter_mut()
                    .filter(|c| c.epoch != epoch && !c.draining)
                {
                    old.draining = true;
                    let _ = old.out.send(ToDaemon::Shutdown);
                    drained.push(old.epoch);
                }
                for e in drained {
                    self.after(
                        Duration::from_secs(60),
                        Event::DrainDeadline { role, epoch: e },
                    );
                }
                self.serve_pending(role);
            }
            FromDaemon::Connect {
                request_id,
                peer_role,
            } => {
                let Some(peer) = Role::from_name(&peer_role) else {
                    return self.violation(
                        role,
                        epoch,
                        &format!("asked for unknown role {peer_role}"),
                    );
                };
                if !peers::allowed(role, peer) {
                    return self.violation(
                        role,
                        epoch,
                        &format!("asked for a channel to {peer}, which is not in its peer graph"),
                    );
                }
                let slot = self
                    .slots
                    .get_mut(&peer)
                    .expect("every role in EDGES is started");
                if slot.pending.len() >= 1024 {
                    if let Some(c) = self.child_mut(role, epoch) {
                        let _ = c.out.send(ToDaemon::ConnectFailed {
                            request_id,
                            reason: format!("{peer} is not available"),
                        });
                    }
                    return;
                }
                slot.pending.push(PendingConnect {
                    from: role,
                    from_epoch: epoch,
                    request_id,
                    at: Instant::now(),
                });
                self.serve_pending(peer);
            }
            FromDaemon::Connections { opened, open } => {
                child.open_conns = open;
                self.slots
                    .get_mut(&role)
                    .expect("slot")
                    .ledger
                    .connections(Instant::now(), opened);
            }
            FromDaemon::Pong(n) => {
                if child.ping.is_some_and(|(sent, _)| sent == n) {
                    child.ping = None;
                } else {
                    self.violation(role, epoch, "pong without a ping");
                }
            }
            FromDaemon::OpenTable { request_id, path } => {
                // Only roles that answer lookups, and only files the
                // configuration names: anything else is a violation.
                let wanted = std::path::PathBuf::from(&path);
                if !tables_allowed.contains(&wanted) {
                    return self.violation(
                        role,
                        epoch,
                        &format!("asked to open {path}, which is not a configured table"),
                    );
                }
                let file = open_table(&wanted);
                let _ = child.out.send(ToDaemon::TableFile { request_id, file });
            }
        }
    }

    /// Hands out channels to `server` for every waiting request.
    fn serve_pending(&mut self, server: Role) {
        let timeout = self
            .params
            .duration("ipc_query_timeout")
            .unwrap_or(Duration::from_secs(10));
        let slot = self.slots.get_mut(&server).expect("slot");
        let Some(srv) = slot.current_ready() else {
            return;
        };
        let srv_out = srv.out.clone();
        let pending = std::mem::take(&mut slot.pending);
        for p in pending {
            if p.at.elapsed() > timeout {
                continue; // the requester has given up already
            }
            let Some(client) = self
                .slots
                .get(&p.from)
                .and_then(|s| s.children.iter().find(|c| c.epoch == p.from_epoch))
            else {
                continue;
            };
            let (a, b) = match postern_sandbox::fdpass::seqpacket_pair() {
                Ok(pair) => pair,
                Err(e) => {
                    warn!("cannot create a channel {} -> {server}: {e}", p.from);
                    continue;
                }
            };
            let _ = srv_out.send(ToDaemon::Peer {
                request_id: 0,
                peer_role: p.from.name().into(),
                fd: b,
            });
            let _ = client.out.send(ToDaemon::Peer {
                request_id: p.request_id,
                peer_role: server.name().into(),
                fd: a,
            });
        }
    }

    /// A daemon broke the protocol with the master: it is buggy or
    /// compromised. Kill it; supervision restarts it.
    fn violation(&mut self, role: Role, epoch: u64, why: &str) {
        if let Some(c) = self.child_mut(role, epoch) {
            warn!("{role} pid {}: {why}; killing it", c.pid);
            Self::kill(c.pid, nix::sys::signal::Signal::SIGKILL);
        }
    }

    fn on_broken(&mut self, role: Role, epoch: u64, why: &str) {
        if let Some(c) = self.child_mut(role, epoch) {
            // A closed channel usually means the process is exiting; the exit
            // event follows. Anything else is a violation.
            if !why.contains("peer closed the channel") {
                let pid = c.pid;
                warn!("control channel of {role} pid {pid}: {why}");
                Self::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }

    fn on_exit(&mut self, role: Role, epoch: u64, status: std::io::Result<ExitStatus>) {
        let stopping = self.stopping;
        let slot = self.slots.get_mut(&role).expect("slot");
        let Some(idx) = slot.children.iter().position(|c| c.epoch == epoch) else {
            return;
        };
        let child = slot.children.remove(idx);
        if stopping || child.draining {
            info!("{role} pid {} exited ({})", child.pid, describe(&status));
            if slot.start_after_drain && slot.current().is_none() && !stopping {
                slot.start_after_drain = false;
                self.spawn(role);
            }
            return;
        }
        let lived = child.started.elapsed();
        if abnormal(&status) {
            warn!(
                "process {} {role} pid {} {}",
                self.exe.display(),
                child.pid,
                describe(&status)
            );
        } else {
            warn!("{role} pid {} exited unexpectedly", child.pid);
        }
        if let Some(v) = slot.ledger.crash(Instant::now(), child.open_conns > 0) {
            let t = self
                .params
                .duration("service_throttle_time")
                .unwrap_or(Duration::from_secs(60));
            warn!(
                "service {role}: {} of {} recent connections ended in a crash -- throttling for {}s",
                v.crashes,
                v.connections,
                t.as_secs()
            );
            slot.throttled_until = Some(Instant::now() + t);
            slot.ledger.reset();
            self.schedule_restart(role, t);
            return;
        }
        if child.ready.is_none() {
            warn!("{role}: bad command startup -- throttling");
        }
        slot.backoff = supervise::next_backoff(slot.backoff, lived);
        let d = slot.backoff;
        self.schedule_restart(role, d);
    }

    fn on_control(&mut self, req: Request) -> Reply {
        match req {
            Request::Status => Reply::Status(self.status()),
            Request::Stop => {
                self.stop();
                Reply::Ok("stopping".into())
            }
            Request::Reload(svc) => self.reload(&svc),
            Request::Queue => self.queue_channel("admin"),
        }
    }

    /// A channel to the queue manager: "admin" (the control socket) may do
    /// everything, "showq" (the public socket) may only list.
    fn queue_channel(&self, peer: &str) -> Reply {
        let Some(qmgr) = self.slots.get(&Role::Qmgr).and_then(Slot::current_ready) else {
            return Reply::Error("the queue manager is not running".into());
        };
        match postern_sandbox::fdpass::seqpacket_pair() {
            Ok((mine, theirs)) => {
                let _ = qmgr.out.send(ToDaemon::Peer {
                    request_id: 0,
                    peer_role: peer.into(),
                    fd: theirs,
                });
                Reply::Channel(mine)
            }
            Err(e) => Reply::Error(format!("cannot create a channel: {e}")),
        }
    }

    fn status(&self) -> Vec<ProcessInfo> {
        let info = |role: &str, pid: u32, ll: &str, netns: &str, state: &str, restarts: u32| {
            let st = postern_sandbox::procstat::read(pid).ok();
            ProcessInfo {
                role: role.into(),
                pid,
                uid: st.as_ref().map_or(0, |s| s.uid[1]),
                gid: st.as_ref().map_or(0, |s| s.gid[1]),
                no_new_privs: st.as_ref().is_some_and(|s| s.no_new_privs),
                seccomp: st.as_ref().map_or(0, |s| s.seccomp),
                cap_eff: st.as_ref().map_or_else(String::new, |s| s.cap_eff.clone()),
                landlock: ll.into(),
                netns: netns.into(),
                state: state.into(),
                restarts,
            }
        };
        let mut out = vec![info(
            "master",
            std::process::id(),
            "not_enforced",
            "shared",
            "running",
            0,
        )];
        for slot in self.slots.values() {
            if slot.children.is_empty() {
                let state = if slot.throttled_until.is_some() {
                    "throttled"
                } else {
                    "restarting"
                };
                out.push(ProcessInfo {
                    role: slot.role.name().into(),
                    pid: 0,
                    uid: 0,
                    gid: 0,
                    no_new_privs: false,
                    seccomp: 0,
                    cap_eff: String::new(),
                    landlock: String::new(),
                    netns: String::new(),
                    state: state.into(),
                    restarts: slot.restarts,
                });
            }
            for c in &slot.children {
                let state = match (&c.ready, c.draining) {
                    (_, true) => "stopping",
                    (Some(_), false) => "running",
                    (None, false) => "starting",
                };
                let (ll, ns) = c
                    .ready
                    .as_ref()
                    .map_or(("", ""), |r| (r.landlock.as_str(), r.netns.as_str()));
                out.push(info(slot.role.name(), c.pid, ll, ns, state, slot.restarts));
            }
        }
        out
    }

    fn stop(&mut self) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        info!("stopping the Postern mail system");
        for slot in self.slots.values() {
            for c in &slot.children {
                let _ = c.out.send(ToDaemon::Shutdown);
            }
        }
        self.after(Duration::from_secs(10), Event::KillAll);
    }

    /// Re-reads the configuration and restarts `service` (a role name), or
    /// every role when it is empty. Other roles keep their processes.
    fn reload(&mut self, service: &str) -> Reply {
        let targets: Vec<Role> = if service.is_empty() {
            self.slots.keys().copied().collect()
        } else {
            match Role::from_name(service).filter(|r| self.slots.contains_key(r)) {
                Some(r) => vec![r],
                None => return Reply::Error(format!("unknown service: {service}")),
            }
        };
        let cfg = Config::load(self.opts.config_dir.as_deref());
        if cfg.has_errors() {
            let errs: Vec<String> = cfg.errors().map(ToString::to_string).collect();
            return Reply::Error(format!(
                "configuration has errors; nothing reloaded:\n{}",
                errs.join("\n")
            ));
        }
        let params = match cfg.params() {
            Ok(p) => p,
            Err(e) => {
                return Reply::Error(
                    e.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("\n"),
                );
            }
        };
        if targets.contains(&Role::Smtpd) {
            // Listeners may have changed: bind the new set, keeping sockets
            // whose address is unchanged (no refused connections).
            let mut old: Vec<(std::net::SocketAddr, std::net::TcpListener)> =
                self.listeners.drain(..).flat_map(|b| b.sockets).collect();
            let mut fresh = Vec::new();
            for svc in cfg.services.iter().filter(|s| s.listen.is_some()) {
                let want = listen::addresses_for(svc, &params);
                let mut sockets = Vec::new();
                for addr in want {
                    if let Some(i) = old.iter().position(|(a, _)| *a == addr) {
                        sockets.push(old.remove(i));
                    } else {
                        match listen::bind_one(addr) {
                            Ok(s) => sockets.push((addr, s)),
                            Err(e) => return Reply::Error(format!("cannot listen on {addr}: {e}")),
                        }
                    }
                }
                let p = if svc.overrides.is_empty() {
                    Vec::new()
                } else {
                    cfg.params_with(&svc.overrides)
                        .map(|p| p.slice(Role::Smtpd))
                        .unwrap_or_default()
                };
                fresh.push(listen::Bound {
                    service: svc.clone(),
                    params: p,
                    sockets,
                });
            }
            self.listeners = fresh;
        }
        self.cfg = cfg;
        self.params = params;
        for role in &targets {
            self.restart_role(*role);
        }
        let names: Vec<&str> = targets.iter().map(|r| r.name()).collect();
        info!("reload -- restarting {}", names.join(" "));
        Reply::Ok(format!("reloading {}", names.join(" ")))
    }

    fn restart_role(&mut self, role: Role) {
        let exclusive = roles::spec(role).is_some_and(|s| s.exclusive);
        let slot = self.slots.get_mut(&role).expect("slot");
        slot.ledger.reset();
        slot.backoff = Duration::ZERO;
        let current = slot.children.iter().position(|c| !c.draining);
        match current {
            Some(i) if exclusive => {
                let c = &mut slot.children[i];
                c.draining = true;
                let _ = c.out.send(ToDaemon::Shutdown);
                let epoch = c.epoch;
                slot.start_after_drain = true;
                self.after(
                    Duration::from_secs(10),
                    Event::DrainDeadline { role, epoch },
                );
            }
            // Start the new one; the old one drains once the new one is ready.
            Some(_) => self.spawn(role),
            None => {
                if !slot.restart_scheduled {
                    self.spawn(role);
                }
            }
        }
    }
}
