//! Shared names. Field names, update paths and collection names repeat in every document
//! and operation; decoding gives each distinct name one shared allocation, so documents
//! hold pointers into a few hot cache lines instead of thousands of copies, and decoding
//! an operation allocates only for what is new in it.
//!
//! Lookups of a shared name in a document compare pointers before content, so the hot
//! paths (applying updates, maintaining indexes) do no string comparisons at all.
//!
//! The table is process-wide and bounded (a peer sending endless new names only stops them
//! being shared; nothing grows without limit). Sharing never changes a value: names still
//! compare by content.

use std::cell::RefCell;
use std::sync::{Arc, LazyLock, Mutex};

use rustc_hash::FxHashSet;
use serde::{Deserialize, Deserializer};

/// Names held at most.
const MAX_NAMES: usize = 4096;
/// Longer names are never shared.
const MAX_NAME_BYTES: usize = 64;

/// Names shared from the start, so a flood of junk names can never keep these unshared.
const WELL_KNOWN: [&str; 7] = ["_id", "todos", "text", "done", "created", "updated", "author"];

static NAMES: LazyLock<Mutex<FxHashSet<Arc<str>>>> =
    LazyLock::new(|| Mutex::new(WELL_KNOWN.iter().map(|&known| Arc::from(known)).collect()));

/// The well-known names' shared copies, found without hashing.
static KNOWN: LazyLock<Vec<Arc<str>>> = LazyLock::new(|| WELL_KNOWN.iter().map(|known| global(known).0).collect());

thread_local! {
    /// Each thread's copy of the names it met, so the common case takes no lock. It holds
    /// the process-wide allocations, so pointers compare equal across threads.
    static SEEN: RefCell<FxHashSet<Arc<str>>> = RefCell::new(FxHashSet::default());
}

/// The shared copy of a name.
pub fn name(text: &str) -> Arc<str> {
    if text.len() > MAX_NAME_BYTES {
        return text.into();
    }
    let known = match text {
        "_id" => 0,
        "todos" => 1,
        "text" => 2,
        "done" => 3,
        "created" => 4,
        "updated" => 5,
        "author" => 6,
        _ => usize::MAX,
    };
    if let Some(shared) = KNOWN.get(known) {
        return shared.clone();
    }
    let seen = SEEN.with(|seen| seen.borrow().get(text).cloned());
    if let Some(shared) = seen {
        return shared;
    }
    let (shared, held) = global(text);
    if held {
        SEEN.with(|seen| seen.borrow_mut().insert(shared.clone()));
    }
    shared
}

/// The process-wide copy, and whether the table holds it (it is full otherwise).
fn global(text: &str) -> (Arc<str>, bool) {
    // A poisoned lock only means another thread panicked mid-insert; the set is still valid.
    let mut names = NAMES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(shared) = names.get(text) {
        return (shared.clone(), true);
    }
    let shared: Arc<str> = text.into();
    let held = names.len() < MAX_NAMES;
    if held {
        names.insert(shared.clone());
    }
    (shared, held)
}

/// A name decoded into its shared copy.
pub(crate) struct Name(pub(crate) Arc<str>);

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = Name;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a name")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Name, E> {
                Ok(Name(name(text)))
            }
        }
        deserializer.deserialize_str(Visit)
    }
}

/// serde `deserialize_with` for a shared name.
pub(crate) fn shared_name<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Arc<str>, D::Error> {
    Name::deserialize(deserializer).map(|n| n.0)
}

/// serde `deserialize_with` for a list of (shared name, value) pairs.
pub(crate) fn shared_name_pairs<'de, D: Deserializer<'de>, V: Deserialize<'de>>(
    deserializer: D,
) -> Result<Vec<(Arc<str>, V)>, D::Error> {
    let pairs: Vec<(Name, V)> = Vec::deserialize(deserializer)?;
    Ok(pairs.into_iter().map(|(n, v)| (n.0, v)).collect())
}

/// serde `deserialize_with` for a list of shared names.
pub(crate) fn shared_names<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Arc<str>>, D::Error> {
    let names: Vec<Name> = Vec::deserialize(deserializer)?;
    Ok(names.into_iter().map(|n| n.0).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held() -> usize {
        NAMES.lock().map(|names| names.len()).unwrap_or(0)
    }

    #[test]
    fn equal_names_share_one_allocation_and_the_table_stays_bounded() {
        for n in 0..MAX_NAMES + 10 {
            name(&format!("junk-{n}"));
        }
        assert!(held() <= MAX_NAMES);
        for known in WELL_KNOWN {
            assert!(Arc::ptr_eq(&name(known), &name(&String::from(known))), "{known}");
        }
        let long = "x".repeat(MAX_NAME_BYTES + 1);
        assert!(!Arc::ptr_eq(&name(&long), &name(&long)));
        assert_eq!(&*name(&long), long.as_str());
    }
}
