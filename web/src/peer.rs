//! The in-tab peer: the core's [`Node`] on IndexedDB, libp2p over WebRTC-direct to desktop
//! peers, and the same sync protocol and framing as the desktop peer. One task owns the
//! swarm and the node; it maps swarm, stream, storage and UI events to the node's inputs and
//! carries out its outputs. Stream IO and IndexedDB writes run in small tasks that report
//! back over channels. The UI sees it only through [`Ui`].

use std::collections::HashMap;
use std::time::Duration;

use futures::channel::mpsc;
use futures::io::{AsyncReadExt, AsyncWriteExt};
use futures::{FutureExt, SinkExt, StreamExt};
use hellopears_core::node::{self, CommandId, Input, Node, Open, Output, PersistId};
use hellopears_core::storage::{LoadedState, Storage, WriteBatch};
use hellopears_core::sync::{IDENTIFY_PROTOCOL, PROTOCOL_ID, frame};
use hellopears_core::topic::Topic;
use hellopears_core::ui::{Command, PageConfig, SyncStatus};
use libp2p::core::ConnectedPoint;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, identify, identity, noise, ping, relay, yamux};
use wasm_bindgen_futures::spawn_local;

use crate::addresses::AddressBook;
use crate::app::Ui;
use crate::idb::IdbStorage;
use crate::lists::{KnownList, LIST_RECORD, ListRecord, Source};

const SYNC_PROTOCOL: StreamProtocol = StreamProtocol::new(PROTOCOL_ID);
const NODE_KEY: &str = "node-key";
const KNOWN_PEERS: &str = "known-peers";
const LEARNED_PEERS: &str = "learned-peers";
/// Writer slots: each open tab of a list in one browser writes with its own key, held by a
/// Web Lock, so two tabs never append to one log (a fork).
const WRITER_SLOTS: u32 = 16;
/// How long opening a sync stream may take before it counts as lost.
const STREAM_OPEN_TIMEOUT_MS: u64 = 5_000;
/// How long a dial to a desktop may take before it counts as failed (and is retried).
const DIAL_TIMEOUT: Duration = Duration::from_secs(8);
/// How often the node ticks, and how often the UI is refreshed while catching up.
const TICK_MS: u64 = 250;

/// Relays (desktop peers reached directly) a tab holds a reservation on at once: other
/// tabs and desktops reach it through them, and upgrade to `/webrtc`.
const MAX_RESERVATIONS: usize = 2;
/// How often a relayed peer is tried over `/webrtc` at most.
const WEBRTC_RETRY_MS: u64 = 60_000;

#[derive(NetworkBehaviour)]
struct Behaviour {
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    stream: libp2p_stream::Behaviour,
    relay_client: relay::client::Behaviour,
}

/// One open connection of a peer.
#[derive(Clone, Debug)]
struct Link {
    id: ConnectionId,
    addr: Multiaddr,
    relayed: bool,
    dialed: bool,
}

/// What the stream tasks and storage writes report to the tab's task.
enum Event {
    Frame(PeerId, Vec<u8>),
    Closed(PeerId, String),
    Violation(PeerId, String),
    Opened(PeerId, u64, mpsc::Sender<Vec<u8>>),
    Lost(PeerId, u64),
    Persisted(PersistId, Result<(), String>),
}

/// When to dial a known peer again.
struct Redial {
    at: u64,
    backoff: u64,
}

/// Our outbound sync stream to a desktop peer.
struct Writer {
    epoch: u64,
    frames: Option<mpsc::Sender<Vec<u8>>>,
}

fn now_ms() -> u64 {
    js_sys::Date::now() as u64
}

fn log(line: &str) {
    web_sys::console::log_1(&line.into());
}

fn interval(ms: u64) -> impl futures::Stream<Item = ()> {
    futures::stream::unfold((), move |()| async move {
        futures_timer::Delay::new(Duration::from_millis(ms)).await;
        Some(((), ()))
    })
}

/// Starts the in-tab peer for `topic`, feeding `ui` and taking its commands.
/// With `garbage`, the tab sends garbage instead of its sync messages (for tests of the
/// desktop side's defences).
pub fn spawn(source: Source, ui: Ui, commands: mpsc::UnboundedReceiver<Command>, garbage: bool) {
    spawn_local(async move {
        if let Err(error) = run(source, ui, commands, garbage).await {
            log(&format!("hellopears: {error}"));
            ui.set_status(SyncStatus::Failed(error));
        }
    });
}

/// Asks the browser not to evict this origin's storage (the writer key and every entry live
/// there) under storage pressure; the answer is logged.
fn ask_for_persistent_storage() {
    let Some(storage) = web_sys::window().map(|window| window.navigator().storage()) else { return };
    let Ok(asked) = storage.persist() else { return };
    spawn_local(async move {
        let granted = wasm_bindgen_futures::JsFuture::from(asked).await.ok().and_then(|v| v.as_bool());
        log(&format!("hellopears: persistent storage granted: {granted:?}"));
    });
}

