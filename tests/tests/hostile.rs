//! Hostile peers against the real desktop peer (`tests/src/bin/hostile.rs` is a misbehaving
//! libp2p client): bad input gets the sender banned and logged; attacks on resources are
//! bounded by the limits in `hellopears_core::limits`; honest peers keep converging meanwhile.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hellopears_core::limits::{MAX_SYNC_STREAMS_PER_PEER, SERVE_BURST_BYTES, SERVE_BYTES_PER_SEC};
use hellopears_tests::{Peer, hellopears_bin, list, ok, wait_until};

const LOOPBACK: &[&str] = &["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--no-dht"];

fn hostile(mode: &str, addr: &str, hold_secs: u64) -> String {
    let bin = hellopears_bin().with_file_name(format!("hostile{}", std::env::consts::EXE_SUFFIX));
    let out =
        Command::new(bin).args([mode, addr, "todo", &hold_secs.to_string()]).output().expect("run the hostile peer");
    assert!(out.status.success(), "{mode}: the hostile peer failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn texts(data: &Path) -> Vec<String> {
    let mut texts: Vec<String> =
        list(data).iter().filter_map(|todo| todo["text"].as_str().map(str::to_owned)).collect();
    texts.sort();
    texts
}

/// Two honest peers, A serving B.
fn honest_pair(dirs: &[tempfile::TempDir]) -> (Peer, Peer) {
    let a = Peer::start(dirs[0].path(), LOOPBACK);
    let mut b_args = LOOPBACK.to_vec();
    let a_addr = a.tcp_addr();
    b_args.extend(["--bootstrap", &a_addr]);
    let b = Peer::start(dirs[1].path(), &b_args);
    (a, b)
}

/// Both peers take a write each and converge on it, within the usual time.
fn still_converging(a: &Peer, b: &Peer, label: &str) {
    ok(&a.data, &["add", &format!("a during {label}")]);
    ok(&b.data, &["add", &format!("b during {label}")]);
    let converged = wait_until(Duration::from_secs(20), || {
        let (on_a, on_b) = (texts(&a.data), texts(&b.data));
        on_a == on_b && on_a.iter().filter(|text| text.ends_with(&format!("during {label}"))).count() == 2
    });
    assert!(converged, "{label}: honest peers stopped converging");
}

#[test]
fn bad_input_is_logged_the_sender_banned_and_the_others_served() {
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let (a, b) = honest_pair(&dirs);
    let a_addr = a.tcp_addr();
    ok(&b.data, &["add", "before the attacks"]);
    assert!(wait_until(Duration::from_secs(10), || list(&a.data).len() == 1));
    for (mode, reason) in [
        ("garbage", "unsupported protocol version"),
        ("oversized", "over the 1048576 byte limit"),
        ("bad-signature", "bad signature"),
        ("entry-flood", "entries over its limit"),
        ("slowloris", "did not complete in"),
    ] {
        assert_eq!(hostile(mode, &a_addr, 0), "dropped", "{mode}: the peer kept the sender");
        let logged = a.wait_for_line(reason, Duration::from_secs(5));
        assert!(logged.as_deref().is_some_and(|l| l.contains("banning peer")), "{mode}: no log of why: {logged:?}");
    }
    // A peer of another list is dropped, not banned: it may be the user's other list.
    assert_eq!(hostile("other-topic", &a_addr, 0), "dropped");
    let logged = a.wait_for_line("another topic", Duration::from_secs(5));
    assert!(logged.as_deref().is_some_and(|l| l.contains("dropping peer")), "other-topic: {logged:?}");
    still_converging(&a, &b, "bad input");
}

#[test]
fn attacks_on_resources_are_bounded_and_honest_peers_keep_converging() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let (a, b) = honest_pair(&dirs);
    let a_addr = a.tcp_addr();
    // Something worth requesting: 3,000 todos (about 600 KB of entries).
    ok(&a.data, &["seed", "3000"]);
    assert!(wait_until(Duration::from_secs(60), || list(&b.data).len() == 3000), "B did not catch up");

    // Finding 1: 1,100 throwaway writers; our next entries stay small and replicate.
    assert_eq!(hostile("many-writers", &a_addr, 2), "held");
    still_converging(&a, &b, "many writers");

    // Finding 7: requests whose cost the remote chooses are bounded by the serving budget.
    let verdict = hostile("want-flood", &a_addr, 0);
    let (bytes, ms) = parse_two(&verdict, "received", "bytes in");
    let allowed = SERVE_BURST_BYTES + SERVE_BYTES_PER_SEC * (ms / 1000 + 1) + (1 << 20);
    assert!(bytes <= allowed, "want flood bought {bytes} bytes in {ms} ms (allowed {allowed}): {verdict}");
    still_converging(&a, &b, "want flood");

    let verdict = hostile("hello-flood", &a_addr, 0);
    let (restarts, ms) = parse_two(&verdict, "restarts", "in");
    assert!(restarts <= 2 + ms / 5_000, "5,000 hellos restarted the session {restarts} times: {verdict}");
    still_converging(&a, &b, "hello flood");

    // Finding 2 (streams): extra sync streams of one peer are refused.
    let verdict = hostile("many-streams", &a_addr, 0);
    let kept: usize = verdict.trim_start_matches("streams kept ").parse().expect("a count");
    assert!(kept <= MAX_SYNC_STREAMS_PER_PEER, "{verdict}");

    // Held attacks, while honest peers keep working: false lengths, replayed entries,
    // forged peer-exchange records, and a flood of new writers.
    for mode in ["huge-lengths", "replay", "forged-pex", "writer-flood"] {
        let addr = a_addr.clone();
        let attack = std::thread::spawn(move || hostile(mode, &addr, 6));
        still_converging(&a, &b, mode);
        let verdict = attack.join().expect("attack");
        assert!(!verdict.is_empty(), "{mode}: {verdict}");
    }

    // Finding 6: after the writer flood, a new device still writes, and its todo reaches
    // everyone.
    let mut d_args = LOOPBACK.to_vec();
    d_args.extend(["--bootstrap", &a_addr]);
    let d = Peer::start(dirs[2].path(), &d_args);
    ok(&d.data, &["add", "from a new device"]);
    let reached = wait_until(Duration::from_secs(60), || {
        texts(&a.data).iter().any(|t| t == "from a new device")
            && texts(&b.data).iter().any(|t| t == "from a new device")
    });
    assert!(reached, "a new device's todo did not reach the others after the writer flood");
    d.stop();
    a.stop();
    b.stop();
}

