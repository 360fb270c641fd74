//! End-to-end benchmarks of the desktop peer (run by `cargo xtask bench` against a release
//! build): real `hellopears up` processes, sled on disk, loopback networking, everything
//! through the control socket as the CLI does it. Prints one JSON object of metrics.
//!
//! Usage: `bench-e2e WORKLOAD [--quick]`, WORKLOAD one of: batched, awaited, two-writers,
//! catch-up (with memory and restart), latency-tcp, latency-quic, start.

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hellopears_tests::{Peer, hellopears_bin};
use serde_json::{Value, json};

const LOOPBACK_TCP: &[&str] = &["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--no-dht", "--no-pex"];
const LOOPBACK_QUIC: &[&str] = &["--listen", "/ip4/127.0.0.1/udp/0/quic-v1", "--no-mdns", "--no-dht", "--no-pex"];

struct Sizes {
    batched: u64,
    awaited: u64,
    two_writers: u64,
    catch_up: u64,
    latency: usize,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let sizes = if quick {
        Sizes { batched: 20_000, awaited: 1_000, two_writers: 200, catch_up: 20_000, latency: 200 }
    } else {
        Sizes { batched: 100_000, awaited: 5_000, two_writers: 1_000, catch_up: 100_000, latency: 1_000 }
    };
    let result = match args.first().map(String::as_str) {
        Some("batched") => batched(sizes.batched),
        Some("awaited") => awaited(sizes.awaited),
        Some("two-writers") => two_writers(sizes.two_writers),
        Some("catch-up") => catch_up(sizes.catch_up),
        Some("latency-tcp") => latency(LOOPBACK_TCP, sizes.latency),
        Some("latency-quic") => latency(LOOPBACK_QUIC, sizes.latency),
        Some("start") => start(),
        other => {
            eprintln!(
                "unknown workload {other:?}: batched, awaited, two-writers, catch-up, latency-tcp, latency-quic, start"
            );
            std::process::exit(2);
        }
    };
    println!("{result}");
}

/// One request over a peer's control socket; the reply (`Ok` text or `Err`).
fn ask(data: &Path, action: Value) -> Result<String, String> {
    let request = json!({"topic": "", "list": null, "action": action});
    let mut stream =
        std::os::unix::net::UnixStream::connect(data.join("control.sock")).map_err(|e| format!("connect: {e}"))?;
    stream.write_all(format!("{request}\n").as_bytes()).map_err(|e| e.to_string())?;
    let mut line = String::new();
    std::io::BufReader::new(stream).read_line(&mut line).map_err(|e| e.to_string())?;
    let reply: Value = serde_json::from_str(&line).map_err(|e| format!("{e}: {line}"))?;
    match (&reply["Ok"], &reply["Err"]) {
        (Value::String(ok), _) => Ok(ok.clone()),
        (_, Value::String(err)) => Err(err.clone()),
        _ => Err(format!("unexpected reply {line}")),
    }
}

fn must(data: &Path, action: Value) -> String {
    ask(data, action.clone()).unwrap_or_else(|error| panic!("{action}: {error}"))
}

fn todos(data: &Path) -> u64 {
    ask(data, json!({"Status": "Json"}))
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .and_then(|status| status["todos"].as_u64())
        .unwrap_or(0)
}

fn rss_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

fn seed(data: &Path, total: u64) {
    let mut left = total;
    while left > 0 {
        let batch = left.min(100);
        must(data, json!({"Command": {"Seed": batch}}));
        left -= batch;
    }
}

/// (a) One writer, durable inserts in batches of 100.
fn batched(total: u64) -> Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let peer = Peer::start(dir.path(), LOOPBACK_TCP);
    let started = Instant::now();
    seed(dir.path(), total);
    let seconds = started.elapsed().as_secs_f64();
    let peak = rss_mib(peer.pid(), "VmHWM:");
    let resident = rss_mib(peer.pid(), "VmRSS:");
    peer.stop();
    json!({"ops": total, "seconds": seconds, "ops_per_s": total as f64 / seconds,
           "rss_peak_mib": peak, "rss_after_mib": resident})
}

/// (b) Awaited single inserts, each acknowledged once durable.
fn awaited(total: u64) -> Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let peer = Peer::start(dir.path(), LOOPBACK_TCP);
    let started = Instant::now();
    for n in 0..total {
        must(dir.path(), json!({"Command": {"Add": format!("todo {n}")}}));
    }
    let seconds = started.elapsed().as_secs_f64();
    peer.stop();
    json!({"ops": total, "seconds": seconds, "ops_per_s": total as f64 / seconds})
}

