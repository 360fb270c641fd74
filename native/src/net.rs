//! The libp2p side of the desktop peer: transports, discovery, and the sync stream protocol.

use std::time::Duration;

use hellopears_core::limits;
use libp2p::allow_block_list::{self, BlockedPeers};
use libp2p::connection_limits::{self, ConnectionLimits};
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{StreamProtocol, autonat, dcutr, identify, identity, kad, mdns, noise, ping, relay, tcp, upnp, yamux};

/// The public IPFS DHT's protocol (Amino): peers meet there under rendezvous keys, with
/// thousands of DHT nodes (and relays) that are not ours.
pub const KAD_PROTOCOL: StreamProtocol = kad::PROTOCOL_NAME;

/// What a desktop peer calls itself in identify: desktops reach each other by hole
/// punching (DCUtR), not `/webrtc`.
pub const DESKTOP_AGENT: &str = concat!("hellopears-desktop/", env!("CARGO_PKG_VERSION"));

/// Everything the swarm runs.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Refuses peers banned for breaking the protocol.
    pub blocked: allow_block_list::Behaviour<BlockedPeers>,
    /// Caps connections (see [`limits`]).
    pub limits: connection_limits::Behaviour,
    /// Learns listen addresses and protocols of peers.
    pub identify: identify::Behaviour,
    /// Keeps connections alive and measures round trips.
    pub ping: ping::Behaviour,
    /// LAN discovery.
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    /// Topic discovery in the public IPFS DHT (provider records under rendezvous keys).
    pub kad: Toggle<kad::Behaviour<kad::store::MemoryStore>>,
    /// Raw streams for the sync protocol.
    pub stream: libp2p_stream::Behaviour,
    /// A limited relay for peers behind NATs (used once we have an external address).
    pub relay: crate::relay_server::Relay,
    /// Reservations on other peers' relays, and relayed connections.
    pub relay_client: relay::client::Behaviour,
    /// Upgrades relayed connections to direct ones by hole punching.
    pub dcutr: dcutr::Behaviour,
    /// Learns whether we are reachable (peers dial us back), and confirms external addresses.
    pub autonat: autonat::Behaviour,
    /// Asks a UPnP router, where there is one, to forward our ports.
    pub upnp: upnp::tokio::Behaviour,
}

/// AutoNAT probing: quick to start, and on any address (our peers may be on a LAN or in a
/// lab, not only on public IPs).
fn autonat_config() -> autonat::Config {
    autonat::Config {
        boot_delay: Duration::from_secs(2),
        retry_interval: Duration::from_secs(10),
        refresh_interval: Duration::from_secs(5 * 60),
        throttle_server_period: Duration::from_secs(1),
        confidence_max: 1,
        only_global_ips: false,
        // Servers are chosen by the peer (see `peer.rs`): never one we reach through a relay
        // or a hole punch, whose dial-back would collide with the punched connection.
        use_connected: false,
        ..autonat::Config::default()
    }
}

/// Limits of the relay every reachable peer offers: generous enough to sync through while
/// hole punching is tried (or fails), small enough not to become anyone's free proxy.
fn relay_config() -> relay::Config {
    relay::Config {
        max_reservations: limits::RELAY_RESERVATIONS,
        max_reservations_per_peer: limits::RELAY_RESERVATIONS_PER_PEER,
        reservation_duration: Duration::from_secs(3600),
        max_circuits: limits::RELAY_CIRCUITS,
        max_circuits_per_peer: limits::RELAY_CIRCUITS_PER_PEER,
        max_circuit_duration: Duration::from_secs(limits::RELAY_CIRCUIT_SECS),
        max_circuit_bytes: limits::RELAY_CIRCUIT_BYTES,
        ..relay::Config::default()
    }
}

/// Connection caps: established in all and per peer, and handshakes in flight.
fn connection_limits() -> ConnectionLimits {
    ConnectionLimits::default()
        .with_max_established(Some(limits::MAX_CONNECTIONS))
        .with_max_established_per_peer(Some(limits::MAX_CONNECTIONS_PER_PEER))
        .with_max_pending_incoming(Some(limits::MAX_PENDING_INBOUND))
        .with_max_pending_outgoing(Some(limits::MAX_PENDING_OUTBOUND))
}

/// A built swarm, and the peers that broke the `/webrtc` signaling protocol.
pub type Built = (libp2p::Swarm<Behaviour>, futures::channel::mpsc::UnboundedReceiver<webrtc_p2p::tokio::Misbehaviour>);

/// Builds the swarm with TCP (noise + yamux), QUIC, WebRTC-direct (for browser tabs that
/// can reach us), and `/webrtc` (ICE through NATs, signaled over relayed connections).
pub fn build_swarm(
    key: identity::Keypair,
    mdns_on: bool,
    dht_on: bool,
    webrtc: libp2p_webrtc::tokio::Certificate,
    webrtc_p2p: webrtc_p2p::tokio::Config,
) -> anyhow::Result<Built> {
    use libp2p::Transport as _;
    // The `/webrtc` transport signals on the swarm's own streams.
    let stream = libp2p_stream::Behaviour::new();
    let (p2p_transport, misbehaviour) =
        webrtc_p2p::tokio::Transport::new(key.public().to_peer_id(), stream.new_control(), webrtc_p2p);
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)?
        .with_quic()
        .with_other_transport(|key| {
            libp2p_webrtc::tokio::Transport::new(key.clone(), webrtc)
                .map(|(peer_id, connection), _| (peer_id, libp2p::core::muxing::StreamMuxerBox::new(connection)))
        })?
        .with_other_transport(|_| {
            p2p_transport
                .map(|(peer_id, connection), _| (peer_id, libp2p::core::muxing::StreamMuxerBox::new(connection)))
        })?
        // `/dnsaddr` (the public DHT's bootstrap peers) and `/dns` addresses.
        .with_dns()?
        .with_relay_client(noise::Config::new, yamux::Config::default)?
        .with_behaviour(|key, relay_client| {
            let peer_id = key.public().to_peer_id();
            let mdns =
                if mdns_on { Some(mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id)?) } else { None };
            let mut kad_config = kad::Config::new(KAD_PROTOCOL);
            kad_config.set_query_timeout(Duration::from_secs(30));
            let mut kad = kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_config);
            // A client until we know we are reachable (see `Discovery::set_server`): relay
            // reservations confirm circuit addresses, which must not make us a DHT server.
            kad.set_mode(Some(kad::Mode::Client));
            Ok(Behaviour {
                blocked: allow_block_list::Behaviour::default(),
                limits: connection_limits::Behaviour::new(connection_limits()),
                // Relayed addresses (reservations) come after the first identify: pushed.
                identify: identify::Behaviour::new(
                    identify::Config::new(hellopears_core::sync::IDENTIFY_PROTOCOL.into(), key.public())
                        .with_agent_version(DESKTOP_AGENT.into())
                        .with_push_listen_addr_updates(true),
                ),
                ping: ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_secs(15))),
                mdns: Toggle::from(mdns),
                kad: Toggle::from(dht_on.then_some(kad)),
                stream,
                relay: crate::relay_server::Relay::new(relay::Behaviour::new(peer_id, relay_config())),
                relay_client,
                dcutr: dcutr::Behaviour::new(peer_id),
                autonat: autonat::Behaviour::new(peer_id, autonat_config()),
                upnp: upnp::tokio::Behaviour::default(),
            })
        })?
        .with_swarm_config(|config| config.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();
    Ok((swarm, misbehaviour))
}
