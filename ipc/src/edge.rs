//! One edge of the process graph, named once: its handshake name, its
//! version, what the client sends and what the server answers. Opening a
//! channel, accepting one and the request-reply loop are written here once
//! for every edge; each edge's frame limits live on its message types.
//! Who may open which edge is `daemons/src/peers.rs`.
use std::future::Future;
use std::os::fd::OwnedFd;
use std::time::Duration;

use crate::channel::{Channel, ChannelError, Endpoint, Message};

pub trait Edge {
    /// The name both sides give in the hello.
    const NAME: &'static str;
    /// Bumped when any message of the edge changes shape.
    const VERSION: u32;
    /// What the client sends.
    type Request: Message;
    /// What the server answers (or, on a subscription, sends unasked).
    type Reply: Message;
}

/// The client's end of an edge.
pub type ClientEnd<E> = Endpoint<<E as Edge>::Request, <E as Edge>::Reply>;
/// The server's end of an edge.
pub type ServerEnd<E> = Endpoint<<E as Edge>::Reply, <E as Edge>::Request>;

/// The smallest receive bound: the hello and its answer always fit.
const MIN_FRAME: usize = 256;

/// Opens the client side: the hello, then a typed endpoint whose calls
/// each have `timeout`.
pub async fn open<E: Edge>(fd: OwnedFd, timeout: Duration) -> Result<ClientEnd<E>, ChannelError> {
    let mut ch = Channel::new(fd, E::Reply::MAX_FRAME.max(MIN_FRAME), timeout)?;
    ch.hello_client(E::NAME, E::VERSION).await?;
    Ok(Endpoint::from_channel(ch))
}

/// Accepts the server side: the peer's hello must name this edge and
/// version (it is answered either way, so the peer can say why).
pub async fn accept<E: Edge>(fd: OwnedFd, timeout: Duration) -> Result<ServerEnd<E>, ChannelError> {
    let mut ch = Channel::new(fd, E::Request::MAX_FRAME.max(MIN_FRAME), timeout)?;
    ch.hello_server(E::NAME, E::VERSION).await?;
    Ok(Endpoint::from_channel(ch))
}

/// What a server's handler decides for one request.
pub enum Answer<R> {
    /// Send this reply and wait for the next request.
    Reply(R),
    /// Send this reply, then close the channel.
    Last(R),
    /// Close the channel without a reply.
    Close,
}

/// The request-reply loop of a server: each request gets the handler's
/// answer, in order. Returns Ok when the peer closed the channel or the
/// handler ended it, Err on a broken channel or a protocol violation (the
/// caller logs it; the channel is dropped either way).
pub async fn serve<E, F, Fut>(mut ep: ServerEnd<E>, mut handle: F) -> Result<(), ChannelError>
where
    E: Edge,
    F: FnMut(E::Request) -> Fut,
    Fut: Future<Output = Answer<E::Reply>>,
{
    loop {
        let req = match ep.recv().await {
            Ok(r) => r,
            Err(ChannelError::Closed) => return Ok(()),
            Err(e) => return Err(e),
        };
        match handle(req).await {
            Answer::Reply(r) => ep.send(&r).await?,
            Answer::Last(r) => return ep.send(&r).await,
            Answer::Close => return Ok(()),
        }
    }
}

/// Declares the marker type of an edge module.
#[macro_export]
macro_rules! edge {
    ($(#[$doc:meta])* $name:ident, $request:ty, $reply:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $name;
        impl $crate::edge::Edge for $name {
            const NAME: &'static str = EDGE;
            const VERSION: u32 = VERSION;
            type Request = $request;
            type Reply = $reply;
        }
    };
}
