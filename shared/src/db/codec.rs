//! The operation decoder. Every replica decodes every operation it integrates, so this is
//! on the hot path of catch-up: it reads the postcard encoding of [`DbOp`] directly, with
//! no serde visitors, sizing each allocation from the lengths the encoding announces
//! (bounded by the bytes left), sharing names (see [`name`](super::name::name)) and
//! refusing values nested deeper than [`MAX_DEPTH`] (a recursive decoder would otherwise
//! let one crafted entry exhaust the stack).
//!
//! It accepts exactly what postcard's own decoder accepts for these types, trailing bytes
//! included (tested against it), except for nesting deeper than [`MAX_DEPTH`], and it reads
//! lengths as 64-bit varints on every platform, so native and wasm32 peers always agree on
//! which payloads are operations.

use std::sync::Arc;

use smol_str::SmolStr;

use super::DbOp;
use super::name::{Name, name};
use super::query::Update;
use super::value::{Document, Value};

/// The deepest nesting of arrays and objects an operation may carry.
pub const MAX_DEPTH: usize = 32;

/// Decodes an operation; `None` if the bytes are not one.
pub(crate) fn decode_op(bytes: &[u8]) -> Option<DbOp> {
    let mut reader = Reader { bytes };
    match reader.varint_u32()? {
        0 => {
            let collection = name(reader.str()?);
            // One spare slot: the view stamps the author into inserted documents.
            let doc = reader.document(0, 1)?;
            Some(DbOp::Insert { collection, doc: Arc::new(doc) })
        }
        1 => {
            let collection = name(reader.str()?);
            let id = SmolStr::new(reader.str()?);
            let set = reader.named_values()?;
            let count = reader.len()?;
            let mut unset = Vec::with_capacity(count.min(reader.bytes.len()));
            for _ in 0..count {
                unset.push(name(reader.str()?));
            }
            let inc = reader.named_values()?;
            Some(DbOp::Update { collection, id, update: Box::new(Update { set, unset, inc }) })
        }
        2 => {
            let collection = name(reader.str()?);
            let id = SmolStr::new(reader.str()?);
            Some(DbOp::Delete { collection, id })
        }
        _ => None,
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.bytes.split_first()?;
        self.bytes = rest;
        Some(first)
    }

    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        if count > self.bytes.len() {
            return None;
        }
        let (taken, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Some(taken)
    }

    /// A LEB128 varint of at most `max_bytes` bytes whose last byte carries no bits beyond
    /// `bits` (postcard's rule).
    fn varint(&mut self, max_bytes: u32, bits: u32) -> Option<u64> {
        let mut out = 0u64;
        for i in 0..max_bytes {
            let byte = self.byte()?;
            out |= u64::from(byte & 0x7F) << (7 * i);
            if byte & 0x80 == 0 {
                let last_byte_max = (1u16 << (bits % 7)) - 1;
                if i == max_bytes - 1 && u16::from(byte) > last_byte_max {
                    return None;
                }
                return Some(out);
            }
        }
        None
    }

    fn varint_u32(&mut self) -> Option<u32> {
        self.varint(5, 32).map(|n| n as u32)
    }

    fn varint_u64(&mut self) -> Option<u64> {
        self.varint(10, 64)
    }

    /// A length; every element takes at least a byte, so longer than what is left is an error.
    fn len(&mut self) -> Option<usize> {
        usize::try_from(self.varint_u64()?).ok().filter(|&len| len <= self.bytes.len())
    }

    fn str(&mut self) -> Option<&'a str> {
        let len = self.len()?;
        std::str::from_utf8(self.take(len)?).ok()
    }

    fn value(&mut self, depth: usize) -> Option<Value> {
        Some(match self.varint_u32()? {
            0 => Value::Null,
            1 => match self.byte()? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                _ => return None,
            },
            2 => {
                let zigzag = self.varint_u64()?;
                Value::Int(((zigzag >> 1) as i64) ^ -((zigzag & 1) as i64))
            }
            3 => {
                let bytes: [u8; 8] = self.take(8)?.try_into().ok()?;
                Value::Float(f64::from_le_bytes(bytes))
            }
            4 => Value::Str(SmolStr::new(self.str()?)),
            5 => {
                if depth >= MAX_DEPTH {
                    return None;
                }
                let count = self.len()?;
                let mut items = Vec::with_capacity(count);
                for _ in 0..count {
                    items.push(self.value(depth + 1)?);
                }
                Value::Array(items)
            }
            6 => {
                if depth >= MAX_DEPTH {
                    return None;
                }
                Value::Object(self.document(depth + 1, 0)?)
            }
            _ => return None,
        })
    }

    fn document(&mut self, depth: usize, spare: usize) -> Option<Document> {
        let count = self.len()?;
        let mut fields = Vec::with_capacity(count + spare);
        for _ in 0..count {
            let key = name(self.str()?);
            fields.push((key, self.value(depth)?));
        }
        Some(Document::from_fields(fields))
    }

    fn named_values(&mut self) -> Option<Vec<(Name, Value)>> {
        let count = self.len()?;
        let mut pairs = Vec::with_capacity(count);
        for _ in 0..count {
            let path = name(self.str()?);
            pairs.push((path, self.value(0)?));
        }
        Some(pairs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            any::<f64>().prop_map(Value::Float),
            ".{0,40}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::vec(("[a-z_.]{0,6}", inner), 0..6)
                    .prop_map(|fields| Value::Object(fields.into_iter().map(|(k, v)| (name(&k), v)).collect())),
            ]
        })
    }

    fn arb_op() -> impl Strategy<Value = DbOp> {
        let pairs = || proptest::collection::vec(("[a-z_.]{0,8}", arb_value()), 0..4);
        prop_oneof![
            ("[a-z]{0,8}", proptest::collection::vec(("[a-z_]{0,8}", arb_value()), 0..8)).prop_map(|(c, fields)| {
                let doc: Document = fields.into_iter().map(|(k, v)| (name(&k), v)).collect();
                DbOp::Insert { collection: c.as_str().into(), doc: Arc::new(doc) }
            }),
            ("[a-z]{0,8}", ".{0,30}", pairs(), proptest::collection::vec("[a-z.]{0,8}", 0..3), pairs()).prop_map(
                |(c, id, set, unset, inc)| {
                    let named = |pairs: Vec<(String, Value)>| pairs.into_iter().map(|(k, v)| (name(&k), v)).collect();
                    let unset = unset.iter().map(|k| name(k)).collect();
                    let update = Update { set: named(set), unset, inc: named(inc) };
                    DbOp::Update { collection: c.as_str().into(), id: id.into(), update: Box::new(update) }
                }
            ),
            ("[a-z]{0,8}", ".{0,30}").prop_map(|(c, id)| DbOp::Delete { collection: c.as_str().into(), id: id.into() }),
        ]
    }

    /// Both decoders agree: the same verdict, and equal operations (compared by encoding,
    /// which is exact even for NaN and for 2 == 2.0).
    fn agree(bytes: &[u8]) -> Result<(), TestCaseError> {
        let ours = decode_op(bytes).map(|op| op.encode());
        let theirs = postcard::from_bytes::<DbOp>(bytes).ok().map(|op| op.encode());
        prop_assert_eq!(ours, theirs);
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn decodes_what_postcard_encodes(op in arb_op()) {
            let bytes = op.encode();
            let decoded = decode_op(&bytes);
            prop_assert!(decoded.is_some());
            prop_assert_eq!(decoded.map(|op| op.encode()), Some(bytes.clone()));
            agree(&bytes)?;
        }

        #[test]
        fn agrees_with_postcard_on_damaged_bytes(
            op in arb_op(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            cut in any::<prop::sample::Index>(),
            trailing in proptest::collection::vec(any::<u8>(), 0..4),
        ) {
            let mut bytes = op.encode();
            for (at, byte) in flips {
                let at = at.index(bytes.len());
                bytes[at] = byte;
            }
            agree(&bytes)?;
            let cut = cut.index(bytes.len() + 1);
            agree(&bytes[..cut])?;
            bytes.extend_from_slice(&trailing);
            agree(&bytes)?;
        }

        #[test]
        fn agrees_with_postcard_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            agree(&bytes)?;
        }
    }

    #[test]
    fn overlong_and_oversized_varints_are_refused_like_postcard() {
        // Delete, collection "a", id with a 10-byte length whose last byte overflows 64 bits.
        let mut bytes = vec![2, 1, b'a'];
        bytes.extend_from_slice(&[0x80; 9]);
        bytes.push(0x02);
        assert!(decode_op(&bytes).is_none());
        assert!(postcard::from_bytes::<DbOp>(&bytes).is_err());
        // A variant index over u32.
        let bytes = [0x80, 0x80, 0x80, 0x80, 0x10];
        assert!(decode_op(&bytes).is_none());
        assert!(postcard::from_bytes::<DbOp>(&bytes).is_err());
    }

    #[test]
    fn deep_nesting_is_refused_without_recursing_further() {
        let mut value = Value::Null;
        for _ in 0..MAX_DEPTH {
            value = Value::Array(vec![value]);
        }
        let doc: Document = [(name("_id"), Value::from("x")), (name("v"), value.clone())].into_iter().collect();
        let op = DbOp::Insert { collection: "c".into(), doc: Arc::new(doc) };
        assert!(decode_op(&op.encode()).is_some(), "{MAX_DEPTH} levels are fine");
        let deeper: Document =
            [(name("_id"), Value::from("x")), (name("v"), Value::Array(vec![value]))].into_iter().collect();
        let op = DbOp::Insert { collection: "c".into(), doc: Arc::new(deeper) };
        assert!(decode_op(&op.encode()).is_none());
        // Far deeper than any stack would survive with a recursive decoder: 1,000,000 levels.
        let mut bytes = vec![0, 1, b'c', 1, 1, b'v'];
        bytes.extend(std::iter::repeat_n([5u8, 1], 1_000_000).flatten());
        bytes.push(0);
        assert!(decode_op(&bytes).is_none());
    }
}
