//! The embedded local backend: every port on one SQLite database and a directory per bucket, with
//! the semantics of the AWS service each stands in for.
//!
//! ```text
//! data_dir/
//!   choreo.db          queues (SQS), subscriptions (SNS), files/batches/leases (DynamoDB),
//!                      extract keys, ticks and units (DynamoDB), crawls + crawl_runs (Glue crawlers), catalog + partitions (Glue Data
//!                      Catalog), job_runs (Glue jobs), audit trail
//!   buckets/<bucket>/  one directory per bucket (S3), keys are relative paths
//!   tmp/               staging for atomic writes
//! ```
//!
//! [`LocalBackend::open`] opens the database (`db.rs`: WAL, 5 s busy timeout, schema), creates the
//! bucket directories, declares every queue with its dead-letter queue (`queue.rs`) and subscribes
//! the queues to the topic (`bus.rs`). [`LocalBackend::ports`] hands the services the same traits the
//! AWS backend implements. Around them:
//!
//! - `objects.rs` — buckets as directories; writes are temp file + fsync + rename;
//!   `bucketfs.rs` resolves keys without following links (buckets hold regular files only).
//! - `watcher.rs` — S3-shaped notifications to the ingest queue, as S3 event notifications would:
//!   at once for objects written through the object store, and by scanning the input bucket for
//!   files other programs write; run the scan with [`LocalBackend::watch_input_bucket`].
//! - `state.rs` — file records, batches and leases as conditional writes.
//! - `crawler.rs` / `jobs.rs` / `transform.rs` — Glue stand-ins that do their work when polled
//!   (`transform.rs` runs the built-in transform's rules, `choreo_transform`, on the local buckets);
//!   `catalog.rs` — the catalog's tables and partitions, which crawls and direct registrations write.
//! - `audit.rs` — the deduplicated audit trail, its counters and the alerts waiting to go out.
//! - `mail.rs` — alerts as log lines, and e-mails through SMTP when configured.
//!
//! Several processes may open the same data directory: everything that must be shared is in the
//! database (queues, subscriptions, the notified set, state), and every read-modify-write is a
//! `BEGIN IMMEDIATE` transaction. Only long-poll wake-ups are per process; other processes' sends are
//! seen within 100 ms.

mod audit;
mod bucketfs;
mod bus;
mod catalog;
mod crawler;
mod db;
pub mod events;
mod extracts;
mod jobs;
mod mail;
mod objects;
mod queue;
mod state;
pub mod transform;
mod watcher;
pub mod worker;

pub use audit::LocalAuditLog;
pub use bus::LocalTopic;
pub use catalog::{CatalogPartition, CatalogTable, LocalCatalog};
pub use crawler::{CrawlRun, LocalCrawler};
pub use extracts::LocalExtractStore;
pub use jobs::LocalJobRunner;
pub use mail::MailNotifier;
pub use objects::LocalObjectStore;
pub use queue::LocalQueue;
pub use state::LocalStateStore;
pub use watcher::{ScanResult, s3_key_encode, s3_notification};

use choreo_domain::Config;
use choreo_domain::config::Durability;
use choreo_domain::config::Queues;
use choreo_ports::{PortError, Ports, Queue};
use choreo_telemetry::events::emit;
use db::Db;
use queue::Wakers;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use watcher::{Announcer, BucketWatcher};

/// The local backend: cheap to clone, every clone sharing one database connection.
#[derive(Clone)]
pub struct LocalBackend {
    config: Arc<Config>,
    db: Arc<Db>,
    wakers: Arc<Wakers>,
    objects: Arc<LocalObjectStore>,
    topic: Arc<LocalTopic>,
    state: Arc<LocalStateStore>,
    crawler: Arc<LocalCrawler>,
    catalog: Arc<LocalCatalog>,
    jobs: Arc<LocalJobRunner>,
    audit: Arc<LocalAuditLog>,
    extracts: Arc<LocalExtractStore>,
    watcher: Arc<BucketWatcher>,
    mail: Arc<MailNotifier>,
}

