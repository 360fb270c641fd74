//! One peer of a list, with any number of remotes: the replication engine every driver runs.
//!
//! A [`Node`] owns the [`Replica`], one [`Session`] per remote, and everything that
//! coordinates them: the fan-out after a change (fresh entries and fork evidence to every
//! session), when sync streams open and reopen, frames waiting for a stream, peer exchange,
//! sync status, the UI snapshot, and the execution of [`Command`]s. It does no IO and reads
//! no clock: a driver (the desktop peer, the browser tab, the simulator, a test) feeds it
//! [`Input`]s with the current time and carries out the [`Output`]s it returns.
//!
//! **Persist before announce.** Whatever the replica integrates (a local write or entries
//! from a peer) goes out as [`Output::Persist`] before any frame that could announce it. Frames
//! produced while a batch is not yet durable wait in the node until the driver reports
//! [`Input::Persisted`] with success; a command's reply waits the same way. A failed write
//! comes back as an error, is kept (merged with newer changes) and retried on a later tick;
//! nothing is lost and nothing waiting is sent. So a peer never announces an entry that a
//! crash could take back, and a writer never reuses a seq another peer has seen (a self-fork).
//!
//! ```
//! use hellopears_core::node::{Config, Input, Node, Open, Output};
//! use hellopears_core::storage::LoadedState;
//! use hellopears_core::topic::Topic;
//! use hellopears_core::ui::Command;
//!
//! let topic = Topic::from_name("groceries");
//! let (mut a, _) = Node::<u8>::open(topic.clone(), LoadedState::default(), [1; 32], Config::default()).unwrap();
//! let (mut b, _) = Node::<u8>::open(topic, LoadedState::default(), [2; 32], Config::default()).unwrap();
//! let mut to_a = a.handle(Input::Command(1, Command::Add("milk".into())), 0);
//! to_a.extend(a.handle(Input::Connected { remote: 2, open: Open::Now, identity: vec![] }, 0));
//! let mut to_b = b.handle(Input::Connected { remote: 1, open: Open::Now, identity: vec![] }, 0);
//! // Carry out what each node asks: persist (to memory here), open streams, deliver frames.
//! for _ in 0..20 {
//!     let mut next_a = Vec::new();
//!     let mut next_b = Vec::new();
//!     for output in to_a.drain(..) {
//!         match output {
//!             Output::Persist(id, _) => next_a.extend(a.handle(Input::Persisted(id, Ok(())), 1)),
//!             Output::OpenStream(r) => next_a.extend(a.handle(Input::StreamOpened(r), 1)),
//!             Output::Send(_, frame) => next_b.extend(b.handle(Input::Frame(1, frame), 1)),
//!             _ => {}
//!         }
//!     }
//!     for output in to_b.drain(..) {
//!         match output {
//!             Output::Persist(id, _) => next_b.extend(b.handle(Input::Persisted(id, Ok(())), 1)),
//!             Output::OpenStream(r) => next_b.extend(b.handle(Input::StreamOpened(r), 1)),
//!             Output::Send(_, frame) => next_a.extend(a.handle(Input::Frame(2, frame), 1)),
//!             _ => {}
//!         }
//!     }
//!     to_a = next_a;
//!     to_b = next_b;
//! }
//! assert_eq!(b.replica().db().digest(), a.replica().db().digest());
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Debug;

use crate::access::AccessError;
use crate::keys::{KeyError, Keypair};
use crate::list::MemberOp;
use crate::replica::{Notice, OpenError, Replica};
use crate::storage::{LoadedState, WriteBatch};
use crate::sync::{Message, Session, SessionConfig, SyncError};
use crate::todo::{self, TodoError};
use crate::topic::Topic;
use crate::ui::{Command, Outcome, PeerView, Snapshot, SyncStatus, TodoView};

/// The meta key holding this device's writer secret for a list.
pub const WRITER_SECRET: &str = "writer-secret";

/// Identifies a command, so its reply can be matched to it.
pub type CommandId = u64;

/// Identifies a batch handed out to persist.
pub type PersistId = u64;

