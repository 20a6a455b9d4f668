//! The master <-> daemon control channel (schema: master.capnp).
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::channel::{Message, no_fds};
use crate::frame::{self, Violation, list_len, text};
use crate::generated::master_capnp::{from_daemon, to_daemon};

pub const VERSION: u32 = crate::generated::master_capnp::VERSION;
/// Setup carries a role's whole configuration slice.
pub const MAX_FRAME: usize = 128 * 1024;
pub const MAX_PARAMS: usize = 1024;
pub const MAX_NAME: usize = 64;
/// Postfix's author suggests 10-20 KB per value; long lists need the room.
pub const MAX_VALUE: usize = 16 * 1024;
pub const MAX_LISTENERS: usize = 16;
pub const MAX_ROLE: usize = 32;
pub const MAX_REASON: usize = 512;

pub type Params = Vec<(String, String)>;

#[derive(Debug)]
pub struct ListenerInfo {
    pub service: String,
    pub params: Params,
    /// Concurrent sessions for this service (master.cf maxproc); 0: no limit.
    pub maxproc: u32,
    pub fd: OwnedFd,
}

/// A master.cf pass service (smtpd behind postscreen): like a listener,
/// without a socket of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassInfo {
    pub service: String,
    pub params: Params,
    pub maxproc: u32,
}

#[derive(Debug)]
pub struct Setup {
    pub role: String,
    pub params: Params,
    pub listeners: Vec<ListenerInfo>,
    pub passes: Vec<PassInfo>,
}

/// A file the master opened for a daemon: its path (for messages) and the
/// descriptor, or why it could not be opened.
#[derive(Debug)]
pub struct OpenedFile {
    pub path: String,
    pub file: Result<OwnedFd, String>,
}

/// Key and certificate files in one reload: the server chain and key
/// files, the client pair, later DKIM keys.
pub const MAX_RELOAD_FILES: usize = 12;

#[derive(Debug)]
pub struct Reload {
    pub params: Params,
    pub files: Vec<OpenedFile>,
}

#[derive(Debug)]
pub enum ToDaemon {
    Setup(Setup),
    /// A channel to `peer_role`. `request_id` 0: the peer opened it, accept
    /// it; otherwise it answers our Connect with that id.
    Peer {
        request_id: u32,
        peer_role: String,
        fd: OwnedFd,
    },
    ConnectFailed {
        request_id: u32,
        reason: String,
    },
    Shutdown,
    /// The master's watchdog (daemon_timeout): answer with Pong(n).
    Ping(u64),
    /// The answer to OpenTable: the open file, None when it does not
    /// exist, or why it could not be opened.
    TableFile {
        request_id: u32,
        file: Result<Option<OwnedFd>, String>,
    },
    /// `postern reload` for a role that keeps its process.
    Reload(Reload),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromDaemon {
    Ready {
        landlock: String,
        landlock_abi: u32,
        netns: String,
    },
    Connect {
        request_id: u32,
        peer_role: String,
    },
    /// Client connections accepted since the last report, and open now.
    Connections {
        opened: u32,
        open: u32,
    },
    OpenTable {
        request_id: u32,
        path: String,
    },
    Pong(u64),
}

pub const MAX_PATH: usize = 4096;

fn set_params(
    mut list: capnp::struct_list::Builder<'_, crate::generated::common_capnp::param::Owned>,
    params: &Params,
) {
    for (i, (n, v)) in params.iter().enumerate() {
        let mut p = list.reborrow().get(i as u32);
        p.set_name(frame::clip(n, MAX_NAME));
        p.set_value(frame::clip(v, MAX_VALUE));
    }
}

fn get_params(
    list: capnp::Result<
        capnp::struct_list::Reader<'_, crate::generated::common_capnp::param::Owned>,
    >,
    field: &'static str,
) -> Result<Params, Violation> {
    let list = list?;
    list_len(list.len(), field, MAX_PARAMS)?;
    list.iter()
        .map(|p| {
            Ok((
                text(p.get_name(), "param.name", MAX_NAME)?,
                text(p.get_value(), "param.value", MAX_VALUE)?,
            ))
        })
        .collect()
}

impl Message for ToDaemon {
    const MAX_FRAME: usize = MAX_FRAME;