/// Everything the tab's task owns.
struct Tab {
    swarm: libp2p::Swarm<Behaviour>,
    me: PeerId,
    node: Node<PeerId>,
    storage: IdbStorage,
    ui: Ui,
    control: libp2p_stream::Control,
    events: mpsc::Sender<Event>,
    writers: HashMap<PeerId, Writer>,
    addrs: HashMap<PeerId, Multiaddr>,
    /// Every open connection, per peer.
    links: HashMap<PeerId, Vec<Link>>,
    /// When each relayed peer was last tried over `/webrtc`, and why it failed.
    webrtc_tried: HashMap<PeerId, (u64, Option<String>)>,
    /// Relays we hold (or asked for) a reservation on.
    reserved: HashMap<PeerId, libp2p::core::transport::ListenerId>,
    /// Our `/webrtc` dials in progress.
    webrtc_dials: std::collections::HashSet<ConnectionId>,
    /// Peers that broke the `/webrtc` signaling protocol.
    webrtc_misbehaviour: mpsc::UnboundedReceiver<webrtc_p2p::websys::Misbehaviour>,
    /// Peers refused until then (ms), for breaking a protocol.
    banned: HashMap<PeerId, u64>,
    /// The STUN servers `/webrtc` uses (from the page's server).
    stun: webrtc_p2p::websys::StunServers,
    next_epoch: u64,
    known: AddressBook<Multiaddr>,
    redial: HashMap<PeerId, Redial>,
    next_command: CommandId,
    garbage: bool,
    dirty: bool,
    last_render: u64,
    /// Other tabs of this list in this browser.
    siblings: Option<crate::siblings::Siblings>,
    /// The fragment the address bar gets once this tab is admitted (an invite link's
    /// secrets leave the address bar then).
    clean_url: Option<String>,
}

async fn run(
    source: Source,
    ui: Ui,
    mut commands: mpsc::UnboundedReceiver<Command>,
    garbage: bool,
) -> Result<(), String> {
    let database = source.database();
    let storage = IdbStorage::open(&database).await.map_err(|e| e.to_string())?;
    ask_for_persistent_storage();
    let slot = crate::locks::writer_slot(&database, WRITER_SLOTS).await;
    let state = storage.load().await.map_err(|e| e.to_string())?;
    let (topic, join) = match source {
        Source::Public(topic) => (topic, None),
        Source::Join(link) => {
            // The list's record stays in its database: the page reopens it by id.
            if !state.meta.contains_key(LIST_RECORD) {
                let record = ListRecord {
                    name: link.name.clone(),
                    capability: hellopears_core::access::Capability::Replicate(link.replicate),
                    owner: link.owner,
                };
                let meta = vec![(LIST_RECORD.to_owned(), Some(record.encode()))];
                storage.write(&WriteBatch { meta, ..WriteBatch::default() }).await.map_err(|e| e.to_string())?;
            }
            (link.topic(), Some(*link))
        }
        Source::Stored(id) => {
            let record: ListRecord =
                state
                    .meta
                    .get(LIST_RECORD)
                    .and_then(|bytes| serde_json::from_slice(bytes).ok())
                    .ok_or_else(|| format!("this browser holds no list {id}: open it from an invite link"))?;
            (record.topic(), None)
        }
    };
    crate::lists::remember(KnownList::of(&topic));
    ui.set_topic(topic.name().to_owned());
    mark("hellopears-loaded");
    let (events, mut events_rx) = mpsc::channel::<Event>(1024);
    let mut tab = Tab::open(topic, state, storage, ui, slot, events, garbage).await?;
    let (wake, mut siblings_woke) = mpsc::unbounded::<()>();
    match crate::siblings::Siblings::open(&database, tab.me, wake) {
        Ok(siblings) => tab.siblings = Some(siblings),
        Err(error) => log(&format!("hellopears: other tabs of this list will sync through desktops only: {error}")),
    }
    mark("hellopears-opened");
    ui.set_writer(tab.node.replica().writer_id().short());
    // First paint from what is stored, before any network.
    tab.render(true);
    ui.set_status(SyncStatus::Alone);
    mark_first_paint();
    let mut incoming = tab.control.accept(SYNC_PROTOCOL).map_err(|_| "sync protocol registered twice")?.fuse();
    // The serving peer's addresses (absent offline: then the remembered ones are dialed).
    let mut config = Box::pin(fetch_config().fuse());
    if let Some(link) = join {
        // An invite link: ask the list's members to admit this tab, at the addresses the
        // link names (the secrets stay in the page: the fragment is never sent anywhere).
        // Once admitted, the address bar names the list by id instead.
        tab.clean_url = Some(format!("#list={}", tab.node.replica().topic().id()));
        if tab.node.replica().role().is_none() {
            tab.node.set_invite(hellopears_core::access::Invite::from_secret(link.invite), "a browser tab".into());
        }
        // A tab dials WebRTC-direct only.
        let dialable = link.addresses.iter().filter(|a| a.contains("/webrtc-direct/"));
        for addr in dialable.filter_map(|a| a.parse::<Multiaddr>().ok()) {
            tab.learn(addr, true);
        }
        tab.save_known();
    }
    // A share link of a public topic names peers that hold it: dialed too, so the first
    // contact needs neither a DHT nor this page's server.
    if !tab.node.replica().topic().is_private()
        && let Some(hash) = web_sys::window().and_then(|w| w.location().hash().ok())
    {
        let shared = crate::peers_from_fragment(&hash);
        for addr in shared.iter().filter(|a| a.contains("/webrtc-direct/")).filter_map(|a| a.parse::<Multiaddr>().ok())
        {
            tab.learn(addr, true);
        }
    }
    tab.dial_due();
    tab.feed(Input::Tick);
    let mut tick = Box::pin(interval(TICK_MS)).fuse();
    loop {
        futures::select! {
            served = config => tab.on_config(served),
            event = tab.swarm.select_next_some() => tab.on_swarm(event),
            stream = incoming.next() => {
                if let Some((remote, stream)) = stream {
                    spawn_reader(remote, stream, tab.events.clone());
                    tab.feed(Input::RemoteStream(remote));
                }
            }
            event = events_rx.next() => match event {
                Some(event) => tab.on_event(event),
                None => return Err("the peer's channels closed".into()),
            },
            command = commands.next() => {
                let Some(command) = command else { return Ok(()) };
                tab.command(command);
            }
            _ = siblings_woke.next() => tab.on_siblings(),
            report = tab.webrtc_misbehaviour.next() => {
                if let Some(report) = report {
                    tab.ban(report.peer, &format!("WebRTC signaling: {}", report.reason));
                }
            }
            _ = tick.next() => {
                tab.feed(Input::Tick);
                tab.ask_siblings();
                tab.dial_due();
                tab.dirty = true;
            }
        }
        tab.render(false);
    }
}

