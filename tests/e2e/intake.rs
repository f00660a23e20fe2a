//! Issue 12's intake findings, end to end with real files and real processes: a local bucket holds
//! regular files only (a link is refused and never read), a file counts once its writer is done with
//! it, and every key is either registered or refused with a reason — none can keep
//! `up --exit-when-idle` from ending.

use crate::helpers::{TestApp, ok};
use choreo::demo;
use choreo_domain::FileState;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const HEADER: &str = "order_id,order_date,customer,email,amount,currency,quantity\n";

fn row(id: u32) -> String {
    format!("{id},2026-11-20,Ada Rossi,ada@example.com,3.50,EUR,1\n")
}

fn choreo(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_choreo"));
    cmd.arg("--data-dir")
        .arg(dir)
        .env("CHOREO_OPERATIONS__LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "info");
    cmd
}

/// A data directory with the demo's configuration (and no sample files), and its input bucket.
fn data_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    demo::write_config(dir.path(), demo::CONFIG_FILE).unwrap();
    let input = dir.path().join("buckets/choreo-input");
    std::fs::create_dir_all(input.join("daily")).unwrap();
    (dir, input)
}

/// Runs `choreo up --exit-when-idle` on `dir` with `env`; its log, once it exited. Fails the test if
/// it has not exited within `limit`.
fn up_until_idle(dir: &Path, env: &[(&str, &str)], limit: Duration) -> String {
    let log_path = dir.join("up.log");
    let mut up = choreo(dir)
        .args(["up", "--exit-when-idle"])
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = up.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = up.kill();
            let _ = up.wait();
            panic!(
                "`up --exit-when-idle` still running after {limit:?}; it logged:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(status.success(), "{status:?}: {log}");
    log
}

/// (key, state) of every file record.
fn records(dir: &Path) -> Vec<(String, String)> {
    let list = ok(choreo(dir)
        .args(["files", "list", "--json"])
        .output()
        .unwrap());
    let records: serde_json::Value = serde_json::from_str(&list).unwrap();
    let mut out: Vec<_> = records
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let field = |f: &str| r[f].as_str().unwrap().to_string();
            (field("key"), field("state"))
        })
        .collect();
    out.sort();
    out
}

/// Every file under `dir` (links not followed) whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let ft = entry.file_type().unwrap();
            if ft.is_dir() {
                stack.push(entry.path());
            } else if ft.is_file() {
                let bytes = std::fs::read(entry.path()).unwrap_or_default();
                if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                    found.push(entry.path());
                }
            }
        }
    }
    found
}

/// The log lines of `event` that mention `key`.
fn log_lines<'a>(log: &'a str, event: &str, key: &str) -> Vec<&'a str> {
    log.lines()
        .filter(|l| l.contains(event) && l.contains(key))
        .collect()
}

/// Finding 2: `ln -s /proc/self/environ <input>/daily/env.csv` leaked the mask salt into the
/// file's reason, the failed bucket, the logs and the alert. Links to a file, to the process's
/// environment and to a folder are refused with the reason, and their targets are never read.
#[test]
fn links_in_the_input_bucket_are_refused_and_never_read() {
    let (dir, input) = data_dir();
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(outside.join("folder")).unwrap();
    let secret = "SECRET-OUTSIDE-7f3a9c";
    // Invalid (a bad amount), so that a pipeline that followed the link would quarantine a copy.
    let leaked = format!("{HEADER}1,2026-11-20,{secret},x@example.com,lots,EUR,1\n");
    std::fs::write(outside.join("secret.csv"), &leaked).unwrap();
    std::fs::write(outside.join("folder/inner.csv"), &leaked).unwrap();
    symlink("/proc/self/environ", input.join("daily/env.csv")).unwrap();
    symlink(outside.join("secret.csv"), input.join("daily/secret.csv")).unwrap();
    symlink(outside.join("folder"), input.join("daily/linked")).unwrap();
    std::fs::write(input.join("daily/good.csv"), format!("{HEADER}{}", row(1))).unwrap();

    let salt = "SALT-IN-THE-ENVIRONMENT-41d8e2";
    let log = up_until_idle(
        dir.path(),
        &[("CHOREO_TRANSFORM__MASK_SALT", salt)],
        Duration::from_secs(120),
    );

    for needle in [secret, salt] {
        let logged: Vec<_> = log.lines().filter(|l| l.contains(needle)).collect();
        assert_eq!(logged, [] as [&str; 0], "{needle} in the log");
        assert_eq!(
            files_containing(&dir.path().join("buckets"), needle),
            [] as [PathBuf; 0]
        );
        for db in ["choreo.db", "choreo.db-wal"] {
            let bytes = std::fs::read(dir.path().join(db)).unwrap_or_default();
            let found = bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
            assert!(!found, "{needle} in {db}");
        }
    }
    for key in ["daily/env.csv", "daily/secret.csv", "daily/linked"] {
        let refused = log_lines(&log, "KeyRefused", key);
        assert_eq!(refused.len(), 1, "{key}: {log}");
        assert!(refused[0].contains("symbolic link"), "{}", refused[0]);
    }
    assert_eq!(
        records(dir.path()),
        [("daily/good.csv".to_string(), "INGESTED".to_string())]
    );
    // The links' targets are where they were, untouched.
    assert_eq!(
        std::fs::read_to_string(outside.join("secret.csv")).unwrap(),
        leaked
    );
    assert!(outside.join("folder/inner.csv").exists());
}

