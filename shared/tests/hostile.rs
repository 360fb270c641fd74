//! The core against hostile writers and peers: each finding of the security review that the
//! core can decide, with the limit that bounds it (see `hellopears_core::limits`).

use hellopears_core::base::{Base, BaseEvent, IngestError, Ingested, Limits};
use hellopears_core::db::{Db, DbOp};
use hellopears_core::keys::{Hash, Keypair};
use hellopears_core::limits::{
    HEADS_PER_ENTRY, MAX_ENTRY_BYTES, MAX_HAVE_WRITERS, NEW_WRITERS_BURST, SERVE_BURST_BYTES,
};
use hellopears_core::log::{Entry, EntryBody, ForkEvidence};
use hellopears_core::replica::{Notice, Replica};
use hellopears_core::sync::{Message, Session, SessionConfig, SyncError, WriterLen};
use hellopears_core::topic::Topic;

fn op(n: u64) -> Vec<u8> {
    DbOp::Delete { collection: "todos".into(), id: format!("{n}").into() }.encode()
}

/// A signed seq-0 entry of a fresh writer.
fn throwaway(group: u64, index: u64) -> Entry {
    throwaway_in([0; 32], group, index)
}

/// A signed seq-0 entry of a fresh writer, for the list `list`.
fn throwaway_in(list: [u8; 32], group: u64, index: u64) -> Entry {
    let key = Keypair::derive_for_tests(group, index).bound_to(list);
    Entry::sign(EntryBody { writer: key.id(), seq: 0, prev: None, heads: vec![], clock: 1, payload: op(index) }, &key)
}

fn replica(topic: &Topic, index: u64) -> Replica {
    Replica::new(topic.clone(), Keypair::derive_for_tests(400, index))
}

/// Two replicas with a session each way, exchanging encoded messages until quiet. Panics
/// on a fatal error: honest replicas must never drop each other.
fn exchange(a: &mut Replica, b: &mut Replica) {
    let (mut sa, mut sb) = (Session::new(SessionConfig::default()), Session::new(SessionConfig::default()));
    let mut to_b = sa.start(a, 0);
    let mut to_a = sb.start(b, 0);
    let mut now = 1;
    for _ in 0..10_000 {
        if to_a.is_empty() && to_b.is_empty() {
            return;
        }
        now += 1;
        let next_a = deliver(b, &mut sb, std::mem::take(&mut to_b), now);
        let next_b = deliver(a, &mut sa, std::mem::take(&mut to_a), now);
        to_a.extend(next_a);
        to_b.extend(next_b);
    }
    panic!("no quiet after 10,000 rounds");
}

fn deliver(replica: &mut Replica, session: &mut Session, messages: Vec<Message>, now: u64) -> Vec<Message> {
    let mut out = Vec::new();
    for message in messages {
        match session.handle_bytes(replica, &message.encode(), now) {
            Ok(reply) => out.extend(reply),
            Err(error) => assert!(!error.is_fatal(), "honest message refused: {error}"),
        }
        replica.update();
        out.extend(session.push(&replica.take_fresh()));
        for evidence in replica.take_fresh_forks() {
            out.extend(session.push_fork(&evidence));
        }
    }
    out
}

