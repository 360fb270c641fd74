//! The document DB: every operator, indexes against full scans, notifications, and the todo API.

use std::sync::Arc;

use hellopears_core::base::{Apply, ApplyContext};
use hellopears_core::db::{
    ChangeKind, Cond, Db, DbOp, Direction, Document, Filter, Plan, Query, QueryError, Update, Value,
};
use hellopears_core::keys::Keypair;
use hellopears_core::replica::Replica;
use hellopears_core::todo::TodoError;
use hellopears_core::topic::Topic;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use serde_json::json;

fn ctx() -> ApplyContext {
    ApplyContext { writer: Keypair::derive_for_tests(0, 0).id(), seq: 0, clock: 1 }
}

fn doc(json: serde_json::Value) -> Document {
    match Value::from_json(&json) {
        Value::Object(fields) => fields,
        _ => panic!("not an object"),
    }
}

fn insert(db: &mut Db, json: serde_json::Value) {
    db.apply(DbOp::Insert { collection: "c".into(), doc: doc(json).into() }, &ctx());
}

fn ids(docs: &[Arc<Document>]) -> Vec<String> {
    docs.iter().map(|d| d.get("_id").and_then(Value::as_str).unwrap_or_default().to_owned()).collect()
}

fn sample() -> Db {
    let mut db = Db::new();
    insert(&mut db, json!({"_id": "a", "n": 1, "s": "x", "tags": {"k": 1}}));
    insert(&mut db, json!({"_id": "b", "n": 2.5, "s": "y"}));
    insert(&mut db, json!({"_id": "c", "n": 3, "flag": true}));
    insert(&mut db, json!({"_id": "d", "s": "z", "n": null}));
    db
}

fn find(db: &Db, filter: serde_json::Value) -> Vec<String> {
    ids(&db.find("c", &Query::new(Filter::from_json(&filter).expect("filter"))))
}

#[test]
fn comparison_operators() {
    let db = sample();
    assert_eq!(find(&db, json!({"n": 1})), ["a"]);
    assert_eq!(find(&db, json!({"n": {"$eq": 2.5}})), ["b"]);
    assert_eq!(find(&db, json!({"n": {"$ne": 1}})), ["b", "c", "d"]);
    assert_eq!(find(&db, json!({"n": {"$gt": 1}})), ["b", "c"]);
    assert_eq!(find(&db, json!({"n": {"$gte": 2.5}})), ["b", "c"]);
    assert_eq!(find(&db, json!({"n": {"$lt": 3}})), ["a", "b"]);
    assert_eq!(find(&db, json!({"n": {"$lte": 1.0}})), ["a"]);
    assert_eq!(find(&db, json!({"n": {"$gt": 1, "$lt": 3}})), ["b"]);
    assert_eq!(find(&db, json!({"s": {"$gt": "x"}})), ["b", "d"]);
    // Comparisons stay within a type: strings are not greater than numbers.
    assert_eq!(find(&db, json!({"s": {"$gt": 0}})), Vec::<String>::new());
}

#[test]
fn set_and_existence_operators() {
    let db = sample();
    assert_eq!(find(&db, json!({"s": {"$in": ["x", "z", "q"]}})), ["a", "d"]);
    assert_eq!(find(&db, json!({"flag": {"$exists": true}})), ["c"]);
    assert_eq!(find(&db, json!({"flag": {"$exists": false}})), ["a", "b", "d"]);
    assert_eq!(find(&db, json!({"n": null})), ["d"]);
    assert_eq!(find(&db, json!({"missing": null})), ["a", "b", "c", "d"]);
    assert_eq!(find(&db, json!({"tags.k": 1})), ["a"]);
    assert_eq!(find(&db, json!({})), ["a", "b", "c", "d"]);
    assert_eq!(Filter::from_json(&json!({"n": {"$regex": "x"}})), Err(QueryError::UnknownOperator("$regex".into())));
    assert_eq!(Filter::from_json(&json!({"n": {"$in": 3}})), Err(QueryError::BadOperand("$in".into())));
    assert_eq!(Filter::from_json(&json!([1])), Err(QueryError::NotAnObject));
}

