//! The sync protocol: a sans-IO state machine per connection.
//!
//! Both sides open with [`Message::Hello`] (protocol version in the first byte of every
//! message, and the topic's discovery key); then each says which writers it holds and how
//! long each log is ([`Message::Have`], what the seed's `-db-sync` extension broadcast).
//! Each side asks for what it lacks in bounded batches ([`Message::Want`] answered by
//! [`Message::Entries`]), and every entry a replica integrates, local or learned, is pushed
//! at once to every session whose remote is not known to hold it. Writers learned this way
//! join the base (open membership). A periodic `Have` (anti-entropy) and request timeouts
//! make the protocol recover from lost messages; duplicates are harmless.
//!
//! The state machine never does IO and never reads a clock: the driver hands it messages
//! and the current time in milliseconds, and sends what it returns.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::base::{IngestError, Ingested};
use crate::keys::WriterId;
use crate::log::{DecodeError, Entry, ForkEvidence, ForkEvidenceError};
use crate::replica::Replica;
use crate::topic::DiscoveryKey;

/// The libp2p protocol id of sync streams (desktop peers and browser tabs alike).
pub const PROTOCOL_ID: &str = "/hellopears/sync/1";
/// The identify protocol version string HelloPears peers announce.
pub const IDENTIFY_PROTOCOL: &str = "/hellopears/id/1";

/// The protocol version, the first byte of every message.
pub const PROTOCOL_VERSION: u8 = 1;
use crate::limits::{
    HELLO_REPEAT_MS, MAX_INFLIGHT_REQUESTS, MAX_MESSAGES_BEFORE_HELLO, MAX_RUN_BYTES, MAX_RUN_ENTRIES,
    NEW_WRITERS_BURST, NEW_WRITERS_PER_MINUTE, PEER_RECORDS_PER_MINUTE, SERVE_BURST_BYTES, SERVE_BYTES_PER_SEC,
};
pub use crate::limits::{
    MAX_BATCH_BYTES, MAX_BATCH_ENTRIES, MAX_ENTRIES_PER_MESSAGE, MAX_HAVE_WRITERS, MAX_MESSAGE_BYTES,
    MAX_PEER_RECORD_BYTES, MAX_PEER_RECORDS,
};

/// One writer's log length, as advertised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterLen {
    /// The writer.
    pub writer: WriterId,
    /// Entries held.
    pub len: u64,
}

/// A protocol message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Opens a session on a topic.
    Hello {
        /// The topic's discovery key: both sides must be on the same topic.
        discovery: DiscoveryKey,
        /// Whether the sender has received our `Hello`; a hello without it, arriving after
        /// the session is open, means ours was lost, and is answered with another.
        acknowledged: bool,
        /// On a private list: the sender's proof that it holds the list, bound to both
        /// peer ids ([`crate::access::ListKeys::session_proof`]). Nothing else is sent on a
        /// private list before the remote's proof checks.
        proof: Option<[u8; 32]>,
    },
    /// A device asks to be admitted to a private list with an invite.
    Join {
        /// The invite's public key.
        invite: WriterId,
        /// The joining device's writer key.
        device: WriterId,
        /// Its display name.
        name: String,
        /// The invite's signature over the list, the device and the name.
        proof: Vec<u8>,
    },
    /// A join request was refused, and why.
    Refused {
        /// Why, for the joiner's user.
        reason: String,
    },
    /// The writers the sender holds and their log lengths.
    Have {
        /// Writers, sorted by key.
        writers: Vec<WriterLen>,
    },
    /// A request for entries `start..end` of a writer.
    Want {
        /// The writer.
        writer: WriterId,
        /// First seq wanted.
        start: u64,
        /// One past the last seq wanted.
        end: u64,
    },
    /// Entries in wire form: answers to `Want`, or pushes of fresh entries.
    Entries {
        /// Encoded entries.
        entries: Vec<Vec<u8>>,
    },
    /// Proof that a writer forked its log.
    Fork {
        /// Encoded [`ForkEvidence`].
        evidence: Vec<u8>,
    },
    /// Peer exchange: opaque records (addresses) of other peers on the topic.
    Peers {
        /// Records, interpreted by the driver.
        records: Vec<Vec<u8>>,
    },
}

