//! `hellopears up`: a running peer. One task, the [`Peer`] actor, owns the swarm and the
//! core's [`Node`]; it maps swarm, stream, storage and user events to the node's inputs and
//! carries out its outputs. It holds no replication logic: links and hole punching are in
//! `links`, finding peers in `discovery`, stream IO in `streams`, storage writes run on a
//! blocking thread.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hellopears_core::keys::WriterId;
use hellopears_core::limits;
use hellopears_core::node::{self, CommandId, Input, Node, Open, Output};
use hellopears_core::replica::Notice;
use hellopears_core::ui::{Snapshot, SyncStatus};
use libp2p::core::ConnectedPoint;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{Multiaddr, PeerId, identify, identity, kad, mdns};
use tokio::sync::{mpsc, oneshot, watch};

use crate::commands::{self, Action, NodeStatus, PeerStatus, Reply, Request};
use crate::discovery::{self, Discovery};
use crate::links::{Connection, Links, is_webrtc};
use crate::local::{Backend, Home};
use crate::net::{self, BehaviourEvent};
use crate::reads;
use crate::store::ListRecord;
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
    /// Peers to dial at start, and the DHT's first contacts: the public IPFS DHT's
    /// bootstrap peers unless replaced.
    pub bootstrap: Vec<Multiaddr>,
    /// Whether `bootstrap` is the public DHT's list.
    pub public_dht: bool,
    /// Peers named by the invite links of joined lists, dialed at start.
    pub invited: Vec<Multiaddr>,
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
    /// STUN servers (`stun:host:port`) for `/webrtc` ICE: server-reflexive candidates.
    pub stun_servers: Vec<String>,
    /// The UDP port this peer answers STUN on, if any.
    pub stun_port: Option<u16>,
    /// What the UIs show, published whenever it changes (the window and the terminal UI).
    pub view: Option<watch::Sender<Snapshot>>,
    /// The data dir (its app store), none in memory.
    pub data_dir: Option<PathBuf>,
    /// Apps to seed: channels staged in this data dir, or app keys.
    pub seed: Vec<String>,
    /// The app this peer runs (fetched from its seeders), and where its newest complete
    /// version's directory is published (the web server serves it).
    pub app: Option<(WriterId, watch::Sender<crate::app_net::Version>)>,
    /// An app whose seeders are only counted (`app info`): each one and its number of versions.
    pub probe: Option<(WriterId, tokio::sync::mpsc::UnboundedSender<(PeerId, u64)>)>,
    /// Scripts to run in a native window's page, with where their result goes.
    pub eval: Option<mpsc::Sender<(String, oneshot::Sender<Reply>)>>,
}

/// Sends requests to a running peer.
#[derive(Clone, Debug)]
pub struct PeerHandle {
    tx: mpsc::Sender<Inbound>,
    reads: reads::Reader,
}

/// The receiving end of a [`PeerHandle`], handed to [`run`].
#[derive(Debug)]
pub struct PeerInbox {
    rx: mpsc::Receiver<Inbound>,
    reads: reads::Publisher,
}

/// A handle and the inbox it feeds.
pub fn channel() -> (PeerHandle, PeerInbox) {
    let (tx, rx) = mpsc::channel(1024);
    let (publisher, reader) = reads::channel();
    (PeerHandle { tx, reads: reader }, PeerInbox { rx, reads: publisher })
}

impl PeerHandle {
    /// Runs a request on the peer.
    pub async fn request(&self, request: Request) -> Reply {
        if let Some(reply) = self.reads.answer(&request) {
            return reply;
        }
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

/// How a list's session opens its stream to a browser tab: only once the tab's own stream
/// for that list arrives. A tab shows one list; a stream of another list would reach its
/// session and be refused as a violation (the tab then drops the whole connection), and a
/// browser drops data channels opened before its side of a fresh connection is set up.
/// (A tab that shows a list we join later restarts its `Hello`, which is routed again.)
const BROWSER_OPEN: Open = Open::AfterRemote { fallback_ms: u64::MAX / 4 };
/// How often the node ticks.
const TICK: Duration = Duration::from_millis(250);
/// How often the DHT is asked for the list's peers.
const LOOK_UP: Duration = Duration::from_secs(20);
/// The UI snapshot is rebuilt at most this often while things change.
const VIEW_INTERVAL: Duration = Duration::from_millis(100);
/// How long a peer that opened no session on any of our lists stays connected.
const STRANGER_GRACE: Duration = Duration::from_secs(2);
/// Whether `eval` runs scripts in the window's page (test builds only).
const AUTOMATION: bool = cfg!(feature = "automation");

/// The UDP port a reachable peer answers STUN on, unless `--stun-port` says another.
pub const DEFAULT_STUN_PORT: u16 = 3478;
/// How long a peer our relay serves may take to open a session on one of our lists.
/// How often a relayed peer is tried over `/webrtc` at most.
const WEBRTC_RETRY: Duration = Duration::from_secs(60);
const RELAY_GRACE: Duration = Duration::from_millis(limits::RELAY_GRACE_MS);
/// How long the peer waits for its last write when stopping.
const STOP_PATIENCE: Duration = Duration::from_secs(10);

/// One list the peer serves: its node, its storage, and its sync streams.
#[derive(Debug)]
pub struct Slot {
    /// The list as the data dir keeps it.
    pub record: ListRecord,
    /// Its node.
    pub node: Node<PeerId>,
    /// Its storage.
    pub backend: Backend,
    /// Our outbound sync stream to each peer, for this list.
    writers: HashMap<PeerId, Writer>,
    progress: Progress,
}

impl Slot {
    /// A list to serve.
    pub fn new(record: ListRecord, mut node: Node<PeerId>, backend: Backend, device_name: &str) -> Self {
        if let Some(invite) = record.joining {
            node.set_invite(hellopears_core::access::Invite::from_secret(invite), device_name.to_owned());
        }
        Self { record, node, backend, writers: HashMap::new(), progress: Progress::default() }
    }
}

/// Where an inbound sync stream's frames go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// Its first frame (a `Hello`) has not come yet.
    Unrouted,
    /// To the list at this index.
    List(usize),
    /// Its `Hello` named no list we hold (or proved none): ignored.
    Ignored,
}

/// Runs the peer until Ctrl-C, SIGTERM or [`PeerHandle::shutdown`].
pub async fn run(
    slots: Vec<Slot>,
    home: Home,
    node_key: identity::Keypair,
    config: PeerConfig,
    inbox: PeerInbox,
) -> anyhow::Result<()> {
    let PeerInbox { rx: mut inbox, reads } = inbox;
    let mut peer = Peer::start(slots, home, node_key, config, reads)?;
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
            Some((list, id, result)) = peer.persisted_rx.recv() => peer.feed(list, Input::Persisted(id, result)),
            Some(event) = peer.streams_rx.recv() => peer.on_stream(event),
            Some(event) = peer.readers.next(), if !peer.readers.is_empty() => peer.on_stream(event),
            event = peer.swarm.select_next_some() => peer.on_swarm(event),
            Some((remote, stream)) = incoming.next() => peer.on_incoming(remote, stream),
            Some(report) = peer.webrtc_misbehaviour.next() => peer.on_webrtc_misbehaviour(report),
            _ = tick.tick() => peer.on_tick(),
            _ = look_up.tick() => peer.discovery.look_up(&mut peer.swarm),
            () = sleep_until(peer.reads.due()), if peer.reads.due().is_some() => {}
        }
        peer.after_event();
    }
    peer.stop().await
}

