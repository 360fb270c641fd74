//! `hellopears up`: a running peer. One task, the [`Peer`] actor, owns the swarm and the
//! core's [`Node`]; it maps swarm, stream, storage and user events to the node's inputs and
//! carries out its outputs. It holds no replication logic: links and hole punching are in
//! `links`, finding peers in `discovery`, stream IO in `streams`, storage writes run on a
//! blocking thread.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hellopears_core::limits;
use hellopears_core::node::{self, CommandId, Input, Node, Open, Output};
use hellopears_core::ui::{Snapshot, SyncStatus};
use libp2p::core::ConnectedPoint;
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{Multiaddr, PeerId, identify, identity, kad, mdns};
use tokio::sync::{mpsc, oneshot, watch};

use crate::commands::{self, Action, NodeStatus, PeerStatus, Reply, Request};
use crate::discovery::{self, Discovery};
use crate::links::{Connection, Links, is_webrtc};
use crate::local::Backend;
use crate::net::{self, BehaviourEvent};
use crate::streams::{self, SYNC_PROTOCOL};

/// Which discovery mechanisms run, besides bootstrap addresses.
#[derive(Debug, Clone, Copy)]
pub struct Discovering {
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
    pub discovery: Discovering,
    /// Print nothing on stdout (the terminal UI owns the screen).
    pub quiet: bool,
    /// Addresses others reach us at (a public peer): relay service from the start.
    pub external: Vec<Multiaddr>,
    /// The WebRTC-direct certificate (persisted, so the certhash in our address is stable).
    pub webrtc_certificate: libp2p_webrtc::tokio::Certificate,
    /// Where to remember the WebRTC-direct port, so browser tabs find us at the same
    /// address after a restart.
    pub webrtc_port_file: Option<PathBuf>,
    /// Where this peer's WebRTC-direct addresses are published (for the web app's server).
    pub webrtc_addrs: crate::web::WebrtcAddrs,
    /// What the UIs show, published whenever it changes (the window and the terminal UI).
    pub view: Option<watch::Sender<Snapshot>>,
    /// Scripts to run in a native window's page, with where their result goes.
    pub eval: Option<mpsc::Sender<(String, oneshot::Sender<Reply>)>>,
}

/// Sends requests to a running peer.
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
    /// Runs a request on the peer.
    pub async fn request(&self, request: Request) -> Reply {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Inbound::Request(request, reply)).await.map_err(|_| "the peer stopped".to_owned())?;
        answer.await.map_err(|_| "the peer stopped".to_owned())?
    }

    /// Asks the peer to save and stop.
    pub async fn shutdown(&self) {
        let _ = self.tx.send(Inbound::Shutdown).await;
    }
}

/// Messages into the peer's task from its handles.
#[derive(Debug)]
enum Inbound {
    Request(Request, oneshot::Sender<Reply>),
    Shutdown,
}

/// How long we wait for a browser's sync stream before opening ours anyway (a browser
/// drops data channels opened before its side of a fresh connection is set up).
const BROWSER_STREAM_FALLBACK_MS: u64 = 3_000;
/// How often the node ticks.
const TICK: Duration = Duration::from_millis(250);
/// How often the DHT is asked for the list's peers.
const LOOK_UP: Duration = Duration::from_secs(20);
/// The UI snapshot is rebuilt at most this often while things change.
const VIEW_INTERVAL: Duration = Duration::from_millis(100);
/// How long the peer waits for its last write when stopping.
const STOP_PATIENCE: Duration = Duration::from_secs(10);

