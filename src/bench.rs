//! `choreo bench`: how fast the local pipeline carries files end to end, and what it costs.
//!
//! Choreo replaces a Step Functions state machine, whose account-wide quota of state transitions
//! caps it at about 125 files a second. The bench shows where the choreography stands against that
//! on the machine at hand, with one command: it drops N generated, valid `sales_daily` files on a
//! fresh data directory (all at once before `choreo up` starts, or at a steady rate while it runs),
//! runs `up` as a child process, and reports
//!
//! - throughput: files a second from the first landing to the last file in a terminal state;
//! - the child's CPU (200% = two cores busy) over that time, and its peak resident memory;
//! - latency per transition and from landing, from the records' histories (p50, p99, max);
//! - timers the watchdogs had to recover (`Lost…` log events): a lost timer is a bug, not load;
//! - what an idle `up` on an empty data directory costs in CPU and memory.
//!
//! It exits 0 only when every file reached INGESTED and no timer was lost.

use crate::app::Pipeline;
use crate::demo;
use crate::progress::progress_bar;
use anyhow::{Context, bail};
use choreo_domain::config::BackendKind;
use choreo_domain::{FileRecord, FileState};
use choreo_runtime::Settings;
use chrono::{DateTime, TimeDelta, Utc};
use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Step Functions Standard's ceiling for this pipeline: 1,500 state transitions a second (the
/// account-wide refill rate of the largest regions) over the 12 transitions of one file.
const STEP_FUNCTIONS_FILES_PER_SEC: f64 = 1500.0 / 12.0;

/// The demo dataset the generated files belong to.
const DATASET: &str = "sales_daily";

/// What `choreo up` prints once its pipeline is open, just before its services start.
const UP_STARTED: &str = "choreo up: backend";

/// How long an idle `up` runs before it is measured: start-up is not idling.
const IDLE_SETTLE: Duration = Duration::from_secs(3);

/// How long a SIGTERM-ed `up` may take to drain before it is killed.
const DRAIN: Duration = Duration::from_secs(60);

