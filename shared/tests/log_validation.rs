//! Every way an entry can be wrong is rejected with its own error, and forks are caught.

use hellopears_core::base::{Base, BaseEvent, IngestError, Ingested};
use hellopears_core::db::{Db, DbOp};
use hellopears_core::keys::{Hash, Keypair};
use hellopears_core::log::{DecodeError, Entry, EntryBody, ForkEvidence, Head, MAX_ENTRY_BYTES};
use hellopears_core::replica::{Notice, Replica};
use hellopears_core::topic::Topic;

fn op(n: usize) -> Vec<u8> {
    DbOp::Delete { collection: "todos".into(), id: format!("{n}").into() }.encode()
}

fn body(keypair: &Keypair, seq: u64, prev: Option<Hash>, clock: u64) -> EntryBody {
    EntryBody { writer: keypair.id(), seq, prev, heads: vec![], clock, payload: op(seq as usize) }
}

/// A base holding two entries of `writer`, and that writer's first entry.
fn base_with_log(writer: &Keypair) -> (Base<Db>, Entry) {
    let mut source = Base::new(Db::new());
    let first = source.append_local(writer, op(0)).expect("append");
    source.append_local(writer, op(1)).expect("append");
    let mut base = Base::new(Db::new());
    for seq in 0..2 {
        let entry = source.entry(&writer.id(), seq).expect("held").clone();
        assert_eq!(base.ingest(entry), Ok(Ingested::Integrated(1)));
    }
    (base, first)
}

#[test]
fn bad_signature_is_rejected() {
    let writer = Keypair::derive_for_tests(1, 0);
    let entry = Entry::sign(body(&writer, 0, None, 1), &writer);
    let mut signature = [0u8; 64];
    signature.copy_from_slice(&entry.bytes()[entry.bytes().len() - 64..]);
    signature[10] ^= 1;
    let forged = Entry::decode(entry.with_signature_for_tests(signature).bytes()).expect("structure is fine");
    let mut base = Base::new(Db::new());
    assert_eq!(base.ingest(forged), Err(IngestError::BadSignature { writer: writer.id(), seq: 0 }));
    // Signed by someone else.
    let impostor = Keypair::derive_for_tests(1, 1);
    let mut claimed = body(&writer, 0, None, 1);
    claimed.writer = writer.id();
    let wrong_key = Entry::sign(claimed, &impostor);
    assert!(matches!(base.ingest(wrong_key), Err(IngestError::BadSignature { .. })));
    assert_eq!(base.total_entries(), 0);
}

#[test]
fn broken_hash_chain_is_rejected() {
    let writer = Keypair::derive_for_tests(2, 0);
    let (mut base, _) = base_with_log(&writer);
    let wrong_prev = Entry::sign(body(&writer, 2, Some(Hash::digest(b"not the previous entry")), 3), &writer);
    assert_eq!(base.ingest(wrong_prev), Err(IngestError::BrokenChain { writer: writer.id(), seq: 2 }));
    assert_eq!(base.len(&writer.id()), 2);
}

#[test]
fn wrong_seq_is_rejected() {
    let writer = Keypair::derive_for_tests(3, 0);
    let (mut base, _) = base_with_log(&writer);
    let far = Entry::sign(body(&writer, 1 << 40, Some(Hash::digest(b"x")), 5), &writer);
    assert_eq!(base.ingest(far), Err(IngestError::SeqTooFarAhead { len: 2, seq: 1 << 40 }));
    // seq 0 must not name a previous entry, and a later seq must.
    let bad = Entry::sign(body(&writer, 0, Some(Hash::digest(b"x")), 1), &writer);
    assert_eq!(Entry::decode(bad.bytes()), Err(DecodeError::PrevMismatch));
}

#[test]
fn impossible_clock_is_rejected() {
    let writer = Keypair::derive_for_tests(4, 0);
    let (mut base, _) = base_with_log(&writer);
    let prev = base.entry(&writer.id(), 1).expect("held").hash();
    for clock in [1, 2, 4, 1000] {
        let entry = Entry::sign(body(&writer, 2, Some(prev), clock), &writer);
        assert_eq!(
            base.ingest(entry),
            Err(IngestError::ImpossibleClock { writer: writer.id(), seq: 2, expected: 3, got: clock })
        );
    }
    let zero = Entry::sign(body(&writer, 0, None, 0), &writer);
    assert_eq!(Entry::decode(zero.bytes()), Err(DecodeError::ClockOutOfRange(0)));
    // A head's clock counts too.
    let other = Keypair::derive_for_tests(4, 1);
    let mut with_head = body(&other, 0, None, 1);
    with_head.heads = vec![Head { writer: writer.id(), seq: 1, hash: prev }];
    let entry = Entry::sign(with_head, &other);
    assert!(matches!(base.ingest(entry), Err(IngestError::ImpossibleClock { expected: 3, got: 1, .. })));
}

