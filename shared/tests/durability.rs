//! Nothing is lost on the way to disk: nodes driven through failing writes, crashes and
//! restarts, checked against a model of what users were told.
//!
//! The simulator itself asserts that no peer ever sends an entry (or advertises its own log
//! length) before it is in storage; these tests add crashes, which turn any such slip into
//! a lost acknowledged write or a writer that forks itself.

use std::collections::BTreeSet;

use hellopears_core::log::Entry;
use hellopears_core::node::{Config, Input, Node, Open, Output};
use hellopears_core::sim::{Sim, SimConfig};
use hellopears_core::storage::{LoadedState, MemoryStorage, Storage};
use hellopears_core::sync::Message;
use hellopears_core::testing::FailingStorage;
use hellopears_core::topic::Topic;
use hellopears_core::ui::{Command, Outcome};
use rand::Rng;

fn run(seed: u64, fail_writes: f64) {
    run_with(seed, fail_writes, 0.0);
}

fn run_with(seed: u64, fail_writes: f64, torn_writes: f64) {
    let config = SimConfig { drop: 0.05, max_delay_ms: 40, fail_writes, torn_writes, ..SimConfig::default() };
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

/// The power-loss model at the storage trait: a write cut by a power loss stores its whole
/// batch or nothing (backends are atomic per batch) and reports failure either way; crashes
/// reopen from whatever is stored. Every store reopens without errors, nothing acknowledged
/// is lost, and no writer forks (entries stored but never acknowledged are not re-signed).
#[test]
fn torn_writes_and_crashes_lose_nothing_acknowledged() {
    for seed in 200..224 {
        run_with(seed, 0.3, 1.0);
    }
}

#[test]
fn crashes_alone_lose_nothing_acknowledged() {
    for seed in 100..108 {
        run(seed, 0.0);
    }
}

/// Carries out a node's outputs on a backend that may fail: writes (reporting the result),
/// opens streams at once, checks every frame sent, collects acknowledged todos.
fn carry_out(
    node: &mut Node<u8>,
    storage: &FailingStorage<MemoryStorage>,
    outputs: Vec<Output<u8>>,
    now: u64,
    acknowledged: &mut BTreeSet<String>,
) {
    let mut queue = outputs;
    while !queue.is_empty() {
        let mut next = Vec::new();
        for output in queue {
            match output {
                Output::Persist(id, batch) => {
                    let written = futures::executor::block_on(storage.write(&batch)).map_err(|e| e.to_string());
                    next.extend(node.handle(Input::Persisted(id, written), now));
                }
                Output::OpenStream(remote) => next.extend(node.handle(Input::StreamOpened(remote), now)),
                Output::Send(_, frame) => {
                    if let Ok(Message::Entries { entries }) = Message::decode(&frame) {
                        for bytes in entries {
                            let entry = Entry::decode(&bytes).expect("our own entry");
                            assert!(storage.inner().contains(&entry.writer(), entry.seq()), "announced before stored");
                        }
                    }
                }
                Output::Reply(_, Ok(Outcome::Added(todo))) => {
                    acknowledged.insert(todo.id);
                }
                _ => {}
            }
        }
        queue = next;
    }
}

#[test]
fn a_node_on_a_failing_backend_acknowledges_and_announces_only_what_is_stored() {
    for fail_after in 0..10 {
        let storage = FailingStorage::new(MemoryStorage::new());
        storage.fail_after(fail_after);
        let topic = Topic::from_name("durable");
        let (mut node, _) =
            Node::<u8>::open(topic.clone(), LoadedState::default(), [9; 32], Config::default()).expect("open");
        let mut acknowledged = BTreeSet::new();
        let mut now = 1_000;
        let connected = node.handle(Input::Connected { remote: 1, open: Open::Now, identity: vec![] }, now);
        carry_out(&mut node, &storage, connected, now, &mut acknowledged);
        for n in 0..12 {
            now += 100;
            let outputs = node.handle(Input::Command(n, Command::Add(format!("todo {n}"))), now);
            carry_out(&mut node, &storage, outputs, now, &mut acknowledged);
            if n == 8 {
                // Storage works again: the kept batches are written on a later tick.
                storage.heal();
                now += 10_000;
                let outputs = node.handle(Input::Tick, now);
                carry_out(&mut node, &storage, outputs, now, &mut acknowledged);
            }
        }
        // A crash: what is in storage is all there is.
        let state = futures::executor::block_on(storage.inner().load()).expect("load");
        let (reopened, errors) = Node::<u8>::open(topic, state, [7; 32], Config::default()).expect("reopen");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(reopened.replica().writer_id(), node.replica().writer_id(), "the writer key was stored first");
        let kept: BTreeSet<String> =
            hellopears_core::todo::list(reopened.replica().db()).into_iter().map(|t| t.id).collect();
        let lost: Vec<&String> = acknowledged.difference(&kept).collect();
        assert!(lost.is_empty(), "fail after {fail_after}: acknowledged but lost {lost:?}");
        assert!(acknowledged.len() >= 4, "fail after {fail_after}: only {} acknowledged", acknowledged.len());
    }
}

#[test]
fn while_storage_fails_frames_are_bounded_and_replies_kept() {
    let storage = FailingStorage::new(MemoryStorage::new());
    storage.fail_after(0);
    let topic = Topic::from_name("bounded");
    let config = Config { held_limit: 8, ..Config::default() };
    let (mut node, _) = Node::<u8>::open(topic, LoadedState::default(), [5; 32], config).expect("open");
    let mut acknowledged = BTreeSet::new();
    let connected = node.handle(Input::Connected { remote: 1, open: Open::Now, identity: vec![] }, 1);
    carry_out(&mut node, &storage, connected, 1, &mut acknowledged);
    for n in 0..20 {
        let outputs = node.handle(Input::Command(n, Command::Add(format!("todo {n}"))), 2 + n);
        carry_out(&mut node, &storage, outputs, 2 + n, &mut acknowledged);
    }
    assert!(acknowledged.is_empty(), "nothing is acknowledged while nothing is stored");
    assert!(matches!(node.status(), hellopears_core::ui::SyncStatus::Failed(why) if why.contains("cannot save")));
    storage.heal();
    let outputs = node.handle(Input::Tick, 60_000);
    carry_out(&mut node, &storage, outputs, 60_000, &mut acknowledged);
    assert_eq!(acknowledged.len(), 20, "every reply was kept and sent once the batch was stored");
    assert!(node.is_durable());
}