/// Sleeps until `at` (never, without one).
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
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
    /// Every list served; the first is the one the UIs show.
    slots: Vec<Slot>,
    home: Home,
    links: Links,
    discovery: Discovery,
    control: libp2p_stream::Control,
    /// Inbound sync streams open, per peer.
    inbound: HashMap<PeerId, usize>,
    /// Where each inbound stream's frames go.
    routes: HashMap<u64, Route>,
    next_inbound: u64,
    /// Peers none of whose streams named a list we hold, and when to drop them.
    strangers: HashMap<PeerId, Instant>,
    /// Peers our relay serves (a reservation, or a circuit they opened), and when they must
    /// share a list with us to keep it.
    relayed_for: HashMap<PeerId, Instant>,
    /// Where each connected peer listens, as its identify said.
    identified: HashMap<PeerId, Vec<Multiaddr>>,
    /// Peers holding a reservation on our relay: reachable through us, whether or not their
    /// own identify (which a browser can lose) names the circuit.
    reserved_here: HashSet<PeerId>,
    /// Peers refused until then, for breaking the protocol.
    banned: HashMap<PeerId, Instant>,
    /// Peers that dialed us directly: AutoNAT servers once their sync session is open.
    autonat_candidates: HashMap<PeerId, Multiaddr>,
    /// Peers whose lists' sessions were started (told `Connected`).
    sessions: HashSet<PeerId>,
    /// Connected peers that do not speak the sync protocol (DHT nodes, relays, other
    /// libp2p apps): their connections are kept, no session is tried again.
    foreign: HashSet<PeerId>,
    /// Peers reached only through a relay that is on none of our lists, and that relay:
    /// it may coordinate a hole punch, never carry our data.
    punch_only: HashMap<PeerId, (PeerId, Instant)>,
    /// Peers we tried to reach over `/webrtc`, and when.
    webrtc_tried: HashMap<PeerId, Instant>,
    /// The fetch of the app this peer runs, told of peers that speak the app protocol.
    app_seeders: Option<tokio::sync::mpsc::UnboundedSender<crate::app_net::SeederEvent>>,
    /// The STUN servers our `/webrtc` exchanges ask: configured, and those of reachable peers.
    stun_servers: webrtc_p2p::tokio::StunServers,
    /// The UDP port we answer STUN on, once we do.
    stun_answering: Option<u16>,
    /// Peers that broke the `/webrtc` signaling protocol, as the transport reports them.
    webrtc_misbehaviour: futures::channel::mpsc::UnboundedReceiver<webrtc_p2p::tokio::Misbehaviour>,
    next_epoch: u64,
    streams_tx: mpsc::Sender<streams::Event>,
    streams_rx: mpsc::Receiver<streams::Event>,
    /// Every inbound stream's frames, taken in turn.
    readers: futures::stream::SelectAll<streams::Frames>,
    persisted_tx: mpsc::Sender<(usize, node::PersistId, Result<(), String>)>,
    persisted_rx: mpsc::Receiver<(usize, node::PersistId, Result<(), String>)>,
    pending: HashMap<CommandId, PendingReply>,
    next_command: CommandId,
    /// Joins waiting to be admitted: the list, the reply, and when to give up.
    joins: Vec<(usize, PendingReply, Instant)>,
    config: PeerConfig,
    view_dirty: bool,
    view_at: Instant,
    /// What the control socket answers `list` from.
    reads: reads::Publisher,
    /// The list the UIs (window, terminal UI) show.
    shown: usize,
    /// The DHT's state, as of the last tick (for the UIs).
    dht: crate::discovery::DhtStatus,
}

impl Peer {
    fn start(
        slots: Vec<Slot>,
        home: Home,
        node_key: identity::Keypair,
        config: PeerConfig,
        reads: reads::Publisher,
    ) -> anyhow::Result<Self> {
        let discovering = config.discovery;
        let stun_servers = webrtc_p2p::tokio::StunServers::new(config.stun_servers.clone());
        let p2p_config =
            webrtc_p2p::tokio::Config { stun_servers: stun_servers.clone(), ..webrtc_p2p::tokio::Config::default() };
        let (mut swarm, webrtc_misbehaviour) = net::build_swarm(
            node_key,
            discovering.mdns,
            discovering.dht,
            config.webrtc_certificate.clone(),
            p2p_config,
        )?;
        let me = *swarm.local_peer_id();
        let listeners = listen(&mut swarm, &config)?;
        for addr in &config.external {
            // The relay serves only once an external address is confirmed: confirm ours now.
            swarm.add_external_address(addr.clone());
        }
        let topics = slots.iter().map(|slot| slot.node.replica().topic().clone()).collect();
        let mut discovery = Discovery::new(
            me,
            config.bootstrap.clone(),
            config.public_dht,
            config.invited.clone(),
            listeners,
            config.external.is_empty(),
            topics,
        );
        discovery.set_server(&mut swarm, !config.external.is_empty());
        let control = swarm.behaviour().stream.new_control();
        let (streams_tx, streams_rx) = mpsc::channel(1024);
        let (persisted_tx, persisted_rx) = mpsc::channel(4);
        let mut peer = Self {
            swarm,
            me,
            slots,
            home,
            links: Links::default(),
            discovery,
            control,
            inbound: HashMap::new(),
            routes: HashMap::new(),
            next_inbound: 0,
            strangers: HashMap::new(),
            relayed_for: HashMap::new(),
            stun_servers,
            stun_answering: None,
            app_seeders: None,
            identified: HashMap::new(),
            reserved_here: HashSet::new(),
            banned: HashMap::new(),
            autonat_candidates: HashMap::new(),
            sessions: HashSet::new(),
            foreign: HashSet::new(),
            punch_only: HashMap::new(),
            webrtc_tried: HashMap::new(),
            webrtc_misbehaviour,
            next_epoch: 0,
            streams_tx,
            streams_rx,
            readers: futures::stream::SelectAll::new(),
            persisted_tx,
            persisted_rx,
            pending: HashMap::new(),
            next_command: 0,
            joins: Vec::new(),
            config,
            view_dirty: true,
            view_at: Instant::now().checked_sub(VIEW_INTERVAL).unwrap_or_else(Instant::now),
            reads,
            shown: 0,
            dht: Default::default(),
        };
        for slot in &mut peer.slots {
            slot.progress.quiet = peer.config.quiet;
        }
        if let Some(port) = peer.config.stun_port {
            peer.answer_stun(port)
                .map_err(|error| anyhow::anyhow!("cannot answer STUN on UDP port {port}: {error}"))?;
        } else if !peer.config.external.is_empty()
            && let Err(error) = peer.answer_stun(DEFAULT_STUN_PORT)
        {
            tracing::warn!(%error, port = DEFAULT_STUN_PORT, "not answering STUN");
        }
        peer.start_apps()?;
        peer.introduce();
        Ok(peer)
    }

    /// Serves the apps this peer seeds (`/hellopears/app/1`), and fetches the one it runs.
    fn start_apps(&mut self) -> anyhow::Result<()> {
        if let Some((app, found)) = self.config.probe.clone() {
            // `app info`: counts the seeders, fetches nothing (no store needed).
            self.discovery.add_app(&mut self.swarm, hellopears_core::app::rendezvous(&app), false);
            let (seeders, events) = tokio::sync::mpsc::unbounded_channel();
            crate::app_net::probe(self.control.clone(), app, events, found);
            self.app_seeders = Some(seeders);
            return Ok(());
        }
        let Some(data) = self.config.data_dir.clone() else {
            if !self.config.seed.is_empty() || self.config.app.is_some() {
                anyhow::bail!("apps are kept in a data dir: not with --memory");
            }
            return Ok(());
        };
        let store = crate::apps::AppStore::open(&data)?;
        let mut seeding = HashSet::new();
        for name in &self.config.seed {
            let app = match WriterId::from_hex(name) {
                Ok(app) => app,
                Err(_) => store.channel_app(name)?.ok_or_else(|| {
                    anyhow::anyhow!("no app staged on channel {name:?} here (hellopears stage {name})")
                })?,
            };
            let versions = store.versions(&app)?;
            match versions.last() {
                Some((_, manifest)) => self.say(format!("seeding app {} version {}", app.to_hex(), manifest.version)),
                None => self.say(format!("seeding app {} (no version here yet)", app.to_hex())),
            }
            seeding.insert(app);
        }
        for app in &seeding {
            self.discovery.add_app(&mut self.swarm, hellopears_core::app::rendezvous(app), true);
        }
        if let Some((app, _)) = &self.config.app {
            // A peer that runs an app looks for its seeders, and seeds what it has of it.
            self.discovery.add_app(&mut self.swarm, hellopears_core::app::rendezvous(app), false);
            seeding.insert(*app);
        }
        let incoming = self
            .control
            .accept(crate::app_net::APP_PROTOCOL)
            .map_err(|_| anyhow::anyhow!("app protocol registered twice"))?;
        crate::app_net::serve(incoming, crate::apps::AppStore::open(&data)?, Arc::new(RwLock::new(seeding)));
        if let Some((app, ready)) = self.config.app.clone() {
            let (seeders, events) = tokio::sync::mpsc::unbounded_channel();
            crate::app_net::fetch(self.control.clone(), store, app, events, ready, self.config.quiet)?;
            self.app_seeders = Some(seeders);
        }
        Ok(())
    }

