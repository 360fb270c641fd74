//! Foreign libp2p nodes (js-libp2p 3.x in Node, `tests/js/dht-node.mjs`): public-DHT
//! servers with a circuit relay, and an interop client. Installed by the test command
//! (`npm ci` in `tests/js`).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// Where the js lab lives.
pub fn js_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("js")
}

/// Whether Node and the lab's packages are here. On CI (`CI=true`) their absence fails.
pub fn available() -> bool {
    let node = Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    let installed = js_dir().join("node_modules").join("libp2p").is_dir();
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        assert!(node && installed, "the js lab needs node and `npm ci` in tests/js on CI (cargo xtask test does it)");
    }
    node && installed
}

/// A provider record a js DHT node stored: the key's 32-byte digest (hex) and the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provided {
    /// The digest of the record key's sha2-256 multihash, in hex.
    pub digest: String,
    /// The provider's peer id.
    pub peer: String,
}

/// A js DHT server (and relay) in a network namespace, killed on drop.
#[derive(Debug)]
pub struct JsNode {
    child: Child,
    /// Its peer id.
    pub peer_id: String,
    /// Its address with `/p2p/<id>`.
    pub addr: String,
    /// Every provider record it stored so far.
    pub provided: Arc<Mutex<Vec<Provided>>>,
}

impl JsNode {
    /// Starts a server listening on `listen` (a TCP multiaddr) in `netns`, dialing `bootstrap`.
    pub fn start(netns: &str, listen: &str, bootstrap: &[String]) -> JsNode {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", netns, "node"]).arg(js_dir().join("dht-node.mjs")).args(["--listen", listen]);
        for addr in bootstrap {
            command.args(["--bootstrap", addr]);
        }
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("start node");
        let stdout = child.stdout.take().expect("stdout");
        let provided = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = provided.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
                match event["event"].as_str() {
                    Some("provider") => {
                        let digest = event["digest"].as_str().unwrap_or_default().to_owned();
                        let peer = event["peer"].as_str().unwrap_or_default().to_owned();
                        if let Ok(mut all) = sink.lock() {
                            all.push(Provided { digest, peer });
                        }
                    }
                    _ => {
                        let _ = tx.send(event);
                    }
                }
            }
        });
        let event = rx.recv_timeout(Duration::from_secs(30)).expect("the js node started");
        assert_eq!(event["event"], "listening", "{event}");
        let peer_id = event["peer"].as_str().expect("peer id").to_owned();
        let addr = format!("{listen}/p2p/{peer_id}");
        JsNode { child, peer_id, addr, provided }
    }

    /// The provider records stored so far.
    pub fn provided(&self) -> Vec<Provided> {
        self.provided.lock().map(|all| all.clone()).unwrap_or_default()
    }

    /// Stops it (SIGKILL: a node that vanishes, as a DHT node does).
    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for JsNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `count` js DHT servers on a host of the lab's public segment (addresses
/// `10.99.0.21`...), all bootstrapped from the first.
pub fn dht_servers(lab: &crate::netns::NatLab, count: u8) -> Vec<JsNode> {
    let lasts: Vec<u8> = (0..count).map(|i| 21 + i).collect();
    let host = lab.add_public_host("dht", &lasts);
    let mut nodes: Vec<JsNode> = Vec::new();
    for last in lasts {
        let bootstrap: Vec<String> = nodes.first().map(|first| vec![first.addr.clone()]).unwrap_or_default();
        nodes.push(JsNode::start(&host, &format!("/ip4/10.99.0.{last}/tcp/4001"), &bootstrap));
    }
    nodes
}

/// Runs the interop client in `netns` (`None`: this namespace) against `target`: FIND_NODE
/// of `find_node` and GET_PROVIDERS of `get_providers` (hex), then holds the connection for
/// `hold_secs`. Returns its JSON events.
pub fn query(
    netns: Option<&str>,
    target: &str,
    find_node: &str,
    get_providers: &str,
    hold_secs: u64,
) -> Vec<serde_json::Value> {
    let mut command = match netns {
        Some(ns) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", ns, "node"]);
            command
        }
        None => Command::new("node"),
    };
    let started = Instant::now();
    let out = command
        .arg(js_dir().join("dht-node.mjs"))
        .args(["--query", target, "--find-node", find_node, "--get-providers", get_providers])
        .args(["--hold", &hold_secs.to_string()])
        .output()
        .expect("run the js client");
    let events: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().filter_map(|line| serde_json::from_str(line).ok()).collect();
    assert!(
        out.status.success(),
        "js client failed after {:?}: {events:?} {}",
        started.elapsed(),
        String::from_utf8_lossy(&out.stderr)
    );
    events
}

/// The JSON lines a child prints, as they come.
fn json_lines(child: &mut Child) -> mpsc::Receiver<serde_json::Value> {
    let stdout = child.stdout.take().expect("stdout");
    let (tx, events) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) {
                let _ = tx.send(event);
            }
        }
    });
    events
}

/// Runs `webrtc-node.mjs` with `args` in this namespace until it exits; its JSON events.
pub fn webrtc_node(args: &[&str]) -> Vec<serde_json::Value> {
    let out = Command::new("node")
        .arg(js_dir().join("webrtc-node.mjs"))
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .expect("run webrtc-node.mjs");
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|line| serde_json::from_str(line).ok()).collect()
}

/// A js-libp2p node listening for `/webrtc` through a relay, killed on drop.
#[derive(Debug)]
pub struct WebrtcListener {
    child: Child,
    /// Its peer id.
    pub peer_id: String,
    /// Its `/p2p-circuit/webrtc` addresses.
    pub addrs: Vec<String>,
    events: mpsc::Receiver<serde_json::Value>,
}

impl WebrtcListener {
    /// Reserves on the relay at `relay` (with `/p2p/<id>`) and listens for `/webrtc`.
    pub fn start(relay: &str) -> WebrtcListener {
        let mut child = Command::new("node")
            .arg(js_dir().join("webrtc-node.mjs"))
            .args(["--listen-via", relay])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start webrtc-node.mjs");
        let events = json_lines(&mut child);
        let event = events.recv_timeout(Duration::from_secs(40)).expect("the js listener started");
        assert_eq!(event["event"], "listening", "{event}");
        let peer_id = event["peer"].as_str().expect("peer id").to_owned();
        let addrs =
            event["addrs"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(str::to_owned)).collect();
        WebrtcListener { child, peer_id, addrs, events }
    }

    /// Waits for an event for which `pick` says yes.
    pub fn wait_for(&self, timeout: Duration, pick: impl Fn(&serde_json::Value) -> bool) -> Option<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.events.recv_timeout(left) {
                Ok(event) if pick(&event) => return Some(event),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }
}

impl Drop for WebrtcListener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A js relay (and DHT server) in this namespace on `listen`, killed on drop.
pub fn relay_here(listen: &str) -> JsNode {
    let mut child = Command::new("node")
        .arg(js_dir().join("dht-node.mjs"))
        .args(["--listen", listen])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start dht-node.mjs");
    let rx = json_lines(&mut child);
    let event = rx.recv_timeout(Duration::from_secs(30)).expect("the js relay started");
    assert_eq!(event["event"], "listening", "{event}");
    let peer_id = event["peer"].as_str().expect("peer id").to_owned();
    let addr = format!("{listen}/p2p/{peer_id}");
    JsNode { child, peer_id, addr, provided: Arc::default() }
}
