//! The desktop peer's storage: the core's `Storage` trait on sled, in a data dir that is
//! marked as ours, one set of trees per topic.

use std::path::{Path, PathBuf};

use hellopears_core::WriterId;
use hellopears_core::access::Capability;
use hellopears_core::storage::{LoadedState, Storage, WriteBatch};
use hellopears_core::topic::Topic;
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

/// The file that marks a directory as a HelloPears data dir, with its format version.
const MARKER: &str = "HELLOPEARS";
const MARKER_CONTENT: &str = "hellopears data dir, format 1\n";
/// sled's page cache: small, since the replica keeps its working set in memory anyway
/// (4 MiB: 16 MiB cost the window about 5 MB more resident memory with 10,000 todos).
const CACHE_BYTES: u64 = 4 * 1024 * 1024;

/// Why the store cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the store.
    #[error("data dir {0} is in use by another hellopears process")]
    Locked(PathBuf),
    /// The directory holds something else.
    #[error("{0} is not a hellopears data dir (it has other files and no {MARKER} marker); choose another with --data")]
    Foreign(PathBuf),
    /// The directory cannot be created or read.
    #[error("cannot use data dir {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// sled refused to open the store.
    #[error("cannot open the store in {path}: {source}")]
    Open {
        /// The store directory.
        path: PathBuf,
        /// sled's error.
        source: sled::Error,
    },
    /// A read or write failed.
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    /// A stored key has the wrong shape.
    #[error("corrupt store: {0}")]
    Corrupt(String),
}

/// One topic's trees in a sled database.
#[derive(Debug, Clone)]
pub struct SledStorage {
    db: sled::Db,
    entries: sled::Tree,
    forks: sled::Tree,
    meta: sled::Tree,
    /// A file outside sled counting the entries written, so that a log sled silently cut
    /// short after damage is noticed instead of losing data quietly.
    check: PathBuf,
    written: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// The count file, open: rewritten in place after the entries are durable (fixed width,
    /// no sync, no rename), so it costs a batch nothing on disk. A torn record (power lost
    /// mid-write) only disables the check once, like a missing one.
    count_file: std::sync::Arc<std::fs::File>,
    /// sled's log file: sled "flushes" with `sync_file_range`, which leaves the disk cache
    /// and file metadata unsynced; each flush is followed by an fsync of this file.
    log_file: std::sync::Arc<std::fs::File>,
}

/// A data dir's sled database: every list's trees, and the registry of lists.
#[derive(Debug, Clone)]
pub struct SledDb {
    db: sled::Db,
    dir: PathBuf,
    lists: sled::Tree,
    settings: sled::Tree,
    log_file: std::sync::Arc<std::fs::File>,
}

/// How a list is kept in the registry of a data dir.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StoredAccess {
    /// An open topic, by name.
    Public,
    /// A private list: what this device holds of it, and who created it.
    Private {
        /// The capability.
        capability: Capability,
        /// The creating device.
        owner: WriterId,
    },
}

/// One list of a data dir.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ListRecord {
    /// Its display name.
    pub name: String,
    /// Public or private.
    pub access: StoredAccess,
    /// The invite this device joins with, until it is admitted.
    pub joining: Option<[u8; 32]>,
    /// Addresses of peers holding the list (from its invite link), dialed at every start.
    pub peers: Vec<String>,
}

impl ListRecord {
    /// A public topic's record.
    pub fn public(name: &str) -> Self {
        Self { name: name.to_owned(), access: StoredAccess::Public, joining: None, peers: Vec::new() }
    }

    /// The topic this record describes.
    pub fn topic(&self) -> Topic {
        match &self.access {
            StoredAccess::Public => Topic::from_name(&self.name),
            StoredAccess::Private { capability, owner } => {
                Topic::private(self.name.clone(), capability.clone(), *owner)
            }
        }
    }
}

const DEVICE_NAME: &str = "device-name";