    /// Answers STUN binding requests on UDP `port` (for the ICE of our lists' tabs and
    /// desktops) and says so in identify ([`webrtc_p2p::stun_advert`]). Once.
    fn answer_stun(&mut self, port: u16) -> anyhow::Result<()> {
        if self.stun_answering.is_some() {
            return Ok(());
        }
        let socket = std::net::UdpSocket::bind(("0.0.0.0", port))?;
        socket.set_nonblocking(true)?;
        let socket = tokio::net::UdpSocket::from_std(socket)?;
        tokio::spawn(async move {
            if let Err(error) = webrtc_p2p::tokio::serve_stun(socket).await {
                tracing::warn!(%error, "the STUN responder stopped");
            }
        });
        // Supporting the advert protocol puts it in identify (pushed to connected peers);
        // nobody opens a stream on it, and one that does is dropped at once.
        let mut adverts = self
            .control
            .accept(webrtc_p2p::stun_advert(port))
            .map_err(|error| anyhow::anyhow!("advertising STUN: {error}"))?;
        tokio::spawn(async move { while adverts.next().await.is_some() {} });
        self.stun_answering = Some(port);
        self.say(format!("answering STUN on UDP port {port}"));
        Ok(())
    }

    fn say(&self, line: String) {
        if !self.config.quiet {
            println!("{line}");
        }
    }

    fn introduce(&mut self) {
        self.say(format!("peer id {}", self.me));
        for index in 0..self.slots.len() {
            self.say(self.describe(index));
        }
        self.say("alone: waiting for peers".into());
        // Each node's first write (a new writer key) goes out now.
        self.feed_all(|| Input::Tick);
    }

    /// The line that names a list when the peer starts serving it.
    fn describe(&self, index: usize) -> String {
        let replica = self.slots[index].node.replica();
        let topic = replica.topic();
        let access = if topic.is_private() {
            format!("private list, {}", crate::lists::summary(topic, replica, self.slots[index].node.is_joining()).role)
        } else {
            crate::lists::PUBLIC_LABEL.to_owned()
        };
        format!("topic {} ({}), writer {} [{access}]", topic.name(), topic.id(), replica.writer_id().short())
    }

    /// Hands an input to one list's node and carries out what it asks.
    fn feed(&mut self, list: usize, input: Input<PeerId>) {
        let now = commands::now_ms();
        let Some(slot) = self.slots.get_mut(list) else { return };
        let outputs = slot.node.handle(input, now);
        for output in outputs {
            self.execute(list, output);
        }
    }

    /// Hands an input to every list's node.
    fn feed_all(&mut self, input: impl Fn() -> Input<PeerId>) {
        for list in 0..self.slots.len() {
            self.feed(list, input());
        }
    }

    /// Whether any list syncs with a remote.
    fn shares_a_list(&self, remote: &PeerId) -> bool {
        self.slots.iter().any(|slot| slot.node.peers().any(|peer| peer.id == remote))
    }

    /// Peers whose sync session is open on any list.
    fn remote_count(&self) -> usize {
        let peers: HashSet<PeerId> =
            self.slots.iter().flat_map(|slot| slot.node.peers().map(|peer| *peer.id)).collect();
        peers.len()
    }

    fn execute(&mut self, list: usize, output: Output<PeerId>) {
        match output {
            Output::Persist(id, batch) => {
                let (backend, done) = (self.slots[list].backend.clone(), self.persisted_tx.clone());
                tokio::spawn(async move {
                    let result = backend.write(batch).await;
                    if let Err(error) = &result {
                        tracing::error!(%error, "cannot save; retrying");
                    }
                    let _ = done.send((list, id, result)).await;
                });
            }
            Output::OpenStream(remote) => self.open_stream(list, remote),
            Output::Send(remote, frame) => self.send(list, remote, frame),
            Output::Disconnect(remote, reason) => {
                self.slots[list].writers.remove(&remote);
                // The connection stays while another list syncs with this peer.
                if !self.shares_a_list(&remote) {
                    tracing::warn!(peer = %remote, %reason, "dropping peer");
                    let _ = self.swarm.disconnect_peer_id(remote);
                } else {
                    tracing::debug!(peer = %remote, %reason, list = %self.slots[list].record.name, "not syncing this list");
                }
            }
            Output::Ban(remote, reason) => self.ban(remote, &reason),
            Output::Dial(record) if self.config.discovery.pex => {
                // A relayed path is taken only through a relay on one of our lists.
                let relay = std::str::from_utf8(&record)
                    .ok()
                    .and_then(|text| text.parse::<Multiaddr>().ok())
                    .and_then(|addr| crate::links::relay_of(&addr));
                if relay.is_none_or(|relay| self.shares_a_list(&relay)) {
                    self.discovery.learned(&mut self.swarm, &record, Instant::now());
                }
            }
            Output::Dial(_) => {}
            Output::Reply(id, result) => {
                // A command's own change is readable once it is acknowledged.
                self.publish_reads(true);
                if let Some(reply) = self.pending.remove(&id) {
                    let _ = reply.send(result.map(|outcome| commands::outcome_text(&outcome)));
                }
            }
            Output::Notice(notice @ (Notice::OverQuota { .. } | Notice::Fork { .. })) => {
                tracing::warn!(?notice, list = %self.slots[list].record.name, "replica")
            }
            Output::Notice(notice) => tracing::info!(?notice, list = %self.slots[list].record.name, "replica"),
            Output::Changed => {
                self.view_dirty = true;
                self.reads.mark(list);
            }
        }
    }

    fn open_stream(&mut self, list: usize, remote: PeerId) {
        self.next_epoch += 1;
        let epoch = self.next_epoch;
        self.slots[list].writers.insert(remote, Writer { epoch, frames: None });
        streams::open_writer(self.control.clone(), remote, epoch, self.streams_tx.clone());
    }

    fn send(&mut self, list: usize, remote: PeerId, frame: Vec<u8>) {
        let Some(frames) = self.slots[list].writers.get(&remote).and_then(|w| w.frames.as_ref()) else { return };
        // The writer is gone or far behind: the periodic Have and request retries recover.
        if frames.try_send(frame).is_err() {
            tracing::debug!(peer = %remote, "sync writer busy, frame dropped");
        }
    }

