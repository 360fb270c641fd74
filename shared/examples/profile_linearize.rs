//! Times the phases of linearize + apply, for profiling.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::time::Instant;

use hellopears_core::workload::{Workload, shuffled, todo_base};

fn main() {
    let ops: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let entries = Workload { writers: 4, ops, exchange_every: 50, seed: 1 }.generate();
    let rounds: usize = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(1);
    for _ in 1..rounds {
        let mut base = todo_base();
        for entry in shuffled(&entries, 2) {
            let _ = base.ingest_verified(entry);
        }
        base.update();
    }
    let mut delivery = shuffled(&entries, 2);
    let start = Instant::now();
    if std::env::var_os("SORT").is_some() {
        hellopears_core::log::causal_sort(&mut delivery);
    }
    let mut base = todo_base();
    for entry in delivery {
        let _ = base.ingest_verified(entry);
    }
    let ingested = start.elapsed();
    let stats = base.update();
    let total = start.elapsed();
    println!(
        "ingest {ingested:?}, update {:?}, total {total:?}, {:.0} ops/s, {stats:?}",
        total - ingested,
        ops as f64 / total.as_secs_f64()
    );
}