impl Tab {
    async fn open(
        topic: Topic,
        state: LoadedState,
        storage: IdbStorage,
        ui: Ui,
        slot: u32,
        events: mpsc::Sender<Event>,
        garbage: bool,
    ) -> Result<Self, String> {
        let mut first_save = WriteBatch::default();
        // Each writer slot is a peer of its own, with its own libp2p identity too: two tabs
        // with one peer id would look like one peer with two connections.
        let slotted = |key: &str| if slot == 0 { key.to_owned() } else { format!("{key}-{slot}") };
        let node_key_name = slotted(NODE_KEY);
        let node_key = match state.meta.get(&node_key_name).map(|b| identity::Keypair::from_protobuf_encoding(b)) {
            Some(Ok(key)) => key,
            _ => {
                let key = identity::Keypair::generate_ed25519();
                let bytes = key.to_protobuf_encoding().map_err(|e| e.to_string())?;
                first_save.meta.push((node_key_name, Some(bytes)));
                key
            }
        };
        let known =
            AddressBook { named: stored_addrs(&state, KNOWN_PEERS), learned: stored_addrs(&state, LEARNED_PEERS) };
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| format!("no randomness for a key: {e}"))?;
        let config = node::Config {
            writer_key: slotted(node::WRITER_SECRET),
            identity: node_key.public().to_peer_id().to_bytes(),
            ..node::Config::default()
        };
        // A corrupt stored writer key stops the tab with a clear error, as it stops a desktop peer.
        let (node, errors) = Node::open(topic, state, secret, config).map_err(|e| e.to_string())?;
        for error in &errors {
            log(&format!("hellopears: skipped a stored item: {error}"));
        }
        storage.write(&first_save).await.map_err(|e| e.to_string())?;
        let stun = webrtc_p2p::websys::StunServers::default();
        let (mut swarm, webrtc_misbehaviour) =
            build_swarm(node_key, stun.clone()).map_err(|e| format!("cannot start libp2p: {e}"))?;
        // `/webrtc`: answers signaling streams (reached through a relay reservation).
        if let Err(error) = swarm.listen_on(Multiaddr::empty().with(Protocol::WebRTC)) {
            log(&format!("hellopears: not listening for /webrtc: {error}"));
        }
        let me = *swarm.local_peer_id();
        log(&format!("hellopears: peer id {me}, writer {} (slot {slot})", node.replica().writer_id().short()));
        let control = swarm.behaviour().stream.new_control();
        Ok(Self {
            swarm,
            me,
            node,
            storage,
            ui,
            control,
            events,
            writers: HashMap::new(),
            addrs: HashMap::new(),
            links: HashMap::new(),
            webrtc_tried: HashMap::new(),
            reserved: HashMap::new(),
            webrtc_dials: std::collections::HashSet::new(),
            webrtc_misbehaviour,
            banned: HashMap::new(),
            stun,
            next_epoch: 0,
            known,
            redial: HashMap::new(),
            next_command: 0,
            garbage,
            dirty: true,
            last_render: 0,
            siblings: None,
            clean_url: None,
        })
    }

    /// Hands an input to the node and carries out what it asks.
    fn feed(&mut self, input: Input<PeerId>) {
        for output in self.node.handle(input, now_ms()) {
            self.execute(output);
        }
    }

    fn execute(&mut self, output: Output<PeerId>) {
        match output {
            Output::Persist(id, batch) => {
                let (storage, mut events) = (self.storage.clone(), self.events.clone());
                spawn_local(async move {
                    let result = storage.write(&batch).await.map_err(|e| e.to_string());
                    let _ = events.send(Event::Persisted(id, result)).await;
                });
            }
            Output::OpenStream(remote) if self.is_sibling(&remote) => self.feed(Input::StreamOpened(remote)),
            Output::Send(remote, frame) if self.is_sibling(&remote) => {
                if let Some(siblings) = &self.siblings {
                    siblings.send(remote, frame);
                }
            }
            Output::Disconnect(remote, reason) | Output::Ban(remote, reason) if self.is_sibling(&remote) => {
                log(&format!("hellopears: dropping the tab {remote}: {reason}"));
                if let Some(siblings) = &mut self.siblings {
                    siblings.forget(&remote);
                }
            }
            Output::OpenStream(remote) => {
                self.next_epoch += 1;
                self.writers.insert(remote, Writer { epoch: self.next_epoch, frames: None });
                open_writer(self.control.clone(), remote, self.next_epoch, self.events.clone());
            }
            Output::Send(remote, frame) => self.send(remote, frame),
            Output::Ban(remote, reason) => self.ban(remote, &reason),
            Output::Disconnect(remote, reason) => {
                log(&format!("hellopears: dropping {remote}: {reason}"));
                self.writers.remove(&remote);
                let _ = self.swarm.disconnect_peer_id(remote);
            }
            Output::Dial(record) => {
                if let Some(addr) = dialable(self.me, &record)
                    && self.learn(addr, false)
                {
                    self.save_known();
                    self.dial_due();
                }
            }
            Output::Reply(_, Err(error)) => log(&format!("hellopears: a command failed: {error}")),
            Output::Reply(_, Ok(_)) => {}
            Output::Notice(notice) => log(&format!("hellopears: {notice:?}")),
            Output::Changed => self.dirty = true,
        }
    }

    /// Refuses a peer for [`hellopears_core::limits::BAN_MS`] and drops its connections.
    fn ban(&mut self, peer: PeerId, reason: &str) {
        log(&format!("hellopears: banning {peer}: {reason}"));
        self.banned.insert(peer, now_ms() + hellopears_core::limits::BAN_MS);
        self.writers.remove(&peer);
        let _ = self.swarm.disconnect_peer_id(peer);
    }

    fn is_banned(&mut self, peer: &PeerId) -> bool {
        let now = now_ms();
        self.banned.retain(|_, until| *until > now);
        self.banned.contains_key(peer)
    }

    fn is_sibling(&self, peer: &PeerId) -> bool {
        self.siblings.as_ref().is_some_and(|siblings| siblings.is_sibling(peer))
    }

    /// What other tabs of this list said.
    fn on_siblings(&mut self) {
        use crate::siblings::Event as Sibling;
        let Some(siblings) = &mut self.siblings else { return };
        for event in siblings.take() {
            match event {
                Sibling::Joined(peer) | Sibling::Greeted(peer) => {
                    if let Some(siblings) = &self.siblings {
                        siblings.greet(peer);
                    }
                    log(&format!("hellopears: another tab of this list: {peer}"));
                    self.feed(Input::Connected { remote: peer, open: Open::Now, identity: peer.to_bytes() });
                }
                Sibling::Left(peer) => self.feed(Input::Disconnected(peer)),
                Sibling::Frame(peer, frame) => self.feed(Input::Frame(peer, frame)),
                Sibling::InviteMe(peer, writer) => self.invite_sibling(peer, writer),
                Sibling::Invited(secret) => {
                    if self.node.replica().role().is_none() {
                        log("hellopears: another tab of this list invited this one");
                        self.node
                            .set_invite(hellopears_core::access::Invite::from_secret(secret), "a browser tab".into());
                    }
                }
            }
        }
    }

    /// A tab of a private list that is not a member (a second tab of a list this browser
    /// holds) asks the other tabs for an invite.
    fn ask_siblings(&mut self) {
        let replica = self.node.replica();
        if replica.membership().is_none() || replica.role().is_some() || self.node.is_joining() {
            return;
        }
        let writer = replica.writer_id();
        if let Some(siblings) = &mut self.siblings {
            siblings.ask_for_invite(writer, now_ms());
        }
    }

    /// Invites a sibling tab's writer key, when this tab may invite and it is no member yet.
    fn invite_sibling(&mut self, peer: PeerId, writer: hellopears_core::WriterId) {
        let replica = self.node.replica();
        let may_invite = replica.role().is_some_and(hellopears_core::access::Role::can_write);
        let member = replica.membership().is_some_and(|m| m.role(&writer).is_some());
        if !may_invite || member {
            return;
        }
        let Some(siblings) = &mut self.siblings else { return };
        if !siblings.should_invite(writer, now_ms()) {
            return;
        }
        let mut secret = [0u8; 32];
        if let Err(error) = getrandom::fill(&mut secret) {
            log(&format!("hellopears: no randomness for an invite: {error}"));
            return;
        }
        let role = hellopears_core::access::Role::Writer;
        match self.node.prepare_invite(secret, role, crate::siblings::SIBLING_INVITE_MS, Vec::new()) {
            Ok((command, _)) => {
                let id = self.next_command;
                self.next_command += 1;
                self.feed(Input::Command(id, command));
                if let Some(siblings) = &self.siblings {
                    siblings.invite(peer, secret);
                }
            }
            Err(error) => log(&format!("hellopears: cannot invite the other tab: {error}")),
        }
    }

    fn send(&mut self, remote: PeerId, frame: Vec<u8>) {
        let Some(frames) = self.writers.get_mut(&remote).and_then(|w| w.frames.as_mut()) else { return };
        // Gone or far behind: the periodic Have and request retries recover.
        let frame = if self.garbage { vec![0xff; 64] } else { frame };
        let _ = frames.try_send(frame);
    }

    fn command(&mut self, command: Command) {
        let id = self.next_command;
        self.next_command += 1;
        let command = match command {
            Command::NewInvite { role, valid_ms } => match self.invite(role, valid_ms) {
                Ok(command) => command,
                Err(error) => {
                    self.ui.set_invite(Err(error));
                    return;
                }
            },
            command => command,
        };
        self.feed(Input::Command(id, command));
    }

    /// An invite to this tab's private list: the link names the desktop peers this tab
    /// reaches (WebRTC-direct), so a joining tab or desktop can dial them.
    fn invite(&mut self, role: hellopears_core::access::Role, valid_ms: u64) -> Result<Command, String> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| format!("no randomness for an invite: {e}"))?;
        let addresses: Vec<String> = self.known.named.iter().take(6).map(ToString::to_string).collect();
        let (command, link) = self.node.prepare_invite(secret, role, valid_ms, addresses).map_err(|e| e.to_string())?;
        let base = web_sys::window()
            .and_then(|w| w.location().href().ok())
            .map(|href| href.split('#').next().unwrap_or_default().to_owned())
            .unwrap_or_default();
        self.ui.set_invite(Ok(format!("{base}#{}{}", hellopears_core::access::JOIN_FRAGMENT, link.encode())));
        Ok(command)
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Frame(remote, frame) => self.feed(Input::Frame(remote, frame)),
            Event::Closed(remote, reason) => log(&format!("hellopears: sync stream from {remote} ended: {reason}")),
            Event::Violation(remote, reason) => self.feed(Input::Violation(remote, reason)),
            Event::Opened(remote, epoch, frames) => {
                let Some(writer) = self.writers.get_mut(&remote).filter(|w| w.epoch == epoch) else { return };
                writer.frames = Some(frames);
                self.feed(Input::StreamOpened(remote));
            }
            Event::Lost(remote, epoch) => {
                if self.writers.get(&remote).is_some_and(|w| w.epoch == epoch) {
                    self.writers.remove(&remote);
                    log(&format!("hellopears: sync stream to {remote} lost; reopening"));
                    self.feed(Input::StreamLost(remote));
                }
            }
            Event::Persisted(id, result) => {
                if let Err(error) = &result {
                    log(&format!("hellopears: cannot save: {error}"));
                }
                self.feed(Input::Persisted(id, result));
            }
        }
    }

    fn on_config(&mut self, served: Result<(Vec<Multiaddr>, Vec<String>), String>) {
        match served {
            Ok((addrs, stun)) => {
                for url in stun {
                    self.stun.add(url);
                }
                // The share link names the serving peer's addresses.
                self.ui.set_share_peers(addrs.iter().map(ToString::to_string).collect());
                for addr in addrs {
                    self.learn(addr, true);
                }
                self.save_known();
                self.dial_due();
            }
            Err(error) => {
                log(&format!("hellopears: no configuration from the server ({error}); dialing remembered peers"))
            }
        }
    }

    fn on_swarm(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::ConnectionEstablished { peer_id, connection_id, endpoint, num_established, .. } => {
                let addr = endpoint.get_remote_address().clone();
                if self.is_banned(&peer_id) {
                    log(&format!("hellopears: refusing {peer_id} (banned) at {addr}"));
                    self.swarm.close_connection(connection_id);
                    return;
                }
                log(&format!("hellopears: connected to {peer_id} at {addr}"));
                self.redial.remove(&peer_id);
                self.on_link(peer_id, connection_id, &endpoint);
                if num_established.get() == 1 {
                    self.feed(Input::Connected { remote: peer_id, open: Open::Now, identity: peer_id.to_bytes() });
                }
            }
            SwarmEvent::ConnectionClosed { peer_id, connection_id, num_established, cause, .. } => {
                if let Some(links) = self.links.get_mut(&peer_id) {
                    links.retain(|link| link.id != connection_id);
                    if let Some(best) = best_link(links) {
                        self.addrs.insert(peer_id, best.addr.clone());
                    }
                }
                if num_established == 0 {
                    log(&format!("hellopears: disconnected from {peer_id} ({cause:?})"));
                    self.links.remove(&peer_id);
                    self.writers.remove(&peer_id);
                    self.addrs.remove(&peer_id);
                    if self.reserved.remove(&peer_id).is_some() {
                        log(&format!("hellopears: the reservation on relay {peer_id} ended"));
                    }
                    self.feed(Input::Disconnected(peer_id));
                    self.schedule_redial(peer_id);
                }
                self.dirty = true;
            }
            SwarmEvent::OutgoingConnectionError { peer_id: Some(peer_id), connection_id, error, .. } => {
                log(&format!("hellopears: cannot reach {peer_id}: {error}"));
                if self.webrtc_dials.remove(&connection_id) {
                    // A failed ICE check: stay relayed, and say why.
                    let why = webrtc_failure(&error);
                    self.webrtc_tried.insert(peer_id, (now_ms(), Some(why)));
                    self.dirty = true;
                } else {
                    self.schedule_redial(peer_id);
                }
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                // A reservation: others reach us through it, over `/webrtc` too.
                if let Some(webrtc) = webrtc_p2p::webrtc_addr_of_circuit(&address) {
                    log(&format!("hellopears: reachable at {webrtc}"));
                    self.swarm.add_external_address(webrtc);
                    // Told to every peer now, on a stream of ours: a desktop's own identify
                    // request, opened right after the connection, can be lost in the browser.
                    let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
                    self.swarm.behaviour_mut().identify.push(peers);
                }
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                if let Some(webrtc) = webrtc_p2p::webrtc_addr_of_circuit(&address) {
                    self.swarm.remove_external_address(&webrtc);
                }
            }
            SwarmEvent::ListenerClosed { listener_id, .. } => {
                self.reserved.retain(|_, listener| *listener != listener_id);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
                self.on_identified(peer_id, &info);
            }
            _ => {}
        }
    }

    /// Keeps a new connection's kind; a `/webrtc` one replaces the relayed ones, and of two
    /// `/webrtc` connections the one the smaller peer id started stays.
    fn on_link(&mut self, peer: PeerId, id: ConnectionId, endpoint: &ConnectedPoint) {
        let addr = endpoint.get_remote_address().clone();
        let webrtc = webrtc_p2p::is_webrtc_addr(&addr);
        let link = Link { id, addr, relayed: endpoint.is_relayed() && !webrtc, dialed: endpoint.is_dialer() };
        let links = self.links.entry(peer).or_default();
        links.push(link);
        let mut close = Vec::new();
        if webrtc {
            close.extend(links.iter().filter(|link| link.relayed).map(|link| link.id));
            let started_by_us = |link: &Link| link.dialed;
            let ours_win = self.me < peer;
            let duplicates: Vec<&Link> = links.iter().filter(|link| webrtc_p2p::is_webrtc_addr(&link.addr)).collect();
            if duplicates.len() > 1 {
                close.extend(duplicates.iter().filter(|link| started_by_us(link) != ours_win).map(|link| link.id));
            }
        }
        if let Some(best) = best_link(links) {
            // The accepting side of a relayed connection sees only `/p2p/<id>`.
            let addr = if best.relayed && !best.addr.iter().any(|p| p == Protocol::P2pCircuit) {
                best.addr.clone().with(Protocol::P2pCircuit)
            } else {
                best.addr.clone()
            };
            self.addrs.insert(peer, addr);
        }
        for id in close {
            self.swarm.close_connection(id);
        }
        self.dirty = true;
    }

    /// Identify told what a peer is: a relay we reached directly gets a reservation; a
    /// peer we reach only through a relay gets a `/webrtc` upgrade.
    fn on_identified(&mut self, peer: PeerId, info: &identify::Info) {
        let Some(links) = self.links.get(&peer) else { return };
        let direct = links.iter().find(|link| !link.relayed && link.dialed).map(|link| link.addr.clone());
        // A desktop we reach directly that answers STUN: our ICE asks it too.
        if let Some(port) = webrtc_p2p::stun_port_of(&info.protocols)
            && let Some(url) = direct.as_ref().and_then(|addr| webrtc_p2p::stun_url(addr, port))
            && self.stun.add(url.clone())
        {
            log(&format!("hellopears: using the STUN server of {peer} at {url}"));
        }
        if let Some(addr) = direct
            && info.protocols.contains(&relay::HOP_PROTOCOL_NAME)
            && !self.reserved.contains_key(&peer)
            && self.reserved.len() < MAX_RESERVATIONS
        {
            let circuit = addr.with_p2p(peer).unwrap_or_else(|addr| addr).with(Protocol::P2pCircuit);
            match self.swarm.listen_on(circuit.clone()) {
                Ok(listener) => {
                    self.reserved.insert(peer, listener);
                }
                Err(error) => log(&format!("hellopears: cannot reserve on {circuit}: {error}")),
            }
        }
        let relayed_only = !links.is_empty() && links.iter().all(|link| link.relayed);
        let we_dialed = links.iter().any(|link| link.dialed);
        let speaks = info.protocols.contains(&webrtc_p2p::SIGNALING_PROTOCOL);
        let now = now_ms();
        let recently = self.webrtc_tried.get(&peer).is_some_and(|(at, _)| now.saturating_sub(*at) < WEBRTC_RETRY_MS);
        if relayed_only && we_dialed && speaks && !recently {
            self.webrtc_tried.insert(peer, (now, None));
            let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
                .condition(libp2p::swarm::dial_opts::PeerCondition::Always)
                .addresses(vec![webrtc_p2p::upgrade_addr(peer)])
                .build();
            let id = opts.connection_id();
            match self.swarm.dial(opts) {
                Ok(()) => {
                    log(&format!("hellopears: upgrading the relayed connection to {peer} to WebRTC (ICE)"));
                    self.webrtc_dials.insert(id);
                }
                Err(error) => log(&format!("hellopears: cannot dial {peer} over /webrtc: {error}")),
            }
        }
    }

    /// Remembers a desktop address; true if it is new.
    /// Remembers an address: one the serving page named (`named`), or one learned by peer
    /// exchange. Newest first; the oldest of its kind are forgotten.
    fn learn(&mut self, addr: Multiaddr, named: bool) -> bool {
        self.known.learn(addr, named)
    }

    /// Saves the remembered addresses, off the event loop.
    fn save_known(&self) {
        let list: Vec<String> = self.known.named.iter().map(|a| a.to_string()).collect();
        let learned: Vec<String> = self.known.learned.iter().map(|a| a.to_string()).collect();
        let meta = vec![
            (KNOWN_PEERS.into(), Some(serde_json::to_vec(&list).unwrap_or_default())),
            (LEARNED_PEERS.into(), Some(serde_json::to_vec(&learned).unwrap_or_default())),
        ];
        let batch = WriteBatch { meta, ..WriteBatch::default() };
        let storage = self.storage.clone();
        spawn_local(async move {
            if let Err(error) = storage.write(&batch).await {
                log(&format!("hellopears: cannot remember peers: {error}"));
            }
        });
    }

    fn schedule_redial(&mut self, peer: PeerId) {
        let entry = self.redial.entry(peer).or_insert(Redial { at: 0, backoff: 500 });
        entry.backoff = (entry.backoff * 2).min(8_000);
        entry.at = now_ms() + entry.backoff;
    }

    /// Dials every known peer we are not connected to and whose retry time has come.
    fn dial_due(&mut self) {
        use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
        let now = now_ms();
        let mut by_peer: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
        for addr in self.known.all() {
            if let Some(peer) = peer_of(addr) {
                by_peer.entry(peer).or_default().push(addr.clone());
            }
        }
        for (peer, addrs) in by_peer {
            if self.swarm.is_connected(&peer) || self.redial.get(&peer).is_some_and(|r| r.at > now) {
                continue;
            }
            // Marked as in progress until it connects or fails.
            let backoff = self.redial.get(&peer).map_or(500, |r| r.backoff);
            self.redial.insert(peer, Redial { at: now + 10_000, backoff });
            // One address at a time: dialed side by side, two of a desktop's addresses (one
            // per interface) can both connect; the tab keeps one, and the desktop may open its
            // sync stream on the other, which the browser dropped without a word, so nothing
            // reaches the tab until that connection times out (11 to 34 s seen).
            let opts = DialOpts::peer_id(peer)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .addresses(addrs)
                .override_dial_concurrency_factor(std::num::NonZeroU8::MIN)
                .build();
            if let Err(error) = self.swarm.dial(opts) {
                log(&format!("hellopears: cannot dial {peer}: {error}"));
            }
        }
    }

    /// Pushes the state to the UI: at once, or at most every 250 ms while catching up.
    fn render(&mut self, force: bool) {
        if !self.dirty && !force {
            return;
        }
        let now = now_ms();
        let syncing = matches!(self.node.status(), SyncStatus::Syncing { .. });
        if !force && syncing && now.saturating_sub(self.last_render) < TICK_MS {
            return;
        }
        self.dirty = false;
        self.last_render = now;
        let (addrs, tried) = (&self.addrs, &self.webrtc_tried);
        let snapshot = self.node.snapshot(|peer| {
            let why = tried.get(peer).and_then(|(_, why)| why.as_deref());
            (peer.to_string(), addrs.get(peer).map_or_else(String::new, |addr| describe(addr, why)))
        });
        self.ui.set_todos(snapshot.todos);
        self.ui.set_peers(snapshot.peers);
        self.ui.set_status(snapshot.status);
        self.ui.set_access(snapshot.access);
        self.ui.set_members(snapshot.members, snapshot.can_manage);
        if self.clean_url.is_some() && self.node.replica().role().is_some() {
            let fragment = self.clean_url.take().unwrap_or_default();
            if let Some(history) = web_sys::window().and_then(|w| w.history().ok()) {
                let _ = history.replace_state_with_url(&wasm_bindgen::JsValue::NULL, "", Some(&fragment));
            }
        }
    }
}

