//! libp2p's `/webrtc` transport (private-to-private, "browser-to-browser" in the spec): two
//! peers that share a relayed connection exchange an SDP offer and answer and their ICE
//! candidates on the `/webrtc-signaling/0.0.1` protocol, then talk over a direct WebRTC
//! connection. The DTLS fingerprints travel inside the SDP over the relayed connection,
//! which Noise authenticates, so the WebRTC connection needs no handshake of its own: its
//! remote peer is the peer of the signaling stream.
//!
//! - [`signaling`]: the wire format and a sans-IO state machine of one exchange, with the
//!   bounds that keep a hostile peer's garbage SDP, candidate floods and endless offers cheap.
//! - [`tokio`] (feature `tokio`): the native side on webrtc-rs (full ICE with host and
//!   server-reflexive candidates), a [`libp2p::core::Transport`] that dials and accepts
//!   `/webrtc`, and a STUN responder so reachable peers can serve as STUN servers.
//!
//! Addresses look like `<relay address>/p2p/<relay>/p2p-circuit/webrtc/p2p/<peer>`: a peer
//! listening for `/webrtc` advertises its relayed addresses with `/webrtc` appended.

pub mod proto;
pub mod signaling;
#[cfg(feature = "tokio")]
pub mod tokio;
pub mod transport;
#[cfg(feature = "websys")]
pub mod websys;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId, StreamProtocol};

/// The signaling protocol of the libp2p WebRTC spec.
pub const SIGNALING_PROTOCOL: StreamProtocol = StreamProtocol::new("/webrtc-signaling/0.0.1");

/// The label of the data channel the initiator opens only to make ICE gather candidates;
/// it is closed once connected and never becomes a libp2p stream.
pub const INIT_CHANNEL_LABEL: &str = "init";

/// Splits a `/webrtc` dial address, `<relay address>/p2p-circuit/webrtc/p2p/<peer>`, into
/// the relayed address to reach the peer through (`<relay address>/p2p-circuit/p2p/<peer>`)
/// and the peer. `None` for any other address.
///
/// The transport also dials `/webrtc/p2p/<peer>`: "upgrade the connection we have to this
/// peer", whichever it is. A swarm then sees an address without `/p2p-circuit`, so the
/// WebRTC connection is not taken for a relayed one.
pub fn parse_dial_addr(addr: &Multiaddr) -> Option<(Multiaddr, PeerId)> {
    let protocols: Vec<Protocol<'_>> = addr.iter().collect();
    let [.., Protocol::P2pCircuit, Protocol::WebRTC, Protocol::P2p(peer)] = protocols.as_slice() else {
        return None;
    };
    let circuit: Multiaddr = addr.iter().filter(|p| !matches!(p, Protocol::WebRTC)).collect();
    Some((circuit, *peer))
}

/// The peer of an upgrade address, `/webrtc/p2p/<peer>`.
pub fn parse_upgrade_addr(addr: &Multiaddr) -> Option<PeerId> {
    let protocols: Vec<Protocol<'_>> = addr.iter().collect();
    match protocols.as_slice() {
        [Protocol::WebRTC, Protocol::P2p(peer)] => Some(*peer),
        _ => None,
    }
}

/// The address that upgrades our connection to `peer` to `/webrtc`.
pub fn upgrade_addr(peer: PeerId) -> Multiaddr {
    Multiaddr::empty().with(Protocol::WebRTC).with(Protocol::P2p(peer))
}

/// Whether `addr` is one we listen on for `/webrtc`: `/webrtc` alone, or a relayed address
/// `.../p2p-circuit/webrtc` (where the relay part is the relay client's business).
pub fn is_listen_addr(addr: &Multiaddr) -> bool {
    let protocols: Vec<Protocol<'_>> = addr.iter().collect();
    matches!(protocols.as_slice(), [Protocol::WebRTC] | [.., Protocol::P2pCircuit, Protocol::WebRTC])
}

/// The `/webrtc` address of a relayed listen address `.../p2p-circuit` (with or without
/// our own `/p2p/<id>` at its end): the address other peers dial to reach us over WebRTC.
pub fn webrtc_addr_of_circuit(circuit: &Multiaddr) -> Option<Multiaddr> {
    let mut protocols: Vec<Protocol<'_>> = circuit.iter().collect();
    let own = match protocols.last() {
        Some(Protocol::P2p(peer)) if protocols.len() >= 2 && protocols[protocols.len() - 2] == Protocol::P2pCircuit => {
            let peer = *peer;
            protocols.pop();
            Some(peer)
        }
        _ => None,
    };
    if protocols.last() != Some(&Protocol::P2pCircuit) {
        return None;
    }
    protocols.push(Protocol::WebRTC);
    if let Some(peer) = own {
        protocols.push(Protocol::P2p(peer));
    }
    Some(protocols.into_iter().collect())
}

/// Whether `addr` is a `/webrtc` (private-to-private) address, as opposed to
/// `/webrtc-direct` or anything else.
pub fn is_webrtc_addr(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::WebRTC))
}

/// How a peer says that it answers STUN binding requests (RFC 8489) on UDP `port` of the
/// addresses it is reached at: it supports the protocol `/webrtc-p2p/stun/<port>`, which
/// identify carries to every connected peer. No stream is ever opened on it.
pub const STUN_ADVERT_PREFIX: &str = "/webrtc-p2p/stun/";

