//! JSON Lines: one JSON object per non-empty line. Each line is parsed
//! straight into one [`JsonCell`] per schema field (strings borrowed from the
//! line when they have no escapes); keys that are not fields are skipped and
//! reported once per distinct name. The line buffer is reused, and the
//! [`Guard`] underneath bounds its length.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::io::{BufRead, BufReader, Read};

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::cell::{Cell, JsonCell};
use crate::check::Checker;
use crate::reader::{Fatal, Guard};
use crate::report::{Collector, ErrorKind, clip};

/// Distinct unknown keys remembered (and reported) at most, and their total
/// bytes; beyond this they are ignored, so a hostile file cannot grow the set
/// without bound.
const MAX_EXTRA_KEYS: usize = 1000;
const MAX_EXTRA_KEY_BYTES: usize = 64 * 1024;

/// An object key, borrowed when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// Parses one line: `Some(cells)` for an object, `None` for any other value.
struct RowSeed<'s> {
    checker: &'s Checker,
    extras: &'s mut ExtraKeys,
}

/// Unknown keys seen so far, and those first seen in the current row.
#[derive(Default)]
struct ExtraKeys {
    seen: HashSet<String>,
    seen_bytes: usize,
    new: Vec<String>,
    full: bool,
}

type Cells<'de> = Vec<Option<JsonCell<'de>>>;

impl<'de> DeserializeSeed<'de> for RowSeed<'_> {
    type Value = Option<Cells<'de>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RowSeed<'_> {
    type Value = Option<Cells<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut cells: Cells<'de> = (0..self.checker.fields.len()).map(|_| None).collect();
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            match self.checker.field_index(&key) {
                Some(i) => cells[i] = Some(map.next_value::<JsonCell<'de>>()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                    let x = &mut *self.extras;
                    if !x.full && !x.seen.contains(key.as_ref()) {
                        if x.seen.len() >= MAX_EXTRA_KEYS
                            || x.seen_bytes + key.len() > MAX_EXTRA_KEY_BYTES
                        {
                            x.full = true;
                        } else {
                            x.seen_bytes += key.len();
                            x.seen.insert(key.to_string());
                            x.new.push(key.into_owned());
                        }
                    }
                }
            }
        }
        Ok(Some(cells))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

fn json_kind(line: &[u8]) -> &'static str {
    match line.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

/// Validate JSON Lines from `guard`; returns (data rows, bytes).
pub(crate) fn run<R: Read>(
    guard: Guard<R>,
    checker: &mut Checker,
    out: &mut Collector,
) -> (u64, u64) {
    let mut reader = BufReader::with_capacity(64 * 1024, guard);
    let mut line = Vec::new();
    let mut line_no = 0u64;
    let mut rows = 0u64;
    let mut extras = ExtraKeys::default();
    let mut extras_noted = false;
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                let f = Fatal::of(&e)
                    .cloned()
                    .unwrap_or_else(|| Fatal::new(ErrorKind::Io, format!("read error: {e}")));
                out.fatal(f.kind, None, f.message);
                break;
            }
        }
        line_no += 1;
        let mut text = line.as_slice();
        while let [rest @ .., b'\n' | b'\r'] = text {
            text = rest;
        }
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if let Err(e) = std::str::from_utf8(text) {
            let msg = format!(
                "invalid UTF-8 at line {line_no} (byte {} of the line)",
                e.valid_up_to() + 1
            );
            out.fatal(ErrorKind::InvalidUtf8, None, msg);
            break;
        }
        rows += 1;
        let row = rows;
        let mut de = serde_json::Deserializer::from_slice(text);
        let seed = RowSeed {
            checker,
            extras: &mut extras,
        };
        let parsed = seed.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
        let cells = match parsed {
            Err(e) => {
                let shown = String::from_utf8_lossy(text);
                out.push(ErrorKind::BadJson, Some(row), None, Some(&shown), || {
                    format!("line {line_no} is not valid JSON: {e}")
                });
                continue;
            }
            Ok(None) => {
                let shown = String::from_utf8_lossy(text);
                out.push(
                    ErrorKind::NotAnObject,
                    Some(row),
                    None,
                    Some(&shown),
                    || format!("line {line_no} is {}, not a JSON object", json_kind(text)),
                );
                continue;
            }
            Ok(Some(cells)) => cells,
        };
        for key in extras.new.drain(..) {
            out.push(ErrorKind::ExtraColumn, Some(row), Some(&key), None, || {
                format!(
                    "key {:?} (first on line {line_no}) is not a schema field",
                    clip(&key)
                )
            });
        }
        if extras.full && !extras_noted {
            extras_noted = true;
            out.note(format!(
                "too many distinct unknown keys (over {MAX_EXTRA_KEYS} or {MAX_EXTRA_KEY_BYTES} bytes): the rest were not reported"
            ));
        }
        let blank = cells.iter().all(|c| match c {
            None | Some(JsonCell::Null) => true,
            Some(JsonCell::Str(s)) => checker.is_missing(s.as_bytes()),
            Some(_) => false,
        });
        if blank {
            out.push(ErrorKind::BlankRow, Some(row), None, None, || {
                format!("row {row} (line {line_no}) has no values")
            });
            continue;
        }
        checker.check_row(
            row,
            |fi| match &cells[fi] {
                None => Cell::Missing,
                Some(c) => Cell::Json(c),
            },
            out,
        );
    }
    let bytes = reader.get_ref().bytes();
    if bytes == 0 {
        out.fatal(ErrorKind::EmptyFile, None, "empty file".into());
    } else if rows == 0 && !out.has_fatal() {
        out.fatal(
            ErrorKind::EmptyFile,
            None,
            "empty file: no JSON lines".into(),
        );
    }
    (rows, bytes)
}
