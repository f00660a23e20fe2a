//! A local stand-in for Glue crawlers: schema inference into the local catalog.
//!
//! A crawler (named by `DatasetConfig::crawled_by`) covers the datasets that name it; a dataset
//! catalogued directly has none (see `catalog.rs`). Starting it marks it RUNNING in the `crawls`
//! table (a crawler already running answers `AlreadyRunning`, as Glue's `CrawlerRunningException`). Polling a running crawl does the crawl, once `min_duration` has
//! passed since it started: for each dataset, the input bucket's objects that the key router gives it
//! are read — only their start: a CSV header in the dataset's dialect, or the keys of the first JSON
//! Lines object, decompressed as the validator decompresses it (`Decoded`, gzip or zstd as the
//! dataset's `compression` says) — and the union of their columns, in order, becomes
//! the dataset's table in the `catalog` table. An object that cannot be read is skipped, as Glue skips
//! what it cannot classify. Crawling only reads the bucket and overwrites the catalog, so two pollers
//! crawling at once do no harm; the first to finish marks the crawl READY.
//!
//! Every crawl started is also a row of `crawl_runs` (crawler, start, end, status), the history that
//! [`LocalCrawler::history`] reads: `crawls` keeps only each crawler's latest.

use crate::catalog::{CatalogTable, tables};
use crate::db::{Db, DbError, from_ms, ms, now_ms, ts};
use crate::objects::LocalObjectStore;
use async_trait::async_trait;
use choreo_domain::Config;
use choreo_domain::clock;
use choreo_domain::config::{DatasetConfig, FileFormat, KeyRouter};
use choreo_ports::{CrawlStart, CrawlStatus, Crawler, ObjectStore, PortError, PortErrorKind};
use choreo_transform::read::{column_names, csv_reader, object_keys};
use choreo_validation::{Decoded, Limits};
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How much of an object a crawl reads, before decompression and after: a header must be in its
/// first MiB, and a decompression bomb expands to no more than that.
const HEAD_BYTES: u64 = 1 << 20;

/// One crawl, as the history keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct CrawlRun {
    pub crawler: String,
    pub started_at: DateTime<Utc>,
    /// None while it runs.
    pub finished_at: Option<DateTime<Utc>>,
    /// `SUCCEEDED` or `FAILED`; None while it runs.
    pub status: Option<String>,
}

/// The crawlers of the local backend.
#[derive(Clone)]
pub struct LocalCrawler {
    db: Arc<Db>,
    objects: Arc<LocalObjectStore>,
    input: String,
    crawlers: BTreeMap<String, Vec<DatasetConfig>>,
    router: KeyRouter,
    min_duration: Duration,
}

/// What a crawl found for one dataset.
struct Found {
    dataset: String,
    columns: Vec<String>,
    files: u64,
    location: String,
}

/// A crawler's row: state, last status, last error, start (ms).
type CrawlRow = (String, Option<String>, Option<String>, Option<i64>);

fn crawl_row(conn: &rusqlite::Connection, crawler: &str) -> Result<Option<CrawlRow>, DbError> {
    Ok(conn
        .prepare_cached(
            "SELECT state, last_status, last_error, started_at FROM crawls WHERE crawler = ?1",
        )?
        .query_row(params![crawler], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()?)
}

/// The columns an object declares, reading only its start.
fn read_columns(path: &PathBuf, dataset: &DatasetConfig, key: &str) -> Result<Vec<String>, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let compression = dataset.compression_for(key);
    let decoded = Decoded::new(file.take(HEAD_BYTES), compression, &Limits::default());
    let input = Box::new(BufReader::new(decoded.take(HEAD_BYTES)));
    match dataset.format {
        FileFormat::Csv => {
            let mut reader = csv_reader(dataset, input);
            let mut record = csv::StringRecord::new();
            match reader.read_record(&mut record) {
                Ok(true) if reader.position().byte() >= HEAD_BYTES => {
                    Err(format!("no header in the first {} KiB", HEAD_BYTES >> 10))
                }
                Ok(true) => Ok(column_names(dataset, &record)),
                Ok(false) => Err("empty file".into()),
                Err(e) => Err(e.to_string()),
            }
        }
        FileFormat::Jsonl => {
            for line in input.lines() {
                let line = line.map_err(|e| e.to_string())?;
                let text = line.trim_start_matches('\u{feff}').trim();
                if !text.is_empty() {
                    return object_keys(text).map_err(|e| e.to_string());
                }
            }
            Err("empty file".into())
        }
    }
}

