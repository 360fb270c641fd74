//! The CLI's requests and what they print. A request names its list (the topic), so it
//! reaches that list or fails clearly; it runs on the peer holding the data dir (over the
//! control socket) or, when none runs, on a node this process opens itself. Both print the
//! same, from the same functions.

use hellopears_core::node::{Input, Node, Output};
use hellopears_core::todo::{self, Todo};
use hellopears_core::topic::Topic;
use hellopears_core::ui::{self, Outcome, SyncStatus};
use serde::{Deserialize, Serialize};

use crate::lists::Selection;
use crate::local::{self, Backend, Home};
use crate::store::ListRecord;

pub use hellopears_core::control::{Action, Format, Reply, Request};

/// A connected peer as `status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Peer id.
    pub peer: String,
    /// Remote addresses.
    pub addresses: Vec<String>,
    /// direct, hole-punched (TCP|QUIC), or relayed via a peer (and why).
    pub kind: String,
    /// Entries it has that we do not.
    pub missing: u64,
    /// How it was found: `mdns`, `dht`, `invite`, `exchange`, `bootstrap`, or `dialed us`.
    #[serde(default)]
    pub found: String,
}

/// The running peer, as `status` shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Our peer id.
    pub peer_id: String,
    /// Where we listen.
    pub addresses: Vec<String>,
    /// Connected peers whose sync session is open.
    pub peers: Vec<PeerStatus>,
    /// The DHT's state.
    #[serde(default)]
    pub dht: Option<crate::discovery::DhtStatus>,
}

/// One writer in `status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WriterStatus {
    writer: String,
    len: u64,
    quarantined: bool,
}

/// The `status --json` document.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StatusReport {
    topic: String,
    topic_id: String,
    writer: String,
    writers: Vec<WriterStatus>,
    entries: u64,
    todos: usize,
    running: bool,
    peer_id: Option<String>,
    addresses: Vec<String>,
    peers: Vec<PeerStatus>,
    missing: u64,
    sync: String,
    /// The DHT's state (when a peer runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    dht: Option<crate::discovery::DhtStatus>,
}

/// What a query prints; `None` for actions that are not queries.
pub fn query<P: Ord + Clone + std::fmt::Debug>(
    node: &Node<P>,
    action: &Action,
    running: Option<&NodeStatus>,
) -> Option<String> {
    match action {
        Action::List(format) => Some(list(node, *format)),
        Action::Status(format) => Some(status(node, *format, running)),
        Action::Snapshot => {
            let snapshot = node.snapshot(|peer| (format!("{peer:?}"), "connected".to_owned()));
            Some(serde_json::to_string(&snapshot).unwrap_or_default())
        }
        Action::Members(format) => Some(members(node, *format)),
        Action::Topic(format) => Some(topic_text(node.replica().topic(), *format)),
        Action::Command(_)
        | Action::Eval(_)
        | Action::Lists(_)
        | Action::NewList(_)
        | Action::Show(_)
        | Action::Invite { .. }
        | Action::Join { .. }
        | Action::SetDeviceName(_) => None,
    }
}

/// One member as `members` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberView {
    /// Display name ("" until set).
    pub name: String,
    /// owner, writer, read-only, blind.
    pub role: String,
    /// Writer key (hex).
    pub writer: String,
    /// Still a member.
    pub active: bool,
    /// Whether this is this device.
    pub me: bool,
    /// Entries it wrote.
    pub entries: u64,
    /// When it last changed a todo we can read, ms since the Unix epoch (its clock; 0: never).
    pub last_seen: i64,
}

fn members<P: Ord + Clone + std::fmt::Debug>(node: &Node<P>, format: Format) -> String {
    let replica = node.replica();
    let Some(membership) = replica.membership() else {
        return match format {
            Format::Json => "[]\n".into(),
            Format::Text => format!("{}: {}\n", replica.topic().name(), crate::lists::PUBLIC_LABEL),
        };
    };
    let todos = todo::list(replica.db());
    let views: Vec<MemberView> = membership
        .members()
        .iter()
        .map(|member| {
            let hex = member.device.to_hex();
            MemberView {
                name: member.name.clone(),
                role: member.role.label().to_owned(),
                writer: hex.clone(),
                active: member.is_active(),
                me: member.device == replica.writer_id(),
                entries: replica.base().len(&member.device),
                last_seen: todos
                    .iter()
                    .filter(|t| t.author == hex)
                    .map(|t| t.updated.max(t.created))
                    .max()
                    .unwrap_or(0),
            }
        })
        .collect();
    match format {
        Format::Json => format!("{}\n", serde_json::to_string(&views).unwrap_or_else(|_| "[]".into())),
        Format::Text => {
            let mut out = String::new();
            for view in &views {
                let name = if view.name.is_empty() { "(no name)".to_owned() } else { printable(&view.name) };
                let state = match (view.active, view.me) {
                    (false, _) => " (removed)",
                    (true, true) => " (this device)",
                    _ => "",
                };
                out += &format!(
                    "{name}  {}  {}  {} entries{state}\n",
                    view.role,
                    ui::short(&view.writer, 16),
                    view.entries
                );
            }
            out
        }
    }
}

