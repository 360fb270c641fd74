//! Load: many real desktop peers on one machine. They converge to identical lists, and a
//! peer with 50 connected peers keeps answering the CLI. Prints the numbers (time to
//! converge, peak memory per peer, `list` latency) for the record.

use std::path::Path;
use std::time::{Duration, Instant};

use hellopears_tests::{Peer, list, ok, run, wait_until};

const LOOPBACK: &[&str] = &["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--no-dht"];

/// The load tests take the whole machine: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Peak resident memory of a process (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn status(data: &Path) -> serde_json::Value {
    let out = run(data, &["status", "--json"]);
    assert!(out.status.success(), "status: {out:?}");
    serde_json::from_slice(&out.stdout).expect("status json")
}

/// Starts `count` peers: the first alone, the others bootstrapping to it (peer exchange
/// connects them to each other unless `extra` says `--no-pex`).
fn start_peers(dirs: &[tempfile::TempDir], extra: &[&str]) -> Vec<Peer> {
    let hub = Peer::start(dirs[0].path(), LOOPBACK);
    let hub_addr = hub.tcp_addr();
    let mut peers = vec![hub];
    for dir in &dirs[1..] {
        let mut args = LOOPBACK.to_vec();
        args.extend(extra);
        args.extend(["--bootstrap", &hub_addr]);
        peers.push(Peer::start(dir.path(), &args));
    }
    peers
}

#[test]
fn sixteen_peers_adding_and_editing_each_others_todos_converge() {
    const PEERS: usize = 16;
    const EACH: usize = 500;
    const EDITS: usize = 20;
    let _serial = serial();
    let dirs: Vec<tempfile::TempDir> = (0..PEERS).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let peers = start_peers(&dirs, &[]);
    let connected = wait_until(Duration::from_secs(60), || {
        peers.iter().all(|peer| status(&peer.data)["peers"].as_array().is_some_and(|p| !p.is_empty()))
    });
    assert!(connected, "peers did not connect");
    let started = Instant::now();
    let workers: Vec<_> = peers
        .iter()
        .map(|peer| {
            let data = peer.data.clone();
            std::thread::spawn(move || {
                ok(&data, &["seed", &EACH.to_string()]);
                let me = status(&data)["writer"].as_str().unwrap_or_default().to_owned();
                // Edit others' todos as they arrive.
                let mut edited = 0;
                let deadline = Instant::now() + Duration::from_secs(120);
                while edited < EDITS && Instant::now() < deadline {
                    let theirs: Vec<String> = list(&data)
                        .iter()
                        .filter(|todo| todo["author"].as_str() != Some(me.as_str()) && todo["done"] == false)
                        .filter_map(|todo| todo["_id"].as_str().map(str::to_owned))
                        .take(EDITS - edited)
                        .collect();
                    if theirs.is_empty() {
                        std::thread::sleep(Duration::from_millis(200));
                        continue;
                    }
                    for id in theirs {
                        if run(&data, &["done", &id]).status.success() {
                            edited += 1;
                        }
                    }
                }
                edited
            })
        })
        .collect();
    for worker in workers {
        assert_eq!(worker.join().expect("worker"), EDITS, "a peer could not edit others' todos");
    }
    let converged = wait_until(Duration::from_secs(300), || {
        peers.iter().all(|peer| status(&peer.data)["todos"].as_u64() == Some((PEERS * EACH) as u64)) && {
            let first = list(&peers[0].data);
            peers[1..].iter().all(|peer| list(&peer.data) == first)
        }
    });
    let elapsed = started.elapsed();
    assert!(converged, "{PEERS} peers did not converge");
    let done = list(&peers[0].data).iter().filter(|todo| todo["done"] == true).count();
    assert!(done >= EDITS, "edits of others' todos were lost: {done} done");
    let rss: Vec<u64> = peers.iter().map(|peer| peak_rss_kib(peer.pid()) / 1024).collect();
    println!(
        "load: {PEERS} peers x {EACH} todos (+{EDITS} edits each) converged in {:.1} s; peak RSS per peer (MiB): \
         min {} max {} all {rss:?}",
        elapsed.as_secs_f64(),
        rss.iter().min().copied().unwrap_or(0),
        rss.iter().max().copied().unwrap_or(0),
    );
    for peer in peers {
        peer.stop();
    }
}

#[test]
fn a_peer_with_fifty_connected_peers_keeps_answering_list() {
    const PEERS: usize = 51;
    let _serial = serial();
    let dirs: Vec<tempfile::TempDir> = (0..PEERS).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    // Leaves connect to the hub only: the hub has 50 peers.
    let peers = start_peers(&dirs, &["--no-pex"]);
    let hub = &peers[0];
    let connected =
        wait_until(Duration::from_secs(120), || status(&hub.data)["peers"].as_array().is_some_and(|p| p.len() >= 50));
    assert!(connected, "the hub did not reach 50 peers");
    // Every leaf writes while the hub is asked for its list again and again.
    let writers: Vec<_> = peers[1..]
        .iter()
        .map(|peer| {
            let data = peer.data.clone();
            std::thread::spawn(move || ok(&data, &["seed", "40"]))
        })
        .collect();
    let mut latencies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let asked = Instant::now();
        let todos = list(&hub.data).len();
        latencies.push(asked.elapsed());
        if todos == 50 * 40 || Instant::now() > deadline {
            break;
        }
    }
    for writer in writers {
        writer.join().expect("writer");
    }
    assert_eq!(list(&hub.data).len(), 50 * 40, "the hub did not get every leaf's todos");
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize].as_millis();
    println!(
        "load: `list --json` on a peer with 50 peers, while they write: {} calls, p50 {} ms, p99 {} ms, max {} ms",
        latencies.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
    // A liveness bound (the 200 ms target is measured above, on the record, not asserted
    // here: CI machines vary); a peer starved by its peers would miss this by far.
    assert!(at(1.0) < 5_000, "list took {} ms", at(1.0));
    for peer in peers {
        peer.stop();
    }
}
