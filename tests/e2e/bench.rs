//! `choreo bench`, small: 100 files through a child `up` and a second of idling, reported as JSON.

use crate::helpers::ok;
use std::process::Command;

#[test]
fn a_small_bench_ingests_every_file_and_loses_no_timer() {
    let out = ok(Command::new(env!("CARGO_BIN_EXE_choreo"))
        .args(["bench", "--files", "100", "--idle-secs", "1", "--json"])
        .output()
        .unwrap());
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let load = &report["load"];
    assert_eq!(load["states"]["INGESTED"], 100, "{report:#}");
    assert_eq!(load["states"].as_object().unwrap().len(), 1, "{report:#}");
    assert_eq!(load["lost_timers_total"], 0, "{report:#}");
    assert!(load["files_per_sec"].as_f64().unwrap() > 0.0, "{report:#}");
    let new_to_valid = load["latencies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["from"] == "NEW" && l["to"] == "VALID")
        .unwrap_or_else(|| panic!("no NEW → VALID latency: {report:#}"));
    assert_eq!(new_to_valid["files"], 100);
    assert!(new_to_valid["p50_ms"].as_f64().unwrap() >= 0.0);
    assert!(
        report["idle"]["cpu_percent"].as_f64().is_some(),
        "{report:#}"
    );
    assert!(
        report["failures"].as_array().unwrap().is_empty(),
        "{report:#}"
    );
}

/// `choreo bench transform`, small: 8 MiB through a job worker, the key index made to spill, the
/// counts checked against the generator's (the bench fails itself when they differ) and the
/// Parquet's row count read back. Peak memory is asserted with a wide margin (no timing is).
#[test]
fn a_small_transform_bench_writes_every_distinct_row_in_bounded_memory() {
    let keep = tempfile::tempdir().unwrap();
    let dir = keep.path().join("bench");
    let out = ok(Command::new(env!("CARGO_BIN_EXE_choreo"))
        .args(["bench", "transform", "--mb", "8", "--files", "3"])
        .args([
            "--key-index-mb",
            "1",
            "--max-rss-mb",
            "200",
            "--json",
            "--keep",
        ])
        .arg(&dir)
        .output()
        .unwrap());
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    eprintln!(
        "bench transform: {:.1} MiB in {:.1} s, {:.2} MiB/s, peak RSS {:.0} MiB, {} runs spilled",
        report["input_mib"].as_f64().unwrap(),
        report["wall_secs"].as_f64().unwrap(),
        report["input_mib_per_sec"].as_f64().unwrap(),
        report["peak_rss_mib"].as_f64().unwrap(),
        report["summary"]["key_runs"]
    );
    assert!(
        report["failures"].as_array().unwrap().is_empty(),
        "{report:#}"
    );
    let summary = &report["summary"];
    let (rows, distinct) = (
        report["rows"].as_u64().unwrap(),
        report["distinct"].as_u64().unwrap(),
    );
    assert!(distinct < rows && rows > 100_000, "{report:#}");
    assert_eq!(summary["written"].as_u64(), Some(distinct), "{report:#}");
    assert_eq!(
        summary["duplicates"].as_u64(),
        Some(rows - distinct),
        "{report:#}"
    );
    assert!(summary["key_runs"].as_u64().unwrap() >= 2, "{report:#}");
    let peak = report["peak_rss_mib"].as_f64().unwrap();
    assert!(peak > 0.0 && peak < 200.0, "{report:#}");
    // The input is valid: order ids repeat across files, never within one.
    for file in ["bench-transform-001.csv", "bench-transform-003.csv"] {
        ok(Command::new(env!("CARGO_BIN_EXE_choreo"))
            .arg("validate")
            .arg(dir.join("buckets/choreo-input/daily").join(file))
            .arg("--schema")
            .arg(dir.join("schemas/sales_daily.json"))
            .output()
            .unwrap());
    }
    let parquet = dir
        .join("buckets/choreo-curated")
        .join(summary["key"].as_str().unwrap());
    let reader = parquet::file::serialized_reader::SerializedFileReader::new(
        std::fs::File::open(parquet).unwrap(),
    )
    .unwrap();
    let written = parquet::file::reader::FileReader::metadata(&reader)
        .file_metadata()
        .num_rows();
    assert_eq!(written as u64, distinct);
}
