//! The capability scheme of private lists: each way in is refused with its own error.

use hellopears_core::access::{AccessError, Capability, ContentKey, Invite, ListKeys, Role};
use hellopears_core::db::{Document, Value};
use hellopears_core::keys::Keypair;
use hellopears_core::list::MemberOp;
use hellopears_core::log::{Entry, EntryBody, Head};
use hellopears_core::replica::{Notice, Replica};
use hellopears_core::sync::{Message, Session, SessionConfig, SyncError};
use hellopears_core::todo;
use hellopears_core::topic::Topic;

const ROOT: [u8; 32] = [7; 32];
const DAY: u64 = 86_400_000;

fn owner_key() -> Keypair {
    Keypair::derive_for_tests(900, 0)
}

fn owner() -> Replica {
    let key = owner_key();
    Replica::new(Topic::private("groceries".into(), Capability::Root(ROOT), key.id()), key)
}

/// A device that holds the list's replication secret (from an invite link).
fn device(index: u64) -> Replica {
    let replicate = Capability::Root(ROOT).replicate();
    Replica::new(
        Topic::private("groceries".into(), Capability::Replicate(replicate), owner_key().id()),
        Keypair::derive_for_tests(900, index),
    )
}

/// Every entry a replica holds.
fn all_entries(from: &Replica) -> Vec<Entry> {
    from.base()
        .writers()
        .iter()
        .flat_map(|info| from.base().range(&info.id, 0, u64::MAX).cloned().collect::<Vec<_>>())
        .collect()
}

/// Copies every entry each replica holds to the other.
fn sync(a: &mut Replica, b: &mut Replica) {
    for _ in 0..2 {
        for entry in all_entries(a) {
            let _ = b.ingest(entry);
        }
        b.update();
        for entry in all_entries(b) {
            let _ = a.ingest(entry);
        }
        a.update();
    }
}

fn invite(owner: &mut Replica, secret: u8, role: Role, expires: u64) -> Invite {
    let invite = Invite::from_secret([secret; 32]);
    owner.write_member(&MemberOp::Invite { key: invite.key(), role, expires }).expect("invite");
    invite
}

fn admit(owner: &mut Replica, joiner: &Replica, invite: &Invite, now: u64) -> Result<(), AccessError> {
    let list = joiner.topic().list_keys().expect("private").id;
    let proof = invite.prove(&list, &joiner.writer_id(), "Bob's phone");
    let op = owner.list().admission(invite.key(), joiner.writer_id(), "Bob's phone".into(), proof, now)?;
    owner.write_member(&op).expect("admission written");
    Ok(())
}

fn texts(replica: &Replica) -> Vec<String> {
    todo::list(replica.db()).into_iter().map(|todo| todo.text).collect()
}

fn refusals(replica: &mut Replica) -> Vec<AccessError> {
    replica
        .take_notices()
        .into_iter()
        .filter_map(|notice| match notice {
            Notice::Refused { reason, .. } => Some(reason),
            _ => None,
        })
        .collect()
}

#[test]
fn an_invited_device_reads_and_writes_and_the_log_holds_no_plain_text() {
    let mut a = owner();
    a.todos().add("milk", 1).expect("owner writes");
    let inv = invite(&mut a, 1, Role::Writer, DAY);
    let mut b = device(1);
    // Before admission B holds the replication secret only: it stores, reads nothing.
    sync(&mut a, &mut b);
    assert!(texts(&b).is_empty());
    assert!(matches!(b.todos().add("eggs", 2), Err(todo::TodoError::Access(_))));
    admit(&mut a, &b, &inv, 10).expect("admitted");
    sync(&mut a, &mut b);
    assert_eq!(b.role(), Some(Role::Writer));
    assert_eq!(texts(&b), ["milk"], "the admitted device reads the history");
    b.todos().add("eggs", 3).expect("a writer writes");
    sync(&mut a, &mut b);
    assert_eq!(texts(&a), texts(&b));
    assert_eq!(texts(&a).len(), 2);
    let member = a.membership().and_then(|m| m.member(&b.writer_id())).expect("member");
    assert_eq!(member.name, "Bob's phone");
    // No entry holds a todo's text in plain.
    for info in a.base().writers() {
        for entry in a.base().range(&info.id, 0, u64::MAX) {
            let bytes = entry.bytes();
            assert!(!bytes.windows(4).any(|w| w == b"milk" || w == b"eggs"), "plain text in an entry");
        }
    }
}