/// How often the bench looks at the file states.
const WATCH_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, Args, Serialize)]
pub struct BenchArgs {
    /// Another benchmark than the pipeline's.
    #[command(subcommand)]
    #[serde(skip)]
    pub what: Option<BenchWhat>,
    /// Files to put through the pipeline.
    #[arg(long, default_value_t = 2000)]
    pub files: usize,
    /// Rows per file.
    #[arg(long, default_value_t = 20)]
    pub rows: usize,
    /// How the batches are catalogued: direct (no crawl) or crawler (a local crawl per batch).
    #[arg(
        long,
        value_enum,
        default_value = "direct",
        default_value_if("crawl_secs", clap::builder::ArgPredicate::IsPresent, "crawler")
    )]
    pub catalog: Catalog,
    /// A batch closes as soon as it holds this many files...
    #[arg(long, default_value_t = 1000)]
    pub batch_max_files: usize,
    /// ...or this many seconds after its first valid file.
    #[arg(long, default_value_t = 1)]
    pub batch_window_secs: u64,
    /// Seconds a local crawl takes at least ([local] crawl_min_secs); implies --catalog crawler.
    #[arg(long, default_value_t = 0)]
    pub crawl_secs: u64,
    /// Files offered a second while `up` runs, through the object store as `choreo put` does;
    /// 0: all files dropped into the input bucket's directory before `up` starts.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Seconds to measure an idle `up` on an empty data directory after the load; 0 skips it.
    #[arg(long, default_value_t = 10)]
    pub idle_secs: u64,
    /// Give up on the load after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
    /// Make the data directories here (DIR/load, DIR/idle; DIR must be empty or new) and keep them.
    /// By default they go to a temporary directory, removed unless the run fails.
    #[arg(long, value_name = "DIR")]
    #[serde(skip)]
    pub keep: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    #[serde(skip)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum BenchWhat {
    /// The built-in transform on one large batch, in a job worker as the local runner runs it:
    /// MiB/s and peak memory (docs/benchmarks.md).
    Transform(crate::bench_transform::TransformBenchArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Catalog {
    Direct,
    Crawler,
}

impl Catalog {
    fn as_str(self) -> &'static str {
        match self {
            Catalog::Direct => "direct",
            Catalog::Crawler => "crawler",
        }
    }
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    params: &'a BenchArgs,
    machine: Machine,
    load: Load,
    idle: Option<Idle>,
    step_functions: StepFunctions,
    /// Why the run failed; empty when every file was INGESTED and no timer was lost.
    failures: Vec<String>,
    /// Where the data directories were left, if they were.
    kept: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Machine {
    cores: usize,
    kernel: String,
    cpu: String,
}

#[derive(Debug, Serialize)]
struct Load {
    /// The load's data directory.
    data_dir: PathBuf,
    /// First landing to the last file in a terminal state.
    wall_secs: f64,
    files_per_sec: f64,
    /// Rate mode: the rate the files were actually put at.
    offered_files_per_sec: Option<f64>,
    /// The child's user and system CPU over the load, per wall second (100 = one core).
    cpu_percent: f64,
    peak_rss_mib: f64,
    /// Files per state once the load was done.
    states: BTreeMap<FileState, u64>,
    latencies: Vec<Latency>,
    /// Log lines of `up` naming a `Lost…` event (a timer the watchdog sent again), by event.
    lost_timers: BTreeMap<String, u64>,
    lost_timers_total: u64,
    /// `up`'s exit code after SIGTERM (none: killed by a signal).
    up_exit_code: Option<i32>,
}

/// Latencies of one step, over the files that made it.
#[derive(Debug, Serialize)]
struct Latency {
    /// A state, or `landing`.
    from: String,
    /// A state, or `terminal`.
    to: String,
    files: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

#[derive(Debug, Serialize)]
struct Idle {
    secs: u64,
    cpu_percent: f64,
    rss_mib: f64,
    peak_rss_mib: f64,
}

#[derive(Debug, Serialize)]
struct StepFunctions {
    ceiling_files_per_sec: f64,
    /// Files a second of the load over the ceiling.
    ratio: f64,
}

pub async fn run(mut args: BenchArgs) -> anyhow::Result<i32> {
    if let Some(BenchWhat::Transform(t)) = args.what.take() {
        return crate::bench_transform::run(t).await;
    }
    check(&args)?;
    let root = work_root(args.keep.as_deref())?;
    let mut report = measure(&args, &root)
        .await
        .inspect_err(|_| eprintln!("choreo bench: data left in {}", root.display()))?;
    // A failed run's directories are kept for its log and records.
    report.kept = (args.keep.is_some() || !report.failures.is_empty()).then(|| root.clone());
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    if report.kept.is_none() {
        fs::remove_dir_all(&root)?;
    }
    Ok(if report.failures.is_empty() { 0 } else { 1 })
}

fn check(args: &BenchArgs) -> anyhow::Result<()> {
    if args.files == 0 || args.rows == 0 || args.batch_max_files == 0 {
        bail!("--files, --rows and --batch-max-files must be at least 1");
    }
    if !(args.rate.is_finite() && args.rate >= 0.0) {
        bail!("--rate must be a number of files a second, or 0 for a burst");
    }
    if args.crawl_secs > 0 && args.catalog == Catalog::Direct {
        bail!("--crawl-secs times a crawl, and --catalog direct has none");
    }
    Ok(())
}

/// A fresh directory for the run's data directories: `keep`, or a new one in the temporary
/// directory. Absolute, since `up` is handed paths in it.
pub(crate) fn work_root(keep: Option<&Path>) -> anyhow::Result<PathBuf> {
    let root = match keep {
        Some(dir) => dir.to_path_buf(),
        None => std::env::temp_dir().join(format!(
            "choreo-bench-{}",
            hex::encode(rand::random::<[u8; 6]>())
        )),
    };
    if root.exists() && fs::read_dir(&root)?.next().is_some() {
        bail!(
            "{} is not empty: the bench needs a fresh directory",
            root.display()
        );
    }
    fs::create_dir_all(&root)?;
    Ok(std::path::absolute(&root)?)
}

async fn measure<'a>(args: &'a BenchArgs, root: &Path) -> anyhow::Result<Report<'a>> {
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let load = load(args, &root.join("load"), deadline).await?;
    let idle = match args.idle_secs {
        0 => None,
        _ => Some(idle(args, &root.join("idle")).await?),
    };
    Ok(Report {
        params: args,
        machine: machine(),
        step_functions: StepFunctions {
            ceiling_files_per_sec: STEP_FUNCTIONS_FILES_PER_SEC,
            ratio: load.files_per_sec / STEP_FUNCTIONS_FILES_PER_SEC,
        },
        failures: failures(args, &load),
        load,
        idle,
        kept: None,
    })
}

