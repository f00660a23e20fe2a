//! The `choreo` command line: argument parsing and one function per command.

use crate::app::{Pipeline, Summary};
use crate::demo;
use crate::progress::{bytes_bar, progress_bar};
use crate::terminal::escape;
use anyhow::{Context, bail};
use choreo_domain::config::BackendKind;
use choreo_domain::{FileId, FileRecord, FileState, Stage};
use choreo_runtime::dlq::{DeadBody, DeadLetter, Selection};
use choreo_runtime::retry::{RetryReport, RetryScope};
use choreo_runtime::{ServiceContext, Settings};
use choreo_validation::SchemaCheck;
use clap::{Args, Parser, Subcommand};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "choreo",
    version,
    about = "Event-driven ETL choreography: files through validation, quarantine, cataloguing and transformation."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Configuration file (TOML). Default: <data-dir>/choreo.toml if it exists.
    #[arg(long, global = true, env = "CHOREO_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory of the local backend. Default: .choreo
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// Backend: local (SQLite and directories) or aws.
    #[arg(long, global = true, value_parser = ["local", "aws"])]
    pub backend: Option<String>,
    /// No progress bars or progress lines (results and errors are still printed).
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every stage in this process.
    Up(UpArgs),
    /// Drop files into the input bucket.
    Put(PutArgs),
    /// Read file records.
    #[command(subcommand)]
    Files(FilesCommand),
    /// Create every resource the pipeline needs (idempotent): queues, topics, buckets, tables, Glue.
    Bootstrap,
    /// Validate a file against a Table Schema; exit 0 if valid, 1 if invalid, 2 on a usage error.
    Validate(ValidateArgs),
    /// Inspect, redrive and purge the stages' dead-letter queues.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Register objects already in the input bucket that have no record (objects with one are left
    /// alone; running it twice changes nothing).
    Backfill {
        /// Only objects whose key starts with this.
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// Benchmark the local pipeline end to end: generated files through a child `choreo up` on a
    /// fresh data directory; throughput, CPU, memory, latency per transition, lost timers, and an
    /// idle `up`'s cost. Exit 0 if every file was INGESTED and no timer was lost, 1 if not. It makes
    /// its own data directories: --config and --data-dir do not apply.
    Bench(crate::bench::BenchArgs),
    /// Scheduled extracts: list them, tick one by hand, see ticks and their per-key units, retry.
    #[command(subcommand)]
    Extract(crate::extract_cli::ExtractCommand),
    /// The business keys of scheduled extracts: list, put, disable, enable.
    #[command(subcommand)]
    Keys(crate::extract_cli::KeysCommand),
    /// Run one built-in transform for the local job runner, which starts it as a child process:
    /// the request on stdin, the answer on stdout (`choreo_local::worker`).
    #[command(name = "job-worker", hide = true)]
    JobWorker,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Every stage's dead-letter queue: depth and oldest message age.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show dead letters without taking them: the decoded envelope, the file, receive count and
    /// first receive time. On SQS each one shown counts as a receive.
    Peek {
        /// ingestor, validator, quarantine, crawler, transformer or auditor.
        #[arg(value_parser = service_stage)]
        stage: Stage,
        /// How many to show.
        #[arg(short = 'n', default_value_t = 10)]
        n: usize,
        #[arg(long)]
        json: bool,
    },
    /// Send dead letters back to the stage's queue, attributes (trace context) included. Each is
    /// copied before it is deleted, so an interrupted redrive loses nothing.
    Redrive {
        /// ingestor, validator, quarantine, crawler, transformer or auditor.
        #[arg(value_parser = service_stage)]
        stage: Stage,
        /// Every message in the dead-letter queue when the redrive starts.
        #[arg(long, conflicts_with = "id", required_unless_present = "id")]
        all: bool,
        /// Only these message ids (as `peek` shows them).
        #[arg(long, num_args = 1..)]
        id: Vec<String>,
    },
    /// Delete every message of the stage's dead-letter queue, after confirmation.
    Purge {
        /// ingestor, validator, quarantine, crawler, transformer or auditor.
        #[arg(value_parser = service_stage)]
        stage: Stage,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The file to check (CSV or JSON Lines; plain, .gz or .zst).
    pub file: PathBuf,
    /// A Frictionless Table Schema (JSON).
    #[arg(long)]
    pub schema: PathBuf,
    /// csv or jsonl; by default from the file's extension.
    #[arg(long, value_parser = ["csv", "jsonl"])]
    pub format: Option<String>,
    /// CSV delimiter.
    #[arg(long, default_value = ",")]
    pub delimiter: char,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Write a demo configuration and sample files first (only if the data directory has no config).
    #[arg(long)]
    pub demo: bool,
    /// Exit once every file is in a terminal state, printing a summary.
    #[arg(long)]
    pub exit_when_idle: bool,
}

#[derive(Debug, Args)]
pub struct PutArgs {
    /// Files to upload.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Object key (one file only). Default: <prefix><file name>. A key the pipeline does not take
    /// (a hidden name, a backslash, a control character, `..`) is refused: exit 2, nothing uploaded.
    #[arg(long)]
    pub key: Option<String>,
    /// Prefix for keys made from file names, such as `daily/`.
    #[arg(long, default_value = "")]
    pub prefix: String,
}

#[derive(Debug, Subcommand)]
pub enum FilesCommand {
    /// List files, newest id order.
    List {
        #[arg(long)]
        dataset: Option<String>,
        /// NEW, VALID, INVALID, QUARANTINED, CATALOGED, TRANSFORMING, INGESTED or FAILED.
        #[arg(long)]
        state: Option<FileState>,
        #[arg(long)]
        json: bool,
    },
    /// Show one file with its history.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Resume FAILED files from before the step that failed: one file, a batch's, or a dataset's.
    #[command(group(clap::ArgGroup::new("scope").required(true).args(["id", "batch", "dataset"])))]
    Retry {
        /// The FAILED file to retry.
        id: Option<String>,
        /// Retry the FAILED files of this batch.
        #[arg(long)]
        batch: Option<String>,
        /// Retry every FAILED file of this dataset.
        #[arg(long)]
        dataset: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

/// A stage that has a queue (the operator has none).
fn service_stage(s: &str) -> Result<Stage, String> {
    match s.parse::<Stage>()? {
        Stage::Operator => Err("the operator has no queue".into()),
        stage => Ok(stage),
    }
}

/// Loads the settings the global options point at.
fn settings(global: &Global) -> anyhow::Result<Settings> {
    let data_dir = global
        .data_dir
        .clone()
        .or_else(|| std::env::var_os("CHOREO_DATA_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(".choreo"));
    let file = global.config.clone().or_else(|| {
        let p = data_dir.join(demo::CONFIG_FILE);
        p.exists().then_some(p)
    });
    let mut settings = Settings::load(file.as_deref())?;
    if global.data_dir.is_some() || file.is_none() {
        settings.config.data_dir = data_dir;
    }
    if let Some(b) = &global.backend {
        settings.config.backend = match b.as_str() {
            "aws" => BackendKind::Aws,
            _ => BackendKind::Local,
        };
    }
    Ok(settings)
}

pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    crate::progress::set_quiet(cli.global.quiet);
    match cli.command {
        Command::Up(args) => up(&cli.global, args).await,
        Command::Put(args) => put(&cli.global, args).await,
        Command::Files(cmd) => files(&cli.global, cmd).await,
        Command::Bootstrap => bootstrap(&cli.global).await,
        Command::Validate(args) => validate(args),
        Command::Dlq(cmd) => dlq(&cli.global, cmd).await,
        Command::Backfill { prefix } => backfill(&cli.global, &prefix).await,
        Command::Bench(args) => crate::bench::run(args).await,
        Command::Extract(cmd) => {
            let pipeline = Pipeline::open(settings(&cli.global)?).await?;
            crate::extract_cli::extract(&pipeline, cmd).await
        }
        Command::Keys(cmd) => {
            let pipeline = Pipeline::open(settings(&cli.global)?).await?;
            crate::extract_cli::keys(&pipeline, cmd).await
        }
        Command::JobWorker => Ok(choreo_local::worker::serve_worker().await),
    }
}

async fn dlq(global: &Global, cmd: DlqCommand) -> anyhow::Result<i32> {
    let pipeline = Pipeline::open(settings(global)?).await?;
    let queues = pipeline.monitor.ports().queues;
    let queues = queues.as_ref();
    let config = &pipeline.settings.config;
    match cmd {
        DlqCommand::List { json } => {
            let list = choreo_runtime::dlq::list(queues, config).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(0);
            }
            println!(
                "{:<12} {:<32} {:>8}  OLDEST",
                "STAGE", "DEAD-LETTER QUEUE", "DEPTH"
            );
            for s in list {
                println!(
                    "{:<12} {:<32} {:>8}  {}",
                    s.stage.as_str(),
                    s.dlq,
                    s.depth,
                    s.oldest_age_secs.map(age).unwrap_or_else(|| "-".into())
                );
            }
            Ok(0)
        }
        DlqCommand::Peek { stage, n, json } => {
            let dead = choreo_runtime::dlq::peek(queues, config, stage, n).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&dead)?);
            } else {
                for d in &dead {
                    print_dead_letter(d);
                }
                println!("{} message(s) shown", dead.len());
            }
            Ok(0)
        }
        DlqCommand::Redrive { stage, all, id } => {
            let dlq = dlq_name(config, stage)?;
            let (selection, len) = if all {
                let depth = queues.queue(&dlq).depth().await?.total();
                (Selection::All, depth)
            } else {
                let len = id.len() as u64;
                (Selection::Ids(id), len)
            };
            let bar = progress_bar(len, &format!("redrive {stage}"));
            let report =
                choreo_runtime::dlq::redrive(queues, config, stage, &selection, &mut |n| {
                    bar.set_position(n)
                })
                .await;
            bar.finish_and_clear();
            let report = report?;
            println!("redrove {} message(s) from {dlq}", report.moved);
            for id in &report.missing {
                eprintln!("not found in {dlq}: {}", escape(id));
            }
            Ok(if report.missing.is_empty() { 0 } else { 1 })
        }
        DlqCommand::Purge { stage, yes } => {
            let dlq = dlq_name(config, stage)?;
            if !yes {
                let depth = queues.queue(&dlq).depth().await?.total();
                print!("Purge {depth} messages from {dlq}? [y/N] ");
                std::io::stdout().flush()?;
                let mut answer = String::new();
                std::io::stdin().read_line(&mut answer)?;
                if !matches!(answer.trim().to_lowercase().as_str(), "y" | "yes") {
                    println!("nothing purged");
                    return Ok(1);
                }
            }
            let n = choreo_runtime::dlq::purge(queues, config, stage).await?;
            println!("purged {n} message(s) from {dlq}");
            Ok(0)
        }
    }
}