impl LocalBackend {
    /// Opens (creating if needed) `config.data_dir/choreo.db` and `config.data_dir/buckets/<bucket>/`
    /// for every bucket in `config.buckets`; declares every queue of the configuration with its
    /// dead-letter queue and `max_receive_count`; and replaces the topic's subscriptions with the
    /// configuration's: validate ← FileRegistered, quarantine ← FileRejected, crawl ← FileValidated,
    /// transform ← BatchCataloged, audit ← every published kind.
    pub fn open(config: &Config) -> Result<LocalBackend, PortError> {
        let data_dir = config.data_dir.clone();
        let dir_error =
            |e: std::io::Error| PortError::permanent("open", data_dir.display().to_string(), e);
        std::fs::create_dir_all(&data_dir).map_err(dir_error)?;
        let db = Db::open_with(&data_dir.join("choreo.db"), config.local.durability)?;
        let wakers = Arc::new(Wakers::default());
        // Another process's sends (`choreo put`, a replica) wake this one's long polls at once.
        let woken = Arc::clone(&wakers);
        db.on_foreign_commit(Box::new(move || woken.wake_all()));
        let announcer = Arc::new(Announcer::new(
            Arc::clone(&db),
            Arc::clone(&wakers),
            &config.buckets.input,
            &config.queues.ingest,
        ));
        let sync = config.local.durability == Durability::Power;
        let objects = Arc::new(
            LocalObjectStore::new(&data_dir)
                .map_err(dir_error)?
                .with_sync(sync)
                .with_announcer(announcer),
        );
        let b = &config.buckets;
        for bucket in [&b.input, &b.failed, &b.curated, &b.work] {
            objects.create_bucket(bucket)?;
        }

        // The extract queue always: `choreo extract run` may send to it before any extract runs.
        let mut queues: Vec<String> = config.all_queues().iter().map(|q| q.to_string()).collect();
        queues.push(config.queues.extract.clone());
        let max_receive_count = config.queues.max_receive_count;
        let subs: Vec<(String, Vec<&'static str>)> = config
            .subscriptions()
            .into_iter()
            .map(|(q, kinds)| (q, kinds.iter().map(|k| k.as_str()).collect()))
            .collect();
        let topic_name = config.topics.events.clone();
        db.write_blocking("open", "queues", move |tx| {
            for q in &queues {
                let dlq = Queues::dlq_of(q);
                queue::declare(tx, &dlq, None, None)?;
                queue::declare(tx, q, Some(&dlq), Some(max_receive_count))?;
            }
            bus::set_subscriptions(tx, &topic_name, &subs)?;
            Ok(())
        })?;

        let watcher = BucketWatcher::new(
            Arc::clone(&db),
            Arc::clone(&wakers),
            Arc::clone(&objects),
            &config.buckets.input,
            &config.queues.ingest,
            Duration::from_secs(config.local.quiet_secs),
        )?;
        let crawler = LocalCrawler::new(Arc::clone(&db), Arc::clone(&objects), config)?
            .with_min_duration(Duration::from_secs(config.local.crawl_min_secs));
        let config = Arc::new(config.clone());
        Ok(LocalBackend {
            topic: Arc::new(LocalTopic::new(
                &config.topics.events,
                Arc::clone(&db),
                Arc::clone(&wakers),
            )),
            state: Arc::new(LocalStateStore::new(Arc::clone(&db))),
            crawler: Arc::new(crawler),
            catalog: Arc::new(LocalCatalog::new(Arc::clone(&db))),
            jobs: Arc::new(LocalJobRunner::new(
                Arc::clone(&db),
                Arc::clone(&objects),
                Arc::clone(&config),
                config.data_dir.clone(),
            )),
            audit: Arc::new(LocalAuditLog::new(Arc::clone(&db))),
            extracts: Arc::new(LocalExtractStore::new(Arc::clone(&db))),
            watcher: Arc::new(watcher),
            mail: Arc::new(MailNotifier::new(&config.operations.alerts)?),
            config,
            db,
            wakers,
            objects,
        })
    }

    /// Makes every crawl take at least `d` between its start and the poll that completes it (for
    /// tests and demonstrations of a crawl that takes time).
    pub fn with_crawl_min_duration(mut self, d: Duration) -> Self {
        self.crawler = Arc::new((*self.crawler).clone().with_min_duration(d));
        self
    }

    /// The configuration the backend was opened with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The ports, as the services take them.
    pub fn ports(&self) -> Ports {
        Ports {
            bus: self.topic.clone(),
            objects: self.objects.clone(),
            state: self.state.clone(),
            crawler: self.crawler.clone(),
            catalog: self.catalog.clone(),
            jobs: self.jobs.clone(),
            audit: self.audit.clone(),
            queues: Arc::new(self.clone()),
            notifier: self.mail.clone(),
            extracts: self.extracts.clone(),
        }
    }

    /// The queue `name` — any name, including a dead-letter queue `<name>-dlq`. A queue that was never
    /// declared has no redrive policy.
    pub fn queue(&self, name: &str) -> Arc<dyn Queue> {
        self.local_queue(name)
    }

    /// The queue `name`, as its concrete type.
    pub fn local_queue(&self, name: &str) -> Arc<LocalQueue> {
        Arc::new(LocalQueue::new(
            name,
            Arc::clone(&self.db),
            Arc::clone(&self.wakers),
        ))
    }

    pub fn objects(&self) -> Arc<LocalObjectStore> {
        Arc::clone(&self.objects)
    }

    pub fn topic(&self) -> Arc<LocalTopic> {
        Arc::clone(&self.topic)
    }

    pub fn state(&self) -> Arc<LocalStateStore> {
        Arc::clone(&self.state)
    }

    pub fn crawler(&self) -> Arc<LocalCrawler> {
        Arc::clone(&self.crawler)
    }

    /// The catalog's tables and partitions, as crawls and direct registrations wrote them.
    pub fn catalog(&self) -> Arc<LocalCatalog> {
        Arc::clone(&self.catalog)
    }

    pub fn jobs(&self) -> Arc<LocalJobRunner> {
        Arc::clone(&self.jobs)
    }

    pub fn audit(&self) -> Arc<LocalAuditLog> {
        Arc::clone(&self.audit)
    }

    /// Sends an S3-shaped notification to the ingest queue for each file of the input bucket's
    /// directory not yet notified: as its writer closes it or renames it in, or, found by a scan,
    /// once unchanged for `config.local.quiet_secs` and open for writing nowhere (see
    /// `watcher.rs`). Runs until `shutdown` is cancelled; a failed scan is logged and tried again.
    /// Pinned versions no key holds any more are pruned beside it, hourly, once a week old.
    pub async fn watch_input_bucket(&self, shutdown: CancellationToken) {
        let interval = Duration::from_millis(self.config.runtime.scan_interval_ms.max(1));
        tokio::join!(
            self.watcher.run(interval, shutdown.clone()),
            self.prune_versions(shutdown)
        );
    }

    async fn prune_versions(&self, shutdown: CancellationToken) {
        const EVERY: Duration = Duration::from_secs(3600);
        const AGE: Duration = Duration::from_secs(7 * 24 * 3600);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(EVERY) => {}
            }
            let objects = Arc::clone(&self.objects);
            match tokio::task::spawn_blocking(move || objects.prune_versions(AGE)).await {
                Ok(Ok(n)) if n > 0 => emit(events::VersionsPruned { removed: n }),
                Ok(Err(e)) => emit(events::VersionsPruneError { error: &e }),
                _ => {}
            }
        }
    }

    /// One scan of the input bucket: how many notifications were sent, how many entries are not
    /// settled yet (quiet period, open for writing), and how many were refused.
    pub async fn scan_once(&self) -> Result<ScanResult, PortError> {
        self.watcher.scan_once().await
    }

    /// The database file.
    pub fn db_path(&self) -> PathBuf {
        self.db.path().to_path_buf()
    }

    #[cfg(test)]
    pub(crate) fn db_blocking<T>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>,
    ) -> Result<T, PortError> {
        self.db.blocking("test", "db", |c| Ok(f(c)?))
    }
}

