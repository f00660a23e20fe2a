//! The built-in transform's Parquet, read back as its users would: by pyarrow and duckdb (from the
//! workspace's `.venv`, which `scripts/test` fills; without them these tests fail, they do not skip).

use crate::helpers::{TestApp, ok, venv_bin};
use choreo_domain::{FileState, JobArgs, Manifest, ManifestFile};
use choreo_ports::{JobStart, JobStatus};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;

const SALT: &str = "e2e-salt";
const HEADER: &str = "order_id,order_date,customer,email,amount,currency,quantity\n";

/// Reads every Parquet file under `root` with pyarrow (Hive partitions as columns) and with duckdb,
/// and hashes each of `plain` with `SALT` as hashlib does.
const READ_BACK: &str = r#"
import hashlib, json, sys
import duckdb
import pyarrow.dataset as ds

root, salt, plain = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
table = ds.dataset(root, format="parquet", partitioning="hive").to_table()
rows = sorted(table.to_pylist(), key=lambda r: r["order_id"])
duck = duckdb.sql(
    f"SELECT order_id, email, dataset, CAST(ingest_date AS VARCHAR) "
    f"FROM read_parquet('{root}/**/*.parquet', hive_partitioning = true) ORDER BY order_id"
).fetchall()
print(json.dumps({
    "types": {f.name: str(f.type) for f in table.schema},
    "rows": rows,
    "duckdb": [list(r) for r in duck],
    "masks": {p: hashlib.sha256((salt + p).encode()).hexdigest() for p in plain},
}, default=str))
"#;

fn read_back(root: &Path, plain: &[&str]) -> Value {
    let out = std::process::Command::new(venv_bin("python"))
        .args(["-c", READ_BACK])
        .arg(root)
        .arg(SALT)
        .arg(serde_json::to_string(plain).unwrap())
        .output()
        .expect("running .venv/bin/python (scripts/test installs pyarrow and duckdb there)");
    serde_json::from_str(&ok(out)).unwrap()
}

/// One expected row: the masked email is the hash Python computed.
fn row(
    v: &Value,
    (id, day, customer, email, amount, currency, quantity, file): (
        i64,
        &str,
        &str,
        &str,
        f64,
        &str,
        Option<i64>,
        &str,
    ),
) -> Value {
    json!({
        "order_id": id, "order_date": day, "customer": customer,
        "email": v["masks"][email], "amount": amount, "currency": currency,
        "quantity": quantity, "_file_id": file,
        "dataset": "sales_daily", "ingest_date": v["rows"][0]["ingest_date"],
    })
}

