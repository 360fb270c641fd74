//! A seeded, in-memory multi-peer simulator: N [`Node`]s (the engine the desktop peer and
//! the browser tab run) exchanging encoded protocol messages with random delays, drops,
//! duplicates and reorders, partitions that heal, lost streams, failing storage writes and
//! crashes. The simulator only carries out the nodes' outputs; it has no replication logic
//! of its own. The same seed always gives the same run.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::keys::{Hash, Keypair};
use crate::node::{self, CommandId, Input, Node, Open, Output};
use crate::replica::Replica;
use crate::storage::{MemoryStorage, Storage};
use crate::sync::Message;
use crate::topic::Topic;
use crate::ui::{Command, Outcome};

/// Network and storage behaviour of a simulation.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Probability that a message is lost.
    pub drop: f64,
    /// Probability that a message is delivered twice.
    pub duplicate: f64,
    /// Smallest delivery delay in ms.
    pub min_delay_ms: u64,
    /// Largest delivery delay in ms (random delays reorder messages).
    pub max_delay_ms: u64,
    /// How often every node ticks.
    pub tick_ms: u64,
    /// The run stops delivering after this many messages (a storm is a bug to report).
    pub max_messages: u64,
    /// Probability that a storage write fails (nothing of it is stored, unless torn).
    pub fail_writes: f64,
    /// Probability that a failed write reached the disk anyway, as when power is lost after
    /// the data was synced and before the write returned: the batch is stored, and the write
    /// reports failure. (Backends write a batch atomically, so a power loss stores all of a
    /// batch or none of it; the desktop's store is checked for that on its real files.)
    pub torn_writes: f64,
    /// Probability, per remote and tick, that a node's outbound stream is lost.
    pub lose_streams: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            drop: 0.0,
            duplicate: 0.0,
            min_delay_ms: 1,
            max_delay_ms: 50,
            tick_ms: 500,
            max_messages: 5_000_000,
            fail_writes: 0.0,
            torn_writes: 0.0,
            lose_streams: 0.0,
        }
    }
}

/// Counters of one run.
#[derive(Clone, Copy, Debug, Default)]
pub struct SimStats {
    /// Messages delivered.
    pub delivered: u64,
    /// Messages lost (dropped or cut by a partition).
    pub lost: u64,
    /// Extra copies delivered.
    pub duplicated: u64,
    /// Storage writes that failed.
    pub failed_writes: u64,
    /// Failed writes that stored their batch anyway.
    pub torn_writes: u64,
    /// Streams lost.
    pub lost_streams: u64,
}

#[derive(Debug)]
struct SimPeer {
    node: Node<usize>,
    storage: MemoryStorage,
    secret: [u8; 32],
    replies: BTreeMap<CommandId, Result<Outcome, String>>,
    next_command: CommandId,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at: u64,
    serial: u64,
    from: usize,
    to: usize,
    bytes: Vec<u8>,
}

/// The simulator.
#[derive(Debug)]
pub struct Sim {
    now: u64,
    next_tick: u64,
    serial: u64,
    rng: ChaCha8Rng,
    config: SimConfig,
    topic: Topic,
    peers: Vec<SimPeer>,
    links: Vec<(usize, usize)>,
    queue: BinaryHeap<Reverse<InFlight>>,
    group: Vec<usize>,
    stats: SimStats,
    sent_by_kind: BTreeMap<&'static str, u64>,
}

/// Runs a future that never waits (the in-memory backend's).
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut context = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
    }
}

impl Sim {
    /// `peers` empty nodes on one topic, with keys and randomness derived from `seed`.
    pub fn new(peers: usize, seed: u64, config: SimConfig) -> Self {
        let topic = Topic::from_name("sim");
        let peers = (0..peers)
            .map(|i| {
                let secret = *Keypair::derive_for_tests(seed, i as u64).secret();
                let storage = MemoryStorage::new();
                let (node, _) = Node::open(topic.clone(), Default::default(), secret, node::Config::default())
                    .unwrap_or_else(|_| unreachable!("no stored key to be corrupt"));
                SimPeer { node, storage, secret, replies: BTreeMap::new(), next_command: 0 }
            })
            .collect::<Vec<_>>();
        let group = vec![0; peers.len()];
        Self {
            now: 1_700_000_000_000,
            next_tick: 0,
            serial: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
            config,
            topic,
            peers,
            links: Vec::new(),
            queue: BinaryHeap::new(),
            group,
            stats: SimStats::default(),
            sent_by_kind: BTreeMap::new(),
        }
    }

