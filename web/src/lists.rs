//! The lists this browser holds: which list a page opens (`#topic=NAME` for a public topic,
//! `#list=ID` for a private list, `#join=...` for an invite link), the names and ids of the
//! lists it knows (in `localStorage`: no secrets there), and each private list's record
//! (capability, owner, name) in that list's own IndexedDB database.

use hellopears_core::access::{Capability, InviteLink};
use hellopears_core::topic::Topic;
use hellopears_core::{Keypair, WriterId};
use serde::{Deserialize, Serialize};

use crate::idb::{IdbStorage, database_name};

/// The meta key of a private list's record in its database.
pub const LIST_RECORD: &str = "list-record";
/// Where the known lists are listed.
const KNOWN_LISTS: &str = "hellopears-lists";

/// What a page opens.
#[derive(Clone, Debug)]
pub enum Source {
    /// A public topic.
    Public(Topic),
    /// A private list this browser holds, by id (hex).
    Stored(String),
    /// A private list to join with an invite link.
    Join(Box<InviteLink>),
}

impl Source {
    /// From the page's fragment.
    pub fn from_fragment(fragment: &str) -> Self {
        if let Some(link) = hellopears_core::ui::invite_from_fragment(fragment) {
            return Source::Join(Box::new(link));
        }
        let id = fragment.trim_start_matches('#').split('&').find_map(|pair| pair.strip_prefix("list="));
        match id {
            Some(id) if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Source::Stored(id.to_ascii_lowercase())
            }
            _ => Source::Public(crate::topic_from_fragment(fragment)),
        }
    }

    /// The name to show until the list is open.
    pub fn name(&self) -> String {
        match self {
            Source::Public(topic) => topic.name().to_owned(),
            Source::Join(link) => link.name.clone(),
            Source::Stored(id) => known().into_iter().find(|l| l.id == *id).map_or_else(|| "…".into(), |l| l.name),
        }
    }

    /// The IndexedDB database of the list.
    pub fn database(&self) -> String {
        match self {
            Source::Public(topic) => database_name(topic),
            Source::Join(link) => database_name(&link.topic()),
            Source::Stored(id) => format!("hellopears-{id}"),
        }
    }
}

/// A private list's record, kept in its database.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListRecord {
    /// Its name.
    pub name: String,
    /// What this browser holds.
    pub capability: Capability,
    /// The device that created it.
    pub owner: WriterId,
}

impl ListRecord {
    /// The list it describes.
    pub fn topic(&self) -> Topic {
        Topic::private(self.name.clone(), self.capability.clone(), self.owner)
    }

    /// Its encoded form, for the database.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A list this browser knows, as the lists panel shows it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KnownList {
    /// Its id (hex).
    pub id: String,
    /// Its name.
    pub name: String,
    /// Whether it is private.
    pub private: bool,
}

impl KnownList {
    /// The fragment that opens it.
    pub fn fragment(&self) -> String {
        if self.private { format!("#list={}", self.id) } else { crate::share_fragment(&Topic::from_name(&self.name)) }
    }

    /// The entry for a topic.
    pub fn of(topic: &Topic) -> Self {
        Self { id: topic.id().to_string(), name: topic.name().to_owned(), private: topic.is_private() }
    }
}

fn local_storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok().flatten()
}

/// The lists this browser knows, most recently opened first.
pub fn known() -> Vec<KnownList> {
    local_storage()
        .and_then(|storage| storage.get_item(KNOWN_LISTS).ok().flatten())
        .and_then(|json| serde_json::from_str(&json).ok())
        .unwrap_or_default()
}

/// Remembers a list (first in the panel).
pub fn remember(list: KnownList) {
    let mut lists = known();
    lists.retain(|known| known.id != list.id);
    lists.insert(0, list);
    lists.truncate(64);
    if let (Some(storage), Ok(json)) = (local_storage(), serde_json::to_string(&lists)) {
        let _ = storage.set_item(KNOWN_LISTS, &json);
    }
}

/// Opens a page on `fragment` (the app reads its list from the fragment at start).
pub fn open(fragment: &str) {
    if let Some(location) = web_sys::window().map(|w| w.location()) {
        let _ = location.set_hash(fragment);
        let _ = location.reload();
    }
}

/// Creates a private list owned by this browser, and opens it.
pub async fn create(name: &str) -> Result<(), String> {
    let name = hellopears_core::limits::clip_name(name);
    if name.trim().is_empty() {
        return Err("a list needs a name".into());
    }
    let mut root = [0u8; 32];
    let mut writer = [0u8; 32];
    getrandom::fill(&mut root).map_err(|e| e.to_string())?;
    getrandom::fill(&mut writer).map_err(|e| e.to_string())?;
    let owner = Keypair::from_secret(writer).id();
    let record = ListRecord { name, capability: Capability::Root(root), owner };
    let topic = record.topic();
    let storage = IdbStorage::open(&database_name(&topic)).await.map_err(|e| e.to_string())?;
    // The owner's writer key is the one the list's id names: stored before the node opens.
    let meta = vec![
        (LIST_RECORD.to_owned(), Some(record.encode())),
        (hellopears_core::node::WRITER_SECRET.to_owned(), Some(writer.to_vec())),
    ];
    use hellopears_core::storage::Storage;
    storage
        .write(&hellopears_core::storage::WriteBatch { meta, ..Default::default() })
        .await
        .map_err(|e| e.to_string())?;
    let known = KnownList::of(&topic);
    remember(known.clone());
    open(&known.fragment());
    Ok(())
}
