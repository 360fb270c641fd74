//! A simulated internet in network namespaces: js-libp2p nodes stand in for the public
//! IPFS DHT's bootstrap peers (`/ipfs/kad/1.0.0`, with circuit relay v2), two home networks
//! sit behind MASQUERADE NATs, and a LAN has no route anywhere. Nothing leaves the machine.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use hellopears_tests::js::{self, JsNode};
use hellopears_tests::netns::{NatLab, VethPair, nat_lab_available};
use hellopears_tests::{Peer, ok, run_in, wait_until};

/// Whether the lab can run here; says why not (never on CI, where it fails instead).
/// One test of this file at a time: each starts js DHT nodes and peers in namespaces, and
/// two at once on two cores made timings (mDNS within 10 s, a relayed path within 60 s)
/// fail now and then.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn lab_here() -> bool {
    let available = nat_lab_available() && js::available();
    if !available {
        eprintln!(
            "skipped on this machine: needs root, iproute2, iptables, node and `npm ci` in tests/js (never skipped on CI)"
        );
    }
    available
}

fn json(data: &Path, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&ok(data, args)).expect("json output")
}

fn texts(data: &Path, list: &[&str]) -> Vec<String> {
    let mut args = list.to_vec();
    args.extend(["list", "--json"]);
    json(data, &args).as_array().into_iter().flatten().filter_map(|t| t["text"].as_str().map(str::to_owned)).collect()
}

/// `peer`'s entry in the status of the peer on `data` (`list`: which list's status).
fn peer_entry_of(data: &Path, list: &[&str], peer: &str) -> Option<serde_json::Value> {
    let mut args = list.to_vec();
    args.extend(["status", "--json"]);
    let status = json(data, &args);
    status["peers"].as_array()?.iter().find(|p| p["peer"] == peer).cloned()
}

fn relayed(entry: &serde_json::Value) -> bool {
    entry["addresses"].as_array().is_some_and(|addrs| {
        addrs.iter().filter_map(|a| a.as_str()).any(|a| a.contains("p2p-circuit") || a.starts_with("/p2p/"))
    })
}

fn dht_keys(data: &Path, list: &[&str]) -> Vec<String> {
    let mut args = list.to_vec();
    args.extend(["topic", "--json"]);
    json(data, &args)["dht_keys"]
        .as_array()
        .expect("dht keys")
        .iter()
        .filter_map(|k| k.as_str().map(str::to_owned))
        .collect()
}

/// Digests the js DHT nodes stored provider records for, from `peer`.
fn observed(nodes: &[JsNode], peer: &str) -> HashSet<String> {
    nodes.iter().flat_map(|node| node.provided()).filter(|p| p.peer == peer).map(|p| p.digest).collect()
}

/// Two desktop peers, one per home network, configured only with the lab's bootstrap list.
struct Homes {
    a: Peer,
    b: Peer,
    topic: String,
    /// From the start of the first peer to the second showing the first's todo.
    first_sync: Duration,
    _dirs: Vec<tempfile::TempDir>,
}

fn homes(lab: &NatLab, bootstrap: &str, tag: u8) -> Homes {
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let topic = format!("lab-{}-{tag}", std::process::id());
    // The window of private lists' keys is short here, to watch them rotate.
    let env = [("HELLOPEARS_BOOTSTRAP", bootstrap), ("HELLOPEARS_DHT_WINDOW_SECS", "12")];
    let args =
        ["--topic", &topic, "--no-mdns", "--listen", "/ip4/0.0.0.0/tcp/0", "--listen", "/ip4/0.0.0.0/udp/0/quic-v1"];
    let started = Instant::now();
    let a = Peer::start_in_with_env(&lab.ns("a"), dirs[0].path(), &env, &args);
    let b = Peer::start_in_with_env(&lab.ns("b"), dirs[1].path(), &env, &args);
    ok(&a.data, &["--topic", &topic, "add", "from home 1"]);
    let synced = wait_until(Duration::from_secs(90), || {
        texts(&b.data, &["--topic", &topic]).contains(&"from home 1".to_owned())
    });
    let first_sync = started.elapsed();
    assert!(
        synced,
        "the two homes never synced: b sees a as {:?}",
        peer_entry_of(&b.data, &["--topic", topic.as_str()], &a.peer_id)
    );
    Homes { a, b, topic, first_sync, _dirs: dirs }
}

