//! The browser side of `/webrtc` on the browser's own `RTCPeerConnection` (web-sys): the
//! same [`Transport`](crate::transport::Transport), with ICE, DTLS and SCTP from the browser.

mod channel;
mod connection;

use std::sync::Arc;

use futures::channel::mpsc;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use send_wrapper::SendWrapper;
use wasm_bindgen::prelude::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    Event, RtcConfiguration, RtcIceCandidateInit, RtcIceServer, RtcPeerConnection, RtcPeerConnectionIceEvent,
    RtcPeerConnectionState, RtcSdpType, RtcSessionDescriptionInit,
};

pub use connection::{Connection, Stream};

use crate::INIT_CHANNEL_LABEL;
use crate::signaling::{CandidateInit, Role, Signal, Signaler, SignalingError};
pub use crate::transport::{Config, Error, Misbehaviour, StunServers};

/// The browser's WebRTC.
#[derive(Debug, Default, Clone, Copy)]
pub struct Browser;

impl crate::transport::Engine for Browser {
    type Connection = Connection;

    fn handshake(
        &self,
        stream: libp2p::Stream,
        role: Role,
        config: Arc<Config>,
    ) -> BoxFuture<'static, Result<Connection, Error>> {
        SendWrapper::new(run(stream, role, config)).boxed()
    }
}

/// The browser's `/webrtc` transport.
pub type Transport = crate::transport::Transport<Browser>;

fn js_error(error: JsValue) -> Error {
    Error::Signaling(SignalingError::WebRtc(format!("{error:?}")))
}

fn new_peer_connection(config: &Config) -> Result<RtcPeerConnection, Error> {
    let rtc_config = RtcConfiguration::new();
    let servers = js_sys::Array::new();
    let stun = config.stun_servers.get();
    if !stun.is_empty() {
        let server = RtcIceServer::new();
        let urls = js_sys::Array::new();
        for url in &stun {
            urls.push(&JsValue::from_str(url));
        }
        server.set_urls(&urls);
        servers.push(&server);
    }
    // An empty list, not the browser's default: no third-party STUN server.
    rtc_config.set_ice_servers(&servers);
    RtcPeerConnection::new_with_configuration(&rtc_config).map_err(js_error)
}

fn description(kind: RtcSdpType, sdp: &str) -> RtcSessionDescriptionInit {
    let init = RtcSessionDescriptionInit::new(kind);
    init.set_sdp(sdp);
    init
}

fn sdp_of(value: &JsValue) -> Result<String, Error> {
    js_sys::Reflect::get(value, &JsValue::from_str("sdp"))
        .ok()
        .and_then(|sdp| sdp.as_string())
        .ok_or_else(|| Error::Signaling(SignalingError::WebRtc("no SDP in a description".into())))
}

async fn add_remote_candidate(peer_connection: &RtcPeerConnection, candidate: &CandidateInit) {
    let init = RtcIceCandidateInit::new(&format!("candidate:{}", candidate.line()));
    init.set_sdp_mid(candidate.sdp_mid.as_deref().or(Some("0")));
    init.set_sdp_m_line_index(candidate.sdp_mline_index.or(Some(0)));
    let added = JsFuture::from(peer_connection.add_ice_candidate_with_opt_rtc_ice_candidate_init(Some(&init))).await;
    if let Err(error) = added {
        tracing::debug!(?error, "skipping a remote ICE candidate");
    }
}

enum Local {
    Candidate(CandidateInit),
    State(RtcPeerConnectionState),
}

async fn run(stream: libp2p::Stream, role: Role, config: Arc<Config>) -> Result<Connection, Error> {
    let peer_connection = new_peer_connection(&config)?;
    // The muxer takes the remote's channels from the start, so none opened as soon as the
    // connection is up is missed.
    let connection = Connection::new(peer_connection.clone());
    match exchange(stream, role, &peer_connection).await {
        Ok(()) => Ok(connection),
        Err(error) => {
            peer_connection.close();
            Err(error)
        }
    }
}

