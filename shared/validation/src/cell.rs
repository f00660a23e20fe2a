//! The cells the parsers hand to the checker: CSV text, or a JSON value. A leaf: the parsers, the
//! checker, the type casts and the patterns all read cells, and none of them is imported back.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};

/// One cell as a parser sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Cell<'a> {
    /// The column is absent from the file (already reported once): skip.
    Skip,
    /// No value: a JSON key that is absent or null.
    Missing,
    /// CSV text (missing if it is one of `missingValues`).
    Text(Text<'a>),
    /// A JSON value.
    Json(&'a JsonCell<'a>),
}

impl<'a> Cell<'a> {
    pub(crate) fn raw(&self) -> Cow<'a, str> {
        match *self {
            Cell::Text(t) => Cow::Borrowed(t.str()),
            Cell::Json(j) => j.text(),
            Cell::Skip | Cell::Missing => Cow::Borrowed(""),
        }
    }
}

/// A CSV cell's text. Its bytes are what most checks read; the `&str` is
/// there for the few that need characters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Text<'a>(pub(crate) &'a str);

impl<'a> Text<'a> {
    #[inline(always)]
    pub(crate) fn bytes(&self) -> &'a [u8] {
        self.0.as_bytes()
    }

    #[inline(always)]
    pub(crate) fn str(&self) -> &'a str {
        self.0
    }
}

/// One JSON value as a cell.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum JsonCell<'a> {
    Null,
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
    Str(Cow<'a, str>),
    /// An array or object.
    Complex(serde_json::Value),
}

impl<'a> JsonCell<'a> {
    /// The value as text: a string as itself, anything else as JSON.
    pub(crate) fn text(&self) -> Cow<'a, str> {
        match self {
            JsonCell::Null => Cow::Borrowed("null"),
            JsonCell::Bool(b) => Cow::Owned(b.to_string()),
            JsonCell::I64(v) => Cow::Owned(v.to_string()),
            JsonCell::U64(v) => Cow::Owned(v.to_string()),
            JsonCell::F64(v) => Cow::Owned(
                serde_json::Number::from_f64(*v).map_or_else(|| v.to_string(), |n| n.to_string()),
            ),
            JsonCell::Str(Cow::Borrowed(s)) => Cow::Borrowed(s),
            JsonCell::Str(Cow::Owned(s)) => Cow::Owned(s.clone()),
            JsonCell::Complex(v) => Cow::Owned(v.to_string()),
        }
    }
}

struct CellVisitor;

impl<'de> Visitor<'de> for CellVisitor {
    type Value = JsonCell<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(JsonCell::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(JsonCell::I64(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(JsonCell::U64(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(JsonCell::F64(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(JsonCell::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(JsonCell::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(JsonCell::Str(Cow::Owned(v)))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(JsonCell::Null)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(JsonCell::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        serde_json::Value::deserialize(SeqAccessDeserializer::new(seq)).map(JsonCell::Complex)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        serde_json::Value::deserialize(MapAccessDeserializer::new(map)).map(JsonCell::Complex)
    }
}

impl<'de> Deserialize<'de> for JsonCell<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CellVisitor)
    }
}
