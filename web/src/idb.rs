//! The core's storage trait on IndexedDB: one database per topic with three object stores
//! (`entries` keyed `writer/seq`, `forks` keyed by writer, `meta` keyed by name), values as
//! raw bytes. A batch is one read-write transaction, so it lands whole or not at all.

use hellopears_core::storage::{LoadedState, Storage, WriteBatch};
use hellopears_core::topic::Topic;
use indexed_db_futures::database::Database;
use indexed_db_futures::prelude::*;
use indexed_db_futures::transaction::{TransactionDurability, TransactionMode, TransactionOptions};
use wasm_bindgen::{JsCast, JsValue};

const ENTRIES: &str = "entries";
const FORKS: &str = "forks";
const META: &str = "meta";
const VERSION: u8 = 1;

/// An IndexedDB failure, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("IndexedDB: {what}: {detail}")]
pub struct IdbError {
    what: &'static str,
    detail: String,
}

fn err<E: std::fmt::Debug>(what: &'static str) -> impl FnOnce(E) -> IdbError {
    move |error| IdbError { what, detail: format!("{error:?}") }
}

/// One topic's replica in IndexedDB. Clones share the open database, so writes can run in
/// tasks of their own.
#[derive(Clone, Debug)]
pub struct IdbStorage {
    db: std::rc::Rc<Database>,
}

/// The database name for a topic (by id, so names with odd characters are fine).
pub fn database_name(topic: &Topic) -> String {
    format!("hellopears-{}", topic.id())
}

impl IdbStorage {
    /// Opens (creating if needed) the database named `name`.
    pub async fn open(name: &str) -> Result<Self, IdbError> {
        let db = Database::open(name)
            .with_version(VERSION)
            .with_on_upgrade_needed(|_event, db| {
                for store in [ENTRIES, FORKS, META] {
                    if !db.object_store_names().any(|existing| existing == store) {
                        db.create_object_store(store).build()?;
                    }
                }
                Ok(())
            })
            .await
            .map_err(err("opening the database"))?;
        Ok(Self { db: std::rc::Rc::new(db) })
    }

    /// Deletes a database (tests, and "forget this topic").
    pub async fn delete(name: &str) -> Result<(), IdbError> {
        Database::delete_by_name(name)
            .map_err(err("deleting the database"))?
            .await
            .map_err(err("deleting the database"))?;
        Ok(())
    }
}

/// Every value of an object store, in key order.
async fn values_of(
    tx: &indexed_db_futures::transaction::Transaction<'_>,
    store: &'static str,
) -> Result<Vec<JsValue>, IdbError> {
    let store = tx.object_store(store).map_err(err("opening a store"))?;
    store
        .get_all::<JsValue>()
        .primitive()
        .map_err(err("reading a store"))?
        .await
        .map_err(err("reading a store"))?
        .collect::<Result<_, _>>()
        .map_err(err("reading a store"))
}

fn bytes_of(value: &JsValue) -> Option<Vec<u8>> {
    value.dyn_ref::<js_sys::Uint8Array>().map(js_sys::Uint8Array::to_vec)
}

impl Storage for IdbStorage {
    type Error = IdbError;

    async fn load(&self) -> Result<LoadedState, IdbError> {
        let tx = self.db.transaction([ENTRIES, FORKS, META]).build().map_err(err("starting a read"))?;
        let mut state = LoadedState::default();
        // A value that is not bytes loads as empty (and the replica reports it as corrupt).
        let as_bytes = |values: Vec<JsValue>| values.iter().map(|v| bytes_of(v).unwrap_or_default()).collect();
        state.entries = as_bytes(values_of(&tx, ENTRIES).await?);
        state.forks = as_bytes(values_of(&tx, FORKS).await?);
        let meta = tx.object_store(META).map_err(err("opening meta"))?;
        let keys: Vec<String> = meta
            .get_all_keys::<String>()
            .primitive()
            .map_err(err("reading meta keys"))?
            .await
            .map_err(err("reading meta keys"))?
            .collect::<Result<_, _>>()
            .map_err(err("reading meta keys"))?;
        let values = values_of(&tx, META).await?;
        for (key, value) in keys.into_iter().zip(values) {
            if let Some(bytes) = bytes_of(&value) {
                state.meta.insert(key, bytes);
            }
        }
        Ok(state)
    }

    async fn write(&self, batch: &WriteBatch) -> Result<(), IdbError> {
        if batch.is_empty() {
            return Ok(());
        }
        let tx = self
            .db
            .transaction([ENTRIES, FORKS, META])
            .with_mode(TransactionMode::Readwrite)
            // Committed only once on disk: a batch is acknowledged to the user and announced
            // to peers after this write, so "written to the OS" (Chromium's default) is not
            // enough.
            .with_options(TransactionOptions::new().with_durability(TransactionDurability::Strict))
            .build()
            .map_err(err("starting a write"))?;
        let entries = tx.object_store(ENTRIES).map_err(err("opening entries"))?;
        for (writer, seq, bytes) in &batch.entries {
            let value: JsValue = js_sys::Uint8Array::from(&bytes[..]).into();
            entries
                .put(value)
                .with_key(format!("{}/{seq:020}", writer.to_hex()))
                .primitive()
                .map_err(err("writing an entry"))?;
        }
        let forks = tx.object_store(FORKS).map_err(err("opening forks"))?;
        for (writer, bytes) in &batch.forks {
            let value: JsValue = js_sys::Uint8Array::from(&bytes[..]).into();
            forks.put(value).with_key(writer.to_hex()).primitive().map_err(err("writing fork evidence"))?;
        }
        let meta = tx.object_store(META).map_err(err("opening meta"))?;
        for (key, value) in &batch.meta {
            match value {
                Some(bytes) => {
                    let value: JsValue = js_sys::Uint8Array::from(&bytes[..]).into();
                    meta.put(value).with_key(key.clone()).primitive().map_err(err("writing meta"))?;
                }
                None => {
                    meta.delete(key.clone()).primitive().map_err(err("deleting meta"))?;
                }
            }
        }
        tx.commit().await.map_err(err("committing"))?;
        Ok(())
    }
}