    fn encode(&self) -> Vec<u8> {
        let mut b = frame::builder();
        {
            let mut root = b.init_root::<to_daemon::Builder>();
            match self {
                ToDaemon::Setup(s) => {
                    let mut sb = root.init_setup();
                    sb.set_version(VERSION);
                    sb.set_role(frame::clip(&s.role, MAX_ROLE));
                    set_params(sb.reborrow().init_params(s.params.len() as u32), &s.params);
                    let mut ls = sb.reborrow().init_listeners(s.listeners.len() as u32);
                    for (i, l) in s.listeners.iter().enumerate() {
                        let mut lb = ls.reborrow().get(i as u32);
                        lb.set_service(frame::clip(&l.service, MAX_VALUE));
                        lb.set_maxproc(l.maxproc);
                        set_params(lb.init_params(l.params.len() as u32), &l.params);
                    }
                    let mut ps = sb.init_passes(s.passes.len() as u32);
                    for (i, p) in s.passes.iter().enumerate() {
                        let mut pb = ps.reborrow().get(i as u32);
                        pb.set_service(frame::clip(&p.service, MAX_VALUE));
                        pb.set_maxproc(p.maxproc);
                        set_params(pb.init_params(p.params.len() as u32), &p.params);
                    }
                }
                ToDaemon::Peer {
                    request_id,
                    peer_role,
                    ..
                } => {
                    let mut p = root.init_peer();
                    p.set_request_id(*request_id);
                    p.set_peer_role(frame::clip(peer_role, MAX_ROLE));
                }
                ToDaemon::ConnectFailed { request_id, reason } => {
                    let mut c = root.init_connect_failed();
                    c.set_request_id(*request_id);
                    c.set_reason(frame::clip(reason, MAX_REASON));
                }
                ToDaemon::Shutdown => root.set_shutdown(()),
                ToDaemon::Ping(n) => root.set_ping(*n),
                ToDaemon::TableFile { request_id, file } => {
                    let mut t = root.init_table_file();
                    t.set_request_id(*request_id);
                    t.set_found(matches!(file, Ok(Some(_))));
                    if let Err(e) = file {
                        t.set_error(frame::clip(e, MAX_REASON));
                    }
                }
                ToDaemon::Reload(r) => {
                    let mut rb = root.init_reload();
                    set_params(rb.reborrow().init_params(r.params.len() as u32), &r.params);
                    let mut fs = rb.init_files(r.files.len() as u32);
                    for (i, f) in r.files.iter().enumerate() {
                        let mut fb = fs.reborrow().get(i as u32);
                        fb.set_path(frame::clip(&f.path, MAX_PATH));
                        if let Err(e) = &f.file {
                            // Never empty: an empty error means "opened".
                            let e = if e.is_empty() { "cannot open" } else { e };
                            fb.set_error(frame::clip(e, MAX_REASON));
                        }
                    }
                }
            }
        }
        frame::finish(&b)
    }

    fn fds(&self) -> Vec<BorrowedFd<'_>> {
        match self {
            ToDaemon::Setup(s) => s.listeners.iter().map(|l| l.fd.as_fd()).collect(),
            ToDaemon::Peer { fd, .. } => vec![fd.as_fd()],
            ToDaemon::TableFile {
                file: Ok(Some(fd)), ..
            } => vec![fd.as_fd()],
            ToDaemon::Reload(r) => r
                .files
                .iter()
                .filter_map(|f| f.file.as_ref().ok().map(AsFd::as_fd))
                .collect(),
            _ => Vec::new(),
        }
    }

