//! Starting a peer: opening its list and keys before the runtime starts, then running it
//! with its control socket and web server. Used by `up`, the terminal UI and the window.

use std::path::PathBuf;

use crate::lists::Selection;
use crate::local::{self, Home};
use crate::{control, peer, web};

/// Where `--web` serves the web app.
#[derive(Debug, Clone)]
pub struct Site {
    /// The address to bind.
    pub addr: std::net::SocketAddr,
    /// The built web app.
    pub root: Option<PathBuf>,
}

/// Everything a peer needs to run, opened before the runtime starts.
#[derive(Debug)]
pub struct Prepared {
    /// Every list of the data dir; the first is the one selected (the UIs show it).
    pub slots: Vec<peer::Slot>,
    /// The data dir.
    pub home: Home,
    /// The libp2p identity.
    pub node_key: libp2p::identity::Keypair,
    /// How the peer runs.
    pub config: peer::PeerConfig,
    /// The control socket's path (none in memory).
    pub socket: Option<PathBuf>,
    /// The web app's server, if any.
    pub site: Option<Site>,
}

/// Runs a prepared peer with its control socket and web server until it stops.
pub async fn serve(prepared: Prepared, handle: peer::PeerHandle, inbox: peer::PeerInbox) -> anyhow::Result<()> {
    let Prepared { slots, home, node_key, config, socket, site } = prepared;
    let _served = socket.as_deref().map(|path| control::serve(path, handle.clone())).transpose()?;
    if let Some(Site { addr, root }) = site {
        // The page's default list is a public topic this peer serves: a tab holds no private
        // list's secrets until it opens an invite link.
        let public = slots.iter().map(|slot| slot.node.replica().topic()).find(|topic| !topic.is_private()).cloned();
        let name = public.as_ref().map_or(crate::lists::DEFAULT_TOPIC, |topic| topic.name()).to_owned();
        // A peer given its external address answers STUN from the start (see `Peer::answer_stun`).
        let port = config.stun_port.or((!config.external.is_empty()).then_some(crate::peer::DEFAULT_STUN_PORT));
        let stun = web::Stun { servers: config.stun_servers.clone(), port };
        let app = config.app.as_ref().map(|(_, ready)| ready.subscribe());
        let bound = web::serve(addr, name, config.webrtc_addrs.clone(), root, app, stun).await?;
        if !config.quiet {
            match &public {
                Some(topic) => println!("web app on http://{bound}/{}", hellopears_core::ui::share_fragment(topic)),
                None => println!("web app on http://{bound}/"),
            }
            if slots.iter().any(|slot| slot.node.replica().topic().is_private()) {
                println!("private lists open in a tab from an invite link: hellopears --list NAME invite");
            }
        }
    }
    peer::run(slots, home, node_key, config, inbox).await
}

/// Opens a list's node, keys and configuration for a peer.
pub fn prepare_peer(
    data: Option<PathBuf>,
    selection: &Selection,
    mut listen: Vec<libp2p::Multiaddr>,
    bootstrap: Vec<libp2p::Multiaddr>,
    discovery: peer::Discovering,
    quiet: bool,
) -> anyhow::Result<Prepared> {
    let port_file = data.as_ref().map(|dir| dir.join("webrtc.port"));
    if listen.is_empty() {
        // The WebRTC-direct port is remembered, so tabs find this peer again after a restart.
        let port: u16 = port_file
            .as_ref()
            .and_then(|file| std::fs::read_to_string(file).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0);
        listen = vec![
            "/ip4/0.0.0.0/tcp/0".parse()?,
            "/ip4/0.0.0.0/udp/0/quic-v1".parse()?,
            format!("/ip4/0.0.0.0/udp/{port}/webrtc-direct").parse()?,
        ];
    }
    let home = Home::open(data.as_deref())?;
    let node_key = match &data {
        Some(dir) => local::node_key(dir)?,
        None => libp2p::identity::Keypair::generate_ed25519(),
    };
    let identity = node_key.public().to_peer_id().to_bytes();
    let selected = home.select(selection)?;
    // The peers named by the invite links of joined lists are dialed at every start.
    let invited: Vec<libp2p::Multiaddr> = home
        .lists()?
        .iter()
        .flat_map(|record| record.peers.iter().filter_map(|addr| addr.parse::<libp2p::Multiaddr>().ok()))
        .collect();
    // With the DHT on and no bootstrap peers given, the public IPFS DHT's.
    let public_dht = discovery.dht && bootstrap.is_empty();
    let bootstrap = if public_dht { crate::discovery::public_bootstrap() } else { bootstrap };
    let mut records = vec![selected.clone()];
    records.extend(home.lists()?.into_iter().filter(|r| r.topic().id() != selected.topic().id()));
    let device_name = home.device_name();
    let mut slots = Vec::new();
    for record in records {
        let topic = record.topic();
        let backend = home.backend(&topic)?;
        let config =
            hellopears_core::node::Config { pex: discovery.pex, identity: identity.clone(), ..Default::default() };
        let node = local::open_node(&backend, topic, config)?;
        slots.push(peer::Slot::new(record, node, backend, &device_name));
    }
    let webrtc_certificate = local::webrtc_certificate(data.as_deref())?;
    let config = peer::PeerConfig {
        listen,
        bootstrap,
        public_dht,
        invited,
        discovery,
        quiet,
        external: Vec::new(),
        webrtc_certificate,
        webrtc_port_file: port_file,
        webrtc_addrs: Default::default(),
        stun_servers: Vec::new(),
        stun_port: None,
        view: None,
        eval: None,
        data_dir: data.clone(),
        seed: Vec::new(),
        app: None,
        probe: None,
    };
    let socket = data.as_ref().map(|dir| dir.join(control::SOCKET));
    Ok(Prepared { slots, home, node_key, config, socket, site: None })
}
