//! What every jailed role does at start, in this order (after OpenSMTPD's
//! per-process setup): take the control channel, read the Setup the master
//! sends (configuration slice and listeners; the master is trusted), prepare
//! what must be opened before the jail, enter the jail, and only then build
//! the async runtime, report Ready, and run the role's event loop.
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postern_config::{Params, Role};
use postern_ipc::master::{FromDaemon, ListenerInfo, PassInfo, Reload, Setup, ToDaemon};
use postern_ipc::{Channel, ChannelError, Message};
use tokio::sync::{mpsc, oneshot, watch};

use crate::{fatal, roles};

/// What a role's main function gets.
pub struct Context {
    pub params: Params,
    pub listeners: Vec<ListenerInfo>,
    /// smtpd: the pass services postscreen hands clients to.
    pub passes: Vec<PassInfo>,
    pub switchboard: Switchboard,
    /// Channels other roles opened to us.
    pub inbound: mpsc::UnboundedReceiver<(Role, OwnedFd)>,
    /// Channels from `postern` commands (through the control socket):
    /// client-reachable, so a violation drops only that channel.
    /// Queue admin channels: (channel, read_only). Read-only ones come from
    /// the public showq socket (mailq for ordinary users).
    pub admin: mpsc::UnboundedReceiver<(OwnedFd, bool)>,
    /// Becomes true when the master asks us to finish and exit.
    pub shutdown: watch::Receiver<bool>,
    /// `postern reload` for a role that keeps its process (the broker);
    /// other roles are restarted instead and never get one.
    pub reloads: mpsc::UnboundedReceiver<Reload>,
}

impl Context {
    pub fn query_timeout(&self) -> Duration {
        self.params
            .duration("ipc_query_timeout")
            .unwrap_or(Duration::from_secs(10))
    }
    pub fn transfer_timeout(&self) -> Duration {
        self.params
            .duration("ipc_timeout")
            .unwrap_or(Duration::from_secs(3600))
    }
}

/// Reads one frame from the (nonblocking) control fd before any runtime
/// exists, waiting with poll(2).
fn recv_blocking(fd: &OwnedFd) -> Result<(Vec<u8>, Vec<OwnedFd>), String> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut buf = vec![0u8; postern_ipc::frame::HEADER + postern_ipc::master::MAX_FRAME + 1];
    loop {
        let mut pfd = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        poll(&mut pfd, PollTimeout::from(30_000u16)).map_err(|e| format!("poll: {e}"))?;
        match postern_sandbox::fdpass::recv(fd.as_fd(), &mut buf) {
            Ok(r) if r.len == 0 => return Err("master closed the control channel".into()),
            Ok(r) if r.truncated || r.fds_truncated => return Err("oversize setup frame".into()),
            Ok(r) => return Ok((buf[..r.len].to_vec(), r.fds)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(format!("recv: {e}")),
        }
    }
}

/// Runs `role` with the control channel on `ipc_fd`. Never returns normally.
/// `prepare` runs before the jail; it returns the role's main function and
/// any descriptors it opened that must survive into the jail.
/// Accepts the channels other roles open to us, each served by the task
/// `serve` makes for it, until the master asks us to finish (or our
/// inbound queue closes); the tasks end with it. They run on a LocalSet,
/// so they may share `Rc` state.
pub async fn serve_channels<F, Fut>(ctx: &mut Context, mut serve: F)
where
    F: FnMut(Role, OwnedFd) -> Fut,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            loop {
                tokio::select! {
                    p = ctx.inbound.recv() => match p {
                        Some((from, fd)) => {
                            tokio::task::spawn_local(serve(from, fd));
                        }
                        None => return,
                    },
                    _ = ctx.shutdown.changed() => return,
                }
            }
        })
        .await;
}

pub fn run<F, Fut>(
    role: Role,
    ipc_fd: RawFd,
    prepare: impl FnOnce(&Params) -> Result<(F, Vec<RawFd>), String>,
) -> !
where
    F: FnOnce(Context) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let ctl = match postern_sandbox::sys::take_inherited_fd(ipc_fd) {
        Ok(fd) => fd,
        Err(e) => fatal!("{role}: bad --ipc-fd {ipc_fd}: {e}"),
    };
    let setup = match recv_blocking(&ctl)
        .and_then(|(f, fds)| ToDaemon::decode(&f, fds).map_err(|e| e.to_string()))
    {
        Ok(ToDaemon::Setup(s)) => s,
        Ok(other) => fatal!("{role}: expected setup from master, got {other:?}"),
        Err(e) => fatal!("{role}: cannot read setup from master: {e}"),
    };
    let Setup {
        role: role_name,
        params,
        listeners,
        passes,
    } = setup;
    if role_name != role.name() {
        fatal!("{role}: master sent setup for role {role_name}");
    }
    let params = match Params::from_pairs(params) {
        Ok(p) => p,
        Err(e) => fatal!("{role}: bad configuration from master: {e}"),
    };
    crate::log::init(params.str("syslog_name"));
    crate::clock::init();
    crate::fsutil::init_caps(&params);
    // Work that needs the filesystem or privileges happens here, before the jail.
    let (main, extra) = match prepare(&params) {
        Ok(m) => m,
        Err(e) => fatal!("{e}"),
    };
    let mut keep: Vec<RawFd> = vec![ctl.as_raw_fd()];
    keep.extend(listeners.iter().map(|l| l.fd.as_raw_fd()));
    keep.extend(extra);
    let jail = match postern_sandbox::jail::enter(&roles::jail_spec(role, &params, keep)) {
        Ok(r) => r,
        Err(e) => fatal!("{role}: cannot enter the jail: {e}"),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => fatal!("{role}: cannot start the event loop: {e}"),
    };
    rt.block_on(async move {
        let query = params
            .duration("ipc_query_timeout")
            .unwrap_or(Duration::from_secs(10));
        let (switchboard, inbound, admin, shutdown, reloads) =
            match Switchboard::start(role, ctl, query, &jail).await {
                Ok(s) => s,
                Err(e) => fatal!("{role}: control channel: {e}"),
            };
        crate::metrics::start(
            role,
            &params,
            crate::metrics::Uplink::Switchboard(switchboard.clone()),
        );
        main(Context {
            params,
            listeners,
            passes,
            switchboard,
            inbound,
            admin,
            shutdown,
            reloads,
        })
        .await;
    });
    std::process::exit(0)
}

