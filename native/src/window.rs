//! `hellopears window`: the browser app's UI in a native window (tao + wry, WebKitGTK on
//! Linux) over the peer in this process. The page gets its files from an `app://` custom
//! protocol (the built web app, so it works offline and from any directory) and runs on
//! its IPC bridge backend: commands come in through `window.ipc.postMessage`, and every
//! change goes out as a snapshot through `evaluate_script`. Networking, sync and storage
//! stay here; the page has no libp2p and no IndexedDB.

use std::borrow::Cow;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use hellopears_web::model::{Command, Snapshot, WINDOW_MARKER, WINDOW_PUSH, WindowMessage};
use tao::event::{Event, WindowEvent};
use tao::event_loop::{ControlFlow, EventLoopBuilder};
use tao::platform::run_return::EventLoopExtRunReturn;
use tao::window::WindowBuilder;
use tokio::sync::{mpsc, oneshot, watch};
use wry::WebViewBuilder;
use wry::http::{Request, Response, StatusCode, header};

use crate::commands::{Reply, Request as PeerRequest};
use crate::local::Local;
use crate::peer::{self, PeerConfig, WindowLink};

enum UserEvent {
    /// The page is up: send it the state.
    Ready,
    /// The state changed.
    Push(String),
    /// Run a script in the page.
    Eval(String, oneshot::Sender<Reply>),
    /// The peer stopped.
    Stopped,
}

/// Why there is no window, in one line with what to use instead.
fn no_display(reason: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "cannot open a window: {reason}; use the terminal UI (`hellopears` in a terminal) or `hellopears up --web` and a browser"
    )
}

/// Opens the window and runs the peer until the window is closed.
/// What a peer needs to run: its replica, node key and configuration.
pub type Prepared = (Local, libp2p::identity::Keypair, PeerConfig);

