//! Clients postscreen screened and handed over (edge postscreen-smtpd):
//! each request carries one client's socket and names the pass service
//! whose settings and session limit apply. smtpd greets the client as
//! usual: postscreen sent at most "220-" lines before it.
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::time::Duration;

use nix::sys::socket::{AddressFamily, SockType, SockaddrLike, SockaddrStorage, sockopt};
use postern_config::Role;
use postern_ipc::edge::Answer;
use postern_ipc::postscreen_smtpd::{Link, Reply, Request};
use tokio::sync::{mpsc, watch};

use super::{Admission, Limit, Runner, Settings};
use crate::warn;

/// A master.cf pass service, as smtpd serves it.
pub struct Pass {
    pub service: String,
    pub settings: Rc<Settings>,
    pub maxproc: u32,
}

pub type Passes = HashMap<String, (Rc<Settings>, Option<Rc<Limit>>)>;

/// Serves every channel postscreen opens, until smtpd stops.
pub async fn serve(
    mut inbound: mpsc::UnboundedReceiver<(Role, OwnedFd)>,
    passes: Rc<Passes>,
    runner: Runner,
    timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (from, fd) = tokio::select! {
            p = inbound.recv() => match p {
                Some(x) => x,
                None => return,
            },
            _ = stop.changed() => return,
        };
        let (passes, runner) = (passes.clone(), runner.clone());
        tokio::task::spawn_local(async move {
            crate::edges::serve::<Link, _, _>(Role::Smtpd, from, fd, timeout, |req| {
                let a = take(&passes, &runner, req);
                async move { a }
            })
            .await;
        });
    }
}

/// The descriptor must be a connected TCP socket: anything else is
/// refused, whatever the peer says it is.
fn tcp_stream(fd: OwnedFd) -> Result<tokio::net::TcpStream, String> {
    let ty = nix::sys::socket::getsockopt(&fd, sockopt::SockType).map_err(|e| e.to_string())?;
    let local: SockaddrStorage =
        nix::sys::socket::getsockname(std::os::fd::AsRawFd::as_raw_fd(&fd))
            .map_err(|e| e.to_string())?;
    if ty != SockType::Stream
        || !matches!(
            local.family(),
            Some(AddressFamily::Inet | AddressFamily::Inet6)
        )
    {
        return Err("not a TCP connection".into());
    }
    let s = std::net::TcpStream::from(fd);
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    tokio::net::TcpStream::from_std(s).map_err(|e| e.to_string())
}

fn take(passes: &Passes, runner: &Runner, req: Request) -> Answer<Reply> {
    let Some((set, limit)) = passes.get(&req.service) else {
        warn!(
            "postscreen handed over a client for \"{}\", which is not a pass service of master.cf",
            req.service
        );
        return Answer::Reply(Reply::Refused(format!(
            "no pass service \"{}\"",
            req.service
        )));
    };
    // postscreen_post_queue_limit: past it, postscreen tells the client
    // that every server port is busy.
    if let Some(l) = limit
        && req.max_waiting > 0
        && l.sem.available_permits() == 0
        && l.waiting.get() >= req.max_waiting
    {
        return Answer::Reply(Reply::Busy);
    }
    let stream = match tcp_stream(req.socket) {
        Ok(s) => s,
        Err(e) => {
            warn!("postscreen handed over an unusable connection: {e}");
            return Answer::Reply(Reply::Refused(e));
        }
    };
    let service: Rc<str> = Rc::from(req.service.as_str());
    runner.spawn(
        stream,
        req.client,
        req.server,
        set.clone(),
        &service,
        Admission::Handed(limit.clone()),
    );
    Answer::Reply(Reply::Taken(limit.as_ref().map_or(0, |l| l.waiting.get())))
}
