//! Private lists: the capability scheme, session proofs, content encryption, sealed keys,
//! invites and invite links.
//!
//! ## Keys and what each derives
//!
//! A private list is made of random secrets, never of a name:
//!
//! - `root` (32 random bytes, kept by the creating device) derives the replication secret
//!   and content key 0.
//! - `replicate` = H("hellopears/list/replicate/v1" ‖ root): the **replication capability**.
//!   With the owner's writer key it derives the **list id** (which every entry signature
//!   names), the **discovery key** (the only thing announced), the **auth key** (session
//!   proofs) and the **membership key** (membership operations). It lets a device find,
//!   store, verify and serve the list's entries, and read who the members are, but not
//!   one todo: this is what a blind peer holds.
//! - **content keys**, one per epoch (key 0 from `root`, each later one chosen by the member
//!   who removed someone): every todo operation is encrypted (XChaCha20-Poly1305) under the
//!   newest content key its writer knew. Members receive every content key sealed to their
//!   device key (X25519 on the same ed25519 key) in the membership log, so a removed member
//!   never learns keys chosen after its removal.
//! - **invites**: one random secret each, whose signing key the membership log records with
//!   the role it grants and its expiry. The joiner signs its device key with it; a member's
//!   peer writes the admission; an invite admits one device, once.
//!
//! The **read capability** is the replication capability plus the content keys; the
//! **write capability** is an admission as a writer in the membership log.
//!
//! Session proofs are HMAC-SHA256 under the auth key over both Noise-authenticated peer ids
//! (prover first), so a proof cannot be replayed to another peer or by another peer.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, XChaCha20Poly1305};
use curve25519_dalek::montgomery::MontgomeryPoint;
use hmac::Mac;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::keys::{Hash, Keypair, WriterId, verify_tagged};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// A 32-byte secret (zeroed when dropped).
pub type Secret = Zeroizing<[u8; 32]>;

/// What a device may do in a private list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Created the list: writes, invites, removes; cannot be removed.
    Owner,
    /// Reads and writes todos, invites and removes members.
    Writer,
    /// Reads and syncs; every replica ignores its writes.
    ReadOnly,
    /// Stores, verifies and serves the encrypted entries; reads nothing.
    Blind,
}

impl Role {
    /// Whether this role may write todos and change the membership.
    pub fn can_write(self) -> bool {
        matches!(self, Role::Owner | Role::Writer)
    }

    /// Whether this role receives the content keys.
    pub fn can_read(self) -> bool {
        !matches!(self, Role::Blind)
    }

    /// The word UIs show.
    pub fn label(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Writer => "writer",
            Role::ReadOnly => "read-only",
            Role::Blind => "blind",
        }
    }
}

/// What a device holds of a private list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Capability {
    /// The root secret (the creating device): derives everything.
    Root([u8; 32]),
    /// The replication secret (every other device; content keys come sealed in the log).
    Replicate([u8; 32]),
}

impl Capability {
    /// The replication secret.
    pub fn replicate(&self) -> [u8; 32] {
        match self {
            Capability::Root(root) => derive(b"hellopears/list/replicate/v1", &[root]),
            Capability::Replicate(secret) => *secret,
        }
    }

    /// Content key 0, if this capability holds it.
    pub fn first_content_key(&self) -> Option<[u8; 32]> {
        match self {
            Capability::Root(root) => Some(derive(b"hellopears/list/content/0/v1", &[root])),
            Capability::Replicate(_) => None,
        }
    }
}

fn derive(domain: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut all: Vec<&[u8]> = Vec::with_capacity(parts.len() + 1);
    all.push(domain);
    all.extend_from_slice(parts);
    Hash::digest_parts(&all).0
}

/// The keys a replication secret derives for one list.
#[derive(Clone)]
pub struct ListKeys {
    /// The list id (names the list in every entry signature).
    pub id: [u8; 32],
    /// The discovery key (announced, looked up).
    pub discovery: [u8; 32],
    auth: Secret,
    membership: Secret,
    /// The device that created the list.
    pub owner: WriterId,
}

impl std::fmt::Debug for ListKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListKeys").field("id", &hex::encode(&self.id[..8])).finish_non_exhaustive()
    }
}

impl PartialEq for ListKeys {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}
impl Eq for ListKeys {}

