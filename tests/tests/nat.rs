//! Two peers behind separate NATs that know only a public peer end up connected directly.

use std::time::{Duration, Instant};

use hellopears_tests::netns::{NatLab, nat_lab_available};
use hellopears_tests::{Peer, list, ok, wait_until};

fn peer_entry(data: &std::path::Path, peer: &str) -> Option<serde_json::Value> {
    let status: serde_json::Value = serde_json::from_str(&ok(data, &["status", "--json"])).ok()?;
    status["peers"].as_array()?.iter().find(|p| p["peer"] == peer).cloned()
}

/// Whether the NAT lab can run here; says why not (never on CI, where it fails instead).
fn lab_here() -> bool {
    let available = nat_lab_available();
    if !available {
        eprintln!("skipped on this machine: needs root, iproute2 and iptables (never skipped on CI)");
    }
    available
}

/// A lab with a public peer and one peer behind each NAT, all started.
struct Scene {
    relay: Option<Peer>,
    a: Peer,
    b: Peer,
    b_started: Instant,
    lab: NatLab,
    _dirs: Vec<tempfile::TempDir>,
}

fn scene(lab_tag: u8, transport: &str, symmetric: bool) -> Scene {
    scene_with(lab_tag, transport, symmetric, true)
}

/// `announce`: whether the public peer is told its external address, or must learn it.
fn scene_with(lab_tag: u8, transport: &str, symmetric: bool, announce: bool) -> Scene {
    // Each run builds its own lab, so runs cannot disturb each other.
    let lab = NatLab::new(lab_tag, symmetric);
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let (listen, public) = match transport {
        "tcp" => ("/ip4/0.0.0.0/tcp/0", "/ip4/10.99.0.1/tcp/4001"),
        _ => ("/ip4/0.0.0.0/udp/0/quic-v1", "/ip4/10.99.0.1/udp/4001/quic-v1"),
    };
    let mut relay_args = vec!["--listen", public, "--no-mdns", "--no-dht"];
    if announce {
        relay_args.extend(["--external-address", public]);
    }
    let relay = Peer::start_in(&lab.ns("pub"), dirs[0].path(), &relay_args);
    let relay_addr = format!("{public}/p2p/{}", relay.peer_id);
    let args = ["--listen", listen, "--bootstrap", &relay_addr, "--no-mdns", "--no-dht"];
    let a = Peer::start_in(&lab.ns("a"), dirs[1].path(), &args);
    let b_started = Instant::now();
    let b = Peer::start_in(&lab.ns("b"), dirs[2].path(), &args);
    Scene { relay: Some(relay), a, b, b_started, lab, _dirs: dirs }
}

/// Whether a status entry shows a direct connection: an IP address that is not a circuit
/// (the accepting side of a relayed connection sees only `/p2p/<id>`).
fn is_direct(entry: &serde_json::Value) -> bool {
    entry["addresses"].as_array().is_some_and(|addrs| {
        addrs
            .iter()
            .filter_map(|x| x.as_str())
            .any(|x| (x.starts_with("/ip4/") || x.starts_with("/ip6/")) && !x.contains("p2p-circuit"))
    })
}

fn converges(a: &Peer, b: &Peer, texts: [&str; 2], total: usize, within: Duration) -> bool {
    ok(&a.data, &["add", texts[0]]);
    ok(&b.data, &["add", texts[1]]);
    wait_until(within, || list(&a.data).len() == total && list(&a.data) == list(&b.data))
}

fn punch(lab_tag: u8, transport: &str) -> Duration {
    let Scene { a, b, b_started: started, .. } = &scene(lab_tag, transport, false);
    // The entry is taken from the same status that showed the direct connection: right
    // after a punch, b can be missing from a's status for a moment (the relayed connection
    // closes and the session on the direct one is introduced again).
    let mut seen = None;
    let direct = wait_until(Duration::from_secs(20), || {
        seen = peer_entry(&a.data, &b.peer_id).filter(is_direct);
        seen.is_some()
    });
    let elapsed = started.elapsed();
    assert!(direct, "no direct connection over {transport}: a sees b as {:?}", peer_entry(&a.data, &b.peer_id));
    let seen = seen.expect("b is a peer of a");
    let expected = if transport == "tcp" { "hole-punched (TCP)" } else { "hole-punched (QUIC)" };
    assert_eq!(seen["kind"], expected, "{seen}");
    // The relayed connection is closed once the direct one is up: sync runs directly.
    let relay_dropped = wait_until(Duration::from_secs(5), || {
        peer_entry(&a.data, &b.peer_id).is_some_and(|p| {
            p["addresses"].as_array().is_some_and(|addrs| {
                addrs.iter().all(|x| {
                    !x.as_str().unwrap_or("").contains("p2p-circuit")
                        && x.as_str() != Some(&format!("/p2p/{}", b.peer_id))
                })
            })
        })
    });
    assert!(relay_dropped, "{transport}: still relayed too: {:?}", peer_entry(&a.data, &b.peer_id));
    assert!(converges(a, b, ["from behind nat 1", "from behind nat 2"], 2, Duration::from_secs(10)));
    elapsed
}

