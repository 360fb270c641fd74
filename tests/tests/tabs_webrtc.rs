//! Browser tabs over libp2p `/webrtc`: a tab reaches a desktop peer (or another tab) that
//! it first meets through a relay, signals over the relayed connection, and talks over a
//! direct WebRTC connection (ICE) that outlives the relay.

use std::path::Path;
use std::time::{Duration, Instant};

use hellopears_tests::browser::{self, Driver, Tab};
use hellopears_tests::{Peer, list, ok};

/// Browsers are heavy on two cores: one test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port()
}

/// A reachable desktop peer on loopback that relays and serves the web app.
fn relay_desktop(dir: &Path, topic: &str) -> Peer {
    let root = browser::web_root().to_string_lossy().into_owned();
    let tcp = format!("/ip4/127.0.0.1/tcp/{}", free_port());
    let log = std::env::var("HELLOPEARS_TEST_LOG").unwrap_or_else(|_| "hellopears=info".into());
    Peer::start_with_env(
        dir,
        &[("HELLOPEARS_LOG", log.as_str())],
        &[
            "--topic",
            topic,
            "--listen",
            &tcp,
            "--listen",
            "/ip4/127.0.0.1/udp/0/webrtc-direct",
            "--external-address",
            &tcp,
            "--no-mdns",
            "--no-dht",
            "--web",
            "127.0.0.1:0",
            "--web-root",
            &root,
        ],
    )
}

fn texts(data: &Path) -> Vec<String> {
    list(data).iter().filter_map(|t| t["text"].as_str().map(str::to_owned)).collect()
}

async fn tab_has(tab: &Tab, text: &str) -> anyhow::Result<bool> {
    Ok(tab.todos().await?.iter().any(|t| t.text == text))
}

/// The peers panel's line for `peer`.
async fn peer_line(tab: &Tab, peer: &str) -> anyhow::Result<Option<String>> {
    Ok(tab.peers().await?.into_iter().find(|(id, _)| id == peer).map(|(_, text)| text))
}

/// How the peer on `data` is connected to each of its peers (`status --json`).
fn webrtc_peers(data: &Path, topic: &str) -> Vec<String> {
    let status: serde_json::Value =
        serde_json::from_str(&ok(data, &["--topic", topic, "status", "--json"])).unwrap_or_default();
    status["peers"].as_array().into_iter().flatten().filter_map(|p| p["kind"].as_str().map(str::to_owned)).collect()
}

/// A tab and a desktop peer that can reach each other only through a relay (the desktop
/// has no WebRTC-direct address, the tab none at all) upgrade to `/webrtc`, say so on both
/// sides, and keep syncing after the relay stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tab_and_a_desktop_met_through_a_relay_talk_over_webrtc_and_outlive_it() -> anyhow::Result<()> {
    if !browser::available() {
        return Ok(());
    }
    let _serial = SERIAL.lock().await;
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let topic = format!("tab-webrtc-{}", std::process::id());
    let relay = relay_desktop(dirs[0].path(), &topic);
    let relay_tcp = relay.tcp_addr();
    // b: TCP only (no WebRTC-direct): a tab cannot dial it, only reach it through the relay.
    let b = Peer::start_with_env(
        dirs[1].path(),
        &[("HELLOPEARS_LOG", "hellopears=info")],
        &["--topic", &topic, "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--no-dht", "--bootstrap", &relay_tcp],
    );
    assert!(b.wait_for_line("reachable through relay", Duration::from_secs(20)).is_some(), "b has no reservation");
    let driver = Driver::start()?;
    let tab = driver.tab(dirs[2].path()).await?;
    let url = relay.web.clone().expect("the relay serves the web app");
    let started = Instant::now();
    tab.open(&url).await?;
    let b_id = b.peer_id.clone();
    tab.wait_for("a WebRTC connection to b", Duration::from_secs(30), |tab| {
        let b_id = b_id.clone();
        async move { Ok(peer_line(tab, &b_id).await?.is_some_and(|line| line.contains("WebRTC (ICE, direct)"))) }
    })
    .await?;
    eprintln!("tab start to a direct WebRTC connection with b: {:?}", started.elapsed());
    // b says so too.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !webrtc_peers(&b.data, &topic).iter().any(|kind| kind == "WebRTC (ICE, direct)") {
        anyhow::ensure!(Instant::now() < deadline, "b's status: {:?}", webrtc_peers(&b.data, &topic));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ok(b.data.as_path(), &["--topic", &topic, "add", "from b, direct"]);
    tab.wait_for("b's todo", Duration::from_secs(10), |tab| async move { tab_has(tab, "from b, direct").await })
        .await?;

    // The relay goes: the direct connection stays, and both keep syncing.
    relay.stop();
    ok(b.data.as_path(), &["--topic", &topic, "add", "after the relay"]);
    tab.wait_for("b's todo after the relay stopped", Duration::from_secs(15), |tab| async move {
        tab_has(tab, "after the relay").await
    })
    .await?;
    tab.add("from the tab").await?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !texts(&b.data).contains(&"from the tab".to_owned()) {
        anyhow::ensure!(Instant::now() < deadline, "b never got the tab's todo: {:?}", texts(&b.data));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let line = peer_line(&tab, &b.peer_id).await?.unwrap_or_default();
    anyhow::ensure!(line.contains("WebRTC (ICE, direct)"), "the tab says {line:?}");
    tab.close().await?;
    Ok(())
}

