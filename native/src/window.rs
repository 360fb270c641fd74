//! `hellopears window`: the browser app's UI in a native window over the peer in this
//! process. The window itself is a separate process, `hellopears-window` (next to this
//! executable; tao + wry, WebKitGTK on Linux), so this process never loads GTK or WebKit.
//! They talk in JSON lines over the host's stdin and stdout (`window_protocol.rs`): the page's
//! commands come in, every change goes out as a snapshot. Networking, sync and storage stay
//! here; the page has no libp2p and no IndexedDB.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use hellopears_core::control::SHOWN_LIST;
use hellopears_core::ui::{Command, PageAsk, PageReply, Snapshot, WindowMessage};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::{mpsc, oneshot, watch};

use crate::commands::{Action, Reply, Request};
use crate::launch::Prepared;
use crate::peer::{self, PeerHandle};
use crate::window_protocol::{HostIn, HostOut};

/// The window host's executable name.
const HOST: &str = "hellopears-window";

/// Why there is no window, in one line with what to use instead.
fn no_window(reason: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "cannot open a window: {reason}; \
         use the terminal UI (`hellopears` in a terminal) or `hellopears up --web` and a browser"
    )
}

/// Opens the window and runs the peer until the window is closed. `prepare` opens the
/// store; it runs while the window host starts GTK and the web view, off the path to the
/// first paint.
pub fn run(
    topic: String,
    prepare: impl FnOnce() -> anyhow::Result<Prepared> + Send + 'static,
    root: Option<PathBuf>,
) -> anyhow::Result<()> {
    if std::env::var_os("DISPLAY").is_none() && std::env::var_os("WAYLAND_DISPLAY").is_none() {
        return Err(no_window("no display (neither DISPLAY nor WAYLAND_DISPLAY is set)"));
    }
    let root = root.ok_or_else(|| anyhow::anyhow!("the web app is not built: run `cargo xtask web`"))?;
    let host = std::env::current_exe()?.with_file_name(HOST);
    if !host.is_file() {
        return Err(no_window(&format!(
            "{HOST} is not installed next to this program (build with the `window` feature)"
        )));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async move {
        let fragment = hellopears_core::ui::share_fragment(&hellopears_core::topic::Topic::from_name(&topic));
        let mut child = tokio::process::Command::new(&host)
            .arg("--root")
            .arg(&root)
            .arg("--title")
            .arg(format!("HelloPears — {topic}"))
            .arg("--fragment")
            .arg(fragment)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| no_window(&format!("{HOST} cannot start ({error})")))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(no_window(&format!("{HOST} has no pipes")));
        };

        let (view_tx, view_rx) = watch::channel(Snapshot::default());
        let (eval_tx, eval_rx) = mpsc::channel::<(String, oneshot::Sender<Reply>)>(16);
        let (handle, inbox) = peer::channel();
        let (done_tx, done_rx) = oneshot::channel();
        {
            let handle = handle.clone();
            tokio::spawn(async move {
                let result = match tokio::task::spawn_blocking(prepare).await {
                    Ok(Ok(mut prepared)) => {
                        prepared.config.view = Some(view_tx);
                        prepared.config.eval = Some(eval_tx);
                        crate::launch::serve(prepared, handle, inbox).await
                    }
                    Ok(Err(error)) => Err(error),
                    Err(error) => Err(anyhow::anyhow!("opening the store failed: {error}")),
                };
                let _ = done_tx.send(result);
            });
        }
        let (replies_tx, replies_rx) = mpsc::channel(16);
        let relay = Relay {
            host: stdin,
            handle: handle.clone(),
            topic,
            view: view_rx,
            pending: HashMap::new(),
            next_id: 0,
            reply: None,
            replies_tx,
            replies_rx,
        };
        let outcome = relay.run(BufReader::new(stdout).lines(), eval_rx, done_rx).await;
        finish(child, handle, outcome).await
    })
}

type Done = oneshot::Receiver<anyhow::Result<()>>;

/// How the window ended.
enum Outcome {
    /// The window was closed (or its host ended): stop the peer.
    Closed(Done),
    /// The host could not open a window: stop the peer and say why.
    Failed(String, Done),
    /// The peer stopped on its own (Ctrl-C, a fatal error), with its result.
    PeerStopped(anyhow::Result<()>),
    /// The peer is stopping; its result is still to come.
    Stopping(Done),
}

struct Relay {
    host: ChildStdin,
    handle: PeerHandle,
    topic: String,
    view: watch::Receiver<Snapshot>,
    /// Scripts sent to the page, by id, with where their result goes.
    pending: HashMap<u64, oneshot::Sender<Reply>>,
    next_id: u64,
    /// The answer to the page's last invite or list action, sent with every snapshot.
    reply: Option<PageReply>,
    replies_tx: mpsc::Sender<(PageAsk, Reply)>,
    replies_rx: mpsc::Receiver<(PageAsk, Reply)>,
}

