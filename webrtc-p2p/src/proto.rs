//! The signaling message of the libp2p WebRTC spec (`webrtc/pb/message.proto`):
//!
//! ```protobuf
//! syntax = "proto3";
//! message Message {
//!   enum Type {
//!     SDP_OFFER = 0;      // RTCSessionDescription.sdp
//!     SDP_ANSWER = 1;     // RTCSessionDescription.sdp
//!     ICE_CANDIDATE = 2;  // JSON of RTCIceCandidate.toJSON(), or null
//!   }
//!   optional Type type = 1;
//!   optional string data = 2;
//! }
//! ```
//!
//! Messages travel with an unsigned-varint length prefix.

/// One signaling message.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Message {
    /// A [`MessageType`].
    #[prost(enumeration = "MessageType", optional, tag = "1")]
    pub r#type: Option<i32>,
    /// The SDP, or the candidate's JSON.
    #[prost(string, optional, tag = "2")]
    pub data: Option<String>,
}

/// What a [`Message`] carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MessageType {
    /// An SDP offer.
    SdpOffer = 0,
    /// An SDP answer.
    SdpAnswer = 1,
    /// An ICE candidate (trickled).
    IceCandidate = 2,
}
