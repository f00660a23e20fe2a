//! Benchmark: Choreo against `frictionless validate` and pandas on one typed CSV.
//!
//! ```text
//! cargo run --release -p choreo-validation --example bench -- \
//!     [--mb 200] [--dir DIR] [--keep] [--shuffled-ids] [--no-peers] [--slice-mb 5]
//! ```
//!
//! 1. Generates `bench.csv` (11 typed columns, `--mb` MB, deterministic) and
//!    `bench.schema.json` in DIR (default: a fresh temp dir, removed after
//!    unless `--keep`). The schema uses every field type and every
//!    constraint (required, unique, minimum, maximum, maxLength, pattern,
//!    enum), missingValues and a primaryKey. Ids are sequential by default;
//!    `--shuffled-ids` makes them a permutation, so uniqueness goes through
//!    the hash table (and the bound is raised to cover every row).
//! 2. Validates it with Choreo in a child process (this example re-run with
//!    `--validate-only FILE SCHEMA`), three times, keeping the median time.
//!    The child reads the file with `std::fs::File` and reports its own peak
//!    RSS: `VmHWM` from `/proc/self/status` at exit.
//! 3. Two baselines for the CSV reader itself, each the median of three
//!    child runs on the same file: Choreo on one thread with a schema of
//!    `any` fields (reading, UTF-8, records and structure, no type or
//!    constraint check), and bare `csv_core::Reader::read_record` (records
//!    and fields split, nothing else) fed 256 KiB reads, the buffer size
//!    Choreo uses. If bare csv-core is slower than Choreo's whole
//!    validation, sitting on it would cost more than every check does.
//! 4. Runs `bench/peers.py` (workspace root), which times `frictionless
//!    validate` on a slice (the first `--slice-mb` MB: it is far too slow for
//!    the whole file) and pandas `read_csv` plus the equivalent checks on
//!    the whole file, each in its own child process reporting its `VmHWM`.
//! 5. Prints one table: tool, MB, seconds, MB/s, peak MB, and Choreo on one
//!    thread's speed divided by the tool's (how many times faster Choreo is).

use choreo_validation::SchemaCheck;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use choreo_validation::{Compression, CsvDialect, Format, Limits, TableSchema, validate};
use serde_json::{Value, json};

const SCHEMA: &str = r#"{
  "fields": [
    {"name": "id", "type": "integer", "constraints": {"required": true, "unique": true, "minimum": 1}},
    {"name": "customer", "type": "string", "constraints": {"maxLength": 40}},
    {"name": "code", "type": "string", "constraints": {"pattern": "[A-Z]{3}-[0-9]{4}"}},
    {"name": "amount", "type": "number", "constraints": {"minimum": 0, "maximum": 100000}},
    {"name": "quantity", "type": "integer", "constraints": {"minimum": 1, "maximum": 1000}},
    {"name": "country", "type": "string", "constraints": {"required": true, "enum": ["US", "GB", "DE", "FR", "JP", "BR", "IN", "CN"]}},
    {"name": "order_date", "type": "date", "constraints": {"minimum": "2000-01-01"}},
    {"name": "updated_at", "type": "datetime"},
    {"name": "active", "type": "boolean"},
    {"name": "model_year", "type": "year", "constraints": {"minimum": 1990, "maximum": 2030}},
    {"name": "ship_time", "type": "time"}
  ],
  "missingValues": ["", "NA"],
  "primaryKey": "id"
}"#;

/// The same columns, every one of type `any`: reading and structure only.
const ANY_SCHEMA: &str = r#"{
  "fields": [
    {"name": "id", "type": "any"},
    {"name": "customer", "type": "any"},
    {"name": "code", "type": "any"},
    {"name": "amount", "type": "any"},
    {"name": "quantity", "type": "any"},
    {"name": "country", "type": "any"},
    {"name": "order_date", "type": "any"},
    {"name": "updated_at", "type": "any"},
    {"name": "active", "type": "any"},
    {"name": "model_year", "type": "any"},
    {"name": "ship_time", "type": "any"}
  ]
}"#;

/// Bytes read at a time by the csv-core baseline: Choreo's buffer size.
const READ_BYTES: usize = 256 * 1024;

const COUNTRIES: [&str; 8] = ["US", "GB", "DE", "FR", "JP", "BR", "IN", "CN"];

