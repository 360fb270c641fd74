//! The sync state machine against honest and hostile peers, driven without a network.

use hellopears_core::keys::Keypair;
use hellopears_core::log::Entry;
use hellopears_core::replica::Replica;
use hellopears_core::sync::{
    MAX_MESSAGE_BYTES, Message, PROTOCOL_VERSION, Session, SessionConfig, SyncError, WriterLen,
};
use hellopears_core::topic::Topic;

fn replica(topic: &str, index: u64) -> Replica {
    Replica::new(Topic::from_name(topic), Keypair::derive_for_tests(100, index))
}

/// Two replicas with a session each, exchanging messages until both are quiet.
struct Pair {
    a: Replica,
    b: Replica,
    sa: Session,
    sb: Session,
    now: u64,
}

impl Pair {
    fn new(a: Replica, b: Replica) -> Self {
        Self { a, b, sa: Session::new(SessionConfig::default()), sb: Session::new(SessionConfig::default()), now: 0 }
    }

    /// Runs the exchange; returns the number of messages delivered.
    fn run(&mut self) -> usize {
        let mut to_b: Vec<Message> = self.sa.start(&self.a, self.now);
        let mut to_a: Vec<Message> = self.sb.start(&self.b, self.now);
        self.drive(&mut to_a, &mut to_b)
    }

    fn drive(&mut self, to_a: &mut Vec<Message>, to_b: &mut Vec<Message>) -> usize {
        let mut delivered = 0;
        while !to_a.is_empty() || !to_b.is_empty() {
            self.now += 1;
            for message in std::mem::take(to_b) {
                delivered += 1;
                let out = self.sb.handle_bytes(&mut self.b, &message.encode(), self.now).expect("honest message");
                to_a.extend(out);
            }
            self.b.update();
            let fresh = self.b.take_fresh();
            to_a.extend(self.sb.push(&fresh));
            for message in std::mem::take(to_a) {
                delivered += 1;
                let out = self.sa.handle_bytes(&mut self.a, &message.encode(), self.now).expect("honest message");
                to_b.extend(out);
            }
            self.a.update();
            let fresh = self.a.take_fresh();
            to_b.extend(self.sa.push(&fresh));
            assert!(delivered < 100_000, "message storm");
        }
        delivered
    }
}

#[test]
fn two_replicas_sync_both_ways_and_push_new_entries() {
    let mut a = replica("t", 1);
    let mut b = replica("t", 2);
    a.todos().add("from a", 1).expect("add");
    b.todos().add("from b", 2).expect("add");
    let mut pair = Pair::new(a, b);
    pair.run();
    assert_eq!(pair.a.todos().list().len(), 2);
    assert_eq!(pair.a.db().encode(), pair.b.db().encode());
    // A new local write is pushed at once, with no request round trip.
    pair.a.todos().add("later", 3).expect("add");
    let fresh = pair.a.take_fresh();
    let mut to_b = pair.sa.push(&fresh);
    assert_eq!(to_b.len(), 1);
    assert!(matches!(to_b[0], Message::Entries { .. }));
    let delivered = pair.drive(&mut Vec::new(), &mut to_b);
    assert_eq!(delivered, 1);
    assert_eq!(pair.b.todos().list().len(), 3);
    assert_eq!(pair.a.base().order_digest(), pair.b.base().order_digest());
}

