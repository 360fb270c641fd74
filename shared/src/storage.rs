//! Persistence behind a small trait, with an in-memory backend (the seed's `RAM.reusable()`).
//!
//! The replica keeps its working set in memory and the storage is its durable copy: at open
//! the driver loads everything once ([`Storage::load`]), and after each change it writes the
//! batch the node hands out (`Output::Persist` of the `node` module).
//! The trait is async so that backends which only have async APIs (IndexedDB) fit it as well
//! as blocking ones (sled, in-memory); the futures are not required to be `Send`, since
//! browsers run on one thread.
//!
//! The view is not stored: it is derived state, rebuilt from the logs at open
//! (about 0.1 s per 100,000 operations), so it can never disagree with them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::keys::WriterId;

/// Everything a backend holds, as read back at open.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadedState {
    /// Every stored entry in wire form, in any order.
    pub entries: Vec<Vec<u8>>,
    /// Stored fork evidence in wire form.
    pub forks: Vec<Vec<u8>>,
    /// Small named values (local settings, keys of the driver).
    pub meta: BTreeMap<String, Vec<u8>>,
}

/// Changes to persist atomically.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    /// New entries: (writer, seq, wire bytes).
    pub entries: Vec<(WriterId, u64, Arc<[u8]>)>,
    /// New fork evidence: (writer, wire bytes).
    pub forks: Vec<(WriterId, Vec<u8>)>,
    /// Named values to set (Some) or delete (None).
    pub meta: Vec<(String, Option<Vec<u8>>)>,
}

impl WriteBatch {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.forks.is_empty() && self.meta.is_empty()
    }

    /// Appends another batch after this one.
    pub fn extend(&mut self, other: WriteBatch) {
        self.entries.extend(other.entries);
        self.forks.extend(other.forks);
        self.meta.extend(other.meta);
    }
}

/// A durable home for one topic's logs and settings.
#[allow(async_fn_in_trait)]
pub trait Storage {
    /// Backend errors.
    type Error: std::error::Error + 'static;
    /// Reads everything back.
    async fn load(&self) -> Result<LoadedState, Self::Error>;
    /// Persists a batch atomically: after an error, none of it is stored.
    async fn write(&self, batch: &WriteBatch) -> Result<(), Self::Error>;
}

#[derive(Debug, Default)]
struct MemoryInner {
    entries: BTreeMap<(WriterId, u64), Arc<[u8]>>,
    forks: BTreeMap<WriterId, Vec<u8>>,
    meta: BTreeMap<String, Vec<u8>>,
}

/// In-memory storage. Clones share the same contents, so a replica reopened on a clone
/// sees what the first one wrote (like the seed's `RAM.reusable()`).
#[derive(Clone, Debug, Default)]
pub struct MemoryStorage {
    inner: Arc<Mutex<MemoryInner>>,
}

/// The in-memory backend's error (a poisoned lock after a panic elsewhere).
#[derive(Debug, thiserror::Error)]
#[error("in-memory storage is unusable after a panic")]
pub struct MemoryError;

impl MemoryStorage {
    /// Empty storage.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of stored entries.
    pub fn entry_count(&self) -> usize {
        self.inner.lock().map_or(0, |inner| inner.entries.len())
    }

    /// Whether the entry at (writer, seq) is stored.
    pub fn contains(&self, writer: &WriterId, seq: u64) -> bool {
        self.inner.lock().is_ok_and(|inner| inner.entries.contains_key(&(*writer, seq)))
    }
}

impl Storage for MemoryStorage {
    type Error = MemoryError;

    async fn load(&self) -> Result<LoadedState, MemoryError> {
        let inner = self.inner.lock().map_err(|_| MemoryError)?;
        Ok(LoadedState {
            entries: inner.entries.values().map(|bytes| bytes.to_vec()).collect(),
            forks: inner.forks.values().cloned().collect(),
            meta: inner.meta.clone(),
        })
    }

    async fn write(&self, batch: &WriteBatch) -> Result<(), MemoryError> {
        let mut inner = self.inner.lock().map_err(|_| MemoryError)?;
        for (writer, seq, bytes) in &batch.entries {
            inner.entries.insert((*writer, *seq), bytes.clone());
        }
        for (writer, bytes) in &batch.forks {
            inner.forks.entry(*writer).or_insert_with(|| bytes.clone());
        }
        for (key, value) in &batch.meta {
            match value {
                Some(value) => inner.meta.insert(key.clone(), value.clone()),
                None => inner.meta.remove(key),
            };
        }
        Ok(())
    }
}
