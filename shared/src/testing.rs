//! Test utilities for storage backends: a conformance suite every backend runs (memory,
//! sled, IndexedDB), and a backend that fails on command (feature `test-utils`).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::keys::Keypair;
use crate::replica::Replica;
use crate::storage::{LoadedState, Storage, WriteBatch};
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

/// Seqs beyond 32 bits mean the same on every target (wasm32's `usize` is 32 bits): an
/// entry naming head seq 2^32 + k is never taken for seq k, an entry at seq 2^32 is never
/// taken for a fork of seq 0, and a request from 2^32 returns nothing. Panics otherwise.
/// Run by the native tests and by the wasm test suite in a browser.
pub fn check_seqs_beyond_32_bits() {
    use crate::base::{Base, IngestError, Ingested};
    use crate::db::{Db, DbOp};
    use crate::log::{Entry, EntryBody, Head};

    let op = DbOp::Delete { collection: "todos".into(), id: "x".into() }.encode();
    let honest = Keypair::derive_for_tests(300, 0);
    let attacker = Keypair::derive_for_tests(300, 1);
    let mut base = Base::new(Db::new());
    let first = base.append_local(&honest, op.clone()).expect("append");
    let second = base.append_local(&honest, op.clone()).expect("append");
    // Heads variant: a head at 2^32 + 1 carrying the hash of seq 1.
    let body = EntryBody {
        writer: attacker.id(),
        seq: 0,
        prev: None,
        heads: vec![Head { writer: honest.id(), seq: (1 << 32) + 1, hash: second.hash() }],
        clock: second.clock() + 1,
        payload: op.clone(),
    };
    let wide_head = Entry::sign(body, &attacker);
    assert_eq!(base.ingest(wide_head), Ok(Ingested::Pending), "a head at 2^32 + 1 is not seq 1");
    assert_eq!(base.len(&attacker.id()), 0);
    // Fork variant: an entry of the honest writer at seq 2^32 is not a second seq 0.
    let body =
        EntryBody { writer: honest.id(), seq: 1 << 32, prev: Some(first.hash()), heads: vec![], clock: 5, payload: op };
    let wide_seq = Entry::sign(body, &honest);
    assert!(
        matches!(base.ingest(wide_seq), Err(IngestError::SeqTooFarAhead { .. })),
        "an entry at 2^32 is refused as far ahead, not taken for a fork"
    );
    assert!(!base.is_quarantined(&honest.id()));
    // A request from 2^32 is empty, never the whole log.
    assert_eq!(base.range(&honest.id(), 1 << 32, (1 << 32) + 256).count(), 0);
    assert_eq!(base.range(&honest.id(), 0, u64::MAX).count(), 2);
    assert!(base.entry(&honest.id(), 1 << 32).is_none());
}

/// A sync session over `replica` whose remote has said `Hello` on its public topic.
pub fn introduced_session(replica: &mut crate::replica::Replica) -> crate::sync::Session {
    use crate::sync::{Message, Session, SessionConfig};
    let mut session = Session::new(SessionConfig::default());
    session.start(replica, 0);
    let hello = Message::Hello { discovery: replica.topic().discovery_key(), acknowledged: true, proof: None };
    session.handle(replica, hello, 0).expect("hello");
    session
}
