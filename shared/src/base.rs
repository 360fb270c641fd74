//! The multi-writer base (the seed's Autobase): the causal DAG of every writer's log,
//! linearized deterministically and applied to a view.
//!
//! Order: entries sort by `(clock, writer, seq)`. Every entry's Lamport clock is exactly
//! one more than the largest clock among its causal dependencies (checked on arrival),
//! so this order is a linear extension of the causal order, and any two replicas that
//! hold the same entries compute the same order, whatever order the entries arrived in.
//!
//! Entries are integrated as soon as their dependencies are present (the previous entry of
//! the same writer and every head); until then they wait in a bounded pending set indexed by
//! the first missing dependency. [`Base::update`] applies the integrated entries: when one
//! sorts before the tip, the view is rolled back with undo records to that position and the
//! rest is reapplied.

use std::collections::{BTreeMap, VecDeque};

use rustc_hash::FxHashMap as HashMap;

use ed25519_dalek::VerifyingKey;

use crate::keys::{Hash, Keypair, WriterId};
use crate::limits;
use crate::log::{Entry, EntryBody, ForkEvidence, ForkEvidenceError, Head, MAX_CLOCK, MAX_ENTRY_BYTES};

/// The node at `seq` of a log: `u64` end to end, so a seq beyond the address space (on
/// wasm32, 2^32 and above) is simply not held, never another entry.
fn node_at<T>(nodes: &[T], seq: u64) -> Option<&T> {
    nodes.get(usize::try_from(seq).ok()?)
}

/// Where an operation sits, handed to [`Apply::apply`].
#[derive(Clone, Copy, Debug)]
pub struct ApplyContext {
    /// The author of the entry.
    pub writer: WriterId,
    /// Its seq in the author's log.
    pub seq: u64,
    /// Its Lamport clock.
    pub clock: u64,
}

/// A view built from linearized operations, able to undo them in reverse order.
pub trait Apply {
    /// A decoded operation.
    type Op;
    /// What undoes one applied operation.
    type Undo;
    /// Decodes an entry payload (once, when the entry is integrated); `None` makes the entry
    /// a no-op (for example an operation from a newer version), so the writer's log stays intact.
    fn decode_op(&mut self, payload: &[u8], ctx: &ApplyContext) -> Option<Self::Op>;
    /// Applies one operation and returns how to undo it. Must be deterministic. The
    /// operation is decoded for this call (again if a reorg reapplies it), so it is the
    /// view's to keep.
    fn apply(&mut self, op: Self::Op, ctx: &ApplyContext) -> Self::Undo;
    /// Undoes the most recently applied operation not yet undone.
    fn undo(&mut self, undo: Self::Undo);
    /// The part of the view an operation reads and writes, when it is confined to one part.
    /// `Some(key)` promises that operations with different keys touch disjoint state, so they
    /// commute and undo records of one key stay valid whatever happens to other keys; a
    /// reorg then only undoes and reapplies the operations that share a key with the late
    /// entries. `None` (the default) means the operation may touch anything.
    fn op_key(&self, _op: &Self::Op) -> Option<u64> {
        None
    }
    /// Called before a batch of undo/apply calls.
    fn begin_update(&mut self) {}
    /// Called after it (for example to emit change notifications).
    fn end_update(&mut self) {}
    /// After an update: where the view must be rebuilt from, when applying operations
    /// changed how earlier ones read (a private list's view learned a content key that
    /// earlier entries named). `None` (the default) when nothing needs redoing.
    fn take_rebuild(&mut self) -> Option<Position> {
        None
    }
}

/// The sort key of an entry in the linear order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Lamport clock.
    pub clock: u64,
    /// Author.
    pub writer: WriterId,
    /// Seq in the author's log.
    pub seq: u64,
}

/// Limits that keep a hostile peer from exhausting memory (defaults in [`crate::limits`]).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Most writers on one base besides the local one ([`limits::MAX_WRITERS`]).
    pub max_writers: usize,
    /// Most entries waiting for dependencies ([`limits::MAX_PENDING_ENTRIES`]).
    pub max_pending: usize,
    /// Most bytes of entries waiting for dependencies ([`limits::MAX_PENDING_BYTES`]).
    pub max_pending_bytes: usize,
    /// How far ahead of a log's length an entry may be and still wait ([`limits::MAX_SEQ_AHEAD`]).
    pub max_seq_ahead: u64,
    /// Most entry bytes of one writer ([`limits::MAX_WRITER_BYTES`]).
    pub max_writer_bytes: u64,
    /// Most entry bytes in all ([`limits::MAX_TOPIC_BYTES`]).
    pub max_topic_bytes: u64,
    /// Most heads in a local entry ([`limits::HEADS_PER_ENTRY`]).
    pub heads_per_entry: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_writers: limits::MAX_WRITERS,
            max_pending: limits::MAX_PENDING_ENTRIES,
            max_pending_bytes: limits::MAX_PENDING_BYTES,
            max_seq_ahead: limits::MAX_SEQ_AHEAD,
            max_writer_bytes: limits::MAX_WRITER_BYTES,
            max_topic_bytes: limits::MAX_TOPIC_BYTES,
            heads_per_entry: limits::HEADS_PER_ENTRY,
        }
    }
}

/// What happened to an ingested entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ingested {
    /// Integrated; the count includes waiting entries it unblocked.
    Integrated(usize),
    /// Already held.
    Duplicate,
    /// Valid so far, waiting for a dependency.
    Pending,
}