/// Acceptance 1 to 4: two homes meet through the DHT, punch through both NATs and sync with
/// the relayed path closed; they keep syncing once every DHT node is gone; a third peer
/// joins from an invite link alone; and the provider records of a private list reveal it
/// to no observer and change between windows.
#[test]
fn two_homes_meet_through_the_public_dht_and_need_it_no_more() {
    let _serial = serial();
    if !lab_here() {
        return;
    }
    let runs: u8 = std::env::var("HELLOPEARS_LAB_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let mut times = Vec::new();
    for run in 0..runs {
        let lab = NatLab::new(run, false);
        let nodes = js::dht_servers(&lab, 4);
        let bootstrap = nodes.iter().map(|node| node.addr.clone()).collect::<Vec<_>>().join(",");
        let homes = homes(&lab, &bootstrap, run);
        times.push(homes.first_sync);
        println!("run {run}: first synced todo {:?} after start", homes.first_sync);
        if run + 1 == runs {
            check_the_homes(&lab, nodes, homes);
        }
    }
    times.sort();
    println!(
        "two homes through the DHT: {runs} of {runs} runs synced; median {:?}, max {:?} from start to first synced todo",
        times[times.len() / 2],
        times[times.len() - 1]
    );
}

fn check_the_homes(lab: &NatLab, nodes: Vec<JsNode>, homes: Homes) {
    let Homes { a, b, topic, .. } = &homes;
    let on_topic = ["--topic", topic.as_str()];
    // 1. Found through the DHT, hole-punched, and the relayed connection closed.
    let mut seen = None;
    let punched = wait_until(Duration::from_secs(20), || {
        seen = peer_entry_of(&b.data, &["--topic", topic.as_str()], &a.peer_id).filter(|entry| !relayed(entry));
        seen.is_some()
    });
    assert!(
        punched,
        "no direct connection: b sees a as {:?}",
        peer_entry_of(&b.data, &["--topic", topic.as_str()], &a.peer_id)
    );
    let seen = seen.expect("a is a peer of b");
    assert_eq!(seen["kind"], "hole-punched (TCP)", "{seen}");
    let found_a = peer_entry_of(&a.data, &["--topic", topic.as_str()], &b.peer_id).map(|entry| entry["found"].clone());
    assert!(seen["found"] == "dht" || found_a.as_ref().is_some_and(|f| *f == "dht"), "found: {seen} / {found_a:?}");
    let relay_closed = wait_until(Duration::from_secs(10), || {
        peer_entry_of(&a.data, &["--topic", topic.as_str()], &b.peer_id).is_some_and(|entry| !relayed(&entry))
            && peer_entry_of(&b.data, &["--topic", topic.as_str()], &a.peer_id).is_some_and(|entry| !relayed(&entry))
    });
    assert!(
        relay_closed,
        "still relayed: {:?} / {:?}",
        peer_entry_of(&a.data, &["--topic", topic.as_str()], &b.peer_id),
        peer_entry_of(&b.data, &["--topic", topic.as_str()], &a.peer_id)
    );
    let dht = &json(&a.data, &["--topic", topic.as_str(), "status", "--json"])["dht"];
    assert_eq!(dht["mode"], "client", "a peer behind a NAT answers no DHT query: {dht}");
    assert_eq!(dht["bootstrapped"], true, "{dht}");

    // 4. A private list's provider records: an observer sees keys that match nothing public
    // about the list, and that change with the window.
    ok(&a.data, &["new", "secret plans"]);
    let on_secret = ["--list", "secret plans"];
    let topic_json = json(&a.data, &["--list", "secret plans", "topic", "--json"]);
    let first = dht_keys(&a.data, &on_secret);
    assert_eq!(first.len(), 2, "the current window's key and the next: {first:?}");
    let announced =
        wait_until(Duration::from_secs(30), || first.iter().any(|k| observed(&nodes, &a.peer_id).contains(k)));
    assert!(announced, "the js DHT nodes stored no record of {first:?}: {:?}", observed(&nodes, &a.peer_id));
    let public_of_name = dht_keys(&a.data, &["--topic", "secret plans"]);
    let public_values = [
        topic_json["id"].as_str().unwrap_or_default().to_owned(),
        topic_json["discovery_key"].as_str().unwrap_or_default().to_owned(),
        public_of_name[0].clone(),
    ];
    for digest in observed(&nodes, &a.peer_id) {
        assert!(!public_values.contains(&digest), "an observer can tell the list from {digest}");
    }
    // The public topic's key is the one any peer of the topic can compute, as expected.
    assert!(observed(&nodes, &a.peer_id).contains(&dht_keys(&a.data, &on_topic)[0]));
    let rotated = wait_until(Duration::from_secs(40), || {
        let now = dht_keys(&a.data, &on_secret);
        now[1] != first[1] && observed(&nodes, &a.peer_id).contains(&now[1])
    });
    assert!(rotated, "no new key announced after a window: {first:?} then {:?}", dht_keys(&a.data, &on_secret));

    // 2. Every DHT node (and relay) goes away: the punched connection stays and syncs.
    for node in nodes {
        node.stop();
    }
    ok(&b.data, &["--topic", topic.as_str(), "add", "with the DHT gone"]);
    let synced =
        wait_until(Duration::from_secs(15), || texts(&a.data, &on_topic).contains(&"with the DHT gone".to_owned()));
    assert!(
        synced,
        "no sync after the DHT went away: a sees b as {:?}",
        peer_entry_of(&a.data, &["--topic", topic.as_str()], &b.peer_id)
    );
    let still = peer_entry_of(&a.data, &["--topic", topic.as_str()], &b.peer_id).expect("b still a peer of a");
    assert!(!relayed(&still), "{still}");

    // 3. A third peer that never saw either, given only an invite link, joins through the
    // addresses in it (the DHT is down; mDNS is off on a, so only the link can lead there).
    let c_ns = lab.add_home_host(1, "c", 3);
    let invite = json(&a.data, &["--list", "secret plans", "invite", "--json"]);
    let link = invite["link"].as_str().expect("link").to_owned();
    let c_dir = tempfile::tempdir().expect("tempdir");
    let joined = run_in(&c_ns, c_dir.path(), &["join", &link, "--wait", "40s"]);
    assert!(joined.status.success(), "c could not join: {joined:?}");
    let c = Peer::start_in(&c_ns, c_dir.path(), &["--no-mdns"]);
    // The peers of the link are dialed again at every start.
    let mut entry = None;
    let connected = wait_until(Duration::from_secs(20), || {
        entry = peer_entry_of(&c.data, &[], &a.peer_id);
        entry.is_some()
    });
    assert!(connected, "c did not reconnect to a from the link's addresses");
    let entry = entry.expect("a is a peer of c");
    assert_eq!(entry["found"], "invite", "{entry}");
    ok(&a.data, &["--list", "secret plans", "add", "for members only"]);
    let synced =
        wait_until(Duration::from_secs(20), || texts(&c.data, &on_secret).contains(&"for members only".to_owned()));
    assert!(synced, "c never got the list: {:?}", texts(&c.data, &on_secret));
    drop(c);
}

/// Acceptance 5: a LAN with no route anywhere: the peers, with the public DHT's default
/// bootstrap list, find each other by mDNS and sync within 3 s, and say once (at most) that
/// the DHT is out of reach.
#[test]
fn a_lan_without_internet_syncs_by_mdns_with_one_line_about_the_dht() {
    let _serial = serial();
    if !hellopears_tests::netns::available() {
        eprintln!("skipped on this machine: needs root and iproute2 (never skipped on CI)");
        return;
    }
    let lan = VethPair::new(61);
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let listen: Vec<String> = lan.addrs.iter().map(|addr| format!("/ip4/{addr}/tcp/0")).collect();
    let first = Peer::start_in(&lan.names[0], dirs[0].path(), &["--listen", &listen[0]]);
    ok(&first.data, &["add", "offline but together"]);
    let started = Instant::now();
    let second = Peer::start_in(&lan.names[1], dirs[1].path(), &["--listen", &listen[1]]);
    let synced = wait_until(Duration::from_secs(10), || {
        hellopears_tests::list(&second.data).iter().any(|t| t["text"] == "offline but together")
    });
    let took = started.elapsed();
    assert!(synced, "no sync by mDNS on a LAN without internet");
    println!("LAN without internet: synced by mDNS {took:?} after the second peer started");
    assert!(took <= Duration::from_secs(3), "took {took:?}");
    let entry = peer_entry_of(&second.data, &[], &first.peer_id).expect("connected");
    assert_eq!(entry["found"], "mdns", "{entry}");
    // Both try the bootstrap list (every dial fails: no route); each says so in one line,
    // and nothing else about it, however long it runs.
    let about_it = |line: &String| {
        let lower = line.to_lowercase();
        ["dht", "bootstrap", "kad", "dnsaddr", "unreachable", "104.131.131.82", "quic"]
            .iter()
            .any(|word| lower.contains(word))
    };
    let mut logs: Vec<Vec<String>> = vec![Vec::new(), Vec::new()];
    for (peer, log) in [&first, &second].into_iter().zip(logs.iter_mut()) {
        let said = wait_until(Duration::from_secs(15), || {
            log.extend(peer.drain_lines());
            log.iter().any(|line| line.contains("DHT is unreachable"))
        });
        assert!(said, "no word that the DHT is unreachable: {log:?}");
    }
    ok(&second.data, &["add", "still syncing"]);
    assert!(wait_until(Duration::from_secs(5), || hellopears_tests::list(&first.data).len() == 2));
    for (peer, log) in [&first, &second].into_iter().zip(logs.iter_mut()) {
        log.extend(peer.drain_lines());
        let lines: Vec<&String> = log.iter().filter(|line| about_it(line)).collect();
        assert_eq!(lines.len(), 1, "one line about the DHT, not: {lines:?}");
    }
}

/// Acceptance 6: a js-libp2p node asks our desktop peer, a DHT server, FIND_NODE and
/// GET_PROVIDERS, gets valid answers, and its connection (no HelloPears protocol on it) is
/// kept.
#[test]
fn a_js_libp2p_node_queries_our_dht_server() {
    let _serial = serial();
    if !js::available() {
        eprintln!("skipped on this machine: needs node and `npm ci` in tests/js (never skipped on CI)");
        return;
    }
    let port = |_: u8| std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let d_addr = format!("/ip4/127.0.0.1/tcp/{}", port(0));
    let d = Peer::start(dirs[0].path(), &["--no-mdns", "--listen", &d_addr, "--external-address", &d_addr]);
    let e_addr = format!("/ip4/127.0.0.1/tcp/{}", port(1));
    let d_full = format!("{d_addr}/p2p/{}", d.peer_id);
    let e = Peer::start(
        dirs[1].path(),
        &["--no-mdns", "--listen", &e_addr, "--external-address", &e_addr, "--bootstrap", &d_full],
    );
    // e is in d's routing table once d learned it is a DHT server.
    let ready = wait_until(Duration::from_secs(20), || {
        json(&d.data, &["status", "--json"])["dht"]["routing_table"].as_u64().is_some_and(|n| n >= 1)
            && json(&d.data, &["status", "--json"])["dht"]["announced"].as_u64().is_some_and(|n| n >= 1)
    });
    assert!(ready, "d's DHT: {}", json(&d.data, &["status", "--json"])["dht"]);
    assert_eq!(json(&d.data, &["status", "--json"])["dht"]["mode"], "server");
    let key = dht_keys(&d.data, &[])[0].clone();
    let target = "00".repeat(32);
    let events = js::query(None, &d_full, &target, &key, 6);
    let find = events.iter().find(|e| e["event"] == "find_node").expect("FIND_NODE answered");
    let closer: Vec<&str> =
        find["closer"].as_array().expect("closer").iter().filter_map(|p| p["peer"].as_str()).collect();
    assert!(closer.contains(&e.peer_id.as_str()), "FIND_NODE did not return e: {find}");
    let e_entry = find["closer"].as_array().into_iter().flatten().find(|p| p["peer"] == e.peer_id.as_str()).expect("e");
    assert!(
        e_entry["addrs"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x.as_str().is_some_and(|x| x.starts_with(&e_addr)))),
        "{e_entry}"
    );
    let providers = events.iter().find(|e| e["event"] == "get_providers").expect("GET_PROVIDERS answered");
    let list: Vec<&str> =
        providers["providers"].as_array().expect("providers").iter().filter_map(|p| p["peer"].as_str()).collect();
    assert!(list.contains(&d.peer_id.as_str()), "d is not a provider of its topic: {providers}");
    let held = events.iter().find(|e| e["event"] == "held").expect("held");
    assert_eq!(held["open"], true, "our peer dropped a DHT client that speaks no HelloPears protocol: {held}");
}

