//! Batches: the unit of cataloguing and transformation. A crawl costs at least ten minutes of Glue
//! time however few files it sees, so the crawler poller gathers a dataset's VALID files into a batch
//! and runs one crawl and one job per batch.

use crate::record::FileId;
use crate::{Event, Stage};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub type BatchId = String;

/// Where a batch is. Each move is a conditional write, like a file's.
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
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum BatchState {
    /// Its crawler runs (or waits to start, when another crawl held the crawler).
    Crawling,
    /// Catalogued; waiting for the transform launcher.
    Cataloged,
    /// Its job run is started (or being started).
    Transforming,
    Ingested,
    Failed,
}

impl BatchState {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(s: &str) -> Option<BatchState> {
        s.parse().ok()
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, BatchState::Ingested | BatchState::Failed)
    }
}

/// A batch record, kept by the state store beside the files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    pub id: BatchId,
    pub dataset: String,
    /// The crawler that catalogues the batch; empty when its dataset is catalogued directly.
    pub crawler: String,
    pub job: String,
    pub state: BatchState,
    pub files: Vec<FileId>,
    /// Whether this batch's crawl was started (false while another crawl held the crawler).
    pub crawl_started: bool,
    /// When the crawler poller started this batch's crawl. With `crawl_ended_at` it makes "one crawl
    /// at a time per crawler" checkable from the store: no two batches of a crawler overlap. Set
    /// while `crawl_started` is false, it marks a start attempted whose outcome was not recorded.
    #[serde(default)]
    pub crawl_started_at: Option<DateTime<Utc>>,
    /// When the crawler poller saw this batch's crawl end (at or after the crawl's own end).
    #[serde(default)]
    pub crawl_ended_at: Option<DateTime<Utc>>,
    /// The batch that leads the crawl cataloguing this one, when it rides along another's crawl
    /// (see [`crate::lifecycle`]): the lead polls the crawler and completes its riders. `None` for a
    /// lead, and for batches recorded before crawls were shared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crawl_lead: Option<BatchId>,
    /// The batches riding along this batch's crawl, when it leads one: completed with it, after
    /// them, so that a lead catalogued means its riders are too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub riders: Vec<BatchId>,
    /// The job run that transforms the batch, once started.
    pub job_run_id: Option<String>,
    /// Failed tries at starting the job run (throttled, or a transient error): the batch fails after
    /// `runtime.job_start_attempts` of them.
    #[serde(default)]
    pub start_attempts: u32,
    /// The manifest object listing the batch's files, as `bucket/key`.
    pub manifest: Option<String>,
    pub reason: Option<String>,
    /// The stage a FAILED batch failed at.
    pub failed_stage: Option<crate::Stage>,
    /// W3C `traceparent` of the batch's own trace.
    pub traceparent: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// How many updates the stored record has had: an update applies only to the version it was
    /// read at, so two handlers of one batch (a redelivery beside a sweep's poke) cannot both write
    /// what each read — the second gets a conflict, as when the state moved on.
    #[serde(default)]
    pub version: u64,
}

impl Batch {
    /// A new batch of `files` in `state`, created now, with nothing run yet.
    pub fn new(
        id: BatchId,
        dataset: &str,
        crawler: String,
        job: String,
        state: BatchState,
        files: Vec<FileId>,
    ) -> Batch {
        let now = crate::clock::now();
        Batch {
            id,
            dataset: dataset.to_string(),
            crawler,
            job,
            state,
            files,
            crawl_started: false,
            crawl_started_at: None,
            crawl_ended_at: None,
            crawl_lead: None,
            riders: Vec::new(),
            job_run_id: None,
            start_attempts: 0,
            manifest: None,
            reason: None,
            failed_stage: None,
            traceparent: None,
            created_at: now,
            updated_at: now,
            version: 0,
        }
    }

