//! JSON-like values with a total order, so they can be sorted and indexed.

use std::cmp::Ordering;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use smol_str::SmolStr;

use super::name::Name;

/// A document: field names to values, kept sorted by name. `_id` holds the document id.
///
/// A sorted vector rather than a tree: documents are small, so one allocation holds all
/// of it, cloning is one copy, lookups are a binary search over a few cache lines. It
/// encodes, compares and iterates exactly like a `BTreeMap` of the same fields.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Document(Vec<(Name, Value)>);

impl Document {
    /// An empty document.
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// An empty document with room for `capacity` fields.
    pub fn with_capacity(capacity: usize) -> Self {
        Self(Vec::with_capacity(capacity))
    }

    fn find(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(name, _)| name.as_ref().cmp(key))
    }

    /// Like `find`, trying pointer equality first: names decoded or set through
    /// [`name`](super::name::name) are shared, so this usually compares no strings.
    fn find_shared(&self, key: &Name) -> Result<usize, usize> {
        match self.0.iter().position(|(name, _)| name.same(key)) {
            Some(index) => Ok(index),
            None => self.find(key),
        }
    }

    /// The value of a field named by a shared name (see [`name`](super::name::name)).
    pub fn get_shared(&self, key: &Name) -> Option<&Value> {
        self.find_shared(key).ok().map(|index| &self.0[index].1)
    }

    /// Removes a field named by a shared name; returns its value.
    pub fn remove_shared(&mut self, key: &Name) -> Option<Value> {
        self.find_shared(key).ok().map(|index| self.0.remove(index).1)
    }

    /// The value of a field.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.find(key).ok().map(|index| &self.0[index].1)
    }

    /// A field's shared name and value.
    pub fn get_key_value(&self, key: &str) -> Option<(&Name, &Value)> {
        self.find(key).ok().map(|index| (&self.0[index].0, &self.0[index].1))
    }

    /// The value of a field, mutably.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        self.find(key).ok().map(|index| &mut self.0[index].1)
    }

    /// Whether a field is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.find(key).is_ok()
    }

    /// Sets a field; returns its previous value.
    pub fn insert(&mut self, key: Name, value: Value) -> Option<Value> {
        match self.find_shared(&key) {
            Ok(index) => Some(std::mem::replace(&mut self.0[index].1, value)),
            Err(index) => {
                self.0.insert(index, (key, value));
                None
            }
        }
    }

    /// The value of a field, inserting one made by `make` when absent.
    pub fn get_or_insert_with(&mut self, key: &str, make: impl FnOnce() -> Value) -> &mut Value {
        let index = match self.find(key) {
            Ok(index) => index,
            Err(index) => {
                self.0.insert(index, (super::name::name(key), make()));
                index
            }
        };
        &mut self.0[index].1
    }

    /// Removes a field; returns its value.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        self.find(key).ok().map(|index| self.0.remove(index).1)
    }

    /// Fields in name order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&Name, &Value)> {
        self.0.iter().map(|(name, value)| (name, value))
    }

    /// Field names in order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &Name> {
        self.0.iter().map(|(name, _)| name)
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Builds a document from fields in any order; a repeated name keeps its last value
    /// (as inserting them one by one would).
    pub(crate) fn from_fields(mut fields: Vec<(Name, Value)>) -> Self {
        if !fields.windows(2).all(|pair| pair[0].0 < pair[1].0) {
            // Stable, so among equal names the last one given comes last.
            fields.sort_by(|a, b| a.0.cmp(&b.0));
            let mut unique: Vec<(Name, Value)> = Vec::with_capacity(fields.len());
            for field in fields {
                match unique.last_mut() {
                    Some(last) if last.0 == field.0 => *last = field,
                    _ => unique.push(field),
                }
            }
            fields = unique;
        }
        Self(fields)
    }
}

impl FromIterator<(Name, Value)> for Document {
    fn from_iter<I: IntoIterator<Item = (Name, Value)>>(fields: I) -> Self {
        Self::from_fields(fields.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a Document {
    type Item = (&'a Name, &'a Value);
    type IntoIter = std::iter::Map<std::slice::Iter<'a, (Name, Value)>, fn(&'a (Name, Value)) -> Self::Item>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(name, value)| (name, value))
    }
}

impl Serialize for Document {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name.as_ref(), value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Document {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        document(deserializer)
    }
}

/// A JSON-like value. Numbers are `Int` or `Float`; they compare by numeric value.
///
/// Order across types (as MongoDB does): null < numbers < strings < objects < arrays < booleans.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Value {
    /// JSON null.
    Null,
    /// true or false.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// A UTF-8 string: short ones (up to 23 bytes, such as ids) inline, longer ones shared,
    /// so documents clone cheaply and reading one rarely leaves its cache line.
    Str(SmolStr),
    /// An ordered list.
    Array(Vec<Value>),
    /// A nested object.
    Object(Document),
}

impl Value {
    /// The type class used for ordering and for comparison operators.
    pub fn type_rank(&self) -> u8 {
        match self {
            Value::Null => 0,
            Value::Int(_) | Value::Float(_) => 1,
            Value::Str(_) => 2,
            Value::Object(_) => 3,
            Value::Array(_) => 4,
            Value::Bool(_) => 5,
        }
    }

