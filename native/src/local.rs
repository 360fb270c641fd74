//! A replica opened on local storage, for commands run without a live peer.

use std::path::PathBuf;

use anyhow::Context;
use futures::executor::block_on;
use hellopears_core::keys::Keypair;
use hellopears_core::replica::Replica;
use hellopears_core::storage::{MemoryStorage, Storage, WriteBatch};
use hellopears_core::topic::Topic;

use crate::store::SledStorage;

/// The meta key holding this device's writer secret for a topic.
const WRITER_SECRET: &str = "writer-secret";

/// Where a replica lives.
#[derive(Debug)]
pub enum Backend {
    /// sled in a data dir.
    Sled(SledStorage),
    /// In memory, gone when the process ends.
    Memory(MemoryStorage),
}

/// A replica and the storage it persists to.
#[derive(Debug)]
pub struct Local {
    /// The replica.
    pub replica: Replica,
    backend: Backend,
}

impl Local {
    /// Opens the replica of `topic`: from `data` (sled), or in memory.
    pub fn open(data: Option<PathBuf>, topic: Topic) -> anyhow::Result<Self> {
        let backend = match data {
            Some(dir) => Backend::Sled(SledStorage::open(&dir, &topic)?),
            None => Backend::Memory(MemoryStorage::new()),
        };
        let state = match &backend {
            Backend::Sled(store) => block_on(store.load())?,
            Backend::Memory(store) => block_on(store.load())?,
        };
        let (keypair, new_key) = match state.meta.get(WRITER_SECRET) {
            Some(secret) => (Keypair::from_secret_slice(secret).context("stored writer key is corrupt")?, false),
            None => {
                let mut secret = [0u8; 32];
                getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("no randomness for a new key: {e}"))?;
                (Keypair::from_secret(secret), true)
            }
        };
        let (replica, errors) = Replica::open(topic, keypair.clone(), state);
        for error in &errors {
            tracing::warn!(%error, "skipped a stored item");
        }
        let local = Self { replica, backend };
        if new_key {
            let batch = WriteBatch {
                meta: vec![(WRITER_SECRET.into(), Some(keypair.secret().to_vec()))],
                ..WriteBatch::default()
            };
            local.write(&batch)?;
        }
        Ok(local)
    }

    /// Persists what the replica changed.
    pub fn save(&mut self) -> anyhow::Result<()> {
        let batch = self.replica.take_unsaved();
        self.write(&batch)
    }

    fn write(&self, batch: &WriteBatch) -> anyhow::Result<()> {
        match &self.backend {
            Backend::Sled(store) => block_on(store.write(batch))?,
            Backend::Memory(store) => block_on(store.write(batch))?,
        }
        Ok(())
    }
}

/// This device's libp2p identity, persisted in the data dir so the peer id is stable.
pub fn node_key(dir: &std::path::Path) -> anyhow::Result<libp2p::identity::Keypair> {
    let path = dir.join("node.key");
    match std::fs::read(&path) {
        Ok(bytes) => libp2p::identity::Keypair::from_protobuf_encoding(&bytes)
            .with_context(|| format!("{} is corrupt", path.display())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let key = libp2p::identity::Keypair::generate_ed25519();
            let bytes = key.to_protobuf_encoding().context("encoding the node key")?;
            std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
            Ok(key)
        }
        Err(error) => Err(error).with_context(|| format!("reading {}", path.display())),
    }
}

/// The WebRTC-direct certificate, persisted in the data dir: its hash is part of our
/// `/webrtc-direct/certhash/...` addresses, so keeping it keeps those addresses stable.
pub fn webrtc_certificate(dir: Option<&std::path::Path>) -> anyhow::Result<libp2p_webrtc::tokio::Certificate> {
    use libp2p_webrtc::tokio::Certificate;
    let generate = || {
        Certificate::generate(&mut rand::rng()).map_err(|e| anyhow::anyhow!("cannot make a WebRTC certificate: {e}"))
    };
    let Some(dir) = dir else { return generate() };
    let path = dir.join("webrtc.pem");
    match std::fs::read_to_string(&path) {
        Ok(pem) => Certificate::from_pem(&pem).with_context(|| format!("{} is corrupt", path.display())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let certificate = generate()?;
            std::fs::write(&path, certificate.serialize_pem())
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(certificate)
        }
        Err(error) => Err(error).with_context(|| format!("reading {}", path.display())),
    }
}
