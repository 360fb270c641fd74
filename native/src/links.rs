//! How we are connected to each peer: direct, hole-punched, or relayed (and why). A small
//! state machine fed with connection and hole-punch events, with the time handed in, so it is
//! tested without a network.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};

/// How long a relayed-only peer may wait for a hole punch before the status says none came
/// (DCUtR makes three attempts about ten seconds apart; the failure is reported on the side
/// that initiated them).
pub const PUNCH_PATIENCE: Duration = Duration::from_secs(40);

/// How long after its relayed connection closed a direct connection to a peer still counts
/// as a hole punch (the other side closes the relayed one as soon as its end of the punch
/// is up, so the punched connection can land just after).
pub const RECENTLY_RELAYED: Duration = Duration::from_secs(10);

/// One connection to a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// The connection.
    pub id: ConnectionId,
    /// The remote address.
    pub addr: Multiaddr,
    /// Through a relay.
    pub relayed: bool,
    /// We dialed it.
    pub dialed: bool,
    /// The relay, when known (the accepting side knows it from its reservation address).
    pub via: Option<PeerId>,
    /// A direct connection that came while only relayed ones existed: a hole punch.
    pub punched: bool,
    /// When it was established.
    pub since: Instant,
}

/// Every connection of one peer, and how hole punching went.
#[derive(Clone, Debug, Default)]
pub struct PeerLinks {
    /// Open connections.
    pub links: Vec<Link>,
    /// The outcome of the last hole punch.
    punch: Option<Result<(), String>>,
    /// Once punched, the peer stays hole-punched while connected: a punch can leave two
    /// direct connections (one from each side) and the first may be the one that closes.
    was_punched: bool,
}

/// A new connection, as the swarm reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    /// The remote address.
    pub addr: Multiaddr,
    /// Through a relay.
    pub relayed: bool,
    /// We dialed it.
    pub dialed: bool,
    /// The relay, when known.
    pub via: Option<PeerId>,
}

/// What a new connection means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Established {
    /// It is a hole punch: the relayed connections listed can be closed.
    pub punched: bool,
    /// Relayed connections the punch replaces.
    pub close: Vec<ConnectionId>,
    /// A plain direct connection (neither relayed nor punched): a fit AutoNAT server.
    pub plain_direct: bool,
}

/// The link state of every peer.
#[derive(Debug, Default)]
pub struct Links {
    peers: HashMap<PeerId, PeerLinks>,
    /// Peers whose last connection, a relayed one, closed recently.
    recently_relayed: HashMap<PeerId, Instant>,
}

impl Links {
    /// A connection came up. `relayed` comes from the endpoint: the accepting side of a
    /// relayed connection sees only `/p2p/<id>` as the remote address.
    pub fn established(&mut self, peer: PeerId, id: ConnectionId, up: Connection, now: Instant) -> Established {
        let Connection { addr, relayed, dialed, via } = up;
        let just_relayed =
            self.recently_relayed.remove(&peer).is_some_and(|at| now.duration_since(at) < RECENTLY_RELAYED);
        let state = self.peers.entry(peer).or_default();
        let only_relayed = just_relayed || (!state.links.is_empty() && state.links.iter().all(|l| l.relayed));
        let punched = only_relayed && !relayed;
        let close = if punched { state.links.iter().filter(|l| l.relayed).map(|l| l.id).collect() } else { Vec::new() };
        state.was_punched |= punched;
        let via = via.or_else(|| relay_of(&addr));
        // A WebRTC connection's address names no IP: no AutoNAT server.
        let plain_direct = !relayed && !punched && !webrtc_p2p::is_webrtc_addr(&addr);
        state.links.push(Link { id, addr, relayed, dialed, via, punched, since: now });
        Established { punched, close, plain_direct }
    }

    /// A connection closed; `last` when no other connection to the peer remains.
    pub fn closed(&mut self, peer: PeerId, id: ConnectionId, last: bool, now: Instant) {
        if !last {
            if let Some(state) = self.peers.get_mut(&peer) {
                state.links.retain(|link| link.id != id);
            }
            return;
        }
        let Some(state) = self.peers.remove(&peer) else { return };
        let relayed_only = state.links.iter().all(|l| l.relayed || l.id == id) && state.links.iter().any(|l| l.relayed);
        if relayed_only {
            self.recently_relayed.retain(|_, at| now.duration_since(*at) < RECENTLY_RELAYED);
            self.recently_relayed.insert(peer, now);
        }
    }

    /// DCUtR reported on a hole punch with a peer.
    pub fn punch_result(&mut self, peer: PeerId, outcome: Result<(), String>, now: Instant) {
        match self.peers.get_mut(&peer) {
            Some(state) => state.punch = Some(outcome),
            // The relayed connection already closed: the punched one is about to arrive.
            None if outcome.is_ok() => {
                self.recently_relayed.insert(peer, now);
            }
            None => {}
        }
    }

