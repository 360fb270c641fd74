//! A replica of one topic: the base over the document DB, the local writer, and the
//! bookkeeping a node needs (what to persist, what to push to peers).
//!
//! The replica knows nothing of the app on top: the view it is handed decides the
//! collections and indexes (the todo app builds its replicas in the `todo` module).

use crate::access::{AccessError, Role};
use crate::base::{Base, BaseEvent, IngestError, Ingested, UpdateStats};
use crate::db::{Db, DbOp};
use crate::keys::{Keypair, WriterId};
use crate::list::{ListView, MemberOp, Membership};
use crate::log::{DecodeError, Entry, ForkEvidence, ForkEvidenceError};
use crate::storage::{LoadedState, WriteBatch};
use crate::topic::{Access, Topic};

/// A problem found while opening stored state. The rest of the state is still loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// A stored entry does not decode.
    #[error("stored entry is corrupt: {0}")]
    CorruptEntry(#[from] DecodeError),
    /// A stored entry does not fit the logs.
    #[error("stored entry rejected: {0}")]
    Rejected(#[from] IngestError),
    /// Stored fork evidence does not check.
    #[error("stored fork evidence rejected: {0}")]
    BadFork(#[from] ForkEvidenceError),
}

/// Something a UI or log should show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A new writer joined the topic.
    WriterAdded(WriterId),
    /// A writer forked its log and is quarantined.
    Fork {
        /// The writer.
        writer: WriterId,
        /// Where the log forked.
        seq: u64,
    },
    /// A waiting entry was rejected once its dependencies arrived.
    Rejected(IngestError),
    /// A writer reached its quota (or the list its own): its further entries are refused,
    /// and this replica stops asking for them.
    OverQuota {
        /// The writer.
        writer: WriterId,
        /// The quota, in bytes.
        limit: u64,
    },
    /// Every replica ignores an operation of a private list: its writer had no right to
    /// it there, or it does not decrypt.
    Refused {
        /// The writer.
        writer: WriterId,
        /// The entry.
        seq: u64,
        /// Why.
        reason: AccessError,
    },
}

/// Why a local write was not made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// This device may not do that in this list.
    #[error("{0}")]
    Access(#[from] AccessError),
    /// The base refused the entry.
    #[error(transparent)]
    Ingest(#[from] IngestError),
}

/// One topic's replica.
#[derive(Debug)]
pub struct Replica {
    topic: Topic,
    keypair: Keypair,
    base: Base<ListView>,
    unsaved: WriteBatch,
    fresh: Vec<Entry>,
    fresh_forks: Vec<ForkEvidence>,
    notices: Vec<Notice>,
    /// Whether local writes are a batch under one seal ([`Replica::begin_batch`]).
    batching: bool,
}

impl Replica {
    /// An empty replica for a topic over `view`, writing as `keypair`.
    pub fn with_view(topic: Topic, keypair: Keypair, view: Db) -> Self {
        let keypair = keypair.bound_to(topic.id().0);
        let view = match topic.access() {
            Access::Public => ListView::public(view),
            Access::Private { capability, keys } => {
                ListView::private(view, (**keys).clone(), keypair.clone(), capability.first_content_key())
            }
        };
        let mut base = Base::new(view);
        base.set_local(keypair.id());
        base.set_list(topic.id().0, !topic.is_private());
        Self {
            topic,
            keypair,
            base,
            unsaved: WriteBatch::default(),
            fresh: Vec::new(),
            fresh_forks: Vec::new(),
            notices: Vec::new(),
            batching: false,
        }
    }

    /// Opens a replica from stored state. Corrupt or invalid stored items are reported and
    /// skipped; everything else is loaded.
    pub fn open_with_view(topic: Topic, keypair: Keypair, view: Db, state: LoadedState) -> (Self, Vec<OpenError>) {
        let topic_id = topic.id().0;
        let mut replica = Self::with_view(topic, keypair, view);
        let mut errors = Vec::new();
        let mut entries = Vec::with_capacity(state.entries.len());
        for bytes in &state.entries {
            match Entry::decode(bytes) {
                Ok(entry) => entries.push(entry),
                Err(error) => errors.push(OpenError::CorruptEntry(error)),
            }
        }
        errors.extend(replica.base.ingest_stored(entries).into_iter().map(OpenError::Rejected));
        for bytes in &state.forks {
            match ForkEvidence::decode_and_check(bytes, &topic_id) {
                Ok(evidence) => {
                    let _ = replica.base.add_fork_evidence(evidence);
                }
                Err(error) => errors.push(OpenError::BadFork(error)),
            }
        }
        replica.base.update();
        replica.base.shrink_to_fit();
        // Loaded items are already stored and need not be pushed: drop the bookkeeping.
        replica.base.take_integrated();
        replica.base.take_events();
        replica.base.view_mut().take_refused();
        // A batch is stored whole with its seal; should the store hold an unsealed tip of
        // ours all the same, seal it now so that others can take it.
        replica.seal();
        (replica, errors)
    }

    /// The topic.
    pub fn topic(&self) -> &Topic {
        &self.topic
    }

    /// The local writer's key.
    pub fn writer_id(&self) -> WriterId {
        self.keypair.id()
    }

    /// The local key pair.
    pub fn keypair(&self) -> &Keypair {
        &self.keypair
    }

    /// The base (logs, order, view).
    pub fn base(&self) -> &Base<ListView> {
        &self.base
    }

    /// The document DB view.
    pub fn db(&self) -> &Db {
        self.base.view().db()
    }

    /// The document DB view, for local settings (indexes, subscriptions).
    pub fn db_mut(&mut self) -> &mut Db {
        self.base.view_mut().db_mut()
    }

    /// The list's view (DB and, for a private list, membership).
    pub fn list(&self) -> &ListView {
        self.base.view()
    }

    /// The membership of a private list.
    pub fn membership(&self) -> Option<&Membership> {
        self.base.view().membership()
    }

    /// This device's role in a private list (`None` on a public topic).
    pub fn role(&self) -> Option<Role> {
        self.base.view().role()
    }

    /// Writes one operation as the local writer and applies it to the view (sealed under
    /// the current content key in a private list).
    pub fn write(&mut self, op: &DbOp) -> Result<Entry, WriteError> {
        let seq = self.base.len(&self.keypair.id());
        let payload = self.base.view().seal_op(seq, &op.encode())?;
        self.append(payload)
    }

    /// Writes one membership operation of a private list as the local writer.
    pub fn write_member(&mut self, op: &MemberOp) -> Result<Entry, WriteError> {
        let seq = self.base.len(&self.keypair.id());
        let payload = self.base.view().seal_member_op(seq, op)?;
        self.append(payload)
    }

    /// Starts a batch of local writes under one signature: each write is sealed only every
    /// `SEAL_EVERY_*` entries, and [`Replica::end_batch`] seals the last one. Outside a
    /// batch every write is sealed.
    pub fn begin_batch(&mut self) {
        self.batching = true;
    }

    /// Ends a batch of local writes, sealing the last one.
    pub fn end_batch(&mut self) {
        self.batching = false;
        self.seal();
    }

    fn append(&mut self, payload: Vec<u8>) -> Result<Entry, WriteError> {
        let entry = self.base.append_local_with(&self.keypair, payload, !self.batching)?;
        self.base.update();
        self.drain_base();
        Ok(entry)
    }

    /// Verifies and ingests an entry from a peer. Call [`Replica::update`] after a batch.
    pub fn ingest(&mut self, entry: Entry) -> Result<Ingested, IngestError> {
        let result = self.base.ingest(entry);
        self.drain_base();
        result
    }

    /// Ingests an entry of a run checked with [`Base::check_run`]; `proof` is the rest of the
    /// run after it. Call [`Replica::update`] after a batch.
    pub fn ingest_proven(&mut self, entry: Entry, proof: &[Entry]) -> Result<Ingested, IngestError> {
        let result = self.base.ingest_proven(entry, proof);
        self.drain_base();
        result
    }

    /// Records fork evidence received from a peer; returns whether it was news.
    pub fn add_fork_evidence(&mut self, evidence: ForkEvidence) -> Result<bool, ForkEvidenceError> {
        let news = self.base.add_fork_evidence(evidence)?;
        self.drain_base();
        Ok(news)
    }

    /// Heads found naming entries held under another hash (see [`Base::take_disputes`]).
    pub fn take_disputes(&mut self) -> Vec<(WriterId, u64)> {
        self.base.take_disputes()
    }

    /// Applies ingested entries to the view.
    pub fn update(&mut self) -> UpdateStats {
        let stats = self.base.update();
        for (writer, seq, reason) in self.base.view_mut().take_refused() {
            self.notices.push(Notice::Refused { writer, seq, reason });
        }
        stats
    }

    /// Seals our tip if it is not sealed, so that one signature covers the batch before it.
    /// [`Replica::take_unsaved`] and [`Replica::take_fresh`] call it: a batch is never saved
    /// or sent without its seal.
    pub fn seal(&mut self) {
        let Some(sealed) = self.base.seal_local_tip(&self.keypair) else { return };
        self.base.take_integrated();
        let (writer, seq) = (sealed.writer(), sealed.seq());
        match self.unsaved.entries.iter_mut().rev().find(|(w, s, _)| *w == writer && *s == seq) {
            Some(saved) => saved.2 = sealed.bytes().clone(),
            None => self.unsaved.entries.push((writer, seq, sealed.bytes().clone())),
        }
        match self.fresh.iter_mut().rev().find(|fresh| fresh.hash() == sealed.hash()) {
            Some(fresh) => *fresh = sealed,
            None => self.fresh.push(sealed),
        }
    }

    /// What to persist since the last call (the batch of local writes sealed first).
    pub fn take_unsaved(&mut self) -> WriteBatch {
        self.seal();
        std::mem::take(&mut self.unsaved)
    }

    /// Entries integrated since the last call (local or from peers), to push to every session
    /// (the batch of local writes sealed first).
    pub fn take_fresh(&mut self) -> Vec<Entry> {
        self.seal();
        std::mem::take(&mut self.fresh)
    }

    /// Fork evidence learned since the last call, to gossip to every session.
    pub fn take_fresh_forks(&mut self) -> Vec<ForkEvidence> {
        std::mem::take(&mut self.fresh_forks)
    }

    /// Notices for the UI since the last call.
    pub fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    fn drain_base(&mut self) {
        for entry in self.base.take_integrated() {
            self.unsaved.entries.push((entry.writer(), entry.seq(), entry.bytes().clone()));
            self.fresh.push(entry);
        }
        for event in self.base.take_events() {
            match event {
                BaseEvent::WriterAdded(writer) => self.notices.push(Notice::WriterAdded(writer)),
                BaseEvent::Fork(evidence) => {
                    self.notices.push(Notice::Fork { writer: evidence.writer(), seq: evidence.seq() });
                    self.unsaved.forks.push((evidence.writer(), evidence.encode()));
                    self.fresh_forks.push(*evidence);
                }
                BaseEvent::Rejected(error) => self.notices.push(Notice::Rejected(error)),
                BaseEvent::OverQuota { writer, limit } => self.notices.push(Notice::OverQuota { writer, limit }),
            }
        }
        for (writer, seq, reason) in self.base.view_mut().take_refused() {
            self.notices.push(Notice::Refused { writer, seq, reason });
        }
    }
}