impl ListKeys {
    /// Derives the keys of the list created by `owner` with this capability.
    pub fn derive(capability: &Capability, owner: WriterId) -> Self {
        let replicate = Zeroizing::new(capability.replicate());
        let id = derive(b"hellopears/list/id/v1", &[replicate.as_slice(), &owner.0]);
        Self {
            id,
            discovery: derive(b"hellopears/list/discovery/v1", &[&id]),
            auth: Zeroizing::new(derive(b"hellopears/list/auth/v1", &[replicate.as_slice(), &id])),
            membership: Zeroizing::new(derive(b"hellopears/list/members/v1", &[replicate.as_slice(), &id])),
            owner,
        }
    }

    /// The proof that `prover` holds this list, for the session between `prover` and
    /// `verifier` (their Noise-authenticated peer ids).
    pub fn session_proof(&self, prover: &[u8], verifier: &[u8]) -> [u8; 32] {
        // HMAC pads a key shorter than its block with zeros: padding it here is the same key.
        let mut block = Zeroizing::new([0u8; 64]);
        block[..32].copy_from_slice(self.auth.as_slice());
        let mut mac = <HmacSha256 as hmac::KeyInit>::new(&(*block).into());
        for part in [b"hellopears/session-proof/v1".as_slice(), &self.id, prover, verifier] {
            mac.update(&(part.len() as u64).to_le_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// Checks a proof received from `prover` in our session with it (constant time).
    pub fn check_session_proof(&self, proof: &[u8; 32], prover: &[u8], verifier: &[u8]) -> Result<(), AccessError> {
        let expected = self.session_proof(prover, verifier);
        let mut diff = 0u8;
        for (a, b) in expected.iter().zip(proof) {
            diff |= a ^ b;
        }
        if diff == 0 { Ok(()) } else { Err(AccessError::BadProof) }
    }

    /// The key the list's peers meet under in a public DHT during time window `window`:
    /// derived from the list's secret (every member, blind ones included, holds it), so an
    /// observer of the DHT cannot tell which list a key is for, nor link the keys of one
    /// list across windows.
    pub fn rendezvous(&self, window: u64) -> [u8; 32] {
        derive(b"hellopears/list/rendezvous/v1", &[self.auth.as_slice(), &self.id, &window.to_be_bytes()])
    }

    /// Encrypts a membership operation for the entry (writer, seq).
    pub fn seal_membership(&self, writer: &WriterId, seq: u64, plaintext: &[u8]) -> Vec<u8> {
        Envelope::seal(EnvelopeKind::Membership, [0; 8], &self.membership, &self.id, writer, seq, plaintext)
    }

    /// Decrypts a membership operation.
    pub fn open_membership(&self, envelope: &Envelope, writer: &WriterId, seq: u64) -> Result<Vec<u8>, AccessError> {
        if envelope.kind != EnvelopeKind::Membership {
            return Err(AccessError::WrongKey);
        }
        envelope.open(&self.membership, &self.id, writer, seq)
    }
}

/// Why a capability check failed. Each cause has its own error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AccessError {
    /// A session proof does not check: the peer does not hold the list (or replays a proof
    /// made for another session).
    #[error("the peer did not prove it holds this list")]
    BadProof,
    /// Ciphertext does not open with the key it names: a wrong key or tampered bytes.
    #[error("wrong key, or the ciphertext was tampered with")]
    WrongKey,
    /// The content key an entry names is not one we hold.
    #[error("content key {0} is not held here")]
    UnknownKey(String),
    /// The envelope bytes are malformed.
    #[error("malformed encrypted payload")]
    Malformed,
    /// A sealed key does not open with this device's key.
    #[error("the sealed key is not for this device")]
    NotForUs,
    /// An invite proof does not check.
    #[error("the invite proof is invalid")]
    BadInviteProof,
    /// The invite is not in the list's membership log.
    #[error("unknown invite")]
    UnknownInvite,
    /// The invite admitted a device already.
    #[error("this invite was already used")]
    InviteUsed,
    /// The joining device is a member already (its request came again).
    #[error("this device is a member already")]
    AlreadyMember,
    /// The invite expired.
    #[error("this invite expired")]
    InviteExpired,
    /// The writer is not a member allowed to do this.
    #[error("{0} is not allowed to do this in this list")]
    NotAllowed(String),
    /// This device may read but not write (read-only, blind).
    #[error("this device is {0} in this list: it cannot write")]
    CannotWrite(&'static str),
    /// This device is not a member (removed, or not yet admitted).
    #[error("this device is not a member of this list (removed, or not yet admitted)")]
    NotAMember,
    /// An invite link does not parse.
    #[error("not an invite link: {0}")]
    BadLink(String),
}

/// A content key with its id (the first 8 bytes of its hash).
#[derive(Clone)]
pub struct ContentKey {
    /// The key id entries name.
    pub id: [u8; 8],
    key: Secret,
}

impl std::fmt::Debug for ContentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ContentKey({})", hex::encode(self.id))
    }
}

impl ContentKey {
    /// Wraps key bytes.
    pub fn new(key: [u8; 32]) -> Self {
        let digest = Hash::digest_parts(&[b"hellopears/content-key-id/v1", &key]);
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest.0[..8]);
        Self { id, key: Zeroizing::new(key) }
    }

