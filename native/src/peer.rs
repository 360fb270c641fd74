//! `hellopears up`: a running peer. One task owns the swarm, the replica and every sync
//! session; stream IO runs in small tasks that pass frames over bounded channels.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use futures::io::{AsyncReadExt, AsyncWriteExt};
use hellopears_core::sync::{Session, SessionConfig, frame};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, identify, identity, kad, mdns};
use tokio::sync::{mpsc, oneshot};

use crate::commands::{self, PeerStatus, Reply, Request};
use crate::local::Local;
use crate::net::{self, BehaviourEvent, SYNC_PROTOCOL};

/// Which discovery mechanisms run, besides bootstrap addresses.
#[derive(Debug, Clone, Copy)]
pub struct Discovery {
    /// mDNS on the LAN.
    pub mdns: bool,
    /// The DHT.
    pub dht: bool,
    /// Peer exchange inside the sync protocol.
    pub pex: bool,
}

/// How `up` runs.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start.
    pub bootstrap: Vec<Multiaddr>,
    /// Which discovery mechanisms run.
    pub discovery: Discovery,
    /// Where the control socket goes (None: no control socket).
    pub control_socket: Option<PathBuf>,
    /// Print nothing on stdout (the terminal UI owns the screen).
    pub quiet: bool,
    /// Addresses others reach us at (a public peer): relay service from the start.
    pub external: Vec<Multiaddr>,
    /// The WebRTC-direct certificate (persisted, so the certhash in our address is stable).
    pub webrtc_certificate: libp2p_webrtc::tokio::Certificate,
    /// Where to remember the WebRTC-direct port, so browser tabs find us at the same
    /// address after a restart.
    pub webrtc_port_file: Option<PathBuf>,
    /// Serve the web app on this address (and from this build output).
    pub web: Option<(std::net::SocketAddr, Option<PathBuf>)>,
    /// A native window showing this peer: it gets every change as a snapshot, and runs
    /// the scripts of `Request::Eval`.
    pub window: Option<WindowLink>,
}

/// The peer's side of a native window.
#[derive(Debug, Clone)]
pub struct WindowLink {
    /// The state the window shows.
    pub view: tokio::sync::watch::Sender<hellopears_web::model::Snapshot>,
    /// Scripts to run in the window's page, with where their result goes.
    pub eval: mpsc::Sender<(String, oneshot::Sender<Reply>)>,
}

/// Whether an address is a WebRTC-direct one.
pub fn is_webrtc(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, libp2p::multiaddr::Protocol::WebRTCDirect))
}

/// Sends commands to a running peer.
#[derive(Clone, Debug)]
pub struct PeerHandle {
    tx: mpsc::Sender<Inbound>,
}

/// The receiving end of a [`PeerHandle`], handed to [`run`].
#[derive(Debug)]
pub struct PeerInbox {
    rx: mpsc::Receiver<Inbound>,
}

/// A handle and the inbox it feeds.
pub fn channel() -> (PeerHandle, PeerInbox) {
    let (tx, rx) = mpsc::channel(1024);
    (PeerHandle { tx }, PeerInbox { rx })
}

impl PeerHandle {
    /// Runs a command on the peer's replica.
    pub async fn request(&self, request: Request) -> Reply {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Inbound::Command(request, reply)).await.map_err(|_| "the peer stopped".to_owned())?;
        answer.await.map_err(|_| "the peer stopped".to_owned())?
    }

    /// Asks the peer to save and stop.
    pub async fn shutdown(&self) {
        let _ = self.tx.send(Inbound::Shutdown).await;
    }
}

/// Messages into the peer's task.
pub(crate) enum Inbound {
    /// A framed sync message from a peer.
    Frame(PeerId, Vec<u8>),
    /// A peer's inbound stream ended.
    Closed(PeerId, String),
    /// A peer broke the framing: drop it.
    Violation(PeerId, String),
    /// Our outbound stream to a peer is open.
    Writer(PeerId, mpsc::Sender<Vec<u8>>),
    /// Our outbound stream to a peer failed (or could not be opened).
    WriterLost(PeerId),
    /// A command from the control socket or the terminal UI.
    Command(Request, oneshot::Sender<Reply>),
    /// Save and stop.
    Shutdown,
}

/// One connection to a peer.
#[derive(Clone, Debug)]
struct Link {
    id: libp2p::swarm::ConnectionId,
    addr: Multiaddr,
    relayed: bool,
    dialed: bool,
    /// A direct connection that came while only relayed ones existed: a hole punch.
    punched: bool,
    /// When it was established.
    since: Instant,
}

/// How long a relayed-only peer may wait for a hole punch before the status says none came
/// (DCUtR makes three attempts about ten seconds apart; the failure is reported on the side
/// that initiated them).
const PUNCH_PATIENCE: Duration = Duration::from_secs(40);