/// Runs the peer until Ctrl-C, SIGTERM or [`PeerHandle::shutdown`].
pub async fn run(
    node: Node<PeerId>,
    backend: Backend,
    node_key: identity::Keypair,
    config: PeerConfig,
    inbox: PeerInbox,
) -> anyhow::Result<()> {
    let mut peer = Peer::start(node, backend, node_key, config)?;
    let mut inbox = inbox.rx;
    let mut incoming =
        peer.control.accept(SYNC_PROTOCOL).map_err(|_| anyhow::anyhow!("sync protocol registered twice"))?;
    let mut tick = tokio::time::interval(TICK);
    let mut look_up = tokio::time::interval(LOOK_UP);
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    // The stored list goes to a window or terminal UI at once, before any network event.
    peer.after_event();
    loop {
        // What the user asked (the CLI and the UIs) is taken first, at every turn, so no
        // amount of network traffic delays it; everything else is taken fairly (a biased
        // order would let a busy source starve the ones after it).
        match inbox.try_recv() {
            Ok(Inbound::Request(request, reply)) => {
                peer.on_request(request, reply);
                peer.after_event();
                continue;
            }
            Ok(Inbound::Shutdown) => break,
            Err(_) => {}
        }
        tokio::select! {
            _ = &mut shutdown => break,
            Some(inbound) = inbox.recv() => match inbound {
                Inbound::Request(request, reply) => peer.on_request(request, reply),
                Inbound::Shutdown => break,
            },
            Some((id, result)) = peer.persisted_rx.recv() => peer.feed(Input::Persisted(id, result)),
            Some(event) = peer.streams_rx.recv() => peer.on_stream(event),
            Some(event) = peer.readers.next(), if !peer.readers.is_empty() => peer.on_stream(event),
            event = peer.swarm.select_next_some() => peer.on_swarm(event),
            Some((remote, stream)) = incoming.next() => peer.on_incoming(remote, stream),
            _ = tick.tick() => peer.on_tick(),
            _ = look_up.tick() => peer.discovery.look_up(&mut peer.swarm),
        }
        peer.after_event();
    }
    peer.stop().await
}

/// Ctrl-C, or a service manager's SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        return;
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Our outbound sync stream to a peer.
#[derive(Debug)]
struct Writer {
    epoch: u64,
    frames: Option<mpsc::Sender<Vec<u8>>>,
}

/// A request waiting for its command to be durable.
type PendingReply = oneshot::Sender<Reply>;

/// The running peer: the swarm, the node, and the driver state around them.
struct Peer {
    swarm: libp2p::Swarm<net::Behaviour>,
    me: PeerId,
    node: Node<PeerId>,
    backend: Backend,
    links: Links,
    discovery: Discovery,
    control: libp2p_stream::Control,
    writers: HashMap<PeerId, Writer>,
    /// Inbound sync streams open, per peer.
    inbound: HashMap<PeerId, usize>,
    /// Peers refused until then, for breaking the protocol.
    banned: HashMap<PeerId, Instant>,
    /// Peers that dialed us directly: AutoNAT servers once their sync session is open.
    autonat_candidates: HashMap<PeerId, Multiaddr>,
    next_epoch: u64,
    streams_tx: mpsc::Sender<streams::Event>,
    streams_rx: mpsc::Receiver<streams::Event>,
    /// Every inbound stream's frames, taken in turn.
    readers: futures::stream::SelectAll<streams::Frames>,
    persisted_tx: mpsc::Sender<(node::PersistId, Result<(), String>)>,
    persisted_rx: mpsc::Receiver<(node::PersistId, Result<(), String>)>,
    pending: HashMap<CommandId, PendingReply>,
    next_command: CommandId,
    config: PeerConfig,
    progress: Progress,
    view_dirty: bool,
    view_at: Instant,
}

impl Peer {
    fn start(
        node: Node<PeerId>,
        backend: Backend,
        node_key: identity::Keypair,
        config: PeerConfig,
    ) -> anyhow::Result<Self> {
        let discovering = config.discovery;
        let mut swarm =
            net::build_swarm(node_key, discovering.mdns, discovering.dht, config.webrtc_certificate.clone())?;
        let me = *swarm.local_peer_id();
        let listeners = listen(&mut swarm, &config)?;
        for addr in &config.external {
            // The relay serves only once an external address is confirmed: confirm ours now.
            swarm.add_external_address(addr.clone());
        }
        let key = kad::RecordKey::new(&node.replica().topic().discovery_key().0);
        let discovery = Discovery::new(me, config.bootstrap.clone(), listeners, config.external.is_empty(), key);
        let control = swarm.behaviour().stream.new_control();
        let (streams_tx, streams_rx) = mpsc::channel(1024);
        let (persisted_tx, persisted_rx) = mpsc::channel(4);
        let mut peer = Self {
            swarm,
            me,
            node,
            backend,
            links: Links::default(),
            discovery,
            control,
            writers: HashMap::new(),
            inbound: HashMap::new(),
            banned: HashMap::new(),
            autonat_candidates: HashMap::new(),
            next_epoch: 0,
            streams_tx,
            streams_rx,
            readers: futures::stream::SelectAll::new(),
            persisted_tx,
            persisted_rx,
            pending: HashMap::new(),
            next_command: 0,
            progress: Progress { quiet: config.quiet, ..Progress::default() },
            config,
            view_dirty: true,
            view_at: Instant::now().checked_sub(VIEW_INTERVAL).unwrap_or_else(Instant::now),
        };
        peer.introduce();
        Ok(peer)
    }

