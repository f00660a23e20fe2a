//! The local backend's named events (see [`choreo_telemetry::events`]): its bucket watcher's, crawler's
//! and job runner's.
//!
//! They carry no `stage`: the backend serves every stage of a `choreo up` alike, and a task-local
//! stage would not reach the tasks the consumer spawns per message (nor the bucket watcher's, which
//! belong to no stage). Their counts are `choreo_events_total{event}` alone.

use choreo_telemetry::events::{InternalEvent, counted};
use std::fmt::{Debug, Display};

/// An entry of the input bucket the pipeline does not take ([`choreo_domain::key::check`]): not
/// notified. The ingestor refuses such keys with its own `KeyRefused` when a notification brings
/// one (on AWS).
pub struct KeyRefused<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    pub reason: &'a str,
}

impl InternalEvent for KeyRefused<'_> {
    fn emit(self) {
        // The key is shown escaped: it may hold what a terminal or a log reader would act on.
        tracing::warn!(bucket = self.bucket, key = ?self.key, reason = self.reason, "KeyRefused");
        counted("KeyRefused");
    }
}

/// A quiet object's version could not be pinned: it is not notified now; the next scan tries again.
pub struct PinFailed<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    pub error: &'a dyn Display,
}

impl InternalEvent for PinFailed<'_> {
    fn emit(self) {
        tracing::warn!(bucket = self.bucket, key = ?self.key, error = %self.error, "PinFailed");
        counted("PinFailed");
    }
}

/// The input bucket's directory cannot be watched: the bucket watcher finds new files by scanning only.
pub struct BucketWatchError<'a> {
    pub bucket: &'a str,
    pub error: &'a dyn Display,
}

impl InternalEvent for BucketWatchError<'_> {
    fn emit(self) {
        tracing::warn!(bucket = self.bucket, error = %self.error, "BucketWatchError");
        counted("BucketWatchError");
    }
}

/// A scan of the input bucket failed; the bucket watcher scans again soon.
pub struct BucketScanError<'a> {
    pub bucket: &'a str,
    pub error: &'a dyn Display,
}

impl InternalEvent for BucketScanError<'_> {
    fn emit(self) {
        tracing::warn!(bucket = self.bucket, error = %self.error, "BucketScanError");
        counted("BucketScanError");
    }
}

/// Notifying the files the watcher saw closed failed; a scan soon catches them.
pub struct BucketEventsError<'a> {
    pub bucket: &'a str,
    pub error: &'a dyn Display,
}

impl InternalEvent for BucketEventsError<'_> {
    fn emit(self) {
        tracing::warn!(bucket = self.bucket, error = %self.error, "BucketEventsError");
        counted("BucketEventsError");
    }
}

/// A crawl could not read some of its objects' columns: the table is inferred from the others.
pub struct CrawlerObjectsSkipped<'a> {
    pub crawler: &'a str,
    pub dataset: &'a str,
    pub skipped: u64,
}

impl InternalEvent for CrawlerObjectsSkipped<'_> {
    fn emit(self) {
        tracing::warn!(
            crawler = self.crawler,
            dataset = self.dataset,
            skipped = self.skipped,
            "CrawlerObjectsSkipped"
        );
        counted("CrawlerObjectsSkipped");
    }
}

/// The local crawler's crawl ended (the crawler poller's `CrawlEnded` records it on the batches).
pub struct LocalCrawlFinished<'a> {
    pub crawler: &'a str,
    pub started: &'a dyn Display,
    pub status: &'a dyn Debug,
}

impl InternalEvent for LocalCrawlFinished<'_> {
    fn emit(self) {
        tracing::info!(
            crawler = self.crawler,
            started = %self.started,
            status = ?self.status,
            "LocalCrawlFinished"
        );
        counted("LocalCrawlFinished");
    }
}

/// The built-in transform wrote a batch's Parquet.
pub struct BuiltinTransformWritten<'a> {
    pub run_id: &'a str,
    pub read: u64,
    pub dropped: u64,
    pub duplicates: u64,
    pub written: u64,
    pub key_runs: usize,
    pub peak_rss_mib: u64,
    pub key: &'a str,
}