fn dlq_name(config: &choreo_domain::Config, stage: Stage) -> anyhow::Result<String> {
    let queue = config
        .queue_of(stage)
        .with_context(|| format!("stage {stage} has no queue"))?;
    Ok(choreo_domain::config::Queues::dlq_of(queue))
}

/// An age in the largest unit that keeps it readable.
fn age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn print_dead_letter(d: &DeadLetter) {
    println!("message  {}", d.message_id);
    match (&d.file_id, &d.key) {
        (Some(id), Some(key)) => println!("file     {id} ({})", escape(key)),
        (Some(id), None) => println!("file     {id}"),
        _ => {}
    }
    match &d.body {
        DeadBody::Envelope(env) => {
            println!("event    {} (id {})", env.event.kind().as_str(), env.id);
            println!(
                "body     {}",
                escape(&serde_json::to_string(&env.event).unwrap_or_default())
            );
        }
        DeadBody::Raw(body) => {
            let shown: String = body.chars().take(300).collect();
            let more = if shown.len() < body.len() { " ..." } else { "" };
            println!("raw      {}{more}", escape(&shown));
        }
    }
    let first = d
        .first_received_at
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| "-".into());
    println!(
        "received {} time(s), first at {first}; sent at {}",
        d.receive_count,
        d.sent_at.format("%Y-%m-%dT%H:%M:%SZ")
    );
    if let Some(tp) = d.attributes.get(choreo_domain::event::ATTR_TRACEPARENT) {
        println!("trace    {}", escape(tp));
    }
    println!();
}

