//! Queueing a whole message through cleanup, for the roles that make or
//! take mail locally (pickup, local's forwarding, bounce's notices).
use std::time::Duration;

use postern_config::Role;
use postern_ipc::smtpd_cleanup as sc;

use crate::daemon::Switchboard;

#[derive(Debug)]
pub enum Error {
    /// cleanup refused the message (size, hops, no recipients...).
    Refused(sc::Failure),
    /// cleanup or the channel to it failed.
    Broken(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Refused(x) => write!(f, "{} {} {}", x.code, x.enhanced, x.text),
            Error::Broken(e) => f.write_str(e),
        }
    }
}

fn broken(e: impl std::fmt::Display) -> Error {
    Error::Broken(e.to_string())
}

fn unexpected(r: sc::Reply) -> Error {
    match r {
        sc::Reply::Failed(f) => Error::Refused(f),
        other => Error::Broken(format!("cleanup: unexpected {other:?}")),
    }
}

/// Begin, recipients, content, end, commit. Returns the queue id once the
/// message is durable. `begun` sees the queue id as soon as it exists.
pub async fn to_cleanup(
    sb: &Switchboard,
    query: Duration,
    transfer: Duration,
    begin: sc::Begin,
    rcpts: &[sc::Recipient],
    content: &[u8],
    begun: impl FnOnce(&str),
) -> Result<String, Error> {
    let no_effects = sc::Effects::default();
    to_cleanup_with(
        sb,
        query,
        transfer,
        begin,
        rcpts,
        content,
        &no_effects,
        begun,
    )
    .await
}

/// [`to_cleanup`] with access-table actions (HOLD, REDIRECT, BCC,
/// PREPEND) for cleanup to carry out.
#[allow(clippy::too_many_arguments)]
pub async fn to_cleanup_with(
    sb: &Switchboard,
    query: Duration,
    transfer: Duration,
    begin: sc::Begin,
    rcpts: &[sc::Recipient],
    content: &[u8],
    effects: &sc::Effects,
    begun: impl FnOnce(&str),
) -> Result<String, Error> {
    let fd = sb.connect(Role::Cleanup).await.map_err(broken)?;
    let mut ep = postern_ipc::edge::open::<sc::Link>(fd, query)
        .await
        .map_err(broken)?;
    let id = match ep.call(&sc::Request::Begin(begin)).await.map_err(broken)? {
        sc::Reply::Begun(id) => id,
        other => return Err(unexpected(other)),
    };
    begun(&id);
    if !effects.is_empty() {
        ep.send(&sc::Request::Effects(effects.clone()))
            .await
            .map_err(broken)?;
    }
    for batch in rcpts.chunks(sc::MAX_BATCH) {
        ep.send(&sc::Request::Recipients(batch.to_vec()))
            .await
            .map_err(broken)?;
    }
    for chunk in content.chunks(sc::MAX_CHUNK) {
        ep.send(&sc::Request::Content(chunk.to_vec()))
            .await
            .map_err(broken)?;
    }
    // The end can take as long as the fsync behind it.
    ep.channel().timeout = transfer;
    match ep.call(&sc::Request::End).await.map_err(broken)? {
        sc::Reply::Committed => {
            crate::metrics::received_locally();
            Ok(id)
        }
        other => Err(unexpected(other)),
    }
}
