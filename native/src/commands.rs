//! The CLI's requests and what they print. A request names its list (the topic), so it
//! reaches that list or fails clearly; it runs on the peer holding the data dir (over the
//! control socket) or, when none runs, on a node this process opens itself. Both print the
//! same, from the same functions.

use hellopears_core::node::{Input, Node, Output};
use hellopears_core::todo::{self, Todo};
use hellopears_core::topic::Topic;
use hellopears_core::ui::{self, Outcome, SyncStatus};
use serde::{Deserialize, Serialize};

use crate::local::{self, Backend};

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
}

/// The error when a request names another list than the node holds.
pub fn check_topic(request: &Request, topic: &Topic) -> Result<(), String> {
    if request.topic == topic.name() {
        return Ok(());
    }
    Err(format!(
        "the peer running on this data dir serves topic {:?}, not {:?}: pass --topic {:?}, or stop that peer first",
        topic.name(),
        request.topic,
        topic.name()
    ))
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
        Action::Command(_) | Action::Eval(_) => None,
    }
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
    for peer in &report.peers {
        out += &format!("  peer {} {} {}\n", peer.peer, peer.kind, peer.addresses.join(" "));
    }
    out + &report.sync + "\n"
}

/// Runs a request with no peer running, on the list's store opened by this process; the
/// answer comes once its changes are durable.
pub fn execute_offline(backend: Backend, topic: Topic, request: &Request) -> Reply {
    let fail = |error: anyhow::Error| format!("{error:#}");
    let mut node: Node<()> = local::open_node(&backend, topic, Default::default()).map_err(fail)?;
    let now = now_ms();
    // The first write of a new store saves its writer key.
    settle(&mut node, &backend, Input::Tick, now)?;
    match &request.action {
        Action::Command(command) => {
            let reply = settle(&mut node, &backend, Input::Command(0, command.clone()), now)?;
            let outcome = reply.ok_or_else(|| "the command was not saved".to_owned())??;
            Ok(outcome_text(&outcome))
        }
        Action::Eval(_) => Err("no window is running on this data dir".into()),
        action => query(&node, action, None).ok_or_else(|| "nothing to show".into()),
    }
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

    #[test]
    fn a_request_for_another_list_is_refused_with_the_running_one_named() {
        let request = Request { topic: "home".into(), action: Action::List(Format::Json) };
        let error = check_topic(&request, &Topic::from_name("work")).expect_err("another topic");
        assert!(error.contains("\"work\"") && error.contains("\"home\""), "{error}");
        let request = Request { topic: "work".into(), action: Action::List(Format::Json) };
        assert!(check_topic(&request, &Topic::from_name("work")).is_ok());
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
