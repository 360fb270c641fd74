//! Two peers in two network namespaces joined by a veth pair find each other with mDNS
//! alone (no bootstrap address, no DHT) and converge.

use std::time::Duration;

use hellopears_tests::netns::{VethPair, available};
use hellopears_tests::{Peer, list, ok, wait_until};

#[test]
fn peers_find_each_other_on_the_lan_with_mdns_only() {
    if !available() {
        eprintln!("skipped on this machine: needs root and iproute2 (never skipped on CI)");
        return;
    }
    let lan = VethPair::new(1);
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let peers: Vec<Peer> = (0..2)
        .map(|i| {
            let listen = format!("/ip4/{}/tcp/0", lan.addrs[i]);
            Peer::start_in(&lan.names[i], dirs[i].path(), &["--listen", &listen, "--no-dht"])
        })
        .collect();
    ok(&peers[0].data, &["add", "from namespace a"]);
    ok(&peers[1].data, &["add", "from namespace b"]);
    let converged = wait_until(Duration::from_secs(20), || {
        let (a, b) = (list(&peers[0].data), list(&peers[1].data));
        a.len() == 2 && a == b
    });
    assert!(converged, "a: {:?}\nb: {:?}", list(&peers[0].data), list(&peers[1].data));
}
