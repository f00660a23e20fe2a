//! The built-in transform: a batch's files, cleaned, as one Parquet file in the curated bucket.
//!
//! The job's `--manifest` argument names (`<bucket>/<key>`) a [`Manifest`] in the work bucket: the
//! batch's files, oldest first, with the dataset's Table Schema and `personal_data` columns. Each
//! file is streamed row by row (the dataset's format, CSV dialect and compression; CSV columns found
//! by the header's names, or by position without one; JSON Lines by key). Each row is:
//!
//! 1. trimmed — every string value, before anything else looks at it;
//! 2. checked — with the validator's own casts and constraints ([`Casts`]); a row with a value not
//!    of its field's type, a required value missing, a constraint broken, or (CSV) a field count
//!    unlike the header's is dropped, and counted;
//! 3. masked — a `personal_data` value becomes [`mask`]`(transform.mask_salt, value)`;
//! 4. deduplicated — on the schema's `primaryKey`, as cast (`01` and `1` are one integer key): the
//!    last row of a key wins, files in manifest order, so the newest file's row is the one kept. No
//!    primary key, no deduplication.
//!
//! The rows kept are written as one Parquet file (snappy), typed columns in schema order (integer →
//! Int64, number → Float64, boolean → Boolean, everything else and every masked column → Utf8; a
//! missing value is null) and `_file_id`, to [`output_key`]:
//! `dataset=<name>/ingest_date=<YYYY-MM-DD>/<batch_id>.parquet`, written from a temporary file so
//! readers never see half of it. Running it twice on the same day writes the same object. Rows come
//! out in the order their key was last seen (arrival order without a primary key).
//!
//! Memory is bounded whatever the batch's size. Rows are streamed to the Parquet writer
//! [`ARROW_BATCH`] at a time, in row groups of at most [`ROW_GROUP`] rows and [`ROW_GROUP_BYTES`].
//! With a primary key the batch is read twice: the first pass checks every row and gives each kept
//! row's key to a [`KeyIndex`] (which spills sorted runs to disk past [`KEY_INDEX_BYTES`]), which
//! answers which rows a later one replaces; the second pass writes the others. Every object is read
//! through the validator's decompression guard ([`Decoded`], default [`Limits`]): a decompression
//! bomb fails the run with its reason instead of filling memory.
//!
//! The job runner runs all this in a child process with a memory limit (`jobs.rs`, `worker.rs`).

use crate::keyindex::{KeyIndex, Replaced};
use crate::objects::LocalObjectStore;
use arrow_array::{ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field as ArrowField, Schema as ArrowSchema};
use choreo_domain::config::{DatasetConfig, FileFormat, SchemaSource};
use choreo_domain::{JobArgs, Manifest, ManifestFile};
use choreo_ports::ObjectStore;
use choreo_validation::SchemaCheck;
use choreo_validation::{Cast, Casts, Decoded, FieldType, Limits, TableSchema};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncReadExt;

/// The column naming each row's file.
const FILE_ID: &str = "_file_id";
/// Most rows a Parquet row group holds.
pub const ROW_GROUP: usize = 64 * 1024;
/// Most bytes (encoded) a row group holds: wide rows make smaller groups, so the writer's buffer
/// stays bounded whatever the rows' width.
pub const ROW_GROUP_BYTES: usize = 32 << 20;
/// Rows turned into Arrow arrays at once.
pub const ARROW_BATCH: usize = 8 * 1024;
/// Bytes of primary keys (and their bookkeeping) the key index holds before it spills a sorted run
/// to the data directory's `tmp/`.
pub const KEY_INDEX_BYTES: usize = 32 << 20;

/// A CSV reader with the dataset's dialect that yields the header as a record of its own.
pub(crate) fn csv_reader(
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
pub(crate) fn column_names(dataset: &DatasetConfig, first: &csv::StringRecord) -> Vec<String> {
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
pub(crate) fn object_keys(text: &str) -> Result<Vec<String>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let keys = serde::Deserializer::deserialize_map(&mut de, KeysVisitor)?;
    de.end()?;
    Ok(keys)
}

/// What a run of the built-in transform did, for the job runner's log.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuiltinSummary {
    /// Rows read from the batch's files.
    pub read: u64,
    /// Rows left out for failing the schema.
    pub dropped: u64,
    /// Rows replaced by a later row with the same primary key.
    pub duplicates: u64,
    /// Rows in the output.
    pub written: u64,
    /// Why the first dropped row was dropped, for the log.
    pub first_drop: Option<String>,
    /// Sorted runs of keys the deduplication spilled to disk (0: it fitted in memory).
    #[serde(default)]
    pub key_runs: usize,
    /// The object written in the curated bucket.
    pub key: String,
}

