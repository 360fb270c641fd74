//! Both sides of one signaling exchange on webrtc-rs, ending in a connected
//! `RTCPeerConnection` and the channels a [`Connection`](super::Connection) is made of.

use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc;
use futures::{AsyncRead, AsyncWrite, StreamExt};
use webrtc::api::APIBuilder;
use webrtc::api::setting_engine::SettingEngine;
use webrtc::data::data_channel::DataChannel as DetachedDataChannel;
use webrtc::data_channel::RTCDataChannel;
use webrtc::ice::network_type::NetworkType;
use webrtc::ice_transport::ice_candidate::{RTCIceCandidate, RTCIceCandidateInit};
use webrtc::ice_transport::ice_server::RTCIceServer;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;

use super::{Config, Error};
use crate::INIT_CHANNEL_LABEL;
use crate::signaling::{CandidateInit, Role, Signal, Signaler, SignalingError};

/// How many opened data channels may wait for the muxer to take them.
const MAX_PENDING_CHANNELS: usize = 16;

/// A connected peer connection and what the muxer needs of it.
pub(crate) struct Established {
    pub(crate) peer_connection: Arc<RTCPeerConnection>,
    pub(crate) incoming: mpsc::Receiver<Arc<DetachedDataChannel>>,
    pub(crate) states: mpsc::UnboundedReceiver<RTCPeerConnectionState>,
}

impl std::fmt::Debug for Established {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Established").finish_non_exhaustive()
    }
}

/// A peer connection with its callbacks wired to channels.
struct Pending {
    peer_connection: Arc<RTCPeerConnection>,
    incoming: mpsc::Receiver<Arc<DetachedDataChannel>>,
    states: mpsc::UnboundedReceiver<RTCPeerConnectionState>,
    candidates: mpsc::UnboundedReceiver<Option<RTCIceCandidate>>,
}

async fn new_peer_connection(config: &Config) -> Result<Pending, Error> {
    let mut settings = SettingEngine::default();
    settings.detach_data_channels();
    settings.set_network_types(vec![NetworkType::Udp4, NetworkType::Udp6]);
    settings.set_include_loopback_candidate(config.loopback_candidates);
    // Notice a dead path in seconds, not in the default half minute.
    settings.set_ice_timeouts(
        Some(Duration::from_secs(5)),
        Some(Duration::from_secs(15)),
        Some(Duration::from_secs(2)),
    );
    let api = APIBuilder::new().with_setting_engine(settings).build();
    let stun = config.stun_servers.get();
    let rtc_config = RTCConfiguration {
        ice_servers: if stun.is_empty() { Vec::new() } else { vec![RTCIceServer { urls: stun, ..Default::default() }] },
        ..Default::default()
    };
    let peer_connection = Arc::new(api.new_peer_connection(rtc_config).await.map_err(webrtc_error)?);

    let (state_tx, states) = mpsc::unbounded();
    peer_connection.on_peer_connection_state_change(Box::new(move |state| {
        let _ = state_tx.unbounded_send(state);
        Box::pin(async {})
    }));
    let (candidate_tx, candidates) = mpsc::unbounded();
    peer_connection.on_ice_candidate(Box::new(move |candidate| {
        let _ = candidate_tx.unbounded_send(candidate);
        Box::pin(async {})
    }));
    // Channels the remote opens: registered now, so that none opened right after ICE
    // connects is missed.
    let (channel_tx, incoming) = mpsc::channel(MAX_PENDING_CHANNELS);
    peer_connection.on_data_channel(Box::new(move |channel: Arc<RTCDataChannel>| {
        let tx = channel_tx.clone();
        Box::pin(async move {
            tracing::debug!(id = channel.id(), label = channel.label(), "the remote opened a data channel");
            if channel.label() == INIT_CHANNEL_LABEL {
                // Only there to make ICE gather. Close it now that it has reached us (as
                // js-libp2p does); its opener closes its side in turn.
                on_open_detach(channel, |detached| {
                    tokio::spawn(async move {
                        let _ = detached.close().await;
                    });
                });
                return;
            }
            on_open_detach(channel, move |detached| {
                let mut tx = tx;
                if tx.try_send(detached.clone()).is_err() {
                    tracing::debug!("too many data channels waiting; closing one");
                    tokio::spawn(async move {
                        let _ = detached.close().await;
                    });
                }
            });
        })
    }));
    Ok(Pending { peer_connection, incoming, states, candidates })
}

/// Calls `then` with the detached channel once `channel` is open.
pub(crate) fn on_open_detach<F>(channel: Arc<RTCDataChannel>, then: F)
where
    F: FnOnce(Arc<DetachedDataChannel>) + Send + 'static,
{
    let opened = channel.clone();
    let then = std::sync::Mutex::new(Some(then));
    channel.on_open(Box::new(move || {
        let channel = opened.clone();
        let then = then.lock().ok().and_then(|mut then| then.take());
        Box::pin(async move {
            match channel.detach().await {
                Ok(detached) => {
                    tracing::debug!(id = detached.stream_identifier(), "data channel open");
                    if let Some(then) = then {
                        then(detached);
                    }
                }
                Err(error) => tracing::debug!(%error, "cannot detach a data channel"),
            }
        })
    }));
}

/// Reads (and drops) what arrives on a channel until the remote resets it.
async fn drain_until_closed(channel: &DetachedDataChannel) {
    let mut buf = vec![0u8; 1024];
    while let Ok(read) = channel.read(&mut buf).await {
        if read == 0 {
            break;
        }
    }
}

fn webrtc_error(error: webrtc::Error) -> Error {
    Error::Signaling(SignalingError::WebRtc(error.to_string()))
}