struct PeerState {
    session: Session,
    writer: Option<mpsc::Sender<Vec<u8>>>,
    backlog: Vec<Vec<u8>>,
    links: Vec<Link>,
    /// The outcome of the last hole punch with this peer.
    punched: Option<Result<(), String>>,
    /// A direct connection came while only relayed ones existed (a hole punch).
    was_punched: bool,
    /// Where it listens (from identify), with `/p2p/<id>`: what peer exchange hands out.
    listen: Vec<Multiaddr>,
    /// When to try opening a new outbound stream after the last one failed.
    reopen_at: Option<Instant>,
    /// Outbound streams that failed in a row.
    failures: u8,
    /// When a sync frame last came from it (ms since the Unix epoch).
    last_frame: u64,
}

/// How long after its relayed connection closed a direct connection to a peer still counts
/// as a hole punch.
const RECENTLY_RELAYED: Duration = Duration::from_secs(10);

/// How long we wait for a browser's sync stream before opening ours anyway.
const BROWSER_STREAM_FALLBACK: Duration = Duration::from_secs(3);

/// Outbound sync streams that may fail in a row before the peer is given up.
const MAX_STREAM_FAILURES: u8 = 3;

const BACKLOG_LIMIT: usize = 1024;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Runs the peer until Ctrl-C or [`PeerHandle::shutdown`].
pub async fn run(
    mut local: Local,
    node_key: identity::Keypair,
    config: PeerConfig,
    handle: PeerHandle,
    inbox: PeerInbox,
) -> anyhow::Result<()> {
    let say = |line: String| {
        if !config.quiet {
            println!("{line}");
        }
    };
    let mut swarm =
        net::build_swarm(node_key, config.discovery.mdns, config.discovery.dht, config.webrtc_certificate.clone())?;
    let me = *swarm.local_peer_id();
    say(format!("peer id {me}"));
    let mut unconfirmed_listeners = std::collections::HashSet::new();
    for addr in &config.listen {
        let listener = match swarm.listen_on(addr.clone()) {
            Err(error) if is_webrtc(addr) && config.webrtc_port_file.is_some() => {
                // The remembered port is taken: take any.
                tracing::warn!(%addr, %error, "cannot listen on the remembered WebRTC port; using another");
                let any: Multiaddr = addr
                    .iter()
                    .map(|p| match p {
                        libp2p::multiaddr::Protocol::Udp(_) => libp2p::multiaddr::Protocol::Udp(0),
                        other => other,
                    })
                    .collect();
                swarm.listen_on(any)?
            }
            other => other?,
        };
        unconfirmed_listeners.insert(listener);
    }
    let webrtc_addrs: crate::web::WebrtcAddrs = Default::default();
    if let Some((addr, root)) = &config.web {
        let bound =
            crate::web::serve(*addr, local.replica.topic().name().to_owned(), webrtc_addrs.clone(), root.clone())
                .await?;
        let fragment = format!("#topic={}", local.replica.topic().name());
        say(format!("web app on http://{bound}/{fragment}"));
    }
    for addr in &config.external {
        // The relay serves only once an external address is confirmed: confirm ours now.
        swarm.add_external_address(addr.clone());
    }
    // Bootstrap peers are dialed once every listener is up, so outgoing TCP connections reuse
    // the listening port and the addresses peers observe are ones hole punching can use.
    let mut bootstrap = Some(config.bootstrap.clone());
    let mut reserved_on = std::collections::HashSet::new();
    let mut deferred_dials: Vec<(Instant, PeerId, Multiaddr)> = Vec::new();
    let mut retry_reservations = false;
    let mut circuit_dials: HashMap<PeerId, Instant> = HashMap::new();
    let mut relays: HashMap<PeerId, Multiaddr> = HashMap::new();
    let discovery = kad::RecordKey::new(&local.replica.topic().discovery_key().0);
    let mut control = swarm.behaviour().stream.new_control();
    let mut incoming = control.accept(SYNC_PROTOCOL).map_err(|_| anyhow::anyhow!("sync protocol registered twice"))?;
    let (tx, mut rx) = (handle.tx, inbox.rx);
    if let Some(path) = &config.control_socket {
        crate::control::serve(path, tx.clone())?;
    }
    let mut peers: HashMap<PeerId, PeerState> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut discover = tokio::time::interval(Duration::from_secs(20));
    let mut announced = false;
    let pex = config.discovery.pex;
    let mut progress = Progress { quiet: config.quiet, ..Progress::default() };
    // Ctrl-C, or a service manager's SIGTERM: save and stop.
    let shutdown = async {
        #[cfg(unix)]
        if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    };
    tokio::pin!(shutdown);
    say(format!(
        "topic {} ({}), writer {}",
        local.replica.topic().name(),
        local.replica.topic().id(),
        local.replica.writer_id().short()
    ));
    say("alone: waiting for peers".into());
    let mut view_stamp = None;
    let mut recently_relayed: HashMap<PeerId, Instant> = HashMap::new();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            event = swarm.select_next_some() => match event {
                SwarmEvent::NewListenAddr { address, listener_id } => {
                    say(format!("listening on {address}/p2p/{me}"));
                    if is_webrtc(&address) {
                        remember_webrtc(&address, me, &webrtc_addrs, config.webrtc_port_file.as_deref());
                    }
                    unconfirmed_listeners.remove(&listener_id);
                    if unconfirmed_listeners.is_empty() && let Some(addrs) = bootstrap.take() {
                        for addr in addrs {
                            if let Err(error) = swarm.dial(addr.clone()) {
                                tracing::warn!(%addr, %error, "cannot dial bootstrap address");
                            }
                        }
                    }
                }
                SwarmEvent::ConnectionEstablished { peer_id, connection_id, endpoint, num_established, .. } => {
                    tracing::info!(peer = %peer_id, addr = %endpoint.get_remote_address(), relayed = endpoint.is_relayed(), "connected");
                    // A punch can also land just after the relayed connection closed (the other
                    // side closes it as soon as its end of the punch is up): remember such peers
                    // for a few seconds.
                    let just_relayed = recently_relayed.remove(&peer_id).is_some_and(|at| at.elapsed() < RECENTLY_RELAYED);
                    let only_relayed = just_relayed
                        || peers.get(&peer_id).is_some_and(|s| !s.links.is_empty() && s.links.iter().all(|l| l.relayed));
                    let link = Link {
                        id: connection_id,
                        addr: endpoint.get_remote_address().clone(),
                        relayed: endpoint.is_relayed(),
                        dialed: endpoint.is_dialer(),
                        punched: only_relayed && !endpoint.is_relayed(),
                        since: Instant::now(),
                    };
                    if !link.relayed && !link.punched {
                        swarm.behaviour_mut().autonat.add_server(peer_id, Some(link.addr.clone()));
                    }
                    if link.punched {
                        // The relayed connection was only a step: close it, so sync moves to the
                        // direct one (its streams are reopened there) and the relay is freed.
                        for relayed in peers.get(&peer_id).into_iter().flat_map(|s| s.links.iter().filter(|l| l.relayed)) {
                            swarm.close_connection(relayed.id);
                        }
                    }
                    if let Some(state) = peers.get_mut(&peer_id) {
                        // Once punched, the peer stays hole-punched while connected: a punch can
                        // leave two direct connections (one from each side) and the first may be
                        // the one that is closed.
                        state.was_punched |= link.punched;
                        state.links.push(link.clone());
                    }
                    if endpoint.is_dialer()
                        && let Some(kad) = swarm.behaviour_mut().kad.as_mut()
                    {
                        kad.add_address(&peer_id, endpoint.get_remote_address().clone());
                    }
                    if num_established.get() == 1 && !peers.contains_key(&peer_id) {
                        let mut state = PeerState { session: Session::new(SessionConfig::default()), writer: None, backlog: Vec::new(), was_punched: link.punched, links: vec![link], listen: Vec::new(), reopen_at: None, failures: 0, punched: None, last_frame: 0 };
                        for message in state.session.start(&local.replica, now_ms()) {
                            state.backlog.push(message.encode());
                        }
                        // A browser that dialed us over WebRTC drops data channels we open
                        // before its side of the connection is set up (the open then times
                        // out after 10 s): open ours once its first stream arrives, or after
                        // a short fallback.
                        let from_browser = !endpoint.is_dialer() && is_webrtc(endpoint.get_remote_address());
                        if from_browser {
                            state.reopen_at = Some(Instant::now() + BROWSER_STREAM_FALLBACK);
                        }
                        peers.insert(peer_id, state);
                        if !from_browser {
                            open_writer(control.clone(), peer_id, tx.clone());
                        }
                        say(format!("connected to {peer_id} ({} peers)", peers.len()));
                    }
                    if !announced && let Some(kad) = swarm.behaviour_mut().kad.as_mut() {
                        // The first DHT contact: announce ourselves and look for the topic's peers now.
                        announced = kad.start_providing(discovery.clone()).is_ok();
                        kad.get_providers(discovery.clone());
                    }
                }
                SwarmEvent::ConnectionClosed { peer_id, connection_id, num_established, cause, .. } => {
                    if num_established == 0 {
                        tracing::info!(peer = %peer_id, cause = ?cause, "disconnected");
                        let removed = peers.remove(&peer_id);
                        if removed.as_ref().is_some_and(|s| s.links.iter().all(|l| l.relayed || l.id == connection_id) && s.links.iter().any(|l| l.relayed)) {
                            recently_relayed.retain(|_, at| at.elapsed() < RECENTLY_RELAYED);
                            recently_relayed.insert(peer_id, Instant::now());
                        }
                        if removed.is_some() && peers.is_empty() {
                            say("alone: waiting for peers".into());
                        }
                    } else if let Some(state) = peers.get_mut(&peer_id) {
                        state.links.retain(|link| link.id != connection_id);
                    }
                }
                SwarmEvent::Behaviour(BehaviourEvent::Dcutr(libp2p::dcutr::Event { remote_peer_id, result })) => {
                    let outcome = result.map(|_| ()).map_err(|error| error.to_string());
                    match &outcome {
                        Ok(()) => say(format!("hole punched to {remote_peer_id}")),
                        Err(error) => tracing::info!(peer = %remote_peer_id, %error, "hole punching failed; staying relayed"),
                    }
                    match peers.get_mut(&remote_peer_id) {
                        Some(state) => state.punched = Some(outcome),
                        None if outcome.is_ok() => {
                            recently_relayed.insert(remote_peer_id, Instant::now());
                        }
                        None => {}
                    }
                }
                SwarmEvent::Behaviour(BehaviourEvent::RelayClient(libp2p::relay::client::Event::ReservationReqAccepted { relay_peer_id, .. })) => {
                    say(format!("reachable through relay {relay_peer_id}"));
                }
                SwarmEvent::ExpiredListenAddr { address, .. } => {
                    if let Ok(mut addrs) = webrtc_addrs.write() {
                        addrs.retain(|a| !a.iter().zip(address.iter()).all(|(x, y)| x == y));
                    }
                }
                SwarmEvent::ListenerClosed { addresses, reason, .. } => {
                    // A reservation the relay refused (for example before it knew it was
                    // reachable): forget it, so the next identify from that relay retries.
                    for addr in addresses {
                        if let Some(relay) = relay_of(&addr) {
                            tracing::debug!(%relay, ?reason, "relay reservation ended");
                            reserved_on.remove(&relay);
                            retry_reservations = true;
                        }
                    }
                }
                SwarmEvent::Behaviour(BehaviourEvent::Autonat(libp2p::autonat::Event::StatusChanged { new, .. })) => {
                    tracing::info!(status = ?new, "reachability");
                    if let libp2p::autonat::NatStatus::Public(addr) = &new {
                        say(format!("publicly reachable at {addr}"));
                    }
                }
                SwarmEvent::Behaviour(BehaviourEvent::Upnp(libp2p::upnp::Event::NewExternalAddr { external_addr: addr, .. })) => {
                    say(format!("UPnP mapped {addr}"));
                }
                SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                    for (peer_id, addr) in found {
                        if peer_id != me && !swarm.is_connected(&peer_id) {
                            tracing::debug!(peer = %peer_id, %addr, "found on the LAN");
                            let _ = swarm.dial(addr);
                        }
                    }
                }
                SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
                    if let Some(kad) = swarm.behaviour_mut().kad.as_mut() {
                        for addr in &info.listen_addrs {
                            kad.add_address(&peer_id, addr.clone());
                        }
                    }
                    let is_relay = info.protocols.contains(&libp2p::relay::HOP_PROTOCOL_NAME);
                    let dialed = peers.get(&peer_id).and_then(|s| s.links.iter().find(|l| l.dialed && !l.relayed)).map(|l| l.addr.clone());
                    if let (true, Some(addr)) = (is_relay, dialed) {
                        relays.insert(peer_id, addr);
                    }
                    if config.external.is_empty() {
                        reserve(&mut swarm, &relays, &mut reserved_on, Some(peer_id));
                    }
                    if pex {
                        exchange_peers(&mut peers, peer_id, info.listen_addrs);
                    }
                }
                SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed { result: kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders { providers, .. })), .. })) => {
                    for peer_id in providers {
                        if peer_id != me && !swarm.is_connected(&peer_id) {
                            tracing::debug!(peer = %peer_id, "found on the topic");
                            let _ = swarm.dial(peer_id);
                        }
                    }
                }
                _ => {}
            },
            Some((peer_id, stream)) = incoming.next() => {
                spawn_reader(peer_id, stream, tx.clone());
                if let Some(state) = peers.get_mut(&peer_id)
                    && state.reopen_at.take().is_some()
                {
                    open_writer(control.clone(), peer_id, tx.clone());
                }
            }
            Some(inbound) = rx.recv() => match inbound {
                Inbound::Frame(peer_id, bytes) => {
                    let Some(state) = peers.get_mut(&peer_id) else { continue };
                    state.last_frame = now_ms();
                    match state.session.handle_bytes(&mut local.replica, &bytes, now_ms()) {
                        Ok(out) => {
                            send(state, out.iter().map(|m| m.encode()));
                            for record in state.session.take_learned_peers().into_iter().filter(|_| pex) {
                                let Some((peer_id, addr)) = learned_address(me, &record) else { continue };
                                if swarm.is_connected(&peer_id) {
                                    continue;
                                }
                                if me < peer_id {
                                    dial_once(&mut swarm, &mut circuit_dials, peer_id, addr);
                                } else if deferred_dials.len() < 1024 {
                                    deferred_dials.push((Instant::now() + LARGER_ID_DIAL_DELAY, peer_id, addr));
                                }
                            }
                        }
                        Err(error) if error.is_fatal() => {
                            tracing::warn!(peer = %peer_id, %error, "dropping peer: protocol violation");
                            peers.remove(&peer_id);
                            let _ = swarm.disconnect_peer_id(peer_id);
                            continue;
                        }
                        Err(error) => tracing::debug!(peer = %peer_id, %error, "sync message refused"),
                    }
                    after_change(&mut local, &mut peers);
                    progress.report(&local, &peers);
                }
                Inbound::Closed(peer_id, reason) => tracing::debug!(peer = %peer_id, %reason, "sync stream ended"),
                Inbound::Violation(peer_id, reason) => {
                    tracing::warn!(peer = %peer_id, %reason, "dropping peer: protocol violation");
                    peers.remove(&peer_id);
                    let _ = swarm.disconnect_peer_id(peer_id);
                }
                Inbound::WriterLost(peer_id) => {
                    if peers.get(&peer_id).is_some_and(|state| state.failures >= MAX_STREAM_FAILURES) {
                        tracing::info!(peer = %peer_id, "no sync stream to this peer; disconnecting");
                        peers.remove(&peer_id);
                        let _ = swarm.disconnect_peer_id(peer_id);
                    } else if let Some(state) = peers.get_mut(&peer_id) {
                        state.failures += 1;
                        tracing::debug!(peer = %peer_id, "sync stream lost; reopening");
                        state.writer = None;
                        state.backlog.clear();
                        for message in state.session.start(&local.replica, now_ms()) {
                            state.backlog.push(message.encode());
                        }
                        state.reopen_at = Some(Instant::now() + Duration::from_secs(1));
                    }
                }
                Inbound::Writer(peer_id, writer) => {
                    if let Some(state) = peers.get_mut(&peer_id) {
                        let backlog = std::mem::take(&mut state.backlog);
                        state.writer = Some(writer);
                        state.failures = 0;
                        send(state, backlog.into_iter());
                    }
                }
                Inbound::Shutdown => break,
                Inbound::Command(commands::Request::Eval(script), reply) => match &config.window {
                    Some(window) => {
                        if let Err(mpsc::error::TrySendError::Full((_, reply)) | mpsc::error::TrySendError::Closed((_, reply))) = window.eval.try_send((script, reply)) {
                            let _ = reply.send(Err("the window is busy or closed".into()));
                        }
                    }
                    None => {
                        let _ = reply.send(Err("no window is running on this data dir".into()));
                    }
                },
                Inbound::Command(request, reply) => {
                    let node = commands::NodeStatus {
                        peer_id: me.to_string(),
                        addresses: swarm.listeners().map(|addr| format!("{addr}/p2p/{me}")).collect(),
                        peers: peer_statuses(&peers, &local),
                    };
                    let result = commands::execute(&mut local, &request, now_ms() as i64, Some(&node));
                    after_change(&mut local, &mut peers);
                    let _ = reply.send(result);
                }
            },
            _ = tick.tick() => {
                let now = Instant::now();
                if std::mem::take(&mut retry_reservations) && config.external.is_empty() {
                    reserve(&mut swarm, &relays, &mut reserved_on, None);
                }
                for (_, peer_id, addr) in deferred_dials.extract_if(.., |(at, _, _)| *at <= now) {
                    dial_once(&mut swarm, &mut circuit_dials, peer_id, addr);
                }
                for (peer_id, state) in peers.iter_mut() {
                    if state.reopen_at.is_some_and(|at| at <= Instant::now()) && swarm.is_connected(peer_id) {
                        state.reopen_at = None;
                        open_writer(control.clone(), *peer_id, tx.clone());
                    }
                    let out = state.session.tick(&local.replica, now_ms());
                    send(state, out.iter().map(|m| m.encode()));
                }
            }
            _ = discover.tick() => {
                if let Some(kad) = swarm.behaviour_mut().kad.as_mut() {
                    kad.get_providers(discovery.clone());
                }
            }
        }
        if let Some(window) = &config.window {
            // Rebuilding the view is O(todos): only when entries or peers changed.
            let stamp = (
                local.replica.base().total_entries(),
                peers.values().filter(|p| p.session.is_introduced()).count(),
                peers.values().map(|p| p.session.missing(&local.replica)).sum::<u64>(),
            );
            if view_stamp != Some(stamp) {
                view_stamp = Some(stamp);
                update_view(&window.view, &local, &peers);
            }
        }
    }
    say("stopping".into());
    local.save()?;
    if let Some(path) = &config.control_socket {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// Keeps a new WebRTC-direct listen address for the web app's configuration, and its port
/// for the next start.
fn remember_webrtc(
    address: &Multiaddr,
    me: PeerId,
    addrs: &crate::web::WebrtcAddrs,
    port_file: Option<&std::path::Path>,
) {
    let full = address.clone().with_p2p(me).unwrap_or_else(|addr| addr);
    if let Ok(mut addrs) = addrs.write()
        && !addrs.contains(&full)
    {
        addrs.push(full);
    }
    let port = address.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::Udp(port) => Some(port),
        _ => None,
    });
    if let (Some(file), Some(port)) = (port_file, port)
        && let Err(error) = std::fs::write(file, port.to_string())
    {
        tracing::warn!(%error, "cannot remember the WebRTC port");
    }
}

