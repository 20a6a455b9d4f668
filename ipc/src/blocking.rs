//! A synchronous client, for the few callers that must wait for an answer
//! outside the event loop: rustls asks its signing key and its ticketer
//! synchronously, in the middle of a handshake, so the request to the
//! broker cannot be awaited. Same frames, limits and checks as [`Endpoint`],
//! with a deadline on the whole call.
//!
//! [`Endpoint`]: crate::Endpoint
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use postern_sandbox::fdpass;

use crate::channel::{ChannelError, Message};
use crate::frame::{HEADER, Violation};

pub struct BlockingClient<Tx, Rx> {
    fd: OwnedFd,
    buf: Vec<u8>,
    timeout: Duration,
    _p: PhantomData<fn(Tx) -> Rx>,
}

impl<Tx: Message, Rx: Message> BlockingClient<Tx, Rx> {
    /// Takes a connected, nonblocking SEQPACKET socket whose handshake is
    /// done (see [`crate::Channel::into_fd`]).
    pub fn new(fd: OwnedFd, timeout: Duration) -> Self {
        Self {
            fd,
            buf: vec![0u8; HEADER + Rx::MAX_FRAME + 1],
            timeout,
            _p: PhantomData,
        }
    }

    /// Waits for `flags` until `deadline`.
    fn wait(&self, flags: PollFlags, deadline: Instant) -> Result<(), ChannelError> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ChannelError::Timeout(self.timeout));
            }
            let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
            let mut pfd = [PollFd::new(self.fd.as_fd(), flags)];
            match poll(&mut pfd, PollTimeout::from(ms)) {
                Ok(0) => continue,
                Ok(_) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(ChannelError::Io(e.into())),
            }
        }
    }

    /// Sends a request and waits for its answer, all within the deadline.
    pub fn call(&mut self, m: &Tx) -> Result<Rx, ChannelError> {
        let deadline = Instant::now() + self.timeout;
        let frame = m.encode();
        let fds = m.fds();
        loop {
            match fdpass::send(self.fd.as_fd(), &frame, &fds) {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.wait(PollFlags::POLLOUT, deadline)?
                }
                Err(e) => return Err(closed_or_io(e)),
            }
        }
        loop {
            match fdpass::recv(self.fd.as_fd(), &mut self.buf) {
                Ok(r) if r.len == 0 => return Err(ChannelError::Closed),
                Ok(r) if r.truncated => {
                    return Err(Violation::TooLarge {
                        len: Rx::MAX_FRAME + 1,
                        max: Rx::MAX_FRAME,
                    }
                    .into());
                }
                Ok(r) if r.fds_overflowed() => return Err(Violation::FdTruncated.into()),
                Ok(r) if r.fds_lost() => return Err(ChannelError::FdsLost),
                Ok(r) => return Ok(Rx::decode(&self.buf[..r.len], r.fds)?),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.wait(PollFlags::POLLIN, deadline)?
                }
                Err(e) => return Err(closed_or_io(e)),
            }
        }
    }
}

fn closed_or_io(e: io::Error) -> ChannelError {
    if e.kind() == io::ErrorKind::BrokenPipe
        || e.raw_os_error() == Some(nix::errno::Errno::ECONNRESET as i32)
    {
        ChannelError::Closed
    } else {
        ChannelError::Io(e)
    }
}
