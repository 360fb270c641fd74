//! The in-tab peer: the core's replica on IndexedDB, libp2p over WebRTC-direct to desktop
//! peers, and the same sync protocol and framing as the desktop peer. One task owns the
//! swarm, the replica and every session; stream IO runs in small tasks that pass frames
//! over channels. The UI sees it only through [`Ui`].

use std::collections::HashMap;
use std::time::Duration;

use futures::channel::mpsc;
use futures::io::{AsyncReadExt, AsyncWriteExt};
use futures::{FutureExt, StreamExt};
use hellopears_core::keys::Keypair;
use hellopears_core::replica::Replica;
use hellopears_core::storage::{Storage, WriteBatch};
use hellopears_core::sync::{Session, SessionConfig, frame};
use hellopears_core::topic::Topic;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, identify, identity, ping};
use wasm_bindgen_futures::spawn_local;

use crate::app::Ui;
use crate::idb::{IdbStorage, database_name};
use crate::model::{Command, PeerView, SyncStatus, TodoView};

/// The sync protocol's stream id (the desktop peer's, `native/src/net.rs`).
const SYNC_PROTOCOL: StreamProtocol = StreamProtocol::new("/hellopears/sync/1");
const IDENTIFY_PROTOCOL: &str = "/hellopears/id/1";
const WRITER_SECRET: &str = "writer-secret";
const NODE_KEY: &str = "node-key";
const KNOWN_PEERS: &str = "known-peers";
/// Desktop addresses remembered for redialing.
const MAX_KNOWN: usize = 64;
/// Frames waiting for a sync stream to open.
const BACKLOG_LIMIT: usize = 1024;

#[derive(NetworkBehaviour)]
struct Behaviour {
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    stream: libp2p_stream::Behaviour,
}

enum Inbound {
    Frame(PeerId, Vec<u8>),
    Closed(PeerId, String),
    Violation(PeerId, String),
    Writer(PeerId, mpsc::Sender<Vec<u8>>),
    WriterLost(PeerId),
}

struct PeerState {
    session: Session,
    writer: Option<mpsc::Sender<Vec<u8>>>,
    backlog: Vec<Vec<u8>>,
    addr: Multiaddr,
    last_sync: u64,
}

