//! Finding and reaching the list's peers: bootstrap dials once every listener is up, the
//! DHT's provider records for the discovery key, mDNS, addresses learned by peer exchange,
//! and relay reservations for a peer behind a NAT.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId, Swarm, identify, kad};

use hellopears_core::limits;
use hellopears_core::topic::Topic;

use crate::links::relay_of;
use crate::net::Behaviour;

/// How long the peer with the larger id waits before dialing a peer both learned about
/// from each other: two peers dialing each other at once through a relay would start two
/// hole punches on the same ports, and the second resets the first.
const LARGER_ID_DIAL_DELAY: Duration = Duration::from_secs(3);
/// A peer is dialed through a relay at most this often (a second relayed connection would
/// start a second, colliding hole punch).
const CIRCUIT_DIAL_INTERVAL: Duration = Duration::from_secs(10);
/// Dials waiting for their time, at most.
const MAX_DEFERRED: usize = 1024;

/// The public IPFS DHT's bootstrap peers (the list Kubo ships). `--bootstrap` and
/// `HELLOPEARS_BOOTSTRAP` replace it.
pub const PUBLIC_BOOTSTRAP: &[&str] = &[
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmNnooDu7bfjPFoTZYxMNLWUQJyrVwtbZg5gBMjTezGAJN",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmQCU2EcMqAqQPR2i9bChDtGNJchTbq5TbXJJ16u19uLTa",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmbLHAnMoJPWSCR5Zhtx6BHJX9KiKNN6tpvbUcqanj75Nb",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmcZf59bWwK5XFi76CZX8cbJ4BhTzzA3gU1ZjYZcYW3dwt",
    "/ip4/104.131.131.82/tcp/4001/p2p/QmaCpDMGvV2BGHeYERUEnRQAwe3N8SzbUtfsmvsqQLuvuJ",
    "/ip4/104.131.131.82/udp/4001/quic-v1/p2p/QmaCpDMGvV2BGHeYERUEnRQAwe3N8SzbUtfsmvsqQLuvuJ",
];

/// The default bootstrap list, parsed.
pub fn public_bootstrap() -> Vec<Multiaddr> {
    PUBLIC_BOOTSTRAP.iter().filter_map(|addr| addr.parse().ok()).collect()
}

/// How long a private list's rendezvous key lasts: an hour, or `HELLOPEARS_DHT_WINDOW_SECS`
/// (the tests shorten it to watch keys rotate).
pub fn rendezvous_window_secs() -> u64 {
    std::env::var("HELLOPEARS_DHT_WINDOW_SECS")
        .ok()
        .and_then(|secs| secs.parse::<u64>().ok())
        .filter(|secs| *secs > 0)
        .unwrap_or(hellopears_core::topic::RENDEZVOUS_WINDOW_SECS)
}

/// The DHT record key of a rendezvous key: a sha2-256 multihash of it, as content ids are
/// keyed in the IPFS DHT (other implementations accept it as a CIDv0 and store it).
pub fn record_key(rendezvous: &[u8; 32]) -> kad::RecordKey {
    let mut bytes = Vec::with_capacity(34);
    bytes.extend_from_slice(&[0x12, 0x20]);
    bytes.extend_from_slice(rendezvous);
    kad::RecordKey::new(&bytes)
}

/// The current rendezvous keys of a topic, in hex (for `topic --json`).
pub fn rendezvous_hex(topic: &Topic) -> Vec<String> {
    topic.rendezvous_keys(unix_secs(), rendezvous_window_secs()).iter().map(hex::encode).collect()
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// How we came to know a peer (shown in `status` and the UIs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// mDNS on the LAN.
    Mdns,
    /// A provider record in the DHT.
    Dht,
    /// An address in an invite link.
    Invite,
    /// Peer exchange inside the sync protocol.
    Exchange,
    /// A bootstrap address.
    Bootstrap,
}

impl Found {
    /// The words the UIs use.
    pub fn words(self) -> &'static str {
        match self {
            Self::Mdns => "found by mDNS",
            Self::Dht => "found in the DHT",
            Self::Invite => "from an invite link",
            Self::Exchange => "found by peer exchange",
            Self::Bootstrap => "a bootstrap peer",
        }
    }

    /// The word `status --json` uses.
    pub fn label(self) -> &'static str {
        match self {
            Self::Mdns => "mdns",
            Self::Dht => "dht",
            Self::Invite => "invite",
            Self::Exchange => "exchange",
            Self::Bootstrap => "bootstrap",
        }
    }
}

