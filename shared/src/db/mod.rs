//! The document DB view (the seed's hyperbeedeebee): collections of JSON-like documents
//! built by applying linearized [`DbOp`]s, with queries, secondary indexes and change
//! notifications. It implements [`Apply`], so the [`Base`](crate::base::Base) can roll it
//! back and reapply when a late entry sorts before the tip.

mod codec;
pub mod name;
pub mod query;
pub mod value;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use rustc_hash::{FxHashMap, FxHashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
pub use smol_str::SmolStr;

pub use codec::MAX_DEPTH;
pub use name::Name;
pub use query::{Cond, Direction, Filter, Query, QueryError, Update};
use value::get_path_shared;
pub use value::{Document, Value, get_path};

use crate::base::{Apply, ApplyContext};
use crate::keys::Hash;

/// The field that holds a document's id.
pub const ID_FIELD: &str = "_id";
/// Changes queued for one subscriber before it is marked as lagging.
pub const MAX_QUEUED_CHANGES: usize = 65_536;

/// One replicated operation on the DB. Operations name single documents by id, so
/// the view is a pure function of the ordered operations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum DbOp {
    /// Insert a document; it must carry a string `_id`. Ignored if the id exists.
    Insert {
        /// Collection name.
        collection: Name,
        /// The document.
        #[serde(deserialize_with = "value::shared_document")]
        doc: Arc<Document>,
    },
    /// Update one document by id. Ignored if it does not exist.
    Update {
        /// Collection name.
        collection: Name,
        /// Document id.
        id: SmolStr,
        /// What to change (boxed: keeps every operation small in memory).
        update: Box<Update>,
    },
    /// Delete one document by id. Ignored if it does not exist.
    Delete {
        /// Collection name.
        collection: Name,
        /// Document id.
        id: SmolStr,
    },
}

impl DbOp {
    /// The payload bytes stored in a log entry.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Reads payload bytes; `None` if they are not an operation (including values nested
    /// deeper than [`MAX_DEPTH`]).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        codec::decode_op(bytes)
    }
}

/// What undoes one applied operation.
#[derive(Debug)]
pub struct DbUndo(Undo);

#[derive(Debug)]
enum Undo {
    /// The operation changed nothing.
    Nothing,
    /// Put this document back (`None`: remove it). Undoes inserts and deletes.
    Restore(u32, SmolStr, Option<Arc<Document>>),
    /// Put these top-level fields back (`None`: remove the field). Undoes updates, which
    /// change documents in place, without keeping a copy of the whole document.
    Fields(u32, SmolStr, Vec<(Name, Option<Value>)>),
}

/// What happened to a document in one update of the view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    /// It did not exist before.
    Inserted,
    /// It changed.
    Updated,
    /// It no longer exists.
    Removed,
}

/// A change notification for UIs.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// Collection name.
    pub collection: String,
    /// Document id.
    pub id: String,
    /// What happened.
    pub kind: ChangeKind,
    /// The document now (None when removed).
    pub doc: Option<Arc<Document>>,
}

/// A handle to a change subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SubscriptionId(u64);

/// The subscriber fell too far behind; reload with `find` and keep polling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("change subscription lagged; reload the query")]
pub struct Lagged;

/// How `find` chose its candidates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Every document of the collection was checked.
    FullScan,
    /// An index on this path narrowed the candidates.
    Index(String),
}

/// Documents changed during one update, with their state before it.
type Touched = FxHashMap<(u32, SmolStr), Option<Arc<Document>>>;

#[derive(Debug, Default)]
struct Collection {
    name: String,
    docs: FxHashMap<SmolStr, Arc<Document>>,
    indexes: BTreeMap<String, Index>,
}

#[derive(Debug)]
struct Subscriber {
    collection: Option<String>,
    queue: VecDeque<Change>,
    lagged: bool,
}

/// The document DB view.
#[derive(Debug)]
pub struct Db {
    collections: Vec<Collection>,
    by_name: FxHashMap<String, u32>,
    index_specs: BTreeMap<String, BTreeSet<String>>,
    author_field: Option<Name>,
    authors: FxHashMap<crate::keys::WriterId, Value>,
    /// When set, an inserted document's id must be [`derived_id`] of its entry, this long.
    derived_ids: Option<usize>,
    subscribers: HashMap<SubscriptionId, Subscriber>,
    next_subscription: u64,
    touched: Option<Touched>,
    /// [`ID_FIELD`] as a shared name.
    id_name: Name,
    /// The collection the last operation named, by shared name (operations come in runs on
    /// one collection, so this usually saves hashing its name).
    last_collection: Option<(Name, u32)>,
    /// Reused room for index values before an edit.
    before: Vec<Option<Value>>,
}