/// What the master answers a daemon's request with.
enum Answer {
    Peer(Result<OwnedFd, String>),
    Table(Result<Option<OwnedFd>, String>),
}

type Pending = Arc<Mutex<HashMap<u32, oneshot::Sender<Answer>>>>;

type Started = (
    Switchboard,
    mpsc::UnboundedReceiver<(Role, OwnedFd)>,
    mpsc::UnboundedReceiver<(OwnedFd, bool)>,
    watch::Receiver<bool>,
    mpsc::UnboundedReceiver<Reload>,
);

/// Asks the master for channels to peer roles.
#[derive(Clone)]
pub struct Switchboard {
    writer: Arc<Channel>,
    pending: Pending,
    next: Arc<Mutex<u32>>,
    timeout: Duration,
    conns: Arc<Mutex<ConnTally>>,
}

/// Client connections not yet reported to the master.
#[derive(Default)]
struct ConnTally {
    /// Accepted since the last report.
    opened: u32,
    open: u32,
    /// `open` as last reported.
    told_open: u32,
    report_due: bool,
}

/// How long connection counts gather before a report, unless the master
/// believes none is open: the first one is reported at once.
const CONN_REPORT_DELAY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error("master refused a channel to {0}: {1}")]
    Refused(Role, String),
    #[error("no channel to {0} within {1:?}")]
    Timeout(Role, Duration),
    #[error("control channel: {0}")]
    Channel(#[from] ChannelError),
}

impl Switchboard {
    async fn start(
        me: Role,
        ctl: OwnedFd,
        timeout: Duration,
        jail: &postern_sandbox::JailReport,
    ) -> Result<Started, ChannelError> {
        // Two descriptors on one socket: the reader task owns one, senders share the other.
        let wfd = ctl.try_clone()?;
        let max = <ToDaemon as Message>::MAX_FRAME;
        let mut reader = Channel::new(ctl, max, Duration::from_secs(3600))?;
        let writer = Arc::new(Channel::new(wfd, max, timeout)?);
        let pending: Pending = Arc::default();
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        let (admin_tx, admin_rx) = mpsc::unbounded_channel();
        let (sd_tx, sd_rx) = watch::channel(false);
        let (reload_tx, reload_rx) = mpsc::unbounded_channel();
        let sb = Switchboard {
            writer,
            pending: pending.clone(),
            next: Arc::new(Mutex::new(0)),
            timeout,
            conns: Arc::default(),
        };
        sb.send(&FromDaemon::Ready {
            landlock: jail.landlock.as_str().into(),
            landlock_abi: jail.landlock_abi as u32,
            netns: jail.netns.as_str().into(),
        })
        .await?;
        let pong = sb.writer.clone();
        tokio::spawn(async move {
            loop {
                let msg = match reader.recv().await {
                    Ok((f, fds)) => ToDaemon::decode(f, fds),
                    // The master is gone: so are we (no orphaned daemons).
                    Err(ChannelError::Closed) => std::process::exit(0),
                    // Out of descriptors: that one frame is lost (a
                    // channel the requester will time out on), never the
                    // daemon.
                    Err(ChannelError::FdsLost) => {
                        crate::warn!("control channel from master: {}", ChannelError::FdsLost);
                        continue;
                    }
                    Err(e) => fatal!("control channel from master: {e}"),
                };
                match msg {
                    Ok(ToDaemon::Peer {
                        request_id: 0,
                        peer_role,
                        fd,
                    }) if peer_role == "admin" || peer_role == "showq" => {
                        let _ = admin_tx.send((fd, peer_role == "showq"));
                    }
                    Ok(ToDaemon::Peer {
                        request_id: 0,
                        peer_role,
                        fd,
                    }) => match Role::from_name(&peer_role) {
                        // Only a peer the graph lists for this role; the
                        // master grants no other, and none gets in if it did.
                        Some(r) if crate::peers::allowed(r, me) => {
                            let _ = in_tx.send((r, fd));
                        }
                        Some(r) => {
                            crate::warn!("refused a channel from {r}: not in the peer graph")
                        }
                        None => fatal!("master offered a channel from unknown role {peer_role}"),
                    },
                    Ok(ToDaemon::Peer { request_id, fd, .. }) => {
                        if let Some(tx) = pending.lock().expect("pending").remove(&request_id) {
                            let _ = tx.send(Answer::Peer(Ok(fd)));
                        }
                    }
                    Ok(ToDaemon::ConnectFailed { request_id, reason }) => {
                        if let Some(tx) = pending.lock().expect("pending").remove(&request_id) {
                            let _ = tx.send(Answer::Peer(Err(reason)));
                        }
                    }
                    Ok(ToDaemon::TableFile { request_id, file }) => {
                        if let Some(tx) = pending.lock().expect("pending").remove(&request_id) {
                            let _ = tx.send(Answer::Table(file));
                        }
                    }
                    Ok(ToDaemon::Shutdown) => {
                        let _ = sd_tx.send(true);
                    }
                    // Answered from this runtime: a daemon whose event loop
                    // is stuck stays silent, and the master's watchdog acts.
                    Ok(ToDaemon::Ping(n)) => {
                        let _ = pong.send(&FromDaemon::Pong(n).encode(), &[]).await;
                    }
                    Ok(ToDaemon::Reload(r)) => {
                        let _ = reload_tx.send(r);
                    }
                    Ok(ToDaemon::Setup(_)) => fatal!("master sent a second setup"),
                    Err(e) => fatal!("protocol violation from master: {e}"),
                }
            }
        });
        Ok((sb, in_rx, admin_rx, sd_rx, reload_rx))
    }

