//! Topics: a human name maps to a 32-byte topic id, and the id to the discovery key
//! announced on the network, so the name itself is never announced.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::access::{Capability, ListKeys};
use crate::keys::{Hash, WriterId};

/// The 32-byte id of a topic: SHA-256 of its name.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TopicId(pub [u8; 32]);

/// The key peers announce and look up on the network for a topic. Derived from the
/// topic id with a domain tag, so knowing it does not reveal the topic id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DiscoveryKey(pub [u8; 32]);

/// How long a private list's rendezvous key stays the same, in seconds (see
/// [`Topic::rendezvous_keys`]).
pub const RENDEZVOUS_WINDOW_SECS: u64 = 3600;

/// Who can read and write a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// An open topic: anyone who knows the name can read and write.
    Public,
    /// A private list: its capability and the keys it derives (see [`crate::access`]).
    Private {
        /// What this device holds.
        capability: Capability,
        /// The derived keys.
        keys: Box<ListKeys>,
    },
}

/// A topic (a list): its name, id, discovery key and access.
#[derive(Clone, PartialEq, Eq)]
pub struct Topic {
    name: String,
    id: TopicId,
    discovery: DiscoveryKey,
    access: Access,
}

impl Topic {
    /// The topic for a name (as the seed does: SHA-256 of the name).
    pub fn from_name(name: &str) -> Self {
        let id = TopicId(Hash::digest(name.as_bytes()).0);
        Self::from_id(name.to_owned(), id)
    }

    /// A topic known by its id (for example from a share link).
    pub fn from_id(name: String, id: TopicId) -> Self {
        let discovery = DiscoveryKey(Hash::digest_parts(&[b"hellopears/discovery/v1", &id.0]).0);
        Self { name, id, discovery, access: Access::Public }
    }

    /// A private list created by `owner`, as this device holds it.
    pub fn private(name: String, capability: Capability, owner: WriterId) -> Self {
        let keys = ListKeys::derive(&capability, owner);
        Self {
            name,
            id: TopicId(keys.id),
            discovery: DiscoveryKey(keys.discovery),
            access: Access::Private { capability, keys: Box::new(keys) },
        }
    }

    /// Who can read and write it.
    pub fn access(&self) -> &Access {
        &self.access
    }

    /// Whether it is a private list.
    pub fn is_private(&self) -> bool {
        matches!(self.access, Access::Private { .. })
    }

    /// The keys of a private list.
    pub fn list_keys(&self) -> Option<&ListKeys> {
        match &self.access {
            Access::Public => None,
            Access::Private { keys, .. } => Some(keys),
        }
    }

    /// The name this topic was opened with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The topic id.
    pub fn id(&self) -> TopicId {
        self.id
    }

    /// The discovery key to announce and look up.
    pub fn discovery_key(&self) -> DiscoveryKey {
        self.discovery
    }

    /// The rendezvous key of time window `window` (see [`Topic::rendezvous_keys`]).
    pub fn rendezvous_key(&self, window: u64) -> [u8; 32] {
        match &self.access {
            Access::Public => Hash::digest_parts(&[b"hellopears/topic/rendezvous/v1", &self.discovery.0]).0,
            Access::Private { keys, .. } => keys.rendezvous(window),
        }
    }

    /// The keys under which this topic's peers meet in a public DHT at `unix_secs`, with
    /// windows of `window_secs`: a public topic has one key for ever (anyone who knows the
    /// name can compute it anyway); a private list has the key of the current window and of
    /// the next (announced ahead, so peers whose clocks disagree a little still meet),
    /// derived from its secret. The first key is the one to look up.
    pub fn rendezvous_keys(&self, unix_secs: u64, window_secs: u64) -> Vec<[u8; 32]> {
        if self.is_private() {
            let window = unix_secs / window_secs.max(1);
            vec![self.rendezvous_key(window), self.rendezvous_key(window.saturating_add(1))]
        } else {
            vec![self.rendezvous_key(0)]
        }
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Topic")
            .field("name", &self.name)
            .field("id", &self.id)
            .field("private", &self.is_private())
            .finish()
    }
}

impl fmt::Debug for TopicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TopicId({})", hex::encode(&self.0[..8]))
    }
}

impl fmt::Display for TopicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for DiscoveryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DiscoveryKey({})", hex::encode(&self.0[..8]))
    }
}

impl fmt::Display for DiscoveryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_id_is_sha256_of_name() {
        let topic = Topic::from_name("todo");
        // `printf todo | sha256sum`
        assert_eq!(topic.id().to_string(), "602fae580f5863abfb31bf356decfdc73bf1224a62aacf6b4829ffa2dbe58390");
        assert_ne!(topic.id().0, topic.discovery_key().0);
        assert_eq!(Topic::from_name("todo").discovery_key(), topic.discovery_key());
        assert_ne!(Topic::from_name("todo2").discovery_key(), topic.discovery_key());
    }

    #[test]
    fn rendezvous_keys_of_a_private_list_rotate_and_reveal_nothing_public() {
        let owner = WriterId([7; 32]);
        let list = Topic::private("groceries".into(), Capability::Root([1; 32]), owner);
        let same_name = Topic::private("groceries".into(), Capability::Root([2; 32]), owner);
        let window = RENDEZVOUS_WINDOW_SECS;
        let now = 1_800_000_000;
        let keys = list.rendezvous_keys(now, window);
        assert_eq!(keys.len(), 2, "the current window and the next");
        assert_ne!(keys[0], keys[1], "the key changes between windows");
        // The next window's first key is the one announced ahead.
        assert_eq!(list.rendezvous_keys(now + window, window)[0], keys[1]);
        // Within a window it stays.
        assert_eq!(list.rendezvous_keys(now - now % window, window), keys);
        // Nothing a stranger could know maps to it: not the id, not the discovery key, not
        // the public topic of the same name, not another list of the same name.
        let public = Topic::from_name("groceries");
        for key in &keys {
            assert_ne!(*key, list.id().0);
            assert_ne!(*key, list.discovery_key().0);
            assert_ne!(*key, public.rendezvous_key(0));
            assert!(!same_name.rendezvous_keys(now, window).contains(key));
        }
        // The same list opened from a member's (replicate-only) capability meets under the
        // same keys.
        let member =
            Topic::private("groceries".into(), Capability::Replicate(Capability::Root([1; 32]).replicate()), owner);
        assert_eq!(member.rendezvous_keys(now, window), keys);
    }

    #[test]
    fn a_public_topic_has_one_rendezvous_key() {
        let topic = Topic::from_name("todo");
        let keys = topic.rendezvous_keys(1_800_000_000, RENDEZVOUS_WINDOW_SECS);
        assert_eq!(keys, topic.rendezvous_keys(0, 60));
        assert_eq!(keys.len(), 1);
        assert_ne!(keys[0], topic.discovery_key().0);
    }
}
