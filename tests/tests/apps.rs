//! `hellopears stage`: an app's versions in a signed log of the data dir, with the diff
//! against the previous version, like `pear stage`.

use std::path::Path;
use std::time::Duration;

use hellopears_tests::{Peer, ok, run};

fn write(dir: &Path, path: &str, content: &str) {
    let path = dir.join(path);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(path, content).expect("write");
}

/// The `app key <hex>` line.
fn app_key(out: &str) -> String {
    out.lines().find_map(|line| line.strip_prefix("app key ")).expect("an app key line").to_owned()
}

/// Acceptance 4: stage prints the version, the app key and the right diff for a modified
/// directory; staging unchanged content records nothing and says so.
#[test]
fn stage_records_versions_with_their_diff_and_nothing_twice() {
    let data = tempfile::tempdir().expect("tempdir");
    let app = tempfile::tempdir().expect("tempdir");
    let dir = app.path().to_str().expect("utf-8");
    write(app.path(), "index.html", "<html>hello</html>");
    write(app.path(), "css/app.css", "body {}");
    write(app.path(), "old.js", "gone soon");

    let first = ok(data.path(), &["stage", "main", dir]);
    assert!(first.starts_with("staged main version 1\n"), "{first}");
    let key = app_key(&first);
    assert_eq!(key.len(), 64, "{first}");
    for line in ["+ css/app.css (7 bytes)", "+ index.html (18 bytes)", "+ old.js (9 bytes)"] {
        assert!(first.contains(line), "missing {line:?} in:\n{first}");
    }
    assert!(first.contains("3 added, 0 changed, 0 removed; 3 files, 34 bytes"), "{first}");

    // The same content again: nothing recorded.
    let again = ok(data.path(), &["stage", "main", dir]);
    assert!(again.starts_with("nothing to stage: main is at version 1, unchanged"), "{again}");
    assert_eq!(app_key(&again), key);

    // Modified: one file changed, one added, one removed.
    write(app.path(), "index.html", "<html>hello, v2</html>");
    write(app.path(), "img/logo.svg", "<svg/>");
    std::fs::remove_file(app.path().join("old.js")).expect("rm");
    let second = ok(data.path(), &["stage", "main", dir]);
    assert!(second.starts_with("staged main version 2\n"), "{second}");
    assert_eq!(app_key(&second), key, "the channel keeps its key");
    let changes: Vec<&str> = second.lines().filter(|l| l.starts_with(['+', '~', '-'])).collect();
    assert_eq!(changes, ["+ img/logo.svg (6 bytes)", "~ index.html (22 bytes)", "- old.js (9 bytes)"], "{second}");
    assert!(second.contains("1 added, 1 changed, 1 removed; 3 files, 35 bytes"), "{second}");

    // Another channel is another app.
    let beta = ok(data.path(), &["stage", "beta", dir]);
    assert!(beta.starts_with("staged beta version 1\n"), "{beta}");
    assert_ne!(app_key(&beta), key);
}

/// Bad arguments: a usage error for a bad channel name, a clear error for a missing
/// directory, and nothing recorded.
#[test]
fn stage_refuses_bad_channels_and_missing_directories() {
    let data = tempfile::tempdir().expect("tempdir");
    let bad = run(data.path(), &["stage", "../escape", "."]);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a channel name"), "{bad:?}");
    let missing = run(data.path(), &["stage", "main", "/nonexistent/app"]);
    assert_eq!(missing.status.code(), Some(1), "{missing:?}");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no such directory"), "{missing:?}");
    assert!(!data.path().join("apps").join("channels").join("main.key").exists());
}

/// `GET url` over HTTP/1.1 (no compression): the status and the body.
fn http_get(url: &str) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let mut stream = std::net::TcpStream::connect(host).expect("connect");
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).expect("timeout");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").expect("request");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("response");
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").expect("headers end");
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let status = head.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("a status");
    (status, response[split + 4..].to_vec())
}

/// The web server's base URL of a peer (`http://host:port`).
fn base(peer: &Peer) -> String {
    let url = peer.web.clone().expect("serves the web app");
    let rest = url.strip_prefix("http://").expect("http");
    format!("http://{}", rest.split('/').next().expect("host"))
}

/// Every file of `dir`, as (relative path, bytes).
fn files_of(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        for item in std::fs::read_dir(&at).expect("read dir") {
            let path = item.expect("item").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let relative = path.strip_prefix(dir).expect("inside").to_string_lossy().to_string();
                out.push((relative, std::fs::read(&path).expect("read")));
            }
        }
    }
    out.sort();
    out
}

