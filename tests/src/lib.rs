//! Helpers for end-to-end tests that run real `hellopears` processes.

pub mod browser;
pub mod display;
pub mod js;
pub mod netns;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The `hellopears` binary built alongside these tests (`target/<profile>/hellopears`),
/// or the one named by `HELLOPEARS_BIN`.
pub fn hellopears_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("HELLOPEARS_BIN") {
        return PathBuf::from(path);
    }
    let mut dir = std::env::current_exe().unwrap_or_default();
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join(format!("hellopears{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: run the workspace tests (cargo xtask test) or cargo build -p hellopears",
        bin.display()
    );
    bin
}

/// Runs a one-shot `hellopears` command on a data dir.
pub fn run(data: &Path, args: &[&str]) -> Output {
    Command::new(hellopears_bin()).arg("--data").arg(data).args(args).output().expect("run hellopears")
}

/// Runs a one-shot `hellopears` command on a data dir inside network namespace `netns`.
pub fn run_in(netns: &str, data: &Path, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", netns])
        .arg(hellopears_bin())
        .arg("--data")
        .arg(data)
        .args(args)
        .output()
        .expect("run hellopears in a namespace")
}

/// Runs a command that must succeed and returns its stdout.
pub fn ok(data: &Path, args: &[&str]) -> String {
    let out = run(data, args);
    assert!(out.status.success(), "hellopears {args:?} failed: {out:?}");
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// `list --json` of a data dir.
pub fn list(data: &Path) -> Vec<serde_json::Value> {
    serde_json::from_str(&ok(data, &["list", "--json"])).expect("json list")
}

/// Polls `check` every 50 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Passes a child's output on line by line (stderr lines are echoed for test logs).
fn forward_lines(output: impl std::io::Read + Send + 'static, tx: mpsc::Sender<String>, echo: bool) {
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines() {
            let Ok(line) = line else { break };
            if echo {
                eprintln!("[peer] {line}");
            }
            if tx.send(line).is_err() && !echo {
                break;
            }
        }
    });
}

/// A running `hellopears up` process, stopped (SIGINT, then kill) when dropped.
#[derive(Debug)]
pub struct Peer {
    child: Child,
    /// Its data dir.
    pub data: PathBuf,
    /// Its peer id.
    pub peer_id: String,
    /// Its listen addresses, with `/p2p/<id>`.
    pub addrs: Vec<String>,
    /// The web app's URL, when it serves one (`--web`).
    pub web: Option<String>,
    lines: mpsc::Receiver<String>,
}

impl Peer {
    /// Starts `hellopears --data DATA up ARGS` and waits until it listens.
    pub fn start(data: &Path, args: &[&str]) -> Peer {
        Self::spawn(Command::new(hellopears_bin()), data, "up", args)
    }

    /// The same, with extra environment variables.
    pub fn start_with_env(data: &Path, env: &[(&str, &str)], args: &[&str]) -> Peer {
        let mut command = Command::new(hellopears_bin());
        for (name, value) in env {
            command.env(name, value);
        }
        Self::spawn(command, data, "up", args)
    }

    /// Starts `hellopears --data DATA window ARGS` on X display `display`.
    pub fn start_window(data: &Path, display: &str, args: &[&str]) -> Peer {
        Self::start_window_with_env(data, display, &[], args)
    }

    /// The same, with extra environment variables.
    pub fn start_window_with_env(data: &Path, display: &str, env: &[(&str, &Path)], args: &[&str]) -> Peer {
        let mut command = Command::new(hellopears_bin());
        command.env("DISPLAY", display).env_remove("WAYLAND_DISPLAY");
        for (name, value) in env {
            command.env(name, value);
        }
        Self::spawn(command, data, "window", args)
    }

    /// Starts `hellopears --data DATA SUBCOMMAND ARGS` (a command that runs a peer, such as
    /// `seed` or `run`) and waits until it listens.
    pub fn start_command(data: &Path, subcommand: &str, args: &[&str]) -> Peer {
        Self::spawn(Command::new(hellopears_bin()), data, subcommand, args)
    }

    /// The same, with extra environment variables.
    pub fn start_command_with_env(data: &Path, subcommand: &str, env: &[(&str, &Path)], args: &[&str]) -> Peer {
        let mut command = Command::new(hellopears_bin());
        for (name, value) in env {
            command.env(name, value);
        }
        Self::spawn(command, data, subcommand, args)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The same, inside network namespace `netns`.
    pub fn start_in(netns: &str, data: &Path, args: &[&str]) -> Peer {
        Self::start_in_with_env(netns, data, &[], args)
    }

    /// The same, with extra environment variables.
    pub fn start_in_with_env(netns: &str, data: &Path, env: &[(&str, &str)], args: &[&str]) -> Peer {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", netns]).arg(hellopears_bin());
        for (name, value) in env {
            command.env(name, value);
        }
        Self::spawn(command, data, "up", args)
    }

    /// Every line printed since the last call (or since start, past the ones `start` and
    /// `wait_for_line` consumed).
    pub fn drain_lines(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }

    fn spawn(mut command: Command, data: &Path, subcommand: &str, args: &[&str]) -> Peer {
        let mut child = command
            .arg("--data")
            .arg(data)
            .arg(subcommand)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hellopears up");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        forward_lines(stdout, tx.clone(), false);
        forward_lines(stderr, tx, true);
        let mut peer =
            Peer { child, data: data.to_path_buf(), peer_id: String::new(), addrs: Vec::new(), web: None, lines };
        let deadline = Instant::now() + Duration::from_secs(20);
        while peer.addrs.is_empty() || peer.peer_id.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = peer.lines.recv_timeout(left).expect("peer printed its id and addresses in time");
            if let Some(id) = line.strip_prefix("peer id ") {
                peer.peer_id = id.trim().to_owned();
            }
            if let Some(url) = line.strip_prefix("web app on ") {
                peer.web = Some(url.trim().to_owned());
            }
            if let Some(addr) = line.strip_prefix("listening on ") {
                peer.addrs.push(addr.trim().to_owned());
            }
        }
        peer
    }

    /// Its first TCP address.
    pub fn tcp_addr(&self) -> String {
        self.addrs.iter().find(|a| a.contains("/tcp/")).cloned().expect("a TCP address")
    }

    /// Waits for a line of output (stdout or stderr) containing `text`.
    pub fn wait_for_line(&self, text: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(text) => return Some(line),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// Kills the peer at once (SIGKILL: no shutdown, no final write) and waits for it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the peer cleanly (SIGINT) and waits for it to exit.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.shutdown();
        }
    }
}
