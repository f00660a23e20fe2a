//! The file record: what the state store keeps per file, and the requests that change it.

use crate::state::{FileState, IllegalTransition, Stage};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// A file's id: stable for one version of one object, so that every notification of the same upload
/// (S3 delivers some twice) names the same file and registration can be a put-if-absent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FileId(pub String);

impl FileId {
    /// Derives the id from the object's bucket, key and version marker (S3's version id or sequencer,
    /// the local backend's modification stamp). A new upload to the same key is a new file.
    pub fn derive(bucket: &str, key: &str, version: &str) -> FileId {
        let mut h = Sha256::new();
        for part in [bucket, key, version] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
        FileId(format!("f-{}", &hex::encode(h.finalize())[..20]))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for FileId {
    fn from(s: &str) -> Self {
        FileId(s.to_string())
    }
}

/// Which bytes of a key a record is about. Every read, copy and delete of the file names them, so a
/// re-upload to the same key is a new file and never changes or removes the one in flight.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pin {
    /// A version id: S3's in a versioned bucket, the local backend's stamp.
    VersionId(String),
    /// The ETag of an upload whose notification named no version id (an unversioned bucket, or an
    /// emulator that leaves it out): operations are conditional on it, and a versioned bucket's
    /// version with that ETag is found when it is no longer the latest.
    ETag(String),
}

impl Pin {
    /// The pin a notification's version id and ETag give, if either is known.
    pub fn from_parts(version_id: Option<&str>, e_tag: Option<&str>) -> Option<Pin> {
        let unquote = |s: &str| s.trim_matches('"').to_string();
        match (version_id, e_tag) {
            // S3 names objects written while versioning was off `null`: not a usable id.
            (Some(v), _) if !v.is_empty() && v != "null" => Some(Pin::VersionId(v.to_string())),
            (_, Some(e)) if !e.is_empty() => Some(Pin::ETag(unquote(e))),
            _ => None,
        }
    }
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pin::VersionId(v) => write!(f, "version {v}"),
            Pin::ETag(e) => write!(f, "ETag {e}"),
        }
    }
}

/// One line of a file's history, written in the same atomic write as the transition it describes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub at: DateTime<Utc>,
    pub stage: Stage,
    /// `None` for the registration that created the record.
    pub from: Option<FileState>,
    pub to: FileState,
    pub reason: Option<String>,
    pub trace_id: Option<String>,
}

/// Everything the pipeline knows about one file. The seed's audit fields (dataset type, bucket and key,
/// ingestion state, size) are first-class columns so that operators see them at a glance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileRecord {
    pub id: FileId,
    pub dataset: String,
    pub bucket: String,
    pub key: String,
    /// Object size in bytes.
    pub size: u64,
    /// The object version this record is about (S3 version id, sequencer, or local stamp).
    pub version: String,
    /// The bytes the pipeline registered, which every later object operation names. `None` for
    /// records written before pins existed: those go by key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<Pin>,
    pub state: FileState,
    /// Why the file is in its state, when that needs saying (the rejection or failure reason).
    pub reason: Option<String>,
    /// The file's trace, shared by every stage that touches it.
    pub trace_id: Option<String>,
    /// W3C `traceparent` of the registration, so later batch work can link back to the file's trace.
    pub traceparent: Option<String>,
    /// The batch that catalogued and transformed the file.
    pub batch_id: Option<String>,
    /// One-line summary of the validation report; the full report is an object beside the file.
    pub validation: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub history: Vec<HistoryEntry>,
    /// What the stuck-file sweep did about the file in its current state; cleared by every
    /// transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep: Option<SweepMark>,
}

/// The sweep's note on a file that stayed too long in one state: how often its pending message was
/// published again, and whether it was given up on (flagged stuck and alerted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepMark {
    /// The state the file was stuck in.
    pub state: FileState,
    /// Times the pending message was published again.
    pub republished: u32,
    pub last_at: DateTime<Utc>,
    /// Republishing did not help: the file is flagged and an alert raised.
    pub stuck: bool,
}

impl FileRecord {
    /// Where the file's validation report is kept in the work bucket.
    pub fn report_key(&self) -> String {
        format!("reports/{}/{}.json", self.dataset, self.id)
    }

    /// Where a quarantined file is kept in the failed bucket: under its id, so two files of one key
    /// (two uploads, or a key that looks like another's report) never overwrite each other.
    pub fn quarantine_key(&self) -> String {
        format!("{}/{}", self.id, self.key)
    }

    /// Where a quarantined file's validation report is kept in the failed bucket, beside its folder
    /// (never inside it, where a key could take its name).
    pub fn quarantine_report_key(&self) -> String {
        format!("{}.report.json", self.id)
    }

    /// The state the file was in before it moved to FAILED, which decides where a retry resumes.
    pub fn failed_from(&self) -> Option<FileState> {
        self.history
            .iter()
            .rev()
            .find(|h| h.to == FileState::Failed)
            .and_then(|h| h.from)
    }
}

/// A registration request: the ingestor's put-if-absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewFile {
    pub id: FileId,
    pub dataset: String,
    pub bucket: String,
    pub key: String,
    pub size: u64,
    pub version: String,
    pub pin: Option<Pin>,
    pub reason: Option<String>,
    pub trace_id: Option<String>,
    pub traceparent: Option<String>,
}