    fn on_stream(&mut self, event: streams::Event) {
        match event {
            streams::Event::Frame(remote, stream, frame) => self.on_frame(remote, stream, frame),
            streams::Event::Closed(remote, stream, reason) => {
                self.inbound_closed(remote, stream);
                tracing::debug!(peer = %remote, %reason, "sync stream ended");
            }
            streams::Event::Violation(remote, stream, reason) => {
                let route = self.inbound_closed(remote, stream);
                match route {
                    Some(Route::List(list)) => self.feed(list, Input::Violation(remote, reason)),
                    _ => self.feed(0, Input::Violation(remote, reason)),
                }
            }
            streams::Event::Opened(remote, epoch, frames) => {
                let Some(list) = self.writer_list(&remote, epoch) else { return };
                if let Some(writer) = self.slots[list].writers.get_mut(&remote) {
                    writer.frames = Some(frames);
                }
                self.feed(list, Input::StreamOpened(remote));
            }
            streams::Event::Unsupported(remote, epoch) => {
                if self.writer_list(&remote, epoch).is_none() {
                    return;
                }
                tracing::debug!(peer = %remote, "the peer does not speak the sync protocol: keeping its connection");
                self.foreign.insert(remote);
                self.sessions.remove(&remote);
                for slot in &mut self.slots {
                    slot.writers.remove(&remote);
                }
                self.feed_all(|| Input::Disconnected(remote));
            }
            streams::Event::Lost(remote, epoch) => {
                if let Some(list) = self.writer_list(&remote, epoch) {
                    self.slots[list].writers.remove(&remote);
                    tracing::debug!(peer = %remote, "sync stream lost");
                    self.feed(list, Input::StreamLost(remote));
                }
            }
        }
    }

    /// Whether `remote` is a browser tab (it dialed us over WebRTC).
    fn is_browser(&self, remote: &PeerId) -> bool {
        self.links.get(remote).is_some_and(|links| {
            links
                .links
                .iter()
                .any(|link| !link.dialed && (is_webrtc(&link.addr) || webrtc_p2p::is_webrtc_addr(&link.addr)))
        })
    }

    /// The list whose outbound stream to `remote` is of this epoch.
    fn writer_list(&self, remote: &PeerId, epoch: u64) -> Option<usize> {
        self.slots.iter().position(|slot| slot.writers.get(remote).is_some_and(|w| w.epoch == epoch))
    }

    /// A frame of an inbound stream: the first one (a `Hello`) decides which list the
    /// stream is for; a `Hello` no list of ours accepts leaves the stream ignored, so a
    /// peer cannot tell a list we do not hold from a proof that failed.
    fn on_frame(&mut self, remote: PeerId, stream: u64, frame: Vec<u8>) {
        let route = self.routes.get(&stream).copied().unwrap_or(Route::Ignored);
        let list = match route {
            Route::List(list) => list,
            // A `Hello` again on an ignored stream (the remote restarts its session) is
            // routed again: the list may have been created or joined here since.
            Route::Ignored => match self.route(&remote, &frame) {
                Ok(Some(list)) if self.routes.contains_key(&stream) => {
                    self.routes.insert(stream, Route::List(list));
                    self.strangers.remove(&remote);
                    self.feed(list, Input::RemoteStream(remote));
                    list
                }
                _ => return,
            },
            Route::Unrouted => match self.route(&remote, &frame) {
                Err(error) => {
                    // Not a message at all: a protocol violation, whichever list it was for.
                    self.routes.insert(stream, Route::Ignored);
                    self.feed(0, Input::Violation(remote, format!("protocol violation: {error}")));
                    return;
                }
                Ok(Some(list)) => {
                    self.routes.insert(stream, Route::List(list));
                    self.strangers.remove(&remote);
                    self.feed(list, Input::RemoteStream(remote));
                    list
                }
                Ok(None) => {
                    self.routes.insert(stream, Route::Ignored);
                    tracing::info!(peer = %remote, "a sync stream for no list of ours");
                    if !self.shares_a_list(&remote) {
                        self.strangers.entry(remote).or_insert_with(|| Instant::now() + STRANGER_GRACE);
                    }
                    return;
                }
            },
        };
        self.feed(list, Input::Frame(remote, frame));
    }

    /// The list a stream's first frame opens a session on.
    fn route(&self, remote: &PeerId, frame: &[u8]) -> Result<Option<usize>, hellopears_core::sync::SyncError> {
        let hellopears_core::Message::Hello { discovery, proof, .. } = hellopears_core::Message::decode(frame)? else {
            return Ok(None);
        };
        let (me, them) = (self.me.to_bytes(), remote.to_bytes());
        Ok(self.slots.iter().position(|slot| {
            let topic = slot.node.replica().topic();
            match (topic.list_keys(), proof) {
                (Some(keys), Some(proof)) => keys.check_session_proof(&proof, &them, &me).is_ok(),
                (None, None) => topic.discovery_key() == discovery,
                _ => false,
            }
        }))
    }

    /// Refuses a peer for [`limits::BAN_MS`] and drops its connections.
    fn ban(&mut self, remote: PeerId, reason: &str) {
        tracing::warn!(peer = %remote, %reason, ban_ms = limits::BAN_MS, "banning peer");
        for slot in &mut self.slots {
            slot.writers.remove(&remote);
        }
        self.swarm.behaviour_mut().blocked.block_peer(remote);
        self.banned.insert(remote, Instant::now() + Duration::from_millis(limits::BAN_MS));
        let _ = self.swarm.disconnect_peer_id(remote);
    }

    /// A peer sent garbage on the `/webrtc` signaling protocol, or flooded it.
    fn on_webrtc_misbehaviour(&mut self, report: webrtc_p2p::tokio::Misbehaviour) {
        self.ban(report.peer, &format!("WebRTC signaling: {}", report.reason));
    }

    /// Upgrades a relayed connection that we dialed to a direct `/webrtc` one, when the
    /// remote speaks the signaling protocol and cannot hole-punch with DCUtR (a browser tab,
    /// or another libp2p implementation's WebRTC peer; never another desktop peer, which
    /// DCUtR serves). Tried once a minute at most.
    fn upgrade_to_webrtc(&mut self, remote: PeerId, info: &identify::Info) {
        let desktop = info.agent_version.starts_with("hellopears-desktop/");
        let speaks = info.protocols.contains(&webrtc_p2p::SIGNALING_PROTOCOL)
            && !desktop
            && !info.protocols.contains(&libp2p::dcutr::PROTOCOL_NAME);
        let Some(links) = self.links.get(&remote) else { return };
        let relayed_only = !links.links.is_empty() && links.links.iter().all(|link| link.relayed);
        let we_dialed = links.links.iter().any(|link| link.dialed);
        let now = Instant::now();
        let recently = self.webrtc_tried.get(&remote).is_some_and(|at| now.duration_since(*at) < WEBRTC_RETRY);
        if !(speaks && relayed_only && we_dialed) || recently {
            return;
        }
        self.webrtc_tried.insert(remote, now);
        tracing::info!(peer = %remote, "upgrading a relayed connection to WebRTC (ICE)");
        let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(remote)
            .condition(libp2p::swarm::dial_opts::PeerCondition::Always)
            .addresses(vec![webrtc_p2p::upgrade_addr(remote)])
            .build();
        if let Err(error) = self.swarm.dial(opts) {
            tracing::debug!(peer = %remote, %error, "cannot dial /webrtc");
        }
    }

    fn on_incoming(&mut self, remote: PeerId, stream: libp2p::Stream) {
        let open = self.inbound.entry(remote).or_insert(0);
        if *open >= limits::MAX_SYNC_STREAMS_PER_PEER * self.slots.len().max(1) {
            tracing::debug!(peer = %remote, "refusing another inbound sync stream");
            return;
        }
        *open += 1;
        self.next_inbound += 1;
        let id = self.next_inbound;
        self.routes.insert(id, Route::Unrouted);
        self.readers.push(streams::spawn_reader(remote, id, stream));
    }

    fn on_request(&mut self, request: Request, reply: oneshot::Sender<Reply>) {
        // Whatever the loop answers, a later `list` answered off the loop shows as much.
        self.publish_reads(true);
        let result = match request.action {
            Action::Lists(format) => Ok(self.lists_text(format)),
            Action::NewList(name) => {
                let created = self.new_list(&name);
                // A list made from a running peer's own UI is shown there.
                if created.is_ok() && request.list.as_deref() == Some(hellopears_core::control::SHOWN_LIST) {
                    self.show(self.slots.len() - 1);
                }
                created
            }
            Action::Show(wanted) => match self.find_slot("", Some(&wanted)) {
                Ok(list) => Ok(self.show(list)),
                Err(error) => Err(error),
            },
            Action::Join { link, wait_ms } => {
                self.join(&link, wait_ms, reply);
                return;
            }
            Action::SetDeviceName(name) => self.set_device_name(&name),
            action => match self.find_slot(&request.topic, request.list.as_deref()) {
                Err(error) => Err(error),
                Ok(list) => {
                    self.on_list_request(list, action, reply);
                    return;
                }
            },
        };
        let _ = reply.send(result);
    }