#[test]
fn sort_skip_limit() {
    let db = sample();
    let query = Query::new(Filter::all()).sort("n", Direction::Desc);
    assert_eq!(ids(&db.find("c", &query)), ["c", "b", "a", "d"]);
    let query = Query::new(Filter::all()).sort("s", Direction::Asc).skip(1).limit(2);
    assert_eq!(ids(&db.find("c", &query)), ["a", "b"]);
    assert!(db.find("nope", &Query::default()).is_empty());
}

#[test]
fn update_operators() {
    let mut db = sample();
    let update = Update::from_json(
        &json!({"$set": {"s": "new", "deep.x": 1}, "$unset": {"tags": ""}, "$inc": {"n": 2, "m": 5}}),
    )
    .expect("update");
    db.apply(DbOp::Update { collection: "c".into(), id: "a".into(), update: Box::new(update) }, &ctx());
    let a = db.get("c", "a").expect("a");
    assert_eq!(a.get("s"), Some(&Value::from("new")));
    assert_eq!(hellopears_core::db::get_path(&a, "deep.x"), Some(&Value::Int(1)));
    assert_eq!(a.get("tags"), None);
    assert_eq!(a.get("n"), Some(&Value::Int(3)));
    assert_eq!(a.get("m"), Some(&Value::Int(5)));
    // $inc of a float, and of a non-number (skipped).
    let inc = Update::default().and_inc("n", 0.5).and_inc("s", 1);
    db.apply(DbOp::Update { collection: "c".into(), id: "b".into(), update: Box::new(inc) }, &ctx());
    let b = db.get("c", "b").expect("b");
    assert_eq!(b.get("n"), Some(&Value::Float(3.0)));
    assert_eq!(b.get("s"), Some(&Value::from("y")));
    // _id is immutable; $inc needs a number.
    assert_eq!(Update::from_json(&json!({"$set": {"_id": "x"}})), Err(QueryError::IdImmutable));
    assert_eq!(Update::from_json(&json!({"$inc": {"n": "1"}})), Err(QueryError::IncNotNumber("n".into())));
    assert_eq!(Update::from_json(&json!({"$push": {"n": 1}})), Err(QueryError::UnknownOperator("$push".into())));
}

#[test]
fn insert_and_delete_semantics_and_undo() {
    let mut db = sample();
    let before = db.encode();
    // A duplicate id is ignored; a document without a string id is ignored.
    let undo_dup =
        db.apply(DbOp::Insert { collection: "c".into(), doc: doc(json!({"_id": "a", "n": 9})).into() }, &ctx());
    let undo_noid = db.apply(DbOp::Insert { collection: "c".into(), doc: doc(json!({"n": 9})).into() }, &ctx());
    assert_eq!(db.get("c", "a").and_then(|d| d.get("n").cloned()), Some(Value::Int(1)));
    let undo_del = db.apply(DbOp::Delete { collection: "c".into(), id: "b".into() }, &ctx());
    assert!(db.get("c", "b").is_none());
    let undo_missing = db.apply(DbOp::Delete { collection: "c".into(), id: "zz".into() }, &ctx());
    for undo in [undo_missing, undo_del, undo_noid, undo_dup] {
        db.undo(undo);
    }
    assert_eq!(db.encode(), before);
}

#[test]
fn updates_change_documents_in_place_and_undo_restores_them_exactly() {
    let mut db = sample();
    db.create_index("c", "n");
    db.create_index("c", "deep.x");
    let before = db.encode();
    let held = db.get("c", "a").expect("a");
    let held_bytes = postcard::to_allocvec(&*held).expect("encodes");
    let updates = [
        json!({"$set": {"s": "new", "deep.x": 1, "fresh": true}, "$unset": {"tags": ""}, "$inc": {"n": 2, "m": 5}}),
        json!({"$set": {"deep.y": [1, 2]}, "$inc": {"n": 0.5}}),
        json!({"$unset": {"deep": "", "missing": ""}, "$set": {"n": "text"}}),
        json!({"$set": {"s": {"nested": {"a": 1}}}}),
    ];
    let mut undos = Vec::new();
    for update in &updates {
        let update = Update::from_json(update).expect("update");
        undos.push(db.apply(DbOp::Update { collection: "c".into(), id: "a".into(), update: Box::new(update) }, &ctx()));
    }
    assert_ne!(db.encode(), before);
    assert!(db.find("c", &Query::new(Filter::eq("n", 1))).is_empty());
    // What a reader held is a snapshot: applying never changed it.
    assert_eq!(postcard::to_allocvec(&*held).expect("encodes"), held_bytes);
    for undo in undos.into_iter().rev() {
        db.undo(undo);
    }
    assert_eq!(db.encode(), before);
    // Indexes are back too.
    assert_eq!(ids(&db.find("c", &Query::new(Filter::eq("n", 1)))), ["a"]);
    assert!(db.find("c", &Query::new(Filter::all().and("deep.x", Cond::Exists(true)))).is_empty());
    assert_eq!(db.explain("c", &Query::new(Filter::eq("n", 1))), Plan::Index("n".into()));
}