/// A new private list's record and this device's writer secret in it (its owner key):
/// fresh random secrets.
pub fn new_list_record(name: &str) -> Result<(crate::store::ListRecord, [u8; 32]), String> {
    let name = hellopears_core::limits::clip_name(name);
    if name.trim().is_empty() {
        return Err("a list needs a name".into());
    }
    let mut root = [0u8; 32];
    getrandom::fill(&mut root).map_err(|e| format!("no randomness for a list: {e}"))?;
    // The owner is the writer key this device will have in the list: made now, stored
    // with the list so the node opens with it.
    let mut writer = [0u8; 32];
    getrandom::fill(&mut writer).map_err(|e| format!("no randomness for a key: {e}"))?;
    let owner = hellopears_core::Keypair::from_secret(writer).id();
    Ok((crate::lists::create(&name, root, owner), writer))
}

/// Records an invite to a private list: the command that writes it, and the text to print
/// (the link and its QR code) once it is durable.
pub fn invite<P: Ord + Clone + std::fmt::Debug>(
    node: &Node<P>,
    role: hellopears_core::access::Role,
    valid_ms: u64,
    addresses: Vec<String>,
    format: Format,
) -> Result<(ui::Command, String), String> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| format!("no randomness for an invite: {e}"))?;
    let (command, link) = node.prepare_invite(secret, role, valid_ms, addresses).map_err(|e| e.to_string())?;
    let expires = link.expires;
    let url = format!("{INVITE_BASE}#{}{}", hellopears_core::access::JOIN_FRAGMENT, link.encode());
    let text = match format {
        Format::Json => format!(
            "{}\n",
            serde_json::json!({"link": url, "role": role.label(), "expires": expires, "addresses": link.addresses})
        ),
        Format::Text => {
            let mut out = format!("{url}\n\n");
            out += &qr_text(&url);
            out += &format!(
                "\nOne device may join with this {} invite until {} (ms since the Unix epoch {expires}).\n",
                role.label(),
                human_time(expires)
            );
            if link.addresses.is_empty() {
                out +=
                    "No peer is running on this data dir: start `hellopears up` so the device can reach this list.\n";
            }
            out
        }
    };
    Ok((command, text))
}

/// Where invite links point: the web app a desktop peer serves by default (`up --web`),
/// so the same link opens the list in a browser tab; `hellopears join` reads it too. The
/// secret is in the fragment, which browsers never send to any server.
pub const INVITE_BASE: &str = "http://127.0.0.1:4270/";

/// A QR code of `text` for the terminal (two rows per character).
pub fn qr_text(text: &str) -> String {
    match qrcode::QrCode::new(text.as_bytes()) {
        Ok(code) => {
            code.render::<qrcode::render::unicode::Dense1x2>()
                .dark_color(qrcode::render::unicode::Dense1x2::Light)
                .light_color(qrcode::render::unicode::Dense1x2::Dark)
                .quiet_zone(true)
                .build()
                + "\n"
        }
        Err(error) => format!("(no QR code: {error})\n"),
    }
}

fn human_time(ms: u64) -> String {
    let days = ms / 86_400_000;
    let (year, month, day) = civil_from_days(days as i64);
    let rest = ms % 86_400_000;
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02} UTC", rest / 3_600_000, rest / 60_000 % 60)
}

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// What a command printed once it is durable.
pub fn outcome_text(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Added(todo) => format!("{}\n", todo.id),
        Outcome::Seeded(count) => format!("added {count} todos\n"),
        Outcome::Cleared(count) => format!("removed {count} done todos\n"),
        Outcome::Toggled(_) | Outcome::Changed => String::new(),
    }
}

fn list<P: Ord + Clone + std::fmt::Debug>(node: &Node<P>, format: Format) -> String {
    let todos: Vec<Todo> = todo::list(node.replica().db());
    match format {
        Format::Json => format!("{}\n", serde_json::to_string(&todos).unwrap_or_else(|_| "[]".into())),
        Format::Text => list_text(node.replica().topic().name(), &todos),
    }
}