impl Default for Db {
    fn default() -> Self {
        Self {
            collections: Vec::new(),
            by_name: FxHashMap::default(),
            index_specs: BTreeMap::new(),
            author_field: None,
            authors: FxHashMap::default(),
            derived_ids: None,
            subscribers: HashMap::new(),
            next_subscription: 0,
            touched: None,
            id_name: name::name(ID_FIELD),
            last_collection: None,
            before: Vec::new(),
        }
    }
}

impl Db {
    /// An empty DB.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stamps the author's writer key (hex) into this field of every inserted document,
    /// so authorship cannot be forged by the payload.
    pub fn with_author_field(mut self, field: &str) -> Self {
        self.author_field = Some(name::name(field));
        self
    }

    /// Requires every inserted document's id to be [`derived_id`] of the entry that
    /// inserts it (the first `len` hex digits), so no writer can insert under an id another
    /// writer will use, or has used; other inserts are no-ops.
    pub fn with_derived_ids(mut self, len: usize) -> Self {
        self.derived_ids = Some(len);
        self
    }

    /// Declares a secondary index on a field path of a collection. Indexes are local
    /// (not replicated): they change speed, never results.
    pub fn create_index(&mut self, collection: &str, path: &str) {
        self.index_specs.entry(collection.to_owned()).or_default().insert(path.to_owned());
        if let Some(&index) = self.by_name.get(collection) {
            let coll = &mut self.collections[index as usize];
            let mut index = Index::new(path);
            for (id, doc) in &coll.docs {
                if let Some(value) = get_path(doc, path) {
                    index.insert(value, id);
                }
            }
            coll.indexes.insert(path.to_owned(), index);
        }
    }

    /// One document by id.
    pub fn get(&self, collection: &str, id: &str) -> Option<Arc<Document>> {
        self.collection(collection)?.docs.get(id).cloned()
    }

    /// Number of documents in a collection.
    pub fn count(&self, collection: &str) -> usize {
        self.collection(collection).map_or(0, |c| c.docs.len())
    }

    /// Runs a query.
    pub fn find(&self, collection: &str, query: &Query) -> Vec<Arc<Document>> {
        self.find_with_plan(collection, query).0
    }

    /// Which plan `find` would use.
    pub fn explain(&self, collection: &str, query: &Query) -> Plan {
        self.find_with_plan(collection, query).1
    }

    /// Runs a query without indexes (the reference the index path is tested against).
    pub fn find_scan(&self, collection: &str, query: &Query) -> Vec<Arc<Document>> {
        let Some(coll) = self.collection(collection) else { return Vec::new() };
        let matching = coll.docs.values().filter(|doc| query.filter.matches(doc)).cloned().collect();
        finish(matching, query)
    }

    fn find_with_plan(&self, collection: &str, query: &Query) -> (Vec<Arc<Document>>, Plan) {
        let Some(coll) = self.collection(collection) else { return (Vec::new(), Plan::FullScan) };
        for (path, cond) in &query.filter.conds {
            let Some(index) = coll.indexes.get(path) else { continue };
            let Some(ids) = index.candidates(cond) else { continue };
            let matching = ids
                .into_iter()
                .filter_map(|id| coll.docs.get(id))
                .filter(|doc| query.filter.matches(doc))
                .cloned()
                .collect();
            return (finish(matching, query), Plan::Index(path.clone()));
        }
        let matching = coll.docs.values().filter(|doc| query.filter.matches(doc)).cloned().collect();
        (finish(matching, query), Plan::FullScan)
    }

    /// Subscribes to changes of one collection (or all with `None`).
    pub fn subscribe(&mut self, collection: Option<&str>) -> SubscriptionId {
        let id = SubscriptionId(self.next_subscription);
        self.next_subscription += 1;
        let subscriber =
            Subscriber { collection: collection.map(str::to_owned), queue: VecDeque::new(), lagged: false };
        self.subscribers.insert(id, subscriber);
        id
    }

    /// Ends a subscription.
    pub fn unsubscribe(&mut self, id: SubscriptionId) {
        self.subscribers.remove(&id);
    }