/// Two tabs that know only the relay desktop: they meet through it, talk over a direct
/// WebRTC connection, and keep syncing after it stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tabs_sync_directly_over_webrtc_and_outlive_the_desktop() -> anyhow::Result<()> {
    if !browser::available() {
        return Ok(());
    }
    let _serial = SERIAL.lock().await;
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let topic = format!("tabs-webrtc-{}", std::process::id());
    let relay = relay_desktop(dirs[0].path(), &topic);
    let url = relay.web.clone().expect("the relay serves the web app");
    let driver = Driver::start()?;
    let one = driver.tab(dirs[1].path()).await?;
    let two = driver.tab(dirs[2].path()).await?;
    let started = Instant::now();
    one.open(&url).await?;
    two.open(&url).await?;
    // Each sees two peers: the desktop, and the other tab over WebRTC.
    for tab in [&one, &two] {
        let waited = tab
            .wait_for("the other tab over WebRTC", Duration::from_secs(40), |tab| async move {
                let peers = tab.peers().await?;
                Ok(peers.iter().any(|(_, line)| line.contains("WebRTC (ICE, direct)")))
            })
            .await;
        if let Err(error) = waited {
            anyhow::bail!("{error}: the tab's peers: {:?}", tab.peers().await?);
        }
    }
    eprintln!("two tabs' start to a direct WebRTC connection: {:?}", started.elapsed());
    relay.stop();
    one.add("from tab one").await?;
    two.wait_for("tab one's todo", Duration::from_secs(15), |tab| async move { tab_has(tab, "from tab one").await })
        .await?;
    // Tab-to-tab latency once direct.
    let latency = browser::tab_to_tab_latency(&two, &one, 5).await?;
    eprintln!("tab-to-tab, direct: median {latency:?} (add in one tab to shown in the other, through WebDriver)");
    one.close().await?;
    two.close().await?;
    Ok(())
}

/// Whether the js lab is here (never skipped on CI: the test command installs it).
fn js_here() -> bool {
    let available = hellopears_tests::js::available();
    if !available {
        eprintln!("skipped on this machine: needs node and `npm ci` in tests/js (never skipped on CI)");
    }
    available
}