/// Finding 1: 1,100 throwaway writers cannot make our next entry oversized; it carries at
/// most HEADS_PER_ENTRY heads and replicates. (Finding 6: a peer that gets it takes the
/// writers it names, and unnamed writers only within its budget per remote.)
#[test]
fn many_throwaway_writers_do_not_stop_our_writes() {
    let topic = Topic::from_name("heads");
    let mut a = replica(&topic, 0);
    let mut b = replica(&topic, 1);
    for index in 0..1_100 {
        assert!(matches!(a.ingest(throwaway_in(topic.id().0, 401, index)), Ok(Ingested::Integrated(1))));
    }
    a.update();
    a.take_fresh();
    let ours = a.write(&DbOp::Delete { collection: "todos".into(), id: "mine".into() }).expect("write");
    assert!(ours.bytes().len() <= MAX_ENTRY_BYTES);
    assert_eq!(ours.body().heads.len(), HEADS_PER_ENTRY);
    assert!(Entry::decode(ours.bytes()).is_ok(), "every receiver accepts it");
    exchange(&mut a, &mut b);
    assert_eq!(b.base().len(&a.writer_id()), 1);
    // B takes the writers A's entry names, and no more unnamed ones from one peer than its
    // budget of new writers allows.
    for head in &ours.body().heads {
        assert_eq!(b.base().len(&head.writer), 1);
    }
    let held = b.base().writers().len();
    assert!(held <= 2 + HEADS_PER_ENTRY + NEW_WRITERS_BURST as usize, "B took {held} writers from one peer");
    assert_eq!(hellopears_core::todo::list(b.db()), hellopears_core::todo::list(a.db()));
}

/// Finding 2: a writer forked across a partition (branch X on one replica, Y on the other).
/// Honest entries naming either branch are not refused; the replicas learn the fork, tell
/// the user which writer forked, and converge on everything else.
#[test]
fn a_fork_across_a_partition_does_not_split_honest_replicas() {
    let topic = Topic::from_name("fork split");
    let forker = Keypair::derive_for_tests(402, 9).bound_to(topic.id().0);
    // Each branch inserts the same todo id with another text: replicas would show different
    // todos unless the disputed entries are voided on both.
    let branch = |text: &str| {
        use hellopears_core::db::{Document, Value};
        let mut doc = Document::new();
        let id = hellopears_core::db::derived_id(&forker.id(), 0, hellopears_core::todo::ID_LEN);
        doc.insert("_id".into(), Value::Str(id.into()));
        doc.insert("text".into(), Value::Str(text.into()));
        doc.insert("done".into(), Value::Bool(false));
        doc.insert("created".into(), Value::Int(0));
        let payload = DbOp::Insert { collection: "todos".into(), doc: doc.into() }.encode();
        Entry::sign(EntryBody { writer: forker.id(), seq: 0, prev: None, heads: vec![], clock: 1, payload }, &forker)
    };
    let mut a = replica(&topic, 10);
    let mut b = replica(&topic, 11);
    a.ingest(branch("branch X")).expect("branch X");
    b.ingest(branch("branch Y")).expect("branch Y");
    a.update();
    b.update();
    assert_eq!(hellopears_core::todo::list(a.db())[0].text, "branch X");
    a.todos().add("from a", 1).expect("write");
    b.todos().add("from b", 2).expect("write");
    a.take_notices();
    b.take_notices();
    // The branches are old news on each side (not pushed again): the replicas can only
    // learn of the fork through the heads that name the other branch.
    a.take_fresh();
    b.take_fresh();
    exchange(&mut a, &mut b);
    for replica in [&mut a, &mut b] {
        assert!(replica.base().is_quarantined(&forker.id()));
        assert!(replica.take_notices().contains(&Notice::Fork { writer: forker.id(), seq: 0 }));
        assert_eq!(replica.base().pending_count(), 0);
    }
    assert_eq!(a.base().len(&b.writer_id()), 1);
    assert_eq!(b.base().len(&a.writer_id()), 1);
    assert_eq!(a.db().digest(), b.db().digest(), "the forked writer's disputed entries are voided on both");
    assert_eq!(a.base().order_digest(), b.base().order_digest());
    assert_eq!(hellopears_core::todo::list(a.db()).len(), 2);
    // After the fork, new writes still flow both ways, and never name the forked writer.
    let entry = a.write(&DbOp::Delete { collection: "todos".into(), id: "later".into() }).expect("write");
    assert!(entry.body().heads.iter().all(|head| head.writer != forker.id()));
    exchange(&mut a, &mut b);
    assert_eq!(b.base().len(&a.writer_id()), 2);
    assert_eq!(a.db().digest(), b.db().digest());
}

/// Finding 3, on this target (the wasm test suite runs the same checks in a browser).
#[test]
fn seqs_beyond_32_bits_mean_the_same_everywhere() {
    hellopears_core::testing::check_seqs_beyond_32_bits();
}

