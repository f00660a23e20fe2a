//! The Glue job's script (`deploy/glue/choreo_builtin.py`) against the built-in transform: the same
//! batches through the local job runner and through the script's PySpark core on a local Spark
//! (`tests/glue/agreement.py`), their Parquet compared row for row and type for type; then the
//! script's Glue entry point once end to end against moto's S3, with `awsglue` shimmed.
//!
//! Needs `pyspark`, `zstandard`, `pyarrow` and moto in `.venv` (scripts/test installs them) and a
//! Java runtime: without them the test fails, it does not skip.

use crate::helpers::{TestApp, ok, venv_bin};
use choreo_aws::moto::Moto;
use choreo_domain::config::DatasetConfig;
use choreo_domain::{JobArgs, Manifest, ManifestFile};
use choreo_ports::{JobStart, JobStatus};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const SALT: &str = "glue-salt";

/// One batch both transforms run: a dataset (its format, dialect and schema) and its files.
struct Case {
    dataset: Value,
    personal: &'static [&'static str],
    /// (key in the input bucket, bytes), oldest first.
    files: Vec<(&'static str, Vec<u8>)>,
}

fn gzip(b: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn zstd(b: &[u8]) -> Vec<u8> {
    zstd::encode_all(b, 3).unwrap()
}

fn cases() -> Vec<Case> {
    let orders = json!({
        "fields": [
            {"name": "id", "type": "integer", "constraints": {"minimum": 0}},
            {"name": "email", "type": "string", "constraints": {"required": true}},
            {"name": "amount", "type": "number", "constraints": {"maximum": 1000}},
            {"name": "vip", "type": "boolean"},
            {"name": "day", "type": "date"},
            {"name": "at", "type": "datetime"},
            {"name": "currency", "type": "string", "constraints": {"enum": ["EUR", "USD"]}},
            {"name": "code", "type": "string", "constraints": {"pattern": "[A-Z]{2}[0-9]", "maxLength": 3}},
            {"name": "note", "type": "any"}
        ],
        "missingValues": ["", "NA"],
        "primaryKey": "id"
    });
    let header = "\u{feff}id, email ,amount,vip,day,at,currency,code,note\n";
    let first = format!(
        "{header}\
         1, a@x.io ,1.50,true,2026-01-02,2026-01-02T10:00:00Z,EUR,AB1,  spaced  \n\
         2,b@x.io,NA,,,,,,\n\
         x,bad-id@x.io,1,true,2026-01-02,,EUR,AB1,\n\
         3,,1,true,2026-01-02,,EUR,AB1,\n\
         4,neg@x.io,2000,true,2026-01-02,,EUR,AB1,\n\
         5,short@x.io,1\n\
         6,date@x.io,1,true,2026-02-30,,EUR,AB1,\n\
         7,enum@x.io,1,true,2026-01-02,,CHF,AB1,\n\
         8,pat@x.io,1,true,2026-01-02,,EUR,ab1,\n\
         9,\"quoted, comma\",1e2,FALSE,2026-01-02,2026-01-02T10:00:00.250+02:00,USD,CD2,\"multi\nline\"\n\
         10,exp@x.io,.5,0,2026-01-02,2026-01-02 10:00:00,EUR,AB1,\n\
         11,big@x.io,1,1,2026-01-02,,EUR,AB1,\n\
         99999999999999999999,huge@x.io,1,1,2026-01-02,,EUR,AB1,\n\
         12,plus@x.io,+3,True,2026-01-02,2026-01-02T23:59:59-0530,EUR,AB1,\n\
         13,nan@x.io,NaN,true,2026-01-02,,EUR,AB1,\n\
         14,inf@x.io,-inf,true,2026-01-02,,EUR,AB1,\n"
    );
    let second = format!(
        "{header} 01 ,new@x.io,2,false,2026-01-03,,USD,ZZ9,\n\
         +11,again@x.io,3,false,2026-01-03,,USD,ZZ9,\n\
         15,later@x.io,0,false,,,EUR,,\n"
    );
    let third = format!("{header}2,b.new@x.io,7,true,2026-01-04,,EUR,AB1,third\n");

    let events = json!({
        "fields": [
            {"name": "id", "type": "integer"},
            {"name": "name", "type": "string"},
            {"name": "n", "type": "number"},
            {"name": "tags", "type": "any"},
            {"name": "ok", "type": "boolean"},
            {"name": "secret", "type": "number"}
        ],
        "primaryKey": ["id"]
    });
    let ev1 = "{\"id\": 1, \"name\": \"  Ann \", \"n\": 3, \"tags\": [1, 2], \"ok\": true, \"secret\": 1.50}\n\
               \n\
               {\"id\": \" 2 \", \"name\": null}\n\
               {\"id\": 1.5}\n\
               [1]\n\
               not json\n\
               {\"id\": 3, \"n\": 1e400}\n\
               {\"id\": 4, \"n\": 1e2, \"secret\": 1e20, \"tags\": {\"a\": \"b\"}, \"ok\": \"false\"}\n\
               {\"id\": 5, \"secret\": 0.00001, \"extra\": 1, \"tags\": \"text\"}\n\
               {\"id\": 6, \"name\": 7}\n\
               {\"id\": 7, \"ok\": 1}\n\
               {\"id\": 8, \"secret\": 100, \"n\": -0.0}\n\
               {\"id\": 10, \"secret\": 1e-6}\n{\"id\": 11, \"secret\": -1.5e-5}\n{\"id\": 12, \"secret\": 1e15}\n\
               {\"id\": 13, \"secret\": 1e16}\n{\"id\": 14, \"secret\": 123456789012345678.0}\n{\"id\": 15, \"secret\": 1e-300}\n";
    let ev2 = "{\"id\": 2, \"name\": \"replaced\", \"secret\": 2.5}\n{\"id\": 9, \"secret\": 12345678901234567890}\n";

    let people = json!({
        "fields": [
            {"name": "name", "type": "string"},
            {"name": "city", "type": "string"},
            {"name": "age", "type": "integer"}
        ]
    });
    vec![
        Case {
            dataset: json!({"name": "orders", "match": {"prefix": "orders/"}, "format": "csv", "schema": orders}),
            personal: &["email", "amount"],
            files: vec![
                ("orders/a [1] *.csv", first.into_bytes()),
                ("orders/{b}?.csv.gz", gzip(second.as_bytes())),
                ("orders/c ../d.csv.zst", zstd(third.as_bytes())),
            ],
        },
        Case {
            dataset: json!({"name": "events", "match": {"prefix": "events/"}, "format": "jsonl", "schema": events}),
            personal: &["secret"],
            files: vec![
                ("events/one *.jsonl.gz", gzip(ev1.as_bytes())),
                ("events/two[0-9].jsonl.zst", zstd(ev2.as_bytes())),
            ],
        },
        Case {
            dataset: json!({"name": "people", "match": {"prefix": "people/"}, "format": "csv",
                "csv": {"delimiter": ";", "quote": "'", "header": false}, "schema": people}),
            personal: &[],
            files: vec![
                (
                    "people/p?.csv",
                    b"Ann;'Rome; IT';30\n Bob ;Oslo; 41 \nCy;'it''s';x\nDee;Bern\n".to_vec(),
                ),
                ("people/empty.csv", Vec::new()),
            ],
        },
    ]
}

/// Runs `case` through the local job runner; returns its manifest and the Parquet's path.
async fn run_local(app: &TestApp, case: &Case, dir: &Path) -> (Manifest, PathBuf) {
    let c = &app.pipeline.settings.config;
    let name = case.dataset["name"].as_str().unwrap();
    let ports = app.pipeline.backend.ports();
    for (key, body) in &case.files {
        ports
            .objects
            .put(&c.buckets.input, key, body.clone())
            .await
            .unwrap();
    }
    let dataset: DatasetConfig = serde_json::from_value(case.dataset.clone()).unwrap();
    let batch = format!("b-{name}");
    let manifest = Manifest {
        batch_id: batch.as_str().into(),
        dataset: name.into(),
        files: case
            .files
            .iter()
            .enumerate()
            .map(|(n, (key, _))| ManifestFile {
                file_id: format!("f-{name}-{n}").as_str().into(),
                bucket: c.buckets.input.clone(),
                key: (*key).into(),
                pin: None,
            })
            .collect(),
        schema: Some(
            <choreo_validation::TableSchema as choreo_validation::SchemaCheck>::from_json(
                &case.dataset["schema"].to_string(),
            )
            .unwrap(),
        ),
        personal_data: case.personal.iter().map(|p| p.to_string()).collect(),
        // As the transform launcher writes them: the dataset's own.
        format: Some(dataset.format),
        csv: Some(dataset.csv.clone()),
    };
    let key = format!("manifests/{name}/{batch}.json");
    ports
        .objects
        .put(
            &c.buckets.work,
            &key,
            serde_json::to_vec(&manifest).unwrap(),
        )
        .await
        .unwrap();
    let args = JobArgs {
        batch_id: batch.clone(),
        dataset: name.to_string(),
        manifest: format!("{}/{key}", c.buckets.work),
    }
    .to_arguments();
    let JobStart::Started { run_id } = ports.jobs.start_run("builtin", &args).await.unwrap() else {
        panic!("the local runner does not throttle");
    };
    assert_eq!(
        ports.jobs.run_status("builtin", &run_id).await.unwrap(),
        JobStatus::Succeeded,
        "{name}"
    );
    let out = c
        .data_dir
        .join("buckets")
        .join(&c.buckets.curated)
        .join(choreo_transform::output_key(name, &batch));
    assert!(out.exists(), "{}", out.display());
    let copy = dir.join(format!("{name}.rust.parquet"));
    std::fs::copy(&out, &copy).unwrap();
    (manifest, copy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_glue_script_agrees_with_the_builtin_transform() {
    let cases = cases();
    let app = TestApp::new(|c| {
        c.transform.mask_salt = SALT.into();
        for case in &cases {
            c.datasets
                .push(serde_json::from_value(case.dataset.clone()).unwrap());
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut specs = Vec::new();
    for case in &cases {
        let (manifest, rust) = run_local(&app, case, dir.path()).await;
        let name = &manifest.dataset;
        // The same bytes for Spark, by file id: local files stand in for S3 here.
        let mut inputs = BTreeMap::new();
        for (f, (_, body)) in manifest.files.iter().zip(&case.files) {
            let path = dir.path().join(f.file_id.0.as_str());
            std::fs::write(&path, body).unwrap();
            inputs.insert(f.file_id.0.clone(), path);
        }
        specs.push(json!({
            "name": name, "manifest": manifest, "inputs": inputs, "rust": rust,
            "files": case.files.iter().map(|(k, _)| k).collect::<Vec<_>>(),
        }));
    }

    // The Glue job's arguments as AWS gets them: the job's defaults (what bootstrap sets) and a
    // run's own (what the transform launcher passes).
    let config = &app.pipeline.settings.config;
    let mut args: BTreeMap<String, String> = choreo_aws::glue::job_arguments(config)
        .into_iter()
        .collect();
    args.extend(
        JobArgs {
            batch_id: "b-orders".into(),
            dataset: "orders".into(),
            manifest: format!("{}/manifests/orders/b-orders.json", config.buckets.work),
        }
        .to_arguments(),
    );
    let moto = Moto::start();
    let spec = json!({
        "salt": SALT,
        "script": Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/glue/choreo_builtin.py"),
        "cases": specs,
        "moto": {
            "endpoint": moto.endpoint,
            "case": "orders",
            "arguments": args,
            "buckets": {"input": config.buckets.input, "work": config.buckets.work, "curated": config.buckets.curated},
        },
        "out": dir.path(),
    });
    let spec_path = dir.path().join("spec.json");
    std::fs::write(&spec_path, serde_json::to_vec(&spec).unwrap()).unwrap();
    let started = std::time::Instant::now();
    let out = std::process::Command::new(venv_bin("python"))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/glue/agreement.py"))
        .arg(&spec_path)
        .output()
        .expect("running .venv/bin/python (scripts/test installs pyspark there)");
    let report: Value = serde_json::from_str(ok(out).lines().last().unwrap()).unwrap();
    eprintln!("agreement: {report:#} ({:?})", started.elapsed());
    assert_eq!(report["cases"], json!(["orders", "events", "people"]));
    assert_eq!(report["glue_entry_point"], "orders");
}
