//! Native window benchmark (`cargo xtask bench-web`; ignored in the ordinary test run):
//! time from start to the list rendered with 10,000 todos in the store, and the resident
//! memory of the window's processes. Prints numbers; the targets (under 1 s; the native
//! process under 60 MB) are reported, not asserted.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hellopears_tests::display::{self, Display};
use hellopears_tests::{Peer, browser, ok, run, wait_until};
use tempfile::TempDir;

fn now_ms() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `RssAnon`, `RssFile`).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS")
}

/// A process and all its descendants.
fn tree(root: u32) -> Vec<(u32, String)> {
    let mut parents = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // pid (comm) state ppid ...
        let Some((comm, rest)) = stat.split_once(") ") else { continue };
        let name = comm.split_once(" (").map(|(_, n)| n.to_owned()).unwrap_or_default();
        let ppid: u32 = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
        parents.push((pid, ppid, name));
    }
    let mut found = vec![(root, String::from("hellopears"))];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i].0;
        found.extend(parents.iter().filter(|(_, ppid, _)| *ppid == parent).map(|(pid, _, name)| (*pid, name.clone())));
        i += 1;
    }
    found
}

#[test]
#[ignore = "benchmark: run with cargo xtask bench-web"]
fn window_with_10k_todos() {
    assert!(display::available(), "the benchmark needs Xvfb and WebKitGTK");
    let root = browser::web_root();
    let screen = Display::start().expect("Xvfb");
    let dir = TempDir::new().expect("tempdir");
    ok(dir.path(), &["seed", "10000"]);
    let root_arg = root.to_string_lossy().into_owned();
    let args = ["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--no-dht", "--web-root", root_arg.as_str()];
    for round in 0..3 {
        let started = now_ms();
        let window = Peer::start_window(dir.path(), &screen.name, &args);
        let mut painted = None;
        let shown = wait_until(Duration::from_secs(30), || {
            painted = painted_at(dir.path());
            painted.is_some()
        });
        assert!(shown, "the window rendered its list");
        let total = run(dir.path(), &["eval", "document.querySelector('[data-testid=todo-count]').dataset.total"]);
        let total = String::from_utf8_lossy(&total.stdout).trim().trim_matches('"').to_owned();
        // Let the processes settle before reading their memory.
        std::thread::sleep(Duration::from_secs(2));
        let processes = tree(window.pid());
        let mut lines = Vec::new();
        let mut sum = 0;
        for (pid, name) in &processes {
            let kib = rss_kib(*pid);
            sum += kib;
            lines.push(format!("{name} {:.1} MB", kib as f64 / 1024.0));
        }
        println!(
            "window round {round}: hellopears itself (the peer; the window is its hellopears-window child): \
             {:.1} MB anonymous (heap), {:.1} MB mapped files",
            status_kib(window.pid(), "RssAnon") as f64 / 1024.0,
            status_kib(window.pid(), "RssFile") as f64 / 1024.0,
        );
        println!(
            "window round {round}: list of {total} todos rendered {:.0} ms after start (target < 1000 ms); \
             resident memory: {} ; all {:.1} MB (target: hellopears alone < 60 MB)",
            painted.unwrap_or_default() - started,
            lines.join(", "),
            sum as f64 / 1024.0
        );
        window.stop();
    }
}

fn painted_at(dir: &Path) -> Option<f64> {
    let out = run(dir, &["eval", "String(window.__hellopears_painted ?? '')"]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().trim_matches('"').parse().ok()
}
