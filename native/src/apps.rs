//! `hellopears stage`: the app (the web bundle the tabs and the window run) recorded as
//! versions in a signed append-only log of its own (see `hellopears_core::app`), in the data
//! dir:
//!
//! ```text
//! apps/channels/<channel>.key     the app key's secret (32 bytes), one key per channel
//! apps/<app key>/<seq>.entry      the log: version seq+1, signed by the app key
//! apps/blobs/<sha2-256>           the files, content-addressed (each stored once)
//! ```
//!
//! Every write goes to a temporary file first and is renamed into place, so a crash leaves
//! either the old state or the new one.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use hellopears_core::app::{self, Diff, FileRecord, Manifest};
use hellopears_core::keys::{Hash, Keypair, WriterId};
use hellopears_core::log::Entry;

/// The channel when none is named.
pub const DEFAULT_CHANNEL: &str = "main";

/// The apps of a data dir.
pub struct AppStore {
    root: PathBuf,
}

/// A channel name: letters, digits, `.`, `_` and `-`, 1 to 64 of them.
pub fn check_channel(name: &str) -> anyhow::Result<()> {
    let ok = (1..=64).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !name.starts_with('.');
    if !ok {
        bail!("{name:?} is not a channel name (letters, digits, '.', '_' and '-', at most 64)");
    }
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file and a rename.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

impl AppStore {
    /// The apps of the data dir `data` (created on first use).
    pub fn open(data: &Path) -> anyhow::Result<Self> {
        let root = data.join("apps");
        for dir in [root.join("channels"), root.join("blobs")] {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        Ok(Self { root })
    }

    /// The key of `channel`, made when `create` and there is none yet.
    fn channel_key(&self, channel: &str, create: bool) -> anyhow::Result<Option<Keypair>> {
        check_channel(channel)?;
        let path = self.root.join("channels").join(format!("{channel}.key"));
        match std::fs::read(&path) {
            Ok(secret) => Ok(Some(
                Keypair::from_secret_slice(&secret).map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))?,
            )),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound && create => {
                let mut secret = [0u8; 32];
                getrandom::fill(&mut secret).map_err(|error| anyhow::anyhow!("no randomness: {error}"))?;
                write_atomically(&path, &secret)?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
                Ok(Some(Keypair::from_secret(secret)))
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error).with_context(|| format!("reading {}", path.display())),
        }
    }

    fn log_dir(&self, app: &WriterId) -> PathBuf {
        self.root.join(app.to_hex())
    }

    /// The versions of `app` stored here, oldest first, each checked against the one before
    /// (signature, chain, manifest).
    pub fn versions(&self, app: &WriterId) -> anyhow::Result<Vec<(Entry, Manifest)>> {
        let dir = self.log_dir(app);
        let mut versions: Vec<(Entry, Manifest)> = Vec::new();
        for seq in 0u64.. {
            let path = dir.join(format!("{seq}.entry"));
            let bytes = match std::fs::read(&path) {
                Ok(bytes) => bytes,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => break,
                Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
            };
            let entry = Entry::decode(&bytes).map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))?;
            let manifest = app::check_version(app, &entry, versions.last().map(|(entry, _)| entry))
                .map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))?;
            versions.push((entry, manifest));
        }
        Ok(versions)
    }

    fn blob_path(&self, hash: &Hash) -> PathBuf {
        self.root.join("blobs").join(hash.to_hex())
    }

    /// A file's content, as stored (not checked: a fetcher checks what it gets).
    pub fn blob(&self, hash: &Hash) -> Option<Vec<u8>> {
        std::fs::read(self.blob_path(hash)).ok()
    }

    /// Whether a file's content is here.
    pub fn has_blob(&self, hash: &Hash) -> bool {
        self.blob_path(hash).is_file()
    }

    /// The app key of `channel`, if it was ever staged here.
    pub fn channel_app(&self, channel: &str) -> anyhow::Result<Option<WriterId>> {
        Ok(self.channel_key(channel, false)?.map(|key| key.id()))
    }

    /// Writes version `manifest` of `app` out as a directory of files (each checked against
    /// the manifest again), for serving; its path. Done once per version.
    pub fn materialize(&self, app: &WriterId, manifest: &Manifest) -> anyhow::Result<PathBuf> {
        let dir = self.log_dir(app).join(format!("v{}", manifest.version));
        if dir.join(".complete").is_file() {
            return Ok(dir);
        }
        for file in &manifest.files {
            let bytes = self.blob(&file.hash).with_context(|| format!("{} is missing", file.path))?;
            if Hash::digest(&bytes) != file.hash {
                bail!("{}: the stored copy does not match the manifest", file.path);
            }
            let path = dir.join(&file.path);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            write_atomically(&path, &bytes)?;
        }
        write_atomically(&dir.join(".complete"), b"")?;
        Ok(dir)
    }

    /// Stores a file's content under its hash (once).
    pub fn put_blob(&self, hash: &Hash, bytes: &[u8]) -> anyhow::Result<()> {
        let path = self.blob_path(hash);
        if !path.exists() {
            write_atomically(&path, bytes)?;
        }
        Ok(())
    }

    /// Appends a version to `app`'s log.
    pub fn append(&self, app: &WriterId, entry: &Entry) -> anyhow::Result<()> {
        let dir = self.log_dir(app);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        write_atomically(&dir.join(format!("{}.entry", entry.seq())), entry.bytes())
    }
}

