//! The extractor's named events (see [`choreo_telemetry::events`]). Units count in
//! `choreo_extract_units_total{outcome}` (`extracted`, `failed`, `duplicate`, `released`) and their
//! rows in `choreo_extract_rows_total`. `ExtractTicked` is the runtime's (a tick by hand sends it too).

use choreo_telemetry::events::{InternalEvent, counted};
use std::time::Duration;

fn units(outcome: &'static str) {
    metrics::counter!("choreo_extract_units_total", "outcome" => outcome).increment(1);
}

/// A schedule could not be read or the scheduler's store did not answer; it tries again at its next
/// look.
pub struct ExtractScheduleError<'a> {
    pub extract: &'a str,
    pub error: &'a dyn std::fmt::Display,
}

impl InternalEvent for ExtractScheduleError<'_> {
    fn emit(self) {
        tracing::warn!(extract = self.extract, error = %self.error, "ExtractScheduleError");
        counted("ExtractScheduleError");
    }
}

/// A tick was fanned out: a unit per live key, and a message per unit still pending.
pub struct ExtractTickFannedOut<'a> {
    pub extract: &'a str,
    pub tick_id: &'a str,
    pub live_keys: usize,
    pub sent: usize,
}

impl InternalEvent for ExtractTickFannedOut<'_> {
    fn emit(self) {
        tracing::info!(
            extract = self.extract,
            tick_id = self.tick_id,
            live_keys = self.live_keys,
            sent = self.sent,
            "ExtractTickFannedOut"
        );
        counted("ExtractTickFannedOut");
    }
}

/// A tick named an extract the configuration does not have: alerted, and dropped.
pub struct ExtractUnknown<'a> {
    pub extract: &'a str,
    pub tick_id: &'a str,
}

impl InternalEvent for ExtractUnknown<'_> {
    fn emit(self) {
        tracing::warn!(
            extract = self.extract,
            tick_id = self.tick_id,
            "ExtractUnknown"
        );
        counted("ExtractUnknown");
    }
}

/// A key's rows are in the input bucket; the pipeline takes the file from there.
pub struct ExtractKeyWritten<'a> {
    pub extract: &'a str,
    pub tick_id: &'a str,
    pub key: &'a str,
    pub object_key: &'a str,
    pub rows: u64,
    pub bytes: u64,
    pub elapsed: Duration,
}

impl InternalEvent for ExtractKeyWritten<'_> {
    fn emit(self) {
        tracing::info!(
            extract = self.extract,
            tick_id = self.tick_id,
            key = self.key,
            object_key = self.object_key,
            rows = self.rows,
            bytes = self.bytes,
            elapsed_ms = self.elapsed.as_millis() as u64,
            "ExtractKeyWritten"
        );
        counted("ExtractKeyWritten");
        units("extracted");
        metrics::counter!("choreo_extract_rows_total").increment(self.rows);
    }
}

/// A key's unit failed: recorded FAILED with the reason, and alerted. An operator's retry resumes it.
pub struct ExtractKeyFailed<'a> {
    pub extract: &'a str,
    pub tick_id: &'a str,
    pub key: &'a str,
    pub reason: &'a str,
}

impl InternalEvent for ExtractKeyFailed<'_> {
    fn emit(self) {
        tracing::error!(
            extract = self.extract,
            tick_id = self.tick_id,
            key = self.key,
            reason = self.reason,
            "ExtractKeyFailed"
        );
        counted("ExtractKeyFailed");
        units("failed");
    }
}

/// A transient error (the bucket, the store) handed the unit back PENDING for its redelivery.
pub struct ExtractKeyReleased<'a> {
    pub tick_id: &'a str,
    pub key: &'a str,
    pub reason: &'a str,
}

impl InternalEvent for ExtractKeyReleased<'_> {
    fn emit(self) {
        tracing::warn!(
            tick_id = self.tick_id,
            key = self.key,
            reason = self.reason,
            "ExtractKeyReleased"
        );
        counted("ExtractKeyReleased");
        units("released");
    }
}

/// A key message found its unit extracted already (a duplicate tick or delivery), or failed and
/// waiting for an operator, or gone: nothing was done.
pub struct ExtractKeySkipped<'a> {
    pub tick_id: &'a str,
    pub key: &'a str,
    /// `extracted`, `failed` or `missing`.
    pub found: &'static str,
}

impl InternalEvent for ExtractKeySkipped<'_> {
    fn emit(self) {
        tracing::info!(
            tick_id = self.tick_id,
            key = self.key,
            found = self.found,
            "ExtractKeySkipped"
        );
        counted("ExtractKeySkipped");
        units("duplicate");
    }
}