fn stored_addrs(state: &LoadedState, key: &str) -> Vec<Multiaddr> {
    state
        .meta
        .get(key)
        .and_then(|bytes| serde_json::from_slice::<Vec<String>>(bytes).ok())
        .unwrap_or_default()
        .iter()
        .filter_map(|addr| addr.parse().ok())
        .collect()
}

/// A User Timing mark (startup phases, for the benchmarks and the browser's dev tools).
fn mark(name: &str) {
    if let Some(performance) = web_sys::window().and_then(|w| w.performance()) {
        let _ = performance.mark(name);
    }
}

/// Marks (User Timing) the frame in which the stored todos are first on screen: the DOM
/// updates run before the next animation frame, and the paint follows it.
fn mark_first_paint() {
    use wasm_bindgen::JsCast;
    use wasm_bindgen::closure::Closure;
    let Some(window) = web_sys::window() else { return };
    let callback = Closure::once_into_js(move || {
        if let Some(performance) = web_sys::window().and_then(|w| w.performance()) {
            let _ = performance.mark("hellopears-first-paint");
        }
    });
    let _ = window.request_animation_frame(callback.unchecked_ref());
}

type Built = (libp2p::Swarm<Behaviour>, mpsc::UnboundedReceiver<webrtc_p2p::websys::Misbehaviour>);

