//! One signaling exchange on `/webrtc-signaling/0.0.1`, as the spec and js-libp2p run it:
//!
//! 1. The initiator (the peer that dialed) sends an `SDP_OFFER`.
//! 2. The recipient answers with an `SDP_ANSWER`.
//! 3. Both trickle `ICE_CANDIDATE`s until their WebRTC connection is up; a candidate of
//!    `null` (or `""`) ends the candidates. Then the stream is closed.
//!
//! [`Session`] checks each received message against that order and against bounds that
//! keep a hostile peer cheap: one offer and one answer, at most [`MAX_CANDIDATES`]
//! candidates, [`MAX_MESSAGES`] messages, [`MAX_MESSAGE_LEN`] bytes each, and SDP that looks
//! like a data-channel session. The caller enforces [`HANDSHAKE_TIMEOUT`]. Any violation
//! ends the exchange with a [`SignalingError`], and the caller should drop the peer.

use std::time::Duration;

use asynchronous_codec::Framed;
use futures::{AsyncRead, AsyncWrite, SinkExt, StreamExt};
use serde::{Deserialize, Serialize};

use crate::proto::{Message, MessageType};

/// The largest signaling message we read or write. SDP of a data-channel-only session is
/// well under 2 KiB; a browser's offer with inline candidates stays under 8 KiB.
pub const MAX_MESSAGE_LEN: usize = 16 * 1024;
/// The most ICE candidates a peer may send in one exchange (a browser with a few
/// interfaces and one STUN server sends under 20).
pub const MAX_CANDIDATES: usize = 64;
/// The most messages a peer may send in one exchange.
pub const MAX_MESSAGES: usize = MAX_CANDIDATES + 8;
/// The longest candidate line we accept.
pub const MAX_CANDIDATE_LEN: usize = 512;
/// How long an exchange may take, from the stream's opening to a connected WebRTC
/// connection (ICE checks included).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