/// The peer id of the one tab connected to `relay`, once its sync session is open.
async fn tab_peer_id(relay: &Peer, topic: &str) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status: serde_json::Value =
            serde_json::from_str(&ok(&relay.data, &["--topic", topic, "status", "--json"])).unwrap_or_default();
        if let Some(peer) = status["peers"].as_array().into_iter().flatten().find_map(|p| p["peer"].as_str()) {
            return Ok(peer.to_owned());
        }
        anyhow::ensure!(Instant::now() < deadline, "no tab connected to the relay: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs `webrtc-node.mjs` with `args` until it reports `event`, for at most `timeout` (a
/// tab's reservation on the relay may not be made yet at the first try); its last events.
async fn js_until(args: &[&str], event: &str, timeout: Duration) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + timeout;
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    loop {
        let run = args.clone();
        let events = tokio::task::spawn_blocking(move || {
            let run: Vec<&str> = run.iter().map(String::as_str).collect();
            hellopears_tests::js::webrtc_node(&run)
        })
        .await
        .unwrap_or_default();
        if events.iter().any(|e| e["event"] == event) || Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A tab holding a reservation on a relay desktop, and its `/webrtc` address through it.
struct TabBehindRelay {
    relay: Peer,
    topic: String,
    tab: Tab,
    tab_id: String,
    target: String,
    _driver: Driver,
    _dirs: Vec<tempfile::TempDir>,
}

impl TabBehindRelay {
    async fn start(name: &str) -> anyhow::Result<Self> {
        let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().expect("tempdir")).collect();
        let topic = format!("{name}-{}", std::process::id());
        let relay = relay_desktop(dirs[0].path(), &topic);
        let driver = Driver::start()?;
        let tab = driver.tab(dirs[1].path()).await?;
        tab.open(relay.web.as_deref().expect("the relay serves the web app")).await?;
        let tab_id = tab_peer_id(&relay, &topic).await?;
        let target = format!("{}/p2p-circuit/webrtc/p2p/{tab_id}", relay.tcp_addr());
        Ok(Self { relay, topic, tab, tab_id, target, _driver: driver, _dirs: dirs })
    }
}

/// Acceptance 3, our tab: a js-libp2p node with `@libp2p/webrtc` dials a tab at its
/// relayed `/webrtc` address (the tab holds a reservation on our desktop's relay), gets a
/// direct WebRTC connection with it and negotiates the sync protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_js_libp2p_node_dials_our_tab_over_webrtc_through_our_relay() -> anyhow::Result<()> {
    if !browser::available() || !js_here() {
        return Ok(());
    }
    let _serial = SERIAL.lock().await;
    // Bound by name, not `..`: the relay and the browser must outlive the test.
    let TabBehindRelay { tab_id, target, tab, relay: _relay, topic: _, _driver, _dirs } =
        TabBehindRelay::start("js-to-tab").await?;
    let events = js_until(&["--dial", &target], "dialed", Duration::from_secs(40)).await;
    let dialed = events.iter().find(|e| e["event"] == "dialed");
    let Some(dialed) = dialed else { anyhow::bail!("the js node did not reach the tab over /webrtc: {events:?}") };
    anyhow::ensure!(dialed["peer"] == tab_id.as_str(), "{dialed}");
    anyhow::ensure!(dialed["remote_addr"].as_str().is_some_and(|a| a.contains("/webrtc/")), "{dialed}");
    anyhow::ensure!(dialed["limited"] == false, "the connection is the relayed one: {dialed}");
    anyhow::ensure!(dialed["protocol"] == "/hellopears/sync/1", "{dialed}");
    eprintln!("js dialed our tab over /webrtc in {} ms", dialed["ms"]);
    tab.close().await?;
    Ok(())
}

/// Acceptance 5, the tab's side: js peers that send a tab garbage SDP, flood it with
/// candidates or offer without end are banned by the tab and cut off, and the tab keeps
/// syncing with the honest desktop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tab_drops_hostile_signaling_peers_and_keeps_syncing() -> anyhow::Result<()> {
    if !browser::available() || !js_here() {
        return Ok(());
    }
    let _serial = SERIAL.lock().await;
    // Bound by name, not `..`: the browser must outlive the test.
    let TabBehindRelay { relay, topic, target, tab, tab_id: _, _driver, _dirs } =
        TabBehindRelay::start("tab-hostile").await?;
    tab.capture_console().await?;
    for (mode, reason) in [
        ("garbage-sdp", "malformed SDP"),
        ("flood", "too many signaling messages"),
        ("endless", "endless WebRTC offers"),
    ] {
        let events = js_until(&["--hostile", mode, "--dial", &target], "held", Duration::from_secs(40)).await;
        let Some(held) = events.iter().find(|e| e["event"] == "held") else {
            anyhow::bail!("{mode}: the hostile peer never reached the tab: {events:?}")
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let banned = loop {
            let lines = tab.console().await?;
            if let Some(line) = lines.iter().find(|l| l.contains("banning") && l.contains(reason)) {
                break line.clone();
            }
            anyhow::ensure!(Instant::now() < deadline, "{mode}: the tab banned nobody for {reason:?}: {lines:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        anyhow::ensure!(held["open"] == false, "{mode}: the hostile peer was not dropped: {held}");
        eprintln!("{mode}: {banned}");
        tab.capture_console().await?;
        tab.eval("window.__hellopearsLog.length = 0; return null;").await?;
    }
    ok(&relay.data, &["--topic", &topic, "add", "still in sync"]);
    tab.wait_for(
        "the desktop's todo",
        Duration::from_secs(20),
        |tab| async move { tab_has(tab, "still in sync").await },
    )
    .await?;
    tab.close().await?;
    Ok(())
}