/// Two numbers in "WORD1 N WORD2 M ..." output.
fn parse_two(verdict: &str, first: &str, second: &str) -> (u64, u64) {
    let rest = verdict.trim_start_matches(first).trim();
    let (n, rest) = rest.split_once(' ').expect("two numbers");
    let rest = rest.trim_start_matches(second).trim();
    let m = rest.split_whitespace().next().expect("second number");
    (n.parse().expect("number"), m.parse().expect("number"))
}

/// The web server: a page under a foreign host name (DNS rebinding) is refused, pages carry
/// a CSP that allows no inline or foreign script, and a client that never finishes its
/// headers is cut off (slow-loris).
#[test]
fn the_web_server_refuses_rebinding_and_slow_clients() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = LOOPBACK.to_vec();
    args.extend(["--web", "127.0.0.1:0"]);
    let peer = Peer::start(dir.path(), &args);
    let url = peer.web.clone().expect("the peer serves the web app");
    let host = url.trim_start_matches("http://").trim_end_matches('/').split('/').next().expect("host").to_owned();
    let get = |host_header: &str| {
        let mut stream = std::net::TcpStream::connect(&host).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        write!(stream, "GET /config.json HTTP/1.1\r\nHost: {host_header}\r\nConnection: close\r\n\r\n").expect("write");
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response
    };
    let rebinding = get("attacker.example:4270");
    assert!(rebinding.starts_with("HTTP/1.1 421"), "{rebinding}");
    assert!(!rebinding.contains("peers"), "config.json leaked: {rebinding}");
    let own = get(&host);
    assert!(own.starts_with("HTTP/1.1 200"), "{own}");
    assert!(own.to_ascii_lowercase().contains("content-security-policy: default-src 'self'"), "{own}");
    // Headers started and never finished: the server closes the connection.
    let mut slow = std::net::TcpStream::connect(&host).expect("connect");
    slow.write_all(b"GET / HTTP/1.1\r\nHost: ").expect("write");
    let limit = hellopears_core::limits::HTTP_HEADER_MS / 1000;
    slow.set_read_timeout(Some(Duration::from_secs(limit + 10))).expect("timeout");
    let mut answer = Vec::new();
    let read = slow.read_to_end(&mut answer);
    assert!(read.is_ok(), "a slow client kept its connection: {read:?}");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");
    peer.stop();
}

/// Finding 10: a relay serves the peers of its lists. A peer that takes a relay slot and
/// opens no session on any list loses the slot (and the connection) after
/// `RELAY_GRACE_MS`, so slots cannot be squatted by strangers.
#[test]
fn relay_slots_go_to_the_peers_of_our_lists_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a port").port();
    let addr = format!("/ip4/127.0.0.1/tcp/{port}");
    let relay = Peer::start(dir.path(), &["--listen", &addr, "--external-address", &addr, "--no-mdns", "--no-dht"]);
    let verdict = hostile("relay-squat", &relay.tcp_addr(), 20);
    assert_eq!(verdict, "reserved, then dropped");
    let logged = relay.wait_for_line("relay: dropping a peer", Duration::from_secs(5));
    assert!(logged.is_some(), "the relay says why it dropped the peer");
}
