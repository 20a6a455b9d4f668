//! Async channels over SEQPACKET sockets, with deadlines, and typed
//! endpoints so that the wrong message on the wrong edge does not compile.
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use postern_sandbox::fdpass;
use tokio::io::unix::AsyncFd;

use crate::frame::{self, HEADER, Violation};
use crate::generated::common_capnp;

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("peer closed the channel")]
    Closed,
    #[error("peer did not answer within {0:?}")]
    Timeout(Duration),
    #[error("protocol violation: {0}")]
    Violation(#[from] Violation),
    /// A frame arrived but the kernel could not install its descriptors:
    /// this process is out of descriptor slots (EMFILE). The frame is
    /// consumed and the channel stays in step; the caller treats that one
    /// message as a temporary failure.
    #[error("descriptors beside a frame were lost: this process has no free descriptor slot")]
    FdsLost,
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl ChannelError {
    /// True when the peer broke the protocol (as opposed to going away).
    pub fn is_violation(&self) -> bool {
        matches!(self, ChannelError::Violation(_))
    }
}

/// One end of a channel, with a receive buffer sized to the edge's limit
/// (allocated once, never from a peer's length claim).
pub struct Channel {
    fd: AsyncFd<OwnedFd>,
    buf: Vec<u8>,
    max_frame: usize,
    /// Deadline for an answer, and for a send to be accepted by the kernel.
    pub timeout: Duration,
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL).map_err(io::Error::from)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map_err(io::Error::from)?;
    Ok(())
}

impl Channel {
    /// Wraps a SEQPACKET socket. Must be called inside a tokio runtime.
    pub fn new(fd: OwnedFd, max_frame: usize, timeout: Duration) -> io::Result<Self> {
        set_nonblocking(&fd)?;
        Ok(Self {
            fd: postern_sandbox::sys::async_fd(fd)?,
            buf: vec![0u8; HEADER + max_frame + 1],
            max_frame,
            timeout,
        })
    }

    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.get_ref().as_fd()
    }

    /// Gives the socket back, out of the event loop (for a
    /// [`crate::blocking::BlockingClient`]).
    pub fn into_fd(self) -> OwnedFd {
        self.fd.into_inner()
    }

    /// Sends one frame with descriptors, waiting at most `timeout` for room.
    pub async fn send(&self, data: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), ChannelError> {
        let fut = async {
            loop {
                let mut guard = self.fd.writable().await?;
                match guard.try_io(|inner| fdpass::send(inner.get_ref().as_fd(), data, fds)) {
                    Ok(Ok(_)) => return Ok(()),
                    Ok(Err(e))
                        if e.kind() == io::ErrorKind::BrokenPipe
                            || e.raw_os_error() == Some(libc_econnreset()) =>
                    {
                        return Err(ChannelError::Closed);
                    }
                    Ok(Err(e)) => return Err(ChannelError::Io(e)),
                    Err(_would_block) => continue,
                }
            }
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| ChannelError::Timeout(self.timeout))?
    }

    /// Receives one frame, waiting as long as it takes (an idle server).
    pub async fn recv(&mut self) -> Result<(&[u8], Vec<OwnedFd>), ChannelError> {
        let (len, fds) = loop {
            let mut guard = self.fd.readable().await?;
            let buf = &mut self.buf;
            match guard.try_io(|inner| fdpass::recv(inner.get_ref().as_fd(), buf)) {
                Ok(Ok(r)) => {
                    if r.len == 0 {
                        return Err(ChannelError::Closed);
                    }
                    if r.truncated {
                        let claimed = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                        return Err(Violation::TooLarge {
                            len: claimed.max(self.max_frame + 1),
                            max: self.max_frame,
                        }
                        .into());
                    }
                    if r.fds_overflowed() {
                        return Err(Violation::FdTruncated.into());
                    }
                    if r.fds_lost() {
                        return Err(ChannelError::FdsLost);
                    }
                    break (r.len, r.fds);
                }
                Ok(Err(e)) if e.raw_os_error() == Some(libc_econnreset()) => {
                    return Err(ChannelError::Closed);
                }
                Ok(Err(e)) => return Err(ChannelError::Io(e)),
                Err(_would_block) => continue,
            }
        };
        Ok((&self.buf[..len], fds))
    }

    /// Receives one frame within `d`.
    pub async fn recv_within(
        &mut self,
        d: Duration,
    ) -> Result<(&[u8], Vec<OwnedFd>), ChannelError> {
        match tokio::time::timeout(d, self.recv()).await {
            Ok(r) => r,
            Err(_) => Err(ChannelError::Timeout(d)),
        }
    }

    /// Client side of the version handshake that opens every channel
    /// between two daemons.
    pub async fn hello_client(
        &mut self,
        edge: &'static str,
        version: u32,
    ) -> Result<(), ChannelError> {
        let mut b = frame::builder();
        {
            let mut h = b.init_root::<common_capnp::hello::Builder>();
            h.set_edge(edge);
            h.set_version(version);
        }
        self.send(&frame::finish(&b), &[]).await?;
        let max = self.max_frame;
        let timeout = self.timeout;
        let (f, fds) = self.recv_within(timeout).await?;
        no_fds(&fds)?;
        let r = frame::open(f, max)?;
        let reply = r
            .get_root::<common_capnp::hello_reply::Reader>()
            .map_err(Violation::from)?;
        if !reply.get_ok() {
            return Err(Violation::Version {
                got: reply.get_version(),
                want: version,
            }
            .into());
        }
        Ok(())
    }

    /// Server side of the handshake for a peer that may open any of several
    /// edges: returns the edge it chose.
    pub async fn hello_server_any(
        &mut self,
        edges: &[(&'static str, u32)],
    ) -> Result<&'static str, ChannelError> {
        let max = self.max_frame;
        let timeout = self.timeout;
        let (f, fds) = self.recv_within(timeout).await?;
        no_fds(&fds)?;
        let checked = (|| {
            let r = frame::open(f, max)?;
            let h = r.get_root::<common_capnp::hello::Reader>()?;
            let got_edge = frame::text(h.get_edge(), "hello.edge", 64)?;
            let Some(&(edge, version)) = edges.iter().find(|(e, _)| *e == got_edge) else {
                return Err(Violation::WrongEdge {
                    got: got_edge,
                    want: edges.first().map_or("", |e| e.0),
                });
            };
            if h.get_version() != version {
                return Err(Violation::Version {
                    got: h.get_version(),
                    want: version,
                });
            }
            Ok((edge, version))
        })();
        let mut b = frame::builder();
        {
            let mut r = b.init_root::<common_capnp::hello_reply::Builder>();
            r.set_ok(checked.is_ok());
            r.set_version(checked.as_ref().map_or(0, |c| c.1));
        }
        self.send(&frame::finish(&b), &[]).await?;
        checked.map(|c| c.0).map_err(ChannelError::from)
    }

    /// Server side of the handshake: the first frame must name this edge and
    /// version; anything else is refused (and answered, so the client can
    /// say why).
    pub async fn hello_server(
        &mut self,
        edge: &'static str,
        version: u32,
    ) -> Result<(), ChannelError> {
        self.hello_server_any(&[(edge, version)]).await.map(|_| ())
    }
}

