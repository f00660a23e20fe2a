//! The message contracts: every message body on every queue except the ingest queue (which receives
//! S3-shaped notifications) is an [`Envelope`] in JSON. Changing a variant's meaning means a new
//! [`CONTRACT_VERSION`]; adding an optional field does not.

use crate::record::FileId;
use crate::state::Stage;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The version of the envelope and event shapes below.
pub const CONTRACT_VERSION: u32 = 1;

/// Message attribute carrying the event type, which the topic's subscriptions filter on.
pub const ATTR_EVENT_TYPE: &str = "event_type";
/// Message attribute carrying W3C trace context.
pub const ATTR_TRACEPARENT: &str = "traceparent";
/// The same trace context in X-Ray's format. On SQS it travels as the `AWSTraceHeader` system
/// attribute (outside the ten-attribute limit); through SNS, whose batched publishes take no
/// per-message header, and on the local backend, as an ordinary attribute.
pub const ATTR_AWS_TRACE_HEADER: &str = "AWSTraceHeader";

/// What travels on the wire: a versioned, uniquely identified event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub version: u32,
    /// Unique per event (not per delivery): the auditor deduplicates on it.
    pub id: String,
    pub occurred_at: DateTime<Utc>,
    pub event: Event,
}

impl Envelope {
    pub fn new(event: Event) -> Self {
        Envelope {
            version: CONTRACT_VERSION,
            id: uuid::Uuid::new_v4().to_string(),
            occurred_at: crate::clock::now(),
            event,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("envelopes always serialize")
    }

    /// Parses a message body, refusing versions this build does not know.
    pub fn from_json(body: &str) -> Result<Self, ContractError> {
        let env: Envelope =
            serde_json::from_str(body).map_err(|e| ContractError::Malformed(e.to_string()))?;
        if env.version != CONTRACT_VERSION {
            return Err(ContractError::Version(env.version));
        }
        Ok(env)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("unsupported contract version {0} (this build speaks {CONTRACT_VERSION})")]
    Version(u32),
}

/// Every event and timer. Events are published to the topic; timers are delayed messages a stage sends
/// to its own queue to poll long work (a durable timer: it survives the worker that set it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Event {
    /// The ingestor registered a file NEW.
    FileRegistered {
        file_id: FileId,
        dataset: String,
        bucket: String,
        key: String,
        size: u64,
    },
    /// The validator found the file VALID.
    FileValidated { file_id: FileId, dataset: String },
    /// The validator found the file INVALID.
    FileRejected {
        file_id: FileId,
        dataset: String,
        reason: String,
    },
    /// The quarantine mover moved the file to the failed bucket.
    FileQuarantined {
        file_id: FileId,
        dataset: String,
        bucket: String,
        key: String,
    },
    /// A batch's crawl succeeded and its files are CATALOGED.
    BatchCataloged {
        batch_id: String,
        dataset: String,
        files: Vec<FileId>,
    },
    /// A batch's job run succeeded and its files are INGESTED.
    BatchIngested {
        batch_id: String,
        dataset: String,
        files: Vec<FileId>,
    },
    /// A batch failed at `stage`; its files are FAILED.
    BatchFailed {
        batch_id: String,
        dataset: String,
        stage: Stage,
        reason: String,
        files: Vec<FileId>,
    },
    /// Timer: a dataset's batch window closed (or its batch filled): start a crawl if none runs.
    /// `window` names the lease that kept other windows from opening meanwhile (empty if none).
    CrawlWindowClosed { dataset: String, window: String },
    /// Timer: poll a batch's crawl.
    CrawlPoll { batch_id: String },
    /// Timer: poll a batch's job run (or start it, if starting was throttled).
    JobPoll { batch_id: String },
}

/// The event's type name, as carried in the `event_type` attribute.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::Display,
    strum::EnumString,
)]
pub enum EventKind {
    FileRegistered,
    FileValidated,
    FileRejected,
    FileQuarantined,
    BatchCataloged,
    BatchIngested,
    BatchFailed,
    CrawlWindowClosed,
    CrawlPoll,
    JobPoll,
}

impl EventKind {
    /// The kinds published to the topic (timers are not).
    pub const PUBLISHED: [EventKind; 7] = [
        EventKind::FileRegistered,
        EventKind::FileValidated,
        EventKind::FileRejected,
        EventKind::FileQuarantined,
        EventKind::BatchCataloged,
        EventKind::BatchIngested,
        EventKind::BatchFailed,
    ];

    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl Event {
    pub fn kind(&self) -> EventKind {
        match self {
            Event::FileRegistered { .. } => EventKind::FileRegistered,
            Event::FileValidated { .. } => EventKind::FileValidated,
            Event::FileRejected { .. } => EventKind::FileRejected,
            Event::FileQuarantined { .. } => EventKind::FileQuarantined,
            Event::BatchCataloged { .. } => EventKind::BatchCataloged,
            Event::BatchIngested { .. } => EventKind::BatchIngested,
            Event::BatchFailed { .. } => EventKind::BatchFailed,
            Event::CrawlWindowClosed { .. } => EventKind::CrawlWindowClosed,
            Event::CrawlPoll { .. } => EventKind::CrawlPoll,
            Event::JobPoll { .. } => EventKind::JobPoll,
        }
    }

    /// The dataset the event is about, for the auditor's counters.
    pub fn dataset(&self) -> &str {
        match self {
            Event::FileRegistered { dataset, .. }
            | Event::FileValidated { dataset, .. }
            | Event::FileRejected { dataset, .. }
            | Event::FileQuarantined { dataset, .. }
            | Event::BatchCataloged { dataset, .. }
            | Event::BatchIngested { dataset, .. }
            | Event::BatchFailed { dataset, .. }
            | Event::CrawlWindowClosed { dataset, .. } => dataset,
            Event::CrawlPoll { .. } | Event::JobPoll { .. } => "",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_with_their_type_tag() {
        let env = Envelope::new(Event::FileRejected {
            file_id: FileId::from("f-1"),
            dataset: "d".into(),
            reason: "empty file".into(),
        });
        let json = env.to_json();
        assert!(json.contains(r#""type":"FileRejected""#), "{json}");
        assert!(json.contains(r#""version":1"#), "{json}");
        assert_eq!(Envelope::from_json(&json).unwrap(), env);
        assert_eq!(env.event.kind().as_str(), "FileRejected");
    }

    #[test]
    fn unknown_versions_and_garbage_are_refused() {
        let mut env = Envelope::new(Event::CrawlPoll {
            batch_id: "b".into(),
        });
        env.version = 99;
        assert!(matches!(
            Envelope::from_json(&env.to_json()),
            Err(ContractError::Version(99))
        ));
        assert!(matches!(
            Envelope::from_json("{not json"),
            Err(ContractError::Malformed(_))
        ));
    }
}
