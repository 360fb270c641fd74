//! The in-memory storage backend and reopening replicas from stored state.

use futures::executor::block_on;
use hellopears_core::keys::Keypair;
use hellopears_core::replica::{OpenError, Replica};
use hellopears_core::storage::{MemoryStorage, Storage, WriteBatch};
use hellopears_core::testing::{FailingStorage, conformance};
use hellopears_core::topic::Topic;

fn persist(replica: &mut Replica, storage: &MemoryStorage) {
    let batch = replica.take_unsaved();
    block_on(storage.write(&batch)).expect("write");
}

#[test]
fn a_replica_reopens_with_the_same_logs_order_and_view() {
    let storage = MemoryStorage::new();
    let topic = Topic::from_name("todo");
    let key = Keypair::derive_for_tests(1, 0);
    let mut replica = Replica::new(topic.clone(), key.clone());
    let mut other = Replica::new(topic.clone(), Keypair::derive_for_tests(1, 1));
    for i in 0..50 {
        replica.todos().add(&format!("mine {i}"), i).expect("add");
        let theirs = other.todos().add(&format!("theirs {i}"), i).expect("add");
        if i % 3 == 0 {
            other.todos().toggle(&theirs.id, i).expect("toggle");
        }
    }
    for entry in other.take_fresh() {
        replica.ingest(entry).expect("valid");
    }
    replica.update();
    persist(&mut replica, &storage);
    let secret = key.secret();
    block_on(
        storage.write(&WriteBatch {
            meta: vec![("writer-secret".into(), Some(secret.to_vec()))],
            ..WriteBatch::default()
        }),
    )
    .expect("meta");

    // A clone of the storage handle sees the same contents (RAM.reusable()).
    let state = block_on(storage.clone().load()).expect("load");
    let stored_key = Keypair::from_secret_slice(state.meta.get("writer-secret").expect("stored key")).expect("key");
    assert_eq!(stored_key.id(), key.id());
    let (mut reopened, errors) = Replica::open(topic, stored_key, state);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(reopened.base().order_digest(), replica.base().order_digest());
    assert_eq!(reopened.db().encode(), replica.db().encode());
    assert!(reopened.take_unsaved().is_empty(), "reopening must not rewrite what is stored");
    assert!(reopened.take_fresh().is_empty());
    // And it keeps writing where it left off.
    reopened.todos().add("after reopen", 99).expect("add");
    assert_eq!(reopened.base().len(&key.id()), 51);
}

#[test]
fn corrupt_stored_entries_are_reported_and_the_rest_loads() {
    let storage = MemoryStorage::new();
    let topic = Topic::from_name("todo");
    let key = Keypair::derive_for_tests(2, 0);
    let mut replica = Replica::new(topic.clone(), key.clone());
    let mut other = Replica::new(topic.clone(), Keypair::derive_for_tests(2, 1));
    for i in 0..5 {
        replica.todos().add(&format!("{i}"), i).expect("add");
        other.todos().add(&format!("other {i}"), i).expect("add");
    }
    persist(&mut replica, &storage);
    persist(&mut other, &storage);
    let mut state = block_on(storage.load()).expect("load");
    assert_eq!(state.entries.len(), 10);
    // Flip a byte inside one stored body of `other`'s log (not its signature).
    let victim = state
        .entries
        .iter()
        .position(|bytes| bytes.len() > 100 && bytes.windows(6).any(|w| w == b"other "))
        .expect("found");
    let offset = state.entries[victim].windows(6).position(|w| w == b"other ").expect("found");
    state.entries[victim][offset] ^= 0x20;
    state.entries.push(vec![1, 2, 3]);
    let (reopened, errors) = Replica::open(topic, key, state);
    assert!(errors.iter().any(|e| matches!(e, OpenError::CorruptEntry(_))), "{errors:?}");
    assert!(errors.iter().any(|e| matches!(e, OpenError::Rejected(_))), "{errors:?}");
    // Our own log is whole; the other log keeps its entries before the corrupt one.
    assert_eq!(reopened.base().len(&replica.writer_id()), 5);
    assert!(reopened.base().len(&other.writer_id()) < 5);
}

#[test]
fn the_memory_backend_keeps_the_storage_contract() {
    let storage = MemoryStorage::new();
    block_on(conformance(|| {
        let storage = storage.clone();
        async move { storage }
    }));
}

#[test]
fn a_failing_backend_stores_nothing_of_a_failed_batch_and_recovers() {
    let storage = FailingStorage::new(MemoryStorage::new());
    let topic = Topic::from_name("todo");
    let mut replica = Replica::new(topic, Keypair::derive_for_tests(3, 0));
    replica.todos().add("one", 1).expect("add");
    storage.fail_after(1);
    block_on(storage.write(&replica.take_unsaved())).expect("first write succeeds");
    replica.todos().add("two", 2).expect("add");
    let batch = replica.take_unsaved();
    assert!(block_on(storage.write(&batch)).is_err(), "the countdown ran out");
    assert_eq!(storage.inner().entry_count(), 1, "nothing of the failed batch is stored");
    storage.heal();
    block_on(storage.write(&batch)).expect("healed");
    assert_eq!(storage.inner().entry_count(), 2);
}
