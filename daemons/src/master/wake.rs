//! Waking pickup, an on-demand role that nobody asks for a channel: the
//! master watches the public pickup socket (bound by the master, so
//! sendmail can connect before pickup runs) and the maildrop directory.
//! A connection waiting on the socket, or a file in the maildrop (mail
//! written while the system was down, or by a sendmail that could not
//! reach the socket), starts pickup; from then on it runs and is
//! supervised like any other role.
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use postern_config::Role;
use tokio::sync::mpsc;

use super::Event;
use crate::warn;

/// How often the maildrop is looked at while pickup is idle (Postfix's
/// pickup polls every 60 seconds too).
const MAILDROP_POLL: Duration = Duration::from_secs(60);

/// Is there a file waiting in the maildrop?
pub(super) fn maildrop_has_mail(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut rd| {
        rd.any(|e| {
            e.ok()
                .is_some_and(|e| !e.file_name().to_string_lossy().starts_with('.'))
        })
    })
}

/// Watches `socket` (a duplicate of the pickup socket) and `maildrop`
/// until either wants pickup, then asks the event loop to start it once.
pub(super) fn watch(socket: Option<OwnedFd>, maildrop: PathBuf, tx: mpsc::UnboundedSender<Event>) {
    let socket = socket.and_then(|fd| match postern_sandbox::sys::async_fd(fd) {
        Ok(a) => Some(a),
        Err(e) => {
            warn!("cannot watch the pickup socket: {e}; pickup starts at once");
            let _ = tx.send(Event::Wake { role: Role::Pickup });
            None
        }
    });
    tokio::spawn(async move {
        loop {
            let connection = async {
                match &socket {
                    Some(s) => {
                        let _ = s.readable().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = connection => break,
                _ = tokio::time::sleep(MAILDROP_POLL) => {
                    if maildrop_has_mail(&maildrop) {
                        break;
                    }
                }
            }
        }
        let _ = tx.send(Event::Wake { role: Role::Pickup });
    });
}