/// The newest version of `app` stored whole in the data dir `data`, written out for serving:
/// its number and directory.
pub fn cached_version(data: &Path, app: &WriterId) -> anyhow::Result<Option<(u64, PathBuf)>> {
    let store = AppStore::open(data)?;
    let versions = store.versions(app)?;
    let Some((_, manifest)) = versions.last() else { return Ok(None) };
    if !manifest.files.iter().all(|file| store.has_blob(&file.hash)) {
        return Ok(None);
    }
    Ok(Some((manifest.version, store.materialize(app, manifest)?)))
}

/// What `app info` says of the data dir's copy of `app`.
pub fn info_text(data: &Path, app: &WriterId) -> anyhow::Result<String> {
    let store = AppStore::open(data)?;
    let versions = store.versions(app)?;
    let Some((_, latest)) = versions.last() else {
        return Ok("versions here: none\n".into());
    };
    let here = latest.files.iter().filter(|file| store.has_blob(&file.hash)).count();
    let state = if here == latest.files.len() { "complete".to_owned() } else { format!("{here} of the files here") };
    Ok(format!(
        "versions here: 1 to {}\nversion {}: {} files, {} bytes ({state})\n",
        latest.version,
        latest.version,
        latest.files.len(),
        grouped(latest.total_size())
    ))
}

/// What `stage` did.
pub struct Staged {
    /// The channel.
    pub channel: String,
    /// The app key.
    pub app: WriterId,
    /// The version now current.
    pub version: u64,
    /// What changed; `None` when nothing did (nothing was recorded).
    pub diff: Option<Diff>,
    /// Files and bytes of the current version.
    pub files: usize,
    /// Total size of the current version.
    pub size: u64,
}

/// The regular files under `dir`, as (relative `/` path, absolute path), sorted.
fn files_of(dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        for item in std::fs::read_dir(&at).with_context(|| format!("reading {}", at.display()))? {
            let item = item?;
            let path = item.path();
            let kind = item.file_type()?;
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file() {
                let relative = path.strip_prefix(dir).unwrap_or(&path);
                let Some(text) = relative.to_str() else {
                    bail!("{}: not a UTF-8 file name", path.display());
                };
                out.push((text.replace(std::path::MAIN_SEPARATOR, "/"), path));
            }
        }
    }
    out.sort();
    if out.len() > app::MAX_APP_FILES {
        bail!("{}: {} files, at most {} in an app", dir.display(), out.len(), app::MAX_APP_FILES);
    }
    Ok(out)
}