/// A head naming an entry we hold under another hash is not an error of the sender (its
/// writer may have forked): the entry waits, and the head is reported as disputed so the
/// sender can be asked for the entry it names.
#[test]
fn head_mismatch_waits_as_disputed() {
    let writer = Keypair::derive_for_tests(5, 0);
    let (mut base, _) = base_with_log(&writer);
    let other = Keypair::derive_for_tests(5, 1);
    let mut claimed = body(&other, 0, None, 3);
    claimed.heads = vec![Head { writer: writer.id(), seq: 1, hash: Hash::digest(b"other") }];
    let entry = Entry::sign(claimed, &other);
    assert_eq!(base.ingest(entry), Ok(Ingested::Pending));
    assert_eq!(base.take_disputes(), vec![(writer.id(), 1)]);
    assert_eq!(base.len(&other.id()), 0);
}

#[test]
fn unknown_version_is_rejected() {
    let writer = Keypair::derive_for_tests(6, 0);
    let mut bytes = Entry::sign(body(&writer, 0, None, 1), &writer).bytes().to_vec();
    bytes[0] = 4;
    assert_eq!(Entry::decode(&bytes), Err(DecodeError::UnknownVersion(4)));
}

#[test]
fn truncated_bytes_are_rejected() {
    let writer = Keypair::derive_for_tests(7, 0);
    let entry = Entry::sign(body(&writer, 0, None, 1), &writer);
    let bytes = entry.bytes().to_vec();
    assert!(matches!(Entry::decode(&bytes[..10]), Err(DecodeError::Malformed(_))));
    assert_eq!(Entry::decode(&[]), Err(DecodeError::Truncated { len: 0 }));
    // A version 2 entry always ends in its signature.
    assert_eq!(Entry::decode(&[2, 0, 0]), Err(DecodeError::Truncated { len: 3 }));
    // A body cut short, a signature after it.
    let cut = [&bytes[..20], &bytes[bytes.len() - 64..]].concat();
    assert!(Entry::decode(&cut).is_err());
    // Every prefix fails cleanly, but one: the body without its seal, an unsealed entry with
    // the same identity (which a run must prove; see `runs_are_proven_by_one_seal`).
    for len in 0..bytes.len() {
        let decoded = Entry::decode(&bytes[..len]);
        if len == bytes.len() - 64 {
            let unsealed = decoded.expect("the body alone is an unsealed entry");
            assert!(!unsealed.is_sealed());
            assert_eq!(unsealed.hash(), entry.hash());
        } else {
            assert!(decoded.is_err(), "prefix of {len} bytes decoded");
        }
    }
}

#[test]
fn oversized_bytes_are_rejected() {
    let writer = Keypair::derive_for_tests(8, 0);
    let mut big = body(&writer, 0, None, 1);
    big.payload = vec![7; MAX_ENTRY_BYTES];
    let entry = Entry::sign(big, &writer);
    assert!(matches!(Entry::decode(entry.bytes()), Err(DecodeError::Oversized { max: MAX_ENTRY_BYTES, .. })));
}

#[test]
fn trailing_bytes_and_bad_heads_are_rejected() {
    let writer = Keypair::derive_for_tests(9, 0);
    let entry = Entry::sign(body(&writer, 0, None, 1), &writer);
    let bytes = entry.bytes();
    let split = bytes.len() - 64;
    let padded = [&bytes[..split], &[0u8][..], &bytes[split..]].concat();
    assert_eq!(Entry::decode(&padded), Err(DecodeError::TrailingBytes(65)));
    let mut self_head = body(&writer, 0, None, 1);
    self_head.heads = vec![Head { writer: writer.id(), seq: 0, hash: Hash::default() }];
    assert_eq!(Entry::decode(Entry::sign(self_head, &writer).bytes()), Err(DecodeError::BadHeads));
}