/// The DHT's state, as `status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DhtStatus {
    /// Whether this peer runs the DHT at all.
    pub enabled: bool,
    /// Whether it uses the public IPFS DHT's bootstrap list (not `--bootstrap` peers).
    pub public: bool,
    /// `client` (behind a NAT: asks, answers nothing) or `server` (reachable).
    pub mode: String,
    /// Whether a bootstrap peer answered and the routing table holds peers.
    pub bootstrapped: bool,
    /// Peers in the routing table.
    pub routing_table: usize,
    /// Rendezvous keys announced (provider records), and when last (unix ms).
    pub announced: usize,
    /// When the keys were last announced (unix ms).
    pub last_announce_ms: Option<u64>,
}

impl DhtStatus {
    /// The state in one line (`status` and the UIs); with `now_ms`, how long ago the keys
    /// were announced (the UIs leave it out, so the line only changes with the state).
    pub fn line(&self, now_ms: Option<u64>) -> String {
        if !self.enabled {
            return "DHT: off (mDNS, bootstrap peers and peer exchange only)".into();
        }
        let which = if self.public { "public IPFS DHT" } else { "DHT of the bootstrap peers" };
        let state = if self.bootstrapped { "bootstrapped" } else { "not bootstrapped (unreachable so far)" };
        let announce = match (self.last_announce_ms, now_ms) {
            (Some(at), Some(now)) => {
                format!("{} keys announced {} s ago", self.announced, now.saturating_sub(at) / 1000)
            }
            (Some(_), None) => format!("{} keys announced", self.announced),
            (None, _) => "nothing announced yet".into(),
        };
        format!("{which}: {state}, {} mode, {} peers in the routing table, {announce}", self.mode, self.routing_table)
    }
}

/// Re-announce the rendezvous keys this often (provider records are kept 24-48 h, but
/// addresses change and DHT nodes come and go).
const REANNOUNCE: Duration = Duration::from_secs(10 * 60);
/// The first wait before dialing the bootstrap peers again when none answered; doubled
/// after each round, up to [`BOOTSTRAP_RETRY_MAX`].
const BOOTSTRAP_RETRY: Duration = Duration::from_secs(30);
const BOOTSTRAP_RETRY_MAX: Duration = Duration::from_secs(30 * 60);
/// While a fresh peer has no one to sync with, it asks the DHT this often (instead of every
/// 20 s), for this long: a peer that announced a moment after our first lookup is found
/// within seconds.
const EAGER_LOOK_UP: Duration = Duration::from_secs(4);
const EAGER_LOOK_UP_FOR: Duration = Duration::from_secs(120);
/// Reservations on relays that are peers of our lists, beyond the usual number.
const MEMBER_RESERVATIONS: usize = 2;
/// How long a peer whose hole punch failed is not dialed again from the DHT.
const PUNCH_FAILED_PAUSE: Duration = Duration::from_secs(5 * 60);
/// Peers whose origin is remembered, at most.
const MAX_FOUND: usize = 4096;

