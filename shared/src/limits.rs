//! Every limit that keeps a peer safe from hostile peers and heavy load, in one place.
//!
//! Each constant says what it protects. The core's limits are enforced here in `shared`
//! (the log, the base, the sync session and the node); the desktop's (connections, streams,
//! the relay, the control socket, the web server) are enforced in `native` but named here so
//! that one table holds them all, and so that they cannot contradict each other: the tests
//! at the bottom check the relations between them. The README's "Limits" table lists them.

// ---- Entries -------------------------------------------------------------------------------

/// The largest encoded entry (body and signature). Protects every buffer that holds one.
pub const MAX_ENTRY_BYTES: usize = 64 * 1024;
/// The most causal heads an entry may carry on the wire (entries of older versions carried
/// up to this many). Bounds the work of checking one entry.
pub const MAX_HEADS: usize = 1024;
/// The most heads this peer writes into one entry: the newest unseen tips first, the rest
/// in later entries. Keeps our own entries small whatever the number of writers (a topic
/// with thousands of writers, or thousands of throwaway writers, cannot make our next
/// entry oversized).
pub const HEADS_PER_ENTRY: usize = 32;
/// The largest payload of a local entry: what is left of [`MAX_ENTRY_BYTES`] once the
/// heads, the hashes and the signature are in.
pub const MAX_PAYLOAD_BYTES: usize = MAX_ENTRY_BYTES - 4 * 1024;
/// A writer seals (signs) the last entry of every batch it appends, and at least every this
/// many entries within a batch; the entries before a seal are covered by the hash chain.
pub const SEAL_EVERY_ENTRIES: usize = 256;
/// ... and at least once every this many bytes of entries within a batch.
pub const SEAL_EVERY_BYTES: usize = 256 * 1024;
/// The longest run of entries one seal may cover when checked by a receiver, and the most
/// entries a peer adds to an answer to reach a seal. Honest writers' runs are at most
/// [`SEAL_EVERY_ENTRIES`] long; longer runs of other writers are not replicated.
pub const MAX_RUN_ENTRIES: usize = 1024;
/// The most bytes of unsealed entries a sync session keeps while their seal is on its way
/// (an answer split over several messages); beyond, the oldest are dropped and asked again.
pub const MAX_RUN_BYTES: usize = 4 << 20;
/// The highest Lamport clock accepted, far beyond any honest history (never overflows).
pub const MAX_CLOCK: u64 = 1 << 62;

// ---- The base -------------------------------------------------------------------------------

/// The most writers one replica holds besides its own (its own writer always has a slot).
/// Entries of further writers are refused without penalty to the sender.
pub const MAX_WRITERS: usize = 4096;
/// The most entries waiting for dependencies. When full, the oldest waiting entry is
/// dropped for a new one (sync asks for it again), so a flood cannot stall catch-up.
pub const MAX_PENDING_ENTRIES: usize = 16_384;
/// The most bytes of entries waiting for dependencies (same eviction).
pub const MAX_PENDING_BYTES: usize = 64 << 20;
/// How far ahead of a log's length an entry may be and still wait. Sync asks for at most
/// [`MAX_BATCH_ENTRIES`] per request and [`MAX_INFLIGHT_REQUESTS`] at once; pushes of fresh
/// entries arrive just past the log's end.
pub const MAX_SEQ_AHEAD: u64 = 4096;
/// The most bytes of entries one writer may hold in a replica: beyond, its entries are
/// refused (deterministically: every replica refuses the same suffix), and the local writer
/// cannot write further. About 400,000 todos.
pub const MAX_WRITER_BYTES: u64 = 64 << 20;
/// The most bytes of entries one replica holds in total: beyond, entries of writers not yet
/// held are refused. Bounds memory, disk and IndexedDB use whoever pushes.
pub const MAX_TOPIC_BYTES: u64 = 512 << 20;

// ---- Sync messages --------------------------------------------------------------------------