/// Why an entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// An unsealed entry arrived without the run that proves it (non-fatal: an honest peer
    /// sends runs whole, but an answer may be split and the seal still on its way).
    #[error("entry {seq} of writer {writer:?} came without its seal")]
    Unsealed {
        /// Its writer.
        writer: WriterId,
        /// Its seq.
        seq: u64,
    },
    /// The entries after an entry do not lead to a valid seal.
    #[error("run of writer {writer:?}: {error}")]
    BadRun {
        /// Its writer.
        writer: WriterId,
        /// What is wrong with it.
        error: crate::log::RunError,
    },
    /// The signature does not verify with the writer's key.
    #[error("bad signature on entry {seq} of writer {writer:?}")]
    BadSignature {
        /// Claimed author.
        writer: WriterId,
        /// Claimed seq.
        seq: u64,
    },
    /// The writer id is not a valid ed25519 key.
    #[error("writer key {0:?} is not a valid ed25519 public key")]
    InvalidWriterKey(WriterId),
    /// `prev` is not the hash of the writer's previous entry.
    #[error("entry {seq} of writer {writer:?} does not chain to its previous entry")]
    BrokenChain {
        /// Author.
        writer: WriterId,
        /// Seq.
        seq: u64,
    },
    /// A head names an entry whose hash differs from the one held.
    #[error("entry {seq} of writer {writer:?} names a head we hold with another hash")]
    HeadMismatch {
        /// Author.
        writer: WriterId,
        /// Seq.
        seq: u64,
    },
    /// The clock is not one more than the largest clock of its dependencies.
    #[error("entry {seq} of writer {writer:?} has clock {got}, expected {expected}")]
    ImpossibleClock {
        /// Author.
        writer: WriterId,
        /// Seq.
        seq: u64,
        /// What the dependencies imply.
        expected: u64,
        /// What the entry says.
        got: u64,
    },
    /// The seq is further ahead of the log than any honest sync would send.
    #[error("entry seq {seq} is too far ahead of log length {len}")]
    SeqTooFarAhead {
        /// Our log length for that writer.
        len: u64,
        /// The entry's seq.
        seq: u64,
    },
    /// The writer forked its log: two different signed entries at one seq.
    #[error("writer {:?} forked its log at seq {}", .0.writer(), .0.seq())]
    Fork(Box<ForkEvidence>),
    /// The writer is quarantined after a fork.
    #[error("writer {0:?} is quarantined after forking its log")]
    Quarantined(WriterId),
    /// Too many writers.
    #[error("too many writers (limit {0})")]
    TooManyWriters(usize),
    /// Too many entries waiting for dependencies.
    #[error("too many entries waiting for dependencies (limit {0})")]
    PendingFull(usize),
    /// The writer's log, or the whole replica, is at its byte quota.
    #[error("writer {writer:?} is over its quota of {limit} bytes")]
    OverQuota {
        /// The writer whose entry was refused.
        writer: WriterId,
        /// The quota reached.
        limit: u64,
    },
    /// A local entry would break the rules receivers check (a bug, never a peer's doing).
    #[error("local entry is invalid: {0}")]
    LocalEntryInvalid(String),
    /// A local entry would be larger than entries may be.
    #[error("entry of {len} bytes is over the {max} byte limit")]
    Oversized {
        /// Its encoded size.
        len: usize,
        /// The limit.
        max: usize,
    },
}

impl IngestError {
    /// Whether a peer that sent the entry broke the rules (forged or malformed data), as
    /// opposed to a condition an honest peer can cause (a fork it relayed, a limit of ours).
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            IngestError::Fork(_)
                | IngestError::Quarantined(_)
                | IngestError::PendingFull(_)
                | IngestError::TooManyWriters(_)
                | IngestError::OverQuota { .. }
                | IngestError::Unsealed { .. }
                | IngestError::BadRun { .. }
                | IngestError::SeqTooFarAhead { .. }
                | IngestError::Oversized { .. }
                | IngestError::LocalEntryInvalid(_)
        )
    }
}

/// Something the driver should know about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseEvent {
    /// A writer was seen for the first time (open membership).
    WriterAdded(WriterId),
    /// A writer forked its log and is now quarantined.
    Fork(Box<ForkEvidence>),
    /// A waiting entry turned out invalid once its dependencies arrived.
    Rejected(IngestError),
    /// A writer's entries are refused from here on: its log, or the replica, reached its
    /// quota (once per writer).
    OverQuota {
        /// The writer.
        writer: WriterId,
        /// The quota reached, in bytes.
        limit: u64,
    },
}

/// What one [`Base::update`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpdateStats {
    /// Operations undone.
    pub rolled_back: usize,
    /// Operations applied.
    pub applied: usize,
}

/// A writer as the base holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriterInfo {
    /// Its key.
    pub id: WriterId,
    /// Entries integrated.
    pub len: u64,
    /// Hash of its last integrated entry.
    pub head: Option<Hash>,
    /// Whether it forked and is quarantined.
    pub quarantined: bool,
}

/// An integrated entry. Its operation is decoded when it is applied (without keeping every
/// decoded operation of the history in memory), from a copy of its payload in its writer's
/// payload arena (see [`WriterLog::payloads`]).
#[derive(Debug)]
struct Node {
    entry: Entry,
    scope: Scope,
    /// Where its payload starts in the arena.
    payload_at: usize,
    /// Its payload's length.
    payload_len: u32,
}

/// What an operation touches (see [`Apply::op_key`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    /// Not known yet: the operation was never decoded.
    Unknown,
    /// Nothing: the payload did not decode.
    Nothing,
    /// One keyed part of the view.
    Key(u64),
    /// Possibly anything.
    Everything,
}

#[derive(Debug)]
struct WriterLog {
    id: WriterId,
    key: VerifyingKey,
    nodes: Vec<Node>,
    /// The payloads of `nodes`, back to back, in integration order. Catching up integrates
    /// entries in (nearly) the order they are applied, so applying reads these sequentially
    /// instead of chasing each entry's own allocations around memory.
    payloads: Vec<u8>,
    /// For each other writer, one past the highest seq this writer's entries referenced.
    frontier: BTreeMap<WriterId, u64>,
    fork: Option<Box<ForkEvidence>>,
    /// Bytes of its integrated entries (for its quota).
    bytes: u64,
    /// One past its last sealed integrated entry: what this replica can prove to others.
    sealed_len: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Slot {
    key: Position,
    writer_index: u32,
}

type Dep = (WriterId, u64);

#[derive(Debug, Default)]
struct Pending {
    entries: HashMap<Dep, Entry>,
    waiting: HashMap<Dep, Vec<Dep>>,
    /// Arrival order, for evicting the oldest when full (holds stale deps too: skipped).
    arrival: VecDeque<Dep>,
    bytes: usize,
}

impl Pending {
    fn insert(&mut self, dep: Dep, entry: Entry, missing: Dep) {
        self.bytes += entry.bytes().len();
        self.entries.insert(dep, entry);
        self.waiting.entry(missing).or_default().push(dep);
        self.arrival.push_back(dep);
    }

    /// Re-parks an entry taken out by [`Pending::take`] (it keeps its place in arrival order).
    fn repark(&mut self, dep: Dep, entry: Entry, missing: Dep) {
        self.bytes += entry.bytes().len();
        self.entries.insert(dep, entry);
        self.waiting.entry(missing).or_default().push(dep);
    }

    fn take(&mut self, dep: &Dep) -> Option<Entry> {
        let entry = self.entries.remove(dep)?;
        self.bytes -= entry.bytes().len();
        Some(entry)
    }

