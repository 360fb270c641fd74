//! The `/webrtc` transport, whatever WebRTC stack runs under it (an [`Engine`]): dials
//! `/webrtc/p2p/<peer>` (or `.../p2p-circuit/webrtc/p2p/<peer>`) by opening a signaling
//! stream on the connection the swarm already has to that peer, and accepts `/webrtc` by
//! answering signaling streams, within bounds (see [`Config`]).

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::channel::mpsc;
use futures::future::{BoxFuture, Either};
use futures::{FutureExt, StreamExt};
use libp2p::PeerId;
use libp2p::core::muxing::StreamMuxer;
use libp2p::core::transport::{DialOpts, ListenerId, TransportError, TransportEvent};
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::multiaddr::Protocol;
use web_time::Instant;

use crate::signaling::{HANDSHAKE_TIMEOUT, Role, SignalingError};
use crate::{SIGNALING_PROTOCOL, is_listen_addr, parse_dial_addr, parse_upgrade_addr};

/// A WebRTC stack: runs one signaling exchange on a stream and makes a connection of it.
pub trait Engine: Send + Sync + 'static {
    /// The resulting connection.
    type Connection: StreamMuxer + Send + Unpin + 'static;

    /// Runs the exchange as `role` (the caller bounds its duration).
    fn handshake(
        &self,
        stream: libp2p::Stream,
        role: Role,
        config: Arc<Config>,
    ) -> BoxFuture<'static, Result<Self::Connection, Error>>;
}

/// STUN servers (`stun:host:port`) for server-reflexive candidates, shared with the
/// transport so they can change while it runs (a tab learns them from its page's server).
#[derive(Clone, Debug, Default)]
pub struct StunServers(Arc<Mutex<Vec<String>>>);

/// STUN servers an exchange asks, at most (each one is asked for every exchange).
pub const MAX_STUN_SERVERS: usize = 6;

impl StunServers {
    /// These servers.
    pub fn new(urls: Vec<String>) -> Self {
        Self(Arc::new(Mutex::new(urls)))
    }

    /// Replaces the servers (for the exchanges that start from now on).
    pub fn set(&self, urls: Vec<String>) {
        if let Ok(mut servers) = self.0.lock() {
            *servers = urls;
        }
    }

    /// Adds a server (at most [`MAX_STUN_SERVERS`]); whether it is new.
    pub fn add(&self, url: String) -> bool {
        let Ok(mut servers) = self.0.lock() else { return false };
        if servers.contains(&url) || servers.len() >= MAX_STUN_SERVERS {
            return false;
        }
        servers.push(url);
        true
    }

    /// The servers now.
    pub fn get(&self) -> Vec<String> {
        self.0.lock().map(|servers| servers.clone()).unwrap_or_default()
    }
}

/// Settings of the transport.
#[derive(Clone, Debug)]
pub struct Config {
    /// STUN servers for server-reflexive candidates. None: host candidates only (and
    /// peer-reflexive ones found in the checks).
    pub stun_servers: StunServers,
    /// From the signaling stream's opening to a connected WebRTC connection.
    pub handshake_timeout: Duration,
    /// Exchanges in flight at once (both directions).
    pub max_in_flight: usize,
    /// Exchanges one peer may start with us per minute; more is a flood.
    pub max_per_peer_per_minute: usize,
    /// Offer loopback candidates (for tests on one host).
    pub loopback_candidates: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            stun_servers: StunServers::default(),
            handshake_timeout: HANDSHAKE_TIMEOUT,
            max_in_flight: 8,
            max_per_peer_per_minute: 6,
            loopback_candidates: false,
        }
    }
}

