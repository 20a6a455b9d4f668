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

/// The parameters whose values may name external tables.
const TABLE_PARAMS: &[&str] = &[
    "alias_maps",
    "local_recipient_maps",
    "transport_maps",
    "smtpd_sender_login_maps",
    "smtp_sasl_password_maps",
    "local_login_sender_maps",
    "authorized_submit_users",
];

/// Every external table the configuration names, by its canonical name.
pub fn remote_tables(params: &Params) -> BTreeMap<String, Table> {
    let mut out = BTreeMap::new();
    for name in TABLE_PARAMS {
        for item in params.list(name).unwrap_or_default() {
            if let Ok(t) = postern_config::tables::parse(&item) {
                for r in t.remotes() {
                    if let Some(spec) = r.spec() {
                        out.insert(spec, r.clone());
                    }
                }
            }
        }
    }
    out
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
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async move {
            loop {
                tokio::select! {
                    p = ctx.inbound.recv() => match p {
                        Some((from, fd)) => {
                            tokio::task::spawn_local(channel(tables.clone(), from, fd, query));
                        }
                        None => return,
                    },
                    _ = ctx.shutdown.changed() => return,
                }
            }
        })
        .await;
}

async fn channel(tables: Rc<BTreeMap<String, Table>>, from: Role, fd: OwnedFd, query: Duration) {
    crate::edges::serve::<px::Link, _, _>(Role::Proxymap, from, fd, query, |req| {
        let tables = tables.clone();
        async move {
            let Some(t) = tables.get(&req.table) else {
                // Only the tables the configuration names: asking for any
                // other server is a protocol violation.
                warn!("protocol violation from {from}: lookup in {}, which is not a configured table; channel dropped", req.table);
                return Answer::Close;
            };
            Answer::Reply(match tokio::time::timeout(query, lookup(t, &req.key)).await {
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

/// Where to connect, what to send, and how to read the answer for a
/// lookup of `key` in the external table `t` (shared with `postern map
/// query`, which asks by itself when no system runs).
pub fn plan(t: &Table, key: &str) -> Result<(std::net::SocketAddr, Vec<u8>, ReplyParser), String> {
    match t {
        Table::Tcp(Endpoint::Inet(a)) => Ok((*a, tablemap::tcp_request(key), tablemap::tcp_reply)),
        Table::Socketmap(Endpoint::Inet(a), name) => Ok((
            *a,
            tablemap::socketmap_request(name, key)?,
            tablemap::socketmap_reply,
        )),
        _ => Err("only inet: table servers are supported".into()),
    }
}

/// One lookup: connect, ask, read one reply.
async fn lookup(t: &Table, key: &str) -> Result<Reply, String> {
    let (addr, request, parse) = plan(t, key)?;
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    s.write_all(&request)
        .await
        .map_err(|e| format!("write to {addr}: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match parse(&buf).map_err(|e| format!("reply from {addr}: {e}"))? {
            Progress::Done(answer, _) => {
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
            Progress::More => {}
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
