//! Faults on the AWS path: the calls between Choreo and moto go through a fault-injecting proxy
//! ([`FaultProxy`]) that throttles, fails, drops (before and after forwarding) or slows a seeded
//! share of them. The guarantees must hold as they do without faults: every file terminal, no
//! illegal or repeated step, one job run per batch; and retries stay bounded and show in the logs.
//!
//! The first tests each aim one fault at one call, where a lost answer used to do harm; the last
//! runs 500 files through three `choreo up --backend aws` replicas with 5% of calls faulted and one
//! replica killed, and prints `faults: ...` figures to standard error (`--no-capture` shows them);
//! `FAULTS_KEEP_LOGS=DIR` keeps the replicas' JSON logs there.

use crate::fault_proxy::{Fault, FaultProxy, Stats};
use crate::helpers::ok;
use crate::replicas::{self, Replicas};
use choreo_aws::moto::Moto;
use choreo_aws::{AwsBackend, AwsClients};
use choreo_domain::{Batch, BatchState, FileRecord, FileState, JobArgs};
use choreo_ports::{BatchOutcome, CrawlStart, Ports};
use choreo_runtime::Settings;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// `choreo` on the aws backend at `endpoint` (moto, or the proxy in front of it).
fn choreo_at(endpoint: &str, dir: &Path) -> Command {
    let mut cmd = replicas::choreo(dir);
    cmd.arg("--backend")
        .arg("aws")
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    cmd
}

/// A bootstrapped moto, a proxy in front of it failing nothing unless told, and the backend's
/// ports through the proxy.
struct Rig {
    moto: Moto,
    proxy: FaultProxy,
    dir: tempfile::TempDir,
    settings: Settings,
    /// Straight to moto: what the test reads to check.
    direct: AwsClients,
    /// Through the proxy: what is under test.
    ports: Ports,
}

async fn rig(rate: f64, seed: u64) -> Rig {
    choreo_telemetry::init_for_tests();
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    replicas::write_config(dir.path(), 0);
    ok(choreo_at(&moto.endpoint, dir.path())
        .arg("bootstrap")
        .output()
        .unwrap());
    let proxy = FaultProxy::start(&moto.endpoint, seed, rate).await;
    let settings = Settings::load(Some(&dir.path().join("choreo.toml"))).unwrap();
    let direct = AwsClients::emulator(&moto.endpoint).await;
    let proxied = AwsClients::emulator(&proxy.endpoint).await;
    let ports = AwsBackend::with_clients(proxied, &settings.config).ports();
    Rig {
        moto,
        proxy,
        dir,
        settings,
        direct,
        ports,
    }
}

/// A batch update whose answer is lost: the SDK's retry finds the condition failed against the
/// update's own first attempt. That is the update applied, not a conflict — the launcher took the
/// conflict for another replica's poll and stopped the batch's only poll chain, leaving it
/// TRANSFORMING until the watchdog's lease (15 minutes) ran out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_update_whose_answer_was_lost_is_applied() {
    let rig = rig(0.0, 1).await;
    let state = &rig.ports.state;
    let batch = Batch::new(
        "b-orders_a-lost".into(),
        "orders_a",
        "orders-crawler".into(),
        "builtin".into(),
        BatchState::Cataloged,
        vec!["f-1".into()],
    );
    assert!(state.create_batch(&batch).await.unwrap());
    let mut next = Batch {
        state: BatchState::Transforming,
        manifest: Some("choreo-work/manifests/m.json".into()),
        ..batch.clone()
    };
    rig.proxy.inject("PutItem", Fault::ResetAfter, 1);
    let outcome = state
        .update_batch(&mut next, BatchState::Cataloged)
        .await
        .unwrap();
    assert_eq!(
        rig.proxy.stats().count(Fault::ResetAfter),
        1,
        "the answer was lost"
    );
    assert_eq!(outcome, BatchOutcome::Applied);
    let stored = state.get_batch(&batch.id).await.unwrap().unwrap();
    assert_eq!(stored, next);

    // Another writer's update still conflicts.
    let mut other = Batch {
        state: BatchState::Ingested,
        ..batch.clone()
    };
    assert!(matches!(
        state.update_batch(&mut other, BatchState::Cataloged).await.unwrap(),
        BatchOutcome::Conflict(Some(b)) if *b == next
    ));
}