/// (c) Two writers on two peers, each inserting `each` awaited todos at once, until both
/// lists are equal.
fn two_writers(each: u64) -> Value {
    let (a_dir, b_dir) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let a = Peer::start(a_dir.path(), LOOPBACK_TCP);
    let b = Peer::start(b_dir.path(), &[LOOPBACK_TCP, &["--bootstrap", &a.tcp_addr()]].concat());
    // Connected and in session before the clock starts.
    must(a_dir.path(), json!({"Command": {"Add": "hello"}}));
    wait(Duration::from_secs(30), || todos(b_dir.path()) == 1);
    let started = Instant::now();
    let writers: Vec<_> = [a_dir.path().to_owned(), b_dir.path().to_owned()]
        .into_iter()
        .enumerate()
        .map(|(w, data)| {
            std::thread::spawn(move || {
                for n in 0..each {
                    must(&data, json!({"Command": {"Add": format!("writer {w} todo {n}")}}));
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().expect("writer");
    }
    let written = Instant::now();
    let want = 2 * each + 1;
    let list = |data: &Path| must(data, json!({"List": "Json"}));
    wait(Duration::from_secs(120), || {
        todos(a_dir.path()) == want && todos(b_dir.path()) == want && list(a_dir.path()) == list(b_dir.path())
    });
    let seconds = started.elapsed().as_secs_f64();
    let tail_ms = written.elapsed().as_secs_f64() * 1000.0;
    drop((a, b));
    json!({"ops": 2 * each, "seconds": seconds, "ops_per_s": (2 * each) as f64 / seconds, "tail_ms": tail_ms})
}

fn wait(timeout: Duration, check: impl FnMut() -> bool) {
    wait_every(timeout, Duration::from_millis(2), check);
}

/// Polls `check` every `every` until it holds (a latency measurement polls finely, or the
/// polling interval would be most of what it measures).
fn wait_every(timeout: Duration, every: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out");
        std::thread::sleep(every);
    }
}

/// Spawns `hellopears up` and returns it once its control socket answers with `want`
/// todos, with how long that took from the spawn.
#[expect(clippy::zombie_processes, reason = "the caller stops the peer it gets (`stop`)")]
fn start_until(data: &Path, args: &[&str], want: u64) -> (std::process::Child, Duration) {
    let started = Instant::now();
    let mut child = Command::new(hellopears_bin())
        .arg("--data")
        .arg(data)
        .arg("up")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("hellopears up");
    let deadline = started + Duration::from_secs(600);
    loop {
        if ask(data, json!({"Status": "Json"})).is_ok() && todos(data) >= want {
            return (child, started.elapsed());
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the peer on {} never got {want} todos", data.display());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn stop(mut child: std::process::Child) {
    let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let _ = child.wait();
}

/// (d) A fresh peer catching up `total` entries over loopback TCP (from its start), its
/// memory during and after, and its restart to ready.
fn catch_up(total: u64) -> Value {
    let (a_dir, b_dir) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let a = Peer::start(a_dir.path(), LOOPBACK_TCP);
    seed(a_dir.path(), total);
    let writer_peak = rss_mib(a.pid(), "VmHWM:");
    let a_addr = a.tcp_addr();
    let args = [LOOPBACK_TCP, &["--bootstrap", &a_addr]].concat();
    let (b, took) = start_until(b_dir.path(), &args, total);
    let seconds = took.as_secs_f64();
    let (b_peak, b_after) = (rss_mib(b.id(), "VmHWM:"), rss_mib(b.id(), "VmRSS:"));
    stop(b);
    a.stop();
    // Restart alone, to ready with every todo.
    let (b, restart) = start_until(b_dir.path(), LOOPBACK_TCP, total);
    std::thread::sleep(Duration::from_millis(500));
    let (restart_peak, restart_after) = (rss_mib(b.id(), "VmHWM:"), rss_mib(b.id(), "VmRSS:"));
    stop(b);
    json!({
        "entries": total, "seconds": seconds, "entries_per_s": total as f64 / seconds,
        "writer_rss_peak_mib": writer_peak,
        "rss_peak_mib": b_peak, "rss_after_mib": b_after,
        "restart_ms": restart.as_secs_f64() * 1000.0,
        "restart_rss_peak_mib": restart_peak, "restart_rss_mib": restart_after,
    })
}

/// Desktop-to-desktop sync latency: from A acknowledging an add (durable on A) to B holding
/// it, polled over B's control socket every 0.1 ms.
fn latency(transport: &[&str], rounds: usize) -> Value {
    let (a_dir, b_dir) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let a = Peer::start(a_dir.path(), transport);
    let addr = a.addrs.first().cloned().expect("an address");
    let b = Peer::start(b_dir.path(), &[transport, &["--bootstrap", &addr]].concat());
    must(a_dir.path(), json!({"Command": {"Add": "warm up"}}));
    wait(Duration::from_secs(30), || todos(b_dir.path()) == 1);
    let mut samples = Vec::with_capacity(rounds);
    for n in 0..rounds as u64 {
        must(a_dir.path(), json!({"Command": {"Add": format!("latency {n}")}}));
        let added = Instant::now();
        wait_every(Duration::from_secs(10), Duration::from_micros(100), || todos(b_dir.path()) == n + 2);
        samples.push(added.elapsed().as_secs_f64() * 1000.0);
    }
    drop((a, b));
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    json!({"rounds": rounds, "median_ms": at(0.5), "p99_ms": at(0.99)})
}

/// Cold start to ready with no todos, and idle memory.
fn start() -> Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let (child, took) = start_until(dir.path(), LOOPBACK_TCP, 0);
    std::thread::sleep(Duration::from_secs(2));
    let idle = rss_mib(child.id(), "VmRSS:");
    stop(child);
    json!({"start_ms": took.as_secs_f64() * 1000.0, "rss_idle_mib": idle})
}