    fn say(&self, line: String) {
        if !self.config.quiet {
            println!("{line}");
        }
    }

    fn introduce(&mut self) {
        let replica = self.node.replica();
        let line = format!(
            "topic {} ({}), writer {}",
            replica.topic().name(),
            replica.topic().id(),
            replica.writer_id().short()
        );
        self.say(format!("peer id {}", self.me));
        self.say(line);
        self.say("alone: waiting for peers".into());
        // The node's first write (a new writer key) goes out now.
        self.feed(Input::Tick);
    }

    /// Hands an input to the node and carries out what it asks.
    fn feed(&mut self, input: Input<PeerId>) {
        let now = commands::now_ms();
        for output in self.node.handle(input, now) {
            self.execute(output);
        }
    }

    fn execute(&mut self, output: Output<PeerId>) {
        match output {
            Output::Persist(id, batch) => {
                let (backend, done) = (self.backend.clone(), self.persisted_tx.clone());
                tokio::spawn(async move {
                    let result = backend.write(batch).await;
                    if let Err(error) = &result {
                        tracing::error!(%error, "cannot save; retrying");
                    }
                    let _ = done.send((id, result)).await;
                });
            }
            Output::OpenStream(remote) => self.open_stream(remote),
            Output::Send(remote, frame) => self.send(remote, frame),
            Output::Disconnect(remote, reason) => {
                tracing::warn!(peer = %remote, %reason, "dropping peer");
                self.writers.remove(&remote);
                let _ = self.swarm.disconnect_peer_id(remote);
            }
            Output::Ban(remote, reason) => {
                tracing::warn!(peer = %remote, %reason, ban_ms = limits::BAN_MS, "banning peer");
                self.writers.remove(&remote);
                self.swarm.behaviour_mut().blocked.block_peer(remote);
                self.banned.insert(remote, Instant::now() + Duration::from_millis(limits::BAN_MS));
                let _ = self.swarm.disconnect_peer_id(remote);
            }
            Output::Dial(record) if self.config.discovery.pex => {
                self.discovery.learned(&mut self.swarm, &record, Instant::now());
            }
            Output::Dial(_) => {}
            Output::Reply(id, result) => {
                if let Some(reply) = self.pending.remove(&id) {
                    let _ = reply.send(result.map(|outcome| commands::outcome_text(&outcome)));
                }
            }
            Output::Notice(notice) => tracing::info!(?notice, "replica"),
            Output::Changed => self.view_dirty = true,
        }
    }

    fn open_stream(&mut self, remote: PeerId) {
        self.next_epoch += 1;
        let epoch = self.next_epoch;
        self.writers.insert(remote, Writer { epoch, frames: None });
        streams::open_writer(self.control.clone(), remote, epoch, self.streams_tx.clone());
    }

    fn send(&mut self, remote: PeerId, frame: Vec<u8>) {
        let Some(frames) = self.writers.get(&remote).and_then(|w| w.frames.as_ref()) else { return };
        // The writer is gone or far behind: the periodic Have and request retries recover.
        if frames.try_send(frame).is_err() {
            tracing::debug!(peer = %remote, "sync writer busy, frame dropped");
        }
    }

    fn on_stream(&mut self, event: streams::Event) {
        match event {
            streams::Event::Frame(remote, frame) => self.feed(Input::Frame(remote, frame)),
            streams::Event::Closed(remote, reason) => {
                self.inbound_closed(remote);
                tracing::debug!(peer = %remote, %reason, "sync stream ended");
            }
            streams::Event::Violation(remote, reason) => {
                self.inbound_closed(remote);
                self.feed(Input::Violation(remote, reason));
            }
            streams::Event::Opened(remote, epoch, frames) => {
                let Some(writer) = self.writers.get_mut(&remote).filter(|w| w.epoch == epoch) else { return };
                writer.frames = Some(frames);
                self.feed(Input::StreamOpened(remote));
            }
            streams::Event::Lost(remote, epoch) => {
                if self.writers.get(&remote).is_some_and(|w| w.epoch == epoch) {
                    self.writers.remove(&remote);
                    tracing::debug!(peer = %remote, "sync stream lost");
                    self.feed(Input::StreamLost(remote));
                }
            }
        }
    }

