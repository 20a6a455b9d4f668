//! pickup: takes mail from `sendmail`, the one place where local
//! submission permission is decided (Postfix's postdrop and pickup in one).
//!
//! Two ways in, one decoder: the public pickup socket (the submitter is
//! who SO_PEERCRED says), and files in the maildrop directory that
//! sendmail wrote while the mail system was down (the submitter is the
//! file's owner). Either way pickup reads the whole submission first, then
//! decides: `authorized_submit_users`, `local_login_sender_maps`, and the
//! smtpd sender, relay and recipient restrictions with the login name as
//! the authenticated user (L66, L854). Accepted mail goes to cleanup like
//! any other; the reply (or the file's removal) follows cleanup's commit.
use std::collections::HashSet;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use postern_config::{Params, Role};
use postern_ipc::listener::SeqpacketListener;
use postern_ipc::sendmail_pickup::{self as sp, Begin, Reply, Request};
use postern_ipc::{Channel, ChannelError, Endpoint, Message, smtpd_cleanup as sc};
use postern_proto::header::{self, Split};

use crate::access::Access;
use crate::daemon::{self, Context, Switchboard};
use crate::tablecache::{TableCache, TableRef, table_list};
use crate::tables::{self, Table};
use crate::{info, warn};

mod maildrop;
mod submit;
use maildrop::*;
use submit::*;

use crate::sysexits::*;

/// Most recipients one submission may name.
const MAX_RECIPIENTS: usize = 1000;
/// How often the maildrop directory is scanned (and once at start).
const SCAN_INTERVAL: Duration = Duration::from_secs(60);
/// A submission on the socket must finish within this.
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(300);

pub fn main(ipc_fd: RawFd) -> ! {
    daemon::run(Role::Pickup, ipc_fd, |_params| Ok((serve, Vec::new())))
}

struct Settings {
    myorigin: String,
    myhostname: String,
    message_size_limit: u64,
    header_size_limit: usize,
    submit_users: Vec<String>,
    login_sender: Vec<TableRef>,
    sender_login: Vec<TableRef>,
    access: Access,
    policy: crate::restrict::Policy,
    /// The access tables the restrictions name, by their name there.
    access_maps: Vec<(String, TableRef)>,
    /// virtual_alias_domains and virtual_mailbox_domains: destinations
    /// for reject_unauth_destination.
    alias_domains: crate::addrmap::Domains,
    mailbox_domains: crate::addrmap::Domains,
    maildrop: PathBuf,
    query: Duration,
    transfer: Duration,
}

impl Settings {
    fn new(p: &Params) -> Result<Settings, String> {
        Ok(Settings {
            myorigin: p.str("myorigin").to_ascii_lowercase(),
            myhostname: p.str("myhostname").into(),
            message_size_limit: p.size("message_size_limit").unwrap_or(10_240_000),
            header_size_limit: p.size("header_size_limit").unwrap_or(102_400) as usize,
            submit_users: p.list("authorized_submit_users").unwrap_or_default(),
            login_sender: table_list(p, "local_login_sender_maps"),
            sender_login: table_list(p, "smtpd_sender_login_maps"),
            access: Access::new(p)?,
            policy: crate::restrict::Policy::new(p)?,
            access_maps: p
                .list("postern_access_maps")
                .unwrap_or_default()
                .into_iter()
                .zip(table_list(p, "postern_access_maps"))
                .collect(),
            alias_domains: crate::addrmap::Domains::new(p, "virtual_alias_domains"),
            mailbox_domains: crate::addrmap::Domains::new(p, "virtual_mailbox_domains"),
            maildrop: crate::paths::maildrop_dir(p),
            query: p
                .duration("ipc_query_timeout")
                .unwrap_or(Duration::from_secs(10)),
            transfer: p
                .duration("ipc_timeout")
                .unwrap_or(Duration::from_secs(3600)),
        })
    }
}

struct Shared {
    set: Settings,
    sb: Switchboard,
    tables: TableCache,
}