    /// The key bytes.
    pub fn bytes(&self) -> [u8; 32] {
        *self.key
    }

    /// The next key, chosen by `remover` when it removes a member: unpredictable to anyone
    /// without the remover's secret, and the same however often it is computed.
    pub fn rotate(&self, remover: &Keypair, list: &[u8; 32], removed: &WriterId) -> Self {
        let secret = remover.secret();
        Self::new(derive(b"hellopears/content-key/rotate/v1", &[secret.as_slice(), list, &self.key[..], &removed.0]))
    }

    /// Encrypts a todo operation for the entry (writer, seq).
    pub fn seal(&self, list: &[u8; 32], writer: &WriterId, seq: u64, plaintext: &[u8]) -> Vec<u8> {
        Envelope::seal(EnvelopeKind::Content, self.id, &self.key, list, writer, seq, plaintext)
    }

    /// Encrypts a display name operation for the entry (writer, seq).
    pub fn seal_name(&self, list: &[u8; 32], writer: &WriterId, seq: u64, plaintext: &[u8]) -> Vec<u8> {
        Envelope::seal(EnvelopeKind::Name, self.id, &self.key, list, writer, seq, plaintext)
    }

    /// Decrypts a todo operation or a display name (as its envelope says).
    pub fn open(
        &self,
        envelope: &Envelope,
        list: &[u8; 32],
        writer: &WriterId,
        seq: u64,
    ) -> Result<Vec<u8>, AccessError> {
        if envelope.kind == EnvelopeKind::Membership || envelope.key_id != self.id {
            return Err(AccessError::WrongKey);
        }
        envelope.open(&self.key, list, writer, seq)
    }
}

/// What an encrypted payload holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnvelopeKind {
    /// A membership operation, under the membership key.
    Membership,
    /// A todo operation, under a content key.
    Content,
    /// A member's display name ([`crate::list::MemberOp::Name`]), under a content key, so
    /// only members who read the list read names (blind members do not).
    Name,
}

/// An entry payload of a private list: `kind ‖ key id (8) ‖ nonce (24) ‖ ciphertext`.
/// The associated data binds it to its list and its place (writer, seq), so it cannot be
/// moved; the nonce is synthetic (a hash of the key, the place and the plaintext), so the
/// core needs no randomness and a nonce repeats only for the same plaintext at the same place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// What it holds.
    pub kind: EnvelopeKind,
    /// The content key it names (zero for membership operations).
    pub key_id: [u8; 8],
    nonce: [u8; 24],
    ciphertext: Vec<u8>,
}

const ENVELOPE_HEADER: usize = 1 + 8 + 24;