    /// Drops the oldest waiting entry. Its waiter records go stale and are skipped.
    fn evict_oldest(&mut self) -> bool {
        while let Some(dep) = self.arrival.pop_front() {
            if self.take(&dep).is_some() {
                return true;
            }
        }
        false
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    /// Forgets the records of evicted entries.
    fn compact(&mut self) {
        let entries = &self.entries;
        self.arrival.retain(|dep| entries.contains_key(dep));
        self.waiting.retain(|_, waiters| {
            waiters.retain(|dep| entries.contains_key(dep));
            !waiters.is_empty()
        });
    }
}

enum Readiness {
    Ready,
    Missing(Dep),
    /// A head names an entry we hold under another hash: its writer forked, or the head is
    /// forged. The entry waits until we learn which (by asking the sender for that entry).
    Disputed(Dep),
}

/// The multi-writer base over a view `V`.
#[derive(Debug)]
pub struct Base<V: Apply> {
    view: V,
    writers: Vec<WriterLog>,
    by_id: HashMap<WriterId, u32>,
    order: Vec<Slot>,
    undo: Vec<Option<V::Undo>>,
    staged: Vec<Slot>,
    pending: Pending,
    events: VecDeque<BaseEvent>,
    integrated: Vec<Entry>,
    /// Writers whose entries reached a quota: not asked for any more.
    over_quota: std::collections::BTreeSet<WriterId>,
    limits: Limits,
    /// The local writer, whose slot is always free (set by [`Base::set_local`]).
    local: Option<WriterId>,
    /// Bytes of entries integrated, in all.
    total_bytes: u64,
    /// Where the view must be rebuilt from on the next update (a fork voided entries).
    dirty_from: Option<Position>,
    /// Heads found disputed since the last [`Base::take_disputes`].
    disputes: Vec<Dep>,
    /// Writers named in the heads of entries held or waiting.
    referenced: rustc_hash::FxHashSet<WriterId>,
    /// The list whose entries this base holds: entry signatures must name it.
    list: [u8; 32],
    /// Whether version 1 entries (signed without a list id) are accepted: public topics only.
    legacy: bool,
}

impl<V: Apply> Base<V> {
    /// A base over an empty view.
    pub fn new(view: V) -> Self {
        Self::with_limits(view, Limits::default())
    }

    /// A base with explicit limits.
    pub fn with_limits(view: V, limits: Limits) -> Self {
        Self {
            view,
            writers: Vec::new(),
            by_id: HashMap::default(),
            order: Vec::new(),
            undo: Vec::new(),
            staged: Vec::new(),
            pending: Pending::default(),
            events: VecDeque::new(),
            integrated: Vec::new(),
            over_quota: Default::default(),
            limits,
            local: None,
            total_bytes: 0,
            dirty_from: None,
            disputes: Vec::new(),
            referenced: rustc_hash::FxHashSet::default(),
            list: [0; 32],
            legacy: true,
        }
    }

    /// The list this base holds (see [`Base::set_list`]).
    pub fn list(&self) -> &[u8; 32] {
        &self.list
    }

    /// Names the list this base holds: every entry's signature must name it. `legacy`
    /// accepts version 1 entries too, which name no list (public topics, for their older data).
    pub fn set_list(&mut self, list: [u8; 32], legacy: bool) {
        self.list = list;
        self.legacy = legacy;
    }

    /// Whether a writer is held, or named by an entry held or waiting (so its entries are
    /// needed, not merely offered).
    pub fn is_known(&self, writer: &WriterId) -> bool {
        self.by_id.contains_key(writer) || self.referenced.contains(writer)
    }

    /// Names the local writer: its slot is never taken by remote writers, and quotas do not
    /// refuse its entries.
    pub fn set_local(&mut self, writer: WriterId) {
        self.local = Some(writer);
    }

    /// Heads found naming an entry we hold under another hash, since the last call: the
    /// driver asks the sender for those entries, which proves the fork (or the sender wrong).
    pub fn take_disputes(&mut self) -> Vec<(WriterId, u64)> {
        std::mem::take(&mut self.disputes)
    }

    /// The view as of the last [`Base::update`].
    pub fn view(&self) -> &V {
        &self.view
    }

    /// The view, mutably (for local settings such as indexes and subscriptions).
    pub fn view_mut(&mut self) -> &mut V {
        &mut self.view
    }

    /// Verifies and ingests one sealed entry from anywhere (network or storage). An
    /// unsealed entry needs its run: see [`Base::ingest_run`].
    pub fn ingest(&mut self, entry: Entry) -> Result<Ingested, IngestError> {
        self.ingest_with(entry, None)
    }

    /// Checks a run of one writer's entries (consecutive, hash-linked, the last one sealed:
    /// see [`crate::log::check_run`]) with one signature check, and ingests each entry.
    pub fn ingest_run(&mut self, run: &[Entry]) -> Vec<Result<Ingested, IngestError>> {
        if let Err(error) = self.check_run(run) {
            return vec![Err(error)];
        }
        (0..run.len()).map(|at| self.ingest_proven(run[at].clone(), &run[at + 1..])).collect()
    }

    /// Checks that `run` is a run of one writer that its seal proves, for this list.
    pub fn check_run(&self, run: &[Entry]) -> Result<(), IngestError> {
        let Some(first) = run.first() else { return Ok(()) };
        let writer = first.writer();
        let key = match self.by_id.get(&writer) {
            Some(&index) => self.writers[index as usize].key,
            None => writer.verifying_key().map_err(|_| IngestError::InvalidWriterKey(writer))?,
        };
        crate::log::check_run(run, &key, &self.list, self.legacy).map_err(|error| match error {
            crate::log::RunError::BadSeal(seq) => IngestError::BadSignature { writer, seq },
            error => IngestError::BadRun { writer, error },
        })
    }

    /// Ingests an entry of a run already checked with [`Base::check_run`]; `proof` is the
    /// rest of that run after it (kept as fork evidence should the entry conflict).
    pub fn ingest_proven(&mut self, entry: Entry, proof: &[Entry]) -> Result<Ingested, IngestError> {
        self.ingest_with(entry, Some(proof))
    }