    /// Simulated time in ms.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Counters so far.
    pub fn stats(&self) -> SimStats {
        self.stats
    }

    /// Number of peers.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether there are no peers.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// The seeded random generator, for scenario choices.
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }

    /// One peer's replica.
    pub fn replica(&self, peer: usize) -> &Replica {
        self.peers[peer].node.replica()
    }

    /// One peer's node.
    pub fn node(&self, peer: usize) -> &Node<usize> {
        &self.peers[peer].node
    }

    /// One peer's storage (what survives a crash).
    pub fn storage(&self, peer: usize) -> &MemoryStorage {
        &self.peers[peer].storage
    }

    /// Runs a user's command on a peer. Returns its reply, or `None` while its changes are
    /// not yet durable (a failed write; the reply comes once a retry succeeds).
    pub fn command(&mut self, peer: usize, command: Command) -> Option<Result<Outcome, String>> {
        let id = self.peers[peer].next_command;
        self.peers[peer].next_command += 1;
        self.input(peer, Input::Command(id, command));
        self.peers[peer].replies.remove(&id)
    }

    /// Replies that arrived late (after a retried write), by command id.
    pub fn take_replies(&mut self, peer: usize) -> BTreeMap<CommandId, Result<Outcome, String>> {
        std::mem::take(&mut self.peers[peer].replies)
    }

    /// Connects two peers.
    pub fn connect(&mut self, a: usize, b: usize) {
        self.links.push((a, b));
        self.input(a, Input::Connected { remote: b, open: Open::Now, identity: vec![] });
        self.input(b, Input::Connected { remote: a, open: Open::Now, identity: vec![] });
    }

    /// Connects every pair.
    pub fn connect_all(&mut self) {
        for a in 0..self.peers.len() {
            for b in a + 1..self.peers.len() {
                self.connect(a, b);
            }
        }
    }

    /// Crashes a peer and starts it again from what its storage holds: everything not yet
    /// durable is gone, its connections close and open again.
    pub fn crash_and_restart(&mut self, peer: usize) {
        let links: Vec<(usize, usize)> = self.links.iter().copied().filter(|(a, b)| *a == peer || *b == peer).collect();
        self.links.retain(|(a, b)| *a != peer && *b != peer);
        for (a, b) in &links {
            let other = if *a == peer { *b } else { *a };
            self.input(other, Input::Disconnected(peer));
        }
        self.queue.retain(|Reverse(m)| m.from != peer && m.to != peer);
        let state = ready(self.peers[peer].storage.load()).unwrap_or_default();
        let secret = self.peers[peer].secret;
        let (node, errors) = Node::open(self.topic.clone(), state, secret, node::Config::default())
            .unwrap_or_else(|error| panic!("peer {peer} cannot reopen: {error}"));
        assert!(errors.is_empty(), "peer {peer} reopened with errors: {errors:?}");
        self.peers[peer].node = node;
        self.peers[peer].replies.clear();
        for (a, b) in links {
            self.connect(a, b);
        }
    }

    /// Splits the network: messages between peers of different groups are lost.
    pub fn partition(&mut self, group_of_peer: Vec<usize>) {
        self.group = group_of_peer;
    }

    /// Heals every partition.
    pub fn heal(&mut self) {
        self.group = vec![0; self.peers.len()];
    }

    /// Runs the network for `duration_ms` of simulated time.
    pub fn run_for(&mut self, duration_ms: u64) {
        let until = self.now + duration_ms;
        while self.step(until) {}
        self.now = self.now.max(until);
    }

    /// Runs until every replica has the same order and view and everything is durable, or
    /// `max_ms` pass. Returns whether they converged.
    pub fn run_until_converged(&mut self, max_ms: u64) -> bool {
        let until = self.now + max_ms;
        loop {
            if self.converged() {
                return true;
            }
            let next = (self.now + self.config.tick_ms).min(until);
            while self.step(next) {}
            self.now = self.now.max(next);
            if self.now >= until {
                return self.converged();
            }
        }
    }

    /// Whether every replica holds the same linear order and byte-identical view, durably.
    pub fn converged(&self) -> bool {
        let digests: Vec<(Hash, Hash)> = (0..self.peers.len()).map(|p| self.digests(p)).collect();
        digests.windows(2).all(|pair| pair[0] == pair[1]) && self.peers.iter().all(|p| p.node.is_durable())
    }

    /// A one-line-per-peer summary, for failure messages.
    pub fn describe(&self) -> String {
        let mut out = format!("messages sent by kind: {:?}\n", self.sent_by_kind);
        for (i, peer) in self.peers.iter().enumerate() {
            let base = peer.node.replica().base();
            out.push_str(&format!(
                "peer {i} ({:?}): {} entries ({}), {} pending, {} writers, {} remotes, {} introduced, missing {}, durable {}\n",
                peer.node.replica().writer_id(),
                base.total_entries(),
                base.writers()
                    .iter()
                    .map(|w| format!("{:?} {}/{} sealed", w.id, w.len, base.sealed_len(&w.id)))
                    .collect::<Vec<_>>()
                    .join(", "),
                base.pending_count(),
                base.writers().len(),
                peer.node.remote_count(),
                peer.node.peers().count(),
                peer.node.missing(),
                peer.node.is_durable(),
            ));
        }
        out
    }

    /// (order digest, view digest) of a peer.
    pub fn digests(&self, peer: usize) -> (Hash, Hash) {
        let replica = self.peers[peer].node.replica();
        (replica.base().order_digest(), replica.db().digest())
    }

    /// Feeds one input to a peer's node and carries out everything that follows.
    fn input(&mut self, peer: usize, input: Input<usize>) {
        let mut work = vec![input];
        while let Some(input) = work.pop() {
            let outputs = self.peers[peer].node.handle(input, self.now);
            for output in outputs {
                if let Some(next) = self.execute(peer, output) {
                    work.push(next);
                }
            }
        }
    }

    /// Carries out one output; returns the input it leads to at once, if any.
    fn execute(&mut self, peer: usize, output: Output<usize>) -> Option<Input<usize>> {
        match output {
            Output::Persist(id, batch) => {
                if self.rng.random_bool(self.config.fail_writes.clamp(0.0, 1.0)) {
                    self.stats.failed_writes += 1;
                    if self.rng.random_bool(self.config.torn_writes.clamp(0.0, 1.0)) {
                        self.stats.torn_writes += 1;
                        let _ = ready(self.peers[peer].storage.write(&batch));
                    }
                    return Some(Input::Persisted(id, Err("injected write failure".into())));
                }
                let result = ready(self.peers[peer].storage.write(&batch)).map_err(|e| e.to_string());
                Some(Input::Persisted(id, result))
            }
            Output::OpenStream(remote) => Some(Input::StreamOpened(remote)),
            Output::Send(to, bytes) => {
                self.send(peer, to, bytes);
                None
            }
            Output::Disconnect(remote, reason) => {
                // Honest peers never break the protocol; a peer given up for lost streams
                // is dialed again, as a driver does.
                assert!(
                    !reason.contains("refused") && !reason.contains("violation"),
                    "peer {peer} dropped {remote}: {reason}"
                );
                self.links.retain(|&(a, b)| !((a, b) == (peer, remote) || (a, b) == (remote, peer)));
                self.input(remote, Input::Disconnected(peer));
                self.connect(peer, remote);
                None
            }
            Output::Ban(remote, reason) => panic!("peer {peer} banned {remote}: {reason}"),
            Output::Reply(id, result) => {
                self.peers[peer].replies.insert(id, result);
                None
            }
            Output::Dial(_) | Output::Notice(_) | Output::Changed => None,
        }
    }

    /// Delivers the next message or runs the next tick, if due by `until`; false when none is.
    fn step(&mut self, until: u64) -> bool {
        if self.stats.delivered >= self.config.max_messages {
            return false;
        }
        let next_message = self.queue.peek().map(|Reverse(m)| m.at);
        match next_message {
            Some(at) if at <= self.next_tick => {
                if at > until {
                    return false;
                }
                let Some(Reverse(message)) = self.queue.pop() else { return false };
                self.now = self.now.max(at);
                self.deliver(message);
            }
            _ => {
                if self.next_tick > until {
                    return false;
                }
                self.now = self.now.max(self.next_tick);
                self.next_tick = self.now + self.config.tick_ms;
                self.tick_all();
            }
        }
        true
    }

    fn deliver(&mut self, message: InFlight) {
        if self.group[message.from] != self.group[message.to] {
            self.stats.lost += 1;
            return;
        }
        self.stats.delivered += 1;
        if std::env::var_os("SIM_TRACE").is_some() {
            let decoded = Message::decode(&message.bytes).map(|m| kind(&m));
            eprintln!("t={} {}->{}: {decoded:?}", self.now, message.from, message.to);
        }
        self.input(message.to, Input::Frame(message.from, message.bytes));
    }

    fn tick_all(&mut self) {
        for me in 0..self.peers.len() {
            let remotes: Vec<usize> =
                self.links.iter().filter_map(|&(a, b)| (a == me).then_some(b).or((b == me).then_some(a))).collect();
            for remote in remotes {
                if self.rng.random_bool(self.config.lose_streams.clamp(0.0, 1.0)) {
                    self.stats.lost_streams += 1;
                    self.input(me, Input::StreamLost(remote));
                }
            }
            self.input(me, Input::Tick);
        }
    }

    fn send(&mut self, from: usize, to: usize, bytes: Vec<u8>) {
        if let Ok(message) = Message::decode(&bytes) {
            *self.sent_by_kind.entry(kind(&message)).or_default() += 1;
            self.check_durable(from, &message);
        }
        if self.rng.random_bool(self.config.drop.clamp(0.0, 1.0)) {
            self.stats.lost += 1;
            return;
        }
        let copies = if self.rng.random_bool(self.config.duplicate.clamp(0.0, 1.0)) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = self
                .rng
                .random_range(self.config.min_delay_ms..=self.config.max_delay_ms.max(self.config.min_delay_ms));
            self.serial += 1;
            self.queue.push(Reverse(InFlight {
                at: self.now + delay,
                serial: self.serial,
                from,
                to,
                bytes: bytes.clone(),
            }));
        }
    }
}

