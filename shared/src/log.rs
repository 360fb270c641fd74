//! Signed, hash-chained entries of one writer's append-only log (the seed's Hypercore).
//!
//! Wire form of an entry: `body ‖ seal`, where `body` is a version byte followed by the
//! postcard encoding of [`EntryBody`] and the entry hash is SHA-256 of `body`. The seal is
//! a 64-byte ed25519 signature over a domain tag, the list id and that hash, or (from
//! version 3 on) nothing.
//!
//! Signatures are amortized over runs, as Hypercore signs tree roots rather than blocks: a
//! writer seals the last entry of each batch it appends (and at least every
//! [`SEAL_EVERY_ENTRIES`] entries), and the hash chain carries the seal back over the
//! unsealed entries before it. A receiver checks the chain and one signature per run
//! ([`check_run`]); an entry fetched alone comes with the entries after it up to its run's
//! seal, its proof. The seal is outside the hashed body, so sealing an entry later does not
//! change its identity.
use std::sync::Arc;

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use crate::keys::{Hash, Keypair, WriterId, verify_entry_signature};

/// The entry format version carried in the first byte of every entry written now: its
/// seal is optional (a later sealed entry of the same writer covers it through the chain).
pub const ENTRY_VERSION: u8 = 3;
/// Entries whose every entry is sealed; the signature names the list (see
/// [`crate::keys::entry_signing_message`]). Read everywhere.
pub const SEALED_ENTRY_VERSION: u8 = 2;
/// Entries written before lists had ids in their signatures: read on public topics only.
pub const LEGACY_ENTRY_VERSION: u8 = 1;
pub use crate::limits::{MAX_CLOCK, MAX_ENTRY_BYTES, MAX_HEADS, MAX_RUN_BYTES, MAX_RUN_ENTRIES, SEAL_EVERY_ENTRIES};
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
    signature: Option<[u8; SIGNATURE_LEN]>,
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
    /// Fewer bytes than a version byte and a body (and a signature, before version 3).
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

/// Why entries do not form a run that one seal covers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// No entries.
    #[error("an empty run")]
    Empty,
    /// Entries of different writers, seqs not consecutive, or a `prev` that is not the hash
    /// of the entry before.
    #[error("entries {seq} and {} of the run are not linked", seq + 1)]
    Unlinked {
        /// The seq after which the chain breaks.
        seq: u64,
    },
    /// The last entry carries no seal.
    #[error("the run ending at entry {0} is not sealed")]
    Unsealed(u64),
    /// Longer than a run may be.
    #[error("a run of {0} entries is longer than runs may be")]
    TooLong(usize),
    /// The seal does not verify.
    #[error("the seal of entry {0} does not verify")]
    BadSeal(u64),
}

/// Checks that `run` is one writer's consecutive, hash-linked entries ending in a sealed
/// entry whose signature holds for `key` in the list `list`: then every entry of it is the
/// writer's, with one signature check. `legacy` accepts version 1 seals (public topics).
pub fn check_run(run: &[Entry], key: &VerifyingKey, list: &[u8; 32], legacy: bool) -> Result<(), RunError> {
    let tip = run.last().ok_or(RunError::Empty)?;
    if run.len() > MAX_RUN_ENTRIES {
        return Err(RunError::TooLong(run.len()));
    }
    if let Some(pair) = run.windows(2).find(|pair| !pair[1].follows(&pair[0])) {
        return Err(RunError::Unlinked { seq: pair[0].seq() });
    }
    if !tip.is_sealed() {
        return Err(RunError::Unsealed(tip.seq()));
    }
    if (!legacy && tip.version() == LEGACY_ENTRY_VERSION) || !tip.verify(key, list) {
        return Err(RunError::BadSeal(tip.seq()));
    }
    Ok(())
}

impl Entry {
    /// Encodes, hashes and seals a new entry. The body should name `keypair` as its writer;
    /// anything else yields an entry that fails verification.
    pub fn sign(body: EntryBody, keypair: &Keypair) -> Self {
        Self::unsealed(body).sealed(keypair)
    }