/// A 64-bit mix of `x` (splitmix64's finalizer): deterministic pseudo-random fields.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn row(i: u64, shuffled: bool, out: &mut String) {
    let r = mix(i);
    // An odd multiplier is a bijection modulo 2^32: distinct ids in any order.
    let id = if shuffled {
        (i.wrapping_mul(2_654_435_761) & 0xFFFF_FFFF) + 1
    } else {
        i
    };
    let _ = write!(out, "{id},");
    if !r.is_multiple_of(97) {
        let _ = write!(out, "customer number {}", r % 1_000_000);
    }
    let letter = |k: u64| char::from(b'A' + ((r >> k) % 26) as u8);
    let _ = write!(
        out,
        ",{}{}{}-{:04},{}.{:02},",
        letter(8),
        letter(16),
        letter(24),
        (r >> 32) % 10_000,
        (r >> 20) % 100_000,
        (r >> 40) % 100
    );
    if r.is_multiple_of(101) {
        out.push_str("NA");
    } else {
        let _ = write!(out, "{}", (r >> 12) % 1000 + 1);
    }
    let _ = writeln!(
        out,
        ",{},{}-{:02}-{:02},{}-{:02}-{:02}T{:02}:{:02}:{:02}Z,{},{},{:02}:{:02}:{:02}",
        COUNTRIES[((r >> 50) % 8) as usize],
        2000 + (r >> 3) % 25,
        (r >> 7) % 12 + 1,
        (r >> 11) % 28 + 1,
        2020 + (r >> 13) % 5,
        (r >> 17) % 12 + 1,
        (r >> 21) % 28 + 1,
        (r >> 25) % 24,
        (r >> 29) % 60,
        (r >> 33) % 60,
        if (r >> 37) & 1 == 1 { "true" } else { "false" },
        1990 + (r >> 41) % 40,
        (r >> 45) % 24,
        (r >> 51) % 60,
        (r >> 57) % 60,
    );
}

fn generate(path: &Path, bytes: u64, shuffled: bool) -> std::io::Result<u64> {
    let mut w = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let header = "id,customer,code,amount,quantity,country,order_date,updated_at,active,model_year,ship_time\n";
    w.write_all(header.as_bytes())?;
    let mut written = header.len() as u64;
    let mut rows = 0;
    let mut line = String::with_capacity(256);
    while written < bytes {
        rows += 1;
        line.clear();
        row(rows, shuffled, &mut line);
        w.write_all(line.as_bytes())?;
        written += line.len() as u64;
    }
    w.flush()?;
    Ok(rows)
}

/// `VmHWM` (peak resident set) of this process, in KiB.
fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time this thread has run, in seconds (`/proc/thread-self/schedstat`).
fn cpu_secs() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0.0, |ns| ns / 1e9)
}

/// Child mode: validate FILE against SCHEMA once and print the outcome as JSON.
fn validate_only(file: &str, schema: &str, threads: usize, max_unique: Option<usize>) {
    let base_kb = peak_rss_kb();
    let schema = TableSchema::from_json_reader(File::open(schema).expect("schema file"))
        .expect("valid schema");
    let mut limits = Limits {
        threads,
        ..Limits::default()
    };
    if let Some(n) = max_unique {
        limits.max_unique_tracked = n;
    }
    let input = File::open(file).expect("data file");
    let cpu = cpu_secs();
    let start = Instant::now();
    let report = validate(
        input,
        &Format::Csv(CsvDialect::default()),
        Compression::None,
        &schema,
        &limits,
    );
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu;
    let out = json!({
        "bytes": report.bytes,
        "secs": secs,
        "cpu_secs": cpu,
        "rows": report.rows,
        "valid": report.valid,
        "summary": report.summary(),
        "notes": report.notes,
        "errors": report.errors,
        "peak_kb": peak_rss_kb(),
        "base_kb": base_kb,
    });
    println!("{out}");
}