    pub async fn send(&self, m: &FromDaemon) -> Result<(), ChannelError> {
        self.writer.send(&m.encode(), &[]).await
    }

    /// Sends a request that the master answers, and waits for the answer.
    async fn request(&self, make: impl FnOnce(u32) -> FromDaemon) -> Result<Answer, ChannelError> {
        let id = {
            let mut n = self.next.lock().expect("counter");
            *n = n.wrapping_add(1).max(1);
            *n
        };
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("pending").insert(id, tx);
        if let Err(e) = self.send(&make(id)).await {
            self.pending.lock().expect("pending").remove(&id);
            return Err(e);
        }
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(a)) => Ok(a),
            Ok(Err(_)) | Err(_) => {
                self.pending.lock().expect("pending").remove(&id);
                Err(ChannelError::Timeout(self.timeout))
            }
        }
    }

    /// A fresh channel to `peer`, or an error after the query deadline.
    pub async fn connect(&self, peer: Role) -> Result<OwnedFd, SwitchError> {
        let answer = self
            .request(|request_id| FromDaemon::Connect {
                request_id,
                peer_role: peer.name().into(),
            })
            .await
            .map_err(|e| match e {
                ChannelError::Timeout(d) => SwitchError::Timeout(peer, d),
                e => SwitchError::Channel(e),
            })?;
        match answer {
            Answer::Peer(Ok(fd)) => Ok(fd),
            Answer::Peer(Err(reason)) => Err(SwitchError::Refused(peer, reason)),
            Answer::Table(_) => fatal!("master answered a connect with a table"),
        }
    }

    /// A read-only descriptor of a table file the configuration names,
    /// opened by the master (None: the file does not exist).
    pub async fn open_table(&self, path: &std::path::Path) -> Result<Option<OwnedFd>, String> {
        let path = path.display().to_string();
        match self
            .request(|request_id| FromDaemon::OpenTable { request_id, path })
            .await
        {
            Ok(Answer::Table(r)) => r,
            Ok(Answer::Peer(_)) => fatal!("master answered a table request with a channel"),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Tells the master an SMTP connection started or ended (for the
    /// crash-rate throttle). Never blocks the caller. Counts are gathered
    /// for up to [`CONN_REPORT_DELAY`], except that a connection opening
    /// while the master believes none is open is reported at once: a crash
    /// during it must count as one.
    pub fn connection(&self, opened: bool) {
        let mut t = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        if opened {
            t.opened = t.opened.saturating_add(1);
            t.open = t.open.saturating_add(1);
        } else {
            t.open = t.open.saturating_sub(1);
        }
        let urgent = opened && t.told_open == 0;
        if !urgent && t.report_due {
            return;
        }
        t.report_due = true;
        drop(t);
        let sb = self.clone();
        tokio::spawn(async move {
            if !urgent {
                tokio::time::sleep(CONN_REPORT_DELAY).await;
            }
            let m = {
                let mut t = sb.conns.lock().unwrap_or_else(|e| e.into_inner());
                t.report_due = false;
                t.told_open = t.open;
                FromDaemon::Connections {
                    opened: std::mem::take(&mut t.opened),
                    open: t.open,
                }
            };
            let _ = sb.send(&m).await;
        });
    }
}