/// The largest encoded sync message (and frame). Frames are refused by their length prefix,
/// before their bytes are buffered.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// The most entries asked for, or answered, per request.
pub const MAX_BATCH_ENTRIES: u64 = 512;
/// The most entry bytes sent in one message.
pub const MAX_BATCH_BYTES: usize = 512 * 1024;
/// The most entries one `Entries` message may carry.
pub const MAX_ENTRIES_PER_MESSAGE: usize = 4096;
/// The most peer records in one message.
pub const MAX_PEER_RECORDS: usize = 64;
/// The largest peer record.
pub const MAX_PEER_RECORD_BYTES: usize = 1024;
/// The most writers listed in one `Have`, and the most writers a session remembers a
/// remote claims to hold.
pub const MAX_HAVE_WRITERS: usize = MAX_WRITERS;
/// Requests one session keeps in flight.
pub const MAX_INFLIGHT_REQUESTS: usize = 8;

// ---- Per-peer budgets -----------------------------------------------------------------------

/// Entry bytes a remote may make us serve per second (a token bucket refilled at this rate,
/// holding up to [`SERVE_BURST_BYTES`]); requests beyond it are not answered, and the remote
/// asks again later. A 20-byte `Want` cannot buy unbounded upload.
pub const SERVE_BYTES_PER_SEC: u64 = 64 << 20;
/// The serving budget's bucket size.
pub const SERVE_BURST_BYTES: u64 = 64 << 20;
/// How often a remote may make us restart the session (a repeated `Hello` re-sends `Have`
/// and fork evidence): at most once per this many milliseconds.
pub const HELLO_REPEAT_MS: u64 = 5_000;
/// Messages a remote may send before its `Hello` before it is dropped (an honest peer whose
/// hello was lost keeps pushing fresh entries until its hello is repeated).
pub const MAX_MESSAGES_BEFORE_HELLO: u32 = 1024;
/// Frames kept per remote while its stream is not open.
pub const BACKLOG_FRAMES: usize = 1024;
/// Bytes kept per remote while its stream is not open.
pub const BACKLOG_BYTES: usize = 8 << 20;
/// Writers no held entry refers to that one remote may introduce at once, and per minute
/// after that (a token bucket). Writers named by entries we hold are always taken; a
/// flood of throwaway writers from one peer is not.
pub const NEW_WRITERS_BURST: u64 = 256;
/// The refill of [`NEW_WRITERS_BURST`], per minute.
pub const NEW_WRITERS_PER_MINUTE: u64 = 64;
/// Peer records learned per remote per minute (peer exchange); more are ignored.
pub const PEER_RECORDS_PER_MINUTE: usize = 64;

// ---- Desktop networking (enforced in `native`) ----------------------------------------------

/// Established connections at once.
pub const MAX_CONNECTIONS: u32 = 128;
/// Established connections to one peer.
pub const MAX_CONNECTIONS_PER_PEER: u32 = 4;
/// Inbound connections still in their handshake.
pub const MAX_PENDING_INBOUND: u32 = 32;
/// Outbound dials in flight.
pub const MAX_PENDING_OUTBOUND: u32 = 32;
/// Inbound sync streams one peer may have open at once; further ones are reset.
pub const MAX_SYNC_STREAMS_PER_PEER: usize = 2;
/// A frame that has started must be complete within this long, or the stream is closed
/// (slow-loris).
pub const FRAME_DEADLINE_MS: u64 = 20_000;
/// How long a peer dropped for a protocol violation is refused.
pub const BAN_MS: u64 = 10 * 60_000;
/// Peer-exchange dials started per minute.
pub const PEX_DIALS_PER_MINUTE: usize = 16;
/// Relay: reservations held for others, and per peer.
pub const RELAY_RESERVATIONS: usize = 32;
/// Relay: reservations per peer.
pub const RELAY_RESERVATIONS_PER_PEER: usize = 2;
/// Relay: circuits at once, and per peer.
pub const RELAY_CIRCUITS: usize = 16;
/// Relay: circuits per peer.
pub const RELAY_CIRCUITS_PER_PEER: usize = 4;
/// Relay: how long one circuit lasts.
pub const RELAY_CIRCUIT_SECS: u64 = 10 * 60;
/// Relay: bytes one circuit carries.
pub const RELAY_CIRCUIT_BYTES: u64 = 16 << 20;
/// Relays we reserve a slot on at once.
pub const RELAY_RESERVATIONS_OUT: usize = 3;

