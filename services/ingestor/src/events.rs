//! The ingestor's named events (see [`choreo_telemetry::events`]).

use choreo_domain::FileId;
use choreo_telemetry::events::{InternalEvent, counted};
use std::fmt::Display;

/// S3's `s3:TestEvent`, sent when a bucket's notifications are configured: nothing to register.
pub struct TestEventSkipped;

impl InternalEvent for TestEventSkipped {
    fn emit(self) {
        tracing::info!("TestEventSkipped");
        counted("TestEventSkipped");
    }
}

/// A message that is no notification the ingestor reads; rejected, so it ends in the DLQ.
pub struct NotificationMalformed<'a> {
    pub error: &'a dyn Display,
    /// The body's start.
    pub body: &'a str,
}

impl InternalEvent for NotificationMalformed<'_> {
    fn emit(self) {
        tracing::error!(error = %self.error, body = self.body, "NotificationMalformed");
        counted("NotificationMalformed");
    }
}

/// A key the pipeline does not take ([`choreo_domain::key::check`]): not registered. The local
/// backend's notifier refuses such keys before they are notified, with its own `KeyRefused`.
pub struct KeyRefused<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    pub reason: &'a dyn Display,
}

impl InternalEvent for KeyRefused<'_> {
    fn emit(self) {
        // The key is shown escaped: it may hold what a terminal or a log reader would act on.
        tracing::warn!(bucket = self.bucket, key = ?self.key, reason = %self.reason, "KeyRefused");
        counted("KeyRefused");
    }
}

/// A notification for an object outside the input bucket: ignored.
pub struct NotificationForeignBucket<'a> {
    pub bucket: &'a str,
}

impl InternalEvent for NotificationForeignBucket<'_> {
    fn emit(self) {
        tracing::warn!(bucket = self.bucket, "NotificationForeignBucket");
        counted("NotificationForeignBucket");
    }
}

/// A file was registered NEW (its first notification).
pub struct FileRegistered<'a> {
    pub file_id: &'a FileId,
    pub dataset: &'a str,
    pub size: u64,
}

impl InternalEvent for FileRegistered<'_> {
    fn emit(self) {
        tracing::info!(file_id = %self.file_id, dataset = self.dataset, size = self.size, "FileRegistered");
        counted("FileRegistered");
    }
}

/// A backfill listed a prefix of the input bucket and registered what had no record.
pub struct BackfillFinished<'a> {
    pub prefix: &'a str,
    pub listed: u64,
    pub registered: u64,
}

impl InternalEvent for BackfillFinished<'_> {
    fn emit(self) {
        tracing::info!(
            prefix = self.prefix,
            listed = self.listed,
            registered = self.registered,
            "BackfillFinished"
        );
        counted("BackfillFinished");
    }
}