/// The discovery state of a running peer.
#[derive(Debug)]
pub struct Discovery {
    me: PeerId,
    /// Dialed once every listener is up, so TCP dials reuse the listening port and the
    /// addresses peers observe are ones hole punching can use.
    bootstrap: Vec<Multiaddr>,
    /// Whether the bootstrap list is the public DHT's (for the words of the status).
    public_dht: bool,
    /// Addresses from the invite links of joined lists: dialed at start.
    invited: Vec<Multiaddr>,
    bootstrap_started: bool,
    /// Bootstrap dials in flight this round.
    bootstrap_dials: HashSet<ConnectionId>,
    bootstrap_answered: bool,
    bootstrap_retry: Option<Instant>,
    bootstrap_backoff: Duration,
    unreachable_said: bool,
    unconfirmed_listeners: HashSet<ListenerId>,
    /// Reserve on relays (no external address of our own).
    behind_nat: bool,
    relays: HashMap<PeerId, Multiaddr>,
    reserved_on: HashSet<PeerId>,
    retry_reservations: bool,
    deferred_dials: Vec<(Instant, PeerId, Multiaddr)>,
    circuit_dials: HashMap<PeerId, Instant>,
    /// Peer-exchange dials started in the current minute, and when it began.
    pex_dials: usize,
    pex_minute: Option<Instant>,
    /// The topics served, whose rendezvous keys are announced and looked up.
    topics: Vec<Topic>,
    /// Apps: their rendezvous keys, and whether we seed them (announced) or look for
    /// their seeders.
    apps: Vec<([u8; 32], bool)>,
    window_secs: u64,
    /// The record keys provided now, and the window they were computed in.
    provided: HashSet<kad::RecordKey>,
    window: u64,
    /// When the keys were last announced (with at least one DHT peer to tell).
    announced_at: Option<Instant>,
    last_announce_ms: Option<u64>,
    server: bool,
    started: Instant,
    looked_up: Option<Instant>,
    /// How each peer we dialed was found.
    found: HashMap<PeerId, Found>,
    /// Peers whose hole punch through a stranger's relay failed, and when: not dialed
    /// again from the DHT for a while (a member of the list may relay for us instead).
    punch_failed: HashMap<PeerId, Instant>,
    /// Peers reached only through a stranger's relay: a relayed path through a member
    /// (from peer exchange) is dialed even though we are connected.
    punch_only: HashSet<PeerId>,
}

impl Discovery {
    /// Discovery for a peer whose listeners are `listeners`; `public_dht`: the bootstrap
    /// list is the public DHT's.
    pub fn new(
        me: PeerId,
        bootstrap: Vec<Multiaddr>,
        public_dht: bool,
        invited: Vec<Multiaddr>,
        listeners: HashSet<ListenerId>,
        behind_nat: bool,
        topics: Vec<Topic>,
    ) -> Self {
        Self {
            me,
            bootstrap,
            public_dht,
            invited,
            bootstrap_started: false,
            bootstrap_dials: HashSet::new(),
            bootstrap_answered: false,
            bootstrap_retry: None,
            bootstrap_backoff: BOOTSTRAP_RETRY,
            unreachable_said: false,
            unconfirmed_listeners: listeners,
            behind_nat,
            relays: HashMap::new(),
            reserved_on: HashSet::new(),
            retry_reservations: false,
            deferred_dials: Vec::new(),
            circuit_dials: HashMap::new(),
            pex_dials: 0,
            pex_minute: None,
            topics,
            apps: Vec::new(),
            window_secs: rendezvous_window_secs(),
            provided: HashSet::new(),
            window: 0,
            announced_at: None,
            last_announce_ms: None,
            server: !behind_nat,
            started: Instant::now(),
            looked_up: None,
            found: HashMap::new(),
            punch_failed: HashMap::new(),
            punch_only: HashSet::new(),
        }
    }

    /// Whether `peer` is reached only through a stranger's relay (see `punch_only`).
    pub fn set_punch_only(&mut self, peer: PeerId, only: bool) {
        if only && self.punch_only.len() < MAX_FOUND {
            self.punch_only.insert(peer);
        } else if !only {
            self.punch_only.remove(&peer);
        }
    }

    /// A hole punch with `peer` through a stranger's relay failed.
    pub fn punch_failed(&mut self, peer: PeerId, now: Instant) {
        self.punch_failed.retain(|_, at| now.duration_since(*at) < PUNCH_FAILED_PAUSE);
        if self.punch_failed.len() < MAX_FOUND {
            self.punch_failed.insert(peer, now);
        }
    }

    /// Announces that we seed an app (`seeding`), or looks for its seeders.
    pub fn add_app(&mut self, swarm: &mut Swarm<Behaviour>, rendezvous: [u8; 32], seeding: bool) {
        self.apps.retain(|(key, _)| *key != rendezvous);
        self.apps.push((rendezvous, seeding));
        self.announce(swarm, true);
        self.look_up(swarm);
    }

