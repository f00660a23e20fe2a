use crate::PortError;
use async_trait::async_trait;
use choreo_domain::{Alert, Envelope};
use chrono::{DateTime, Utc};

/// One recorded event.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AuditEntry {
    pub event_id: String,
    pub event_type: String,
    pub dataset: String,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub body: serde_json::Value,
}

impl AuditEntry {
    /// The entry recording `envelope` at `recorded_at`: its type and dataset as the event names
    /// them, the whole envelope as its body.
    pub fn of(envelope: &Envelope, recorded_at: DateTime<Utc>) -> AuditEntry {
        AuditEntry {
            event_id: envelope.id.clone(),
            event_type: envelope.event.kind().as_str().to_string(),
            dataset: envelope.event.dataset().to_string(),
            occurred_at: envelope.occurred_at,
            recorded_at,
            body: serde_json::to_value(envelope).expect("envelopes serialize"),
        }
    }
}

/// The append-only audit trail, countable per dataset and event type.
#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Appends the event. An event whose id was recorded already never counts twice: `counts`
    /// and `recent` hold each id once. A store that can tell it is a duplicate at no cost returns
    /// `Ok(false)` and stores nothing (SQLite always; DynamoDB, which writes the events that
    /// arrive together as one item, only within that item); otherwise it may keep the duplicate,
    /// answer `Ok(true)`, and leave it to the reads to drop.
    async fn record(&self, envelope: &Envelope) -> Result<bool, PortError>;

    /// `(dataset, event_type, count)` for every pair seen. It may read the whole trail (DynamoDB
    /// keeps no counter item, which would be one hot key per dataset): for tests and the command
    /// line, not for a page that refreshes.
    async fn counts(&self) -> Result<Vec<(String, String, u64)>, PortError>;

    /// The latest `limit` entries, newest first.
    async fn recent(&self, limit: usize) -> Result<Vec<AuditEntry>, PortError>;

    /// Stores an alert to be sent, unless one with its id exists: then returns `Ok(false)` and
    /// changes nothing, so a failure is alerted on once however often its event arrives.
    async fn add_alert(&self, alert: &Alert) -> Result<bool, PortError>;

    /// Alerts not sent yet, oldest first, at most `limit`.
    async fn pending_alerts(&self, limit: usize) -> Result<Vec<Alert>, PortError>;

    /// Marks the alerts sent at `at` (ids that are unknown or already sent are left alone).
    async fn mark_alerts_sent(&self, ids: &[String], at: DateTime<Utc>) -> Result<(), PortError>;

    /// The latest `limit` alerts, sent or not, newest first: the recent failures.
    async fn alerts(&self, limit: usize) -> Result<Vec<Alert>, PortError>;
}