impl NewFile {
    /// The record as first stored: NEW, with the registration as its first history entry.
    pub fn into_record(self, at: DateTime<Utc>) -> FileRecord {
        FileRecord {
            history: vec![HistoryEntry {
                at,
                stage: Stage::Ingestor,
                from: None,
                to: FileState::New,
                reason: self.reason.clone(),
                trace_id: self.trace_id.clone(),
            }],
            id: self.id,
            dataset: self.dataset,
            bucket: self.bucket,
            key: self.key,
            size: self.size,
            version: self.version,
            pin: self.pin,
            state: FileState::New,
            reason: self.reason,
            trace_id: self.trace_id,
            traceparent: self.traceparent,
            batch_id: None,
            validation: None,
            created_at: at,
            updated_at: at,
            sweep: None,
        }
    }
}

/// A conditional state change: applies only if the stored state is `from`. Built only through
/// [`Transition::new`], so an illegal move cannot reach a store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub file: FileId,
    pub from: FileState,
    pub to: FileState,
    pub stage: Stage,
    pub reason: Option<String>,
    pub trace_id: Option<String>,
    /// Set the record's batch id in the same write.
    pub batch_id: Option<String>,
    /// Set the record's validation summary in the same write.
    pub validation: Option<String>,
}

impl Transition {
    pub fn new(
        file: FileId,
        stage: Stage,
        from: FileState,
        to: FileState,
    ) -> Result<Self, IllegalTransition> {
        stage.check(from, to)?;
        Ok(Transition {
            file,
            from,
            to,
            stage,
            reason: None,
            trace_id: None,
            batch_id: None,
            validation: None,
        })
    }

    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    pub fn trace_id(mut self, trace_id: Option<String>) -> Self {
        self.trace_id = trace_id;
        self
    }

    pub fn batch(mut self, batch_id: impl Into<String>) -> Self {
        self.batch_id = Some(batch_id.into());
        self
    }

    pub fn validation(mut self, summary: impl Into<String>) -> Self {
        self.validation = Some(summary.into());
        self
    }

    /// Applies the transition to a record already known to be in `from`. Stores call this after their
    /// condition held, so the history entry and the new fields are computed in one place.
    pub fn apply_to(&self, record: &mut FileRecord, at: DateTime<Utc>) {
        debug_assert_eq!(record.state, self.from);
        record.state = self.to;
        record.updated_at = at;
        record.sweep = None;
        if self.reason.is_some() || self.to != FileState::Failed {
            record.reason = self.reason.clone();
        }
        if let Some(b) = &self.batch_id {
            record.batch_id = Some(b.clone());
        }
        if let Some(v) = &self.validation {
            record.validation = Some(v.clone());
        }
        record.history.push(self.history_entry(at));
    }

    pub fn history_entry(&self, at: DateTime<Utc>) -> HistoryEntry {
        HistoryEntry {
            at,
            stage: self.stage,
            from: Some(self.from),
            to: self.to,
            reason: self.reason.clone(),
            trace_id: self.trace_id.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_per_object_version() {
        let a = FileId::derive("in", "daily/a.csv", "1");
        assert_eq!(a, FileId::derive("in", "daily/a.csv", "1"));
        assert_ne!(a, FileId::derive("in", "daily/a.csv", "2"));
        assert_ne!(a, FileId::derive("in", "daily/b.csv", "1"));
        assert!(a.as_str().starts_with("f-") && a.as_str().len() == 22);
    }

    #[test]
    fn illegal_transitions_cannot_be_built() {
        let id = FileId::from("f-1");
        assert!(
            Transition::new(
                id.clone(),
                Stage::Validator,
                FileState::New,
                FileState::Valid
            )
            .is_ok()
        );
        assert!(
            Transition::new(
                id.clone(),
                Stage::Validator,
                FileState::New,
                FileState::Ingested
            )
            .is_err()
        );
        assert!(Transition::new(id, Stage::Crawler, FileState::New, FileState::Valid).is_err());
    }

    #[test]
    fn applying_appends_history() {
        let now = crate::clock::now();
        let mut rec = NewFile {
            id: FileId::from("f-1"),
            dataset: "d".into(),
            bucket: "b".into(),
            key: "k".into(),
            size: 3,
            version: "v".into(),
            pin: None,
            reason: None,
            trace_id: Some("t".into()),
            traceparent: None,
        }
        .into_record(now);
        let t = Transition::new(
            rec.id.clone(),
            Stage::Validator,
            FileState::New,
            FileState::Invalid,
        )
        .unwrap()
        .reason("ragged row")
        .validation("invalid: ragged_row");
        t.apply_to(&mut rec, now);
        assert_eq!(rec.state, FileState::Invalid);
        assert_eq!(rec.reason.as_deref(), Some("ragged row"));
        assert_eq!(rec.validation.as_deref(), Some("invalid: ragged_row"));
        assert_eq!(rec.history.len(), 2);
        assert_eq!(rec.history[1].from, Some(FileState::New));
        assert_eq!(rec.history[1].to, FileState::Invalid);
    }
}