/// The todo list for people. Ids come from the network: they may be short or not ASCII.
pub fn list_text(topic: &str, todos: &[Todo]) -> String {
    if todos.is_empty() {
        return format!("no todos on topic {topic:?} yet: hellopears add \"something to do\"\n");
    }
    todos
        .iter()
        .map(|t| {
            format!("[{}] {}  {}\n", if t.done { "x" } else { " " }, printable(ui::short(&t.id, 8)), printable(&t.text))
        })
        .collect()
}

/// Text from the network made safe for a terminal: control characters (escape sequences
/// that could move the cursor, rewrite the screen or set the clipboard; newlines that
/// could fake other lines) are shown escaped.
pub fn printable(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

fn status<P: Ord + Clone + std::fmt::Debug>(node: &Node<P>, format: Format, running: Option<&NodeStatus>) -> String {
    let replica = node.replica();
    let base = replica.base();
    let peers = running.map(|n| n.peers.clone()).unwrap_or_default();
    let sync = match running {
        Some(_) => node.status(),
        None => SyncStatus::Failed("no peer is running on this data dir".into()),
    };
    let report = StatusReport {
        topic: replica.topic().name().to_owned(),
        topic_id: replica.topic().id().to_string(),
        writer: replica.writer_id().to_hex(),
        writers: base
            .writers()
            .iter()
            .map(|w| WriterStatus { writer: w.id.to_hex(), len: w.len, quarantined: w.quarantined })
            .collect(),
        entries: base.total_entries(),
        todos: replica.db().count(todo::COLLECTION),
        running: running.is_some(),
        peer_id: running.map(|n| n.peer_id.clone()),
        addresses: running.map(|n| n.addresses.clone()).unwrap_or_default(),
        missing: peers.iter().map(|p| p.missing).fold(0, u64::saturating_add),
        peers,
        sync: sync.line(),
        dht: running.and_then(|n| n.dht.clone()),
    };
    match format {
        Format::Json => format!("{}\n", serde_json::to_string(&report).unwrap_or_default()),
        Format::Text => status_text(&report, running.is_some()),
    }
}

fn status_text(report: &StatusReport, running: bool) -> String {
    let mut out = format!("topic {} ({})\n", report.topic, report.topic_id);
    out += &format!("writer {}\n", report.writer);
    out += &format!("{} entries from {} writers, {} todos\n", report.entries, report.writers.len(), report.todos);
    for writer in &report.writers {
        let flag = if writer.quarantined { " (quarantined: forked its log)" } else { "" };
        out += &format!("  writer {} {} entries{flag}\n", ui::short(&writer.writer, 8), writer.len);
    }
    if let Some(peer_id) = &report.peer_id {
        out += &format!("peer id {peer_id}\n");
        for address in &report.addresses {
            out += &format!("  listening on {address}\n");
        }
    }
    if !running {
        return out + "no peer is running on this data dir\n";
    }
    if let Some(dht) = &report.dht {
        out += &dht.line(Some(now_ms()));
        out.push('\n');
    }
    for peer in &report.peers {
        let found = if peer.found.is_empty() { String::new() } else { format!(" [found: {}]", peer.found) };
        out += &format!("  peer {} {}{found} {}\n", peer.peer, peer.kind, peer.addresses.join(" "));
    }
    out + &report.sync + "\n"
}

/// The `topic` output: a list's name, id and discovery key.
pub fn topic_text(topic: &Topic, format: Format) -> String {
    let access = if topic.is_private() { "private" } else { "public" };
    match format {
        Format::Json => format!(
            "{}\n",
            serde_json::json!({
                "name": topic.name(),
                "id": topic.id().to_string(),
                "discovery_key": topic.discovery_key().to_string(),
                "access": access,
                "dht_keys": crate::discovery::rendezvous_hex(topic),
            })
        ),
        Format::Text => format!(
            "topic {}\nid {}\ndiscovery key {}\nDHT keys {}\n{access}\n",
            topic.name(),
            topic.id(),
            topic.discovery_key(),
            crate::discovery::rendezvous_hex(topic).join(" ")
        ),
    }
}

/// Runs a request with no peer running, on the data dir's store opened by this process;
/// the answer comes once its changes are durable.
pub fn execute_offline(home: &Home, selection: &Selection, request: &Request) -> Reply {
    let fail = |error: anyhow::Error| format!("{error:#}");
    let now = now_ms();
    match &request.action {
        Action::Lists(format) => {
            let mut summaries = Vec::new();
            for record in home.lists().map_err(fail)? {
                let node = open_offline(home, &record, None)?;
                summaries.push(crate::lists::summary(node.replica().topic(), node.replica(), record.joining.is_some()));
            }
            return Ok(crate::lists::lists_text(&summaries, *format == Format::Json));
        }
        Action::NewList(name) => {
            let (record, writer) = new_list_record(name)?;
            home.put(&record).map_err(fail)?;
            let mut node = open_offline(home, &record, Some(writer))?;
            let backend = home.backend(&record.topic()).map_err(fail)?;
            settle(&mut node, &backend, Input::Command(0, ui::Command::SetName(home.device_name())), now)?;
            return Ok(format!("created private list {} ({})\n", record.name, record.topic().id()));
        }
        Action::SetDeviceName(name) => {
            let name = hellopears_core::limits::clip_name(name);
            if name.is_empty() {
                return Err("a device name needs some text".into());
            }
            home.set_device_name(&name).map_err(fail)?;
            for record in home.lists().map_err(fail)? {
                let mut node = open_offline(home, &record, None)?;
                if node.replica().role().is_some_and(hellopears_core::access::Role::can_read) {
                    let backend = home.backend(&record.topic()).map_err(fail)?;
                    settle(&mut node, &backend, Input::Command(0, ui::Command::SetName(name.clone())), now)?;
                }
            }
            return Ok(format!("this device is now {name:?}\n"));
        }
        Action::Join { .. } => return Err("joining needs a running peer".into()),
        Action::Show(_) => return Err("showing a list needs a running window".into()),
        _ => {}
    }
    let record = home.select(selection).map_err(fail)?;
    let backend = home.backend(&record.topic()).map_err(fail)?;
    let mut node = open_offline(home, &record, None)?;
    match &request.action {
        Action::Command(command) => {
            let reply = settle(&mut node, &backend, Input::Command(0, command.clone()), now)?;
            let outcome = reply.ok_or_else(|| "the command was not saved".to_owned())??;
            Ok(outcome_text(&outcome))
        }
        Action::Invite { role, valid_ms, format } => {
            let (command, text) = invite(&node, *role, *valid_ms, Vec::new(), *format)?;
            let reply = settle(&mut node, &backend, Input::Command(0, command), now)?;
            reply.ok_or_else(|| "the invite was not saved".to_owned())??;
            Ok(text)
        }
        Action::Eval(_) => Err("no window is running on this data dir".into()),
        action => query(&node, action, None).ok_or_else(|| "nothing to show".into()),
    }
}

/// Opens a list's node in this process and saves what opening it wrote (a new writer key).
fn open_offline(home: &Home, record: &ListRecord, writer: Option<[u8; 32]>) -> Result<Node<()>, String> {
    let fail = |error: anyhow::Error| format!("{error:#}");
    let backend = home.backend(&record.topic()).map_err(fail)?;
    let mut node: Node<()> =
        local::open_node_with_key(&backend, record.topic(), Default::default(), writer).map_err(fail)?;
    settle(&mut node, &backend, Input::Tick, now_ms())?;
    Ok(node)
}

/// Feeds one input and carries out the writes that follow, here and now; returns the reply
/// of a command. A failed write is an error (nothing was acknowledged).
fn settle(
    node: &mut Node<()>,
    backend: &Backend,
    input: Input<()>,
    now: u64,
) -> Result<Option<Result<Outcome, String>>, String> {
    let mut reply = None;
    let mut queue = node.handle(input, now);
    while !queue.is_empty() {
        let mut next = Vec::new();
        for output in queue {
            match output {
                Output::Persist(id, batch) => {
                    let written = backend.write_blocking(&batch);
                    if let Err(error) = &written {
                        return Err(format!("cannot save: {error}"));
                    }
                    next.extend(node.handle(Input::Persisted(id, written), now));
                }
                Output::Reply(_, result) => reply = Some(result),
                _ => {}
            }
        }
        queue = next;
    }
    Ok(reply)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn todo(id: &str) -> Todo {
        Todo { id: id.into(), text: "t".into(), done: false, created: 0, updated: 0, author: String::new() }
    }

    #[test]
    fn ids_from_the_network_print_whatever_their_length_or_characters() {
        let todos = [todo(""), todo("x"), todo("ä"), todo("ääääääääää"), todo("0123456789abcdef")];
        let text = list_text("t", &todos);
        assert!(text.contains("[ ] 01234567  t"), "{text}");
        assert!(text.contains("[ ] ää"), "{text}");
        assert_eq!(text.lines().count(), 5);
    }
}

#[cfg(test)]
mod printable_tests {
    #[test]
    fn terminal_escapes_and_newlines_from_peers_are_shown_not_obeyed() {
        let text = "buy milk\u{1b}]52;c;ZXZpbA==\u{7}\n[x] fake line\u{9b}2J";
        let shown = super::printable(text);
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert!(shown.starts_with("buy milk\\u{1b}]52;c;"));
    }
}
