//! `choreo bench transform`: the built-in transform on one large batch, run as the local job runner
//! runs it — a `job-worker` child under the memory limit — with its throughput and peak memory.
//!
//! It writes `--mb` MiB of `sales_daily` CSV in `--files` files straight into a fresh data
//! directory's input bucket (valid: every file passes the schema), `--duplicate-percent` of the rows
//! repeating the order id of a row in an earlier file, and a manifest naming them; runs the worker
//! on it; and checks what the transform reports against what was generated (rows read, duplicates
//! replaced, rows written). It prints the input size, the worker's wall time and MiB/s, and its peak
//! resident memory (VmHWM, which the worker reports as it ends). Exit 0 when the counts agree and
//! the peak is within `--max-rss-mb`, 1 when not.

use crate::bench::work_root;
use crate::demo;
use anyhow::{Context, bail};
use choreo_domain::{FileId, JobArgs, Manifest, ManifestFile};
use choreo_local::LocalBackend;
use choreo_local::transform::BuiltinJob;
use choreo_local::worker::{WorkerAnswer, WorkerRequest, run_in_worker};
use choreo_ports::ObjectStore;
use choreo_runtime::Settings;
use choreo_transform::BuiltinSummary;
use clap::Args;
use serde::Serialize;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

const DATASET: &str = "sales_daily";
const BATCH: &str = "bench-transform";
const CUSTOMERS: [&str; 4] = ["Ada Rossi", "Bruno Keller", "Chiara Neri", "Dmitri Orlov"];
const CURRENCIES: [&str; 3] = ["EUR", "USD", "GBP"];

#[derive(Debug, Args, Serialize)]
pub struct TransformBenchArgs {
    /// MiB of CSV in the batch.
    #[arg(long, default_value_t = 1024)]
    pub mb: u64,
    /// Files the batch's input is split into.
    #[arg(long, default_value_t = 8)]
    pub files: usize,
    /// Percent of rows repeating the order id of an earlier file's row (the transform keeps the last).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=100))]
    pub duplicate_percent: u64,
    /// The worker's memory limit in MiB, as `[local] job_memory_mb`; 0: none.
    #[arg(long, default_value_t = 1024)]
    pub memory_mb: u64,
    /// MiB of keys the deduplication index holds before it spills a sorted run to disk.
    #[arg(long, default_value_t = (choreo_transform::KEY_INDEX_BYTES >> 20) as u64)]
    pub key_index_mb: u64,
    /// Exit 1 when the worker's peak resident memory is above this many MiB; 0: never.
    #[arg(long, default_value_t = 256)]
    pub max_rss_mb: u64,
    /// Make the data directory here (DIR must be empty or new) and keep it.
    #[arg(long, value_name = "DIR")]
    #[serde(skip)]
    pub keep: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    #[serde(skip)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    params: &'a TransformBenchArgs,
    /// The batch's input, MiB.
    input_mib: f64,
    /// Rows generated, and distinct order ids among them (what deduplication must leave).
    rows: u64,
    distinct: u64,
    /// What the worker said it did.
    summary: BuiltinSummary,
    /// The Parquet object written, MiB.
    output_mib: f64,
    /// The worker's run, from its start to its answer.
    wall_secs: f64,
    input_mib_per_sec: f64,
    /// The worker's VmHWM.
    peak_rss_mib: f64,
    /// Why the run failed; empty when it did not.
    failures: Vec<String>,
    /// Where the data directory was left, if it was.
    kept: Option<PathBuf>,
}

/// Order ids for generated rows: a new one, or (`percent` of the time) one of an earlier file
/// again — never of the same file, whose ids the schema says are unique, so every file is valid.
struct Ids {
    rows: u64,
    distinct: u64,
    /// Distinct ids in the files before this one.
    earlier: u64,
    percent: u64,
}

impl Ids {
    fn next(&mut self) -> u64 {
        self.rows += 1;
        // A fixed scramble of the row number, so repeats spread evenly through the input.
        let repeat = self.earlier > 0 && (self.rows * 37) % 100 < self.percent;
        if repeat {
            (self.rows * 7919) % self.earlier + 1
        } else {
            self.distinct += 1;
            self.distinct
        }
    }
}

/// Writes rows to `path` until it holds `bytes`.
fn write_csv(path: &Path, bytes: u64, ids: &mut Ids) -> anyhow::Result<()> {
    fs::create_dir_all(path.parent().context("a key has a folder")?)?;
    let mut out = BufWriter::with_capacity(1 << 20, fs::File::create(path)?);
    let header = b"order_id,order_date,customer,email,amount,currency,quantity\n";
    out.write_all(header)?;
    let mut written = header.len() as u64;
    let mut line = String::new();
    while written < bytes {
        use std::fmt::Write as _;
        let id = ids.next();
        let customer = CUSTOMERS[(id % 4) as usize];
        let first = customer.split(' ').next().unwrap_or("x").to_lowercase();
        line.clear();
        writeln!(
            line,
            "{id},2026-11-{:02},{customer},{first}.{id}@example.com,{}.{:02},{},{}",
            id % 28 + 1,
            ids.rows % 1000,
            ids.rows % 100,
            CURRENCIES[(ids.rows % 3) as usize],
            ids.rows % 9 + 1,
        )?;
        out.write_all(line.as_bytes())?;
        written += line.len() as u64;
    }
    out.flush()?;
    Ok(())
}