/// A job start whose answer is lost may have started the run: retrying it blindly started a
/// second run of the batch. The start fails instead (transient), and the launcher's next try finds
/// the run by its batch id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_start_whose_answer_was_lost_starts_one_run() {
    let rig = rig(0.0, 2).await;
    let args = JobArgs {
        batch_id: "b-lost".into(),
        dataset: "orders_a".into(),
        manifest: "choreo-work/m.json".into(),
    }
    .to_arguments();
    rig.proxy.inject("StartJobRun", Fault::ResetAfter, 1);
    let started = rig.ports.jobs.start_run("builtin", &args).await;
    assert_eq!(
        rig.proxy.stats().count(Fault::ResetAfter),
        1,
        "the answer was lost"
    );
    let job = &rig.settings.config.aws.builtin_job;
    let runs: Vec<_> = replicas::glue_job_runs(&rig.direct, job)
        .await
        .into_iter()
        .filter(|(_, b)| b == "b-lost")
        .collect();
    assert_eq!(
        runs.len(),
        1,
        "one run for the batch: {runs:?}; start said {started:?}"
    );
    let err = started.expect_err("the start's outcome is unknown");
    assert!(err.is_retryable(), "{err}");
    let found = rig.ports.jobs.find_run("builtin", "b-lost").await.unwrap();
    assert_eq!(found.as_deref(), Some(runs[0].0.as_str()));
}

/// A crawl start whose answer is lost started the crawl; the SDK's retry then met the crawler
/// running and answered `AlreadyRunning`, which the poller takes for another batch's crawl: it
/// waited for its own crawl to end and started a second one. The start fails instead (transient);
/// the poller's retry sees its recorded attempt and takes the running crawl as its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crawl_start_whose_answer_was_lost_is_not_taken_for_another() {
    let rig = rig(0.0, 3).await;
    rig.moto.set_transition_seconds("glue::crawl", 30);
    rig.proxy.inject("StartCrawler", Fault::ResetAfter, 1);
    let started = rig.ports.crawler.start_crawl("orders-crawler").await;
    assert_eq!(
        rig.proxy.stats().count(Fault::ResetAfter),
        1,
        "the answer was lost"
    );
    match started {
        Err(e) => assert!(e.is_retryable(), "{e}"),
        Ok(s) => panic!("the start's outcome is unknown, not {s:?}"),
    }
    assert_eq!(
        rig.ports
            .crawler
            .start_crawl("orders-crawler")
            .await
            .unwrap(),
        CrawlStart::AlreadyRunning,
        "the lost start did start it"
    );
}

/// What the replicas' JSON logs say about retries.
#[derive(Debug, Default)]
struct Retries {
    /// `AwsCallRetried` lines, by `service operation`.
    sdk: BTreeMap<String, u64>,
    /// The highest attempt number seen, and the attempts allowed.
    highest_attempt: u64,
    max_attempts: Option<u64>,
    /// What failed the attempts before the retries, by the first words of its description.
    causes: BTreeMap<String, u64>,
    /// Other lines worth counting, by message.
    events: BTreeMap<String, u64>,
}

impl Retries {
    fn sdk_total(&self) -> u64 {
        self.sdk.values().sum()
    }
}

const COUNTED: [&str; 6] = [
    "HandlerRetry",
    "MessageRetryLater",
    "JobRunNotStarted",
    "JobRunFound",
    "CrawlTakenOver",
    "BatchWriteAnswerLost",
];

