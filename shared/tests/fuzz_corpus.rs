//! Replays the fuzz corpora (seeds and anything the fuzzers found) as ordinary tests, and
//! throws random and mutated bytes at the same entry points.

use std::path::Path;

use hellopears_core::fuzzing::{control_request, db_op, entry_decode, seed_corpus, sync_session};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// A fuzz target's entry point.
type Target = fn(&[u8]);

fn replay(target: &str, run: Target) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut count = 0;
    for file in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display())) {
        let path = file.expect("corpus entry").path();
        let data = std::fs::read(&path).expect("corpus file");
        run(&data);
        count += 1;
    }
    count
}

#[test]
fn entry_decode_corpus_replays() {
    assert!(replay("entry_decode", entry_decode) >= 5);
}

#[test]
fn sync_session_corpus_replays() {
    assert!(replay("sync_session", sync_session) >= 5);
}

#[test]
fn db_op_corpus_replays() {
    assert!(replay("db_op", db_op) >= 5);
}

#[test]
fn control_request_corpus_replays() {
    assert!(replay("control_request", control_request) >= 5);
}

/// Inputs that once crashed a fuzz target (`fuzz/artifacts/<target>/`, when any were
/// found) replay without a panic.
#[test]
fn crashers_replay() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/crashers");
    let targets: [(&str, Target); 4] = [
        ("entry_decode", entry_decode),
        ("sync_session", sync_session),
        ("db_op", db_op),
        ("control_request", control_request),
    ];
    for (target, run) in targets {
        let Ok(files) = std::fs::read_dir(root.join(target)) else { continue };
        for file in files {
            let data = std::fs::read(file.expect("crasher").path()).expect("crasher file");
            run(&data);
        }
    }
}

fn seeds(target: &'static str) -> Vec<Vec<u8>> {
    seed_corpus().into_iter().filter(|(t, _, _)| *t == target).map(|(_, _, bytes)| bytes).collect()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2000,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("proptest-regressions/fuzz_corpus.txt"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        entry_decode(&data);
        sync_session(&data);
        db_op(&data);
        control_request(&data);
    }

    #[test]
    fn mutated_seeds_never_panic(
        pick in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        for target in ["entry_decode", "sync_session"] {
            let all = seeds(target);
            let mut data = pick.get(&all).clone();
            for (at, byte) in &flips {
                let i = at.index(data.len().max(1));
                if i < data.len() { data[i] ^= byte; }
            }
            if target == "entry_decode" { entry_decode(&data) } else { sync_session(&data) }
        }
    }
}