/// The protocol that advertises a STUN server on UDP `port`.
pub fn stun_advert(port: u16) -> StreamProtocol {
    StreamProtocol::try_from_owned(format!("{STUN_ADVERT_PREFIX}{port}"))
        .unwrap_or_else(|_| StreamProtocol::new("/webrtc-p2p/stun/3478"))
}

/// The STUN port a peer advertises among its `protocols` (identify), if any.
pub fn stun_port_of<'a>(protocols: impl IntoIterator<Item = &'a StreamProtocol>) -> Option<u16> {
    protocols.into_iter().find_map(|protocol| protocol.as_ref().strip_prefix(STUN_ADVERT_PREFIX)?.parse().ok())
}

/// `stun:IP:PORT` for a STUN server on `port` at the IP address of `addr` (a direct
/// connection's remote address). None at a loopback address: a server on this very host
/// tells nothing a host candidate does not, and its reflexive candidates only duplicate them.
pub fn stun_url(addr: &Multiaddr, port: u16) -> Option<String> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) if !ip.is_loopback() => Some(format!("stun:{ip}:{port}")),
        Protocol::Ip6(ip) if !ip.is_loopback() => Some(format!("stun:[{ip}]:{port}")),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stun_server_is_advertised_and_found_among_protocols() {
        let protocols = [SIGNALING_PROTOCOL, stun_advert(3479), StreamProtocol::new("/ipfs/id/1.0.0")];
        assert_eq!(stun_port_of(&protocols), Some(3479));
        assert_eq!(stun_port_of(&[SIGNALING_PROTOCOL]), None);
        let bogus = StreamProtocol::new("/webrtc-p2p/stun/not-a-port");
        assert_eq!(stun_port_of(&[bogus]), None);
        assert_eq!(
            stun_url(&ma("/ip4/192.0.2.7/udp/4002/webrtc-direct"), 3479).as_deref(),
            Some("stun:192.0.2.7:3479")
        );
        assert_eq!(stun_url(&ma("/ip6/2001:db8::1/tcp/4001"), 3478).as_deref(), Some("stun:[2001:db8::1]:3478"));
        assert_eq!(stun_url(&ma(&format!("/p2p/{PEER}")), 3478), None);
        assert_eq!(stun_url(&ma("/ip4/127.0.0.1/tcp/4001"), 3478), None);
    }

    fn ma(text: &str) -> Multiaddr {
        text.parse().expect("test address")
    }

    const RELAY: &str = "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo";
    const PEER: &str = "12D3KooWLbRVXu9Rw6Tgt8vtWahxyHWDtFngdTDY54x6g1oi8Ytj";

    #[test]
    fn dial_addresses_split_into_the_circuit_and_the_peer() {
        let addr = ma(&format!("/ip4/1.2.3.4/tcp/4001/p2p/{RELAY}/p2p-circuit/webrtc/p2p/{PEER}"));
        let (circuit, peer) = parse_dial_addr(&addr).expect("a /webrtc address");
        assert_eq!(circuit, ma(&format!("/ip4/1.2.3.4/tcp/4001/p2p/{RELAY}/p2p-circuit/p2p/{PEER}")));
        assert_eq!(peer.to_string(), PEER);
        for other in [
            format!("/ip4/1.2.3.4/tcp/4001/p2p/{RELAY}/p2p-circuit/p2p/{PEER}"),
            format!("/ip4/1.2.3.4/udp/4001/webrtc-direct/p2p/{PEER}"),
            format!("/ip4/1.2.3.4/tcp/4001/p2p/{RELAY}/p2p-circuit/webrtc"),
            format!("/webrtc/p2p/{PEER}"),
        ] {
            assert_eq!(parse_dial_addr(&ma(&other)), None, "{other}");
        }
    }

    #[test]
    fn listen_addresses_and_advertised_ones() {
        assert!(is_listen_addr(&ma("/webrtc")));
        assert!(is_listen_addr(&ma(&format!("/ip4/1.2.3.4/tcp/4001/p2p/{RELAY}/p2p-circuit/webrtc"))));
        assert!(!is_listen_addr(&ma("/ip4/1.2.3.4/udp/4001/webrtc-direct")));
        assert!(!is_listen_addr(&ma(&format!("/ip4/1.2.3.4/tcp/4001/p2p/{RELAY}/p2p-circuit"))));
        let circuit = ma(&format!("/ip4/1.2.3.4/tcp/4001/p2p/{RELAY}/p2p-circuit"));
        assert_eq!(webrtc_addr_of_circuit(&circuit), Some(ma(&format!("{circuit}/webrtc"))));
        let own = ma(&format!("{circuit}/p2p/{PEER}"));
        assert_eq!(webrtc_addr_of_circuit(&own), Some(ma(&format!("{circuit}/webrtc/p2p/{PEER}"))));
        assert_eq!(webrtc_addr_of_circuit(&ma("/ip4/1.2.3.4/tcp/1")), None);
        assert!(is_webrtc_addr(&ma(&format!("{circuit}/webrtc"))));
        let peer: PeerId = PEER.parse().expect("peer id");
        assert_eq!(parse_upgrade_addr(&upgrade_addr(peer)), Some(peer));
        assert_eq!(upgrade_addr(peer), ma(&format!("/webrtc/p2p/{PEER}")));
        assert_eq!(parse_upgrade_addr(&ma(&format!("{circuit}/webrtc/p2p/{PEER}"))), None);
        assert!(!is_webrtc_addr(&ma("/ip4/1.2.3.4/udp/1/webrtc-direct")));
    }
}
