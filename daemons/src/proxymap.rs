//! proxymap: lookups in external tables (`tcp:`, tcp_table(5), and
//! `socketmap:`, socketmap_table(5)). It is the only process that talks to
//! table servers: its jail allows TCP connections to the ports of the
//! servers the configuration names and nothing else, and the daemons that
//! need an answer (broker, qmgr, local, pickup) ask it over IPC.
//!
//! A table server is an untrusted peer. Each lookup opens a connection,
//! sends one request and reads one reply within the query deadline; the
//! reply is parsed by the bounded sans-IO parsers of `proto::tablemap`.
//! Anything else (a refused or dropped connection, a malformed or
//! oversized reply, a timeout, a server that says TEMP or 400) is a lookup
//! error for the asking stage, never "not found"; a server that dies half
//! way leaves nothing behind, since every lookup starts afresh.
use std::collections::BTreeMap;
use std::os::fd::{OwnedFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use postern_config::tables::{Endpoint, Table};
use postern_config::{Params, Role};
use postern_ipc::ChannelError;
use postern_ipc::edge::{Answer, ClientEnd};
use postern_ipc::proxymap::{self as px, Reply, Request};
use postern_proto::tablemap::{self, Progress};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::daemon::{self, Context, Switchboard};
use crate::warn;

/// Every external table the configuration names, by its canonical name.
pub fn remote_tables(params: &Params) -> BTreeMap<String, Table> {
    postern_config::tables::remote_tables(params)
}

/// The TCP ports proxymap may connect to.
pub fn ports(params: &Params) -> Vec<u16> {
    let mut v: Vec<u16> = remote_tables(params)
        .values()
        .filter_map(|t| match t {
            Table::Tcp(Endpoint::Inet(a)) | Table::Socketmap(Endpoint::Inet(a), _) => {
                Some(a.port())
            }
            _ => None,
        })
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

pub fn main(ipc_fd: RawFd) -> ! {
    daemon::run(Role::Proxymap, ipc_fd, |params: &Params| {
        let tables = Rc::new(remote_tables(params));
        Ok((move |ctx: Context| serve(ctx, tables), Vec::new()))
    })
}

async fn serve(mut ctx: Context, tables: Rc<BTreeMap<String, Table>>) {
    let query = ctx.query_timeout();
    let sb = ctx.switchboard.clone();
    daemon::serve_channels(&mut ctx, |from, fd| {
        channel(tables.clone(), sb.clone(), from, fd, query)
    })
    .await;
}

async fn channel(
    tables: Rc<BTreeMap<String, Table>>,
    sb: Switchboard,
    from: Role,
    fd: OwnedFd,
    query: Duration,
) {
    crate::edges::serve::<px::Link, _, _>(Role::Proxymap, from, fd, query, |req| {
        let (tables, sb) = (tables.clone(), sb.clone());
        async move {
            let Some(t) = tables.get(&req.table) else {
                // Only the tables the configuration names: asking for any
                // other server is a protocol violation.
                warn!("protocol violation from {from}: lookup in {}, which is not a configured table; channel dropped", req.table);
                return Answer::Close;
            };
            Answer::Reply(match tokio::time::timeout(query, lookup(&sb, t, &req.key)).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    warn!("{}: lookup of {}: {e}", req.table, req.key);
                    Reply::Failed(e)
                }
                Err(_) => {
                    warn!("{}: lookup of {}: timed out", req.table, req.key);
                    Reply::Failed("timed out".into())
                }
            })
        }
    })
    .await;
}

/// Parses a table server's reply (tcp_table or socketmap).
pub type ReplyParser = fn(&[u8]) -> Result<Progress, String>;

/// What to send and how to read the answer for a lookup of `key` in the
/// external table `t` (shared with `postern map query`, which asks by
/// itself when no system runs).
pub fn plan(t: &Table, key: &str) -> Result<(Vec<u8>, ReplyParser), String> {
    match t {
        Table::Tcp(_) => Ok((tablemap::tcp_request(key), tablemap::tcp_reply)),
        Table::Socketmap(_, name) => Ok((
            tablemap::socketmap_request(name, key)?,
            tablemap::socketmap_reply,
        )),
        _ => Err("not an external table".into()),
    }
}