/// Why a `/webrtc` connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The signaling exchange failed (see [`SignalingError::is_misbehaviour`]).
    #[error(transparent)]
    Signaling(#[from] SignalingError),
    /// The signaling stream could not be opened on the relayed connection.
    #[error("cannot open a signaling stream: {0}")]
    Stream(String),
    /// ICE found no working path between the two peers (symmetric NATs, no shared network).
    #[error("ICE failed: no direct path between the peers")]
    IceFailed,
    /// The connection closed.
    #[error("the WebRTC connection closed")]
    Closed,
    /// Too many exchanges at once, or too many from this peer.
    #[error("too many WebRTC handshakes ({0})")]
    Limit(&'static str),
    /// We listen on one `/webrtc` address at most.
    #[error("already listening for /webrtc")]
    AlreadyListening,
}

/// A peer that broke the signaling protocol or flooded it: the swarm should drop it.
#[derive(Debug, Clone)]
pub struct Misbehaviour {
    /// Who.
    pub peer: PeerId,
    /// What it did.
    pub reason: String,
}

#[derive(Debug, Default)]
struct Limiter {
    in_flight: usize,
    /// Exchanges in progress per peer: (ours, theirs).
    busy: HashMap<PeerId, (bool, bool)>,
    recent: HashMap<PeerId, VecDeque<Instant>>,
}

/// Admission for one exchange; releases its slot when dropped.
#[derive(Debug)]
struct Permit {
    limiter: Arc<Mutex<Limiter>>,
    peer: PeerId,
    role: Role,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Ok(mut limiter) = self.limiter.lock() {
            limiter.in_flight = limiter.in_flight.saturating_sub(1);
            if let Some(busy) = limiter.busy.get_mut(&self.peer) {
                match self.role {
                    Role::Initiator => busy.0 = false,
                    Role::Recipient => busy.1 = false,
                }
                if *busy == (false, false) {
                    limiter.busy.remove(&self.peer);
                }
            }
        }
    }
}

/// Admits one exchange with `peer` in `role`. One exchange per peer at a time, except when
/// both sides dial each other at once: then the offer of the peer with the larger id is
/// answered (on both sides, so exactly one of the two exchanges goes on).
fn admit(
    limiter: &Arc<Mutex<Limiter>>,
    config: &Config,
    local: PeerId,
    peer: PeerId,
    role: Role,
) -> Result<Permit, Error> {
    let mut state = limiter.lock().map_err(|_| Error::Limit("poisoned"))?;
    let now = Instant::now();
    let recent = state.recent.entry(peer).or_default();
    while recent.front().is_some_and(|at| now.duration_since(*at) > Duration::from_secs(60)) {
        recent.pop_front();
    }
    if recent.len() >= config.max_per_peer_per_minute {
        return Err(Error::Limit("from one peer in a minute"));
    }
    recent.push_back(now);
    let (ours, theirs) = state.busy.get(&peer).copied().unwrap_or_default();
    let free = match role {
        Role::Initiator => !ours && !theirs,
        // Simultaneous dials: the larger peer id's offer goes on.
        Role::Recipient => !theirs && (!ours || peer > local),
    };
    if !free {
        return Err(Error::Limit("one peer at a time"));
    }
    if state.in_flight >= config.max_in_flight {
        return Err(Error::Limit("in flight"));
    }
    state.recent.retain(|_, times| !times.is_empty());
    state.in_flight += 1;
    let busy = state.busy.entry(peer).or_default();
    match role {
        Role::Initiator => busy.0 = true,
        Role::Recipient => busy.1 = true,
    }
    Ok(Permit { limiter: limiter.clone(), peer, role })
}

/// A handshake in progress.
type Upgrade<C> = BoxFuture<'static, Result<(PeerId, C), Error>>;

/// The `/webrtc` transport over an [`Engine`]. Its output is the remote peer and the connection.
pub struct Transport<E: Engine> {
    engine: Arc<E>,
    config: Arc<Config>,
    local: PeerId,
    control: libp2p_stream::Control,
    listener: Option<(ListenerId, libp2p_stream::IncomingStreams)>,
    events: VecDeque<TransportEvent<Upgrade<E::Connection>, Error>>,
    limiter: Arc<Mutex<Limiter>>,
    misbehaviour: mpsc::UnboundedSender<Misbehaviour>,
}

impl<E: Engine> std::fmt::Debug for Transport<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport").field("config", &self.config).finish_non_exhaustive()
    }
}

