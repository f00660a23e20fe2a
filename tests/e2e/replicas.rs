//! Replicas: several `choreo up` processes on one backend are several replicas of every stage, with
//! the guarantees of one. Two datasets share one crawler; three processes take their files through
//! the pipeline. Afterwards the store must show: per crawler, crawls that never overlap (from the
//! batches' recorded intervals, and on the local backend from the crawler's own history too); every
//! file INGESTED in exactly one batch, its record naming that batch; exactly one job run per batch.
//! Killing the replica that started a crawl, mid-crawl, must change none of that.
//!
//! Each test prints `replicas(<backend>): N files, B batches, C crawls, J job runs, T s` to standard
//! error (`--no-capture` shows it).

use crate::helpers::ok;
use choreo::app::Pipeline;
use choreo_aws::moto::Moto;
use choreo_aws::{AwsBackend, AwsClients};
use choreo_backend::Backend;
use choreo_domain::{Batch, BatchState, FileRecord, FileState, JobArgs};
use choreo_ports::{FileQuery, StateStore};
use choreo_runtime::Settings;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const REPLICAS: usize = 3;
const DATASETS: [&str; 2] = ["orders_a", "orders_b"];
const CRAWLER: &str = "orders-crawler";
/// How long a test waits for every file to be INGESTED.
const DEADLINE: Duration = Duration::from_secs(420);

