//! Filters, updates and queries in MongoDB's shape.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use super::name::{Name, name};

use super::value::{Document, Value, get_path, get_path_shared, set_path_shared, top_level_name, unset_path_shared};

/// One condition on a field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Cond {
    /// `$eq`: equal.
    Eq(Value),
    /// `$ne`: not equal (also matches a missing field).
    Ne(Value),
    /// `$gt`: greater, within the same type class.
    Gt(Value),
    /// `$gte`: greater or equal, within the same type class.
    Gte(Value),
    /// `$lt`: less, within the same type class.
    Lt(Value),
    /// `$lte`: less or equal, within the same type class.
    Lte(Value),
    /// `$in`: equal to one of these.
    In(Vec<Value>),
    /// `$exists`: the field is present (true) or absent (false).
    Exists(bool),
}

impl Cond {
    /// Whether a field value (or its absence) satisfies this condition.
    pub fn matches(&self, field: Option<&Value>) -> bool {
        let same_class = |a: &Value, b: &Value| a.type_rank() == b.type_rank();
        match (self, field) {
            (Cond::Exists(wanted), field) => field.is_some() == *wanted,
            (Cond::Eq(Value::Null), None) => true,
            (Cond::Ne(Value::Null), None) => false,
            (Cond::Ne(_), None) => true,
            (Cond::In(options), None) => options.contains(&Value::Null),
            (_, None) => false,
            (Cond::Eq(target), Some(value)) => value == target,
            (Cond::Ne(target), Some(value)) => value != target,
            (Cond::In(options), Some(value)) => options.contains(value),
            (Cond::Gt(target), Some(value)) => same_class(value, target) && value > target,
            (Cond::Gte(target), Some(value)) => same_class(value, target) && value >= target,
            (Cond::Lt(target), Some(value)) => same_class(value, target) && value < target,
            (Cond::Lte(target), Some(value)) => same_class(value, target) && value <= target,
        }
    }
}

/// A conjunction of field conditions (all must hold). The empty filter matches everything.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Filter {
    /// (dotted field path, condition) pairs.
    pub conds: Vec<(String, Cond)>,
}

/// Why a filter, update or query in JSON form was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// An operator this DB does not know.
    #[error("unknown operator {0}")]
    UnknownOperator(String),
    /// The operand has the wrong shape.
    #[error("bad operand for {0}")]
    BadOperand(String),
    /// The filter or update is not an object.
    #[error("expected an object")]
    NotAnObject,
    /// An update touches `_id`.
    #[error("_id cannot be changed")]
    IdImmutable,
    /// `$inc` by something that is not a number.
    #[error("$inc needs a number for {0}")]
    IncNotNumber(String),
}

impl Filter {
    /// The filter that matches every document.
    pub fn all() -> Self {
        Self::default()
    }

    /// Adds a condition (builder style).
    pub fn and(mut self, path: &str, cond: Cond) -> Self {
        self.conds.push((path.to_owned(), cond));
        self
    }

    /// Shorthand for `{path: value}`.
    pub fn eq(path: &str, value: impl Into<Value>) -> Self {
        Self::all().and(path, Cond::Eq(value.into()))
    }

    /// Whether a document matches.
    pub fn matches(&self, doc: &Document) -> bool {
        self.conds.iter().all(|(path, cond)| cond.matches(get_path(doc, path)))
    }

    /// Parses MongoDB syntax: `{"done": false, "created": {"$gte": 5, "$lt": 9}}`.
    pub fn from_json(json: &serde_json::Value) -> Result<Self, QueryError> {
        let object = json.as_object().ok_or(QueryError::NotAnObject)?;
        let mut filter = Filter::all();
        for (path, spec) in object {
            match spec.as_object() {
                Some(ops) if ops.keys().any(|k| k.starts_with('$')) => {
                    for (op, operand) in ops {
                        filter.conds.push((path.clone(), parse_cond(op, operand)?));
                    }
                }
                _ => filter.conds.push((path.clone(), Cond::Eq(Value::from_json(spec)))),
            }
        }
        Ok(filter)
    }
}