fn build_swarm(
    key: identity::Keypair,
    stun: webrtc_p2p::websys::StunServers,
) -> Result<Built, Box<dyn std::error::Error>> {
    use libp2p::Transport as _;
    // `/webrtc` signals on the swarm's own streams.
    let stream = libp2p_stream::Behaviour::new();
    let config = webrtc_p2p::websys::Config { stun_servers: stun, ..webrtc_p2p::websys::Config::default() };
    let (p2p, misbehaviour) =
        webrtc_p2p::websys::Transport::new(key.public().to_peer_id(), stream.new_control(), config);
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_wasm_bindgen()
        .with_other_transport(|key| {
            // A WebRTC dial whose ICE never completes would hang for good, and the tab would
            // not dial that desktop again while it is "dialing": give up after a while.
            let transport = libp2p_webrtc_websys::Transport::new(libp2p_webrtc_websys::Config::new(key));
            libp2p::core::transport::timeout::TransportTimeout::with_outgoing_timeout(transport, DIAL_TIMEOUT)
                .map(|(peer_id, connection), _| (peer_id, libp2p::core::muxing::StreamMuxerBox::new(connection)))
        })?
        .with_other_transport(|_| {
            p2p.map(|(peer_id, connection), _| (peer_id, libp2p::core::muxing::StreamMuxerBox::new(connection)))
        })?
        .with_relay_client(noise::Config::new, yamux::Config::default)?
        .with_behaviour(|key, relay_client| Behaviour {
            // Our relayed addresses come after the first identify: pushed to peers as they do.
            identify: identify::Behaviour::new(
                identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public()).with_push_listen_addr_updates(true),
            ),
            ping: ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_secs(15))),
            stream,
            relay_client,
        })?
        .with_swarm_config(|config| config.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();
    Ok((swarm, misbehaviour))
}