    fn on_incoming(&mut self, remote: PeerId, stream: libp2p::Stream) {
        let open = self.inbound.entry(remote).or_insert(0);
        if *open >= limits::MAX_SYNC_STREAMS_PER_PEER {
            tracing::debug!(peer = %remote, "refusing another inbound sync stream");
            return;
        }
        *open += 1;
        self.readers.push(streams::spawn_reader(remote, stream));
        self.feed(Input::RemoteStream(remote));
    }

    fn on_request(&mut self, request: Request, reply: oneshot::Sender<Reply>) {
        if let Err(error) = commands::check_topic(&request, self.node.replica().topic()) {
            let _ = reply.send(Err(error));
            return;
        }
        match request.action {
            Action::Command(command) => {
                let id = self.next_command;
                self.next_command += 1;
                self.pending.insert(id, reply);
                self.feed(Input::Command(id, command));
            }
            Action::Eval(script) => self.eval(script, reply),
            Action::Snapshot => {
                let _ = reply.send(serde_json::to_string(&self.snapshot()).map_err(|e| e.to_string()));
            }
            action => {
                let running = self.node_status();
                let out = commands::query(&self.node, &action, Some(&running));
                let _ = reply.send(out.ok_or_else(|| "nothing to show".into()));
            }
        }
    }

