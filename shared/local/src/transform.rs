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
//! readers never see half of it. Running it twice on the same day writes the same object.
//!
//! Memory: deduplication needs the whole batch, so the kept rows are held until the end (a batch is
//! at most `batch_max_files` files, a few hundred); files are streamed, and rows are written
//! [`ROW_GROUP`] to a row group.

use crate::objects::LocalObjectStore;
use arrow_array::{ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field as ArrowField, Schema as ArrowSchema};
use choreo_domain::config::{DatasetConfig, FileFormat, SchemaSource};
use choreo_domain::{Config, Manifest};
use choreo_ports::ObjectStore;
use choreo_validation::{Cast, Casts, Compression, FieldType, TableSchema};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;
use tokio::io::AsyncReadExt;

/// The column naming each row's file.
const FILE_ID: &str = "_file_id";
/// Rows a Parquet row group holds (and that are turned into Arrow arrays at once).
pub const ROW_GROUP: usize = 64 * 1024;

/// A reader of an object's text, gunzipped if the dataset says the key is compressed.
pub(crate) fn decoded(file: impl Read + Send + 'static, gzip: bool) -> Box<dyn BufRead + Send> {
    if gzip {
        Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(file)))
    } else {
        Box::new(BufReader::new(file))
    }
}

pub(crate) fn is_gzip(dataset: &DatasetConfig, key: &str) -> bool {
    matches!(dataset.compression_for(key), Compression::Gzip)
}

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
#[derive(Debug, Default, Clone, PartialEq, Eq)]
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

/// One part of a primary key, as cast, so that `01` and `1` in an integer field are one key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum KeyPart {
    Null,
    Int(i64),
    /// The bits of a float, -0 as 0.
    Num(u64),
    Bool(bool),
    Text(String),
}

/// A kept row: its file (an index in the manifest) and one value per schema field.
struct Row {
    file: u32,
    values: Vec<Cast<'static>>,
}

/// The batch's rows, compiled once: the checks, the masked fields, the key, and the rows kept so
/// far, deduplicated as they come.
struct BatchRows {
    casts: Casts,
    names: Vec<String>,
    /// Per field: masked (personal data).
    masked: Vec<bool>,
    /// The primary key's field indexes; empty when the schema has none.
    key: Vec<usize>,
    salt: String,
    /// Kept rows in arrival order; a row replaced by a later one of the same key becomes `None`.
    rows: Vec<Option<Row>>,
    /// Primary key → its row's index in `rows`.
    seen: HashMap<Vec<KeyPart>, usize>,
    summary: BuiltinSummary,
}

/// Lowercase hex SHA-256 of the salt followed by the value (what the Glue script's
/// `sha2(concat(salt, value), 256)` gives).
pub fn mask(salt: &str, value: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(value.as_bytes());
    hex::encode(h.finalize())
}

impl BatchRows {
    fn new(schema: &TableSchema, personal: &[String], salt: &str) -> Result<BatchRows, String> {
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
        Ok(BatchRows {
            casts,
            names,
            masked,
            key,
            salt: salt.to_string(),
            rows: Vec::new(),
            seen: HashMap::new(),
            summary: BuiltinSummary::default(),
        })
    }

    /// Notes a dropped row and why.
    fn drop_row(&mut self, why: impl FnOnce() -> String) {
        self.summary.dropped += 1;
        if self.summary.first_drop.is_none() {
            self.summary.first_drop = Some(why());
        }
    }