#[test]
fn catch_up_of_a_large_log_goes_in_bounded_batches_with_progress() {
    let mut a = replica("t", 3);
    for i in 0..1000 {
        a.todos().add(&format!("todo {i}"), i).expect("add");
    }
    let mut b = replica("t", 4);
    let mut sa = Session::new(SessionConfig::default());
    let mut sb = Session::new(SessionConfig::default());
    let mut to_b = sa.start(&a, 0);
    let mut to_a = sb.start(&b, 0);
    let mut progress = Vec::new();
    for round in 0..100 {
        let mut next_to_a = Vec::new();
        for message in to_b.drain(..) {
            if let Message::Entries { entries } = &message {
                assert!(entries.len() as u64 <= hellopears_core::sync::MAX_BATCH_ENTRIES);
                assert!(message.encode().len() <= MAX_MESSAGE_BYTES);
            }
            next_to_a.extend(sb.handle(&mut b, message, round).expect("honest"));
        }
        b.update();
        progress.push(sb.missing(&b));
        for message in to_a.drain(..).chain(next_to_a) {
            to_b.extend(sa.handle(&mut a, message, round).expect("honest"));
        }
        if to_b.is_empty() {
            break;
        }
    }
    assert_eq!(b.todos().list().len(), 1000);
    assert_eq!(sb.missing(&b), 0);
    // Progress was visible: the missing count went down in several steps.
    let steps: Vec<u64> = progress.iter().copied().filter(|&m| m > 0).collect();
    assert!(steps.len() >= 3, "progress steps: {progress:?}");
    assert!(steps.windows(2).all(|w| w[0] >= w[1]), "progress went backwards: {progress:?}");
}

#[test]
fn writers_learned_through_a_middle_peer_join_the_base() {
    let mut a = replica("t", 5);
    let b = replica("t", 6);
    let mut c = replica("t", 7);
    a.todos().add("a's", 1).expect("add");
    c.todos().add("c's", 2).expect("add");
    let mut ab = Pair::new(a, b);
    ab.run();
    let (a, b) = (ab.a, ab.b);
    let mut bc = Pair::new(b, c);
    bc.run();
    let (_, c) = (bc.a, bc.b);
    assert!(c.base().writers().iter().any(|w| w.id == a.writer_id()));
    assert_eq!(c.todos_list_len(), 2);
}

trait ListLen {
    fn todos_list_len(&self) -> usize;
}
impl ListLen for Replica {
    fn todos_list_len(&self) -> usize {
        hellopears_core::todo::list(self.db()).len()
    }
}

fn introduced_session(replica: &mut Replica) -> Session {
    let mut session = Session::new(SessionConfig::default());
    session.start(replica, 0);
    let hello = Message::Hello { discovery: replica.topic().discovery_key(), acknowledged: true };
    session.handle(replica, hello, 0).expect("hello");
    session
}

#[test]
fn garbage_bytes_get_typed_errors() {
    let mut r = replica("t", 8);
    let mut session = introduced_session(&mut r);
    assert_eq!(session.handle_bytes(&mut r, &[], 1), Err(SyncError::Truncated));
    assert_eq!(session.handle_bytes(&mut r, &[9, 1, 2], 1), Err(SyncError::UnknownVersion(9)));
    assert!(matches!(session.handle_bytes(&mut r, &[PROTOCOL_VERSION, 250, 1], 1), Err(SyncError::Malformed(_))));
    let huge = vec![PROTOCOL_VERSION; MAX_MESSAGE_BYTES + 1];
    assert!(matches!(session.handle_bytes(&mut r, &huge, 1), Err(SyncError::Oversized { .. })));
    let mut trailing = Message::Have { writers: vec![] }.encode();
    trailing.push(0);
    assert_eq!(session.handle_bytes(&mut r, &trailing, 1), Err(SyncError::TrailingBytes(1)));
    for error in [SyncError::Truncated, SyncError::UnknownVersion(9), SyncError::TrailingBytes(1)] {
        assert!(error.is_fatal());
    }
}

#[test]
fn wrong_topic_and_missing_hello_are_refused() {
    let mut r = replica("t", 9);
    let mut session = Session::new(SessionConfig::default());
    session.start(&r, 0);
    let have = Message::Have { writers: vec![] };
    assert_eq!(session.handle(&mut r, have, 0), Err(SyncError::NotIntroduced));
    let other = Topic::from_name("another topic").discovery_key();
    let hello = Message::Hello { discovery: other, acknowledged: false };
    assert_eq!(session.handle(&mut r, hello, 0), Err(SyncError::TopicMismatch));
    assert!(SyncError::TopicMismatch.is_fatal());
}