    fn eval(&self, script: String, reply: oneshot::Sender<Reply>) {
        let Some(eval) = &self.config.eval else {
            let _ = reply.send(Err("no window is running on this data dir".into()));
            return;
        };
        // The page may never answer (a script that never completes): the reply is an error
        // after EVAL_MS, and the window forgets the request once nobody waits for it.
        let (answer, answered) = oneshot::channel();
        if let Err(mpsc::error::TrySendError::Full(_) | mpsc::error::TrySendError::Closed(_)) =
            eval.try_send((script, answer))
        {
            let _ = reply.send(Err("the window is busy or closed".into()));
            return;
        }
        tokio::spawn(async move {
            let patience = Duration::from_millis(limits::EVAL_MS);
            let result = match tokio::time::timeout(patience, answered).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err("the window closed".into()),
                Err(_) => Err(format!("the window did not answer in {} s", patience.as_secs())),
            };
            let _ = reply.send(result);
        });
    }

    fn node_status(&self) -> NodeStatus {
        let now = Instant::now();
        let peers = self
            .node
            .peers()
            .map(|info| PeerStatus {
                peer: info.id.to_string(),
                addresses: self
                    .links
                    .get(info.id)
                    .map_or_else(Vec::new, |l| l.links.iter().map(|link| link.addr.to_string()).collect()),
                kind: self.links.kind(info.id, now),
                missing: info.missing,
            })
            .collect();
        NodeStatus {
            peer_id: self.me.to_string(),
            addresses: self.swarm.listeners().map(|addr| format!("{addr}/p2p/{}", self.me)).collect(),
            peers,
        }
    }

    fn inbound_closed(&mut self, remote: PeerId) {
        if let Some(open) = self.inbound.get_mut(&remote) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                self.inbound.remove(&remote);
            }
        }
    }

    fn on_tick(&mut self) {
        self.feed(Input::Tick);
        let now = Instant::now();
        self.discovery.tick(&mut self.swarm, now);
        if !self.autonat_candidates.is_empty() {
            let proven: Vec<PeerId> =
                self.node.peers().map(|peer| *peer.id).filter(|id| self.autonat_candidates.contains_key(id)).collect();
            for remote in proven {
                if let Some(addr) = self.autonat_candidates.remove(&remote) {
                    self.swarm.behaviour_mut().autonat.add_server(remote, Some(addr));
                }
            }
        }
        let served: Vec<PeerId> = self.banned.iter().filter(|(_, until)| **until <= now).map(|(p, _)| *p).collect();
        for remote in served {
            self.banned.remove(&remote);
            self.swarm.behaviour_mut().blocked.unblock_peer(remote);
        }
    }

    /// After every event: progress for the user, and the UI snapshot when it changed.
    fn after_event(&mut self) {
        self.progress.report(&self.node);
        let Some(view) = &self.config.view else { return };
        if !self.view_dirty || self.view_at.elapsed() < VIEW_INTERVAL || view.is_closed() {
            return;
        }
        self.view_dirty = false;
        self.view_at = Instant::now();
        let snapshot = self.snapshot();
        view.send_if_modified(|old| {
            let changed = *old != snapshot;
            if changed {
                *old = snapshot;
            }
            changed
        });
    }

    /// What the UIs show, with each peer's connection in words.
    fn snapshot(&self) -> Snapshot {
        let now = Instant::now();
        self.node.snapshot(|peer| (peer.to_string(), self.links.kind(peer, now)))
    }

    fn on_swarm(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, listener_id } => {
                self.say(format!("listening on {address}/p2p/{}", self.me));
                if is_webrtc(&address) {
                    self.remember_webrtc(&address);
                }
                self.discovery.listening(&mut self.swarm, listener_id);
            }
            SwarmEvent::ConnectionEstablished { peer_id, connection_id, endpoint, num_established, .. } => {
                self.on_connected(peer_id, connection_id, &endpoint, num_established.get() == 1);
            }
            SwarmEvent::ConnectionClosed { peer_id, connection_id, num_established, cause, .. } => {
                self.links.closed(peer_id, connection_id, num_established == 0, Instant::now());
                if num_established == 0 {
                    tracing::info!(peer = %peer_id, cause = ?cause, "disconnected");
                    self.writers.remove(&peer_id);
                    self.autonat_candidates.remove(&peer_id);
                    let had = self.node.remote_count();
                    self.feed(Input::Disconnected(peer_id));
                    if had > 0 && self.node.remote_count() == 0 {
                        self.say("alone: waiting for peers".into());
                    }
                }
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                if let Ok(mut addrs) = self.config.webrtc_addrs.write() {
                    addrs.retain(|a| !a.iter().zip(address.iter()).all(|(x, y)| x == y));
                }
            }
            SwarmEvent::ListenerClosed { addresses, .. } => self.discovery.listener_closed(&addresses),
            SwarmEvent::Behaviour(event) => self.on_behaviour(event),
            _ => {}
        }
    }

    fn on_connected(&mut self, remote: PeerId, id: ConnectionId, endpoint: &ConnectedPoint, first: bool) {
        let addr = endpoint.get_remote_address().clone();
        tracing::info!(peer = %remote, %addr, relayed = endpoint.is_relayed(), "connected");
        let connection =
            Connection { addr: addr.clone(), relayed: endpoint.is_relayed(), dialed: endpoint.is_dialer() };
        let up = self.links.established(remote, id, connection, Instant::now());
        // AutoNAT servers are peers reached directly (a dial-back of a relayed or punched peer
        // would collide with the punched connection): those we dialed, and those that dialed
        // us once they proved they are on our list (a stranger that dials us must not choose
        // the external address we advertise; AutoNAT takes the first answer as the truth).
        if up.plain_direct && endpoint.is_dialer() {
            self.swarm.behaviour_mut().autonat.add_server(remote, Some(addr.clone()));
        } else if up.plain_direct {
            self.autonat_candidates.insert(remote, addr.clone());
        }
        // A punch replaces the relayed connection: sync moves to the direct one (its
        // streams are reopened there) and the relay is freed.
        for relayed in up.close {
            self.swarm.close_connection(relayed);
        }
        self.discovery.connected(&mut self.swarm, remote, &addr, endpoint.is_dialer());
        if !first {
            return;
        }
        // A browser that dialed us over WebRTC drops data channels we open before its side
        // of the connection is set up: open ours once its stream arrives, or after a while.
        let from_browser = !endpoint.is_dialer() && is_webrtc(&addr);
        let open = if from_browser { Open::AfterRemote { fallback_ms: BROWSER_STREAM_FALLBACK_MS } } else { Open::Now };
        self.feed(Input::Connected { remote, open, identity: remote.to_bytes() });
        self.say(format!("connected to {remote} ({} peers)", self.node.remote_count()));
    }

    fn on_behaviour(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Dcutr(libp2p::dcutr::Event { remote_peer_id, result }) => {
                let outcome = result.map(|_| ()).map_err(|error| error.to_string());
                match &outcome {
                    Ok(()) => self.say(format!("hole punched to {remote_peer_id}")),
                    Err(error) => {
                        tracing::info!(peer = %remote_peer_id, %error, "hole punching failed; staying relayed")
                    }
                }
                self.links.punch_result(remote_peer_id, outcome, Instant::now());
            }
            BehaviourEvent::RelayClient(libp2p::relay::client::Event::ReservationReqAccepted {
                relay_peer_id, ..
            }) => self.say(format!("reachable through relay {relay_peer_id}")),
            BehaviourEvent::Autonat(libp2p::autonat::Event::StatusChanged { new, .. }) => {
                tracing::info!(status = ?new, "reachability");
                if let libp2p::autonat::NatStatus::Public(addr) = &new {
                    self.say(format!("publicly reachable at {addr}"));
                }
            }
            BehaviourEvent::Upnp(libp2p::upnp::Event::NewExternalAddr { external_addr, .. }) => {
                self.say(format!("UPnP mapped {external_addr}"));
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                for (remote, addr) in found {
                    tracing::debug!(peer = %remote, %addr, "found on the LAN");
                    self.discovery.found(&mut self.swarm, remote, Some(addr));
                }
            }
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                self.on_identified(peer_id, &info);
            }
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                result: kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders { providers, .. })),
                ..
            }) => {
                for remote in providers {
                    tracing::debug!(peer = %remote, "found on the topic");
                    self.discovery.found(&mut self.swarm, remote, None);
                }
            }
            _ => {}
        }
    }

    fn on_identified(&mut self, remote: PeerId, info: &identify::Info) {
        let dialed = self.links.dialed_direct(&remote);
        self.discovery.identified(&mut self.swarm, remote, info, dialed);
        if self.config.discovery.pex {
            let records = info.listen_addrs.iter().map(|addr| discovery::record(addr, remote)).collect();
            self.feed(Input::Listening(remote, records));
        }
    }

    /// Keeps a new WebRTC-direct listen address for the web app's configuration, and its
    /// port for the next start.
    fn remember_webrtc(&self, address: &Multiaddr) {
        let full = address.clone().with_p2p(self.me).unwrap_or_else(|addr| addr);
        if let Ok(mut addrs) = self.config.webrtc_addrs.write()
            && !addrs.contains(&full)
        {
            addrs.push(full);
        }
        let port = address.iter().find_map(|p| match p {
            libp2p::multiaddr::Protocol::Udp(port) => Some(port),
            _ => None,
        });
        if let (Some(file), Some(port)) = (&self.config.webrtc_port_file, port)
            && let Err(error) = std::fs::write(file, port.to_string())
        {
            tracing::warn!(%error, "cannot remember the WebRTC port");
        }
    }

    /// Waits for the last writes, then stops.
    async fn stop(mut self) -> anyhow::Result<()> {
        self.say("stopping".into());
        let deadline = tokio::time::Instant::now() + STOP_PATIENCE;
        while !self.node.is_durable() {
            match tokio::time::timeout_at(deadline, self.persisted_rx.recv()).await {
                Ok(Some((id, result))) => self.feed(Input::Persisted(id, result)),
                Ok(None) => break,
                Err(_) => anyhow::bail!("stopped before the last changes were saved"),
            }
            if let SyncStatus::Failed(error) = self.node.status() {
                anyhow::bail!("stopped with unsaved changes: {error}");
            }
        }
        Ok(())
    }
}

