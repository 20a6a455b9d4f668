//! One outbound SMTP session.
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The connection: plain, or TLS after STARTTLS.
type Stream = crate::tls::stream::MaybeTls<tokio_rustls::client::TlsStream<TcpStream>>;

use postern_proto::smtp::reply::{MAX_REPLY_LINE, ReplyParser};

#[derive(Debug, Clone)]
pub struct Timeouts {
    pub connect: Duration,
    pub helo: Duration,
    pub mail: Duration,
    pub rcpt: Duration,
    pub data_init: Duration,
    pub data_xfer: Duration,
    pub data_done: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpReply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl SmtpReply {
    /// The reply as one line, the way Postfix quotes it in logs and DSNs.
    pub fn text(&self) -> String {
        format!("{} {}", self.code, self.lines.join(" "))
    }

    /// The enhanced status code, or one derived from the reply code.
    pub fn dsn(&self) -> String {
        let first = self.lines.first().map_or("", String::as_str);
        let cand = first.split(' ').next().unwrap_or("");
        let ok = cand.split('.').count() == 3
            && cand
                .split('.')
                .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|c| c.is_ascii_digit()))
            && cand.starts_with(char::from(b'0' + (self.code / 100) as u8));
        if ok {
            cand.to_string()
        } else {
            format!("{}.0.0", self.code / 100)
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct Extensions {
    pub pipelining: bool,
    pub size: Option<u64>,
    pub eightbitmime: bool,
    pub smtputf8: bool,
    pub dsn: bool,
    pub chunking: bool,
    pub starttls: bool,
    /// REQUIRETLS (RFC 8689), as offered inside TLS.
    pub requiretls: bool,
    /// AUTH mechanisms offered, upper case.
    pub auth: Vec<String>,
}

/// Why a session step failed.
#[derive(Debug, Clone)]
pub enum Failure {
    /// The server said something final for this step (or 421).
    Reply(SmtpReply, &'static str),
    Timeout(&'static str),
    Lost(&'static str),
    /// TLS failed (the connection is gone); the text says why.
    Tls(String),
}

pub struct Session {
    io: BufReader<Stream>,
    /// The TLS session summary, once STARTTLS succeeded.
    pub tls: Option<String>,
    pub host: String,
    pub addr: SocketAddr,
    /// Our end's address (TCP only), for TLS-RPT's sending-mta-ip.
    pub local: Option<std::net::IpAddr>,
    /// The server's address as logs show it: an IP address, or the path
    /// of a Unix socket.
    pub peer: String,
    /// An LMTP session (RFC 2033): LHLO, and one reply per recipient
    /// after the content.
    pub lmtp: bool,
    pub ext: Extensions,
    /// The name the server gave in its EHLO reply.
    pub remote_name: String,
    pub started: Instant,
    pub messages: u32,
    /// The TLS level this session was made under, as the `tls=` field of
    /// delivery lines says it (`may`, `may:none`, `dane`,
    /// `dane:halfdane`, `verify`...); empty for LMTP over a Unix socket.
    pub features: String,
    /// The server's certificate was matched (verified, pinned or DANE).
    pub matched: bool,
}

impl Session {
    pub fn relay(&self) -> String {
        match self.io.get_ref() {
            Stream::Unix(_) => format!("{}[{}]", self.host, self.peer),
            _ => format!("{}[{}]:{}", self.host, self.peer, self.addr.port()),
        }
    }

    pub fn is_unix(&self) -> bool {
        matches!(self.io.get_ref(), Stream::Unix(_))
    }

    /// A session over a Unix socket the master connected for us.
    pub fn from_unix(host: &str, path: &str, fd: std::os::fd::OwnedFd) -> Result<Session, String> {
        let std = std::os::unix::net::UnixStream::from(fd);
        std.set_nonblocking(true)
            .map_err(|e| format!("connect to {host}[{path}]: {e}"))?;
        let stream = tokio::net::UnixStream::from_std(std)
            .map_err(|e| format!("connect to {host}[{path}]: {e}"))?;
        Ok(Session {
            io: BufReader::new(Stream::Unix(stream)),
            tls: None,
            host: host.to_string(),
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            local: None,
            peer: path.to_string(),
            lmtp: true,
            ext: Extensions::default(),
            remote_name: String::new(),
            started: Instant::now(),
            messages: 0,
            features: String::new(),
            matched: false,
        })
    }

    pub async fn connect(
        host: &str,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<Session, String> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return Err(format!(
                    "connect to {host}[{}]:{}: {}",
                    addr.ip(),
                    addr.port(),
                    reason(&e)
                ));
            }
            Err(_) => {
                return Err(format!(
                    "connect to {host}[{}]:{}: Connection timed out",
                    addr.ip(),
                    addr.port()
                ));
            }
        };
        let _ = stream.set_nodelay(true);
        Ok(Session {
            local: stream.local_addr().ok().map(|a| a.ip()),
            io: BufReader::new(Stream::Plain(stream)),
            tls: None,
            host: host.to_string(),
            addr,
            peer: addr.ip().to_string(),
            lmtp: false,
            ext: Extensions::default(),
            remote_name: String::new(),
            started: Instant::now(),
            messages: 0,
            features: String::new(),
            matched: false,
        })
    }

    pub async fn read_reply(
        &mut self,
        timeout: Duration,
        step: &'static str,
    ) -> Result<SmtpReply, Failure> {
        let fut = async {
            let mut parser = ReplyParser::default();
            loop {
                let mut line = Vec::new();
                let n = (&mut self.io)
                    .take(MAX_REPLY_LINE as u64)
                    .read_until(b'\n', &mut line)
                    .await
                    .map_err(|_| Failure::Lost(step))?;
                if n == 0 {
                    return Err(Failure::Lost(step));
                }
                match parser.line(&line) {
                    Ok(Some((code, lines))) => return Ok(SmtpReply { code, lines }),
                    Ok(None) => {}
                    Err(_) => return Err(Failure::Lost(step)),
                }
            }
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| Failure::Timeout(step))?
    }

    pub async fn write(
        &mut self,
        data: &[u8],
        timeout: Duration,
        step: &'static str,
    ) -> Result<(), Failure> {
        let fut = async {
            self.io.get_mut().write_all(data).await?;
            self.io.get_mut().flush().await
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Failure::Lost(step)),
            Err(_) => Err(Failure::Timeout(step)),
        }
    }

    /// Greeting and EHLO (HELO when EHLO is refused).
    pub async fn handshake(&mut self, helo_name: &str, t: &Timeouts) -> Result<(), Failure> {
        let greeting = self.read_reply(t.helo, "initial server greeting").await?;
        if greeting.code != 220 {
            return Err(Failure::Reply(greeting, "initial server greeting"));
        }
        self.ehlo(helo_name, t).await
    }

    /// EHLO (LHLO for LMTP), and what it offers (HELO when EHLO is
    /// refused; LMTP has no such fallback).
    pub async fn ehlo(&mut self, helo_name: &str, t: &Timeouts) -> Result<(), Failure> {
        self.ext = Extensions::default();
        let verb = if self.lmtp { "LHLO" } else { "EHLO" };
        self.write(format!("{verb} {helo_name}\r\n").as_bytes(), t.helo, verb)
            .await?;
        let r = self.read_reply(t.helo, verb).await?;
        if r.code == 250 {
            self.remote_name = r
                .lines
                .first()
                .and_then(|l| l.split(' ').next())
                .unwrap_or("")
                .to_string();
            for l in &r.lines[1..] {
                let mut it = l.split(' ');
                match it.next().unwrap_or("").to_ascii_uppercase().as_str() {
                    "PIPELINING" => self.ext.pipelining = true,
                    "SIZE" => {
                        self.ext.size = it.next().and_then(|v| v.parse().ok()).filter(|&v| v > 0)
                    }
                    "8BITMIME" => self.ext.eightbitmime = true,
                    "SMTPUTF8" => self.ext.smtputf8 = true,
                    "DSN" => self.ext.dsn = true,
                    "CHUNKING" => self.ext.chunking = true,
                    "STARTTLS" => self.ext.starttls = true,
                    "REQUIRETLS" => self.ext.requiretls = true,
                    "AUTH" => {
                        self.ext.auth = it.map(str::to_ascii_uppercase).collect();
                    }
                    _ => {}
                }
            }
            return Ok(());
        }
        if r.code == 421 || self.lmtp {
            return Err(Failure::Reply(r, verb));
        }
        self.write(format!("HELO {helo_name}\r\n").as_bytes(), t.helo, "HELO")
            .await?;
        let r = self.read_reply(t.helo, "HELO").await?;
        if r.code != 250 {
            return Err(Failure::Reply(r, "HELO"));
        }
        self.remote_name = r
            .lines
            .first()
            .and_then(|l| l.split(' ').next())
            .unwrap_or("")
            .to_string();
        Ok(())
    }

    /// STARTTLS (RFC 3207), then EHLO again inside TLS. Err(Reply) when
    /// the server refused to start (the session goes on in plaintext);
    /// Err(Tls) when the handshake failed (the connection is gone).
    pub async fn starttls(
        &mut self,
        connector: &tokio_rustls::TlsConnector,
        name: rustls::pki_types::ServerName<'static>,
        helo_name: &str,
        t: &Timeouts,
        timeout: Duration,
    ) -> Result<(), Failure> {
        self.write(b"STARTTLS\r\n", t.helo, "STARTTLS").await?;
        let r = self.read_reply(t.helo, "STARTTLS").await?;
        if r.code != 220 {
            return Err(Failure::Reply(r, "STARTTLS"));
        }
        // Nothing may come between the 220 and the handshake.
        if !self.io.buffer().is_empty() {
            return Err(Failure::Tls(
                "the server sent data after its 220 to STARTTLS".into(),
            ));
        }
        self.tls_handshake(connector, name, timeout).await?;
        // RFC 3207: forget what the server offered in plaintext.
        self.ehlo(helo_name, t).await
    }

    /// The TLS handshake on the plain connection: after STARTTLS, or
    /// first thing on a wrapper-mode port (smtp_tls_wrappermode).
    pub async fn tls_handshake(
        &mut self,
        connector: &tokio_rustls::TlsConnector,
        name: rustls::pki_types::ServerName<'static>,
        timeout: Duration,
    ) -> Result<(), Failure> {
        let Some(tcp) = self.io.get_mut().take_plain() else {
            return Err(Failure::Tls("TLS already active".into()));
        };
        let tls = match tokio::time::timeout(timeout, connector.connect(name, tcp)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                // rustls says why a certificate did not verify in the
                // error it sends up as an io error; a verifier's own
                // reason (DANE's) is said as the verifier words it.
                let why = match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                    Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(o))) => {
                        format!("invalid peer certificate: {}", o.0)
                    }
                    _ => e.to_string(),
                };
                return Err(Failure::Tls(if why.contains("invalid peer certificate") {
                    format!("Server certificate not verified ({why})")
                } else {
                    format!(
                        "Cannot start TLS: handshake failure with {}[{}]: {why}",
                        self.host, self.peer
                    )
                }));
            }
            Err(_) => {
                return Err(Failure::Tls(format!(
                    "Cannot start TLS: handshake with {}[{}] timed out",
                    self.host, self.peer
                )));
            }
        };
        // A full handshake's line names the server's signature too; a
        // resumed one had none.
        let signature = match tls.get_ref().1.handshake_kind() {
            Some(rustls::HandshakeKind::Resumed) => None,
            _ => tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|leaf| crate::tls::signature_words(leaf)),
        };
        *self.io.get_mut() = Stream::Tls(Box::new(tls));
        self.tls = self.io.get_ref().tls_summary().map(|t| match &signature {
            Some(w) => format!("{t} {w}"),
            None => t,
        });
        self.io.get_ref().count_tls("outbound");
        Ok(())
    }

    /// Was the TLS session resumed from an earlier one?
    pub fn tls_resumed(&self) -> bool {
        match self.io.get_ref() {
            Stream::Tls(t) => {
                t.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
            }
            _ => false,
        }
    }

    /// AUTH PLAIN (with an initial response) or AUTH LOGIN.
    pub async fn auth(
        &mut self,
        mech: &str,
        user: &str,
        password: &str,
        t: &Timeouts,
    ) -> Result<(), Failure> {
        use base64::Engine;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let r = if mech == "PLAIN" {
            let token = b64(format!("\0{user}\0{password}").as_bytes());
            self.write(format!("AUTH PLAIN {token}\r\n").as_bytes(), t.helo, "AUTH")
                .await?;
            self.read_reply(t.helo, "AUTH").await?
        } else {
            self.write(b"AUTH LOGIN\r\n", t.helo, "AUTH").await?;
            let mut r = self.read_reply(t.helo, "AUTH").await?;
            for part in [user, password] {
                if r.code != 334 {
                    break;
                }
                self.write(
                    format!("{}\r\n", b64(part.as_bytes())).as_bytes(),
                    t.helo,
                    "AUTH",
                )
                .await?;
                r = self.read_reply(t.helo, "AUTH").await?;
            }
            r
        };
        if r.code == 235 {
            Ok(())
        } else {
            Err(Failure::Reply(r, "AUTH"))
        }
    }

    /// Checks a cached session still works before reusing it.
    pub async fn rset(&mut self, t: &Timeouts) -> bool {
        if self.write(b"RSET\r\n", t.mail, "RSET").await.is_err() {
            return false;
        }
        matches!(self.read_reply(t.mail, "RSET").await, Ok(r) if r.code == 250)
    }

    pub async fn quit(mut self) {
        let _ = self
            .write(b"QUIT\r\n", Duration::from_secs(5), "QUIT")
            .await;
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            self.read_reply(Duration::from_secs(5), "QUIT"),
        )
        .await;
    }
}