/// Finding 6: `choreo put --key daily/.hidden.csv` said yes, and the file was never registered.
/// `put` refuses, up front and with exit code 2, every key the pipeline would skip or refuse.
#[test]
fn put_refuses_every_key_the_pipeline_would_not_take() {
    let (dir, input) = data_dir();
    let file = dir.path().join("orders.csv");
    std::fs::write(&file, format!("{HEADER}{}", row(1))).unwrap();
    let hidden = dir.path().join(".orders.csv");
    std::fs::write(&hidden, format!("{HEADER}{}", row(2))).unwrap();

    let refused = |args: &[&str], path: &Path, why: &str| {
        let out: Output = choreo(dir.path())
            .arg("put")
            .args(args)
            .arg(path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "put {args:?}: {stderr}");
        assert!(
            stderr.contains("refused") && stderr.contains(why),
            "put {args:?}: {stderr}"
        );
    };
    refused(&["--key", "daily/.hidden.csv"], &file, "hidden");
    refused(&["--key", "daily/.tmp/x.csv"], &file, "hidden");
    refused(&["--key", "daily\\orders.csv"], &file, "backslash");
    refused(
        &["--key", "daily/\u{1b}[2Jorders.csv"],
        &file,
        "control character",
    );
    refused(&["--key", "daily/../orders.csv"], &file, "'..'");
    refused(&["--prefix", "daily/"], &hidden, "hidden");
    // Nothing was uploaded, not even half of a multi-file put with one bad key.
    let out = choreo(dir.path())
        .args(["put", "--prefix", "daily/"])
        .args([&file, &hidden])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(std::fs::read_dir(input.join("daily")).unwrap().count(), 0);
    // A key the pipeline takes still goes in.
    ok(choreo(dir.path())
        .args(["put", "--prefix", "daily/"])
        .arg(&file)
        .output()
        .unwrap());
    assert!(input.join("daily/orders.csv").is_file());
}

/// Finding 6: a key with a backslash was registered, stayed NEW for ever (no stage could read it)
/// and kept `up --exit-when-idle` from exiting. Files under keys the pipeline does not take are
/// refused with the reason before they are registered, and `up` ends.
#[test]
fn files_under_refused_keys_cannot_keep_up_from_exiting() {
    let (dir, input) = data_dir();
    std::fs::write(
        input.join("daily/back\\slash.csv"),
        format!("{HEADER}{}", row(1)),
    )
    .unwrap();
    std::fs::write(
        input.join("daily/tab\there.csv"),
        format!("{HEADER}{}", row(2)),
    )
    .unwrap();
    std::fs::write(input.join("daily/good.csv"), format!("{HEADER}{}", row(3))).unwrap();

    let log = up_until_idle(dir.path(), &[], Duration::from_secs(90));

    assert_eq!(
        log_lines(&log, "KeyRefused", "back\\\\slash").len(),
        1,
        "{log}"
    );
    assert_eq!(
        log_lines(&log, "KeyRefused", "tab\\there").len(),
        1,
        "{log}"
    );
    assert!(log.contains("the key contains a backslash"), "{log}");
    assert!(
        log.contains("the key contains a control character"),
        "{log}"
    );
    assert_eq!(
        records(dir.path()),
        [("daily/good.csv".to_string(), "INGESTED".to_string())]
    );
    // Refused files are left where they are, for the operator to rename.
    assert!(input.join("daily/back\\slash.csv").is_file());
}