async fn backfill(global: &Global, prefix: &str) -> anyhow::Result<i32> {
    use choreo_ingestor::backfill::BackfillProgress;
    let pipeline = Pipeline::open(settings(global)?).await?;
    let ctx = ServiceContext::new(
        pipeline.settings.clone(),
        pipeline.monitor.ports(),
        pipeline
            .monitor
            .queue(&pipeline.settings.config.queues.ingest),
    );
    let bar = progress_bar(0, "backfill");
    let report = choreo_ingestor::backfill::backfill(&ctx, prefix, &mut |p| match p {
        BackfillProgress::Listed(n) => bar.set_length(n),
        BackfillProgress::Done(n) => bar.set_position(n),
    })
    .await;
    bar.finish_and_clear();
    let report = report?;
    println!(
        "{} object(s) under \"{}\": {} registered, {} already recorded, {} refused (KeyRefused in the log)",
        report.listed,
        escape(prefix),
        report.registered,
        report.recorded,
        report.refused
    );
    Ok(0)
}

async fn up(global: &Global, args: UpArgs) -> anyhow::Result<i32> {
    let mut global_for_load = Global {
        config: global.config.clone(),
        data_dir: global.data_dir.clone(),
        backend: global.backend.clone(),
        quiet: global.quiet,
    };
    // The demo's configuration is written under a temporary name and renamed once the samples are
    // in: a demo killed half-way through writing starts over rather than running with half its files.
    let mut demo_to_finish = None;
    if args.demo && global.config.is_none() {
        let dir = global
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(".choreo"));
        let config = dir.join(demo::CONFIG_FILE);
        if config.exists() {
            global_for_load.config = Some(config);
        } else {
            let partial = demo::write_config(&dir, "choreo.toml.partial")
                .with_context(|| format!("writing the demo configuration in {}", dir.display()))?;
            global_for_load.config = Some(partial.clone());
            demo_to_finish = Some((partial, config));
        }
    }
    let settings = settings(&global_for_load)?;
    let pipeline = Pipeline::open(settings).await?;
    // `up` ends with the bill of its AWS calls.
    pipeline.backend.price_api_calls();
    if args.demo {
        for step in pipeline.monitor.bootstrap().await? {
            eprintln!("bootstrap: {step}");
        }
    }
    if let Some((partial, config)) = demo_to_finish {
        let samples = demo::samples();
        let input = &pipeline.settings.config.buckets.input;
        for s in &samples {
            pipeline
                .monitor
                .ports()
                .objects
                .put(input, &s.key, s.body.clone())
                .await?;
        }
        std::fs::rename(&partial, &config)?;
        let bad = samples.iter().filter(|s| s.defect.is_some()).count();
        eprintln!(
            "demo: wrote {} with {} sample files ({} valid, {} invalid) into bucket {input}",
            config.display(),
            samples.len(),
            samples.len() - bad,
            bad
        );
    }
    let c = &pipeline.settings.config;
    eprintln!(
        "choreo up: backend {:?}, data dir {}, {} dataset(s); drop files into {}",
        c.backend,
        c.data_dir.display(),
        c.datasets.len(),
        c.data_dir.join("buckets").join(&c.buckets.input).display()
    );
    let shutdown = choreo_runtime::shutdown::on_signals();
    let addr_file = choreo_auditor::server::addr_file(&c.data_dir);
    let _ = std::fs::remove_file(&addr_file); // left by a run that was killed
    // Before the services start, so that the recorder counts from their first message. The
    // monitor's connection answers `/ready`: on AWS the services' own API calls stay countable.
    let queues = c.all_queues();
    let ops_stop = CancellationToken::new();
    if let Some(addr) = choreo_backend::start_ops(c, &pipeline.monitor, &queues, &ops_stop).await {
        eprintln!("metrics: http://{addr}/metrics");
    }
    let tasks = pipeline.start(&shutdown);
    if let Some(link) = dashboard_link(c, &addr_file, &shutdown).await {
        eprintln!("dashboard: {link}");
    }
    if args.exit_when_idle {
        let stop = CancellationToken::new();
        let progress = tokio::spawn(crate::progress::watch_up(pipeline.clone(), stop.clone()));
        let idle = pipeline.wait_until_idle(&shutdown).await;
        stop.cancel();
        let _ = progress.await;
        idle?;
        shutdown.cancel();
    }
    tasks.wait().await;
    ops_stop.cancel();
    let summary = pipeline.summary().await?;
    print_summary(&summary);
    if let Some(bill) = pipeline.backend.api_bill() {
        let files = summary.iter().map(|(_, _, n)| n).sum();
        println!("\nAWS API calls by the services, for {files} file(s):");
        print!("{}", choreo_aws::cost::report(&bill, files));
    }
    Ok(0)
}