fn reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "Connection refused".into(),
        std::io::ErrorKind::TimedOut => "Connection timed out".into(),
        _ => e.to_string(),
    }
}

/// The envelope of one transaction.
pub struct Envelope<'a> {
    pub sender: &'a str,
    pub recipients: Vec<(u32, &'a str, &'a str, u8)>,
    pub size: u64,
    pub body_8bit: bool,
    pub smtputf8: bool,
    pub ret: u8,
    pub envid: &'a str,
    /// Send MAIL FROM ... REQUIRETLS (the message asked for it, and this
    /// session is TLS with a server that offers it).
    pub requiretls: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CVE-2026-43964: an enhanced status code with no text after the
    /// third number (and other ragged forms) is read without running past
    /// the line.
    #[test]
    fn enhanced_codes_without_text() {
        let dsn = |code: u16, line: &str| {
            SmtpReply {
                code,
                lines: vec![line.to_string()],
            }
            .dsn()
        };
        assert_eq!(dsn(550, "5.1.1"), "5.1.1");
        assert_eq!(dsn(550, "5.1.1 "), "5.1.1");
        assert_eq!(dsn(550, "5.1."), "5.0.0");
        assert_eq!(dsn(550, "5.1"), "5.0.0");
        assert_eq!(dsn(550, ""), "5.0.0");
        assert_eq!(dsn(250, "5.1.1"), "2.0.0", "class must match the code");
        let r = SmtpReply {
            code: 451,
            lines: Vec::new(),
        };
        assert_eq!(r.dsn(), "4.0.0");
        let mut p = postern_proto::smtp::ReplyParser::default();
        assert_eq!(
            p.line(b"550 5.1.1\r\n"),
            Ok(Some((550, vec!["5.1.1".to_string()])))
        );
    }

    #[test]
    fn reply_codes() {
        let r = SmtpReply {
            code: 550,
            lines: vec!["5.1.1 no such user".into()],
        };
        assert_eq!(r.dsn(), "5.1.1");
        let r = SmtpReply {
            code: 451,
            lines: vec!["try later".into()],
        };
        assert_eq!(r.dsn(), "4.0.0");
        let r = SmtpReply {
            code: 550,
            lines: vec!["2.0.0 confused".into()],
        };
        assert_eq!(r.dsn(), "5.0.0");
    }
}
