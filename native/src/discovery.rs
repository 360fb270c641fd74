//! Finding and reaching the list's peers: bootstrap dials once every listener is up, the
//! DHT's provider records for the discovery key, mDNS, addresses learned by peer exchange,
//! and relay reservations for a peer behind a NAT.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId, Swarm, identify, kad};

use hellopears_core::limits;

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

/// The discovery state of a running peer.
#[derive(Debug)]
pub struct Discovery {
    me: PeerId,
    /// Dialed once every listener is up, so TCP dials reuse the listening port and the
    /// addresses peers observe are ones hole punching can use.
    bootstrap: Option<Vec<Multiaddr>>,
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
    /// The DHT keys of the lists served (their discovery keys), and those announced.
    keys: Vec<kad::RecordKey>,
    announced: HashSet<kad::RecordKey>,
}

impl Discovery {
    /// Discovery for a peer whose listeners are `listeners`.
    pub fn new(
        me: PeerId,
        bootstrap: Vec<Multiaddr>,
        listeners: HashSet<ListenerId>,
        behind_nat: bool,
        keys: Vec<kad::RecordKey>,
    ) -> Self {
        Self {
            me,
            bootstrap: Some(bootstrap),
            unconfirmed_listeners: listeners,
            behind_nat,
            relays: HashMap::new(),
            reserved_on: HashSet::new(),
            retry_reservations: false,
            deferred_dials: Vec::new(),
            circuit_dials: HashMap::new(),
            pex_dials: 0,
            pex_minute: None,
            keys,
            announced: HashSet::new(),
        }
    }

    /// Starts finding the peers of another list (created or joined while running).
    pub fn add_key(&mut self, swarm: &mut Swarm<Behaviour>, key: kad::RecordKey) {
        if !self.keys.contains(&key) {
            self.keys.push(key);
        }
        self.announce(swarm);
        self.look_up(swarm);
    }

    fn announce(&mut self, swarm: &mut Swarm<Behaviour>) {
        let Some(kad) = swarm.behaviour_mut().kad.as_mut() else { return };
        for key in &self.keys {
            if !self.announced.contains(key) && kad.start_providing(key.clone()).is_ok() {
                self.announced.insert(key.clone());
                kad.get_providers(key.clone());
            }
        }
    }

    /// A listener is up; once all are, the bootstrap peers are dialed.
    pub fn listening(&mut self, swarm: &mut Swarm<Behaviour>, listener: ListenerId) {
        self.unconfirmed_listeners.remove(&listener);
        if !self.unconfirmed_listeners.is_empty() {
            return;
        }
        for addr in self.bootstrap.take().unwrap_or_default() {
            if let Err(error) = swarm.dial(addr.clone()) {
                tracing::warn!(%addr, %error, "cannot dial bootstrap address");
            }
        }
    }

    /// A connection is up: the DHT learns the address we dialed, and at the first DHT
    /// contact we announce ourselves and look for the list's peers.
    pub fn connected(&mut self, swarm: &mut Swarm<Behaviour>, peer: PeerId, addr: &Multiaddr, dialed: bool) {
        let Some(kad) = swarm.behaviour_mut().kad.as_mut() else { return };
        if dialed {
            kad.add_address(&peer, addr.clone());
        }
        self.announce(swarm);
    }

    /// Asks the DHT for the list's peers again.
    pub fn look_up(&mut self, swarm: &mut Swarm<Behaviour>) {
        if let Some(kad) = swarm.behaviour_mut().kad.as_mut() {
            for key in &self.keys {
                kad.get_providers(key.clone());
            }
        }
    }

    /// Dials peers found in the DHT or on the LAN that we are not connected to.
    pub fn found(&mut self, swarm: &mut Swarm<Behaviour>, peer: PeerId, addr: Option<Multiaddr>) {
        if peer == self.me || swarm.is_connected(&peer) {
            return;
        }
        let _ = match addr {
            Some(addr) => swarm.dial(addr),
            None => swarm.dial(peer),
        };
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
        if let Some(kad) = swarm.behaviour_mut().kad.as_mut() {
            for addr in &info.listen_addrs {
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
        if swarm.is_connected(&peer) {
            return;
        }
        if self.me < peer {
            self.dial_once(swarm, peer, addr, now);
        } else if self.deferred_dials.len() < MAX_DEFERRED {
            self.deferred_dials.push((now + LARGER_ID_DIAL_DELAY, peer, addr));
        }
    }

    /// Periodic work: reservations to retry, deferred dials that are due.
    pub fn tick(&mut self, swarm: &mut Swarm<Behaviour>, now: Instant) {
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
        for (relay, addr) in &self.relays {
            if self.reserved_on.len() >= limits::RELAY_RESERVATIONS_OUT {
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
        if relay_of(&addr).is_some() {
            if self.circuit_dials.get(&peer).is_some_and(|at| now.duration_since(*at) < CIRCUIT_DIAL_INTERVAL) {
                return;
            }
            self.circuit_dials.insert(peer, now);
        }
        tracing::debug!(%peer, %addr, "dialing a peer learned by peer exchange");
        let opts = DialOpts::peer_id(peer).condition(PeerCondition::Disconnected).addresses(vec![addr]).build();
        let _ = swarm.dial(opts);
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