#[test]
fn indexes_are_used_when_they_fit() {
    let mut db = sample();
    db.create_index("c", "n");
    let eq = Query::new(Filter::eq("n", 3));
    assert_eq!(db.explain("c", &eq), Plan::Index("n".into()));
    assert_eq!(ids(&db.find("c", &eq)), ["c"]);
    let range = Query::new(Filter::all().and("n", Cond::Gte(Value::Int(2))));
    assert_eq!(db.explain("c", &range), Plan::Index("n".into()));
    assert_eq!(ids(&db.find("c", &range)), ["b", "c"]);
    let unindexed = Query::new(Filter::eq("s", "x"));
    assert_eq!(db.explain("c", &unindexed), Plan::FullScan);
    let exists = Query::new(Filter::all().and("n", Cond::Exists(true)));
    assert_eq!(db.explain("c", &exists), Plan::FullScan);
    // Indexes follow updates and undo.
    let undo = db
        .apply(DbOp::Update { collection: "c".into(), id: "c".into(), update: Box::new(Update::set("n", 10)) }, &ctx());
    assert!(db.find("c", &eq).is_empty());
    db.undo(undo);
    assert_eq!(ids(&db.find("c", &eq)), ["c"]);
}

#[test]
fn change_notifications() {
    let mut db = Db::new();
    let all = db.subscribe(None);
    let other = db.subscribe(Some("other"));
    db.begin_update();
    insert(&mut db, json!({"_id": "a", "n": 1}));
    insert(&mut db, json!({"_id": "b", "n": 1}));
    db.apply(DbOp::Update { collection: "c".into(), id: "a".into(), update: Box::new(Update::set("n", 2)) }, &ctx());
    db.end_update();
    let changes = db.poll_changes(all).expect("not lagged");
    assert_eq!(
        changes.iter().map(|c| (c.id.as_str(), c.kind)).collect::<Vec<_>>(),
        [("a", ChangeKind::Inserted), ("b", ChangeKind::Inserted)]
    );
    assert!(db.poll_changes(other).expect("not lagged").is_empty());
    db.begin_update();
    db.apply(DbOp::Delete { collection: "c".into(), id: "a".into() }, &ctx());
    let undo = db
        .apply(DbOp::Update { collection: "c".into(), id: "b".into(), update: Box::new(Update::set("n", 5)) }, &ctx());
    db.undo(undo);
    db.end_update();
    let changes = db.poll_changes(all).expect("not lagged");
    // b changed and changed back: no notification.
    assert_eq!(changes.len(), 1);
    assert_eq!((changes[0].id.as_str(), changes[0].kind), ("a", ChangeKind::Removed));
    db.unsubscribe(all);
    assert!(db.poll_changes(all).expect("gone").is_empty());
}