impl LocalCrawler {
    pub(crate) fn new(
        db: Arc<Db>,
        objects: Arc<LocalObjectStore>,
        config: &Config,
    ) -> Result<Self, PortError> {
        let router = KeyRouter::new(&config.datasets)
            .map_err(|e| PortError::permanent("open", "datasets", e))?;
        let mut crawlers: BTreeMap<String, Vec<DatasetConfig>> = BTreeMap::new();
        // A dataset catalogued directly has no crawler.
        for d in &config.datasets {
            if let Some(crawler) = d.crawled_by() {
                crawlers.entry(crawler).or_default().push(d.clone());
            }
        }
        Ok(LocalCrawler {
            db,
            objects,
            input: config.buckets.input.clone(),
            crawlers,
            router,
            min_duration: Duration::ZERO,
        })
    }

    /// Makes every crawl take at least `d` from its start before a poll may complete it.
    pub fn with_min_duration(mut self, d: Duration) -> Self {
        self.min_duration = d;
        self
    }

    /// The crawler names, each with the datasets it covers.
    pub fn crawlers(&self) -> impl Iterator<Item = (&str, Vec<&str>)> {
        self.crawlers
            .iter()
            .map(|(c, ds)| (c.as_str(), ds.iter().map(|d| d.name.as_str()).collect()))
    }

    fn datasets_of(&self, op: &'static str, crawler: &str) -> Result<&[DatasetConfig], PortError> {
        self.crawlers
            .get(crawler)
            .map(Vec::as_slice)
            .ok_or_else(|| PortError::new(PortErrorKind::NotFound, op, crawler, "no such crawler"))
    }

    /// The dataset's table in the catalog, if a crawl wrote one. (A short blocking read.)
    pub fn catalog_table(&self, dataset: &str) -> Result<Option<CatalogTable>, PortError> {
        let d = dataset.to_string();
        Ok(self
            .catalog_rows("catalog_table", Some(d))?
            .into_iter()
            .next())
    }

    /// Every table in the catalog, by dataset. (A short blocking read.)
    pub fn catalog(&self) -> Result<Vec<CatalogTable>, PortError> {
        self.catalog_rows("catalog", None)
    }

    fn catalog_rows(
        &self,
        op: &'static str,
        dataset: Option<String>,
    ) -> Result<Vec<CatalogTable>, PortError> {
        self.db
            .blocking(op, dataset.as_deref().unwrap_or("catalog"), |conn| {
                tables(conn, dataset.as_deref())
            })
    }

