//! Times the phases of linearize + apply, for profiling:
//! `profile_linearize [OPS] [ROUNDS]`; every round ingests a shuffled history
//! (sorted causally first when `SORT` is set) and applies it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use hellopears_core::log::causal_sort;
use hellopears_core::workload::{Workload, shuffled, todo_base};

fn main() {
    let ops: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let rounds: u32 = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(1);
    let entries = Workload { writers: 4, ops, exchange_every: 50, seed: 1 }.generate();
    let (mut sort, mut ingest, mut update) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for _ in 0..rounds {
        let mut delivery = shuffled(&entries, 2);
        let start = Instant::now();
        if std::env::var_os("SORT").is_some() {
            causal_sort(&mut delivery);
        }
        let sorted = Instant::now();
        sort += sorted - start;
        let mut base = todo_base();
        for entry in delivery {
            let _ = base.ingest_verified(entry);
        }
        let ingested = Instant::now();
        base.update();
        ingest += ingested - sorted;
        update += ingested.elapsed();
    }
    let per_op = |d: Duration| d.as_nanos() as f64 / (rounds as f64 * ops as f64);
    println!(
        "per op: sort {:.0} ns, ingest {:.0} ns, update {:.0} ns, total {:.0} ns",
        per_op(sort),
        per_op(ingest),
        per_op(update),
        per_op(sort + ingest + update)
    );
}