fn parse_cond(op: &str, operand: &serde_json::Value) -> Result<Cond, QueryError> {
    let value = Value::from_json(operand);
    Ok(match op {
        "$eq" => Cond::Eq(value),
        "$ne" => Cond::Ne(value),
        "$gt" => Cond::Gt(value),
        "$gte" => Cond::Gte(value),
        "$lt" => Cond::Lt(value),
        "$lte" => Cond::Lte(value),
        "$in" => match value {
            Value::Array(items) => Cond::In(items),
            _ => return Err(QueryError::BadOperand(op.to_owned())),
        },
        "$exists" => match value {
            Value::Bool(flag) => Cond::Exists(flag),
            _ => return Err(QueryError::BadOperand(op.to_owned())),
        },
        other => return Err(QueryError::UnknownOperator(other.to_owned())),
    })
}

/// A document update: `$set`, `$unset` and `$inc`, applied in that order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Update {
    /// `$set`: (path, value).
    pub set: Vec<(Name, Value)>,
    /// `$unset`: paths.
    pub unset: Vec<Name>,
    /// `$inc`: (path, amount). A missing field is set to the amount.
    pub inc: Vec<(Name, Value)>,
}

impl Update {
    /// Drops every change to `field` or below it (fields the view protects).
    pub fn protect(&mut self, field: &str) {
        let touches =
            |path: &Name| path.as_str() == field || path.strip_prefix(field).is_some_and(|rest| rest.starts_with('.'));
        self.set.retain(|(path, _)| !touches(path));
        self.unset.retain(|path| !touches(path));
        self.inc.retain(|(path, _)| !touches(path));
    }

    /// An update that sets one field.
    pub fn set(path: &str, value: impl Into<Value>) -> Self {
        Self::default().and_set(path, value)
    }

    /// Adds a `$set` (builder style).
    pub fn and_set(mut self, path: &str, value: impl Into<Value>) -> Self {
        self.set.push((name(path), value.into()));
        self
    }

    /// Adds a `$unset` (builder style).
    pub fn and_unset(mut self, path: &str) -> Self {
        self.unset.push(name(path));
        self
    }

    /// Adds an `$inc` (builder style).
    pub fn and_inc(mut self, path: &str, amount: impl Into<Value>) -> Self {
        self.inc.push((name(path), amount.into()));
        self
    }

    /// Checks the update before it is written: no `_id`, numeric `$inc`.
    pub fn validate(&self) -> Result<(), QueryError> {
        let touches_id = |path: &str| path == "_id" || path.starts_with("_id.");
        let paths = self.set.iter().map(|(p, _)| p).chain(self.unset.iter()).chain(self.inc.iter().map(|(p, _)| p));
        for path in paths {
            if touches_id(path) {
                return Err(QueryError::IdImmutable);
            }
        }
        for (path, amount) in &self.inc {
            if !matches!(amount, Value::Int(_) | Value::Float(_)) {
                return Err(QueryError::IncNotNumber(path.to_string()));
            }
        }
        Ok(())
    }

    /// Parses MongoDB syntax: `{"$set": {"a": 1}, "$unset": {"b": ""}, "$inc": {"n": 2}}`.
    pub fn from_json(json: &serde_json::Value) -> Result<Self, QueryError> {
        let object = json.as_object().ok_or(QueryError::NotAnObject)?;
        let mut update = Update::default();
        for (op, fields) in object {
            let fields = fields.as_object().ok_or_else(|| QueryError::BadOperand(op.clone()))?;
            for (path, value) in fields {
                match op.as_str() {
                    "$set" => update.set.push((name(path), Value::from_json(value))),
                    "$unset" => update.unset.push(name(path)),
                    "$inc" => update.inc.push((name(path), Value::from_json(value))),
                    other => return Err(QueryError::UnknownOperator(other.to_owned())),
                }
            }
        }
        update.validate()?;
        Ok(update)
    }

    /// Saves the current value of every top-level field this update may change (once each,
    /// never `_id`; `None` for an absent field): what undoes it.
    pub(crate) fn save_fields(&self, doc: &Document) -> Vec<(Name, Option<Value>)> {
        let paths = self.set.iter().map(|(p, _)| p).chain(self.unset.iter()).chain(self.inc.iter().map(|(p, _)| p));
        let mut saved: Vec<(Name, Option<Value>)> =
            Vec::with_capacity(self.set.len() + self.unset.len() + self.inc.len());
        for path in paths {
            let top = top_level_name(path);
            if &*top == "_id" || saved.iter().any(|(name, _)| *name == top) {
                continue;
            }
            let value = doc.get_shared(&top).cloned();
            saved.push((top, value));
        }
        saved
    }