    /// A peer's connections.
    pub fn get(&self, peer: &PeerId) -> Option<&PeerLinks> {
        self.peers.get(peer)
    }

    /// The direct address we dialed a peer at, if any.
    pub fn dialed_direct(&self, peer: &PeerId) -> Option<Multiaddr> {
        self.peers.get(peer)?.links.iter().find(|l| l.dialed && !l.relayed).map(|l| l.addr.clone())
    }

    /// How we are connected to a peer, in words.
    pub fn kind(&self, peer: &PeerId, now: Instant) -> String {
        match self.peers.get(peer) {
            Some(state) => state.kind(now),
            None => "not connected".into(),
        }
    }
}

impl PeerLinks {
    /// Direct, hole-punched (TCP or QUIC), WebRTC through ICE, or relayed via which peer
    /// and why.
    pub fn kind(&self, now: Instant) -> String {
        let direct: Vec<&Link> = self.links.iter().filter(|link| !link.relayed).collect();
        if direct.iter().any(|link| webrtc_p2p::is_webrtc_addr(&link.addr)) {
            return "WebRTC (ICE, direct)".into();
        }
        if !direct.is_empty() {
            if !(matches!(self.punch, Some(Ok(()))) || self.was_punched) {
                return "direct".into();
            }
            let quic = direct.iter().any(|link| link.addr.iter().any(|p| matches!(p, Protocol::QuicV1)));
            return format!("hole-punched ({})", if quic { "QUIC" } else { "TCP" });
        }
        let relay = self.links.iter().find_map(|link| link.via).map_or("a relay".into(), |id| id.to_string());
        let waited = self.links.iter().map(|link| now.duration_since(link.since)).max().unwrap_or_default();
        match &self.punch {
            Some(Err(error)) => format!("relayed via {relay} (hole punching failed: {error})"),
            _ if waited >= PUNCH_PATIENCE => {
                format!("relayed via {relay} (hole punching failed: no direct path after {}s)", waited.as_secs())
            }
            _ => format!("relayed via {relay} (hole punching in progress)"),
        }
    }
}

/// The relay named in a `/p2p/<relay>/p2p-circuit` address.
pub fn relay_of(addr: &Multiaddr) -> Option<PeerId> {
    let parts: Vec<_> = addr.iter().collect();
    parts.windows(2).find_map(|pair| match pair {
        [Protocol::P2p(id), Protocol::P2pCircuit] => Some(*id),
        _ => None,
    })
}