impl Relay {
    async fn run(
        mut self,
        mut lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
        mut evals: mpsc::Receiver<(String, oneshot::Sender<Reply>)>,
        mut done: Done,
    ) -> Outcome {
        loop {
            tokio::select! {
                line = lines.next_line() => match line {
                    Ok(Some(line)) => match serde_json::from_str::<HostOut>(&line) {
                        Ok(HostOut::Failed(reason)) => return Outcome::Failed(reason, done),
                        Ok(message) => self.handle_host(message).await,
                        Err(error) => tracing::warn!(%error, "ignoring a malformed line from the window host"),
                    },
                    Ok(None) | Err(_) => return Outcome::Closed(done),
                },
                changed = self.view.changed() => {
                    if changed.is_err() {
                        return Outcome::Stopping(done);
                    }
                    let snapshot = self.view.borrow_and_update().clone();
                    self.push(snapshot).await;
                }
                Some((about, result)) = self.replies_rx.recv() => {
                    let seq = self.reply.as_ref().map_or(1, |reply| reply.seq + 1);
                    self.reply = Some(PageReply { seq, about, result });
                    let snapshot = self.view.borrow().clone();
                    self.push(snapshot).await;
                }
                Some((script, reply)) = evals.recv() => {
                    let id = self.next_id;
                    self.next_id += 1;
                    // Requests whose caller gave up (timed out) are forgotten.
                    self.pending.retain(|_, waiting| !waiting.is_closed());
                    self.pending.insert(id, reply);
                    self.send(&HostIn::Eval { id, script }).await;
                }
                result = &mut done => {
                    return Outcome::PeerStopped(result.unwrap_or_else(|_| Err(anyhow::anyhow!("the peer task ended"))));
                }
            }
        }
    }

    async fn handle_host(&mut self, message: HostOut) {
        match message {
            HostOut::Started | HostOut::Failed(_) => {}
            HostOut::Evaluated { id, result } => {
                if let Some(reply) = self.pending.remove(&id) {
                    let _ = reply.send(Ok(result));
                }
            }
            HostOut::Page(WindowMessage::Ready) => {
                // Before the store is open there is nothing to show: the first real
                // snapshot is pushed when it comes.
                let snapshot = self.view.borrow().clone();
                if !snapshot.topic.is_empty() {
                    self.push(snapshot).await;
                }
            }
            HostOut::Page(WindowMessage::Command(Command::NewInvite { role, valid_ms })) => {
                let action = Action::Invite { role, valid_ms, format: crate::commands::Format::Json };
                self.ask(PageAsk::Invite, action, |json| {
                    let value: serde_json::Value = serde_json::from_str(&json).map_err(|e| e.to_string())?;
                    value["link"].as_str().map(str::to_owned).ok_or_else(|| "no invite link".to_owned())
                });
            }
            HostOut::Page(WindowMessage::Command(command)) => {
                let (peer, topic) = (self.handle.clone(), self.topic.clone());
                tokio::spawn(async move {
                    let request =
                        Request { topic, list: Some(SHOWN_LIST.to_owned()), action: Action::Command(command) };
                    if let Err(error) = peer.request(request).await {
                        tracing::warn!(%error, "a command from the window failed");
                    }
                });
            }
            HostOut::Page(WindowMessage::OpenList(id)) => self.ask(PageAsk::Lists, Action::Show(id), Ok),
            HostOut::Page(WindowMessage::NewList(name)) => self.ask(PageAsk::Lists, Action::NewList(name), Ok),
            HostOut::Page(WindowMessage::JoinList(link)) => {
                let peer = self.handle.clone();
                let replies = self.replies_tx.clone();
                tokio::spawn(async move {
                    let result = join_and_show(&peer, link).await;
                    let _ = replies.send((PageAsk::Lists, result)).await;
                });
            }
        }
    }

    /// Runs a request for the page on the peer and shows its answer there (through `answer`).
    fn ask(&self, about: PageAsk, action: Action, answer: impl FnOnce(String) -> Reply + Send + 'static) {
        let (peer, replies) = (self.handle.clone(), self.replies_tx.clone());
        tokio::spawn(async move {
            let request = Request { topic: String::new(), list: Some(SHOWN_LIST.to_owned()), action };
            let result = peer.request(request).await.and_then(answer);
            if let Err(error) = &result {
                tracing::info!(%error, "a request from the window failed");
            }
            let _ = replies.send((about, result)).await;
        });
    }

    /// Pushes a snapshot to the page, with the last answer to show.
    async fn push(&mut self, mut snapshot: Snapshot) {
        snapshot.reply = self.reply.clone();
        self.send(&HostIn::Push(Box::new(snapshot))).await;
    }

    async fn send(&mut self, message: &HostIn) {
        let Ok(mut line) = serde_json::to_string(message) else { return };
        line.push('\n');
        if let Err(error) = self.host.write_all(line.as_bytes()).await {
            tracing::debug!(%error, "the window host is gone");
        }
    }
}

/// Joins a list from an invite link pasted into the window, and shows it once admitted.
async fn join_and_show(peer: &PeerHandle, link: String) -> Reply {
    let invite = hellopears_core::access::InviteLink::decode(&link).map_err(|e| e.to_string())?;
    let request = |action| Request { topic: String::new(), list: None, action };
    let joined = peer.request(request(Action::Join { link, wait_ms: 60_000 })).await?;
    peer.request(request(Action::Show(invite.topic().id().to_string()))).await?;
    Ok(joined)
}

/// Stops whichever side is still running and reports how it went.
async fn finish(mut child: Child, handle: PeerHandle, outcome: Outcome) -> anyhow::Result<()> {
    async fn stopped(done: Done) -> anyhow::Result<()> {
        match tokio::time::timeout(Duration::from_secs(10), done).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(anyhow::anyhow!("the peer task ended without a result")),
            Err(_) => Err(anyhow::anyhow!("the peer did not stop in time")),
        }
    }
    let result = match outcome {
        Outcome::PeerStopped(result) => result,
        Outcome::Stopping(done) => stopped(done).await,
        Outcome::Closed(done) => {
            // Closing the window stops the peer cleanly: it saves, and its connections close.
            handle.shutdown().await;
            stopped(done).await
        }
        Outcome::Failed(reason, done) => {
            handle.shutdown().await;
            let _ = stopped(done).await;
            Err(no_window(&reason))
        }
    };
    // Closing its stdin closes the window; give it a moment, then make sure.
    drop(child.stdin.take());
    if tokio::time::timeout(Duration::from_secs(5), child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
    result
}
