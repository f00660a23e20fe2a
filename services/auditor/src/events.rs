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

/// An alert is about to be sent: the log has it in full, on every backend.
pub struct AlertNotified<'a> {
    pub subject: &'a str,
    pub body: &'a str,
}

impl InternalEvent for AlertNotified<'_> {
    fn emit(self) {
        tracing::warn!(subject = self.subject, body = self.body, "AlertNotified");
        counted("AlertNotified");
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

/// The dashboard and API could not bind their address: the pipeline runs on without them.
pub struct DashboardBindError<'a, E: Display> {
    pub listen: &'a str,
    pub error: E,
}

impl<E: Display> InternalEvent for DashboardBindError<'_, E> {
    fn emit(self) {
        tracing::error!(listen = self.listen, error = %self.error, "DashboardBindError");
        counted("DashboardBindError");
    }
}

/// The dashboard and API are served at `addr`.
pub struct DashboardListening<'a> {
    pub addr: &'a str,
}

impl InternalEvent for DashboardListening<'_> {
    fn emit(self) {
        tracing::info!(addr = self.addr, "DashboardListening");
        counted("DashboardListening");
    }
}

/// No `operations.api_token`: every API route answers 401.
pub struct ApiTokenMissing;

impl InternalEvent for ApiTokenMissing {
    fn emit(self) {
        tracing::warn!("ApiTokenMissing: every API route answers 401");
        counted("ApiTokenMissing");
    }
}

/// The bound address could not be written for `choreo up` to read.
pub struct DashboardAddrFileError<'a, E: Display> {
    pub path: &'a std::path::Path,
    pub error: E,
}

impl<E: Display> InternalEvent for DashboardAddrFileError<'_, E> {
    fn emit(self) {
        tracing::warn!(path = %self.path.display(), error = %self.error, "DashboardAddrFileError");
        counted("DashboardAddrFileError");
    }
}

/// A request took longer than `operations.request_timeout_secs` and was answered 503.
pub struct ApiRequestTimeout {
    pub limit: std::time::Duration,
}

impl InternalEvent for ApiRequestTimeout {
    fn emit(self) {
        tracing::warn!(limit = ?self.limit, "ApiRequestTimeout");
        counted("ApiRequestTimeout");
    }
}

/// A store or queue did not answer an API request (answered 503).
pub struct ApiStoreError<'a, E: Display> {
    pub error: &'a E,
}

impl<E: Display> InternalEvent for ApiStoreError<'_, E> {
    fn emit(self) {
        tracing::error!(error = %self.error, "ApiStoreError");
        counted("ApiStoreError");
    }
}

/// The queue (`what = "queues"`) or file (`"files"`) gauges could not be read this round.
pub struct GaugesError<E: Display> {
    pub what: &'static str,
    pub error: E,
}

impl<E: Display> InternalEvent for GaugesError<E> {
    fn emit(self) {
        tracing::warn!(what = self.what, error = %self.error, "GaugesError");
        counted("GaugesError");
    }
}