/// A cell as read, before it is checked: strings already trimmed.
enum Raw<'a> {
    /// The column is not in the file (or the key not in the JSON object).
    Absent,
    Text(&'a str),
    Json(&'a serde_json::Value),
}

/// Appends one part of a primary key, as cast (so that `01` and `1` in an integer field are one
/// key), to `out`: a tag byte, then the value; text is length-prefixed, so no two keys encode alike.
fn encode_key_part(out: &mut Vec<u8>, value: &Cast<'_>) {
    match value {
        Cast::Null => out.push(0),
        Cast::Int(v) => {
            out.push(1);
            out.extend_from_slice(&v.to_le_bytes());
        }
        Cast::Num(v) => {
            out.push(2);
            let bits = if *v == 0.0 { 0 } else { v.to_bits() }; // -0 is 0
            out.extend_from_slice(&bits.to_le_bytes());
        }
        Cast::Bool(v) => out.extend_from_slice(&[3, *v as u8]),
        Cast::Text(t) => {
            out.push(4);
            out.extend_from_slice(&(t.len() as u64).to_le_bytes());
            out.extend_from_slice(t.as_bytes());
        }
    }
}

/// A kept row: its file (an index in the manifest) and one value per schema field.
struct Row {
    file: u32,
    values: Vec<Cast<'static>>,
}

/// Lowercase hex SHA-256 of the salt followed by the value (what the Glue script's
/// `sha2(concat(salt, value), 256)` gives).
pub fn mask(salt: &str, value: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(value.as_bytes());
    hex::encode(h.finalize())
}

/// The batch's rules, compiled once: the checks, the masked fields and the key.
struct Rules {
    casts: Casts,
    names: Vec<String>,
    /// Per field: masked (personal data).
    masked: Vec<bool>,
    /// The primary key's field indexes; empty when the schema has none.
    key: Vec<usize>,
    salt: String,
}

impl Rules {
    fn new(schema: &TableSchema, personal: &[String], salt: &str) -> Result<Rules, String> {
        let casts = Casts::new(schema).map_err(|e| format!("bad Table Schema: {e}"))?;
        let names: Vec<String> = schema.fields.iter().map(|f| f.name.clone()).collect();
        if names.iter().any(|n| n == FILE_ID) {
            return Err(format!(
                "the schema has a field {FILE_ID:?}, the column the transform adds"
            ));
        }
        let mut masked = vec![false; names.len()];
        for p in personal {
            let i = casts
                .index(p)
                .ok_or_else(|| format!("personal_data names {p:?}, which is not a field"))?;
            masked[i] = true;
        }
        if masked.contains(&true) && salt.is_empty() {
            return Err("personal_data needs transform.mask_salt".into());
        }
        let key = match &schema.primary_key {
            None => Vec::new(),
            Some(k) => k
                .names()
                .iter()
                .map(|n| casts.index(n).ok_or_else(|| format!("no key field {n:?}")))
                .collect::<Result<_, _>>()?,
        };
        Ok(Rules {
            casts,
            names,
            masked,
            key,
            salt: salt.to_string(),
        })
    }

    /// The Arrow type of field `i`: masked values are text whatever their type.
    fn arrow_type(&self, i: usize) -> DataType {
        if self.masked[i] {
            return DataType::Utf8;
        }
        match self.casts.field_type(i) {
            FieldType::Integer => DataType::Int64,
            FieldType::Number => DataType::Float64,
            FieldType::Boolean => DataType::Boolean,
            _ => DataType::Utf8,
        }
    }
}

/// One input of the batch: where its bytes are, and its `bucket/key` for messages.
pub(crate) struct Input {
    path: PathBuf,
    name: String,
}

/// Where the bytes of the manifest's file `f` are: the version its pin names. The one place the
/// transform finds an input object's bytes.
fn input_of(objects: &LocalObjectStore, f: &ManifestFile) -> Result<Input, String> {
    let path = objects
        .path_of_version(&f.bucket, &f.key, f.pin.as_ref())
        .map_err(|e| e.to_string())?;
    Ok(Input {
        path,
        name: format!("{}/{}", f.bucket, f.key),
    })
}

/// What a pass does with the rows that pass the checks.
enum Sink<'w> {
    /// The first pass of a batch with a primary key: each row's key goes to the index.
    Index(KeyIndex),
    /// The (last) pass that writes: every row but those `replaced` goes to the writer.
    Write {
        out: &'w mut RowWriter,
        replaced: &'w Replaced,
    },
}

