//! Buffered SMTP I/O with a deadline on every read and write, and bounded
//! buffers: a client can never make smtpd hold more than a line, a chunk,
//! and the replies to one pipelined batch.
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;

/// The client's connection: plain until STARTTLS (or from the first byte
/// on a wrapper-mode port), then TLS.
pub type Stream = crate::tls::stream::MaybeTls<TlsStream<TcpStream>>;

#[derive(Debug)]
pub enum ConnError {
    Timeout,
    Closed,
    Io,
}

pub enum Line {
    /// A command line without its line ending.
    Command(Vec<u8>),
    /// The line exceeded the limit; it was read to its end and discarded.
    TooLong,
    /// A line ended in a bare LF and bare LFs are refused.
    BareLf,
}

pub struct Conn {
    pub stream: Stream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    pub out: Vec<u8>,
    pub timeout: Duration,
    /// Replies queued since the last flush (the pipelining cap).
    pub pending_replies: usize,
    /// smtpd_per_request_deadline: `timeout` bounds a whole request (a
    /// command line, or a message's content), not each read, so a client
    /// that sends one byte at a time cannot hold a session forever.
    pub per_request: bool,
    /// smtpd_min_data_rate: bytes per second of content that each extend
    /// the deadline by a second (0: no extension).
    pub min_data_rate: u64,
    deadline: Option<Instant>,
    data_credit: bool,
    /// The words for the signature our handshake made (full handshakes
    /// only), until the TLS line takes them.
    pub signature: Option<String>,
}

const READ_CHUNK: usize = 16 * 1024;

impl Conn {
    pub fn new(stream: TcpStream, timeout: Duration) -> Conn {
        Conn {
            stream: Stream::Plain(stream),
            buf: Vec::new(),
            start: 0,
            end: 0,
            out: Vec::new(),
            timeout,
            pending_replies: 0,
            per_request: false,
            min_data_rate: 0,
            deadline: None,
            data_credit: false,
            signature: None,
        }
    }

    /// A new request starts (a command, or content after DATA/BDAT): with
    /// per-request deadlines, its time starts now. `data`: content, whose
    /// deadline grows with every `min_data_rate` bytes received.
    pub fn begin_request(&mut self, data: bool) {
        if self.per_request {
            self.deadline = Some(Instant::now() + self.timeout);
            self.data_credit = data;
        }
    }

    /// How long the next read may wait.
    fn read_timeout(&self) -> Duration {
        match self.deadline {
            Some(d) => d
                .saturating_duration_since(Instant::now())
                .min(self.timeout),
            None => self.timeout,
        }
    }