/// How a node runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Timing and batching of every session.
    pub session: SessionConfig,
    /// Whether peers' listen records are exchanged (peer exchange).
    pub pex: bool,
    /// Frames kept per remote while its stream is not open (more are dropped: the periodic
    /// `Have` and request retries recover).
    pub backlog_limit: usize,
    /// Outbound streams that may fail in a row before the remote is disconnected.
    pub max_stream_failures: u8,
    /// How long after a lost stream a new one is opened.
    pub reopen_delay_ms: u64,
    /// How long after a failed write it is tried again (doubling, up to 16 times this).
    pub persist_retry_ms: u64,
    /// Frames held for durability at most (beyond, the oldest frames are dropped, never a
    /// reply; anti-entropy recovers them once storage works again).
    pub held_limit: usize,
    /// The meta key of this device's writer secret ([`WRITER_SECRET`]; browser tabs open
    /// at once write with a key each).
    pub writer_key: String,
    /// This peer's Noise-authenticated id (the bytes of its libp2p peer id): a private
    /// list's session proofs are bound to it and to the remote's.
    pub identity: Vec<u8>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            session: SessionConfig::default(),
            pex: true,
            backlog_limit: crate::limits::BACKLOG_FRAMES,
            max_stream_failures: 3,
            reopen_delay_ms: 1_000,
            persist_retry_ms: 500,
            held_limit: 16_384,
            writer_key: WRITER_SECRET.to_owned(),
            identity: Vec::new(),
        }
    }
}

/// When to open our sync stream to a new remote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Open {
    /// At once.
    Now,
    /// Once the remote's own stream arrives ([`Input::RemoteStream`]), or after this many
    /// ms. (A browser drops data channels opened before its side of a fresh WebRTC
    /// connection is set up.)
    AfterRemote {
        /// The fallback.
        fallback_ms: u64,
    },
}

/// What happened, as a driver tells it.
#[derive(Clone, Debug)]
pub enum Input<P> {
    /// A connection to a remote is up (the first one to it).
    Connected {
        /// The remote.
        remote: P,
        /// When to open our stream.
        open: Open,
        /// The remote's Noise-authenticated id (its libp2p peer id bytes), for the
        /// session proofs of a private list (may be empty on public topics).
        identity: Vec<u8>,
    },
    /// The last connection to a remote closed.
    Disconnected(P),
    /// Our sync stream to a remote is open: frames can be sent.
    StreamOpened(P),
    /// Our sync stream to a remote failed, or could not be opened.
    StreamLost(P),
    /// The remote opened its sync stream to us.
    RemoteStream(P),
    /// One frame (an encoded [`Message`]) from a remote.
    Frame(P, Vec<u8>),
    /// The remote broke the framing of its stream.
    Violation(P, String),
    /// Where a remote listens: opaque records for peer exchange.
    Listening(P, Vec<Vec<u8>>),
    /// A user's command.
    Command(CommandId, Command),
    /// The outcome of [`Output::Persist`].
    Persisted(PersistId, Result<(), String>),
    /// Time passed (every few hundred ms).
    Tick,
}

/// What the driver must do.
#[derive(Clone, Debug)]
pub enum Output<P> {
    /// Write this batch atomically, then report [`Input::Persisted`]. At most one is out at
    /// a time; it always comes before the frames that announce what it holds.
    Persist(PersistId, WriteBatch),
    /// Open our sync stream to a remote; report [`Input::StreamOpened`] or
    /// [`Input::StreamLost`].
    OpenStream(P),
    /// Send one frame (an encoded [`Message`]) on our stream to a remote.
    Send(P, Vec<u8>),
    /// Close every connection to a remote, for this reason.
    Disconnect(P, String),
    /// Close every connection to a remote that broke the protocol or sent forged data, and
    /// refuse it for a while ([`crate::limits::BAN_MS`]).
    Ban(P, String),
    /// A peer record learned by peer exchange: dial it if it is worth it.
    Dial(Vec<u8>),
    /// The reply to a command, once its changes are durable.
    Reply(CommandId, Result<Outcome, String>),
    /// Something for the user or the log.
    Notice(Notice),
    /// What the UI shows changed (todos, peers or status).
    Changed,
}

/// Why a node could not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenNodeError {
    /// The stored writer key does not decode. It is kept; writing with another key would
    /// hide the problem and could fork nothing, but it would split the user's identity.
    #[error("the stored writer key is corrupt ({0}); move the store away to start with a new key")]
    CorruptWriterKey(KeyError),
}

/// A remote's sync stream, as far as we know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stream {
    /// Waiting for the remote's stream, or until this time.
    Waiting(u64),
    /// Asked the driver to open it.
    Opening,
    /// Open: frames go out at once.
    Open,
    /// Lost: open again at this time.
    Reopen(u64),
}

#[derive(Debug)]
struct Remote {
    session: Session,
    stream: Stream,
    backlog: VecDeque<Vec<u8>>,
    failures: u8,
    listen: Vec<Vec<u8>>,
    last_frame: u64,
    /// Join requests sent again to it (bounded: members take a few per session).
    join_retries: u32,
}

