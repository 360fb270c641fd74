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

/// A `list --json` request as the CLI sends it.
const LIST_JSON: &str = r#"{"topic":"","list":null,"action":{"List":"Json"}}"#;

/// One request over a running peer's control socket; the reply line.
fn ask(data: &Path, request: &str) -> String {
    use std::io::{BufRead, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(data.join("control.sock")).expect("control socket");
    stream.write_all(format!("{request}\n").as_bytes()).expect("request");
    let mut reply = String::new();
    std::io::BufReader::new(stream).read_line(&mut reply).expect("reply");
    reply
}

/// Calls, p50, p99 and max, in ms.
fn quantiles(latencies: &mut [Duration]) -> [u128; 4] {
    latencies.sort();
    let at = |q: f64| latencies.get(((latencies.len().max(1) - 1) as f64 * q) as usize).map_or(0, Duration::as_millis);
    [latencies.len() as u128, at(0.5), at(0.99), at(1.0)]
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
    // The 50 peers stand for other machines: on this one they run at the lowest priority, so
    // the hub and its CLI get the share of the CPU they would have on their own machine
    // (unniced, every process on 2 cores waits behind 100 others: even `/bin/true` then
    // takes 0.2 s to start).
    for leaf in &peers[1..] {
        let status = std::process::Command::new("renice")
            .args(["-n", "19", "-p", &leaf.pid().to_string()])
            .stdout(std::process::Stdio::null())
            .status();
        assert!(status.is_ok_and(|s| s.success()), "renice failed");
    }
    // Every leaf writes while the hub is asked for its list again and again: through its
    // control socket (what the peer answers) and by the CLI (plus starting a process on a
    // machine the 100 other processes keep busy).
    let burst = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let asker = {
        let data = hub.data.clone();
        let burst = burst.clone();
        std::thread::spawn(move || {
            let mut latencies = Vec::new();
            while burst.load(std::sync::atomic::Ordering::Relaxed) {
                let asked = Instant::now();
                let reply = ask(&data, LIST_JSON);
                latencies.push(asked.elapsed());
                assert!(reply.contains("\"Ok\""), "list over the socket: {reply}");
                std::thread::sleep(Duration::from_millis(20));
            }
            latencies
        })
    };
    let writers: Vec<_> = peers[1..]
        .iter()
        .map(|peer| {
            let data = peer.data.clone();
            std::thread::spawn(move || {
                let seeded = std::process::Command::new("nice")
                    .args(["-n", "19"])
                    .arg(hellopears_tests::hellopears_bin())
                    .arg("--data")
                    .arg(&data)
                    .args(["seed", "40"])
                    .status();
                assert!(seeded.is_ok_and(|s| s.success()), "seed failed");
            })
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
    burst.store(false, std::sync::atomic::Ordering::Relaxed);
    let mut socket = asker.join().expect("asker");
    assert_eq!(list(&hub.data).len(), 50 * 40, "the hub did not get every leaf's todos");
    let (cli, socket) = (quantiles(&mut latencies), quantiles(&mut socket));
    println!(
        "load: `list --json` on a peer with 50 peers, while they write: over its control socket {} calls, p50 {} \
         ms, p99 {} ms, max {} ms; by the CLI {} calls, p50 {} ms, p99 {} ms, max {} ms",
        socket[0], socket[1], socket[2], socket[3], cli[0], cli[1], cli[2], cli[3]
    );
    // In the test run, a liveness bound: a peer starved by its peers would miss it by far.
    // The 200 ms target itself is held by `cargo xtask bench-load` (a release build), which
    // sets HELLOPEARS_LOAD_TARGET.
    let bound = if std::env::var_os("HELLOPEARS_LOAD_TARGET").is_some() { 200 } else { 5_000 };
    assert!(cli[3] < bound && socket[3] < bound, "list took {} ms (socket: {} ms), over {bound} ms", cli[3], socket[3]);
    for peer in peers {
        peer.stop();
    }
}