    /// Bytes received but not consumed yet.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            // An idle session keeps no large buffer around.
            if self.buf.len() > READ_CHUNK {
                self.buf = Vec::new();
            }
        }
    }

    /// Reads more bytes from the client (flushing queued replies first,
    /// since the client may be waiting for them).
    pub async fn fill(&mut self) -> Result<(), ConnError> {
        if !self.out.is_empty() {
            self.flush().await?;
        }
        if self.start > 0 && self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.start > 0 && self.buf.len() - self.end < READ_CHUNK {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() < self.end + READ_CHUNK {
            self.buf.resize(self.end + READ_CHUNK, 0);
        }
        let end = self.end;
        let n = tokio::time::timeout(self.read_timeout(), self.stream.read(&mut self.buf[end..]))
            .await
            .map_err(|_| ConnError::Timeout)?
            .map_err(|_| ConnError::Io)?;
        if n == 0 {
            return Err(ConnError::Closed);
        }
        if self.data_credit
            && self.min_data_rate > 0
            && let Some(d) = self.deadline.as_mut()
        {
            *d += Duration::from_secs_f64(n as f64 / self.min_data_rate as f64);
        }
        self.end += n;
        Ok(())
    }

    /// True when a whole line is already buffered (the client pipelined).
    pub fn has_line(&self) -> bool {
        self.buffered().contains(&b'\n')
    }

    /// The next command line. `bare_lf_ok`: a bare LF ends a line.
    pub async fn read_line(&mut self, limit: usize, bare_lf_ok: bool) -> Result<Line, ConnError> {
        let mut discarding = false;
        loop {
            if let Some(pos) = self.buffered().iter().position(|&b| b == b'\n') {
                let line = &self.buffered()[..pos];
                let (body, bare) = match line.strip_suffix(b"\r") {
                    Some(b) => (b.to_vec(), false),
                    None => (line.to_vec(), true),
                };
                self.consume(pos + 1);
                if discarding || body.len() > limit {
                    return Ok(Line::TooLong);
                }
                if bare && !bare_lf_ok {
                    return Ok(Line::BareLf);
                }
                return Ok(Line::Command(body));
            }
            if self.buffered().len() > limit {
                // Keep nothing of an overlong line but the fact.
                discarding = true;
                let n = self.buffered().len();
                self.consume(n);
            }
            self.fill().await?;
        }
    }

    pub fn queue(&mut self, text: &str) {
        self.out.extend_from_slice(text.as_bytes());
        self.pending_replies += 1;
    }

    pub async fn flush(&mut self) -> Result<(), ConnError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let r = tokio::time::timeout(self.timeout, async {
            self.stream.write_all(&self.out).await?;
            self.stream.flush().await
        })
        .await;
        self.out.clear();
        self.pending_replies = 0;
        match r {
            Err(_) => Err(ConnError::Timeout),
            Ok(Err(_)) => Err(ConnError::Io),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Starts TLS: whatever the client sent after STARTTLS, before the
    /// handshake, is thrown away unread (the STARTTLS command-injection
    /// class); returns how many bytes that was.
    pub async fn start_tls(
        &mut self,
        setup: &super::tlsconf::ServerTls,
        timeout: Duration,
    ) -> Result<usize, String> {
        self.flush().await.map_err(|e| format!("{e:?}"))?;
        let discarded = self.buffered().len();
        self.consume(discarded);
        let Some(tcp) = self.stream.take_plain() else {
            return Err("TLS already active".into());
        };
        // Our key's signer notes the signature it makes for this task.
        let signature = std::rc::Rc::new(std::cell::RefCell::new(None));
        // The ClientHello first: it says whether the client asks for a
        // raw public key.
        let raw = std::cell::Cell::new(false);
        let handshake = async {
            let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp).await?;
            let (config, is_raw) = setup.for_hello(&start.client_hello());
            raw.set(is_raw);
            start.into_stream(config).await
        };
        let handshake = crate::tls::remote::SERVER_SIGNATURE
            .scope(signature.clone(), tokio::time::timeout(timeout, handshake));
        match handshake.await {
            Ok(Ok(tls)) => {
                self.stream = Stream::Tls(Box::new(tls));
                self.signature = signature
                    .borrow_mut()
                    .take()
                    .map(|(kind, scheme)| crate::tls::signature_text(kind, scheme, raw.get()));
                Ok(discarded)
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timeout".into()),
        }
    }

    /// Has the client closed its side? Looks at the socket without reading
    /// (for the hang-up check before the final commit).
    pub fn peer_hung_up(&self) -> bool {
        use nix::sys::socket::{MsgFlags, recv};
        use std::os::fd::AsRawFd;
        if !self.buffered().is_empty() {
            return false;
        }
        let Some(tcp) = self.stream.tcp() else {
            return true;
        };
        let mut b = [0u8; 1];
        matches!(
            recv(
                tcp.as_raw_fd(),
                &mut b,
                MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT
            ),
            Ok(0)
        ) || matches!(
            recv(
                tcp.as_raw_fd(),
                &mut b,
                MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT
            ),
            Err(nix::errno::Errno::ECONNRESET)
        )
    }
}