/// One pass over the batch's files.
struct Pass<'a> {
    rules: &'a Rules,
    sink: Sink<'a>,
    /// Rows that passed the checks so far: the next such row's ordinal.
    passed: u64,
    summary: BuiltinSummary,
    /// The key being encoded, reused from row to row.
    key: Vec<u8>,
}

impl<'a> Pass<'a> {
    fn new(rules: &'a Rules, sink: Sink<'a>) -> Self {
        Pass {
            rules,
            sink,
            passed: 0,
            summary: BuiltinSummary::default(),
            key: Vec::new(),
        }
    }

    /// Notes a dropped row and why.
    fn drop_row(&mut self, why: impl FnOnce() -> String) {
        self.summary.dropped += 1;
        if self.summary.first_drop.is_none() {
            self.summary.first_drop = Some(why());
        }
    }

    /// Checks one row, whose field `i` is `raw(i)`: a row that fails the schema is dropped; one that
    /// passes is indexed by its key, or masked and written unless a later row replaces it.
    fn push<'r>(
        &mut self,
        file: u32,
        place: impl Fn() -> String,
        raw: impl Fn(usize) -> Raw<'r>,
    ) -> Result<(), String> {
        self.summary.read += 1;
        let rules = self.rules;
        let mut values = Vec::with_capacity(rules.names.len());
        for i in 0..rules.names.len() {
            let cast = match raw(i) {
                Raw::Absent => rules.casts.json(i, None),
                Raw::Text(t) => rules.casts.text(i, t),
                Raw::Json(v) => rules.casts.json(i, Some(v)),
            };
            match cast {
                Ok(c) => values.push(c),
                Err(e) => {
                    self.drop_row(|| format!("{}: {}", place(), e.message));
                    return Ok(());
                }
            }
        }
        let ordinal = self.passed;
        self.passed += 1;
        match &mut self.sink {
            Sink::Index(index) => {
                self.key.clear();
                for &i in &rules.key {
                    encode_key_part(&mut self.key, &values[i]);
                }
                index
                    .push(&self.key, ordinal)
                    .map_err(|e| format!("deduplication index: {e}"))
            }
            Sink::Write { replaced, .. } if replaced.contains(ordinal) => Ok(()),
            Sink::Write { out, .. } => {
                let mut owned: Vec<Cast<'static>> = values
                    .into_iter()
                    .map(|v| match v {
                        Cast::Text(t) => Cast::Text(Cow::Owned(t.into_owned())),
                        Cast::Null => Cast::Null,
                        Cast::Int(v) => Cast::Int(v),
                        Cast::Num(v) => Cast::Num(v),
                        Cast::Bool(v) => Cast::Bool(v),
                    })
                    .collect();
                // Masked after the key is taken: the hash is one-to-one, so the key is the same
                // either way.
                for (i, v) in owned.iter_mut().enumerate() {
                    if rules.masked[i] && *v != Cast::Null {
                        let text = match raw(i) {
                            Raw::Text(t) => t.to_string(),
                            Raw::Json(serde_json::Value::String(s)) => s.trim().to_string(),
                            Raw::Json(other) => other.to_string(),
                            Raw::Absent => continue,
                        };
                        *v = Cast::Text(Cow::Owned(mask(&rules.salt, &text)));
                    }
                }
                out.push(Row {
                    file,
                    values: owned,
                })
            }
        }
    }

    /// One file's rows, streamed from `input`.
    fn read_file(
        &mut self,
        dataset: &DatasetConfig,
        input: &Input,
        file: u32,
    ) -> Result<(), String> {
        let key = input.name.as_str();
        let bytes = File::open(&input.path).map_err(|e| format!("{key}: {e}"))?;
        let compression = dataset.compression_for(key);
        let limits = Limits::default();
        match dataset.format {
            // Lines bounded for CSV too: a record's line is never longer than the record, which the
            // validator bounds by the same limit (the csv crate would buffer any record whole).
            FileFormat::Csv => {
                let text = Box::new(BufReader::new(Decoded::lines(bytes, compression, &limits)));
                self.read_csv(dataset, text, key, file, limits.max_line_bytes)
            }
            FileFormat::Jsonl => {
                let text = Box::new(BufReader::new(Decoded::lines(bytes, compression, &limits)));
                self.read_jsonl(text, key, file)
            }
        }
    }

    fn read_csv(
        &mut self,
        dataset: &DatasetConfig,
        input: Box<dyn BufRead + Send>,
        key: &str,
        file: u32,
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
                    self.summary.read += 1;
                    self.drop_row(|| format!("{key}: {e}"));
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
                    self.rules
                        .names
                        .iter()
                        .map(|n| header.iter().position(|h| h.trim() == n))
                        .collect()
                } else {
                    (0..self.rules.names.len())
                        .map(|i| (i < width).then_some(i))
                        .collect()
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
                self.summary.read += 1;
                self.drop_row(|| format!("{key}: line {line}: {n} fields, the header has {width}"));
                continue;
            }
            let rec = &record;
            self.push(
                file,
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
        &mut self,
        mut input: Box<dyn BufRead + Send>,
        key: &str,
        file: u32,
    ) -> Result<(), String> {
        let names = &self.rules.names;
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
                    self.summary.read += 1;
                    self.drop_row(|| format!("{key}: line {line}: {e}"));
                    continue;
                }
            };
            if text.is_empty() {
                continue;
            }
            let object: serde_json::Map<String, serde_json::Value> =
                match serde_json::from_str(text) {
                    Ok(o) => o,
                    Err(e) => {
                        self.summary.read += 1;
                        self.drop_row(|| format!("{key}: line {line}: {e}"));
                        continue;
                    }
                };
            self.push(
                file,
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
}

