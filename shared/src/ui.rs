//! What every UI shows and asks for: the one vocabulary between a node (the `node` module)
//! and the CLI, the control socket, the terminal UI, the native window and the browser tab.
//! Plain data, serializable, so any backend can carry it; also the share-link fragment and
//! the web app's `config.json`.

use serde::{Deserialize, Serialize};

use crate::todo::Todo;
use crate::topic::Topic;

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
            (_, missing) => SyncStatus::Syncing { held, total: held.saturating_add(missing) },
        }
    }

    /// The status word tests and styles key on (`data-status`).
    pub fn word(&self) -> &'static str {
        match self {
            SyncStatus::Loading => "loading",
            SyncStatus::Alone => "alone",
            SyncStatus::Syncing { .. } => "syncing",
            SyncStatus::Synced { .. } => "synced",
            SyncStatus::Failed(_) => "failed",
        }
    }

    /// One line for the status bar (the same words in every UI).
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

/// What a user asks of a list: the one command vocabulary of every UI.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Add a todo.
    Add(String),
    /// Add this many numbered todos (demos and load tests).
    Seed(u32),
    /// Mark done (true) or not done (false).
    SetDone(String, bool),
    /// Flip done.
    Toggle(String),
    /// Change the text.
    Edit(String, String),
    /// Delete.
    Remove(String),
    /// Delete every done todo.
    ClearCompleted,
    /// Record an invite of a private list (the driver keeps its secret for the link).
    Invite {
        /// The invite's public key ([`crate::access::Invite::key`]).
        key: crate::keys::WriterId,
        /// The role it grants.
        role: crate::access::Role,
        /// Expiry, ms since the Unix epoch.
        expires: u64,
    },
    /// Remove a member of a private list (by name, or writer key or a unique prefix of it)
    /// and rotate the content key.
    RemoveMember(String),
    /// Set this device's display name in a private list.
    SetName(String),
    /// Make an invite link (the app draws the secret and answers with the link; see
    /// [`crate::node::Node::prepare_invite`]).
    NewInvite {
        /// The role it grants.
        role: crate::access::Role,
        /// How long it is valid, in ms.
        valid_ms: u64,
    },
}

/// A member of a private list, as the UIs show it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Display name ("" until set).
    pub name: String,
    /// owner, writer, read-only, blind.
    pub role: String,
    /// Writer key (hex).
    pub writer: String,
    /// Whether this is this device.
    pub me: bool,
}

/// What a command did, once it is durable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// A todo was added.
    Added(Todo),
    /// Numbered todos were added.
    Seeded(u32),
    /// Done state after a toggle.
    Toggled(bool),
    /// Done todos removed.
    Cleared(usize),
    /// The change was made.
    Changed,
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
    /// Who can read and write the list, in the words every UI shows:
    /// [`PUBLIC_LABEL`] or "private, <this device's role>".
    #[serde(default)]
    pub access: String,
    /// The active members of a private list (empty on a public topic).
    #[serde(default)]
    pub members: Vec<MemberInfo>,
    /// Whether this device may invite and remove members.
    #[serde(default)]
    pub can_manage: bool,
    /// Every list of the peer behind a native window (empty in a tab, which keeps its own).
    #[serde(default)]
    pub lists: Vec<ListEntry>,
    /// The answer to the window's last list action or invite (see [`WindowMessage`]).
    #[serde(default)]
    pub reply: Option<PageReply>,
    /// How the peer finds others, in words (the DHT's state): empty in a tab.
    #[serde(default)]
    pub network: String,
}

/// A list a native window's peer serves, as its lists panel shows it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ListEntry {
    /// Its name.
    pub name: String,
    /// Its id (hex), which [`WindowMessage::OpenList`] names.
    pub id: String,
    /// Private (else a public topic).
    pub private: bool,
    /// Whether the window shows it.
    pub shown: bool,
}

/// The answer to a window's request that has one to show: an invite link, or why a list
/// action failed. `seq` grows with each, so the page shows each once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageReply {
    /// Grows with every reply.
    pub seq: u64,
    /// What was asked.
    pub about: PageAsk,
    /// The link (an invite) or a line to show; or the error.
    pub result: Result<String, String>,
}

/// What a [`PageReply`] answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PageAsk {
    /// [`Command::NewInvite`].
    Invite,
    /// [`WindowMessage::OpenList`], [`WindowMessage::NewList`] or [`WindowMessage::JoinList`].
    Lists,
}

/// What every UI says of a public topic.
pub const PUBLIC_LABEL: &str = "public: anyone who knows the name can read and write";

/// The invite link a fragment carries (`#join=...`), if any.
pub fn invite_from_fragment(fragment: &str) -> Option<crate::access::InviteLink> {
    let fragment = fragment.trim_start_matches('#');
    fragment.split('&').find(|pair| pair.starts_with(crate::access::JOIN_FRAGMENT))?;
    crate::access::InviteLink::decode(fragment).ok()
}

impl TodoView {
    /// From the core's todo.
    pub fn from_todo(todo: &Todo) -> Self {
        Self {
            id: todo.id.clone(),
            text: todo.text.clone(),
            done: todo.done,
            created: todo.created,
            author: short(&todo.author, 8).to_owned(),
        }
    }
}