    /// Starts finding the peers of another list (created or joined while running).
    pub fn add_topic(&mut self, swarm: &mut Swarm<Behaviour>, topic: Topic) {
        if !self.topics.iter().any(|known| known.id() == topic.id()) {
            self.topics.push(topic);
        }
        self.announce(swarm, true);
        self.look_up(swarm);
    }

    /// Whether this peer answers DHT queries: only when reachable (an `--external-address`,
    /// or AutoNAT confirmed one); behind a NAT it only asks.
    pub fn set_server(&mut self, swarm: &mut Swarm<Behaviour>, server: bool) {
        self.server = server;
        if let Some(kad) = swarm.behaviour_mut().kad.as_mut() {
            kad.set_mode(Some(if server { kad::Mode::Server } else { kad::Mode::Client }));
        }
    }

    /// How a peer was found, if we dialed it.
    pub fn found_via(&self, peer: &PeerId) -> Option<Found> {
        self.found.get(peer).copied()
    }

    fn note_found(&mut self, peer: PeerId, via: Found) {
        if self.found.len() >= MAX_FOUND {
            self.found.clear();
        }
        self.found.entry(peer).or_insert(via);
    }

    /// The DHT's state for `status`.
    pub fn status(&self, swarm: &mut Swarm<Behaviour>) -> DhtStatus {
        let routing_table =
            swarm.behaviour_mut().kad.as_mut().map_or(0, |kad| kad.kbuckets().map(|bucket| bucket.num_entries()).sum());
        let enabled = swarm.behaviour().kad.is_enabled();
        DhtStatus {
            enabled,
            public: enabled && self.public_dht,
            mode: match (enabled, self.server) {
                (false, _) => "off".into(),
                (true, true) => "server".into(),
                (true, false) => "client".into(),
            },
            bootstrapped: enabled && routing_table > 0,
            routing_table,
            announced: self.provided.len(),
            last_announce_ms: self.last_announce_ms,
        }
    }

    /// Announces the rendezvous keys of every topic (and withdraws those of past windows).
    /// Nothing is announced before we have an address others can use: DHT nodes refuse
    /// provider records without one. `force` announces keys provided already, too (our
    /// addresses changed, or the routing table was empty last time).
    pub fn announce(&mut self, swarm: &mut Swarm<Behaviour>, force: bool) {
        let has_address = swarm.external_addresses().next().is_some();
        let Some(kad) = swarm.behaviour_mut().kad.as_mut() else { return };
        let now = unix_secs();
        self.window = now / self.window_secs.max(1);
        let wanted: HashSet<kad::RecordKey> = self
            .topics
            .iter()
            .flat_map(|topic| topic.rendezvous_keys(now, self.window_secs))
            .chain(self.apps.iter().filter(|(_, seeding)| *seeding).map(|(key, _)| *key))
            .map(|key| record_key(&key))
            .collect();
        for old in self.provided.difference(&wanted).cloned().collect::<Vec<_>>() {
            kad.stop_providing(&old);
            self.provided.remove(&old);
        }
        let peers: usize = kad.kbuckets().map(|bucket| bucket.num_entries()).sum();
        if !has_address || peers == 0 {
            return;
        }
        let mut any = false;
        for key in wanted {
            if (force || !self.provided.contains(&key)) && kad.start_providing(key.clone()).is_ok() {
                self.provided.insert(key);
                any = true;
            }
        }
        if any {
            self.announced_at = Some(Instant::now());
            self.last_announce_ms = Some(now.saturating_mul(1000));
            tracing::debug!(keys = self.provided.len(), "announced the rendezvous keys in the DHT");
        }
    }

    /// A listener is up; once all are, the bootstrap peers are dialed.
    pub fn listening(&mut self, swarm: &mut Swarm<Behaviour>, listener: ListenerId) {
        self.unconfirmed_listeners.remove(&listener);
        if !self.unconfirmed_listeners.is_empty() || self.bootstrap_started {
            return;
        }
        self.bootstrap_started = true;
        for addr in std::mem::take(&mut self.invited) {
            self.invited(swarm, addr);
        }
        self.dial_bootstrap(swarm);
    }