#[test]
fn reused_and_expired_invites_are_refused() {
    let mut a = owner();
    let inv = invite(&mut a, 2, Role::Writer, DAY);
    let b = device(2);
    let c = device(3);
    admit(&mut a, &b, &inv, 10).expect("first use");
    assert_eq!(admit(&mut a, &c, &inv, 11), Err(AccessError::InviteUsed));
    let late = invite(&mut a, 3, Role::Writer, DAY);
    assert_eq!(admit(&mut a, &c, &late, DAY + 1), Err(AccessError::InviteExpired));
    let unknown = Invite::from_secret([4; 32]);
    assert_eq!(admit(&mut a, &c, &unknown, 12), Err(AccessError::UnknownInvite));
    // A proof made with another invite's secret does not check.
    let good = invite(&mut a, 5, Role::Writer, DAY);
    let list = c.topic().list_keys().expect("private").id;
    let forged = Invite::from_secret([6; 32]).prove(&list, &c.writer_id(), "x");
    assert_eq!(a.list().admission(good.key(), c.writer_id(), "x".into(), forged, 13), Err(AccessError::BadInviteProof));
}

#[test]
fn a_second_admission_with_one_invite_is_void_in_every_replica() {
    // Two members admit two devices with the same invite concurrently: the first in the
    // order wins everywhere, the other admission is refused by every replica.
    let mut a = owner();
    let inv_b = invite(&mut a, 7, Role::Writer, DAY);
    let mut b = device(7);
    admit(&mut a, &b, &inv_b, 5).expect("b admitted");
    sync(&mut a, &mut b);
    let shared = invite(&mut a, 8, Role::Writer, DAY);
    sync(&mut a, &mut b);
    let (x, y) = (device(8), device(9));
    admit(&mut a, &x, &shared, 10).expect("a admits x");
    admit(&mut b, &y, &shared, 10).expect("b admits y, not knowing");
    sync(&mut a, &mut b);
    let admitted = |r: &Replica| {
        (r.membership().and_then(|m| m.role(&x.writer_id())), r.membership().and_then(|m| m.role(&y.writer_id())))
    };
    assert_eq!(admitted(&a), admitted(&b));
    let (rx, ry) = admitted(&a);
    assert!(rx.is_some() != ry.is_some(), "exactly one device admitted: {rx:?} {ry:?}");
    assert!(refusals(&mut a).contains(&AccessError::InviteUsed));
}

#[test]
fn read_only_writes_are_refused_by_every_replica() {
    let mut a = owner();
    let inv = invite(&mut a, 10, Role::ReadOnly, DAY);
    let mut r = device(10);
    admit(&mut a, &r, &inv, 1).expect("admitted");
    sync(&mut a, &mut r);
    a.todos().add("bread", 2).expect("owner writes");
    sync(&mut a, &mut r);
    assert_eq!(texts(&r), ["bread"], "read-only reads");
    assert_eq!(r.role(), Some(Role::ReadOnly));
    assert!(matches!(r.todos().add("mine", 3), Err(todo::TodoError::Access(AccessError::CannotWrite("read-only")))));
    // A hostile read-only device seals a todo by hand, with the key it holds.
    let key = ContentKey::new(Capability::Root(ROOT).first_content_key().expect("key 0"));
    let entry = forge(&r, &key, "forged");
    a.ingest(entry).expect("stored: valid signature");
    a.update();
    assert_eq!(texts(&a), ["bread"]);
    assert!(refusals(&mut a).iter().any(|e| matches!(e, AccessError::NotAllowed(_))));
}