    /// Takes the changes queued for a subscriber. After [`Lagged`], the queue restarts empty.
    pub fn poll_changes(&mut self, id: SubscriptionId) -> Result<Vec<Change>, Lagged> {
        let Some(subscriber) = self.subscribers.get_mut(&id) else { return Ok(Vec::new()) };
        if std::mem::take(&mut subscriber.lagged) {
            subscriber.queue.clear();
            return Err(Lagged);
        }
        Ok(subscriber.queue.drain(..).collect())
    }

    /// A canonical encoding of the whole view: equal views give equal bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut named: Vec<&Collection> = self.collections.iter().filter(|c| !c.docs.is_empty()).collect();
        named.sort_by(|a, b| a.name.cmp(&b.name));
        let snapshot: Vec<(&str, Vec<&Document>)> = named
            .iter()
            .map(|c| {
                let mut docs: Vec<(&SmolStr, &Arc<Document>)> = c.docs.iter().collect();
                docs.sort_unstable_by(|a, b| a.0.cmp(b.0));
                (c.name.as_str(), docs.into_iter().map(|(_, d)| d.as_ref()).collect())
            })
            .collect();
        postcard::to_allocvec(&snapshot).unwrap_or_default()
    }

    /// SHA-256 of [`Db::encode`].
    pub fn digest(&self) -> Hash {
        Hash::digest(&self.encode())
    }

    fn collection(&self, name: &str) -> Option<&Collection> {
        self.by_name.get(name).map(|&index| &self.collections[index as usize])
    }

    /// The index of an existing collection named by an operation.
    fn existing_collection(&mut self, name: &Name) -> Option<u32> {
        if let Some((last, index)) = &self.last_collection
            && last.same(name)
        {
            return Some(*index);
        }
        let index = *self.by_name.get(&**name)?;
        self.last_collection = Some((name.clone(), index));
        Some(index)
    }

    fn collection_index(&mut self, name: &str) -> u32 {
        if let Some(&index) = self.by_name.get(name) {
            return index;
        }
        let index = self.collections.len() as u32;
        let mut coll = Collection { name: name.to_owned(), ..Collection::default() };
        for path in self.index_specs.get(name).into_iter().flatten() {
            coll.indexes.insert(path.clone(), Index::new(path));
        }
        self.collections.push(coll);
        self.by_name.insert(name.to_owned(), index);
        index
    }

    /// Sets or removes a document, keeping indexes and change tracking in step.
    fn replace(&mut self, coll_index: u32, id: &SmolStr, new: Option<Arc<Document>>) -> Option<Arc<Document>> {
        let coll = &mut self.collections[coll_index as usize];
        let old = match &new {
            Some(doc) => coll.docs.insert(id.clone(), doc.clone()),
            None => coll.docs.remove(id),
        };
        self.changed(coll_index, id, old.as_ref(), new.as_deref());
        old
    }

    /// Changes a document in place (copied first only if someone else holds it), keeping
    /// indexes and change tracking in step. Returns the document's shared id and what `edit`
    /// returned, or `None` when there is no such document.
    fn edit<R>(&mut self, coll_index: u32, id: &str, edit: impl FnOnce(&mut Document) -> R) -> Option<(SmolStr, R)> {
        let coll = &mut self.collections[coll_index as usize];
        let slot = coll.docs.get_mut(id)?;
        let id: SmolStr = match slot.get_shared(&self.id_name) {
            Some(Value::Str(shared)) => shared.clone(),
            _ => id.into(),
        };
        if let Some(touched) = &mut self.touched {
            touched.entry((coll_index, id.clone())).or_insert_with(|| Some(slot.clone()));
        }
        let mut before = std::mem::take(&mut self.before);
        before.extend(coll.indexes.values().map(|index| get_path_shared(slot, &index.path).cloned()));
        let doc = Arc::make_mut(slot);
        let result = edit(doc);
        for (index, before) in coll.indexes.values_mut().zip(before.drain(..)) {
            let after = get_path_shared(doc, &index.path);
            if before.as_ref() == after {
                continue;
            }
            if let Some(value) = &before {
                index.remove(value, &id);
            }
            if let Some(value) = after {
                index.insert(value, &id);
            }
        }
        self.before = before;
        Some((id, result))
    }

    /// Follows a document change in the indexes and the change tracking. Every change of
    /// `docs` goes through here.
    fn changed(&mut self, coll_index: u32, id: &SmolStr, old: Option<&Arc<Document>>, new: Option<&Document>) {
        let coll = &mut self.collections[coll_index as usize];
        for index in coll.indexes.values_mut() {
            let before = old.and_then(|doc| get_path_shared(doc, &index.path));
            let after = new.and_then(|doc| get_path_shared(doc, &index.path));
            if before == after {
                continue;
            }
            if let Some(value) = before {
                index.remove(value, id);
            }
            if let Some(value) = after {
                index.insert(value, id);
            }
        }
        if let Some(touched) = &mut self.touched {
            touched.entry((coll_index, id.clone())).or_insert_with(|| old.cloned());
        }
    }
}

