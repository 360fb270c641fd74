//! `hellopears-window`: the window host `hellopears window` starts. It is the only process
//! that loads GTK and WebKitGTK: a tao window with a wry web view showing the built web app
//! from an `app://` custom protocol (offline, from any working directory). The page runs on
//! its IPC bridge backend; this process relays between the page and the peer over stdin and
//! stdout (see `window_protocol.rs`) and exits when the window closes or its stdin ends.

#[path = "../window_protocol.rs"]
mod window_protocol;

use std::borrow::Cow;
use std::io::{BufRead, Write};
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::Parser;
use hellopears_core::ui::{WINDOW_MARKER, WINDOW_PUSH, WindowMessage};
use tao::event::{Event, WindowEvent};

/// Where the app's page is served from inside the window.
const APP_ORIGIN: &str = "app://localhost";
use tao::event_loop::{ControlFlow, EventLoopBuilder};
use tao::platform::run_return::EventLoopExtRunReturn;
use tao::window::WindowBuilder;
use window_protocol::{HostIn, HostOut, content_type};
use wry::WebViewBuilder;
use wry::http::{Request, Response, StatusCode, header};

/// The window host of `hellopears window` (not meant to be run by hand).
#[derive(Debug, Parser)]
#[command(name = "hellopears-window", version)]
struct Args {
    /// The built web app.
    #[arg(long)]
    root: PathBuf,
    /// The window title.
    #[arg(long)]
    title: String,
    /// The page's URL fragment (the topic).
    #[arg(long, default_value = "")]
    fragment: String,
}

enum UserEvent {
    In(HostIn),
    StdinClosed,
    /// The page finished loading: scripts sent before this are run now (WebKit drops the
    /// callbacks of scripts evaluated while a page loads).
    Loaded,
}

/// Writes one message to the peer; a closed pipe means the peer is gone.
#[derive(Clone)]
struct Out(Arc<Mutex<std::io::Stdout>>);

impl Out {
    fn send(&self, message: &HostOut) -> bool {
        let Ok(line) = serde_json::to_string(message) else { return false };
        let Ok(mut out) = self.0.lock() else { return false };
        writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
    }
}

