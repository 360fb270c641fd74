//! Signatures amortized over runs: a writer seals the last entry of each batch, receivers
//! check the hash chain and one signature per run, and entries stay provable one by one.

use hellopears_core::base::{Base, IngestError, Ingested};
use hellopears_core::db::{Db, DbOp, Document, Value};
use hellopears_core::keys::Keypair;
use hellopears_core::limits::SEAL_EVERY_ENTRIES;
use hellopears_core::log::{Entry, ForkEvidence, RunError, check_run};
use hellopears_core::replica::Replica;
use hellopears_core::storage::LoadedState;
use hellopears_core::sync::Message;
use hellopears_core::testing::introduced_session;
use hellopears_core::topic::Topic;

fn op(n: usize) -> Vec<u8> {
    DbOp::Delete { collection: "todos".into(), id: format!("{n}").into() }.encode()
}

/// `count` entries of `writer` appended as one batch: only the last is sealed.
fn batch(base: &mut Base<Db>, writer: &Keypair, count: usize) -> Vec<Entry> {
    let mut entries: Vec<Entry> =
        (0..count).map(|n| base.append_local_with(writer, op(n), false).expect("append")).collect();
    if let Some(sealed) = base.seal_local_tip(writer) {
        *entries.last_mut().expect("one entry at least") = sealed;
    }
    entries
}

#[test]
fn runs_are_proven_by_one_seal() {
    let writer = Keypair::derive_for_tests(500, 0);
    let mut source = Base::new(Db::new());
    let run = batch(&mut source, &writer, 10);
    assert_eq!(run.iter().filter(|entry| entry.is_sealed()).count(), 1, "one seal for the batch");
    let key = writer.id().verifying_key().expect("key");
    assert_eq!(check_run(&run, &key, &[0; 32], false), Ok(()));
    // Unsealed entries prove nothing alone, and are refused without blame.
    let mut base = Base::new(Db::new());
    let refused = base.ingest(run[0].clone()).expect_err("unsealed alone");
    assert!(matches!(refused, IngestError::Unsealed { seq: 0, .. }));
    assert!(!refused.is_fatal());
    // A gap, a run without its seal, a forged seal, and another list are all refused.
    let gapped = [&run[..4], &run[5..]].concat();
    assert_eq!(check_run(&gapped, &key, &[0; 32], false), Err(RunError::Unlinked { seq: 3 }));
    assert_eq!(check_run(&run[..9], &key, &[0; 32], false), Err(RunError::Unsealed(8)));
    let forged = [&run[..9], &[run[9].with_signature_for_tests([7; 64])]].concat();
    assert_eq!(check_run(&forged, &key, &[0; 32], false), Err(RunError::BadSeal(9)));
    assert_eq!(check_run(&run, &key, &[1; 32], false), Err(RunError::BadSeal(9)));
    let other = Keypair::derive_for_tests(500, 1).id().verifying_key().expect("key");
    assert_eq!(check_run(&run, &other, &[0; 32], false), Err(RunError::BadSeal(9)));
    // The whole run integrates with one signature check.
    let outcomes = base.ingest_run(&run);
    assert!(outcomes.iter().all(|outcome| matches!(outcome, Ok(Ingested::Integrated(_)))), "{outcomes:?}");
    assert_eq!(base.len(&writer.id()), 10);
    assert_eq!(base.sealed_len(&writer.id()), 10);
    // A long batch is sealed at least every SEAL_EVERY_ENTRIES entries.
    let long = batch(&mut source, &writer, 3 * SEAL_EVERY_ENTRIES);
    let seals = long.iter().filter(|entry| entry.is_sealed()).count();
    assert!((3..=4).contains(&seals), "{seals} seals for {} entries", long.len());
    // An answer ends at a seal: a request for one entry is extended to its run's end.
    let start = 10 + SEAL_EVERY_ENTRIES as u64;
    let end = source.sealed_end(&writer.id(), start, start + 1);
    assert!(source.entry(&writer.id(), end - 1).is_some_and(Entry::is_sealed));
    assert!(end - start <= SEAL_EVERY_ENTRIES as u64);
}