async fn exchange(stream: libp2p::Stream, role: Role, peer_connection: &RtcPeerConnection) -> Result<(), Error> {
    let (local_tx, mut local) = mpsc::unbounded::<Local>();
    let on_candidate = {
        let tx = local_tx.clone();
        Closure::<dyn FnMut(RtcPeerConnectionIceEvent)>::new(move |event: RtcPeerConnectionIceEvent| {
            let Some(candidate) = event.candidate() else { return };
            if candidate.candidate().is_empty() {
                return;
            }
            let json = js_sys::JSON::stringify(&candidate.to_json()).ok().and_then(|text| text.as_string());
            if let Some(init) = json.and_then(|text| serde_json::from_str::<CandidateInit>(&text).ok()) {
                let _ = tx.unbounded_send(Local::Candidate(init));
            }
        })
    };
    let on_state = {
        let tx = local_tx.clone();
        let pc = peer_connection.clone();
        Closure::<dyn FnMut(Event)>::new(move |_| {
            let _ = tx.unbounded_send(Local::State(pc.connection_state()));
        })
    };
    peer_connection.set_onicecandidate(Some(on_candidate.as_ref().unchecked_ref()));
    // The muxer's own state handler is kept: this one is an event listener beside it.
    peer_connection
        .add_event_listener_with_callback("connectionstatechange", on_state.as_ref().unchecked_ref())
        .map_err(js_error)?;
    let _cleanup = Cleanup { peer_connection: peer_connection.clone(), on_state: Some(on_state) };

    let mut signaler = Signaler::new(stream, role);
    let init_channel = match role {
        Role::Initiator => {
            let channel = peer_connection.create_data_channel(INIT_CHANNEL_LABEL);
            let offer = JsFuture::from(peer_connection.create_offer()).await.map_err(js_error)?;
            let sdp = sdp_of(&offer)?;
            signaler.send(&Signal::Offer(sdp.clone())).await?;
            JsFuture::from(peer_connection.set_local_description(&description(RtcSdpType::Offer, &sdp)))
                .await
                .map_err(js_error)?;
            let answer = match signaler.receive().await? {
                Some(Signal::Answer(sdp)) => sdp,
                Some(_) => return Err(Error::Signaling(SignalingError::BadSdp("expected an answer"))),
                None => return Err(Error::Signaling(SignalingError::Closed)),
            };
            JsFuture::from(peer_connection.set_remote_description(&description(RtcSdpType::Answer, &answer)))
                .await
                .map_err(js_error)?;
            Some(channel)
        }
        Role::Recipient => {
            let offer = match signaler.receive().await? {
                Some(Signal::Offer(sdp)) => sdp,
                Some(_) => return Err(Error::Signaling(SignalingError::BadSdp("expected an offer"))),
                None => return Err(Error::Signaling(SignalingError::Closed)),
            };
            JsFuture::from(peer_connection.set_remote_description(&description(RtcSdpType::Offer, &offer)))
                .await
                .map_err(js_error)?;
            let answer = JsFuture::from(peer_connection.create_answer()).await.map_err(js_error)?;
            let sdp = sdp_of(&answer)?;
            signaler.send(&Signal::Answer(sdp.clone())).await?;
            JsFuture::from(peer_connection.set_local_description(&description(RtcSdpType::Answer, &sdp)))
                .await
                .map_err(js_error)?;
            None
        }
    };

    let mut remote_open = true;
    loop {
        if peer_connection.connection_state() == RtcPeerConnectionState::Connected {
            break;
        }
        futures::select! {
            event = local.next() => match event {
                Some(Local::Candidate(init)) => {
                    if signaler.send(&Signal::Candidate(init)).await.is_err() {
                        tracing::trace!("could not send an ICE candidate");
                    }
                }
                Some(Local::State(RtcPeerConnectionState::Connected)) => break,
                Some(Local::State(RtcPeerConnectionState::Failed)) => return Err(Error::IceFailed),
                Some(Local::State(RtcPeerConnectionState::Closed)) | None => return Err(Error::Closed),
                Some(Local::State(_)) => {}
            },
            signal = receive_if(&mut signaler, remote_open).fuse() => match signal? {
                Some(Signal::Candidate(candidate)) => add_remote_candidate(peer_connection, &candidate).await,
                Some(_) => {}
                None => remote_open = false,
            },
        }
    }
    if let Some(channel) = init_channel {
        // The recipient closes it once it has it; ours closes in turn.
        drop(channel);
    }
    let _ = signaler.close().await;
    Ok(())
}

/// The next signal, or never once the remote closed its side.
async fn receive_if(signaler: &mut Signaler<libp2p::Stream>, open: bool) -> Result<Option<Signal>, SignalingError> {
    if open { signaler.receive().await } else { futures::future::pending().await }
}

/// Unhooks the exchange's callbacks from the peer connection.
struct Cleanup {
    peer_connection: RtcPeerConnection,
    on_state: Option<Closure<dyn FnMut(Event)>>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.peer_connection.set_onicecandidate(None);
        if let Some(on_state) = self.on_state.take() {
            let _ = self
                .peer_connection
                .remove_event_listener_with_callback("connectionstatechange", on_state.as_ref().unchecked_ref());
        }
    }
}
