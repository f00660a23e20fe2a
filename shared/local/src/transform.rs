//! The built-in transform: a batch's files, as JSON Lines, in the curated bucket.
//!
//! The job's `--manifest` argument names (`<bucket>/<key>`) a JSON object in the work bucket:
//! `{"batch_id": "...", "dataset": "...", "files": [{"file_id": "...", "bucket": "...", "key": "..."}]}`.
//! Each file is streamed row by row (the dataset's format, CSV dialect and compression), each row
//! becomes one JSON object with the file's id under `"_file_id"`, and the whole batch becomes one
//! object, `<dataset>/ingest_date=<YYYY-MM-DD>/<batch_id>.jsonl`, written from a temporary file so
//! memory stays flat and readers never see half of it. CSV rows are keyed by the header (`col0`,
//! `col1`, ... without one) and their values stay strings; JSON Lines objects keep their text, key
//! order and number formatting. Running it twice on the same day writes the same object.

use crate::objects::LocalObjectStore;
use choreo_domain::Config;
use choreo_domain::config::{DatasetConfig, FileFormat};
use choreo_ports::ObjectStore;
use choreo_validation::Compression;
use serde::Deserialize;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::Path;
use tokio::io::AsyncReadExt;

/// The batch manifest, as the transform launcher writes it.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
pub struct Manifest {
    pub batch_id: String,
    pub dataset: String,
    pub files: Vec<ManifestFile>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
pub struct ManifestFile {
    pub file_id: String,
    pub bucket: String,
    pub key: String,
}

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
    csv::ReaderBuilder::new()
        .delimiter(dataset.csv.delimiter as u8)
        .quote(dataset.csv.quote as u8)
        .has_headers(false)
        .from_reader(input)
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

fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("strings always serialize")
}

/// Streams one file's rows into `out` as JSON Lines. Returns the rows written.
fn write_rows(
    dataset: &DatasetConfig,
    path: &Path,
    key: &str,
    file_id: &str,
    out: &mut impl Write,
) -> Result<u64, String> {
    let file = File::open(path).map_err(|e| format!("{key}: {e}"))?;
    let input = decoded(file, is_gzip(dataset, key));
    let id = json_str(file_id);
    let mut rows = 0u64;
    let io = |e: io::Error| format!("writing output: {e}");
    match dataset.format {
        FileFormat::Csv => {
            let mut reader = csv_reader(dataset, input);
            let mut record = csv::StringRecord::new();
            let mut names: Option<Vec<String>> = None;
            let mut line = String::new();
            loop {
                match reader.read_record(&mut record) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => return Err(format!("{key}: {e}")),
                }
                let names = match &names {
                    Some(n) => n,
                    None => {
                        names = Some(column_names(dataset, &record));
                        if dataset.csv.header {
                            continue;
                        }
                        names.as_ref().expect("just set")
                    }
                };
                line.clear();
                line.push('{');
                for (name, value) in names.iter().zip(record.iter()) {
                    if name == "_file_id" {
                        continue;
                    }
                    line.push_str(&json_str(name));
                    line.push(':');
                    line.push_str(&json_str(value));
                    line.push(',');
                }
                line.push_str("\"_file_id\":");
                line.push_str(&id);
                line.push_str("}\n");
                out.write_all(line.as_bytes()).map_err(io)?;
                rows += 1;
            }
        }
        FileFormat::Jsonl => {
            for (n, text) in input.lines().enumerate() {
                let text = text.map_err(|e| format!("{key}: line {}: {e}", n + 1))?;
                let text = text.trim_start_matches('\u{feff}').trim();
                if text.is_empty() {
                    continue;
                }
                let keys = object_keys(text).map_err(|e| format!("{key}: line {}: {e}", n + 1))?;
                let mut line = if keys.iter().any(|k| k == "_file_id") {
                    let mut value: serde_json::Map<String, serde_json::Value> =
                        serde_json::from_str(text).map_err(|e| format!("{key}: {e}"))?;
                    value.insert("_file_id".into(), serde_json::Value::String(file_id.into()));
                    serde_json::to_string(&value).map_err(|e| format!("{key}: {e}"))?
                } else {
                    // Keep the row's own text: insert the id before the closing brace.
                    let body = &text[..text.len() - 1];
                    let sep = if keys.is_empty() { "" } else { "," };
                    format!("{body}{sep}\"_file_id\":{id}}}")
                };
                line.push('\n');
                out.write_all(line.as_bytes()).map_err(io)?;
                rows += 1;
            }
        }
    }
    Ok(rows)
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
        .get(bucket, key)
        .await
        .map_err(|e| format!("reading the manifest: {e}"))?
        .read_to_end(&mut body)
        .await
        .map_err(|e| format!("reading the manifest {location}: {e}"))?;
    serde_json::from_slice(&body).map_err(|e| format!("manifest {location}: {e}"))
}

/// The object the built-in transform writes for a batch, today.
pub fn output_key(dataset: &str, batch_id: &str) -> String {
    let day = chrono::Utc::now().format("%Y-%m-%d");
    format!("{dataset}/ingest_date={day}/{batch_id}.jsonl")
}

/// Runs the built-in transform with the job run's arguments. Returns the rows written, or why the
/// run failed.
pub async fn run_builtin(
    objects: &LocalObjectStore,
    config: &Config,
    arguments: &BTreeMap<String, String>,
) -> Result<u64, String> {
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
    let mut inputs = Vec::new();
    for f in &manifest.files {
        let path = objects
            .path_of(&f.bucket, &f.key)
            .map_err(|e| e.to_string())?;
        inputs.push((path, f.clone()));
    }
    let tmp = objects.tmp_path("transform");
    let tmp_in_task = tmp.clone();
    let written = tokio::task::spawn_blocking(move || -> Result<u64, String> {
        let file = File::create(&tmp_in_task).map_err(|e| format!("temporary output: {e}"))?;
        let mut out = BufWriter::new(file);
        let mut rows = 0;
        for (path, f) in &inputs {
            rows += write_rows(
                &dataset,
                path,
                &format!("{}/{}", f.bucket, f.key),
                &f.file_id,
                &mut out,
            )?;
        }
        let file = out
            .into_inner()
            .map_err(|e| format!("writing output: {e}"))?;
        file.sync_all()
            .map_err(|e| format!("writing output: {e}"))?;
        Ok(rows)
    })
    .await
    .map_err(|e| format!("transform task failed: {e}"));
    let result = match written.and_then(|r| r) {
        Ok(rows) => {
            let key = output_key(&manifest.dataset, &manifest.batch_id);
            match objects.put_file(&config.buckets.curated, &key, &tmp).await {
                Ok(()) => {
                    tracing::info!(batch_id = %manifest.batch_id, rows, key = %key, "builtin transform wrote the batch");
                    Ok(rows)
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

    #[test]
    fn locations_split_at_the_first_slash() {
        assert_eq!(split_location("work/m/b.json"), Some(("work", "m/b.json")));
        assert_eq!(split_location("work"), None);
        assert_eq!(split_location("/x"), None);
    }
}