// ---- Local surfaces (enforced in `native`) --------------------------------------------------

/// The longest control-socket request line.
pub const CONTROL_LINE_BYTES: usize = 64 * 1024;
/// How long a control-socket client may take to send its request.
pub const CONTROL_READ_MS: u64 = 10_000;
/// How long `hellopears eval` waits for the window's page to answer.
pub const EVAL_MS: u64 = 30_000;
/// How long the web server waits for a request's headers.
pub const HTTP_HEADER_MS: u64 = 10_000;

/// The bytes one head takes at most in an encoded entry (writer, varint seq, hash).
const HEAD_BYTES: usize = 32 + 10 + 32;

// The relations between the limits, checked when the crate compiles: a change that makes
// them contradict each other does not build.
const _: () = {
    // Our own entries always fit the entry limit, whatever the number of writers.
    assert!(HEADS_PER_ENTRY * HEAD_BYTES + MAX_PAYLOAD_BYTES + 256 <= MAX_ENTRY_BYTES);
    assert!(HEADS_PER_ENTRY <= MAX_HEADS);
    // An answer to one request fits one message, and one message fits an entry.
    assert!(MAX_BATCH_BYTES + MAX_ENTRY_BYTES <= MAX_MESSAGE_BYTES);
    // Catch-up requests stay within the window of entries allowed to wait.
    assert!(MAX_BATCH_ENTRIES * MAX_INFLIGHT_REQUESTS as u64 <= MAX_SEQ_AHEAD);
    // A full pending set holds at least one whole batch of the largest entries.
    assert!(MAX_PENDING_BYTES >= MAX_BATCH_ENTRIES as usize * MAX_ENTRY_BYTES);
    // An honest writer's runs are checked by every receiver, and fit a session's buffer.
    assert!(SEAL_EVERY_ENTRIES <= MAX_RUN_ENTRIES);
    assert!(SEAL_EVERY_BYTES + MAX_ENTRY_BYTES <= MAX_RUN_BYTES);
    // An answer extended to its seal stays within the window of entries allowed to wait.
    assert!(MAX_BATCH_ENTRIES + MAX_RUN_ENTRIES as u64 <= MAX_SEQ_AHEAD);
    // A writer's quota fits the topic's.
    assert!(MAX_WRITER_BYTES <= MAX_TOPIC_BYTES);
    // A session may remember every writer a replica holds.
    assert!(MAX_HAVE_WRITERS >= MAX_WRITERS);
    // One answer always fits the serving budget's bucket.
    assert!(SERVE_BURST_BYTES >= MAX_BATCH_BYTES as u64);
};

/// The longest display name of a member or device, in bytes (longer names are cut at a
/// character boundary): names are shown in every UI and stored in the membership log.
pub const MAX_NAME_BYTES: usize = 64;

/// `text` cut to at most `max` bytes at a character boundary, without control characters.
pub fn clip_text(text: &str, max: usize) -> String {
    let mut out = String::new();
    for c in text.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

/// A display name cut to [`MAX_NAME_BYTES`], without control characters.
pub fn clip_name(name: &str) -> String {
    clip_text(name, MAX_NAME_BYTES)
}

/// Addresses an invite link carries (enough to reach one of the inviter's transports).
pub const INVITE_ADDRESSES: usize = 6;

/// How long a peer our relay serves (a reservation or a circuit) may take to open a session
/// on one of our lists; then it loses the slot and the connection. Relays serve the peers
/// of their lists, not anyone who dials.
pub const RELAY_GRACE_MS: u64 = 10_000;