impl SledDb {
    /// Opens (creating if needed) the database of data dir `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        prepare_dir(dir)?;
        let path = dir.join("store");
        let db = sled::Config::new().path(&path).cache_capacity(CACHE_BYTES).open().map_err(|source| {
            match &source {
                // sled wraps the flock failure in an error of kind Other.
                sled::Error::Io(io)
                    if io.kind() == std::io::ErrorKind::WouldBlock
                        || io.to_string().contains("could not acquire lock") =>
                {
                    StoreError::Locked(dir.into())
                }
                _ => StoreError::Open { path: path.clone(), source },
            }
        })?;
        let io = |source| StoreError::Dir { path: path.clone(), source };
        let log_file = std::fs::File::open(path.join("db")).map_err(io)?;
        sync_dir(&path).map_err(io)?;
        sync_dir(dir).map_err(io)?;
        Ok(Self {
            lists: db.open_tree("lists")?,
            settings: db.open_tree("settings")?,
            db,
            dir: dir.into(),
            log_file: std::sync::Arc::new(log_file),
        })
    }

    /// Opens the database like [`SledDb::open`], waiting up to `patience` while another
    /// process holds it (a command that holds the store for milliseconds must not make a
    /// peer that is starting fail).
    pub fn open_waiting(dir: &Path, patience: std::time::Duration) -> Result<Self, StoreError> {
        let deadline = std::time::Instant::now() + patience;
        loop {
            match Self::open(dir) {
                Err(StoreError::Locked(_)) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(25));
                }
                other => return other,
            }
        }
    }

    /// The store of one list.
    pub fn list(&self, topic: &Topic) -> Result<SledStorage, StoreError> {
        let prefix = topic.id().to_string();
        let tree = |name: &str| self.db.open_tree(format!("{prefix}/{name}"));
        let check = self.dir.join(format!("entries-{}.count", &prefix[..16]));
        let written = match std::fs::read_to_string(&check) {
            Ok(text) => text.trim().parse().unwrap_or_else(|_| {
                // The count is a check, not data: a torn count file (power loss before this
                // file was synced, by older versions) disables the check once.
                tracing::warn!(file = %check.display(), "entry count unreadable; not checking the log length");
                0
            }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => 0,
            Err(source) => return Err(StoreError::Dir { path: check, source }),
        };
        let io = |source| StoreError::Dir { path: check.clone(), source };
        // Created whole (and made durable) once, with a record of the fixed width.
        write_private(&check, count_record(written).as_bytes()).map_err(io)?;
        let count_file = std::fs::OpenOptions::new().write(true).open(&check).map_err(io)?;
        Ok(SledStorage {
            count_file: std::sync::Arc::new(count_file),
            log_file: self.log_file.clone(),
            entries: tree("entries")?,
            forks: tree("forks")?,
            meta: tree("meta")?,
            db: self.db.clone(),
            check,
            written: std::sync::Arc::new(std::sync::atomic::AtomicU64::new(written)),
        })
    }

    /// Every list of the data dir, by id, in the order of their ids.
    pub fn lists(&self) -> Result<Vec<ListRecord>, StoreError> {
        let mut lists = Vec::new();
        for item in self.lists.iter() {
            let (key, value) = item?;
            let record: ListRecord = postcard::from_bytes(&value)
                .map_err(|e| StoreError::Corrupt(format!("list {}: {e}", String::from_utf8_lossy(&key))))?;
            lists.push(record);
        }
        Ok(lists)
    }

    /// Adds or replaces a list in the registry, durably.
    pub fn put_list(&self, record: &ListRecord) -> Result<(), StoreError> {
        let key = record.topic().id().to_string();
        let value = postcard::to_allocvec(record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.lists.insert(key.as_bytes(), value)?;
        self.flush()
    }

    /// This device's display name, if set.
    pub fn device_name(&self) -> Result<Option<String>, StoreError> {
        Ok(self.settings.get(DEVICE_NAME)?.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Sets this device's display name, durably.
    pub fn set_device_name(&self, name: &str) -> Result<(), StoreError> {
        self.settings.insert(DEVICE_NAME, name.as_bytes())?;
        self.flush()
    }

    /// Makes everything written so far durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        self.log_file.sync_all().map_err(|source| StoreError::Dir { path: self.dir.clone(), source })?;
        Ok(())
    }
}

impl SledStorage {
    /// Opens (creating if needed) the store of `topic` in data dir `dir`.
    #[cfg(test)]
    pub fn open(dir: &Path, topic: &Topic) -> Result<Self, StoreError> {
        SledDb::open(dir)?.list(topic)
    }

    /// Opens the store like [`SledStorage::open`], waiting up to `patience` while another
    /// process holds it.
    #[cfg(test)]
    pub fn open_waiting(dir: &Path, topic: &Topic, patience: std::time::Duration) -> Result<Self, StoreError> {
        SledDb::open_waiting(dir, patience)?.list(topic)
    }

    /// Makes everything written so far durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        self.log_file.sync_all().map_err(|source| StoreError::Dir { path: self.check.clone(), source })?;
        Ok(())
    }
}

/// The count file's one record: always the same length, so it is rewritten in place.
fn count_record(total: u64) -> String {
    format!("{total:020}\n")
}

/// Makes a directory's entries (files created or renamed in it) durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Writes a file whole or not at all, readable by this user only: a temporary file, fsync,
/// rename over the old one, fsync of the directory. A crash leaves the old file or the new.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => sync_dir(dir),
        _ => Ok(()),
    }
}