/// Peer exchange: tells every other peer where `peer_id` listens, and tells `peer_id`
/// where every other peer listens.
fn exchange_peers(peers: &mut HashMap<PeerId, PeerState>, peer_id: PeerId, listen: Vec<Multiaddr>) {
    let with_id = |addr: &Multiaddr, id: PeerId| {
        let mut addr = addr.clone();
        if !matches!(addr.iter().last(), Some(libp2p::multiaddr::Protocol::P2p(_))) {
            addr.push(libp2p::multiaddr::Protocol::P2p(id));
        }
        addr
    };
    let records: Vec<Vec<u8>> = listen.iter().map(|a| with_id(a, peer_id).to_string().into_bytes()).collect();
    let mut others = Vec::new();
    for (other, state) in peers.iter_mut() {
        if *other == peer_id {
            continue;
        }
        let out = state.session.share_peers(records.clone());
        send(state, out.iter().map(|m| m.encode()));
        others.extend(state.listen.iter().map(|a| with_id(a, *other).to_string().into_bytes()));
    }
    if let Some(state) = peers.get_mut(&peer_id) {
        state.listen = listen;
        let out = state.session.share_peers(others);
        send(state, out.iter().map(|m| m.encode()));
    }
}

/// The relay named in a `/p2p/<relay>/p2p-circuit` address.
fn relay_of(addr: &Multiaddr) -> Option<PeerId> {
    let parts: Vec<_> = addr.iter().collect();
    parts.windows(2).find_map(|pair| match pair {
        [libp2p::multiaddr::Protocol::P2p(id), libp2p::multiaddr::Protocol::P2pCircuit] => Some(*id),
        _ => None,
    })
}

