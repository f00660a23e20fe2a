//! Dead letters and backfill from the command line, beside a pipeline running in this process.

use crate::helpers::{TestApp, ok, steps};
use choreo_domain::FileState;
use choreo_domain::config::Queues;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

fn choreo(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_choreo"));
    cmd.arg("--data-dir").arg(dir).env("RUST_LOG", "warn");
    cmd
}

/// A file the validator rejects (no `currency` column): it needs its report stored.
const INVALID: &[u8] = b"order_id,order_date,customer,email,amount,quantity\n1,2026-11-20,Ada,ada@example.com,3.50,1\n";
const VALID: &[u8] = b"order_id,order_date,customer,email,amount,currency,quantity\n1,2026-11-20,Ada,ada@example.com,3.50,EUR,1\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_peeked_and_redriven_and_processed_once_the_cause_is_fixed() {
    const FILES: usize = 6;
    let mut app = TestApp::new(|c| c.queues.max_receive_count = 2).await;
    let config = app.pipeline.settings.config.clone();
    let dir = app._dir.path().to_path_buf();
    // The poison: the work bucket is gone (deleted by mistake), so the validator cannot store the
    // reports of invalid files. Every attempt fails the same way, and the messages dead-letter.
    let work = config.data_dir.join("buckets").join(&config.buckets.work);
    std::fs::remove_dir_all(&work).unwrap();
    app.start();
    for i in 0..FILES {
        app.put(&format!("daily/bad-{i}.csv"), INVALID).await;
    }
    let dlq = app
        .pipeline
        .backend
        .queue(&Queues::dlq_of(&config.queues.validate));
    let deadline = Instant::now() + Duration::from_secs(60);
    while dlq.depth().await.unwrap().total() < FILES as u64 {
        assert!(Instant::now() < deadline, "the DLQ did not fill");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let list = ok(choreo(&dir).args(["dlq", "list"]).output().unwrap());
    let line = list
        .lines()
        .find(|l| l.starts_with("validator"))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(
        line.contains("choreo-validate-dlq") && line.split_whitespace().nth(2) == Some("6"),
        "{list}"
    );
    let peeked = ok(choreo(&dir)
        .args(["dlq", "peek", "validator", "-n", "100", "--json"])
        .output()
        .unwrap());
    let dead: Vec<serde_json::Value> = serde_json::from_str(&peeked).unwrap();
    assert_eq!(dead.len(), FILES, "{peeked}");
    let mut keys: Vec<&str> = dead.iter().map(|d| d["key"].as_str().unwrap()).collect();
    keys.sort();
    assert_eq!(keys[0], "daily/bad-0.csv");
    for d in &dead {
        assert_eq!(d["body"]["value"]["event"]["type"], "FileRegistered", "{d}");
        assert!(d["receive_count"].as_u64().unwrap() >= 2, "{d}");
        assert!(d["first_received_at"].is_string(), "{d}");
        assert!(d["attributes"]["traceparent"].is_string(), "{d}");
    }
    let human = ok(choreo(&dir)
        .args(["dlq", "peek", "validator", "-n", "1"])
        .output()
        .unwrap());
    assert!(
        human.contains("FileRegistered") && human.contains("daily/bad-"),
        "{human}"
    );
    let records = app.by_key().await;
    assert!(records.values().all(|r| r.state == FileState::New));

    // The fix (opening the backend, as the commands above did, recreates it too).
    std::fs::create_dir_all(&work).unwrap();
    let redrive = ok(choreo(&dir)
        .args(["dlq", "redrive", "validator", "--all"])
        .output()
        .unwrap());
    assert!(redrive.contains("redrove 6 message(s)"), "{redrive}");

    app.settle().await;
    let records = app.by_key().await;
    app.stop().await;
    assert_eq!(records.len(), FILES);
    for r in records.values() {
        assert_eq!(r.state, FileState::Quarantined, "{r:#?}");
        assert_eq!(
            steps(r),
            vec![
                ("ingestor".to_string(), None, FileState::New),
                ("validator".into(), Some(FileState::New), FileState::Invalid),
                (
                    "quarantine".into(),
                    Some(FileState::Invalid),
                    FileState::Quarantined
                ),
            ],
            "{}",
            r.key
        );
        // The redriven message kept its trace context: the file is one trace still.
        assert!(r.trace_id.is_some());
        assert!(
            r.history.iter().all(|h| h.trace_id == r.trace_id),
            "{:#?}",
            r.history
        );
        assert!(work.join(r.report_key()).exists(), "{}", r.key);
    }
    assert_eq!(dlq.depth().await.unwrap().total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_asks_first() {
    let app = TestApp::new(|_| {}).await;
    let config = &app.pipeline.settings.config;
    let dlq = app
        .pipeline
        .backend
        .queue(&Queues::dlq_of(&config.queues.crawl));
    for body in ["a", "b"] {
        dlq.send(
            choreo_ports::OutgoingMessage {
                body: body.into(),
                ..Default::default()
            },
            Duration::ZERO,
        )
        .await
        .unwrap();
    }
    let dir = app._dir.path();
    let purge = |answer: &str, yes: bool| {
        use std::io::Write;
        let mut cmd = choreo(dir);
        cmd.args(["dlq", "purge", "crawler"]);
        if yes {
            cmd.arg("--yes");
        }
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(answer.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = purge("\n", false);
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("Purge 2 messages from choreo-crawl-dlq? [y/N]"),
        "{said}"
    );
    assert_eq!(dlq.depth().await.unwrap().total(), 2, "no is no");
    let said = ok(purge("y\n", false));
    assert!(said.contains("purged 2 message(s)"), "{said}");
    assert_eq!(dlq.depth().await.unwrap().total(), 0);
    assert!(ok(purge("", true)).contains("purged 0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_registers_each_unrecorded_object_once_and_leaves_recorded_ones_alone() {
    let mut app = TestApp::new(|_| {}).await;
    let dir = app._dir.path().to_path_buf();
    app.start();
    for i in 0..2 {
        app.put(&format!("daily/early-{i}.csv"), VALID).await;
    }
    app.settle().await;
    app.stop().await;
    let before = app.by_key().await;
    assert_eq!(before.len(), 2);

    // With the pipeline (and its notifier) stopped, these are never notified.
    for i in 0..3 {
        app.put(&format!("daily/late-{i}.csv"), VALID).await;
    }
    app.put("elsewhere/late.csv", VALID).await;
    let out = ok(choreo(&dir)
        .args(["backfill", "--prefix", "daily/"])
        .output()
        .unwrap());
    assert!(
        out.contains("5 object(s) under \"daily/\": 3 registered, 2 already recorded"),
        "{out}"
    );
    let after = app.by_key().await;
    assert_eq!(after.len(), 5);
    for (key, r) in &after {
        match before.get(key) {
            Some(old) => assert_eq!(old, r, "a recorded file is untouched"),
            None => assert_eq!(r.state, FileState::New, "{key}"),
        }
    }
    let again = ok(choreo(&dir)
        .args(["backfill", "--prefix", "daily/"])
        .output()
        .unwrap());
    assert!(
        again.contains("0 registered, 5 already recorded"),
        "{again}"
    );
    assert_eq!(
        app.by_key().await,
        after,
        "a second backfill changes nothing"
    );

    // The pipeline takes the backfilled files up (its notifier sees the late objects too: they are
    // the same files, not new ones).
    app.shutdown = CancellationToken::new();
    app.start();
    app.settle().await;
    let records = app.by_key().await;
    app.stop().await;
    assert_eq!(records.len(), 6, "{records:#?}");
    for (key, r) in &records {
        // Outside the prefix, and of no dataset: the pipeline's own notifier found it.
        let expected = if key == "elsewhere/late.csv" {
            FileState::Quarantined
        } else {
            FileState::Ingested
        };
        assert_eq!(r.state, expected, "{r:#?}");
    }
    for (key, r) in &after {
        assert_eq!(records[key].id, r.id);
    }
}
