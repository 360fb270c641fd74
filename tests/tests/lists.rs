//! Private lists end to end: invites, joining, read-only, removed and blind members,
//! several lists on one peer, and a stranger, with real processes on loopback.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use hellopears_tests::{Peer, hellopears_bin, ok, run, wait_until};

const LOOPBACK: &[&str] = &["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--no-dht"];
const SYNC: Duration = Duration::from_secs(30);

fn dirs(n: usize) -> Vec<tempfile::TempDir> {
    (0..n).map(|_| tempfile::tempdir().expect("tempdir")).collect()
}

/// The texts of a list's todos.
fn texts(data: &Path, list: &str) -> Vec<String> {
    let out = run(data, &["--list", list, "list", "--json"]);
    if !out.status.success() {
        return Vec::new();
    }
    let todos: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    todos.iter().filter_map(|t| t["text"].as_str().map(str::to_owned)).collect()
}

fn has(data: &Path, list: &str, text: &str) -> bool {
    texts(data, list).iter().any(|t| t == text)
}

/// An invite link to `list` on `data`.
fn invite(data: &Path, list: &str, extra: &[&str]) -> String {
    let mut args = vec!["--list", list, "invite", "--json"];
    args.extend(extra);
    let out: serde_json::Value = serde_json::from_str(&ok(data, &args)).expect("json invite");
    out["link"].as_str().expect("a link").to_owned()
}

fn join(data: &Path, link: &str) -> Output {
    Command::new(hellopears_bin()).arg("--data").arg(data).args(["join", link, "--wait", "30s"]).output().expect("join")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A peer on `data` serving its lists, on loopback only.
fn up(data: &Path) -> Peer {
    Peer::start(data, LOOPBACK)
}

/// The owner of a new private list `name`, running.
fn owner(data: &Path, name: &str, device: &str) -> Peer {
    ok(data, &["name", device]);
    let created = ok(data, &["new", name]);
    assert!(created.starts_with(&format!("created private list {name}")), "{created}");
    up(data)
}

/// A device named `device` that joins with `link` through its running peer.
fn member(data: &Path, device: &str, link: &str) -> Peer {
    ok(data, &["name", device]);
    let peer = up(data);
    let out = join(data, link);
    assert!(out.status.success(), "join failed: {}", stderr(&out));
    peer
}

fn role(data: &Path, list: &str) -> String {
    let lists: Vec<serde_json::Value> = serde_json::from_str(&ok(data, &["lists", "--json"])).expect("json lists");
    lists
        .iter()
        .find(|l| l["name"] == list)
        .map(|l| l["role"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_default()
}

#[test]
fn invite_join_sync_both_ways_and_refuse_reused_or_expired_invites() {
    let dirs = dirs(4);
    let a = owner(dirs[0].path(), "groceries", "Alice's laptop");
    ok(&a.data, &["--list", "groceries", "add", "milk"]);
    let link = invite(&a.data, "groceries", &[]);
    assert!(link.contains("#join="), "{link}");
    // Desktop B joins from the link alone (it names A's addresses).
    ok(dirs[1].path(), &["name", "Bob's desktop"]);
    let b = up(dirs[1].path());
    let started = Instant::now();
    let out = join(&b.data, &link);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "joined groceries as writer");
    assert!(wait_until(SYNC, || has(&b.data, "groceries", "milk")), "B never read A's todo");
    eprintln!("join to first synced todo on loopback: {} ms", started.elapsed().as_millis());
    ok(&b.data, &["--list", "groceries", "add", "eggs"]);
    assert!(wait_until(SYNC, || has(&a.data, "groceries", "eggs")), "A never got B's todo");
    // Members by name, with roles.
    let members: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&a.data, &["--list", "groceries", "members", "--json"])).expect("json members");
    let names: Vec<(&str, &str)> =
        members.iter().map(|m| (m["name"].as_str().unwrap_or(""), m["role"].as_str().unwrap_or(""))).collect();
    assert!(names.contains(&("Alice's laptop", "owner")) && names.contains(&("Bob's desktop", "writer")), "{names:?}");
    // The same invite a second time: refused, clearly, exit 1.
    let c = up(dirs[2].path());
    let again = join(&c.data, &link);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("already used"), "{}", stderr(&again));
    assert!(texts(&c.data, "groceries").is_empty(), "a refused device reads nothing");
    // An expired invite: refused.
    let short = invite(&a.data, "groceries", &["--expires", "1s"]);
    let issued = Instant::now();
    assert!(wait_until(Duration::from_secs(5), || issued.elapsed() > Duration::from_millis(1_200)));
    let late = join(dirs[3].path(), &short);
    assert_eq!(late.status.code(), Some(1));
    assert!(stderr(&late).contains("expired"), "{}", stderr(&late));
}