fn libc_econnreset() -> i32 {
    nix::errno::Errno::ECONNRESET as i32
}

/// Refuses descriptors on a frame that must not carry any.
pub fn no_fds(fds: &[OwnedFd]) -> Result<(), Violation> {
    if fds.is_empty() {
        Ok(())
    } else {
        Err(Violation::FdCount {
            got: fds.len(),
            want: 0,
        })
    }
}

/// A message type of one edge, in one direction.
pub trait Message: Sized {
    /// Largest encoded frame (without the 4-byte header) this message may be.
    const MAX_FRAME: usize;
    fn encode(&self) -> Vec<u8>;
    /// Descriptors to send beside the frame.
    fn fds(&self) -> Vec<BorrowedFd<'_>> {
        Vec::new()
    }
    fn decode(frame: &[u8], fds: Vec<OwnedFd>) -> Result<Self, Violation>;
}

/// A typed end of a channel: sends `Tx`, receives `Rx`.
pub struct Endpoint<Tx, Rx> {
    ch: Channel,
    _p: PhantomData<fn(Tx) -> Rx>,
}

impl<Tx: Message, Rx: Message> Endpoint<Tx, Rx> {
    pub fn new(fd: OwnedFd, timeout: Duration) -> io::Result<Self> {
        Ok(Self::from_channel(Channel::new(
            fd,
            Rx::MAX_FRAME.max(256),
            timeout,
        )?))
    }

    pub fn from_channel(ch: Channel) -> Self {
        Self {
            ch,
            _p: PhantomData,
        }
    }

    pub fn channel(&mut self) -> &mut Channel {
        &mut self.ch
    }

    pub fn channel_ref(&self) -> &Channel {
        &self.ch
    }

    /// Bytes sent that the peer has not read yet.
    pub fn unread_by_peer(&self) -> io::Result<usize> {
        use std::os::fd::AsFd;
        postern_sandbox::sys::unread_by_peer(self.ch.fd.get_ref().as_fd())
    }

    pub fn into_channel(self) -> Channel {
        self.ch
    }

    pub async fn send(&self, m: &Tx) -> Result<(), ChannelError> {
        let f = m.encode();
        debug_assert!(
            f.len() - HEADER <= Tx::MAX_FRAME,
            "encoder exceeded its own limit"
        );
        self.ch.send(&f, &m.fds()).await
    }

    /// Waits for the next message with no deadline.
    pub async fn recv(&mut self) -> Result<Rx, ChannelError> {
        let (f, fds) = self.ch.recv().await?;
        Ok(Rx::decode(f, fds)?)
    }

    pub async fn recv_within(&mut self, d: Duration) -> Result<Rx, ChannelError> {
        let (f, fds) = self.ch.recv_within(d).await?;
        Ok(Rx::decode(f, fds)?)
    }

    /// Sends a request and waits for the answer within the channel deadline.
    pub async fn call(&mut self, m: &Tx) -> Result<Rx, ChannelError> {
        self.send(m).await?;
        let d = self.ch.timeout;
        self.recv_within(d).await
    }
}