/// Creates a data dir, or checks that an existing one is ours.
pub(crate) fn prepare_dir(dir: &Path) -> Result<(), StoreError> {
    let io = |source| StoreError::Dir { path: dir.into(), source };
    std::fs::create_dir_all(dir).map_err(io)?;
    let marker = dir.join(MARKER);
    if marker.exists() {
        return Ok(());
    }
    let mut listing = std::fs::read_dir(dir).map_err(io)?;
    if listing.next().is_some() {
        return Err(StoreError::Foreign(dir.into()));
    }
    // A new data dir holds secrets (writer keys, the node key): this user's only.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    write_private(&marker, MARKER_CONTENT.as_bytes()).map_err(io)
}

fn entry_key(writer: &WriterId, seq: u64) -> [u8; 40] {
    let mut key = [0u8; 40];
    key[..32].copy_from_slice(&writer.0);
    key[32..].copy_from_slice(&seq.to_be_bytes());
    key
}

impl Storage for SledStorage {
    type Error = StoreError;

    async fn load(&self) -> Result<LoadedState, StoreError> {
        let mut state = LoadedState::default();
        for item in self.entries.iter() {
            let (key, value) = item?;
            if key.len() != 40 {
                return Err(StoreError::Corrupt(format!("entry key of {} bytes", key.len())));
            }
            state.entries.push(value.to_vec());
        }
        let written = self.written.load(std::sync::atomic::Ordering::SeqCst);
        if (state.entries.len() as u64) < written {
            return Err(StoreError::Corrupt(format!(
                "the store holds {} entries but {written} were written: its log is damaged; \
                 the data dir is left as it is",
                state.entries.len()
            )));
        }
        for item in self.forks.iter() {
            state.forks.push(item?.1.to_vec());
        }
        for item in self.meta.iter() {
            let (key, value) = item?;
            let name = String::from_utf8(key.to_vec()).map_err(|_| StoreError::Corrupt("meta key not UTF-8".into()))?;
            state.meta.insert(name, value.to_vec());
        }
        Ok(state)
    }