#[test]
fn a_read_only_member_reads_and_cannot_write() {
    let dirs = dirs(2);
    let a = owner(dirs[0].path(), "notes", "Alice");
    ok(&a.data, &["--list", "notes", "add", "bread"]);
    let link = invite(&a.data, "notes", &["--read-only"]);
    let r = member(dirs[1].path(), "Reader", &link);
    assert!(wait_until(SYNC, || has(&r.data, "notes", "bread")), "the reader never read");
    assert_eq!(role(&r.data, "notes"), "read-only");
    let out = run(&r.data, &["--list", "notes", "add", "mine"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("read-only"), "the reader is told why: {}", stderr(&out));
    ok(&a.data, &["--list", "notes", "add", "more"]);
    assert!(wait_until(SYNC, || has(&r.data, "notes", "more")));
    assert!(!has(&a.data, "notes", "mine"));
}

#[test]
fn a_removed_member_cannot_write_or_read_what_follows_and_the_rest_converge() {
    let dirs = dirs(3);
    let a = owner(dirs[0].path(), "house", "Alice");
    let link_b = invite(&a.data, "house", &[]);
    let b = member(dirs[1].path(), "Bob", &link_b);
    let link_c = invite(&a.data, "house", &[]);
    let c = member(dirs[2].path(), "Carol", &link_c);
    ok(&b.data, &["--list", "house", "add", "from bob before"]);
    assert!(wait_until(SYNC, || has(&a.data, "house", "from bob before") && has(&c.data, "house", "from bob before")));
    ok(&a.data, &["--list", "house", "remove", "Bob"]);
    ok(&a.data, &["--list", "house", "add", "after removal"]);
    assert!(wait_until(SYNC, || has(&c.data, "house", "after removal")), "C never read the new key's todo");
    // B receives the entries (it still replicates ciphertext) but cannot read them.
    let entries = |data: &Path| -> u64 {
        let status: serde_json::Value =
            serde_json::from_str(&ok(data, &["--list", "house", "status", "--json"])).expect("json status");
        status["entries"].as_u64().unwrap_or(0)
    };
    assert!(wait_until(SYNC, || entries(&b.data) >= entries(&a.data)), "B did not receive the entries");
    assert!(!has(&b.data, "house", "after removal"), "a removed member read a todo written after its removal");
    assert!(has(&b.data, "house", "from bob before"));
    assert_eq!(role(&b.data, "house"), "removed");
    let out = run(&b.data, &["--list", "house", "add", "late"]);
    assert_eq!(out.status.code(), Some(1), "a removed member's write: {out:?}");
    // The rest keep converging.
    ok(&c.data, &["--list", "house", "add", "from carol"]);
    assert!(wait_until(SYNC, || has(&a.data, "house", "from carol")));
    assert!(has(&a.data, "house", "from bob before"), "earlier entries stay");
    assert_eq!(texts(&a.data, "house").len(), texts(&c.data, "house").len());
}

#[test]
fn a_blind_peer_keeps_the_list_available_and_holds_no_text() {
    let dirs = dirs(3);
    let a = owner(dirs[0].path(), "plans", "Alice");
    let blind_link = invite(&a.data, "plans", &["--blind"]);
    let blind = member(dirs[1].path(), "Always-on box", &blind_link);
    assert_eq!(role(&blind.data, "plans"), "blind");
    // B joins while A is up, then goes offline before A writes.
    let b_link = invite(&a.data, "plans", &[]);
    let b = member(dirs[2].path(), "Bob", &b_link);
    b.stop();
    let secrets = ["zebra crossing plan", "quokka budget"];
    for text in secrets {
        ok(&a.data, &["--list", "plans", "add", text]);
    }
    let entries = |data: &Path| -> u64 {
        let status: serde_json::Value =
            serde_json::from_str(&ok(data, &["--list", "plans", "status", "--json"])).expect("json status");
        status["entries"].as_u64().unwrap_or(0)
    };
    assert!(wait_until(SYNC, || entries(&blind.data) >= entries(&a.data)), "the blind peer did not store A's entries");
    assert!(texts(&blind.data, "plans").is_empty(), "a blind peer read todos");
    // Names are for the members who read the list: the blind peer knows the members, by key.
    let names = |data: &Path| -> Vec<String> {
        let members: Vec<serde_json::Value> =
            serde_json::from_str(&ok(data, &["--list", "plans", "members", "--json"])).expect("members json");
        members.iter().filter_map(|m| m["name"].as_str().map(str::to_owned)).filter(|n| !n.is_empty()).collect()
    };
    assert!(wait_until(SYNC, || names(&a.data).contains(&"Bob".to_owned())), "A reads B's name: {:?}", names(&a.data));
    assert!(names(&blind.data).is_empty(), "the blind peer reads names: {:?}", names(&blind.data));
    a.stop();
    // B comes back while A is away: everything comes from the blind peer.
    let b = Peer::start(dirs[2].path(), &[LOOPBACK, &["--bootstrap", &blind.tcp_addr()]].concat());
    assert!(wait_until(SYNC, || secrets.iter().all(|t| has(&b.data, "plans", t))), "B did not get A's todos");
    drop(b);
    blind.stop();
    // The blind peer's data dir holds none of the texts.
    for text in secrets {
        assert!(!dir_contains(dirs[1].path(), text.as_bytes()), "{text:?} is stored in plain text on the blind peer");
    }
    assert!(dir_contains(dirs[0].path(), b"plans"), "the grep finds what is there (the list's name)");
}

/// Whether any file under `dir` contains `needle`.
fn dir_contains(dir: &Path, needle: &[u8]) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else { return false };
    entries.flatten().any(|entry| {
        let path = entry.path();
        if path.is_dir() {
            dir_contains(&path, needle)
        } else {
            std::fs::read(&path).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
        }
    })
}