impl Message {
    /// Wire form: the protocol version byte, then postcard.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_extend(self, vec![PROTOCOL_VERSION]).unwrap_or_default()
    }

    /// Decodes a message, checking its size and version.
    pub fn decode(bytes: &[u8]) -> Result<Self, SyncError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(SyncError::Oversized { len: bytes.len(), max: MAX_MESSAGE_BYTES });
        }
        let (&version, body) = bytes.split_first().ok_or(SyncError::Truncated)?;
        if version != PROTOCOL_VERSION {
            return Err(SyncError::UnknownVersion(version));
        }
        let (message, rest): (Message, _) =
            postcard::take_from_bytes(body).map_err(|e| SyncError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(SyncError::TrailingBytes(rest.len()));
        }
        Ok(message)
    }
}

/// Why a message was refused. [`SyncError::is_fatal`] says whether to drop the peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// Empty message.
    #[error("empty message")]
    Truncated,
    /// Over [`MAX_MESSAGE_BYTES`].
    #[error("message of {len} bytes is over the {max} byte limit")]
    Oversized {
        /// Bytes received.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Another protocol version.
    #[error("unsupported protocol version {0} (this peer speaks {PROTOCOL_VERSION})")]
    UnknownVersion(u8),
    /// Does not decode.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Bytes after the message.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
    /// The peer is on another topic.
    #[error("peer is on another topic")]
    TopicMismatch,
    /// A message before `Hello`.
    #[error("message before hello")]
    NotIntroduced,
    /// A list over its limit.
    #[error("{what} over its limit")]
    OverLimit {
        /// Which list.
        what: &'static str,
    },
    /// An entry that does not decode.
    #[error("bad entry: {0}")]
    BadEntry(#[from] DecodeError),
    /// An entry that fails verification.
    #[error("invalid entry: {0}")]
    InvalidEntry(IngestError),
    /// Fork evidence that does not prove a fork.
    #[error("bad fork evidence: {0}")]
    BadForkEvidence(#[from] ForkEvidenceError),
    /// The peer did not prove it holds this private list.
    #[error("{0}")]
    Access(crate::access::AccessError),
}

impl SyncError {
    /// Whether the peer broke the protocol or sent forged data (close and score it down),
    /// as opposed to a condition an honest peer can cause.
    pub fn is_fatal(&self) -> bool {
        match self {
            SyncError::NotIntroduced => false,
            SyncError::InvalidEntry(error) => error.is_fatal(),
            _ => true,
        }
    }
}

/// Timing and batching of a session.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// A request not answered in this long is asked again.
    pub request_timeout_ms: u64,
    /// How often to re-advertise `Have` (anti-entropy).
    pub resync_interval_ms: u64,
    /// Requests in flight at once.
    pub max_inflight: usize,
    /// Entries per request.
    pub batch_entries: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            request_timeout_ms: 5_000,
            resync_interval_ms: 15_000,
            max_inflight: MAX_INFLIGHT_REQUESTS,
            batch_entries: MAX_BATCH_ENTRIES,
        }
    }
}

/// Counters for status displays.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Entries received that were new.
    pub entries_received: u64,
    /// Entries sent.
    pub entries_sent: u64,
    /// Messages handled.
    pub messages_received: u64,
    /// Requests not answered because the remote was over its serving budget.
    pub wants_refused: u64,
    /// Entries of writers nobody refers to, not taken because the remote was over its
    /// budget of new writers.
    pub writers_refused: u64,
    /// Unsealed entries dropped because their seal did not follow (asked again later).
    pub unsealed_dropped: u64,
}

#[derive(Clone, Copy, Debug)]
struct Inflight {
    end: u64,
    sent_at: u64,
}

/// One connection's protocol state.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    hello_sent_at: Option<u64>,
    introduced: bool,
    remote: BTreeMap<WriterId, u64>,
    /// Requests in flight per writer, oldest first (consecutive ranges: a writer's catch-up
    /// is pipelined, up to [`PIPELINE_PER_WRITER`] requests).
    inflight: HashMap<WriterId, Vec<Inflight>>,
    last_have_at: u64,
    learned_peers: Vec<Vec<u8>>,
    stats: SessionStats,
    /// When the remote last made us restart the session.
    restarted_at: Option<u64>,
    /// Messages received before the remote's `Hello`.
    before_hello: u32,
    /// The serving budget: bytes we may still send in answer to requests, and when it was
    /// last refilled.
    serve_tokens: u64,
    serve_refilled_at: u64,
    /// Peer records learned in the current minute, and when that minute began.
    records_this_minute: usize,
    records_minute_at: u64,
    /// Entries to ask the remote for, to settle heads that name entries we hold under
    /// another hash (see [`crate::base::Base::take_disputes`]).
    disputed: Vec<(WriterId, u64)>,
    /// Requests per writer that timed out in a row.
    timeouts: HashMap<WriterId, u8>,
    /// Writers nobody refers to that this remote may still introduce (a token bucket), when
    /// it was refilled, and the writers it introduced.
    new_writer_tokens: u64,
    new_writers_at: u64,
    new_writers: std::collections::HashSet<WriterId>,
    /// Our and the remote's peer ids (Noise-authenticated), for a private list's proofs.
    identities: Option<(Vec<u8>, Vec<u8>)>,
    /// Whether the list is private (nothing is sent before the remote's proof checks).
    private: bool,
    /// Join requests received.
    joins: u32,
    /// Why the remote refused our join request, if it did.
    refused: Option<String>,
    /// Per writer, received entries whose seal has not come yet (an answer split over
    /// messages), and their bytes in all (at most [`MAX_RUN_BYTES`]).
    unsealed: HashMap<WriterId, Vec<Entry>>,
    unsealed_bytes: usize,
}