/// After a failed punch no data flows through a stranger's relay: two homes behind
/// symmetric NATs meet through the js relays, cannot punch, and do not sync through them;
/// once a reachable member of the list is up, they sync relayed through it, and say so.
#[test]
fn after_a_failed_punch_only_a_member_of_the_list_relays() {
    let _serial = serial();
    if !lab_here() {
        return;
    }
    let lab = NatLab::new(40, true);
    let nodes = js::dht_servers(&lab, 4);
    let bootstrap = nodes.iter().map(|node| node.addr.clone()).collect::<Vec<_>>().join(",");
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let topic = format!("sym-{}", std::process::id());
    let on_topic = ["--topic", topic.as_str()];
    let env = [("HELLOPEARS_BOOTSTRAP", bootstrap.as_str()), ("HELLOPEARS_LOG", "hellopears=info")];
    let args = ["--topic", &topic, "--no-mdns", "--listen", "/ip4/0.0.0.0/tcp/0"];
    let a = Peer::start_in_with_env(&lab.ns("a"), dirs[0].path(), &env, &args);
    let b = Peer::start_in_with_env(&lab.ns("b"), dirs[1].path(), &env, &args);
    ok(&a.data, &["--topic", &topic, "add", "from behind a symmetric NAT"]);
    let gave_up = "not syncing through a stranger's relay";
    let failed = wait_until(Duration::from_secs(120), || {
        a.wait_for_line(gave_up, Duration::from_millis(100)).is_some()
            || b.wait_for_line(gave_up, Duration::from_millis(100)).is_some()
    });
    assert!(failed, "the punch through a stranger's relay neither failed nor was given up");
    assert!(
        !texts(&b.data, &on_topic).contains(&"from behind a symmetric NAT".to_owned()),
        "data flowed through a stranger's relay"
    );
    // A reachable member of the list: both find it in the DHT, reserve on it, and sync
    // through it.
    let public = "/ip4/10.99.0.1/tcp/4001";
    let member = Peer::start_in_with_env(
        &lab.ns("pub"),
        dirs[2].path(),
        &env,
        &["--topic", &topic, "--no-mdns", "--listen", public, "--external-address", public],
    );
    let synced = wait_until(Duration::from_secs(90), || {
        texts(&b.data, &on_topic).contains(&"from behind a symmetric NAT".to_owned())
    });
    assert!(synced, "no sync through the member: b sees a as {:?}", peer_entry_of(&b.data, &on_topic, &a.peer_id));
    // (The member holds the list too, so the todo may come from it: the path a-b is
    // checked on its own.)
    let via_member = format!("relayed via {}", member.peer_id);
    let relayed = wait_until(Duration::from_secs(60), || {
        peer_entry_of(&b.data, &on_topic, &a.peer_id)
            .is_some_and(|entry| entry["kind"].as_str().is_some_and(|kind| kind.starts_with(&via_member)))
    });
    assert!(relayed, "b does not reach a through the member: {:?}", peer_entry_of(&b.data, &on_topic, &a.peer_id));
    drop(nodes);
}

