//! The typed todo API over the document DB: one collection, documents
//! `{_id, text, done, created, updated, author}`.

use serde::{Deserialize, Serialize};

use crate::base::IngestError;
use crate::db::{Db, DbOp, Direction, Document, Filter, Query, Update, Value};
use crate::keys::Keypair;
use crate::replica::{OpenError, Replica, WriteError};
use crate::storage::LoadedState;
use crate::topic::Topic;

/// The collection todos live in.
pub const COLLECTION: &str = "todos";
/// The field stamped with the author's writer key.
pub const AUTHOR_FIELD: &str = "author";
/// The longest todo text accepted, in bytes.
pub const MAX_TEXT_BYTES: usize = 4096;
/// Hex characters in a todo id.
pub const ID_LEN: usize = 20;

/// A todo as the UIs show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Todo {
    /// Its id (hex).
    #[serde(rename = "_id")]
    pub id: String,
    /// What to do.
    pub text: String,
    /// Whether it is done.
    pub done: bool,
    /// Created, milliseconds since the Unix epoch (the author's clock).
    pub created: i64,
    /// Last changed, milliseconds since the Unix epoch (the changer's clock).
    pub updated: i64,
    /// The author's writer key (hex), stamped by the view.
    pub author: String,
}

impl Todo {
    /// Reads a todo from a document; `None` if the document is not a well-formed todo.
    pub fn from_doc(doc: &Document) -> Option<Self> {
        let text = |field: &str| doc.get(field).and_then(Value::as_str).map(str::to_owned);
        Some(Self {
            id: text("_id")?,
            text: text("text")?,
            done: doc.get("done").and_then(Value::as_bool).unwrap_or(false),
            created: doc.get("created").and_then(Value::as_i64).unwrap_or(0),
            updated: doc.get("updated").and_then(Value::as_i64).unwrap_or(0),
            author: text(AUTHOR_FIELD).unwrap_or_default(),
        })
    }
}

/// Why a todo command failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TodoError {
    /// Empty (or blank) text.
    #[error("a todo needs some text")]
    EmptyText,
    /// Text over [`MAX_TEXT_BYTES`].
    #[error("todo text is over {MAX_TEXT_BYTES} bytes")]
    TextTooLong,
    /// No todo id starts with this.
    #[error("no todo matches id {0:?}")]
    NotFound(String),
    /// No member of the list matches this.
    #[error("no member matches {0:?} (see hellopears members)")]
    NoMember(String),
    /// Several todo ids start with this.
    #[error("id prefix {0:?} matches {1} todos; give more characters")]
    Ambiguous(String, usize),
    /// The write itself failed.
    #[error(transparent)]
    Write(#[from] IngestError),
    /// This device may not write in this list (read-only, blind, removed, not yet admitted).
    #[error("{0}")]
    Access(#[from] crate::access::AccessError),
}

impl From<WriteError> for TodoError {
    fn from(error: WriteError) -> Self {
        match error {
            WriteError::Access(error) => TodoError::Access(error),
            WriteError::Ingest(error) => TodoError::Write(error),
        }
    }
}

/// The todo app's view: documents stamped with their author, and the index the list uses
/// (`done`, for the active/done filters and clearing completed todos; sorting by `created`
/// happens on the result set). The app's field names are shared from the start.
pub fn view() -> Db {
    crate::db::name::preload(&[COLLECTION, "_id", "text", "done", "created", "updated", AUTHOR_FIELD]);
    let mut db = Db::new().with_author_field(AUTHOR_FIELD).with_derived_ids(ID_LEN);
    db.create_index(COLLECTION, "done");
    db
}

/// Replicas of the todo app.
impl Replica {
    /// An empty todo replica for a topic, writing as `keypair`.
    pub fn new(topic: Topic, keypair: Keypair) -> Self {
        Self::with_view(topic, keypair, view())
    }

    /// Opens a todo replica from stored state (see [`Replica::open_with_view`]).
    pub fn open(topic: Topic, keypair: Keypair, state: LoadedState) -> (Self, Vec<OpenError>) {
        Self::open_with_view(topic, keypair, view(), state)
    }

    /// The typed todo API.
    pub fn todos(&mut self) -> Todos<'_> {
        Todos::new(self)
    }
}

/// The todo API over a replica.
#[derive(Debug)]
pub struct Todos<'a> {
    replica: &'a mut Replica,
}

impl<'a> Todos<'a> {
    pub(crate) fn new(replica: &'a mut Replica) -> Self {
        Self { replica }
    }

