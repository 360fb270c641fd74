//! The sync state machine against honest and hostile peers, driven without a network.

use hellopears_core::keys::Keypair;
use hellopears_core::log::Entry;
use hellopears_core::node::{self, Input, Node, Open, Output};
use hellopears_core::replica::Replica;
use hellopears_core::storage::LoadedState;
use hellopears_core::sync::{
    MAX_MESSAGE_BYTES, Message, PROTOCOL_VERSION, Session, SessionConfig, SyncError, WriterLen,
};
use hellopears_core::testing::introduced_session;
use hellopears_core::topic::Topic;
use hellopears_core::ui::Command;

fn replica(topic: &str, index: u64) -> Replica {
    Replica::new(Topic::from_name(topic), Keypair::derive_for_tests(100, index))
}

/// Two nodes (the engine every driver runs) on one topic, delivering each other's outputs
/// in memory until both are quiet.
struct Pair {
    a: Node<u8>,
    b: Node<u8>,
    now: u64,
}

fn node(topic: &str, index: u64) -> Node<u8> {
    let secret = *Keypair::derive_for_tests(100, index).secret();
    Node::open(Topic::from_name(topic), LoadedState::default(), secret, node::Config::default()).expect("open").0
}

impl Pair {
    /// Connects two nodes (the remote of `a` is 1, of `b` is 0).
    fn connect(a: Node<u8>, b: Node<u8>) -> Self {
        let mut pair = Self { a, b, now: 0 };
        let to_a = pair.a.handle(Input::Connected { remote: 1, open: Open::Now, identity: vec![] }, 0);
        let to_b = pair.b.handle(Input::Connected { remote: 0, open: Open::Now, identity: vec![] }, 0);
        pair.drive(to_a, to_b);
        pair
    }

    /// A command on `a`, then the exchange it causes; returns the frames delivered.
    fn command_a(&mut self, command: Command) -> usize {
        let out = self.a.handle(Input::Command(0, command), self.now);
        self.drive(out, Vec::new())
    }

    /// Carries out both nodes' outputs until neither has any; returns the frames delivered.
    fn drive(&mut self, mut from_a: Vec<Output<u8>>, mut from_b: Vec<Output<u8>>) -> usize {
        let mut delivered = 0;
        while !from_a.is_empty() || !from_b.is_empty() {
            self.now += 1;
            let (mut next_a, mut next_b) = (Vec::new(), Vec::new());
            for output in std::mem::take(&mut from_a) {
                match output {
                    Output::Persist(id, _) => next_a.extend(self.a.handle(Input::Persisted(id, Ok(())), self.now)),
                    Output::OpenStream(remote) => next_a.extend(self.a.handle(Input::StreamOpened(remote), self.now)),
                    Output::Send(1, frame) => {
                        delivered += 1;
                        next_b.extend(self.b.handle(Input::Frame(0, frame), self.now));
                    }
                    Output::Disconnect(_, reason) | Output::Ban(_, reason) => {
                        panic!("honest message refused: {reason}")
                    }
                    _ => {}
                }
            }
            for output in std::mem::take(&mut from_b) {
                match output {
                    Output::Persist(id, _) => next_b.extend(self.b.handle(Input::Persisted(id, Ok(())), self.now)),
                    Output::OpenStream(remote) => next_b.extend(self.b.handle(Input::StreamOpened(remote), self.now)),
                    Output::Send(0, frame) => {
                        delivered += 1;
                        next_a.extend(self.a.handle(Input::Frame(1, frame), self.now));
                    }
                    Output::Disconnect(_, reason) | Output::Ban(_, reason) => {
                        panic!("honest message refused: {reason}")
                    }
                    _ => {}
                }
            }
            (from_a, from_b) = (next_a, next_b);
            assert!(delivered < 100_000, "message storm");
        }
        delivered
    }
}

/// A command on a node that is not connected, made durable at once.
fn write(node: &mut Node<u8>, command: Command) {
    let mut outputs = node.handle(Input::Command(0, command), 1);
    while let Some(output) = outputs.pop() {
        if let Output::Persist(id, _) = output {
            outputs.extend(node.handle(Input::Persisted(id, Ok(())), 1));
        }
    }
    assert!(node.is_durable());
}

fn todo_count(node: &Node<u8>) -> usize {
    hellopears_core::todo::list(node.replica().db()).len()
}

#[test]
fn two_replicas_sync_both_ways_and_push_new_entries() {
    let mut a = node("t", 1);
    let mut b = node("t", 2);
    write(&mut a, Command::Add("from a".into()));
    write(&mut b, Command::Add("from b".into()));
    let mut pair = Pair::connect(a, b);
    assert_eq!(todo_count(&pair.a), 2);
    assert_eq!(pair.a.replica().db().encode(), pair.b.replica().db().encode());
    // A new local write is pushed at once, with no request round trip: one frame.
    let delivered = pair.command_a(Command::Add("later".into()));
    assert_eq!(delivered, 1);
    assert_eq!(todo_count(&pair.b), 3);
    assert_eq!(pair.a.replica().base().order_digest(), pair.b.replica().base().order_digest());
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
    let hello = Message::Hello { discovery: other, acknowledged: false, proof: None };
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