fn curated_dir(app: &TestApp) -> std::path::PathBuf {
    let c = &app.pipeline.settings.config;
    c.data_dir.join("buckets").join(&c.buckets.curated)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_writes_deduplicated_masked_parquet() {
    let mut app = TestApp::new(|c| {
        c.transform.mask_salt = SALT.into();
        for d in &mut c.datasets {
            // Long enough for both files to make one batch.
            d.batch_window_secs = 3;
            if d.name == "sales_daily" {
                d.personal_data = vec!["email".into()];
            }
        }
    })
    .await;
    app.start();
    let older = format!(
        "{HEADER}1,2026-11-01,\"  Ada Rossi  \",ada@example.com,10.50,EUR,1\n\
         2,2026-11-01,Bruno Keller,bruno@example.com,20.00,USD,2\n\
         3,2026-11-01,Chiara Neri ,chiara@example.com,5,GBP,\n"
    );
    // Newer: order 2 again, changed.
    let newer = format!(
        "{HEADER}2,2026-11-02,Bruno Keller,bruno.new@example.com,25.00,USD,3\n\
         4,2026-11-02, Dmitri Orlov,dmitri@example.com,7.25,EUR,1\n"
    );
    app.put("daily/2026-11-01.csv", older.as_bytes()).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    app.put("daily/2026-11-02.csv", newer.as_bytes()).await;
    app.settle().await;
    let records = app.by_key().await;
    app.stop().await;

    let (a, b) = (
        &records["daily/2026-11-01.csv"],
        &records["daily/2026-11-02.csv"],
    );
    assert_eq!(
        (a.state, b.state),
        (FileState::Ingested, FileState::Ingested)
    );
    assert_eq!(a.batch_id, b.batch_id, "the two files were not one batch");
    let batch = a.batch_id.clone().unwrap();

    // The manifest told the job everything (the Glue script reads only it): oldest file first.
    let config = &app.pipeline.settings.config;
    let manifest = config
        .data_dir
        .join("buckets")
        .join(&config.buckets.work)
        .join(format!("manifests/sales_daily/{batch}.json"));
    let manifest: Manifest = serde_json::from_slice(&std::fs::read(manifest).unwrap()).unwrap();
    let files: Vec<&str> = manifest.files.iter().map(|f| f.key.as_str()).collect();
    assert_eq!(files, ["daily/2026-11-01.csv", "daily/2026-11-02.csv"]);
    assert_eq!(manifest.personal_data, ["email"]);
    assert_eq!(
        manifest.format,
        Some(choreo_domain::config::FileFormat::Csv)
    );
    assert_eq!(
        manifest.schema.as_ref(),
        app.pipeline.settings.schemas.get("sales_daily")
    );

    let objects = app
        .pipeline
        .backend
        .ports()
        .objects
        .list(&app.pipeline.settings.config.buckets.curated, "")
        .await
        .unwrap();
    let keys: Vec<&str> = objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(
        keys[0].starts_with("dataset=sales_daily/ingest_date=")
            && keys[0].ends_with(&format!("/{batch}.parquet")),
        "{keys:?}"
    );

    let plain = [
        "ada@example.com",
        "bruno@example.com",
        "bruno.new@example.com",
        "chiara@example.com",
        "dmitri@example.com",
    ];
    let v = read_back(&curated_dir(&app), &plain);
    let (f1, f2) = (a.id.as_str(), b.id.as_str());
    let expected = vec![
        row(
            &v,
            (
                1,
                "2026-11-01",
                "Ada Rossi",
                "ada@example.com",
                10.5,
                "EUR",
                Some(1),
                f1,
            ),
        ),
        row(
            &v,
            (
                2,
                "2026-11-02",
                "Bruno Keller",
                "bruno.new@example.com",
                25.0,
                "USD",
                Some(3),
                f2,
            ),
        ),
        row(
            &v,
            (
                3,
                "2026-11-01",
                "Chiara Neri",
                "chiara@example.com",
                5.0,
                "GBP",
                None,
                f1,
            ),
        ),
        row(
            &v,
            (
                4,
                "2026-11-02",
                "Dmitri Orlov",
                "dmitri@example.com",
                7.25,
                "EUR",
                Some(1),
                f2,
            ),
        ),
    ];
    assert_eq!(v["rows"], Value::Array(expected), "{v:#}");
    let day = keys[0]
        .split('/')
        .nth(1)
        .unwrap()
        .trim_start_matches("ingest_date=");
    assert_eq!(
        v["rows"][0]["ingest_date"].as_str().unwrap().get(..10),
        Some(day)
    );
    for email in plain {
        assert_eq!(v["masks"][email].as_str().unwrap().len(), 64);
    }

    let types: BTreeMap<String, String> = serde_json::from_value(v["types"].clone()).unwrap();
    for (column, ty) in [
        ("order_id", "int64"),
        ("order_date", "string"),
        ("customer", "string"),
        ("email", "string"),
        ("amount", "double"),
        ("currency", "string"),
        ("quantity", "int64"),
        ("_file_id", "string"),
    ] {
        assert_eq!(types[column], ty, "{column}: {types:?}");
    }
    // duckdb sees the same rows and both partition columns.
    let duck = v["duckdb"].as_array().unwrap();
    let ids: Vec<i64> = duck.iter().map(|r| r[0].as_i64().unwrap()).collect();
    assert_eq!(ids, [1, 2, 3, 4]);
    assert_eq!(duck[1][1], v["masks"]["bruno.new@example.com"]);
    assert_eq!(duck[0][2], "sales_daily");
    assert_eq!(duck[0][3].as_str(), Some(day));
}

/// The validator quarantines a file with bad rows, so the job is run directly on one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builtin_job_drops_rows_that_fail_the_schema() {
    let app = TestApp::new(|c| c.transform.mask_salt = SALT.into()).await;
    let settings = &app.pipeline.settings;
    let c = &settings.config;
    let bad = format!(
        "{HEADER}1,2026-11-01,Ada Rossi,ada@example.com,10.50,EUR,1\n\
         x,2026-11-01,Not An Id,x@example.com,1,EUR,1\n\
         5,2026-13-45,Bad Date,d@example.com,1,EUR,1\n\
         6,2026-11-01,Negative,n@example.com,-3,EUR,1\n\
         7,2026-11-01,Bad Currency,c@example.com,1,CHF,1\n\
         8,2026-11-01,,nobody@example.com,1,EUR,1\n\
         9,2026-11-01,Short Row\n\
         10,2026-11-01,Zero Quantity,z@example.com,1,EUR,0\n\
         11,2026-11-01,  Kept Too  ,k@example.com, 2 ,USD,\n"
    );
    let ports = app.pipeline.backend.ports();
    ports
        .objects
        .put(&c.buckets.input, "daily/bad.csv", bad.into_bytes())
        .await
        .unwrap();
    let manifest = Manifest {
        batch_id: "b-bad".into(),
        dataset: "sales_daily".into(),
        files: vec![ManifestFile {
            file_id: "f-bad".into(),
            bucket: c.buckets.input.clone(),
            key: "daily/bad.csv".into(),
            pin: None,
        }],
        schema: Some(settings.schemas["sales_daily"].clone()),
        personal_data: vec!["email".into()],
        format: None,
        csv: None,
    };
    ports
        .objects
        .put(
            &c.buckets.work,
            "manifests/b-bad.json",
            serde_json::to_vec(&manifest).unwrap(),
        )
        .await
        .unwrap();
    let args = JobArgs {
        batch_id: "b-bad".into(),
        dataset: "sales_daily".into(),
        manifest: format!("{}/manifests/b-bad.json", c.buckets.work),
    }
    .to_arguments();
    let JobStart::Started { run_id } = ports.jobs.start_run("builtin", &args).await.unwrap() else {
        panic!("the local runner does not throttle");
    };
    assert_eq!(
        ports.jobs.run_status("builtin", &run_id).await.unwrap(),
        JobStatus::Succeeded
    );

    let v = read_back(&curated_dir(&app), &["ada@example.com", "k@example.com"]);
    let expected = vec![
        row(
            &v,
            (
                1,
                "2026-11-01",
                "Ada Rossi",
                "ada@example.com",
                10.5,
                "EUR",
                Some(1),
                "f-bad",
            ),
        ),
        row(
            &v,
            (
                11,
                "2026-11-01",
                "Kept Too",
                "k@example.com",
                2.0,
                "USD",
                None,
                "f-bad",
            ),
        ),
    ];
    assert_eq!(v["rows"], Value::Array(expected), "{v:#}");
}

