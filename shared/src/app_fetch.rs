//! Fetching an app from its seeders, sans IO: the `/hellopears/app/1` messages, what a
//! seeder answers ([`serve`]), and [`Fetch`], the state machine of a peer that runs an app
//! by key: it learns the newest signed version any seeder has, then the files of that
//! version chunk by chunk, checking every version against the one before and every file
//! against the manifest. A seeder that sends a forged version, an altered or truncated
//! file, or garbage is dropped and the fetch goes on with another one. Versions only grow:
//! what a seeder of an older version says changes nothing.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::app::{self, FileRecord, Manifest};
use crate::keys::{Hash, WriterId};
use crate::log::Entry;

/// The protocol name.
pub const APP_PROTOCOL: &str = "/hellopears/app/1";
/// Bytes of a file in one reply, at most.
pub const MAX_CHUNK: usize = 256 * 1024;
/// Versions in one reply, at most.
pub const MAX_VERSIONS_PER_REPLY: usize = 32;

/// A request to a seeder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// The versions of `app` from position `from` on.
    Versions {
        /// The app key.
        app: WriterId,
        /// The first position wanted.
        from: u64,
    },
    /// Up to [`MAX_CHUNK`] bytes of the file `hash`, from `offset`.
    Chunk {
        /// The file's content hash.
        hash: Hash,
        /// Where to start.
        offset: u64,
    },
}

/// A seeder's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Encoded entries from the position asked, and how many versions the seeder has.
    Versions {
        /// The entries' bytes, in order.
        entries: Vec<Vec<u8>>,
        /// The seeder's number of versions.
        len: u64,
    },
    /// Bytes of a file, and its whole size.
    Chunk {
        /// The bytes.
        data: Vec<u8>,
        /// The file's size.
        total: u64,
    },
    /// The seeder has no such app or file.
    NotFound,
}

impl Request {
    /// The bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes a request.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        postcard::from_bytes(bytes).ok()
    }
}

impl Response {
    /// The bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes a response.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        postcard::from_bytes(bytes).ok()
    }
}

/// What a seeder holds.
pub trait Source {
    /// The encoded versions of `app` (all of them, in order).
    fn versions(&self, app: &WriterId) -> Vec<Vec<u8>>;
    /// A file's content.
    fn blob(&self, hash: &Hash) -> Option<Vec<u8>>;
}

/// A seeder's answer to `request`.
pub fn serve(source: &impl Source, request: &Request) -> Response {
    match request {
        Request::Versions { app, from } => {
            let all = source.versions(app);
            if all.is_empty() {
                return Response::NotFound;
            }
            let from = usize::try_from(*from).unwrap_or(usize::MAX);
            let entries = all.iter().skip(from).take(MAX_VERSIONS_PER_REPLY).cloned().collect();
            Response::Versions { entries, len: all.len() as u64 }
        }
        Request::Chunk { hash, offset } => match source.blob(hash) {
            Some(bytes) => {
                let start = usize::try_from(*offset).unwrap_or(usize::MAX).min(bytes.len());
                let end = (start + MAX_CHUNK).min(bytes.len());
                Response::Chunk { data: bytes[start..end].to_vec(), total: bytes.len() as u64 }
            }
            None => Response::NotFound,
        },
    }
}

/// What a fetch tells its driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event<P> {
    /// A new version, checked (the driver stores the entry).
    Version(Entry, Manifest),
    /// A file of the version being fetched, checked against its manifest (the driver stores it).
    File(FileRecord, Vec<u8>),
    /// Progress of the files: bytes fetched of the bytes needed.
    Progress {
        /// Bytes fetched.
        done: u64,
        /// Bytes needed.
        total: u64,
    },
    /// A seeder broke the protocol or sent bad data: the driver drops it.
    Dropped(P, String),
    /// Every file of this version is here.
    Complete(u64),
}

/// The file being fetched.
#[derive(Debug)]
struct Pending {
    file: FileRecord,
    bytes: Vec<u8>,
}

/// Fetching the newest version of one app from whichever seeders there are.
#[derive(Debug)]
pub struct Fetch<P> {
    app: WriterId,
    versions: Vec<(Entry, Manifest)>,
    /// Seeders, and how many versions each said it has (`None`: not asked yet).
    seeders: HashMap<P, Option<u64>>,
    order: Vec<P>,
    bad: HashSet<P>,
    /// Files already here (by hash).
    have: HashSet<Hash>,
    /// Files of the newest version still to fetch.
    needed: Vec<FileRecord>,
    pending: Option<Pending>,
    in_flight: Option<(P, Request)>,
    done_bytes: u64,
    completed: Option<u64>,
}