#[test]
fn a_fork_between_unsealed_entries_is_proven_by_their_runs() {
    let writer = Keypair::derive_for_tests(501, 0);
    let mut one = Base::new(Db::new());
    let mut two = Base::new(Db::new());
    let branch_one = batch(&mut one, &writer, 5);
    // The same writer, elsewhere, writes other operations at the same seqs.
    let branch_two: Vec<Entry> = {
        let mut entries: Vec<Entry> =
            (0..5).map(|n| two.append_local_with(&writer, op(100 + n), false).expect("append")).collect();
        let sealed = two.seal_local_tip(&writer).expect("sealed");
        *entries.last_mut().expect("entries") = sealed;
        entries
    };
    let mut base = Base::new(Db::new());
    assert!(base.ingest_run(&branch_one).iter().all(Result::is_ok));
    let outcomes = base.ingest_run(&branch_two);
    let Some(Err(IngestError::Fork(evidence))) = outcomes.first() else { panic!("a fork: {outcomes:?}") };
    assert!(!evidence.first.is_sealed() && !evidence.second.is_sealed());
    assert_eq!(evidence.first_proof.len(), 4);
    // Anyone can check the evidence from its bytes alone...
    let decoded = ForkEvidence::decode_and_check(&evidence.encode(), &[0; 32]).expect("proven");
    assert_eq!(&decoded, evidence.as_ref());
    assert!(base.is_quarantined(&writer.id()));
    // ...and evidence whose proof does not lead to a seal proves nothing.
    let mut broken = (**evidence).clone();
    broken.second_proof.pop();
    assert!(broken.check(&[0; 32]).is_err());
    broken = (**evidence).clone();
    broken.first_proof.remove(0);
    assert!(broken.check(&[0; 32]).is_err());
}

fn big_doc(n: usize) -> DbOp {
    let mut doc = Document::new();
    doc.insert("_id".into(), Value::Str(format!("doc{n:04}").into()));
    doc.insert("text".into(), Value::Str("x".repeat(20_000).into()));
    DbOp::Insert { collection: "todos".into(), doc: doc.into() }
}

/// `count` documents of 20 KB written as one batch.
fn write_big_docs(replica: &mut Replica, count: usize) {
    replica.begin_batch();
    for n in 0..count {
        replica.write(&big_doc(n)).expect("write");
    }
    replica.end_batch();
}

/// Answers larger than a message are split wherever the byte limit falls, often inside a
/// run: the receiver keeps the unsealed entries until their seal arrives.
#[test]
fn answers_split_inside_a_run_wait_for_their_seal() {
    let topic = Topic::from_name("runs");
    let mut a = Replica::new(topic.clone(), Keypair::derive_for_tests(502, 0));
    write_big_docs(&mut a, 60);
    let writer = a.writer_id();
    let seals = (0..60).filter(|&seq| a.base().entry(&writer, seq).is_some_and(Entry::is_sealed)).count();
    assert!((4..60).contains(&seals), "sealed every 256 KiB, not every entry: {seals}");
    let mut b = Replica::new(topic, Keypair::derive_for_tests(502, 1));
    // `a_side` is a's session with b, `b_side` b's session with a.
    let mut a_side = introduced_session(&mut a);
    let mut b_side = introduced_session(&mut b);
    let mut from_a = a_side.start(&a, 1);
    let mut split_inside_a_run = false;
    for round in 0..100 {
        for message in &from_a {
            if let Message::Entries { entries } = message {
                let last = Entry::decode(entries.last().expect("entries")).expect("decodes");
                split_inside_a_run |= !last.is_sealed();
            }
        }
        let mut from_b = Vec::new();
        for message in std::mem::take(&mut from_a) {
            from_b.extend(b_side.handle(&mut b, message, round).expect("b handles a"));
        }
        b.update();
        for message in from_b {
            from_a.extend(a_side.handle(&mut a, message, round).expect("a handles b"));
        }
        if from_a.is_empty() {
            break;
        }
    }
    assert!(split_inside_a_run, "an answer was split inside a run");
    assert_eq!(b.base().len(&writer), 60);
    assert_eq!(b.db().encode(), a.db().encode());
}

/// A batch is stored with its seal and loads with one check per writer; a remote writer's
/// entries after its last seal (which this replica cannot prove to anyone) are left out
/// without an error, to be fetched again with their seal.
#[test]
fn stored_runs_load_and_unproven_tails_are_left_out() {
    let topic = Topic::from_name("stored-runs");
    let mut a = Replica::new(topic.clone(), Keypair::derive_for_tests(503, 0));
    write_big_docs(&mut a, 40);
    let saved = a.take_unsaved();
    let last = saved.entries.iter().max_by_key(|(_, seq, _)| *seq).expect("entries");
    assert!(Entry::decode(&last.2).expect("decodes").is_sealed(), "a batch is saved with its seal");
    let state = LoadedState {
        entries: saved.entries.iter().map(|(_, _, bytes)| bytes.to_vec()).collect(),
        ..Default::default()
    };
    // Reopened by its own writer: everything loads.
    let (own, errors) = Replica::open(topic.clone(), Keypair::derive_for_tests(503, 0), state.clone());
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(own.base().len(&a.writer_id()), 40);
    // Loaded by another device, with the last seal cut off: the tail after the last seal that
    // remains is left out, the rest loads, no error.
    let mut cut = state.clone();
    let tip = cut.entries.iter().position(|bytes| bytes == &last.2.to_vec()).expect("tip");
    cut.entries.remove(tip);
    let (other, errors) = Replica::open(topic, Keypair::derive_for_tests(503, 1), cut);
    assert!(errors.is_empty(), "{errors:?}");
    let held = other.base().len(&a.writer_id());
    assert!(held < 39 && held == other.base().sealed_len(&a.writer_id()), "held {held}");
}