/// Requests in flight for one writer at once: while we check and apply one answer, the
/// remote is already sending the next.
pub const PIPELINE_PER_WRITER: usize = 4;

/// Join requests one session may make.
const MAX_JOINS_PER_SESSION: u32 = 32;

/// Timeouts in a row after which a remote's claimed length is forgotten.
const CLAIM_TIMEOUTS: u8 = 3;

impl Session {
    /// A new session.
    pub fn new(config: SessionConfig) -> Self {
        Self {
            config,
            hello_sent_at: None,
            introduced: false,
            remote: BTreeMap::new(),
            inflight: HashMap::new(),
            last_have_at: 0,
            learned_peers: Vec::new(),
            stats: SessionStats::default(),
            restarted_at: None,
            before_hello: 0,
            serve_tokens: SERVE_BURST_BYTES,
            serve_refilled_at: 0,
            records_this_minute: 0,
            records_minute_at: 0,
            disputed: Vec::new(),
            timeouts: HashMap::new(),
            new_writer_tokens: NEW_WRITERS_BURST,
            new_writers_at: 0,
            new_writers: std::collections::HashSet::new(),
            identities: None,
            private: false,
            joins: 0,
            refused: None,
            unsealed: HashMap::new(),
            unsealed_bytes: 0,
        }
    }

    /// Names both ends by their Noise-authenticated peer ids (`local`, `remote`): a private
    /// list's session proofs are bound to them, so a proof cannot be replayed elsewhere.
    pub fn set_identities(&mut self, local: Vec<u8>, remote: Vec<u8>) {
        self.identities = Some((local, remote));
    }

    /// Why the remote refused our join request, if it did (once).
    pub fn take_refusal(&mut self) -> Option<String> {
        self.refused.take()
    }

    fn may_share(&self) -> bool {
        !self.private || self.introduced
    }

    /// Opens the session: our `Hello` and `Have`, and any fork evidence we hold.
    pub fn start(&mut self, replica: &Replica, now: u64) -> Vec<Message> {
        self.hello_sent_at = Some(now);
        self.private = replica.topic().is_private();
        let proof = replica.topic().list_keys().map(|keys| {
            let (local, remote) = self.identities.clone().unwrap_or_default();
            keys.session_proof(&local, &remote)
        });
        // A private list's hello names no discovery key: its proof, bound to both peers,
        // is all a peer holding the list needs to recognise it, and tells anyone else nothing.
        let discovery = if self.private { DiscoveryKey([0; 32]) } else { replica.topic().discovery_key() };
        let mut out = vec![Message::Hello { discovery, acknowledged: self.introduced, proof }];
        if self.may_share() {
            out.extend(self.opening(replica, now));
        }
        out
    }

    /// What follows our `Hello` once we may share: `Have` and the fork evidence we hold.
    fn opening(&mut self, replica: &Replica, now: u64) -> Vec<Message> {
        let mut out = vec![self.have(replica, now)];
        out.extend(replica.base().forks().into_iter().map(|ev| Message::Fork { evidence: ev.encode() }));
        out
    }

    /// Whether the remote's `Hello` arrived.
    pub fn is_introduced(&self) -> bool {
        self.introduced
    }

    /// Counters.
    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// Entries the remote holds that we do not (catch-up progress).
    pub fn missing(&self, replica: &Replica) -> u64 {
        self.remote
            .iter()
            .filter(|(writer, _)| !replica.base().is_over_quota(writer))
            .map(|(writer, &len)| len.saturating_sub(replica.base().len(writer)))
            .fold(0, u64::saturating_add)
    }

