//! Headless Chromium driven over WebDriver (chromedriver), for tests of the browser peer.
//! Each [`Tab`] is its own browser session with its own fresh profile, so its own
//! IndexedDB and its own writer.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// Whether Chromium and chromedriver are here. With `CI=true` they must be (the test
/// command installs them): a missing one fails the run instead of skipping.
pub fn available() -> bool {
    let found = Path::new("/usr/bin/chromium").exists() && Path::new("/usr/bin/chromedriver").exists();
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "chromium and chromium-driver are missing in CI: `cargo xtask test` installs them"
        );
        eprintln!(
            "SKIPPED on this machine: Debian's chromium and chromium-driver are not installed (CI installs them)"
        );
    }
    found
}

/// The built web app: `HELLOPEARS_WEB_ROOT` (the test command sets it), else the build with
/// test hooks that `cargo xtask test` makes (`target/web-dist-test`), else `cargo xtask web`'s.
pub fn web_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("HELLOPEARS_WEB_ROOT") {
        return PathBuf::from(dir);
    }
    let bin = crate::hellopears_bin();
    let target = bin.parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default();
    let dist = [target.join("web-dist-test"), target.join("web-dist")]
        .into_iter()
        .find(|dir| dir.join("index.html").is_file())
        .unwrap_or_else(|| target.join("web-dist-test"));
    assert!(dist.join("index.html").is_file(), "{} is missing: run `cargo xtask test` first", dist.display());
    dist
}