/// The Parquet output, a few thousand rows at a time.
struct RowWriter {
    writer: ArrowWriter<File>,
    schema: Arc<ArrowSchema>,
    types: Vec<DataType>,
    file_ids: Vec<String>,
    rows: Vec<Row>,
    written: u64,
}

impl RowWriter {
    fn new(rules: &Rules, file_ids: Vec<String>, out: File) -> Result<RowWriter, String> {
        let types: Vec<DataType> = (0..rules.names.len())
            .map(|i| rules.arrow_type(i))
            .collect();
        let mut fields: Vec<ArrowField> = rules
            .names
            .iter()
            .zip(&types)
            .map(|(n, t)| ArrowField::new(n, t.clone(), true))
            .collect();
        fields.push(ArrowField::new(FILE_ID, DataType::Utf8, false));
        let schema = Arc::new(ArrowSchema::new(fields));
        let props = WriterProperties::builder()
            .set_compression(parquet::basic::Compression::SNAPPY)
            .set_max_row_group_row_count(Some(ROW_GROUP))
            .set_max_row_group_bytes(Some(ROW_GROUP_BYTES))
            .build();
        let writer = ArrowWriter::try_new(out, Arc::clone(&schema), Some(props))
            .map_err(|e| format!("writing Parquet: {e}"))?;
        Ok(RowWriter {
            writer,
            schema,
            types,
            file_ids,
            rows: Vec::with_capacity(ARROW_BATCH),
            written: 0,
        })
    }

    fn push(&mut self, row: Row) -> Result<(), String> {
        self.rows.push(row);
        if self.rows.len() >= ARROW_BATCH {
            self.write_rows()?;
        }
        Ok(())
    }

    /// Hands the rows gathered so far to the Parquet writer, as one record batch.
    fn write_rows(&mut self) -> Result<(), String> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let rows = &self.rows;
        let mut columns: Vec<ArrayRef> = self
            .types
            .iter()
            .enumerate()
            .map(|(i, t)| column(t, rows.iter().map(|r| &r.values[i])))
            .collect();
        columns.push(Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| &self.file_ids[r.file as usize]),
        )));
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), columns)
            .map_err(|e| format!("building a record batch: {e}"))?;
        self.writer
            .write(&batch)
            .map_err(|e| format!("writing Parquet: {e}"))?;
        self.written += rows.len() as u64;
        self.rows.clear();
        Ok(())
    }

    /// Ends the file; returns it and the rows written.
    fn finish(mut self) -> Result<(File, u64), String> {
        self.write_rows()?;
        let file = self
            .writer
            .into_inner()
            .map_err(|e| format!("writing Parquet: {e}"))?;
        Ok((file, self.written))
    }
}

/// One Arrow column of `ty` from the rows' values (which the checks have typed to match).
fn column<'a>(ty: &DataType, values: impl Iterator<Item = &'a Cast<'static>>) -> ArrayRef {
    match ty {
        DataType::Int64 => Arc::new(Int64Array::from_iter(values.map(|v| match v {
            Cast::Int(x) => Some(*x),
            _ => None,
        }))),
        DataType::Float64 => Arc::new(Float64Array::from_iter(values.map(|v| match v {
            Cast::Num(x) => Some(*x),
            Cast::Int(x) => Some(*x as f64),
            _ => None,
        }))),
        DataType::Boolean => Arc::new(BooleanArray::from_iter(values.map(|v| match v {
            Cast::Bool(x) => Some(*x),
            _ => None,
        }))),
        _ => Arc::new(StringArray::from_iter(values.map(|v| match v {
            Cast::Text(t) => Some(t.to_string()),
            Cast::Int(x) => Some(x.to_string()),
            Cast::Num(x) => Some(x.to_string()),
            Cast::Bool(x) => Some(x.to_string()),
            Cast::Null => None,
        }))),
    }
}

