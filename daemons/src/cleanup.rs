//! cleanup: turns a stream from smtpd into a queue file.
use std::os::fd::RawFd;

use crate::daemon::{self, Context};
use postern_config::Role;

pub fn main(ipc_fd: RawFd) -> ! {
    daemon::run(Role::Cleanup, ipc_fd, |_params| Ok((serve, Vec::new())))
}

async fn serve(mut ctx: Context) {
    loop {
        tokio::select! {
            p = ctx.inbound.recv() => if p.is_none() { return },
            _ = ctx.shutdown.changed() => return,
        }
    }
}