impl<P: Clone + Eq + std::hash::Hash + std::fmt::Debug> Fetch<P> {
    /// A fetch of `app`, given the versions already here (checked) and the files already here.
    pub fn new(app: WriterId, versions: Vec<(Entry, Manifest)>, have: HashSet<Hash>) -> Self {
        let mut fetch = Self {
            app,
            versions,
            seeders: HashMap::new(),
            order: Vec::new(),
            bad: HashSet::new(),
            have,
            needed: Vec::new(),
            pending: None,
            in_flight: None,
            done_bytes: 0,
            completed: None,
        };
        fetch.plan_files();
        fetch
    }

    /// The newest version here.
    pub fn latest(&self) -> Option<&Manifest> {
        self.versions.last().map(|(_, manifest)| manifest)
    }

    /// A peer that may seed the app.
    pub fn add_seeder(&mut self, peer: P) {
        if !self.bad.contains(&peer) && !self.seeders.contains_key(&peer) {
            self.seeders.insert(peer.clone(), None);
            self.order.push(peer);
        }
    }

    /// A seeder went away (a request in flight to it is forgotten).
    pub fn remove_seeder(&mut self, peer: &P) {
        self.seeders.remove(peer);
        self.order.retain(|p| p != peer);
        if self.in_flight.as_ref().is_some_and(|(to, _)| to == peer) {
            self.in_flight = None;
            self.abandon_pending();
        }
    }

    /// Forgets the part of a file fetched so far (it stays needed, from the start).
    fn abandon_pending(&mut self) {
        if let Some(pending) = self.pending.take() {
            self.done_bytes -= pending.bytes.len() as u64;
        }
    }

    /// Asks every seeder again for versions newer than ours (a running peer learns of
    /// updates this way).
    pub fn recheck(&mut self) {
        for len in self.seeders.values_mut() {
            *len = None;
        }
    }

    /// The next request to send, if one is due (one at a time).
    pub fn next_request(&mut self) -> Option<(P, Request)> {
        if self.in_flight.is_some() {
            return None;
        }
        // First, every seeder is asked for versions newer than ours.
        let from = self.versions.len() as u64;
        if let Some(peer) = self.order.iter().find(|p| self.seeders.get(*p).is_some_and(Option::is_none)).cloned() {
            return self.send(peer, Request::Versions { app: self.app, from });
        }
        // Then the files, from a seeder that has our newest version.
        let file = match &self.pending {
            Some(pending) => pending.file.clone(),
            None => self.needed.first()?.clone(),
        };
        let peer =
            self.order.iter().find(|p| self.seeders.get(*p).is_some_and(|len| len.unwrap_or(0) >= from))?.clone();
        let offset = self.pending.as_ref().map_or(0, |pending| pending.bytes.len() as u64);
        self.send(peer, Request::Chunk { hash: file.hash, offset })
    }

    fn send(&mut self, peer: P, request: Request) -> Option<(P, Request)> {
        self.in_flight = Some((peer.clone(), request.clone()));
        Some((peer, request))
    }

    /// A seeder's answer to the request in flight.
    pub fn on_response(&mut self, from: &P, response: Response) -> Vec<Event<P>> {
        let Some((to, request)) = self.in_flight.take() else { return Vec::new() };
        if &to != from {
            self.in_flight = Some((to, request));
            return Vec::new();
        }
        let mut events = Vec::new();
        match (request, response) {
            (Request::Versions { .. }, Response::NotFound) => {
                self.seeders.insert(from.clone(), Some(0));
            }
            (Request::Versions { from: start, .. }, Response::Versions { entries, len }) => {
                if let Err(reason) = self.take_versions(start, entries, &mut events) {
                    self.drop_seeder(from, reason, &mut events);
                    return events;
                }
                let have = self.versions.len() as u64;
                // More than one reply holds: ask again.
                self.seeders.insert(from.clone(), if len > have { None } else { Some(len) });
                if events.iter().any(|event| matches!(event, Event::Version(..))) {
                    self.plan_files();
                }
            }
            (Request::Chunk { .. }, Response::NotFound) => {
                // It does not have the file after all: not a seeder of this version.
                self.seeders.insert(from.clone(), Some(0));
                self.abandon_pending();
            }
            (Request::Chunk { offset, .. }, Response::Chunk { data, total }) => {
                if let Err(reason) = self.take_chunk(offset, data, total, &mut events) {
                    self.drop_seeder(from, reason, &mut events);
                }
            }
            _ => self.drop_seeder(from, "an answer that does not match the request".into(), &mut events),
        }
        self.check_complete(&mut events);
        events
    }

