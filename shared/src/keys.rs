//! Writer identities (ed25519 key pairs), entry hashes and signatures.

use std::fmt;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Domain separation for entry signatures: a signature made for HelloPears entries
/// is never valid for any other message the same key signs.
const ENTRY_SIGNATURE_DOMAIN: &[u8] = b"hellopears/entry-signature/v1";

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
        Self { signing, id }
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
    pub fn secret(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    /// This writer's public identity.
    pub fn id(&self) -> WriterId {
        self.id
    }

    /// Signs an entry hash.
    pub(crate) fn sign_entry(&self, hash: &Hash) -> [u8; 64] {
        self.signing.sign(&entry_signing_message(hash)).to_bytes()
    }
}

/// The exact bytes an entry signature covers: a domain tag and the entry hash.
pub fn entry_signing_message(hash: &Hash) -> [u8; ENTRY_SIGNATURE_DOMAIN.len() + 32] {
    let mut message = [0u8; ENTRY_SIGNATURE_DOMAIN.len() + 32];
    message[..ENTRY_SIGNATURE_DOMAIN.len()].copy_from_slice(ENTRY_SIGNATURE_DOMAIN);
    message[ENTRY_SIGNATURE_DOMAIN.len()..].copy_from_slice(&hash.0);
    message
}

/// Checks an entry signature with `verify_strict` (rejects small-order keys and
/// non-canonical signatures, so a signature cannot be mauled into a second valid one).
pub(crate) fn verify_entry_signature(key: &VerifyingKey, hash: &Hash, signature: &[u8; 64]) -> bool {
    let signature = ed25519_dalek::Signature::from_bytes(signature);
    key.verify_strict(&entry_signing_message(hash), &signature).is_ok()
}