/// Asks the server of this page for the topic's desktop addresses.
async fn fetch_config() -> Result<(Vec<Multiaddr>, Vec<String>), String> {
    let config = page_config().await?;
    let stun = config.stun.into_iter().filter(|url| url.starts_with("stun:")).take(4).collect();
    Ok((config.peers.iter().filter_map(|addr| addr.parse().ok()).collect(), stun))
}

/// The version of the app the server of this page serves now (a peer running an app by key).
pub async fn served_app_version() -> Option<u64> {
    page_config().await.ok()?.app_version
}

/// The page's configuration, from its server.
async fn page_config() -> Result<PageConfig, String> {
    use wasm_bindgen::JsCast;
    let window = web_sys::window().ok_or("no window")?;
    let response = wasm_bindgen_futures::JsFuture::from(window.fetch_with_str("config.json"))
        .await
        .map_err(|e| format!("{e:?}"))?;
    let response: web_sys::Response = response.dyn_into().map_err(|_| "not a response")?;
    if !response.ok() {
        return Err(format!("HTTP {}", response.status()));
    }
    let text = wasm_bindgen_futures::JsFuture::from(response.text().map_err(|e| format!("{e:?}"))?)
        .await
        .map_err(|e| format!("{e:?}"))?
        .as_string()
        .unwrap_or_default();
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

/// A peer record from peer exchange that a tab can dial: WebRTC-direct with a certhash, or
/// a relayed address (through a relay the tab is connected to), with a peer id not ours.
fn dialable(me: PeerId, record: &[u8]) -> Option<Multiaddr> {
    let addr: Multiaddr = std::str::from_utf8(record).ok()?.parse().ok()?;
    // A peer behind a relay, `/webrtc` through it: reached through the relay first (a tab
    // holds a connection to the relays it knows), then upgraded once identify says so.
    if let Some((circuit, peer)) = webrtc_p2p::parse_dial_addr(&addr) {
        return (peer != me).then_some(circuit);
    }
    // The same without `/webrtc` (a relayed listen address): the upgrade follows identify.
    let relayed = addr.iter().any(|p| matches!(p, Protocol::P2pCircuit));
    if relayed {
        return match addr.iter().last() {
            Some(Protocol::P2p(peer)) if peer != me => Some(addr),
            _ => None,
        };
    }
    let webrtc = addr.iter().any(|p| matches!(p, Protocol::WebRTCDirect));
    let certhash = addr.iter().any(|p| matches!(p, Protocol::Certhash(_)));
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) if webrtc && certhash && peer != me => Some(addr),
        _ => None,
    }
}

fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => Some(peer),
        _ => None,
    }
}

/// How a connection looks in the peers panel; `why`: why a `/webrtc` upgrade failed.
fn describe(addr: &Multiaddr, why: Option<&str>) -> String {
    if webrtc_p2p::is_webrtc_addr(addr) {
        return "WebRTC (ICE, direct)".into();
    }
    let relay = addr.iter().collect::<Vec<_>>().windows(2).find_map(|pair| match pair {
        [Protocol::P2p(relay), Protocol::P2pCircuit] => Some(*relay),
        _ => None,
    });
    let why = why.map_or_else(|| "WebRTC not tried yet".to_owned(), |why| format!("WebRTC failed: {why}"));
    if let Some(relay) = relay {
        return format!("relayed via {relay} ({why})");
    }
    if addr.iter().any(|p| p == Protocol::P2pCircuit) {
        return format!("relayed ({why})");
    }
    let mut host = String::new();
    let mut port = 0;
    for part in addr.iter() {
        match part {
            Protocol::Ip4(ip) => host = ip.to_string(),
            Protocol::Ip6(ip) => host = format!("[{ip}]"),
            Protocol::Udp(p) => port = p,
            _ => {}
        }
    }
    format!("WebRTC direct to {host}:{port}")
}

/// The best connection to show: WebRTC, then any direct one, then relayed.
fn best_link(links: &[Link]) -> Option<&Link> {
    links
        .iter()
        .find(|link| webrtc_p2p::is_webrtc_addr(&link.addr))
        .or_else(|| links.iter().find(|link| !link.relayed))
        .or_else(|| links.first())
}

