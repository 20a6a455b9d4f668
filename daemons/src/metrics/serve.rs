//! The metrics role: keeps what the other processes report (metrics.capnp)
//! and answers `GET /metrics` on the `metrics_listen` sockets the master
//! bound. It has no files and no network of its own: only those listening
//! sockets and its channels. One request per connection, with a deadline
//! and a cap on the head and on concurrent connections.
use std::cell::RefCell;
use std::net::IpAddr;
use std::os::fd::{OwnedFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use postern_config::cidr::Cidr;
use postern_config::{Params, Role};
use postern_ipc::ChannelError;
use postern_ipc::edge::{self, Answer};
use postern_ipc::metrics::{Link, Reply};
use postern_proto::http::{self, Format, MAX_HEAD};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::catalog;
use super::render::{self, Store};
use crate::daemon::{self, Context};
use crate::{fatal, info, warn};

/// How long a client may take to send its request and read the answer.
const CLIENT_DEADLINE: Duration = Duration::from_secs(10);
/// Scrapes served at once; a connection past it is closed unanswered.
const MAX_CLIENTS: usize = 16;

struct Settings {
    /// metrics_allowed_clients; empty: any client that reaches the socket.
    allowed: Vec<Cidr>,
}

pub fn main(ipc_fd: RawFd) -> ! {
    daemon::run(Role::Metrics, ipc_fd, |params: &Params| {
        let allowed = params
            .list("metrics_allowed_clients")
            .map_err(|e| e.to_string())?
            .iter()
            .map(|s| Cidr::parse(s).map_err(|e| format!("metrics_allowed_clients: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let s = Settings { allowed };
        Ok((move |ctx: Context| serve(ctx, s), Vec::new()))
    })
}

struct Shared {
    store: RefCell<Store>,
    settings: Settings,
    clients: RefCell<usize>,
}

async fn serve(mut ctx: Context, settings: Settings) {
    let shared = Rc::new(Shared {
        store: RefCell::new(Store::default()),
        settings,
        clients: RefCell::new(0),
    });
    let timeout = ctx.query_timeout();
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async move {
            for l in std::mem::take(&mut ctx.listeners) {
                let std_l = std::net::TcpListener::from(l.fd);
                if let Err(e) = std_l.set_nonblocking(true) {
                    fatal!("metrics_listen: {e}");
                }
                let listener = match tokio::net::TcpListener::from_std(std_l) {
                    Ok(x) => x,
                    Err(e) => fatal!("metrics_listen: {e}"),
                };
                if let Ok(a) = listener.local_addr() {
                    info!("serving metrics on http://{a}/metrics");
                }
                tokio::task::spawn_local(accept_loop(shared.clone(), listener));
            }
            let mut next = 1u64;
            loop {
                tokio::select! {
                    c = ctx.inbound.recv() => match c {
                        Some((from, fd)) => {
                            next += 1;
                            tokio::task::spawn_local(channel(shared.clone(), from, fd, next, timeout));
                        }
                        None => return,
                    },
                    _ = ctx.shutdown.changed() => return,
                }
            }
        })
        .await;
}

/// One reporting process's channel: each report replaces the last.
async fn channel(shared: Rc<Shared>, from: Role, fd: OwnedFd, id: u64, timeout: Duration) {
    let Some(ep) = crate::edges::accept::<Link>(Role::Metrics, from, fd, timeout).await else {
        return;
    };
    let sh = shared.clone();
    let r = edge::serve::<Link, _, _>(ep, |req| {
        let sh = sh.clone();
        async move {
            if let Err(why) = render::check(from, &req.samples) {
                warn!("protocol violation from {from}: {why}; channel dropped");
                sh.store
                    .borrow_mut()
                    .count_own(&catalog::VIOLATIONS, &[postern_ipc::metrics::EDGE]);
                return Answer::Close;
            }
            let accepted = req.samples.len() as u32;
            sh.store.borrow_mut().update(id, req.samples);
            Answer::Reply(Reply { accepted })
        }
    })
    .await;
    if let Err(e) = &r {
        // Logged here; counted in this role's own figures.
        crate::edges::dropped(postern_ipc::metrics::EDGE, from, e);
        if matches!(e, ChannelError::Violation(_)) {
            shared
                .store
                .borrow_mut()
                .count_own(&catalog::VIOLATIONS, &[postern_ipc::metrics::EDGE]);
        }
    }
    shared.store.borrow_mut().close(id);
}

async fn accept_loop(shared: Rc<Shared>, listener: tokio::net::TcpListener) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!("metrics: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if *shared.clients.borrow() >= MAX_CLIENTS {
            continue;
        }
        *shared.clients.borrow_mut() += 1;
        let sh = shared.clone();
        tokio::task::spawn_local(async move {
            let _ = tokio::time::timeout(CLIENT_DEADLINE, client(&sh, stream, peer.ip())).await;
            *sh.clients.borrow_mut() -= 1;
        });
    }
}

fn allowed(s: &Settings, ip: IpAddr) -> bool {
    s.allowed.is_empty() || s.allowed.iter().any(|c| c.contains(ip))
}

async fn client(shared: &Shared, mut stream: tokio::net::TcpStream, ip: IpAddr) {
    if !allowed(&shared.settings, ip) {
        warn!("metrics: refused a request from {ip}: not in metrics_allowed_clients");
        let _ = respond(
            &mut stream,
            403,
            "Forbidden",
            "text/plain",
            b"forbidden\n",
            false,
        )
        .await;
        return;
    }
    let mut buf = Vec::with_capacity(1024);
    let req = loop {
        match http::parse(&buf) {
            Ok(Some(r)) => break Ok(r),
            Ok(None) => {}
            Err(e) => break Err(e),
        }
        let mut chunk = [0u8; 2048];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n.min(MAX_HEAD + 1 - buf.len().min(MAX_HEAD))]),
        }
    };
    let req = match req {
        Ok(r) => r,
        Err(e) => {
            let (code, reason) = e.status();
            let _ = respond(
                &mut stream,
                code,
                reason,
                "text/plain",
                reason.as_bytes(),
                false,
            )
            .await;
            return;
        }
    };
    if req.path != "/metrics" {
        let _ = respond(
            &mut stream,
            404,
            "Not Found",
            "text/plain",
            b"try /metrics\n",
            req.head_only,
        )
        .await;
        return;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let body = shared.store.borrow().render(req.format, now);
    let ctype = match req.format {
        Format::Text => "text/plain; version=0.0.4; charset=utf-8",
        Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
    };
    let _ = respond(
        &mut stream,
        200,
        "OK",
        ctype,
        body.as_bytes(),
        req.head_only,
    )
    .await;
}

async fn respond(
    stream: &mut tokio::net::TcpStream,
    code: u16,
    reason: &str,
    ctype: &str,
    body: &[u8],
    head_only: bool,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if !head_only {
        stream.write_all(body).await?;
    }
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allowlist_is_optional() {
        let any = Settings { allowed: vec![] };
        assert!(allowed(&any, "192.0.2.1".parse().unwrap()));
        let lo = Settings {
            allowed: vec![Cidr::parse("127.0.0.0/8").unwrap()],
        };
        assert!(allowed(&lo, "127.0.0.9".parse().unwrap()));
        assert!(!allowed(&lo, "::1".parse().unwrap()));
    }
}