    /// Entries the remote is known to hold.
    pub fn remote_total(&self) -> u64 {
        self.remote.values().copied().fold(0, u64::saturating_add)
    }

    /// Peer records learned since the last call.
    pub fn take_learned_peers(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.learned_peers)
    }

    /// Decodes and handles one message.
    pub fn handle_bytes(&mut self, replica: &mut Replica, bytes: &[u8], now: u64) -> Result<Vec<Message>, SyncError> {
        let message = Message::decode(bytes)?;
        self.handle(replica, message, now)
    }

    /// Handles one message and returns what to send. Call [`Replica::update`] and push the
    /// replica's fresh entries to every session afterwards.
    pub fn handle(&mut self, replica: &mut Replica, message: Message, now: u64) -> Result<Vec<Message>, SyncError> {
        self.stats.messages_received += 1;
        let mut out = Vec::new();
        match message {
            Message::Hello { discovery, acknowledged, proof } => {
                self.private = replica.topic().is_private();
                match (replica.topic().list_keys(), proof) {
                    (Some(keys), Some(proof)) => {
                        let (local, remote) = self.identities.clone().unwrap_or_default();
                        keys.check_session_proof(&proof, &remote, &local).map_err(SyncError::Access)?;
                    }
                    (Some(_), None) => return Err(SyncError::Access(crate::access::AccessError::BadProof)),
                    (None, _) if discovery != replica.topic().discovery_key() => return Err(SyncError::TopicMismatch),
                    (None, _) => {}
                }
                let first = !self.introduced;
                self.introduced = true;
                // A repeated hello (ours was lost) restarts the session, at most once per
                // HELLO_REPEAT_MS: a restart re-sends `Have` and every fork evidence.
                let restart = !first
                    && !acknowledged
                    && self.restarted_at.is_none_or(|at| now.saturating_sub(at) >= HELLO_REPEAT_MS);
                if self.hello_sent_at.is_none() || restart {
                    if restart {
                        self.restarted_at = Some(now);
                    }
                    out.extend(self.start(replica, now));
                } else if first && self.private {
                    // Withheld until the remote proved it holds the list.
                    out.extend(self.opening(replica, now));
                }
            }
            _ if !self.introduced => {
                self.before_hello += 1;
                if self.before_hello > MAX_MESSAGES_BEFORE_HELLO {
                    return Err(SyncError::OverLimit { what: "messages before hello" });
                }
                return Err(SyncError::NotIntroduced);
            }
            Message::Have { writers } => {
                if writers.len() > MAX_HAVE_WRITERS {
                    return Err(SyncError::OverLimit { what: "writer list" });
                }
                for WriterLen { writer, len } in writers {
                    // A claim restated after our requests timed out is asked for again
                    // (answers can be lost with a connection); only claims left unanswered
                    // CLAIM_TIMEOUTS times with no `Have` between are dropped.
                    if !self.timeouts.is_empty() {
                        self.timeouts.remove(&writer);
                    }
                    self.note_remote(writer, len);
                }
            }
            Message::Want { writer, start, end } => {
                self.refill_serving(now);
                if self.serve_tokens < MAX_BATCH_BYTES as u64 {
                    // Over budget: unanswered, the remote asks again after its timeout.
                    self.stats.wants_refused += 1;
                } else {
                    let asked_end = end.min(start.saturating_add(self.config.batch_entries.min(MAX_BATCH_ENTRIES)));
                    // The answer ends at a seal, so the remote can check it: moved forward to
                    // the next one (never past what we can prove), within a byte bound.
                    let sealed_end = replica.base().sealed_end(&writer, start, asked_end);
                    let mut entries: Vec<&Entry> = replica.base().range(&writer, start, sealed_end).collect();
                    let extended: usize = entries.iter().map(|entry| entry.bytes().len()).sum();
                    if extended > MAX_BATCH_BYTES + MAX_RUN_BYTES {
                        entries.truncate(asked_end.saturating_sub(start) as usize);
                    }
                    let bytes: u64 = entries.iter().map(|entry| entry.bytes().len() as u64).sum();
                    self.serve_tokens = self.serve_tokens.saturating_sub(bytes);
                    out.extend(self.entry_messages(entries));
                }
            }
            Message::Entries { entries } => {
                if entries.len() > MAX_ENTRIES_PER_MESSAGE {
                    return Err(SyncError::OverLimit { what: "entries" });
                }
                let result = self.receive_entries(replica, &entries, now);
                out.extend(self.plan_wants(replica, now));
                result?;
            }
            Message::Fork { evidence } => {
                let evidence = ForkEvidence::decode_and_check(&evidence, replica.base().list())?;
                self.remote.remove(&evidence.writer());
                replica.add_fork_evidence(evidence)?;
            }
            Message::Join { invite, device, name, proof } => {
                self.joins += 1;
                if self.joins > MAX_JOINS_PER_SESSION {
                    return Err(SyncError::OverLimit { what: "join requests" });
                }
                let admitted = <[u8; 64]>::try_from(proof.as_slice())
                    .map_err(|_| crate::access::AccessError::BadInviteProof)
                    .and_then(|proof| replica.list().admission(invite, device, name, proof, now));
                use crate::access::AccessError;
                use crate::replica::WriteError;
                let result = match admitted {
                    Ok(op) => replica.write_member(&op).map(|_| ()).map_err(|error| match error {
                        WriteError::Access(error) => error,
                        other => AccessError::NotAllowed(other.to_string()),
                    }),
                    Err(error) => Err(error),
                };
                match result {
                    Ok(()) => {}
                    // Not ours to answer: this device may not admit (blind or read-only), or
                    // has not learned of the invite yet. Another member answers; a refusal
                    // from us would end the joiner's wait for them.
                    Err(
                        AccessError::CannotWrite(_)
                        | AccessError::UnknownInvite
                        | AccessError::NotAMember
                        | AccessError::AlreadyMember,
                    ) => {}
                    Err(error) => out.push(Message::Refused { reason: error.to_string() }),
                }
            }
            Message::Refused { reason } => {
                self.refused = Some(crate::limits::clip_text(&reason, 200));
            }
            Message::Peers { records } => {
                if records.len() > MAX_PEER_RECORDS || records.iter().any(|r| r.len() > MAX_PEER_RECORD_BYTES) {
                    return Err(SyncError::OverLimit { what: "peer records" });
                }
                if now.saturating_sub(self.records_minute_at) >= 60_000 {
                    self.records_minute_at = now;
                    self.records_this_minute = 0;
                }
                let room = PEER_RECORDS_PER_MINUTE.saturating_sub(self.records_this_minute);
                self.records_this_minute += records.len().min(room);
                self.learned_peers.extend(records.into_iter().take(room));
            }
        }
        out.extend(self.plan_wants(replica, now));
        Ok(out)
    }

    /// Periodic work: resend a lost hello, retry timed-out requests, re-advertise `Have`.
    pub fn tick(&mut self, replica: &Replica, now: u64) -> Vec<Message> {
        let mut out = Vec::new();
        let timeout = self.config.request_timeout_ms;
        if !self.introduced {
            if self.hello_sent_at.is_some_and(|at| now.saturating_sub(at) >= timeout) {
                out.extend(self.start(replica, now));
            }
            return out;
        }
        // Requests unanswered in time, CLAIM_TIMEOUTS times in a row, drop the claim they were
        // based on (the remote's next `Have` restores a true one), so a false length cannot
        // keep us asking, or "syncing".
        let expired: Vec<WriterId> = self
            .inflight
            .iter()
            .filter(|(_, requests)| requests.iter().any(|request| now.saturating_sub(request.sent_at) >= timeout))
            .map(|(&writer, _)| writer)
            .collect();
        for writer in expired {
            self.inflight.remove(&writer);
            let timeouts = self.timeouts.entry(writer).or_insert(0);
            *timeouts += 1;
            if *timeouts >= CLAIM_TIMEOUTS {
                self.timeouts.remove(&writer);
                self.remote.remove(&writer);
            }
        }
        if now.saturating_sub(self.last_have_at) >= self.config.resync_interval_ms {
            out.push(self.have(replica, now));
        }
        out.extend(self.plan_wants(replica, now));
        out
    }

    /// Pushes fresh entries the remote is not known to hold.
    pub fn push(&mut self, entries: &[Entry]) -> Vec<Message> {
        if self.hello_sent_at.is_none() || !self.may_share() {
            return Vec::new();
        }
        let mut wanted = Vec::new();
        for entry in entries {
            let known = self.remote.get(&entry.writer()).copied().unwrap_or(0);
            if entry.seq() >= known {
                wanted.push(entry);
            }
        }
        self.entry_messages(wanted)
    }

    /// Gossips fork evidence.
    pub fn push_fork(&mut self, evidence: &ForkEvidence) -> Vec<Message> {
        self.remote.remove(&evidence.writer());
        if !self.may_share() {
            return Vec::new();
        }
        vec![Message::Fork { evidence: evidence.encode() }]
    }

    /// Peer exchange: sends records of other peers on the topic.
    pub fn share_peers(&self, mut records: Vec<Vec<u8>>) -> Vec<Message> {
        if !self.may_share() {
            return Vec::new();
        }
        records.retain(|record| record.len() <= MAX_PEER_RECORD_BYTES);
        records.chunks(MAX_PEER_RECORDS).map(|chunk| Message::Peers { records: chunk.to_vec() }).collect()
    }

    fn have(&mut self, replica: &Replica, now: u64) -> Message {
        self.last_have_at = now;
        let writers = replica
            .base()
            .writers()
            .into_iter()
            .filter(|info| !info.quarantined && info.len > 0)
            .take(MAX_HAVE_WRITERS)
            // What we can prove: entries up to our last seal of each writer.
            .map(|info| WriterLen { writer: info.id, len: replica.base().sealed_len(&info.id) })
            .filter(|have| have.len > 0)
            .collect();
        Message::Have { writers }
    }

    fn note_remote(&mut self, writer: WriterId, len: u64) {
        if let Some(known) = self.remote.get_mut(&writer) {
            *known = (*known).max(len);
        } else if self.remote.len() < MAX_HAVE_WRITERS {
            self.remote.insert(writer, len);
        }
    }

    fn refill_serving(&mut self, now: u64) {
        let elapsed = now.saturating_sub(self.serve_refilled_at);
        self.serve_refilled_at = now;
        let earned = elapsed.saturating_mul(SERVE_BYTES_PER_SEC) / 1_000;
        self.serve_tokens = self.serve_tokens.saturating_add(earned).min(SERVE_BURST_BYTES);
    }

    /// Whether an entry of `writer` may be taken from this remote: writers we hold or that
    /// entries refer to always; others within the remote's budget of new writers.
    fn admit_writer(&mut self, replica: &Replica, writer: WriterId, now: u64) -> bool {
        if replica.base().is_known(&writer) || self.new_writers.contains(&writer) {
            return true;
        }
        let elapsed = now.saturating_sub(self.new_writers_at);
        let earned = elapsed.saturating_mul(NEW_WRITERS_PER_MINUTE) / 60_000;
        if earned > 0 {
            self.new_writers_at = now;
            self.new_writer_tokens = self.new_writer_tokens.saturating_add(earned).min(NEW_WRITERS_BURST);
        }
        if self.new_writer_tokens == 0 {
            self.stats.writers_refused += 1;
            return false;
        }
        self.new_writer_tokens -= 1;
        self.new_writers.insert(writer);
        true
    }

    fn receive_entries(&mut self, replica: &mut Replica, entries: &[Vec<u8>], now: u64) -> Result<(), SyncError> {
        let decoded = entries.iter().map(|bytes| Entry::decode(bytes)).collect::<Result<Vec<_>, _>>()?;
        let mut by_writer: BTreeMap<WriterId, Vec<Entry>> = BTreeMap::new();
        for entry in decoded {
            by_writer.entry(entry.writer()).or_default().push(entry);
        }
        // Each writer's entries form runs that end at a seal; a run is checked with one
        // signature, and the unsealed entries after the last seal wait for theirs.
        let mut runs: Vec<Vec<Entry>> = Vec::new();
        let mut deferred = None;
        for (writer, mut entries) in by_writer {
            if !self.admit_writer(replica, writer, now) {
                continue;
            }
            // By seq, a sealed copy before an unsealed one of the same entry, which it replaces.
            entries.sort_by_key(|entry| (entry.seq(), !entry.is_sealed()));
            entries.dedup_by(|later, kept| later.seq() == kept.seq() && later.hash() == kept.hash());
            let mut run = self.take_unsealed(writer);
            for entry in entries {
                if let Some(last) = run.last()
                    && !entry.follows(last)
                {
                    if last.seq() == entry.seq() && last.hash() == entry.hash() {
                        run.pop();
                    } else {
                        self.stats.unsealed_dropped += run.len() as u64;
                        run.clear();
                    }
                }
                let sealed = entry.is_sealed();
                run.push(entry);
                if run.len() > MAX_RUN_ENTRIES {
                    // Longer than any seal may cover: the oldest can never be checked.
                    run.remove(0);
                    self.stats.unsealed_dropped += 1;
                }
                if sealed {
                    let run = std::mem::take(&mut run);
                    match replica.base().check_run(&run) {
                        Ok(()) => runs.push(run),
                        Err(error) => {
                            let error = SyncError::InvalidEntry(error);
                            if error.is_fatal() {
                                return Err(error);
                            }
                            deferred = Some(error);
                        }
                    }
                }
            }
            self.keep_unsealed(writer, run);
        }
        // Dependencies first, so a batch integrates without parking entries.
        let mut order: Vec<(usize, usize)> =
            runs.iter().enumerate().flat_map(|(r, run)| (0..run.len()).map(move |i| (r, i))).collect();
        order.sort_by_cached_key(|&(r, i)| {
            let body = runs[r][i].body();
            let mut prefix = [0u8; 8];
            prefix.copy_from_slice(&body.writer.0[..8]);
            (body.clock, u64::from_be_bytes(prefix), body.seq)
        });
        for (r, i) in order {
            let entry = runs[r][i].clone();
            let (writer, seq) = (entry.writer(), entry.seq());
            if replica.base().is_quarantined(&writer) {
                continue;
            }
            let heads = entry.body().heads.clone();
            match replica.ingest_proven(entry, &runs[r][i + 1..]) {
                Ok(outcome) => {
                    if matches!(outcome, Ingested::Integrated(_)) {
                        self.stats.entries_received += 1;
                    }
                    if !self.timeouts.is_empty() {
                        self.timeouts.remove(&writer);
                    }
                    // The sender integrated this entry, so it holds it and everything it names.
                    self.note_remote(writer, seq.saturating_add(1));
                    for head in heads {
                        self.note_remote(head.writer, head.seq.saturating_add(1));
                    }
                    if let Some(requests) = self.inflight.get_mut(&writer) {
                        requests.retain(|request| request.end > seq.saturating_add(1));
                        if requests.is_empty() {
                            self.inflight.remove(&writer);
                        }
                    }
                }
                Err(IngestError::Quarantined(_)) => {
                    self.remote.remove(&writer);
                }
                Err(error) => {
                    let error = SyncError::InvalidEntry(error);
                    if error.is_fatal() {
                        return Err(error);
                    }
                    self.remote.remove(&writer);
                    self.inflight.remove(&writer);
                    deferred = Some(error);
                }
            }
        }
        self.disputed.extend(replica.take_disputes());
        deferred.map_or(Ok(()), Err)
    }

    /// The unsealed entries of `writer` kept from earlier messages.
    fn take_unsealed(&mut self, writer: WriterId) -> Vec<Entry> {
        let run = self.unsealed.remove(&writer).unwrap_or_default();
        self.unsealed_bytes -= run.iter().map(|entry| entry.bytes().len()).sum::<usize>();
        run
    }

    /// Keeps unsealed entries until their seal comes, within [`MAX_RUN_BYTES`] for the
    /// session (other writers' first, then this run's oldest entries give way).
    fn keep_unsealed(&mut self, writer: WriterId, mut run: Vec<Entry>) {
        if run.is_empty() {
            return;
        }
        let mut bytes: usize = run.iter().map(|entry| entry.bytes().len()).sum();
        while bytes > MAX_RUN_BYTES && !run.is_empty() {
            bytes -= run.remove(0).bytes().len();
            self.stats.unsealed_dropped += 1;
        }
        if self.unsealed_bytes + bytes > MAX_RUN_BYTES {
            let dropped: usize = self.unsealed.values().map(Vec::len).sum();
            self.stats.unsealed_dropped += dropped as u64;
            self.unsealed.clear();
            self.unsealed_bytes = 0;
        }
        if !run.is_empty() {
            self.unsealed_bytes += bytes;
            self.unsealed.insert(writer, run);
        }
    }

    fn plan_wants(&mut self, replica: &Replica, now: u64) -> Vec<Message> {
        let mut out = Vec::new();
        // The sender holds what its entries name: asking it for the disputed entry either
        // proves the fork (we then hold both branches' entries) or shows it lied.
        for (writer, seq) in self.disputed.drain(..) {
            if !replica.base().is_quarantined(&writer) {
                out.push(Message::Want { writer, start: seq, end: seq.saturating_add(1) });
            }
        }
        // One request per writer first, then deeper pipelines: many writers each get going
        // before one writer's catch-up takes every slot.
        let mut total: usize = self.inflight.values().map(Vec::len).sum();
        for depth in 1..=PIPELINE_PER_WRITER {
            for (&writer, &remote_len) in &self.remote {
                if total >= self.config.max_inflight {
                    return out;
                }
                let requests = self.inflight.get(&writer).map_or(0, Vec::len);
                if requests >= depth || replica.base().is_quarantined(&writer) || replica.base().is_over_quota(&writer)
                {
                    continue;
                }
                let mut start = replica.base().held_end(&writer, remote_len);
                if let Some(last) = self.inflight.get(&writer).and_then(|requests| requests.last()) {
                    start = start.max(last.end);
                }
                if start >= remote_len {
                    continue;
                }
                let end = remote_len.min(start.saturating_add(self.config.batch_entries));
                self.inflight.entry(writer).or_default().push(Inflight { end, sent_at: now });
                out.push(Message::Want { writer, start, end });
                total += 1;
            }
        }
        out
    }

    /// Packs entries into `Entries` messages under the byte limit.
    fn entry_messages(&mut self, entries: Vec<&Entry>) -> Vec<Message> {
        let mut out = Vec::new();
        let mut batch: Vec<Vec<u8>> = Vec::new();
        let mut bytes = 0;
        for entry in entries {
            if !batch.is_empty() && bytes + entry.bytes().len() > MAX_BATCH_BYTES {
                out.push(Message::Entries { entries: std::mem::take(&mut batch) });
                bytes = 0;
            }
            bytes += entry.bytes().len() + 4;
            batch.push(entry.bytes().to_vec());
            self.note_remote(entry.writer(), entry.seq().saturating_add(1));
            self.stats.entries_sent += 1;
        }
        if !batch.is_empty() {
            out.push(Message::Entries { entries: batch });
        }
        out
    }
}