impl choreo_ports::QueueLookup for LocalBackend {
    fn queue(&self, name: &str) -> Arc<dyn Queue> {
        self.local_queue(name)
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    use crate::LocalBackend;
    use choreo_domain::Config;
    use choreo_domain::config::{
        CompressionSetting, CsvOptions, DatasetConfig, FileFormat, KeyMatch, SchemaSource,
    };
    use choreo_ports::OutgoingMessage;

    fn dataset(
        name: &str,
        prefix: Option<&str>,
        pattern: Option<&str>,
        format: FileFormat,
        crawler: Option<&str>,
    ) -> DatasetConfig {
        DatasetConfig {
            name: name.into(),
            key_match: KeyMatch {
                prefix: prefix.map(Into::into),
                pattern: pattern.map(Into::into),
            },
            format,
            compression: CompressionSetting::Auto,
            csv: CsvOptions::default(),
            schema: SchemaSource::Inline(serde_json::json!({"fields": []})),
            catalog: Default::default(),
            crawler: crawler.map(Into::into),
            job: "builtin".into(),
            personal_data: Vec::new(),
            batch_window_secs: 1,
            batch_max_files: 10,
        }
    }

    /// A backend in a fresh directory, with three datasets: `daily` (CSV under `daily/`, its own
    /// crawler), and `events` (JSON Lines, `events/*.jsonl`) and `tabs` (headerless TSV under
    /// `tabs/`) sharing `shared-crawler`.
    pub(crate) fn backend() -> (tempfile::TempDir, LocalBackend) {
        let dir = tempfile::tempdir().unwrap();
        let mut tabs = dataset(
            "tabs",
            Some("tabs/"),
            None,
            FileFormat::Csv,
            Some("shared-crawler"),
        );
        tabs.csv.delimiter = '\t';
        tabs.csv.header = false;
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            datasets: vec![
                dataset("daily", Some("daily/"), None, FileFormat::Csv, None),
                dataset(
                    "events",
                    None,
                    Some("events/*.jsonl"),
                    FileFormat::Jsonl,
                    Some("shared-crawler"),
                ),
                tabs,
            ],
            ..Config::default()
        };
        config.check().unwrap();
        let b = LocalBackend::open(&config).unwrap();
        (dir, b)
    }

    pub(crate) fn msg(body: &str) -> OutgoingMessage {
        OutgoingMessage {
            body: body.into(),
            attributes: Default::default(),
        }
    }

    pub(crate) fn event_msg(kind: choreo_domain::EventKind) -> OutgoingMessage {
        let mut m = msg(&format!("{{\"kind\":\"{}\"}}", kind.as_str()));
        m.attributes
            .insert("event_type".into(), kind.as_str().into());
        m.attributes
            .insert("traceparent".into(), "00-abc-def-01".into());
        m
    }
}
