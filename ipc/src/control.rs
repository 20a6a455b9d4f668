//! The control socket between `postern` commands and the master
//! (schema: control.capnp). Client-reachable: a violation drops only that
//! connection.
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::channel::{Message, no_fds};
use crate::frame::{self, Violation, list_len, text};
use crate::generated::control_capnp::{reply, request};

pub const VERSION: u32 = crate::generated::control_capnp::VERSION;
pub const MAX_REQUEST: usize = 4096;
pub const MAX_REPLY: usize = 96 * 1024;
pub const MAX_TEXT: usize = 8192;
pub const MAX_PROCESSES: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Status,
    Stop,
    /// Reload one service (role), or every one when empty.
    Reload(String),
    /// A channel to the queue manager (queue listing and operations).
    Queue,
    /// A channel to the broker for table lookups (`postern map query`
    /// through the running system), speaking proxymap.capnp.
    Tables,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    pub role: String,
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    pub no_new_privs: bool,
    pub seccomp: u32,
    pub cap_eff: String,
    pub landlock: String,
    pub netns: String,
    pub state: String,
    pub restarts: u32,
    /// The soft descriptor limit the process runs with.
    pub nofile: u64,
}

#[derive(Debug)]
pub enum Reply {
    Ok(String),
    Error(String),
    Status(Vec<ProcessInfo>),
    Channel(OwnedFd),
}

impl Message for Request {
    const MAX_FRAME: usize = MAX_REQUEST;

    fn encode(&self) -> Vec<u8> {
        let mut b = frame::builder();
        {
            let mut r = b.init_root::<request::Builder>();
            r.set_version(VERSION);
            match self {
                Request::Status => r.set_status(()),
                Request::Stop => r.set_stop(()),
                Request::Reload(s) => r.set_reload(frame::clip(s, 64)),
                Request::Queue => r.set_queue(()),
                Request::Tables => r.set_tables(()),
            }
        }
        frame::finish(&b)
    }

    fn decode(f: &[u8], fds: Vec<OwnedFd>) -> Result<Self, Violation> {
        no_fds(&fds)?;
        let r = frame::open(f, MAX_REQUEST)?;
        let root = r.get_root::<request::Reader>()?;
        if root.get_version() != VERSION {
            return Err(Violation::Version {
                got: root.get_version(),
                want: VERSION,
            });
        }
        Ok(match root.which()? {
            request::Status(()) => Request::Status,
            request::Stop(()) => Request::Stop,
            request::Reload(s) => Request::Reload(text(s, "reload", 64)?),
            request::Queue(()) => Request::Queue,
            request::Tables(()) => Request::Tables,
        })
    }
}

impl Message for Reply {
    const MAX_FRAME: usize = MAX_REPLY;

    fn encode(&self) -> Vec<u8> {
        let mut b = frame::builder();
        {
            let mut r = b.init_root::<reply::Builder>();
            match self {
                Reply::Ok(s) => r.set_ok(frame::clip(s, MAX_TEXT)),
                Reply::Error(s) => r.set_error(frame::clip(s, MAX_TEXT)),
                Reply::Channel(_) => r.set_channel(()),
                Reply::Status(list) => {
                    let n = list.len().min(MAX_PROCESSES);
                    let mut l = r.init_status(n as u32);
                    for (i, p) in list.iter().take(n).enumerate() {
                        let mut b = l.reborrow().get(i as u32);
                        b.set_role(frame::clip(&p.role, 32));
                        b.set_pid(p.pid);
                        b.set_uid(p.uid);
                        b.set_gid(p.gid);
                        b.set_no_new_privs(p.no_new_privs);
                        b.set_seccomp(p.seccomp);
                        b.set_cap_eff(frame::clip(&p.cap_eff, 32));
                        b.set_landlock(frame::clip(&p.landlock, 32));
                        b.set_netns(frame::clip(&p.netns, 32));
                        b.set_state(frame::clip(&p.state, 32));
                        b.set_restarts(p.restarts);
                        b.set_nofile(p.nofile);
                    }
                }
            }
        }
        frame::finish(&b)
    }

    fn fds(&self) -> Vec<BorrowedFd<'_>> {
        match self {
            Reply::Channel(fd) => vec![fd.as_fd()],
            _ => Vec::new(),
        }
    }

    fn decode(f: &[u8], mut fds: Vec<OwnedFd>) -> Result<Self, Violation> {
        let r = frame::open(f, MAX_REPLY)?;
        let root = r.get_root::<reply::Reader>()?;
        let which = root.which()?;
        if !matches!(which, reply::Channel(())) {
            no_fds(&fds)?;
        }
        Ok(match which {
            reply::Channel(()) => {
                if fds.len() != 1 {
                    return Err(Violation::FdCount {
                        got: fds.len(),
                        want: 1,
                    });
                }
                Reply::Channel(fds.remove(0))
            }
            reply::Ok(s) => Reply::Ok(text(s, "ok", MAX_TEXT)?),
            reply::Error(s) => Reply::Error(text(s, "error", MAX_TEXT)?),
            reply::Status(l) => {
                let l = l?;
                list_len(l.len(), "status", MAX_PROCESSES)?;
                let mut out = Vec::with_capacity(l.len() as usize);
                for p in l.iter() {
                    out.push(ProcessInfo {
                        role: text(p.get_role(), "status.role", 32)?,
                        pid: p.get_pid(),
                        uid: p.get_uid(),
                        gid: p.get_gid(),
                        no_new_privs: p.get_no_new_privs(),
                        seccomp: frame::range(p.get_seccomp().into(), "status.seccomp", 0, 2)?
                            as u32,
                        cap_eff: text(p.get_cap_eff(), "status.capEff", 32)?,
                        landlock: text(p.get_landlock(), "status.landlock", 32)?,
                        netns: text(p.get_netns(), "status.netns", 32)?,
                        state: text(p.get_state(), "status.state", 32)?,
                        restarts: p.get_restarts(),
                        nofile: p.get_nofile(),
                    });
                }
                Reply::Status(out)
            }
        })
    }
}