    fn decode(f: &[u8], fds: Vec<OwnedFd>) -> Result<Self, Violation> {
        let r = frame::open(f, MAX_FRAME)?;
        let root = r.get_root::<to_daemon::Reader>()?;
        Ok(match root.which()? {
            to_daemon::Setup(s) => {
                let s = s?;
                if s.get_version() != VERSION {
                    return Err(Violation::Version {
                        got: s.get_version(),
                        want: VERSION,
                    });
                }
                let ls = s.get_listeners()?;
                let n = list_len(ls.len(), "setup.listeners", MAX_LISTENERS)?;
                if fds.len() != n {
                    return Err(Violation::FdCount {
                        got: fds.len(),
                        want: n,
                    });
                }
                let mut listeners = Vec::with_capacity(n);
                for (l, fd) in ls.iter().zip(fds) {
                    listeners.push(ListenerInfo {
                        service: text(l.get_service(), "listener.service", MAX_VALUE)?,
                        params: get_params(l.get_params(), "listener.params")?,
                        maxproc: l.get_maxproc(),
                        fd,
                    });
                }
                let ps = s.get_passes()?;
                let n = list_len(ps.len(), "setup.passes", MAX_LISTENERS)?;
                let mut passes = Vec::with_capacity(n);
                for p in ps.iter() {
                    passes.push(PassInfo {
                        service: text(p.get_service(), "pass.service", MAX_VALUE)?,
                        params: get_params(p.get_params(), "pass.params")?,
                        maxproc: p.get_maxproc(),
                    });
                }
                ToDaemon::Setup(Setup {
                    role: text(s.get_role(), "setup.role", MAX_ROLE)?,
                    params: get_params(s.get_params(), "setup.params")?,
                    listeners,
                    passes,
                })
            }
            to_daemon::Peer(p) => {
                let p = p?;
                let mut fds = fds;
                if fds.len() != 1 {
                    return Err(Violation::FdCount {
                        got: fds.len(),
                        want: 1,
                    });
                }
                ToDaemon::Peer {
                    request_id: p.get_request_id(),
                    peer_role: text(p.get_peer_role(), "peer.role", MAX_ROLE)?,
                    fd: fds.remove(0),
                }
            }
            to_daemon::ConnectFailed(c) => {
                no_fds(&fds)?;
                let c = c?;
                ToDaemon::ConnectFailed {
                    request_id: c.get_request_id(),
                    reason: text(c.get_reason(), "connectFailed.reason", MAX_REASON)?,
                }
            }
            to_daemon::Shutdown(()) => {
                no_fds(&fds)?;
                ToDaemon::Shutdown
            }
            to_daemon::Ping(n) => {
                no_fds(&fds)?;
                ToDaemon::Ping(n)
            }
            to_daemon::TableFile(t) => {
                let t = t?;
                let mut fds = fds;
                let error = text(t.get_error(), "tableFile.error", MAX_REASON)?;
                let file = if t.get_found() {
                    if fds.len() != 1 {
                        return Err(Violation::FdCount {
                            got: fds.len(),
                            want: 1,
                        });
                    }
                    Ok(Some(fds.remove(0)))
                } else {
                    no_fds(&fds)?;
                    if error.is_empty() {
                        Ok(None)
                    } else {
                        Err(error)
                    }
                };
                ToDaemon::TableFile {
                    request_id: t.get_request_id(),
                    file,
                }
            }
            to_daemon::Reload(r) => {
                let r = r?;
                let list = r.get_files()?;
                let n = list_len(list.len(), "reload.files", MAX_RELOAD_FILES)?;
                let mut entries = Vec::with_capacity(n);
                for f in list.iter() {
                    let path = text(f.get_path(), "reload.file.path", MAX_PATH)?;
                    let error = text(f.get_error(), "reload.file.error", MAX_REASON)?;
                    entries.push((path, error));
                }
                let want = entries.iter().filter(|(_, e)| e.is_empty()).count();
                if fds.len() != want {
                    return Err(Violation::FdCount {
                        got: fds.len(),
                        want,
                    });
                }
                let mut fds = fds.into_iter();
                let mut files = Vec::with_capacity(n);
                for (path, error) in entries {
                    let file = if error.is_empty() {
                        Ok(fds.next().ok_or(Violation::FdCount { got: 0, want })?)
                    } else {
                        Err(error)
                    };
                    files.push(OpenedFile { path, file });
                }
                ToDaemon::Reload(Reload {
                    params: get_params(r.get_params(), "reload.params")?,
                    files,
                })
            }
        })
    }
}

