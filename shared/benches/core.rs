//! Core benchmarks: linearize + apply, verify + ingest against raw `verify_strict`, reorg,
//! private lists, and DB queries with and without an index.
//! Run with `cargo xtask bench` (or `cargo bench -p hellopears-core --features test-utils`).

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

// The desktop peer runs on mimalloc; measure the core the way it runs there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use ed25519_dalek::Signature;
use hellopears_core::keys::entry_signing_message;
use hellopears_core::log::{Entry, causal_sort};
use hellopears_core::workload::{Workload, shuffled, todo_base};

const OPS: usize = 100_000;

fn linearize_apply(c: &mut Criterion) {
    let entries = Workload { writers: 4, ops: OPS, exchange_every: 50, seed: 1 }.generate();
    let delivery = shuffled(&entries, 2);
    let mut group = c.benchmark_group("linearize_apply");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(delivery.len() as u64));
    group.bench_function("100k_ops_4_writers_random_order", |b| {
        b.iter_batched(
            || delivery.clone(),
            |mut delivery| {
                let mut base = todo_base();
                causal_sort(&mut delivery);
                for entry in delivery {
                    let _ = base.ingest_verified(entry);
                }
                let stats = base.update();
                assert_eq!(stats.applied, OPS);
                black_box(base)
            },
            BatchSize::LargeInput,
        );
    });
    // The same history, already integrated (verified, chained, dependencies checked, payloads
    // decoded): sorting it into the linear order and applying it to the DB view.
    group.bench_function("100k_ops_4_writers_order_and_apply_only", |b| {
        b.iter_batched(
            || {
                let mut base = todo_base();
                // In causal order: the pending set is bounded, a shuffled 100k would overflow it.
                let mut ordered = delivery.clone();
                causal_sort(&mut ordered);
                for entry in ordered {
                    let _ = base.ingest_verified(entry);
                }
                base
            },
            |mut base| {
                let stats = base.update();
                assert_eq!(stats.applied, OPS);
                black_box(base)
            },
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

fn verify_ingest(c: &mut Criterion) {
    // Eight writers: one writer's 100k entries would pass its quota (limits::MAX_WRITER_BYTES).
    let entries = Workload { writers: 8, ops: OPS, exchange_every: 1, seed: 3 }.generate();
    let keys: Vec<_> = entries.iter().map(|e| e.writer().verifying_key().expect("valid key")).collect();
    let mut group = c.benchmark_group("verify");
    group.sample_size(10).measurement_time(Duration::from_secs(40));
    group.throughput(Throughput::Elements(entries.len() as u64));
    group.bench_function("raw_verify_strict_100k", |b| {
        b.iter(|| {
            for (entry, key) in entries.iter().zip(&keys) {
                let bytes = entry.bytes();
                let mut signature = [0u8; 64];
                signature.copy_from_slice(&bytes[bytes.len() - 64..]);
                let message = entry_signing_message(entry.version(), &[0; 32], &entry.hash());
                assert!(key.verify_strict(&message, &Signature::from_bytes(&signature)).is_ok());
            }
        });
    });
    let wire: Vec<Vec<u8>> = entries.iter().map(|e| e.bytes().to_vec()).collect();
    group.bench_function("decode_verify_ingest_100k", |b| {
        b.iter_batched(
            || wire.clone(),
            |wire| {
                let mut base = todo_base();
                for bytes in wire {
                    let entry = Entry::decode(&bytes).expect("valid");
                    base.ingest(entry).expect("valid");
                }
                black_box(base)
            },
            BatchSize::LargeInput,
        );
    });
    // One writer writing in batches of 100, as the peer does (`seed`): one seal per run.
    let batched = Workload { writers: 1, ops: OPS, exchange_every: 1, seed: 6 }.generate_in_batches(100);
    let wire: Vec<Vec<u8>> = batched.iter().map(|e| e.bytes().to_vec()).collect();
    group.bench_function("decode_check_runs_ingest_100k", |b| {
        b.iter_batched(
            || wire.clone(),
            |wire| {
                let mut base = todo_base();
                let mut run = Vec::with_capacity(100);
                for bytes in wire {
                    let entry = Entry::decode(&bytes).expect("valid");
                    let sealed = entry.is_sealed();
                    run.push(entry);
                    if sealed {
                        for outcome in base.ingest_run(&run) {
                            outcome.expect("valid");
                        }
                        run.clear();
                    }
                }
                black_box(base)
            },
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

fn reorg(c: &mut Criterion) {
    // Four writers write 110,000 operations; the fourth goes offline at the start, so its
    // 10,000 entries (clocks from 1) sort all through the 100,000 the others wrote.
    let history = Workload { writers: 3, ops: OPS, exchange_every: 50, seed: 4 }.generate();
    let offline = Workload { writers: 1, ops: 10_000, exchange_every: 1, seed: 5 }.generate();
    // The late entries sort from the very start of the history: a reorg of the whole tail.
    let first_late = offline.iter().map(Entry::clock).min().unwrap_or(0);
    let history_max = history.iter().map(Entry::clock).max().unwrap_or(0);
    assert!(first_late <= 2 && history_max > 10_000, "late entries must interleave the whole history");
    let mut group = c.benchmark_group("reorg");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(offline.len() as u64));
    group.bench_function("10k_late_into_100k", |b| {
        b.iter_batched(
            || {
                let mut base = todo_base();
                for entry in &history {
                    let _ = base.ingest_verified(entry.clone());
                }
                base.update();
                (base, offline.clone())
            },
            |(mut base, mut late)| {
                causal_sort(&mut late);
                for entry in late {
                    let _ = base.ingest_verified(entry);
                }
                let stats = base.update();
                assert!(stats.applied >= 10_000, "{stats:?}");
                black_box(base)
            },
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

/// The cost of a private list's encryption: one writer's 20,000 todos, decoded, verified,
/// ingested, linearized and applied by a fresh replica, on a public topic and on a private
/// list (where every payload is decrypted, and was encrypted when written).
fn private_list(c: &mut Criterion) {
    use hellopears_core::access::Capability;
    use hellopears_core::keys::Keypair;
    use hellopears_core::replica::Replica;
    use hellopears_core::topic::Topic;
    const TODOS: usize = 20_000;
    let owner = Keypair::derive_for_tests(77, 0);
    let topics = [
        ("public", Topic::from_name("bench")),
        ("private", Topic::private("bench".into(), Capability::Root([5; 32]), owner.id())),
    ];
    let mut group = c.benchmark_group("private_list");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(TODOS as u64));
    for (label, topic) in topics {
        group.bench_function(format!("write_20k_{label}"), |b| {
            b.iter(|| {
                let mut writer = Replica::new(topic.clone(), owner.clone());
                for n in 0..TODOS {
                    writer.todos().add(&format!("todo number {n}"), n as i64).expect("writes");
                }
                black_box(writer)
            });
        });
        let mut writer = Replica::new(topic.clone(), owner.clone());
        for n in 0..TODOS {
            writer.todos().add(&format!("todo number {n}"), n as i64).expect("writes");
        }
        let wire: Vec<Vec<u8>> =
            writer.base().range(&owner.id(), 0, u64::MAX).map(|entry| entry.bytes().to_vec()).collect();
        group.bench_function(format!("decode_verify_ingest_apply_20k_{label}"), |b| {
            b.iter_batched(
                || wire.clone(),
                |wire| {
                    // Another device of the owner's (it holds the root secret, so key 0).
                    let mut reader = Replica::new(topic.clone(), Keypair::derive_for_tests(77, 1));
                    for bytes in wire {
                        let entry = Entry::decode(&bytes).expect("valid");
                        reader.ingest(entry).expect("valid");
                    }
                    reader.update();
                    assert_eq!(reader.db().count("todos"), TODOS);
                    black_box(reader)
                },
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

/// DB queries on 20,000 todos (a tenth of them done): the done ones through the `done`
/// index and by a full scan, and the whole list sorted by creation (what `list` does).
fn db_queries(c: &mut Criterion) {
    use hellopears_core::db::{Filter, Query, Value};
    let mut replica = hellopears_core::Replica::new(
        hellopears_core::topic::Topic::from_name("bench"),
        hellopears_core::keys::Keypair::derive_for_tests(7, 0),
    );
    const TODOS: usize = 20_000;
    for n in 0..TODOS {
        replica.todos().add(&format!("todo {n}"), n as i64).expect("add");
    }
    for todo in hellopears_core::todo::list(replica.db()).into_iter().step_by(10) {
        replica.todos().set_done(&todo.id, true, 1).expect("done");
    }
    let db = replica.db();
    let done = Query::new(Filter::eq("done", Value::Bool(true)));
    assert_eq!(db.find("todos", &done).len(), TODOS / 10);
    let mut group = c.benchmark_group("db_query");
    group.sample_size(10).measurement_time(Duration::from_secs(5));
    group.bench_function("done_of_20k_indexed", |b| b.iter(|| black_box(db.find("todos", &done).len())));
    group.bench_function("done_of_20k_full_scan", |b| b.iter(|| black_box(db.find_scan("todos", &done).len())));
    group.throughput(Throughput::Elements(TODOS as u64));
    group.bench_function("list_20k_sorted", |b| b.iter(|| black_box(hellopears_core::todo::list(db).len())));
    group.finish();
}

criterion_group!(benches, linearize_apply, verify_ingest, reorg, private_list, db_queries);
criterion_main!(benches);