/// The media id of our description's data section (what trickled candidates refer to).
fn media_id(sdp: &str) -> String {
    sdp.lines()
        .find_map(|line| line.strip_prefix("a=mid:"))
        .map(|mid| mid.trim().to_owned())
        .unwrap_or_else(|| "0".into())
}

fn to_init(candidate: &RTCIceCandidate, mid: &str) -> Option<CandidateInit> {
    let json = candidate.to_json().ok()?;
    Some(CandidateInit {
        candidate: json.candidate,
        sdp_mid: Some(mid.to_owned()),
        sdp_mline_index: Some(0),
        username_fragment: None,
    })
}

async fn add_remote_candidate(peer_connection: &RTCPeerConnection, candidate: CandidateInit) {
    let init = RTCIceCandidateInit {
        candidate: format!("candidate:{}", candidate.line()),
        sdp_mid: candidate.sdp_mid,
        sdp_mline_index: candidate.sdp_mline_index,
        username_fragment: candidate.username_fragment,
    };
    // Like browsers, skip a candidate we cannot use (an unresolvable mDNS name, an
    // address family we do not have) and go on with the others.
    if let Err(error) = peer_connection.add_ice_candidate(init).await {
        tracing::debug!(%error, "skipping a remote ICE candidate");
    }
}

/// Runs one exchange on `stream` as `role`, within the configured timeout.
pub(crate) async fn run<S>(stream: S, role: Role, config: &Config) -> Result<Established, Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let pending = new_peer_connection(config).await?;
    let peer_connection = pending.peer_connection.clone();
    let result = tokio::time::timeout(config.handshake_timeout, exchange(stream, role, pending)).await;
    match result {
        Ok(Ok(established)) => Ok(established),
        Ok(Err(error)) => {
            let _ = peer_connection.close().await;
            Err(error)
        }
        Err(_) => {
            let _ = peer_connection.close().await;
            Err(Error::Signaling(SignalingError::Timeout))
        }
    }
}

async fn exchange<S>(stream: S, role: Role, pending: Pending) -> Result<Established, Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let Pending { peer_connection, incoming, mut states, mut candidates } = pending;
    let mut signaler = Signaler::new(stream, role);

    let init_channel = match role {
        Role::Initiator => {
            let channel = peer_connection.create_data_channel(INIT_CHANNEL_LABEL, None).await.map_err(webrtc_error)?;
            let (opened_tx, opened) = futures::channel::oneshot::channel();
            on_open_detach(channel, move |detached| {
                let _ = opened_tx.send(detached);
            });
            let offer = peer_connection.create_offer(None).await.map_err(webrtc_error)?;
            signaler.send(&Signal::Offer(offer.sdp.clone())).await?;
            peer_connection.set_local_description(offer).await.map_err(webrtc_error)?;
            let answer = match signaler.receive().await? {
                Some(Signal::Answer(sdp)) => sdp,
                Some(_) => return Err(Error::Signaling(SignalingError::BadSdp("expected an answer"))),
                None => return Err(Error::Signaling(SignalingError::Closed)),
            };
            let answer = RTCSessionDescription::answer(answer).map_err(webrtc_error)?;
            peer_connection.set_remote_description(answer).await.map_err(webrtc_error)?;
            Some(opened)
        }
        Role::Recipient => {
            let offer = match signaler.receive().await? {
                Some(Signal::Offer(sdp)) => sdp,
                Some(_) => return Err(Error::Signaling(SignalingError::BadSdp("expected an offer"))),
                None => return Err(Error::Signaling(SignalingError::Closed)),
            };
            let offer = RTCSessionDescription::offer(offer).map_err(webrtc_error)?;
            peer_connection.set_remote_description(offer).await.map_err(webrtc_error)?;
            let answer = peer_connection.create_answer(None).await.map_err(webrtc_error)?;
            signaler.send(&Signal::Answer(answer.sdp.clone())).await?;
            peer_connection.set_local_description(answer).await.map_err(webrtc_error)?;
            None
        }
    };
    let mid =
        peer_connection.local_description().await.map(|description| media_id(&description.sdp)).unwrap_or_default();

    // Trickle both ways until ICE and DTLS are up.
    let mut remote_open = true;
    loop {
        tokio::select! {
            candidate = candidates.next() => {
                // `None` inside: gathering is done; the spec leaves the end implicit.
                if let Some(init) = candidate.flatten().and_then(|candidate| to_init(&candidate, &mid)) {
                    tracing::trace!(candidate = %init.candidate, "sending an ICE candidate");
                    // The remote may have stopped reading once it is connected.
                    if signaler.send(&Signal::Candidate(init)).await.is_err() {
                        tracing::trace!("could not send an ICE candidate");
                    }
                }
            },
            signal = signaler.receive(), if remote_open => match signal? {
                Some(Signal::Candidate(candidate)) => add_remote_candidate(&peer_connection, candidate).await,
                Some(_) => {}
                None => remote_open = false,
            },
            state = states.next() => match state {
                Some(RTCPeerConnectionState::Connected) => break,
                Some(RTCPeerConnectionState::Failed) => return Err(Error::IceFailed),
                Some(RTCPeerConnectionState::Closed) | None => return Err(Error::Closed),
                Some(_) => {}
            },
        }
    }

    if let Some(opened) = init_channel {
        // Closing it right away raced with its opening on the remote, and webrtc-rs then
        // stopped accepting data channels: the recipient closes it once it has it, and we
        // close our side when that reset arrives.
        tokio::spawn(async move {
            if let Ok(detached) = opened.await {
                drain_until_closed(&detached).await;
                let _ = detached.close().await;
            }
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), signaler.close()).await;
    Ok(Established { peer_connection, incoming, states })
}