/// The batch, transformed: `inputs` (in manifest order, `file_ids` naming them) read, checked,
/// masked and deduplicated into Parquet in `out`. With a primary key, a first pass indexes the keys
/// (spilling past `index_bytes` to `tmp`), and the second writes.
fn transform(
    rules: &Rules,
    dataset: &DatasetConfig,
    inputs: &[Input],
    file_ids: Vec<String>,
    out: File,
    tmp: &Path,
    index_bytes: usize,
) -> Result<(File, BuiltinSummary), String> {
    let mut first = None;
    let replaced = if rules.key.is_empty() {
        Replaced::default()
    } else {
        let mut pass = Pass::new(rules, Sink::Index(KeyIndex::new(tmp, index_bytes)));
        for (n, input) in inputs.iter().enumerate() {
            pass.read_file(dataset, input, n as u32)?;
        }
        let Sink::Index(index) = pass.sink else {
            unreachable!("an index pass")
        };
        let runs = index.runs();
        let replaced = index
            .finish()
            .map_err(|e| format!("deduplication index: {e}"))?;
        first = Some((pass.summary, pass.passed, runs));
        replaced
    };
    let mut writer = RowWriter::new(rules, file_ids, out)?;
    let mut pass = Pass::new(
        rules,
        Sink::Write {
            out: &mut writer,
            replaced: &replaced,
        },
    );
    for (n, input) in inputs.iter().enumerate() {
        pass.read_file(dataset, input, n as u32)?;
    }
    let (mut summary, passed) = (pass.summary, pass.passed);
    if let Some((indexed, indexed_rows, runs)) = first {
        if passed != indexed_rows {
            return Err(format!(
                "the batch's files changed while it was transformed ({indexed_rows} rows, then {passed})"
            ));
        }
        summary = BuiltinSummary {
            key_runs: runs,
            ..indexed
        };
    }
    summary.duplicates = replaced.count;
    let (file, written) = writer.finish()?;
    summary.written = written;
    Ok((file, summary))
}

/// Splits `bucket/key`.
pub(crate) fn split_location(location: &str) -> Option<(&str, &str)> {
    location
        .split_once('/')
        .filter(|(b, k)| !b.is_empty() && !k.is_empty())
}

/// Reads the manifest named by a `bucket/key` location.
pub(crate) async fn read_manifest(
    objects: &LocalObjectStore,
    location: &str,
) -> Result<Manifest, String> {
    let (bucket, key) = split_location(location)
        .ok_or_else(|| format!("{} {location:?} is not <bucket>/<key>", JobArgs::MANIFEST))?;
    let mut body = Vec::new();
    objects
        .get(bucket, key, None)
        .await
        .map_err(|e| format!("reading the manifest: {e}"))?
        .read_to_end(&mut body)
        .await
        .map_err(|e| format!("reading the manifest {location}: {e}"))?;
    serde_json::from_slice(&body).map_err(|e| format!("manifest {location}: {e}"))
}

/// The object the built-in transform writes for a batch, today: Hive-style partitions, so that a
/// reader of the curated bucket (Athena, Spark, duckdb, pyarrow) sees `dataset` and `ingest_date`
/// as columns.
pub fn output_key(dataset: &str, batch_id: &str) -> String {
    let day = chrono::Utc::now().format("%Y-%m-%d");
    format!("dataset={dataset}/ingest_date={day}/{batch_id}.parquet")
}

/// The batch's schema: the manifest's, or (for a manifest written before it carried one) the
/// dataset's inline schema.
fn schema_of(manifest: &Manifest, dataset: &DatasetConfig) -> Result<TableSchema, String> {
    if let Some(s) = &manifest.schema {
        return Ok(s.clone());
    }
    match &dataset.schema {
        SchemaSource::Inline(v) => {
            TableSchema::from_json(&v.to_string()).map_err(|e| format!("bad Table Schema: {e}"))
        }
        SchemaSource::Path(_) => Err(format!(
            "manifest of batch {} has no schema (written by an older launcher?)",
            manifest.batch_id
        )),
    }
}

/// What the built-in transform needs of the configuration: the datasets (the manifest names one),
/// the curated bucket and the mask salt.
#[derive(Clone, Serialize, Deserialize)]
pub struct BuiltinJob {
    pub datasets: Vec<DatasetConfig>,
    pub curated: String,
    pub mask_salt: String,
}

