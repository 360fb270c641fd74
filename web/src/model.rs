//! What the UI shows and what it asks for: the backend interface between the Leptos
//! components and whatever runs the peer (the in-tab peer in a browser, or the desktop
//! process behind an IPC bridge in a native window). Plain data, serializable, so either
//! backend can carry it.

use serde::{Deserialize, Serialize};

/// A todo as the list shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TodoView {
    /// Document id.
    pub id: String,
    /// What to do.
    pub text: String,
    /// Done or not.
    pub done: bool,
    /// Created, ms since the Unix epoch.
    pub created: i64,
    /// Short writer id of the author.
    pub author: String,
}

/// A connected peer as the peers panel shows it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PeerView {
    /// Peer id.
    pub id: String,
    /// How we are connected (for example "WebRTC direct to 127.0.0.1").
    pub connection: String,
    /// When a sync message last came from it, ms since the Unix epoch (0: never).
    pub last_sync: u64,
}

/// The sync state the status line shows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncStatus {
    /// Opening storage.
    #[default]
    Loading,
    /// No peer connected yet (or any more).
    Alone,
    /// Catching up: entries held of entries known.
    Syncing {
        /// Entries held.
        held: u64,
        /// Entries known to exist.
        total: u64,
    },
    /// Up to date with every connected peer.
    Synced {
        /// Connected peers.
        peers: usize,
    },
    /// Something went wrong that the user should know.
    Failed(String),
}

impl SyncStatus {
    /// The status of a replica holding `held` entries, with `peers` connected peers that
    /// hold `missing` entries it does not.
    pub fn from_counts(peers: usize, held: u64, missing: u64) -> Self {
        match (peers, missing) {
            (0, _) => SyncStatus::Alone,
            (_, 0) => SyncStatus::Synced { peers },
            (_, missing) => SyncStatus::Syncing { held, total: held + missing },
        }
    }

    /// One line for the status bar.
    pub fn line(&self) -> String {
        match self {
            SyncStatus::Loading => "opening…".into(),
            SyncStatus::Alone => "alone, waiting for peers".into(),
            SyncStatus::Syncing { held, total } => format!("syncing: {held} of {total} entries"),
            SyncStatus::Synced { peers: 1 } => "synced with 1 peer".into(),
            SyncStatus::Synced { peers } => format!("synced with {peers} peers"),
            SyncStatus::Failed(error) => format!("error: {error}"),
        }
    }
}

/// What the UI asks the backend to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Add a todo.
    Add(String),
    /// Flip done.
    Toggle(String),
    /// Change the text.
    Edit(String, String),
    /// Delete.
    Remove(String),
    /// Delete every done todo.
    ClearCompleted,
}

/// Everything the backend pushes to the UI at once.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The topic's name.
    pub topic: String,
    /// Our writer id (short).
    pub writer: String,
    /// The todos, newest first.
    pub todos: Vec<TodoView>,
    /// Connected peers.
    pub peers: Vec<PeerView>,
    /// Sync state.
    pub status: SyncStatus,
}

impl TodoView {
    /// From the core's todo.
    pub fn from_todo(todo: &hellopears_core::todo::Todo) -> Self {
        Self {
            id: todo.id.clone(),
            text: todo.text.clone(),
            done: todo.done,
            created: todo.created,
            author: todo.author.chars().take(8).collect(),
        }
    }
}

/// What a page in a native window sends to the desktop process (over `window.ipc`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WindowMessage {
    /// The page is up: send it the state.
    Ready,
    /// A user action.
    Command(Command),
}

/// The global a native window defines before the app starts, so the app runs on the IPC
/// bridge instead of its own peer.
pub const WINDOW_MARKER: &str = "__HELLOPEARS_WINDOW__";

/// The function a native window calls with a JSON [`Snapshot`] to update the page.
pub const WINDOW_PUSH: &str = "__hellopears_push";