/// An entry of `replica`'s writer inserting a todo, sealed by hand under `key`.
fn forge(replica: &Replica, key: &ContentKey, text: &str) -> Entry {
    let keypair = replica.keypair().clone();
    let seq = replica.base().len(&keypair.id());
    let mut doc = Document::new();
    let id = hellopears_core::db::derived_id(&keypair.id(), seq, todo::ID_LEN);
    doc.insert("_id".into(), Value::Str(id.into()));
    doc.insert("text".into(), Value::Str(text.into()));
    doc.insert("done".into(), Value::Bool(false));
    doc.insert("created".into(), Value::Int(0));
    doc.insert("author".into(), Value::Str(owner_key().id().to_hex().into()));
    let op = hellopears_core::db::DbOp::Insert { collection: "todos".into(), doc: doc.into() };
    let list = replica.topic().list_keys().expect("private").id;
    let payload = key.seal(&list, &keypair.id(), seq, &op.encode());
    let previous = replica.base().entry(&keypair.id(), seq.wrapping_sub(1));
    let prev = previous.map(Entry::hash);
    let mut clock = previous.map_or(0, Entry::clock);
    let mut heads = Vec::new();
    for info in replica.base().writers() {
        if info.id == keypair.id() || info.len == 0 {
            continue;
        }
        let tip = replica.base().entry(&info.id, info.len - 1).expect("tip");
        clock = clock.max(tip.clock());
        heads.push(Head { writer: info.id, seq: info.len - 1, hash: tip.hash() });
    }
    heads.sort_by_key(|head| head.writer);
    let clock = clock + 1;
    Entry::sign(EntryBody { writer: keypair.id(), seq, prev, heads, clock, payload }, &keypair)
}

#[test]
fn the_author_is_the_signing_writer() {
    let mut a = owner();
    let inv = invite(&mut a, 11, Role::Writer, DAY);
    let mut b = device(11);
    admit(&mut a, &b, &inv, 1).expect("admitted");
    sync(&mut a, &mut b);
    // B claims the owner wrote it: the view stamps B.
    let key = ContentKey::new(Capability::Root(ROOT).first_content_key().expect("key 0"));
    let entry = forge(&b, &key, "not by the owner");
    b.ingest(entry).expect("own entry");
    b.update();
    sync(&mut a, &mut b);
    let todo = todo::list(a.db()).into_iter().find(|t| t.text == "not by the owner").expect("applied");
    assert_eq!(todo.author, b.writer_id().to_hex());
}

#[test]
fn a_removed_member_is_refused_and_cannot_read_what_follows() {
    let mut a = owner();
    let inv = invite(&mut a, 12, Role::Writer, DAY);
    let mut b = device(12);
    admit(&mut a, &b, &inv, 1).expect("admitted");
    let inv_c = invite(&mut a, 13, Role::Writer, DAY);
    let mut c = device(13);
    admit(&mut a, &c, &inv_c, 1).expect("admitted");
    sync(&mut a, &mut b);
    sync(&mut a, &mut c);
    b.todos().add("before removal", 2).expect("b writes");
    sync(&mut a, &mut b);
    let removal = a.list().removal(b.writer_id()).expect("removal");
    a.write_member(&removal).expect("removed");
    a.todos().add("after removal", 3).expect("a writes under the new key");
    sync(&mut a, &mut c);
    // B learns of its removal but not the new key: it cannot read what follows.
    sync(&mut a, &mut b);
    assert!(!texts(&b).contains(&"after removal".to_owned()));
    assert_eq!(b.role(), None);
    // B's writes after its removal (forged with the old key) count nowhere.
    let key = ContentKey::new(Capability::Root(ROOT).first_content_key().expect("key 0"));
    let late = forge(&b, &key, "late");
    b.ingest(late).expect("own entry");
    b.update();
    sync(&mut a, &mut b);
    sync(&mut a, &mut c);
    for replica in [&a, &c] {
        let texts = texts(replica);
        assert!(texts.contains(&"before removal".to_owned()), "earlier entries stay");
        assert!(texts.contains(&"after removal".to_owned()), "members read the new key");
        assert!(!texts.contains(&"late".to_owned()), "later writes are refused");
    }
    assert_eq!(texts(&a), texts(&c));
    assert_eq!(a.role(), Some(Role::Owner));
}