/// Behind a NAT (as far as we know): be reachable through relays we dialed. Reserves on
/// `only` (or on every known relay) unless a reservation is already held there.
fn reserve(
    swarm: &mut libp2p::Swarm<net::Behaviour>,
    relays: &HashMap<PeerId, Multiaddr>,
    reserved_on: &mut std::collections::HashSet<PeerId>,
    only: Option<PeerId>,
) {
    for (relay, addr) in relays {
        if only.is_some_and(|only| only != *relay) || reserved_on.contains(relay) || !swarm.is_connected(relay) {
            continue;
        }
        let circuit =
            addr.clone().with_p2p(*relay).unwrap_or_else(|addr| addr).with(libp2p::multiaddr::Protocol::P2pCircuit);
        match swarm.listen_on(circuit.clone()) {
            Ok(_) => {
                reserved_on.insert(*relay);
            }
            Err(error) => tracing::warn!(%circuit, %error, "cannot reserve on relay"),
        }
    }
}

/// Dials a peer learned by peer exchange unless we are connected to it. Through a relay
/// only once per 10 s: a second relayed connection would start a second, colliding hole
/// punch. (Direct addresses may be tried side by side: some are unreachable LAN addresses.)
fn dial_once(
    swarm: &mut libp2p::Swarm<net::Behaviour>,
    circuit_dials: &mut HashMap<PeerId, Instant>,
    peer_id: PeerId,
    addr: Multiaddr,
) {
    use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
    if relay_of(&addr).is_some() {
        if circuit_dials.get(&peer_id).is_some_and(|at| at.elapsed() < Duration::from_secs(10)) {
            return;
        }
        circuit_dials.insert(peer_id, Instant::now());
    }
    tracing::debug!(peer = %peer_id, %addr, "dialing a peer learned by peer exchange");
    let opts = DialOpts::peer_id(peer_id).condition(PeerCondition::Disconnected).addresses(vec![addr]).build();
    let _ = swarm.dial(opts);
}

