//! smtpd: the SMTP server.
use std::os::fd::RawFd;

use crate::daemon::{self, Context};
use postern_config::Role;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

pub fn main(ipc_fd: RawFd) -> ! {
    daemon::run(Role::Smtpd, ipc_fd, |_params| Ok((serve, Vec::new())))
}

async fn serve(mut ctx: Context) {
    let mut accepts = tokio::task::JoinSet::new();
    for l in std::mem::take(&mut ctx.listeners) {
        let std_l = std::net::TcpListener::from(l.fd);
        let _ = std_l.set_nonblocking(true);
        let Ok(listener) = tokio::net::TcpListener::from_std(std_l) else {
            continue;
        };
        let sb = ctx.switchboard.clone();
        let banner = ctx.params.str("smtpd_banner").to_string();
        accepts.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                sb.connection(true);
                let sb = sb.clone();
                let banner = banner.clone();
                tokio::spawn(async move {
                    let (r, mut w) = stream.into_split();
                    let _ = w.write_all(format!("220 {banner}\r\n").as_bytes()).await;
                    let mut lines = BufReader::new(r).lines();
                    while let Ok(Some(l)) = lines.next_line().await {
                        if l.eq_ignore_ascii_case("QUIT") {
                            let _ = w.write_all(b"221 2.0.0 Bye\r\n").await;
                            break;
                        }
                        let _ = w
                            .write_all(b"502 5.5.2 Error: command not recognized\r\n")
                            .await;
                    }
                    sb.connection(false);
                });
            }
        });
    }
    let _ = ctx.shutdown.changed().await;
}