    /// The list a request names among those served.
    fn find_slot(&self, topic: &str, list: Option<&str>) -> Result<usize, String> {
        let records: Vec<ListRecord> = self.slots.iter().map(|slot| slot.record.clone()).collect();
        crate::lists::served(&records, self.shown, topic, list)
    }

    fn on_list_request(&mut self, list: usize, action: Action, reply: oneshot::Sender<Reply>) {
        // An invite asked for by a UI (the window's page) is made here, with its secret.
        let action = match action {
            Action::Command(hellopears_core::ui::Command::NewInvite { role, valid_ms }) => {
                Action::Invite { role, valid_ms, format: commands::Format::Text }
            }
            action => action,
        };
        match action {
            Action::Command(command) => {
                let id = self.next_command;
                self.next_command += 1;
                self.pending.insert(id, reply);
                self.feed(list, Input::Command(id, command));
            }
            Action::Eval(script) => self.eval(script, reply),
            Action::Snapshot => {
                let _ = reply.send(serde_json::to_string(&self.snapshot_of(list)).map_err(|e| e.to_string()));
            }
            Action::Invite { role, valid_ms, format } => {
                let addresses = self.shareable_addresses();
                let outcome = commands::invite(&self.slots[list].node, role, valid_ms, addresses, format);
                match outcome {
                    Ok((command, text)) => {
                        let (done, answered) = oneshot::channel();
                        let id = self.next_command;
                        self.next_command += 1;
                        self.pending.insert(id, done);
                        self.feed(list, Input::Command(id, command));
                        tokio::spawn(async move {
                            let result = match answered.await {
                                Ok(Ok(_)) => Ok(text),
                                Ok(Err(error)) => Err(error),
                                Err(_) => Err("the peer stopped".into()),
                            };
                            let _ = reply.send(result);
                        });
                    }
                    Err(error) => {
                        let _ = reply.send(Err(error));
                    }
                }
            }
            action => {
                let running = self.node_status();
                let out = commands::query(&self.slots[list].node, &action, Some(&running));
                let _ = reply.send(out.ok_or_else(|| "nothing to show".into()));
            }
        }
    }

    /// Addresses a joiner can dial us at (in invite links): external addresses first, then
    /// listen addresses, at most two per transport (TCP, QUIC, WebRTC-direct for tabs).
    fn shareable_addresses(&self) -> Vec<String> {
        // Direct addresses first (external ones, then the LAN's, then loopback for this
        // machine), relayed ones last: the first contact should not need anyone's relay.
        let loopback = |addr: &Multiaddr| {
            addr.iter().any(|p| {
                matches!(p, Protocol::Ip4(ip) if ip.is_loopback()) || matches!(p, Protocol::Ip6(ip) if ip.is_loopback())
            })
        };
        let relayed =
            |addr: &Multiaddr| crate::links::relay_of(addr).is_some() || addr.iter().any(|p| p == Protocol::P2pCircuit);
        let all: Vec<Multiaddr> = self.swarm.external_addresses().chain(self.swarm.listeners()).cloned().collect();
        let mut addrs: Vec<Multiaddr> = all.iter().filter(|a| !relayed(a) && !loopback(a)).cloned().collect();
        addrs.extend(all.iter().filter(|a| !relayed(a) && loopback(a)).cloned());
        addrs.extend(all.iter().filter(|a| relayed(a)).cloned());
        let transport = |addr: &Multiaddr| {
            let text = addr.to_string();
            if text.contains("/webrtc-direct") {
                2
            } else if text.contains("/quic") {
                1
            } else {
                0
            }
        };
        let mut per_transport = [0usize; 3];
        let mut out: Vec<String> = Vec::new();
        for addr in addrs {
            let kind = transport(&addr);
            let full = addr.with_p2p(self.me).unwrap_or_else(|addr| addr).to_string();
            if per_transport[kind] < 2 && !out.contains(&full) {
                per_transport[kind] += 1;
                out.push(full);
            }
        }
        out.truncate(limits::INVITE_ADDRESSES);
        out
    }

    fn lists_text(&self, format: commands::Format) -> String {
        let summaries: Vec<crate::lists::ListSummary> = self
            .slots
            .iter()
            .map(|slot| crate::lists::summary(slot.node.replica().topic(), slot.node.replica(), slot.node.is_joining()))
            .collect();
        crate::lists::lists_text(&summaries, format == commands::Format::Json)
    }

    /// Creates a private list and starts serving it.
    fn new_list(&mut self, name: &str) -> Result<String, String> {
        let (record, writer) = commands::new_list_record(name)?;
        let text = format!("created private list {} ({})\n", record.name, record.topic().id());
        let list = self.serve_list(record, Some(writer)).map_err(|e| e.to_string())?;
        let id = self.next_command;
        self.next_command += 1;
        let name = self.home.device_name();
        self.feed(list, Input::Command(id, hellopears_core::ui::Command::SetName(name)));
        Ok(text)
    }

    /// Adds a list to the data dir and serves it from now on.
    fn serve_list(&mut self, record: ListRecord, writer: Option<[u8; 32]>) -> anyhow::Result<usize> {
        let topic = record.topic();
        if let Some(existing) = self.slots.iter().position(|slot| slot.record.topic().id() == topic.id()) {
            return Ok(existing);
        }
        self.home.put(&record)?;
        let backend = self.home.backend(&topic)?;
        let config = hellopears_core::node::Config {
            pex: self.config.discovery.pex,
            identity: self.me.to_bytes(),
            ..Default::default()
        };
        let node = crate::local::open_node_with_key(&backend, topic.clone(), config, writer)?;
        let slot = Slot::new(record, node, backend, &self.home.device_name());
        self.slots.push(slot);
        let list = self.slots.len() - 1;
        self.slots[list].progress.quiet = self.config.quiet;
        self.discovery.add_topic(&mut self.swarm, topic.clone());
        let line = self.describe(list);
        self.say(line);
        self.feed(list, Input::Tick);
        // Sessions with the peers we are connected to already.
        let connected: Vec<PeerId> = self.sessions.iter().copied().collect();
        for remote in connected {
            let open = if self.is_browser(&remote) { BROWSER_OPEN } else { Open::Now };
            self.feed(list, Input::Connected { remote, open, identity: remote.to_bytes() });
        }
        Ok(list)
    }

    /// Joins a list from an invite link: dials the peers it names and answers once a
    /// member admitted this device, or a member refused, or `wait_ms` passed.
    fn join(&mut self, link: &str, wait_ms: u64, reply: oneshot::Sender<Reply>) {
        let parsed = match hellopears_core::access::InviteLink::decode(link) {
            Ok(parsed) => parsed,
            Err(error) => {
                let _ = reply.send(Err(error.to_string()));
                return;
            }
        };
        if parsed.expires < commands::now_ms() {
            let _ = reply.send(Err("this invite expired".into()));
            return;
        }
        let list = match self.serve_list(crate::lists::joined(&parsed), None) {
            Ok(list) => list,
            Err(error) => {
                let _ = reply.send(Err(error.to_string()));
                return;
            }
        };
        if self.slots[list].node.replica().role().is_some() {
            let _ = reply.send(Ok(format!("already a member of {}\n", parsed.name)));
            return;
        }
        for addr in &parsed.addresses {
            match addr.parse::<Multiaddr>() {
                Ok(addr) => self.discovery.invited(&mut self.swarm, addr),
                Err(error) => tracing::debug!(%addr, %error, "not an address"),
            }
        }
        self.say(format!("joining {}: waiting for a member to admit this device", parsed.name));
        self.joins.push((list, reply, Instant::now() + Duration::from_millis(wait_ms)));
    }