    /// Encodes and hashes a new entry without a seal: a later sealed entry of the same
    /// writer covers it through the chain.
    pub fn unsealed(body: EntryBody) -> Self {
        let mut bytes = Vec::with_capacity(64 + body.payload.len() + body.heads.len() * 80 + SIGNATURE_LEN);
        bytes.push(ENTRY_VERSION);
        // Encoding into a Vec cannot fail for these plain types.
        let bytes = postcard::to_extend(&body, bytes).unwrap_or_else(|_| vec![ENTRY_VERSION]);
        let hash = Hash::digest(&bytes);
        Self(Arc::new(EntryInner { body, hash, signature: None, bytes: bytes.into() }))
    }

    /// This entry with its seal (same body, same hash). Sealing an entry of another writer
    /// yields one whose seal fails verification.
    pub fn sealed(&self, keypair: &Keypair) -> Self {
        if self.is_sealed() {
            return self.clone();
        }
        self.with_seal(keypair.sign_entry(&self.0.hash))
    }

    /// This entry's body with `signature` as its seal (replacing any seal it has).
    fn with_seal(&self, signature: [u8; SIGNATURE_LEN]) -> Self {
        let body_len = self.0.bytes.len() - if self.is_sealed() { SIGNATURE_LEN } else { 0 };
        let mut bytes = Vec::with_capacity(body_len + SIGNATURE_LEN);
        bytes.extend_from_slice(&self.0.bytes[..body_len]);
        bytes.extend_from_slice(&signature);
        Self(Arc::new(EntryInner {
            body: self.0.body.clone(),
            hash: self.0.hash,
            signature: Some(signature),
            bytes: bytes.into(),
        }))
    }

