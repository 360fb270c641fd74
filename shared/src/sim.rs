//! A seeded, in-memory multi-peer simulator: N replicas exchanging encoded protocol
//! messages with random delays, drops, duplicates and reorders, and partitions that heal.
//! The same seed always gives the same run.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::keys::{Hash, Keypair};
use crate::replica::Replica;
use crate::sync::{Message, Session, SessionConfig};
use crate::topic::Topic;

/// Network behaviour of a simulation.
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
    /// How often every session ticks.
    pub tick_ms: u64,
    /// The run stops delivering after this many messages (a storm is a bug to report).
    pub max_messages: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self { drop: 0.0, duplicate: 0.0, min_delay_ms: 1, max_delay_ms: 50, tick_ms: 500, max_messages: 5_000_000 }
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
    /// Protocol errors seen (non-fatal ones are expected with reordering).
    pub errors: u64,
}

#[derive(Debug)]
struct SimPeer {
    replica: Replica,
    sessions: BTreeMap<usize, Session>,
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
    peers: Vec<SimPeer>,
    queue: BinaryHeap<Reverse<InFlight>>,
    group: Vec<usize>,
    stats: SimStats,
    sent_by_kind: BTreeMap<&'static str, u64>,
}

impl Sim {
    /// `peers` empty replicas on one topic, with keys and randomness derived from `seed`.
    pub fn new(peers: usize, seed: u64, config: SimConfig) -> Self {
        let topic = Topic::from_name("sim");
        let peers = (0..peers)
            .map(|i| SimPeer {
                replica: Replica::new(topic.clone(), Keypair::derive_for_tests(seed, i as u64)),
                sessions: BTreeMap::new(),
            })
            .collect::<Vec<_>>();
        let group = vec![0; peers.len()];
        Self {
            now: 1_700_000_000_000,
            next_tick: 0,
            serial: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
            config,
            peers,
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
        &self.peers[peer].replica
    }

    /// Runs a local action on a peer (a write), then pushes what it produced.
    pub fn with_peer<T>(&mut self, peer: usize, action: impl FnOnce(&mut Replica, i64) -> T) -> T {
        let now = self.now as i64;
        let result = action(&mut self.peers[peer].replica, now);
        self.after_change(peer);
        result
    }

    /// Opens a session between two peers.
    pub fn connect(&mut self, a: usize, b: usize) {
        for (me, other) in [(a, b), (b, a)] {
            let mut session = Session::new(SessionConfig::default());
            let out = session.start(&self.peers[me].replica, self.now);
            self.peers[me].sessions.insert(other, session);
            self.send(me, other, out);
        }
    }

    /// Opens sessions between every pair.
    pub fn connect_all(&mut self) {
        for a in 0..self.peers.len() {
            for b in a + 1..self.peers.len() {
                self.connect(a, b);
            }
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

    /// Runs until every replica has the same order and view, or `max_ms` pass.
    /// Returns whether they converged.
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

    /// Whether every replica holds the same linear order and byte-identical view.
    pub fn converged(&self) -> bool {
        let digests: Vec<(Hash, Hash)> = self.peers.iter().map(|p| self.digests_of(&p.replica)).collect();
        digests.windows(2).all(|pair| pair[0] == pair[1])
    }

    /// A one-line-per-peer summary, for failure messages.
    pub fn describe(&self) -> String {
        let mut out = format!("messages sent by kind: {:?}\n", self.sent_by_kind);
        for (i, peer) in self.peers.iter().enumerate() {
            let base = peer.replica.base();
            let missing: Vec<u64> = peer.sessions.values().map(|s| s.missing(&peer.replica)).collect();
            let introduced = peer.sessions.values().filter(|s| s.is_introduced()).count();
            out.push_str(&format!(
                "peer {i}: {} entries, {} pending, {} writers, introduced {introduced}/{}, missing per session {missing:?}\n",
                base.total_entries(),
                base.pending_count(),
                base.writers().len(),
                peer.sessions.len(),
            ));
        }
        out
    }

    /// (order digest, view digest) of a peer.
    pub fn digests(&self, peer: usize) -> (Hash, Hash) {
        self.digests_of(&self.peers[peer].replica)
    }

    fn digests_of(&self, replica: &Replica) -> (Hash, Hash) {
        (replica.base().order_digest(), replica.db().digest())
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
        let (to, from) = (message.to, message.from);
        let peer = &mut self.peers[to];
        let Some(session) = peer.sessions.get_mut(&from) else { return };
        let out = match session.handle_bytes(&mut peer.replica, &message.bytes, self.now) {
            Ok(out) => out,
            Err(error) => {
                self.stats.errors += 1;
                if std::env::var_os("SIM_TRACE").is_some() {
                    eprintln!("t={} {from}->{to}: {error}", self.now);
                }
                assert!(!error.is_fatal(), "honest peers sent a fatal protocol error: {error}");
                Vec::new()
            }
        };
        self.send(to, from, out);
        self.peers[to].replica.update();
        self.after_change(to);
    }

    fn tick_all(&mut self) {
        for me in 0..self.peers.len() {
            let others: Vec<usize> = self.peers[me].sessions.keys().copied().collect();
            for other in others {
                let peer = &mut self.peers[me];
                let Some(session) = peer.sessions.get_mut(&other) else { continue };
                let out = session.tick(&peer.replica, self.now);
                self.send(me, other, out);
            }
        }
    }

    /// Pushes a peer's fresh entries and fork evidence to all its sessions.
    fn after_change(&mut self, me: usize) {
        let peer = &mut self.peers[me];
        let fresh = peer.replica.take_fresh();
        let forks = peer.replica.take_fresh_forks();
        peer.replica.take_unsaved();
        if fresh.is_empty() && forks.is_empty() {
            return;
        }
        let others: Vec<usize> = peer.sessions.keys().copied().collect();
        for other in others {
            let Some(session) = self.peers[me].sessions.get_mut(&other) else { continue };
            let mut out = session.push(&fresh);
            for evidence in &forks {
                out.extend(session.push_fork(evidence));
            }
            self.send(me, other, out);
        }
    }

    fn send(&mut self, from: usize, to: usize, messages: Vec<Message>) {
        for message in messages {
            let kind = match &message {
                Message::Hello { .. } => "hello",
                Message::Have { .. } => "have",
                Message::Want { .. } => "want",
                Message::Entries { .. } => "entries",
                Message::Fork { .. } => "fork",
                Message::Peers { .. } => "peers",
            };
            *self.sent_by_kind.entry(kind).or_default() += 1;
            let bytes = message.encode();
            if self.rng.random_bool(self.config.drop.clamp(0.0, 1.0)) {
                self.stats.lost += 1;
                continue;
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
}
