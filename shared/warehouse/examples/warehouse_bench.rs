//! The extract and the load, measured against this machine's MariaDB and PostgreSQL
//! (docs/benchmarks.md, "Scheduled extracts"). Prints one JSON line per measurement.
//!
//! ```sh
//! cargo run --release -p choreo-warehouse --example warehouse_bench -- setup 20000 600 10
//! cargo run --release -p choreo-warehouse --example warehouse_bench -- extract k0 /tmp/k0.csv.gz
//! cargo run --release -p choreo-warehouse --example warehouse_bench -- parallel 10 /tmp/keys
//! cargo run --release -p choreo-warehouse --example warehouse_bench -- load /tmp/k0.csv.gz
//! cargo run --release -p choreo-warehouse --example warehouse_bench -- drop
//! ```
//!
//! `setup ROWS COLS KEYS` makes `test.choreo_bench` (ROWS rows for `k0`, ROWS/KEYS rows for each of
//! `k1`..`k<KEYS>`, so the parallel run's keys sum to one big key) and the PostgreSQL table
//! `choreo_bench` of the same shape. MySQL and PostgreSQL URLs come from `CHOREO_TEST_MYSQL_URL`
//! and `CHOREO_TEST_POSTGRES_URL` (defaults: root and postgres on 127.0.0.1, database `test`).

use choreo_domain::extract::{LoadMode, NamedQuery, WarehouseTarget};
use sqlx::{AssertSqlSafe, Connection};
use std::path::{Path, PathBuf};
use std::time::Instant;

