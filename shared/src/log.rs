//! Signed, hash-chained entries of one writer's append-only log (the seed's Hypercore).
//!
//! Wire form of an entry: `body ‖ signature`, where `body` is a version byte followed by
//! the postcard encoding of [`EntryBody`], the entry hash is SHA-256 of `body`, and the
//! 64-byte ed25519 signature covers a domain tag and that hash.

use std::sync::Arc;

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use crate::keys::{Hash, Keypair, WriterId, verify_entry_signature};

/// The entry format version carried in the first byte of every entry written now: its
/// signature names the list (see [`crate::keys::entry_signing_message`]).
pub const ENTRY_VERSION: u8 = 2;
/// Entries written before lists had ids in their signatures: read on public topics only.
pub const LEGACY_ENTRY_VERSION: u8 = 1;
pub use crate::limits::{MAX_CLOCK, MAX_ENTRY_BYTES, MAX_HEADS};
const SIGNATURE_LEN: usize = 64;

/// A reference to another writer's entry that the author had seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// The other writer.
    pub writer: WriterId,
    /// The seq of the latest entry of that writer the author had seen.
    pub seq: u64,
    /// That entry's hash.
    pub hash: Hash,
}

/// The signed content of an entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryBody {
    /// The author, whose log this entry extends.
    pub writer: WriterId,
    /// Position in the author's log, from 0.
    pub seq: u64,
    /// Hash of the author's previous entry (`None` exactly when `seq == 0`).
    pub prev: Option<Hash>,
    /// Latest entries of other writers seen since the author's previous entry, sorted by writer.
    pub heads: Vec<Head>,
    /// Lamport clock: one more than the largest clock among `prev` and `heads`.
    pub clock: u64,
    /// The operation, encoded by the view (opaque to the log).
    pub payload: Vec<u8>,
}

/// A decoded entry with its hash and the bytes it was decoded from. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Entry(Arc<EntryInner>);

#[derive(Debug)]
struct EntryInner {
    body: EntryBody,
    hash: Hash,
    signature: [u8; SIGNATURE_LEN],
    bytes: Arc<[u8]>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.0.hash == other.0.hash && self.0.signature == other.0.signature
    }
}
impl Eq for Entry {}

/// Why bytes are not an entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than a version byte and a signature.
    #[error("entry truncated: {len} bytes")]
    Truncated {
        /// Bytes received.
        len: usize,
    },
    /// More bytes than [`MAX_ENTRY_BYTES`].
    #[error("entry of {len} bytes is over the {max} byte limit")]
    Oversized {
        /// Bytes received.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The version byte is not one this build understands.
    #[error("unknown entry version {0}")]
    UnknownVersion(u8),
    /// The body does not decode.
    #[error("malformed entry body: {0}")]
    Malformed(String),
    /// Bytes left over after the body.
    #[error("{0} trailing bytes after the entry body")]
    TrailingBytes(usize),
    /// `prev` present at seq 0 or absent after it.
    #[error("prev hash must be present exactly when seq > 0")]
    PrevMismatch,
    /// Too many heads.
    #[error("{0} heads is over the limit of {MAX_HEADS}")]
    TooManyHeads(usize),
    /// Heads not strictly sorted by writer, or a head naming the author itself.
    #[error("heads must be sorted, unique, and name other writers")]
    BadHeads,
    /// Clock zero or at its ceiling.
    #[error("clock {0} out of range")]
    ClockOutOfRange(u64),
}

impl Entry {
    /// Encodes, hashes and signs a new entry. The body should name `keypair` as its writer;
    /// anything else yields an entry that fails verification.
    pub fn sign(body: EntryBody, keypair: &Keypair) -> Self {
        let mut bytes = Vec::with_capacity(64 + body.payload.len() + body.heads.len() * 80);
        bytes.push(ENTRY_VERSION);
        // Encoding into a Vec cannot fail for these plain types.
        let mut bytes = postcard::to_extend(&body, bytes).unwrap_or_else(|_| vec![ENTRY_VERSION]);
        let hash = Hash::digest(&bytes);
        let signature = keypair.sign_entry(&hash);
        bytes.extend_from_slice(&signature);
        Self(Arc::new(EntryInner { body, hash, signature, bytes: bytes.into() }))
    }

