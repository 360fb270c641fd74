//! Persistence behind a small trait, with an in-memory backend (the seed's `RAM.reusable()`).
//!
//! The replica keeps its working set in memory and the storage is its durable copy: at open
//! the driver loads everything once ([`Storage::load`]), and after each change it writes the
//! batch the replica hands out ([`Replica::take_unsaved`](crate::replica::Replica::take_unsaved)).
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

/// Test utilities for storage backends: a conformance suite every backend runs, and a
/// backend that fails on command.
#[cfg(feature = "test-utils")]
pub mod testing {
    use std::future::Future;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::{LoadedState, Storage, WriteBatch};
    use crate::keys::Keypair;
    use crate::replica::Replica;
    use crate::topic::Topic;

    /// The write error of a [`FailingStorage`].
    #[derive(Debug, thiserror::Error)]
    pub enum FailingError<E> {
        /// The injected failure.
        #[error("injected write failure")]
        Injected,
        /// The wrapped backend's own error.
        #[error(transparent)]
        Inner(E),
    }

    /// Wraps a backend so that writes fail after a countdown (nothing of a failed batch is
    /// stored), until [`FailingStorage::heal`]. Clones share the countdown.
    #[derive(Clone, Debug)]
    pub struct FailingStorage<S> {
        inner: S,
        /// Writes that still succeed; `u64::MAX`: never fail.
        left: Arc<AtomicU64>,
    }

    impl<S> FailingStorage<S> {
        /// Wraps `inner`; nothing fails until [`FailingStorage::fail_after`].
        pub fn new(inner: S) -> Self {
            Self { inner, left: Arc::new(AtomicU64::new(u64::MAX)) }
        }

        /// The next `writes` writes succeed, every one after them fails.
        pub fn fail_after(&self, writes: u64) {
            self.left.store(writes, Ordering::SeqCst);
        }

        /// Writes succeed again.
        pub fn heal(&self) {
            self.left.store(u64::MAX, Ordering::SeqCst);
        }

        /// The wrapped backend.
        pub fn inner(&self) -> &S {
            &self.inner
        }
    }

    impl<S: Storage> Storage for FailingStorage<S> {
        type Error = FailingError<S::Error>;

        async fn load(&self) -> Result<LoadedState, Self::Error> {
            self.inner.load().await.map_err(FailingError::Inner)
        }

        async fn write(&self, batch: &WriteBatch) -> Result<(), Self::Error> {
            let allowed = self
                .left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| match left {
                    u64::MAX => Some(u64::MAX),
                    0 => None,
                    n => Some(n - 1),
                })
                .is_ok();
            if !allowed {
                return Err(FailingError::Injected);
            }
            self.inner.write(batch).await.map_err(FailingError::Inner)
        }
    }

    /// Two writers' batches for the suite: real signed entries.
    fn batches() -> (WriteBatch, WriteBatch) {
        let topic = Topic::from_name("conformance");
        let mut mine = Replica::new(topic.clone(), Keypair::derive_for_tests(7, 0));
        let mut theirs = Replica::new(topic, Keypair::derive_for_tests(7, 1));
        for i in 0..40 {
            let _ = mine.todos().add(&format!("mine {i}"), i);
            let _ = theirs.todos().add(&format!("theirs {i}"), i);
        }
        let mut first = mine.take_unsaved();
        first.meta.push(("writer-secret".into(), Some(vec![1; 32])));
        first.meta.push(("scratch".into(), Some(b"to be deleted".to_vec())));
        let mut second = theirs.take_unsaved();
        second.meta.push(("scratch".into(), None));
        second.meta.push(("known-peers".into(), Some(b"[]".to_vec())));
        (first, second)
    }

    fn sorted(mut state: LoadedState) -> LoadedState {
        state.entries.sort();
        state.forks.sort();
        state
    }

    /// The storage contract, checked on any backend: `open` opens the same store anew each
    /// time (after the previous handle was dropped). Panics on the first broken promise.
    pub async fn conformance<S, F, Fut>(open: F)
    where
        S: Storage,
        F: Fn() -> Fut,
        Fut: Future<Output = S>,
    {
        let (first, second) = batches();
        let expected_entries = |batches: &[&WriteBatch]| {
            let mut entries: Vec<Vec<u8>> =
                batches.iter().flat_map(|b| b.entries.iter().map(|(_, _, bytes)| bytes.to_vec())).collect();
            entries.sort();
            entries
        };
        {
            let store = open().await;
            let empty = store.load().await.unwrap_or_else(|e| panic!("load of a new store: {e}"));
            assert_eq!(empty, LoadedState::default(), "a new store is empty");
            store.write(&first).await.unwrap_or_else(|e| panic!("write: {e}"));
            let loaded = sorted(store.load().await.unwrap_or_else(|e| panic!("load: {e}")));
            assert_eq!(loaded.entries, expected_entries(&[&first]), "entries read back as written");
            assert_eq!(loaded.meta.get("scratch").map(Vec::as_slice), Some(&b"to be deleted"[..]));
            // Writing the same entries again changes nothing.
            store.write(&first).await.unwrap_or_else(|e| panic!("rewrite: {e}"));
            store.write(&second).await.unwrap_or_else(|e| panic!("write: {e}"));
            store.write(&WriteBatch::default()).await.unwrap_or_else(|e| panic!("empty write: {e}"));
        }
        let store = open().await;
        let loaded = sorted(store.load().await.unwrap_or_else(|e| panic!("load after reopening: {e}")));
        assert_eq!(loaded.entries, expected_entries(&[&first, &second]), "everything written survives reopening");
        assert_eq!(loaded.meta.get("scratch"), None, "a deleted value stays deleted");
        assert_eq!(loaded.meta.get("writer-secret").map(Vec::len), Some(32));
        assert_eq!(loaded.meta.get("known-peers").map(Vec::as_slice), Some(&b"[]"[..]));
        assert!(loaded.forks.is_empty());
    }
}
