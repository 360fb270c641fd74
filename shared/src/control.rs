//! The control protocol: how the CLI and UIs reach a running peer over its control socket.
//! One JSON request line, one JSON reply line. Parsing is here, in the core, so that it is
//! fuzzed like every other decoder ([`parse_request`]).

use serde::{Deserialize, Serialize};

use crate::limits::CONTROL_LINE_BYTES;
use crate::ui::Command;

/// A request from the CLI or a UI, for one list.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// The public topic the request is for (`--topic`; empty when not given: the data
    /// dir's only list, or the topic `todo`).
    pub topic: String,
    /// The list the request is for (`--list`: a name, or a unique prefix of a name or id).
    #[serde(default)]
    pub list: Option<String>,
    /// What to do.
    pub action: Action,
}

/// The `list` of a request from a running peer's own UI (its window, its terminal UI): the
/// list that UI shows, whatever its name.
pub const SHOWN_LIST: &str = ":shown";

/// How output is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Format {
    /// For people.
    Text,
    /// For scripts.
    Json,
}

/// What a request asks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Action {
    /// A change to the list.
    Command(Command),
    /// The todos.
    List(Format),
    /// The replica and its peers.
    Status(Format),
    /// What the UIs show (JSON of a [`crate::ui::Snapshot`]).
    Snapshot,
    /// Run a script in the native window's page and return its result (automation).
    Eval(String),
    /// The lists of the data dir.
    Lists(Format),
    /// Create a private list with this name (a running peer's own UI, naming
    /// [`SHOWN_LIST`], then shows it).
    NewList(String),
    /// Show this list (a name, or a unique prefix of a name or id) in the running peer's
    /// own UI (its window).
    Show(String),
    /// An invite link to the list.
    Invite {
        /// The role it grants.
        role: crate::access::Role,
        /// How long it is valid, in ms.
        valid_ms: u64,
        /// Print JSON.
        format: Format,
    },
    /// Join a list from an invite link, waiting at most `wait_ms` to be admitted.
    Join {
        /// The link.
        link: String,
        /// How long to wait.
        wait_ms: u64,
    },
    /// The members of a private list.
    Members(Format),
    /// Set this device's display name (in every private list it is a member of).
    SetDeviceName(String),
    /// The list's id and discovery key.
    Topic(Format),
}

/// What a request printed, or why it failed.
pub type Reply = Result<String, String>;

/// Parses one request line (a trailing newline is allowed). Refuses lines over
/// [`CONTROL_LINE_BYTES`], and anything that is not one request, with a clear error.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    if line.len() > CONTROL_LINE_BYTES {
        return Err(format!("bad control request: over {CONTROL_LINE_BYTES} bytes"));
    }
    let text = std::str::from_utf8(line).map_err(|_| "bad control request: not UTF-8".to_owned())?;
    serde_json::from_str::<Request>(text.trim_end()).map_err(|error| format!("bad control request: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_garbage_is_refused() {
        let request = Request { topic: "todo".into(), list: None, action: Action::List(Format::Json) };
        let line = serde_json::to_string(&request).unwrap_or_default();
        assert!(matches!(parse_request(line.as_bytes()), Ok(Request { action: Action::List(Format::Json), .. })));
        assert!(parse_request(b"{\"topic\":").is_err());
        assert!(parse_request(&[0xff, 0xfe]).is_err());
        assert!(parse_request(&vec![b' '; CONTROL_LINE_BYTES + 1]).is_err());
    }
}