    /// Decodes an entry from its wire form. Checks structure only; see [`Entry::verify`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_ENTRY_BYTES {
            return Err(DecodeError::Oversized { len: bytes.len(), max: MAX_ENTRY_BYTES });
        }
        if bytes.len() < 1 + SIGNATURE_LEN {
            return Err(DecodeError::Truncated { len: bytes.len() });
        }
        if bytes[0] != ENTRY_VERSION && bytes[0] != LEGACY_ENTRY_VERSION {
            return Err(DecodeError::UnknownVersion(bytes[0]));
        }
        let (body_bytes, signature_bytes) = bytes.split_at(bytes.len() - SIGNATURE_LEN);
        let (body, rest): (EntryBody, _) =
            postcard::take_from_bytes(&body_bytes[1..]).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(DecodeError::TrailingBytes(rest.len()));
        }
        if (body.seq == 0) != body.prev.is_none() {
            return Err(DecodeError::PrevMismatch);
        }
        if body.heads.len() > MAX_HEADS {
            return Err(DecodeError::TooManyHeads(body.heads.len()));
        }
        let sorted = body.heads.windows(2).all(|pair| pair[0].writer < pair[1].writer);
        if !sorted || body.heads.iter().any(|head| head.writer == body.writer) {
            return Err(DecodeError::BadHeads);
        }
        if body.clock == 0 || body.clock > MAX_CLOCK {
            return Err(DecodeError::ClockOutOfRange(body.clock));
        }
        let mut signature = [0u8; SIGNATURE_LEN];
        signature.copy_from_slice(signature_bytes);
        Ok(Self(Arc::new(EntryInner { body, hash: Hash::digest(body_bytes), signature, bytes: bytes.into() })))
    }

    /// Checks the signature against the author's key (`verify_strict`) for the list `list`.
    pub fn verify(&self, key: &VerifyingKey, list: &[u8; 32]) -> bool {
        verify_entry_signature(key, self.version(), list, &self.0.hash, &self.0.signature)
    }

    /// The format version (the first byte).
    pub fn version(&self) -> u8 {
        self.0.bytes.first().copied().unwrap_or(ENTRY_VERSION)
    }

    /// The signed content.
    pub fn body(&self) -> &EntryBody {
        &self.0.body
    }

    /// The author.
    pub fn writer(&self) -> WriterId {
        self.0.body.writer
    }

    /// Position in the author's log.
    pub fn seq(&self) -> u64 {
        self.0.body.seq
    }

    /// Lamport clock.
    pub fn clock(&self) -> u64 {
        self.0.body.clock
    }

    /// SHA-256 of the body: the entry's identity.
    pub fn hash(&self) -> Hash {
        self.0.hash
    }

    /// The wire form.
    pub fn bytes(&self) -> &Arc<[u8]> {
        &self.0.bytes
    }

    /// Returns a copy of this entry with its signature replaced (for tests of bad signatures).
    #[doc(hidden)]
    pub fn with_signature_for_tests(&self, signature: [u8; 64]) -> Self {
        let mut bytes = self.0.bytes.to_vec();
        let len = bytes.len();
        bytes[len - SIGNATURE_LEN..].copy_from_slice(&signature);
        Self(Arc::new(EntryInner { body: self.0.body.clone(), hash: self.0.hash, signature, bytes: bytes.into() }))
    }
}