/// Listens on the configured addresses; a remembered WebRTC port that is taken is
/// replaced by any free one.
fn listen(
    swarm: &mut libp2p::Swarm<net::Behaviour>,
    config: &PeerConfig,
) -> anyhow::Result<HashSet<libp2p::core::transport::ListenerId>> {
    let mut listeners = HashSet::new();
    for addr in &config.listen {
        let listener = match swarm.listen_on(addr.clone()) {
            Err(error) if is_webrtc(addr) && config.webrtc_port_file.is_some() => {
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
        listeners.insert(listener);
    }
    Ok(listeners)
}

/// Catch-up progress, printed for the user: when a catch-up starts, every half second
/// while it runs, and when it is done.
#[derive(Debug, Default)]
struct Progress {
    quiet: bool,
    syncing: bool,
    last: Option<Instant>,
}

impl Progress {
    fn report<P: Ord + Clone + std::fmt::Debug>(&mut self, node: &Node<P>) {
        if self.quiet {
            return;
        }
        let replica = node.replica();
        match node.status() {
            status @ SyncStatus::Syncing { .. } => {
                let due = self.last.is_none_or(|at| at.elapsed() >= Duration::from_millis(500));
                if !self.syncing || due {
                    println!("{}", status.line());
                    self.last = Some(Instant::now());
                }
                self.syncing = true;
            }
            _ if self.syncing => {
                let todos = replica.db().count(hellopears_core::todo::COLLECTION);
                println!("synced: {} entries, {todos} todos", replica.base().total_entries());
                self.syncing = false;
                self.last = None;
            }
            _ => {}
        }
    }
}