/// What went wrong in an exchange. Every variant but [`SignalingError::Io`] and
/// [`SignalingError::Closed`] means the remote broke the protocol.
#[derive(Debug, thiserror::Error)]
pub enum SignalingError {
    /// Reading or writing the stream failed.
    #[error("signaling stream: {0}")]
    Io(#[from] std::io::Error),
    /// The remote closed the stream before the exchange was done.
    #[error("the signaling stream closed before the connection was up")]
    Closed,
    /// A message of no known type.
    #[error("signaling message of unknown type {0:?}")]
    UnknownType(Option<i32>),
    /// A message out of the exchange's order (a second offer, a candidate before the SDP, ...).
    #[error("unexpected {got:?} while waiting for {expected}")]
    Unexpected { got: MessageType, expected: &'static str },
    /// SDP that is not a data-channel session description.
    #[error("malformed SDP: {0}")]
    BadSdp(&'static str),
    /// A candidate that is not the JSON of an `RTCIceCandidateInit`.
    #[error("malformed ICE candidate: {0}")]
    BadCandidate(String),
    /// More candidates or messages than one exchange needs.
    #[error("too many signaling messages ({0})")]
    Flood(&'static str),
    /// The exchange did not finish in [`HANDSHAKE_TIMEOUT`].
    #[error("the WebRTC handshake timed out")]
    Timeout,
    /// The local WebRTC stack refused (a description or candidate it cannot use).
    #[error("WebRTC: {0}")]
    WebRtc(String),
}

impl SignalingError {
    /// Whether the remote broke the protocol (as opposed to a network failure or a
    /// failed ICE check), so that it should be dropped.
    pub fn is_misbehaviour(&self) -> bool {
        matches!(
            self,
            Self::UnknownType(_) | Self::Unexpected { .. } | Self::BadSdp(_) | Self::BadCandidate(_) | Self::Flood(_)
        )
    }
}

/// An ICE candidate as `RTCIceCandidate.toJSON()` gives it (`RTCIceCandidateInit`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CandidateInit {
    /// The `candidate:...` line.
    pub candidate: String,
    /// The media section's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    /// The media section's index.
    #[serde(default, rename = "sdpMLineIndex", skip_serializing_if = "Option::is_none")]
    pub sdp_mline_index: Option<u16>,
    /// The ICE username fragment it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_fragment: Option<String>,
}

impl CandidateInit {
    /// The candidate itself, without the `a=` and `candidate:` prefixes some stacks write.
    pub fn line(&self) -> &str {
        let line = self.candidate.strip_prefix("a=").unwrap_or(&self.candidate);
        line.strip_prefix("candidate:").unwrap_or(line)
    }
}

/// A message of the exchange, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signal {
    /// The initiator's SDP offer.
    Offer(String),
    /// The recipient's SDP answer.
    Answer(String),
    /// A trickled candidate.
    Candidate(CandidateInit),
    /// No more candidates (a JSON `null`, or `""` for the end of a generation).
    EndOfCandidates,
}

impl Signal {
    /// The wire form.
    pub fn to_message(&self) -> Message {
        let (kind, data) = match self {
            Self::Offer(sdp) => (MessageType::SdpOffer, sdp.clone()),
            Self::Answer(sdp) => (MessageType::SdpAnswer, sdp.clone()),
            Self::Candidate(candidate) => {
                (MessageType::IceCandidate, serde_json::to_string(candidate).unwrap_or_else(|_| "null".to_owned()))
            }
            Self::EndOfCandidates => (MessageType::IceCandidate, "null".to_owned()),
        };
        Message { r#type: Some(kind as i32), data: Some(data) }
    }

    /// Reads a wire message, checking its content (not yet its place in the exchange).
    pub fn from_message(message: Message) -> Result<Self, SignalingError> {
        let kind = message
            .r#type
            .and_then(|kind| MessageType::try_from(kind).ok())
            .ok_or(SignalingError::UnknownType(message.r#type))?;
        match kind {
            MessageType::SdpOffer => Ok(Self::Offer(check_sdp(message.data)?)),
            MessageType::SdpAnswer => Ok(Self::Answer(check_sdp(message.data)?)),
            MessageType::IceCandidate => parse_candidate(message.data.as_deref().unwrap_or("null")),
        }
    }
}

fn check_sdp(data: Option<String>) -> Result<String, SignalingError> {
    let sdp = data.ok_or(SignalingError::BadSdp("no SDP"))?;
    if !sdp.starts_with("v=0") {
        return Err(SignalingError::BadSdp("it does not start with v=0"));
    }
    if sdp.contains('\0') {
        return Err(SignalingError::BadSdp("it holds a NUL byte"));
    }
    if !sdp.lines().any(|line| line.starts_with("m=application")) {
        return Err(SignalingError::BadSdp("no data-channel (m=application) section"));
    }
    if !sdp.lines().any(|line| line.starts_with("a=fingerprint:")) {
        return Err(SignalingError::BadSdp("no DTLS fingerprint"));
    }
    if !sdp.lines().any(|line| line.starts_with("a=ice-ufrag:")) {
        return Err(SignalingError::BadSdp("no ICE credentials"));
    }
    Ok(sdp)
}

fn parse_candidate(data: &str) -> Result<Signal, SignalingError> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Json {
        Candidate(CandidateInit),
        Text(String),
    }
    let parsed: Option<Json> =
        serde_json::from_str(data).map_err(|error| SignalingError::BadCandidate(error.to_string()))?;
    match parsed {
        None => Ok(Signal::EndOfCandidates),
        Some(Json::Text(text)) if text.is_empty() => Ok(Signal::EndOfCandidates),
        Some(Json::Text(_)) => Err(SignalingError::BadCandidate("a string where a candidate was expected".into())),
        // An empty candidate line is the end of one generation of candidates.
        Some(Json::Candidate(candidate)) if candidate.candidate.is_empty() => Ok(Signal::EndOfCandidates),
        Some(Json::Candidate(candidate)) => {
            if candidate.candidate.len() > MAX_CANDIDATE_LEN {
                return Err(SignalingError::BadCandidate("candidate line too long".into()));
            }
            let line = candidate.line();
            // foundation component transport priority address port "typ" type ...
            let fields: Vec<&str> = line.split_ascii_whitespace().collect();
            let well_formed = fields.len() >= 8
                && fields[1].parse::<u16>().is_ok()
                && fields[3].parse::<u32>().is_ok()
                && fields[5].parse::<u16>().is_ok()
                && fields[6] == "typ";
            if !well_formed {
                return Err(SignalingError::BadCandidate(format!("not a candidate line: {line:.80}")));
            }
            Ok(Signal::Candidate(candidate))
        }
    }
}

/// Which side of the exchange we are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// We dialed: we send the offer.
    Initiator,
    /// We were dialed: we answer.
    Recipient,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    AwaitSdp,
    Candidates,
}

/// The received half of one exchange: what may come next, and how much has come.
#[derive(Debug)]
pub struct Session {
    role: Role,
    stage: Stage,
    messages: usize,
    candidates: usize,
}

impl Session {
    /// A new exchange. An initiator has sent (or is about to send) its offer.
    pub fn new(role: Role) -> Self {
        Self { role, stage: Stage::AwaitSdp, messages: 0, candidates: 0 }
    }

    /// Our role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Checks a received message against the exchange so far.
    pub fn receive(&mut self, message: Message) -> Result<Signal, SignalingError> {
        self.messages += 1;
        if self.messages > MAX_MESSAGES {
            return Err(SignalingError::Flood("messages"));
        }
        let signal = Signal::from_message(message)?;
        let got = match &signal {
            Signal::Offer(_) => MessageType::SdpOffer,
            Signal::Answer(_) => MessageType::SdpAnswer,
            Signal::Candidate(_) | Signal::EndOfCandidates => MessageType::IceCandidate,
        };
        match (self.stage, self.role, &signal) {
            (Stage::AwaitSdp, Role::Recipient, Signal::Offer(_))
            | (Stage::AwaitSdp, Role::Initiator, Signal::Answer(_)) => {
                self.stage = Stage::Candidates;
            }
            (Stage::AwaitSdp, Role::Recipient, _) => {
                return Err(SignalingError::Unexpected { got, expected: "an SDP offer" });
            }
            (Stage::AwaitSdp, Role::Initiator, _) => {
                return Err(SignalingError::Unexpected { got, expected: "an SDP answer" });
            }
            (Stage::Candidates, _, Signal::Candidate(_)) => {
                self.candidates += 1;
                if self.candidates > MAX_CANDIDATES {
                    return Err(SignalingError::Flood("ICE candidates"));
                }
            }
            (Stage::Candidates, _, Signal::EndOfCandidates) => {}
            (Stage::Candidates, _, _) => return Err(SignalingError::Unexpected { got, expected: "ICE candidates" }),
        }
        Ok(signal)
    }
}

/// A signaling stream: length-prefixed [`Message`]s in both directions, received through a
/// [`Session`].
#[derive(Debug)]
pub struct Signaler<S> {
    framed: Framed<S, prost_codec::Codec<Message, Message>>,
    session: Session,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Signaler<S> {
    /// Starts an exchange on `stream`.
    pub fn new(stream: S, role: Role) -> Self {
        Self { framed: Framed::new(stream, prost_codec::Codec::new(MAX_MESSAGE_LEN)), session: Session::new(role) }
    }

    /// Our role.
    pub fn role(&self) -> Role {
        self.session.role()
    }

    /// Sends one message.
    pub async fn send(&mut self, signal: &Signal) -> Result<(), SignalingError> {
        self.framed.send(signal.to_message()).await.map_err(|error| SignalingError::Io(error.into()))
    }

    /// Receives the next message, checked against the exchange. `Ok(None)` when the remote
    /// closed the stream.
    pub async fn receive(&mut self) -> Result<Option<Signal>, SignalingError> {
        match self.framed.next().await {
            None => Ok(None),
            Some(Err(error)) => {
                let error: std::io::Error = error.into();
                if error.kind() == std::io::ErrorKind::InvalidData {
                    Err(SignalingError::Flood("an oversized or malformed message"))
                } else {
                    Err(SignalingError::Io(error))
                }
            }
            Some(Ok(message)) => self.session.receive(message).map(Some),
        }
    }

    /// Closes our side of the stream.
    pub async fn close(&mut self) -> Result<(), SignalingError> {
        self.framed.close().await.map_err(|error| SignalingError::Io(error.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    /// Byte fixtures written by js-libp2p's own encoder (`@libp2p/webrtc` 6.0.33, protons),
    /// length prefix included: see `tests/fixtures/README.md`.
    fn fixture(name: &str) -> Vec<u8> {
        let text = match name {
            "offer" => include_str!("../tests/fixtures/offer.hex"),
            "answer" => include_str!("../tests/fixtures/answer.hex"),
            "candidate" => include_str!("../tests/fixtures/candidate.hex"),
            "end" => include_str!("../tests/fixtures/end-of-candidates.hex"),
            _ => unreachable!("no fixture {name}"),
        };
        hex::decode(text.trim()).expect("fixture hex")
    }

    fn decode_framed(bytes: &[u8]) -> Message {
        let mut buf = bytes;
        let len = prost::encoding::decode_varint(&mut buf).expect("length prefix");
        assert_eq!(len as usize, buf.len(), "one whole message");
        Message::decode(buf).expect("protobuf")
    }

    fn encode_framed(message: &Message) -> Vec<u8> {
        message.encode_length_delimited_to_vec()
    }

    #[test]
    fn js_libp2p_messages_decode_and_encode_byte_for_byte() {
        let offer = decode_framed(&fixture("offer"));
        let Signal::Offer(sdp) = Signal::from_message(offer.clone()).expect("valid offer") else { panic!("an offer") };
        assert!(sdp.contains("a=sctp-port:5000"));
        assert_eq!(encode_framed(&Signal::Offer(sdp).to_message()), fixture("offer"));

        let answer = decode_framed(&fixture("answer"));
        assert!(matches!(Signal::from_message(answer), Ok(Signal::Answer(_))));

        let candidate = decode_framed(&fixture("candidate"));
        let Signal::Candidate(init) = Signal::from_message(candidate).expect("valid candidate") else {
            panic!("a candidate")
        };
        // node-datachannel writes the SDP attribute form, `a=candidate:...`, and nulls.
        assert_eq!(init.sdp_mid.as_deref(), Some("0"));
        assert_eq!(init.sdp_mline_index, None);
        assert_eq!(init.candidate, "a=candidate:2 1 UDP 2116026111 192.0.2.10 50000 typ host");
        assert_eq!(init.line(), "2 1 UDP 2116026111 192.0.2.10 50000 typ host");
        let again = decode_framed(&encode_framed(&Signal::Candidate(init.clone()).to_message()));
        assert_eq!(Signal::from_message(again).expect("our encoding"), Signal::Candidate(init));

        let end = decode_framed(&fixture("end"));
        assert_eq!(Signal::from_message(end).expect("end"), Signal::EndOfCandidates);
        assert_eq!(encode_framed(&Signal::EndOfCandidates.to_message()), fixture("end"));
    }

    fn message(kind: Option<i32>, data: Option<&str>) -> Message {
        Message { r#type: kind, data: data.map(str::to_owned) }
    }

    fn offer() -> Message {
        decode_framed(&fixture("offer"))
    }

    fn answer() -> Message {
        decode_framed(&fixture("answer"))
    }

    fn candidate() -> Message {
        decode_framed(&fixture("candidate"))
    }

    #[test]
    fn a_recipient_takes_one_offer_then_candidates() {
        let mut session = Session::new(Role::Recipient);
        assert!(matches!(session.receive(offer()), Ok(Signal::Offer(_))));
        assert!(matches!(session.receive(candidate()), Ok(Signal::Candidate(_))));
        assert!(matches!(session.receive(message(Some(2), Some("null"))), Ok(Signal::EndOfCandidates)));
        assert!(matches!(session.receive(message(Some(2), Some("\"\""))), Ok(Signal::EndOfCandidates)));
        assert!(matches!(session.receive(message(Some(2), None)), Ok(Signal::EndOfCandidates)));
        let again = session.receive(offer()).expect_err("a second offer");
        assert!(again.is_misbehaviour(), "{again}");
    }

    #[test]
    fn an_initiator_takes_an_answer_first() {
        let mut session = Session::new(Role::Initiator);
        let early = session.receive(candidate()).expect_err("a candidate before the answer");
        assert!(matches!(early, SignalingError::Unexpected { .. }));
        let mut session = Session::new(Role::Initiator);
        assert!(session.receive(offer()).is_err(), "an offer to the initiator");
        let mut session = Session::new(Role::Initiator);
        assert!(matches!(session.receive(answer()), Ok(Signal::Answer(_))));
    }

    #[test]
    fn garbage_is_refused_as_misbehaviour() {
        let cases = [
            message(None, Some("v=0")),
            message(Some(7), Some("v=0")),
            message(Some(0), None),
            message(Some(0), Some("hello")),
            message(Some(0), Some("v=0\r\nm=audio 9 RTP 0\r\n")),
            message(Some(0), Some("v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n")),
        ];
        for case in cases {
            let mut session = Session::new(Role::Recipient);
            let error = session.receive(case.clone()).expect_err("garbage");
            assert!(error.is_misbehaviour(), "{case:?}: {error}");
        }
        for data in ["{", "42", "\"candidate\"", "{\"candidate\":\"nonsense\"}", "{\"sdpMid\":\"0\"}"] {
            let mut session = Session::new(Role::Recipient);
            session.receive(offer()).expect("offer");
            let error = session.receive(message(Some(2), Some(data))).expect_err(data);
            assert!(error.is_misbehaviour(), "{data}: {error}");
        }
        let long = format!("{{\"candidate\":\"candidate:{}\"}}", "1".repeat(MAX_CANDIDATE_LEN));
        let mut session = Session::new(Role::Recipient);
        session.receive(offer()).expect("offer");
        assert!(session.receive(message(Some(2), Some(&long))).is_err());
    }

    #[test]
    fn candidate_floods_end_the_exchange() {
        let mut session = Session::new(Role::Recipient);
        session.receive(offer()).expect("offer");
        for _ in 0..MAX_CANDIDATES {
            session.receive(candidate()).expect("within the bound");
        }
        let error = session.receive(candidate()).expect_err("one too many");
        assert!(matches!(error, SignalingError::Flood(_)));

        let mut session = Session::new(Role::Recipient);
        session.receive(offer()).expect("offer");
        let mut result = Ok(Signal::EndOfCandidates);
        for _ in 0..=MAX_MESSAGES {
            result = session.receive(message(Some(2), Some("null")));
            if result.is_err() {
                break;
            }
        }
        assert!(matches!(result, Err(SignalingError::Flood(_))), "endless end-of-candidates");
    }

    #[test]
    fn oversized_messages_are_refused_before_they_are_read() {
        futures::executor::block_on(async {
            let big = Message { r#type: Some(0), data: Some(format!("v=0{}", "x".repeat(MAX_MESSAGE_LEN))) };
            let bytes = encode_framed(&big);
            let mut signaler = Signaler::new(futures::io::Cursor::new(bytes), Role::Recipient);
            let error = signaler.receive().await.expect_err("too big");
            assert!(error.is_misbehaviour(), "{error}");

            let mut bytes = fixture("offer");
            bytes.extend(fixture("candidate"));
            let mut signaler = Signaler::new(futures::io::Cursor::new(bytes), Role::Recipient);
            assert!(matches!(signaler.receive().await, Ok(Some(Signal::Offer(_)))));
            assert!(matches!(signaler.receive().await, Ok(Some(Signal::Candidate(_)))));
            assert!(matches!(signaler.receive().await, Ok(None)));
        });
    }
}