    fn ingest_with(&mut self, entry: Entry, proof: Option<&[Entry]>) -> Result<Ingested, IngestError> {
        let (writer, seq) = (entry.writer(), entry.seq());
        let existing = self.by_id.get(&writer).map(|&index| &self.writers[index as usize]);
        let mut conflict = None;
        if let Some(log) = existing {
            if log.fork.is_some() {
                return Err(IngestError::Quarantined(writer));
            }
            if let Some(node) = node_at(&log.nodes, seq) {
                if node.entry.hash() == entry.hash() {
                    return Ok(Ingested::Duplicate);
                }
                conflict = Some(node.entry.clone());
            }
        }
        if conflict.is_none()
            && let Some(waiting) = self.pending.entries.get(&(writer, seq))
        {
            if waiting.hash() == entry.hash() {
                return Ok(Ingested::Pending);
            }
            conflict = Some(waiting.clone());
        }
        if let Some(first) = conflict {
            self.authenticate(&entry, proof)?;
            let Some(first_proof) = self.proof_of(&first) else {
                // We cannot show others our branch (its seal is not here): refuse the entry
                // without penalty; the fork shows once both branches can be proven.
                return Err(IngestError::Unsealed { writer, seq });
            };
            let evidence = ForkEvidence {
                first,
                second: entry,
                first_proof,
                second_proof: proof.map(<[Entry]>::to_vec).unwrap_or_default(),
            };
            return Err(self.fork(evidence));
        }
        let len = self.len(&writer);
        if seq > len.saturating_add(self.limits.max_seq_ahead) {
            return Err(IngestError::SeqTooFarAhead { len, seq });
        }
        self.authenticate(&entry, proof)?;
        self.ingest_verified(entry)
    }

    /// An entry with a proof from a checked run is authentic; otherwise its own seal must be.
    fn authenticate(&mut self, entry: &Entry, proof: Option<&[Entry]>) -> Result<(), IngestError> {
        match proof {
            Some(_) => Ok(()),
            None if !entry.is_sealed() => Err(IngestError::Unsealed { writer: entry.writer(), seq: entry.seq() }),
            None => self.verify(entry),
        }
    }

    /// The entries after a held or waiting entry up to its run's seal (empty when it is
    /// sealed itself), or `None` when that seal is not here.
    fn proof_of(&self, entry: &Entry) -> Option<Vec<Entry>> {
        let writer = entry.writer();
        let log = self.by_id.get(&writer).map(|&index| &self.writers[index as usize]);
        let mut proof = Vec::new();
        let mut last = entry.clone();
        while !last.is_sealed() {
            if proof.len() >= crate::limits::MAX_RUN_ENTRIES {
                return None;
            }
            let next = last.seq().checked_add(1)?;
            let held = log.and_then(|log| node_at(&log.nodes, next)).map(|node| &node.entry);
            let found = held.or_else(|| self.pending.entries.get(&(writer, next)))?;
            if !found.follows(&last) {
                return None;
            }
            proof.push(found.clone());
            last = found.clone();
        }
        Some(proof)
    }

    /// Ingests an entry whose signature the caller has already checked (for example with
    /// [`Base::ingest_stored`], or an entry this process signed). Every other check still runs.
    pub fn ingest_verified(&mut self, entry: Entry) -> Result<Ingested, IngestError> {
        let dep = (entry.writer(), entry.seq());
        let index = self.by_id.get(&dep.0).copied();
        let len = index.map_or(0, |index| self.writers[index as usize].nodes.len() as u64);
        let waiting = !self.pending.entries.is_empty() && self.pending.entries.contains_key(&dep);
        if waiting || dep.1 < len {
            return Ok(Ingested::Duplicate);
        }
        if index.is_none() {
            self.check_writer_room(dep.0)?;
        }
        match self.readiness(&entry, index)? {
            Readiness::Ready => {
                self.integrate(entry, index)?;
                Ok(Ingested::Integrated(1 + self.release(dep)))
            }
            Readiness::Missing(missing) => self.park(dep, entry, missing),
            Readiness::Disputed(head) => {
                self.disputes.push(head);
                self.park(dep, entry, head)
            }
        }
    }

    /// Keeps an entry until `missing` is settled, evicting the oldest waiting entries to
    /// stay within the pending limits (sync asks for evicted entries again).
    fn park(&mut self, dep: Dep, entry: Entry, missing: Dep) -> Result<Ingested, IngestError> {
        let size = entry.bytes().len();
        if self.limits.max_pending == 0 || size > self.limits.max_pending_bytes {
            return Err(IngestError::PendingFull(self.limits.max_pending));
        }
        while self.pending.len() >= self.limits.max_pending || self.pending.bytes + size > self.limits.max_pending_bytes
        {
            if !self.pending.evict_oldest() {
                break;
            }
        }
        self.referenced.extend(entry.body().heads.iter().map(|head| head.writer));
        self.pending.insert(dep, entry, missing);
        if self.pending.arrival.len() > 2 * self.limits.max_pending + 1024 {
            self.pending.compact();
        }
        Ok(Ingested::Pending)
    }

    /// Whether a writer not held yet may join: a slot is free (the local writer's is
    /// reserved), and the replica is not at its byte quota.
    fn check_writer_room(&self, writer: WriterId) -> Result<(), IngestError> {
        if Some(writer) == self.local {
            return Ok(());
        }
        let remote_writers = self.writers.len() - usize::from(self.local_index().is_some());
        if remote_writers >= self.limits.max_writers {
            return Err(IngestError::TooManyWriters(self.limits.max_writers));
        }
        if self.total_bytes >= self.limits.max_topic_bytes {
            return Err(IngestError::OverQuota { writer, limit: self.limits.max_topic_bytes });
        }
        Ok(())
    }

    /// Records that a writer reached a quota, telling the driver the first time.
    fn over_quota(&mut self, writer: WriterId, limit: u64) -> IngestError {
        if self.over_quota.insert(writer) {
            self.events.push_back(BaseEvent::OverQuota { writer, limit });
        }
        IngestError::OverQuota { writer, limit }
    }

    /// Whether a writer's entries reached a quota here (so there is no point asking for more).
    pub fn is_over_quota(&self, writer: &WriterId) -> bool {
        !self.over_quota.is_empty() && self.over_quota.contains(writer)
    }

    fn local_index(&self) -> Option<u32> {
        self.by_id.get(&self.local?).copied()
    }