/// Where a peer learned by peer exchange can be dialed, unless it is us.
fn learned_address(me: PeerId, record: &[u8]) -> Option<(PeerId, Multiaddr)> {
    let Some(addr) = std::str::from_utf8(record).ok().and_then(|text| text.parse::<Multiaddr>().ok()) else {
        tracing::debug!("ignoring a malformed peer record");
        return None;
    };
    match addr.iter().last() {
        Some(libp2p::multiaddr::Protocol::P2p(peer_id)) if peer_id != me => Some((peer_id, addr)),
        _ => None,
    }
}

/// How long the peer with the larger id waits before dialing a peer both learned about
/// from each other: two peers dialing each other at once through a relay would start two
/// hole punches on the same ports, and the second resets the first.
const LARGER_ID_DIAL_DELAY: Duration = Duration::from_secs(3);

/// Catch-up progress, printed for the user: when a catch-up starts, every half second
/// while it runs, and when it is done.
#[derive(Default)]
struct Progress {
    quiet: bool,
    syncing: bool,
    last: Option<Instant>,
}

impl Progress {
    fn report(&mut self, local: &Local, peers: &HashMap<PeerId, PeerState>) {
        if self.quiet {
            return;
        }
        let missing: u64 = peers.values().map(|p| p.session.missing(&local.replica)).sum();
        let held = local.replica.base().total_entries();
        if missing > 0 {
            let due = self.last.is_none_or(|at| at.elapsed() >= Duration::from_millis(500));
            if !self.syncing || due {
                println!("syncing: {held} of {} entries", held + missing);
                self.last = Some(Instant::now());
            }
            self.syncing = true;
        } else if self.syncing {
            println!("synced: {held} entries, {} todos", local.replica.db().count(hellopears_core::todo::COLLECTION));
            self.syncing = false;
            self.last = None;
        }
    }
}