#[test]
fn nated_peers_hole_punch_over_tcp_and_quic() {
    if !lab_here() {
        return;
    }
    let runs: u8 = std::env::var("HELLOPEARS_NAT_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    for (offset, transport) in [(0, "tcp"), (100, "quic")] {
        let mut times: Vec<Duration> = (0..runs).map(|run| punch(offset + run, transport)).collect();
        times.sort();
        println!(
            "{transport}: {runs} of {runs} runs direct; median {:?}, max {:?}",
            times[times.len() / 2],
            times[times.len() - 1]
        );
    }
}

#[test]
fn nated_peers_keep_syncing_directly_after_the_public_peer_stops() {
    if !lab_here() {
        return;
    }
    for (tag, transport) in [(201, "tcp"), (204, "quic")] {
        let mut scene = scene(tag, transport, false);
        let (a, b) = (&scene.a, &scene.b);
        assert!(wait_until(Duration::from_secs(20), || peer_entry(&a.data, &b.peer_id).is_some_and(|p| is_direct(&p))));
        assert!(converges(a, b, ["before", "before too"], 2, Duration::from_secs(10)));
        if let Some(relay) = scene.relay.take() {
            relay.stop();
        }
        let (a, b) = (&scene.a, &scene.b);
        let synced = converges(a, b, ["after the public peer left", "still here"], 4, Duration::from_secs(10));
        assert!(synced, "{transport}: a {:?}\nb {:?}", list(&a.data), list(&b.data));
        assert!(peer_entry(&a.data, &b.peer_id).is_some_and(|p| is_direct(&p)), "{transport}");
    }
}

#[test]
fn symmetric_nats_stay_relayed_and_say_why() {
    if !lab_here() {
        return;
    }
    let scene = scene(202, "tcp", true);
    let (a, b) = (&scene.a, &scene.b);
    // DCUtR tries three times, about ten seconds apart, before it gives up.
    let said = wait_until(Duration::from_secs(60), || {
        peer_entry(&a.data, &b.peer_id).is_some_and(|p| {
            p["kind"].as_str().is_some_and(|k| k.contains("relayed via") && k.contains("hole punching failed"))
        })
    });
    assert!(said, "a sees b as {:?}", peer_entry(&a.data, &b.peer_id));
    assert!(converges(a, b, ["through the relay", "through the relay too"], 2, Duration::from_secs(10)));
}

#[test]
fn a_partition_heals_and_both_sides_converge() {
    if !lab_here() {
        return;
    }
    let scene = scene(203, "tcp", false);
    let (a, b) = (&scene.a, &scene.b);
    assert!(wait_until(Duration::from_secs(20), || peer_entry(&a.data, &b.peer_id).is_some_and(|p| is_direct(&p))));
    let nat1 = scene.lab.ns("nat1");
    hellopears_tests::netns::ip(&["-n", &nat1, "link", "set", "wan", "down"]);
    ok(&a.data, &["add", "written during the partition on a"]);
    ok(&b.data, &["add", "written during the partition on b"]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(list(&a.data).len(), 1, "the partition must cut a off");
    hellopears_tests::netns::ip(&["-n", &nat1, "link", "set", "wan", "up"]);
    let healed = wait_until(Duration::from_secs(30), || list(&a.data).len() == 2 && list(&a.data) == list(&b.data));
    assert!(healed, "a {:?}\nb {:?}", list(&a.data), list(&b.data));
}

#[test]
fn a_public_peer_learns_it_is_reachable_and_relays() {
    if !lab_here() {
        return;
    }
    // No --external-address: the public peer learns it is reachable from AutoNAT dial-backs
    // by the NATed peers, and only then serves reservations.
    let scene = scene_with(205, "tcp", false, false);
    let (a, b) = (&scene.a, &scene.b);
    let relay = scene.relay.as_ref().expect("relay");
    assert!(relay.wait_for_line("publicly reachable at", Duration::from_secs(30)).is_some(), "AutoNAT never confirmed");
    let direct = wait_until(Duration::from_secs(30), || peer_entry(&a.data, &b.peer_id).is_some_and(|p| is_direct(&p)));
    assert!(direct, "a sees b as {:?}", peer_entry(&a.data, &b.peer_id));
    assert!(converges(a, b, ["learned", "reachable"], 2, Duration::from_secs(10)));
}