    /// Adds a todo; `now` is milliseconds since the Unix epoch.
    pub fn add(&mut self, text: &str, now: i64) -> Result<Todo, TodoError> {
        let text = check_text(text)?;
        let writer = self.replica.writer_id();
        let seq = self.replica.base().len(&writer);
        let id = crate::db::derived_id(&writer, seq, ID_LEN);
        let mut doc = Document::new();
        doc.insert("_id".into(), Value::Str(id.clone().into()));
        doc.insert("text".into(), Value::Str(text.into()));
        doc.insert("done".into(), Value::Bool(false));
        doc.insert("created".into(), Value::Int(now));
        doc.insert("updated".into(), Value::Int(now));
        self.replica.write(&DbOp::Insert { collection: COLLECTION.into(), doc: doc.into() })?;
        self.get(&id).ok_or(TodoError::NotFound(id))
    }

    /// Flips done; returns the new state.
    pub fn toggle(&mut self, id: &str, now: i64) -> Result<bool, TodoError> {
        let todo = self.find(id)?;
        self.set_done(&todo.id, !todo.done, now)?;
        Ok(!todo.done)
    }

    /// Marks done or not done.
    pub fn set_done(&mut self, id: &str, done: bool, now: i64) -> Result<(), TodoError> {
        let todo = self.find(id)?;
        self.update(todo.id, Update::set("done", done).and_set("updated", now))
    }

    /// Changes the text.
    pub fn edit(&mut self, id: &str, text: &str, now: i64) -> Result<(), TodoError> {
        let text = check_text(text)?;
        let todo = self.find(id)?;
        self.update(todo.id, Update::set("text", text).and_set("updated", now))
    }

    /// Deletes a todo.
    pub fn remove(&mut self, id: &str) -> Result<(), TodoError> {
        let todo = self.find(id)?;
        self.replica.write(&DbOp::Delete { collection: COLLECTION.into(), id: todo.id.into() })?;
        Ok(())
    }

    /// Deletes every done todo; returns how many.
    pub fn clear_completed(&mut self) -> Result<usize, TodoError> {
        let done = self.replica.db().find(COLLECTION, &Query::new(Filter::eq("done", true)));
        let ids: Vec<String> = done.iter().filter_map(|doc| Todo::from_doc(doc)).map(|todo| todo.id).collect();
        for id in &ids {
            self.replica.write(&DbOp::Delete { collection: COLLECTION.into(), id: id.as_str().into() })?;
        }
        Ok(ids.len())
    }

    /// Every todo, oldest first.
    pub fn list(&self) -> Vec<Todo> {
        list(self.replica.db())
    }

    /// One todo by full id.
    pub fn get(&self, id: &str) -> Option<Todo> {
        self.replica.db().get(COLLECTION, id).and_then(|doc| Todo::from_doc(&doc))
    }

    /// Finds the one todo whose id starts with `prefix`.
    pub fn find(&self, prefix: &str) -> Result<Todo, TodoError> {
        let prefix = prefix.trim().to_ascii_lowercase();
        if prefix.is_empty() {
            return Err(TodoError::NotFound(prefix));
        }
        let query = Query::new(Filter::all());
        let matches: Vec<Todo> = self
            .replica
            .db()
            .find(COLLECTION, &query)
            .iter()
            .filter_map(|doc| Todo::from_doc(doc))
            .filter(|todo| todo.id.starts_with(&prefix))
            .collect();
        match matches.len() {
            0 => Err(TodoError::NotFound(prefix)),
            1 => Ok(matches.into_iter().next().ok_or(TodoError::NotFound(prefix))?),
            n => Err(TodoError::Ambiguous(prefix, n)),
        }
    }

    fn update(&mut self, id: String, update: Update) -> Result<(), TodoError> {
        self.replica.write(&DbOp::Update { collection: COLLECTION.into(), id: id.into(), update: Box::new(update) })?;
        Ok(())
    }
}

/// Every todo in a DB, oldest first (then by id).
pub fn list(db: &Db) -> Vec<Todo> {
    let query = Query::new(Filter::all()).sort("created", Direction::Asc);
    db.find(COLLECTION, &query).iter().filter_map(|doc| Todo::from_doc(doc)).collect()
}

fn check_text(text: &str) -> Result<String, TodoError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(TodoError::EmptyText);
    }
    if text.len() > MAX_TEXT_BYTES {
        return Err(TodoError::TextTooLong);
    }
    Ok(text.to_owned())
}