pub async fn run(args: TransformBenchArgs) -> anyhow::Result<i32> {
    if args.files == 0 || args.mb == 0 || args.key_index_mb == 0 {
        bail!("--mb, --files and --key-index-mb must be at least 1");
    }
    let root = work_root(args.keep.as_deref())?;
    let mut report = measure(&args, &root)
        .await
        .inspect_err(|_| eprintln!("choreo bench transform: data left in {}", root.display()))?;
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

async fn measure<'a>(args: &'a TransformBenchArgs, root: &Path) -> anyhow::Result<Report<'a>> {
    let settings = Settings::load(Some(&demo::write_config(root, demo::CONFIG_FILE)?))?;
    let config = &settings.config;
    let backend = LocalBackend::open(config)?;
    let objects = backend.objects();
    let input = &config.buckets.input;

    let mut ids = Ids {
        rows: 0,
        distinct: 0,
        earlier: 0,
        percent: args.duplicate_percent,
    };
    let per_file = (args.mb << 20).div_ceil(args.files as u64);
    let mut files = Vec::new();
    let mut input_bytes = 0;
    for n in 1..=args.files {
        let key = format!("daily/bench-transform-{n:03}.csv");
        let path = objects.path_of(input, &key)?;
        ids.earlier = ids.distinct;
        write_csv(&path, per_file, &mut ids)?;
        input_bytes += fs::metadata(&path)?.len();
        files.push(ManifestFile {
            file_id: FileId(format!("f-{n:03}")),
            bucket: input.clone(),
            key,
            pin: None,
        });
    }
    let manifest = Manifest {
        batch_id: BATCH.into(),
        dataset: DATASET.into(),
        files,
        schema: settings.schemas.get(DATASET).cloned(),
        personal_data: vec!["email".into()],
        format: None,
        csv: None,
    };
    let manifest_key = format!("manifests/{DATASET}/{BATCH}.json");
    objects
        .put(
            &config.buckets.work,
            &manifest_key,
            serde_json::to_vec(&manifest)?,
        )
        .await?;

    let request = WorkerRequest {
        data_dir: config.data_dir.clone(),
        sync: false,
        job: BuiltinJob::of(config),
        arguments: JobArgs {
            batch_id: BATCH.into(),
            dataset: DATASET.into(),
            manifest: format!("{}/{manifest_key}", config.buckets.work),
        }
        .to_arguments(),
        key_index_bytes: (args.key_index_mb << 20) as usize,
    };
    let program = std::env::current_exe().context("finding the choreo program")?;
    let memory = Some(args.memory_mb).filter(|&m| m > 0);
    let started = Instant::now();
    let answer = run_in_worker(&program, memory, &request).await;
    let wall_secs = started.elapsed().as_secs_f64();

    let mut failures = Vec::new();
    let (summary, peak_rss_kib) = match answer {
        Ok(WorkerAnswer {
            result: Ok(summary),
            peak_rss_kib,
        }) => (summary, peak_rss_kib.unwrap_or(0)),
        Ok(WorkerAnswer {
            result: Err(reason),
            peak_rss_kib,
        }) => {
            failures.push(format!("the transform failed: {reason}"));
            (BuiltinSummary::default(), peak_rss_kib.unwrap_or(0))
        }
        Err(reason) => {
            failures.push(reason);
            (BuiltinSummary::default(), 0)
        }
    };
    let output_bytes = match failures.is_empty() {
        true => fs::metadata(objects.path_of(&config.buckets.curated, &summary.key)?)?.len(),
        false => 0,
    };
    if failures.is_empty() {
        let expected = (ids.rows, 0, ids.rows - ids.distinct, ids.distinct);
        let got = (
            summary.read,
            summary.dropped,
            summary.duplicates,
            summary.written,
        );
        if got != expected {
            failures.push(format!(
                "(read, dropped, duplicates, written) = {got:?}, expected {expected:?}"
            ));
        }
    }
    let peak_rss_mib = peak_rss_kib as f64 / 1024.0;
    if args.max_rss_mb > 0 && peak_rss_mib > args.max_rss_mb as f64 {
        failures.push(format!(
            "peak RSS {peak_rss_mib:.0} MiB is over --max-rss-mb {}",
            args.max_rss_mb
        ));
    }
    let input_mib = input_bytes as f64 / (1 << 20) as f64;
    Ok(Report {
        params: args,
        input_mib,
        rows: ids.rows,
        distinct: ids.distinct,
        summary,
        output_mib: output_bytes as f64 / (1 << 20) as f64,
        wall_secs,
        input_mib_per_sec: input_mib / wall_secs,
        peak_rss_mib,
        failures,
        kept: None,
    })
}

fn print_report(r: &Report) {
    let p = r.params;
    println!(
        "choreo bench transform: {:.0} MiB of CSV in {} files, {} rows, {} distinct order ids",
        r.input_mib, p.files, r.rows, r.distinct
    );
    println!(
        "  worker: {:.1} s, {:.1} MiB/s, peak RSS {:.0} MiB (limit {} MiB, budget {} MiB)",
        r.wall_secs, r.input_mib_per_sec, r.peak_rss_mib, p.memory_mb, p.max_rss_mb
    );
    let s = &r.summary;
    println!(
        "  rows: {} read, {} dropped, {} replaced by a later duplicate, {} written ({:.0} MiB of Parquet)",
        s.read, s.dropped, s.duplicates, s.written, r.output_mib
    );
    println!(
        "  deduplication: {} sorted run(s) spilled to disk (index bound {} MiB)",
        s.key_runs, p.key_index_mb
    );
    for f in &r.failures {
        println!("  FAILED: {f}");
    }
    if let Some(dir) = &r.kept {
        println!("  data directory kept: {}", dir.display());
    }
}