/// A desktop peer on loopback (TCP, and WebRTC-direct on `webrtc_port`, 0 for any)
/// serving the built web app; `bootstrap` to join another peer.
pub fn desktop_peer(dir: &Path, bootstrap: Option<&str>, webrtc_port: u16) -> crate::Peer {
    let root = web_root();
    let webrtc = format!("/ip4/127.0.0.1/udp/{webrtc_port}/webrtc-direct");
    let root = root.to_string_lossy().into_owned();
    let mut args = vec![
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--listen",
        &webrtc,
        "--no-mdns",
        "--no-dht",
        "--web",
        "127.0.0.1:0",
        "--web-root",
        &root,
    ];
    if let Some(addr) = bootstrap {
        args.extend(["--bootstrap", addr]);
    }
    crate::Peer::start(dir, &args)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// A chromedriver process.
#[derive(Debug)]
pub struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    /// Starts chromedriver on a free port and waits until it answers.
    pub fn start() -> anyhow::Result<Driver> {
        let port = free_port();
        // HELLOPEARS_TEST_BROWSER_LOG=1: the tabs' console on stderr (for debugging a test).
        let verbose = std::env::var_os("HELLOPEARS_TEST_BROWSER_LOG").is_some();
        let child = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .args(verbose.then_some("--enable-chrome-logs"))
            .stdout(Stdio::null())
            .stderr(if verbose { Stdio::inherit() } else { Stdio::null() })
            .spawn()
            .context("starting chromedriver")?;
        let driver = Driver { child, url: format!("http://127.0.0.1:{port}") };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("chromedriver did not start listening");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(driver)
    }

    /// Starts chromedriver inside network namespace `ns`, reached over `control` (its
    /// Chromium then has only that namespace's network).
    pub fn start_in(ns: &str, control: &crate::netns::ControlLink) -> anyhow::Result<Driver> {
        let port = free_port();
        let verbose = std::env::var_os("HELLOPEARS_TEST_BROWSER_LOG").is_some();
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "/usr/bin/chromedriver"])
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=")
            .arg("--allowed-origins=*")
            .args(verbose.then_some("--enable-chrome-logs"))
            .stdout(Stdio::null())
            .stderr(if verbose { Stdio::inherit() } else { Stdio::null() })
            .spawn()
            .context("starting chromedriver in a namespace")?;
        let driver = Driver { child, url: format!("http://{}:{port}", control.ns_ip) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect((control.ns_ip.as_str(), port)).is_err() {
            if Instant::now() > deadline {
                bail!("chromedriver did not start listening in {ns}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(driver)
    }

    /// Opens a new headless Chromium with a fresh profile in `profile`.
    pub async fn tab(&self, profile: &Path) -> anyhow::Result<Tab> {
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1000,1400",
        ];
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": "/usr/bin/chromium", "args": args },
        });
        let Value::Object(caps) = caps else { bail!("capabilities are an object") };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .context("opening a Chromium session")?;
        Ok(Tab { client })
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A todo as a tab shows it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ShownTodo {
    /// Document id.
    pub id: String,
    /// Text.
    pub text: String,
    /// Done.
    pub done: bool,
}

/// One browser session showing the app.
#[derive(Debug)]
pub struct Tab {
    /// The WebDriver client.
    pub client: Client,
}

impl Tab {
    /// Loads `url` and waits for the app to render its input.
    pub async fn open(&self, url: &str) -> anyhow::Result<()> {
        self.client.goto(url).await?;
        self.wait_ready().await
    }

    /// Reloads and waits for the app.
    pub async fn reload(&self) -> anyhow::Result<()> {
        self.client.refresh().await?;
        self.wait_ready().await
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        self.wait_for("the app to start", Duration::from_secs(20), |tab| async move {
            Ok(tab.status().await?.is_some_and(|s| s.0 != "loading"))
        })
        .await
    }

    /// The status line: (kind, text), once the app rendered it.
    pub async fn status(&self) -> anyhow::Result<Option<(String, String)>> {
        let out = self
            .client
            .execute(
                "const s = document.querySelector('[data-testid=sync-status]');
                 return s ? [s.dataset.status, s.textContent] : null;",
                vec![],
            )
            .await?;
        Ok(match out {
            Value::Array(parts) => Some((
                parts.first().and_then(Value::as_str).unwrap_or_default().to_owned(),
                parts.get(1).and_then(Value::as_str).unwrap_or_default().to_owned(),
            )),
            _ => None,
        })
    }

    /// Runs a script in the page and returns its value.
    pub async fn eval(&self, script: &str) -> anyhow::Result<Value> {
        Ok(self.client.execute(script, vec![]).await?)
    }

    /// Who can read and write the list, as the topic bar says it.
    pub async fn access(&self) -> anyhow::Result<String> {
        let out = self
            .client
            .execute("return document.querySelector('[data-testid=access]')?.textContent ?? '';", vec![])
            .await?;
        Ok(out.as_str().unwrap_or_default().trim_start_matches(" · ").to_owned())
    }

    /// The todos in the DOM, in order.
    pub async fn todos(&self) -> anyhow::Result<Vec<ShownTodo>> {
        let out = self
            .client
            .execute(
                "return [...document.querySelectorAll('[data-testid=todo-item]')].map(li => [
                    li.dataset.id,
                    li.querySelector('[data-testid=todo-text]')?.textContent ?? '',
                    li.querySelector('[data-testid=todo-toggle]').checked,
                 ]);",
                vec![],
            )
            .await?;
        let rows = out.as_array().cloned().unwrap_or_default();
        Ok(rows
            .iter()
            .map(|row| ShownTodo {
                id: row[0].as_str().unwrap_or_default().to_owned(),
                text: row[1].as_str().unwrap_or_default().to_owned(),
                done: row[2].as_bool().unwrap_or_default(),
            })
            .collect())
    }

    /// Peer ids in the peers panel.
    pub async fn peers(&self) -> anyhow::Result<Vec<(String, String)>> {
        let out = self
            .client
            .execute(
                "return [...document.querySelectorAll('[data-testid=peers] [data-testid=peer]')]
                    .map(p => [p.dataset.peer, p.textContent]);",
                vec![],
            )
            .await?;
        Ok(out
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|p| (p[0].as_str().unwrap_or_default().to_owned(), p[1].as_str().unwrap_or_default().to_owned()))
            .collect())
    }

    /// This tab's writer id (short), as the app shows it.
    pub async fn writer(&self) -> anyhow::Result<String> {
        Ok(self.client.find(Locator::Css("[data-testid=writer-id]")).await?.text().await?)
    }

    /// Types a todo into the new-todo input and presses Enter.
    pub async fn add(&self, text: &str) -> anyhow::Result<()> {
        let input = self.client.find(Locator::Css("[data-testid=new-todo]")).await?;
        input.send_keys(&format!("{text}\u{E007}")).await?;
        Ok(())
    }

    async fn item(&self, id: &str, part: &str) -> anyhow::Result<fantoccini::elements::Element> {
        let css = format!("[data-testid=todo-item][data-id='{id}'] [data-testid={part}]");
        Ok(self.client.find(Locator::Css(&css)).await?)
    }

    /// Clicks a todo's checkbox.
    pub async fn toggle(&self, id: &str) -> anyhow::Result<()> {
        self.item(id, "todo-toggle").await?.click().await?;
        Ok(())
    }

    /// Clicks a todo's delete button.
    pub async fn delete(&self, id: &str) -> anyhow::Result<()> {
        self.item(id, "todo-delete").await?.click().await?;
        Ok(())
    }

    /// Edits a todo in place: double-click its text, replace, Enter.
    pub async fn edit(&self, id: &str, text: &str) -> anyhow::Result<()> {
        let label = self.item(id, "todo-text").await?;
        self.client
            .execute(
                "arguments[0].dispatchEvent(new MouseEvent('dblclick', {bubbles: true}));",
                vec![serde_json::to_value(&label)?],
            )
            .await?;
        let input = self.item(id, "todo-edit").await?;
        self.client.execute("arguments[0].value = '';", vec![serde_json::to_value(&input)?]).await?;
        input.send_keys(&format!("{text}\u{E007}")).await?;
        Ok(())
    }

    /// Polls `check` every 50 ms until it holds, fails with `what` after `timeout`.
    pub async fn wait_for<'a, F, Fut>(&'a self, what: &str, timeout: Duration, mut check: F) -> anyhow::Result<()>
    where
        F: FnMut(&'a Tab) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<bool>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if check(self).await? {
                return Ok(());
            }
            if Instant::now() > deadline {
                let status = self.status().await.ok().flatten();
                bail!("timed out after {timeout:?} waiting for {what} (status {status:?})");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Keeps what the page logs to the console from now on, for [`Tab::console`].
    pub async fn capture_console(&self) -> anyhow::Result<()> {
        self.client
            .execute(
                "if (!window.__hellopearsLog) {
                   window.__hellopearsLog = [];
                   const log = console.log.bind(console);
                   console.log = (...parts) => { window.__hellopearsLog.push(parts.join(' ')); log(...parts); };
                 }",
                vec![],
            )
            .await?;
        Ok(())
    }

    /// The console lines kept since [`Tab::capture_console`].
    pub async fn console(&self) -> anyhow::Result<Vec<String>> {
        let out = self.client.execute("return window.__hellopearsLog ?? [];", vec![]).await?;
        Ok(out.as_array().into_iter().flatten().filter_map(|line| line.as_str().map(str::to_owned)).collect())
    }

    /// Closes the browser.
    pub async fn close(self) -> anyhow::Result<()> {
        self.client.close().await?;
        Ok(())
    }
}

/// Tab-to-tab latency: `rounds` todos added in `from`, each timed until `to` shows it
/// (through WebDriver, so an upper bound); the median.
pub async fn tab_to_tab_latency(from: &Tab, to: &Tab, rounds: usize) -> anyhow::Result<Duration> {
    let mut latencies = Vec::new();
    for round in 0..rounds.max(1) {
        let text = format!("ping {round}");
        let sent = Instant::now();
        from.add(&text).await?;
        to.wait_for("a ping", Duration::from_secs(10), |tab| {
            let text = text.clone();
            async move { Ok(tab.todos().await?.iter().any(|t| t.text == text)) }
        })
        .await?;
        latencies.push(sent.elapsed());
    }
    latencies.sort();
    Ok(latencies[latencies.len() / 2])
}