    /// Answers joins that ended: admitted, refused, or out of time.
    fn check_joins(&mut self) {
        let now = Instant::now();
        let mut waiting = Vec::new();
        for (list, reply, deadline) in std::mem::take(&mut self.joins) {
            let node = &self.slots[list].node;
            let name = &self.slots[list].record.name;
            if let Some(role) = node.replica().role() {
                let _ = reply.send(Ok(format!("joined {name} as {}\n", role.label())));
                self.slots[list].record.joining = None;
                let record = self.slots[list].record.clone();
                if let Err(error) = self.home.put(&record) {
                    tracing::warn!(%error, "cannot record the admission");
                }
            } else if let Some(reason) = node.refusal() {
                let _ = reply.send(Err(format!("the invite was refused: {reason}")));
            } else if now >= deadline {
                let _ = reply.send(Err(format!(
                    "no member of {name} admitted this device in time (is a member's peer running and reachable?)"
                )));
            } else {
                waiting.push((list, reply, deadline));
            }
        }
        self.joins = waiting;
    }

    /// Sets this device's name, and writes it into every private list it is a member of.
    fn set_device_name(&mut self, name: &str) -> Result<String, String> {
        let name = limits::clip_name(name);
        if name.is_empty() {
            return Err("a device name needs some text".into());
        }
        self.home.set_device_name(&name).map_err(|e| e.to_string())?;
        for list in 0..self.slots.len() {
            // Blind members have no name: they read nothing, names included.
            if self.slots[list].node.replica().role().is_some_and(hellopears_core::access::Role::can_read) {
                let id = self.next_command;
                self.next_command += 1;
                self.feed(list, Input::Command(id, hellopears_core::ui::Command::SetName(name.clone())));
            }
        }
        Ok(format!("this device is now {name:?}\n"))
    }