/// A frame or reply waiting for a batch to be durable.
#[derive(Debug)]
enum Waiting<P> {
    Frame(P, Vec<u8>),
    Reply(CommandId, Result<Outcome, String>),
}

/// Durability bookkeeping: batches are numbered; `durable` is the last one written.
#[derive(Debug, Default)]
struct Durability {
    /// Changes not yet handed out.
    unsaved: WriteBatch,
    /// The batch handed out and not yet reported.
    in_flight: Option<(PersistId, WriteBatch)>,
    /// A batch whose write failed, to try again at the given time.
    failed: Option<(WriteBatch, u64)>,
    /// Failures in a row (for the retry backoff).
    failures: u32,
    /// The last error, until a write succeeds.
    error: Option<String>,
    /// Batches handed out so far (the last id).
    issued: PersistId,
    /// The last batch known durable.
    durable: PersistId,
}

impl Durability {
    /// The batch that will hold everything integrated so far.
    fn required(&self) -> PersistId {
        if self.unsaved.is_empty() && self.failed.is_none() { self.issued } else { self.issued + 1 }
    }
}

/// One peer of a list: the replication engine (see the module docs).
#[derive(Debug)]
pub struct Node<P> {
    replica: Replica,
    remotes: BTreeMap<P, Remote>,
    config: Config,
    durability: Durability,
    waiting: VecDeque<(PersistId, Waiting<P>)>,
    out: Vec<Output<P>>,
    now: u64,
    /// Remotes of another list, disconnected once a grace period has passed (so our own
    /// `Hello` reaches them and they log why, instead of losing it to a closed connection).
    closing: Vec<(P, u64, String)>,
    /// The invite this device joins a private list with, until it is admitted.
    invite: Option<(crate::access::Invite, String)>,
    /// Why a member refused our join request, if one did.
    refusal: Option<String>,
    /// When join requests were last sent (they are sent again while we wait: a request
    /// can be lost with a stream that failed).
    join_sent_at: u64,
}

/// How long a remote of another list keeps its connection after we stop syncing with it.
const OTHER_LIST_GRACE_MS: u64 = 2_000;
/// While a device waits to be admitted, its join request goes again to every introduced
/// peer this often (a request can be lost with a failed stream; a repeat of an admitted
/// request is ignored by members).
const JOIN_RETRY_MS: u64 = 5_000;
/// Join requests sent again to one peer, at most (members accept 32 per session).
const JOIN_RETRIES: u32 = 16;

impl<P: Ord + Clone + Debug> Node<P> {
    /// Opens a node on a list's stored state. `fresh_secret` (random bytes from the driver)
    /// becomes the writer key if none is stored; it is then saved by the first
    /// [`Output::Persist`]. Corrupt stored items are reported and skipped.
    pub fn open(
        topic: Topic,
        state: LoadedState,
        fresh_secret: [u8; 32],
        config: Config,
    ) -> Result<(Self, Vec<OpenError>), OpenNodeError> {
        let mut first = WriteBatch::default();
        let mut state = state;
        // The stored secret leaves the loaded state and is wiped once the key pair holds it.
        let keypair = match state.meta.remove(&config.writer_key) {
            Some(secret) => {
                let secret = zeroize::Zeroizing::new(secret);
                Keypair::from_secret_slice(&secret).map_err(OpenNodeError::CorruptWriterKey)?
            }
            None => {
                first.meta.push((config.writer_key.clone(), Some(fresh_secret.to_vec())));
                Keypair::from_secret(fresh_secret)
            }
        };
        let (replica, errors) = Replica::open(topic, keypair, state);
        let mut node = Self::from_replica(replica, config);
        node.durability.unsaved = first;
        Ok((node, errors))
    }

    /// A node over a replica already in memory (its unsaved changes are persisted first).
    pub fn from_replica(replica: Replica, config: Config) -> Self {
        Self {
            replica,
            remotes: BTreeMap::new(),
            config,
            durability: Durability::default(),
            waiting: VecDeque::new(),
            out: Vec::new(),
            now: 0,
            closing: Vec::new(),
            invite: None,
            refusal: None,
            join_sent_at: 0,
        }
    }

    /// Joins a private list with an invite: every session that opens asks its remote to
    /// admit this device as `name`, until it is a member.
    pub fn set_invite(&mut self, invite: crate::access::Invite, name: String) {
        self.invite = Some((invite, name));
        self.refusal = None;
        let requests: Vec<P> =
            self.remotes.iter().filter(|(_, state)| state.session.is_introduced()).map(|(p, _)| p.clone()).collect();
        for remote in requests {
            if let Some(join) = self.join_request() {
                self.route(&remote, vec![join]);
            }
        }
    }

