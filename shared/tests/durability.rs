//! Nothing is lost on the way to disk: nodes driven through failing writes, crashes and
//! restarts, checked against a model of what users were told.
//!
//! The simulator itself asserts that no peer ever sends an entry (or advertises its own log
//! length) before it is in storage; these tests add crashes, which turn any such slip into
//! a lost acknowledged write or a writer that forks itself.

use std::collections::BTreeSet;

use hellopears_core::sim::{Sim, SimConfig};
use hellopears_core::ui::{Command, Outcome};
use rand::Rng;

fn run(seed: u64, fail_writes: f64) {
    let config = SimConfig { drop: 0.05, max_delay_ms: 40, fail_writes, ..SimConfig::default() };
    let peers = 3;
    let mut sim = Sim::new(peers, seed, config);
    sim.connect_all();
    // The model: every todo a user was told was added.
    let mut acknowledged: BTreeSet<String> = BTreeSet::new();
    for step in 0..120 {
        let peer = sim.rng().random_range(0..peers);
        let toggle = sim.rng().random_bool(0.3);
        let todos = hellopears_core::todo::list(sim.replica(peer).db());
        let command = match todos.first() {
            Some(todo) if toggle => Command::Toggle(todo.id.clone()),
            _ => Command::Add(format!("step {step}")),
        };
        match sim.command(peer, command) {
            Some(Ok(Outcome::Added(todo))) => {
                acknowledged.insert(todo.id);
            }
            Some(Ok(_)) | None => {}
            Some(Err(error)) => panic!("command failed: {error}"),
        }
        for (_, reply) in sim.take_replies(peer) {
            if let Ok(Outcome::Added(todo)) = reply {
                acknowledged.insert(todo.id);
            }
        }
        if sim.rng().random_bool(0.1) {
            // A crash loses what was not durable; the peer reopens from its storage.
            let victim = sim.rng().random_range(0..peers);
            sim.crash_and_restart(victim);
        }
        let wait = sim.rng().random_range(0..300);
        sim.run_for(wait);
    }
    assert!(sim.run_until_converged(300_000), "no convergence:\n{}", sim.describe());
    assert!(sim.stats().failed_writes > 0 || fail_writes == 0.0, "no write failed: {:?}", sim.stats());
    for peer in 0..peers {
        let replica = sim.replica(peer);
        let ids: BTreeSet<String> = hellopears_core::todo::list(replica.db()).into_iter().map(|t| t.id).collect();
        let lost: Vec<&String> = acknowledged.difference(&ids).collect();
        assert!(lost.is_empty(), "peer {peer} lost acknowledged todos {lost:?} (seed {seed})");
        let forked: Vec<_> = replica.base().writers().into_iter().filter(|w| w.quarantined).collect();
        assert!(forked.is_empty(), "a writer forked itself: {forked:?} (seed {seed})");
        assert!(replica.base().forks().is_empty());
    }
}

#[test]
fn acknowledged_writes_survive_failing_storage_and_crashes() {
    for seed in 0..24 {
        run(seed, 0.3);
    }
}

#[test]
fn crashes_alone_lose_nothing_acknowledged() {
    for seed in 100..108 {
        run(seed, 0.0);
    }
}