/// The demo configuration in `dir`, with the bench's batching and cataloguing for its dataset and
/// no dashboard (two `up`s on one machine would fight over its port).
fn write_config(dir: &Path, args: &BenchArgs) -> anyhow::Result<PathBuf> {
    let path = demo::write_config(dir, demo::CONFIG_FILE)?;
    let mut config: toml::Table = fs::read_to_string(&path)?.parse()?;
    if let Some(ops) = config
        .get_mut("operations")
        .and_then(toml::Value::as_table_mut)
    {
        ops.remove("listen");
    }
    let local = toml::Table::from_iter([(
        "crawl_min_secs".to_string(),
        toml::Value::Integer(i64::try_from(args.crawl_secs)?),
    )]);
    config.insert("local".into(), local.into());
    let dataset = config
        .get_mut("datasets")
        .and_then(toml::Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(toml::Value::as_table_mut)
        .find(|d| d.get("name").and_then(toml::Value::as_str) == Some(DATASET))
        .with_context(|| format!("the demo configuration has no dataset {DATASET}"))?;
    dataset.insert("catalog".into(), args.catalog.as_str().into());
    dataset.insert(
        "batch_max_files".into(),
        i64::try_from(args.batch_max_files)?.into(),
    );
    dataset.insert(
        "batch_window_secs".into(),
        i64::try_from(args.batch_window_secs)?.into(),
    );
    let text = format!(
        "# The demo configuration as `choreo bench` runs it.\n{}",
        toml::to_string(&config)?
    );
    // It holds the demo's API token and mask salt.
    crate::demo::write_private(&path, text.as_bytes())?;
    Ok(path)
}

/// The pipeline on `dir` as the bench sees it: to put files and read records beside the child `up`.
async fn open(dir: &Path, config: &Path) -> anyhow::Result<Pipeline> {
    let mut settings = Settings::load(Some(config))?;
    settings.config.data_dir = dir.to_path_buf();
    if settings.config.backend != BackendKind::Local {
        bail!("the bench runs the local backend (is CHOREO_BACKEND set?)");
    }
    Ok(Pipeline::open(settings).await?)
}

fn key(n: usize) -> String {
    format!("daily/bench-{n:06}.csv")
}

const CUSTOMERS: [&str; 4] = ["Ada Rossi", "Bruno Keller", "Chiara Neri", "Dmitri Orlov"];
const CURRENCIES: [&str; 3] = ["EUR", "USD", "GBP"];

/// File `n` (from 1): `rows` valid orders of the demo's sales schema, their ids unique across files
/// (the transform deduplicates on them, and a bench must not shrink its own output).
fn sales_csv(n: usize, rows: usize) -> Vec<u8> {
    let mut out = String::from("order_id,order_date,customer,email,amount,currency,quantity\n");
    for row in 0..rows {
        let id = (n - 1) * rows + row + 1;
        let customer = CUSTOMERS[id % CUSTOMERS.len()];
        let email = customer.to_lowercase().replace(' ', ".");
        out.push_str(&format!(
            "{id},2026-11-{:02},\"{customer}\",{email}@example.com,{}.{:02},{},{}\n",
            1 + id % 28,
            id % 5000,
            id % 100,
            CURRENCIES[id % CURRENCIES.len()],
            1 + id % 9
        ));
    }
    out.into_bytes()
}

/// Burst mode: every file written into the input bucket's directory before `up` starts, as a user
/// dropping a folder of files would. Returns the keys.
fn drop_files(pipeline: &Pipeline, args: &BenchArgs) -> anyhow::Result<Vec<String>> {
    let config = &pipeline.settings.config;
    let input = config.data_dir.join("buckets").join(&config.buckets.input);
    let mut keys = Vec::with_capacity(args.files);
    for n in 1..=args.files {
        let (key, path) = (key(n), input.join(key(n)));
        fs::create_dir_all(path.parent().context("a key has a folder")?)?;
        fs::write(&path, sales_csv(n, args.rows))?;
        keys.push(key);
    }
    Ok(keys)
}

/// Rate mode: the files put at `args.rate` a second through the object store, as `choreo put` puts
/// them. Returns each key's landing time: when its put returned.
async fn offer(
    pipeline: &Pipeline,
    args: &BenchArgs,
    deadline: Instant,
) -> anyhow::Result<HashMap<String, DateTime<Utc>>> {
    let objects = pipeline.monitor.ports().objects;
    let input = &pipeline.settings.config.buckets.input;
    let bar = progress_bar(args.files as u64, "offered ");
    let start = tokio::time::Instant::now();
    let mut landed = HashMap::with_capacity(args.files);
    for n in 1..=args.files {
        // On a schedule from the start, so a slow put is caught up on rather than slowing the rate.
        let due = start + Duration::from_secs_f64((n - 1) as f64 / args.rate);
        tokio::time::sleep_until(due).await;
        if Instant::now() > deadline {
            bail!("timed out offering files: {} of {} put", n - 1, args.files);
        }
        objects.put(input, &key(n), sales_csv(n, args.rows)).await?;
        landed.insert(key(n), Utc::now());
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(landed)
}

/// The load: the files through a child `up`, measured.
async fn load(args: &BenchArgs, dir: &Path, deadline: Instant) -> anyhow::Result<Load> {
    let config = write_config(dir, args)?;
    let pipeline = open(dir, &config).await?;
    let mut up;
    let start;
    let landed: HashMap<String, DateTime<Utc>>;
    if args.rate > 0.0 {
        up = Up::spawn(&config, dir)?;
        up.wait_started(deadline).await?;
        start = up.sample()?;
        landed = offer(&pipeline, args, deadline).await?;
    } else {
        let keys = drop_files(&pipeline, args)?;
        let at = Utc::now();
        up = Up::spawn(&config, dir)?;
        start = up.sample()?;
        landed = keys.into_iter().map(|k| (k, at)).collect();
    }
    wait_until_terminal(&pipeline, args.files as u64, &mut up, deadline).await?;
    let end = up.sample()?;
    // Before the SIGTERM: draining is not the load.
    let memory = up.memory()?;
    let exit = up.stop().await?;
    let records = pipeline.files(None, None).await?;
    let lost_timers = lost_timers(&up.log)?;
    let wall_secs = wall(&landed, &records)?;
    Ok(Load {
        data_dir: dir.to_path_buf(),
        wall_secs,
        files_per_sec: args.files as f64 / wall_secs,
        offered_files_per_sec: (args.rate > 0.0).then(|| offered_rate(&landed)),
        cpu_percent: cpu_percent(&start, &end),
        peak_rss_mib: mib(memory.peak_kib),
        states: states(&records),
        latencies: latencies(&records, &landed),
        lost_timers_total: lost_timers.values().sum(),
        lost_timers,
        up_exit_code: exit.code(),
    })
}

/// Watches the state counts until `files` files are terminal.
async fn wait_until_terminal(
    pipeline: &Pipeline,
    files: u64,
    up: &mut Up,
    deadline: Instant,
) -> anyhow::Result<()> {
    let bar = progress_bar(files, "terminal");
    loop {
        let done: u64 = pipeline
            .summary()
            .await?
            .iter()
            .filter(|(_, state, _)| state.is_terminal())
            .map(|(_, _, n)| n)
            .sum();
        bar.set_position(done);
        if done >= files {
            bar.finish_and_clear();
            return Ok(());
        }
        up.check_running()?;
        if Instant::now() > deadline {
            bail!(
                "timed out: {done} of {files} files in a terminal state; `up` logged to {}",
                up.log.display()
            );
        }
        tokio::time::sleep(WATCH_EVERY).await;
    }
}

/// An idle `up` on an empty data directory, measured after it settled.
async fn idle(args: &BenchArgs, dir: &Path) -> anyhow::Result<Idle> {
    let config = write_config(dir, args)?;
    let mut up = Up::spawn(&config, dir)?;
    tokio::time::sleep(IDLE_SETTLE).await;
    let start = up.sample()?;
    tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
    let end = up.sample()?;
    let memory = up.memory()?;
    up.stop().await?;
    Ok(Idle {
        secs: args.idle_secs,
        cpu_percent: cpu_percent(&start, &end),
        rss_mib: mib(memory.rss_kib),
        peak_rss_mib: mib(memory.peak_kib),
    })
}

/// `choreo up` on one data directory, as a child process logging to `<dir>/up.log`.
/// Killed if dropped while running, so a failed bench leaves no pipeline behind.
struct Up {
    child: Child,
    log: PathBuf,
}

/// The child's CPU time at one moment.
struct Sample {
    at: Instant,
    cpu_secs: f64,
}

struct Memory {
    rss_kib: u64,
    peak_kib: u64,
}

impl Up {
    fn spawn(config: &Path, dir: &Path) -> anyhow::Result<Up> {
        let log = dir.join("up.log");
        let out = fs::File::create(&log)?;
        let child = Command::new(std::env::current_exe()?)
            .arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(dir)
            .arg("up")
            // Warnings at least: the watchdogs' recoveries are warnings.
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting `choreo up`")?;
        Ok(Up { child, log })
    }

    /// Fails if `up` has exited, with the end of its log.
    fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log = fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "`choreo up` exited ({status}); its log ends:\n{}",
                tail.join("\n")
            );
        }
        Ok(())
    }

    /// Waits until `up` is about to start its services.
    async fn wait_started(&mut self, deadline: Instant) -> anyhow::Result<()> {
        while !fs::read_to_string(&self.log)?.contains(UP_STARTED) {
            self.check_running()?;
            if Instant::now() > deadline {
                bail!("timed out waiting for `choreo up` to start");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// The user and system CPU time `up` has used so far (/proc/<pid>/stat).
    fn sample(&mut self) -> anyhow::Result<Sample> {
        self.check_running()?;
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // The command name (field 2) is parenthesised and may hold spaces: count from after it.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .context("an unreadable /proc stat")?
            .1
            .split_whitespace()
            .collect();
        // utime and stime, fields 14 and 15 of the line, are the 12th and 13th after the name.
        let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
        Ok(Sample {
            at: Instant::now(),
            cpu_secs: ticks as f64 / clock_ticks_per_sec(),
        })
    }

    /// Resident memory now and at its peak (VmRSS and VmHWM of /proc/<pid>/status).
    fn memory(&self) -> anyhow::Result<Memory> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kib = |field: &str| -> anyhow::Result<u64> {
            let line = status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .with_context(|| format!("no {field} in /proc status"))?;
            Ok(line.trim().trim_end_matches("kB").trim().parse()?)
        };
        Ok(Memory {
            rss_kib: kib("VmRSS:")?,
            peak_kib: kib("VmHWM:")?,
        })
    }

    /// SIGTERM, as ECS stops a task: `up` drains and exits; it is killed if it takes too long.
    async fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        let drained = Instant::now() + DRAIN;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > drained {
                self.child.kill()?;
                return Ok(self.child.wait()?);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Clock ticks a second, the unit of /proc CPU times; 100 on every common Linux.
fn clock_ticks_per_sec() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

fn cpu_percent(start: &Sample, end: &Sample) -> f64 {
    let wall = end.at.duration_since(start.at).as_secs_f64();
    100.0 * (end.cpu_secs - start.cpu_secs) / wall
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn ms(d: TimeDelta) -> f64 {
    d.num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0
}

/// Seconds from the first landing to the last file reaching a terminal state.
fn wall(landed: &HashMap<String, DateTime<Utc>>, records: &[FileRecord]) -> anyhow::Result<f64> {
    let first = landed.values().min().context("no file landed")?;
    let last = records
        .iter()
        .filter(|r| r.state.is_terminal())
        .filter_map(|r| r.history.last())
        .map(|h| h.at)
        .max()
        .context("no file reached a terminal state")?;
    Ok(ms(last - *first) / 1000.0)
}

/// The rate the files were put at: files over the time from the first landing to the last.
fn offered_rate(landed: &HashMap<String, DateTime<Utc>>) -> f64 {
    let (first, last) = (landed.values().min(), landed.values().max());
    match (first, last) {
        (Some(first), Some(last)) if last > first => {
            (landed.len() - 1) as f64 / (ms(*last - *first) / 1000.0)
        }
        _ => 0.0,
    }
}

fn states(records: &[FileRecord]) -> BTreeMap<FileState, u64> {
    let mut out = BTreeMap::new();
    for r in records {
        *out.entry(r.state).or_default() += 1;
    }
    out
}

/// Latency of every transition (the time from entering its `from` state), then from landing to
/// NEW, to VALID and to the terminal state.
fn latencies(records: &[FileRecord], landed: &HashMap<String, DateTime<Utc>>) -> Vec<Latency> {
    let mut steps: BTreeMap<(FileState, FileState), Vec<f64>> = BTreeMap::new();
    let mut from_landing: [(&str, Vec<f64>); 3] = [
        (FileState::New.as_str(), Vec::new()),
        (FileState::Valid.as_str(), Vec::new()),
        ("terminal", Vec::new()),
    ];
    for r in records {
        for pair in r.history.windows(2) {
            if let Some(from) = pair[1].from {
                let d = ms(pair[1].at - pair[0].at);
                steps.entry((from, pair[1].to)).or_default().push(d);
            }
        }
        let Some(&landing) = landed.get(&r.key) else {
            continue;
        };
        let reached = |state| r.history.iter().find(|h| h.to == state).map(|h| h.at);
        let terminal = r.history.last().filter(|_| r.state.is_terminal());
        let ats = [
            reached(FileState::New),
            reached(FileState::Valid),
            terminal.map(|h| h.at),
        ];
        for ((_, samples), at) in from_landing.iter_mut().zip(ats) {
            samples.extend(at.map(|at| ms(at - landing)));
        }
    }
    let steps = steps
        .into_iter()
        .map(|((from, to), d)| latency(from.as_str(), to.as_str(), d));
    let landing = from_landing
        .into_iter()
        .filter(|(_, d)| !d.is_empty())
        .map(|(to, d)| latency("landing", to, d));
    steps.chain(landing).collect()
}

fn latency(from: &str, to: &str, mut values: Vec<f64>) -> Latency {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    // Nearest rank: the smallest value with at least p of the values at or below it.
    let rank = |p: f64| values[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
    Latency {
        from: from.to_string(),
        to: to.to_string(),
        files: n,
        p50_ms: rank(0.50),
        p99_ms: rank(0.99),
        max_ms: values[n - 1],
    }
}

/// `up`'s log lines naming a `Lost…` event, by event: LostWindowTimer, LostCrawlPoll and
/// LostJobPoll (a timer a watchdog sent again), and LostTimersRecovered (a watchdog pass that sent
/// any).
fn lost_timers(log: &Path) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for name in fs::read_to_string(log)?.lines().filter_map(lost_event) {
        *out.entry(name.to_string()).or_default() += 1;
    }
    Ok(out)
}

/// The `Lost…` event a log line names: `Lost` and a capitalised word, standing alone.
fn lost_event(line: &str) -> Option<&str> {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    line.match_indices("Lost").find_map(|(at, _)| {
        let end = line[at..]
            .find(|c| !alnum(c))
            .map_or(line.len(), |n| at + n);
        let name = &line[at..end];
        let alone = !line[..at].ends_with(alnum);
        let capitalised = name["Lost".len()..].starts_with(|c: char| c.is_ascii_uppercase());
        (alone && capitalised).then_some(name)
    })
}

fn failures(args: &BenchArgs, load: &Load) -> Vec<String> {
    let mut out = Vec::new();
    let records: u64 = load.states.values().sum();
    if records != args.files as u64 {
        out.push(format!("{records} records for {} files", args.files));
    }
    for (state, n) in &load.states {
        if *state != FileState::Ingested {
            out.push(format!("{n} file(s) ended {state}, not INGESTED"));
        }
    }
    if load.lost_timers_total > 0 {
        out.push(format!(
            "the watchdogs recovered lost timers ({}): a timer was lost under load",
            load.lost_timers
                .iter()
                .map(|(name, n)| format!("{name} ×{n}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if load.up_exit_code != Some(0) {
        out.push(format!(
            "`choreo up` did not exit cleanly on SIGTERM (exit code {:?})",
            load.up_exit_code
        ));
    }
    out
}

fn machine() -> Machine {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, model)| model.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    Machine {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        // What `uname -r` prints.
        kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|k| k.trim().to_string())
            .unwrap_or_else(|_| "unknown".into()),
        cpu,
    }
}

/// A duration in milliseconds, in the unit that reads best.
fn duration(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

fn print_report(r: &Report) {
    let p = r.params;
    let l = &r.load;
    let mode = if p.rate > 0.0 {
        format!("{} files/s offered while `up` runs", p.rate)
    } else {
        "a burst (all files in the input bucket before `up` starts)".to_string()
    };
    println!("choreo bench");
    println!(
        "  {} files of {} rows, as {mode}; catalog {}, batches of at most {} files or {} s, crawls of at least {} s",
        p.files,
        p.rows,
        p.catalog.as_str(),
        p.batch_max_files,
        p.batch_window_secs,
        p.crawl_secs
    );
    let m = &r.machine;
    println!(
        "  machine: {} cores, {}, Linux {}",
        m.cores, m.cpu, m.kernel
    );
    println!();
    println!("load");
    println!(
        "  wall time, first landing to last terminal  {:>10.2} s",
        l.wall_secs
    );
    println!(
        "  throughput                                {:>10.1} files/s  ({:.2} × Step Functions' {:.0} files/s)",
        l.files_per_sec, r.step_functions.ratio, r.step_functions.ceiling_files_per_sec
    );
    if let Some(offered) = l.offered_files_per_sec {
        println!("  offered                                   {offered:>10.1} files/s");
    }
    println!(
        "  CPU of `up`                               {:>10.0} %  (100 % = one core busy)",
        l.cpu_percent
    );
    println!(
        "  peak RSS of `up`                          {:>10.1} MiB",
        l.peak_rss_mib
    );
    for (state, n) in &l.states {
        println!("  files {:<35} {n:>10}", state.as_str());
    }
    println!();
    println!(
        "  {:<28} {:>6} {:>11} {:>11} {:>11}",
        "latency", "files", "p50", "p99", "max"
    );
    for x in &l.latencies {
        println!(
            "  {:<28} {:>6} {:>11} {:>11} {:>11}",
            format!("{} → {}", x.from, x.to),
            x.files,
            duration(x.p50_ms),
            duration(x.p99_ms),
            duration(x.max_ms)
        );
    }
    println!();
    if l.lost_timers_total == 0 {
        println!("  lost timers recovered by the watchdogs             0");
    } else {
        println!(
            "  !!! LOST TIMERS RECOVERED BY THE WATCHDOGS: {} !!!",
            l.lost_timers_total
        );
        for (name, n) in &l.lost_timers {
            println!("  !!!   {name:<30} {n:>6}");
        }
    }
    if let Some(i) = &r.idle {
        println!();
        println!("idle `up` on an empty data directory, over {} s", i.secs);
        println!(
            "  CPU                                       {:>10.1} %",
            i.cpu_percent
        );
        println!(
            "  RSS                                       {:>10.1} MiB",
            i.rss_mib
        );
        println!(
            "  peak RSS                                  {:>10.1} MiB",
            i.peak_rss_mib
        );
    }
    println!();
    if let Some(dir) = &r.kept {
        println!("data directories kept in {}", dir.display());
    }
    if r.failures.is_empty() {
        println!("OK: every file INGESTED, no timer lost");
    } else {
        for f in &r.failures {
            println!("FAILED: {f}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_events_are_found_by_name_in_text_logs() {
        let line = "2026-11-02T10:00:00Z  WARN LostCrawlPoll: polling again batch_id=b-1";
        assert_eq!(lost_event(line), Some("LostCrawlPoll"));
        let pass = "WARN watchdog=crawler timers=2 LostTimersRecovered";
        assert_eq!(lost_event(pass), Some("LostTimersRecovered"));
        assert_eq!(lost_event("INFO Lost in thought; NotLostWindow"), None);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let l = latency("NEW", "VALID", (1..=200).rev().map(f64::from).collect());
        assert_eq!(
            (l.files, l.p50_ms, l.p99_ms, l.max_ms),
            (200, 100.0, 198.0, 200.0)
        );
        let one = latency("landing", "terminal", vec![7.0]);
        assert_eq!((one.p50_ms, one.p99_ms, one.max_ms), (7.0, 7.0, 7.0));
    }
}
