//! The lists of a data dir: which list a command means, and creating or joining one.

use hellopears_core::access::{Capability, InviteLink};
use hellopears_core::topic::Topic;

use crate::store::{ListRecord, StoredAccess};

/// The public topic a data dir uses when nothing else is said.
pub const DEFAULT_TOPIC: &str = "todo";

/// What a command names: `--list NAME` (a list of the data dir, by name or a unique prefix
/// of its name or id) or `--topic NAME` (a public topic); neither: the data dir's only
/// list, or the public topic `todo`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// `--list`.
    pub list: Option<String>,
    /// `--topic`, when given.
    pub topic: Option<String>,
}

impl Selection {
    /// The list this selection means among `lists`; `Ok(None)` means a public topic that is
    /// not among them yet (the name is in [`Selection::public_name`]).
    pub fn resolve<'a>(&self, lists: &'a [ListRecord]) -> Result<Option<&'a ListRecord>, String> {
        if let Some(wanted) = &self.list {
            return find(lists, wanted).map(Some);
        }
        if let Some(topic) = &self.topic {
            return Ok(lists.iter().find(|l| l.access == StoredAccess::Public && l.name == *topic));
        }
        match lists {
            [only] => Ok(Some(only)),
            _ => Ok(lists.iter().find(|l| l.access == StoredAccess::Public && l.name == DEFAULT_TOPIC)),
        }
    }

    /// The public topic this selection means when it names no list of the data dir.
    pub fn public_name(&self) -> Option<&str> {
        match (&self.list, &self.topic) {
            (Some(_), _) => None,
            (None, Some(topic)) => Some(topic),
            (None, None) => Some(DEFAULT_TOPIC),
        }
    }
}