/// Child mode: split FILE into records with bare `csv_core`, reading
/// [`READ_BYTES`] at a time, and print the outcome as JSON.
fn csv_core_only(file: &str) {
    use csv_core::ReadRecordResult;
    let base_kb = peak_rss_kb();
    let mut input = File::open(file).expect("data file");
    let cpu = cpu_secs();
    let start = Instant::now();
    let mut reader = csv_core::Reader::new();
    let mut buf = vec![0u8; READ_BYTES];
    // A record's unescaped field bytes and its field ends (grown if needed).
    let mut out = vec![0u8; 64 * 1024];
    let mut ends = vec![0usize; 64];
    let (mut len, mut pos, mut bytes) = (0, 0, 0u64);
    let (mut out_len, mut ends_len) = (0, 0);
    let (mut records, mut fields) = (0u64, 0u64);
    loop {
        if pos == len {
            len = input.read(&mut buf).expect("read");
            pos = 0;
            bytes += len as u64;
        }
        let (result, n_in, n_out, n_ends) =
            reader.read_record(&buf[pos..len], &mut out[out_len..], &mut ends[ends_len..]);
        pos += n_in;
        out_len += n_out;
        ends_len += n_ends;
        match result {
            ReadRecordResult::InputEmpty => {}
            ReadRecordResult::OutputFull => out.resize(out.len() * 2, 0),
            ReadRecordResult::OutputEndsFull => ends.resize(ends.len() * 2, 0),
            ReadRecordResult::Record => {
                records += 1;
                fields += ends_len as u64;
                (out_len, ends_len) = (0, 0);
            }
            ReadRecordResult::End => break,
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu;
    let out = json!({
        "bytes": bytes,
        "secs": secs,
        "cpu_secs": cpu,
        "rows": records.saturating_sub(1),
        "summary": format!("{records} records, {fields} fields"),
        "peak_kb": peak_rss_kb(),
        "base_kb": base_kb,
    });
    println!("{out}");
}

struct Args {
    mb: u64,
    dir: Option<PathBuf>,
    keep: bool,
    shuffled: bool,
    peers: bool,
    slice_mb: u64,
}

fn parse_args() -> Args {
    let mut args = Args {
        mb: 200,
        dir: None,
        keep: false,
        shuffled: false,
        peers: true,
        slice_mb: 5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--validate-only" => {
                let usage = "--validate-only FILE SCHEMA [--threads N] [--max-unique N]";
                let file = it.next().expect(usage);
                let schema = it.next().expect(usage);
                let (mut threads, mut max_unique) = (1, None);
                while let Some(flag) = it.next() {
                    let value = it.next().and_then(|v| v.parse().ok()).expect(usage);
                    match flag.as_str() {
                        "--threads" => threads = value,
                        "--max-unique" => max_unique = Some(value),
                        _ => panic!("{usage}"),
                    }
                }
                validate_only(&file, &schema, threads, max_unique);
                std::process::exit(0);
            }
            "--csv-core-only" => {
                csv_core_only(&it.next().expect("--csv-core-only FILE"));
                std::process::exit(0);
            }
            "--mb" => args.mb = it.next().and_then(|v| v.parse().ok()).expect("--mb N"),
            "--slice-mb" => {
                args.slice_mb = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--slice-mb N")
            }
            "--dir" => args.dir = Some(it.next().expect("--dir DIR").into()),
            "--keep" => args.keep = true,
            "--shuffled-ids" => args.shuffled = true,
            "--no-peers" => args.peers = false,
            other => panic!("unknown argument {other:?} (see the docs at the top of bench.rs)"),
        }
    }
    args
}

/// One row of the final table.
struct Result {
    tool: String,
    mb: f64,
    secs: f64,
    peak_mb: f64,
    note: String,
}

/// Run this example as a child with `args`; its JSON outcome.
fn run_child(exe: &Path, args: &[&OsStr]) -> Value {
    let out = Command::new(exe)
        .args(args)
        .output()
        .expect("run the child");
    assert!(out.status.success(), "child failed: {out:?}");
    serde_json::from_slice(&out.stdout).expect("child output is JSON")
}

fn run_choreo(
    exe: &Path,
    csv: &Path,
    schema: &Path,
    threads: usize,
    max_unique: Option<usize>,
) -> Value {
    let threads = threads.to_string();
    let max_unique = max_unique.map(|n| n.to_string());
    let mut args = vec![
        OsStr::new("--validate-only"),
        csv.as_os_str(),
        schema.as_os_str(),
        OsStr::new("--threads"),
        OsStr::new(&threads),
    ];
    if let Some(n) = &max_unique {
        args.extend([OsStr::new("--max-unique"), OsStr::new(n)]);
    }
    run_child(exe, &args)
}