/// At most the first `chars` characters of `text`, cut on a character boundary. Ids and
/// keys from the network are untrusted: they may be short or not ASCII.
pub fn short(text: &str, chars: usize) -> &str {
    match text.char_indices().nth(chars) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// What a page in a native window sends to the desktop process (over `window.ipc`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WindowMessage {
    /// The page is up: send it the state.
    Ready,
    /// A user action on the list shown.
    Command(Command),
    /// Show another list of the peer (by id, see [`ListEntry`]).
    OpenList(String),
    /// Create a private list with this name and show it.
    NewList(String),
    /// Join a list from an invite link and show it once admitted.
    JoinList(String),
}

/// The global a native window defines before the app starts, so the app runs on the IPC
/// bridge instead of its own peer.
pub const WINDOW_MARKER: &str = "__HELLOPEARS_WINDOW__";

/// The function a native window calls with a JSON [`Snapshot`] to update the page.
pub const WINDOW_PUSH: &str = "__hellopears_push";

/// The web app's `config.json`, served by a desktop peer: the topic and the desktop's
/// WebRTC-direct addresses (those on the page's host first).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageConfig {
    /// The topic the serving peer runs.
    pub topic: String,
    /// Multiaddrs a tab can dial.
    pub peers: Vec<String>,
    /// STUN servers (`stun:host:port`) for WebRTC through NATs: the serving peer's own, if
    /// it answers STUN, and those it was configured with.
    #[serde(default)]
    pub stun: Vec<String>,
    /// The version of the app the server serves, when it runs an app by key (`run`, `up
    /// --app`): an open tab compares it with the version it loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_version: Option<u64>,
}

/// The topic a share link's fragment names (`#topic=NAME`), or the default topic.
pub fn topic_from_fragment(fragment: &str) -> Topic {
    let fragment = fragment.trim_start_matches('#');
    let name = fragment
        .split('&')
        .find_map(|pair| pair.strip_prefix("topic="))
        .map(decode_component)
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| DEFAULT_TOPIC.into());
    Topic::from_name(&name)
}

/// The topic a peer joins when none is named.
pub const DEFAULT_TOPIC: &str = "todo";

/// The fragment of a share link for a topic.
pub fn share_fragment(topic: &Topic) -> String {
    format!("#topic={}", encode_component(topic.name()))
}

/// Peer addresses a share link carries, at most.
pub const SHARE_PEERS: usize = 6;

/// The fragment of a share link for a public topic with the addresses of up to
/// [`SHARE_PEERS`] peers that hold it: the tab that opens it dials them too, so the first
/// contact depends neither on a DHT nor on the page's own server.
pub fn share_fragment_with_peers(topic: &Topic, peers: &[String]) -> String {
    let mut fragment = share_fragment(topic);
    let peers: Vec<String> = peers.iter().take(SHARE_PEERS).map(|addr| encode_component(addr)).collect();
    if !peers.is_empty() {
        fragment.push_str("&peers=");
        fragment.push_str(&peers.join(","));
    }
    fragment
}

/// The peer addresses a share link's fragment carries (see [`share_fragment_with_peers`]).
pub fn peers_from_fragment(fragment: &str) -> Vec<String> {
    fragment
        .trim_start_matches('#')
        .split('&')
        .find_map(|pair| pair.strip_prefix("peers="))
        .map(|list| list.split(',').map(decode_component).filter(|addr| !addr.is_empty()).take(SHARE_PEERS).collect())
        .unwrap_or_default()
}

/// Percent-encodes what is not safe in a URL fragment value.
fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Undoes [`encode_component`] (invalid escapes are kept as they are).
fn decode_component(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) =
                (bytes.get(i + 1).and_then(|b| hex(*b)), bytes.get(i + 2).and_then(|b| hex(*b)))
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_links_carry_peer_addresses() {
        let topic = Topic::from_name("shop & co");
        let peers: Vec<String> = (0..8)
            .map(|i| format!("/ip4/192.168.1.{i}/udp/4001/webrtc-direct/certhash/uEiAbc/p2p/12D3KooWpeer{i}"))
            .collect();
        let fragment = share_fragment_with_peers(&topic, &peers);
        assert!(fragment.starts_with("#topic=shop%20%26%20co&peers="), "{fragment}");
        assert_eq!(topic_from_fragment(&fragment), topic);
        assert_eq!(peers_from_fragment(&fragment), peers[..SHARE_PEERS].to_vec());
        assert_eq!(share_fragment_with_peers(&topic, &[]), share_fragment(&topic));
        assert!(peers_from_fragment(&share_fragment(&topic)).is_empty());
    }

    #[test]
    fn share_links_round_trip() {
        for name in ["groceries", "work & home", "päivä/ö#1"] {
            let topic = Topic::from_name(name);
            assert_eq!(topic_from_fragment(&share_fragment(&topic)), topic);
        }
        assert_eq!(topic_from_fragment("").name(), "todo");
        assert_eq!(topic_from_fragment("#x=1&topic=work").name(), "work");
        assert_eq!(topic_from_fragment("#topic=a%2").name(), "a%2");
    }

    #[test]
    fn short_ids_and_non_ascii_never_panic() {
        assert_eq!(short("", 8), "");
        assert_eq!(short("abc", 8), "abc");
        assert_eq!(short("0123456789", 8), "01234567");
        assert_eq!(short("ääääääääää", 8), "ÄÄÄÄÄÄÄÄ".to_lowercase());
        assert_eq!(short("a\u{1F600}b", 2), "a\u{1F600}");
    }
}