/// Starts `sh` writing `first` to `path`, pausing 1.5 s, then writing `rest`: a real slow writer.
/// Returns once `first` is in the file.
fn slow_writer(path: &Path, first: &str, rest: &str) -> std::process::Child {
    let child = Command::new("sh")
        .args([
            "-c",
            "printf '%s' \"$1\"; sleep 1.5; printf '%s' \"$2\"",
            "sh",
        ])
        .args([first, rest])
        .stdout(std::fs::File::create(path).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(path).unwrap().len() < first.len() as u64 {
        assert!(Instant::now() < deadline, "the writer never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

/// Finding 3: a file counted as complete after two equal scans 250 ms apart. A writer that paused
/// 1.5 s mid-row had its partial file quarantined (and unlinked while still open: the rest was
/// lost); one that paused on a row boundary had the partial file and then the whole one ingested.
/// Both writers here are paused while the pipeline starts and scans; each file is ingested once,
/// whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_writers_are_ingested_once_and_whole() {
    let mut app = TestApp::new(|_| {}).await;
    let c = &app.pipeline.settings.config;
    let daily = c
        .data_dir
        .join("buckets")
        .join(&c.buckets.input)
        .join("daily");
    std::fs::create_dir_all(&daily).unwrap();
    let mid_row = (
        format!("{HEADER}{}3,2026-11-20,Bruno", row(1) + &row(2)),
        format!(" Keller,b@example.com,9.99,USD,2\n{}", row(4)),
    );
    let boundary = (format!("{HEADER}{}", row(1)), row(2) + &row(3));
    let mut writers = vec![
        slow_writer(&daily.join("mid-row.csv"), &mid_row.0, &mid_row.1),
        slow_writer(&daily.join("boundary.csv"), &boundary.0, &boundary.1),
    ];
    app.start();
    for w in &mut writers {
        assert!(w.wait().unwrap().success());
    }
    app.settle().await;
    let records = app.by_key().await; // fails on two records of one key
    app.stop().await;
    assert_eq!(records.len(), 2, "{records:#?}");
    for (key, whole) in [("mid-row.csv", mid_row), ("boundary.csv", boundary)] {
        let r = &records[&format!("daily/{key}")];
        assert_eq!(r.state, FileState::Ingested, "{key}: {:?}", r.reason);
        assert_eq!(r.size, (whole.0.len() + whole.1.len()) as u64, "{key}");
    }
}

/// The ingestor asks the same predicate of every notification, as on AWS, where S3 notifies any
/// key: a notified key the pipeline does not take is refused, registers nothing, and the pipeline
/// still settles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notified_key_the_pipeline_does_not_take_is_not_registered() {
    let mut app = TestApp::new(|_| {}).await;
    app.start();
    let c = app.pipeline.settings.config.clone();
    let ingest = app.pipeline.backend.queue(&c.queues.ingest);
    for key in [
        "daily/.hidden.csv",
        "daily/back\\slash.csv",
        "daily/new\nline.csv",
    ] {
        let meta = choreo_ports::ObjectMeta {
            key: key.to_string(),
            size: 10,
            version: "v1".to_string(),
            pin: None,
            last_modified: chrono::Utc::now(),
        };
        let message = choreo_ports::OutgoingMessage {
            body: choreo_local::s3_notification(&c.buckets.input, &meta),
            ..Default::default()
        };
        ingest.send(message, Duration::ZERO).await.unwrap();
    }
    app.put("daily/good.csv", format!("{HEADER}{}", row(1)).as_bytes())
        .await;
    app.settle().await;
    let records = app.by_key().await;
    let dead = app
        .pipeline
        .backend
        .depths(&c)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, d)| d.total())
        .sum::<u64>();
    app.stop().await;
    let keys: Vec<_> = records.keys().map(String::as_str).collect();
    assert_eq!(keys, ["daily/good.csv"]);
    assert_eq!(records["daily/good.csv"].state, FileState::Ingested);
    assert_eq!(dead, 0, "nothing dead-lettered, nothing waiting");
}