/// `--no-public-dht` (and its old spelling `--no-dht`) keeps a peer off the DHT; by default
/// a peer is on the public DHT, a client until it is known to be reachable.
#[test]
fn the_public_dht_is_on_by_default_and_off_on_request() {
    let _serial = serial();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let loopback = ["--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"];
    for (dir, flag) in dirs.iter().zip(["--no-public-dht", "--no-dht"]) {
        let mut args = loopback.to_vec();
        args.push(flag);
        let peer = Peer::start(dir.path(), &args);
        let dht = &json(&peer.data, &["status", "--json"])["dht"];
        assert_eq!(dht["enabled"], false, "{flag}: {dht}");
        assert_eq!(dht["mode"], "off", "{flag}: {dht}");
        assert!(ok(&peer.data, &["status"]).contains("DHT: off"), "{flag}");
    }
    let peer = Peer::start(dirs[2].path(), &loopback);
    let dht = &json(&peer.data, &["status", "--json"])["dht"];
    assert_eq!(dht["enabled"], true, "{dht}");
    assert_eq!(dht["public"], true, "the default bootstrap list is the public DHT's: {dht}");
    assert_eq!(dht["mode"], "client", "{dht}");
    assert!(ok(&peer.data, &["status"]).contains("public IPFS DHT"));
    let topic = json(&peer.data, &["topic", "--json"]);
    assert_eq!(topic["dht_keys"].as_array().map(Vec::len), Some(1), "a public topic has one key: {topic}");
}

