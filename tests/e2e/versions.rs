//! A re-upload of a key is a new file: the file in flight keeps the bytes that were validated.
//!
//! The race, on both backends: a valid `daily/race.csv` waits in its batch window, then an invalid
//! upload to the same key arrives. Before pins, the invalid version's quarantine deleted the key and
//! the batch's transform failed ("No such file or directory"), failing an unrelated file of the same
//! batch with it.

use crate::aws::choreo;
use crate::helpers::{TestApp, ok};
use choreo::demo;
use choreo_aws::moto::Moto;
use choreo_domain::{FileRecord, FileState};
use choreo_ports::ObjectStore;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

const HEADER: &str = "order_id,order_date,customer,email,amount,currency,quantity\n";
const INVALID: &[u8] = b"order_id,order_date\nnot-a-number,2026-13-45\n";

fn valid(id: u32) -> Vec<u8> {
    format!("{HEADER}{id},2026-11-20,Ada,ada@example.com,3.50,EUR,1\n").into_bytes()
}

async fn read_all(objects: &dyn ObjectStore, bucket: &str, key: &str) -> Vec<u8> {
    let mut body = Vec::new();
    objects
        .get(bucket, key, None)
        .await
        .unwrap_or_else(|e| panic!("{bucket}/{key}: {e}"))
        .read_to_end(&mut body)
        .await
        .unwrap();
    body
}

/// The two records of the raced key, oldest first, and the other file's.
fn split(mut records: Vec<FileRecord>) -> (FileRecord, FileRecord, FileRecord) {
    records.sort_by_key(|r| r.created_at);
    let mut race = records
        .iter()
        .filter(|r| r.key == "daily/race.csv")
        .cloned();
    let (first, second) = (race.next(), race.next());
    let other = records.iter().find(|r| r.key == "daily/other.csv").cloned();
    match (first, second, other) {
        (Some(a), Some(b), Some(o)) => (a, b, o),
        _ => panic!(
            "expected two records of daily/race.csv and one of daily/other.csv: {records:#?}"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reupload_never_changes_or_removes_the_file_in_flight_on_the_local_backend() {
    let mut app = TestApp::new(|c| {
        for d in &mut c.datasets {
            d.batch_window_secs = 4;
        }
    })
    .await;
    app.start();
    app.put("daily/race.csv", &valid(1)).await;
    app.put("daily/other.csv", &valid(2)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let files = app.pipeline.files(None, None).await.unwrap();
        if files
            .iter()
            .any(|r| r.key == "daily/race.csv" && r.state == FileState::Valid)
        {
            break;
        }
        assert!(Instant::now() < deadline, "never VALID: {files:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Within the batch window: the same key, invalid bytes.
    app.put("daily/race.csv", INVALID).await;
    app.settle().await;
    let (first, second, other) = split(app.pipeline.files(None, None).await.unwrap());
    let objects = app.pipeline.backend.ports().objects;
    let buckets = app.pipeline.settings.config.buckets.clone();
    app.stop().await;

    assert_eq!(first.state, FileState::Ingested, "{first:#?}");
    assert_eq!(other.state, FileState::Ingested, "{other:#?}");
    assert_eq!(second.state, FileState::Quarantined, "{second:#?}");
    assert_eq!(first.batch_id, other.batch_id, "one batch carried both");
    // The quarantined upload is kept under its own id with its own bytes and report.
    assert_eq!(
        read_all(&*objects, &buckets.failed, &second.quarantine_key()).await,
        INVALID
    );
    assert!(
        objects
            .head(&buckets.failed, &second.quarantine_report_key())
            .await
            .unwrap()
            .is_some()
    );
    // The curated output holds both valid rows: the transform read the validated bytes.
    let curated = objects.list(&buckets.curated, "").await.unwrap();
    assert_eq!(curated.len(), 1, "{curated:?}");
    let body = read_all(&*objects, &buckets.curated, &curated[0].key).await;
    let mut parquet_file = tempfile::tempfile().unwrap();
    std::io::Write::write_all(&mut parquet_file, &body).unwrap();
    let rows = parquet::file::reader::FileReader::metadata(
        &parquet::file::reader::SerializedFileReader::new(parquet_file).unwrap(),
    )
    .file_metadata()
    .num_rows();
    assert_eq!(rows, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reupload_never_changes_or_removes_the_file_in_flight_on_aws() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let config = demo::write_config(dir.path(), demo::CONFIG_FILE).unwrap();
    // A window long enough for the second upload to arrive while the first waits in it.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("batch_window_secs = 2", "batch_window_secs = 6"),
    )
    .unwrap();
    ok(choreo(&moto, dir.path()).arg("bootstrap").output().unwrap());
    let clients = choreo_aws::AwsClients::emulator(&moto.endpoint).await;
    let upload = |key: &'static str, body: Vec<u8>| {
        let s3 = clients.s3.clone();
        async move {
            s3.put_object()
                .bucket("choreo-input")
                .key(key)
                .body(body.into())
                .send()
                .await
                .unwrap();
        }
    };
    let mut up = choreo(&moto, dir.path())
        .arg("up")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let records = || {
        let out = ok(choreo(&moto, dir.path())
            .args(["files", "list", "--json"])
            .output()
            .unwrap());
        serde_json::from_str::<Vec<FileRecord>>(&out).unwrap()
    };
    upload("daily/race.csv", valid(1)).await;
    upload("daily/other.csv", valid(2)).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !records()
        .iter()
        .any(|r| r.key == "daily/race.csv" && r.state == FileState::Valid)
    {
        assert!(Instant::now() < deadline, "never VALID: {:#?}", records());
        std::thread::sleep(Duration::from_millis(100));
    }
    upload("daily/race.csv", INVALID.to_vec()).await;
    let done = loop {
        let all = records();
        if all.len() == 3 && all.iter().all(|r| r.state.is_terminal()) {
            break all;
        }
        if Instant::now() > deadline {
            let _ = up.kill();
            panic!("not done in time: {all:#?}");
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(up.id().to_string())
        .status();
    let _ = up.wait();
    let (first, second, other) = split(done);
    assert_eq!(first.state, FileState::Ingested, "{first:#?}");
    assert_eq!(other.state, FileState::Ingested, "{other:#?}");
    assert_eq!(second.state, FileState::Quarantined, "{second:#?}");

    let s3 = choreo_aws::s3::S3Store::new(clients.s3.clone());
    assert_eq!(
        read_all(&s3, "choreo-failed", &second.quarantine_key()).await,
        INVALID
    );
    // The first upload is still in the input bucket, by its pin, after the second's quarantine.
    let mut body = Vec::new();
    s3.get("choreo-input", "daily/race.csv", first.pin.as_ref())
        .await
        .unwrap()
        .read_to_end(&mut body)
        .await
        .unwrap();
    assert_eq!(body, valid(1));
    // The job was handed the first upload's pin.
    let batch = first.batch_id.clone().unwrap();
    let manifests = s3.list("choreo-work", "").await.unwrap();
    let manifest = manifests
        .iter()
        .find(|m| m.key.contains(&batch) && m.key.ends_with(".json"))
        .unwrap_or_else(|| panic!("no manifest of {batch}: {manifests:?}"));
    let manifest: choreo_domain::Manifest =
        serde_json::from_slice(&read_all(&s3, "choreo-work", &manifest.key).await).unwrap();
    let entry = manifest
        .files
        .iter()
        .find(|f| f.file_id == first.id)
        .unwrap();
    assert_eq!(entry.pin, first.pin);
    assert!(entry.pin.is_some());
}