    /// Dials every bootstrap peer (and tells the DHT about them).
    fn dial_bootstrap(&mut self, swarm: &mut Swarm<Behaviour>) {
        self.bootstrap_dials.clear();
        for addr in self.bootstrap.clone() {
            let peer = match addr.iter().last() {
                Some(Protocol::P2p(peer)) => Some(peer),
                _ => None,
            };
            let opts = match peer {
                Some(peer) => {
                    // The DHT learns of it once it answered (a `/dnsaddr` is resolved then).
                    self.note_found(peer, Found::Bootstrap);
                    DialOpts::peer_id(peer)
                        .condition(PeerCondition::Disconnected)
                        .addresses(vec![via_relay(addr.clone())])
                        .build()
                }
                None => DialOpts::unknown_peer_id().address(via_relay(addr.clone())).build(),
            };
            let id = opts.connection_id();
            match swarm.dial(opts) {
                Ok(()) => {
                    self.bootstrap_dials.insert(id);
                }
                Err(error) => tracing::debug!(%addr, %error, "cannot dial a bootstrap address"),
            }
        }
        self.bootstrap_round_over(swarm);
    }

    /// A dial failed: when it was the last bootstrap dial of a round and none answered,
    /// the DHT is unreachable: said once, tried again later.
    pub fn dial_failed(&mut self, swarm: &mut Swarm<Behaviour>, id: ConnectionId) {
        if self.bootstrap_dials.remove(&id) {
            self.bootstrap_round_over(swarm);
        }
    }

    fn bootstrap_round_over(&mut self, swarm: &mut Swarm<Behaviour>) {
        if !self.bootstrap_dials.is_empty() || self.bootstrap_answered || self.bootstrap.is_empty() {
            return;
        }
        self.bootstrap_retry = Some(Instant::now() + self.bootstrap_backoff);
        self.bootstrap_backoff = (self.bootstrap_backoff * 2).min(BOOTSTRAP_RETRY_MAX);
        if !self.unreachable_said && swarm.behaviour().kad.is_enabled() {
            self.unreachable_said = true;
            let what = if self.public_dht { "the public DHT is unreachable" } else { "the DHT is unreachable" };
            tracing::warn!(
                "{what} (no bootstrap peer answered); finding peers on the LAN and through known peers, \
                 trying again in the background"
            );
        }
    }

    /// A connection is up: a bootstrap peer that answered makes the DHT reachable. (The
    /// DHT learns of DHT servers from identify, see `identified`.)
    pub fn connected(&mut self, id: ConnectionId) {
        if self.bootstrap_dials.remove(&id) && !self.bootstrap_answered {
            self.bootstrap_answered = true;
            self.bootstrap_retry = None;
            if self.unreachable_said {
                tracing::info!("a bootstrap peer answered: the DHT is reachable again");
            }
        }
    }

    /// The routing table changed: the first peers in it are the first we can announce to.
    pub fn routing_updated(&mut self, swarm: &mut Swarm<Behaviour>) {
        if self.announced_at.is_none() {
            if let Some(kad) = swarm.behaviour_mut().kad.as_mut() {
                let _ = kad.bootstrap();
            }
            self.announce(swarm, true);
            self.look_up(swarm);
        }
    }

    /// Asks the DHT for the peers of every topic (the current window's key).
    pub fn look_up(&mut self, swarm: &mut Swarm<Behaviour>) {
        self.looked_up = Some(Instant::now());
        let now = unix_secs();
        if let Some(kad) = swarm.behaviour_mut().kad.as_mut() {
            for topic in &self.topics {
                if let Some(key) = topic.rendezvous_keys(now, self.window_secs).first() {
                    kad.get_providers(record_key(key));
                }
            }
            for (key, seeding) in &self.apps {
                if !seeding {
                    kad.get_providers(record_key(key));
                }
            }
        }
    }

    /// Dials a peer found in the DHT or on the LAN that we are not connected to.
    pub fn found(&mut self, swarm: &mut Swarm<Behaviour>, peer: PeerId, addr: Option<Multiaddr>, via: Found) {
        if peer == self.me || swarm.is_connected(&peer) {
            return;
        }
        let paused = self.punch_failed.get(&peer).is_some_and(|at| at.elapsed() < PUNCH_FAILED_PAUSE);
        if via == Found::Dht && paused {
            return;
        }
        self.note_found(peer, via);
        let _ = match addr {
            Some(addr) => swarm.dial(via_relay(addr)),
            None => swarm.dial(peer),
        };
    }