    /// Every crawl started, oldest first. (A short blocking read.)
    pub fn history(&self) -> Result<Vec<CrawlRun>, PortError> {
        self.db.blocking("crawl_history", "crawl_runs", |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT crawler, started_at, finished_at, status FROM crawl_runs
                 ORDER BY started_at, crawler",
            )?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(CrawlRun {
                        crawler: r.get(0)?,
                        started_at: from_ms(r.get(1)?),
                        finished_at: r.get::<_, Option<i64>>(2)?.map(from_ms),
                        status: r.get(3)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// Crawls the crawler's datasets (reads only; writes nothing).
    async fn crawl(&self, crawler: &str) -> Result<Vec<Found>, PortError> {
        let mut found = Vec::new();
        for dataset in self.datasets_of("crawl_status", crawler)? {
            let prefix = dataset.key_match.prefix.clone().unwrap_or_default();
            let objects: Vec<(String, PathBuf)> = self
                .objects
                .list(&self.input, &prefix)
                .await?
                .into_iter()
                .filter(|m| self.router.route(&m.key) == Some(dataset.name.as_str()))
                .filter_map(|m| {
                    let path = self.objects.path_of(&self.input, &m.key).ok()?;
                    Some((m.key, path))
                })
                .collect();
            let ds = dataset.clone();
            let (columns, files, skipped) = tokio::task::spawn_blocking(move || {
                let mut columns: Vec<String> = Vec::new();
                let (mut files, mut skipped) = (0u64, 0u64);
                for (key, path) in &objects {
                    match read_columns(path, &ds, key) {
                        Ok(cols) => {
                            files += 1;
                            for c in cols {
                                if !columns.contains(&c) {
                                    columns.push(c);
                                }
                            }
                        }
                        Err(e) => {
                            skipped += 1;
                            tracing::debug!(key = %key, error = %e, "crawler skipped an object");
                        }
                    }
                }
                (columns, files, skipped)
            })
            .await
            .map_err(|e| {
                PortError::permanent("crawl_status", crawler, format!("crawl failed: {e}"))
            })?;
            if skipped > 0 {
                choreo_telemetry::events::emit(crate::events::CrawlerObjectsSkipped {
                    crawler,
                    dataset: &dataset.name,
                    skipped,
                });
            }
            let target = dataset
                .key_match
                .prefix
                .clone()
                .or_else(|| dataset.key_match.pattern.clone())
                .unwrap_or_default();
            found.push(Found {
                dataset: dataset.name.clone(),
                columns,
                files,
                location: format!("{}/{target}", self.input),
            });
        }
        Ok(found)
    }

    /// The recorded status of a crawler that is not running.
    fn ready_status(last_status: Option<String>, last_error: Option<String>) -> CrawlStatus {
        match last_status.as_deref() {
            Some("SUCCEEDED") => CrawlStatus::Succeeded,
            Some(_) => CrawlStatus::Failed(last_error.unwrap_or_else(|| "crawl failed".into())),
            None => CrawlStatus::Failed("crawler has not run".into()),
        }
    }

    /// Marks the crawl that started at `started_at` finished, unless another poller did first.
    async fn finish(
        &self,
        crawler: &str,
        started_at: i64,
        outcome: Result<Vec<Found>, String>,
    ) -> Result<CrawlStatus, PortError> {
        let name = crawler.to_string();
        self.db
            .write("crawl_status", crawler, move |tx| {
                let now = now_ms();
                let current = crawl_row(tx, &name)?;
                match current {
                    Some((state, _, _, Some(s))) if state == "RUNNING" && s == started_at => {}
                    Some((state, _, _, _)) if state == "RUNNING" => return Ok(CrawlStatus::Running),
                    Some((_, status, error, _)) => return Ok(Self::ready_status(status, error)),
                    None => return Ok(CrawlStatus::Failed("crawler has not run".into())),
                }
                let (status, error) = match &outcome {
                    Ok(found) => {
                        for f in found {
                            if f.files == 0 {
                                // Nothing readable: keep the table's columns (Glue deprecates, not
                                // drops), but say so.
                                let updated = tx.prepare_cached("UPDATE catalog SET files = 0, updated_at = ?2 WHERE dataset = ?1")?
            .execute(
                                    params![f.dataset, ts(clock::now())],
                                )?;
                                if updated > 0 {
                                    continue;
                                }
                            }
                            tx.prepare_cached("INSERT INTO catalog (dataset, crawler, columns, files, location, updated_at)
                                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                                 ON CONFLICT (dataset) DO UPDATE SET crawler = excluded.crawler,
                                     columns = excluded.columns, types = NULL, files = excluded.files,
                                     location = excluded.location, updated_at = excluded.updated_at")?
            .execute(
                                params![
                                    f.dataset,
                                    name,
                                    serde_json::to_string(&f.columns)?,
                                    f.files as i64,
                                    f.location,
                                    ts(clock::now()),
                                ],
                            )?;
                        }
                        ("SUCCEEDED", None)
                    }
                    Err(e) => ("FAILED", Some(e.clone())),
                };
                tx.prepare_cached("UPDATE crawls SET state = 'READY', last_status = ?2, last_error = ?3,
                         finished_at = ?4
                     WHERE crawler = ?1")?
            .execute(
                    params![name, status, error, now],
                )?;
                tx.prepare_cached("UPDATE crawl_runs SET finished_at = ?3, status = ?4
                     WHERE crawler = ?1 AND started_at = ?2")?
            .execute(
                    params![name, started_at, now, status],
                )?;
                Ok::<_, DbError>(match error {
                    None => CrawlStatus::Succeeded,
                    Some(e) => CrawlStatus::Failed(e),
                })
            })
            .await
    }
}

#[async_trait]
impl Crawler for LocalCrawler {
    async fn start_crawl(&self, crawler: &str) -> Result<CrawlStart, PortError> {
        self.datasets_of("start_crawl", crawler)?;
        let name = crawler.to_string();
        self.db
            .write("start_crawl", crawler, move |tx| {
                let state: Option<String> = tx
                    .prepare_cached("SELECT state FROM crawls WHERE crawler = ?1")?
                    .query_row(params![name], |r| r.get(0))
                    .optional()?;
                if state.as_deref() == Some("RUNNING") {
                    return Ok(CrawlStart::AlreadyRunning);
                }
                let now = now_ms();
                tx.prepare_cached(
                    "INSERT INTO crawls (crawler, state, started_at) VALUES (?1, 'RUNNING', ?2)
                     ON CONFLICT (crawler) DO UPDATE SET state = 'RUNNING',
                         started_at = excluded.started_at, finished_at = NULL",
                )?
                .execute(params![name, now])?;
                tx.prepare_cached(
                    "INSERT OR IGNORE INTO crawl_runs (crawler, started_at) VALUES (?1, ?2)",
                )?
                .execute(params![name, now])?;
                Ok(CrawlStart::Started)
            })
            .await
    }

    async fn crawl_status(&self, crawler: &str) -> Result<CrawlStatus, PortError> {
        self.datasets_of("crawl_status", crawler)?;
        let name = crawler.to_string();
        let row = self
            .db
            .call("crawl_status", crawler, move |conn| crawl_row(conn, &name))
            .await?;
        let Some((state, last_status, last_error, started_at)) = row else {
            return Ok(CrawlStatus::Failed("crawler has not run".into()));
        };
        if state != "RUNNING" {
            return Ok(Self::ready_status(last_status, last_error));
        }
        let started_at = started_at.unwrap_or(0);
        if now_ms() < started_at.saturating_add(ms(self.min_duration)) {
            return Ok(CrawlStatus::Running);
        }
        let outcome = match self.crawl(crawler).await {
            Ok(found) => Ok(found),
            Err(e) if e.is_retryable() => return Err(e),
            Err(e) => Err(e.to_string()),
        };
        let status = self.finish(crawler, started_at, outcome).await?;
        choreo_telemetry::events::emit(crate::events::LocalCrawlFinished {
            crawler,
            started: &from_ms(started_at),
            status: &status,
        });
        Ok(status)
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::backend;
    use choreo_ports::{CrawlStart, CrawlStatus, Crawler, ObjectStore, PortErrorKind};
    use std::io::Write;
    use std::time::Duration;

    fn gzip(text: &str) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(text.as_bytes()).unwrap();
        e.finish().unwrap()
    }

    #[tokio::test]
    async fn a_crawl_records_the_union_of_columns() {
        let (_dir, b) = backend();
        let s = b.objects();
        let input = b.config().buckets.input.clone();
        s.put(
            &input,
            "daily/1.csv",
            b"\xEF\xBB\xBFid,name\n1,a\n".to_vec(),
        )
        .await
        .unwrap();
        s.put(&input, "daily/2.csv.gz", gzip("id,amount\n2,3.5\n"))
            .await
            .unwrap();
        s.put(&input, "daily/3.csv", Vec::new()).await.unwrap(); // unreadable: skipped
        s.put(
            &input,
            "events/e.jsonl",
            b"\n{\"z\":1,\"a\":{\"n\":2}}\n".to_vec(),
        )
        .await
        .unwrap();
        s.put(&input, "events/f.jsonl", b"{\"a\":1,\"b\":2}\n".to_vec())
            .await
            .unwrap();
        s.put(&input, "tabs/t.tsv", b"a\tb\tc\n1\t2\t3\n".to_vec())
            .await
            .unwrap();
        s.put(&input, "misc/readme.txt", b"hello".to_vec())
            .await
            .unwrap();

        let c = b.crawler();
        assert_eq!(
            c.crawl_status("daily-crawler").await.unwrap(),
            CrawlStatus::Failed("crawler has not run".into())
        );
        assert_eq!(
            c.start_crawl("daily-crawler").await.unwrap(),
            CrawlStart::Started
        );
        assert_eq!(
            c.crawl_status("daily-crawler").await.unwrap(),
            CrawlStatus::Succeeded
        );
        assert_eq!(
            c.crawl_status("daily-crawler").await.unwrap(),
            CrawlStatus::Succeeded,
            "polling again changes nothing"
        );
        let t = c.catalog_table("daily").unwrap().unwrap();
        assert_eq!(t.columns, ["id", "name", "amount"]);
        assert_eq!(t.files, 2);
        assert_eq!(t.location, format!("{input}/daily/"));
        assert!(
            c.catalog_table("events").unwrap().is_none(),
            "another crawler's"
        );

        assert_eq!(
            c.start_crawl("shared-crawler").await.unwrap(),
            CrawlStart::Started
        );
        assert_eq!(
            c.crawl_status("shared-crawler").await.unwrap(),
            CrawlStatus::Succeeded
        );
        let e = c.catalog_table("events").unwrap().unwrap();
        assert_eq!(e.columns, ["z", "a", "b"]);
        assert_eq!(e.location, format!("{input}/events/*.jsonl"));
        let tabs = c.catalog_table("tabs").unwrap().unwrap();
        assert_eq!(
            tabs.columns,
            ["col0", "col1", "col2"],
            "no header: Glue's names"
        );
        assert_eq!(tabs.crawler, "shared-crawler");
        assert_eq!(c.catalog().unwrap().len(), 3);

        let err = c.start_crawl("nope").await.unwrap_err();
        assert_eq!(err.kind, PortErrorKind::NotFound);
    }

    /// The same object, plain, gzipped and zstd-compressed, gives the same table.
    #[tokio::test]
    async fn a_crawl_infers_the_same_table_whatever_the_compression() {
        let text = "id,name,amount\n1,a,2.5\n";
        let mut tables = Vec::new();
        for (key, body) in [
            ("daily/1.csv", text.as_bytes().to_vec()),
            ("daily/1.csv.gz", gzip(text)),
            (
                "daily/1.csv.zst",
                zstd::encode_all(text.as_bytes(), 3).unwrap(),
            ),
        ] {
            let (_dir, b) = backend();
            let input = b.config().buckets.input.clone();
            b.objects().put(&input, key, body).await.unwrap();
            let c = b.crawler();
            c.start_crawl("daily-crawler").await.unwrap();
            assert_eq!(
                c.crawl_status("daily-crawler").await.unwrap(),
                CrawlStatus::Succeeded
            );
            let t = c.catalog_table("daily").unwrap().unwrap();
            tables.push((key, t.columns, t.files));
        }
        for (key, columns, files) in &tables {
            assert_eq!(columns, &["id", "name", "amount"], "{key}");
            assert_eq!(*files, 1, "{key}");
        }
    }

    #[tokio::test]
    async fn a_crawl_reads_zstd_and_skips_decompression_bombs() {
        use choreo_validation::Compression;
        let (_dir, b) = backend();
        let s = b.objects();
        let input = b.config().buckets.input.clone();
        s.put(&input, "daily/1.csv", b"id,name\n1,a\n".to_vec())
            .await
            .unwrap();
        let z = zstd::encode_all(&b"id,amount\n2,3.5\n"[..], 3).unwrap();
        s.put(&input, "daily/2.csv.zst", z).await.unwrap();
        // 64 MiB of zeros in 64 KiB of gzip, and in a few KiB of zstd: neither has a line end.
        for (key, c) in [
            ("daily/bomb.csv.gz", Compression::Gzip),
            ("daily/bomb.csv.zst", Compression::Zstd),
        ] {
            let bomb = choreo_transform::testkit::bomb(c, 0, 64);
            assert!(bomb.len() < 128 << 10, "{key}: {}", bomb.len());
            s.put(&input, key, bomb).await.unwrap();
        }
        let c = b.crawler();
        c.start_crawl("daily-crawler").await.unwrap();
        assert_eq!(
            c.crawl_status("daily-crawler").await.unwrap(),
            CrawlStatus::Succeeded
        );
        let t = c.catalog_table("daily").unwrap().unwrap();
        assert_eq!(t.columns, ["id", "name", "amount"]);
        let path = s.path_of(&input, "daily/bomb.csv.gz").unwrap();
        let ds = &b.config().datasets[0];
        let err = super::read_columns(&path, ds, "daily/bomb.csv.gz").unwrap_err();
        assert_eq!(err, "no header in the first 1024 KiB");
    }

    /// The port's contract (`choreo_ports::testkit`); a crawl lasts at least 300 ms here, so that
    /// it is seen running.
    #[tokio::test]
    async fn the_crawler_keeps_the_ports_contract() {
        let (_dir, b) = backend();
        let b = b.with_crawl_min_duration(Duration::from_millis(300));
        choreo_ports::testkit::crawler_contract(&*b.ports().crawler, "daily-crawler").await;
    }

    /// The crawl history and the catalog row a crawl of an empty folder leaves.
    #[tokio::test]
    async fn crawls_are_recorded_in_the_history() {
        let (_dir, b) = backend();
        let b = b.with_crawl_min_duration(Duration::from_millis(300));
        let c = b.ports().crawler;
        c.start_crawl("daily-crawler").await.unwrap();
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(
            c.crawl_status("daily-crawler").await.unwrap(),
            CrawlStatus::Succeeded
        );
        c.start_crawl("daily-crawler").await.unwrap();
        let t = b.crawler().catalog_table("daily").unwrap().unwrap();
        assert_eq!(t.files, 0);
        assert!(t.columns.is_empty());

        let runs = b.crawler().history().unwrap();
        assert_eq!(runs.len(), 2, "{runs:?}");
        let (first, second) = (&runs[0], &runs[1]);
        assert_eq!(first.status.as_deref(), Some("SUCCEEDED"));
        let ended = first.finished_at.unwrap();
        assert!(ended - first.started_at >= chrono::Duration::milliseconds(300));
        assert!(second.started_at >= ended);
        assert_eq!((second.finished_at, second.status.as_deref()), (None, None));
    }
}