#[test]
fn one_peer_serves_several_lists_each_with_its_own_peers() {
    let dirs = dirs(4);
    let hub_dir = dirs[0].path();
    ok(hub_dir, &["name", "Hub"]);
    ok(hub_dir, &["new", "work"]);
    ok(hub_dir, &["new", "home"]);
    ok(hub_dir, &["--topic", "todo", "add", "public hello"]);
    let hub = up(hub_dir);
    let work = member(dirs[1].path(), "Coworker", &invite(hub_dir, "work", &[]));
    let home = member(dirs[2].path(), "Partner", &invite(hub_dir, "home", &[]));
    let public =
        Peer::start(dirs[3].path(), &[LOOPBACK, &["--bootstrap", &hub.tcp_addr(), "--topic", "todo"]].concat());
    ok(&work.data, &["--list", "work", "add", "ship it"]);
    ok(&home.data, &["--list", "home", "add", "water plants"]);
    ok(&public.data, &["--topic", "todo", "add", "anyone"]);
    ok(hub_dir, &["--list", "work", "add", "review"]);
    ok(hub_dir, &["--list", "home", "add", "dinner"]);
    assert!(wait_until(SYNC, || has(hub_dir, "work", "ship it") && has(hub_dir, "home", "water plants")));
    assert!(wait_until(SYNC, || has(&work.data, "work", "review") && has(&home.data, "home", "dinner")));
    let public_texts = || -> Vec<String> {
        let out = ok(&public.data, &["--topic", "todo", "list", "--json"]);
        let todos: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap_or_default();
        todos.iter().filter_map(|t| t["text"].as_str().map(str::to_owned)).collect()
    };
    assert!(wait_until(SYNC, || public_texts().contains(&"public hello".to_owned())));
    assert!(wait_until(SYNC, || {
        let hub_public = ok(hub_dir, &["--topic", "todo", "list", "--json"]);
        hub_public.contains("anyone")
    }));
    // Each list holds only its own todos, everywhere.
    assert!(!has(hub_dir, "work", "dinner") && !has(hub_dir, "home", "review"));
    assert!(!has(&work.data, "work", "water plants"));
    assert!(!public_texts().iter().any(|t| t == "ship it" || t == "dinner"));
    // An unknown list is a clear error, exit 1.
    let out = run(hub_dir, &["--list", "nope", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no list"), "{}", stderr(&out));
    let lists: Vec<serde_json::Value> = serde_json::from_str(&ok(hub_dir, &["lists", "--json"])).expect("json lists");
    assert_eq!(lists.len(), 3, "{lists:?}");
}

#[test]
fn a_stranger_learns_nothing_about_a_private_list() {
    let dirs = dirs(2);
    let a = owner(dirs[0].path(), "diary", "Alice");
    ok(&a.data, &["--list", "diary", "add", "dear diary"]);
    let topic: serde_json::Value =
        serde_json::from_str(&ok(&a.data, &["--list", "diary", "topic", "--json"])).expect("json topic");
    let discovery = topic["discovery_key"].as_str().expect("discovery key").to_owned();
    assert_eq!(topic["access"], "private");
    let hostile = |mode: &str, key: &str| -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_hostile"))
            .args([mode, &a.tcp_addr(), key, "4"])
            .output()
            .expect("run the stranger");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    // With the discovery key (as the DHT publishes it) and a made-up proof.
    assert_eq!(hostile("stranger", &discovery), "learned nothing, dropped");
    // Nothing it sent reached the list.
    assert_eq!(texts(&a.data, "diary"), ["dear diary"]);
    let status: serde_json::Value =
        serde_json::from_str(&ok(&a.data, &["--list", "diary", "status", "--json"])).expect("json");
    assert_eq!(status["writers"].as_array().map(Vec::len), Some(1), "a stranger's writer reached the list");
    // The same stranger on the public topic still syncs as today.
    let public_dir = tempfile::tempdir().expect("tempdir");
    ok(public_dir.path(), &["add", "open to all"]);
    let public = up(public_dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_hostile"))
        .args(["many-writers", &public.tcp_addr(), "todo", "1"])
        .output()
        .expect("run the client");
    assert!(out.status.success(), "{out:?}");
    let status: serde_json::Value = serde_json::from_str(&ok(&public.data, &["status", "--json"])).expect("json");
    assert!(status["writers"].as_array().map_or(0, Vec::len) > 1, "the public topic took the client's writers");
}

#[test]
fn up_joins_from_a_link_then_serves_the_list() {
    let dirs = dirs(2);
    let a = owner(dirs[0].path(), "trip", "Alice");
    ok(&a.data, &["--list", "trip", "add", "passports"]);
    let link = invite(&a.data, "trip", &[]);
    let mut args = LOOPBACK.to_vec();
    args.extend(["--join", &link]);
    let b = Peer::start(dirs[1].path(), &args);
    assert_eq!(role(&b.data, "trip"), "writer");
    assert!(wait_until(SYNC, || has(&b.data, "trip", "passports")));
    ok(&b.data, &["--list", "trip", "add", "tickets"]);
    assert!(wait_until(SYNC, || has(&a.data, "trip", "tickets")));
}