    /// Applies the update to a document. Deterministic; parts that do not fit the
    /// document (a path through a non-object, `$inc` of a non-number, `_id`) are skipped.
    pub fn apply_to(&self, doc: &mut Document) {
        let touches_id = |path: &str| path == "_id" || path.starts_with("_id.");
        for (path, value) in &self.set {
            if !touches_id(path) {
                set_path_shared(doc, path, value.clone());
            }
        }
        for path in &self.unset {
            if !touches_id(path) {
                unset_path_shared(doc, path);
            }
        }
        for (path, amount) in &self.inc {
            if touches_id(path) {
                continue;
            }
            let next = match (get_path_shared(doc, path), amount) {
                (None, Value::Int(_) | Value::Float(_)) => amount.clone(),
                (Some(Value::Int(a)), Value::Int(b)) => match a.checked_add(*b) {
                    Some(sum) => Value::Int(sum),
                    None => Value::Float(*a as f64 + *b as f64),
                },
                (Some(Value::Int(a)), Value::Float(b)) => Value::Float(*a as f64 + b),
                (Some(Value::Float(a)), Value::Int(b)) => Value::Float(a + *b as f64),
                (Some(Value::Float(a)), Value::Float(b)) => Value::Float(a + b),
                _ => continue,
            };
            set_path_shared(doc, path, next);
        }
    }
}

/// Sort direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    /// Smallest first.
    Asc,
    /// Largest first.
    Desc,
}

/// A `find` query: filter, sort, skip, limit.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Query {
    /// Which documents.
    pub filter: Filter,
    /// Sort keys, most significant first; ties fall back to `_id`.
    pub sort: Vec<(String, Direction)>,
    /// Documents to skip after sorting.
    pub skip: usize,
    /// The most documents to return.
    pub limit: Option<usize>,
}

impl Query {
    /// A query with this filter.
    pub fn new(filter: Filter) -> Self {
        Self { filter, ..Self::default() }
    }

    /// Adds a sort key (builder style).
    pub fn sort(mut self, path: &str, direction: Direction) -> Self {
        self.sort.push((path.to_owned(), direction));
        self
    }

    /// Sets skip (builder style).
    pub fn skip(mut self, skip: usize) -> Self {
        self.skip = skip;
        self
    }

    /// Sets limit (builder style).
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Orders two documents by this query's sort keys, then by `_id`. Missing fields sort as null.
    pub fn compare(&self, a: &Document, b: &Document) -> Ordering {
        for (path, direction) in &self.sort {
            let left = get_path(a, path).unwrap_or(&Value::Null);
            let right = get_path(b, path).unwrap_or(&Value::Null);
            let order = left.cmp(right);
            if order != Ordering::Equal {
                return if *direction == Direction::Asc { order } else { order.reverse() };
            }
        }
        a.get("_id").cmp(&b.get("_id"))
    }

    /// A document's sort key: its sort fields (missing: null), then its `_id`.
    pub(crate) fn sort_key<'a>(&self, doc: &'a Document) -> (Vec<&'a Value>, Option<&'a Value>) {
        let fields = self.sort.iter().map(|(path, _)| get_path(doc, path).unwrap_or(&Value::Null)).collect();
        (fields, doc.get("_id"))
    }

    /// Orders two sort keys as [`Query::compare`] orders their documents.
    pub(crate) fn compare_keys(
        &self,
        (a, a_id): &(Vec<&Value>, Option<&Value>),
        (b, b_id): &(Vec<&Value>, Option<&Value>),
    ) -> Ordering {
        for ((left, right), (_, direction)) in a.iter().zip(b).zip(&self.sort) {
            let order = left.cmp(right);
            if order != Ordering::Equal {
                return if *direction == Direction::Asc { order } else { order.reverse() };
            }
        }
        a_id.cmp(b_id)
    }
}