fn main() -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HELLOPEARS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let args = Args::parse();
    let out = Out(Arc::new(Mutex::new(std::io::stdout())));
    match run(args, out.clone()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(reason) => {
            out.send(&HostOut::Failed(reason));
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args, out: Out) -> Result<(), String> {
    // GTK panics when it cannot start (a display that is set but unusable): say so instead.
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let event_loop = std::panic::catch_unwind(|| EventLoopBuilder::<UserEvent>::with_user_event().build());
    std::panic::set_hook(previous_hook);
    let mut event_loop = event_loop.map_err(|_| "the display cannot be opened (GTK failed to start)".to_owned())?;
    let proxy = event_loop.create_proxy();
    let load_proxy = proxy.clone();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str::<HostIn>(&line) {
                Ok(message) => {
                    if proxy.send_event(UserEvent::In(message)).is_err() {
                        return;
                    }
                }
                Err(error) => tracing::warn!(%error, "ignoring a malformed line from the peer"),
            }
        }
        let _ = proxy.send_event(UserEvent::StdinClosed);
    });

    let window = WindowBuilder::new()
        .with_title(&args.title)
        .with_inner_size(tao::dpi::LogicalSize::new(720.0, 860.0))
        .build(&event_loop)
        .map_err(|error| format!("the window cannot be created ({error})"))?;
    // WebKit keeps its own data (caches, HSTS, storage) under the program's XDG data dir,
    // which is the peer's default data dir: give it a private throwaway directory instead,
    // and no persistent storage at all (the page keeps nothing; the peer does).
    // A fresh directory with an unpredictable name, this user's only (0700).
    let webkit_dir = tempfile::Builder::new()
        .prefix("hellopears-webview-")
        .tempdir()
        .map_err(|error| format!("no directory for the web view ({error})"))?;
    let mut web_context = wry::WebContext::new(Some(webkit_dir.path().to_path_buf()));
    let root = args.root;
    let page_out = out.clone();
    let builder = WebViewBuilder::new_with_web_context(&mut web_context)
        .with_incognito(true)
        .with_initialization_script(format!("window.{WINDOW_MARKER} = true;"))
        .with_custom_protocol("app".into(), move |_id, request| serve(&root, &request))
        .with_on_page_load_handler(move |event, _url| {
            if matches!(event, wry::PageLoadEvent::Finished) {
                let _ = load_proxy.send_event(UserEvent::Loaded);
            }
        })
        // The window shows the app and nothing else: no navigation away from it, and only the
        // app's own page may send commands to the peer.
        .with_navigation_handler(|url| url.starts_with(APP_ORIGIN))
        .with_new_window_req_handler(|_url, _features| wry::NewWindowResponse::Deny)
        .with_ipc_handler(move |request: Request<String>| {
            if !request.uri().to_string().starts_with(APP_ORIGIN) {
                tracing::warn!(uri = %request.uri(), "ignoring a message from a page that is not the app");
                return;
            }
            match serde_json::from_str::<WindowMessage>(request.body()) {
                Ok(message) => {
                    page_out.send(&HostOut::Page(message));
                }
                Err(error) => tracing::warn!(%error, "ignoring a malformed message from the page"),
            }
        })
        .with_url(format!("{APP_ORIGIN}/index.html{}", args.fragment));
    let webview = {
        use tao::platform::unix::WindowExtUnix;
        use wry::WebViewBuilderExtUnix;
        let vbox = window.default_vbox().ok_or("the window has no GTK container")?;
        builder.build_gtk(vbox).map_err(|error| format!("the web view cannot start ({error})"))?
    };
    out.send(&HostOut::Started);

    let mut loaded = false;
    let mut waiting: Vec<(u64, String)> = Vec::new();
    let evaluate = |webview: &wry::WebView, id: u64, script: &str| {
        let reply = out.clone();
        let result = webview.evaluate_script_with_callback(script, move |result| {
            reply.send(&HostOut::Evaluated { id, result });
        });
        if let Err(error) = result {
            tracing::warn!(%error, "cannot run a script in the window");
            out.send(&HostOut::Evaluated { id, result: String::from("null") });
        }
    };
    event_loop.run_return(|event, _, control_flow| {
        *control_flow = ControlFlow::Wait;
        match event {
            Event::WindowEvent { event: WindowEvent::CloseRequested, .. }
            | Event::UserEvent(UserEvent::StdinClosed | UserEvent::In(HostIn::Quit)) => {
                *control_flow = ControlFlow::Exit
            }
            Event::UserEvent(UserEvent::In(HostIn::Push(snapshot))) => {
                let json = serde_json::to_string(&snapshot).unwrap_or_default();
                let literal = serde_json::to_string(&json).unwrap_or_default();
                let script = format!("window.{WINDOW_PUSH} && window.{WINDOW_PUSH}({literal});");
                if let Err(error) = webview.evaluate_script(&script) {
                    tracing::warn!(%error, "cannot update the window");
                }
            }
            Event::UserEvent(UserEvent::In(HostIn::Eval { id, script })) => {
                if loaded {
                    evaluate(&webview, id, &script);
                } else {
                    waiting.push((id, script));
                }
            }
            Event::UserEvent(UserEvent::Loaded) => {
                loaded = true;
                for (id, script) in waiting.drain(..) {
                    evaluate(&webview, id, &script);
                }
            }
            _ => {}
        }
    });
    drop(webview);
    drop(window);
    drop(web_context);
    drop(webkit_dir);
    Ok(())
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
        Some(bytes) => Response::builder().header(header::CONTENT_TYPE, content_type(relative)).body(Cow::Owned(bytes)),
        None => Response::builder().status(StatusCode::NOT_FOUND).body(Cow::Borrowed(&b"not found"[..])),
    };
    response.unwrap_or_else(|_| Response::new(Cow::Borrowed(&b""[..])))
}