async fn serve(mut ctx: Context) {
    let set = match Settings::new(&ctx.params) {
        Ok(s) => s,
        Err(e) => crate::fatal!("pickup: {e}"),
    };
    let sh = Rc::new(Shared {
        set,
        sb: ctx.switchboard.clone(),
        tables: TableCache::new(ctx.switchboard.clone()),
    });
    let listener = ctx
        .listeners
        .drain(..)
        .find(|l| l.service == "pickup")
        .map(|l| SeqpacketListener::from_fd(l.fd));
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async move {
            match listener {
                Some(Ok(l)) => {
                    let sh = sh.clone();
                    tokio::task::spawn_local(accept_loop(l, sh));
                }
                Some(Err(e)) => warn!("pickup socket: {e}"),
                None => warn!("no pickup socket from the master; only the maildrop is served"),
            }
            let mut warned = HashSet::new();
            loop {
                scan_maildrop(&sh, &mut warned).await;
                tokio::select! {
                    _ = tokio::time::sleep(SCAN_INTERVAL) => {}
                    _ = ctx.shutdown.changed() => return,
                }
            }
        })
        .await;
}

async fn accept_loop(l: SeqpacketListener, sh: Rc<Shared>) {
    loop {
        let (fd, cred) = match l.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!("pickup socket: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let sh = sh.clone();
        tokio::task::spawn_local(async move {
            sh.sb.connection(true);
            connection(&sh, fd, cred.uid, cred.pid).await;
            sh.sb.connection(false);
        });
    }
}

/// One submission as it arrived, before any decision.
#[derive(Default)]
struct Submission {
    begin: Begin,
    recipients: Vec<String>,
    content: Vec<u8>,
    /// More content arrived than message_size_limit allows (and was dropped).
    too_big: bool,
    too_many: bool,
}

/// Adds one request to the submission; Some(..) at End.
fn absorb(sub: &mut Option<Submission>, req: Request, limit: u64) -> Result<bool, &'static str> {
    match (req, sub.as_mut()) {
        (Request::Begin(b), None) => {
            *sub = Some(Submission {
                begin: b,
                ..Default::default()
            });
            Ok(false)
        }
        (Request::Begin(_), Some(_)) => Err("a second begin"),
        (_, None) => Err("content before begin"),
        (Request::Recipients(r), Some(s)) => {
            if s.recipients.len() + r.len() > MAX_RECIPIENTS {
                s.too_many = true;
            } else {
                s.recipients.extend(r);
            }
            Ok(false)
        }
        (Request::Content(c), Some(s)) => {
            if s.content.len() as u64 + c.len() as u64 > limit {
                s.too_big = true;
            } else if !s.too_big {
                s.content.extend_from_slice(&c);
            }
            Ok(false)
        }
        (Request::End, Some(_)) => Ok(true),
    }
}

async fn connection(sh: &Shared, fd: OwnedFd, uid: u32, pid: i32) {
    let Ok(mut ch) = Channel::new(fd, <Request as Message>::MAX_FRAME, sh.set.query) else {
        return;
    };
    // Client-reachable: a bad frame drops this connection, nothing else.
    if let Err(e) = ch.hello_server(sp::EDGE, sp::VERSION).await {
        if e.is_violation() {
            warn!("pickup socket: dropping uid {uid} pid {pid}: {e}");
        }
        return;
    }
    let mut ep = Endpoint::<Reply, Request>::from_channel(ch);
    let mut sub = None;
    let deadline = tokio::time::Instant::now() + SUBMIT_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let req = match ep.recv_within(left).await {
            Ok(r) => r,
            Err(ChannelError::Closed) => return,
            Err(e) => {
                warn!("pickup socket: dropping uid {uid} pid {pid}: {e}");
                return;
            }
        };
        match absorb(&mut sub, req, sh.set.message_size_limit) {
            Ok(false) => {}
            Ok(true) => break,
            Err(why) => {
                warn!("pickup socket: dropping uid {uid} pid {pid}: protocol violation: {why}");
                return;
            }
        }
    }
    let Some(sub) = sub else { return };
    let reply = match submit(sh, uid, &sub).await {
        Ok(id) => Reply::Queued(id),
        Err(f) => Reply::Failed {
            exit_code: f.exit,
            text: f.text,
        },
    };
    let _ = ep.send(&reply).await;
}

/// Why a submission was not queued.
#[derive(Debug)]
struct Refusal {
    exit: u8,
    text: String,
}

fn refuse(exit: u8, text: impl Into<String>) -> Refusal {
    Refusal {
        exit,
        text: text.into(),
    }
}

impl Refusal {
    /// A temporary problem: a maildrop file stays for the next scan.
    fn is_temporary(&self) -> bool {
        self.exit == EX_TEMPFAIL
    }
}