/// Finding 4: a writer cannot hold more than its quota, nor a replica more than its own;
/// refusals are not held against the peer that relayed them.
#[test]
fn quotas_bound_what_writers_can_make_us_hold() {
    let limits = Limits { max_writer_bytes: 4_000, max_topic_bytes: 10_000, ..Limits::default() };
    let mut source = Base::new(Db::new());
    let pusher = Keypair::derive_for_tests(403, 0);
    let entries: Vec<Entry> = (0..100).map(|n| source.append_local(&pusher, op(n)).expect("append")).collect();
    let mut base = Base::with_limits(Db::new(), limits);
    let mut refused = None;
    for entry in entries {
        match base.ingest(entry) {
            Ok(_) => {}
            Err(error) => {
                refused = Some(error);
                break;
            }
        }
    }
    let refused = refused.expect("the quota refuses");
    assert!(matches!(refused, IngestError::OverQuota { limit: 4_000, .. }), "{refused}");
    assert!(!refused.is_fatal());
    assert!(base.total_bytes() <= 4_000);
    // The writer is marked, the driver told once, and sync stops asking for it.
    assert!(base.is_over_quota(&pusher.id()));
    let told = base.take_events().into_iter().filter(|event| matches!(event, BaseEvent::OverQuota { .. })).count();
    assert_eq!(told, 1);
    // The replica's quota: once reached, further writers are refused too...
    for index in 0..200 {
        let _ = base.ingest(throwaway(403, 100 + index));
    }
    assert!(base.total_bytes() <= 10_000);
    // ...but never the local writer, whose own log is held to the writer quota only (what
    // every receiver would take from it), with a clear error.
    let me = Keypair::derive_for_tests(403, 999);
    base.set_local(me.id());
    let mut written = 0;
    let refused = loop {
        match base.append_local(&me, op(written)) {
            Ok(_) => written += 1,
            Err(error) => break error,
        }
    };
    assert!(written >= 1, "local writes go on while others filled the replica's quota");
    assert!(matches!(refused, IngestError::OverQuota { limit: 4_000, .. }), "{refused}");
    assert_eq!(base.len(&me.id()), written);
    assert!(base.total_bytes() <= 14_000);
}

/// Finding 5: the pending set is bounded in entries and bytes, and a full set evicts the
/// oldest, so honest out-of-order entries still wait and integrate.
#[test]
fn a_pending_flood_does_not_stall_honest_catch_up() {
    let limits = Limits { max_pending: 500, max_pending_bytes: 40_000, ..Limits::default() };
    let mut base = Base::with_limits(Db::new(), limits);
    for group in 0..4 {
        let attacker = Keypair::derive_for_tests(404, group);
        for seq in 1..400u64 {
            let body = EntryBody {
                writer: attacker.id(),
                seq,
                prev: Some(Hash::digest(&seq.to_le_bytes())),
                heads: vec![],
                clock: seq + 1,
                payload: op(seq),
            };
            let _ = base.ingest(Entry::sign(body, &attacker));
        }
    }
    assert!(base.pending_count() <= 500);
    assert!(base.pending_bytes() <= 40_000);
    let mut source = Base::new(Db::new());
    let honest = Keypair::derive_for_tests(404, 99);
    let entries: Vec<Entry> = (0..5).map(|n| source.append_local(&honest, op(n)).expect("append")).collect();
    for entry in entries.iter().skip(1).rev() {
        assert_eq!(base.ingest(entry.clone()), Ok(Ingested::Pending));
    }
    assert_eq!(base.ingest(entries[0].clone()), Ok(Ingested::Integrated(5)));
}

