//! Desktop peers on loopback, joined through one bootstrap address, converging.

use std::time::{Duration, Instant};

use hellopears_tests::{Peer, list, ok, wait_until};

const LOOPBACK: &[&str] =
    &["--listen", "/ip4/127.0.0.1/tcp/0", "--listen", "/ip4/127.0.0.1/udp/0/quic-v1", "--no-mdns"];

fn up(data: &std::path::Path, bootstrap: Option<&str>) -> Peer {
    up_with(data, bootstrap, &[])
}

fn up_with(data: &std::path::Path, bootstrap: Option<&str>, extra: &[&str]) -> Peer {
    let mut args: Vec<&str> = LOOPBACK.to_vec();
    args.extend(extra);
    if let Some(addr) = bootstrap {
        args.extend(["--bootstrap", addr]);
    }
    Peer::start(data, &args)
}

fn connected_peers(data: &std::path::Path) -> Vec<String> {
    let status: serde_json::Value = serde_json::from_str(&ok(data, &["status", "--json"])).expect("json");
    status["peers"].as_array().into_iter().flatten().filter_map(|p| p["peer"].as_str().map(str::to_owned)).collect()
}

fn writers(data: &std::path::Path) -> Vec<String> {
    let status: serde_json::Value = serde_json::from_str(&ok(data, &["status", "--json"])).expect("json");
    status["writers"]
        .as_array()
        .expect("writers")
        .iter()
        .map(|w| w["writer"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn three_peers_converge_through_one_bootstrap_address() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    // A chain a - b - c: no DHT, no peer exchange, so everything between a and c goes through b.
    let isolated = ["--no-dht", "--no-pex"];
    let a = up_with(dirs[0].path(), None, &isolated);
    let b = up_with(dirs[1].path(), Some(&a.tcp_addr()), &isolated);
    let c = up_with(dirs[2].path(), Some(&b.tcp_addr()), &isolated);
    let peers = [&a, &b, &c];
    // Each peer adds two todos ...
    let mut ids: Vec<[String; 2]> = Vec::new();
    for (i, peer) in peers.iter().enumerate() {
        let first = ok(&peer.data, &["add", &format!("first from peer {i}")]).trim().to_owned();
        let second = ok(&peer.data, &["add", &format!("second from peer {i}")]).trim().to_owned();
        ids.push([first, second]);
    }
    assert!(
        wait_until(Duration::from_secs(10), || peers.iter().all(|p| list(&p.data).len() == 6)),
        "adds did not spread"
    );
    // ... then toggles and edits a todo of the next peer, and removes one of its own.
    for (i, peer) in peers.iter().enumerate() {
        let next = &ids[(i + 1) % 3];
        ok(&peer.data, &["done", &next[1][..8]]);
        ok(&peer.data, &["edit", &next[1][..8], &format!("edited by peer {i}")]);
        ok(&peer.data, &["rm", &ids[i][0][..8]]);
    }
    let last_write = Instant::now();
    let converged = wait_until(Duration::from_secs(5), || {
        let lists: Vec<_> = peers.iter().map(|p| list(&p.data)).collect();
        lists.iter().all(|l| *l == lists[0]) && lists[0].len() == 3
    });
    let lists: Vec<_> = peers.iter().map(|p| list(&p.data)).collect();
    assert!(converged, "not converged within 5 s of the last write: {lists:#?}");
    println!("converged {:?} after the last write", last_write.elapsed());
    for (i, [first, second]) in ids.iter().enumerate() {
        let editor = (i + 2) % 3;
        assert!(!lists[0].iter().any(|t| t["_id"] == first.as_str()), "removed todo {i} is back");
        let kept = lists[0].iter().find(|t| t["_id"] == second.as_str()).expect("second todo kept");
        assert_eq!(kept["text"], format!("edited by peer {editor}"));
        assert_eq!(kept["done"], true);
    }
    // C learned A's writer through B: it never connected to A.
    assert_eq!(connected_peers(&c.data), vec![b.peer_id.clone()]);
    let a_writer = ok(&a.data, &["status", "--json"]);
    let a_writer: serde_json::Value = serde_json::from_str(&a_writer).expect("json");
    assert!(writers(&c.data).contains(&a_writer["writer"].as_str().expect("writer").to_owned()));
}

#[test]
fn a_restarted_peer_keeps_its_id_and_data_and_catches_up_on_offline_edits() {
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let a = up(dirs[0].path(), None);
    let b = up(dirs[1].path(), Some(&a.tcp_addr()));
    let shared = ok(&a.data, &["add", "shared"]).trim().to_owned();
    assert!(wait_until(Duration::from_secs(10), || list(&b.data).len() == 1));
    let b_id = b.peer_id.clone();
    b.stop();
    // Edits on both sides while b is down (b's through its store directly).
    ok(&a.data, &["add", "while b was away"]);
    ok(&a.data, &["done", &shared[..8]]);
    ok(dirs[1].path(), &["add", "written offline on b"]);
    ok(dirs[1].path(), &["edit", &shared[..8], "renamed offline"]);
    let b = up(dirs[1].path(), Some(&a.tcp_addr()));
    assert_eq!(b.peer_id, b_id, "peer id must survive a restart");
    let converged = wait_until(Duration::from_secs(10), || {
        let (la, lb) = (list(&a.data), list(&b.data));
        la == lb && la.len() == 3
    });
    assert!(converged, "a: {:#?}\nb: {:#?}", list(&a.data), list(&b.data));
    let todo = list(&a.data).into_iter().find(|t| t["_id"] == shared.as_str()).expect("shared todo");
    assert_eq!(todo["done"], true);
    assert_eq!(todo["text"], "renamed offline");
}

#[test]
fn a_fresh_peer_catches_up_on_1000_todos_and_shows_progress() {
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    ok(dirs[0].path(), &["seed", "1000"]);
    let a = up(dirs[0].path(), None);
    let b = up(dirs[1].path(), Some(&a.tcp_addr()));
    let started = b.wait_for_line("syncing: ", Duration::from_secs(10)).expect("progress shown");
    assert!(started.contains("of 1000 entries"), "{started}");
    let done = b.wait_for_line("synced: ", Duration::from_secs(20)).expect("catch-up finished");
    assert!(done.contains("1000 entries, 1000 todos"), "{done}");
    assert_eq!(list(&b.data), list(&a.data));
}

#[test]
fn peer_exchange_connects_peers_that_never_dialed_each_other() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let args = |bootstrap: Option<&str>| {
        let mut args: Vec<String> = LOOPBACK.iter().map(|a| a.to_string()).collect();
        args.push("--no-dht".into());
        if let Some(addr) = bootstrap {
            args.extend(["--bootstrap".into(), addr.into()]);
        }
        args
    };
    let start = |data: &std::path::Path, bootstrap: Option<&str>| {
        let args = args(bootstrap);
        Peer::start(data, &args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    // No DHT, no mDNS: c can only learn where a is from b.
    let a = start(dirs[0].path(), None);
    let b = start(dirs[1].path(), Some(&a.tcp_addr()));
    let c = start(dirs[2].path(), Some(&b.tcp_addr()));
    let linked = wait_until(Duration::from_secs(5), || {
        let status: serde_json::Value = serde_json::from_str(&ok(&c.data, &["status", "--json"])).expect("json");
        status["peers"].as_array().is_some_and(|peers| peers.iter().any(|p| p["peer"] == a.peer_id.as_str()))
    });
    assert!(linked, "c never connected to a");
}

#[test]
fn two_peers_sync_over_quic_both_ways() {
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let quic_only = ["--listen", "/ip4/127.0.0.1/udp/0/quic-v1", "--no-mdns", "--no-dht"];
    let a = Peer::start(dirs[0].path(), &quic_only);
    let a_quic = a.addrs.iter().find(|addr| addr.contains("/quic-v1")).cloned().expect("a QUIC address");
    let mut b_args = quic_only.to_vec();
    b_args.extend(["--bootstrap", &a_quic]);
    let b = Peer::start(dirs[1].path(), &b_args);
    ok(&a.data, &["add", "over quic from a"]);
    assert!(wait_until(Duration::from_secs(5), || list(&b.data).len() == 1), "a -> b over QUIC");
    // Later pushes on the long-lived streams must flow promptly too, both ways.
    for round in 0..3 {
        ok(&b.data, &["add", &format!("from b {round}")]);
        ok(&a.data, &["add", &format!("from a {round}")]);
        let want = 3 + 2 * round;
        let flowed =
            wait_until(Duration::from_secs(5), || list(&a.data).len() == want && list(&b.data) == list(&a.data));
        assert!(flowed, "round {round}: a {:?} b {:?}", list(&a.data).len(), list(&b.data).len());
    }
}

#[test]
fn a_second_peer_on_a_data_dir_is_refused_and_commands_reach_the_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = up(dir.path(), None);
    let second = hellopears_tests::run(dir.path(), &["up", "--no-mdns", "--no-dht"]);
    assert_eq!(second.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&second.stderr).contains("in use by another hellopears process"), "{second:?}");
    ok(&a.data, &["add", "through the control socket"]);
    let status: serde_json::Value = serde_json::from_str(&ok(&a.data, &["status", "--json"])).expect("json");
    assert_eq!(status["running"], true);
    assert_eq!(status["todos"], 1);
    assert_eq!(status["peer_id"], a.peer_id.as_str());
    let addresses: Vec<&str> =
        status["addresses"].as_array().expect("addresses").iter().filter_map(|a| a.as_str()).collect();
    assert!(addresses.contains(&a.tcp_addr().as_str()), "{addresses:?} vs {:?}", a.addrs);
}

#[test]
fn peers_find_each_other_through_the_dht() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    // b and c both know only a; with no peer exchange, only the topic's provider records
    // in the DHT can bring them together.
    let a = up_with(dirs[0].path(), None, &["--no-pex"]);
    let b = up_with(dirs[1].path(), Some(&a.tcp_addr()), &["--no-pex"]);
    let c = up_with(dirs[2].path(), Some(&a.tcp_addr()), &["--no-pex"]);
    let found = wait_until(Duration::from_secs(15), || connected_peers(&c.data).contains(&b.peer_id));
    assert!(found, "c never found b: {:?}", connected_peers(&c.data));
    ok(&b.data, &["add", "found through the DHT"]);
    assert!(wait_until(Duration::from_secs(5), || list(&c.data).len() == 1));
}