    fn eval(&self, script: String, reply: oneshot::Sender<Reply>) {
        if !AUTOMATION {
            let _ = reply.send(Err("this build runs no scripts in the window (it was built without the \
                                    `automation` feature, which only the test suite uses)"
                .into()));
            return;
        }
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

    fn node_status(&mut self) -> NodeStatus {
        let now = Instant::now();
        let mut seen = HashSet::new();
        let mut peers: Vec<PeerStatus> = self
            .slots
            .iter()
            .flat_map(|slot| slot.node.peers())
            .filter(|info| seen.insert(*info.id))
            .map(|info| PeerStatus {
                peer: info.id.to_string(),
                addresses: self
                    .links
                    .get(info.id)
                    .map_or_else(Vec::new, |l| l.links.iter().map(|link| link.addr.to_string()).collect()),
                kind: self.links.kind(info.id, now),
                missing: info.missing,
                found: self.found_label(info.id),
            })
            .collect();
        // Peers behind a stranger's relay, waiting for a hole punch: shown, not synced.
        for (remote, (relay, _)) in &self.punch_only {
            peers.push(PeerStatus {
                peer: remote.to_string(),
                addresses: Vec::new(),
                kind: format!(
                    "relayed via {relay} (not a member of the list: it only coordinates the hole punch, no data \
                     flows through it)"
                ),
                missing: 0,
                found: self.found_label(remote),
            });
        }
        NodeStatus {
            peer_id: self.me.to_string(),
            addresses: self.swarm.listeners().map(|addr| format!("{addr}/p2p/{}", self.me)).collect(),
            peers,
            dht: Some(self.discovery.status(&mut self.swarm)),
        }
    }

    /// How a peer was found: by us (mDNS, DHT, invite, exchange, bootstrap), or it dialed us.
    fn found_label(&self, remote: &PeerId) -> String {
        match self.discovery.found_via(remote) {
            Some(found) => found.label().to_owned(),
            None if self.links.get(remote).and_then(|l| l.links.first()).is_some_and(|link| !link.dialed) => {
                "dialed us".to_owned()
            }
            None => "dialed".to_owned(),
        }
    }

    fn inbound_closed(&mut self, remote: PeerId, stream: u64) -> Option<Route> {
        if let Some(open) = self.inbound.get_mut(&remote) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                self.inbound.remove(&remote);
            }
        }
        self.routes.remove(&stream)
    }

    fn on_tick(&mut self) {
        self.feed_all(|| Input::Tick);
        let dht = self.discovery.status(&mut self.swarm);
        if dht != self.dht {
            self.dht = dht;
            self.view_dirty = true;
        }
        self.check_joins();
        let now = Instant::now();
        for relay in self.discovery.unreserved_relays() {
            if self.shares_a_list(&relay) {
                self.discovery.reserve_on_member(&mut self.swarm, relay);
            }
        }
        let alone = self.remote_count() == 0;
        self.discovery.tick(&mut self.swarm, now, alone);
        // Peers that opened no session on any list of ours are dropped after a grace
        // period (as if they were on another list: they learn nothing else).
        let due: Vec<PeerId> = self.relayed_for.iter().filter(|(_, at)| **at <= now).map(|(p, _)| *p).collect();
        for client in due {
            self.relayed_for.remove(&client);
            if !self.shares_a_list(&client) {
                tracing::warn!(peer = %client, "relay: dropping a peer that shares no list with us");
                let _ = self.swarm.disconnect_peer_id(client);
            }
        }
        let due: Vec<PeerId> = self.strangers.iter().filter(|(_, at)| **at <= now).map(|(p, _)| *p).collect();
        for remote in due {
            self.strangers.remove(&remote);
            if self.shares_a_list(&remote) {
                continue;
            }
            // A browser tab notices a closed WebRTC connection only after a long timeout, so
            // it would come back late once we serve its list (made or joined meanwhile): its
            // sync streams are ignored, its connection kept (within the connection limits).
            if self.is_browser(&remote) {
                tracing::warn!(peer = %remote, reason = "peer is on another topic", "dropping peer's sync streams");
            } else {
                tracing::warn!(peer = %remote, reason = "peer is on another topic", "dropping peer");
                let _ = self.swarm.disconnect_peer_id(remote);
            }
        }
        if !self.autonat_candidates.is_empty() {
            let proven: Vec<PeerId> = self
                .slots
                .iter()
                .flat_map(|slot| slot.node.peers().map(|peer| *peer.id))
                .filter(|id| self.autonat_candidates.contains_key(id))
                .collect();
            for remote in proven {
                if let Some(addr) = self.autonat_candidates.remove(&remote) {
                    self.swarm.behaviour_mut().autonat.add_server(remote, Some(addr));
                }
            }
        }
        // No hole punch came through a stranger's relay: that relay carries none of our
        // data, so the connection goes (a member of the list may relay instead).
        let stale: Vec<PeerId> = self
            .punch_only
            .iter()
            .filter(|(_, (_, since))| now.duration_since(*since) >= crate::links::PUNCH_PATIENCE)
            .map(|(peer, _)| *peer)
            .collect();
        for remote in stale {
            if let Some((relay, _)) = self.punch_only.remove(&remote) {
                tracing::info!(peer = %remote, %relay, "no hole punch through a stranger's relay: not syncing through it");
                self.discovery.punch_failed(remote, now);
                let _ = self.swarm.disconnect_peer_id(remote);
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
        for slot in &mut self.slots {
            slot.progress.report(&slot.node);
        }
        self.publish_reads(false);
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

    /// Publishes the changed lists for `list` (see [`reads`]); `now` skips the interval.
    fn publish_reads(&mut self, now: bool) {
        self.reads.publish(self.slots.iter().map(|slot| (&slot.record, slot.node.replica().db())), now);
    }

    /// What the UIs show, with each peer's connection in words.
    fn snapshot(&self) -> Snapshot {
        self.snapshot_of(self.shown)
    }

    /// A list as the UIs show it, with every list the peer serves (for the window's panel).
    fn snapshot_of(&self, list: usize) -> Snapshot {
        let now = Instant::now();
        let mut snapshot = self.slots[list].node.snapshot(|peer| {
            let kind = self.links.kind(peer, now);
            let connection = match self.discovery.found_via(peer) {
                Some(found) => format!("{kind}, {}", found.words()),
                None if self.found_label(peer) == "dialed us" => format!("{kind}, it dialed us"),
                None => kind,
            };
            (peer.to_string(), connection)
        });
        snapshot.network = self.dht.line(None);
        snapshot.lists = self
            .slots
            .iter()
            .enumerate()
            .map(|(index, slot)| {
                let topic = slot.node.replica().topic();
                hellopears_core::ui::ListEntry {
                    name: slot.record.name.clone(),
                    id: topic.id().to_string(),
                    private: topic.is_private(),
                    shown: index == self.shown,
                }
            })
            .collect();
        snapshot
    }

    /// Shows another list in the UIs.
    fn show(&mut self, list: usize) -> String {
        self.shown = list;
        self.view_dirty = true;
        // The UIs see it at once, not after the next snapshot interval.
        self.view_at = Instant::now().checked_sub(VIEW_INTERVAL).unwrap_or_else(Instant::now);
        format!("showing {}\n", self.slots[list].record.name)
    }

    fn on_swarm(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, listener_id } => {
                self.say(format!("listening on {address}/p2p/{}", self.me));
                // A relay reservation: peers reach us over `/webrtc` through it too.
                if let Some(webrtc) = webrtc_p2p::webrtc_addr_of_circuit(&address) {
                    self.swarm.add_external_address(webrtc);
                }
                if is_webrtc(&address) {
                    self.remember_webrtc(&address);
                }
                self.discovery.listening(&mut self.swarm, listener_id);
            }
            SwarmEvent::ConnectionEstablished { peer_id, connection_id, endpoint, .. } => {
                self.on_connected(peer_id, connection_id, &endpoint);
            }
            SwarmEvent::OutgoingConnectionError { connection_id, .. } => {
                self.discovery.dial_failed(&mut self.swarm, connection_id);
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                tracing::debug!(%address, "external address confirmed");
                // Provider records carry our addresses: announce again with this one.
                self.discovery.announce(&mut self.swarm, true);
            }
            SwarmEvent::ConnectionClosed { peer_id, connection_id, num_established, cause, .. } => {
                self.links.closed(peer_id, connection_id, num_established == 0, Instant::now());
                if num_established == 0 {
                    tracing::info!(peer = %peer_id, cause = ?cause, "disconnected");
                    for slot in &mut self.slots {
                        slot.writers.remove(&peer_id);
                    }
                    self.autonat_candidates.remove(&peer_id);
                    self.identified.remove(&peer_id);
                    if let Some(seeders) = &self.app_seeders {
                        let _ = seeders.send(crate::app_net::SeederEvent::Down(peer_id));
                    }
                    self.reserved_here.remove(&peer_id);
                    self.strangers.remove(&peer_id);
                    self.sessions.remove(&peer_id);
                    self.foreign.remove(&peer_id);
                    if self.punch_only.remove(&peer_id).is_some() {
                        // Either side may see the punch fail: both pause their DHT dials.
                        self.discovery.punch_failed(peer_id, Instant::now());
                        self.discovery.set_punch_only(peer_id, false);
                    }
                    let had = self.remote_count();
                    self.feed_all(|| Input::Disconnected(peer_id));
                    if had > 0 && self.remote_count() == 0 {
                        self.say("alone: waiting for peers".into());
                    }
                }
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                if let Some(webrtc) = webrtc_p2p::webrtc_addr_of_circuit(&address) {
                    self.swarm.remove_external_address(&webrtc);
                }
                if let Ok(mut addrs) = self.config.webrtc_addrs.write() {
                    addrs.retain(|a| !a.iter().zip(address.iter()).all(|(x, y)| x == y));
                }
            }
            SwarmEvent::ListenerClosed { addresses, .. } => {
                for webrtc in addresses.iter().filter_map(webrtc_p2p::webrtc_addr_of_circuit) {
                    self.swarm.remove_external_address(&webrtc);
                }
                self.discovery.listener_closed(&addresses);
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour(event),
            _ => {}
        }
    }

    fn on_connected(&mut self, remote: PeerId, id: ConnectionId, endpoint: &ConnectedPoint) {
        let addr = endpoint.get_remote_address().clone();
        // The relay of a relayed connection: in the address we dialed, or in our listening
        // (reservation) address when the peer came to us through it.
        let relay = match endpoint {
            ConnectedPoint::Dialer { address, .. } => crate::links::relay_of(address),
            ConnectedPoint::Listener { local_addr, .. } => crate::links::relay_of(local_addr),
        };
        tracing::info!(peer = %remote, %addr, relayed = endpoint.is_relayed(), "connected");
        let connection =
            Connection { addr: addr.clone(), relayed: endpoint.is_relayed(), dialed: endpoint.is_dialer(), via: relay };
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
        // Two WebRTC connections (each side upgraded at once): the one the smaller peer id
        // started stays, on both sides.
        if webrtc_p2p::is_webrtc_addr(&addr)
            && let Some(links) = self.links.get(&remote)
        {
            let ours_win = self.me < remote;
            let loser: Vec<ConnectionId> = links
                .links
                .iter()
                .filter(|link| webrtc_p2p::is_webrtc_addr(&link.addr) && link.dialed != ours_win)
                .map(|link| link.id)
                .collect();
            let webrtc = links.links.iter().filter(|link| webrtc_p2p::is_webrtc_addr(&link.addr)).count();
            if webrtc > 1 {
                for id in loser {
                    self.swarm.close_connection(id);
                }
            }
        }
        self.discovery.connected(id);
        if self.sessions.contains(&remote) || self.foreign.contains(&remote) {
            return;
        }
        if let Some(relay) = relay.filter(|relay| !self.shares_a_list(relay)) {
            // A third party's relay (found in the DHT) only coordinates: no session until
            // the hole punch gives a direct connection.
            tracing::info!(peer = %remote, %relay, "reached through a stranger's relay: waiting for a hole punch");
            self.punch_only.entry(remote).or_insert((relay, Instant::now()));
            self.discovery.set_punch_only(remote, true);
            return;
        }
        self.punch_only.remove(&remote);
        self.discovery.set_punch_only(remote, false);
        self.sessions.insert(remote);
        // A browser that dialed us over WebRTC drops data channels we open before its side
        // of the connection is set up: open ours once its stream arrives, or after a while.
        let from_browser = !endpoint.is_dialer() && (is_webrtc(&addr) || webrtc_p2p::is_webrtc_addr(&addr));
        let open = if from_browser { BROWSER_OPEN } else { Open::Now };
        self.feed_all(|| Input::Connected { remote, open, identity: remote.to_bytes() });
        self.say(format!("connected to {remote} ({} peers)", self.remote_count().max(1)));
    }

    fn on_behaviour(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Dcutr(libp2p::dcutr::Event { remote_peer_id, result }) => {
                let outcome = result.map(|_| ()).map_err(|error| error.to_string());
                match &outcome {
                    Ok(()) => self.say(format!("hole punched to {remote_peer_id}")),
                    Err(error) if self.punch_only.contains_key(&remote_peer_id) => {
                        tracing::info!(peer = %remote_peer_id, %error, "hole punching failed; not syncing through a stranger's relay");
                        self.punch_only.remove(&remote_peer_id);
                        self.discovery.punch_failed(remote_peer_id, Instant::now());
                        let _ = self.swarm.disconnect_peer_id(remote_peer_id);
                    }
                    Err(error) => {
                        tracing::info!(peer = %remote_peer_id, %error, "hole punching failed; staying relayed")
                    }
                }
                self.links.punch_result(remote_peer_id, outcome, Instant::now());
            }
            BehaviourEvent::Relay(
                event @ (libp2p::relay::Event::ReservationReqAccepted { src_peer_id: client, .. }
                | libp2p::relay::Event::CircuitReqAccepted { src_peer_id: client, .. }),
            ) => {
                let reservation = matches!(event, libp2p::relay::Event::ReservationReqAccepted { .. });
                // Our relay is for the peers of our lists: anyone else loses the slot (and
                // the connection) unless it opens a session on one of our lists in time.
                self.relayed_for.entry(client).or_insert_with(|| Instant::now() + RELAY_GRACE);
                if reservation && self.reserved_here.insert(client) {
                    self.share_listening(client);
                }
            }
            BehaviourEvent::Relay(
                libp2p::relay::Event::ReservationClosed { src_peer_id: client }
                | libp2p::relay::Event::ReservationTimedOut { src_peer_id: client },
            ) if self.reserved_here.remove(&client) => self.share_listening(client),
            BehaviourEvent::RelayClient(libp2p::relay::client::Event::ReservationReqAccepted {
                relay_peer_id, ..
            }) => self.say(format!("reachable through relay {relay_peer_id}")),
            BehaviourEvent::Autonat(libp2p::autonat::Event::StatusChanged { new, .. }) => {
                tracing::info!(status = ?new, "reachability");
                // A DHT server only when others can reach us.
                let reachable =
                    matches!(new, libp2p::autonat::NatStatus::Public(_)) || !self.config.external.is_empty();
                self.discovery.set_server(&mut self.swarm, reachable);
                if let libp2p::autonat::NatStatus::Public(addr) = &new {
                    self.say(format!("publicly reachable at {addr}"));
                    // A reachable peer is the STUN server of its lists' peers.
                    let port = self.config.stun_port.unwrap_or(DEFAULT_STUN_PORT);
                    if let Err(error) = self.answer_stun(port) {
                        tracing::warn!(%error, port, "not answering STUN");
                    }
                }
            }
            BehaviourEvent::Upnp(libp2p::upnp::Event::NewExternalAddr { external_addr, .. }) => {
                self.say(format!("UPnP mapped {external_addr}"));
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                for (remote, addr) in found {
                    tracing::debug!(peer = %remote, %addr, "found on the LAN");
                    self.discovery.found(&mut self.swarm, remote, Some(addr), discovery::Found::Mdns);
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
                    tracing::debug!(peer = %remote, "found in the DHT");
                    self.discovery.found(&mut self.swarm, remote, None, discovery::Found::Dht);
                }
            }
            BehaviourEvent::Kad(kad::Event::RoutingUpdated { .. }) => self.discovery.routing_updated(&mut self.swarm),
            _ => {}
        }
    }

    fn on_identified(&mut self, remote: PeerId, info: &identify::Info) {
        tracing::debug!(peer = %remote, addrs = ?info.listen_addrs, "identified");
        // A peer behind a stranger's relay that has direct addresses (a reachable one) is
        // dialed there at once: no need to wait for a hole punch.
        if self.punch_only.contains_key(&remote) {
            let direct: Vec<Multiaddr> = info
                .listen_addrs
                .iter()
                .filter(|addr| {
                    crate::links::relay_of(addr).is_none()
                        && !addr.iter().any(|p| p == Protocol::P2pCircuit)
                        && !addr
                            .iter()
                            .any(|p| matches!(p, Protocol::Ip4(ip) if ip.is_loopback() || ip.is_unspecified()))
                })
                .take(4)
                .cloned()
                .collect();
            if !direct.is_empty() {
                let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(remote)
                    .condition(libp2p::swarm::dial_opts::PeerCondition::Always)
                    .addresses(direct)
                    .build();
                let _ = self.swarm.dial(opts);
            }
        }
        self.upgrade_to_webrtc(remote, info);
        self.learn_stun(remote, info);
        if let Some(seeders) = &self.app_seeders
            && info.protocols.contains(&crate::app_net::APP_PROTOCOL)
        {
            let _ = seeders.send(crate::app_net::SeederEvent::Up(remote));
        }
        let dialed = self.links.dialed_direct(&remote);
        self.discovery.identified(&mut self.swarm, remote, info, dialed);
        self.identified.insert(remote, info.listen_addrs.clone());
        self.share_listening(remote);
    }

    /// Takes the STUN server a peer we reach directly advertises (a reachable peer of our
    /// lists, normally) for our `/webrtc` exchanges.
    fn learn_stun(&mut self, remote: PeerId, info: &identify::Info) {
        let Some(port) = webrtc_p2p::stun_port_of(&info.protocols) else { return };
        let Some(addr) = self.links.dialed_direct(&remote) else { return };
        if let Some(url) = webrtc_p2p::stun_url(&addr, port)
            && self.stun_servers.add(url.clone())
        {
            tracing::info!(peer = %remote, %url, "using the STUN server of a peer");
        }
    }

    /// Tells the lists' sessions where `remote` listens: what its identify said, and the
    /// circuits through us while it holds a reservation here.
    fn share_listening(&mut self, remote: PeerId) {
        if !self.config.discovery.pex {
            return;
        }
        let mut addrs = self.identified.get(&remote).cloned().unwrap_or_default();
        if self.reserved_here.contains(&remote) {
            for circuit in self.circuits_for(remote) {
                if !addrs.contains(&circuit) {
                    addrs.push(circuit);
                }
            }
        }
        let records: Vec<Vec<u8>> = addrs.iter().map(|addr| discovery::record(addr, remote)).collect();
        self.feed_all(|| Input::Listening(remote, records.clone()));
    }

    /// `remote`'s `/webrtc` addresses through our relay: one per address of ours that
    /// others reach (WebRTC-direct for tabs, then TCP and QUIC), at most three.
    fn circuits_for(&self, remote: PeerId) -> Vec<Multiaddr> {
        let webrtc_direct: Vec<Multiaddr> =
            self.config.webrtc_addrs.read().map(|addrs| addrs.clone()).unwrap_or_default();
        let ours = webrtc_direct.into_iter().chain(self.swarm.external_addresses().cloned());
        let mut circuits = Vec::new();
        for addr in ours {
            if addr.iter().any(|p| p == Protocol::P2pCircuit) {
                continue;
            }
            let relay = addr.with_p2p(self.me).unwrap_or_else(|addr| addr).with(Protocol::P2pCircuit);
            let Some(webrtc) = webrtc_p2p::webrtc_addr_of_circuit(&relay) else { continue };
            let Ok(circuit) = webrtc.with_p2p(remote) else { continue };
            if !circuits.contains(&circuit) {
                circuits.push(circuit);
            }
            if circuits.len() == 3 {
                break;
            }
        }
        circuits
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
        while !self.slots.iter().all(|slot| slot.node.is_durable()) {
            match tokio::time::timeout_at(deadline, self.persisted_rx.recv()).await {
                Ok(Some((list, id, result))) => self.feed(list, Input::Persisted(id, result)),
                Ok(None) => break,
                Err(_) => anyhow::bail!("stopped before the last changes were saved"),
            }
            for slot in &self.slots {
                if let SyncStatus::Failed(error) = slot.node.status() {
                    anyhow::bail!("stopped with unsaved changes: {error}");
                }
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
    // `/webrtc`: signaling streams on any connection (relayed ones, normally).
    swarm.listen_on(Multiaddr::empty().with(Protocol::WebRTC))?;
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

#[cfg(test)]
mod tests {
    /// `eval` runs scripts in the window's page: only builds made for the test suite have
    /// it (`--features automation`), never the default build users run.
    #[test]
    fn the_default_build_has_no_automation() {
        let manifest = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).expect("manifest");
        let default =
            manifest.lines().find(|line| line.trim_start().starts_with("default =")).expect("default features");
        assert!(!default.contains("automation"), "{default}");
        assert!(manifest.contains("automation = []"));
    }
}