/// Serves exactly these files (byte-identical, fetched without compression).
fn assert_serves(peer: &Peer, files: &[(String, Vec<u8>)]) {
    let base = base(peer);
    for (path, bytes) in files {
        let (status, body) = http_get(&format!("{base}/{path}"));
        assert_eq!(status, 200, "{path}");
        assert!(body == *bytes, "{path}: {} bytes served, {} staged", body.len(), bytes.len());
    }
}

/// An app directory with a file large enough to need several chunks.
fn sample_app(dir: &Path) {
    write(dir, "index.html", "<!doctype html><title>app</title>");
    write(dir, "js/app.js", "console.log('hello')");
    let wasm: Vec<u8> = (0..900_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(dir.join("app.wasm"), wasm).expect("write");
}

const PEER_ARGS: [&str; 5] = ["--no-mdns", "--no-dht", "--listen", "/ip4/127.0.0.1/tcp/0", "--topic"];

fn peer_args<'a>(topic: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = PEER_ARGS.to_vec();
    args.push(topic);
    args.extend_from_slice(extra);
    args
}

/// Acceptance 1 and 5: A stages and seeds; C runs the key and fetches it from A; A goes;
/// B (an empty data dir) runs the key, fetches it from C (a seeder that is not the author)
/// and serves exactly the files A staged; run again with no seeder, B serves them from its
/// cache.
#[test]
fn an_app_runs_by_key_from_a_seeder_that_is_not_its_author_and_then_offline() {
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let (a_dir, b_dir, c_dir, app) = (dirs[0].path(), dirs[1].path(), dirs[2].path(), dirs[3].path());
    sample_app(app);
    let staged = ok(a_dir, &["stage", "main", app.to_str().expect("utf-8")]);
    let key = app_key(&staged);
    let topic = format!("apps-{}", std::process::id());
    let a = Peer::start_command(a_dir, "seed", &peer_args(&topic, &["main"]));
    let c = Peer::start_command(
        c_dir,
        "run",
        &peer_args(&topic, &[&key, "--bootstrap", &a.tcp_addr(), "--web", "127.0.0.1:0"]),
    );
    assert!(c.wait_for_line("version 1 ready in", Duration::from_secs(30)).is_some(), "c fetched nothing from a");
    a.kill();
    let b = Peer::start_command(
        b_dir,
        "run",
        &peer_args(&topic, &[&key, "--bootstrap", &c.tcp_addr(), "--web", "127.0.0.1:0"]),
    );
    let started = std::time::Instant::now();
    assert!(b.wait_for_line("version 1 ready in", Duration::from_secs(30)).is_some(), "b fetched nothing from c");
    eprintln!("fetched and checked the app (~0.9 MB) from one seeder in {:?}", started.elapsed());
    let staged_files = files_of(app);
    assert_serves(&b, &staged_files);
    b.stop();
    c.kill();
    // Offline: no seeder anywhere, the cache serves.
    // (Its "ready (from the cache)" line comes before it listens: it serves at once.)
    let b = Peer::start_command(b_dir, "run", &peer_args(&topic, &[&key, "--web", "127.0.0.1:0"]));
    assert_serves(&b, &staged_files);
}