/// Sorts entries into an order in which each one's dependencies come before it: by Lamport
/// clock, which grows along every causal edge. Ingesting a batch in this order integrates
/// it without parking entries to wait for their dependencies. Ties are broken by writer and
/// seq (the writer by its first 8 bytes, which keeps the sort key small; any tie order is
/// causal), so the result is usually exactly the linear order and applies without reordering.
pub fn causal_sort(entries: &mut [Entry]) {
    entries.sort_by_cached_key(|entry| {
        let body = entry.body();
        let mut prefix = [0u8; 8];
        prefix.copy_from_slice(&body.writer.0[..8]);
        (body.clock, u64::from_be_bytes(prefix), body.seq)
    });
}

/// Two validly signed, different entries at the same position of one writer's log:
/// proof that the writer forked its log. Anyone can check it without other context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForkEvidence {
    /// The first entry seen.
    pub first: Entry,
    /// The conflicting entry.
    pub second: Entry,
}

/// Why fork evidence does not prove a fork.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ForkEvidenceError {
    /// The bytes do not hold two entries.
    #[error("malformed fork evidence")]
    Malformed,
    /// An entry inside does not decode.
    #[error("fork evidence entry: {0}")]
    Entry(#[from] DecodeError),
    /// Different writers, different seqs, or identical entries.
    #[error("the two entries are not a fork")]
    NotAFork,
    /// A signature does not verify.
    #[error("fork evidence has a bad signature")]
    BadSignature,
}

impl ForkEvidence {
    /// The forking writer.
    pub fn writer(&self) -> WriterId {
        self.first.writer()
    }

    /// The position at which the log forked.
    pub fn seq(&self) -> u64 {
        self.first.seq()
    }

    /// Wire form: both entries, length-prefixed.
    pub fn encode(&self) -> Vec<u8> {
        let pair: (&[u8], &[u8]) = (self.first.bytes(), self.second.bytes());
        postcard::to_allocvec(&pair).unwrap_or_default()
    }

    /// Decodes and checks evidence: two different, validly signed entries at one (writer, seq)
    /// of the list `list`.
    pub fn decode_and_check(bytes: &[u8], list: &[u8; 32]) -> Result<Self, ForkEvidenceError> {
        let (first, second): (Vec<u8>, Vec<u8>) =
            postcard::from_bytes(bytes).map_err(|_| ForkEvidenceError::Malformed)?;
        let evidence = Self { first: Entry::decode(&first)?, second: Entry::decode(&second)? };
        evidence.check(list)?;
        Ok(evidence)
    }

    /// Checks that this is a real fork in the list `list`.
    pub fn check(&self, list: &[u8; 32]) -> Result<(), ForkEvidenceError> {
        let (a, b) = (&self.first, &self.second);
        if a.writer() != b.writer() || a.seq() != b.seq() || a.hash() == b.hash() {
            return Err(ForkEvidenceError::NotAFork);
        }
        let key = a.writer().verifying_key().map_err(|_| ForkEvidenceError::BadSignature)?;
        if !a.verify(&key, list) || !b.verify(&key, list) {
            return Err(ForkEvidenceError::BadSignature);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(keypair: &Keypair) -> EntryBody {
        EntryBody { writer: keypair.id(), seq: 0, prev: None, heads: vec![], clock: 1, payload: b"op".to_vec() }
    }

    #[test]
    fn roundtrip_and_verify() {
        let keypair = Keypair::derive_for_tests(1, 1);
        let entry = Entry::sign(body(&keypair), &keypair);
        let decoded = Entry::decode(entry.bytes()).expect("decodes");
        assert_eq!(decoded, entry);
        assert_eq!(decoded.body(), entry.body());
        let key = keypair.id().verifying_key().expect("valid key");
        assert!(decoded.verify(&key, &[0; 32]));
        assert!(!decoded.verify(&key, &[1; 32]), "an entry of one list does not verify for another");
        let other = Keypair::derive_for_tests(1, 2).id().verifying_key().expect("valid key");
        assert!(!decoded.verify(&other, &[0; 32]));
    }
}
