//! The native side of `/webrtc` on webrtc-rs: a [`Transport`] that dials
//! `.../p2p-circuit/webrtc/p2p/<peer>` and accepts `/webrtc` through the signaling
//! protocol, run on the swarm's streams (`libp2p_stream`), and a STUN responder.
//!
//! Dialing needs a connection to the peer already (a relayed one, normally): the signaling
//! stream is opened on it. The peer's code dials the relayed address first and the `/webrtc`
//! address once that is up, like DCUtR upgrades a relayed connection.

mod connection;
mod handshake;
pub mod stun_server;

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;

pub use connection::{Connection, Stream};
pub use stun_server::serve_stun;

use crate::signaling::Role;
pub use crate::transport::{Config, Error, Misbehaviour, StunServers};

/// webrtc-rs.
#[derive(Debug, Default, Clone, Copy)]
pub struct WebRtcRs;

impl crate::transport::Engine for WebRtcRs {
    type Connection = Connection;

    fn handshake(
        &self,
        stream: libp2p::Stream,
        role: Role,
        config: Arc<Config>,
    ) -> BoxFuture<'static, Result<Connection, Error>> {
        async move { handshake::run(stream, role, &config).await.map(Connection::new) }.boxed()
    }
}

/// The native `/webrtc` transport.
pub type Transport = crate::transport::Transport<WebRtcRs>;