#[test]
fn a_blind_member_stores_and_serves_but_reads_nothing() {
    let mut a = owner();
    let inv = invite(&mut a, 14, Role::Blind, DAY);
    let mut blind = device(14);
    admit(&mut a, &blind, &inv, 1).expect("admitted");
    a.todos().add("secret plan", 2).expect("a writes");
    sync(&mut a, &mut blind);
    assert_eq!(blind.role(), Some(Role::Blind));
    assert!(texts(&blind).is_empty());
    // A new reader gets everything from the blind member alone.
    let inv_d = invite(&mut a, 15, Role::Writer, DAY);
    let mut d = device(15);
    admit(&mut a, &d, &inv_d, 3).expect("admitted");
    sync(&mut a, &mut blind);
    sync(&mut blind, &mut d);
    assert_eq!(texts(&d), ["secret plan"]);
}

fn names(replica: &Replica) -> Vec<String> {
    let mut names: Vec<String> =
        replica.membership().expect("private").members().iter().map(|member| member.name.clone()).collect();
    names.sort();
    names
}

/// An admission as nodes make it: the joiner names itself afterwards, under the content key.
fn admit_unnamed(owner: &mut Replica, joiner: &Replica, invite: &Invite, now: u64) {
    let list = joiner.topic().list_keys().expect("private").id;
    let proof = invite.prove(&list, &joiner.writer_id(), "");
    let op = owner.list().admission(invite.key(), joiner.writer_id(), String::new(), proof, now).expect("admission");
    owner.write_member(&op).expect("admission written");
}

#[test]
fn names_are_for_readers_and_blind_members_have_none() {
    let mut a = owner();
    a.write_member(&MemberOp::Name { name: "Alice's laptop".into() }).expect("the owner names itself");
    let inv = invite(&mut a, 16, Role::Blind, DAY);
    let mut blind = device(16);
    admit_unnamed(&mut a, &blind, &inv, 1);
    let inv_d = invite(&mut a, 17, Role::Writer, DAY);
    let mut d = device(17);
    admit_unnamed(&mut a, &d, &inv_d, 2);
    sync(&mut a, &mut d);
    d.write_member(&MemberOp::Name { name: "Dan's phone".into() }).expect("a reader names itself");
    sync(&mut a, &mut d);
    sync(&mut a, &mut blind);
    assert_eq!(blind.role(), Some(Role::Blind));
    assert!(blind.write_member(&MemberOp::Name { name: "backup box".into() }).is_err(), "a blind member has no name");
    // Readers read every name; the blind member knows the members but reads no name.
    assert_eq!(names(&a), ["", "Alice's laptop", "Dan's phone"]);
    assert_eq!(names(&d), names(&a));
    assert_eq!(names(&blind), ["", "", ""]);
}

#[test]
fn entries_of_another_list_are_refused() {
    let mut a = owner();
    a.todos().add("ours", 1).expect("writes");
    let other_key = Keypair::derive_for_tests(901, 0);
    let mut other =
        Replica::new(Topic::private("groceries".into(), Capability::Root([8; 32]), other_key.id()), other_key);
    let entry = a.base().range(&a.writer_id(), 0, 1).next().cloned().expect("entry");
    assert!(matches!(other.ingest(entry), Err(hellopears_core::base::IngestError::BadSignature { .. })));
    // Same for a public topic of any name.
    let mut public = Replica::new(Topic::from_name("groceries"), Keypair::derive_for_tests(901, 1));
    let entry = a.base().range(&a.writer_id(), 0, 1).next().cloned().expect("entry");
    assert!(matches!(public.ingest(entry), Err(hellopears_core::base::IngestError::BadSignature { .. })));
}

#[test]
fn session_proofs_are_bound_to_the_list_and_both_peers() {
    let keys = ListKeys::derive(&Capability::Root(ROOT), owner_key().id());
    let proof = keys.session_proof(b"alice", b"bob");
    assert_eq!(keys.check_session_proof(&proof, b"alice", b"bob"), Ok(()));
    // Replayed to another peer, or by another peer, or reflected back: refused.
    assert_eq!(keys.check_session_proof(&proof, b"alice", b"carol"), Err(AccessError::BadProof));
    assert_eq!(keys.check_session_proof(&proof, b"mallory", b"bob"), Err(AccessError::BadProof));
    assert_eq!(keys.check_session_proof(&proof, b"bob", b"alice"), Err(AccessError::BadProof));
    // Wrong key: another list's secret.
    let other = ListKeys::derive(&Capability::Root([9; 32]), owner_key().id());
    assert_eq!(other.check_session_proof(&proof, b"alice", b"bob"), Err(AccessError::BadProof));
}