    /// The request in flight failed (stream error, timeout): that seeder is dropped.
    pub fn on_failure(&mut self, from: &P) -> Vec<Event<P>> {
        let mut events = Vec::new();
        if self.in_flight.as_ref().is_some_and(|(to, _)| to == from) {
            self.drop_seeder(from, "no answer".into(), &mut events);
        }
        events
    }

    fn take_versions(&mut self, start: u64, entries: Vec<Vec<u8>>, events: &mut Vec<Event<P>>) -> Result<(), String> {
        if entries.len() > MAX_VERSIONS_PER_REPLY {
            return Err("too many versions in one answer".into());
        }
        if start != self.versions.len() as u64 {
            // We learned versions from another seeder meanwhile: ask again.
            return Ok(());
        }
        for bytes in entries {
            let entry = Entry::decode(&bytes).map_err(|error| format!("malformed version: {error}"))?;
            let previous = self.versions.last().map(|(entry, _)| entry);
            let manifest = app::check_version(&self.app, &entry, previous).map_err(|error| error.to_string())?;
            events.push(Event::Version(entry.clone(), manifest.clone()));
            self.versions.push((entry, manifest));
        }
        Ok(())
    }

    fn take_chunk(&mut self, offset: u64, data: Vec<u8>, total: u64, events: &mut Vec<Event<P>>) -> Result<(), String> {
        let file = match &self.pending {
            Some(pending) => pending.file.clone(),
            None => self.needed.first().cloned().ok_or("a chunk nobody asked for")?,
        };
        if total != file.size {
            return Err(format!("{}: {total} bytes, the manifest says {}", file.path, file.size));
        }
        if data.len() > MAX_CHUNK || (data.is_empty() && offset < total) {
            return Err(format!("{}: a chunk of {} bytes", file.path, data.len()));
        }
        let pending = self.pending.get_or_insert_with(|| Pending { file: file.clone(), bytes: Vec::new() });
        if pending.bytes.len() as u64 != offset {
            return Err("a chunk at the wrong offset".into());
        }
        if pending.bytes.len() + data.len() > file.size as usize {
            return Err(format!("{}: more bytes than the manifest says", file.path));
        }
        pending.bytes.extend_from_slice(&data);
        self.done_bytes += data.len() as u64;
        if pending.bytes.len() as u64 == file.size {
            let Some(pending) = self.pending.take() else { return Ok(()) };
            self.needed.retain(|f| f.hash != file.hash);
            if Hash::digest(&pending.bytes) != file.hash {
                // Fetched again from another seeder, from the start.
                self.done_bytes -= file.size;
                self.needed.insert(0, file.clone());
                return Err(format!("{}: content does not match the manifest", file.path));
            }
            self.have.insert(file.hash);
            events.push(Event::File(file, pending.bytes));
        }
        events.push(Event::Progress { done: self.done_bytes, total: self.needed_bytes() });
        Ok(())
    }

    fn needed_bytes(&self) -> u64 {
        self.done_bytes + self.needed.iter().map(|f| f.size).sum::<u64>()
            - self.pending.as_ref().map_or(0, |p| p.bytes.len() as u64)
    }

    /// The files of the newest version that are not here yet.
    fn plan_files(&mut self) {
        let Some(latest) = self.versions.last().map(|(_, manifest)| manifest) else { return };
        let mut seen = HashSet::new();
        self.needed = latest
            .files
            .iter()
            .filter(|file| !self.have.contains(&file.hash) && seen.insert(file.hash))
            .cloned()
            .collect();
        self.pending = None;
        self.done_bytes = 0;
        self.completed = None;
    }

    fn check_complete(&mut self, events: &mut Vec<Event<P>>) {
        let Some(version) = self.latest().map(|manifest| manifest.version) else { return };
        let asked_all = self.seeders.values().all(Option::is_some);
        if asked_all && self.needed.is_empty() && self.pending.is_none() && self.completed != Some(version) {
            self.completed = Some(version);
            events.push(Event::Complete(version));
        }
    }

    /// Whether the newest version known is complete here.
    pub fn is_complete(&self) -> bool {
        self.completed.is_some() && self.completed == self.latest().map(|manifest| manifest.version)
    }

