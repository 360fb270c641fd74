//! The relay server, guarded against a panic of rust-libp2p's `relay::Behaviour` (0.22):
//! when its status changes (our external addresses appear or go), it notifies every
//! connection it knows, relayed ones too, although their handler is a dummy; the swarm then
//! panics in that connection's task ("entered unreachable code", `handler/either.rs`), and
//! the relayed connection dies without a trace. The guard passes everything through but
//! those notifications. (Upstream candidate: skip relayed connections in
//! `reconfigure_relay_status`.)

use std::collections::HashSet;
use std::task::{Context, Poll};

use libp2p::PeerId;
use libp2p::core::transport::PortUse;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::multiaddr::Protocol;
use libp2p::relay;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, NotifyHandler, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};

/// `relay::Behaviour` that never notifies the handlers of relayed connections.
pub struct Relay {
    inner: relay::Behaviour,
    /// Our connections that go through a relay (their relay handler is a dummy).
    relayed: HashSet<ConnectionId>,
}

impl Relay {
    /// Guards `inner`.
    pub fn new(inner: relay::Behaviour) -> Self {
        Self { inner, relayed: HashSet::new() }
    }
}

fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| p == Protocol::P2pCircuit)
}

impl NetworkBehaviour for Relay {
    type ConnectionHandler = <relay::Behaviour as NetworkBehaviour>::ConnectionHandler;
    type ToSwarm = relay::Event;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner.handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if is_relayed(local_addr) {
            self.relayed.insert(connection_id);
        }
        self.inner.handle_established_inbound_connection(connection_id, peer, local_addr, remote_addr)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.inner.handle_pending_outbound_connection(connection_id, maybe_peer, addresses, effective_role)
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if is_relayed(addr) {
            self.relayed.insert(connection_id);
        }
        self.inner.handle_established_outbound_connection(connection_id, peer, addr, role_override, port_use)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match &event {
            FromSwarm::ConnectionClosed(closed) => {
                self.relayed.remove(&closed.connection_id);
            }
            // A connection another behaviour denied after ours accepted it.
            FromSwarm::ListenFailure(failure) => {
                self.relayed.remove(&failure.connection_id);
            }
            FromSwarm::DialFailure(failure) => {
                self.relayed.remove(&failure.connection_id);
            }
            _ => {}
        }
        self.inner.on_swarm_event(event);
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.inner.on_connection_handler_event(peer, connection_id, event);
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        loop {
            match self.inner.poll(cx) {
                Poll::Ready(ToSwarm::NotifyHandler { handler: NotifyHandler::One(id), peer_id, .. })
                    if self.relayed.contains(&id) =>
                {
                    tracing::debug!(peer = %peer_id, "relay: not notifying a relayed connection");
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use libp2p::core::ConnectedPoint;
    use libp2p::swarm::behaviour::{ConnectionEstablished, ExternalAddrConfirmed};

    use super::*;

    fn waker() -> Context<'static> {
        Context::from_waker(futures::task::noop_waker_ref())
    }

    /// An external address appears while a relayed connection is open: the relay tells its
    /// direct connections its new status, and not the relayed one.
    #[test]
    fn a_status_change_reaches_direct_connections_only() {
        let me = PeerId::random();
        let mut relay = Relay::new(relay::Behaviour::new(me, relay::Config::default()));
        let (direct_peer, relayed_peer) = (PeerId::random(), PeerId::random());
        let direct_addr: Multiaddr = "/ip4/10.0.0.2/tcp/4001".parse().expect("addr");
        let relayed_addr: Multiaddr =
            format!("/ip4/10.0.0.3/tcp/4001/p2p/{}/p2p-circuit", PeerId::random()).parse().expect("addr");
        let local: Multiaddr = "/ip4/10.0.0.1/tcp/4001".parse().expect("addr");
        let (direct, relayed) = (ConnectionId::new_unchecked(1), ConnectionId::new_unchecked(2));
        for (id, peer, local_addr) in [(direct, direct_peer, &local), (relayed, relayed_peer, &relayed_addr)] {
            relay
                .handle_established_inbound_connection(id, peer, local_addr, &direct_addr)
                .unwrap_or_else(|_| panic!("accepted"));
            let endpoint =
                ConnectedPoint::Listener { local_addr: local_addr.clone(), send_back_addr: direct_addr.clone() };
            relay.on_swarm_event(FromSwarm::ConnectionEstablished(ConnectionEstablished {
                peer_id: peer,
                connection_id: id,
                endpoint: &endpoint,
                failed_addresses: &[],
                other_established: 0,
            }));
        }
        let external: Multiaddr = "/ip4/192.0.2.1/tcp/4001".parse().expect("addr");
        relay.on_swarm_event(FromSwarm::ExternalAddrConfirmed(ExternalAddrConfirmed { addr: &external }));
        let mut notified = Vec::new();
        while let Poll::Ready(event) = relay.poll(&mut waker()) {
            if let ToSwarm::NotifyHandler { handler: NotifyHandler::One(id), .. } = event {
                notified.push(id);
            }
        }
        assert_eq!(notified, vec![direct], "only the direct connection hears of the new status");
    }
}
