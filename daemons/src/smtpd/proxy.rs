//! smtpd_upstream_proxy_protocol = haproxy: the PROXY header a load
//! balancer sends before the client's first byte (`proto::proxy`), read
//! within smtpd_upstream_proxy_timeout. Exactly the header's bytes are
//! taken: what follows is the client's. A malformed header, a timeout or
//! a hang-up drops that connection alone, with Postfix's warning.
use std::net::SocketAddr;
use std::time::Duration;

use postern_proto::proxy::{Header, MAX_HEADER, parse};

use super::conn::Conn;
use crate::warn;

/// The client and server addresses to use, or None when the connection
/// is dropped. `peer`, `local`: the connection's own (a LOCAL header).
pub async fn read(
    conn: &mut Conn,
    timeout: Duration,
    peer: SocketAddr,
    local: Option<SocketAddr>,
) -> Option<(SocketAddr, Option<SocketAddr>)> {
    let got = tokio::time::timeout(timeout, async {
        loop {
            match parse(conn.buffered()) {
                Ok(Some((h, n))) => {
                    conn.consume(n);
                    return Ok(h);
                }
                Ok(None) => {
                    if conn.fill().await.is_err() {
                        return Err("EOF".to_string());
                    }
                }
                Err(why) => {
                    let seen = conn.buffered();
                    let shown = &seen[..seen.len().min(MAX_HEADER)];
                    return Err(format!("{why}: {}", shown.escape_ascii()));
                }
            }
        }
    })
    .await;
    conclude(got, peer, local)
}

/// The addresses a header read ended with (`got`: the header, or why
/// there is none, or a timeout), with Postfix's warning when the
/// connection is to be dropped. Shared with postscreen.
pub(crate) fn conclude(
    got: Result<Result<Header, String>, tokio::time::error::Elapsed>,
    peer: SocketAddr,
    local: Option<SocketAddr>,
) -> Option<(SocketAddr, Option<SocketAddr>)> {
    match got {
        Ok(Ok(Header::Proxied { client, server })) => Some((client, Some(server))),
        Ok(Ok(Header::Local)) => Some((peer, local)),
        Ok(Err(e)) => {
            warn!("haproxy read: {e}");
            None
        }
        Err(_) => {
            warn!("haproxy read: timeout error");
            None
        }
    }
}
