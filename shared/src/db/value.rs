//! JSON-like values with a total order, so they can be sorted and indexed.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A document: field name to value. `_id` holds the document id (a string).
pub type Document = BTreeMap<Arc<str>, Value>;

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
    /// A UTF-8 string (shared, so documents clone cheaply).
    Str(#[serde(deserialize_with = "shared_str")] Arc<str>),
    /// An ordered list.
    Array(Vec<Value>),
    /// A nested object.
    Object(#[serde(deserialize_with = "document")] Document),
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
            3 => Value::Object(BTreeMap::new()),
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
                Value::Object(fields.iter().map(|(k, v)| (k.as_str().into(), Value::from_json(v))).collect())
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

/// A map key or string decoded straight into an `Arc<str>` (serde's own impl allocates twice).
struct SharedStr(Arc<str>);

impl<'de> Deserialize<'de> for SharedStr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = SharedStr;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<SharedStr, E> {
                Ok(SharedStr(text.into()))
            }
        }
        deserializer.deserialize_str(Visit)
    }
}

fn shared_str<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Arc<str>, D::Error> {
    SharedStr::deserialize(deserializer).map(|s| s.0)
}

/// Decodes a document with single-allocation keys.
pub(crate) fn document<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Document, D::Error> {
    struct Visit;
    impl<'de> serde::de::Visitor<'de> for Visit {
        type Value = Document;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a document")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Document, A::Error> {
            let mut doc = Document::new();
            while let Some((SharedStr(key), value)) = map.next_entry::<SharedStr, Value>()? {
                doc.insert(key, value);
            }
            Ok(doc)
        }
    }
    deserializer.deserialize_map(Visit)
}

/// Decodes a shared document.
pub(crate) fn shared_document<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Arc<Document>, D::Error> {
    document(deserializer).map(Arc::new)
}

fn cmp_int_float(int: i64, float: f64) -> Ordering {
    // Exact for |int| <= 2^53; beyond that the float grid is coarser than the ints anyway.
    (int as f64).total_cmp(&float).then_with(|| if float.is_nan() { Ordering::Less } else { Ordering::Equal })
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

/// Writes a dotted path, creating intermediate objects. Returns false (and changes
/// nothing) when an intermediate value exists and is not an object.
pub fn set_path(doc: &mut Document, path: &str, value: Value) -> bool {
    match path.split_once('.') {
        None => {
            match doc.get_mut(path) {
                Some(slot) => *slot = value,
                None => {
                    doc.insert(path.into(), value);
                }
            }
            true
        }
        Some((first, rest)) => {
            let slot = doc.entry(first.into()).or_insert_with(|| Value::Object(BTreeMap::new()));
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

    #[test]
    fn numbers_compare_across_int_and_float() {
        assert_eq!(Value::Int(2), Value::Float(2.0));
        assert!(Value::Int(2) < Value::Float(2.5));
        assert!(Value::Float(-1.5) < Value::Int(-1));
        assert!(Value::Null < Value::Int(i64::MIN));
        assert!(Value::Int(i64::MAX) < Value::from(""));
        assert!(Value::from("zzz") < Value::Object(BTreeMap::new()));
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