/// How sync messages travel on a byte stream: each is a 4-byte big-endian length and the
/// encoded message. Sans-IO: drivers feed the bytes they read and write what `encode` gives.
pub mod frame {
    use super::{MAX_MESSAGE_BYTES, SyncError};

    /// The most bytes written to a stream at once, each write flushed: WebRTC sends a write
    /// as SCTP messages of at most 16 KiB, and libp2p-webrtc can merge a small unflushed
    /// write with a large one into a message over that limit.
    pub const WRITE_CHUNK: usize = 16 * 1024 - 64;

    /// One message as it goes on the stream.
    pub fn encode(message: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + message.len());
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(message);
        out
    }

    /// Splits a byte stream into messages; refuses a length over [`MAX_MESSAGE_BYTES`]
    /// before buffering it.
    #[derive(Debug, Default)]
    pub struct FrameDecoder {
        buffer: Vec<u8>,
        start: usize,
    }

    impl FrameDecoder {
        /// Whether part of a frame is buffered (a frame has started and not ended).
        pub fn is_partial(&self) -> bool {
            self.buffer.len() > self.start
        }

        /// Buffers bytes read from the stream.
        pub fn push(&mut self, bytes: &[u8]) {
            if self.start > 0 && self.start == self.buffer.len() {
                self.buffer.clear();
                self.start = 0;
            }
            self.buffer.extend_from_slice(bytes);
        }

        /// The next whole message, if one has arrived.
        pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, SyncError> {
            let pending = &self.buffer[self.start..];
            let Some(header) = pending.get(..4) else { return Ok(None) };
            let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
            if len > MAX_MESSAGE_BYTES {
                return Err(SyncError::Oversized { len, max: MAX_MESSAGE_BYTES });
            }
            let Some(message) = pending.get(4..4 + len) else { return Ok(None) };
            let message = message.to_vec();
            self.start += 4 + len;
            if self.start > 64 * 1024 && self.start * 2 > self.buffer.len() {
                self.buffer.drain(..self.start);
                self.start = 0;
            }
            Ok(Some(message))
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn frames_split_and_join_at_any_boundary() {
            let messages: Vec<Vec<u8>> = vec![vec![], vec![1], vec![7; 300], vec![9; 70_000]];
            let stream: Vec<u8> = messages.iter().flat_map(|m| encode(m)).collect();
            for chunk in [1, 3, 4, 5, 1000, stream.len()] {
                let mut decoder = FrameDecoder::default();
                let mut out = Vec::new();
                for piece in stream.chunks(chunk) {
                    decoder.push(piece);
                    while let Some(frame) = decoder.next_frame().expect("valid frames") {
                        out.push(frame);
                    }
                }
                assert_eq!(out, messages, "chunks of {chunk}");
            }
        }

        #[test]
        fn an_oversized_length_is_refused_before_its_body() {
            let mut decoder = FrameDecoder::default();
            decoder.push(&((MAX_MESSAGE_BYTES + 1) as u32).to_be_bytes());
            let error = decoder.next_frame().expect_err("oversized");
            assert!(error.to_string().contains(&format!("over the {MAX_MESSAGE_BYTES} byte limit")), "{error}");
        }
    }
}