    /// Ingests entries read back from local storage. Per writer, the hash chain is checked
    /// link by link and only the last sealed entry's signature is verified (it covers every
    /// earlier body through the chain); if that fails, each entry is verified on its own.
    /// Entries after a remote writer's last seal cannot be proven to anyone: they are left
    /// out (and asked again with their seal); the local writer's are kept, and sealed by
    /// [`Base::seal_local_tip`].
    pub fn ingest_stored(&mut self, entries: Vec<Entry>) -> Vec<IngestError> {
        let mut by_writer: BTreeMap<WriterId, Vec<Entry>> = BTreeMap::new();
        for entry in entries {
            by_writer.entry(entry.writer()).or_default().push(entry);
        }
        let mut errors = Vec::new();
        for (writer, mut chain) in by_writer {
            chain.sort_by_key(Entry::seq);

            let linked = chain.windows(2).all(|pair| pair[1].follows(&pair[0]));
            let starts_at_zero = chain.first().is_some_and(|e| e.seq() == 0);
            let key = writer.verifying_key();
            let local = Some(writer) == self.local;
            let sealed_end = chain.iter().rposition(Entry::is_sealed).map_or(0, |at| at + 1);
            let tip_valid = match (&key, sealed_end.checked_sub(1).map(|at| &chain[at])) {
                (Ok(key), Some(tip)) => self.signature_holds(tip, key),
                (Ok(_), None) => local,
                (Err(_), _) => false,
            };
            if linked && starts_at_zero && tip_valid {
                if !local {
                    chain.truncate(sealed_end);
                }
                // Sized once: growing by doubling would hold up to twice the log while loading.
                if let Ok(index) = self.ensure_writer(writer) {
                    let log = &mut self.writers[index as usize];
                    log.nodes.reserve_exact(chain.len());
                    log.payloads.reserve_exact(chain.iter().map(|entry| entry.body().payload.len()).sum());
                }
                for entry in chain {
                    if let Err(error) = self.ingest_verified(entry) {
                        errors.push(error);
                    }
                }
            } else {
                for entry in chain.into_iter().filter(Entry::is_sealed) {
                    if let Err(error) = self.ingest(entry) {
                        errors.push(error);
                    }
                }
            }
        }
        errors
    }

    /// Records fork evidence from elsewhere (a peer): checks it and quarantines the writer.
    /// Returns whether it was news.
    pub fn add_fork_evidence(&mut self, evidence: ForkEvidence) -> Result<bool, ForkEvidenceError> {
        evidence.check(&self.list)?;
        let writer = evidence.writer();
        // Evidence about a writer we do not hold takes no writer slot (it cannot squat them);
        // should the writer's entries come, the fork shows again.
        let Some(&index) = self.by_id.get(&writer) else { return Ok(false) };
        if self.writers[index as usize].fork.as_ref().is_some_and(|known| known.seq() <= evidence.seq()) {
            return Ok(false);
        }
        self.fork(evidence);
        Ok(true)
    }

    /// Signs and integrates a new entry by the local writer. Its heads name the newest tips
    /// of other writers not referenced yet, at most [`Limits::heads_per_entry`] of them (the
    /// rest go into later entries); quarantined writers are never named.
    pub fn append_local(&mut self, keypair: &Keypair, payload: Vec<u8>) -> Result<Entry, IngestError> {
        self.append_local_with(keypair, payload, true)
    }

    /// Like [`Base::append_local`], sealing the entry only when `seal` is set, or when the run
    /// since the last seal reached [`crate::limits::SEAL_EVERY_ENTRIES`] entries or
    /// [`crate::limits::SEAL_EVERY_BYTES`] bytes. An unsealed tip is sealed later by
    /// [`Base::seal_local_tip`] (a batch seals its last entry); until then it is not served.
    pub fn append_local_with(&mut self, keypair: &Keypair, payload: Vec<u8>, seal: bool) -> Result<Entry, IngestError> {
        let me = keypair.id();
        if self.local.is_none() {
            self.local = Some(me);
        }
        let my_index = self.ensure_writer(me)?;
        let mine = &self.writers[my_index as usize];
        if mine.fork.is_some() {
            return Err(IngestError::Quarantined(me));
        }
        let seq = mine.nodes.len() as u64;
        let last = mine.nodes.last().map(|node| &node.entry);
        let mut clock = last.map_or(0, Entry::clock);
        let mut unseen: Vec<Head> = Vec::new();
        for log in &self.writers {
            let len = log.nodes.len() as u64;
            if log.id == me || len == 0 || log.fork.is_some() {
                continue;
            }
            if mine.frontier.get(&log.id).copied().unwrap_or(0) >= len {
                continue;
            }
            let tip = &log.nodes[log.nodes.len() - 1].entry;
            unseen.push(Head { writer: log.id, seq: len - 1, hash: tip.hash() });
        }
        let tip_clock = |head: &Head| self.entry(&head.writer, head.seq).map_or(0, Entry::clock);
        if unseen.len() > self.limits.heads_per_entry {
            // The newest first: they carry the clock, and older tips are reached through them
            // or named by the next entries.
            unseen.sort_by(|a, b| tip_clock(b).cmp(&tip_clock(a)).then(a.writer.cmp(&b.writer)));
            unseen.truncate(self.limits.heads_per_entry);
        }
        unseen.sort_by_key(|head| head.writer);
        for head in &unseen {
            clock = clock.max(tip_clock(head));
        }
        let body = EntryBody {
            writer: me,
            seq,
            prev: last.map(Entry::hash),
            heads: unseen,
            clock: (clock + 1).min(MAX_CLOCK),
            payload,
        };
        let unsealed = mine.nodes.len() as u64 - mine.sealed_len;
        let run_bytes: usize = mine.nodes[mine.sealed_len as usize..].iter().map(|node| node.entry.bytes().len()).sum();
        let held_bytes = mine.bytes;
        let seal = seal
            || unsealed + 1 >= crate::limits::SEAL_EVERY_ENTRIES as u64
            || run_bytes + body.payload.len() + 128 >= crate::limits::SEAL_EVERY_BYTES;
        let entry = if seal { Entry::sign(body, keypair) } else { Entry::unsealed(body) };
        // Our own log is held to the writer quota every receiver applies, or they would
        // refuse what we write from there on (others filling the replica's quota cannot
        // stop our writes).
        let size = entry.bytes().len() as u64;
        if held_bytes + size > self.limits.max_writer_bytes {
            return Err(IngestError::OverQuota { writer: me, limit: self.limits.max_writer_bytes });
        }
        // Our entries must pass every check a receiver makes, or they would be refused by
        // every peer while we build on them.
        if entry.bytes().len() > MAX_ENTRY_BYTES {
            return Err(IngestError::Oversized { len: entry.bytes().len(), max: MAX_ENTRY_BYTES });
        }
        if let Err(error) = Entry::decode(entry.bytes()) {
            return Err(IngestError::LocalEntryInvalid(error.to_string()));
        }
        self.ingest_verified(entry.clone())?;
        Ok(entry)
    }

