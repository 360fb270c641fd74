//! Writer identities (ed25519 key pairs), entry hashes and signatures.

use std::fmt;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Domain separation for entry signatures: a signature made for HelloPears entries
/// is never valid for any other message the same key signs. Version 2 entries also sign the
/// id of their list, so an entry cannot be replayed into another list.
const ENTRY_SIGNATURE_DOMAIN: &[u8] = b"hellopears/entry-signature/v2";
/// Version 1 entries (before lists had ids in their signatures); accepted only on public topics.
const LEGACY_ENTRY_SIGNATURE_DOMAIN: &[u8] = b"hellopears/entry-signature/v1";

/// A 32-byte SHA-256 digest: entry hashes, topic ids, discovery keys.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// SHA-256 of `bytes`.
    pub fn digest(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// SHA-256 of the concatenation of `parts`.
    pub fn digest_parts(parts: &[&[u8]]) -> Self {
        let mut hasher = Sha256::new();
        for part in parts {
            hasher.update(part);
        }
        Self(hasher.finalize().into())
    }

    /// Lowercase hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", &self.to_hex()[..16])
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The public key of a writer: the identity of one append-only log.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WriterId(pub [u8; 32]);

impl WriterId {
    /// Lowercase hex form (64 characters).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Short hex form for logs and UIs (first 8 bytes).
    pub fn short(&self) -> String {
        hex::encode(&self.0[..8])
    }

    /// Parses the 64-character hex form.
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).map_err(|_| KeyError::BadHex)?;
        Ok(Self(bytes))
    }

    /// The ed25519 verifying key, if these bytes are a valid curve point.
    pub fn verifying_key(&self) -> Result<VerifyingKey, KeyError> {
        VerifyingKey::from_bytes(&self.0).map_err(|_| KeyError::InvalidPublicKey)
    }
}

impl fmt::Debug for WriterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WriterId({})", self.short())
    }
}

impl fmt::Display for WriterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Errors about keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The text is not 64 hex characters.
    #[error("a writer key is 64 hex characters")]
    BadHex,
    /// The bytes are not a valid ed25519 public key.
    #[error("not a valid ed25519 public key")]
    InvalidPublicKey,
    /// A secret key has the wrong length.
    #[error("a secret key is 32 bytes")]
    BadSecretLength,
}

/// A writer's key pair. The core never draws randomness: the 32 secret bytes are handed in.
#[derive(Clone)]
pub struct Keypair {
    signing: SigningKey,
    id: WriterId,
    /// The list this key signs entries for (all zero until bound, as in unit tests).
    list: [u8; 32],
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keypair").field("id", &self.id).finish_non_exhaustive()
    }
}

impl Keypair {
    /// Builds a key pair from 32 secret bytes (from a CSPRNG, or a stored key).
    pub fn from_secret(secret: [u8; 32]) -> Self {
        let signing = SigningKey::from_bytes(&secret);
        let id = WriterId(signing.verifying_key().to_bytes());
        Self { signing, id, list: [0; 32] }
    }

    /// This key pair, signing entries for the list `list` (its topic id).
    pub fn bound_to(mut self, list: [u8; 32]) -> Self {
        self.list = list;
        self
    }

    /// The list this key signs entries for.
    pub fn list(&self) -> [u8; 32] {
        self.list
    }

    /// The X25519 secret scalar of this key (the same key, on the Montgomery curve), for
    /// opening content keys sealed to this device.
    pub(crate) fn x25519_secret(&self) -> zeroize::Zeroizing<[u8; 32]> {
        zeroize::Zeroizing::new(self.signing.to_scalar_bytes())
    }

    /// Signs `message` under a domain tag of its own (invites, join requests).
    pub(crate) fn sign_tagged(&self, domain: &[u8], message: &[u8]) -> [u8; 64] {
        let mut bytes = Vec::with_capacity(domain.len() + message.len());
        bytes.extend_from_slice(domain);
        bytes.extend_from_slice(message);
        self.signing.sign(&bytes).to_bytes()
    }

    /// Builds a key pair from a stored secret of unknown length.
    pub fn from_secret_slice(secret: &[u8]) -> Result<Self, KeyError> {
        let bytes: [u8; 32] = secret.try_into().map_err(|_| KeyError::BadSecretLength)?;
        Ok(Self::from_secret(bytes))
    }

    /// A deterministic key pair derived from a seed and an index: for tests and simulations only.
    pub fn derive_for_tests(seed: u64, index: u64) -> Self {
        let digest = Hash::digest_parts(&[b"hellopears/test-key", &seed.to_le_bytes(), &index.to_le_bytes()]);
        Self::from_secret(digest.0)
    }

    /// The secret bytes, for persisting the key.
    pub fn secret(&self) -> zeroize::Zeroizing<[u8; 32]> {
        zeroize::Zeroizing::new(self.signing.to_bytes())
    }

    /// This writer's public identity.
    pub fn id(&self) -> WriterId {
        self.id
    }

    /// Signs an entry hash (the seal of a version 2 or 3 entry, for the list this key is bound to).
    pub(crate) fn sign_entry(&self, hash: &Hash) -> [u8; 64] {
        self.signing.sign(&entry_signing_message(2, &self.list, hash)).to_bytes()
    }
}

/// The exact bytes an entry signature covers: a domain tag, the list id (from version 2 on)
/// and the entry hash.
pub fn entry_signing_message(version: u8, list: &[u8; 32], hash: &Hash) -> Vec<u8> {
    let mut message = Vec::with_capacity(ENTRY_SIGNATURE_DOMAIN.len() + 64);
    if version == 1 {
        message.extend_from_slice(LEGACY_ENTRY_SIGNATURE_DOMAIN);
    } else {
        message.extend_from_slice(ENTRY_SIGNATURE_DOMAIN);
        message.extend_from_slice(list);
    }
    message.extend_from_slice(&hash.0);
    message
}

/// Checks an entry signature with `verify_strict` (rejects small-order keys and
/// non-canonical signatures, so a signature cannot be mauled into a second valid one).
pub(crate) fn verify_entry_signature(
    key: &VerifyingKey,
    version: u8,
    list: &[u8; 32],
    hash: &Hash,
    signature: &[u8; 64],
) -> bool {
    let signature = ed25519_dalek::Signature::from_bytes(signature);
    key.verify_strict(&entry_signing_message(version, list, hash), &signature).is_ok()
}

/// Checks a signature made with [`Keypair::sign_tagged`].
pub(crate) fn verify_tagged(key: &WriterId, domain: &[u8], message: &[u8], signature: &[u8; 64]) -> bool {
    let Ok(key) = key.verifying_key() else { return false };
    let mut bytes = Vec::with_capacity(domain.len() + message.len());
    bytes.extend_from_slice(domain);
    bytes.extend_from_slice(message);
    key.verify_strict(&bytes, &ed25519_dalek::Signature::from_bytes(signature)).is_ok()
}
