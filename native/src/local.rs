//! Opening a list's storage and its node, and the keys kept in the data dir.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use futures::executor::block_on;
use hellopears_core::node::{self, Node};
use hellopears_core::storage::{LoadedState, MemoryStorage, Storage, WriteBatch};
use hellopears_core::topic::Topic;

use crate::lists::Selection;
use crate::store::{ListRecord, SledDb, SledStorage};

/// How long opening a store waits for another process that holds it.
pub const STORE_PATIENCE: Duration = Duration::from_secs(5);

/// Where a list lives.
#[derive(Debug, Clone)]
pub enum Backend {
    /// sled in a data dir.
    Sled(SledStorage),
    /// In memory, gone when the process ends.
    Memory(MemoryStorage),
}

impl Backend {
    /// Opens the store of `topic`: in `data` (sled, waiting briefly while another process
    /// holds it), or in memory.
    #[cfg(test)]
    pub fn open(data: Option<&Path>, topic: &Topic) -> anyhow::Result<Self> {
        Ok(match data {
            Some(dir) => Backend::Sled(SledStorage::open_waiting(dir, topic, STORE_PATIENCE)?),
            None => Backend::Memory(MemoryStorage::new()),
        })
    }

    /// Reads everything back.
    pub fn load(&self) -> anyhow::Result<LoadedState> {
        Ok(match self {
            Backend::Sled(store) => block_on(store.load())?,
            Backend::Memory(store) => block_on(store.load())?,
        })
    }

    /// Writes a batch on this thread (blocking).
    pub fn write_blocking(&self, batch: &WriteBatch) -> Result<(), String> {
        match self {
            Backend::Sled(store) => block_on(store.write(batch)).map_err(|e| e.to_string()),
            Backend::Memory(store) => block_on(store.write(batch)).map_err(|e| e.to_string()),
        }
    }

    /// Writes a batch on a blocking thread, off the async event loop.
    pub async fn write(&self, batch: WriteBatch) -> Result<(), String> {
        let backend = self.clone();
        tokio::task::spawn_blocking(move || backend.write_blocking(&batch))
            .await
            .unwrap_or_else(|error| Err(format!("the storage task failed: {error}")))
    }
}

/// A data dir's lists: on disk (one sled database), or in memory (a throwaway peer).
#[derive(Debug, Clone)]
pub enum Home {
    /// A data dir.
    Sled(SledDb),
    /// In memory: the lists made while the process runs.
    Memory(std::sync::Arc<std::sync::Mutex<Vec<ListRecord>>>),
}

impl Home {
    /// Opens the data dir (waiting briefly while another process holds it), or memory.
    pub fn open(data: Option<&Path>) -> anyhow::Result<Self> {
        Ok(match data {
            Some(dir) => Home::Sled(SledDb::open_waiting(dir, STORE_PATIENCE)?),
            None => Home::Memory(Default::default()),
        })
    }

    /// Every list.
    pub fn lists(&self) -> anyhow::Result<Vec<ListRecord>> {
        Ok(match self {
            Home::Sled(db) => db.lists()?,
            Home::Memory(lists) => lists.lock().map(|l| l.clone()).unwrap_or_default(),
        })
    }

    /// Adds or replaces a list.
    pub fn put(&self, record: &ListRecord) -> anyhow::Result<()> {
        match self {
            Home::Sled(db) => db.put_list(record)?,
            Home::Memory(lists) => {
                if let Ok(mut lists) = lists.lock() {
                    let id = record.topic().id();
                    lists.retain(|l| l.topic().id() != id);
                    lists.push(record.clone());
                }
            }
        }
        Ok(())
    }

    /// The storage of one list.
    pub fn backend(&self, topic: &Topic) -> anyhow::Result<Backend> {
        Ok(match self {
            Home::Sled(db) => Backend::Sled(db.list(topic)?),
            Home::Memory(_) => Backend::Memory(MemoryStorage::new()),
        })
    }

