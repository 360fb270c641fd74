//! Apps distributed peer to peer (`hellopears stage`): an app, the web bundle the tabs and
//! the window run, is a signed append-only log of versions. Each version is one entry of
//! the app key's log whose payload is a [`Manifest`]: the paths, sizes and content hashes
//! of its files. The files themselves are content-addressed blobs, stored and fetched by
//! hash, and checked against the manifest before anything serves them.

use serde::{Deserialize, Serialize};

use crate::keys::{Hash, Keypair, WriterId};
use crate::log::{Entry, EntryBody};

/// Files in one version, at most.
pub const MAX_APP_FILES: usize = 512;
/// One file's size, at most.
pub const MAX_APP_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// A path's length, at most.
pub const MAX_APP_PATH: usize = 256;

/// What can be wrong with a version.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AppError {
    /// The manifest does not decode.
    #[error("malformed manifest: {0}")]
    Malformed(String),
    /// A path that could escape the app's directory, or is not a plain relative path.
    #[error("bad path in the manifest: {0:?}")]
    BadPath(String),
    /// Paths not sorted, or repeated.
    #[error("manifest paths are not sorted and unique")]
    Unsorted,
    /// Too many files, or one too large.
    #[error("manifest over the limits ({0})")]
    TooLarge(&'static str),
    /// The entry is not signed by the app key.
    #[error("version not signed by the app key")]
    BadSignature,
    /// The version number does not match the entry's place in the log.
    #[error("version {version} at position {seq} of the log")]
    WrongVersion {
        /// The manifest's version.
        version: u64,
        /// The entry's position.
        seq: u64,
    },
    /// The entry does not extend the previous version.
    #[error("version does not follow the previous one")]
    Fork,
}

/// An app's id: the log's list id under which its entries are signed, derived from the
/// app key (so a version of one app can never pass for one of another).
pub fn app_id(key: &WriterId) -> [u8; 32] {
    Hash::digest_parts(&[b"hellopears/app", &key.0]).0
}

/// The key under which an app's seeders announce themselves in the DHT (`seed`) and under
/// which a peer that runs it looks them up: derived from the app key, which is public.
pub fn rendezvous(key: &WriterId) -> [u8; 32] {
    Hash::digest_parts(&[b"hellopears/app-rendezvous/v1", &key.0]).0
}

/// One file of a version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Relative path, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// sha2-256 of the content.
    pub hash: Hash,
}

/// One version of an app: its number (from 1) and its files, sorted by path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The version number: the entry's position in the log, plus one.
    pub version: u64,
    /// The files, sorted by path, each path once.
    pub files: Vec<FileRecord>,
}

/// Whether `path` is a plain relative path: no empty, `.` or `..` component, no leading
/// `/`, no backslash or control character.
pub fn is_safe_path(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= MAX_APP_PATH
        && !path.starts_with('/')
        && !path.chars().any(|c| c == '\\' || c.is_control())
        && path.split('/').all(|part| !part.is_empty() && part != "." && part != "..")
}

impl Manifest {
    /// A manifest of `files` (sorted here), checked.
    pub fn new(version: u64, mut files: Vec<FileRecord>) -> Result<Self, AppError> {
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let manifest = Self { version, files };
        manifest.check()?;
        Ok(manifest)
    }

    /// The bytes stored in the log.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes and checks a manifest.
    pub fn decode(bytes: &[u8]) -> Result<Self, AppError> {
        let manifest: Self = postcard::from_bytes(bytes).map_err(|error| AppError::Malformed(error.to_string()))?;
        manifest.check()?;
        Ok(manifest)
    }

    fn check(&self) -> Result<(), AppError> {
        if self.files.len() > MAX_APP_FILES {
            return Err(AppError::TooLarge("files"));
        }
        if let Some(file) = self.files.iter().find(|file| !is_safe_path(&file.path)) {
            return Err(AppError::BadPath(file.path.clone()));
        }
        if self.files.iter().any(|file| file.size > MAX_APP_FILE_BYTES) {
            return Err(AppError::TooLarge("file size"));
        }
        if self.files.windows(2).any(|pair| pair[0].path >= pair[1].path) {
            return Err(AppError::Unsorted);
        }
        Ok(())
    }

    /// Whether both list exactly the same files (version numbers aside).
    pub fn same_files(&self, other: &Manifest) -> bool {
        self.files == other.files
    }

    /// All the files' sizes.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|file| file.size).sum()
    }

    /// The file at `path`.
    pub fn file(&self, path: &str) -> Option<&FileRecord> {
        self.files.binary_search_by(|file| file.path.as_str().cmp(path)).ok().map(|at| &self.files[at])
    }
}

/// What a version changes against the previous one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// Files that were not there.
    pub added: Vec<FileRecord>,
    /// Files whose content changed.
    pub changed: Vec<FileRecord>,
    /// Files that are gone.
    pub removed: Vec<FileRecord>,
}