/// Three runs of `run`, sorted by time.
fn three_runs(run: impl Fn() -> Value) -> Vec<Value> {
    let mut runs: Vec<Value> = (0..3).map(|_| run()).collect();
    runs.sort_by(|a, b| a["secs"].as_f64().partial_cmp(&b["secs"].as_f64()).unwrap());
    runs
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> PathBuf {
    let venv = workspace_root().join(".venv/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

fn main() {
    let args = parse_args();
    let (dir, temp) = match &args.dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("choreo-bench-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&dir).expect("create the bench dir");
    let csv = dir.join("bench.csv");
    let schema = dir.join("bench.schema.json");
    std::fs::write(&schema, SCHEMA).expect("write the schema");
    let any_schema = dir.join("bench.any.schema.json");
    std::fs::write(&any_schema, ANY_SCHEMA).expect("write the schema");
    let start = Instant::now();
    let rows = generate(&csv, args.mb * 1_000_000, args.shuffled).expect("write the CSV");
    let size = std::fs::metadata(&csv).map(|m| m.len()).unwrap_or(0);
    println!(
        "generated {} ({:.1} MB, {rows} rows, 11 columns, {} ids) in {:.1} s",
        csv.display(),
        size as f64 / 1e6,
        if args.shuffled {
            "shuffled"
        } else {
            "sequential"
        },
        start.elapsed().as_secs_f64()
    );

    // Every id tracked: with shuffled ids that is one table entry per row.
    let max_unique = args.shuffled.then_some(rows as usize + 1);
    let exe = std::env::current_exe().expect("own path");
    let mut results = Vec::new();
    for threads in [1, 2] {
        let runs = three_runs(|| run_choreo(&exe, &csv, &schema, threads, max_unique));
        let choreo = &runs[1];
        let notes = choreo["notes"].as_array().filter(|n| !n.is_empty());
        println!(
            "choreo, {threads} thread(s): {}; runs {:.3} / {:.3} / {:.3} s{}",
            choreo["summary"].as_str().unwrap_or(""),
            runs[0]["secs"].as_f64().unwrap_or(0.0),
            runs[1]["secs"].as_f64().unwrap_or(0.0),
            runs[2]["secs"].as_f64().unwrap_or(0.0),
            notes.map_or(String::new(), |n| format!("; notes: {n:?}"))
        );
        results.push(Result {
            tool: format!(
                "choreo-validation, {threads} thread{}",
                if threads == 1 { "" } else { "s" }
            ),
            mb: choreo["bytes"].as_f64().unwrap_or(0.0) / 1e6,
            secs: choreo["secs"].as_f64().unwrap_or(0.0),
            peak_mb: choreo["peak_kb"].as_f64().unwrap_or(0.0) / 1024.0,
            note: format!(
                "median of 3 runs; {:.1} MB of it before validating",
                choreo["base_kb"].as_f64().unwrap_or(0.0) / 1024.0
            ),
        });
    }

    // The CSV reader alone: ours (with structure checks), then csv-core's.
    let baselines = [
        (
            "choreo-validation, any-typed",
            "1 thread, every field `any`: reading, UTF-8, structure",
            three_runs(|| run_choreo(&exe, &csv, &any_schema, 1, None)),
        ),
        (
            "csv-core parse only",
            "csv_core::Reader::read_record, 256 KiB reads, no checks at all",
            three_runs(|| run_child(&exe, &[OsStr::new("--csv-core-only"), csv.as_os_str()])),
        ),
    ];
    for (tool, what, runs) in baselines {
        let median = &runs[1];
        println!(
            "{tool}: {}; runs {:.3} / {:.3} / {:.3} s",
            median["summary"].as_str().unwrap_or(""),
            runs[0]["secs"].as_f64().unwrap_or(0.0),
            runs[1]["secs"].as_f64().unwrap_or(0.0),
            runs[2]["secs"].as_f64().unwrap_or(0.0),
        );
        results.push(Result {
            tool: tool.to_owned(),
            mb: median["bytes"].as_f64().unwrap_or(0.0) / 1e6,
            secs: median["secs"].as_f64().unwrap_or(0.0),
            peak_mb: median["peak_kb"].as_f64().unwrap_or(0.0) / 1024.0,
            note: format!("median of 3 runs; {what}"),
        });
    }

    if args.peers {
        let script = workspace_root().join("bench/peers.py");
        let out = Command::new(python())
            .arg(&script)
            .arg("--csv")
            .arg(&csv)
            .arg("--schema")
            .arg(&schema)
            .arg("--slice-mb")
            .arg(args.slice_mb.to_string())
            .output()
            .expect("run bench/peers.py");
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                println!("peers.py: {line}");
                continue;
            };
            println!(
                "{}: valid={} {}",
                v["tool"].as_str().unwrap_or("?"),
                v["valid"],
                v["detail"].as_str().unwrap_or("")
            );
            results.push(Result {
                tool: v["tool"].as_str().unwrap_or("?").to_owned(),
                mb: v["mb"].as_f64().unwrap_or(0.0),
                secs: v["secs"].as_f64().unwrap_or(0.0),
                peak_mb: v["peak_kb"].as_f64().unwrap_or(0.0) / 1024.0,
                note: v["note"].as_str().unwrap_or("").to_owned(),
            });
        }
    }

    let speed = |r: &Result| if r.secs > 0.0 { r.mb / r.secs } else { 0.0 };
    // Ratios against Choreo on one core.
    let ours = speed(&results[0]);
    println!();
    println!(
        "{:<30} {:>9} {:>9} {:>9} {:>9} {:>14}  note",
        "tool", "MB", "seconds", "MB/s", "peak MB", "Choreo-1 / it"
    );
    for r in &results {
        let s = speed(r);
        println!(
            "{:<30} {:>9.1} {:>9.3} {:>9.1} {:>9.1} {:>13.1}x  {}",
            r.tool,
            r.mb,
            r.secs,
            s,
            r.peak_mb,
            if s > 0.0 { ours / s } else { 0.0 },
            r.note
        );
    }
    if temp && !args.keep {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        println!("\nfiles kept in {}", dir.display());
    }
}
