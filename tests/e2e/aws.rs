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

fn choreo(moto: &Moto, dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_choreo"));
    cmd.arg("--data-dir")
        .arg(dir)
        .arg("--backend")
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

fn files(moto: &Moto, dir: &Path) -> BTreeMap<String, FileRecord> {
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
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(up.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(up.wait().unwrap().success());

    let shown = ok(choreo(&moto, dir.path())
        .args(["files", "show", records["daily/broken.csv"].id.as_str()])
        .output()
        .unwrap());
    assert!(
        shown.contains("QUARANTINED") && shown.contains("missing"),
        "{shown}"
    );
}

/// The cost figure on a representative load: many valid files (the demo is half invalid on purpose,
/// which overstates quarantine traffic). Prints the API calls per file and the cost per million files;
/// run with `--no-capture` to see them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_calls_per_file_on_a_steady_load() {
    const FILES: usize = 120;
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    demo::write_config(dir.path(), demo::CONFIG_FILE).unwrap();
    ok(choreo(&moto, dir.path()).arg("bootstrap").output().unwrap());
    let clients = choreo_aws::AwsClients::emulator(&moto.endpoint).await;
    for i in 0..FILES {
        let body = format!(
            "order_id,order_date,customer,email,amount,currency,quantity\n{i},2026-11-24,Elena,e@example.com,{i}.50,EUR,1\n"
        );
        clients
            .s3
            .put_object()
            .bucket("choreo-input")
            .key(format!("daily/steady-{i:04}.csv"))
            .body(body.into_bytes().into())
            .send()
            .await
            .unwrap();
    }
    let out = choreo(&moto, dir.path())
        .args(["up", "--exit-when-idle"])
        .output()
        .unwrap();
    let stdout = ok(out);
    println!("{stdout}");
    let records = files(&moto, dir.path());
    assert_eq!(records.len(), FILES);
    assert!(records.values().all(|r| r.state.as_str() == "INGESTED"));
    assert!(stdout.contains(&format!("for {FILES} file(s)")), "{stdout}");
}
