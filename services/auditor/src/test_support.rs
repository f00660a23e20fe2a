//! Helpers the unit tests share.

use choreo_domain::{Envelope, Event};
use choreo_ports::AuditEntry;
use chrono::{DateTime, Utc};

/// `event` as the audit trail returns it, having occurred at `at`.
pub fn entry(event: Event, at: DateTime<Utc>) -> AuditEntry {
    let mut envelope = Envelope::new(event);
    envelope.occurred_at = at;
    AuditEntry {
        event_id: envelope.id.clone(),
        event_type: envelope.event.kind().as_str().into(),
        dataset: envelope.event.dataset().into(),
        occurred_at: at,
        recorded_at: at,
        body: serde_json::to_value(&envelope).unwrap(),
    }
}