    /// Why a member refused our join request, if one did.
    pub fn refusal(&self) -> Option<&str> {
        self.refusal.as_deref()
    }

    /// Whether this device waits to be admitted to a private list.
    pub fn is_joining(&self) -> bool {
        self.invite.is_some() && self.replica.role().is_none()
    }

    fn join_request(&mut self) -> Option<Message> {
        if self.replica.role().is_some() {
            self.invite = None;
            return None;
        }
        let (invite, _) = self.invite.as_ref()?;
        let list = self.replica.topic().list_keys()?.id;
        let device = self.replica.writer_id();
        // The name goes into the list once admitted, under the content key (the admission
        // itself is readable by blind members).
        let proof = invite.prove(&list, &device, "").to_vec();
        Some(Message::Join { invite: invite.key(), device, name: String::new(), proof })
    }

    /// The replica (logs, order, view), for queries.
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// Handles one input at `now` (ms since the Unix epoch) and returns what to do, in order.
    pub fn handle(&mut self, input: Input<P>, now: u64) -> Vec<Output<P>> {
        self.now = now;
        match input {
            Input::Connected { remote, open, identity } => self.on_connected(remote, open, identity),
            Input::Disconnected(remote) => {
                self.closing.retain(|(closing, _, _)| *closing != remote);
                if self.remotes.remove(&remote).is_some() {
                    self.out.push(Output::Changed);
                }
            }
            Input::StreamOpened(remote) => self.on_stream_opened(&remote),
            Input::StreamLost(remote) => self.on_stream_lost(remote),
            Input::RemoteStream(remote) => {
                if let Some(state) = self.remotes.get_mut(&remote)
                    && matches!(state.stream, Stream::Waiting(_))
                {
                    state.stream = Stream::Opening;
                    self.out.push(Output::OpenStream(remote));
                }
            }
            Input::Frame(remote, bytes) => self.on_frame(remote, &bytes),
            Input::Violation(remote, reason) => self.ban_remote(remote, format!("sync frame refused: {reason}")),
            Input::Listening(remote, records) => self.on_listening(remote, records),
            Input::Command(id, command) => self.on_command(id, command),
            Input::Persisted(id, result) => self.on_persisted(id, result),
            Input::Tick => self.on_tick(),
        }
        // Admitted: the invite has done its work, and this device names itself to the
        // members who read the list.
        if self.invite.is_some()
            && let Some(role) = self.replica.role()
            && let Some((_, name)) = self.invite.take()
            && role.can_read()
            && !name.is_empty()
        {
            let named = MemberOp::Name { name: crate::limits::clip_name(&name) };
            if let Err(error) = self.replica.write_member(&named) {
                let reason = match error {
                    crate::replica::WriteError::Access(reason) => reason,
                    crate::replica::WriteError::Ingest(error) => AccessError::NotAllowed(error.to_string()),
                };
                let (writer, seq) = (self.replica.writer_id(), self.replica.base().len(&self.replica.writer_id()));
                self.out.push(Output::Notice(Notice::Refused { writer, seq, reason }));
            }
        }
        self.after_change();
        std::mem::take(&mut self.out)
    }

    /// The sync state the status line shows.
    pub fn status(&self) -> SyncStatus {
        if let Some(error) = &self.durability.error {
            return SyncStatus::Failed(format!("cannot save: {error}"));
        }
        let introduced = self.remotes.values().filter(|r| r.session.is_introduced()).count();
        SyncStatus::from_counts(introduced, self.replica.base().total_entries(), self.missing())
    }

    /// Entries connected remotes hold that we do not.
    pub fn missing(&self) -> u64 {
        self.remotes.values().map(|r| r.session.missing(&self.replica)).fold(0, u64::saturating_add)
    }

