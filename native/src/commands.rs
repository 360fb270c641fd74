//! The todo commands, run on a replica: by the CLI on a local store, or by a running peer
//! for a CLI that reached it over the control socket. Both print the same.

use serde::{Deserialize, Serialize};

use hellopears_core::todo::{self, Todo};

use crate::local::Local;

/// A command on the todo list.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// Add a todo.
    Add(String),
    /// Add this many numbered todos.
    Seed(u32),
    /// List todos (as JSON or text).
    List(bool),
    /// Mark done or not done.
    SetDone(String, bool),
    /// Change the text.
    Edit(String, String),
    /// Delete.
    Remove(String),
    /// Replica and peer status (as JSON or text).
    Status(bool),
    /// Flip done.
    Toggle(String),
    /// Delete every done todo.
    ClearCompleted,
    /// Run a script in the native window's page and return its result (automation).
    Eval(String),
}

/// What a command printed, or why it failed.
pub type Reply = Result<String, String>;

/// Peers as the status shows them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Peer id.
    pub peer: String,
    /// Remote addresses.
    pub addresses: Vec<String>,
    /// direct (more kinds come with NAT traversal).
    pub kind: String,
    /// Entries it has that we do not.
    pub missing: u64,
}

/// The running peer, as the status shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Our peer id.
    pub peer_id: String,
    /// Where we listen.
    pub addresses: Vec<String>,
    /// Connected topic peers.
    pub peers: Vec<PeerStatus>,
}

/// Runs a command on a replica; `node` is None when no peer is running.
pub fn execute(local: &mut Local, request: &Request, now: i64, node: Option<&NodeStatus>) -> Reply {
    let text = |error: &dyn std::fmt::Display| error.to_string();
    match request {
        Request::Add(body) => {
            let todo = local.replica.todos().add(body, now).map_err(|e| text(&e))?;
            save(local)?;
            Ok(format!("{}\n", todo.id))
        }
        Request::Seed(count) => {
            for n in 0..*count {
                local.replica.todos().add(&format!("todo number {n}"), now).map_err(|e| text(&e))?;
            }
            save(local)?;
            Ok(format!("added {count} todos\n"))
        }
        Request::List(json) => Ok(list(local, *json)),
        Request::SetDone(id, done) => {
            local.replica.todos().set_done(id, *done, now).map_err(|e| text(&e))?;
            save(local)?;
            Ok(String::new())
        }
        Request::Toggle(id) => {
            local.replica.todos().toggle(id, now).map_err(|e| text(&e))?;
            save(local)?;
            Ok(String::new())
        }
        Request::ClearCompleted => {
            let removed = local.replica.todos().clear_completed().map_err(|e| text(&e))?;
            save(local)?;
            Ok(format!("removed {removed} done todos\n"))
        }
        Request::Eval(_) => Err("no window is running on this data dir".into()),
        Request::Edit(id, body) => {
            local.replica.todos().edit(id, body, now).map_err(|e| text(&e))?;
            save(local)?;
            Ok(String::new())
        }
        Request::Remove(id) => {
            local.replica.todos().remove(id).map_err(|e| text(&e))?;
            save(local)?;
            Ok(String::new())
        }
        Request::Status(json) => Ok(status(local, *json, node)),
    }
}

fn save(local: &mut Local) -> Result<(), String> {
    local.save().map_err(|error| format!("{error:#}"))
}

fn list(local: &Local, json: bool) -> String {
    let todos: Vec<Todo> = todo::list(local.replica.db());
    if json {
        return format!("{}\n", serde_json::to_string(&todos).unwrap_or_else(|_| "[]".into()));
    }
    if todos.is_empty() {
        return format!(
            "no todos on topic {:?} yet: hellopears add \"something to do\"\n",
            local.replica.topic().name()
        );
    }
    todos.iter().map(|t| format!("[{}] {}  {}\n", if t.done { "x" } else { " " }, &t.id[..8], t.text)).collect()
}

fn status(local: &Local, json: bool, node: Option<&NodeStatus>) -> String {
    let peers = node.map(|node| node.peers.as_slice());
    let base = local.replica.base();
    let writers: Vec<serde_json::Value> = base
        .writers()
        .iter()
        .map(|w| serde_json::json!({"writer": w.id.to_hex(), "len": w.len, "quarantined": w.quarantined}))
        .collect();
    let missing: u64 = peers.unwrap_or_default().iter().map(|p| p.missing).sum();
    let status = serde_json::json!({
        "topic": local.replica.topic().name(),
        "topic_id": local.replica.topic().id().to_string(),
        "writer": local.replica.writer_id().to_hex(),
        "writers": writers,
        "entries": base.total_entries(),
        "todos": local.replica.db().count(todo::COLLECTION),
        "running": node.is_some(),
        "peer_id": node.map(|n| n.peer_id.clone()),
        "addresses": node.map(|n| n.addresses.clone()).unwrap_or_default(),
        "peers": peers.unwrap_or_default(),
        "missing": missing,
    });
    if json {
        return format!("{status}\n");
    }
    let mut out = format!("topic {} ({})\n", local.replica.topic().name(), local.replica.topic().id());
    out += &format!("writer {}\n", local.replica.writer_id());
    out +=
        &format!("{} entries from {} writers, {} todos\n", base.total_entries(), base.writers().len(), status["todos"]);
    for writer in base.writers() {
        let flag = if writer.quarantined { " (quarantined: forked its log)" } else { "" };
        out += &format!("  writer {} {} entries{flag}\n", writer.id.short(), writer.len);
    }
    if let Some(node) = node {
        out += &format!("peer id {}\n", node.peer_id);
        for address in &node.addresses {
            out += &format!("  listening on {address}\n");
        }
    }
    match peers {
        None => out += "no peer is running on this data dir\n",
        Some([]) => out += "alone: waiting for peers\n",
        Some(peers) => {
            for peer in peers {
                out += &format!("  peer {} {} {}\n", peer.peer, peer.kind, peer.addresses.join(" "));
            }
            if missing > 0 {
                out += &format!("syncing: {missing} entries to fetch\n");
            }
        }
    }
    out
}