#[test]
fn fork_is_detected_quarantined_and_reported() {
    let writer = Keypair::derive_for_tests(10, 0);
    let (mut base, first) = base_with_log(&writer);
    base.take_events();
    let mut other = body(&writer, 0, None, 1);
    other.payload = op(99);
    let conflicting = Entry::sign(other, &writer);
    let Err(IngestError::Fork(evidence)) = base.ingest(conflicting.clone()) else { panic!("fork not detected") };
    assert_eq!(evidence.first, first);
    assert_eq!(evidence.second, conflicting);
    assert!(base.is_quarantined(&writer.id()));
    assert_eq!(base.forks().len(), 1);
    assert!(matches!(base.take_events().as_slice(), [BaseEvent::Fork(_)]));
    // Evidence is portable: it checks on its own and survives encoding.
    let decoded = ForkEvidence::decode_and_check(&evidence.encode(), &[0; 32]).expect("valid evidence");
    assert_eq!(decoded, *evidence);
    // A quarantined writer's further entries are refused.
    let prev = base.entry(&writer.id(), 1).expect("held").hash();
    let next = Entry::sign(body(&writer, 2, Some(prev), 3), &writer);
    assert_eq!(base.ingest(next), Err(IngestError::Quarantined(writer.id())));
    // Forged evidence is refused.
    let not_a_fork = ForkEvidence::new(evidence.first.clone(), evidence.first.clone());
    assert!(not_a_fork.check(&[0; 32]).is_err());
}

#[test]
fn fork_reaches_the_replica_user_and_other_replicas() {
    let topic = Topic::from_name("forks");
    let forker = Keypair::derive_for_tests(11, 0).bound_to(topic.id().0);
    let mut a = Replica::new(topic.clone(), Keypair::derive_for_tests(11, 1));
    let mut b = Replica::new(topic, Keypair::derive_for_tests(11, 2));
    let one = Entry::sign(body(&forker, 0, None, 1), &forker);
    let mut two_body = body(&forker, 0, None, 1);
    two_body.payload = op(5);
    let two = Entry::sign(two_body, &forker);
    a.ingest(one).expect("first is fine");
    let Err(IngestError::Fork(evidence)) = a.ingest(two) else { panic!("fork not detected") };
    assert!(a.take_notices().contains(&Notice::Fork { writer: forker.id(), seq: 0 }));
    assert_eq!(a.take_fresh_forks().len(), 1);
    assert_eq!(a.take_unsaved().forks.len(), 1);
    // Evidence about a writer a replica does not hold takes no writer slot.
    assert_eq!(b.add_fork_evidence((*evidence).clone()), Ok(false));
    assert!(b.base().writers().is_empty());
    // A replica holding either branch quarantines the writer.
    let one_again = Entry::sign(body(&forker, 0, None, 1), &forker);
    b.ingest(one_again).expect("first is fine");
    assert_eq!(b.add_fork_evidence(*evidence), Ok(true));
    assert!(b.base().is_quarantined(&forker.id()));
}

#[test]
fn out_of_order_entries_wait_and_then_integrate() {
    let writer = Keypair::derive_for_tests(12, 0);
    let mut source = Base::new(Db::new());
    let entries: Vec<Entry> = (0..5).map(|i| source.append_local(&writer, op(i)).expect("append")).collect();
    let mut base = Base::new(Db::new());
    for entry in entries.iter().skip(1).rev() {
        assert_eq!(base.ingest(entry.clone()), Ok(Ingested::Pending));
    }
    assert_eq!(base.pending_count(), 4);
    assert_eq!(base.ingest(entries[0].clone()), Ok(Ingested::Integrated(5)));
    assert_eq!(base.pending_count(), 0);
    assert_eq!(base.ingest(entries[3].clone()), Ok(Ingested::Duplicate));
}

#[test]
fn an_entry_of_one_list_is_refused_in_another() {
    let writer = Keypair::derive_for_tests(12, 0).bound_to(Topic::from_name("a").id().0);
    let entry = Entry::sign(body(&writer, 0, None, 1), &writer);
    let mut a = Replica::new(Topic::from_name("a"), Keypair::derive_for_tests(12, 1));
    let mut b = Replica::new(Topic::from_name("b"), Keypair::derive_for_tests(12, 2));
    assert!(a.ingest(entry.clone()).is_ok());
    assert_eq!(b.ingest(entry), Err(IngestError::BadSignature { writer: writer.id(), seq: 0 }));
}