    /// Seals the local writer's tip if it is not sealed yet (the end of a batch); returns the
    /// sealed entry, which replaces the unsealed one (same hash) and should be saved and sent.
    pub fn seal_local_tip(&mut self, keypair: &Keypair) -> Option<Entry> {
        let index = self.by_id.get(&keypair.id()).copied()?;
        let log = &mut self.writers[index as usize];
        let len = log.nodes.len() as u64;
        if log.fork.is_some() {
            return None;
        }
        let node = log.nodes.last_mut()?;
        if node.entry.is_sealed() {
            return None;
        }
        let before = node.entry.bytes().len();
        node.entry = node.entry.sealed(keypair);
        let grown = node.entry.bytes().len().saturating_sub(before) as u64;
        log.sealed_len = len;
        log.bytes += grown;
        self.total_bytes += grown;
        let sealed = node.entry.clone();
        if let Some(fresh) = self.integrated.iter_mut().rev().find(|fresh| fresh.hash() == sealed.hash()) {
            *fresh = sealed.clone();
        } else {
            self.integrated.push(sealed.clone());
        }
        Some(sealed)
    }

    /// Applies everything integrated since the last update. When integrated entries sort
    /// before the tip, the operations after their position are undone (newest first) and
    /// reapplied in the merged order; when every operation involved is keyed
    /// ([`Apply::op_key`]), only those sharing a key with the new entries are.
    pub fn update(&mut self) -> UpdateStats {
        let dirty_from = self.dirty_from.take();
        if self.staged.is_empty() && dirty_from.is_none() {
            return UpdateStats::default();
        }
        let mut staged = std::mem::take(&mut self.staged);
        staged.sort_unstable();
        let first = match (staged.first(), dirty_from) {
            (Some(slot), Some(dirty)) => slot.key.min(dirty),
            (Some(slot), None) => slot.key,
            (None, Some(dirty)) => dirty,
            (None, None) => return UpdateStats::default(),
        };
        let position = self.order.partition_point(|slot| slot.key < first);
        self.view.begin_update();
        let tail = self.order.split_off(position);
        let mut tail_undo = self.undo.split_off(position);
        // Deciding what a reorg redoes needs the new operations' scopes, so they are decoded
        // first; with nothing after them (catching up), each is decoded as it is applied.
        let mut decoded: Vec<Option<V::Op>> = Vec::new();
        if !tail.is_empty() {
            decoded = staged.iter().map(|slot| self.decode(slot)).collect();
        }
        // Entries voided by a fork leave the order: everything after the first is redone.
        let redo = if dirty_from.is_some() { vec![true; tail.len()] } else { self.tail_to_redo(&staged, &tail) };
        let mut stats = UpdateStats::default();
        for (index, undo) in tail_undo.iter_mut().enumerate().rev() {
            if redo[index] {
                stats.rolled_back += 1;
                if let Some(undo) = undo.take() {
                    self.view.undo(undo);
                }
            }
        }
        self.order.reserve(tail.len() + staged.len());
        self.undo.reserve(tail.len() + staged.len());
        let mut decoded = decoded.into_iter();
        let mut left = tail.into_iter().zip(redo.into_iter().zip(tail_undo)).peekable();
        let mut right = staged.into_iter().peekable();
        loop {
            let (slot, kept, predecoded) = match (left.peek(), right.peek()) {
                (Some((a, _)), Some(b)) if a <= b => match left.next() {
                    Some((slot, (false, undo))) => (slot, Some(undo), None),
                    Some((slot, (true, _))) => (slot, None, None),
                    None => break,
                },
                (Some(_), None) => match left.next() {
                    Some((slot, (false, undo))) => (slot, Some(undo), None),
                    Some((slot, (true, _))) => (slot, None, None),
                    None => break,
                },
                (_, Some(_)) => match right.next() {
                    Some(slot) => (slot, None, decoded.next()),
                    None => break,
                },
                (None, None) => break,
            };
            if kept.is_none() && self.is_void(&slot) {
                continue;
            }
            let undo = match kept {
                Some(undo) => undo,
                None => {
                    stats.applied += 1;
                    let op = match predecoded {
                        Some(op) => op,
                        None => self.decode(&slot),
                    };
                    let ctx = ApplyContext { writer: slot.key.writer, seq: slot.key.seq, clock: slot.key.clock };
                    op.map(|op| self.view.apply(op, &ctx))
                }
            };
            self.undo.push(undo);
            self.order.push(slot);
        }
        self.view.end_update();
        if let Some(from) = self.view.take_rebuild() {
            // The view learns keys only finitely often, so this ends.
            self.dirty_from = Some(from);
            let more = self.update();
            stats.applied += more.applied;
            stats.rolled_back += more.rolled_back;
        }
        stats
    }

    /// Whether an integrated entry is voided: its writer forked at or before its seq, so
    /// replicas holding different branches drop it alike.
    fn is_void(&self, slot: &Slot) -> bool {
        self.writers[slot.writer_index as usize].fork.as_ref().is_some_and(|fork| slot.key.seq >= fork.seq())
    }

    /// Decodes the operation of an integrated entry and records what it touches.
    fn decode(&mut self, slot: &Slot) -> Option<V::Op> {
        let ctx = ApplyContext { writer: slot.key.writer, seq: slot.key.seq, clock: slot.key.clock };
        let log = &self.writers[slot.writer_index as usize];
        let node = &log.nodes[slot.key.seq as usize];
        let payload = log.payloads.get(node.payload_at..node.payload_at + node.payload_len as usize).unwrap_or(&[]);
        let op = self.view.decode_op(payload, &ctx);
        let scope = match &op {
            None => Scope::Nothing,
            Some(op) => self.view.op_key(op).map_or(Scope::Everything, Scope::Key),
        };
        self.writers[slot.writer_index as usize].nodes[slot.key.seq as usize].scope = scope;
        op
    }

    /// Which tail operations a reorg must undo and reapply: those sharing a key with the new
    /// entries, or all of them when any operation involved is not keyed.
    fn tail_to_redo(&self, staged: &[Slot], tail: &[Slot]) -> Vec<bool> {
        if tail.is_empty() {
            return Vec::new();
        }
        let scope = |slot: &Slot| self.writers[slot.writer_index as usize].nodes[slot.key.seq as usize].scope;
        let mut keys = rustc_hash::FxHashSet::default();
        for slot in staged {
            match scope(slot) {
                Scope::Nothing => {}
                Scope::Unknown => return vec![true; tail.len()],
                Scope::Key(key) => {
                    keys.insert(key);
                }
                Scope::Everything => return vec![true; tail.len()],
            }
        }
        let mut redo = Vec::with_capacity(tail.len());
        for slot in tail {
            match scope(slot) {
                Scope::Nothing => redo.push(false),
                Scope::Unknown => return vec![true; tail.len()],
                Scope::Key(key) => redo.push(keys.contains(&key)),
                Scope::Everything => return vec![true; tail.len()],
            }
        }
        redo
    }

    /// Whether integrated entries wait for [`Base::update`].
    pub fn needs_update(&self) -> bool {
        !self.staged.is_empty()
    }