    /// Remotes whose sync session is open (their `Hello` arrived), in order.
    pub fn peers(&self) -> impl Iterator<Item = PeerInfo<'_, P>> {
        self.remotes.iter().filter(|(_, r)| r.session.is_introduced()).map(|(id, r)| PeerInfo {
            id,
            missing: r.session.missing(&self.replica),
            last_frame: r.last_frame,
        })
    }

    /// Remotes with a session, introduced or not.
    pub fn remote_count(&self) -> usize {
        self.remotes.len()
    }

    /// Whether every change so far is durable.
    pub fn is_durable(&self) -> bool {
        self.durability.required() == self.durability.durable && self.durability.in_flight.is_none()
    }

    /// What the UI shows; `connection` describes how a remote is connected.
    pub fn snapshot(&self, connection: impl Fn(&P) -> (String, String)) -> Snapshot {
        let membership = self.replica.membership();
        // In a private list, authors are shown by their names.
        let name_of = |author: &str| {
            membership?
                .members()
                .iter()
                .rev()
                .find(|m| m.device.to_hex() == author && !m.name.is_empty())
                .map(|m| m.name.clone())
        };
        let todos: Vec<TodoView> = todo::list(self.replica.db())
            .iter()
            .rev()
            .map(|todo| {
                let mut view = TodoView::from_todo(todo);
                if let Some(name) = name_of(&todo.author) {
                    view.author = name;
                }
                view
            })
            .collect();
        let access = match (self.replica.topic().is_private(), self.replica.role()) {
            (false, _) => crate::ui::PUBLIC_LABEL.to_owned(),
            (true, Some(role)) => format!("private, {}", role.label()),
            (true, None) if self.refusal.is_some() => {
                format!("private, refused: {}", self.refusal.as_deref().unwrap_or_default())
            }
            (true, None) if self.is_joining() => "private, joining: waiting for a member to admit this device".into(),
            (true, None) => "private, not a member".into(),
        };
        let peers = self
            .peers()
            .map(|peer| {
                let (id, connection) = connection(peer.id);
                PeerView { id, connection, last_sync: peer.last_frame }
            })
            .collect();
        Snapshot {
            topic: self.replica.topic().name().to_owned(),
            writer: self.replica.writer_id().short(),
            todos,
            peers,
            status: self.status(),
            access,
            members: membership
                .map(|m| {
                    m.members()
                        .iter()
                        .filter(|member| member.is_active())
                        .map(|member| crate::ui::MemberInfo {
                            name: member.name.clone(),
                            role: member.role.label().to_owned(),
                            writer: member.device.to_hex(),
                            me: member.device == self.replica.writer_id(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            can_manage: self.replica.role().is_some_and(crate::access::Role::can_write),
            lists: Vec::new(),
            reply: None,
            network: String::new(),
        }
    }

    /// An invite to this private list: the command that records it, and the link, for an
    /// invite secret the driver drew and the addresses the joiner should dial.
    pub fn prepare_invite(
        &self,
        secret: [u8; 32],
        role: crate::access::Role,
        valid_ms: u64,
        addresses: Vec<String>,
    ) -> Result<(Command, crate::access::InviteLink), AccessError> {
        let topic = self.replica.topic();
        let crate::topic::Access::Private { capability, keys } = topic.access() else {
            return Err(AccessError::NotAllowed(format!(
                "{} is a public topic: anyone who knows its name",
                topic.name()
            )));
        };
        match self.replica.role() {
            Some(mine) if mine.can_write() => {}
            Some(mine) => return Err(AccessError::CannotWrite(mine.label())),
            None => return Err(AccessError::NotAMember),
        }
        if role == crate::access::Role::Owner {
            return Err(AccessError::NotAllowed("inviting an owner".into()));
        }
        let invite = crate::access::Invite::from_secret(secret);
        let expires = self.now.saturating_add(valid_ms);
        let link = crate::access::InviteLink {
            name: topic.name().to_owned(),
            replicate: capability.replicate(),
            owner: keys.owner,
            invite: secret,
            role,
            expires,
            addresses,
        };
        Ok((Command::Invite { key: invite.key(), role, expires }, link))
    }

    fn on_connected(&mut self, remote: P, open: Open, identity: Vec<u8>) {
        if self.remotes.contains_key(&remote) {
            return;
        }
        let mut session = Session::new(self.config.session.clone());
        session.set_identities(self.config.identity.clone(), identity);
        let mut state = Remote {
            session,
            stream: Stream::Opening,
            backlog: VecDeque::new(),
            failures: 0,
            listen: Vec::new(),
            last_frame: 0,
            join_retries: 0,
        };
        match open {
            Open::Now => self.out.push(Output::OpenStream(remote.clone())),
            Open::AfterRemote { fallback_ms } => state.stream = Stream::Waiting(self.now + fallback_ms),
        }
        let hello = state.session.start(&self.replica, self.now);
        self.remotes.insert(remote.clone(), state);
        // A hello announces nothing new, but `Have` does: route through the durability gate.
        self.route(&remote, hello);
        self.share_known_peers(&remote);
        self.out.push(Output::Changed);
    }

    /// Tells `remote` where the other peers listen, as far as we know: at once, not only
    /// when its own addresses arrive (a browser's can come late, or not at all).
    fn share_known_peers(&mut self, remote: &P) {
        if !self.config.pex {
            return;
        }
        let others: Vec<Vec<u8>> = self
            .remotes
            .iter()
            .filter(|(id, _)| *id != remote)
            .flat_map(|(_, state)| state.listen.iter().cloned())
            .collect();
        if others.is_empty() {
            return;
        }
        let Some(state) = self.remotes.get(remote) else { return };
        let share = state.session.share_peers(others);
        self.route(remote, share);
    }

    fn on_stream_opened(&mut self, remote: &P) {
        let Some(state) = self.remotes.get_mut(remote) else { return };
        state.stream = Stream::Open;
        state.failures = 0;
        for frame in state.backlog.drain(..) {
            self.out.push(Output::Send(remote.clone(), frame));
        }
    }

    fn on_stream_lost(&mut self, remote: P) {
        let Some(state) = self.remotes.get_mut(&remote) else { return };
        if state.failures >= self.config.max_stream_failures {
            self.drop_remote(remote, "no sync stream to this peer".into());
            return;
        }
        state.failures += 1;
        state.stream = Stream::Reopen(self.now + self.config.reopen_delay_ms);
        state.backlog.clear();
        // The remote may have lost what was in flight: start over on the new stream.
        let restart = state.session.start(&self.replica, self.now);
        self.route(&remote, restart);
    }

    fn on_frame(&mut self, remote: P, bytes: &[u8]) {
        let Some(state) = self.remotes.get_mut(&remote) else { return };
        state.last_frame = self.now;
        let was_introduced = state.session.is_introduced();
        match state.session.handle_bytes(&mut self.replica, bytes, self.now) {
            Ok(reply) => {
                let learned = state.session.take_learned_peers();
                let introduced = state.session.is_introduced() && !was_introduced;
                if let Some(reason) = state.session.take_refusal() {
                    self.refusal = Some(reason);
                    self.out.push(Output::Changed);
                }
                self.route(&remote, reply);
                if introduced && let Some(join) = self.join_request() {
                    self.route(&remote, vec![join]);
                }
                if introduced {
                    // A private list's peers are told only once they proved they hold it.
                    self.share_known_peers(&remote);
                }
                if self.config.pex {
                    self.out.extend(learned.into_iter().map(Output::Dial));
                }
                if introduced {
                    self.out.push(Output::Changed);
                }
            }
            // A peer of another list is not hostile (another of the user's lists, a LAN
            // neighbour's): it is dropped, not banned.
            // A peer that cannot prove it holds a private list is treated exactly like one of
            // another list, so it cannot tell whether we hold the list.
            Err(error @ (SyncError::TopicMismatch | SyncError::Access(_))) => {
                if self.remotes.remove(&remote).is_some() {
                    let due = self.now + OTHER_LIST_GRACE_MS;
                    self.closing.push((remote, due, format!("protocol violation: {error}")));
                    self.out.push(Output::Changed);
                }
            }
            Err(error) if error.is_fatal() => self.ban_remote(remote, format!("protocol violation: {error}")),
            // An honest peer can cause these (a forked writer, a full pending set); the
            // session already recovers from them.
            Err(_) => {}
        }
    }

    fn on_listening(&mut self, remote: P, records: Vec<Vec<u8>>) {
        if !self.config.pex || !self.remotes.contains_key(&remote) {
            return;
        }
        let mut others = Vec::new();
        let ids: Vec<P> = self.remotes.keys().filter(|id| **id != remote).cloned().collect();
        for other in ids {
            let Some(state) = self.remotes.get(&other) else { continue };
            others.extend(state.listen.iter().cloned());
            let share = state.session.share_peers(records.clone());
            self.route(&other, share);
        }
        if let Some(state) = self.remotes.get_mut(&remote) {
            state.listen = records;
            let share = state.session.share_peers(others);
            self.route(&remote, share);
        }
    }

    fn on_command(&mut self, id: CommandId, command: Command) {
        let result = self.execute(command).map_err(|error| error.to_string());
        let required = match &result {
            // A failed command wrote nothing of its own: answer at once.
            Err(_) => self.durability.durable,
            Ok(_) => self.required(),
        };
        self.wait_or_emit(required, Waiting::Reply(id, result));
    }

    /// Runs a command as one batch of writes under one signature.
    fn execute(&mut self, command: Command) -> Result<Outcome, TodoError> {
        self.replica.begin_batch();
        let outcome = self.execute_batch(command);
        self.replica.end_batch();
        outcome
    }

    fn execute_batch(&mut self, command: Command) -> Result<Outcome, TodoError> {
        let now = self.now as i64;
        let mut todos = self.replica.todos();
        Ok(match command {
            Command::Add(text) => Outcome::Added(todos.add(&text, now)?),
            Command::Seed(count) => {
                for n in 0..count {
                    todos.add(&format!("todo number {n}"), now)?;
                }
                Outcome::Seeded(count)
            }
            Command::SetDone(id, done) => {
                todos.set_done(&id, done, now)?;
                Outcome::Changed
            }
            Command::Toggle(id) => Outcome::Toggled(todos.toggle(&id, now)?),
            Command::Edit(id, text) => {
                todos.edit(&id, &text, now)?;
                Outcome::Changed
            }
            Command::Remove(id) => {
                todos.remove(&id)?;
                Outcome::Changed
            }
            Command::ClearCompleted => Outcome::Cleared(todos.clear_completed()?),
            Command::Invite { key, role, expires } => {
                if role == crate::access::Role::Owner {
                    return Err(AccessError::NotAllowed("inviting an owner".into()).into());
                }
                self.replica.write_member(&MemberOp::Invite { key, role, expires })?;
                Outcome::Changed
            }
            Command::RemoveMember(who) => {
                let device = self.find_member(&who)?;
                let op = self.replica.list().removal(device)?;
                self.replica.write_member(&op)?;
                Outcome::Changed
            }
            Command::NewInvite { .. } => {
                return Err(
                    AccessError::NotAllowed("an invite without its secret (the app makes invites)".into()).into()
                );
            }
            Command::SetName(name) => {
                self.replica.write_member(&MemberOp::Name { name: crate::limits::clip_name(&name) })?;
                Outcome::Changed
            }
        })
    }

    /// The active member a user named: by display name, or writer key (or unique prefix).
    fn find_member(&self, who: &str) -> Result<crate::keys::WriterId, TodoError> {
        let membership =
            self.replica.membership().ok_or_else(|| AccessError::NotAllowed("a public topic has no members".into()))?;
        let active: Vec<&crate::list::Member> = membership.members().iter().filter(|m| m.is_active()).collect();
        let by_name: Vec<_> = active.iter().filter(|m| m.name == who).collect();
        let matches: Vec<_> = if by_name.is_empty() {
            active.iter().filter(|m| !who.is_empty() && m.device.to_hex().starts_with(&who.to_lowercase())).collect()
        } else {
            by_name
        };
        match matches.as_slice() {
            [one] => Ok(one.device),
            [] => Err(TodoError::NoMember(who.to_owned())),
            many => Err(TodoError::Ambiguous(who.to_owned(), many.len())),
        }
    }

    fn on_persisted(&mut self, id: PersistId, result: Result<(), String>) {
        let Some((in_flight, batch)) = self.durability.in_flight.take() else { return };
        if in_flight != id {
            self.durability.in_flight = Some((in_flight, batch));
            return;
        }
        match result {
            Ok(()) => {
                let changed = self.durability.error.take().is_some();
                self.durability.durable = id;
                self.durability.failures = 0;
                self.release();
                if changed {
                    self.out.push(Output::Changed);
                }
            }
            Err(error) => {
                self.durability.failures = self.durability.failures.saturating_add(1);
                let backoff = self.config.persist_retry_ms << self.durability.failures.min(5).saturating_sub(1);
                self.durability.failed = Some((batch, self.now + backoff));
                if self.durability.error.replace(error).is_none() {
                    self.out.push(Output::Changed);
                }
            }
        }
    }

    fn on_tick(&mut self) {
        let now = self.now;
        if self.is_joining() && now.saturating_sub(self.join_sent_at) >= JOIN_RETRY_MS {
            self.join_sent_at = now;
            let introduced: Vec<P> = self
                .remotes
                .iter_mut()
                .filter(|(_, state)| state.session.is_introduced() && state.join_retries < JOIN_RETRIES)
                .map(|(remote, state)| {
                    state.join_retries += 1;
                    remote.clone()
                })
                .collect();
            for remote in introduced {
                if let Some(join) = self.join_request() {
                    self.route(&remote, vec![join]);
                }
            }
        }
        let due: Vec<(P, u64, String)> = self.closing.extract_if(.., |(_, at, _)| *at <= now).collect();
        for (remote, _, reason) in due {
            self.out.push(Output::Disconnect(remote, reason));
        }
        let ids: Vec<P> = self.remotes.keys().cloned().collect();
        for remote in ids {
            let Some(state) = self.remotes.get_mut(&remote) else { continue };
            match state.stream {
                Stream::Waiting(at) | Stream::Reopen(at) if at <= now => {
                    state.stream = Stream::Opening;
                    self.out.push(Output::OpenStream(remote.clone()));
                }
                _ => {}
            }
            let Some(state) = self.remotes.get_mut(&remote) else { continue };
            let messages = state.session.tick(&self.replica, now);
            self.route(&remote, messages);
        }
    }

    /// Applies what arrived, queues it for persisting, and pushes fresh entries and fork
    /// evidence to every session (behind the durability gate).
    fn after_change(&mut self) {
        self.replica.update();
        let unsaved = self.replica.take_unsaved();
        let fresh = self.replica.take_fresh();
        let forks = self.replica.take_fresh_forks();
        let notices = self.replica.take_notices();
        let changed = !fresh.is_empty() || !notices.is_empty();
        self.durability.unsaved.extend(unsaved);
        self.out.extend(notices.into_iter().map(Output::Notice));
        if !fresh.is_empty() || !forks.is_empty() {
            let ids: Vec<P> = self.remotes.keys().cloned().collect();
            for remote in ids {
                let Some(state) = self.remotes.get_mut(&remote) else { continue };
                let mut messages = state.session.push(&fresh);
                for evidence in &forks {
                    messages.extend(state.session.push_fork(evidence));
                }
                self.route(&remote, messages);
            }
        }
        self.issue_persist();
        if changed {
            self.out.push(Output::Changed);
        }
    }

    /// The batch that will hold everything the replica integrated so far.
    fn required(&mut self) -> PersistId {
        self.durability.unsaved.extend(self.replica.take_unsaved());
        self.durability.required()
    }

    /// Hands out the next batch, unless one is out or a failed one waits for its retry.
    fn issue_persist(&mut self) {
        let durability = &mut self.durability;
        if durability.in_flight.is_some() || durability.failed.as_ref().is_some_and(|(_, at)| *at > self.now) {
            return;
        }
        // A failed batch goes first, newer changes after it, all in one atomic write.
        let mut batch = durability.failed.take().map(|(batch, _)| batch).unwrap_or_default();
        batch.extend(std::mem::take(&mut durability.unsaved));
        if batch.is_empty() {
            return;
        }
        durability.issued += 1;
        let id = durability.issued;
        durability.in_flight = Some((id, batch.clone()));
        self.out.push(Output::Persist(id, batch));
    }

    /// Sends messages to a remote now, or holds them until what they may announce is durable.
    fn route(&mut self, remote: &P, messages: Vec<Message>) {
        let required = self.required();
        for message in messages {
            self.wait_or_emit(required, Waiting::Frame(remote.clone(), message.encode()));
        }
    }

    fn wait_or_emit(&mut self, required: PersistId, item: Waiting<P>) {
        if required <= self.durability.durable && self.waiting.is_empty() {
            self.emit(item);
            return;
        }
        if self.waiting.len() >= self.config.held_limit {
            // Drop the oldest frame (anti-entropy recovers it), never a reply: someone waits for it.
            if let Some(index) = self.waiting.iter().position(|(_, waiting)| matches!(waiting, Waiting::Frame(..))) {
                self.waiting.remove(index);
            }
        }
        self.waiting.push_back((required, item));
    }

    /// Emits what waited for batches now durable, in order.
    fn release(&mut self) {
        while let Some((required, _)) = self.waiting.front() {
            if *required > self.durability.durable {
                break;
            }
            let Some((_, item)) = self.waiting.pop_front() else { break };
            self.emit(item);
        }
    }

    fn emit(&mut self, item: Waiting<P>) {
        match item {
            Waiting::Reply(id, result) => self.out.push(Output::Reply(id, result)),
            Waiting::Frame(remote, frame) => {
                let Some(state) = self.remotes.get_mut(&remote) else { return };
                if state.stream == Stream::Open {
                    self.out.push(Output::Send(remote, frame));
                } else if state.backlog.len() < self.config.backlog_limit
                    && state.backlog.iter().map(Vec::len).sum::<usize>() + frame.len() <= crate::limits::BACKLOG_BYTES
                {
                    state.backlog.push_back(frame);
                }
            }
        }
    }

    fn drop_remote(&mut self, remote: P, reason: String) {
        if self.remotes.remove(&remote).is_some() {
            self.out.push(Output::Disconnect(remote, reason));
            self.out.push(Output::Changed);
        }
    }

    fn ban_remote(&mut self, remote: P, reason: String) {
        self.remotes.remove(&remote);
        self.out.push(Output::Ban(remote, reason));
        self.out.push(Output::Changed);
    }
}

/// A remote as status displays show it.
#[derive(Clone, Copy, Debug)]
pub struct PeerInfo<'a, P> {
    /// The remote.
    pub id: &'a P,
    /// Entries it holds that we do not.
    pub missing: u64,
    /// When a frame last came from it (0: never).
    pub last_frame: u64,
}