/// Whether an address is a WebRTC-direct one.
pub fn is_webrtc(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::WebRTCDirect))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay() -> PeerId {
        PeerId::random()
    }

    fn conn(addr: Multiaddr, dialed: bool) -> Connection {
        Connection { relayed: relay_of(&addr).is_some(), via: None, addr, dialed }
    }

    fn relayed_addr(relay: PeerId) -> Multiaddr {
        format!("/ip4/10.0.0.1/tcp/4001/p2p/{relay}/p2p-circuit").parse().expect("addr")
    }

    fn direct_addr(quic: bool) -> Multiaddr {
        if quic { "/ip4/198.51.100.7/udp/5000/quic-v1".parse() } else { "/ip4/198.51.100.7/tcp/5000".parse() }
            .expect("addr")
    }

    #[test]
    fn a_webrtc_upgrade_replaces_the_relayed_connection_and_says_so() {
        let mut links = Links::default();
        let peer = PeerId::random();
        let via = relay();
        let now = Instant::now();
        links.established(peer, ConnectionId::new_unchecked(1), conn(relayed_addr(via), true), now);
        let webrtc = webrtc_p2p::upgrade_addr(peer);
        let up = links.established(peer, ConnectionId::new_unchecked(2), conn(webrtc, true), now);
        assert_eq!(up.close, vec![ConnectionId::new_unchecked(1)], "the relayed connection goes");
        assert!(!up.plain_direct, "not an AutoNAT server");
        assert_eq!(links.kind(&peer, now), "WebRTC (ICE, direct)");
        // The accepting side sees `/webrtc/p2p/<peer>`.
        let other = PeerId::random();
        let listener: Multiaddr = format!("/webrtc/p2p/{other}").parse().expect("addr");
        links.established(other, ConnectionId::new_unchecked(3), conn(listener, false), now);
        assert_eq!(links.kind(&other, now), "WebRTC (ICE, direct)");
    }

    #[test]
    fn a_plain_direct_connection_is_direct_and_fit_for_autonat() {
        let mut links = Links::default();
        let peer = PeerId::random();
        let now = Instant::now();
        let up = links.established(peer, ConnectionId::new_unchecked(1), conn(direct_addr(false), true), now);
        assert_eq!(up, Established { punched: false, close: vec![], plain_direct: true });
        assert_eq!(links.kind(&peer, now), "direct");
        assert_eq!(links.dialed_direct(&peer), Some(direct_addr(false)));
    }

    #[test]
    fn a_direct_connection_after_a_relayed_one_is_a_punch_that_replaces_it() {
        let mut links = Links::default();
        let (peer, via) = (PeerId::random(), relay());
        let now = Instant::now();
        links.established(peer, ConnectionId::new_unchecked(1), conn(relayed_addr(via), false), now);
        assert_eq!(links.kind(&peer, now), format!("relayed via {via} (hole punching in progress)"));
        let up = links.established(peer, ConnectionId::new_unchecked(2), conn(direct_addr(true), false), now);
        assert!(up.punched && !up.plain_direct);
        assert_eq!(up.close, vec![ConnectionId::new_unchecked(1)]);
        links.closed(peer, ConnectionId::new_unchecked(1), false, now);
        assert_eq!(links.kind(&peer, now), "hole-punched (QUIC)");
    }

    #[test]
    fn a_punch_landing_just_after_the_relayed_connection_closed_still_counts() {
        let mut links = Links::default();
        let (peer, via) = (PeerId::random(), relay());
        let now = Instant::now();
        links.established(peer, ConnectionId::new_unchecked(1), conn(relayed_addr(via), false), now);
        links.closed(peer, ConnectionId::new_unchecked(1), true, now);
        links.established(
            peer,
            ConnectionId::new_unchecked(2),
            conn(direct_addr(false), true),
            now + Duration::from_secs(2),
        );
        assert_eq!(links.kind(&peer, now + Duration::from_secs(2)), "hole-punched (TCP)");
        // Much later, a new direct connection is just direct.
        links.closed(peer, ConnectionId::new_unchecked(2), true, now + Duration::from_secs(3));
        let later = now + Duration::from_secs(60);
        links.established(peer, ConnectionId::new_unchecked(3), conn(direct_addr(false), true), later);
        assert_eq!(links.kind(&peer, later), "direct");
    }

    #[test]
    fn a_failed_or_overdue_punch_is_reported_with_its_reason() {
        let mut links = Links::default();
        let (peer, via) = (PeerId::random(), relay());
        let now = Instant::now();
        links.established(peer, ConnectionId::new_unchecked(1), conn(relayed_addr(via), false), now);
        let late = now + PUNCH_PATIENCE + Duration::from_secs(1);
        assert_eq!(
            links.kind(&peer, late),
            format!("relayed via {via} (hole punching failed: no direct path after 41s)")
        );
        links.punch_result(peer, Err("no addresses".into()), late);
        assert_eq!(links.kind(&peer, late), format!("relayed via {via} (hole punching failed: no addresses)"));
    }

    #[test]
    fn a_punched_peer_stays_punched_while_one_of_its_direct_connections_remains() {
        let mut links = Links::default();
        let (peer, via) = (PeerId::random(), relay());
        let now = Instant::now();
        links.established(peer, ConnectionId::new_unchecked(1), conn(relayed_addr(via), false), now);
        links.established(peer, ConnectionId::new_unchecked(2), conn(direct_addr(false), false), now);
        links.established(peer, ConnectionId::new_unchecked(3), conn(direct_addr(false), true), now);
        links.closed(peer, ConnectionId::new_unchecked(1), false, now);
        links.closed(peer, ConnectionId::new_unchecked(2), false, now);
        assert_eq!(links.kind(&peer, now), "hole-punched (TCP)");
    }

    #[test]
    fn the_accepting_side_of_a_relayed_connection_knows_it_from_the_endpoint() {
        let mut links = Links::default();
        let peer = PeerId::random();
        let now = Instant::now();
        let bare: Multiaddr = format!("/p2p/{peer}").parse().expect("addr");
        let relayed = Connection { addr: bare, relayed: true, dialed: false, via: None };
        links.established(peer, ConnectionId::new_unchecked(1), relayed, now);
        let up = links.established(peer, ConnectionId::new_unchecked(2), conn(direct_addr(false), false), now);
        assert!(up.punched, "{up:?}");
        assert_eq!(links.kind(&peer, now), "hole-punched (TCP)");
    }

    #[test]
    fn relay_addresses_name_their_relay() {
        let via = relay();
        assert_eq!(relay_of(&relayed_addr(via)), Some(via));
        assert_eq!(relay_of(&direct_addr(false)), None);
        assert!(is_webrtc(&"/ip4/127.0.0.1/udp/1/webrtc-direct".parse().expect("addr")));
    }
}