    /// Dials the addresses of an invite link.
    pub fn invited(&mut self, swarm: &mut Swarm<Behaviour>, addr: Multiaddr) {
        if let Some(Protocol::P2p(peer)) = addr.iter().last() {
            self.note_found(peer, Found::Invite);
        }
        if let Err(error) = swarm.dial(via_relay(addr.clone())) {
            tracing::debug!(%addr, %error, "cannot dial an address of the invite");
        }
    }

    /// Identify told what a peer is: its addresses go to the DHT; a relay we dialed
    /// directly is remembered, and reserved on when we are behind a NAT.
    pub fn identified(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        peer: PeerId,
        info: &identify::Info,
        dialed_direct: Option<Multiaddr>,
    ) {
        // Only DHT servers go into the routing table (a client answers no query).
        if let Some(kad) = swarm.behaviour_mut().kad.as_mut()
            && info.protocols.contains(&crate::net::KAD_PROTOCOL)
        {
            for addr in info.listen_addrs.iter().filter(|addr| relay_of(addr).is_none()) {
                kad.add_address(&peer, addr.clone());
            }
        }
        if let (true, Some(addr)) = (info.protocols.contains(&libp2p::relay::HOP_PROTOCOL_NAME), dialed_direct) {
            self.relays.insert(peer, addr);
        }
        if self.behind_nat {
            self.reserve(swarm, Some(peer));
        }
    }

    /// A listener closed: a relay reservation that ended is tried again.
    pub fn listener_closed(&mut self, addresses: &[Multiaddr]) {
        for addr in addresses {
            if let Some(relay) = relay_of(addr) {
                tracing::debug!(%relay, "relay reservation ended");
                self.reserved_on.remove(&relay);
                self.retry_reservations = true;
            }
        }
    }

    /// A peer record from peer exchange: dialed at once by the peer with the smaller id,
    /// a little later by the other.
    pub fn learned(&mut self, swarm: &mut Swarm<Behaviour>, record: &[u8], now: Instant) {
        let Some((peer, addr)) = learned_address(self.me, record) else { return };
        if swarm.is_connected(&peer) && !self.punch_only.contains(&peer) {
            return;
        }
        if self.me < peer {
            self.dial_once(swarm, peer, addr, now);
        } else if self.deferred_dials.len() < MAX_DEFERRED {
            self.deferred_dials.push((now + LARGER_ID_DIAL_DELAY, peer, addr));
        }
    }

    /// Periodic work: reservations to retry, deferred dials that are due.
    /// `alone`: no peer syncs with us yet (the DHT is then asked more often at first).
    pub fn tick(&mut self, swarm: &mut Swarm<Behaviour>, now: Instant, alone: bool) {
        let eager = alone && now.duration_since(self.started) < EAGER_LOOK_UP_FOR;
        if eager && self.looked_up.is_none_or(|at| now.duration_since(at) >= EAGER_LOOK_UP) {
            self.look_up(swarm);
        }
        if self.bootstrap_retry.is_some_and(|at| at <= now) {
            self.bootstrap_retry = None;
            tracing::debug!("dialing the bootstrap peers again");
            self.dial_bootstrap(swarm);
        }
        let window = unix_secs() / self.window_secs.max(1);
        let stale = self.announced_at.is_some_and(|at| now.duration_since(at) >= REANNOUNCE);
        if window != self.window || stale {
            // A new window: its keys are announced and the past one's withdrawn.
            self.announce(swarm, stale);
        }
        if std::mem::take(&mut self.retry_reservations) && self.behind_nat {
            self.reserve(swarm, None);
        }
        let due: Vec<(Instant, PeerId, Multiaddr)> =
            self.deferred_dials.extract_if(.., |(at, _, _)| *at <= now).collect();
        for (_, peer, addr) in due {
            self.dial_once(swarm, peer, addr, now);
        }
    }

    /// Reserves on `only` (or on every known relay) unless a reservation is held there.
    fn reserve(&mut self, swarm: &mut Swarm<Behaviour>, only: Option<PeerId>) {
        self.reserve_up_to(swarm, only, limits::RELAY_RESERVATIONS_OUT);
    }