/// `seed` announces the app in the public DHT under the app's rendezvous key (derived from
/// the app key, which is public): the js DHT nodes store a provider record for it.
#[test]
fn a_seeder_announces_its_app_in_the_dht() {
    let _serial = serial();
    if !lab_here() {
        return;
    }
    let lab = NatLab::new(47, false);
    let nodes = js::dht_servers(&lab, 4);
    let bootstrap = nodes.iter().map(|node| node.addr.clone()).collect::<Vec<_>>().join(",");
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    std::fs::write(dirs[1].path().join("index.html"), "<html>an app</html>").expect("write");
    let staged = ok(dirs[0].path(), &["stage", "main", dirs[1].path().to_str().expect("utf-8")]);
    let key = staged.lines().find_map(|l| l.strip_prefix("app key ")).expect("an app key");
    let app = hellopears_core::keys::WriterId::from_hex(key).expect("a key");
    let rendezvous: String = hellopears_core::app::rendezvous(&app).iter().map(|byte| format!("{byte:02x}")).collect();
    let public = "/ip4/10.99.0.1/tcp/4001";
    let env = [("HELLOPEARS_BOOTSTRAP", bootstrap.as_str())];
    let args = ["--no-mdns", "--listen", public, "--external-address", public, "--seed", "main"];
    let a = Peer::start_in_with_env(&lab.ns("pub"), dirs[0].path(), &env, &args);
    let announced = wait_until(Duration::from_secs(30), || observed(&nodes, &a.peer_id).contains(&rendezvous));
    assert!(announced, "no provider record for the app: {:?}", observed(&nodes, &a.peer_id));
}
