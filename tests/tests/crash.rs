//! Crash safety of the real peer: `hellopears up` is SIGKILLed at random moments, 20 times,
//! while the CLI adds through it and a second peer pushes its own entries into it. Every
//! acknowledged add survives, the logs verify end to end on a fresh peer, and no writer
//! ever forks.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hellopears_tests::{Peer, list, run, wait_until};

const LOOPBACK: &[&str] = &["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--no-dht"];

/// Adds todos through the CLI on `data` until `stop`; returns the texts acknowledged
/// (the command exited 0, so the user was told the todo was added).
fn adder(data: PathBuf, prefix: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let mut acknowledged = Vec::new();
        let mut n = 0;
        while !stop.load(Ordering::SeqCst) {
            let text = format!("{prefix}-{n}");
            n += 1;
            if run(&data, &["add", &text]).status.success() {
                acknowledged.push(text);
            }
        }
        acknowledged
    })
}

fn texts(data: &Path) -> Vec<String> {
    let mut texts: Vec<String> =
        list(data).iter().filter_map(|todo| todo["text"].as_str().map(str::to_owned)).collect();
    texts.sort();
    texts
}

fn status(data: &Path) -> serde_json::Value {
    let out = run(data, &["status", "--json"]);
    assert!(out.status.success(), "status: {out:?}");
    serde_json::from_slice(&out.stdout).expect("status json")
}

fn assert_no_forks(data: &Path) {
    let status = status(data);
    let writers = status["writers"].as_array().expect("writers");
    assert!(!writers.is_empty());
    for writer in writers {
        assert_eq!(writer["quarantined"], false, "a writer forked: {writer}");
    }
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_add() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let (a_dir, b_dir, c_dir) = (dirs[0].path(), dirs[1].path(), dirs[2].path());
    let b = Peer::start(b_dir, LOOPBACK);
    let b_addr = b.tcp_addr();
    let mut a_args = LOOPBACK.to_vec();
    a_args.extend(["--bootstrap", &b_addr]);
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for round in 0..20 {
        let a = Peer::start(a_dir, &a_args);
        let stop = Arc::new(AtomicBool::new(false));
        let ours = adder(a_dir.to_path_buf(), format!("a{round}"), stop.clone());
        let theirs = adder(b_dir.to_path_buf(), format!("b{round}"), stop.clone());
        // A random moment between 0.2 and 1.5 s into the round.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        std::thread::sleep(Duration::from_millis(200 + state % 1300));
        a.kill();
        stop.store(true, Ordering::SeqCst);
        let mut all = acknowledged.lock().expect("lock");
        all.extend(ours.join().expect("adder"));
        all.extend(theirs.join().expect("adder"));
    }
    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert!(acknowledged.len() > 40, "too few adds to mean anything: {}", acknowledged.len());
    // A restarts and catches up with B; every acknowledged add is on both.
    let a = Peer::start(a_dir, &a_args);
    let converged = wait_until(Duration::from_secs(60), || texts(a_dir) == texts(b_dir));
    assert!(converged, "A and B did not converge after the crashes");
    let held = texts(a_dir);
    let lost: Vec<&String> = acknowledged.iter().filter(|text| held.binary_search(text).is_err()).collect();
    assert!(lost.is_empty(), "acknowledged adds lost: {lost:?}");
    // A fresh peer verifies every entry of both logs (signatures, hash chains, clocks) as it
    // syncs, and ends with the same list; nobody forked.
    let mut c_args = LOOPBACK.to_vec();
    let a_addr = a.tcp_addr();
    c_args.extend(["--bootstrap", &a_addr]);
    let c = Peer::start(c_dir, &c_args);
    assert!(wait_until(Duration::from_secs(60), || texts(c_dir) == held), "a fresh peer did not get the same list");
    for data in [a_dir, b_dir, c_dir] {
        assert_no_forks(data);
    }
    c.stop();
    a.stop();
    b.stop();
}
