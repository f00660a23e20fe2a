//! The passes over a batch's files. Each row read is checked; a row that fails is dropped and
//! counted. With a primary key a first pass gives each kept row's key to the [`KeyIndex`], which
//! answers which rows a later one replaces, and the second pass masks and writes the others; without
//! one, the one pass writes every kept row.

use crate::BuiltinSummary;
use crate::keyindex::{KeyIndex, Replaced};
use crate::read::{self, Raw, Rows};
use crate::rules::{Rules, encode_key_part, mask};
use crate::write::{Row, RowWriter};
use choreo_domain::ManifestFile;
use choreo_domain::config::DatasetConfig;
use choreo_validation::Cast;
use std::borrow::Cow;
use std::io::{self, Read, Write};
use std::path::Path;

/// Opens the stored bytes of the manifest's `n`th file (compressed as stored).
pub(crate) type Open<'o> = dyn FnMut(usize, &ManifestFile) -> io::Result<Box<dyn Read + Send>> + 'o;

/// What a pass does with the rows that pass the checks.
enum Sink<'w, W: Write + Send> {
    /// The first pass of a batch with a primary key: each row's key goes to the index.
    Index(KeyIndex),
    /// The (last) pass that writes: every row but those `replaced` goes to the writer.
    Write {
        out: &'w mut RowWriter<W>,
        replaced: &'w Replaced,
    },
}

/// One pass over the batch's files.
struct Pass<'a, W: Write + Send> {
    rules: &'a Rules,
    sink: Sink<'a, W>,
    /// The file being read: its index in the manifest.
    file: u32,
    /// Rows that passed the checks so far: the next such row's ordinal.
    passed: u64,
    summary: BuiltinSummary,
    /// The key being encoded, reused from row to row.
    key: Vec<u8>,
}

impl<'a, W: Write + Send> Pass<'a, W> {
    fn new(rules: &'a Rules, sink: Sink<'a, W>) -> Self {
        Pass {
            rules,
            sink,
            file: 0,
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

    /// Reads the manifest's `n`th file, `f`, row by row.
    fn read_file(
        &mut self,
        dataset: &DatasetConfig,
        open: &mut Open<'_>,
        n: usize,
        f: &ManifestFile,
    ) -> Result<(), String> {
        let name = format!("{}/{}", f.bucket, f.key);
        let bytes = open(n, f).map_err(|e| format!("{name}: {e}"))?;
        self.file = n as u32;
        let rules = self.rules;
        read::read_file(dataset, &rules.names, &name, bytes, self)
    }
}

impl<W: Write + Send> Rows for Pass<'_, W> {
    /// Checks one row: a row that fails the schema is dropped; one that passes is indexed by its
    /// key, or masked and written unless a later row replaces it.
    fn row<'r>(
        &mut self,
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
                    file: self.file,
                    values: owned,
                })
            }
        }
    }

    fn unreadable(&mut self, why: impl FnOnce() -> String) {
        self.summary.read += 1;
        self.drop_row(why);
    }
}

/// The batch, transformed: `files` (in manifest order) read through `open`, checked, masked and
/// deduplicated into Parquet in `out`. With a primary key, a first pass indexes the keys (spilling
/// past `index_bytes` to `tmp`), and the second writes. Returns `out` and what the passes did.
pub(crate) fn transform<W: Write + Send>(
    rules: &Rules,
    dataset: &DatasetConfig,
    files: &[ManifestFile],
    open: &mut Open<'_>,
    out: W,
    tmp: &Path,
    index_bytes: usize,
) -> Result<(W, BuiltinSummary), String> {
    let mut first = None;
    let replaced = if rules.key.is_empty() {
        Replaced::default()
    } else {
        let mut pass: Pass<'_, W> = Pass::new(rules, Sink::Index(KeyIndex::new(tmp, index_bytes)));
        for (n, f) in files.iter().enumerate() {
            pass.read_file(dataset, open, n, f)?;
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
    let file_ids: Vec<String> = files.iter().map(|f| f.file_id.0.clone()).collect();
    let mut writer = RowWriter::new(rules, file_ids, out)?;
    let mut pass = Pass::new(
        rules,
        Sink::Write {
            out: &mut writer,
            replaced: &replaced,
        },
    );
    for (n, f) in files.iter().enumerate() {
        pass.read_file(dataset, open, n, f)?;
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
    let (out, written) = writer.finish()?;
    summary.written = written;
    Ok((out, summary))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KEY_INDEX_BYTES;
    use crate::rules::tests::schema;
    use arrow_array::{BooleanArray, Float64Array, Int64Array, StringArray};
    use arrow_schema::DataType;
    use choreo_domain::FileId;
    use choreo_validation::{SchemaCheck, TableSchema};
    use std::fs::File;

    fn dataset(format: &str, header: bool) -> DatasetConfig {
        serde_json::from_value(serde_json::json!({
            "name": "d", "match": {"prefix": "d/"}, "format": format,
            "csv": {"header": header}, "schema": {"fields": []},
        }))
        .unwrap()
    }

    /// The manifest's entries for files named `names`, in bucket `in`, with ids `f-0`, `f-1`, ...
    fn manifest_files<'n>(names: impl IntoIterator<Item = &'n str>) -> Vec<ManifestFile> {
        names
            .into_iter()
            .enumerate()
            .map(|(n, name)| ManifestFile {
                file_id: FileId(format!("f-{n}")),
                bucket: "in".into(),
                key: name.into(),
                pin: None,
            })
            .collect()
    }

    /// Opens the manifest's `n`th file as `texts[n]`.
    fn opener(
        texts: Vec<Vec<u8>>,
    ) -> impl FnMut(usize, &ManifestFile) -> io::Result<Box<dyn Read + Send>> {
        move |n, _| Ok(Box::new(io::Cursor::new(texts[n].clone())))
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
        let manifest = manifest_files(files.iter().map(|(name, _)| *name));
        let mut open = opener(files.iter().map(|(_, text)| text.to_vec()).collect());
        let out = dir.path().join("out.parquet");
        let mut run_with = |bound: usize| {
            let file = File::create(&out).unwrap();
            let (_, summary) = transform(
                rules,
                dataset,
                &manifest,
                &mut open,
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
            let mut open = opener(vec![crate::testkit::bomb(c, fill, 64)]);
            let out = File::create(dir.path().join("out.parquet")).unwrap();
            let d = dataset(format, true);
            let err = transform(
                &rules,
                &d,
                &manifest_files([name]),
                &mut open,
                out,
                dir.path(),
                1 << 20,
            )
            .err()
            .unwrap_or_else(|| panic!("{name}: the bomb was read to the end"));
            assert!(err.starts_with(&format!("in/{name}: ")), "{err}");
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
    fn a_file_that_cannot_be_opened_fails_the_run_with_its_name() {
        let rules = Rules::new(&schema(), &[], "").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut open = |_: usize, _: &ManifestFile| -> io::Result<Box<dyn Read + Send>> {
            Err(io::Error::new(io::ErrorKind::NotFound, "gone"))
        };
        let err = transform(
            &rules,
            &dataset("csv", true),
            &manifest_files(["x.csv"]),
            &mut open,
            Vec::new(),
            dir.path(),
            KEY_INDEX_BYTES,
        )
        .err()
        .unwrap();
        assert_eq!(err, "in/x.csv: gone");
    }
}