fn read_retries(logs: &[std::path::PathBuf]) -> Retries {
    let mut r = Retries::default();
    for log in logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        for line in text.lines() {
            // A killed replica may leave half a line.
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let f = &v["fields"];
            let Some(message) = f["message"].as_str() else {
                continue;
            };
            if message == "AwsCallRetried" {
                let op = format!(
                    "{} {}",
                    f["service"].as_str().unwrap_or("?"),
                    f["operation"].as_str().unwrap_or("?")
                );
                *r.sdk.entry(op).or_default() += 1;
                let attempt = f["attempt"].as_u64().expect("a retry names its attempt");
                r.highest_attempt = r.highest_attempt.max(attempt);
                let max = f["max_attempts"].as_u64();
                assert!(max.is_some(), "a retry names the attempts allowed: {line}");
                r.max_attempts = r.max_attempts.max(max);
                let after = f["after"].as_str().unwrap_or("?");
                let cause: String = after.chars().take(60).collect();
                *r.causes.entry(cause).or_default() += 1;
            } else if let Some(name) = COUNTED.iter().find(|c| message.starts_with(**c)) {
                *r.events.entry(name.to_string()).or_default() += 1;
            }
        }
    }
    r
}

/// Every file's history is exactly the path of a valid file: nothing illegal, nothing twice.
fn assert_histories(records: &[FileRecord]) {
    use FileState::*;
    let expected = vec![
        ("ingestor".to_string(), None, New),
        ("validator".into(), Some(New), Valid),
        ("crawler".into(), Some(Valid), Cataloged),
        ("transformer".into(), Some(Cataloged), Transforming),
        ("transformer".into(), Some(Transforming), Ingested),
    ];
    for r in records {
        assert_eq!(crate::helpers::steps(r), expected, "{}: {r:#?}", r.key);
    }
}

fn describe(stats: &Stats) -> String {
    let faults: Vec<String> = stats
        .faults
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    format!(
        "{} calls ({:?}), {} faults: {}; {} failed by moto",
        stats.total_calls(),
        stats.calls,
        stats.total_faults(),
        faults.join(", "),
        stats.upstream_errors
    )
}