/// The dashboard's address, once the auditor has bound it, with the token in the URL fragment:
/// browsers never send the fragment to the server, and the page moves it to the tab's storage.
async fn dashboard_link(
    c: &choreo_domain::Config,
    addr_file: &Path,
    shutdown: &CancellationToken,
) -> Option<String> {
    let listen = c.operations.listen.as_ref()?;
    let addr = if c.backend == BackendKind::Local {
        // The auditor writes the bound address (the port may be chosen by the system); a bind
        // error leaves no file and no link, and the auditor's log says why.
        let mut waited = Duration::ZERO;
        loop {
            if let Ok(a) = std::fs::read_to_string(addr_file) {
                break a;
            }
            if waited >= Duration::from_secs(5) || shutdown.is_cancelled() {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            waited += Duration::from_millis(50);
        }
    } else {
        listen.clone()
    };
    Some(match c.operations.api_token.as_deref() {
        Some(token) if !token.is_empty() => format!("http://{addr}/#token={token}"),
        _ => format!("http://{addr}/ (operations.api_token is not set: the API answers 401)"),
    })
}

async fn bootstrap(global: &Global) -> anyhow::Result<i32> {
    let pipeline = Pipeline::open(settings(global)?).await?;
    for step in pipeline.monitor.bootstrap().await? {
        println!("{step}");
    }
    Ok(0)
}

fn print_summary(summary: &Summary) {
    let mut by_dataset: BTreeMap<&str, BTreeMap<FileState, u64>> = BTreeMap::new();
    for (d, s, n) in summary {
        *by_dataset.entry(d).or_default().entry(*s).or_default() += n;
    }
    println!("{:<24} {:<14} {:>6}", "DATASET", "STATE", "FILES");
    for (d, states) in by_dataset {
        for (s, n) in states {
            println!("{:<24} {:<14} {n:>6}", escape(d), s.as_str());
        }
    }
}

async fn put(global: &Global, args: PutArgs) -> anyhow::Result<i32> {
    if args.key.is_some() && args.files.len() != 1 {
        bail!("--key names one object: give exactly one file");
    }
    // Every key is checked before anything is uploaded: the pipeline would never register an
    // object under a key it does not take, so saying yes to one would lose the file quietly.
    let mut uploads = Vec::with_capacity(args.files.len());
    for path in &args.files {
        let key = match &args.key {
            Some(k) => k.clone(),
            None => format!("{}{}", args.prefix, file_name(path)?),
        };
        if let Err(why) = choreo_domain::key::check(&key) {
            bail!("key {key:?} refused, nothing uploaded: {why}");
        }
        uploads.push((path, key));
    }
    let settings = settings(global)?;
    let pipeline = Pipeline::open(settings).await?;
    let objects = pipeline.monitor.ports().objects;
    let bucket = &pipeline.settings.config.buckets.input;
    // Sizes up front, for a bar of bytes; a file that cannot be read fails at its upload.
    let sizes: Vec<u64> = uploads
        .iter()
        .map(|(path, _)| std::fs::metadata(path).map_or(0, |m| m.len()))
        .collect();
    let bar = bytes_bar(sizes.iter().sum(), "put");
    let files = uploads.len();
    for (done, ((path, key), size)) in uploads.into_iter().zip(sizes).enumerate() {
        bar.set_message(format!("{done}/{files} files"));
        let uploaded = objects.put_file(bucket, &key, path).await;
        if uploaded.is_err() {
            bar.finish_and_clear();
        }
        uploaded.with_context(|| format!("uploading {}", path.display()))?;
        bar.inc(size);
        bar.suspend(|| {
            println!(
                "{} -> {}/{}",
                escape(&path.display().to_string()),
                escape(bucket),
                escape(&key)
            )
        });
    }
    bar.finish_and_clear();
    Ok(0)
}

fn file_name(path: &Path) -> anyhow::Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .with_context(|| format!("{} has no usable file name", path.display()))
}