/// Finding 6: remote writers cannot take every writer slot: the local writer always has
/// one, pending entries of new writers respect the limit, and fork evidence about writers
/// we do not hold takes none.
#[test]
fn squatted_writer_slots_never_lock_out_the_local_writer() {
    let limits = Limits { max_writers: 50, ..Limits::default() };
    let me = Keypair::derive_for_tests(405, 999);
    let mut base = Base::with_limits(Db::new(), limits);
    base.set_local(me.id());
    let mut refused = 0;
    for index in 0..80 {
        match base.ingest(throwaway(405, index)) {
            Ok(_) => {}
            Err(IngestError::TooManyWriters(50)) => refused += 1,
            Err(error) => panic!("unexpected: {error}"),
        }
    }
    assert_eq!(refused, 30);
    let forker = Keypair::derive_for_tests(406, 0);
    let second = Entry::sign(
        EntryBody { writer: forker.id(), seq: 0, prev: None, heads: vec![], clock: 1, payload: op(77) },
        &forker,
    );
    let evidence = ForkEvidence::new(throwaway(406, 0), second);
    assert_eq!(base.add_fork_evidence(evidence), Ok(false));
    assert_eq!(base.writers().len(), 50);
    base.append_local(&me, op(1)).expect("a new device can always write");
    assert_eq!(base.len(&me.id()), 1);
}

/// Finding 7: a remote chooses the cost of its requests no more. Repeated `Want`s are served
/// up to a byte budget; repeated unacknowledged `Hello`s restart the session at most once per
/// interval; `Have`s cannot grow a session without bound; false lengths are forgotten.
#[test]
fn remote_requests_are_bounded_by_budgets() {
    let topic = Topic::from_name("budgets");
    let mut ours = replica(&topic, 20);
    for n in 0..300 {
        ours.todos().add(&format!("{n} {}", "x".repeat(3000)), n).expect("write");
    }
    let mut session = Session::new(SessionConfig::default());
    let _ = session.start(&ours, 0);
    let hello = Message::Hello { discovery: topic.discovery_key(), acknowledged: true, proof: None };
    session.handle(&mut ours, hello, 1).expect("hello");
    let writer = ours.writer_id();
    let mut served = 0u64;
    for _ in 0..1_000 {
        let want = Message::Want { writer, start: 0, end: 300 };
        for message in session.handle(&mut ours, want, 2).expect("want") {
            if let Message::Entries { entries } = message {
                served += entries.iter().map(|entry| entry.len() as u64).sum::<u64>();
            }
        }
    }
    assert!(served <= SERVE_BURST_BYTES + 1024 * 1024, "served {served} bytes at once");
    assert!(session.stats().wants_refused > 900);
    // The budget refills with time.
    let later = session.handle(&mut ours, Message::Want { writer, start: 0, end: 10 }, 60_000).expect("want");
    assert!(!later.is_empty());

    let restarts = (0..100)
        .map(|_| {
            let hello = Message::Hello { discovery: topic.discovery_key(), acknowledged: false, proof: None };
            session.handle(&mut ours, hello, 70_000).expect("hello")
        })
        .filter(|out| out.iter().any(|message| matches!(message, Message::Have { .. })))
        .count();
    assert_eq!(restarts, 1, "a hello flood restarts the session once per interval");

    for round in 0..5u64 {
        let writers = (0..4096u64)
            .map(|n| WriterLen { writer: Keypair::derive_for_tests(407, round * 4096 + n).id(), len: u64::MAX - n })
            .collect();
        session.handle(&mut ours, Message::Have { writers }, 80_000).expect("have");
    }
    assert!(session.remote_total() > 0);
    assert!(session.missing(&ours) == u64::MAX, "sums saturate instead of overflowing");
    let status = hellopears_core::ui::SyncStatus::from_counts(1, 300, session.missing(&ours));
    assert!(!status.line().is_empty(), "the status of a false length is shown, not a panic");
    let mut now = 80_000;
    for _ in 0..(MAX_HAVE_WRITERS / 8 + 2) * 4 {
        now += 6_000;
        let _ = session.tick(&ours, now);
    }
    assert!(session.missing(&ours) < u64::MAX, "claims never answered are forgotten");
}

