//! What `hellopears window` (the peer) and its window host (`hellopears-window`, the only
//! process that loads GTK and WebKitGTK) say to each other: one JSON object per line, the
//! peer writing to the host's stdin and reading its stdout. Keeping the web view out of the
//! peer's process keeps the peer small (no GTK or WebKit libraries mapped, no UI heap) and
//! lets a crashed web view leave the peer and its data untouched.

use std::path::Path;

use hellopears_core::ui::{Snapshot, WindowMessage};
use serde::{Deserialize, Serialize};

/// From the peer to the host.
#[derive(Debug, Serialize, Deserialize)]
pub enum HostIn {
    /// Show this state.
    Push(Box<Snapshot>),
    /// Run a script in the page; the result comes back as [`HostOut::Evaluated`].
    Eval {
        /// Matches the answer to the request.
        id: u64,
        /// The script.
        script: String,
    },
    /// Close the window.
    Quit,
}

/// From the host to the peer.
#[derive(Debug, Serialize, Deserialize)]
pub enum HostOut {
    /// The window and its web view are up.
    Started,
    /// There is no window, and why (one line).
    Failed(String),
    /// A message the page posted.
    Page(WindowMessage),
    /// The result of [`HostIn::Eval`] (JSON).
    Evaluated {
        /// The request's id.
        id: u64,
        /// What the script returned.
        result: String,
    },
}

/// The media type of a web app file.
pub fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "webmanifest") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    }
}