/// Acceptance 2: a seeder whose copy of a file is altered, and one whose copy is
/// truncated, are dropped; the file comes from an honest seeder, and a tab is never served
/// a tampered copy.
#[test]
fn a_seeder_that_alters_or_truncates_a_file_is_dropped_and_another_serves_it() {
    let dirs: Vec<tempfile::TempDir> = (0..5).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let (a_dir, b_dir, app) = (dirs[0].path(), dirs[1].path(), dirs[2].path());
    let (altering, truncating) = (dirs[3].path(), dirs[4].path());
    sample_app(app);
    let key = app_key(&ok(a_dir, &["stage", "main", app.to_str().expect("utf-8")]));
    let topic = format!("apps-bad-{}", std::process::id());
    // Both get an honest copy first; then their stored copies of the wasm are spoiled.
    {
        let a = Peer::start_command(a_dir, "seed", &peer_args(&topic, &["main"]));
        let a_addr = a.tcp_addr();
        for dir in [altering, truncating] {
            let args = peer_args(&topic, &[&key, "--bootstrap", &a_addr, "--web", "127.0.0.1:0"]);
            let t = Peer::start_command(dir, "run", &args);
            assert!(t.wait_for_line("version 1 ready in", Duration::from_secs(30)).is_some(), "no copy");
            t.stop();
        }
        a.kill();
    }
    let wasm = std::fs::read(app.join("app.wasm")).expect("wasm");
    let blob = |dir: &Path| dir.join("apps").join("blobs").join(hellopears_core::keys::Hash::digest(&wasm).to_hex());
    let mut altered = wasm.clone();
    altered[500_000] ^= 0xff;
    std::fs::write(blob(altering), altered).expect("alter");
    std::fs::write(blob(truncating), &wasm[..300_000]).expect("truncate");
    let t1 = Peer::start_command(altering, "seed", &peer_args(&topic, &[&key]));
    let t2 = Peer::start_command(truncating, "seed", &peer_args(&topic, &[&key]));
    let (t1_addr, t2_addr) = (t1.tcp_addr(), t2.tcp_addr());
    let args = peer_args(&topic, &[&key, "--bootstrap", &t1_addr, "--bootstrap", &t2_addr, "--web", "127.0.0.1:0"]);
    let b = Peer::start_command(b_dir, "run", &args);
    let mut dropped = Vec::new();
    while dropped.len() < 2 {
        let Some(line) = b.wait_for_line("dropping seeder", Duration::from_secs(30)) else { break };
        dropped.push(line);
    }
    assert!(
        dropped.iter().any(|l| l.contains(&t1.peer_id) && l.contains("does not match the manifest")),
        "the altered copy was not caught: {dropped:?}"
    );
    assert!(
        dropped.iter().any(|l| l.contains(&t2.peer_id) && l.contains("the manifest says")),
        "the truncated copy was not caught: {dropped:?}"
    );
    // Nothing is served meanwhile: a tampered copy never reaches a tab.
    let (status, _) = http_get(&format!("{}/app.wasm", base(&b)));
    assert_eq!(status, 503, "b serves something before it has a checked copy");
    // An honest seeder comes: b gets the file from it.
    let a = Peer::start_command(a_dir, "seed", &peer_args(&topic, &["main", "--bootstrap", &b.tcp_addr()]));
    assert!(b.wait_for_line("version 1 ready in", Duration::from_secs(30)).is_some(), "b never completed from a");
    assert_serves(&b, &files_of(app));
    drop(a);
}

/// Acceptance 3, the peer's side: a running `run` peer learns of a new version from its
/// seeder and serves it from then on (a tab gets it at its next load, without restarting
/// the peer); a seeder that offers version 1 afterwards downgrades nobody.
#[test]
fn a_running_peer_gets_a_new_version_and_an_old_seeder_downgrades_nobody() {
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let (a_dir, b_dir, c_dir, app) = (dirs[0].path(), dirs[1].path(), dirs[2].path(), dirs[3].path());
    sample_app(app);
    let key = app_key(&ok(a_dir, &["stage", "main", app.to_str().expect("utf-8")]));
    let topic = format!("apps-update-{}", std::process::id());
    let a = Peer::start_command(a_dir, "seed", &peer_args(&topic, &["main"]));
    let a_addr = a.tcp_addr();
    // c keeps version 1 for later.
    let c =
        Peer::start_command(c_dir, "run", &peer_args(&topic, &[&key, "--bootstrap", &a_addr, "--web", "127.0.0.1:0"]));
    assert!(c.wait_for_line("version 1 ready in", Duration::from_secs(30)).is_some(), "c fetched nothing");
    c.stop();
    let b =
        Peer::start_command(b_dir, "run", &peer_args(&topic, &[&key, "--bootstrap", &a_addr, "--web", "127.0.0.1:0"]));
    assert!(b.wait_for_line("version 1 ready in", Duration::from_secs(30)).is_some(), "b fetched nothing");
    // A new version, staged while a seeds and b runs.
    write(app, "index.html", "<!doctype html><title>app, version 2</title>");
    let staged = ok(a_dir, &["stage", "main", app.to_str().expect("utf-8")]);
    assert!(staged.starts_with("staged main version 2"), "{staged}");
    assert!(b.wait_for_line("version 2 ready in", Duration::from_secs(30)).is_some(), "b never got version 2");
    let (status, body) = http_get(&format!("{}/index.html", base(&b)));
    assert_eq!((status, body.as_slice()), (200, b"<!doctype html><title>app, version 2</title>".as_slice()));
    // a goes; c comes back offering version 1 only: b keeps version 2.
    a.kill();
    let c = Peer::start_command(c_dir, "seed", &peer_args(&topic, &[&key, "--bootstrap", &b.tcp_addr()]));
    let kept = b.wait_for_line("has version 1 only; keeping version 2", Duration::from_secs(30));
    assert!(kept.is_some_and(|line| line.contains(&c.peer_id)), "b never heard c's version 1");
    let (_, body) = http_get(&format!("{}/index.html", base(&b)));
    assert_eq!(body.as_slice(), b"<!doctype html><title>app, version 2</title>".as_slice());
    assert_serves(&b, &files_of(app));
}