#[test]
fn hostile_entries_and_lists_are_refused() {
    let mut r = replica("t", 10);
    let mut session = introduced_session(&mut r);
    // An entry with a bad signature.
    let mut other = replica("t", 11);
    let entry = other.todos().add("x", 1).map(|_| other.take_fresh().remove(0)).expect("add");
    let forged = entry.with_signature_for_tests([3; 64]);
    let result = session.handle(&mut r, Message::Entries { entries: vec![forged.bytes().to_vec()] }, 1);
    assert!(matches!(&result, Err(error @ SyncError::InvalidEntry(_)) if error.is_fatal()), "{result:?}");
    // Garbage inside an entries message.
    let result = session.handle(&mut r, Message::Entries { entries: vec![vec![1, 2, 3]] }, 1);
    assert!(matches!(result, Err(SyncError::BadEntry(_))));
    // Too many peer records, or one too large.
    let result = session.handle(&mut r, Message::Peers { records: vec![vec![0]; 65] }, 1);
    assert!(matches!(result, Err(SyncError::OverLimit { .. })));
    let result = session.handle(&mut r, Message::Peers { records: vec![vec![0; 2000]] }, 1);
    assert!(matches!(result, Err(SyncError::OverLimit { .. })));
    // A writer list over the limit.
    let writers = vec![WriterLen { writer: r.writer_id(), len: 1 }; 5000];
    assert!(matches!(session.handle(&mut r, Message::Have { writers }, 1), Err(SyncError::OverLimit { .. })));
    // Forged fork evidence.
    let result = session.handle(&mut r, Message::Fork { evidence: vec![1, 2, 3] }, 1);
    assert!(matches!(result, Err(SyncError::BadForkEvidence(_))));
    // The replica is untouched and still serves.
    assert_eq!(r.base().total_entries(), 0);
    let valid = Message::Entries { entries: vec![entry.bytes().to_vec()] };
    session.handle(&mut r, valid, 2).expect("valid entry accepted after garbage");
    r.update();
    assert_eq!(r.todos().list().len(), 1);
}

#[test]
fn a_huge_want_is_answered_in_a_bounded_batch() {
    let mut r = replica("t", 12);
    for i in 0..600 {
        r.todos().add(&format!("{i}"), i).expect("add");
    }
    let mut session = introduced_session(&mut r);
    let want = Message::Want { writer: r.writer_id(), start: 0, end: u64::MAX };
    let out = session.handle(&mut r, want, 1).expect("want");
    let sent: usize = out.iter().map(|m| if let Message::Entries { entries } = m { entries.len() } else { 0 }).sum();
    assert_eq!(sent as u64, hellopears_core::sync::MAX_BATCH_ENTRIES);
    let beyond = Message::Want { writer: r.writer_id(), start: u64::MAX - 1, end: 3 };
    assert!(session.handle(&mut r, beyond, 1).expect("want").is_empty());
}

#[test]
fn lost_hello_is_recovered_by_tick() {
    let mut a = replica("t", 13);
    let mut b = replica("t", 14);
    a.todos().add("x", 1).expect("add");
    let mut sa = Session::new(SessionConfig::default());
    let mut sb = Session::new(SessionConfig::default());
    let _lost = sa.start(&a, 0);
    let to_a = sb.start(&b, 0);
    let mut to_b = Vec::new();
    for message in to_a {
        to_b.extend(sa.handle(&mut a, message, 1).expect("ok"));
    }
    // b never heard a's hello: its tick resends its own, unacknowledged, and a answers.
    for message in to_b {
        let _ = sb.handle(&mut b, message, 2);
    }
    assert!(!sb.is_introduced());
    let resent = sb.tick(&b, 10_000);
    let mut back = Vec::new();
    for message in resent {
        back.extend(sa.handle(&mut a, message, 10_001).expect("ok"));
    }
    let mut rest = Vec::new();
    for message in back {
        rest.extend(sb.handle(&mut b, message, 10_002).expect("ok"));
    }
    assert!(sb.is_introduced());
    assert!(rest.iter().any(|m| matches!(m, Message::Want { .. })), "b asks for a's entries: {rest:?}");
}

#[test]
fn entries_round_trip_through_messages() {
    let mut r = replica("t", 15);
    r.todos().add("x", 1).expect("add");
    let entry: Entry = r.take_fresh().remove(0);
    let message = Message::Entries { entries: vec![entry.bytes().to_vec()] };
    assert_eq!(Message::decode(&message.encode()), Ok(message));
}
