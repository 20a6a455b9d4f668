//! Talking to a running master over its control socket.
use std::path::Path;
use std::time::Duration;

use postern_ipc::control::{Reply, Request};
use postern_ipc::{ChannelError, Endpoint};

#[derive(Debug)]
pub enum ClientError {
    /// No master listens on the socket.
    NotRunning,
    Other(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::NotRunning => f.write_str("the Postern mail system is not running"),
            ClientError::Other(s) => f.write_str(s),
        }
    }
}

pub fn request(socket: &Path, req: Request) -> Result<Reply, ClientError> {
    let fd = postern_ipc::listener::connect_path(socket).map_err(|e| match e.raw_os_error() {
        Some(c)
            if c == nix::errno::Errno::ENOENT as i32
                || c == nix::errno::Errno::ECONNREFUSED as i32 =>
        {
            ClientError::NotRunning
        }
        _ => ClientError::Other(format!("cannot connect to {}: {e}", socket.display())),
    })?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ClientError::Other(e.to_string()))?;
    rt.block_on(async {
        let mut ep = Endpoint::<Request, Reply>::new(fd, Duration::from_secs(30))
            .map_err(|e| ClientError::Other(e.to_string()))?;
        ep.call(&req).await.map_err(|e| match e {
            ChannelError::Closed => ClientError::NotRunning,
            e => ClientError::Other(format!("control socket: {e}")),
        })
    })
}