/// The built web app copied to `dir` with the title `title` (no gzip copies, which would
/// still carry the old page).
fn web_app_titled(dir: &Path, title: &str) {
    for item in std::fs::read_dir(hellopears_tests::browser::web_root()).expect("the built web app") {
        let path = item.expect("item").path();
        let name = path.file_name().expect("a name").to_string_lossy().to_string();
        if path.is_file() && !name.ends_with(".gz") {
            std::fs::copy(&path, dir.join(&name)).expect("copy");
        }
    }
    let index = dir.join("index.html");
    let page = std::fs::read_to_string(&index).expect("index.html");
    let page = retitle(&page, title);
    std::fs::write(&index, page).expect("write");
}

/// Replaces whatever `<title>` the page has.
fn retitle(page: &str, title: &str) -> String {
    match (page.find("<title>"), page.find("</title>")) {
        (Some(start), Some(end)) if start < end => format!("{}<title>{title}{}", &page[..start], &page[end..]),
        _ => page.to_owned(),
    }
}

/// Acceptance 3, the tab's side: a tab served by a peer that runs the app by key is told
/// "version 2 available, reload" when a new version reaches that peer, and shows it after a
/// reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_tab_is_told_of_a_new_version_and_gets_it_on_reload() -> anyhow::Result<()> {
    use hellopears_tests::browser::{self, Driver};
    if !browser::available() {
        return Ok(());
    }
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let (a_dir, b_dir, app, profile) = (dirs[0].path(), dirs[1].path(), dirs[2].path(), dirs[3].path());
    web_app_titled(app, "HelloPears, version one");
    let key = app_key(&ok(a_dir, &["stage", "main", app.to_str().expect("utf-8")]));
    let topic = format!("apps-tab-{}", std::process::id());
    let a = Peer::start_command(a_dir, "seed", &peer_args(&topic, &["main"]));
    let a_addr = a.tcp_addr();
    let b = Peer::start_command(
        b_dir,
        "run",
        &peer_args(
            &topic,
            &[&key, "--bootstrap", &a_addr, "--listen", "/ip4/127.0.0.1/udp/0/webrtc-direct", "--web", "127.0.0.1:0"],
        ),
    );
    anyhow::ensure!(b.wait_for_line("version 1 ready in", Duration::from_secs(30)).is_some(), "b fetched nothing");
    let driver = Driver::start()?;
    let tab = driver.tab(profile).await?;
    tab.open(b.web.as_deref().expect("b serves tabs")).await?;
    anyhow::ensure!(tab.eval("return document.title").await? == "HelloPears, version one");
    // Version 2 reaches b; the open tab says so.
    web_app_titled(app, "HelloPears, version two");
    ok(a_dir, &["stage", "main", app.to_str().expect("utf-8")]);
    anyhow::ensure!(b.wait_for_line("version 2 ready in", Duration::from_secs(30)).is_some(), "b never got version 2");
    tab.wait_for("the update notice", Duration::from_secs(20), |tab| async move {
        let text = tab.eval("return document.querySelector('[data-testid=update]')?.textContent ?? ''").await?;
        Ok(text.as_str().is_some_and(|t| t.contains("version 2 available, reload")))
    })
    .await?;
    tab.reload().await?;
    anyhow::ensure!(tab.eval("return document.title").await? == "HelloPears, version two");
    tab.close().await?;
    Ok(())
}