    /// Takes the entries integrated since the last call, in integration order.
    pub fn take_integrated(&mut self) -> Vec<Entry> {
        std::mem::take(&mut self.integrated)
    }

    /// Gives back memory reserved for growth (after loading a store, or a catch-up).
    pub fn shrink_to_fit(&mut self) {
        for log in &mut self.writers {
            log.nodes.shrink_to_fit();
            log.payloads.shrink_to_fit();
        }
        self.order.shrink_to_fit();
    }

    /// One past the writer's last sealed entry held: what this replica can prove to others
    /// (and so advertises and serves).
    pub fn sealed_len(&self, writer: &WriterId) -> u64 {
        self.by_id.get(writer).map_or(0, |&index| self.writers[index as usize].sealed_len)
    }

    /// Where an answer for `writer`'s entries from `start` to `end` should end so that its
    /// last entry is sealed: `end` moved forward to the next seal (at most
    /// [`crate::limits::MAX_RUN_ENTRIES`] further), and never past [`Base::sealed_len`].
    pub fn sealed_end(&self, writer: &WriterId, start: u64, end: u64) -> u64 {
        let Some(&index) = self.by_id.get(writer) else { return start };
        let log = &self.writers[index as usize];
        let end = end.min(log.sealed_len);
        if end <= start {
            return end.max(start);
        }
        let limit = end.saturating_add(crate::limits::MAX_RUN_ENTRIES as u64).min(log.sealed_len);
        let mut at = end;
        while at < limit && node_at(&log.nodes, at - 1).is_some_and(|node| !node.entry.is_sealed()) {
            at += 1;
        }
        at
    }

    /// Takes the events since the last call.
    pub fn take_events(&mut self) -> Vec<BaseEvent> {
        self.events.drain(..).collect()
    }

    /// Entries integrated for a writer (0 if unknown).
    pub fn len(&self, writer: &WriterId) -> u64 {
        self.by_id.get(writer).map_or(0, |&index| self.writers[index as usize].nodes.len() as u64)
    }

    /// Total entries integrated across writers.
    pub fn total_entries(&self) -> u64 {
        self.writers.iter().map(|log| log.nodes.len() as u64).sum()
    }

    /// One past the last seq of a writer held without a gap, counting entries that wait for
    /// dependencies, looking no further than `limit`. What a sync session need not ask for again.
    pub fn held_end(&self, writer: &WriterId, limit: u64) -> u64 {
        let mut end = self.len(writer);
        while end < limit && self.pending.entries.contains_key(&(*writer, end)) {
            end += 1;
        }
        end
    }

    /// Entries waiting for dependencies.
    pub fn pending_count(&self) -> usize {
        self.pending.entries.len()
    }

    /// Bytes of the entries waiting for dependencies.
    pub fn pending_bytes(&self) -> usize {
        self.pending.bytes
    }

    /// Bytes of every integrated entry.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// One entry.
    pub fn entry(&self, writer: &WriterId, seq: u64) -> Option<&Entry> {
        let index = *self.by_id.get(writer)?;
        node_at(&self.writers[index as usize].nodes, seq).map(|node| &node.entry)
    }

    /// Entries `start..end` of a writer (clamped to what is held).
    pub fn range(&self, writer: &WriterId, start: u64, end: u64) -> impl Iterator<Item = &Entry> {
        let nodes = self.by_id.get(writer).map_or(&[][..], |&index| &self.writers[index as usize].nodes[..]);
        // Both are clamped to the length before narrowing, so no seq wraps on 32-bit targets.
        let end = end.min(nodes.len() as u64);
        let start = start.min(end);
        nodes[start as usize..end as usize].iter().map(|node| &node.entry)
    }

    /// Every writer, sorted by key.
    pub fn writers(&self) -> Vec<WriterInfo> {
        let mut infos: Vec<WriterInfo> = self
            .writers
            .iter()
            .map(|log| WriterInfo {
                id: log.id,
                len: log.nodes.len() as u64,
                head: log.nodes.last().map(|node| node.entry.hash()),
                quarantined: log.fork.is_some(),
            })
            .collect();
        infos.sort_by_key(|info| info.id);
        infos
    }

    /// Whether a writer is quarantined.
    pub fn is_quarantined(&self, writer: &WriterId) -> bool {
        self.by_id.get(writer).is_some_and(|&index| self.writers[index as usize].fork.is_some())
    }

    /// All fork evidence held.
    pub fn forks(&self) -> Vec<&ForkEvidence> {
        self.writers.iter().filter_map(|log| log.fork.as_deref()).collect()
    }

    /// The applied linear order.
    pub fn order(&self) -> impl ExactSizeIterator<Item = Position> + '_ {
        self.order.iter().map(|slot| slot.key)
    }

    /// SHA-256 over the applied linear order.
    pub fn order_digest(&self) -> Hash {
        let mut bytes = Vec::with_capacity(self.order.len() * 40);
        for slot in &self.order {
            bytes.extend_from_slice(&slot.key.writer.0);
            bytes.extend_from_slice(&slot.key.seq.to_le_bytes());
        }
        Hash::digest(&bytes)
    }

    fn verify(&mut self, entry: &Entry) -> Result<(), IngestError> {
        let writer = entry.writer();
        let key = match self.by_id.get(&writer) {
            Some(&index) => self.writers[index as usize].key,
            None => writer.verifying_key().map_err(|_| IngestError::InvalidWriterKey(writer))?,
        };
        if self.signature_holds(entry, &key) {
            Ok(())
        } else {
            Err(IngestError::BadSignature { writer, seq: entry.seq() })
        }
    }

    /// Whether an entry's signature names this list (or it is a legacy entry where those
    /// are accepted) and verifies.
    fn signature_holds(&self, entry: &Entry, key: &VerifyingKey) -> bool {
        (self.legacy || entry.version() != crate::log::LEGACY_ENTRY_VERSION) && entry.verify(key, &self.list)
    }

    fn ensure_writer(&mut self, writer: WriterId) -> Result<u32, IngestError> {
        if let Some(&index) = self.by_id.get(&writer) {
            return Ok(index);
        }
        self.check_writer_room(writer)?;
        let key = writer.verifying_key().map_err(|_| IngestError::InvalidWriterKey(writer))?;
        let index = self.writers.len() as u32;
        self.writers.push(WriterLog {
            id: writer,
            key,
            nodes: Vec::new(),
            payloads: Vec::new(),
            frontier: BTreeMap::new(),
            fork: None,
            bytes: 0,
            sealed_len: 0,
        });
        self.by_id.insert(writer, index);
        self.events.push_back(BaseEvent::WriterAdded(writer));
        Ok(index)
    }