impl Envelope {
    fn seal(
        kind: EnvelopeKind,
        key_id: [u8; 8],
        key: &[u8; 32],
        list: &[u8; 32],
        writer: &WriterId,
        seq: u64,
        plaintext: &[u8],
    ) -> Vec<u8> {
        let tag = kind_byte(kind);
        let digest = Hash::digest_parts(&[b"hellopears/nonce/v1", key, list, &writer.0, &seq.to_le_bytes(), plaintext]);
        let mut nonce = [0u8; 24];
        nonce.copy_from_slice(&digest.0[..24]);
        let aad = associated_data(tag, &key_id, list, writer, seq);
        let cipher = XChaCha20Poly1305::new(key.into());
        let ciphertext = cipher.encrypt((&nonce).into(), Payload { msg: plaintext, aad: &aad }).unwrap_or_default();
        let mut out = Vec::with_capacity(ENVELOPE_HEADER + ciphertext.len());
        out.push(tag);
        out.extend_from_slice(&key_id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    /// Parses an entry payload.
    pub fn parse(payload: &[u8]) -> Result<Self, AccessError> {
        if payload.len() < ENVELOPE_HEADER + 16 {
            return Err(AccessError::Malformed);
        }
        let kind = match payload[0] {
            1 => EnvelopeKind::Membership,
            2 => EnvelopeKind::Content,
            3 => EnvelopeKind::Name,
            _ => return Err(AccessError::Malformed),
        };
        let mut key_id = [0u8; 8];
        key_id.copy_from_slice(&payload[1..9]);
        let mut nonce = [0u8; 24];
        nonce.copy_from_slice(&payload[9..ENVELOPE_HEADER]);
        Ok(Self { kind, key_id, nonce, ciphertext: payload[ENVELOPE_HEADER..].to_vec() })
    }

    fn open(&self, key: &[u8; 32], list: &[u8; 32], writer: &WriterId, seq: u64) -> Result<Vec<u8>, AccessError> {
        let aad = associated_data(kind_byte(self.kind), &self.key_id, list, writer, seq);
        let cipher = XChaCha20Poly1305::new(key.into());
        cipher
            .decrypt((&self.nonce).into(), Payload { msg: &self.ciphertext, aad: &aad })
            .map_err(|_| AccessError::WrongKey)
    }
}

fn kind_byte(kind: EnvelopeKind) -> u8 {
    match kind {
        EnvelopeKind::Membership => 1,
        EnvelopeKind::Content => 2,
        EnvelopeKind::Name => 3,
    }
}

fn associated_data(tag: u8, key_id: &[u8; 8], list: &[u8; 32], writer: &WriterId, seq: u64) -> Vec<u8> {
    let mut aad = Vec::with_capacity(1 + 8 + 32 + 32 + 8);
    aad.push(tag);
    aad.extend_from_slice(key_id);
    aad.extend_from_slice(list);
    aad.extend_from_slice(&writer.0);
    aad.extend_from_slice(&seq.to_le_bytes());
    aad
}

/// A content key sealed to one device: an ephemeral X25519 key and the encrypted key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    ephemeral: [u8; 32],
    ciphertext: Vec<u8>,
}

impl Sealed {
    /// Seals `key` to `recipient`'s device key. The ephemeral secret is derived from the
    /// sender's secret and the inputs, so the core needs no randomness.
    pub fn seal(
        sender: &Keypair,
        recipient: &WriterId,
        key: &ContentKey,
        list: &[u8; 32],
    ) -> Result<Self, AccessError> {
        let recipient_point = recipient.verifying_key().map_err(|_| AccessError::NotForUs)?.to_montgomery();
        let secret = sender.secret();
        let ephemeral_secret = Zeroizing::new(derive(
            b"hellopears/seal/ephemeral/v1",
            &[secret.as_slice(), &recipient.0, &key.key[..], list],
        ));
        let ephemeral = MontgomeryPoint::mul_base_clamped(*ephemeral_secret);
        let shared = recipient_point.mul_clamped(*ephemeral_secret);
        let wrap = seal_key(&shared, &ephemeral, &recipient_point)?;
        let cipher = ChaCha20Poly1305::new((&*wrap).into());
        let ciphertext = cipher
            .encrypt((&[0u8; 12]).into(), Payload { msg: &key.key[..], aad: list })
            .map_err(|_| AccessError::Malformed)?;
        Ok(Self { ephemeral: ephemeral.to_bytes(), ciphertext })
    }

    /// Opens a key sealed to `device`.
    pub fn open(&self, device: &Keypair, list: &[u8; 32]) -> Result<ContentKey, AccessError> {
        let own_point = device.id().verifying_key().map_err(|_| AccessError::NotForUs)?.to_montgomery();
        let ephemeral = MontgomeryPoint(self.ephemeral);
        let shared = ephemeral.mul_clamped(*device.x25519_secret());
        let wrap = seal_key(&shared, &ephemeral, &own_point)?;
        let cipher = ChaCha20Poly1305::new((&*wrap).into());
        let bytes = cipher
            .decrypt((&[0u8; 12]).into(), Payload { msg: &self.ciphertext, aad: list })
            .map_err(|_| AccessError::NotForUs)?;
        let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| AccessError::Malformed)?;
        Ok(ContentKey::new(key))
    }
}

