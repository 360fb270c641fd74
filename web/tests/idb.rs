//! The IndexedDB backend in a real browser (run by `wasm-bindgen-test-runner` in headless
//! Chromium from the test command).
#![cfg(target_arch = "wasm32")]

use std::sync::Arc;

use hellopears_core::keys::Keypair;
use hellopears_core::replica::{OpenError, Replica};
use hellopears_core::storage::{Storage, WriteBatch};
use hellopears_core::topic::Topic;
use hellopears_web::idb::IdbStorage;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

async fn fresh(name: &str) -> IdbStorage {
    IdbStorage::delete(name).await.expect("delete");
    IdbStorage::open(name).await.expect("open")
}

#[wasm_bindgen_test]
async fn the_indexeddb_backend_keeps_the_storage_contract() {
    let name = "test-conformance";
    IdbStorage::delete(name).await.expect("delete");
    hellopears_core::testing::conformance(|| async { IdbStorage::open(name).await.expect("open") }).await;
}

#[wasm_bindgen_test]
async fn batches_round_trip_and_survive_reopening() {
    let name = "test-round-trip";
    let storage = fresh(name).await;
    let writer = Keypair::from_secret([7; 32]).id();
    let batch = WriteBatch {
        entries: vec![(writer, 0, Arc::from(&b"first"[..])), (writer, 1, Arc::from(&b"second"[..]))],
        forks: vec![(writer, b"evidence".to_vec())],
        meta: vec![("a".into(), Some(b"1".to_vec())), ("b".into(), Some(b"2".to_vec()))],
    };
    storage.write(&batch).await.expect("write");
    storage.write(&WriteBatch { meta: vec![("b".into(), None)], ..WriteBatch::default() }).await.expect("delete meta");
    drop(storage);
    let reopened = IdbStorage::open(name).await.expect("reopen");
    let state = reopened.load().await.expect("load");
    assert_eq!(state.entries, vec![b"first".to_vec(), b"second".to_vec()]);
    assert_eq!(state.forks, vec![b"evidence".to_vec()]);
    assert_eq!(state.meta.get("a").map(Vec::as_slice), Some(&b"1"[..]));
    assert!(!state.meta.contains_key("b"));
}

#[wasm_bindgen_test]
async fn a_replica_reopens_from_indexeddb() {
    let storage = fresh("test-replica").await;
    let topic = Topic::from_name("idb");
    let keypair = Keypair::from_secret([3; 32]);
    let mut replica = Replica::new(topic.clone(), keypair.clone());
    let first = replica.todos().add("milk", 1).expect("add");
    replica.todos().add("bread", 2).expect("add");
    replica.todos().toggle(&first.id, 3).expect("toggle");
    replica.update();
    storage.write(&replica.take_unsaved()).await.expect("write");
    let (reopened, errors) = Replica::open(topic, keypair, storage.load().await.expect("load"));
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(reopened.db().count(hellopears_core::todo::COLLECTION), 2);
    assert_eq!(hellopears_core::todo::list(reopened.db()), hellopears_core::todo::list(replica.db()));
}

#[wasm_bindgen_test]
async fn damaged_records_are_reported_and_the_rest_loads() {
    let storage = fresh("test-damaged").await;
    let topic = Topic::from_name("idb-damaged");
    let keypair = Keypair::from_secret([5; 32]);
    let mut replica = Replica::new(topic.clone(), keypair.clone());
    replica.todos().add("kept", 1).expect("add");
    replica.update();
    let mut batch = replica.take_unsaved();
    // A record that is not an entry at all, as a damaged or foreign store might hold.
    batch.entries.push((Keypair::from_secret([9; 32]).id(), 0, Arc::from(&b"\x01garbage"[..])));
    storage.write(&batch).await.expect("write");
    let (reopened, errors) = Replica::open(topic, keypair, storage.load().await.expect("load"));
    assert!(matches!(errors.as_slice(), [OpenError::CorruptEntry(_)]), "{errors:?}");
    assert_eq!(reopened.db().count(hellopears_core::todo::COLLECTION), 1);
}

/// The core's checks of seqs beyond 32 bits, on the 32-bit target where they matter.
#[wasm_bindgen_test]
fn seqs_beyond_32_bits_mean_the_same_in_the_tab() {
    assert_eq!(std::mem::size_of::<usize>(), 4, "this runs on wasm32");
    hellopears_core::testing::check_seqs_beyond_32_bits();
}

/// Finding 8: a flood of peer-exchange addresses cannot push the desktops the page named
/// out of the tab's memory.
#[wasm_bindgen_test]
fn a_flood_of_learned_addresses_keeps_the_named_desktops() {
    use hellopears_web::addresses::{AddressBook, MAX_LEARNED};
    let mut book = AddressBook::default();
    assert!(book.learn("desktop".to_owned(), true));
    for n in 0..1_000 {
        book.learn(format!("attacker {n}"), false);
    }
    assert_eq!(book.named, vec!["desktop".to_owned()]);
    assert_eq!(book.learned.len(), MAX_LEARNED);
    assert_eq!(book.all().next().map(String::as_str), Some("desktop"));
}
