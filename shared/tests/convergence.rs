//! Convergence of replicas under random delivery: the property that matters most.

use hellopears_core::sim::{Sim, SimConfig};
use hellopears_core::ui::Command;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use rand::Rng;

/// One random scenario, fully determined by its parameters.
#[derive(Clone, Debug)]
struct Scenario {
    peers: usize,
    seed: u64,
    ops: usize,
    drop: f64,
    duplicate: f64,
    max_delay_ms: u64,
    partitions: bool,
    /// Probability that a storage write fails, and of a lost stream per tick.
    faults: f64,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (2usize..=8, any::<u64>(), 1usize..40, 0.0f64..0.3, 0.0f64..0.3, 1u64..300, any::<bool>(), 0.0f64..0.2).prop_map(
        |(peers, seed, ops, drop, duplicate, max_delay_ms, partitions, faults)| Scenario {
            peers,
            seed,
            ops,
            drop,
            duplicate,
            max_delay_ms,
            partitions,
            faults,
        },
    )
}

/// Runs a scenario: random writes (including concurrent edits of the same todos) on random
/// peers' nodes (the engine the desktop and the tab run), random delivery, failing writes,
/// lost streams, optional partitions; then heals and checks convergence.
fn run(scenario: &Scenario) -> Result<(), TestCaseError> {
    let config = SimConfig {
        drop: scenario.drop,
        duplicate: scenario.duplicate,
        min_delay_ms: 0,
        max_delay_ms: scenario.max_delay_ms,
        tick_ms: 500,
        max_messages: 2_000_000,
        fail_writes: scenario.faults,
        torn_writes: 0.5,
        lose_streams: scenario.faults / 4.0,
    };
    let mut sim = Sim::new(scenario.peers, scenario.seed, config);
    sim.connect_all();
    for _ in 0..scenario.ops {
        let peer = sim.rng().random_range(0..scenario.peers);
        let action = sim.rng().random_range(0..10u8);
        let pick = sim.rng().random_range(0..1000usize);
        let todos = hellopears_core::todo::list(sim.replica(peer).db());
        let target = (!todos.is_empty()).then(|| todos[pick % todos.len()].id.clone());
        let command = match (action, target) {
            (0..=3, _) | (_, None) => Command::Add(format!("todo {pick}")),
            (4..=5, Some(id)) => Command::Toggle(id),
            (6..=7, Some(id)) => Command::Edit(id, format!("edited {pick}")),
            (8, Some(id)) => Command::Remove(id),
            (_, Some(_)) => Command::ClearCompleted,
        };
        if let Some(Err(error)) = sim.command(peer, command) {
            return Err(TestCaseError::fail(format!("local write failed: {error}")));
        }
        if scenario.partitions && sim.rng().random_bool(0.1) {
            let groups = (0..scenario.peers).map(|_| sim.rng().random_range(0..2usize)).collect();
            sim.partition(groups);
        } else if sim.rng().random_bool(0.1) {
            sim.heal();
        }
        let wait = sim.rng().random_range(0..200u64);
        sim.run_for(wait);
    }
    sim.heal();
    let converged = sim.run_until_converged(120_000);
    let delivered = sim.stats().delivered;
    prop_assert!(delivered < 1_000_000, "message storm: {:?}\n{}", sim.stats(), sim.describe());
    prop_assert!(
        converged,
        "replicas did not converge: {:?}\n{}",
        (0..scenario.peers).map(|p| sim.digests(p)).collect::<Vec<_>>(),
        sim.describe()
    );
    let total: u64 = sim.replica(0).base().total_entries();
    if std::env::var_os("SIM_VERBOSE").is_some() {
        eprintln!(
            "{scenario:?}: {total} entries, {} todos, {:?}",
            hellopears_core::todo::list(sim.replica(0).db()).len(),
            sim.stats()
        );
    }
    for peer in 0..scenario.peers {
        let replica = sim.replica(peer);
        prop_assert_eq!(replica.base().total_entries(), total);
        prop_assert_eq!(replica.base().order().len() as u64, total);
        prop_assert_eq!(replica.base().pending_count(), 0);
        prop_assert_eq!(replica.db().encode(), sim.replica(0).db().encode());
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("proptest-regressions/convergence.txt"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn replicas_converge(scenario in scenario()) {
        run(&scenario)?;
    }
}

/// Scenarios that once failed or are worth keeping, replayed on every run.
#[test]
fn regressions() {
    let fixed = [
        Scenario {
            peers: 2,
            seed: 1,
            ops: 10,
            drop: 0.0,
            duplicate: 0.0,
            max_delay_ms: 10,
            partitions: false,
            faults: 0.0,
        },
        Scenario {
            peers: 8,
            seed: 7,
            ops: 39,
            drop: 0.29,
            duplicate: 0.29,
            max_delay_ms: 299,
            partitions: true,
            faults: 0.0,
        },
        Scenario {
            peers: 5,
            seed: 42,
            ops: 30,
            drop: 0.2,
            duplicate: 0.0,
            max_delay_ms: 150,
            partitions: true,
            faults: 0.0,
        },
        // Once stormed: re-requesting a range whose entries waited for another writer's.
        Scenario {
            peers: 8,
            seed: 284,
            ops: 24,
            drop: 0.11,
            duplicate: 0.26,
            max_delay_ms: 8,
            partitions: true,
            faults: 0.0,
        },
        Scenario {
            peers: 4,
            seed: 11,
            ops: 30,
            drop: 0.1,
            duplicate: 0.1,
            max_delay_ms: 80,
            partitions: true,
            faults: 0.2,
        },
    ];
    for scenario in &fixed {
        run(scenario).unwrap_or_else(|e| panic!("{scenario:?}: {e}"));
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("proptest-regressions/convergence.txt"))),
        ..ProptestConfig::default()
    })]

    /// However entries arrive and however often the view is updated in between (each late
    /// entry rolling back only the operations sharing its key), the result equals one
    /// in-order replay.
    #[test]
    fn reorgs_match_a_fresh_replay(
        seed in any::<u64>(),
        writers in 1usize..5,
        ops in 1usize..400,
        every in 1usize..50,
    ) {
        use hellopears_core::workload::{Workload, shuffled, todo_base};
        let entries = Workload { writers, ops, exchange_every: 7, seed }.generate();
        let mut replay = todo_base();
        for entry in &entries {
            replay.ingest_verified(entry.clone()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        replay.update();
        let mut reorged = todo_base();
        for (n, entry) in shuffled(&entries, seed ^ 1).into_iter().enumerate() {
            reorged.ingest_verified(entry).map_err(|e| TestCaseError::fail(e.to_string()))?;
            if n % every == 0 {
                reorged.update();
            }
        }
        reorged.update();
        prop_assert_eq!(reorged.order_digest(), replay.order_digest());
        prop_assert_eq!(reorged.view().encode(), replay.view().encode());
    }
}

/// A late writer's entries that touch few documents roll back only the operations on those.
#[test]
fn keyed_reorg_rolls_back_only_what_shares_a_key() {
    use hellopears_core::workload::{Workload, todo_base};
    let history = Workload { writers: 3, ops: 3000, exchange_every: 10, seed: 5 }.generate();
    let late = Workload { writers: 1, ops: 50, exchange_every: 1, seed: 6 }.generate();
    let mut base = todo_base();
    for entry in &history {
        base.ingest_verified(entry.clone()).expect("valid");
    }
    base.update();
    for entry in &late {
        base.ingest_verified(entry.clone()).expect("valid");
    }
    let stats = base.update();
    assert!(stats.rolled_back < 3000 / 10, "{stats:?}");
    assert!(stats.applied >= 50, "{stats:?}");
    let mut replay = todo_base();
    let mut all: Vec<_> = history.iter().chain(&late).cloned().collect();
    hellopears_core::log::causal_sort(&mut all);
    for entry in all {
        replay.ingest_verified(entry).expect("valid");
    }
    replay.update();
    assert_eq!(base.view().encode(), replay.view().encode());
    assert_eq!(base.order_digest(), replay.order_digest());
}
