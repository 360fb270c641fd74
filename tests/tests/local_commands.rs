//! The todo commands on a local data dir, through the real binary, across processes.

use std::path::Path;
use std::process::{Command, Output};

use hellopears_tests::hellopears_bin;

fn run(data: &Path, args: &[&str]) -> Output {
    Command::new(hellopears_bin()).arg("--data").arg(data).args(args).output().expect("run hellopears")
}

fn ok(data: &Path, args: &[&str]) -> String {
    let out = run(data, args);
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).expect("utf-8")
}

fn list(data: &Path) -> Vec<serde_json::Value> {
    serde_json::from_str(&ok(data, &["list", "--json"])).expect("json list")
}

#[test]
fn add_toggle_edit_remove_persist_across_processes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path();
    let milk = ok(data, &["add", "buy milk"]).trim().to_owned();
    let bread = ok(data, &["add", "bread"]).trim().to_owned();
    assert_eq!(milk.len(), 20);
    assert_eq!(list(data).len(), 2);
    ok(data, &["done", &milk[..6]]);
    ok(data, &["edit", &bread, "rye bread"]);
    let todos = list(data);
    assert_eq!(todos[0]["done"], true);
    assert_eq!(todos[1]["text"], "rye bread");
    ok(data, &["undone", &milk[..6]]);
    assert_eq!(list(data)[0]["done"], false);
    ok(data, &["rm", &bread]);
    let todos = list(data);
    assert_eq!(todos.len(), 1);
    assert_eq!(todos[0]["_id"], milk.as_str());
    // The writer identity is stable across runs.
    let status = |data| -> serde_json::Value { serde_json::from_str(&ok(data, &["status", "--json"])).expect("json") };
    assert_eq!(status(data)["writer"], status(data)["writer"]);
    assert_eq!(status(data)["entries"], 6);
    // Topics are separate.
    assert!(
        serde_json::from_str::<Vec<serde_json::Value>>(&ok(data, &["--topic", "work", "list", "--json"]))
            .expect("json")
            .is_empty()
    );
}

#[test]
fn bad_ids_and_bad_dirs_exit_1_with_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(dir.path(), &["done", "ffff"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("hellopears: no todo matches"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1);
    let out = run(dir.path(), &["add", "   "]);
    assert_eq!(out.status.code(), Some(1));
    let foreign = tempfile::tempdir().expect("tempdir");
    std::fs::write(foreign.path().join("thesis.tex"), "precious").expect("write");
    let out = run(foreign.path(), &["list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a hellopears data dir"));
    assert_eq!(std::fs::read_to_string(foreign.path().join("thesis.tex")).expect("kept"), "precious");
    let out = run(dir.path(), &["list", "--memory"]);
    assert_eq!(out.status.code(), Some(2), "--data and --memory conflict");
}

#[test]
fn a_corrupt_store_or_node_key_exits_1_without_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    ok(dir.path(), &["add", "x"]);
    std::fs::write(dir.path().join("store/conf"), [0xff; 40]).expect("corrupt the store config");
    let out = run(dir.path(), &["list"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("hellopears: cannot open the store"), "{out:?}");
    let dir = tempfile::tempdir().expect("tempdir");
    ok(dir.path(), &["add", "x"]);
    ok(dir.path(), &["add", "y"]);
    let db = dir.path().join("store/db");
    let mut bytes = std::fs::read(&db).expect("read the log");
    for byte in bytes.iter_mut().skip(100).take(3000) {
        *byte ^= 0x5a;
    }
    std::fs::write(&db, bytes).expect("damage the log");
    let out = run(dir.path(), &["list"]);
    assert_eq!(out.status.code(), Some(1), "a damaged log must not load quietly: {out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "one clear line: {stderr}");
    let dir = tempfile::tempdir().expect("tempdir");
    ok(dir.path(), &["add", "x"]);
    std::fs::write(dir.path().join("node.key"), b"not a key").expect("corrupt the node key");
    let out = run(dir.path(), &["up", "--no-mdns", "--no-dht"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("node.key is corrupt"), "{out:?}");
}

const LOOPBACK: &[&str] = &["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--no-dht"];

#[test]
fn a_command_reaches_the_list_it_names_or_fails_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path();
    let mut args = vec!["--topic", "work"];
    args.extend(LOOPBACK);
    let peer = hellopears_tests::Peer::start(data, &args);
    ok(data, &["--topic", "work", "add", "for work"]);
    // Another list than the running peer's: refused, nothing written anywhere.
    for other in [&["--topic", "home", "add", "for home"][..], &["--list", "home", "list", "--json"]] {
        let out = run(data, other);
        assert_eq!(out.status.code(), Some(1), "{other:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("serves topic \"work\"") || stderr.contains("no list"), "{other:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
    // With one list in the data dir, it is the default.
    let default: Vec<serde_json::Value> = serde_json::from_str(&ok(data, &["list", "--json"])).expect("json");
    assert_eq!(default.len(), 1);
    let work: Vec<serde_json::Value> =
        serde_json::from_str(&ok(data, &["--topic", "work", "list", "--json"])).expect("json");
    assert_eq!(work.len(), 1);
    assert_eq!(work[0]["text"], "for work");
    peer.stop();
    let home: Vec<serde_json::Value> =
        serde_json::from_str(&ok(data, &["--topic", "home", "list", "--json"])).expect("json");
    assert!(home.is_empty(), "{home:?}");
    assert!(list(data).is_empty(), "the default topic got nothing");
}

#[test]
fn commands_run_while_a_peer_starts_neither_fail_nor_stop_it() {
    for round in 0..5 {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().to_path_buf();
        ok(&data, &["add", "before"]);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let hammer = {
            let (data, stop) = (data.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut runs = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let out = run(&data, &["status", "--json"]);
                    assert!(out.status.success(), "status failed while the peer started: {out:?}");
                    runs += 1;
                }
                runs
            })
        };
        let peer = hellopears_tests::Peer::start(&data, LOOPBACK);
        let running = hellopears_tests::wait_until(std::time::Duration::from_secs(10), || {
            let status: serde_json::Value = serde_json::from_str(&ok(&data, &["status", "--json"])).expect("json");
            status["running"] == true
        });
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let runs = hammer.join().expect("status never failed");
        assert!(running, "round {round}: the peer never answered");
        assert!(runs > 0);
        assert_eq!(list(&data).len(), 1);
        peer.stop();
    }
}