fn finish(docs: Vec<Arc<Document>>, query: &Query) -> Vec<Arc<Document>> {
    // Each document's sort key is looked up once, not at every comparison (the same order
    // as [`Query::compare`]).
    let keys: Vec<(Vec<&Value>, Option<&Value>)> = docs.iter().map(|doc| query.sort_key(doc)).collect();
    let mut order: Vec<usize> = (0..docs.len()).collect();
    order.sort_by(|&a, &b| query.compare_keys(&keys[a], &keys[b]));
    order.into_iter().skip(query.skip).take(query.limit.unwrap_or(usize::MAX)).map(|at| docs[at].clone()).collect()
}

/// A secondary index: field value to the ids of the documents holding it.
#[derive(Debug)]
struct Index {
    /// The indexed path, as a shared name.
    path: Name,
    entries: BTreeMap<Value, FxHashSet<SmolStr>>,
}

impl Index {
    fn new(path: &str) -> Self {
        Self { path: name::name(path), entries: BTreeMap::new() }
    }

    fn insert(&mut self, value: &Value, id: &SmolStr) {
        match self.entries.get_mut(value) {
            Some(ids) => {
                ids.insert(id.clone());
            }
            None => {
                let mut ids = FxHashSet::default();
                ids.insert(id.clone());
                self.entries.insert(value.clone(), ids);
            }
        }
    }

    fn remove(&mut self, value: &Value, id: &SmolStr) {
        if let Some(ids) = self.entries.get_mut(value) {
            ids.remove(id);
            if ids.is_empty() {
                self.entries.remove(value);
            }
        }
    }

    /// Candidate ids for one condition, or None when the index does not fit it.
    fn candidates(&self, cond: &Cond) -> Option<Vec<&SmolStr>> {
        let ids = |value: &Value| self.entries.get(value).into_iter().flatten();
        let of_class = |rank: u8| {
            self.entries
                .range(Value::class_min(rank)..)
                .take_while(move |(value, _)| value.type_rank() == rank)
                .filter(|(value, _)| cond.matches(Some(value)))
                .flat_map(|(_, ids)| ids)
        };
        Some(match cond {
            Cond::Eq(target) if *target != Value::Null => ids(target).collect(),
            Cond::In(options) if !options.contains(&Value::Null) => {
                let mut found: Vec<&SmolStr> = options.iter().flat_map(ids).collect();
                found.sort_unstable();
                found.dedup();
                found
            }
            Cond::Gt(target) | Cond::Gte(target) => self
                .entries
                .range(target.clone()..)
                .take_while(|(value, _)| value.type_rank() == target.type_rank())
                .filter(|(value, _)| cond.matches(Some(value)))
                .flat_map(|(_, ids)| ids)
                .collect(),
            Cond::Lt(target) | Cond::Lte(target) => of_class(target.type_rank()).collect(),
            _ => return None,
        })
    }
}

/// The id of a document inserted by entry `seq` of `writer`: the first `len` hex digits of
/// SHA-256 over the writer key and the seq.
pub fn derived_id(writer: &crate::keys::WriterId, seq: u64, len: usize) -> String {
    let mut id = Hash::digest_parts(&[&writer.0, &seq.to_le_bytes()]).to_hex();
    id.truncate(len);
    id
}

impl Apply for Db {
    type Op = DbOp;
    type Undo = DbUndo;

    fn decode_op(&mut self, payload: &[u8], ctx: &ApplyContext) -> Option<DbOp> {
        let mut op = DbOp::decode(payload)?;
        if let (DbOp::Insert { doc, .. }, Some(len)) = (&op, self.derived_ids) {
            let id = doc.get_shared(&self.id_name).and_then(Value::as_str)?;
            if id != derived_id(&ctx.writer, ctx.seq, len) {
                return None;
            }
        }
        match (&mut op, &self.author_field) {
            (DbOp::Insert { doc, .. }, Some(field)) => {
                let author =
                    self.authors.entry(ctx.writer).or_insert_with(|| Value::Str(ctx.writer.to_hex().into())).clone();
                Arc::make_mut(doc).insert(field.clone(), author);
            }
            // The author stamp is the view's, never the payload's.
            (DbOp::Update { update, .. }, Some(field)) => update.protect(field.as_str()),
            _ => {}
        }
        Some(op)
    }