    /// Whether an entry's dependencies are all integrated and it fits them; `index` is its
    /// writer's index, if the writer is known.
    ///
    /// A head naming a quarantined writer at or past its fork (or anything of it we cannot
    /// check) is settled by the quarantine: replicas holding either branch accept the entry
    /// alike, and its clock need only exceed its other dependencies'.
    fn readiness(&self, entry: &Entry, index: Option<u32>) -> Result<Readiness, IngestError> {
        let body = entry.body();
        let (writer, seq) = (body.writer, body.seq);
        let nodes = index.map_or(&[][..], |index| &self.writers[index as usize].nodes[..]);
        if seq > nodes.len() as u64 {
            return Ok(Readiness::Missing((writer, seq - 1)));
        }
        let mut expected = 0;
        if seq > 0 {
            let prev =
                node_at(nodes, seq - 1).map(|node| &node.entry).ok_or(IngestError::BrokenChain { writer, seq })?;
            if body.prev != Some(prev.hash()) {
                return Err(IngestError::BrokenChain { writer, seq });
            }
            expected = prev.clock();
        }
        let mut settled_by_fork = false;
        for head in &body.heads {
            let log = self.by_id.get(&head.writer).map(|&index| &self.writers[index as usize]);
            let fork_at = log.and_then(|log| log.fork.as_ref()).map(|fork| fork.seq());
            let seen = log.and_then(|log| node_at(&log.nodes, head.seq)).map(|node| &node.entry);
            match (seen, fork_at) {
                (Some(seen), fork_at)
                    if seen.hash() == head.hash && fork_at.is_none_or(|fork_at| head.seq < fork_at) =>
                {
                    expected = expected.max(seen.clock());
                }
                (_, Some(_)) => settled_by_fork = true,
                (None, None) => return Ok(Readiness::Missing((head.writer, head.seq))),
                (Some(_), None) => return Ok(Readiness::Disputed((head.writer, head.seq))),
            }
        }
        let expected = expected + 1;
        let fits = if settled_by_fork { body.clock >= expected } else { body.clock == expected };
        if !fits {
            return Err(IngestError::ImpossibleClock { writer, seq, expected, got: body.clock });
        }
        Ok(Readiness::Ready)
    }

    fn integrate(&mut self, entry: Entry, index: Option<u32>) -> Result<(), IngestError> {
        let sealed = entry.is_sealed();
        let writer = entry.writer();
        let size = entry.bytes().len() as u64;
        if Some(writer) != self.local {
            let held = index.map_or(0, |index| self.writers[index as usize].bytes);
            if held + size > self.limits.max_writer_bytes {
                return Err(self.over_quota(writer, self.limits.max_writer_bytes));
            }
            if self.total_bytes + size > self.limits.max_topic_bytes {
                return Err(self.over_quota(writer, self.limits.max_topic_bytes));
            }
        }
        let index = match index {
            Some(index) => index,
            None => self.ensure_writer(writer)?,
        };
        self.total_bytes += size;
        let log = &mut self.writers[index as usize];
        log.bytes += size;
        if sealed {
            log.sealed_len = entry.seq() + 1;
        }
        for head in &entry.body().heads {
            let reached = log.frontier.entry(head.writer).or_insert(0);
            *reached = (*reached).max(head.seq.saturating_add(1));
            self.referenced.insert(head.writer);
        }
        let key = Position { clock: entry.clock(), writer, seq: entry.seq() };
        self.integrated.push(entry.clone());
        let payload = &entry.body().payload;
        let payload_at = log.payloads.len();
        // Entries are at most MAX_ENTRY_BYTES long, so the length fits.
        let payload_len = payload.len() as u32;
        log.payloads.extend_from_slice(payload);
        log.nodes.push(Node { entry, scope: Scope::Unknown, payload_at, payload_len });
        self.staged.push(Slot { key, writer_index: index });
        Ok(())
    }

    /// Integrates waiting entries unblocked by `dep`, transitively. Returns how many.
    fn release(&mut self, dep: Dep) -> usize {
        if self.pending.waiting.is_empty() {
            return 0;
        }
        let mut integrated = 0;
        let mut ready = vec![dep];
        while let Some(done) = ready.pop() {
            let Some(waiters) = self.pending.waiting.remove(&done) else { continue };
            for waiter in waiters {
                let Some(entry) = self.pending.take(&waiter) else { continue };
                let index = self.by_id.get(&waiter.0).copied();
                match self.readiness(&entry, index) {
                    Ok(Readiness::Ready) => match self.integrate(entry, index) {
                        Ok(()) => {
                            integrated += 1;
                            ready.push(waiter);
                        }
                        Err(error) => self.events.push_back(BaseEvent::Rejected(error)),
                    },
                    Ok(Readiness::Missing(missing)) => self.pending.repark(waiter, entry, missing),
                    Ok(Readiness::Disputed(head)) => {
                        self.disputes.push(head);
                        self.pending.repark(waiter, entry, head);
                    }
                    Err(error) => self.events.push_back(BaseEvent::Rejected(error)),
                }
            }
        }
        integrated
    }

    /// Quarantines the writer of two conflicting entries and returns the error to report.
    /// Its entries from the fork on are voided in the view (whichever branch this replica
    /// holds), and entries waiting on that writer are settled.
    fn fork(&mut self, evidence: ForkEvidence) -> IngestError {
        let writer = evidence.writer();
        let evidence = Box::new(evidence);
        let mut news = true;
        if let Some(&index) = self.by_id.get(&writer) {
            let log = &mut self.writers[index as usize];
            // Replicas that found the fork at different seqs settle on the lowest.
            news = log.fork.as_ref().is_none_or(|known| evidence.seq() < known.seq());
            if news {
                log.fork = Some(evidence.clone());
                if let Some(node) = node_at(&log.nodes, evidence.seq()) {
                    let position = Position { clock: node.entry.clock(), writer, seq: evidence.seq() };
                    self.dirty_from = Some(self.dirty_from.map_or(position, |dirty| dirty.min(position)));
                }
            }
        }
        let stale: Vec<Dep> = self.pending.entries.keys().filter(|(w, _)| *w == writer).copied().collect();
        for dep in stale {
            self.pending.take(&dep);
        }
        let settled: Vec<Dep> = self.pending.waiting.keys().filter(|(w, _)| *w == writer).copied().collect();
        for dep in settled {
            self.release(dep);
        }
        if news {
            self.events.push_back(BaseEvent::Fork(evidence.clone()));
        }
        IngestError::Fork(evidence)
    }
}