/// One lookup: connect (over TCP, or through the master for a Unix
/// socket), ask, read one reply.
async fn lookup(sb: &Switchboard, t: &Table, key: &str) -> Result<Reply, String> {
    let (request, parse) = plan(t, key)?;
    match t {
        Table::Tcp(Endpoint::Inet(a)) | Table::Socketmap(Endpoint::Inet(a), _) => {
            let s = tokio::net::TcpStream::connect(a)
                .await
                .map_err(|e| format!("connect to {a}: {e}"))?;
            exchange(s, &a.to_string(), &request, parse).await
        }
        Table::Socketmap(Endpoint::Unix(p), _) => {
            let fd = sb
                .open_table(p)
                .await?
                .ok_or_else(|| format!("connect to {}: No such file or directory", p.display()))?;
            let s = tokio::net::UnixStream::from_std(std::os::unix::net::UnixStream::from(fd))
                .map_err(|e| format!("{}: {e}", p.display()))?;
            exchange(s, &p.display().to_string(), &request, parse).await
        }
        _ => Err("not an external table".into()),
    }
}

/// Sends one request on `s` and reads the one reply.
async fn exchange<S: AsyncReadExt + AsyncWriteExt + Unpin>(
    mut s: S,
    addr: &str,
    request: &[u8],
    parse: ReplyParser,
) -> Result<Reply, String> {
    s.write_all(request)
        .await
        .map_err(|e| format!("write to {addr}: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Progress::Done(answer, _) =
            parse(&buf).map_err(|e| format!("reply from {addr}: {e}"))?
        {
            return Ok(match answer {
                tablemap::Answer::Found(v) if v.chars().any(char::is_control) => Reply::Failed(
                    format!("reply from {addr}: a value with control characters"),
                ),
                tablemap::Answer::Found(v) => Reply::Found(v),
                tablemap::Answer::NotFound => Reply::NotFound,
                tablemap::Answer::Failed(why) => Reply::Failed(format!(
                    "{addr} says: {}",
                    why.chars().filter(|c| !c.is_control()).collect::<String>()
                )),
            });
        }
        let n = s
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read from {addr}: {e}"))?;
        if n == 0 {
            return Err(format!(
                "reply from {addr}: connection closed before the reply ended"
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The client side, for the daemons that look tables up: one channel to
/// proxymap, opened on first use and again after a failure.
pub struct Client {
    sb: Switchboard,
    ep: tokio::sync::Mutex<Option<ClientEnd<px::Link>>>,
}

/// How long a daemon waits for proxymap (whose own deadline for the table
/// server is ipc_query_timeout).
const DEADLINE: Duration = Duration::from_secs(30);

impl Client {
    pub fn new(sb: Switchboard) -> Client {
        Client {
            sb,
            ep: tokio::sync::Mutex::new(None),
        }
    }

    /// Looks `key` up in the external table `t`. Any failure is a lookup
    /// error.
    pub async fn lookup(&self, t: &Table, key: &str) -> Result<Option<String>, String> {
        let table = t.spec().ok_or("not an external table")?;
        let mut g = self.ep.lock().await;
        if g.is_none() {
            *g = Some(crate::edges::open::<px::Link>(&self.sb, Role::Proxymap, DEADLINE).await?);
        }
        let ep = g.as_mut().ok_or("no channel to proxymap")?;
        let req = Request {
            table: table.clone(),
            key: key.to_string(),
        };
        match ep.call(&req).await {
            Ok(Reply::Found(v)) => Ok(Some(v)),
            Ok(Reply::NotFound) => Ok(None),
            Ok(Reply::Failed(e)) => Err(format!("{table}: {e}")),
            Err(e) => {
                *g = None;
                if let ChannelError::Violation(v) = &e {
                    warn!("protocol violation from proxymap: {v}");
                }
                Err(format!("{table}: proxymap: {e}"))
            }
        }
    }
}