async fn files(global: &Global, cmd: FilesCommand) -> anyhow::Result<i32> {
    let pipeline = Pipeline::open(settings(global)?).await?;
    match cmd {
        FilesCommand::List {
            dataset,
            state,
            json,
        } => {
            let records = pipeline.files(dataset, state).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&records)?);
            } else {
                print_list(&records);
            }
            Ok(0)
        }
        FilesCommand::Show { id, json } => {
            let store = pipeline.monitor.ports().state;
            let Some(record) = store.get(&FileId(id.clone())).await? else {
                eprintln!("no file with id {}", escape(&id));
                return Ok(1);
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&record)?);
            } else {
                let ops = &pipeline.settings.config.operations;
                print_record(&record, |t| ops.trace_link(t));
            }
            Ok(0)
        }
        FilesCommand::Retry {
            id,
            batch,
            dataset,
            json,
        } => {
            let scope = match (id, batch, dataset) {
                (Some(id), _, _) => RetryScope::File(FileId(id)),
                (_, Some(b), _) => RetryScope::Batch(b),
                (_, _, Some(d)) => RetryScope::Dataset(d),
                _ => unreachable!("clap requires one of them"),
            };
            let report = pipeline.retry(&scope).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_retry(&report);
            }
            Ok(if report.retried() == 0 { 1 } else { 0 })
        }
    }
}