/// When to dial a known peer again.
struct Redial {
    at: u64,
    backoff: u64,
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
pub fn spawn(topic: Topic, ui: Ui, commands: mpsc::UnboundedReceiver<Command>, garbage: bool) {
    spawn_local(async move {
        if let Err(error) = run(topic, ui, commands, garbage).await {
            log(&format!("hellopears: {error}"));
            ui.set_status(SyncStatus::Failed(error));
        }
    });
}

/// Everything the peer's task owns besides the swarm.
struct Tab {
    replica: Replica,
    storage: IdbStorage,
    ui: Ui,
    peers: HashMap<PeerId, PeerState>,
    known: Vec<Multiaddr>,
    redial: HashMap<PeerId, Redial>,
    dirty: bool,
    last_render: u64,
}

async fn run(
    topic: Topic,
    ui: Ui,
    mut commands: mpsc::UnboundedReceiver<Command>,
    garbage: bool,
) -> Result<(), String> {
    let storage = IdbStorage::open(&database_name(&topic)).await.map_err(|e| e.to_string())?;
    let state = storage.load().await.map_err(|e| e.to_string())?;
    mark("hellopears-loaded");
    let mut first_save = WriteBatch::default();
    let keypair = match state.meta.get(WRITER_SECRET).map(|s| Keypair::from_secret_slice(s)) {
        Some(Ok(keypair)) => keypair,
        stored => {
            if stored.is_some() {
                log("hellopears: the stored writer key is corrupt; keeping it and writing with a new one");
            }
            let mut secret = [0u8; 32];
            getrandom::fill(&mut secret).map_err(|e| format!("no randomness for a key: {e}"))?;
            let keypair = Keypair::from_secret(secret);
            if stored.is_none() {
                first_save.meta.push((WRITER_SECRET.into(), Some(keypair.secret().to_vec())));
            }
            keypair
        }
    };
    let node_key = match state.meta.get(NODE_KEY).map(|b| identity::Keypair::from_protobuf_encoding(b)) {
        Some(Ok(key)) => key,
        _ => {
            let key = identity::Keypair::generate_ed25519();
            let bytes = key.to_protobuf_encoding().map_err(|e| e.to_string())?;
            first_save.meta.push((NODE_KEY.into(), Some(bytes)));
            key
        }
    };
    let known: Vec<Multiaddr> = state
        .meta
        .get(KNOWN_PEERS)
        .and_then(|bytes| serde_json::from_slice::<Vec<String>>(bytes).ok())
        .unwrap_or_default()
        .iter()
        .filter_map(|addr| addr.parse().ok())
        .collect();
    let (replica, errors) = Replica::open(topic, keypair, state);
    mark("hellopears-opened");
    for error in &errors {
        log(&format!("hellopears: skipped a stored item: {error}"));
    }
    storage.write(&first_save).await.map_err(|e| e.to_string())?;
    let mut tab =
        Tab { replica, storage, ui, peers: HashMap::new(), known, redial: HashMap::new(), dirty: true, last_render: 0 };
    ui.set_writer(tab.replica.writer_id().short());
    // First paint from what is stored, before any network.
    tab.render(true);
    ui.set_status(SyncStatus::Alone);
    mark_first_paint();

    let mut swarm = build_swarm(node_key).map_err(|e| format!("cannot start libp2p: {e}"))?;
    let me = *swarm.local_peer_id();
    log(&format!("hellopears: peer id {me}, writer {}", tab.replica.writer_id().short()));
    let mut control = swarm.behaviour().stream.new_control();
    let mut incoming = control.accept(SYNC_PROTOCOL).map_err(|_| "sync protocol registered twice".to_owned())?.fuse();
    let (tx, mut rx) = mpsc::channel::<Inbound>(1024);
    // The serving peer's addresses (absent offline: then the remembered ones are dialed).
    let mut config = Box::pin(fetch_config().fuse());
    tab.dial_due(&mut swarm);
    let mut tick = Box::pin(interval(100)).fuse();
    let mut ticks: u64 = 0;
    loop {
        futures::select! {
            served = config => {
                match served {
                    Ok(addrs) => {
                        for addr in addrs {
                            tab.learn(addr);
                        }
                        tab.save_known().await;
                        tab.dial_due(&mut swarm);
                    }
                    Err(error) => log(&format!("hellopears: no configuration from the server ({error}); dialing remembered peers")),
                }
            }
            event = swarm.select_next_some() => match event {
                SwarmEvent::ConnectionEstablished { peer_id, endpoint, num_established, .. } => {
                    log(&format!("hellopears: connected to {peer_id} at {}", endpoint.get_remote_address()));
                    tab.redial.remove(&peer_id);
                    if num_established.get() == 1 && !tab.peers.contains_key(&peer_id) {
                        let mut state = PeerState {
                            session: Session::new(SessionConfig::default()),
                            writer: None,
                            backlog: Vec::new(),
                            addr: endpoint.get_remote_address().clone(),
                            last_sync: 0,
                        };
                        for message in state.session.start(&tab.replica, now_ms()) {
                            state.backlog.push(message.encode());
                        }
                        tab.peers.insert(peer_id, state);
                        open_writer(control.clone(), peer_id, tx.clone());
                        tab.dirty = true;
                    }
                }
                SwarmEvent::ConnectionClosed { peer_id, num_established: 0, cause, .. } => {
                    log(&format!("hellopears: disconnected from {peer_id} ({cause:?})"));
                    tab.peers.remove(&peer_id);
                    tab.schedule_redial(peer_id);
                    tab.dirty = true;
                }
                SwarmEvent::OutgoingConnectionError { peer_id: Some(peer_id), error, .. } => {
                    log(&format!("hellopears: cannot reach {peer_id}: {error}"));
                    tab.schedule_redial(peer_id);
                }
                _ => {}
            },
            stream = incoming.next() => {
                if let Some((peer_id, stream)) = stream {
                    spawn_reader(peer_id, stream, tx.clone());
                }
            }
            inbound = rx.next() => match inbound {
                Some(Inbound::Frame(peer_id, bytes)) => {
                    let Some(state) = tab.peers.get_mut(&peer_id) else { continue };
                    state.last_sync = now_ms();
                    match state.session.handle_bytes(&mut tab.replica, &bytes, now_ms()) {
                        Ok(out) => {
                            send(state, out.iter().map(|m| m.encode()));
                            let learned = state.session.take_learned_peers();
                            let mut any = false;
                            for record in learned {
                                if let Some(addr) = dialable(me, &record) {
                                    any |= tab.learn(addr);
                                }
                            }
                            if any {
                                tab.save_known().await;
                                tab.dial_due(&mut swarm);
                            }
                        }
                        Err(error) if error.is_fatal() => {
                            log(&format!("hellopears: dropping {peer_id}: {error}"));
                            tab.peers.remove(&peer_id);
                            let _ = swarm.disconnect_peer_id(peer_id);
                        }
                        Err(error) => log(&format!("hellopears: sync message from {peer_id} refused: {error}")),
                    }
                    tab.after_change().await;
                }
                Some(Inbound::Closed(peer_id, reason)) => log(&format!("hellopears: sync stream from {peer_id} ended: {reason}")),
                Some(Inbound::Violation(peer_id, reason)) => {
                    log(&format!("hellopears: dropping {peer_id}: {reason}"));
                    tab.peers.remove(&peer_id);
                    let _ = swarm.disconnect_peer_id(peer_id);
                }
                Some(Inbound::Writer(peer_id, writer)) => {
                    if let Some(state) = tab.peers.get_mut(&peer_id) {
                        let mut backlog = std::mem::take(&mut state.backlog);
                        if garbage {
                            backlog = vec![vec![0xff; 64], b"not a sync message".to_vec()];
                        }
                        state.writer = Some(writer);
                        send(state, backlog.into_iter());
                    }
                }
                Some(Inbound::WriterLost(peer_id)) => {
                    // The connection is unusable for sync: drop it and dial again.
                    log(&format!("hellopears: no sync stream to {peer_id}; reconnecting"));
                    tab.peers.remove(&peer_id);
                    let _ = swarm.disconnect_peer_id(peer_id);
                }
                None => return Err("the peer's channels closed".into()),
            },
            command = commands.next() => {
                let Some(command) = command else { return Ok(()) };
                tab.execute(command);
                tab.after_change().await;
            }
            _ = tick.next() => {
                ticks += 1;
                if ticks.is_multiple_of(5) {
                    let now = now_ms();
                    for state in tab.peers.values_mut() {
                        let out = state.session.tick(&tab.replica, now);
                        send(state, out.iter().map(|m| m.encode()));
                    }
                    tab.dial_due(&mut swarm);
                    tab.dirty = true;
                }
            }
        }
        tab.render(false);
    }
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

fn build_swarm(key: identity::Keypair) -> Result<libp2p::Swarm<Behaviour>, Box<dyn std::error::Error>> {
    use libp2p::Transport as _;
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_wasm_bindgen()
        .with_other_transport(|key| {
            libp2p_webrtc_websys::Transport::new(libp2p_webrtc_websys::Config::new(key))
                .map(|(peer_id, connection), _| (peer_id, libp2p::core::muxing::StreamMuxerBox::new(connection)))
        })?
        .with_behaviour(|key| Behaviour {
            identify: identify::Behaviour::new(identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public())),
            ping: ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_secs(15))),
            stream: libp2p_stream::Behaviour::new(),
        })?
        .with_swarm_config(|config| config.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();
    Ok(swarm)
}

