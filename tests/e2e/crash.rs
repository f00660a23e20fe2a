//! `kill -9` at any moment loses nothing: the `choreo` binary is killed twice mid-run, then started
//! again with `--exit-when-idle`, and every demo file still ends where it should, once.

use crate::helpers::{assert_demo_outcome, job_runs, records_by_key};
use choreo::app::Pipeline;
use choreo::demo;
use choreo_domain::{BatchState, FileState};
use choreo_runtime::Settings;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn choreo(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_choreo"));
    cmd.args(args)
        .arg("--data-dir")
        .arg(dir)
        .env("CHOREO_RUNTIME__SCAN_INTERVAL_MS", "50")
        // Messages a killed process held come back after this long.
        .env("CHOREO_QUEUES__VISIBILITY_TIMEOUT_SECS", "5")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

async fn open(dir: &Path) -> Option<Pipeline> {
    let file = dir.join(demo::CONFIG_FILE);
    if !file.exists() {
        return None;
    }
    Some(
        Pipeline::open(Settings::load(Some(&file)).unwrap())
            .await
            .unwrap(),
    )
}

/// Waits until `enough` holds of the files' states, then kills the child with SIGKILL.
async fn kill_when(mut child: Child, dir: &Path, enough: impl Fn(&[FileState]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "no progress before the deadline");
        assert!(
            child.try_wait().unwrap().is_none(),
            "choreo exited by itself"
        );
        if let Some(p) = open(dir).await {
            let states: Vec<FileState> = p
                .files(None, None)
                .await
                .unwrap()
                .iter()
                .map(|r| r.state)
                .collect();
            if enough(&states) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL: no drain, no cleanup
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_twice_then_restart_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();

    // First life: killed as soon as the first files are registered.
    let first = choreo(path, &["up", "--demo"]).spawn().unwrap();
    kill_when(first, path, |s| s.len() >= 3).await;

    // Second life: killed once some file has gone past validation.
    let second = choreo(path, &["up"]).spawn().unwrap();
    kill_when(second, path, |s| {
        s.iter().any(|st| !matches!(st, FileState::New))
    })
    .await;

    // Third life: runs to the end.
    let mut third = choreo(path, &["up", "--exit-when-idle"]).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(240);
    let status = loop {
        if let Some(status) = third.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            third.kill().unwrap();
            panic!("choreo up --exit-when-idle did not exit");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "{status:?}");

    let pipeline = open(path).await.unwrap();
    let records = records_by_key(&pipeline).await;
    assert_demo_outcome(&records);
    let batches = pipeline
        .backend
        .ports()
        .state
        .batches_in(BatchState::Ingested)
        .await
        .unwrap();
    assert_eq!(job_runs(&pipeline), batches.len(), "one job run per batch");
}
