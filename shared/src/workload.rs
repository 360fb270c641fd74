//! Deterministic todo workloads for benchmarks and tests: several writers editing a shared
//! list, exchanging entries every so often, so histories have real causal heads and
//! concurrent edits of the same todos.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::base::Base;
use crate::db::{Db, DbOp, Document, Update, Value};
use crate::keys::Keypair;
use crate::log::Entry;
use crate::todo::COLLECTION;

/// Shape of a workload.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Writers.
    pub writers: usize,
    /// Operations in all.
    pub ops: usize,
    /// Each writer ingests the others' entries after this many of its own operations.
    pub exchange_every: usize,
    /// Seed for keys and choices.
    pub seed: u64,
}

/// A fresh base configured like a replica's (author stamping, todo indexes).
pub fn todo_base() -> Base<Db> {
    Base::new(crate::todo::view())
}

impl Workload {
    /// Generates the signed entries, in the order they were written (interleaved by writer),
    /// every entry sealed.
    pub fn generate(&self) -> Vec<Entry> {
        self.generate_in_batches(1)
    }

    /// Like [`Workload::generate`], each writer sealing only the last entry of every `batch`
    /// of its own (as a peer writing in batches does); every writer's last entry is sealed.
    pub fn generate_in_batches(&self, batch: usize) -> Vec<Entry> {
        let batch = batch.max(1);
        let mut written = vec![0usize; self.writers];
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let keys: Vec<Keypair> = (0..self.writers).map(|i| Keypair::derive_for_tests(self.seed, i as u64)).collect();
        let mut bases: Vec<Base<Db>> = (0..self.writers).map(|_| todo_base()).collect();
        let mut all: Vec<Entry> = Vec::with_capacity(self.ops);
        let mut ids: Vec<String> = Vec::new();
        let mut seen = vec![0usize; self.writers];
        for n in 0..self.ops {
            let w = n % self.writers;
            if (n / self.writers).is_multiple_of(self.exchange_every.max(1)) {
                for entry in &all[seen[w]..] {
                    let _ = bases[w].ingest_verified(entry.clone());
                }
                seen[w] = all.len();
            }
            let choice = rng.random_range(0..10u8);
            let now = n as i64;
            let op = match (choice, ids.is_empty()) {
                (0..=3, _) | (_, true) => {
                    let seq = bases[w].len(&keys[w].id());
                    let id = crate::db::derived_id(&keys[w].id(), seq, crate::todo::ID_LEN);
                    ids.push(id.clone());
                    let mut doc = Document::new();
                    doc.insert("_id".into(), Value::Str(id.into()));
                    doc.insert("text".into(), Value::Str(format!("todo number {n}").into()));
                    doc.insert("done".into(), Value::Bool(false));
                    doc.insert("created".into(), Value::Int(now));
                    doc.insert("updated".into(), Value::Int(now));
                    DbOp::Insert { collection: COLLECTION.into(), doc: doc.into() }
                }
                (4..=6, false) => {
                    let id = ids[rng.random_range(0..ids.len())].clone();
                    let update = Update::set("done", rng.random_bool(0.5)).and_set("updated", now);
                    DbOp::Update { collection: COLLECTION.into(), id: id.into(), update: Box::new(update) }
                }
                (7..=8, false) => {
                    let id = ids[rng.random_range(0..ids.len())].clone();
                    let update = Update::set("text", format!("edited {n}")).and_set("updated", now);
                    DbOp::Update { collection: COLLECTION.into(), id: id.into(), update: Box::new(update) }
                }
                (_, false) => {
                    let id = ids.swap_remove(rng.random_range(0..ids.len()));
                    DbOp::Delete { collection: COLLECTION.into(), id: id.into() }
                }
            };
            written[w] += 1;
            let seal = written[w].is_multiple_of(batch);
            if let Ok(entry) = bases[w].append_local_with(&keys[w], op.encode(), seal) {
                all.push(entry);
            }
        }
        for (base, key) in bases.iter_mut().zip(&keys) {
            if let Some(sealed) = base.seal_local_tip(key)
                && let Some(last) = all.iter_mut().rev().find(|entry| entry.hash() == sealed.hash())
            {
                *last = sealed;
            }
        }
        all
    }
}

/// Shuffles entries with a seed (random delivery order).
pub fn shuffled(entries: &[Entry], seed: u64) -> Vec<Entry> {
    let mut out = entries.to_vec();
    out.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    out
}
