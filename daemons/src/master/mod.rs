//! The master: reads the configuration, binds the listeners, starts every
//! role by a fresh exec of this binary, supervises them, acts as the
//! switchboard between them, and serves the control socket.
//!
//! It runs one event loop over one queue of events, so its state needs no
//! locks: child messages, child exits, timers, control requests and signals
//! all arrive as [`Event`]s.
mod children;
mod control;
pub mod dirs;
mod events;
mod home;
mod listen;
pub mod logsink;
mod requests;
pub mod supervise;
mod wake;

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use postern_config::{Config, Params, Role};
use postern_ipc::control::{ProcessInfo, Reply, Request};
use postern_ipc::master::{FromDaemon, ListenerInfo, PassInfo, Setup, ToDaemon};
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
    /// Work is waiting for an on-demand role nobody asks for a channel
    /// (pickup: a sendmail connection, a maildrop file).
    Wake {
        role: Role,
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
    /// A process of this role was started at least once (on-demand roles
    /// are not, until first use).
    used: bool,
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
    /// The metrics_listen sockets, handed to the metrics role.
    metrics_sockets: Vec<std::net::TcpListener>,
    /// Where the master's own figures get their channel to the metrics role.
    metrics_uplink: Option<mpsc::UnboundedSender<OwnedFd>>,
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

/// A connection to the Unix socket of a socketmap server, made without
/// waiting (a server whose backlog is full is an error for that lookup,
/// never a stall of the master).
fn connect_socket(p: &std::path::Path) -> Result<Option<OwnedFd>, String> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| format!("{}: {e}", p.display()))?;
    let addr = UnixAddr::new(p).map_err(|e| format!("{}: {e}", p.display()))?;
    match connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr) {
        Ok(()) => Ok(Some(fd)),
        Err(nix::errno::Errno::ENOENT) => Ok(None),
        Err(e) => Err(format!("connect to {}: {}", p.display(), e.desc())),
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

/// Raises the soft descriptor limit to the hard one, as Postfix's master
/// does, before any role starts (they inherit it). Debian's usual soft limit
/// of 1024 is far below what a busy edge relay's channels need. Logged
/// either way, so an operator sees what the roles got.
fn raise_descriptor_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => info!("descriptor limit raised from {soft} to {hard}"),
            Err(e) => warn!("cannot raise the descriptor limit from {soft} to {hard}: {e}"),
        },
        Ok((soft, _)) => info!("descriptor limit {soft}"),
        Err(e) => warn!("cannot read the descriptor limit: {e}"),
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
    // The embedded default keeps its aliases in data_directory, which
    // exists only now.
    crate::cli::map::ensure_aliases(&params).map_err(|e| e.join("; "))?;
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
    raise_descriptor_limit();
    ensure_server_certificate(&cfg, &params);
    let listeners = listen::bind_all(&cfg, &params)?;
    let metrics_sockets = postern_config::inet::metrics_listen(params.str("metrics_listen"))?
        .into_iter()
        .map(|a| {
            listen::bind_one(a).map_err(|e| format!("cannot listen on {a} (metrics_listen): {e}"))
        })
        .collect::<Result<Vec<_>, String>>()?;
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
        let metrics_uplink = (!metrics_sockets.is_empty()).then(|| {
            let (utx, urx) = mpsc::unbounded_channel();
            crate::metrics::start(Role::Master, &params, crate::metrics::Uplink::Given(urx));
            utx
        });
        let mut m = Master {
            cfg,
            params,
            opts,
            exe,
            layout,
            listeners,
            pickup_socket,
            metrics_sockets,
            metrics_uplink,
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
        for role in roles::all() {
            let slot = m.new_slot(role);
            m.slots.insert(role, slot);
        }
        for role in roles::started(&m.params).collect::<Vec<_>>() {
            m.spawn(role);
        }
        // pickup starts when sendmail connects or the maildrop has mail.
        let maildrop = crate::paths::maildrop_dir(&m.params);
        if wake::maildrop_has_mail(&maildrop) {
            m.start_on_first_use(Role::Pickup, "mail waits in the maildrop");
        } else {
            let socket = m.pickup_socket.as_ref().and_then(|s| s.try_clone().ok());
            wake::watch(socket, maildrop, m.tx.clone());
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
                Event::Wake { role } => self.start_on_first_use(role, "work is waiting"),
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
}