    /// The smallest value of a type class (for index range scans).
    pub(crate) fn class_min(rank: u8) -> Value {
        match rank {
            0 => Value::Null,
            1 => Value::Float(f64::NEG_INFINITY),
            2 => Value::Str("".into()),
            3 => Value::Object(Document::new()),
            4 => Value::Array(Vec::new()),
            _ => Value::Bool(false),
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(text) => Some(text),
            _ => None,
        }
    }

    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(flag) => Some(*flag),
            _ => None,
        }
    }

    /// The integer, if this is one.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(number) => Some(*number),
            _ => None,
        }
    }

    /// Converts to `serde_json::Value` (non-finite floats become null).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(flag) => serde_json::Value::Bool(*flag),
            Value::Int(number) => serde_json::Value::from(*number),
            Value::Float(number) => {
                serde_json::Number::from_f64(*number).map_or(serde_json::Value::Null, serde_json::Value::Number)
            }
            Value::Str(text) => serde_json::Value::String(text.to_string()),
            Value::Array(items) => serde_json::Value::Array(items.iter().map(Value::to_json).collect()),
            Value::Object(fields) => {
                serde_json::Value::Object(fields.iter().map(|(k, v)| (k.to_string(), v.to_json())).collect())
            }
        }
    }

    /// Converts from `serde_json::Value` (integers that fit i64 stay integers).
    pub fn from_json(json: &serde_json::Value) -> Value {
        match json {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(flag) => Value::Bool(*flag),
            serde_json::Value::Number(number) => match number.as_i64() {
                Some(int) => Value::Int(int),
                None => Value::Float(number.as_f64().unwrap_or(0.0)),
            },
            serde_json::Value::String(text) => Value::Str(text.as_str().into()),
            serde_json::Value::Array(items) => Value::Array(items.iter().map(Value::from_json).collect()),
            serde_json::Value::Object(fields) => {
                Value::Object(fields.iter().map(|(k, v)| (super::name::name(k), Value::from_json(v))).collect())
            }
        }
    }
}

impl From<&str> for Value {
    fn from(text: &str) -> Self {
        Value::Str(text.into())
    }
}
impl From<String> for Value {
    fn from(text: String) -> Self {
        Value::Str(text.into())
    }
}
impl From<i64> for Value {
    fn from(number: i64) -> Self {
        Value::Int(number)
    }
}
impl From<bool> for Value {
    fn from(flag: bool) -> Self {
        Value::Bool(flag)
    }
}
impl From<f64> for Value {
    fn from(number: f64) -> Self {
        Value::Float(number)
    }
}

/// Decodes a document with single-allocation keys, in one vector sized from the length
/// the encoding announces (bounded, so a hostile length cannot reserve much).
pub(crate) fn document<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Document, D::Error> {
    struct Visit;
    impl<'de> serde::de::Visitor<'de> for Visit {
        type Value = Document;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a document")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Document, A::Error> {
            let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
            while let Some((key, value)) = map.next_entry::<Name, Value>()? {
                fields.push((key, value));
            }
            Ok(Document::from_fields(fields))
        }
    }
    deserializer.deserialize_map(Visit)
}

/// Decodes a shared document.
pub(crate) fn shared_document<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Arc<Document>, D::Error> {
    document(deserializer).map(Arc::new)
}

/// Compares an Int with a Float exactly (converting the int to a float rounds above 2^53,
/// which made the order intransitive, and `sort_by` may panic on such an order). Consistent
/// with `f64::total_cmp` among floats: NaNs sit at the ends by sign, and `-0.0` below `0`.
fn cmp_int_float(int: i64, float: f64) -> Ordering {
    const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
    if float.is_nan() {
        return if float.is_sign_negative() { Ordering::Greater } else { Ordering::Less };
    }
    if float >= TWO_POW_63 {
        return Ordering::Less;
    }
    if float < -TWO_POW_63 {
        return Ordering::Greater;
    }
    // |float| < 2^63 here, so its integer part is an exact i64.
    let whole = float.trunc();
    match int.cmp(&(whole as i64)) {
        Ordering::Equal => {
            let fraction = float - whole;
            if fraction > 0.0 {
                Ordering::Less
            } else if fraction < 0.0 || (int == 0 && float.is_sign_negative()) {
                Ordering::Greater
            } else {
                Ordering::Equal
            }
        }
        other => other,
    }
}

impl Ord for Value {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Value::Null, Value::Null) => Ordering::Equal,
            (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
            (Value::Int(a), Value::Int(b)) => a.cmp(b),
            (Value::Float(a), Value::Float(b)) => a.total_cmp(b),
            (Value::Int(a), Value::Float(b)) => cmp_int_float(*a, *b),
            (Value::Float(a), Value::Int(b)) => cmp_int_float(*b, *a).reverse(),
            (Value::Str(a), Value::Str(b)) => a.cmp(b),
            (Value::Array(a), Value::Array(b)) => a.cmp(b),
            (Value::Object(a), Value::Object(b)) => a.cmp(b),
            _ => self.type_rank().cmp(&other.type_rank()),
        }
    }
}

impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Value {}

/// Reads a dotted path (`a.b.c`) from a document.
pub fn get_path<'a>(doc: &'a Document, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let first = parts.next()?;
    let mut current = doc.get(first)?;
    for part in parts {
        match current {
            Value::Object(fields) => current = fields.get(part)?,
            _ => return None,
        }
    }
    Some(current)
}

fn is_dotted(path: &str) -> bool {
    path.as_bytes().contains(&b'.')
}

/// [`get_path`] for a path held as a shared name: a plain field is found by pointer.
pub fn get_path_shared<'a>(doc: &'a Document, path: &Name) -> Option<&'a Value> {
    if is_dotted(path) { get_path(doc, path) } else { doc.get_shared(path) }
}

/// [`set_path`] for a path held as a shared name.
pub fn set_path_shared(doc: &mut Document, path: &Name, value: Value) -> bool {
    if is_dotted(path) {
        return set_path(doc, path, value);
    }
    doc.insert(path.clone(), value);
    true
}

/// [`unset_path`] for a path held as a shared name.
pub fn unset_path_shared(doc: &mut Document, path: &Name) -> bool {
    if is_dotted(path) { unset_path(doc, path) } else { doc.remove_shared(path).is_some() }
}

/// The top-level field a path starts in, as a shared name.
pub(crate) fn top_level_name(path: &Name) -> Name {
    match path.split_once('.') {
        None => path.clone(),
        Some((first, _)) => super::name::name(first),
    }
}

/// Writes a dotted path, creating intermediate objects. Returns false (and changes
/// nothing) when an intermediate value exists and is not an object.
pub fn set_path(doc: &mut Document, path: &str, value: Value) -> bool {
    match path.split_once('.') {
        None => {
            match doc.get_mut(path) {
                Some(slot) => *slot = value,
                None => {
                    doc.insert(super::name::name(path), value);
                }
            }
            true
        }
        Some((first, rest)) => {
            let slot = doc.get_or_insert_with(first, || Value::Object(Document::new()));
            match slot {
                Value::Object(fields) => set_path(fields, rest, value),
                _ => false,
            }
        }
    }
}

/// Removes a dotted path. Returns whether something was removed.
pub fn unset_path(doc: &mut Document, path: &str) -> bool {
    match path.split_once('.') {
        None => doc.remove(path).is_some(),
        Some((first, rest)) => match doc.get_mut(first) {
            Some(Value::Object(fields)) => unset_path(fields, rest),
            _ => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Numbers near 2^53 and 2^63, zeros of both signs, NaNs and infinities: every triple is
    /// ordered transitively and consistently (the review's cycle I1 < F < I0 < I1 is gone).
    #[test]
    fn the_order_of_numbers_is_total() {
        let big = 1i64 << 53;
        let mut values = vec![
            Value::Int(big),
            Value::Int(big + 1),
            Value::Int(big - 1),
            Value::Float(big as f64),
            Value::Float((big + 2) as f64),
            Value::Int(i64::MAX),
            Value::Int(i64::MIN),
            Value::Float(i64::MAX as f64),
            Value::Float(i64::MIN as f64),
            Value::Int(0),
            Value::Float(0.0),
            Value::Float(-0.0),
            Value::Float(0.5),
            Value::Float(-0.5),
            Value::Int(-1),
            Value::Float(f64::NAN),
            Value::Float(-f64::NAN),
            Value::Float(f64::INFINITY),
            Value::Float(f64::NEG_INFINITY),
        ];
        for a in &values {
            for b in &values {
                assert_eq!(a.cmp(b), b.cmp(a).reverse(), "{a:?} {b:?}");
                for c in &values {
                    if a <= b && b <= c {
                        assert!(a <= c, "{a:?} <= {b:?} <= {c:?}");
                    }
                }
            }
        }
        values.sort();
        assert!(values.windows(2).all(|pair| pair[0] <= pair[1]));
    }

    #[test]
    fn numbers_compare_across_int_and_float() {
        assert_eq!(Value::Int(2), Value::Float(2.0));
        assert!(Value::Int(2) < Value::Float(2.5));
        assert!(Value::Float(-1.5) < Value::Int(-1));
        assert!(Value::Null < Value::Int(i64::MIN));
        assert!(Value::Int(i64::MAX) < Value::from(""));
        assert!(Value::from("zzz") < Value::Object(Document::new()));
        assert!(Value::Array(vec![]) < Value::Bool(false));
        assert!(Value::class_min(1) <= Value::Int(i64::MIN));
    }

    #[test]
    fn dotted_paths() {
        let mut doc = Document::new();
        assert!(set_path(&mut doc, "a.b", Value::Int(1)));
        assert_eq!(get_path(&doc, "a.b"), Some(&Value::Int(1)));
        assert!(!set_path(&mut doc, "a.b.c", Value::Int(2)));
        assert!(unset_path(&mut doc, "a.b"));
        assert_eq!(get_path(&doc, "a.b"), None);
        assert!(!unset_path(&mut doc, "x.y"));
    }
}
