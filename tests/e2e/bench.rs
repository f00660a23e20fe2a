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
