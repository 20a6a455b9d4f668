//! postscreen_upstream_proxy_protocol = haproxy: the PROXY header a load
//! balancer sends first (`proto::proxy`). The header is peeked at and only
//! its own bytes are then read, so what follows stays in the socket for
//! the tests and, after a hand-off, for smtpd. A malformed header, a
//! timeout or a hang-up drops that connection alone, with Postfix's
//! warning.
use std::net::SocketAddr;
use std::time::Duration;

use postern_proto::proxy::{MAX_HEADER, parse};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// How long to wait before looking again at a header that is not
/// complete yet (peeking returns at once while any byte is waiting).
const AGAIN: Duration = Duration::from_millis(10);

pub async fn read(
    stream: &mut TcpStream,
    timeout: Duration,
    peer: SocketAddr,
    local: Option<SocketAddr>,
) -> Option<(SocketAddr, Option<SocketAddr>)> {
    let got = tokio::time::timeout(timeout, async {
        let mut buf = [0u8; MAX_HEADER];
        let mut seen = 0;
        loop {
            let n = stream.peek(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("EOF".to_string());
            }
            match parse(&buf[..n]) {
                Ok(Some((h, len))) => {
                    let mut taken = vec![0u8; len];
                    stream
                        .read_exact(&mut taken)
                        .await
                        .map_err(|e| e.to_string())?;
                    return Ok(h);
                }
                Ok(None) if n == buf.len() => return Err("header too long".to_string()),
                Ok(None) => {
                    if n == seen {
                        tokio::time::sleep(AGAIN).await;
                    }
                    seen = n;
                }
                Err(why) => return Err(format!("{why}: {}", buf[..n].escape_ascii())),
            }
        }
    })
    .await;
    crate::smtpd::proxy::conclude(got, peer, local)
}