fn peer_statuses(peers: &HashMap<PeerId, PeerState>, local: &Local) -> Vec<PeerStatus> {
    let mut out: Vec<PeerStatus> = peers
        .iter()
        .filter(|(_, state)| state.session.is_introduced())
        .map(|(peer, state)| PeerStatus {
            peer: peer.to_string(),
            addresses: state.links.iter().map(|link| link.addr.to_string()).collect(),
            kind: connection_kind(state),
            missing: state.session.missing(&local.replica),
        })
        .collect();
    out.sort_by(|a, b| a.peer.cmp(&b.peer));
    out
}

/// How we are connected to a peer: direct, hole-punched, or relayed (and why).
fn connection_kind(state: &PeerState) -> String {
    let direct: Vec<&Link> = state.links.iter().filter(|link| !link.relayed).collect();
    if !direct.is_empty() {
        let punched = matches!(state.punched, Some(Ok(()))) || state.was_punched;
        if !punched {
            return "direct".into();
        }
        let quic = direct.iter().any(|link| link.addr.iter().any(|p| matches!(p, libp2p::multiaddr::Protocol::QuicV1)));
        return format!("hole-punched ({})", if quic { "QUIC" } else { "TCP" });
    }
    // The relay is the peer named just before `/p2p-circuit` in a relayed address.
    let relay = state
        .links
        .iter()
        .find_map(|link| {
            let parts: Vec<_> = link.addr.iter().collect();
            parts.windows(2).find_map(|pair| match pair {
                [libp2p::multiaddr::Protocol::P2p(id), libp2p::multiaddr::Protocol::P2pCircuit] => Some(id.to_string()),
                _ => None,
            })
        })
        .unwrap_or_else(|| "a relay".into());
    let waited = state.links.iter().map(|link| link.since.elapsed()).max().unwrap_or_default();
    match &state.punched {
        Some(Err(error)) => format!("relayed via {relay} (hole punching failed: {error})"),
        _ if waited >= PUNCH_PATIENCE => {
            format!("relayed via {relay} (hole punching failed: no direct path after {}s)", waited.as_secs())
        }
        _ => format!("relayed via {relay} (hole punching in progress)"),
    }
}