impl fmt::Debug for BuiltinJob {
    // The salt is a secret: never in a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BuiltinJob")
            .field("datasets", &self.datasets.len())
            .field("curated", &self.curated)
            .finish_non_exhaustive()
    }
}

impl BuiltinJob {
    pub fn of(config: &choreo_domain::Config) -> Self {
        BuiltinJob {
            datasets: config.datasets.clone(),
            curated: config.buckets.curated.clone(),
            mask_salt: config.transform.mask_salt.expose().to_string(),
        }
    }
}

/// Runs the built-in transform with the job run's arguments. Returns what it did, or why the run
/// failed.
pub async fn run_builtin(
    objects: &LocalObjectStore,
    job: &BuiltinJob,
    arguments: &BTreeMap<String, String>,
    key_index_bytes: usize,
) -> Result<BuiltinSummary, String> {
    let args = JobArgs::parse(arguments).map_err(|e| format!("the builtin transform: {e}"))?;
    let manifest = read_manifest(objects, &args.manifest).await?;
    if args.batch_id != manifest.batch_id {
        choreo_telemetry::events::emit(crate::events::ManifestBatchMismatch {
            argument: &args.batch_id,
            manifest: &manifest.batch_id,
        });
    }
    let dataset = job
        .datasets
        .iter()
        .find(|d| d.name == manifest.dataset)
        .ok_or_else(|| format!("unknown dataset {:?}", manifest.dataset))?
        .clone();
    let schema = schema_of(&manifest, &dataset)?;
    let rules = Rules::new(&schema, &manifest.personal_data, &job.mask_salt)?;
    let inputs = manifest
        .files
        .iter()
        .map(|f| input_of(objects, f))
        .collect::<Result<Vec<_>, _>>()?;
    let file_ids: Vec<String> = manifest.files.iter().map(|f| f.file_id.0.clone()).collect();
    let tmp = objects.tmp_path("transform");
    let (tmp_in_task, tmp_dir) = (tmp.clone(), objects.tmp_dir().to_path_buf());
    let written = tokio::task::spawn_blocking(move || -> Result<BuiltinSummary, String> {
        let out = File::create(&tmp_in_task).map_err(|e| format!("temporary output: {e}"))?;
        let (out, summary) = transform(
            &rules,
            &dataset,
            &inputs,
            file_ids,
            out,
            &tmp_dir,
            key_index_bytes,
        )?;
        out.sync_all().map_err(|e| format!("writing output: {e}"))?;
        Ok(summary)
    })
    .await
    .map_err(|e| format!("transform task failed: {e}"));
    let result = match written.and_then(|r| r) {
        Ok(mut summary) => {
            let key = output_key(&manifest.dataset, &manifest.batch_id);
            match objects.put_file(&job.curated, &key, &tmp).await {
                Ok(()) => {
                    summary.key = key;
                    Ok(summary)
                }
                Err(e) => Err(format!("writing {}/{key}: {e}", job.curated)),
            }
        }
        Err(e) => Err(e),
    };
    let _ = tokio::fs::remove_file(&tmp).await;
    result
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

    fn dataset(format: &str, header: bool) -> DatasetConfig {
        serde_json::from_value(serde_json::json!({
            "name": "d", "match": {"prefix": "d/"}, "format": format,
            "csv": {"header": header}, "schema": {"fields": []},
        }))
        .unwrap()
    }

    fn schema() -> TableSchema {
        TableSchema::from_json(
            r#"{"fields":[
                {"name":"id","type":"integer"},
                {"name":"email","type":"string","constraints":{"required":true}},
                {"name":"amount","type":"number","constraints":{"minimum":0}},
                {"name":"vip","type":"boolean"},
                {"name":"day","type":"date"}
              ],
              "missingValues":["","NA"],
              "primaryKey":"id"}"#,
        )
        .unwrap()
    }

    /// Runs the batch over `files` (name, text) and reads the Parquet back: the column types, each
    /// row's values as text (`null` for none), and the summary. Runs it twice, the second time with
    /// a key index that spills every key to a run of its own, and checks both write the same rows.
    fn run(
        rules: &Rules,
        dataset: &DatasetConfig,
        files: &[(&str, &[u8])],
    ) -> (Vec<(String, DataType)>, Vec<Vec<String>>, BuiltinSummary) {
        let dir = tempfile::tempdir().unwrap();
        let mut inputs = Vec::new();
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            inputs.push(Input {
                path,
                name: name.to_string(),
            });
        }
        let ids: Vec<String> = (0..files.len()).map(|n| format!("f-{n}")).collect();
        let out = dir.path().join("out.parquet");
        let run_with = |bound: usize| {
            let file = File::create(&out).unwrap();
            let (_, summary) = transform(
                rules,
                dataset,
                &inputs,
                ids.clone(),
                file,
                dir.path(),
                bound,
            )
            .unwrap();
            let (columns, rows) = read_parquet(&out);
            (columns, rows, summary)
        };
        let (columns, rows, summary) = run_with(KEY_INDEX_BYTES);
        assert_eq!(summary.key_runs, 0);
        let (columns_spilled, rows_spilled, spilled) = run_with(1);
        assert_eq!(
            (columns_spilled, rows_spilled),
            (columns.clone(), rows.clone())
        );
        if !rules.key.is_empty() && summary.read > summary.dropped {
            assert!(spilled.key_runs > 0, "{spilled:?}");
        }
        assert_eq!(
            BuiltinSummary {
                key_runs: 0,
                ..spilled
            },
            summary
        );
        (columns, rows, summary)
    }

    /// A Parquet file's column types, and each row's values as text (`null` for none).
    fn read_parquet(out: &Path) -> (Vec<(String, DataType)>, Vec<Vec<String>>) {
        use arrow_array::Array;
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(out).unwrap())
            .unwrap()
            .build()
            .unwrap();
        let mut columns = Vec::new();
        let mut rows = Vec::new();
        for b in reader {
            let b = b.unwrap();
            columns = b
                .schema()
                .fields()
                .iter()
                .map(|f| (f.name().clone(), f.data_type().clone()))
                .collect();
            for r in 0..b.num_rows() {
                rows.push(
                    b.columns()
                        .iter()
                        .map(|c| {
                            if c.is_null(r) {
                                return "null".to_string();
                            }
                            if let Some(a) = c.as_any().downcast_ref::<Int64Array>() {
                                a.value(r).to_string()
                            } else if let Some(a) = c.as_any().downcast_ref::<Float64Array>() {
                                a.value(r).to_string()
                            } else if let Some(a) = c.as_any().downcast_ref::<BooleanArray>() {
                                a.value(r).to_string()
                            } else {
                                c.as_any()
                                    .downcast_ref::<StringArray>()
                                    .unwrap()
                                    .value(r)
                                    .to_string()
                            }
                        })
                        .collect(),
                );
            }
        }
        (columns, rows)
    }

    #[test]
    fn csv_rows_are_trimmed_checked_masked_and_deduplicated() {
        let d = dataset("csv", true);
        let b = Rules::new(&schema(), &["email".into()], "salt").unwrap();
        let first = b"\xEF\xBB\xBFid, email ,amount,vip,day\n\
            1, a@x.io ,1.5,true,2026-01-02\n\
            2,b@x.io,NA,,\n\
            x,bad-id@x.io,1,true,2026-01-02\n\
            3,,1,true,2026-01-02\n\
            4,neg@x.io,-1,true,2026-01-02\n\
            5,short@x.io,1\n\
            6,date@x.io,1,true,2026-13-01\n";
        let second = b"id,email,amount,vip,day\n 01 ,new@x.io,2,false,2026-01-03\n7,c@x.io,0,0,\n";
        let (columns, rows, s) = run(&b, &d, &[("1.csv", first), ("2.csv", second)]);
        assert_eq!(
            columns,
            [
                ("id".to_string(), DataType::Int64),
                ("email".to_string(), DataType::Utf8),
                ("amount".to_string(), DataType::Float64),
                ("vip".to_string(), DataType::Boolean),
                ("day".to_string(), DataType::Utf8),
                ("_file_id".to_string(), DataType::Utf8),
            ]
        );
        let m = |v: &str| mask("salt", v);
        assert_eq!(
            rows,
            [
                vec![
                    "2".into(),
                    m("b@x.io"),
                    "null".into(),
                    "null".into(),
                    "null".into(),
                    "f-0".into()
                ],
                // ` 01 ` is key 1: the second file's row replaces the first's.
                vec![
                    "1".into(),
                    m("new@x.io"),
                    "2".into(),
                    "false".into(),
                    "2026-01-03".into(),
                    "f-1".into()
                ],
                vec![
                    "7".into(),
                    m("c@x.io"),
                    "0".into(),
                    "false".into(),
                    "null".into(),
                    "f-1".into()
                ],
            ]
        );
        assert_eq!(m("a@x.io").len(), 64);
        assert_eq!((s.read, s.dropped, s.duplicates, s.written), (9, 5, 1, 3));
        assert!(
            s.first_drop.as_deref().unwrap().contains("1.csv: line 4"),
            "{s:?}"
        );
    }

    #[test]
    fn json_lines_are_typed_by_the_schema() {
        let d = dataset("jsonl", true);
        let schema = TableSchema::from_json(
            r#"{"fields":[{"name":"id","type":"integer"},{"name":"tags","type":"any"},
                {"name":"n","type":"number"},{"name":"name"}]}"#,
        )
        .unwrap();
        let b = Rules::new(&schema, &["name".into()], "s").unwrap();
        let text =
            b"{\"id\": 1, \"tags\": [1, 2], \"n\": 3, \"name\": \"  Ann \", \"extra\": true}\n\n\
            {\"id\": \" 2 \"}\n\
            {\"id\": 1.5}\n\
            [1]\n\
            {\"id\": 1, \"n\": 1e400}\n";
        let (columns, rows, s) = run(&b, &d, &[("e.jsonl", text)]);
        let types: Vec<DataType> = columns.into_iter().map(|c| c.1).collect();
        assert_eq!(
            types,
            [
                DataType::Int64,
                DataType::Utf8,
                DataType::Float64,
                DataType::Utf8,
                DataType::Utf8
            ]
        );
        // No primary key: both rows with id 1 stay.
        assert_eq!(
            rows,
            [
                vec![
                    "1".to_string(),
                    "[1,2]".into(),
                    "3".into(),
                    mask("s", "Ann"),
                    "f-0".into()
                ],
                vec![
                    "2".to_string(),
                    "null".into(),
                    "null".into(),
                    "null".into(),
                    "f-0".into()
                ],
            ]
        );
        assert_eq!((s.read, s.dropped), (5, 3));
    }

    #[test]
    fn zstd_files_are_read() {
        let d = dataset("csv", false);
        let b = Rules::new(&schema(), &[], "").unwrap();
        let z = zstd::encode_all(&b"9,z@x.io,1,1,2026-01-01\n"[..], 3).unwrap();
        let (_, rows, _) = run(&b, &d, &[("t.csv.zst", &z)]);
        assert_eq!(rows, [["9", "z@x.io", "1", "true", "2026-01-01", "f-0"]]);
    }

    #[test]
    fn decompression_bombs_fail_the_run() {
        use choreo_validation::Compression;
        let rules = Rules::new(&schema(), &[], "").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let long = "line 1 is longer than 1048576 bytes";
        for (format, name, c, fill, why) in [
            // Zeros, no line end: stopped as one overlong line (the csv crate would buffer it all).
            ("csv", "b.csv.gz", Compression::Gzip, 0, long),
            ("csv", "b.csv.zst", Compression::Zstd, 0, long),
            ("jsonl", "b.jsonl.gz", Compression::Gzip, 0, long),
            // Empty lines: stopped by the ratio, once 10 MiB are out.
            (
                "csv",
                "n.csv.zst",
                Compression::Zstd,
                b'\n',
                "decompression bomb",
            ),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, crate::testutil::bomb(c, fill, 64)).unwrap();
            let input = Input {
                path,
                name: name.into(),
            };
            let out = File::create(dir.path().join("out.parquet")).unwrap();
            let d = dataset(format, true);
            let err = transform(
                &rules,
                &d,
                &[input],
                vec!["f".into()],
                out,
                dir.path(),
                1 << 20,
            )
            .err()
            .unwrap_or_else(|| panic!("{name}: the bomb was read to the end"));
            assert!(err.starts_with(&format!("{name}: ")), "{err}");
            assert!(err.contains(why), "{name}: {err}");
        }
    }

    #[test]
    fn headerless_csv_maps_fields_by_position() {
        let d = dataset("csv", false);
        let b = Rules::new(&schema(), &[], "").unwrap();
        let (_, rows, _) = run(&b, &d, &[("t.csv", b"9,z@x.io,1,1,2026-01-01\n")]);
        assert_eq!(rows, [["9", "z@x.io", "1", "true", "2026-01-01", "f-0"]]);
    }

    #[test]
    fn batches_refuse_what_they_cannot_do() {
        let err = |personal: &[&str], salt: &str| {
            let p: Vec<String> = personal.iter().map(|s| s.to_string()).collect();
            Rules::new(&schema(), &p, salt).err().unwrap()
        };
        assert!(err(&["phone"], "s").contains("phone"));
        assert!(err(&["email"], "").contains("mask_salt"));
        let s = TableSchema::from_json(r#"{"fields":[{"name":"_file_id"}]}"#).unwrap();
        assert!(Rules::new(&s, &[], "").is_err());
    }

    #[test]
    fn locations_split_at_the_first_slash() {
        assert_eq!(split_location("work/m/b.json"), Some(("work", "m/b.json")));
        assert_eq!(split_location("work"), None);
        assert_eq!(split_location("/x"), None);
    }
}
