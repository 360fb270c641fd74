//! Entry points shared by the cargo-fuzz targets and the corpus replay tests.
//! Each must return normally for every input; a panic is a bug.

use crate::base::Base;
use crate::db::{Db, DbOp};
use crate::keys::Keypair;
use crate::log::Entry;
use crate::replica::Replica;
use crate::sync::{Message, Session, SessionConfig};
use crate::topic::Topic;

/// Decodes arbitrary bytes as an entry and, if that works, ingests it into a base that
/// already holds a short log, and decodes its payload as a DB operation.
pub fn entry_decode(data: &[u8]) {
    let Ok(entry) = Entry::decode(data) else { return };
    let keypair = Keypair::derive_for_tests(0, 0);
    let mut base = Base::new(Db::new());
    for _ in 0..3 {
        let _ = base.append_local(&keypair, DbOp::Delete { collection: "t".into(), id: "x".into() }.encode());
    }
    let _ = base.ingest(entry);
    base.update();
    let _ = DbOp::decode(data);
}

/// Feeds arbitrary bytes to a sync session as a sequence of messages: each message is a
/// two-byte little-endian length followed by that many bytes. A valid hello is handled
/// first, so the messages reach every handler.
pub fn sync_session(data: &[u8]) {
    let topic = Topic::from_name("fuzz");
    let mut replica = Replica::new(topic.clone(), Keypair::derive_for_tests(0, 1));
    for i in 0..3 {
        let _ = replica.todos().add(&format!("todo {i}"), i);
    }
    let mut session = Session::new(SessionConfig::default());
    let _ = session.start(&replica, 0);
    let hello = Message::Hello { discovery: topic.discovery_key(), acknowledged: false, proof: None };
    let _ = session.handle(&mut replica, hello, 1);
    let mut rest = data;
    let mut now = 2;
    while rest.len() >= 2 {
        let len = (u16::from_le_bytes([rest[0], rest[1]]) as usize).min(rest.len() - 2);
        let (message, tail) = rest[2..].split_at(len);
        let _ = session.handle_bytes(&mut replica, message, now);
        replica.update();
        let fresh = replica.take_fresh();
        let _ = session.push(&fresh);
        let _ = session.tick(&replica, now);
        now += 1_000;
        rest = tail;
    }
}

/// Decodes arbitrary bytes as a DB operation and, if that works, applies it to a todo view
/// as a remote writer's entry would be (decode with the view's rules, apply, undo).
pub fn db_op(data: &[u8]) {
    use crate::base::{Apply, ApplyContext};
    let Some(op) = DbOp::decode(data) else { return };
    let _ = op.encode();
    let mut view = crate::todo::view();
    let ctx = ApplyContext { writer: Keypair::derive_for_tests(0, 3).id(), seq: 0, clock: 1 };
    if let Some(op) = view.decode_op(data, &ctx) {
        let undo = view.apply(op, &ctx);
        let _ = crate::todo::list(&view);
        view.undo(undo);
    }
}

/// Parses arbitrary bytes as a control-socket request line.
pub fn control_request(data: &[u8]) {
    if let Ok(request) = crate::control::parse_request(data) {
        let _ = serde_json::to_string(&request);
    }
}

/// Frames messages the way [`sync_session`] reads them (for seed corpora).
pub fn frame_messages(messages: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for message in messages {
        let len = message.len().min(u16::MAX as usize);
        out.extend_from_slice(&(len as u16).to_le_bytes());
        out.extend_from_slice(&message[..len]);
    }
    out
}

/// Seed inputs for both fuzz targets: valid entries and valid message sequences, and a few
/// broken ones. Returns (target, name, bytes).
pub fn seed_corpus() -> Vec<(&'static str, String, Vec<u8>)> {
    use crate::sync::WriterLen;
    let topic = Topic::from_name("fuzz");
    let mut other = Replica::new(topic.clone(), Keypair::derive_for_tests(0, 2));
    let mut entries = Vec::new();
    for i in 0..4 {
        if let Ok(todo) = other.todos().add(&format!("seed {i}"), i) {
            let _ = other.todos().toggle(&todo.id, i);
        }
    }
    entries.extend(other.take_fresh());
    let mut seeds = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        seeds.push(("entry_decode", format!("entry-{i}"), entry.bytes().to_vec()));
    }
    if let Some(first) = entries.first() {
        let mut bad_version = first.bytes().to_vec();
        bad_version[0] = 9;
        seeds.push(("entry_decode", "bad-version".into(), bad_version));
        seeds.push(("entry_decode", "truncated".into(), first.bytes()[..first.bytes().len() / 2].to_vec()));
    }
    let writer = other.writer_id();
    let messages = [
        Message::Hello { discovery: topic.discovery_key(), acknowledged: false, proof: None },
        Message::Have { writers: vec![WriterLen { writer, len: entries.len() as u64 }] },
        Message::Want { writer: Keypair::derive_for_tests(0, 1).id(), start: 0, end: 10 },
        Message::Entries { entries: entries.iter().map(|e| e.bytes().to_vec()).collect() },
        Message::Peers { records: vec![b"/ip4/127.0.0.1/tcp/1".to_vec()] },
    ];
    let encoded: Vec<Vec<u8>> = messages.iter().map(Message::encode).collect();
    seeds.push(("sync_session", "all-messages".into(), frame_messages(&encoded)));
    for (i, message) in encoded.iter().enumerate() {
        seeds.push(("sync_session", format!("message-{i}"), frame_messages(std::slice::from_ref(message))));
    }
    let reversed: Vec<Vec<u8>> = encoded.iter().rev().cloned().collect();
    seeds.push(("sync_session", "reversed".into(), frame_messages(&reversed)));
    for (i, entry) in entries.iter().enumerate() {
        seeds.push(("db_op", format!("op-{i}"), entry.body().payload.clone()));
    }
    let update = crate::db::Update::set("text", "x").and_set("author", "y").and_unset("done");
    let op = DbOp::Update { collection: "todos".into(), id: "abc".into(), update: Box::new(update) };
    seeds.push(("db_op", "update".into(), op.encode()));
    for (i, line) in [
        r#"{"topic":"todo","action":{"List":"Json"}}"#,
        r#"{"topic":"todo","action":{"Status":"Text"}}"#,
        r#"{"topic":"todo","action":{"Command":{"Add":"milk"}}}"#,
        r#"{"topic":"todo","action":"Snapshot"}"#,
        r#"{"topic":"x","action":{"Command":{"Edit":["ab","new"]}}}"#,
    ]
    .iter()
    .enumerate()
    {
        seeds.push(("control_request", format!("request-{i}"), format!("{line}\n").into_bytes()));
    }
    seeds
}