    async fn write(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let added = std::cell::Cell::new(0u64);
        let result: Result<(), TransactionError<()>> =
            (&self.entries, &self.forks, &self.meta).transaction(|(entries, forks, meta)| {
                added.set(0);
                for (writer, seq, bytes) in &batch.entries {
                    if entries.insert(&entry_key(writer, *seq)[..], &bytes[..])?.is_none() {
                        added.set(added.get() + 1);
                    }
                }
                for (writer, bytes) in &batch.forks {
                    if forks.get(writer.0)?.is_none() {
                        forks.insert(&writer.0[..], &bytes[..])?;
                    }
                }
                for (name, value) in &batch.meta {
                    match value {
                        Some(value) => meta.insert(name.as_bytes(), &value[..])?,
                        None => meta.remove(name.as_bytes())?,
                    };
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            });
        match result {
            Ok(()) => {}
            Err(TransactionError::Storage(error)) => return Err(error.into()),
            Err(TransactionError::Abort(())) => return Err(StoreError::Corrupt("write aborted".into())),
        }
        self.flush()?;
        if added.get() > 0 {
            let total = self.written.fetch_add(added.get(), std::sync::atomic::Ordering::SeqCst) + added.get();
            let io = |source| StoreError::Dir { path: self.check.clone(), source };
            // Not synced: the entries are durable already, so whichever record a power loss
            // leaves (the last one or this one) never counts more than the log holds.
            std::os::unix::fs::FileExt::write_all_at(&*self.count_file, count_record(total).as_bytes(), 0)
                .map_err(io)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;
    use hellopears_core::keys::Keypair;
    use hellopears_core::replica::Replica;

    use super::*;

    #[test]
    fn a_replica_survives_reopening_the_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let topic = Topic::from_name("todo");
        let key = Keypair::derive_for_tests(1, 1);
        let mut replica = Replica::new(topic.clone(), key.clone());
        for i in 0..20 {
            replica.todos().add(&format!("todo {i}"), i).expect("add");
        }
        {
            let store = SledStorage::open(dir.path(), &topic).expect("open");
            block_on(store.write(&replica.take_unsaved())).expect("write");
        }
        let store = reopen(dir.path(), &topic);
        let (reopened, errors) = Replica::open(topic.clone(), key, block_on(store.load()).expect("load"));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(reopened.db().encode(), replica.db().encode());
        // Another topic in the same data dir is separate.
        drop(store);
        let other = reopen(dir.path(), &Topic::from_name("other"));
        assert!(block_on(other.load()).expect("load").entries.is_empty());
    }

    /// Opens a store just closed in this process: sled's flusher thread lets go of the lock
    /// file a moment after the handle is dropped.
    fn reopen(dir: &std::path::Path, topic: &Topic) -> SledStorage {
        SledStorage::open_waiting(dir, topic, std::time::Duration::from_secs(10)).expect("reopen")
    }

    #[test]
    fn the_sled_backend_keeps_the_storage_contract() {
        let dir = tempfile::tempdir().expect("tempdir");
        let topic = Topic::from_name("todo");
        block_on(hellopears_core::testing::conformance(|| {
            let store = reopen(dir.path(), &topic);
            async move { store }
        }));
    }

    #[test]
    fn a_store_held_for_a_moment_by_another_opener_is_waited_for() {
        let dir = tempfile::tempdir().expect("tempdir");
        let topic = Topic::from_name("todo");
        let first = SledStorage::open(dir.path(), &topic).expect("open");
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(first);
        });
        let second = SledStorage::open_waiting(dir.path(), &topic, std::time::Duration::from_secs(10));
        release.join().expect("join");
        assert!(second.is_ok(), "{second:?}");
    }

