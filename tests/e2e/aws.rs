//! The same pipeline on the aws backend: the real SDKs against moto on loopback. Each test starts its
//! own moto; without moto installed they fail (run scripts/test, which installs it).

use crate::helpers::assert_demo_outcome;
use crate::helpers::ok;
use choreo::demo;
use choreo_aws::moto::Moto;
use choreo_domain::FileRecord;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) fn choreo(moto: &Moto, dir: &Path) -> Command {
    let mut cmd = choreo_on(moto);
    cmd.arg("--data-dir").arg(dir);
    cmd
}

/// The `choreo` binary on the aws backend, pointed at `moto`.
pub fn choreo_on(moto: &Moto) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_choreo"));
    cmd.arg("--backend")
        .arg("aws")
        .env("AWS_ENDPOINT_URL", &moto.endpoint)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        // The demo's dashboard port may be taken: any free one will do.
        .env("CHOREO_OPERATIONS__LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "warn");
    cmd
}

pub(crate) fn files(moto: &Moto, dir: &Path) -> BTreeMap<String, FileRecord> {
    let out = ok(choreo(moto, dir)
        .args(["files", "list", "--json"])
        .output()
        .unwrap());
    let records: Vec<FileRecord> = serde_json::from_str(&out).unwrap();
    records.into_iter().map(|r| (r.key.clone(), r)).collect()
}

#[test]
fn the_demo_runs_through_all_six_stages_on_aws() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let out = choreo(&moto, dir.path())
        .args(["up", "--demo", "--exit-when-idle"])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let stdout = ok(out);
    assert!(stdout.contains("INGESTED"), "{stdout}");
    assert!(
        stdout.contains("request cost per million files"),
        "{stdout}"
    );
    println!("{stdout}");

    let records = files(&moto, dir.path());
    assert_demo_outcome(&records);
}