/// 500 files through three `choreo up --backend aws` replicas, 5% of their AWS calls faulted,
/// one replica killed with SIGKILL once half the files are registered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_files_keep_the_guarantees_through_faults_and_a_killed_replica() {
    const FILES: usize = 500;
    const SEED: u64 = 12;
    const RATE: f64 = 0.05;
    /// How long the files may take to become terminal: a bound on waiting, not a performance
    /// check. Alone here they take about 200-290 s, most of it moto's single Python process
    /// answering 12,000 calls; a loaded CI machine needs the slack.
    const DEADLINE: Duration = Duration::from_secs(540);
    let started = Instant::now();
    let rig = rig(RATE, SEED).await;
    rig.moto.set_transition_seconds("glue::crawl", 2);
    let dir = rig.dir.path();
    let state = AwsBackend::with_clients(rig.direct.clone(), &rig.settings.config)
        .ports()
        .state;
    let mut replicas = Replicas::start(dir, || {
        let mut cmd = choreo_at(&rig.proxy.endpoint, dir);
        // A killed replica's messages come back after 10 s; shorter, and the heartbeats that keep
        // the others' messages invisible would be a good share of moto's load.
        cmd.env("CHOREO_QUEUES__VISIBILITY_TIMEOUT_SECS", "10");
        cmd.env("CHOREO_LOG_FORMAT", "json").env(
            "RUST_LOG",
            "warn,choreo_crawler=info,choreo_transformer=info,choreo_runtime=info,choreo_aws=info",
        );
        cmd
    });

    // Uploaded sixteen at a time, as a busy landing bucket receives them.
    let input = &rig.settings.config.buckets.input;
    let mut uploads = tokio::task::JoinSet::<Result<(), String>>::new();
    for i in 0..FILES {
        if uploads.len() >= 16 {
            let put = uploads.join_next().await.expect("uploads in flight");
            put.unwrap().unwrap();
        }
        let (key, body) = replicas::file(i);
        let put = rig.direct.s3.put_object().bucket(input).key(key);
        let put = put.body(body.into()).send();
        uploads.spawn(async move { put.await.map(drop).map_err(|e| e.to_string()) });
    }
    while let Some(put) = uploads.join_next().await {
        put.unwrap().unwrap();
    }
    eprintln!(
        "faults: {FILES} files uploaded at {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let deadline = Instant::now() + DEADLINE;
    let mut killed = false;
    let mut shown = Instant::now();
    loop {
        let counts = state.counts().await.unwrap();
        let registered: u64 = counts.iter().map(|(_, _, n)| n).sum();
        let terminal: u64 = counts
            .iter()
            .filter(|(_, s, _)| s.is_terminal())
            .map(|(_, _, n)| n)
            .sum();
        if terminal as usize == FILES {
            break;
        }
        if shown.elapsed() >= Duration::from_secs(20) {
            let s = started.elapsed().as_secs();
            eprintln!("faults: at {s} s, {registered} registered, {terminal} terminal");
            shown = Instant::now();
        }
        if !killed && registered as usize >= FILES / 2 {
            replicas.kill(0);
            eprintln!(
                "faults: killed replica 0 at {registered} files registered, {terminal} terminal"
            );
            killed = true;
        }
        assert!(
            Instant::now() < deadline,
            "{terminal} of {FILES} files terminal after {DEADLINE:?}; by state: {counts:?}\n\
             proxy: {}\n{}",
            describe(&rig.proxy.stats()),
            replicas.tails()
        );
        // A count is a Scan of the table: not too often, moto is busy enough.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let wall = started.elapsed().as_secs_f64();
    replicas.stop();
    if let Some(keep) = std::env::var_os("FAULTS_KEEP_LOGS") {
        for (i, log) in replicas.logs.iter().enumerate() {
            std::fs::copy(log, Path::new(&keep).join(format!("replica-{i}.log"))).unwrap();
        }
    }
    let stats = rig.proxy.stats();
    eprintln!(
        "faults: {FILES} files terminal in {wall:.1} s (moto and bootstrap included); proxy {}",
        describe(&stats)
    );
    eprintln!("faults: faulted calls by operation {:?}", stats.faulted);

    // The guarantees: every file INGESTED in exactly one batch, one job run per batch, histories
    // without an illegal or repeated step.
    let records = replicas::all_files(&state).await;
    let batches = replicas::all_batches(&state).await;
    let runs = replicas::glue_job_runs(&rig.direct, &rig.settings.config.aws.builtin_job).await;
    let mut figures = replicas::check(&records, FILES, &batches, &runs, None);
    figures.encounters = replicas.encounters();
    assert_histories(&records);

    // Every kind of fault was met, and the retries were bounded and logged.
    let retries = read_retries(&replicas.logs);
    for kind in [
        Fault::Unavailable,
        Fault::Throttled,
        Fault::ResetBefore,
        Fault::ResetAfter,
        Fault::Slow,
    ] {
        assert!(
            stats.count(kind) > 0,
            "no {kind:?} injected: {}",
            describe(&stats)
        );
    }
    let max = retries.max_attempts.expect("retries were logged");
    assert!(
        retries.highest_attempt <= max,
        "attempt {} of at most {max}",
        retries.highest_attempt
    );
    // Every SDK retry follows a failed attempt, and only the proxy fails attempts (or, rarely,
    // moto: the proxy's 502s): more retries than failures would be a retry storm.
    let failures = stats.total_faults() - stats.count(Fault::Slow) + stats.upstream_errors;
    assert!(
        retries.sdk_total() <= failures,
        "{} SDK retries for {failures} failed calls; causes {:#?}",
        retries.sdk_total(),
        retries.causes
    );
    assert!(
        retries.sdk_total() * 2 >= failures,
        "{} SDK retries logged for {failures} failed calls; causes {:#?}",
        retries.sdk_total(),
        retries.causes
    );

    eprintln!(
        "{}",
        replicas::report("aws, 5% faults, one killed", FILES, &figures, wall)
    );
    eprintln!(
        "faults: {} SDK retries (highest attempt {} of {max}) {:?}; {:?}",
        retries.sdk_total(),
        retries.highest_attempt,
        retries.sdk,
        retries.events
    );
    eprintln!(
        "faults: {:.1} s in all, moto and bootstrap included",
        started.elapsed().as_secs_f64()
    );
}