/// Finding 7 (continued): an `Entries` message with more entries than any honest batch is a
/// violation, and messages before `Hello` are bounded.
#[test]
fn oversized_lists_and_chatter_before_hello_are_violations() {
    let topic = Topic::from_name("chatter");
    let mut ours = replica(&topic, 30);
    let mut session = Session::new(SessionConfig::default());
    let _ = session.start(&ours, 0);
    let mut last = Ok(Vec::new());
    for _ in 0..2_000 {
        last = session.handle(&mut ours, Message::Have { writers: vec![] }, 1);
        if last.as_ref().is_err_and(SyncError::is_fatal) {
            break;
        }
    }
    assert!(last.is_err_and(|error| error.is_fatal()), "endless messages before hello end the session");
    let mut session = Session::new(SessionConfig::default());
    let _ = session.start(&ours, 0);
    let hello = Message::Hello { discovery: topic.discovery_key(), acknowledged: true, proof: None };
    session.handle(&mut ours, hello, 1).expect("hello");
    let flood = Message::Entries { entries: vec![vec![1u8; 4]; 5_000] };
    assert!(session.handle(&mut ours, flood, 2).is_err_and(|error| error.is_fatal()));
}

/// Finding 9: a writer cannot insert under another writer's id (ids are bound to the entry
/// that inserts them, so a backdated insert at clock 1 replaces nothing), cannot rewrite or
/// remove the author stamp, and crafted numbers cannot make sorting the list panic.
#[test]
fn documents_keep_their_ids_authors_and_order() {
    use hellopears_core::db::{Document, Update, Value};
    let topic = Topic::from_name("documents");
    let mut victim = replica(&topic, 40);
    let mut attacker = replica(&topic, 41);
    let todo = victim.todos().add("buy milk", 1).expect("add");
    // A fresh writer re-inserts the victim's id at clock 1 (before the original), and its
    // own next id too.
    let mut doc = Document::new();
    doc.insert("_id".into(), Value::Str(todo.id.clone().into()));
    doc.insert("text".into(), Value::Str("pwned".into()));
    doc.insert("done".into(), Value::Bool(false));
    doc.insert("created".into(), Value::Int(0));
    attacker.write(&DbOp::Insert { collection: "todos".into(), doc: doc.into() }).expect("write");
    let forged = Update::set("author", attacker.writer_id().to_hex()).and_unset("author.x");
    let update = DbOp::Update { collection: "todos".into(), id: todo.id.clone().into(), update: Box::new(forged) };
    attacker.write(&update).expect("write");
    exchange(&mut victim, &mut attacker);
    for replica in [&victim, &attacker] {
        let todos = hellopears_core::todo::list(replica.db());
        assert_eq!(todos.len(), 1, "the squatting insert is a no-op");
        assert_eq!(todos[0].text, "buy milk");
        assert_eq!(todos[0].author, victim.writer_id().to_hex());
    }
    // Numbers the order used to get wrong: 40 todos whose `created` cycle through
    // Int(2^53), Int(2^53 + 1) and Float(2^53); sorting must not panic.
    let mut db = hellopears_core::todo::view();
    for n in 0..40u64 {
        let big = 1i64 << 53;
        let created = match n % 3 {
            0 => Value::Int(big),
            1 => Value::Int(big + 1),
            _ => Value::Float(big as f64),
        };
        let writer = Keypair::derive_for_tests(408, n).id();
        let mut doc = Document::new();
        doc.insert("_id".into(), Value::Str(hellopears_core::db::derived_id(&writer, 0, 20).into()));
        doc.insert("text".into(), Value::Str(format!("{n}").into()));
        doc.insert("created".into(), created);
        let ctx = hellopears_core::base::ApplyContext { writer, seq: 0, clock: 1 };
        use hellopears_core::base::Apply;
        let op = db.decode_op(&DbOp::Insert { collection: "todos".into(), doc: doc.into() }.encode(), &ctx);
        let op = op.expect("a valid insert");
        db.apply(op, &ctx);
    }
    assert_eq!(hellopears_core::todo::list(&db).len(), 40);
}
