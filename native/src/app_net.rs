//! Apps over the swarm (`seed`, `run`): every peer answers `/hellopears/app/1` for the apps
//! it seeds, from its app store; a peer that runs an app by key fetches it from the peers
//! that seed it (`hellopears_core::app_fetch::Fetch` decides what to ask and checks every
//! answer), stores what it gets, and writes the newest complete version out for serving.
//!
//! On the wire: each request and each response is one frame, a 4-byte big-endian length and
//! the postcard bytes; a stream carries any number of request-response pairs in turn.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use futures::io::{AsyncReadExt, AsyncWriteExt};
use hellopears_core::app_fetch::{self, Event, Fetch, Request, Response, Source};
use hellopears_core::keys::{Hash, WriterId};
use libp2p::{PeerId, StreamProtocol};
use tokio::sync::{mpsc, watch};

use crate::apps::AppStore;

/// The protocol.
pub const APP_PROTOCOL: StreamProtocol = StreamProtocol::new(app_fetch::APP_PROTOCOL);
/// A request's size, at most.
const MAX_REQUEST: usize = 1024;
/// A response's size, at most: a reply of versions (entries of up to 64 KiB each), or a chunk.
const MAX_RESPONSE: usize = app_fetch::MAX_VERSIONS_PER_REPLY * hellopears_core::limits::MAX_ENTRY_BYTES + 64 * 1024;
/// How long a seeder may take to answer, and a stream may stay idle.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);

/// How often a running peer asks its seeders for newer versions.
const RECHECK: Duration = Duration::from_secs(5);

/// The apps this peer seeds (shared by the peer and its server task).
pub type Seeding = Arc<RwLock<HashSet<WriterId>>>;

/// The newest complete version of the app a peer runs: its number and directory.
pub type Version = Option<(u64, PathBuf)>;

/// Where that version is published.
pub type Ready = watch::Receiver<Version>;

async fn read_frame(stream: &mut libp2p::Stream, max: usize) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("a frame of {len} bytes")));
    }
    let mut bytes = vec![0u8; len];
    stream.read_exact(&mut bytes).await?;
    Ok(Some(bytes))
}

async fn write_frame(stream: &mut libp2p::Stream, bytes: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(bytes.len()).map_err(|_| std::io::Error::other("frame too large"))?;
    stream.write_all(&len.to_be_bytes()).await?;
    stream.write_all(bytes).await?;
    stream.flush().await
}

/// What a seeder serves: the apps it seeds, from its store.
struct Seeder {
    store: AppStore,
    seeding: Seeding,
}

impl Source for Seeder {
    fn versions(&self, app: &WriterId) -> Vec<Vec<u8>> {
        let seeded = self.seeding.read().is_ok_and(|seeding| seeding.contains(app));
        if !seeded {
            return Vec::new();
        }
        match self.store.versions(app) {
            Ok(versions) => versions.iter().map(|(entry, _)| entry.bytes().to_vec()).collect(),
            Err(error) => {
                tracing::warn!(%error, "cannot read an app's versions");
                Vec::new()
            }
        }
    }

    fn blob(&self, hash: &Hash) -> Option<Vec<u8>> {
        self.store.blob(hash)
    }
}

/// Answers `/hellopears/app/1` streams in the background, for the apps in `seeding`.
pub fn serve(mut incoming: libp2p_stream::IncomingStreams, store: AppStore, seeding: Seeding) {
    let seeder = Arc::new(Seeder { store, seeding });
    tokio::spawn(async move {
        while let Some((peer, mut stream)) = incoming.next().await {
            let seeder = seeder.clone();
            tokio::spawn(async move {
                loop {
                    let request = match tokio::time::timeout(ANSWER_TIMEOUT, read_frame(&mut stream, MAX_REQUEST)).await
                    {
                        Ok(Ok(Some(bytes))) => bytes,
                        Ok(Ok(None)) | Err(_) => break,
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "app stream");
                            break;
                        }
                    };
                    let Some(request) = Request::decode(&request) else {
                        tracing::debug!(%peer, "a malformed app request");
                        break;
                    };
                    let seeder = seeder.clone();
                    let response = tokio::task::spawn_blocking(move || app_fetch::serve(&*seeder, &request))
                        .await
                        .unwrap_or(Response::NotFound);
                    if write_frame(&mut stream, &response.encode()).await.is_err() {
                        break;
                    }
                }
                let _ = stream.close().await;
            });
        }
    });
}

/// A seeder appeared or went away.
#[derive(Debug)]
pub enum SeederEvent {
    /// A connected peer that speaks the app protocol.
    Up(PeerId),
    /// It disconnected.
    Down(PeerId),
}

/// Sends one request to `peer` on its stream (opened on first use) and reads the answer.
async fn ask(
    control: &mut libp2p_stream::Control,
    streams: &mut HashMap<PeerId, libp2p::Stream>,
    peer: PeerId,
    request: &Request,
) -> Result<Response, String> {
    let asked = async {
        let stream = match streams.entry(peer) {
            std::collections::hash_map::Entry::Occupied(open) => open.into_mut(),
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(control.open_stream(peer, APP_PROTOCOL).await.map_err(|error| error.to_string())?)
            }
        };
        write_frame(stream, &request.encode()).await.map_err(|error| error.to_string())?;
        let bytes = read_frame(stream, MAX_RESPONSE).await.map_err(|error| error.to_string())?;
        let bytes = bytes.ok_or("the seeder closed the stream")?;
        Response::decode(&bytes).ok_or_else(|| "a malformed answer".to_owned())
    };
    let answer = tokio::time::timeout(ANSWER_TIMEOUT, asked).await.unwrap_or_else(|_| Err("no answer in time".into()));
    if answer.is_err() {
        streams.remove(&peer);
    }
    answer
}