#[test]
fn files_uploaded_with_the_aws_cli_are_ingested_or_quarantined() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    demo::write_config(dir.path(), demo::CONFIG_FILE).unwrap();
    let boot = ok(choreo(&moto, dir.path()).arg("bootstrap").output().unwrap());
    assert!(boot.contains("queues") && boot.contains("tables"), "{boot}");
    // Twice: the bootstrap is idempotent.
    ok(choreo(&moto, dir.path()).arg("bootstrap").output().unwrap());

    let mut up = choreo(&moto, dir.path())
        .arg("up")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let good = dir.path().join("orders.csv");
    std::fs::write(
        &good,
        "order_id,order_date,customer,email,amount,currency,quantity\n1,2026-11-23,Dmitri,d@example.com,4.20,EUR,2\n",
    )
    .unwrap();
    let bad = dir.path().join("broken.csv");
    std::fs::write(&bad, "order_id,order_date\n1,2026-11-23\n").unwrap();
    let aws = |file: &Path, key: &str| {
        let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/aws");
        let cli = if venv.exists() { venv } else { "aws".into() };
        let status = Command::new(cli)
            .args(["--endpoint-url", &moto.endpoint, "s3", "cp"])
            .arg(file)
            .arg(format!("s3://choreo-input/{key}"))
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .stdout(Stdio::null())
            .status()
            .expect("the aws command-line client (scripts/test installs it into .venv)");
        assert!(status.success());
    };
    aws(&good, "daily/with space ü.csv");
    aws(&bad, "daily/broken.csv");

    let deadline = Instant::now() + Duration::from_secs(120);
    let records = loop {
        let records = files(&moto, dir.path());
        let done = |k: &str, s: &str| records.get(k).is_some_and(|r| r.state.as_str() == s);
        if done("daily/with space ü.csv", "INGESTED") && done("daily/broken.csv", "QUARANTINED") {
            break records;
        }
        if Instant::now() > deadline {
            let _ = up.kill();
            panic!("not done in time: {records:#?}");
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    stop(up);

    let shown = ok(choreo(&moto, dir.path())
        .args(["files", "show", records["daily/broken.csv"].id.as_str()])
        .output()
        .unwrap());
    assert!(
        shown.contains("QUARANTINED") && shown.contains("missing"),
        "{shown}"
    );
}

/// The cost per million files on a steady load, priced from what the calls carried (item sizes,
/// index writes, 64 KB message chunks: `shared/aws/src/cost.rs`): files land in waves while
/// `choreo up` runs, all valid (the demo is half invalid on purpose, which overstates quarantine
/// traffic). The figure `up` prints at its end must stay at or under [`COST_CEILING`]; the shared
/// partition keys (index partitions, leases) must each stay under a third of a partition's 1,000
/// write units a second at 1,000 files a second. Run with `--no-capture` to see the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_cost_of_a_steady_load_stays_under_its_ceiling() {
    const WAVES: usize = 4;
    const PER_WAVE: usize = 40;
    const FILES: usize = WAVES * PER_WAVE;
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    demo::write_config(dir.path(), demo::CONFIG_FILE).unwrap();
    ok(choreo(&moto, dir.path()).arg("bootstrap").output().unwrap());
    let clients = choreo_aws::AwsClients::emulator(&moto.endpoint).await;
    let up = choreo(&moto, dir.path())
        .arg("up")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for wave in 0..WAVES {
        for i in 0..PER_WAVE {
            let n = wave * PER_WAVE + i;
            let body = format!(
                "order_id,order_date,customer,email,amount,currency,quantity\n{n},2026-11-24,Elena,e@example.com,{n}.50,EUR,1\n"
            );
            clients
                .s3
                .put_object()
                .bucket("choreo-input")
                .key(format!("daily/steady-{n:04}.csv"))
                .body(body.into_bytes().into())
                .send()
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let records = wait_for_files(&moto, dir.path(), |r| {
        r.len() == FILES && r.values().all(|r| r.state.is_terminal())
    });
    assert!(records.values().all(|r| r.state.as_str() == "INGESTED"));
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(up.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let stdout = ok(up.wait_with_output().unwrap());
    println!("{stdout}");
    assert!(stdout.contains(&format!("for {FILES} file(s)")), "{stdout}");
    let figure = |prefix: &str| -> f64 {
        let line = stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in {stdout}"));
        line.trim()
            .trim_start_matches('$')
            .split([' ', '('])
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let cost = figure("request cost per million files:");
    assert!(
        cost <= COST_CEILING,
        "${cost:.2} per million files: {stdout}"
    );
    // The busiest shared key, extrapolated to 1,000 files a second.
    let busiest = stdout
        .lines()
        .skip_while(|l| !l.starts_with("shared partition keys"))
        .nth(1)
        .unwrap_or_else(|| panic!("no shared partition keys in {stdout}"));
    let rate: f64 = busiest
        .rsplit(": ")
        .next()
        .and_then(|r| r.strip_suffix(" WCU/s"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(rate <= 1000.0 / 3.0, "{busiest}: {stdout}");
}

/// Dollars per million files the steady load may cost in requests: the target. It measured
/// $29.03 before the work of `docs/cost.md`, $11.60–11.95 with the audit trail an item per event
/// and files' items passing 1 KB late, and about $9.40 since (`docs/cost.md`).
const COST_CEILING: f64 = 10.0;

/// `dlq list --json`: each stage's depth.
fn dlq_depths(moto: &Moto, dir: &Path) -> BTreeMap<String, u64> {
    let out = ok(choreo(moto, dir)
        .args(["dlq", "list", "--json"])
        .output()
        .unwrap());
    let list: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    list.iter()
        .map(|s| {
            (
                s["stage"].as_str().unwrap().to_string(),
                s["depth"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Waits for `done` on the file records, failing after two minutes.
fn wait_for_files(
    moto: &Moto,
    dir: &Path,
    done: impl Fn(&BTreeMap<String, FileRecord>) -> bool,
) -> BTreeMap<String, FileRecord> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let records = files(moto, dir);
        if done(&records) {
            return records;
        }
        assert!(Instant::now() < deadline, "not done in time: {records:#?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn stop(mut up: std::process::Child) {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(up.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(up.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_redriven_on_aws_once_the_work_bucket_is_back() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    demo::write_config(dir.path(), demo::CONFIG_FILE).unwrap();
    let with_redrive_after_two = |mut cmd: Command| {
        cmd.env("CHOREO_QUEUES__MAX_RECEIVE_COUNT", "2");
        cmd
    };
    ok(with_redrive_after_two(choreo(&moto, dir.path()))
        .arg("bootstrap")
        .output()
        .unwrap());
    let clients = choreo_aws::AwsClients::emulator(&moto.endpoint).await;
    // The poison: the work bucket is gone, so the validator cannot store invalid files' reports.
    let listed = clients
        .s3
        .list_objects_v2()
        .bucket("choreo-work")
        .send()
        .await
        .unwrap();
    for o in listed.contents() {
        clients
            .s3
            .delete_object()
            .bucket("choreo-work")
            .key(o.key().unwrap())
            .send()
            .await
            .unwrap();
    }
    clients
        .s3
        .delete_bucket()
        .bucket("choreo-work")
        .send()
        .await
        .unwrap();
    let up = with_redrive_after_two(choreo(&moto, dir.path()))
        .arg("up")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for key in ["daily/bad-a.csv", "daily/bad-b.csv"] {
        clients
            .s3
            .put_object()
            .bucket("choreo-input")
            .key(key)
            .body(b"order_id,order_date\n1,2026-11-23\n".to_vec().into())
            .send()
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while dlq_depths(&moto, dir.path())["validator"] < 2 {
        assert!(Instant::now() < deadline, "the DLQ did not fill");
        std::thread::sleep(Duration::from_millis(500));
    }
    let peeked = ok(choreo(&moto, dir.path())
        .args(["dlq", "peek", "validator", "--json"])
        .output()
        .unwrap());
    let dead: Vec<serde_json::Value> = serde_json::from_str(&peeked).unwrap();
    let mut keys: Vec<&str> = dead.iter().map(|d| d["key"].as_str().unwrap()).collect();
    keys.sort();
    assert_eq!(keys, ["daily/bad-a.csv", "daily/bad-b.csv"], "{peeked}");
    assert!(
        dead.iter()
            .all(|d| d["attributes"]["traceparent"].is_string())
    );

    // The fix: the bootstrap makes what is missing.
    ok(with_redrive_after_two(choreo(&moto, dir.path()))
        .arg("bootstrap")
        .output()
        .unwrap());
    let redrive = ok(choreo(&moto, dir.path())
        .args(["dlq", "redrive", "validator", "--all"])
        .output()
        .unwrap());
    assert!(redrive.contains("redrove 2 message(s)"), "{redrive}");
    let records = wait_for_files(&moto, dir.path(), |r| {
        r.len() == 2 && r.values().all(|f| f.state.as_str() == "QUARANTINED")
    });
    stop(up);
    for r in records.values() {
        let validations = r
            .history
            .iter()
            .filter(|h| h.stage.as_str() == "validator")
            .count();
        assert_eq!(validations, 1, "{r:#?}");
        assert!(r.history.iter().all(|h| h.trace_id == r.trace_id), "{r:#?}");
    }
    assert_eq!(dlq_depths(&moto, dir.path())["validator"], 0);
}

/// Backfill on an unversioned bucket, where S3 notifications name an upload by its sequencer and a
/// listing by its ETag: an object registered from a notification is still recognised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_on_aws_registers_objects_that_were_never_notified() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    demo::write_config(dir.path(), demo::CONFIG_FILE).unwrap();
    ok(choreo(&moto, dir.path()).arg("bootstrap").output().unwrap());
    let clients = choreo_aws::AwsClients::emulator(&moto.endpoint).await;
    // Notifications off: what lands now is unseen unless told.
    clients
        .s3
        .put_bucket_notification_configuration()
        .bucket("choreo-input")
        .notification_configuration(aws_sdk_s3::types::NotificationConfiguration::builder().build())
        .send()
        .await
        .unwrap();
    let body = "order_id,order_date,customer,email,amount,currency,quantity\n1,2026-11-24,Femi,f@example.com,2.50,EUR,1\n";
    let mut etag = String::new();
    for key in [
        "daily/notified-0.csv",
        "daily/notified-1.csv",
        "daily/unseen-0.csv",
        "daily/unseen-1.csv",
    ] {
        let put = clients
            .s3
            .put_object()
            .bucket("choreo-input")
            .key(key)
            .body(body.as_bytes().to_vec().into())
            .send()
            .await
            .unwrap();
        etag = put.e_tag().unwrap().to_string(); // the same body: the same ETag
    }
    // Two are notified as S3 itself does (moto leaves the sequencer out), and recorded under it.
    let ingest = clients
        .sqs
        .get_queue_url()
        .queue_name("choreo-ingest")
        .send()
        .await
        .unwrap();
    for (i, key) in ["daily/notified-0.csv", "daily/notified-1.csv"]
        .iter()
        .enumerate()
    {
        let notification = serde_json::json!({"Records": [{
            "eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": "choreo-input"},
                   "object": {"key": key, "size": body.len(), "eTag": etag,
                              "sequencer": format!("0062E99A88DC40746{i}")}}}]});
        clients
            .sqs
            .send_message()
            .queue_url(ingest.queue_url().unwrap())
            .message_body(notification.to_string())
            .send()
            .await
            .unwrap();
    }
    ok(choreo(&moto, dir.path())
        .args(["up", "--exit-when-idle"])
        .output()
        .unwrap());
    let before = files(&moto, dir.path());
    assert_eq!(before.len(), 2, "{before:#?}");
    assert!(
        before
            .values()
            .all(|r| r.version.starts_with("0062E99A88DC40746")),
        "{before:#?}"
    );

    let out = ok(choreo(&moto, dir.path()).arg("backfill").output().unwrap());
    assert!(out.contains("2 registered, 2 already recorded"), "{out}");
    let out = ok(choreo(&moto, dir.path()).arg("backfill").output().unwrap());
    assert!(out.contains("0 registered, 4 already recorded"), "{out}");
    let after = files(&moto, dir.path());
    assert_eq!(after.len(), 4, "{after:#?}");
    for (key, r) in &before {
        assert_eq!(&after[key], r, "a recorded file is untouched");
    }

    ok(choreo(&moto, dir.path())
        .args(["up", "--exit-when-idle"])
        .output()
        .unwrap());
    let records = files(&moto, dir.path());
    assert_eq!(records.len(), 4);
    assert!(
        records.values().all(|r| r.state.as_str() == "INGESTED"),
        "{records:#?}"
    );
}