impl InternalEvent for BuiltinTransformWritten<'_> {
    fn emit(self) {
        tracing::info!(
            run_id = self.run_id,
            read = self.read,
            dropped = self.dropped,
            duplicates = self.duplicates,
            written = self.written,
            key_runs = self.key_runs,
            peak_rss_mib = self.peak_rss_mib,
            key = self.key,
            "BuiltinTransformWritten"
        );
        counted("BuiltinTransformWritten");
    }
}

/// The built-in transform dropped rows it could not cast; `first` says why the first one went.
pub struct BuiltinTransformDroppedRows<'a> {
    pub run_id: &'a str,
    pub dropped: u64,
    pub first: &'a str,
}

impl InternalEvent for BuiltinTransformDroppedRows<'_> {
    fn emit(self) {
        tracing::warn!(
            run_id = self.run_id,
            dropped = self.dropped,
            first = self.first,
            "BuiltinTransformDroppedRows"
        );
        counted("BuiltinTransformDroppedRows");
    }
}

/// A dataset's own job command exited 0.
pub struct JobCommandSucceeded<'a> {
    pub run_id: &'a str,
    pub command: &'a str,
    /// The end of its standard output.
    pub stdout: &'a str,
}

impl InternalEvent for JobCommandSucceeded<'_> {
    fn emit(self) {
        tracing::info!(
            run_id = self.run_id,
            command = self.command,
            stdout = self.stdout,
            "JobCommandSucceeded"
        );
        counted("JobCommandSucceeded");
    }
}

/// The `warehouse` job loaded a batch of an extract's files into the warehouse, in one transaction.
pub struct WarehouseLoaded<'a> {
    pub run_id: &'a str,
    pub table: &'a str,
    pub mode: &'static str,
    pub files: usize,
    pub deleted: u64,
    pub copied: u64,
    pub elapsed_ms: u64,
}

impl InternalEvent for WarehouseLoaded<'_> {
    fn emit(self) {
        tracing::info!(
            run_id = self.run_id,
            table = self.table,
            mode = self.mode,
            files = self.files,
            deleted = self.deleted,
            copied = self.copied,
            elapsed_ms = self.elapsed_ms,
            "WarehouseLoaded"
        );
        counted("WarehouseLoaded");
        metrics::counter!("choreo_warehouse_rows_total").increment(self.copied);
    }
}

/// Renewing a running job's claim failed; the next renewal tries again (a lapsed claim lets
/// another replica take the run as abandoned).
pub struct JobRunClaimRenewError<'a> {
    pub error: &'a dyn Display,
}

impl InternalEvent for JobRunClaimRenewError<'_> {
    fn emit(self) {
        tracing::warn!(error = %self.error, "JobRunClaimRenewError");
        counted("JobRunClaimRenewError");
    }
}

/// The built-in transform's `--batch_id` argument and its manifest name different batches; the
/// manifest's is used.
pub struct ManifestBatchMismatch<'a> {
    pub argument: &'a str,
    pub manifest: &'a str,
}

impl InternalEvent for ManifestBatchMismatch<'_> {
    fn emit(self) {
        tracing::warn!(
            argument = self.argument,
            manifest = self.manifest,
            "ManifestBatchMismatch"
        );
        counted("ManifestBatchMismatch");
    }
}

/// Old versions of replaced objects were removed from the local buckets.
pub struct VersionsPruned {
    pub removed: usize,
}

impl InternalEvent for VersionsPruned {
    fn emit(self) {
        tracing::info!(removed = self.removed, "VersionsPruned");
        counted("VersionsPruned");
    }
}

/// Pruning old versions failed; the next hourly run tries again.
pub struct VersionsPruneError<'a> {
    pub error: &'a dyn Display,
}

impl InternalEvent for VersionsPruneError<'_> {
    fn emit(self) {
        tracing::warn!(error = %self.error, "VersionsPruneError");
        counted("VersionsPruneError");
    }
}