/// Refreshes what a native window shows (only sent when something changed).
fn update_view(
    view: &tokio::sync::watch::Sender<hellopears_web::model::Snapshot>,
    local: &Local,
    peers: &HashMap<PeerId, PeerState>,
) {
    use hellopears_web::model::{PeerView, Snapshot, SyncStatus, TodoView};
    let replica = &local.replica;
    if view.is_closed() {
        return;
    }
    let todos: Vec<TodoView> =
        hellopears_core::todo::list(replica.db()).iter().rev().map(TodoView::from_todo).collect();
    let peer_views: Vec<PeerView> = peers
        .iter()
        .filter(|(_, state)| state.session.is_introduced())
        .map(|(id, state)| PeerView {
            id: id.to_string(),
            connection: connection_kind(state),
            last_sync: state.last_frame,
        })
        .collect();
    let missing: u64 = peers.values().map(|p| p.session.missing(replica)).sum();
    let status = SyncStatus::from_counts(peer_views.len(), replica.base().total_entries(), missing);
    let snapshot = Snapshot {
        topic: replica.topic().name().to_owned(),
        writer: replica.writer_id().short(),
        todos,
        peers: peer_views,
        status,
    };
    view.send_if_modified(|old| {
        if *old == snapshot {
            return false;
        }
        *old = snapshot;
        true
    });
}