    #[test]
    fn a_log_cut_short_is_reported_not_loaded_quietly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let topic = Topic::from_name("todo");
        let mut replica = Replica::new(topic.clone(), Keypair::derive_for_tests(1, 2));
        for i in 0..5 {
            replica.todos().add(&format!("todo {i}"), i).expect("add");
        }
        {
            let store = SledStorage::open(dir.path(), &topic).expect("open");
            block_on(store.write(&replica.take_unsaved())).expect("write");
            // What sled does when it finds a damaged tail: the last writes are gone.
            let last = store.entries.last().expect("read").expect("an entry").0;
            store.entries.remove(last).expect("remove");
            store.flush().expect("flush");
        }
        let store = reopen(dir.path(), &topic);
        let loaded = block_on(store.load());
        assert!(
            matches!(&loaded, Err(StoreError::Corrupt(why)) if why.contains("holds 4 entries but 5 were written")),
            "{loaded:?}"
        );
    }

    /// Copies a data dir (the files as synced: every write returned after its fsync).
    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).expect("mkdir");
        for entry in std::fs::read_dir(from).expect("read dir") {
            let entry = entry.expect("entry");
            let target = to.join(entry.file_name());
            if entry.file_type().expect("type").is_dir() {
                copy_dir(&entry.path(), &target);
            } else if entry.file_name() != "control.sock" {
                std::fs::copy(entry.path(), &target).expect("copy");
            }
        }
    }

    /// The power-loss model on real files: after each acknowledged write the disk holds what
    /// was synced, and a power loss adds a torn, unsynced tail to sled's log (random bytes of
    /// random length; or the count file torn). Every such image reopens with every
    /// acknowledged entry, no error, and a consistent replica.
    #[test]
    fn after_a_power_loss_the_store_reopens_with_every_acknowledged_write() {
        use std::io::Write;
        let dir = tempfile::tempdir().expect("tempdir");
        let images = tempfile::tempdir().expect("tempdir");
        let topic = Topic::from_name("todo");
        let key = Keypair::derive_for_tests(1, 3);
        let mut replica = Replica::new(topic.clone(), key.clone());
        let store = SledStorage::open(dir.path(), &topic).expect("open");
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut random = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..16u64 {
            for i in 0..(1 + random() % 40) {
                replica.todos().add(&format!("round {round} todo {i}"), i as i64).expect("add");
            }
            block_on(store.write(&replica.take_unsaved())).expect("write");
            let acknowledged = replica.base().total_entries();
            let image = images.path().join(format!("image-{round}"));
            copy_dir(dir.path(), &image);
            let mut log = std::fs::OpenOptions::new().append(true).open(image.join("store").join("db")).expect("log");
            let torn: Vec<u8> = (0..random() % 70_000).map(|_| random() as u8).collect();
            log.write_all(&torn).expect("torn tail");
            if round % 4 == 3 {
                let count = std::fs::read_dir(&image)
                    .expect("image")
                    .filter_map(|e| e.ok())
                    .find(|e| e.file_name().to_string_lossy().ends_with(".count"))
                    .expect("count file");
                std::fs::write(count.path(), b"").expect("tear the count file");
            }
            let reopened = SledStorage::open(&image, &topic).expect("a torn image opens");
            let state = block_on(reopened.load()).expect("a torn image loads");
            let (loaded, errors) = Replica::open(topic.clone(), key.clone(), state);
            assert!(errors.is_empty(), "round {round}: {errors:?}");
            assert_eq!(loaded.base().total_entries(), acknowledged, "round {round}: acknowledged entries lost");
            assert_eq!(loaded.db().digest(), replica.db().digest());
        }
    }

    #[test]
    fn a_second_opener_gets_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let topic = Topic::from_name("todo");
        let _first = SledStorage::open(dir.path(), &topic).expect("open");
        let second = SledStorage::open(dir.path(), &topic);
        assert!(matches!(second, Err(StoreError::Locked(_))), "{second:?}");
    }

    #[test]
    fn a_foreign_directory_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("notes.txt"), "mine").expect("write");
        let result = SledStorage::open(dir.path(), &Topic::from_name("todo"));
        assert!(matches!(result, Err(StoreError::Foreign(_))), "{result:?}");
        assert_eq!(std::fs::read_to_string(dir.path().join("notes.txt")).expect("kept"), "mine");
    }
}
