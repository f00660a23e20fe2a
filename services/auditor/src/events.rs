//! The auditor's named events (see [`choreo_telemetry::events`]): its audit trail, alert
//! delivery and stuck-file sweeps. (The queue and file gauges are set by its metrics, not here.)

use choreo_domain::{FileId, FileState};
use choreo_telemetry::events::{InternalEvent, counted};
use std::fmt::Display;

/// An event was added to the audit trail (its first delivery).
pub struct EventAudited<'a> {
    pub event_type: &'static str,
    pub dataset: &'a str,
}

impl InternalEvent for EventAudited<'_> {
    fn emit(self) {
        tracing::debug!(
            event_type = self.event_type,
            dataset = self.dataset,
            "EventAudited"
        );
        counted("EventAudited");
    }
}

/// One alert was sent.
pub struct AlertSent<'a> {
    pub alert: &'a str,
}

impl InternalEvent for AlertSent<'_> {
    fn emit(self) {
        tracing::info!(alert = self.alert, "AlertSent");
        counted("AlertSent");
    }
}

/// More alerts waited than the digest threshold: they went out as one digest.
pub struct AlertDigestSent {
    pub alerts: usize,
}

impl InternalEvent for AlertDigestSent {
    fn emit(self) {
        tracing::info!(alerts = self.alerts, "AlertDigestSent");
        counted("AlertDigestSent");
    }
}

/// Delivering alerts failed; they wait for the next delivery.
pub struct AlertDeliveryError<'a> {
    pub error: &'a dyn Display,
}

impl InternalEvent for AlertDeliveryError<'_> {
    fn emit(self) {
        tracing::warn!(error = %self.error, "AlertDeliveryError");
        counted("AlertDeliveryError");
    }
}

/// A sweep republished or flagged stuck files.
pub struct SweepDone {
    pub republished: usize,
    pub flagged: usize,
}

impl InternalEvent for SweepDone {
    fn emit(self) {
        tracing::info!(
            republished = self.republished,
            flagged = self.flagged,
            "SweepDone"
        );
        counted("SweepDone");
    }
}

/// A sweep failed; the next one tries again.
pub struct SweepError<'a> {
    pub error: &'a dyn Display,
}

impl InternalEvent for SweepError<'_> {
    fn emit(self) {
        tracing::warn!(error = %self.error, "SweepError");
        counted("SweepError");
    }
}

/// A file stayed in a non-terminal state past its limit, and its republishing did not move it:
/// flagged with an alert.
pub struct FileStuck<'a> {
    pub file_id: &'a FileId,
    pub state: FileState,
}

impl InternalEvent for FileStuck<'_> {
    fn emit(self) {
        tracing::error!(file_id = %self.file_id, state = self.state.as_str(), "FileStuck");
        counted("FileStuck");
    }
}

/// A file stayed in a non-terminal state past its limit: the event that moves it on was
/// published again (`attempt` of the sweep's tries).
pub struct StuckFileRepublished<'a> {
    pub file_id: &'a FileId,
    pub state: FileState,
    pub attempt: u32,
}

impl InternalEvent for StuckFileRepublished<'_> {
    fn emit(self) {
        tracing::warn!(
            file_id = %self.file_id,
            state = self.state.as_str(),
            attempt = self.attempt,
            "StuckFileRepublished"
        );
        counted("StuckFileRepublished");
    }
}