    /// Relays we know of and hold no reservation on.
    pub fn unreserved_relays(&self) -> Vec<PeerId> {
        if !self.behind_nat {
            return Vec::new();
        }
        self.relays.keys().filter(|relay| !self.reserved_on.contains(relay)).copied().collect()
    }

    /// Reserves on a relay that is a peer of our lists even when strangers' relays (found
    /// in the DHT) took every slot: only a member may carry our data when a punch fails.
    pub fn reserve_on_member(&mut self, swarm: &mut Swarm<Behaviour>, relay: PeerId) {
        self.reserve_up_to(swarm, Some(relay), limits::RELAY_RESERVATIONS_OUT + MEMBER_RESERVATIONS);
    }

    fn reserve_up_to(&mut self, swarm: &mut Swarm<Behaviour>, only: Option<PeerId>, most: usize) {
        for (relay, addr) in &self.relays {
            if self.reserved_on.len() >= most {
                return;
            }
            if only.is_some_and(|only| only != *relay) || self.reserved_on.contains(relay) || !swarm.is_connected(relay)
            {
                continue;
            }
            let circuit = addr.clone().with_p2p(*relay).unwrap_or_else(|addr| addr).with(Protocol::P2pCircuit);
            match swarm.listen_on(circuit.clone()) {
                Ok(_) => {
                    self.reserved_on.insert(*relay);
                }
                Err(error) => tracing::warn!(%circuit, %error, "cannot reserve on relay"),
            }
        }
    }

    /// Dials a learned peer unless connected; through a relay at most once per interval
    /// (direct addresses may be tried side by side: some are unreachable LAN addresses).
    fn dial_once(&mut self, swarm: &mut Swarm<Behaviour>, peer: PeerId, addr: Multiaddr, now: Instant) {
        // Other peers choose these addresses: a bounded number of dials per minute, so no
        // peer can turn us into a scanner of someone else's ports.
        if self.pex_minute.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(60)) {
            self.pex_minute = Some(now);
            self.pex_dials = 0;
        }
        if self.pex_dials >= limits::PEX_DIALS_PER_MINUTE {
            tracing::debug!(%peer, "peer-exchange dial budget spent for this minute");
            return;
        }
        self.pex_dials += 1;
        self.note_found(peer, Found::Exchange);
        if relay_of(&addr).is_some() {
            if self.circuit_dials.get(&peer).is_some_and(|at| now.duration_since(*at) < CIRCUIT_DIAL_INTERVAL) {
                return;
            }
            self.circuit_dials.insert(peer, now);
        }
        tracing::debug!(%peer, %addr, "dialing a peer learned by peer exchange");
        let condition =
            if self.punch_only.contains(&peer) { PeerCondition::Always } else { PeerCondition::Disconnected };
        let opts = DialOpts::peer_id(peer).condition(condition).addresses(vec![via_relay(addr)]).build();
        let _ = swarm.dial(opts);
    }
}

/// A `/webrtc` address is reached through its relay first: the WebRTC connection is signaled
/// over the relayed one (the peer upgrades once identify says the remote speaks the
/// signaling protocol). Any other address is unchanged.
pub fn via_relay(addr: Multiaddr) -> Multiaddr {
    match webrtc_p2p::parse_dial_addr(&addr) {
        Some((circuit, _)) => circuit,
        None => addr,
    }
}

/// Where a peer learned by peer exchange can be dialed, unless it is us.
fn learned_address(me: PeerId, record: &[u8]) -> Option<(PeerId, Multiaddr)> {
    let Some(addr) = std::str::from_utf8(record).ok().and_then(|text| text.parse::<Multiaddr>().ok()) else {
        tracing::debug!("ignoring a malformed peer record");
        return None;
    };
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) if peer != me => Some((peer, addr)),
        _ => None,
    }
}

/// A peer record for peer exchange: a listen address with `/p2p/<id>`.
pub fn record(addr: &Multiaddr, peer: PeerId) -> Vec<u8> {
    let mut addr = addr.clone();
    if !matches!(addr.iter().last(), Some(Protocol::P2p(_))) {
        addr.push(Protocol::P2p(peer));
    }
    addr.to_string().into_bytes()
}
