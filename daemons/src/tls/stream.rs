//! A TCP connection that may turn into TLS (STARTTLS) or start as TLS
//! (port 465): one type for smtpd's and smtp's sessions.
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// What both ends' TLS streams offer.
pub trait TlsOverTcp: AsyncRead + AsyncWrite + Unpin {
    fn tcp(&self) -> &TcpStream;
    fn state(&self) -> &rustls::CommonState;
    /// The server name the client asked for (a server's stream only).
    fn sni(&self) -> Option<&str> {
        None
    }
}

impl TlsOverTcp for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
    fn state(&self) -> &rustls::CommonState {
        self.get_ref().1
    }
    fn sni(&self) -> Option<&str> {
        self.get_ref().1.server_name()
    }
}

impl TlsOverTcp for tokio_rustls::client::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
    fn state(&self) -> &rustls::CommonState {
        self.get_ref().1
    }
}

/// What the policy attributes `encryption_*` and `tls_sni` say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsInfo {
    pub protocol: &'static str,
    pub cipher: String,
    pub bits: u32,
    pub sni: String,
    /// The session was resumed (not a new one, for the TLS session rate).
    pub resumed: bool,
}

pub enum MaybeTls<T> {
    Plain(TcpStream),
    /// A Unix socket (LMTP to a local server): never TLS.
    Unix(tokio::net::UnixStream),
    Tls(Box<T>),
    /// Between handing the plain stream to a handshake and getting it back.
    Gone,
}

impl<T: TlsOverTcp> MaybeTls<T> {
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            MaybeTls::Plain(s) => Some(s),
            MaybeTls::Tls(t) => Some(t.tcp()),
            MaybeTls::Unix(_) | MaybeTls::Gone => None,
        }
    }

    /// The TLS session summary for logs and the Received header.
    pub fn tls_summary(&self) -> Option<String> {
        match self {
            MaybeTls::Tls(t) => Some(super::describe(t.state())),
            _ => None,
        }
    }

    /// Protocol, cipher suite, key bits and the client's SNI, once TLS
    /// is up.
    pub fn tls_info(&self) -> Option<TlsInfo> {
        match self {
            MaybeTls::Tls(t) => {
                let (protocol, cipher, bits) = super::parts(t.state());
                Some(TlsInfo {
                    protocol,
                    cipher,
                    bits,
                    sni: t.sni().unwrap_or("").to_string(),
                    resumed: t.state().handshake_kind() == Some(rustls::HandshakeKind::Resumed),
                })
            }
            _ => None,
        }
    }

    /// Counts an established session (postern_tls_sessions_total).
    pub fn count_tls(&self, direction: &str) {
        if let MaybeTls::Tls(t) = self {
            let (version, group) = super::labels(t.state());
            crate::metrics::inc(&crate::metrics::catalog::TLS, &[direction, version, &group]);
        }
    }

    /// The client's certificate chain, end entity first, if it sent one.
    pub fn peer_certificates(&self) -> Option<&[rustls::pki_types::CertificateDer<'static>]> {
        match self {
            MaybeTls::Tls(t) => t.state().peer_certificates(),
            _ => None,
        }
    }

    /// Takes the plain stream out for a handshake.
    pub fn take_plain(&mut self) -> Option<TcpStream> {
        match std::mem::replace(self, MaybeTls::Gone) {
            MaybeTls::Plain(s) => Some(s),
            other => {
                *self = other;
                None
            }
        }
    }
}

fn gone() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::NotConnected, "connection gone")
}

impl<T: TlsOverTcp> AsyncRead for MaybeTls<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Unix(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(t) => Pin::new(t.as_mut()).poll_read(cx, buf),
            MaybeTls::Gone => Poll::Ready(Err(gone())),
        }
    }
}

impl<T: TlsOverTcp> AsyncWrite for MaybeTls<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Unix(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(t) => Pin::new(t.as_mut()).poll_write(cx, buf),
            MaybeTls::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Unix(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(t) => Pin::new(t.as_mut()).poll_flush(cx),
            MaybeTls::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Unix(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(t) => Pin::new(t.as_mut()).poll_shutdown(cx),
            MaybeTls::Gone => Poll::Ready(Ok(())),
        }
    }
}