/// Records the content of `dir` as the next version of `channel`'s app (like `pear stage`);
/// nothing when it equals the current version.
pub fn stage(data: &Path, channel: &str, dir: &Path) -> anyhow::Result<Staged> {
    if !dir.is_dir() {
        bail!("{}: no such directory", dir.display());
    }
    let store = AppStore::open(data)?;
    let key = store.channel_key(channel, true)?.context("no key for the channel")?;
    let app = key.id();
    let versions = store.versions(&app)?;
    let previous = versions.last();
    let mut files = Vec::new();
    let mut contents = Vec::new();
    for (path, absolute) in files_of(dir)? {
        let bytes = std::fs::read(&absolute).with_context(|| format!("reading {}", absolute.display()))?;
        let hash = Hash::digest(&bytes);
        files.push(FileRecord { path, size: bytes.len() as u64, hash });
        contents.push((hash, bytes));
    }
    let version = previous.map_or(1, |(_, manifest)| manifest.version + 1);
    let manifest = Manifest::new(version, files).map_err(|error| anyhow::anyhow!("{}: {error}", dir.display()))?;
    if let Some((_, current)) = previous
        && current.same_files(&manifest)
    {
        return Ok(Staged {
            channel: channel.to_owned(),
            app,
            version: current.version,
            diff: None,
            files: current.files.len(),
            size: current.total_size(),
        });
    }
    // The files first: a version is recorded only once everything it names is stored.
    for (hash, bytes) in &contents {
        store.put_blob(hash, bytes)?;
    }
    let entry = app::version_entry(&key, previous.map(|(entry, _)| entry), &manifest);
    store.append(&app, &entry)?;
    let diff = app::diff(previous.map(|(_, manifest)| manifest), &manifest);
    Ok(Staged {
        channel: channel.to_owned(),
        app,
        version,
        diff: Some(diff),
        files: manifest.files.len(),
        size: manifest.total_size(),
    })
}

/// `1234567` as `1,234,567`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// What `stage` prints.
pub fn staged_text(staged: &Staged) -> String {
    let app = staged.app.to_hex();
    let Some(diff) = &staged.diff else {
        return format!(
            "nothing to stage: {} is at version {}, unchanged\napp key {app}\n",
            staged.channel, staged.version
        );
    };
    let mut out = format!("staged {} version {}\napp key {app}\n", staged.channel, staged.version);
    for (mark, files) in [("+", &diff.added), ("~", &diff.changed), ("-", &diff.removed)] {
        for file in files {
            out += &format!("{mark} {} ({} bytes)\n", file.path, grouped(file.size));
        }
    }
    out += &format!(
        "{} added, {} changed, {} removed; {} files, {} bytes\n",
        diff.added.len(),
        diff.changed.len(),
        diff.removed.len(),
        staged.files,
        grouped(staged.size)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1_000), "1,000");
        assert_eq!(grouped(2_542_947), "2,542,947");
    }

    #[test]
    fn channel_names_are_plain() {
        assert!(check_channel("main").is_ok());
        assert!(check_channel("beta-2.1_x").is_ok());
        for bad in ["", "../x", "a/b", ".hidden", &"x".repeat(65)] {
            assert!(check_channel(bad).is_err(), "{bad:?}");
        }
    }

    /// A tampered entry in the data dir is refused when the versions are read.
    #[test]
    fn a_tampered_version_is_refused() {
        let data = tempfile::tempdir().expect("tempdir");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("index.html"), "<html>").expect("write");
        let staged = stage(data.path(), "main", dir.path()).expect("stage");
        let entry = data.path().join("apps").join(staged.app.to_hex()).join("0.entry");
        let mut bytes = std::fs::read(&entry).expect("entry");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&entry, bytes).expect("tamper");
        let store = AppStore::open(data.path()).expect("store");
        assert!(store.versions(&staged.app).is_err());
    }
}
