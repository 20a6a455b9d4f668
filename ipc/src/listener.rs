//! Pathname SEQPACKET sockets for client-reachable endpoints (the control
//! socket), with the peer's credentials from SO_PEERCRED.
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, UnixAddr, accept4, bind, connect, getsockopt,
    listen, socket, sockopt,
};
use tokio::io::unix::AsyncFd;

/// Who is on the other end of an accepted connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

pub struct SeqpacketListener {
    fd: AsyncFd<OwnedFd>,
}

impl SeqpacketListener {
    /// Binds `path` (replacing a stale socket) with permissions `mode`.
    pub fn bind(path: &Path, mode: u32) -> io::Result<Self> {
        Self::from_fd(bind_raw(path, mode)?)
    }

    /// Wraps a listening socket bound elsewhere (the master binds the
    /// public pickup socket and hands it over).
    pub fn from_fd(fd: OwnedFd) -> io::Result<Self> {
        use nix::fcntl::{FcntlArg, OFlag, fcntl};
        let flags =
            OFlag::from_bits_truncate(fcntl(&fd, FcntlArg::F_GETFL).map_err(io::Error::from)?);
        fcntl(&fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map_err(io::Error::from)?;
        Ok(Self {
            fd: postern_sandbox::sys::async_fd(fd)?,
        })
    }

    pub async fn accept(&self) -> io::Result<(OwnedFd, PeerCred)> {
        loop {
            let mut guard = self.fd.readable().await?;
            let r = guard.try_io(|inner| {
                accept4(
                    inner.get_ref(),
                    SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
                )
                .map_err(io::Error::from)
            });
            match r {
                Ok(Ok(fd)) => {
                    let fd = own(fd);
                    let c = getsockopt(&fd.as_fd(), sockopt::PeerCredentials)?;
                    return Ok((
                        fd,
                        PeerCred {
                            pid: c.pid(),
                            uid: c.uid(),
                            gid: c.gid(),
                        },
                    ));
                }
                Ok(Err(e))
                    if e.raw_os_error() == Some(nix::errno::Errno::EINTR as i32)
                        || e.raw_os_error() == Some(nix::errno::Errno::ECONNABORTED as i32) =>
                {
                    continue;
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

/// Binds and listens on a SEQPACKET socket at `path` (replacing a stale
/// socket) with permissions `mode`; needs no event loop.
pub fn bind_raw(path: &Path, mode: u32) -> io::Result<OwnedFd> {
    use std::os::unix::fs::PermissionsExt;
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let addr = UnixAddr::new(path)?;
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    listen(&fd, Backlog::new(128).map_err(io::Error::from)?)?;
    Ok(fd)
}

#[inline]
fn own<T: Into<OwnedFd>>(fd: T) -> OwnedFd {
    fd.into()
}

/// Connects to a SEQPACKET socket at `path`; the result is nonblocking.
pub fn connect_path(path: &Path) -> io::Result<OwnedFd> {
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let addr = UnixAddr::new(path)?;
    connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr)?;
    Ok(fd)
}