    /// Decodes an entry from its wire form. Checks structure only; see [`Entry::verify`]
    /// and [`check_run`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_ENTRY_BYTES {
            return Err(DecodeError::Oversized { len: bytes.len(), max: MAX_ENTRY_BYTES });
        }
        let version = bytes.first().copied().ok_or(DecodeError::Truncated { len: 0 })?;
        if version != ENTRY_VERSION && version != SEALED_ENTRY_VERSION && version != LEGACY_ENTRY_VERSION {
            return Err(DecodeError::UnknownVersion(version));
        }
        let (body, rest): (EntryBody, _) = if version == ENTRY_VERSION {
            postcard::take_from_bytes(&bytes[1..]).map_err(|e| DecodeError::Malformed(e.to_string()))?
        } else {
            // Before version 3 the signature always closes the entry.
            if bytes.len() < 1 + SIGNATURE_LEN {
                return Err(DecodeError::Truncated { len: bytes.len() });
            }
            let (body, rest) = postcard::take_from_bytes(&bytes[1..bytes.len() - SIGNATURE_LEN])
                .map_err(|e| DecodeError::Malformed(e.to_string()))?;
            if !rest.is_empty() {
                return Err(DecodeError::TrailingBytes(rest.len()));
            }
            (body, &bytes[bytes.len() - SIGNATURE_LEN..])
        };
        let signature = match rest.len() {
            0 => None,
            SIGNATURE_LEN => {
                let mut signature = [0u8; SIGNATURE_LEN];
                signature.copy_from_slice(rest);
                Some(signature)
            }
            extra => return Err(DecodeError::TrailingBytes(extra)),
        };
        let body_len = bytes.len() - rest.len();
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
        let hash = Hash::digest(&bytes[..body_len]);
        Ok(Self(Arc::new(EntryInner { body, hash, signature, bytes: bytes.into() })))
    }

    /// Checks the seal against the author's key (`verify_strict`) for the list `list`; an
    /// unsealed entry does not verify on its own (see [`check_run`]).
    pub fn verify(&self, key: &VerifyingKey, list: &[u8; 32]) -> bool {
        self.0
            .signature
            .as_ref()
            .is_some_and(|signature| verify_entry_signature(key, self.version(), list, &self.0.hash, signature))
    }

    /// Whether the entry carries its writer's signature.
    pub fn is_sealed(&self) -> bool {
        self.0.signature.is_some()
    }

    /// Whether this entry directly follows `before` in one writer's log.
    pub fn follows(&self, before: &Entry) -> bool {
        self.writer() == before.writer()
            && self.seq() == before.seq().wrapping_add(1)
            && self.0.body.prev == Some(before.0.hash)
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

    /// Returns a copy of this entry with its seal replaced (for tests of bad signatures).
    #[doc(hidden)]
    pub fn with_signature_for_tests(&self, signature: [u8; 64]) -> Self {
        self.with_seal(signature)
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

/// Two different entries at the same position of one writer's log, each with its proof
/// (the entries after it up to its run's seal; empty when the entry is sealed itself):
/// proof that the writer forked its log. Anyone can check it without other context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForkEvidence {
    /// The first entry seen.
    pub first: Entry,
    /// The conflicting entry.
    pub second: Entry,
    /// The entries after `first` up to its seal.
    pub first_proof: Vec<Entry>,
    /// The entries after `second` up to its seal.
    pub second_proof: Vec<Entry>,
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
    /// A signature does not verify, or a proof does not lead to a seal.
    #[error("fork evidence has a bad signature")]
    BadSignature,
}

impl ForkEvidence {
    /// Evidence of two sealed entries.
    pub fn new(first: Entry, second: Entry) -> Self {
        Self { first, second, first_proof: Vec::new(), second_proof: Vec::new() }
    }

    /// The forking writer.
    pub fn writer(&self) -> WriterId {
        self.first.writer()
    }

    /// The position at which the log forked.
    pub fn seq(&self) -> u64 {
        self.first.seq()
    }

    /// Wire form: both entries, length-prefixed, then both proofs when either is not empty
    /// (evidence of two sealed entries keeps the form of earlier versions).
    pub fn encode(&self) -> Vec<u8> {
        let pair: (&[u8], &[u8]) = (self.first.bytes(), self.second.bytes());
        let mut bytes = postcard::to_allocvec(&pair).unwrap_or_default();
        if !self.first_proof.is_empty() || !self.second_proof.is_empty() {
            let proof = |entries: &[Entry]| entries.iter().map(|entry| entry.bytes().to_vec()).collect::<Vec<_>>();
            let proofs = (proof(&self.first_proof), proof(&self.second_proof));
            bytes = postcard::to_extend(&proofs, bytes).unwrap_or_default();
        }
        bytes
    }

    /// Decodes and checks evidence: two different entries at one (writer, seq) of the list
    /// `list`, each sealed or proven by the run after it.
    pub fn decode_and_check(bytes: &[u8], list: &[u8; 32]) -> Result<Self, ForkEvidenceError> {
        let ((first, second), rest): ((Vec<u8>, Vec<u8>), _) =
            postcard::take_from_bytes(bytes).map_err(|_| ForkEvidenceError::Malformed)?;
        let (first_proof, second_proof): (Vec<Vec<u8>>, Vec<Vec<u8>>) = if rest.is_empty() {
            Default::default()
        } else {
            postcard::from_bytes(rest).map_err(|_| ForkEvidenceError::Malformed)?
        };
        let decode_all =
            |proof: Vec<Vec<u8>>| proof.iter().map(|bytes| Entry::decode(bytes)).collect::<Result<Vec<_>, _>>();
        let evidence = Self {
            first: Entry::decode(&first)?,
            second: Entry::decode(&second)?,
            first_proof: decode_all(first_proof)?,
            second_proof: decode_all(second_proof)?,
        };
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
        for (entry, proof) in [(a, &self.first_proof), (b, &self.second_proof)] {
            let run: Vec<Entry> = std::iter::once(entry.clone()).chain(proof.iter().cloned()).collect();
            // Whether legacy entries count is the list's business; a forked legacy writer is
            // still a forked writer.
            check_run(&run, &key, list, true).map_err(|_| ForkEvidenceError::BadSignature)?;
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