    /// Checks, masks and keeps one row, whose field `i` is `raw(i)`; a row that fails the schema
    /// is dropped, and one repeating an earlier row's primary key replaces it.
    fn push<'a>(&mut self, file: u32, place: impl Fn() -> String, raw: impl Fn(usize) -> Raw<'a>) {
        self.summary.read += 1;
        let mut values = Vec::with_capacity(self.names.len());
        for i in 0..self.names.len() {
            let r = raw(i);
            let cast = match r {
                Raw::Absent => self.casts.json(i, None),
                Raw::Text(t) => self.casts.text(i, t),
                Raw::Json(v) => self.casts.json(i, Some(v)),
            };
            let cast = match cast {
                Ok(c) => c,
                Err(e) => {
                    return self.drop_row(|| format!("{}: {}", place(), e.message));
                }
            };
            values.push(match cast {
                Cast::Text(t) => Cast::Text(Cow::Owned(t.into_owned())),
                Cast::Null => Cast::Null,
                Cast::Int(v) => Cast::Int(v),
                Cast::Num(v) => Cast::Num(v),
                Cast::Bool(v) => Cast::Bool(v),
            });
        }
        let key: Vec<KeyPart> = self
            .key
            .iter()
            .map(|&i| match &values[i] {
                Cast::Null => KeyPart::Null,
                Cast::Int(v) => KeyPart::Int(*v),
                Cast::Num(v) => KeyPart::Num(if *v == 0.0 { 0 } else { v.to_bits() }),
                Cast::Bool(v) => KeyPart::Bool(*v),
                Cast::Text(t) => KeyPart::Text(t.to_string()),
            })
            .collect();
        // Masked after the key is taken: the hash is one-to-one, so the key is the same either way.
        for (i, v) in values.iter_mut().enumerate() {
            if self.masked[i] && *v != Cast::Null {
                let text = match raw(i) {
                    Raw::Text(t) => t.to_string(),
                    Raw::Json(serde_json::Value::String(s)) => s.trim().to_string(),
                    Raw::Json(other) => other.to_string(),
                    Raw::Absent => continue,
                };
                *v = Cast::Text(Cow::Owned(mask(&self.salt, &text)));
            }
        }
        let row = Row { file, values };
        if !self.key.is_empty() {
            // The last row of a key wins: later files in the manifest are newer.
            if let Some(at) = self.seen.insert(key, self.rows.len()) {
                self.rows[at] = None;
                self.summary.duplicates += 1;
            }
        }
        self.rows.push(Some(row));
    }

    /// One file's rows, streamed from `path` (`key` names it in messages).
    fn read_file(
        &mut self,
        dataset: &DatasetConfig,
        path: &Path,
        key: &str,
        file: u32,
    ) -> Result<(), String> {
        let input = File::open(path).map_err(|e| format!("{key}: {e}"))?;
        let input: Box<dyn BufRead + Send> = match dataset.compression_for(key) {
            Compression::Zstd => Box::new(BufReader::new(
                zstd::stream::read::Decoder::new(input).map_err(|e| format!("{key}: {e}"))?,
            )),
            c => decoded(input, c == Compression::Gzip),
        };
        match dataset.format {
            FileFormat::Csv => self.read_csv(dataset, input, key, file),
            FileFormat::Jsonl => self.read_jsonl(input, key, file),
        }
    }

    fn read_csv(
        &mut self,
        dataset: &DatasetConfig,
        input: Box<dyn BufRead + Send>,
        key: &str,
        file: u32,
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
            if columns.is_none() {
                width = record.len();
                let cols = if dataset.csv.header {
                    let header = column_names(dataset, &record);
                    self.names
                        .iter()
                        .map(|n| header.iter().position(|h| h.trim() == n))
                        .collect()
                } else {
                    (0..self.names.len())
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
            );
        }
        Ok(())
    }

    fn read_jsonl(
        &mut self,
        mut input: Box<dyn BufRead + Send>,
        key: &str,
        file: u32,
    ) -> Result<(), String> {
        let names = self.names.clone();
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
            );
        }
        Ok(())
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

    /// Writes the kept rows to `out` as Parquet, `ROW_GROUP` rows a row group.
    fn write(&mut self, file_ids: &[String], out: File) -> Result<File, String> {
        let err = |e: parquet::errors::ParquetError| format!("writing Parquet: {e}");
        let mut fields: Vec<ArrowField> = (0..self.names.len())
            .map(|i| ArrowField::new(&self.names[i], self.arrow_type(i), true))
            .collect();
        fields.push(ArrowField::new(FILE_ID, DataType::Utf8, false));
        let schema = Arc::new(ArrowSchema::new(fields));
        let props = WriterProperties::builder()
            .set_compression(parquet::basic::Compression::SNAPPY)
            .set_max_row_group_row_count(Some(ROW_GROUP))
            .build();
        let mut writer =
            ArrowWriter::try_new(out, Arc::clone(&schema), Some(props)).map_err(err)?;
        let rows = std::mem::take(&mut self.rows);
        let mut chunk: Vec<Row> = Vec::with_capacity(ROW_GROUP.min(rows.len()));
        let mut rows = rows.into_iter().flatten().peekable();
        while rows.peek().is_some() {
            chunk.clear();
            chunk.extend(rows.by_ref().take(ROW_GROUP));
            self.summary.written += chunk.len() as u64;
            let mut columns: Vec<ArrayRef> = (0..self.names.len())
                .map(|i| column(self.arrow_type(i), chunk.iter().map(|r| &r.values[i])))
                .collect();
            columns.push(Arc::new(StringArray::from_iter_values(
                chunk.iter().map(|r| &file_ids[r.file as usize]),
            )));
            let batch = RecordBatch::try_new(Arc::clone(&schema), columns)
                .map_err(|e| format!("building a record batch: {e}"))?;
            writer.write(&batch).map_err(err)?;
        }
        writer.into_inner().map_err(err)
    }
}

