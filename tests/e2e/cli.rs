//! The `choreo` binary: `put`, `files list` and `files show` beside a running `up`, which drains and
//! exits on SIGTERM; usage errors, `files retry`'s included.

use crate::helpers::ok;
use choreo::demo;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn choreo(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_choreo"));
    cmd.arg("--data-dir")
        .arg(dir)
        .env("CHOREO_RUNTIME__SCAN_INTERVAL_MS", "50")
        // The demo's dashboard port may be taken: any free one will do.
        .env("CHOREO_OPERATIONS__LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "warn");
    cmd
}

#[test]
fn put_and_files_while_up_runs_then_sigterm_drains() {
    let dir = tempfile::tempdir().unwrap();
    demo::write_config(dir.path(), demo::CONFIG_FILE).unwrap();
    // `up`'s log goes to a file, shown if the file never gets through.
    let log_path = dir.path().join("up.log");
    let up = choreo(dir.path())
        .arg("up")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();

    let file = dir.path().join("orders.csv");
    std::fs::write(
        &file,
        "order_id,order_date,customer,email,amount,currency,quantity\n1,2026-11-22,Chiara,c@example.com,1.00,GBP,1\n",
    )
    .unwrap();
    let out = ok(choreo(dir.path())
        .args(["put", "--prefix", "daily/"])
        .arg(&file)
        .output()
        .unwrap());
    assert!(out.contains("daily/orders.csv"), "{out}");

    let deadline = Instant::now() + Duration::from_secs(120);
    let id = loop {
        assert!(
            Instant::now() < deadline,
            "the file did not reach INGESTED; `choreo up` logged:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        let list = ok(choreo(dir.path())
            .args(["files", "list", "--json"])
            .output()
            .unwrap());
        let records: serde_json::Value = serde_json::from_str(&list).unwrap();
        let ingested = records
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"] == "daily/orders.csv" && r["state"] == "INGESTED");
        if let Some(r) = ingested {
            break r["id"].as_str().unwrap().to_string();
        }
        std::thread::sleep(Duration::from_millis(200));
    };

    let table = ok(choreo(dir.path())
        .args(["files", "list", "--state", "ingested"])
        .output()
        .unwrap());
    assert!(
        table.contains(&id) && table.contains("sales_daily"),
        "{table}"
    );
    let shown = ok(choreo(dir.path())
        .args(["files", "show", &id])
        .output()
        .unwrap());
    for needle in [
        "NEW",
        "VALID",
        "CATALOGED",
        "TRANSFORMING",
        "INGESTED",
        "validator",
        "trace:",
    ] {
        assert!(shown.contains(needle), "{needle} missing from:\n{shown}");
    }
    let missing = choreo(dir.path())
        .args(["files", "show", "f-nope"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));

    // SIGTERM: drain and exit cleanly, printing the summary.
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(up.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let out = up.wait_with_output().unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    let summary = String::from_utf8(out.stdout).unwrap();
    assert!(
        summary.contains("sales_daily") && summary.contains("INGESTED"),
        "{summary}"
    );
}

#[test]
fn usage_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let out = choreo(dir.path())
        .args(["files", "list", "--state", "DONE"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("DONE"));
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "backend = \"local\"\nbukets = 1\n").unwrap();
    let out = choreo(dir.path())
        .arg("--config")
        .arg(&bad)
        .args(["files", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bukets"));
    // `files retry` needs one scope, and says what it did not find.
    demo::write_config(dir.path(), demo::CONFIG_FILE).unwrap();
    for (args, says) in [
        (&["files", "retry"][..], "--batch"),
        (
            &["files", "retry", "f-nosuch"][..],
            "no file with id f-nosuch",
        ),
        (
            &["files", "retry", "--batch", "b-nosuch"][..],
            "no batch with id b-nosuch",
        ),
        (
            &["files", "retry", "--dataset", "nosuch"][..],
            "no dataset named nosuch",
        ),
    ] {
        let out = choreo(dir.path()).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    // A dataset with nothing FAILED: nothing retried, exit 1.
    let out = choreo(dir.path())
        .args(["files", "retry", "--dataset", "sales_daily"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 file(s) retried"));
}

#[test]
fn validate_exits_0_when_valid_1_when_invalid_2_on_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("s.json");
    std::fs::write(
        &schema,
        r#"{"fields":[{"name":"id","type":"integer","constraints":{"required":true}},{"name":"name","type":"string"}]}"#,
    )
    .unwrap();
    let good = dir.path().join("good.csv");
    std::fs::write(&good, "id,name\n1,a\n2,b\n").unwrap();
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "id,name\nx,a\n,b\n").unwrap();
    let run = |file: &Path, extra: &[&str]| {
        choreo(dir.path())
            .arg("validate")
            .arg(file)
            .arg("--schema")
            .arg(&schema)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&good, &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid: 2 rows"));

    let out = run(&bad, &["--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["valid"], false);
    assert_eq!(report["error_counts"]["type_error"], 1);
    assert_eq!(report["error_counts"]["required"], 1);

    let out = run(&dir.path().join("missing.csv"), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.csv"));
}