impl<E: Engine + Default> Transport<E> {
    /// A transport for the local peer `local` that signals over the swarm's streams
    /// (`control` of the swarm's `libp2p_stream::Behaviour`). The receiver yields peers that
    /// misbehaved in signaling.
    pub fn new(
        local: PeerId,
        control: libp2p_stream::Control,
        config: Config,
    ) -> (Self, mpsc::UnboundedReceiver<Misbehaviour>) {
        Self::with_engine(E::default(), local, control, config)
    }
}

impl<E: Engine> Transport<E> {
    /// The same, on a given engine.
    pub fn with_engine(
        engine: E,
        local: PeerId,
        control: libp2p_stream::Control,
        config: Config,
    ) -> (Self, mpsc::UnboundedReceiver<Misbehaviour>) {
        let (misbehaviour, reports) = mpsc::unbounded();
        let transport = Self {
            engine: Arc::new(engine),
            config: Arc::new(config),
            local,
            control,
            listener: None,
            events: VecDeque::new(),
            limiter: Arc::default(),
            misbehaviour,
        };
        (transport, reports)
    }

    /// Runs `handshake` within the configured time and reports misbehaviour.
    fn guarded(
        &self,
        peer: PeerId,
        handshake: impl std::future::Future<Output = Result<E::Connection, Error>> + Send + 'static,
    ) -> Upgrade<E::Connection> {
        let reports = self.misbehaviour.clone();
        let timeout = futures_timer::Delay::new(self.config.handshake_timeout);
        async move {
            let outcome = match futures::future::select(Box::pin(handshake), timeout).await {
                Either::Left((outcome, _)) => outcome,
                Either::Right(((), _)) => Err(Error::Signaling(SignalingError::Timeout)),
            };
            match outcome {
                Ok(connection) => Ok((peer, connection)),
                Err(error) => {
                    if let Error::Signaling(signaling) = &error
                        && signaling.is_misbehaviour()
                    {
                        let _ = reports.unbounded_send(Misbehaviour { peer, reason: signaling.to_string() });
                    }
                    Err(error)
                }
            }
        }
        .boxed()
    }
}

impl<E: Engine> libp2p::core::Transport for Transport<E> {
    type Output = (PeerId, E::Connection);
    type Error = Error;
    type ListenerUpgrade = Upgrade<E::Connection>;
    type Dial = Upgrade<E::Connection>;

    fn listen_on(&mut self, id: ListenerId, addr: Multiaddr) -> Result<(), TransportError<Error>> {
        if !is_listen_addr(&addr) {
            return Err(TransportError::MultiaddrNotSupported(addr));
        }
        if self.listener.is_some() {
            return Err(TransportError::Other(Error::AlreadyListening));
        }
        let incoming =
            self.control.accept(SIGNALING_PROTOCOL).map_err(|_| TransportError::Other(Error::AlreadyListening))?;
        self.listener = Some((id, incoming));
        Ok(())
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        match &self.listener {
            Some((listening, _)) if *listening == id => {
                self.listener = None;
                self.events.push_back(TransportEvent::ListenerClosed { listener_id: id, reason: Ok(()) });
                true
            }
            _ => false,
        }
    }