/// Asks the server of this page for the topic's desktop addresses.
async fn fetch_config() -> Result<Vec<Multiaddr>, String> {
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
    #[derive(serde::Deserialize)]
    struct Config {
        peers: Vec<String>,
    }
    let config: Config = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    Ok(config.peers.iter().filter_map(|addr| addr.parse().ok()).collect())
}

/// A peer record from peer exchange that a tab can dial: WebRTC-direct with a certhash and
/// a peer id that is not ours.
fn dialable(me: PeerId, record: &[u8]) -> Option<Multiaddr> {
    let addr: Multiaddr = std::str::from_utf8(record).ok()?.parse().ok()?;
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

impl Tab {
    /// Remembers a desktop address; true if it is new.
    fn learn(&mut self, addr: Multiaddr) -> bool {
        if self.known.contains(&addr) {
            return false;
        }
        // Newest first; the oldest are forgotten.
        self.known.insert(0, addr);
        self.known.truncate(MAX_KNOWN);
        true
    }

    async fn save_known(&self) {
        let list: Vec<String> = self.known.iter().map(|a| a.to_string()).collect();
        let bytes = serde_json::to_vec(&list).unwrap_or_default();
        let batch = WriteBatch { meta: vec![(KNOWN_PEERS.into(), Some(bytes))], ..WriteBatch::default() };
        if let Err(error) = self.storage.write(&batch).await {
            log(&format!("hellopears: cannot remember peers: {error}"));
        }
    }

    fn schedule_redial(&mut self, peer: PeerId) {
        let entry = self.redial.entry(peer).or_insert(Redial { at: 0, backoff: 500 });
        entry.backoff = (entry.backoff * 2).min(8_000);
        entry.at = now_ms() + entry.backoff;
    }

    /// Dials every known peer we are not connected to and whose retry time has come.
    fn dial_due(&mut self, swarm: &mut libp2p::Swarm<Behaviour>) {
        use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
        let now = now_ms();
        let mut by_peer: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
        for addr in &self.known {
            if let Some(peer) = peer_of(addr) {
                by_peer.entry(peer).or_default().push(addr.clone());
            }
        }
        for (peer, addrs) in by_peer {
            if swarm.is_connected(&peer) || self.redial.get(&peer).is_some_and(|r| r.at > now) {
                continue;
            }
            // Marked as in progress until it connects or fails.
            self.redial
                .insert(peer, Redial { at: now + 10_000, backoff: self.redial.get(&peer).map_or(500, |r| r.backoff) });
            let opts =
                DialOpts::peer_id(peer).condition(PeerCondition::DisconnectedAndNotDialing).addresses(addrs).build();
            if let Err(error) = swarm.dial(opts) {
                log(&format!("hellopears: cannot dial {peer}: {error}"));
            }
        }
    }

    fn execute(&mut self, command: Command) {
        let now = now_ms() as i64;
        let mut todos = self.replica.todos();
        let result = match &command {
            Command::Add(text) => todos.add(text, now).map(|_| ()),
            Command::Toggle(id) => todos.toggle(id, now).map(|_| ()),
            Command::Edit(id, text) => todos.edit(id, text, now),
            Command::Remove(id) => todos.remove(id),
            Command::ClearCompleted => todos.clear_completed().map(|_| ()),
        };
        if let Err(error) = result {
            log(&format!("hellopears: {command:?} failed: {error}"));
        }
    }

    /// Applies what arrived, persists it, pushes fresh entries to every session.
    async fn after_change(&mut self) {
        self.replica.update();
        let batch = self.replica.take_unsaved();
        if let Err(error) = self.storage.write(&batch).await {
            log(&format!("hellopears: cannot save: {error}"));
            self.ui.set_status(SyncStatus::Failed(format!("cannot save: {error}")));
        }
        let fresh = self.replica.take_fresh();
        let forks = self.replica.take_fresh_forks();
        for notice in self.replica.take_notices() {
            log(&format!("hellopears: {notice:?}"));
        }
        if !fresh.is_empty() || !forks.is_empty() {
            for state in self.peers.values_mut() {
                let mut out = state.session.push(&fresh);
                for evidence in &forks {
                    out.extend(state.session.push_fork(evidence));
                }
                send(state, out.iter().map(|m| m.encode()));
            }
        }
        self.dirty = true;
    }

    /// Pushes the state to the UI: at once, or at most every 250 ms while catching up.
    fn render(&mut self, force: bool) {
        if !self.dirty && !force {
            return;
        }
        let now = now_ms();
        let missing: u64 = self.peers.values().map(|p| p.session.missing(&self.replica)).sum();
        if !force && missing > 0 && now.saturating_sub(self.last_render) < 250 {
            return;
        }
        self.dirty = false;
        self.last_render = now;
        let todos: Vec<TodoView> = self.replica.todos().list().iter().rev().map(TodoView::from_todo).collect();
        self.ui.set_todos(todos);
        let mut peers: Vec<PeerView> = self
            .peers
            .iter()
            .filter(|(_, state)| state.session.is_introduced())
            .map(|(id, state)| PeerView {
                id: id.to_string(),
                connection: describe(&state.addr),
                last_sync: state.last_sync,
            })
            .collect();
        peers.sort_by(|a, b| a.id.cmp(&b.id));
        let held = self.replica.base().total_entries();
        let status = SyncStatus::from_counts(peers.len(), held, missing);
        self.ui.set_peers(peers);
        self.ui.set_status(status);
    }
}

/// How a connection looks in the peers panel.
fn describe(addr: &Multiaddr) -> String {
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

fn send(state: &mut PeerState, frames: impl Iterator<Item = Vec<u8>>) {
    for frame in frames {
        match &mut state.writer {
            Some(writer) => {
                // Gone or far behind: the periodic Have and request retries recover.
                let _ = writer.try_send(frame);
            }
            None if state.backlog.len() < BACKLOG_LIMIT => state.backlog.push(frame),
            None => {}
        }
    }
}

fn open_writer(mut control: libp2p_stream::Control, peer_id: PeerId, mut tx: mpsc::Sender<Inbound>) {
    spawn_local(async move {
        use futures::SinkExt;
        let mut stream = match control.open_stream(peer_id, SYNC_PROTOCOL).await {
            Ok(stream) => stream,
            Err(error) => {
                log(&format!("hellopears: no sync stream to {peer_id}: {error}"));
                let _ = tx.send(Inbound::WriterLost(peer_id)).await;
                return;
            }
        };
        let (writer, mut frames) = mpsc::channel::<Vec<u8>>(256);
        if tx.send(Inbound::Writer(peer_id, writer)).await.is_err() {
            return;
        }
        while let Some(frame) = frames.next().await {
            let buffer = frame::encode(&frame);
            // At most one WebRTC message (16 KiB) per write, flushed.
            let written = async {
                for chunk in buffer.chunks(16 * 1024 - 64) {
                    stream.write_all(chunk).await?;
                    stream.flush().await?;
                }
                Ok::<(), std::io::Error>(())
            };
            if written.await.is_err() {
                let _ = tx.send(Inbound::WriterLost(peer_id)).await;
                return;
            }
        }
        let _ = stream.close().await;
    });
}

fn spawn_reader(peer_id: PeerId, mut stream: libp2p::Stream, mut tx: mpsc::Sender<Inbound>) {
    spawn_local(async move {
        use futures::SinkExt;
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