fn print_retry(report: &RetryReport) {
    for id in &report.revalidated {
        println!("{id}  FAILED -> VALID (the crawler poller batches it again)");
    }
    for (batch, files) in &report.rebatched {
        for id in files {
            println!("{id}  FAILED -> CATALOGED in batch {batch}");
        }
    }
    for (id, why) in &report.skipped {
        println!("{id}  skipped: {}", escape(why));
    }
    println!(
        "{} file(s) retried, {} skipped",
        report.retried(),
        report.skipped.len()
    );
}

fn print_list(records: &[FileRecord]) {
    println!(
        "{:<22} {:<18} {:<12} {:>10}  {:<32} REASON",
        "ID", "DATASET", "STATE", "BYTES", "KEY"
    );
    for r in records {
        println!(
            "{:<22} {:<18} {:<12} {:>10}  {:<32} {}",
            r.id,
            escape(&r.dataset),
            r.state.as_str(),
            r.size,
            escape(&r.key),
            escape(r.reason.as_deref().unwrap_or(""))
        );
    }
    println!("{} file(s)", records.len());
}

fn print_record(r: &FileRecord, trace_link: impl Fn(&str) -> Option<String>) {
    println!("id:         {}", r.id);
    println!("dataset:    {}", escape(&r.dataset));
    println!(
        "object:     {}/{} ({} bytes, version {})",
        escape(&r.bucket),
        escape(&r.key),
        r.size,
        escape(&r.version)
    );
    println!("state:      {}", r.state);
    if let Some(reason) = &r.reason {
        println!("reason:     {}", escape(reason));
    }
    if let Some(v) = &r.validation {
        println!("validation: {}", escape(v));
    }
    if let Some(b) = &r.batch_id {
        println!("batch:      {}", escape(b));
    }
    if let Some(t) = &r.trace_id {
        println!("trace:      {t}");
        if let Some(url) = trace_link(t) {
            println!("trace url:  {}", escape(&url));
        }
    }
    if let Some(m) = &r.sweep {
        println!(
            "sweep:      {} since {}; message sent again {} time(s){}",
            m.state,
            r.updated_at.format("%Y-%m-%dT%H:%M:%SZ"),
            m.republished,
            if m.stuck { "; STUCK, alerted" } else { "" }
        );
    }
    println!("history:");
    for h in &r.history {
        println!(
            "  {}  {:<12} {:>12} -> {:<12} {}",
            h.at.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
            h.stage.as_str(),
            h.from.map(FileState::as_str).unwrap_or("-"),
            h.to.as_str(),
            escape(h.reason.as_deref().unwrap_or(""))
        );
    }
}