/// Asks every seeder the peer reports how many versions of `app` it has; each one that has
/// any is reported on `found` (for `app info`).
pub fn probe(
    mut control: libp2p_stream::Control,
    app: WriterId,
    mut seeders: mpsc::UnboundedReceiver<SeederEvent>,
    found: mpsc::UnboundedSender<(PeerId, u64)>,
) {
    tokio::spawn(async move {
        let mut streams = HashMap::new();
        let mut asked = HashSet::new();
        while let Some(event) = seeders.recv().await {
            let SeederEvent::Up(peer) = event else { continue };
            if !asked.insert(peer) {
                continue;
            }
            // From past the end: no entries, just how many there are.
            let request = Request::Versions { app, from: u64::MAX };
            if let Ok(Response::Versions { len, .. }) = ask(&mut control, &mut streams, peer, &request).await
                && len > 0
                && found.send((peer, len)).is_err()
            {
                return;
            }
        }
    });
}

/// Fetches `app` from the seeders the peer reports, starting from what the store has; the
/// newest complete version's directory is published on `ready_tx` (at once when the store
/// already holds one: `run` works offline).
pub fn fetch(
    mut control: libp2p_stream::Control,
    store: AppStore,
    app: WriterId,
    mut seeders: mpsc::UnboundedReceiver<SeederEvent>,
    ready_tx: watch::Sender<Version>,
    quiet: bool,
) -> anyhow::Result<()> {
    let versions = store.versions(&app)?;
    let have: HashSet<Hash> = versions
        .last()
        .map(|(_, manifest)| manifest.files.iter().map(|f| f.hash).filter(|hash| store.has_blob(hash)).collect())
        .unwrap_or_default();
    let short = app.short();
    let say = move |line: String| {
        if !quiet {
            println!("{line}");
        }
        tracing::info!("{line}");
    };
    let mut fetch: Fetch<PeerId> = Fetch::new(app, versions, have);
    if let Some(manifest) = fetch.latest().cloned()
        && let Ok(dir) = store.materialize(&app, &manifest)
    {
        say(format!("app {short} version {} ready (from the cache) in {}", manifest.version, dir.display()));
        let _ = ready_tx.send(Some((manifest.version, dir)));
    } else {
        say(format!("app {short}: looking for seeders"));
    }
    tokio::spawn(async move {
        let mut streams: HashMap<PeerId, libp2p::Stream> = HashMap::new();
        let mut last_progress = 0u64;
        let mut recheck = tokio::time::interval(RECHECK);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            while let Some((peer, request)) = fetch.next_request() {
                let events = match ask(&mut control, &mut streams, peer, &request).await {
                    Ok(response) => {
                        let ours = fetch.latest().map_or(0, |manifest| manifest.version);
                        if let Response::Versions { len, .. } = &response
                            && *len < ours
                        {
                            say(format!("app {short}: seeder {peer} has version {len} only; keeping version {ours}"));
                        }
                        fetch.on_response(&peer, response)
                    }
                    Err(error) => {
                        tracing::debug!(%peer, %error, "app request failed");
                        fetch.on_failure(&peer)
                    }
                };
                for event in events {
                    match event {
                        Event::Version(entry, manifest) => {
                            if let Err(error) = store.append(&app, &entry) {
                                tracing::error!(%error, "cannot store an app version");
                            }
                            say(format!("app {short}: version {} found", manifest.version));
                        }
                        Event::File(file, bytes) => {
                            if let Err(error) = store.put_blob(&file.hash, &bytes) {
                                tracing::error!(%error, "cannot store an app file");
                            }
                        }
                        Event::Progress { done, total } => {
                            // A line per quarter at most.
                            if total > 0 && (done * 4 / total > last_progress * 4 / total.max(1) || done == total) {
                                say(format!("app {short}: fetched {done} of {total} bytes"));
                            }
                            last_progress = done;
                        }
                        Event::Dropped(peer, reason) => {
                            streams.remove(&peer);
                            say(format!("app {short}: dropping seeder {peer}: {reason}"));
                        }
                        Event::Complete(version) => {
                            let Some(manifest) = fetch.latest().cloned() else { continue };
                            match store.materialize(&app, &manifest) {
                                Ok(dir) => {
                                    say(format!("app {short} version {version} ready in {}", dir.display()));
                                    let _ = ready_tx.send(Some((version, dir)));
                                }
                                Err(error) => tracing::error!(%error, "cannot write the app out"),
                            }
                        }
                    }
                }
            }
            tokio::select! {
                event = seeders.recv() => match event {
                    Some(SeederEvent::Up(peer)) => fetch.add_seeder(peer),
                    Some(SeederEvent::Down(peer)) => {
                        streams.remove(&peer);
                        fetch.remove_seeder(&peer);
                    }
                    None => return,
                },
                // Newer versions: the seeders are asked again now and then.
                _ = recheck.tick() => fetch.recheck(),
            }
        }
    });
    Ok(())
}
