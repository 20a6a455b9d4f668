//! postscreen -> smtpd: a passed client's socket (schema:
//! postscreen_smtpd.capnp).
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::channel::{Message, no_fds};
use crate::frame::{self, Violation, clip, text};
use crate::generated::postscreen_smtpd_capnp::{reply, request};

pub const EDGE: &str = "postscreen-smtpd";
pub const VERSION: u32 = crate::generated::postscreen_smtpd_capnp::VERSION;
crate::edge!(
    /// This edge, for `edge::open`, `edge::accept` and `edge::serve`.
    Link,
    Request,
    Reply
);
/// Longest service name.
pub const MAX_SERVICE: usize = 64;
/// Longest refusal.
pub const MAX_TEXT: usize = 256;

#[derive(Debug)]
pub struct Request {
    pub service: String,
    pub client: SocketAddr,
    pub server: Option<SocketAddr>,
    /// Refuse when this many handed-over clients already wait for a
    /// session slot (postscreen_post_queue_limit); 0: no limit.
    pub max_waiting: u32,
    /// The client's connection.
    pub socket: OwnedFd,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// smtpd owns the connection; this many handed-off clients wait for a
    /// session slot of their service (postscreen_post_queue_limit).
    Taken(u32),
    Refused(String),
    /// The service's session slots are taken and `max_waiting` clients
    /// wait already.
    Busy,
}

fn addr(
    t: capnp::Result<capnp::text::Reader<'_>>,
    port: u16,
    field: &'static str,
) -> Result<Option<SocketAddr>, Violation> {
    let s = text(t, field, 64)?;
    if s.is_empty() {
        return Ok(None);
    }
    let ip: IpAddr = s.parse().map_err(|_| Violation::Field {
        field,
        why: "not an IP address".into(),
    })?;
    Ok(Some(SocketAddr::new(ip, port)))
}

impl Message for Request {
    const MAX_FRAME: usize = 1024;

    fn encode(&self) -> Vec<u8> {
        let mut b = frame::builder();
        {
            let mut r = b.init_root::<request::Builder>();
            r.set_service(clip(&self.service, MAX_SERVICE));
            r.set_client_address(self.client.ip().to_string().as_str());
            r.set_client_port(self.client.port());
            r.set_max_waiting(self.max_waiting);
            if let Some(s) = self.server {
                r.set_server_address(s.ip().to_string().as_str());
                r.set_server_port(s.port());
            }
        }
        frame::finish(&b)
    }

    fn fds(&self) -> Vec<BorrowedFd<'_>> {
        vec![self.socket.as_fd()]
    }

    fn decode(f: &[u8], mut fds: Vec<OwnedFd>) -> Result<Self, Violation> {
        if fds.len() != 1 {
            return Err(Violation::FdCount {
                got: fds.len(),
                want: 1,
            });
        }
        let msg = frame::open(f, Self::MAX_FRAME)?;
        let r = msg.get_root::<request::Reader>()?;
        let service = text(r.get_service(), "service", MAX_SERVICE)?;
        let client = addr(r.get_client_address(), r.get_client_port(), "clientAddress")?.ok_or(
            Violation::Field {
                field: "clientAddress",
                why: "empty".into(),
            },
        )?;
        let server = addr(r.get_server_address(), r.get_server_port(), "serverAddress")?;
        Ok(Request {
            service,
            client,
            server,
            max_waiting: r.get_max_waiting(),
            socket: fds.remove(0),
        })
    }
}

impl Message for Reply {
    const MAX_FRAME: usize = 1024;

    fn encode(&self) -> Vec<u8> {
        let mut b = frame::builder();
        {
            let mut r = b.init_root::<reply::Builder>();
            match self {
                Reply::Taken(n) => r.set_taken(*n),
                Reply::Refused(t) => r.set_refused(clip(t, MAX_TEXT)),
                Reply::Busy => r.set_busy(()),
            }
        }
        frame::finish(&b)
    }

    fn decode(f: &[u8], fds: Vec<OwnedFd>) -> Result<Self, Violation> {
        no_fds(&fds)?;
        let msg = frame::open(f, Self::MAX_FRAME)?;
        let r = msg.get_root::<reply::Reader>()?;
        Ok(match r.which()? {
            reply::Taken(n) => Reply::Taken(n),
            reply::Refused(t) => Reply::Refused(text(t, "refused", MAX_TEXT)?),
            reply::Busy(()) => Reply::Busy,
        })
    }
}
