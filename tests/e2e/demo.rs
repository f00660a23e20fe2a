//! The demo's files through all six stages, in-process.

use crate::helpers::{TestApp, assert_demo_outcome};
use choreo::demo;
use choreo_domain::FileState;
use flate2::read::MultiGzDecoder;
use parquet::file::reader::FileReader;
use parquet::file::serialized_reader::SerializedFileReader;
use std::io::Read;

/// Data rows in a sample file (CSV minus its header; JSON Lines one per line).
fn rows(key: &str, body: &[u8]) -> usize {
    let mut text = String::new();
    if key.ends_with(".gz") {
        MultiGzDecoder::new(body).read_to_string(&mut text).unwrap();
    } else {
        text = String::from_utf8(body.to_vec()).unwrap();
    }
    let lines = text.lines().filter(|l| !l.is_empty()).count();
    if key.contains(".csv") {
        lines - 1
    } else {
        lines
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_files_reach_their_terminal_states_with_full_histories() {
    let mut app = TestApp::new(|_| {}).await;
    app.start();
    app.put_demo_samples().await;
    app.settle().await;
    let records = app.by_key().await;
    app.stop().await;
    assert_demo_outcome(&records);

    let ports = app.pipeline.backend.ports();
    let buckets = app.pipeline.settings.config.buckets.clone();

    // Quarantined files moved, with their reports beside them; valid files stay in the input.
    for r in records.values() {
        let in_input = ports.objects.head(&buckets.input, &r.key).await.unwrap();
        let in_failed = ports
            .objects
            .head(&buckets.failed, &r.quarantine_key())
            .await
            .unwrap();
        let report = ports
            .objects
            .head(&buckets.failed, &r.quarantine_report_key())
            .await
            .unwrap();
        if r.state == FileState::Quarantined {
            assert!(in_input.is_none(), "{} still in the input bucket", r.key);
            assert_eq!(
                in_failed.map(|m| m.size),
                Some(r.size),
                "{} not in the failed bucket",
                r.key
            );
            assert!(report.is_some(), "{} has no report beside it", r.key);
        } else {
            assert!(in_input.is_some(), "{} left the input bucket", r.key);
            assert!(in_failed.is_none());
        }
        // One trace per file: the validator joined the trace the ingestor started.
        assert_eq!(r.history[0].trace_id, r.trace_id, "{}", r.key);
        assert_eq!(r.history[1].trace_id, r.trace_id, "{}", r.key);
    }

    // The built-in transform wrote every valid row to the curated bucket, once.
    let expected_rows: usize = demo::samples()
        .iter()
        .filter(|s| s.defect.is_none())
        .map(|s| rows(&s.key, &s.body))
        .sum();
    let mut written = 0;
    let curated = app
        .pipeline
        .settings
        .config
        .data_dir
        .join("buckets")
        .join(&buckets.curated);
    for object in ports.objects.list(&buckets.curated, "").await.unwrap() {
        assert!(object.key.ends_with(".parquet"), "{}", object.key);
        let file = std::fs::File::open(curated.join(&object.key)).unwrap();
        let reader = SerializedFileReader::new(file).unwrap();
        written += reader.metadata().file_metadata().num_rows() as usize;
    }
    assert_eq!(written, expected_rows, "rows in the curated bucket");

    // The auditor saw every registration once.
    let counts = ports.audit.counts().await.unwrap();
    let registered: u64 = counts
        .iter()
        .filter(|(_, t, _)| t == "FileRegistered")
        .map(|(_, _, n)| n)
        .sum();
    assert_eq!(registered as usize, records.len());
}
