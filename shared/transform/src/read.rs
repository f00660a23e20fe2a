//! Reading a dataset's files: rows by the dataset's format, CSV dialect and compression.
//!
//! Every object is read through the validator's decompression guard ([`Decoded`], default
//! [`Limits`]): a decompression bomb, or a line longer than [`Limits::max_line_bytes`], ends the
//! read with its reason instead of filling memory. Physical lines are bounded for CSV too: a
//! record's line is never longer than the record, which the validator bounds by the same limit (the
//! csv crate would buffer any record whole).
//!
//! A CSV file's columns are found by the header's names, or by position without one
//! ([`column_names`]); a JSON Lines object's fields by key. Each row goes on to a `Rows` as its raw
//! cells (`Raw`, strings trimmed); a row that cannot be read as one (not UTF-8, not a JSON object,
//! a CSV field count unlike the header's) goes on as unreadable, to be counted and dropped.
//!
//! The crawler reads a file's columns with the same dialect: [`csv_reader`], [`column_names`] and
//! [`object_keys`].

use choreo_domain::config::{DatasetConfig, FileFormat};
use choreo_validation::{Decoded, Limits};
use serde::de::{IgnoredAny, MapAccess, Visitor};
use std::fmt;
use std::io::{BufRead, BufReader, Read};

/// A CSV reader with the dataset's dialect that yields the header as a record of its own.
pub fn csv_reader(
    dataset: &DatasetConfig,
    input: Box<dyn BufRead + Send>,
) -> csv::Reader<Box<dyn BufRead + Send>> {
    csv_builder(dataset).from_reader(input)
}

fn csv_builder(dataset: &DatasetConfig) -> csv::ReaderBuilder {
    let mut b = csv::ReaderBuilder::new();
    b.delimiter(dataset.csv.delimiter as u8)
        .quote(dataset.csv.quote as u8)
        .has_headers(false);
    b
}

/// The column names a CSV file declares: its header, or `col0`, `col1`, ... for `width` columns.
pub fn column_names(dataset: &DatasetConfig, first: &csv::StringRecord) -> Vec<String> {
    if dataset.csv.header {
        first
            .iter()
            .enumerate()
            .map(|(i, h)| {
                if i == 0 {
                    h.trim_start_matches('\u{feff}').to_string()
                } else {
                    h.to_string()
                }
            })
            .collect()
    } else {
        (0..first.len()).map(|i| format!("col{i}")).collect()
    }
}

struct KeysVisitor;

impl<'de> Visitor<'de> for KeysVisitor {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
        let mut keys: Vec<String> = Vec::new();
        while let Some(k) = map.next_key::<String>()? {
            map.next_value::<IgnoredAny>()?;
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        Ok(keys)
    }
}

/// The keys of the JSON object `text`, in the order written. Anything but one object is an error.
pub fn object_keys(text: &str) -> Result<Vec<String>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let keys = serde::Deserializer::deserialize_map(&mut de, KeysVisitor)?;
    de.end()?;
    Ok(keys)
}

/// A cell as read, before it is checked: strings already trimmed.
pub(crate) enum Raw<'a> {
    /// The column is not in the file (or the key not in the JSON object).
    Absent,
    Text(&'a str),
    Json(&'a serde_json::Value),
}

/// Where a file's rows go as they are read.
pub(crate) trait Rows {
    /// A row found at `place()` (`<file>: line <n>`, for messages), whose schema field `i` is
    /// `raw(i)`. An error ends the read.
    fn row<'r>(
        &mut self,
        place: impl Fn() -> String,
        raw: impl Fn(usize) -> Raw<'r>,
    ) -> Result<(), String>;

    /// A row that could not be read as one, and why.
    fn unreadable(&mut self, why: impl FnOnce() -> String);
}