impl Message for FromDaemon {
    /// Nothing a daemon says to the master is large.
    const MAX_FRAME: usize = 8192;

    fn encode(&self) -> Vec<u8> {
        let mut b = frame::builder();
        {
            let mut root = b.init_root::<from_daemon::Builder>();
            match self {
                FromDaemon::Ready {
                    landlock,
                    landlock_abi,
                    netns,
                } => {
                    let mut r = root.init_ready();
                    r.set_landlock(frame::clip(landlock, MAX_ROLE));
                    r.set_landlock_abi(*landlock_abi);
                    r.set_netns(frame::clip(netns, MAX_ROLE));
                }
                FromDaemon::Connect {
                    request_id,
                    peer_role,
                } => {
                    let mut c = root.init_connect();
                    c.set_request_id(*request_id);
                    c.set_peer_role(frame::clip(peer_role, MAX_ROLE));
                }
                FromDaemon::Connections { opened, open } => {
                    let mut c = root.init_connections();
                    c.set_opened(*opened);
                    c.set_open(*open);
                }
                FromDaemon::Pong(n) => root.set_pong(*n),
                FromDaemon::OpenTable { request_id, path } => {
                    let mut o = root.init_open_table();
                    o.set_request_id(*request_id);
                    o.set_path(frame::clip(path, MAX_PATH));
                }
            }
        }
        frame::finish(&b)
    }

    fn decode(f: &[u8], fds: Vec<OwnedFd>) -> Result<Self, Violation> {
        // A daemon never sends descriptors to the master.
        no_fds(&fds)?;
        let r = frame::open(f, Self::MAX_FRAME)?;
        let root = r.get_root::<from_daemon::Reader>()?;
        Ok(match root.which()? {
            from_daemon::Ready(rd) => {
                let rd = rd?;
                let landlock = text(rd.get_landlock(), "ready.landlock", MAX_ROLE)?;
                let netns = text(rd.get_netns(), "ready.netns", MAX_ROLE)?;
                if !["fully_enforced", "partially_enforced", "not_enforced"]
                    .contains(&landlock.as_str())
                {
                    return Err(Violation::Field {
                        field: "ready.landlock",
                        why: format!("unknown state \"{landlock}\""),
                    });
                }
                if !["private", "shared"].contains(&netns.as_str()) {
                    return Err(Violation::Field {
                        field: "ready.netns",
                        why: format!("unknown state \"{netns}\""),
                    });
                }
                FromDaemon::Ready {
                    landlock,
                    landlock_abi: frame::range(
                        rd.get_landlock_abi().into(),
                        "ready.landlockAbi",
                        0,
                        1000,
                    )? as u32,
                    netns,
                }
            }
            from_daemon::Connect(c) => {
                let c = c?;
                FromDaemon::Connect {
                    request_id: frame::range(
                        c.get_request_id().into(),
                        "connect.requestId",
                        1,
                        u32::MAX.into(),
                    )? as u32,
                    peer_role: text(c.get_peer_role(), "connect.peerRole", MAX_ROLE)?,
                }
            }
            from_daemon::Connections(c) => {
                let c = c?;
                FromDaemon::Connections {
                    opened: c.get_opened(),
                    open: c.get_open(),
                }
            }
            from_daemon::Pong(n) => FromDaemon::Pong(n),
            from_daemon::OpenTable(o) => {
                let o = o?;
                let path = text(o.get_path(), "openTable.path", MAX_PATH)?;
                if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
                    return Err(Violation::Field {
                        field: "openTable.path",
                        why: "not an absolute, normalized path".into(),
                    });
                }
                FromDaemon::OpenTable {
                    request_id: o.get_request_id(),
                    path,
                }
            }
        })
    }
}