/// Which of the lists a running peer serves (`records`; its UIs show the one at `shown`) a
/// request names: `--list`, `--topic`, or (from the window and the terminal UI) a list's
/// name in `topic`.
pub fn served(records: &[ListRecord], shown: usize, topic: &str, list: Option<&str>) -> Result<usize, String> {
    if list == Some(hellopears_core::control::SHOWN_LIST) {
        return Ok(shown);
    }
    let selection = Selection { list: list.map(Into::into), topic: (!topic.is_empty()).then(|| topic.to_owned()) };
    let by_name = || (list.is_none() && !topic.is_empty()).then(|| records.iter().find(|r| r.name == topic)).flatten();
    match selection.resolve(records)?.or_else(by_name) {
        Some(found) => {
            let id = found.topic().id();
            Ok(records.iter().position(|record| record.topic().id() == id).unwrap_or(0))
        }
        None => Err(format!(
            "the peer running on this data dir does not serve topic {:?} (it serves {}): pass --list, or stop that \
             peer first",
            selection.public_name().unwrap_or_default(),
            records.iter().map(|record| format!("topic {:?}", record.name)).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// A list by exact name, else unique prefix of a name, else unique prefix of its id.
fn find<'a>(lists: &'a [ListRecord], wanted: &str) -> Result<&'a ListRecord, String> {
    let exact: Vec<&ListRecord> = lists.iter().filter(|l| l.name == wanted).collect();
    let candidates = if !exact.is_empty() {
        exact
    } else {
        let by_name: Vec<&ListRecord> = lists.iter().filter(|l| l.name.starts_with(wanted)).collect();
        if !by_name.is_empty() {
            by_name
        } else {
            let lower = wanted.to_lowercase();
            lists.iter().filter(|l| !wanted.is_empty() && l.topic().id().to_string().starts_with(&lower)).collect()
        }
    };
    match candidates.as_slice() {
        [one] => Ok(one),
        [] => Err(format!("no list {wanted:?} in this data dir (see hellopears lists)")),
        many => Err(format!(
            "{wanted:?} matches {} lists ({}): give more of the name, or the id",
            many.len(),
            many.iter()
                .map(|l| format!("{} {}", l.name, &l.topic().id().to_string()[..8]))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// A new private list named `name`, created by this device (`owner` is its writer key in
/// the list, from `writer_secret`).
pub fn create(name: &str, root: [u8; 32], owner: hellopears_core::WriterId) -> ListRecord {
    ListRecord {
        name: name.to_owned(),
        access: StoredAccess::Private { capability: Capability::Root(root), owner },
        joining: None,
        peers: Vec::new(),
    }
}

/// The record of a list joined from an invite link.
pub fn joined(link: &InviteLink) -> ListRecord {
    ListRecord {
        name: link.name.clone(),
        access: StoredAccess::Private { capability: Capability::Replicate(link.replicate), owner: link.owner },
        joining: Some(link.invite),
        peers: link.addresses.clone(),
    }
}

/// What `lists` shows of one list.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ListSummary {
    /// Its name.
    pub name: String,
    /// Its id (hex).
    pub id: String,
    /// "public" or "private".
    pub access: String,
    /// This device's role: owner, writer, read-only, blind; "joining" until admitted;
    /// "public" on a public topic.
    pub role: String,
    /// Active members (0 on a public topic: anyone).
    pub members: usize,
    /// Todos this device can read.
    pub todos: usize,
}

/// What every UI says of a public topic.
pub use hellopears_core::ui::PUBLIC_LABEL;

/// The summary of an open list.
pub fn summary(topic: &Topic, replica: &hellopears_core::Replica, joining: bool) -> ListSummary {
    let role = match (topic.is_private(), replica.role()) {
        (false, _) => "public".to_owned(),
        (true, Some(role)) => role.label().to_owned(),
        (true, None) if joining => "joining".to_owned(),
        (true, None) => "removed".to_owned(),
    };
    ListSummary {
        name: topic.name().to_owned(),
        id: topic.id().to_string(),
        access: if topic.is_private() { "private" } else { "public" }.to_owned(),
        role,
        members: replica.membership().map_or(0, |m| m.members().iter().filter(|m| m.is_active()).count()),
        todos: hellopears_core::todo::list(replica.db()).len(),
    }
}

/// The `lists` output.
pub fn lists_text(summaries: &[ListSummary], json: bool) -> String {
    if json {
        return format!("{}\n", serde_json::to_string(summaries).unwrap_or_else(|_| "[]".into()));
    }
    if summaries.is_empty() {
        return "no lists yet: hellopears new NAME\n".into();
    }
    let mut out = String::new();
    for s in summaries {
        let what = if s.access == "public" { PUBLIC_LABEL.to_owned() } else { format!("private, {}", s.role) };
        out.push_str(&format!(
            "{}  {}  {}  {} members  {} todos\n",
            crate::commands::printable(&s.name),
            &s.id[..8],
            what,
            s.members,
            s.todos
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(name: &str) -> ListRecord {
        ListRecord::public(name)
    }

    #[test]
    fn selections_find_one_list_or_say_why_not() {
        let owner = hellopears_core::Keypair::derive_for_tests(1, 1).id();
        let lists = vec![public("todo"), create("groceries", [1; 32], owner), create("garden", [2; 32], owner)];
        let pick = |list: Option<&str>, topic: Option<&str>| {
            Selection { list: list.map(Into::into), topic: topic.map(Into::into) }
                .resolve(&lists)
                .map(|r| r.map(|r| r.name.clone()))
        };
        assert_eq!(pick(Some("groceries"), None), Ok(Some("groceries".into())));
        assert_eq!(pick(Some("gro"), None), Ok(Some("groceries".into())));
        assert!(pick(Some("g"), None).is_err_and(|e| e.contains("matches 2 lists")));
        assert!(pick(Some("nope"), None).is_err_and(|e| e.contains("no list")));
        assert_eq!(pick(None, Some("todo")), Ok(Some("todo".into())));
        assert_eq!(pick(None, Some("other")), Ok(None));
        assert_eq!(pick(None, None), Ok(Some("todo".into())));
        let single = vec![create("groceries", [1; 32], owner)];
        let only = Selection::default().resolve(&single).map(|r| r.map(|r| r.name.clone()));
        assert_eq!(only, Ok(Some("groceries".into())));
    }
}