/// Writes `manifest` to the work bucket, starts the builtin job on it and polls the run once: the
/// local runner runs it there and then, in its `job-worker` child.
async fn run_builtin(app: &TestApp, manifest: &Manifest) -> (String, JobStatus) {
    let c = &app.pipeline.settings.config;
    let jobs = app.pipeline.backend.ports().jobs;
    let key = format!("manifests/{}.json", manifest.batch_id);
    app.pipeline
        .backend
        .ports()
        .objects
        .put(&c.buckets.work, &key, serde_json::to_vec(manifest).unwrap())
        .await
        .unwrap();
    let args = JobArgs {
        batch_id: manifest.batch_id.to_string(),
        dataset: manifest.dataset.clone(),
        manifest: format!("{}/{key}", c.buckets.work),
    }
    .to_arguments();
    let JobStart::Started { run_id } = jobs.start_run("builtin", &args).await.unwrap() else {
        panic!("the local runner does not throttle");
    };
    let status = jobs.run_status("builtin", &run_id).await.unwrap();
    (run_id, status)
}

fn manifest(batch: &str, dataset: &str, files: &[(&str, &str)], schema: Option<&str>) -> Manifest {
    Manifest {
        batch_id: batch.into(),
        dataset: dataset.into(),
        files: files
            .iter()
            .map(|(id, key)| ManifestFile {
                file_id: (*id).into(),
                bucket: "choreo-input".into(),
                key: (*key).into(),
                pin: None,
            })
            .collect(),
        schema: schema.map(|s| {
            <choreo_validation::TableSchema as choreo_validation::SchemaCheck>::from_json(s)
                .unwrap()
        }),
        personal_data: Vec::new(),
        format: None,
        csv: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_runner_runs_the_builtin_transform_in_a_worker() {
    let app = TestApp::new(|_| {}).await;
    let c = app.pipeline.settings.config.clone();
    app.put(
        "daily/1.csv",
        b"\xEF\xBB\xBFid,name\n1,\"a, b\"\n2,\xC3\xA9\n",
    )
    .await;
    let gz = {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b"id,name\n3,c\n").unwrap();
        e.finish().unwrap()
    };
    app.put("daily/2.csv.gz", &gz).await;
    let m = manifest(
        "b-1",
        "sales_daily",
        &[("f-1", "daily/1.csv"), ("f-2", "daily/2.csv.gz")],
        Some(r#"{"fields": [{"name": "id", "type": "integer"}, {"name": "name"}]}"#),
    );
    let (run, status) = run_builtin(&app, &m).await;
    assert_eq!(status, JobStatus::Succeeded);
    let jobs = app.pipeline.backend.ports().jobs;
    assert_eq!(
        jobs.find_run("builtin", "b-1").await.unwrap(),
        Some(run.clone())
    );
    assert_eq!(
        jobs.run_status("builtin", &run).await.unwrap(),
        JobStatus::Succeeded,
        "a finished run is not run again"
    );
    let key = choreo_transform::output_key("sales_daily", "b-1");
    let path = c
        .data_dir
        .join("buckets")
        .join(&c.buckets.curated)
        .join(&key);
    let reader = parquet::file::serialized_reader::SerializedFileReader::new(
        std::fs::File::open(path).unwrap(),
    )
    .unwrap();
    let rows = parquet::file::reader::FileReader::metadata(&reader)
        .file_metadata()
        .num_rows();
    assert_eq!(rows, 3);
    // Neither the output's staging file nor a spilled key run is left behind.
    let tmp = std::fs::read_dir(c.data_dir.join("tmp")).unwrap().count();
    assert_eq!(tmp, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_run_that_cannot_transform_fails_with_the_reason() {
    let app = TestApp::new(|_| {}).await;
    // The demo datasets' schemas are files: a manifest without a schema cannot be transformed.
    let (_, status) = run_builtin(&app, &manifest("b-2", "inventory_monthly", &[], None)).await;
    match status {
        JobStatus::Failed { state, reason } => {
            assert_eq!(state, "FAILED");
            assert!(reason.contains("has no schema"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let m = manifest(
        "b-3",
        "sales_daily",
        &[("f-1", "daily/missing.csv")],
        Some(r#"{"fields": [{"name": "id", "type": "integer"}]}"#),
    );
    match run_builtin(&app, &m).await.1 {
        JobStatus::Failed { reason, .. } => {
            assert!(reason.contains("daily/missing.csv"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

/// A job that needs more memory than `[local] job_memory_mb` fails its batch with that reason; the
/// process, and every stage in it, carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_out_of_memory_fails_its_batch_not_the_pipeline() {
    const LIMIT_MIB: u64 = 16;
    let mut app = TestApp::new(|c| {
        c.transform.mask_salt = SALT.into();
        c.local.job_memory_mb = LIMIT_MIB;
        for d in &mut c.datasets {
            if d.name == "inventory_monthly" {
                d.job = "command:true".into();
            }
        }
    })
    .await;
    app.start();
    // 50,000 orders, 3.5 MB: the transform needs about 30 MiB of heap for them (the bench runs
    // 1 GiB in about 100), more than this test's limit.
    let mut big = String::from(HEADER);
    for id in 1..=50_000 {
        big.push_str(&format!(
            "{id},2026-11-01,Customer {id},a{id}@example.com,1.5,EUR,1\n"
        ));
    }
    app.put("daily/big.csv", big.as_bytes()).await;
    app.settle().await;
    let records = app.by_key().await;
    let r = &records["daily/big.csv"];
    assert_eq!(r.state, FileState::Failed, "{r:#?}");
    let reason = r.reason.clone().unwrap_or_default();
    assert!(
        reason.contains(&format!(
            "the built-in transform ran out of memory (limit {LIMIT_MIB} MiB, [local] job_memory_mb)"
        )),
        "{reason}"
    );
    assert!(reason.contains("memory allocation of"), "{reason}");

    // Every stage is still up: a valid file goes through its dataset's job, an invalid one to
    // quarantine.
    let sample = choreo::demo::samples()
        .into_iter()
        .find(|s| s.key.starts_with("monthly/") && s.defect.is_none())
        .unwrap();
    app.put(&sample.key, &sample.body).await;
    app.put("daily/bad.csv", b"not,the,header\n1,2,3\n").await;
    app.settle().await;
    let records = app.by_key().await;
    app.stop().await;
    assert_eq!(records[&sample.key].state, FileState::Ingested);
    assert_eq!(records["daily/bad.csv"].state, FileState::Quarantined);
}