    /// The event that tells the next stage what `stage` made of the batch: `BatchCataloged` or
    /// `BatchIngested` for the state it reached, `BatchFailed` if it failed at `stage`; `None` while
    /// it is under way, or when another stage put it where it is.
    pub fn announcement(&self, stage: Stage) -> Option<Event> {
        let (batch_id, dataset, files) =
            (self.id.clone(), self.dataset.clone(), self.files.clone());
        match self.state {
            BatchState::Cataloged if stage == Stage::Crawler => Some(Event::BatchCataloged {
                batch_id,
                dataset,
                files,
            }),
            BatchState::Ingested if stage == Stage::Transformer => Some(Event::BatchIngested {
                batch_id,
                dataset,
                files,
            }),
            BatchState::Failed if self.failed_stage == Some(stage) => Some(Event::BatchFailed {
                batch_id,
                dataset,
                stage,
                reason: self.reason.clone().unwrap_or_default(),
                files,
            }),
            _ => None,
        }
    }

    /// Whether the batch is catalogued directly (by its schema, without a crawler).
    pub fn is_direct(&self) -> bool {
        self.crawler.is_empty()
    }

    /// The id of the batch opened by the message whose id is `seed`: deterministic, so that a
    /// redelivered message finds the batch it opened before its worker died.
    pub fn id_for(dataset: &str, seed: &str) -> BatchId {
        let short: String = seed
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(12)
            .collect();
        format!("b-{dataset}-{short}")
    }
}

/// What a job run is given to transform: the object its `--manifest` argument names, which the
/// transform launcher writes to the work bucket. It carries what the built-in transform needs to
/// know of the dataset, so that a job (the Glue script above all) needs no configuration of its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub batch_id: BatchId,
    pub dataset: String,
    /// The batch's files, oldest first as the crawler gathered them: the built-in transform keeps the
    /// last row of a primary key, so this order decides which wins.
    pub files: Vec<ManifestFile>,
    /// The dataset's Table Schema. Absent in manifests written before it was added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<choreo_schema::TableSchema>,
    /// The dataset's `personal_data` columns, to be masked.
    #[serde(default)]
    pub personal_data: Vec<String>,
    /// The dataset's format and CSV dialect, for a job that has no configuration (the local runner
    /// reads its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<crate::config::FileFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csv: Option<crate::config::CsvOptions>,
}

/// One file of a [`Manifest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestFile {
    pub file_id: FileId,
    pub bucket: String,
    pub key: String,
    /// The bytes to read: a job reads this version, not whatever the key holds now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<crate::Pin>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(state: BatchState, failed_at: Option<Stage>) -> Batch {
        Batch {
            failed_stage: failed_at,
            reason: failed_at.map(|_| "no table".into()),
            ..Batch::new(
                "b-1".into(),
                "sales",
                "sales-crawler".into(),
                "builtin".into(),
                state,
                vec![FileId::from("f-1")],
            )
        }
    }

    #[test]
    fn a_batch_is_announced_by_the_stage_that_put_it_where_it_is() {
        use {BatchState as B, Stage as S};
        let kind = |b: &Batch, s| b.announcement(s).map(|e| e.kind().as_str());
        assert_eq!(
            kind(&batch(B::Cataloged, None), S::Crawler),
            Some("BatchCataloged")
        );
        assert_eq!(kind(&batch(B::Cataloged, None), S::Transformer), None);
        assert_eq!(
            kind(&batch(B::Ingested, None), S::Transformer),
            Some("BatchIngested")
        );
        assert_eq!(kind(&batch(B::Crawling, None), S::Crawler), None);
        assert_eq!(kind(&batch(B::Transforming, None), S::Transformer), None);
        let failed = batch(B::Failed, Some(S::Crawler));
        assert_eq!(kind(&failed, S::Transformer), None, "not the launcher's");
        match failed.announcement(S::Crawler) {
            Some(Event::BatchFailed {
                reason,
                stage,
                files,
                ..
            }) => {
                assert_eq!((reason.as_str(), stage), ("no table", S::Crawler));
                assert_eq!(files, vec![FileId::from("f-1")]);
            }
            other => panic!("{other:?}"),
        }
    }
}