impl Sim {
    /// Persist before announce: every entry a peer sends, and its own log length in a
    /// `Have`, is already in its storage.
    fn check_durable(&self, peer: usize, message: &Message) {
        let storage = &self.peers[peer].storage;
        match message {
            Message::Entries { entries } => {
                for bytes in entries {
                    let Ok(entry) = crate::log::Entry::decode(bytes) else { continue };
                    assert!(
                        storage.contains(&entry.writer(), entry.seq()),
                        "peer {peer} sent entry {}/{} before it was durable",
                        entry.writer().short(),
                        entry.seq()
                    );
                }
            }
            Message::Have { writers } => {
                let me = self.peers[peer].node.replica().writer_id();
                for have in writers.iter().filter(|have| have.writer == me && have.len > 0) {
                    assert!(
                        storage.contains(&me, have.len - 1),
                        "peer {peer} announced {} own entries before they were durable",
                        have.len
                    );
                }
            }
            _ => {}
        }
    }
}

fn kind(message: &Message) -> &'static str {
    match message {
        Message::Hello { .. } => "hello",
        Message::Have { .. } => "have",
        Message::Want { .. } => "want",
        Message::Entries { .. } => "entries",
        Message::Fork { .. } => "fork",
        Message::Peers { .. } => "peers",
        Message::Join { .. } => "join",
        Message::Refused { .. } => "refused",
    }
}