    fn op_key(&self, op: &DbOp) -> Option<u64> {
        use std::hash::{Hash as _, Hasher as _};
        let (collection, id) = match op {
            DbOp::Insert { collection, doc } => {
                (collection, doc.get_shared(&self.id_name).and_then(Value::as_str).unwrap_or(""))
            }
            DbOp::Update { collection, id, .. } | DbOp::Delete { collection, id } => (collection, id.as_str()),
        };
        let mut hasher = rustc_hash::FxHasher::default();
        (&**collection, id).hash(&mut hasher);
        Some(hasher.finish())
    }

    fn apply(&mut self, op: DbOp, _ctx: &ApplyContext) -> DbUndo {
        DbUndo(match op {
            DbOp::Insert { collection, doc } => {
                let Some(Value::Str(id)) = doc.get_shared(&self.id_name) else { return DbUndo(Undo::Nothing) };
                let id = id.clone();
                let coll_index = match self.existing_collection(&collection) {
                    Some(index) => index,
                    None => self.collection_index(&collection),
                };
                if self.collections[coll_index as usize].docs.contains_key(&id) {
                    return DbUndo(Undo::Nothing);
                }
                self.changed(coll_index, &id, None, Some(&doc));
                self.collections[coll_index as usize].docs.insert(id.clone(), doc);
                Undo::Restore(coll_index, id, None)
            }
            DbOp::Update { collection, id, update } => {
                let Some(coll_index) = self.existing_collection(&collection) else { return DbUndo(Undo::Nothing) };
                let edited = self.edit(coll_index, &id, |doc| {
                    let saved = update.save_fields(doc);
                    update.apply_to(doc);
                    saved
                });
                match edited {
                    Some((id, saved)) => Undo::Fields(coll_index, id, saved),
                    None => Undo::Nothing,
                }
            }
            DbOp::Delete { collection, id } => {
                let Some(coll_index) = self.existing_collection(&collection) else { return DbUndo(Undo::Nothing) };
                let Some(id) =
                    self.collections[coll_index as usize].docs.get_key_value(id.as_str()).map(|(k, _)| k.clone())
                else {
                    return DbUndo(Undo::Nothing);
                };
                let old = self.replace(coll_index, &id, None);
                Undo::Restore(coll_index, id, old)
            }
        })
    }

    fn undo(&mut self, undo: DbUndo) {
        match undo.0 {
            Undo::Nothing => {}
            Undo::Restore(coll_index, id, old) => {
                self.replace(coll_index, &id, old);
            }
            Undo::Fields(coll_index, id, saved) => {
                self.edit(coll_index, &id, |doc| {
                    for (name, value) in saved {
                        match value {
                            Some(value) => doc.insert(name, value),
                            None => doc.remove_shared(&name),
                        };
                    }
                });
            }
        }
    }

    fn begin_update(&mut self) {
        if !self.subscribers.is_empty() {
            self.touched = Some(FxHashMap::default());
        }
    }

    fn end_update(&mut self) {
        let Some(touched) = self.touched.take() else { return };
        let mut changes = Vec::new();
        for ((coll_index, id), before) in touched {
            let coll = &self.collections[coll_index as usize];
            let after = coll.docs.get(&id).cloned();
            let kind = match (&before, &after) {
                (None, None) => continue,
                (None, Some(_)) => ChangeKind::Inserted,
                (Some(_), None) => ChangeKind::Removed,
                (Some(old), Some(new)) if Arc::ptr_eq(old, new) || old == new => continue,
                (Some(_), Some(_)) => ChangeKind::Updated,
            };
            changes.push(Change { collection: coll.name.clone(), id: id.to_string(), kind, doc: after });
        }
        changes.sort_by(|a, b| (&a.collection, &a.id).cmp(&(&b.collection, &b.id)));
        for subscriber in self.subscribers.values_mut() {
            let wanted = changes.iter().filter(|c| subscriber.collection.as_ref().is_none_or(|n| *n == c.collection));
            for change in wanted {
                if subscriber.queue.len() >= MAX_QUEUED_CHANGES {
                    subscriber.lagged = true;
                    break;
                }
                subscriber.queue.push_back(change.clone());
            }
        }
    }
}
