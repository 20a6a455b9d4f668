//! Frames with descriptors beside them, over SOCK_SEQPACKET Unix sockets.
//!
//! SEQPACKET keeps message boundaries, so descriptors always arrive with the
//! frame they were sent with, and an oversize frame is reported as truncated
//! instead of running into the next one.
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};

/// At most this many descriptors travel with one frame.
pub const MAX_FDS_PER_FRAME: usize = 16;

/// A connected pair of nonblocking, close-on-exec SEQPACKET sockets.
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )
    .map_err(io::Error::from)
}

/// Sends one frame. Never raises SIGPIPE; a closed peer is EPIPE.
pub fn send(sock: BorrowedFd<'_>, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
    if fds.len() > MAX_FDS_PER_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many descriptors",
        ));
    }
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage] = if raw.is_empty() { &[] } else { &cmsg };
    sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(data)],
        cmsgs,
        MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
        None,
    )
    .map_err(io::Error::from)
}

/// One received frame.
#[derive(Debug)]
pub struct Received {
    /// Bytes placed in the buffer; 0 means the peer closed the channel.
    pub len: usize,
    /// The frame was longer than the buffer (MSG_TRUNC): a violation.
    pub truncated: bool,
    /// Descriptors were dropped by the kernel (MSG_CTRUNC). With fewer than
    /// [`MAX_FDS_PER_FRAME`] received, this process ran out of descriptor
    /// slots (EMFILE while the kernel installed them): a local shortage,
    /// not the peer's fault. With the buffer full, the peer sent more than
    /// any frame may carry: a violation. See [`Received::fds_overflowed`].
    pub fds_truncated: bool,
    /// Received descriptors, owned (and closed on drop) even on a violation.
    pub fds: Vec<OwnedFd>,
}

impl Received {
    /// The peer sent more descriptors than a frame may carry.
    pub fn fds_overflowed(&self) -> bool {
        self.fds_truncated && self.fds.len() >= MAX_FDS_PER_FRAME
    }

    /// Descriptors were lost because this process had no free slot.
    pub fn fds_lost(&self) -> bool {
        self.fds_truncated && self.fds.len() < MAX_FDS_PER_FRAME
    }
}

/// Receives one frame into `buf` without blocking (EAGAIN when none is ready).
pub fn recv(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Received> {
    let mut cmsg_buf = nix::cmsg_space!([RawFd; MAX_FDS_PER_FRAME]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg_buf),
        MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?;
    let mut fds = Vec::new();
    let fds_truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmRights(raw) = c {
                fds.extend(crate::sys::own_received_fds(&raw));
            }
        }
    }
    Ok(Received {
        len: msg.bytes,
        truncated: msg.flags.contains(MsgFlags::MSG_TRUNC),
        fds_truncated,
        fds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsFd;

    #[test]
    fn fd_round_trip_and_truncation() {
        let (a, b) = seqpacket_pair().unwrap();
        let mut file = tempfile_in_tmp();
        file.write_all(b"hello").unwrap();
        send(a.as_fd(), b"frame-one", &[file.as_fd()]).unwrap();
        let mut buf = [0u8; 64];
        let got = recv(b.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..got.len], b"frame-one");
        assert_eq!(got.fds.len(), 1);
        let mut passed = std::fs::File::from(got.fds.into_iter().next().unwrap());
        passed.rewind().unwrap();
        let mut s = String::new();
        passed.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello");

        send(a.as_fd(), &[7u8; 100], &[]).unwrap();
        let mut small = [0u8; 10];
        let got = recv(b.as_fd(), &mut small).unwrap();
        assert!(got.truncated);

        drop(a);
        let got = recv(b.as_fd(), &mut buf).unwrap();
        assert_eq!(got.len, 0, "EOF after the peer closed");
    }

    fn tempfile_in_tmp() -> std::fs::File {
        let path = std::env::temp_dir().join(format!("postern-fdpass-{}", std::process::id()));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    }
}