    fn drop_seeder(&mut self, peer: &P, reason: String, events: &mut Vec<Event<P>>) {
        self.remove_seeder(peer);
        self.abandon_pending();
        self.bad.insert(peer.clone());
        events.push(Event::Dropped(peer.clone(), reason));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Keypair;

    /// A seeder in memory, that may lie.
    #[derive(Default, Clone)]
    struct Seeder {
        versions: Vec<Vec<u8>>,
        blobs: HashMap<Hash, Vec<u8>>,
    }

    impl Source for Seeder {
        fn versions(&self, _: &WriterId) -> Vec<Vec<u8>> {
            self.versions.clone()
        }
        fn blob(&self, hash: &Hash) -> Option<Vec<u8>> {
            self.blobs.get(hash).cloned()
        }
    }

    struct App {
        key: Keypair,
        entries: Vec<Entry>,
        blobs: HashMap<Hash, Vec<u8>>,
    }

    impl App {
        fn new() -> Self {
            Self { key: Keypair::derive_for_tests(9, 0), entries: Vec::new(), blobs: HashMap::new() }
        }

        fn stage(&mut self, files: &[(&str, Vec<u8>)]) -> Manifest {
            let records = files
                .iter()
                .map(|(path, bytes)| {
                    let hash = Hash::digest(bytes);
                    self.blobs.insert(hash, bytes.clone());
                    FileRecord { path: (*path).into(), size: bytes.len() as u64, hash }
                })
                .collect();
            let manifest = Manifest::new(self.entries.len() as u64 + 1, records).expect("manifest");
            self.entries.push(app::version_entry(&self.key, self.entries.last(), &manifest));
            manifest
        }

        fn seeder(&self) -> Seeder {
            Seeder { versions: self.entries.iter().map(|e| e.bytes().to_vec()).collect(), blobs: self.blobs.clone() }
        }
    }

    /// Runs a fetch against seeders until nothing is due; every event.
    fn drive(fetch: &mut Fetch<u8>, seeders: &HashMap<u8, Seeder>) -> Vec<Event<u8>> {
        let mut events = Vec::new();
        while let Some((peer, request)) = fetch.next_request() {
            let response = serve(&seeders[&peer], &request);
            // Through the wire format, as a driver does.
            let response = Response::decode(&response.encode()).expect("decodes");
            events.extend(fetch.on_response(&peer, response));
        }
        events
    }

    fn files_of(events: &[Event<u8>]) -> HashMap<String, Vec<u8>> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::File(file, bytes) => Some((file.path.clone(), bytes.clone())),
                _ => None,
            })
            .collect()
    }

    fn big(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn an_app_is_fetched_whole_and_checked_from_its_seeders() {
        let mut app = App::new();
        app.stage(&[("index.html", b"v1".to_vec())]);
        let v2 = app.stage(&[("index.html", b"<html>v2".to_vec()), ("app.wasm", big(MAX_CHUNK * 2 + 17))]);
        let seeders = HashMap::from([(1u8, app.seeder()), (2u8, app.seeder())]);
        let mut fetch = Fetch::new(app.key.id(), Vec::new(), HashSet::new());
        fetch.add_seeder(1);
        fetch.add_seeder(2);
        let events = drive(&mut fetch, &seeders);
        assert_eq!(fetch.latest(), Some(&v2));
        assert!(events.contains(&Event::Complete(2)), "{events:?}");
        let files = files_of(&events);
        assert_eq!(files["index.html"], b"<html>v2");
        assert_eq!(files["app.wasm"], big(MAX_CHUNK * 2 + 17));
        assert!(fetch.is_complete());
    }

    #[test]
    fn a_seeder_that_alters_or_truncates_a_file_is_dropped_and_another_serves_it() {
        let mut app = App::new();
        let manifest = app.stage(&[("index.html", b"<html>".to_vec()), ("app.wasm", big(MAX_CHUNK + 5))]);
        let wasm = manifest.file("app.wasm").expect("wasm").hash;
        let mut altered = app.seeder();
        altered.blobs.get_mut(&wasm).expect("blob")[3] ^= 1;
        let mut truncated = app.seeder();
        truncated.blobs.get_mut(&wasm).expect("blob").truncate(MAX_CHUNK);
        let seeders = HashMap::from([(1u8, altered), (2u8, truncated), (3u8, app.seeder())]);
        let mut fetch = Fetch::new(app.key.id(), Vec::new(), HashSet::new());
        for peer in [1, 2, 3] {
            fetch.add_seeder(peer);
        }
        let events = drive(&mut fetch, &seeders);
        let dropped: Vec<u8> =
            events.iter().filter_map(|e| if let Event::Dropped(p, _) = e { Some(*p) } else { None }).collect();
        assert_eq!(dropped, [1, 2], "{events:?}");
        assert_eq!(files_of(&events)["app.wasm"], big(MAX_CHUNK + 5), "only the honest copy is handed out");
        assert!(events.contains(&Event::Complete(1)));
        // A dropped seeder is not taken back.
        fetch.add_seeder(1);
        assert!(fetch.next_request().is_none());
    }

    #[test]
    fn a_seeder_of_an_older_version_downgrades_nobody_and_forgeries_are_dropped() {
        let mut app = App::new();
        app.stage(&[("index.html", b"v1".to_vec())]);
        let old = app.seeder();
        app.stage(&[("index.html", b"v2".to_vec())]);
        let mut fetch = Fetch::new(app.key.id(), Vec::new(), HashSet::new());
        fetch.add_seeder(1);
        let events = drive(&mut fetch, &HashMap::from([(1u8, app.seeder())]));
        assert!(events.contains(&Event::Complete(2)));
        // An old seeder afterwards: nothing changes.
        fetch.add_seeder(2);
        let events = drive(&mut fetch, &HashMap::from([(2u8, old)]));
        assert!(events.iter().all(|e| !matches!(e, Event::Version(..) | Event::File(..))), "{events:?}");
        assert_eq!(fetch.latest().map(|m| m.version), Some(2));
        // A seeder whose version 3 is signed by another key is dropped.
        let mut forger = app.seeder();
        let other = Keypair::derive_for_tests(9, 1);
        let fake = Manifest::new(3, vec![]).expect("v3");
        let last = Entry::decode(forger.versions.last().expect("v2")).expect("entry");
        forger.versions.push(app::version_entry(&other, Some(&last), &fake).bytes().to_vec());
        fetch.add_seeder(3);
        let events = drive(&mut fetch, &HashMap::from([(3u8, forger)]));
        assert!(matches!(events.as_slice(), [Event::Dropped(3, _), ..]), "{events:?}");
        assert_eq!(fetch.latest().map(|m| m.version), Some(2));
    }

    #[test]
    fn a_seeder_that_goes_away_mid_file_is_replaced_and_the_file_starts_over() {
        let mut app = App::new();
        app.stage(&[("app.wasm", big(MAX_CHUNK * 3))]);
        let seeders = HashMap::from([(1u8, app.seeder()), (2u8, app.seeder())]);
        let mut fetch = Fetch::new(app.key.id(), Vec::new(), HashSet::new());
        fetch.add_seeder(1);
        fetch.add_seeder(2);
        // Versions from both, then one chunk from seeder 1, which then disconnects.
        let mut events = Vec::new();
        for _ in 0..3 {
            let (peer, request) = fetch.next_request().expect("a request");
            events.extend(fetch.on_response(&peer, serve(&seeders[&peer], &request)));
        }
        assert!(
            events.contains(&Event::Progress { done: MAX_CHUNK as u64, total: 3 * MAX_CHUNK as u64 }),
            "{events:?}"
        );
        let (peer, _) = fetch.next_request().expect("the second chunk");
        fetch.remove_seeder(&peer);
        let events = drive(&mut fetch, &seeders);
        assert_eq!(files_of(&events)["app.wasm"], big(MAX_CHUNK * 3));
        assert!(events.contains(&Event::Progress { done: 3 * MAX_CHUNK as u64, total: 3 * MAX_CHUNK as u64 }));
    }

    #[test]
    fn a_running_fetch_learns_a_newer_version_when_it_asks_again() {
        let mut app = App::new();
        app.stage(&[("index.html", b"v1".to_vec())]);
        let mut fetch = Fetch::new(app.key.id(), Vec::new(), HashSet::new());
        fetch.add_seeder(1u8);
        assert!(drive(&mut fetch, &HashMap::from([(1u8, app.seeder())])).contains(&Event::Complete(1)));
        app.stage(&[("index.html", b"v2".to_vec())]);
        let seeders = HashMap::from([(1u8, app.seeder())]);
        assert!(drive(&mut fetch, &seeders).is_empty(), "not asked again by itself");
        fetch.recheck();
        let events = drive(&mut fetch, &seeders);
        assert!(events.contains(&Event::Complete(2)), "{events:?}");
        assert_eq!(files_of(&events)["index.html"], b"v2");
    }

    #[test]
    fn garbage_from_a_seeder_is_a_drop_not_a_panic() {
        let mut app = App::new();
        app.stage(&[("index.html", b"v1".to_vec())]);
        let mut fetch = Fetch::new(app.key.id(), Vec::new(), HashSet::new());
        fetch.add_seeder(1u8);
        let (peer, _) = fetch.next_request().expect("a request");
        let events = fetch.on_response(&peer, Response::Versions { entries: vec![vec![0xff; 40]], len: 1 });
        assert!(matches!(events.as_slice(), [Event::Dropped(1, _)]), "{events:?}");
        assert!(Request::decode(&[0xff, 0xff]).is_none());
    }
}