fn mysql_url() -> String {
    std::env::var("CHOREO_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

fn postgres_url() -> String {
    std::env::var("CHOREO_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Peak resident memory of this process so far, MiB (`VmHWM`).
fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb >> 10)
}

/// Column `i`'s (MySQL type, PostgreSQL type, MySQL value expression over `seq`).
fn column(i: usize) -> (&'static str, &'static str, String) {
    match i % 5 {
        0 => ("INT", "INT", format!("(seq * {}) % 100000", i + 7)),
        1 => (
            "VARCHAR(16)",
            "TEXT",
            format!("CONCAT('v', (seq * {}) % 99991)", i + 3),
        ),
        2 => (
            "DECIMAL(12,2)",
            "NUMERIC(12,2)",
            format!("((seq * {}) % 1000000) / 100", i + 11),
        ),
        3 => (
            "DATETIME",
            "TIMESTAMP",
            format!(
                "'2026-01-01' + INTERVAL ((seq * {}) % 500000) MINUTE",
                i + 1
            ),
        ),
        _ => ("DOUBLE", "DOUBLE PRECISION", format!("seq / {}.0", i + 1)),
    }
}

async fn setup(rows: usize, cols: usize, keys: usize) {
    let mut my = sqlx::MySqlConnection::connect(&mysql_url()).await.unwrap();
    let mut defs = vec!["id INT PRIMARY KEY".to_string(), "k VARCHAR(8)".to_string()];
    defs.extend((0..cols).map(|i| format!("c{i} {}", column(i).0)));
    for s in [
        "DROP TABLE IF EXISTS test.choreo_bench".to_string(),
        format!(
            "CREATE TABLE test.choreo_bench ({}, KEY (k)) CHARSET latin1",
            defs.join(", ")
        ),
    ] {
        sqlx::raw_sql(AssertSqlSafe(s))
            .execute(&mut my)
            .await
            .unwrap();
    }
    let values: Vec<String> = (0..cols).map(|i| column(i).2).collect();
    // k0 holds `rows`; k1..k<keys> hold rows/keys each, after it.
    let mut start = 0;
    for (key, n) in std::iter::once(("k0".to_string(), rows))
        .chain((1..=keys).map(|k| (format!("k{k}"), rows / keys.max(1))))
    {
        let insert = format!(
            "INSERT INTO test.choreo_bench SELECT seq, '{key}', {} FROM seq_{}_to_{}",
            values.join(", "),
            start + 1,
            start + n
        );
        sqlx::raw_sql(AssertSqlSafe(insert))
            .execute(&mut my)
            .await
            .unwrap();
        start += n;
    }
    let mut pg = sqlx::PgConnection::connect(&postgres_url()).await.unwrap();
    let mut defs = vec!["id INT".to_string(), "k TEXT".to_string()];
    defs.extend((0..cols).map(|i| format!("c{i} {}", column(i).1)));
    for s in [
        "DROP TABLE IF EXISTS choreo_bench".to_string(),
        format!("CREATE TABLE choreo_bench ({})", defs.join(", ")),
    ] {
        sqlx::raw_sql(AssertSqlSafe(s))
            .execute(&mut pg)
            .await
            .unwrap();
    }
    println!(
        "{}",
        serde_json::json!({"setup": {"rows": start, "columns": cols + 2}})
    );
}

fn query() -> NamedQuery {
    NamedQuery::parse("SELECT * FROM test.choreo_bench WHERE k = :key ORDER BY id").unwrap()
}

async fn extract_one(pool: &sqlx::MySqlPool, key: &str, out: &Path) -> serde_json::Value {
    let started = Instant::now();
    let written =
        choreo_warehouse::mysql::extract(pool, &mysql_url(), &query(), &[key.to_string()], out)
            .await
            .unwrap();
    serde_json::json!({
        "key": key,
        "rows": written.rows,
        "columns": written.columns,
        "gzip_bytes": written.bytes,
        "secs": started.elapsed().as_secs_f64(),
    })
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    match arg(0).as_str() {
        "setup" => {
            setup(
                arg(1).parse().unwrap_or(20_000),
                arg(2).parse().unwrap_or(600),
                arg(3).parse().unwrap_or(10),
            )
            .await
        }
        "extract" => {
            let pool = choreo_warehouse::mysql::pool(&mysql_url(), 1).unwrap();
            let mut v = extract_one(&pool, &arg(1), Path::new(&arg(2))).await;
            v["peak_rss_mib"] = peak_rss_mib().into();
            println!("{v}");
        }
        "parallel" => {
            let n: usize = arg(1).parse().unwrap_or(10);
            let dir = PathBuf::from(arg(2));
            std::fs::create_dir_all(&dir).unwrap();
            let pool = choreo_warehouse::mysql::pool(&mysql_url(), n as u32).unwrap();
            // Each key alone first, then all at once.
            let mut alone = Vec::new();
            for k in 1..=n {
                let out = dir.join(format!("k{k}.csv.gz"));
                alone.push(extract_one(&pool, &format!("k{k}"), &out).await);
            }
            let started = Instant::now();
            let tasks: Vec<_> = (1..=n)
                .map(|k| {
                    let pool = pool.clone();
                    let out = dir.join(format!("p{k}.csv.gz"));
                    tokio::spawn(async move { extract_one(&pool, &format!("k{k}"), &out).await })
                })
                .collect();
            let mut together = Vec::new();
            for t in tasks {
                together.push(t.await.unwrap());
            }
            let secs = |v: &[serde_json::Value]| -> Vec<f64> {
                v.iter().map(|x| x["secs"].as_f64().unwrap()).collect()
            };
            let alone_secs = secs(&alone);
            println!(
                "{}",
                serde_json::json!({
                    "keys": n,
                    "rows_per_key": alone[0]["rows"],
                    "slowest_alone_secs": alone_secs.iter().cloned().fold(0.0, f64::max),
                    "sum_alone_secs": alone_secs.iter().sum::<f64>(),
                    "parallel_wall_secs": started.elapsed().as_secs_f64(),
                    "peak_rss_mib": peak_rss_mib(),
                    "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
                })
            );
        }
        "load" => {
            let path = PathBuf::from(arg(1));
            let target = WarehouseTarget {
                table: "choreo_bench".into(),
                mode: LoadMode::Append,
                key_column: None,
                primary_key: vec![],
            };
            let plan = choreo_warehouse::plan(
                &target,
                "bench/",
                [("bench/k0/t.csv.gz".to_string(), path)],
            )
            .unwrap();
            let started = Instant::now();
            let report = choreo_warehouse::postgres::load(&postgres_url(), &plan)
                .await
                .unwrap();
            let secs = started.elapsed().as_secs_f64();
            println!(
                "{}",
                serde_json::json!({
                    "copied": report.copied,
                    "secs": secs,
                    "rows_per_sec": report.copied as f64 / secs,
                    "peak_rss_mib": peak_rss_mib(),
                })
            );
        }
        "drop" => {
            let mut my = sqlx::MySqlConnection::connect(&mysql_url()).await.unwrap();
            sqlx::raw_sql("DROP TABLE IF EXISTS test.choreo_bench")
                .execute(&mut my)
                .await
                .unwrap();
            let mut pg = sqlx::PgConnection::connect(&postgres_url()).await.unwrap();
            sqlx::raw_sql("DROP TABLE IF EXISTS choreo_bench")
                .execute(&mut pg)
                .await
                .unwrap();
        }
        other => {
            eprintln!("usage: bench setup|extract|parallel|load|drop (not {other:?})");
            std::process::exit(2);
        }
    }
}