/// The configuration: two datasets sharing one crawler, batches of at most 100 files closing 2 s
/// after their first file, polls every second, and local crawls taking `crawl_min_secs`.
pub(crate) fn write_config(dir: &Path, crawl_min_secs: u64) -> PathBuf {
    std::fs::create_dir_all(dir.join("schemas")).unwrap();
    std::fs::write(
        dir.join("schemas/orders.json"),
        r#"{"fields": [{"name": "id", "type": "integer", "constraints": {"required": true}},
                       {"name": "item", "type": "string"}]}"#,
    )
    .unwrap();
    let mut toml = format!(
        "data_dir = \".\"\n\n[runtime]\npoll_interval_secs = 1\nscan_interval_ms = 100\n\n\
         [local]\ncrawl_min_secs = {crawl_min_secs}\n"
    );
    for d in DATASETS {
        let prefix = d.trim_start_matches("orders_");
        toml += &format!(
            "\n[[datasets]]\nname = \"{d}\"\nmatch = {{ prefix = \"{prefix}/\" }}\nformat = \"csv\"\n\
             schema = \"schemas/orders.json\"\ncrawler = \"{CRAWLER}\"\n\
             batch_window_secs = 2\nbatch_max_files = 100\n"
        );
    }
    let path = dir.join("choreo.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

/// The `i`-th file: its key (alternating between the datasets) and a small valid body.
pub(crate) fn file(i: usize) -> (String, Vec<u8>) {
    let prefix = if i.is_multiple_of(2) { "a" } else { "b" };
    (
        format!("{prefix}/part-{i:04}.csv"),
        format!("id,item\n{i},thing-{i}\n").into_bytes(),
    )
}

/// `choreo` on the data directory, logging the crawler's and launcher's steps.
pub(crate) fn choreo(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_choreo"));
    cmd.arg("--data-dir")
        .arg(dir)
        .arg("--config")
        .arg(dir.join("choreo.toml"))
        // Messages a killed replica held come back after this long.
        .env("CHOREO_QUEUES__VISIBILITY_TIMEOUT_SECS", "5")
        .env(
            "RUST_LOG",
            "warn,choreo_crawler=info,choreo_transformer=info",
        );
    cmd
}

/// Running `choreo up` processes, each with its own log file.
pub(crate) struct Replicas {
    children: Vec<Option<Child>>,
    pub(crate) logs: Vec<PathBuf>,
}

impl Replicas {
    pub(crate) fn start(dir: &Path, command: impl Fn() -> Command) -> Replicas {
        let mut children = Vec::new();
        let mut logs = Vec::new();
        for i in 0..REPLICAS {
            let log = dir.join(format!("replica-{i}.log"));
            let child = command()
                .arg("up")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap();
            children.push(Some(child));
            logs.push(log);
        }
        Replicas { children, logs }
    }

    /// The last lines of every replica's log.
    pub(crate) fn tails(&self) -> String {
        let mut out = String::new();
        for (i, log) in self.logs.iter().enumerate() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(30);
            out += &format!("--- replica {i} ({} lines) ---\n", lines.len());
            out += &lines[from..].join("\n");
            out += "\n";
        }
        out
    }

    /// The replica whose log says it started `batch_id`'s crawl.
    fn crawl_starter(&self, batch_id: &str) -> Option<usize> {
        self.logs.iter().position(|log| {
            std::fs::read_to_string(log)
                .unwrap_or_default()
                .lines()
                .any(|l| l.contains("CrawlStarted") && l.contains(batch_id))
        })
    }

    /// Log lines naming `event`, over every replica.
    fn count(&self, event: &str) -> usize {
        self.logs
            .iter()
            .map(|log| {
                std::fs::read_to_string(log)
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.contains(event))
                    .count()
            })
            .sum()
    }

    /// How often the replicas met each other, from their logs.
    pub(crate) fn encounters(&self) -> String {
        [
            "CrawlDeferred",
            "CrawlerBusy",
            "CrawlLeaseLost",
            "FileLeftBatch",
            "JobRunFound",
        ]
        .iter()
        .map(|e| format!("{e} {}", self.count(e)))
        .collect::<Vec<_>>()
        .join(", ")
    }

    /// SIGKILL: no drain, no cleanup.
    pub(crate) fn kill(&mut self, i: usize) {
        let mut child = self.children[i].take().expect("a live replica");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM to every live replica; each must drain and exit cleanly.
    pub(crate) fn stop(&mut self) {
        for child in self.children.iter().flatten() {
            let status = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status()
                .unwrap();
            assert!(status.success());
        }
        for (i, child) in self.children.iter_mut().enumerate() {
            if let Some(mut c) = child.take() {
                let status = c.wait().unwrap();
                assert!(status.success(), "replica {i} exited {status:?}");
            }
        }
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Every file record, following pages.
pub(crate) async fn all_files(state: &Arc<dyn StateStore>) -> Vec<FileRecord> {
    let query = FileQuery {
        dataset: None,
        state: None,
        limit: 500,
        after: None,
    };
    state.list_all(query).await.unwrap()
}

pub(crate) async fn all_batches(state: &Arc<dyn StateStore>) -> Vec<Batch> {
    let mut out = Vec::new();
    for s in [
        BatchState::Crawling,
        BatchState::Cataloged,
        BatchState::Transforming,
        BatchState::Ingested,
        BatchState::Failed,
    ] {
        out.extend(state.batches_in(s).await.unwrap());
    }
    out
}

/// Waits until `files` records are all INGESTED, calling `each` on every look (to kill a replica,
/// say). Fails with the counts by state and the replicas' logs.
async fn wait_ingested(
    state: &Arc<dyn StateStore>,
    files: usize,
    replicas: &mut Replicas,
    mut each: impl AsyncFnMut(&mut Replicas) -> (),
) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let counts = state.counts().await.unwrap();
        let ingested: u64 = counts
            .iter()
            .filter(|(_, s, _)| *s == FileState::Ingested)
            .map(|(_, _, n)| n)
            .sum();
        if ingested as usize == files {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{ingested} of {files} files INGESTED after {DEADLINE:?}; by state: {counts:?}\n{}",
            replicas.tails()
        );
        each(replicas).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What a run made.
#[derive(Debug)]
pub(crate) struct Figures {
    batches: usize,
    crawls: usize,
    job_runs: usize,
    /// Each dataset's batch sizes, in order of creation.
    sizes: BTreeMap<String, Vec<usize>>,
    /// Counts of the log lines where replicas met (deferred windows, busy crawler...).
    pub(crate) encounters: String,
}

/// A crawl's interval, from the batch that ran it or from the crawler's history.
type Interval = (DateTime<Utc>, DateTime<Utc>);

/// Sorted by start, each interval starts at or after the previous one ended.
fn assert_no_overlap(what: &str, mut intervals: Vec<Interval>) {
    intervals.sort();
    for w in intervals.windows(2) {
        assert!(
            w[1].0 >= w[0].1,
            "{what}: two crawls at once: {:?} and {:?}",
            w[0],
            w[1]
        );
    }
}

/// Checks the guarantees on what the store holds, given the job runs as (run id, batch id) and, on
/// the local backend, the crawler's history; returns the figures.
pub(crate) fn check(
    files: &[FileRecord],
    expected_files: usize,
    batches: &[Batch],
    job_runs: &[(String, String)],
    crawl_runs: Option<&[choreo_local::CrawlRun]>,
) -> Figures {
    // Every file INGESTED, in exactly one batch, and that batch is the one its record names.
    assert_eq!(files.len(), expected_files, "one record per file");
    let mut batch_of: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for b in batches {
        assert_eq!(
            b.state,
            BatchState::Ingested,
            "every batch succeeded: {b:#?}"
        );
        for f in &b.files {
            batch_of.entry(f.as_str()).or_default().push(&b.id);
        }
    }
    for r in files {
        assert_eq!(r.state, FileState::Ingested, "{r:#?}");
        let ids = batch_of.get(r.id.as_str()).cloned().unwrap_or_default();
        assert_eq!(ids.len(), 1, "{} is in batches {ids:?}", r.id);
        assert_eq!(r.batch_id.as_deref(), Some(ids[0]), "{r:#?}");
    }
    assert_eq!(batch_of.len(), files.len(), "batches hold only known files");

    // One job run per batch: none run twice, none without a run, none for an unknown batch.
    let mut runs_of: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (run, batch) in job_runs {
        runs_of.entry(batch).or_default().push(run);
    }
    let ids: BTreeSet<&str> = batches.iter().map(|b| b.id.as_str()).collect();
    assert_eq!(
        runs_of.keys().copied().collect::<BTreeSet<_>>(),
        ids,
        "job runs for exactly the batches"
    );
    for b in batches {
        let runs = &runs_of[b.id.as_str()];
        assert_eq!(runs.len(), 1, "batch {} ran {runs:?}", b.id);
        assert_eq!(b.job_run_id.as_deref(), Some(runs[0]), "{b:#?}");
    }

    // Per crawler, no two crawls overlap: a crawl is its lead's, and the batches riding along it
    // share its interval.
    let mut by_crawler: BTreeMap<&str, Vec<Interval>> = BTreeMap::new();
    let mut leads: BTreeMap<&str, Interval> = BTreeMap::new();
    for b in batches {
        let (Some(start), Some(end)) = (b.crawl_started_at, b.crawl_ended_at) else {
            panic!("batch {} has no crawl interval: {b:#?}", b.id);
        };
        assert!(start <= end, "{b:#?}");
        let lead = b.crawl_lead.as_deref().unwrap_or(&b.id);
        if let Some(shared) = leads.insert(lead, (start, end)) {
            assert_eq!(
                shared.0, start,
                "batches of crawl {lead} started apart: {b:#?}"
            );
        }
    }
    for b in batches {
        if b.crawl_lead.as_deref().is_none_or(|l| l == b.id) {
            by_crawler
                .entry(&b.crawler)
                .or_default()
                .push(leads[b.id.as_str()]);
        }
    }
    for (crawler, intervals) in by_crawler {
        assert_no_overlap(&format!("batches of {crawler}"), intervals);
    }

    // The crawler's own history, where there is one: no overlap either, every crawl finished, and
    // each batch's interval holds a crawl of its crawler.
    let crawls = match crawl_runs {
        Some(runs) => {
            let mut by_crawler: BTreeMap<&str, Vec<Interval>> = BTreeMap::new();
            for r in runs {
                let end = r
                    .finished_at
                    .unwrap_or_else(|| panic!("a crawl never finished: {r:?}"));
                assert_eq!(r.status.as_deref(), Some("SUCCEEDED"), "{r:?}");
                by_crawler
                    .entry(&r.crawler)
                    .or_default()
                    .push((r.started_at, end));
            }
            // A batch records its start just after the crawler's, or (taking over a crawl whose
            // start was not recorded) just before it.
            let slack = chrono::Duration::seconds(10);
            for b in batches {
                let (start, end) = (b.crawl_started_at.unwrap(), b.crawl_ended_at.unwrap());
                let held = by_crawler[b.crawler.as_str()]
                    .iter()
                    .any(|(s, e)| *s >= b.created_at && (*s - start).abs() <= slack && *e <= end);
                assert!(held, "no crawl of {} ran for batch {}", b.crawler, b.id);
            }
            for (crawler, intervals) in by_crawler {
                assert_no_overlap(&format!("crawl_runs of {crawler}"), intervals);
            }
            runs.len()
        }
        None => leads.len(),
    };
    let mut sorted: Vec<&Batch> = batches.iter().collect();
    sorted.sort_by_key(|b| b.created_at);
    let mut sizes: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for b in sorted {
        assert!(!b.files.is_empty(), "an empty batch: {b:#?}");
        sizes
            .entry(b.dataset.clone())
            .or_default()
            .push(b.files.len());
    }
    Figures {
        batches: batches.len(),
        crawls,
        job_runs: job_runs.len(),
        sizes,
        encounters: String::new(),
    }
}

/// The local backend's job runs, as (run id, batch id).
fn local_job_runs(dir: &Path) -> Vec<(String, String)> {
    let conn = rusqlite::Connection::open(dir.join("choreo.db")).unwrap();
    let mut stmt = conn
        .prepare("SELECT run_id, batch_id FROM job_runs ORDER BY started_at")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

async fn open_local(dir: &Path) -> (Pipeline, choreo_local::LocalBackend) {
    let settings = Settings::load(Some(&dir.join("choreo.toml"))).unwrap();
    let pipeline = Pipeline::open(settings).await.unwrap();
    let Backend::Local(local) = pipeline.backend.clone() else {
        panic!("the local backend")
    };
    (pipeline, local)
}

/// Waits until all `files` are INGESTED. With `kill_mid_crawl`, kills the replica that started a
/// crawl still running, and checks that the others finished its batch. Returns the seconds since
/// `started`.
async fn ingest_all(
    state: &Arc<dyn StateStore>,
    files: usize,
    replicas: &mut Replicas,
    kill_mid_crawl: bool,
    backend: &str,
    started: Instant,
) -> f64 {
    let mut killed = None;
    wait_ingested(state, files, replicas, async |replicas| {
        if !kill_mid_crawl || killed.is_some() {
            return;
        }
        let crawling = all_batches(state).await.into_iter().find(|b| {
            b.state == BatchState::Crawling
                && b.crawl_started_at.is_some()
                && b.crawl_ended_at.is_none()
        });
        if let Some(b) = crawling
            && let Some(i) = replicas.crawl_starter(&b.id)
        {
            replicas.kill(i);
            eprintln!(
                "replicas({backend}): killed replica {i}, which started {}'s crawl",
                b.id
            );
            killed = Some((i, b.id));
        }
    })
    .await;
    let wall = started.elapsed().as_secs_f64();
    if kill_mid_crawl {
        let (_, batch) = killed.as_ref().expect("a replica was killed mid-crawl");
        let b = state.get_batch(batch).await.unwrap().unwrap();
        assert_eq!(b.state, BatchState::Ingested, "the others finished it");
    }
    wall
}

/// Three local replicas take `files` files; `kill_mid_crawl` kills the one that started a crawl
/// while that crawl runs. Returns the figures after checking every guarantee.
async fn run_local(files: usize, crawl_min_secs: u64, kill_mid_crawl: bool) -> (Figures, f64) {
    choreo_telemetry::init_for_tests();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    write_config(dir, crawl_min_secs);
    let (pipeline, local) = open_local(dir).await;
    let state = pipeline.backend.ports().state;
    let mut replicas = Replicas::start(dir, || choreo(dir));

    let started = Instant::now();
    let input = pipeline.settings.config.buckets.input.clone();
    let objects = local.objects();
    for i in 0..files {
        let (key, body) = file(i);
        choreo_ports::ObjectStore::put(objects.as_ref(), &input, &key, body)
            .await
            .unwrap();
    }

    let wall = ingest_all(
        &state,
        files,
        &mut replicas,
        kill_mid_crawl,
        "local",
        started,
    )
    .await;
    replicas.stop();

    let records = all_files(&state).await;
    let batches = all_batches(&state).await;
    let runs = local_job_runs(dir);
    let history = local.crawler().history().unwrap();
    let mut figures = check(&records, files, &batches, &runs, Some(&history));
    figures.encounters = replicas.encounters();
    (figures, wall)
}

pub(crate) fn report(backend: &str, files: usize, f: &Figures, wall: f64) -> String {
    format!(
        "replicas({backend}): {files} files, {} batches, {} crawls, {} job runs, {wall:.1} s\n  \
         batch sizes {:?}\n  {}",
        f.batches, f.crawls, f.job_runs, f.sizes, f.encounters
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_local_replicas_take_500_files_with_one_crawl_at_a_time() {
    const FILES: usize = 500;
    let (figures, wall) = run_local(FILES, 2, false).await;
    eprintln!("{}", report("local", FILES, &figures, wall));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_local_replica_that_started_a_crawl_loses_nothing() {
    const FILES: usize = 60;
    let (figures, wall) = run_local(FILES, 6, true).await;
    eprintln!("{}", report("local, one killed", FILES, &figures, wall));
}

/// `choreo` on the aws backend against `moto`.
fn choreo_aws(moto: &Moto, dir: &Path) -> Command {
    let mut cmd = choreo(dir);
    cmd.arg("--backend")
        .arg("aws")
        .env("AWS_ENDPOINT_URL", &moto.endpoint)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    cmd
}

/// The Glue job's runs, as (run id, batch id).
pub(crate) async fn glue_job_runs(clients: &AwsClients, job: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = clients
            .glue
            .get_job_runs()
            .job_name(job)
            .set_next_token(token)
            .send()
            .await
            .unwrap();
        for run in page.job_runs() {
            let batch = run
                .arguments()
                .and_then(|a| a.get(JobArgs::BATCH_ID))
                .cloned()
                .unwrap_or_default();
            out.push((run.id().unwrap_or_default().to_string(), batch));
        }
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            return out;
        }
    }
}

/// Three aws replicas (three `choreo up --backend aws`) against one moto take `files` files;
/// `crawl_secs` is how long moto's crawls take. With `kill_mid_crawl`, the replica that started a
/// crawl is killed while it runs.
async fn run_aws(files: usize, crawl_secs: u64, kill_mid_crawl: bool) -> (Figures, f64) {
    choreo_telemetry::init_for_tests();
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    write_config(dir, 0);
    ok(choreo_aws(&moto, dir).arg("bootstrap").output().unwrap());
    moto.set_transition_seconds("glue::crawl", crawl_secs);
    let mut settings = Settings::load(Some(&dir.join("choreo.toml"))).unwrap();
    settings.config.aws.endpoint_url = Some(moto.endpoint.clone());
    let clients = AwsClients::emulator(&moto.endpoint).await;
    let backend = AwsBackend::with_clients(clients.clone(), &settings.config);
    let state = backend.ports().state;
    let mut replicas = Replicas::start(dir, || choreo_aws(&moto, dir));

    let started = Instant::now();
    let input = settings.config.buckets.input.clone();
    for i in 0..files {
        let (key, body) = file(i);
        clients
            .s3
            .put_object()
            .bucket(&input)
            .key(key)
            .body(body.into())
            .send()
            .await
            .unwrap();
    }

    let wall = ingest_all(&state, files, &mut replicas, kill_mid_crawl, "aws", started).await;
    replicas.stop();

    let records = all_files(&state).await;
    let batches = all_batches(&state).await;
    let runs = glue_job_runs(&clients, &settings.config.aws.builtin_job).await;
    let mut figures = check(&records, files, &batches, &runs, None);
    figures.encounters = replicas.encounters();
    (figures, wall)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_aws_replicas_against_moto_keep_the_guarantees() {
    const FILES: usize = 40;
    let (figures, wall) = run_aws(FILES, 2, false).await;
    eprintln!("{}", report("aws", FILES, &figures, wall));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_aws_replica_that_started_a_crawl_loses_nothing() {
    const FILES: usize = 30;
    let (figures, wall) = run_aws(FILES, 5, true).await;
    eprintln!("{}", report("aws, one killed", FILES, &figures, wall));
}

/// A replica that started a crawl and died before recording it: its redelivered `CrawlPoll` finds the
/// crawler running. It must take that crawl as its batch's own, not wait for it to end — on the local
/// backend only a poll ends a crawl, so waiting would hold the crawler (and every dataset on it)
/// forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crawl_started_by_a_replica_that_died_is_taken_over() {
    use choreo_domain::{Envelope, Event};
    use choreo_ports::{CrawlStart, ReceivedMessage};
    choreo_telemetry::init_for_tests();
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), 0);
    let (pipeline, _) = open_local(dir.path()).await;
    let ports = pipeline.backend.ports();
    let config = &pipeline.settings.config;
    let d = &config.datasets[0];
    let batch = Batch::new(
        "b-orders_a-died".into(),
        &d.name,
        d.crawler_name(),
        d.job.clone(),
        BatchState::Crawling,
        Vec::new(),
    );
    ports.state.create_batch(&batch).await.unwrap();
    let ctx = choreo_runtime::ServiceContext::new(
        pipeline.settings.clone(),
        ports.clone(),
        pipeline.backend.queue(&config.queues.crawl),
    );
    let handler = choreo_crawler::handler(&ctx);
    let poll = || ReceivedMessage {
        id: "m".into(),
        receipt: "r".into(),
        body: Envelope::new(Event::CrawlPoll {
            batch_id: batch.id.clone(),
        })
        .to_json(),
        attributes: BTreeMap::new(),
        receive_count: 1,
        sent_at: Utc::now(),
        first_received_at: None,
    };

    // The first delivery starts the crawl; the replica "dies" before recording it, which is the
    // batch as stored before the poll, crawler running.
    handler.handle(&poll()).await.unwrap();
    let started = ports.state.get_batch(&batch.id).await.unwrap().unwrap();
    assert!(started.crawl_started, "{started:#?}");
    let mut lost = started.clone();
    lost.crawl_started = false;
    assert_eq!(
        ports
            .state
            .update_batch(&mut lost, BatchState::Crawling)
            .await
            .unwrap(),
        choreo_ports::BatchOutcome::Applied
    );
    assert_eq!(
        ports.crawler.start_crawl(&batch.crawler).await.unwrap(),
        CrawlStart::AlreadyRunning
    );

    // Redelivered: it takes the running crawl, and the next poll sees it end.
    for _ in 0..3 {
        handler.handle(&poll()).await.unwrap();
    }
    let b = ports.state.get_batch(&batch.id).await.unwrap().unwrap();
    assert_eq!(b.state, BatchState::Cataloged, "{b:#?}");
    assert!(b.crawl_started_at.is_some() && b.crawl_ended_at.is_some());
}