/// Why a `/webrtc` dial failed, in a few words.
fn webrtc_failure(error: &libp2p::swarm::DialError) -> String {
    let text = error.to_string();
    if text.contains("ICE failed") || text.contains("Timeout") || text.contains("timed out") {
        "ICE found no direct path (symmetric NATs on both sides?)".into()
    } else {
        text.chars().take(120).collect()
    }
}

fn open_writer(mut control: libp2p_stream::Control, remote: PeerId, epoch: u64, mut events: mpsc::Sender<Event>) {
    spawn_local(async move {
        // An open that hangs counts as lost: the node opens another one.
        let opening = control.open_stream(remote, SYNC_PROTOCOL).fuse();
        let deadline = futures_timer::Delay::new(Duration::from_millis(STREAM_OPEN_TIMEOUT_MS)).fuse();
        futures::pin_mut!(opening, deadline);
        let opened = futures::select! {
            opened = opening => opened.map_err(|error| error.to_string()),
            _ = deadline => Err("timed out".to_owned()),
        };
        let mut stream = match opened {
            Ok(stream) => stream,
            Err(error) => {
                log(&format!("hellopears: no sync stream to {remote}: {error}"));
                let _ = events.send(Event::Lost(remote, epoch)).await;
                return;
            }
        };
        let (writer, mut frames) = mpsc::channel::<Vec<u8>>(256);
        if events.send(Event::Opened(remote, epoch, writer)).await.is_err() {
            return;
        }
        while let Some(message) = frames.next().await {
            let buffer = frame::encode(&message);
            let written = async {
                for chunk in buffer.chunks(frame::WRITE_CHUNK) {
                    stream.write_all(chunk).await?;
                    stream.flush().await?;
                }
                Ok::<(), std::io::Error>(())
            };
            if written.await.is_err() {
                let _ = events.send(Event::Lost(remote, epoch)).await;
                return;
            }
        }
        let _ = stream.close().await;
    });
}

fn spawn_reader(remote: PeerId, mut stream: libp2p::Stream, mut events: mpsc::Sender<Event>) {
    spawn_local(async move {
        let mut decoder = frame::FrameDecoder::default();
        let mut buffer = vec![0u8; 64 * 1024];
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
                        if events.send(Event::Frame(remote, frame)).await.is_err() {
                            break 'read "peer stopped".to_owned();
                        }
                    }
                    Ok(None) => break,
                    Err(error) => {
                        let _ = events.send(Event::Violation(remote, error.to_string())).await;
                        return;
                    }
                }
            }
        };
        let _ = events.send(Event::Closed(remote, reason)).await;
    });
}