    fn dial(&mut self, addr: Multiaddr, opts: DialOpts) -> Result<Self::Dial, TransportError<Error>> {
        let Some(peer) = parse_upgrade_addr(&addr).or_else(|| parse_dial_addr(&addr).map(|(_, peer)| peer)) else {
            return Err(TransportError::MultiaddrNotSupported(addr));
        };
        if opts.role != Endpoint::Dialer {
            return Err(TransportError::MultiaddrNotSupported(addr));
        }
        let permit =
            admit(&self.limiter, &self.config, self.local, peer, Role::Initiator).map_err(TransportError::Other)?;
        let mut control = self.control.clone();
        let config = self.config.clone();
        let engine = self.engine.clone();
        Ok(self.guarded(peer, async move {
            let _permit = permit;
            let stream = control
                .open_stream(peer, SIGNALING_PROTOCOL)
                .await
                .map_err(|error| Error::Stream(error.to_string()))?;
            engine.handshake(stream, Role::Initiator, config).await
        }))
    }

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<TransportEvent<Self::ListenerUpgrade, Error>> {
        if let Some(event) = self.events.pop_front() {
            return Poll::Ready(event);
        }
        loop {
            let Some((listener_id, incoming)) = self.listener.as_mut() else {
                return Poll::Pending;
            };
            let listener_id = *listener_id;
            match incoming.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    self.listener = None;
                    return Poll::Ready(TransportEvent::ListenerClosed { listener_id, reason: Ok(()) });
                }
                Poll::Ready(Some((peer, stream))) => {
                    let permit = match admit(&self.limiter, &self.config, self.local, peer, Role::Recipient) {
                        Ok(permit) => permit,
                        Err(error) => {
                            tracing::debug!(%peer, %error, "refusing a WebRTC signaling stream");
                            if matches!(error, Error::Limit("from one peer in a minute")) {
                                let _ = self
                                    .misbehaviour
                                    .unbounded_send(Misbehaviour { peer, reason: "endless WebRTC offers".into() });
                            }
                            drop(stream);
                            continue;
                        }
                    };
                    let config = self.config.clone();
                    let engine = self.engine.clone();
                    let upgrade = self.guarded(peer, async move {
                        let _permit = permit;
                        engine.handshake(stream, Role::Recipient, config).await
                    });
                    let local_addr = Multiaddr::empty().with(Protocol::WebRTC);
                    let send_back_addr = local_addr.clone().with(Protocol::P2p(peer));
                    return Poll::Ready(TransportEvent::Incoming { listener_id, upgrade, local_addr, send_back_addr });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_peers() -> (PeerId, PeerId) {
        let (a, b) = (PeerId::random(), PeerId::random());
        if a < b { (a, b) } else { (b, a) }
    }

    #[test]
    fn one_exchange_per_peer_at_a_time() {
        let limiter = Arc::default();
        let config = Config::default();
        let (local, remote) = two_peers();
        let first = admit(&limiter, &config, local, remote, Role::Initiator).expect("first");
        assert!(admit(&limiter, &config, local, remote, Role::Initiator).is_err());
        drop(first);
        let answering = admit(&limiter, &config, local, remote, Role::Recipient).expect("after the first");
        assert!(admit(&limiter, &config, local, remote, Role::Recipient).is_err());
        assert!(admit(&limiter, &config, local, remote, Role::Initiator).is_err(), "we answer: no dial of ours");
        drop(answering);
        assert!(limiter.lock().expect("lock").busy.is_empty());
    }

    /// Both peers dial each other at once: each side answers only the larger id's offer, so
    /// exactly one exchange goes on (before, both refused the other's and both failed).
    #[test]
    fn simultaneous_dials_resolve_to_the_larger_ids_offer() {
        let config = Config::default();
        let (small, large) = two_peers();
        let (at_small, at_large) = (Arc::default(), Arc::default());
        let _small_dials = admit(&at_small, &config, small, large, Role::Initiator).expect("small dials");
        let _large_dials = admit(&at_large, &config, large, small, Role::Initiator).expect("large dials");
        // The small peer answers the large one's offer; the large peer refuses the small's.
        let answered = admit(&at_small, &config, small, large, Role::Recipient);
        let refused = admit(&at_large, &config, large, small, Role::Recipient);
        assert!(answered.is_ok());
        assert!(refused.is_err());
    }

    #[test]
    fn a_peer_gets_a_bounded_number_of_exchanges_a_minute() {
        let limiter = Arc::default();
        let config = Config::default();
        let (local, remote) = two_peers();
        for _ in 0..config.max_per_peer_per_minute {
            drop(admit(&limiter, &config, local, remote, Role::Recipient).expect("within the limit"));
        }
        let over = admit(&limiter, &config, local, remote, Role::Recipient);
        assert!(matches!(over, Err(Error::Limit("from one peer in a minute"))));
    }
}