    /// The list a selection means; a public topic not yet in the data dir is added.
    pub fn select(&self, selection: &Selection) -> anyhow::Result<ListRecord> {
        let lists = self.lists()?;
        if let Some(found) = selection.resolve(&lists).map_err(anyhow::Error::msg)? {
            return Ok(found.clone());
        }
        let name = selection.public_name().unwrap_or(crate::lists::DEFAULT_TOPIC);
        let record = ListRecord::public(name);
        self.put(&record)?;
        Ok(record)
    }

    /// This device's display name.
    pub fn device_name(&self) -> String {
        let stored = match self {
            Home::Sled(db) => db.device_name().ok().flatten(),
            Home::Memory(_) => None,
        };
        stored.unwrap_or_else(default_device_name)
    }

    /// Sets this device's display name.
    pub fn set_device_name(&self, name: &str) -> anyhow::Result<()> {
        if let Home::Sled(db) = self {
            db.set_device_name(name)?;
        }
        Ok(())
    }
}

/// A device name until the user sets one: the host's name.
fn default_device_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "a desktop".to_owned())
}

/// Opens the node of a list on its storage: a new writer key is made from fresh randomness
/// if none is stored (and saved by the node's first write).
pub fn open_node<P: Ord + Clone + std::fmt::Debug>(
    backend: &Backend,
    topic: Topic,
    config: node::Config,
) -> anyhow::Result<Node<P>> {
    open_node_with_key(backend, topic, config, None)
}

/// Opens the node of a list, writing as `writer` when no writer key is stored yet (the
/// creator of a private list, whose key the list's id names).
pub fn open_node_with_key<P: Ord + Clone + std::fmt::Debug>(
    backend: &Backend,
    topic: Topic,
    config: node::Config,
    writer: Option<[u8; 32]>,
) -> anyhow::Result<Node<P>> {
    let started = std::time::Instant::now();
    let state = backend.load()?;
    let (entries, loaded) = (state.entries.len(), started.elapsed());
    let mut secret = [0u8; 32];
    match writer {
        Some(writer) => secret = writer,
        None => getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("no randomness for a new key: {e}"))?,
    }
    let (node, errors) = Node::open(topic, state, secret, config)?;
    tracing::debug!(
        entries,
        read_ms = loaded.as_millis() as u64,
        opened_ms = started.elapsed().as_millis() as u64,
        "store loaded and replica rebuilt"
    );
    for error in &errors {
        tracing::warn!(%error, "skipped a stored item");
    }
    Ok(node)
}

/// This device's libp2p identity, persisted in the data dir so the peer id is stable.
pub fn node_key(dir: &std::path::Path) -> anyhow::Result<libp2p::identity::Keypair> {
    let path = dir.join("node.key");
    match std::fs::read(&path).map(zeroize::Zeroizing::new) {
        Ok(bytes) => libp2p::identity::Keypair::from_protobuf_encoding(&bytes)
            .with_context(|| format!("{} is corrupt", path.display())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let key = libp2p::identity::Keypair::generate_ed25519();
            let bytes = key.to_protobuf_encoding().context("encoding the node key")?;
            crate::store::write_private(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
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
            crate::store::write_private(&path, certificate.serialize_pem().as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(certificate)
        }
        Err(error) => Err(error).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use hellopears_core::keys::WriterId;

    use super::*;

    /// A large batch to sled takes a while: the event loop keeps running meanwhile.
    #[tokio::test(flavor = "current_thread")]
    async fn storage_writes_leave_the_event_loop_free() {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = Backend::open(Some(dir.path()), &Topic::from_name("todo")).expect("open");
        let writer = WriterId([7; 32]);
        let entries = (0..30_000u64).map(|seq| (writer, seq, Arc::from(vec![seq as u8; 200]))).collect();
        let batch = WriteBatch { entries, ..WriteBatch::default() };
        let ticks = Arc::new(AtomicU64::new(0));
        let ticker = {
            let ticks = ticks.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    ticks.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        tokio::task::yield_now().await;
        let before = ticks.load(Ordering::SeqCst);
        backend.write(batch).await.expect("write");
        let during = ticks.load(Ordering::SeqCst) - before;
        ticker.abort();
        assert!(during >= 3, "the event loop stalled during the write ({during} ticks)");
        assert_eq!(backend.load().expect("load").entries.len(), 30_000);
    }
}