/// Applies what arrived, persists it, and pushes fresh entries to every session.
fn after_change(local: &mut Local, peers: &mut HashMap<PeerId, PeerState>) {
    local.replica.update();
    if let Err(error) = local.save() {
        tracing::error!("{error:#}");
    }
    let fresh = local.replica.take_fresh();
    let forks = local.replica.take_fresh_forks();
    for notice in local.replica.take_notices() {
        tracing::info!(?notice, "replica");
    }
    if fresh.is_empty() && forks.is_empty() {
        return;
    }
    for state in peers.values_mut() {
        let mut out = state.session.push(&fresh);
        for evidence in &forks {
            out.extend(state.session.push_fork(evidence));
        }
        send(state, out.iter().map(|m| m.encode()));
    }
}

fn send(state: &mut PeerState, frames: impl Iterator<Item = Vec<u8>>) {
    for frame in frames {
        match &state.writer {
            Some(writer) => {
                // The writer is gone or far behind: the periodic Have and request retries recover.
                let _ = writer.try_send(frame).inspect_err(|_| tracing::debug!("sync writer busy, frame dropped"));
            }
            None if state.backlog.len() < BACKLOG_LIMIT => state.backlog.push(frame),
            None => {}
        }
    }
}

/// Bytes read from a sync stream at once.
const READ_CHUNK: usize = 64 * 1024;

/// Bytes written to a sync stream at once (under WebRTC's 16 KiB message limit).
const WRITE_CHUNK: usize = 16 * 1024 - 64;

fn open_writer(mut control: libp2p_stream::Control, peer_id: PeerId, tx: mpsc::Sender<Inbound>) {
    tokio::spawn(async move {
        let mut stream = match control.open_stream(peer_id, SYNC_PROTOCOL).await {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(peer = %peer_id, %error, "no sync stream");
                let _ = tx.send(Inbound::WriterLost(peer_id)).await;
                return;
            }
        };
        let (writer, mut frames) = mpsc::channel::<Vec<u8>>(256);
        if tx.send(Inbound::Writer(peer_id, writer)).await.is_err() {
            return;
        }
        while let Some(frame) = frames.recv().await {
            let buffer = frame::encode(&frame);
            let written = async {
                // WebRTC streams send at most one SCTP message of 16 KiB at a time, and a
                // write that lands after a small unflushed one can exceed it: write in
                // chunks and flush each.
                for chunk in buffer.chunks(WRITE_CHUNK) {
                    stream.write_all(chunk).await?;
                    stream.flush().await?;
                }
                Ok::<(), std::io::Error>(())
            };
            if let Err(error) = written.await {
                tracing::debug!(peer = %peer_id, %error, "sync stream write failed");
                let _ = tx.send(Inbound::WriterLost(peer_id)).await;
                return;
            }
        }
        let _ = stream.close().await;
    });
}

fn spawn_reader(peer_id: PeerId, mut stream: libp2p::Stream, tx: mpsc::Sender<Inbound>) {
    tokio::spawn(async move {
        let mut decoder = frame::FrameDecoder::default();
        let mut buffer = vec![0u8; READ_CHUNK];
        let reason = 'read: loop {
            let read = match stream.read(&mut buffer).await {
                Ok(0) => break "closed by the peer".to_owned(),
                Ok(read) => read,
                Err(error) => break error.to_string(),
            };
            decoder.push(&buffer[..read]);
            loop {
                match decoder.next_frame() {
                    Ok(Some(frame)) => {
                        if tx.send(Inbound::Frame(peer_id, frame)).await.is_err() {
                            break 'read "peer stopped".to_owned();
                        }
                    }
                    Ok(None) => break,
                    Err(error) => {
                        let _ = tx.send(Inbound::Violation(peer_id, format!("sync frame refused: {error}"))).await;
                        return;
                    }
                }
            }
        };
        let _ = tx.send(Inbound::Closed(peer_id, reason)).await;
    });
}
