//! Shared names. Field names, update paths and collection names repeat in every document
//! and operation; each distinct name is stored once for the life of the process, so
//! documents hold pointers into a few hot cache lines instead of thousands of copies,
//! decoding an operation allocates only for what is new in it, and copying or dropping a
//! name is free (no reference count to touch).
//!
//! Lookups of a shared name in a document compare pointers before content, so the hot
//! paths (applying updates, maintaining indexes) do no string comparisons at all.
//!
//! The table is process-wide and bounded: at most 4,096 names of at most 64 bytes (256 KiB
//! at worst) are ever stored; beyond that, names are ordinary shared strings (a peer sending
//! endless new names only stops them being interned). Sharing never changes a value: names
//! still compare, order and hash by content.

use std::borrow::Borrow;
use std::cell::RefCell;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::{Arc, LazyLock, Mutex, OnceLock};

use rustc_hash::FxHashSet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Names held at most.
const MAX_NAMES: usize = 4096;
/// Longer names are never interned.
const MAX_NAME_BYTES: usize = 64;

/// The names an app hands in first ([`preload`]): always interned, so a flood of junk names
/// can never keep them out, and found through a tiny hash of their length and end bytes and
/// one comparison, with no lock and no hash-set lookup: they are in every operation.
#[derive(Debug)]
struct Preloaded {
    slots: [Option<&'static str>; SLOTS],
}

/// Slots of the preloaded table (a power of two).
const SLOTS: usize = 64;

static PRELOADED: OnceLock<Preloaded> = OnceLock::new();

static NAMES: LazyLock<Mutex<FxHashSet<&'static str>>> = LazyLock::new(|| Mutex::new(FxHashSet::default()));

/// The preloaded slot of a name (its length and first and last bytes).
fn slot(bytes: &[u8]) -> Option<usize> {
    let (&first, &last) = (bytes.first()?, bytes.last()?);
    Some(
        (bytes.len().wrapping_mul(31) ^ (first as usize).wrapping_mul(7) ^ (last as usize).wrapping_mul(13))
            & (SLOTS - 1),
    )
}

/// Names ever preloaded, at most (each at most [`MAX_NAME_BYTES`]).
const MAX_PRELOADS: usize = 256;

/// Interns an app's well-known names (the field and collection names of its documents) for
/// the life of the process, even when the table is full of other names (at most 256 such
/// names in all). The first call's names also take the fast path, where their slots are free.
pub fn preload(texts: &[&str]) {
    static PRELOADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let mut table = Preloaded { slots: [None; SLOTS] };
    {
        let mut names = NAMES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for text in texts.iter().filter(|text| text.len() <= MAX_NAME_BYTES) {
            let interned = match names.get(*text) {
                Some(interned) => *interned,
                None if PRELOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < MAX_PRELOADS => {
                    let interned: &'static str = Box::leak((*text).to_owned().into_boxed_str());
                    names.insert(interned);
                    interned
                }
                None => continue,
            };
            if let Some(index) = slot(text.as_bytes())
                && table.slots[index].is_none()
            {
                table.slots[index] = Some(interned);
            }
        }
    }
    let _ = PRELOADED.set(table);
}

#[inline]
fn preloaded(text: &str) -> Option<&'static str> {
    let known = PRELOADED.get()?.slots[slot(text.as_bytes())?]?;
    (known == text).then_some(known)
}

thread_local! {
    /// Each thread's copy of the names it met, so the common case takes no lock. It holds
    /// the process-wide strings, so pointers compare equal across threads.
    static SEEN: RefCell<FxHashSet<&'static str>> = RefCell::new(FxHashSet::default());
}

/// A field name, path or collection name: interned (a pointer to the one stored copy) or,
/// past the table's bounds, a shared string.
#[derive(Clone)]
pub struct Name(Repr);

#[derive(Clone)]
enum Repr {
    Interned(&'static str),
    Shared(Arc<str>),
}

/// The interned copy of a name (see the module docs).
#[inline]
pub fn name(text: &str) -> Name {
    match preloaded(text) {
        Some(known) => Name(Repr::Interned(known)),
        None => name_slow(text),
    }
}

/// [`name`] for names the app did not preload.
#[inline(never)]
fn name_slow(text: &str) -> Name {
    if text.len() > MAX_NAME_BYTES {
        return Name(Repr::Shared(text.into()));
    }
    if let Some(seen) = SEEN.with(|seen| seen.borrow().get(text).copied()) {
        return Name(Repr::Interned(seen));
    }
    match global(text) {
        Some(interned) => {
            SEEN.with(|seen| seen.borrow_mut().insert(interned));
            Name(Repr::Interned(interned))
        }
        None => Name(Repr::Shared(text.into())),
    }
}

/// The process-wide copy, stored on first use while the table has room.
fn global(text: &str) -> Option<&'static str> {
    // A poisoned lock only means another thread panicked mid-insert; the set is still valid.
    let mut names = NAMES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(interned) = names.get(text) {
        return Some(interned);
    }
    if names.len() >= MAX_NAMES {
        return None;
    }
    // Bounded by MAX_NAMES * MAX_NAME_BYTES for the life of the process.
    let interned: &'static str = Box::leak(text.to_owned().into_boxed_str());
    names.insert(interned);
    Some(interned)
}

impl Name {
    /// The text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Interned(text) => text,
            Repr::Shared(text) => text,
        }
    }

    /// Whether both are the same interned name (a pointer comparison; false does not mean
    /// the texts differ).
    pub fn same(&self, other: &Name) -> bool {
        match (&self.0, &other.0) {
            (Repr::Interned(a), Repr::Interned(b)) => std::ptr::eq(*a, *b),
            _ => false,
        }
    }
}

impl Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Self) -> bool {
        self.same(other) || self.as_str() == other.as_str()
    }
}
impl Eq for Name {}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Name {
    fn cmp(&self, other: &Self) -> Ordering {
        if self.same(other) { Ordering::Equal } else { self.as_str().cmp(other.as_str()) }
    }
}

impl Hash for Name {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for Name {
    fn from(text: &str) -> Self {
        name(text)
    }
}

impl From<String> for Name {
    fn from(text: String) -> Self {
        name(&text)
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = Name;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a name")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Name, E> {
                Ok(name(text))
            }
        }
        deserializer.deserialize_str(Visit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held() -> usize {
        NAMES.lock().map(|names| names.len()).unwrap_or(0)
    }

    #[test]
    fn equal_names_share_one_allocation_and_the_table_stays_bounded() {
        let app = ["_id", "items", "title"];
        preload(&app);
        for n in 0..MAX_NAMES + 10 {
            name(&format!("junk-{n}"));
        }
        assert!(held() <= MAX_NAMES + MAX_PRELOADS);
        preload(&["late"]);
        for known in app.into_iter().chain(["late"]) {
            assert!(name(known).same(&name(&String::from(known))), "{known}");
        }
        let long = "x".repeat(MAX_NAME_BYTES + 1);
        assert!(!name(&long).same(&name(&long)));
        assert_eq!(name(&long), name(&long));
        assert_eq!(&*name(&long), long.as_str());
    }
}
