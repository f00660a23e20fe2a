//! The built-in transform's rules: a batch's files, cleaned, as one Parquet file. A backend's job
//! runner reads the batch's manifest, opens its files and puts the output where it goes (the local
//! backend's: `choreo_local::transform`); what is done to the data is here, synchronous, and the
//! same whoever runs it.
//!
//! A [`Batch`] is compiled from a [`Manifest`] — the batch's files, oldest first, with the dataset's
//! Table Schema and `personal_data` columns — and the dataset's configuration. [`Batch::run`] streams
//! each file row by row ([`read`]: the dataset's format, CSV dialect and compression; CSV columns
//! found by the header's names, or by position without one; JSON Lines by key). Each row is:
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
//! missing value is null) and `_file_id`, for the job runner to put at [`output_key`]:
//! `dataset=<name>/ingest_date=<YYYY-MM-DD>/<batch_id>.parquet`, from a temporary file so readers
//! never see half of it. Running it twice on the same day writes the same object. Rows come out in
//! the order their key was last seen (arrival order without a primary key).
//!
//! Memory is bounded whatever the batch's size. Rows are streamed to the Parquet writer
//! [`ARROW_BATCH`] at a time, in row groups of at most [`ROW_GROUP`] rows and [`ROW_GROUP_BYTES`].
//! With a primary key the batch is read twice: the first pass checks every row and gives each kept
//! row's key to a key index (which spills sorted runs to a scratch directory past
//! [`KEY_INDEX_BYTES`]), which answers which rows a later one replaces; the second pass writes the
//! others. Every object is read through the validator's decompression guard ([`Decoded`], default
//! [`Limits`]): a decompression bomb fails the run with its reason instead of filling memory.
//!
//! The modules, in the order a row meets them:
//!
//! - [`read`] — the rows of one file, by the dataset's format, dialect and compression (and the
//!   CSV and JSON helpers the local crawler shares);
//! - `rules` — the rules compiled from the schema: checks, masked fields, the key and its encoding;
//! - `pass` — the passes: check each row, index its key or mask and write it;
//! - `keyindex` — the deduplication index that spills sorted runs and merges them;
//! - `write` — the Parquet writer and its typed columns.
//!
//! [`Casts`]: choreo_validation::Casts
//! [`Decoded`]: choreo_validation::Decoded
//! [`Limits`]: choreo_validation::Limits

mod keyindex;
mod pass;
pub mod read;
mod rules;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
mod write;

pub use keyindex::KEY_INDEX_BYTES;
pub use rules::mask;
pub use write::{ARROW_BATCH, ROW_GROUP, ROW_GROUP_BYTES};

use choreo_domain::config::{DatasetConfig, SchemaSource};
use choreo_domain::{Manifest, ManifestFile};
use choreo_validation::{SchemaCheck, TableSchema};
use rules::Rules;
use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};
use std::path::Path;

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
    /// The object written in the curated bucket (set by the job runner, once it is there).
    pub key: String,
}

/// The object the built-in transform writes for a batch, today: Hive-style partitions, so that a
/// reader of the curated bucket (Athena, Spark, duckdb, pyarrow) sees `dataset` and `ingest_date`
/// as columns.
pub fn output_key(dataset: &str, batch_id: &str) -> String {
    let day = choreo_domain::clock::now().format("%Y-%m-%d");
    format!("dataset={dataset}/ingest_date={day}/{batch_id}.parquet")
}

/// A batch ready to run: its files, its dataset's configuration, and its rules compiled.
pub struct Batch {
    rules: Rules,
    dataset: DatasetConfig,
    files: Vec<ManifestFile>,
}

impl Batch {
    /// The batch of `manifest`, whose dataset is configured as `dataset`, masking personal data
    /// with `mask_salt`. Fails, saying why, when the rules cannot be compiled: no usable schema, a
    /// `personal_data` column that is not a field or no salt for one, a field named `_file_id`.
    pub fn new(
        manifest: &Manifest,
        dataset: &DatasetConfig,
        mask_salt: &str,
    ) -> Result<Batch, String> {
        let schema = schema_of(manifest, dataset)?;
        Ok(Batch {
            rules: Rules::new(&schema, &manifest.personal_data, mask_salt)?,
            dataset: dataset.clone(),
            files: manifest.files.clone(),
        })
    }

    /// Transforms the batch into Parquet in `out`. `open(n, file)` gives the stored bytes
    /// (compressed as stored) of the manifest's `n`th file: the version its pin names. It is called
    /// once per file and pass (twice with a primary key); a file whose rows differ between the
    /// passes fails the run. The key index spills to `scratch` past `key_index_bytes`
    /// ([`KEY_INDEX_BYTES`] unless measuring), in files without a name. Returns `out`, ended, and
    /// what was done (its `key` empty), or why the run failed.
    pub fn run<W: Write + Send>(
        &self,
        mut open: impl FnMut(usize, &ManifestFile) -> io::Result<Box<dyn Read + Send>>,
        scratch: &Path,
        key_index_bytes: usize,
        out: W,
    ) -> Result<(W, BuiltinSummary), String> {
        pass::transform(
            &self.rules,
            &self.dataset,
            &self.files,
            &mut open,
            out,
            scratch,
            key_index_bytes,
        )
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(schema: Option<serde_json::Value>) -> Manifest {
        serde_json::from_value(serde_json::json!({
            "batch_id": "b-1", "dataset": "d", "schema": schema,
            "files": [{"file_id": "f-0", "bucket": "in", "key": "d/1.csv"}],
        }))
        .unwrap()
    }

    fn dataset(schema: serde_json::Value) -> DatasetConfig {
        serde_json::from_value(serde_json::json!({
            "name": "d", "match": {"prefix": "d/"}, "format": "csv", "schema": schema,
        }))
        .unwrap()
    }

    /// The rows a batch of one file, `text`, writes, run through the public face.
    fn written(batch: &Batch, text: &'static [u8]) -> BuiltinSummary {
        let dir = tempfile::tempdir().unwrap();
        let open =
            |_: usize, _: &ManifestFile| -> io::Result<Box<dyn Read + Send>> { Ok(Box::new(text)) };
        let (out, summary) = batch
            .run(open, dir.path(), KEY_INDEX_BYTES, Vec::new())
            .unwrap();
        assert!(out.starts_with(b"PAR1"), "not Parquet");
        summary
    }

    #[test]
    fn a_batch_checks_by_the_manifests_schema_or_else_the_datasets_inline_one() {
        let keyed =
            serde_json::json!({"fields": [{"name": "id", "type": "integer"}], "primaryKey": "id"});
        let plain = serde_json::json!({"fields": [{"name": "id"}]});
        let text = b"id\n1\n01\nx\n";
        // The manifest's schema: `id` is a key of integers, so `x` fails and `01` replaces `1`.
        let b = Batch::new(&manifest(Some(keyed.clone())), &dataset(plain.clone()), "").unwrap();
        let s = written(&b, text);
        assert_eq!((s.read, s.dropped, s.duplicates, s.written), (3, 1, 1, 1));
        // None in the manifest: the dataset's, where `id` is any text and there is no key.
        let b = Batch::new(&manifest(None), &dataset(plain), "").unwrap();
        let s = written(&b, text);
        assert_eq!((s.read, s.dropped, s.duplicates, s.written), (3, 0, 0, 3));
        // Neither: the dataset's schema is a file the job runner does not read.
        let err = Batch::new(&manifest(None), &dataset(serde_json::json!("s.json")), "")
            .err()
            .unwrap();
        assert!(err.contains("no schema"), "{err}");
    }
}