/// From this size on, `choreo validate` shows the bytes it has read.
const LARGE_FILE: u64 = 16 << 20;

fn validate(args: ValidateArgs) -> anyhow::Result<i32> {
    use choreo_validation::{Compression, CsvDialect, Format, Limits, TableSchema};
    let schema_text = std::fs::read_to_string(&args.schema)
        .with_context(|| format!("reading the schema {}", args.schema.display()))?;
    let schema = TableSchema::from_json(&schema_text)
        .with_context(|| format!("the schema {}", args.schema.display()))?;
    let name = args.file.to_string_lossy().to_lowercase();
    let compression = Compression::from_key(&name);
    let jsonl = match args.format.as_deref() {
        Some(f) => f == "jsonl",
        None => name.contains(".jsonl") || name.contains(".ndjson"),
    };
    let format = if jsonl {
        Format::JsonLines
    } else {
        if !args.delimiter.is_ascii() {
            bail!("the delimiter must be one ASCII character");
        }
        Format::Csv(CsvDialect {
            delimiter: args.delimiter as u8,
            ..CsvDialect::default()
        })
    };
    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("opening {}", args.file.display()))?;
    // Bytes read from the file (compressed, if it is): a small file is done before a bar helps.
    let len = file.metadata().map_or(0, |m| m.len());
    let bar = if len >= LARGE_FILE {
        bytes_bar(len, "validate")
    } else {
        indicatif::ProgressBar::hidden()
    };
    let report = choreo_validation::validate(
        std::io::BufReader::new(bar.wrap_read(file)),
        &format,
        compression,
        &schema,
        // One file, the machine to itself: a second core checks while this one reads (the
        // services use one thread a file and spread files over the cores instead).
        &Limits {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get().min(2)),
            ..Limits::default()
        },
    );
    bar.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{}: {}",
            escape(&args.file.display().to_string()),
            escape(&report.summary())
        );
        for e in &report.errors {
            println!(
                "  row {:>8}  {:<16} {:<20} {}",
                e.row.map(|r| r.to_string()).unwrap_or_else(|| "-".into()),
                escape(e.field.as_deref().unwrap_or("-")),
                e.kind.as_str(),
                escape(&e.message)
            );
        }
        let shown = report.errors.len() as u64;
        if report.error_total() > shown {
            println!("  ... and {} more", report.error_total() - shown);
        }
    }
    Ok(if report.valid { 0 } else { 1 })
}
