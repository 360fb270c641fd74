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
    let _ = postcard::from_bytes::<DbOp>(data);
}

/// Feeds arbitrary bytes to a sync session as a sequence of messages: each message is a
/// one-byte length (times 4) followed by that many bytes. The first message is always a
/// valid hello, so later ones reach every handler.
pub fn sync_session(data: &[u8]) {
    let topic = Topic::from_name("fuzz");
    let mut replica = Replica::new(topic.clone(), Keypair::derive_for_tests(0, 1));
    for i in 0..3 {
        let _ = replica.todos().add(&format!("todo {i}"), i);
    }
    let mut session = Session::new(SessionConfig::default());
    let _ = session.start(&replica, 0);
    let hello = Message::Hello { discovery: topic.discovery_key(), acknowledged: false };
    let _ = session.handle(&mut replica, hello, 1);
    let mut rest = data;
    let mut now = 2;
    while let Some((&len, tail)) = rest.split_first() {
        let len = (len as usize * 4).min(tail.len());
        let (message, tail) = tail.split_at(len);
        let _ = session.handle_bytes(&mut replica, message, now);
        replica.update();
        let fresh = replica.take_fresh();
        let _ = session.push(&fresh);
        let _ = session.tick(&replica, now);
        now += 1_000;
        rest = tail;
    }
}