fn seal_key(
    shared: &MontgomeryPoint,
    ephemeral: &MontgomeryPoint,
    recipient: &MontgomeryPoint,
) -> Result<Secret, AccessError> {
    if shared.to_bytes() == [0; 32] {
        // A low-order point: no shared secret.
        return Err(AccessError::NotForUs);
    }
    Ok(Zeroizing::new(derive(
        b"hellopears/seal/key/v1",
        &[shared.as_bytes(), ephemeral.as_bytes(), recipient.as_bytes()],
    )))
}

/// An invite: a one-time secret whose signing key the membership log records.
#[derive(Clone)]
pub struct Invite {
    secret: Secret,
}

impl std::fmt::Debug for Invite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invite").field("key", &self.key().short()).finish()
    }
}

const JOIN_DOMAIN: &[u8] = b"hellopears/join/v1";

impl Invite {
    /// An invite from 32 random bytes.
    pub fn from_secret(secret: [u8; 32]) -> Self {
        Self { secret: Zeroizing::new(secret) }
    }

    /// The secret (for the link).
    pub fn secret(&self) -> [u8; 32] {
        *self.secret
    }

    fn keypair(&self) -> Keypair {
        Keypair::from_secret(derive(b"hellopears/invite/v1", &[self.secret.as_slice()]))
    }

    /// The public key the membership log records for this invite.
    pub fn key(&self) -> WriterId {
        self.keypair().id()
    }

    /// The joiner's proof: the invite key signs the list, the joining device and its name.
    pub fn prove(&self, list: &[u8; 32], device: &WriterId, name: &str) -> [u8; 64] {
        self.keypair().sign_tagged(JOIN_DOMAIN, &join_message(list, device, name))
    }
}

fn join_message(list: &[u8; 32], device: &WriterId, name: &str) -> Vec<u8> {
    let mut message = Vec::with_capacity(72 + name.len());
    message.extend_from_slice(list);
    message.extend_from_slice(&device.0);
    message.extend_from_slice(name.as_bytes());
    message
}

/// Checks a joiner's proof made with [`Invite::prove`].
pub fn check_join_proof(
    invite: &WriterId,
    list: &[u8; 32],
    device: &WriterId,
    name: &str,
    proof: &[u8; 64],
) -> Result<(), AccessError> {
    if verify_tagged(invite, JOIN_DOMAIN, &join_message(list, device, name), proof) {
        Ok(())
    } else {
        Err(AccessError::BadInviteProof)
    }
}

/// Everything an invite link carries (in the URL fragment, never sent to any server).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteLink {
    /// The list's display name.
    pub name: String,
    /// The replication secret.
    pub replicate: [u8; 32],
    /// The device that created the list.
    pub owner: WriterId,
    /// The invite secret.
    pub invite: [u8; 32],
    /// The role the invite grants.
    pub role: Role,
    /// When it expires, ms since the Unix epoch.
    pub expires: u64,
    /// A few current addresses of peers holding the list (multiaddrs with `/p2p/`).
    pub addresses: Vec<String>,
}

/// The fragment key of invite links: `#join=<base64url>`.
pub const JOIN_FRAGMENT: &str = "join=";

impl InviteLink {
    /// The fragment value (URL-safe base64 of the postcard encoding, no padding).
    pub fn encode(&self) -> String {
        let bytes = postcard::to_allocvec(self).unwrap_or_default();
        base64url(&bytes)
    }

    /// The list this link opens, as a device joining with it holds it.
    pub fn topic(&self) -> crate::topic::Topic {
        crate::topic::Topic::private(self.name.clone(), Capability::Replicate(self.replicate), self.owner)
    }

    /// Reads a link: a whole URL with `#join=...`, or just the value.
    pub fn decode(link: &str) -> Result<Self, AccessError> {
        let link = link.trim();
        let value = match link.find(JOIN_FRAGMENT) {
            Some(at) => &link[at + JOIN_FRAGMENT.len()..],
            None => link,
        };
        let value = value.split('&').next().unwrap_or(value);
        let bytes = unbase64url(value).ok_or_else(|| AccessError::BadLink("not base64url".into()))?;
        postcard::from_bytes(&bytes).map_err(|error| AccessError::BadLink(error.to_string()))
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn base64url(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 4 / 3 + 3);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

fn unbase64url(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_round_trips() {
        for len in 0..40 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(unbase64url(&base64url(&bytes)).as_deref(), Some(bytes.as_slice()));
        }
        assert!(unbase64url("a=b").is_none());
    }
}