/// Streams the rows of the file `name` (`bucket/key`: its compression, when the dataset's is
/// `auto`, is the key's suffix) from its stored `bytes` to `rows`, its columns mapped to the schema
/// fields `names`. An error is the file's, not a row's: the read cannot go on.
pub(crate) fn read_file(
    dataset: &DatasetConfig,
    names: &[String],
    name: &str,
    bytes: impl Read + Send + 'static,
    rows: &mut impl Rows,
) -> Result<(), String> {
    let compression = dataset.compression_for(name);
    let limits = Limits::default();
    let text = Box::new(BufReader::new(Decoded::lines(bytes, compression, &limits)));
    match dataset.format {
        FileFormat::Csv => read_csv(dataset, names, text, name, rows, limits.max_line_bytes),
        FileFormat::Jsonl => read_jsonl(names, text, name, rows),
    }
}

fn read_csv(
    dataset: &DatasetConfig,
    names: &[String],
    input: Box<dyn BufRead + Send>,
    key: &str,
    rows: &mut impl Rows,
    max_record: usize,
) -> Result<(), String> {
    // Flexible: a record of the wrong width is the row's problem, not the file's.
    let mut reader = csv_builder(dataset).flexible(true).from_reader(input);
    let mut record = csv::StringRecord::new();
    // Per schema field: its column in the file, if the file has it.
    let mut columns: Option<Vec<Option<usize>>> = None;
    let mut width = 0;
    loop {
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) if matches!(e.kind(), csv::ErrorKind::Utf8 { .. }) => {
                rows.unreadable(|| format!("{key}: {e}"));
                continue;
            }
            Err(e) => return Err(format!("{key}: {e}")),
        }
        let start = record.position().map_or(0, |p| p.byte());
        if reader.position().byte() - start > max_record as u64 {
            let line = record.position().map_or(0, |p| p.line());
            return Err(format!(
                "{key}: the record at line {line} is longer than {max_record} bytes"
            ));
        }
        if columns.is_none() {
            width = record.len();
            let cols = if dataset.csv.header {
                let header = column_names(dataset, &record);
                names
                    .iter()
                    .map(|n| header.iter().position(|h| h.trim() == n))
                    .collect()
            } else {
                (0..names.len()).map(|i| (i < width).then_some(i)).collect()
            };
            columns = Some(cols);
            if dataset.csv.header {
                continue;
            }
        }
        let cols = columns.as_ref().expect("set above");
        let line = record.position().map_or(0, |p| p.line());
        if record.len() != width {
            let n = record.len();
            rows.unreadable(|| format!("{key}: line {line}: {n} fields, the header has {width}"));
            continue;
        }
        let rec = &record;
        rows.row(
            || format!("{key}: line {line}"),
            |i| match cols[i] {
                Some(c) => Raw::Text(rec.get(c).unwrap_or_default().trim()),
                None => Raw::Absent,
            },
        )?;
    }
    Ok(())
}

fn read_jsonl(
    names: &[String],
    mut input: Box<dyn BufRead + Send>,
    key: &str,
    rows: &mut impl Rows,
) -> Result<(), String> {
    let mut buf = Vec::new();
    let mut line = 0u64;
    loop {
        buf.clear();
        let n = input
            .read_until(b'\n', &mut buf)
            .map_err(|e| format!("{key}: {e}"))?;
        if n == 0 {
            break;
        }
        line += 1;
        let text = match std::str::from_utf8(&buf) {
            Ok(t) => t.trim_start_matches('\u{feff}').trim(),
            Err(e) => {
                rows.unreadable(|| format!("{key}: line {line}: {e}"));
                continue;
            }
        };
        if text.is_empty() {
            continue;
        }
        let object: serde_json::Map<String, serde_json::Value> = match serde_json::from_str(text) {
            Ok(o) => o,
            Err(e) => {
                rows.unreadable(|| format!("{key}: line {line}: {e}"));
                continue;
            }
        };
        rows.row(
            || format!("{key}: line {line}"),
            |i| match object.get(&names[i]) {
                None => Raw::Absent,
                Some(serde_json::Value::String(s)) => Raw::Text(s.trim()),
                Some(v) => Raw::Json(v),
            },
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_keys_keep_their_order() {
        assert_eq!(
            object_keys(r#"{"b":1,"a":{"x":[1,2]},"c":null}"#).unwrap(),
            ["b", "a", "c"]
        );
        assert!(object_keys("[1,2]").is_err());
        assert!(object_keys(r#"{"a":1} {"#).is_err());
    }
}
