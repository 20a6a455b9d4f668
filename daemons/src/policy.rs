//! policy: the client side of Postfix's policy delegation protocol
//! (`check_policy_service`, SMTPD_POLICY_README). It is the only process
//! that talks to policy servers: its jail allows TCP connections to the
//! ports of the configured services and nothing else, and the master
//! connects to Unix-socket services for it. smtpd asks it over IPC.
//!
//! Each IPC channel stands for one smtpd session (smtpd lends a channel to
//! a session for its whole life), and holds its own connection to each
//! service, as a Postfix smtpd process does: the requests of one session
//! go over one connection, in order, so a server can correlate them by
//! `instance`. A connection is reused until it has been idle for
//! `max_idle`, has lived `max_ttl`, or has carried `request_limit`
//! requests.
//!
//! A policy server is an untrusted peer. Each attempt has the service's
//! timeout for the connect and again for the exchange; the reply is read
//! by the bounded parser of `proto::policy`. A refused or dropped
//! connection, a timeout, a reply without an action, or one that is too
//! long closes the connection; the request is tried again after
//! `retry_delay`, up to `try_limit` attempts, and then smtpd is told it
//! failed (it applies the default action). Nothing of a failed attempt is
//! kept.
use std::collections::{BTreeMap, HashMap};
use std::os::fd::{OwnedFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use postern_config::policy::Resolved;
use postern_config::tables::Endpoint;
use postern_config::{Params, Role};
use postern_ipc::ChannelError;
use postern_ipc::policy::{self as pl, Reply, Request};
use postern_proto::policy::ReplyParser;
use tokio::time::Instant;

use crate::daemon::{self, Context, Switchboard};
use crate::warn;

/// The configured services, by key.
type Services = BTreeMap<String, Resolved>;

/// Every policy service the configuration names.
pub fn services(params: &Params) -> Services {
    postern_config::policy::configured(params)
}

/// The TCP ports the policy role may connect to.
pub fn ports(params: &Params) -> Vec<u16> {
    let mut v: Vec<u16> = services(params)
        .values()
        .filter_map(|s| match s.endpoint {
            Endpoint::Inet(a) => Some(a.port()),
            Endpoint::Unix(_) => None,
        })
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

pub fn main(ipc_fd: RawFd) -> ! {
    daemon::run(Role::Policy, ipc_fd, |params: &Params| {
        let services = Rc::new(services(params));
        Ok((move |ctx: Context| serve(ctx, services), Vec::new()))
    })
}

async fn serve(mut ctx: Context, services: Rc<Services>) {
    let query = ctx.query_timeout();
    let sb = ctx.switchboard.clone();
    daemon::serve_channels(&mut ctx, |from, fd| {
        channel(services.clone(), sb.clone(), from, fd, query)
    })
    .await;
}

/// One connection to a policy server.
struct Conn {
    stream: Stream,
    opened: Instant,
    last: Instant,
    requests: u32,
}

impl Conn {
    /// When this connection must be closed if it stays unused.
    fn expires(&self, s: &Resolved) -> Instant {
        (self.last + s.max_idle).min(self.opened + s.max_ttl)
    }
}

enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl Stream {
    /// The server said something (or hung up) while nobody asked: the
    /// connection is closed or out of step, and is not reused.
    fn stale(&self) -> bool {
        let mut b = [0u8; 1];
        let r = match self {
            Stream::Tcp(s) => s.try_read(&mut b),
            Stream::Unix(s) => s.try_read(&mut b),
        };
        !matches!(r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    async fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        match self {
            Stream::Tcp(s) => s.write_all(buf).await,
            Stream::Unix(s) => s.write_all(buf).await,
        }
    }

    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use tokio::io::AsyncReadExt;
        match self {
            Stream::Tcp(s) => s.read(buf).await,
            Stream::Unix(s) => s.read(buf).await,
        }
    }
}

async fn channel(
    services: Rc<Services>,
    sb: Switchboard,
    from: Role,
    fd: OwnedFd,
    query: Duration,
) {
    let Some(mut ep) = crate::edges::accept::<pl::Link>(Role::Policy, from, fd, query).await else {
        return;
    };
    let mut conns: HashMap<String, Conn> = HashMap::new();
    loop {
        let next = conns
            .iter()
            .filter_map(|(k, c)| services.get(k).map(|s| c.expires(s)))
            .min();
        let idle = async {
            match next {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        let req = tokio::select! {
            r = ep.recv() => r,
            _ = idle => {
                let now = Instant::now();
                conns.retain(|k, c| services.get(k).is_some_and(|s| c.expires(s) > now));
                continue;
            }
        };
        let req = match req {
            Ok(r) => r,
            Err(ChannelError::Closed) => return,
            Err(e) => return crate::edges::dropped(pl::EDGE, from, &e),
        };
        let Some(svc) = services.get(&req.service) else {
            // Only the services the configuration names: asking for any
            // other server is a protocol violation.
            warn!(
                "protocol violation from {from}: policy request for {}, which is not a configured service; channel dropped",
                req.service
            );
            return;
        };
        let reply = ask(&sb, svc, conns.remove(&req.service), &req).await;
        let reply = match reply {
            (Ok(action), conn) => {
                if let Some(c) = conn {
                    conns.insert(req.service.clone(), c);
                }
                Reply::Action(action)
            }
            (Err(e), _) => Reply::Failed(e),
        };
        if ep.send(&reply).await.is_err() {
            return;
        }
    }
}

/// Every attempt at one request, with the connection to keep afterwards.
async fn ask(
    sb: &Switchboard,
    svc: &Resolved,
    mut conn: Option<Conn>,
    req: &Request,
) -> (Result<String, String>, Option<Conn>) {
    let attrs: Vec<(&str, &str)> = req
        .attrs
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let request = postern_proto::policy::encode(&attrs);
    let name = svc.endpoint.to_string();
    let mut attempt = 0;
    let mut last_error = String::new();
    while attempt < svc.try_limit {
        let now = Instant::now();
        let reused = conn
            .take()
            .filter(|c| c.expires(svc) > now && !c.stream.stale());
        let was_reused = reused.is_some();
        let mut c = match reused {
            Some(c) => c,
            None => match connect(sb, svc).await {
                Ok(stream) => Conn {
                    stream,
                    opened: now,
                    last: now,
                    requests: 0,
                },
                Err(e) => {
                    attempt += 1;
                    last_error = e;
                    if attempt < svc.try_limit {
                        tokio::time::sleep(svc.retry_delay).await;
                    }
                    continue;
                }
            },
        };
        match tokio::time::timeout(svc.timeout, exchange(&mut c.stream, &request)).await {
            Ok(Ok(action)) => {
                c.requests += 1;
                c.last = Instant::now();
                let keep = svc.request_limit == 0 || c.requests < svc.request_limit;
                return (Ok(action), keep.then_some(c));
            }
            // A kept connection the server closed meanwhile: one fresh
            // connection, without counting an attempt.
            Ok(Err(Failure::Closed(_))) if was_reused => continue,
            Ok(Err(f)) => last_error = f.to_string(),
            Err(_) => last_error = TIMED_OUT.into(),
        }
        attempt += 1;
        if attempt < svc.try_limit {
            tokio::time::sleep(svc.retry_delay).await;
        }
    }
    warn!("problem talking to server {name}: {last_error}");
    (Err(last_error), None)
}

/// Connects to the service within its timeout.
async fn connect(sb: &Switchboard, svc: &Resolved) -> Result<Stream, String> {
    let t = svc.timeout;
    match &svc.endpoint {
        Endpoint::Inet(a) => match tokio::time::timeout(t, tokio::net::TcpStream::connect(a)).await
        {
            Ok(Ok(s)) => Ok(Stream::Tcp(s)),
            Ok(Err(e)) => Err(io_text(&e)),
            Err(_) => Err(TIMED_OUT.into()),
        },
        Endpoint::Unix(p) => {
            let fd = match tokio::time::timeout(t, sb.open_table(p)).await {
                Ok(Ok(Some(fd))) => fd,
                Ok(Ok(None)) => return Err("No such file or directory".into()),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(TIMED_OUT.into()),
            };
            let s = std::os::unix::net::UnixStream::from(fd);
            tokio::net::UnixStream::from_std(s)
                .map(Stream::Unix)
                .map_err(|e| io_text(&e))
        }
    }
}

/// What Postfix's warning says for a deadline (its `%m` of ETIMEDOUT).
const TIMED_OUT: &str = "Connection timed out";

/// An I/O error as `%m` words it ("Connection refused"), without Rust's
/// "(os error 111)".
pub(crate) fn io_text(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// Why one exchange failed.
#[derive(Debug)]
enum Failure {
    /// The connection went away before any of the reply came.
    Closed(String),
    /// Anything else: a reply cut short, too long, without an action.
    Broken(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Closed(e) | Failure::Broken(e) => f.write_str(e),
        }
    }
}

/// Sends one request and reads its reply.
async fn exchange(s: &mut Stream, request: &[u8]) -> Result<String, Failure> {
    if let Err(e) = s.write_all(request).await {
        return Err(Failure::Closed(io_text(&e)));
    }
    let mut parser = ReplyParser::new();
    let mut buf = [0u8; 4096];
    let mut got = 0usize;
    loop {
        let n = match s.read(&mut buf).await {
            Ok(0) if got == 0 => return Err(Failure::Closed("premature end-of-input".into())),
            Ok(0) => return Err(Failure::Broken("premature end-of-input".into())),
            Ok(n) => n,
            Err(e) if got == 0 => return Err(Failure::Closed(io_text(&e))),
            Err(e) => return Err(Failure::Broken(io_text(&e))),
        };
        got += n;
        let (used, outcome) = parser.feed(&buf[..n]);
        match outcome {
            None => {}
            // A server that says more than one reply is out of step.
            Some(Ok(_)) if used < n => {
                return Err(Failure::Broken("more than one reply".into()));
            }
            Some(Ok(action)) => return Ok(action),
            Some(Err(e)) => return Err(Failure::Broken(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_and_ports_come_from_the_keys() {
        let unix = "{ unix:/run/policyd.sock, timeout=100000ms, max_idle=300000ms, max_ttl=1000000ms, try_limit=2, retry_delay=1000ms, request_limit=0 }";
        let inet = "{ inet:127.0.0.1:9998, timeout=5000ms, max_idle=300000ms, max_ttl=1000000ms, try_limit=1, retry_delay=0ms, request_limit=1 }";
        let p = Params::from_pairs([(
            "postern_policy_services".to_string(),
            format!("{unix}, {inet}"),
        )])
        .unwrap();
        let s = services(&p);
        assert_eq!(s.len(), 2);
        assert_eq!(s[inet].try_limit, 1);
        assert_eq!(ports(&p), vec![9998]);
        assert_eq!(
            postern_config::tables::allowed_files(Role::Policy, &p),
            vec![std::path::PathBuf::from("/run/policyd.sock")]
        );
    }
}