/// One Arrow column of `ty` from the rows' values (which the checks have typed to match).
fn column<'a>(ty: DataType, values: impl Iterator<Item = &'a Cast<'static>>) -> ArrayRef {
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
        .ok_or_else(|| format!("--manifest {location:?} is not <bucket>/<key>"))?;
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

/// Runs the built-in transform with the job run's arguments. Returns what it did, or why the run
/// failed.
pub async fn run_builtin(
    objects: &LocalObjectStore,
    config: &Config,
    arguments: &BTreeMap<String, String>,
) -> Result<BuiltinSummary, String> {
    let location = arguments
        .get("--manifest")
        .ok_or("the builtin transform needs a --manifest argument")?;
    let manifest = read_manifest(objects, location).await?;
    if let Some(b) = arguments.get("--batch_id")
        && *b != manifest.batch_id
    {
        tracing::warn!(argument = %b, manifest = %manifest.batch_id, "the manifest names another batch");
    }
    let dataset = config
        .dataset(&manifest.dataset)
        .ok_or_else(|| format!("unknown dataset {:?}", manifest.dataset))?
        .clone();
    let schema = schema_of(&manifest, &dataset)?;
    let mut batch = BatchRows::new(
        &schema,
        &manifest.personal_data,
        &config.transform.mask_salt,
    )?;
    let mut inputs = Vec::new();
    for f in &manifest.files {
        let path = objects
            .path_of_version(&f.bucket, &f.key, f.pin.as_ref())
            .map_err(|e| e.to_string())?;
        inputs.push((path, format!("{}/{}", f.bucket, f.key)));
    }
    let file_ids: Vec<String> = manifest.files.iter().map(|f| f.file_id.0.clone()).collect();
    let tmp = objects.tmp_path("transform");
    let tmp_in_task = tmp.clone();
    let written = tokio::task::spawn_blocking(move || -> Result<BuiltinSummary, String> {
        for (n, (path, key)) in inputs.iter().enumerate() {
            batch.read_file(&dataset, path, key, n as u32)?;
        }
        let out = File::create(&tmp_in_task).map_err(|e| format!("temporary output: {e}"))?;
        let out = batch.write(&file_ids, out)?;
        out.sync_all().map_err(|e| format!("writing output: {e}"))?;
        Ok(batch.summary)
    })
    .await
    .map_err(|e| format!("transform task failed: {e}"));
    let result = match written.and_then(|r| r) {
        Ok(mut summary) => {
            let key = output_key(&manifest.dataset, &manifest.batch_id);
            match objects.put_file(&config.buckets.curated, &key, &tmp).await {
                Ok(()) => {
                    summary.key = key;
                    Ok(summary)
                }
                Err(e) => Err(format!("writing {}/{key}: {e}", config.buckets.curated)),
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

    /// Runs the batch over `files` (name, text) and reads the Parquet back: the column types, and
    /// each row's values as text (`null` for none).
    fn run(
        batch: &mut BatchRows,
        dataset: &DatasetConfig,
        files: &[(&str, &[u8])],
    ) -> (Vec<(String, DataType)>, Vec<Vec<String>>) {
        use arrow_array::Array;
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let dir = tempfile::tempdir().unwrap();
        let mut ids = Vec::new();
        for (n, (name, text)) in files.iter().enumerate() {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            batch.read_file(dataset, &path, name, n as u32).unwrap();
            ids.push(format!("f-{n}"));
        }
        let out = dir.path().join("out.parquet");
        batch.write(&ids, File::create(&out).unwrap()).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&out).unwrap())
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
        let mut b = BatchRows::new(&schema(), &["email".into()], "salt").unwrap();
        let first = b"\xEF\xBB\xBFid, email ,amount,vip,day\n\
            1, a@x.io ,1.5,true,2026-01-02\n\
            2,b@x.io,NA,,\n\
            x,bad-id@x.io,1,true,2026-01-02\n\
            3,,1,true,2026-01-02\n\
            4,neg@x.io,-1,true,2026-01-02\n\
            5,short@x.io,1\n\
            6,date@x.io,1,true,2026-13-01\n";
        let second = b"id,email,amount,vip,day\n 01 ,new@x.io,2,false,2026-01-03\n7,c@x.io,0,0,\n";
        let (columns, rows) = run(&mut b, &d, &[("1.csv", first), ("2.csv", second)]);
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
        let s = &b.summary;
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
        let mut b = BatchRows::new(&schema, &["name".into()], "s").unwrap();
        let text =
            b"{\"id\": 1, \"tags\": [1, 2], \"n\": 3, \"name\": \"  Ann \", \"extra\": true}\n\n\
            {\"id\": \" 2 \"}\n\
            {\"id\": 1.5}\n\
            [1]\n\
            {\"id\": 1, \"n\": 1e400}\n";
        let (columns, rows) = run(&mut b, &d, &[("e.jsonl", text)]);
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
        assert_eq!((b.summary.read, b.summary.dropped), (5, 3));
    }

    #[test]
    fn zstd_files_are_read() {
        let d = dataset("csv", false);
        let mut b = BatchRows::new(&schema(), &[], "").unwrap();
        let z = zstd::encode_all(&b"9,z@x.io,1,1,2026-01-01\n"[..], 3).unwrap();
        let (_, rows) = run(&mut b, &d, &[("t.csv.zst", &z)]);
        assert_eq!(rows, [["9", "z@x.io", "1", "true", "2026-01-01", "f-0"]]);
    }

    #[test]
    fn headerless_csv_maps_fields_by_position() {
        let d = dataset("csv", false);
        let mut b = BatchRows::new(&schema(), &[], "").unwrap();
        let (_, rows) = run(&mut b, &d, &[("t.csv", b"9,z@x.io,1,1,2026-01-01\n")]);
        assert_eq!(rows, [["9", "z@x.io", "1", "true", "2026-01-01", "f-0"]]);
    }

    #[test]
    fn batches_refuse_what_they_cannot_do() {
        let err = |personal: &[&str], salt: &str| {
            let p: Vec<String> = personal.iter().map(|s| s.to_string()).collect();
            BatchRows::new(&schema(), &p, salt).err().unwrap()
        };
        assert!(err(&["phone"], "s").contains("phone"));
        assert!(err(&["email"], "").contains("mask_salt"));
        let s = TableSchema::from_json(r#"{"fields":[{"name":"_file_id"}]}"#).unwrap();
        assert!(BatchRows::new(&s, &[], "").is_err());
    }

    #[test]
    fn locations_split_at_the_first_slash() {
        assert_eq!(split_location("work/m/b.json"), Some(("work", "m/b.json")));
        assert_eq!(split_location("work"), None);
        assert_eq!(split_location("/x"), None);
    }
}
