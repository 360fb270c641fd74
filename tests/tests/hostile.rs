//! Bad input from a peer: it is logged, the sender is dropped, and the peer keeps serving.

use std::process::Command;
use std::time::Duration;

use hellopears_tests::{Peer, hellopears_bin, list, ok, wait_until};

const LOOPBACK: &[&str] = &["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--no-dht"];

fn hostile(mode: &str, addr: &str) -> std::process::Output {
    let bin = hellopears_bin().with_file_name(format!("hostile{}", std::env::consts::EXE_SUFFIX));
    Command::new(bin).args([mode, addr]).output().expect("run the hostile peer")
}

#[test]
fn bad_input_is_logged_the_sender_dropped_and_the_others_served() {
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let a = Peer::start(dirs[0].path(), LOOPBACK);
    let mut b_args = LOOPBACK.to_vec();
    let a_addr = a.tcp_addr();
    b_args.extend(["--bootstrap", &a_addr]);
    let b = Peer::start(dirs[1].path(), &b_args);
    ok(&b.data, &["add", "before the attacks"]);
    assert!(wait_until(Duration::from_secs(10), || list(&a.data).len() == 1));
    for (mode, reason) in [
        ("garbage", "unsupported protocol version"),
        ("oversized", "over the 1048576 byte limit"),
        ("bad-signature", "bad signature"),
        ("other-topic", "another topic"),
    ] {
        let out = hostile(mode, &a_addr);
        assert!(out.status.success(), "{mode}: peer did not drop the sender: {out:?}");
        let logged = a.wait_for_line(reason, Duration::from_secs(5));
        assert!(logged.as_deref().is_some_and(|l| l.contains("dropping peer")), "{mode}: no log of why: {logged:?}");
    }
    // Still serving the honest peer, both ways.
    ok(&b.data, &["add", "after the attacks"]);
    ok(&a.data, &["add", "from a after the attacks"]);
    assert!(wait_until(Duration::from_secs(5), || list(&a.data).len() == 3 && list(&b.data) == list(&a.data)));
}