#[test]
fn a_stranger_learns_nothing_in_a_session() {
    let mut a = owner();
    a.todos().add("private", 1).expect("writes");
    let mut session = Session::new(SessionConfig::default());
    session.set_identities(b"alice".to_vec(), b"stranger".to_vec());
    // Our opening is a hello alone: no writers, no lengths, no fork evidence.
    let opening = session.start(&a, 0);
    assert_eq!(opening.len(), 1);
    assert!(matches!(opening[0], Message::Hello { proof: Some(_), .. }));
    // A stranger that saw the discovery key echoes it with a made-up proof (or a proof it
    // captured from another session): refused, nothing else sent.
    let discovery = a.topic().discovery_key();
    let captured = a.topic().list_keys().expect("private").session_proof(b"alice", b"bob");
    for proof in [None, Some([0; 32]), Some(captured)] {
        let mut s = Session::new(SessionConfig::default());
        s.set_identities(b"alice".to_vec(), b"stranger".to_vec());
        let hello = Message::Hello { discovery, acknowledged: false, proof };
        assert!(matches!(s.handle(&mut a, hello, 1), Err(SyncError::Access(AccessError::BadProof))));
        assert!(s.push(&[a.base().range(&a.writer_id(), 0, 1).next().cloned().expect("entry")]).is_empty());
        let have = Message::Have { writers: vec![] };
        assert!(s.handle(&mut a, have, 2).is_err(), "nothing is taken before a proof");
    }
}

/// A join request that reaches a member who may not admit (a blind device) gets no answer
/// from it, so the joiner keeps waiting for a member who can; a writer admits it; the same
/// request again is ignored, and the spent invite is refused outright to another device.
#[test]
fn only_members_who_can_admit_answer_a_join_request() {
    let mut a = owner();
    let inv = invite(&mut a, 16, Role::Blind, DAY);
    let mut blind = device(16);
    admit(&mut a, &blind, &inv, 1).expect("admitted");
    let joining = invite(&mut a, 17, Role::Writer, DAY);
    sync(&mut a, &mut blind);
    let joiner = device(17);
    let list = joiner.topic().list_keys().expect("private").id;
    let join = Message::Join {
        invite: joining.key(),
        device: joiner.writer_id(),
        name: String::new(),
        proof: joining.prove(&list, &joiner.writer_id(), "").to_vec(),
    };
    let answers = |member: &mut Replica, join: Message| -> Vec<Message> {
        let keys = member.topic().list_keys().expect("private").clone();
        let mut session = Session::new(SessionConfig::default());
        session.set_identities(b"member".to_vec(), b"joiner".to_vec());
        let hello = Message::Hello {
            discovery: member.topic().discovery_key(),
            acknowledged: true,
            proof: Some(keys.session_proof(b"joiner", b"member")),
        };
        session.handle(member, hello, 1).expect("the joiner's hello");
        session.handle(member, join, 2).expect("a join request is no violation")
    };
    let refused = |out: &[Message]| out.iter().any(|message| matches!(message, Message::Refused { .. }));
    assert!(!refused(&answers(&mut blind, join.clone())), "a blind member stays silent");
    assert!(!refused(&answers(&mut a, join.clone())), "the owner admits");
    assert!(a.list().membership().and_then(|m| m.role(&joiner.writer_id())).is_some(), "admitted");
    // The joiner asks again (its request may have been lost): nothing to refuse.
    assert!(!refused(&answers(&mut a, join)), "a repeated request of an admitted device is no refusal");
    let other = device(18);
    let reused = Message::Join {
        invite: joining.key(),
        device: other.writer_id(),
        name: String::new(),
        proof: joining.prove(&list, &other.writer_id(), "").to_vec(),
    };
    assert!(refused(&answers(&mut a, reused)), "a spent invite is refused to another device");
}