#[test]
fn todo_api() {
    let mut replica = Replica::new(Topic::from_name("todo"), Keypair::derive_for_tests(1, 1));
    let subscription = replica.db_mut().subscribe(Some("todos"));
    let milk = replica.todos().add("  buy milk ", 1000).expect("add");
    assert_eq!(milk.text, "buy milk");
    assert!(!milk.done);
    assert_eq!((milk.created, milk.updated), (1000, 1000));
    assert_eq!(milk.author, replica.writer_id().to_hex());
    let bread = replica.todos().add("bread", 2000).expect("add");
    assert_eq!(replica.todos().toggle(&milk.id[..6], 3000), Ok(true));
    replica.todos().edit(&bread.id, "rye bread", 4000).expect("edit");
    let list = replica.todos().list();
    assert_eq!(list.iter().map(|t| t.text.as_str()).collect::<Vec<_>>(), ["buy milk", "rye bread"]);
    assert!(list[0].done && list[0].updated == 3000);
    assert_eq!(list[1].updated, 4000);
    assert_eq!(replica.todos().add("   ", 1), Err(TodoError::EmptyText));
    assert_eq!(replica.todos().add(&"x".repeat(5000), 1), Err(TodoError::TextTooLong));
    assert!(matches!(replica.todos().toggle("zzzz", 1), Err(TodoError::NotFound(_))));
    assert!(matches!(replica.todos().find(""), Err(TodoError::NotFound(_))));
    assert_eq!(replica.todos().clear_completed(), Ok(1));
    replica.todos().remove(&bread.id).expect("remove");
    assert!(replica.todos().list().is_empty());
    let kinds: Vec<ChangeKind> =
        replica.db_mut().poll_changes(subscription).expect("not lagged").iter().map(|c| c.kind).collect();
    assert_eq!(kinds.iter().filter(|k| **k == ChangeKind::Inserted).count(), 2);
    assert_eq!(kinds.iter().filter(|k| **k == ChangeKind::Removed).count(), 2);
}

#[test]
fn ambiguous_prefix_is_reported() {
    let mut replica = Replica::new(Topic::from_name("todo"), Keypair::derive_for_tests(1, 2));
    let ids: Vec<String> = (0..40).map(|i| replica.todos().add(&format!("{i}"), i).expect("add").id).collect();
    // With 40 hex ids, some first character is shared.
    let shared = ids.iter().find(|id| ids.iter().filter(|o| o[..1] == id[..1]).count() > 1).expect("collision");
    assert!(matches!(replica.todos().find(&shared[..1]), Err(TodoError::Ambiguous(_, n)) if n > 1));
    assert_eq!(replica.todos().find(&shared.to_uppercase()).map(|t| t.id), Ok(shared.clone()));
}

fn arb_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-5i64..5).prop_map(Value::Int),
        (-5i32..5).prop_map(|n| Value::Float(n as f64 / 2.0)),
        "[a-d]{0,2}".prop_map(Value::from),
    ]
}

fn arb_cond() -> impl Strategy<Value = Cond> {
    prop_oneof![
        arb_value().prop_map(Cond::Eq),
        arb_value().prop_map(Cond::Ne),
        arb_value().prop_map(Cond::Gt),
        arb_value().prop_map(Cond::Gte),
        arb_value().prop_map(Cond::Lt),
        arb_value().prop_map(Cond::Lte),
        proptest::collection::vec(arb_value(), 0..4).prop_map(Cond::In),
        any::<bool>().prop_map(Cond::Exists),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 500,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("proptest-regressions/db.txt"))),
        ..ProptestConfig::default()
    })]

    /// Results with an index equal results of a full scan, for every operator.
    #[test]
    fn index_and_scan_agree(
        docs in proptest::collection::vec(
            (proptest::option::of(arb_value()), proptest::option::of(arb_value())),
            0..40,
        ),
        conds in proptest::collection::vec((prop_oneof![Just("x"), Just("y")], arb_cond()), 0..3),
        sort_desc in any::<bool>(),
        skip in 0usize..5,
        limit in proptest::option::of(0usize..10),
    ) {
        let mut plain = Db::new();
        let mut indexed = Db::new();
        indexed.create_index("c", "x");
        for (i, (x, y)) in docs.iter().enumerate() {
            let mut d = Document::new();
            d.insert("_id".into(), Value::from(format!("{i:03}")));
            if let Some(x) = x { d.insert("x".into(), x.clone()); }
            if let Some(y) = y { d.insert("y".into(), y.clone()); }
            let op = DbOp::Insert { collection: "c".into(), doc: d.into() };
            plain.apply(op.clone(), &ctx());
            indexed.apply(op, &ctx());
        }
        let mut filter = Filter::all();
        for (path, cond) in conds { filter = filter.and(path, cond); }
        let direction = if sort_desc { Direction::Desc } else { Direction::Asc };
        let mut query = Query::new(filter).sort("y", direction).skip(skip);
        query.limit = limit;
        let with_index = indexed.find("c", &query);
        prop_assert_eq!(ids(&with_index), ids(&plain.find_scan("c", &query)));
        prop_assert_eq!(ids(&with_index), ids(&indexed.find_scan("c", &query)));
    }
}