/// Opens the window and runs the peer until the window is closed. `prepare` opens the
/// store; it runs while GTK and the web view start, off the path to the first paint.
pub fn run(
    topic: String,
    prepare: impl FnOnce() -> anyhow::Result<Prepared> + Send + 'static,
    root: Option<PathBuf>,
) -> anyhow::Result<()> {
    if std::env::var_os("DISPLAY").is_none() && std::env::var_os("WAYLAND_DISPLAY").is_none() {
        return Err(no_display("no display (neither DISPLAY nor WAYLAND_DISPLAY is set)"));
    }
    let root = root.ok_or_else(|| anyhow::anyhow!("the web app is not built: run `cargo xtask web`"))?;
    // GTK panics when it cannot start (a display that is set but unusable): say so instead.
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let event_loop = std::panic::catch_unwind(|| EventLoopBuilder::<UserEvent>::with_user_event().build());
    std::panic::set_hook(previous_hook);
    let mut event_loop = event_loop.map_err(|_| no_display("the display cannot be opened (GTK failed to start)"))?;

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let (view_tx, mut view_rx) = watch::channel(Snapshot::default());
    let (eval_tx, mut eval_rx) = mpsc::channel::<(String, oneshot::Sender<Reply>)>(16);
    let (handle, inbox) = peer::channel();
    let proxy = event_loop.create_proxy();
    // When the peer stops on its own (Ctrl-C, a fatal error), the window closes too.
    let (done_tx, done_rx) = oneshot::channel();
    {
        let proxy = proxy.clone();
        let handle = handle.clone();
        let link = WindowLink { view: view_tx, eval: eval_tx };
        runtime.spawn(async move {
            let result = match tokio::task::spawn_blocking(prepare).await {
                Ok(Ok((local, node_key, mut config))) => {
                    config.window = Some(link);
                    peer::run(local, node_key, config, handle, inbox).await
                }
                Ok(Err(error)) => Err(error),
                Err(error) => Err(anyhow::anyhow!("opening the store failed: {error}")),
            };
            let _ = done_tx.send(result);
            let _ = proxy.send_event(UserEvent::Stopped);
        });
    }

    let latest = view_rx.clone();
    {
        let proxy = proxy.clone();
        runtime.spawn(async move {
            while view_rx.changed().await.is_ok() {
                let json = serde_json::to_string(&*view_rx.borrow_and_update()).unwrap_or_default();
                if proxy.send_event(UserEvent::Push(json)).is_err() {
                    break;
                }
            }
        });
    }
    {
        let proxy = proxy.clone();
        runtime.spawn(async move {
            while let Some((script, reply)) = eval_rx.recv().await {
                if proxy.send_event(UserEvent::Eval(script, reply)).is_err() {
                    break;
                }
            }
        });
    }

    let window = WindowBuilder::new()
        .with_title(format!("HelloPears — {topic}"))
        .with_inner_size(tao::dpi::LogicalSize::new(720.0, 860.0))
        .build(&event_loop)
        .map_err(|error| no_display(&format!("the window cannot be created ({error})")))?;
    let ipc_proxy = proxy.clone();
    let ipc_peer = handle.clone();
    let ipc_runtime = runtime.handle().clone();
    // WebKit keeps its own data (caches, HSTS, storage) under the program's XDG data dir,
    // which is our default data dir: give it a private throwaway directory instead, and no
    // persistent storage at all (the page keeps nothing; the peer here does).
    let webkit_dir = std::env::temp_dir().join(format!("hellopears-webview-{}", std::process::id()));
    let mut web_context = wry::WebContext::new(Some(webkit_dir.clone()));
    let builder = WebViewBuilder::new_with_web_context(&mut web_context)
        .with_incognito(true)
        .with_initialization_script(format!("window.{WINDOW_MARKER} = true;"))
        .with_custom_protocol("app".into(), move |_id, request| serve(&root, &request))
        .with_ipc_handler(move |request: Request<String>| match serde_json::from_str::<WindowMessage>(request.body()) {
            Ok(WindowMessage::Ready) => {
                let _ = ipc_proxy.send_event(UserEvent::Ready);
            }
            Ok(WindowMessage::Command(command)) => {
                let peer = ipc_peer.clone();
                ipc_runtime.spawn(async move {
                    if let Err(error) = peer.request(to_request(command)).await {
                        tracing::warn!(%error, "a command from the window failed");
                    }
                });
            }
            Err(error) => tracing::warn!(%error, "ignoring a malformed message from the window"),
        })
        .with_url(format!(
            "app://localhost/index.html{}",
            hellopears_web::share_fragment(&hellopears_core::topic::Topic::from_name(&topic))
        ));
    let webview = {
        use tao::platform::unix::WindowExtUnix;
        use wry::WebViewBuilderExtUnix;
        let vbox = window.default_vbox().ok_or_else(|| no_display("the window has no GTK container"))?;
        builder.build_gtk(vbox).map_err(|error| no_display(&format!("the web view cannot start ({error})")))?
    };

    let push = |webview: &wry::WebView, json: &str| {
        let literal = serde_json::to_string(json).unwrap_or_default();
        if let Err(error) =
            webview.evaluate_script(&format!("window.{WINDOW_PUSH} && window.{WINDOW_PUSH}({literal});"))
        {
            tracing::warn!(%error, "cannot update the window");
        }
    };
    event_loop.run_return(|event, _, control_flow| {
        *control_flow = ControlFlow::Wait;
        match event {
            Event::WindowEvent { event: WindowEvent::CloseRequested, .. } | Event::UserEvent(UserEvent::Stopped) => {
                *control_flow = ControlFlow::Exit
            }
            Event::UserEvent(UserEvent::Ready) => {
                // Before the store is open there is nothing to show: the first real snapshot
                // is pushed when it comes.
                let snapshot = latest.borrow().clone();
                if !snapshot.topic.is_empty() {
                    push(&webview, &serde_json::to_string(&snapshot).unwrap_or_default());
                }
            }
            Event::UserEvent(UserEvent::Push(json)) => push(&webview, &json),
            Event::UserEvent(UserEvent::Eval(script, reply)) => {
                let reply = Mutex::new(Some(reply));
                let result = webview.evaluate_script_with_callback(&script, move |result| {
                    if let Some(reply) = reply.lock().ok().and_then(|mut r| r.take()) {
                        let _ = reply.send(Ok(result));
                    }
                });
                if let Err(error) = result {
                    tracing::warn!(%error, "cannot run a script in the window");
                }
            }
            _ => {}
        }
    });
    drop(webview);
    drop(window);
    drop(web_context);
    let _ = std::fs::remove_dir_all(&webkit_dir);
    // Closing the window stops the peer cleanly: it saves, and its connections close.
    runtime.block_on(async {
        handle.shutdown().await;
        match tokio::time::timeout(Duration::from_secs(10), done_rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(anyhow::anyhow!("the peer task ended without a result")),
            Err(_) => Err(anyhow::anyhow!("the peer did not stop in time")),
        }
    })
}

fn to_request(command: Command) -> PeerRequest {
    match command {
        Command::Add(text) => PeerRequest::Add(text),
        Command::Toggle(id) => PeerRequest::Toggle(id),
        Command::Edit(id, text) => PeerRequest::Edit(id, text),
        Command::Remove(id) => PeerRequest::Remove(id),
        Command::ClearCompleted => PeerRequest::ClearCompleted,
    }
}

/// Answers `app://localhost/<path>` from the built web app.
fn serve(root: &Path, request: &Request<Vec<u8>>) -> Response<Cow<'static, [u8]>> {
    let path = request.uri().path().trim_start_matches('/');
    let path = if path.is_empty() { "index.html" } else { path };
    let relative = Path::new(path);
    let found = relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| std::fs::read(root.join(relative)).ok())
        .flatten();
    let response = match found {
        Some(bytes) => {
            Response::builder().header(header::CONTENT_TYPE, crate::web::content_type(relative)).body(Cow::Owned(bytes))
        }
        None => Response::builder().status(StatusCode::NOT_FOUND).body(Cow::Borrowed(&b"not found"[..])),
    };
    response.unwrap_or_else(|_| Response::new(Cow::Borrowed(&b""[..])))
}