impl Diff {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

/// The changes from `old` (none: the first version) to `new`.
pub fn diff(old: Option<&Manifest>, new: &Manifest) -> Diff {
    let mut out = Diff::default();
    for file in &new.files {
        match old.and_then(|old| old.file(&file.path)) {
            None => out.added.push(file.clone()),
            Some(before) if before.hash != file.hash || before.size != file.size => out.changed.push(file.clone()),
            Some(_) => {}
        }
    }
    if let Some(old) = old {
        out.removed = old.files.iter().filter(|file| new.file(&file.path).is_none()).cloned().collect();
    }
    out
}

/// The log entry recording `manifest` after `previous` (the last version's entry), signed
/// by the app key.
pub fn version_entry(key: &Keypair, previous: Option<&Entry>, manifest: &Manifest) -> Entry {
    let key = key.clone().bound_to(app_id(&key.id()));
    let body = EntryBody {
        writer: key.id(),
        seq: previous.map_or(0, |entry| entry.seq() + 1),
        prev: previous.map(Entry::hash),
        heads: Vec::new(),
        clock: previous.map_or(1, |entry| entry.clock() + 1),
        payload: manifest.encode(),
    };
    Entry::sign(body, &key)
}

/// Checks a version entry of the app `app` that must follow `previous`; its manifest.
pub fn check_version(app: &WriterId, entry: &Entry, previous: Option<&Entry>) -> Result<Manifest, AppError> {
    let key = app.verifying_key().map_err(|_| AppError::BadSignature)?;
    if entry.writer() != *app || !entry.verify(&key, &app_id(app)) {
        return Err(AppError::BadSignature);
    }
    let follows = match previous {
        None => entry.seq() == 0 && entry.body().prev.is_none(),
        Some(previous) => entry.follows(previous),
    };
    if !follows {
        return Err(AppError::Fork);
    }
    let manifest = Manifest::decode(&entry.body().payload)?;
    if manifest.version != entry.seq() + 1 {
        return Err(AppError::WrongVersion { version: manifest.version, seq: entry.seq() });
    }
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, content: &[u8]) -> FileRecord {
        FileRecord { path: path.into(), size: content.len() as u64, hash: Hash::digest(content) }
    }

    #[test]
    fn versions_chain_under_the_app_key_and_nothing_else_passes() {
        let key = Keypair::derive_for_tests(7, 0);
        let app = key.id();
        let one = Manifest::new(1, vec![file("index.html", b"<html>"), file("app.js", b"js")]).expect("v1");
        let first = version_entry(&key, None, &one);
        assert_eq!(check_version(&app, &first, None), Ok(one.clone()));
        let two = Manifest::new(2, vec![file("index.html", b"<html>2")]).expect("v2");
        let second = version_entry(&key, Some(&first), &two);
        assert_eq!(check_version(&app, &second, Some(&first)), Ok(two));
        // Another key's entry, or one that does not extend the previous version, is refused.
        let other = Keypair::derive_for_tests(7, 1);
        let forged = version_entry(&other, Some(&first), &one);
        assert_eq!(check_version(&app, &forged, Some(&first)), Err(AppError::BadSignature));
        assert_eq!(check_version(&app, &second, None), Err(AppError::Fork));
        // A version number that lies about its place in the log.
        let liar = version_entry(&key, Some(&first), &Manifest::new(5, vec![]).expect("v5"));
        assert!(matches!(check_version(&app, &liar, Some(&first)), Err(AppError::WrongVersion { .. })));
        // Decoded from bytes, as a seeder would send it.
        let decoded = Entry::decode(second.bytes()).expect("decodes");
        assert!(check_version(&app, &decoded, Some(&first)).is_ok());
    }

    #[test]
    fn a_manifest_refuses_paths_that_escape_and_unsorted_files() {
        for bad in ["../etc/passwd", "/abs", "a//b", "a/./b", "", "a\\b", "a/../b"] {
            assert_eq!(Manifest::new(1, vec![file(bad, b"x")]), Err(AppError::BadPath(bad.into())), "{bad}");
        }
        let twice = Manifest { version: 1, files: vec![file("a", b"1"), file("a", b"2")] };
        assert_eq!(Manifest::decode(&twice.encode()), Err(AppError::Unsorted));
        assert!(matches!(Manifest::decode(b"\xff\xff\xff"), Err(AppError::Malformed(_))));
    }

    #[test]
    fn the_diff_names_added_changed_and_removed_files() {
        let old = Manifest::new(1, vec![file("a.js", b"a"), file("b.css", b"b"), file("c.wasm", b"c")]).expect("old");
        let new = Manifest::new(2, vec![file("a.js", b"a"), file("b.css", b"B!"), file("d.png", b"d")]).expect("new");
        let changes = diff(Some(&old), &new);
        let paths = |files: &[FileRecord]| files.iter().map(|f| f.path.clone()).collect::<Vec<_>>();
        assert_eq!(paths(&changes.added), ["d.png"]);
        assert_eq!(paths(&changes.changed), ["b.css"]);
        assert_eq!(paths(&changes.removed), ["c.wasm"]);
        assert!(diff(Some(&old), &old).is_empty());
        assert_eq!(diff(None, &old).added.len(), 3);
    }
}