/// A peer that runs an app finds a seeder it was not told of, through the DHT: a seeder
/// and a runner on different lists, without peer exchange, that both know only a third
/// peer. (In a network this small the DHT's routing table alone may bring them together;
/// that the seeder's provider record is stored under the app's rendezvous key is checked
/// against js DHT nodes in `internet.rs`.)
#[test]
fn a_runner_finds_a_seeder_through_the_dht() {
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let (d_dir, a_dir, b_dir, app) = (dirs[0].path(), dirs[1].path(), dirs[2].path(), dirs[3].path());
    write(app, "index.html", "<html>found in the DHT</html>");
    let key = app_key(&ok(a_dir, &["stage", "main", app.to_str().expect("utf-8")]));
    let local = ["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--no-pex"];
    let d = Peer::start(d_dir, &[&local[..], &["--topic", "dht-only"]].concat());
    let d_addr = d.tcp_addr();
    let _a = Peer::start_command(
        a_dir,
        "seed",
        &[&["main"], &local[..], &["--topic", "seeders", "--bootstrap", &d_addr]].concat(),
    );
    let b = Peer::start_command(
        b_dir,
        "run",
        &[&[key.as_str()], &local[..], &["--topic", "runners", "--bootstrap", &d_addr, "--web", "127.0.0.1:0"]]
            .concat(),
    );
    assert!(b.wait_for_line("version 1 ready in", Duration::from_secs(40)).is_some(), "b never found the seeder");
    assert_serves(&b, &files_of(app));
}

/// `app info KEY`: the versions, files and size the data dir holds, and the seeders that
/// answer on the network.
#[test]
fn app_info_tells_versions_size_and_seeders() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let (a_dir, e_dir, app) = (dirs[0].path(), dirs[1].path(), dirs[2].path());
    write(app, "index.html", "<html>info</html>");
    write(app, "app.js", "js");
    let key = app_key(&ok(a_dir, &["stage", "main", app.to_str().expect("utf-8")]));
    let here = ok(a_dir, &["app", "info", &key, "--wait", "0"]);
    assert!(here.contains("versions here: 1 to 1\nversion 1: 2 files, 19 bytes (complete)"), "{here}");
    let topic = format!("apps-info-{}", std::process::id());
    let a = Peer::start_command(a_dir, "seed", &peer_args(&topic, &["main"]));
    let elsewhere = ok(
        e_dir,
        &["app", "info", &key, "--wait", "5", "--bootstrap", &a.tcp_addr(), "--no-mdns", "--no-dht", "--topic", &topic],
    );
    assert!(elsewhere.contains("versions here: none"), "{elsewhere}");
    assert!(elsewhere.contains(&format!("seeder {}: version 1", a.peer_id)), "{elsewhere}");
}

/// Measured (printed, not asserted): the time to fetch and check the built web app over
/// loopback from one seeder and from three, from the runner's start to its "ready" line.
#[test]
fn fetch_time_from_one_and_from_three_seeders() {
    let dirs: Vec<tempfile::TempDir> = (0..7).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let app = dirs[0].path();
    web_app_titled(app, "HelloPears, measured");
    let size: usize = files_of(app).iter().map(|(_, bytes)| bytes.len()).sum();
    let key = app_key(&ok(dirs[1].path(), &["stage", "main", app.to_str().expect("utf-8")]));
    let topic = format!("apps-measure-{}", std::process::id());
    let author = Peer::start_command(dirs[1].path(), "seed", &peer_args(&topic, &["main"]));
    let author_addr = author.tcp_addr();
    // Two more seeders, each with a copy.
    let mut seeders = vec![author];
    for dir in &dirs[2..4] {
        let args = peer_args(&topic, &[&key, "--bootstrap", &author_addr, "--web", "127.0.0.1:0"]);
        let peer = Peer::start_command(dir.path(), "run", &args);
        assert!(peer.wait_for_line("version 1 ready in", Duration::from_secs(30)).is_some(), "no copy");
        seeders.push(peer);
    }
    for (count, dir) in [(1usize, dirs[4].path()), (3, dirs[5].path())] {
        let mut args = peer_args(&topic, &[&key, "--web", "127.0.0.1:0"]);
        let addrs: Vec<String> = seeders.iter().take(count).map(Peer::tcp_addr).collect();
        for addr in &addrs {
            args.extend(["--bootstrap", addr.as_str()]);
        }
        let started = std::time::Instant::now();
        let runner = Peer::start_command(dir, "run", &args);
        assert!(runner.wait_for_line("version 1 ready in", Duration::from_secs(60)).is_some(), "not fetched");
        eprintln!(
            "fetched and checked the web app ({} bytes) from {count} seeder(s) in {:?} (from the runner's start)",
            size,
            started.elapsed()
        );
        assert_serves(&runner, &files_of(app));
    }
}
