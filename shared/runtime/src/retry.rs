//! Operator retry of FAILED files: one file, the failed files of a batch, or every FAILED file of a
//! dataset.
//!
//! A file resumes before the step that failed ([`FileState::retry_target`]):
//!
//! - failed while VALID (its crawl or catalogue step failed) → VALID, and `FileValidated` is published
//!   again, so the crawler poller gathers it into a new batch with whatever else is waiting;
//! - failed while CATALOGED or TRANSFORMING (its job run) → CATALOGED in a new batch, one per batch
//!   the files failed in, recorded before the files move (so a retry that dies half-way leaves a batch
//!   the launcher can still start with the files that did move), then `BatchCataloged` is published.
//!
//! Every move is the operator's conditional write `FAILED → target`: a file that is no longer FAILED
//! (retried by someone else meanwhile) is skipped and said so, never moved twice.

use crate::publish::{Publisher, batch_event_id, file_event_id};
use choreo_domain::Transition;
use choreo_domain::{Batch, BatchState, Config, Event, FileId, FileRecord, FileState, Stage};
use choreo_ports::{FileQuery, PortError, StateStore, TransitionOutcome};
use std::collections::BTreeMap;

/// What to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryScope {
    File(FileId),
    /// The FAILED files of one batch.
    Batch(String),
    /// Every FAILED file of a dataset.
    Dataset(String),
}

/// What a retry did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RetryReport {
    /// Files moved back to VALID: the crawler poller batches them again.
    pub revalidated: Vec<FileId>,
    /// Files moved back to CATALOGED, by the new batch that carries them to the launcher.
    pub rebatched: BTreeMap<String, Vec<FileId>>,
    /// Files left as they were, and why.
    pub skipped: Vec<(FileId, String)>,
}

impl RetryReport {
    pub fn retried(&self) -> usize {
        self.revalidated.len() + self.rebatched.values().map(Vec::len).sum::<usize>()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    #[error("no file with id {0}")]
    NoFile(FileId),
    #[error("no batch with id {0}")]
    NoBatch(String),
    #[error("no dataset named {0} in the configuration")]
    NoDataset(String),
    #[error(transparent)]
    Port(#[from] PortError),
}

const REASON: &str = "operator retry";

/// Retries the FAILED files `scope` names. See the module documentation.
pub async fn retry(
    state: &dyn StateStore,
    publisher: &Publisher,
    config: &Config,
    scope: &RetryScope,
) -> Result<RetryReport, RetryError> {
    let mut report = RetryReport::default();
    let candidates = failed_files(state, config, scope, &mut report).await?;
    // Files that resume at CATALOGED travel in a new batch per batch they failed in.
    let mut by_batch: BTreeMap<(String, Option<String>), Vec<FileRecord>> = BTreeMap::new();
    for record in candidates {
        match record.failed_from().and_then(FileState::retry_target) {
            Some(FileState::Valid) => revalidate(state, publisher, record, &mut report).await?,
            Some(_) => by_batch
                .entry((record.dataset.clone(), record.batch_id.clone()))
                .or_default()
                .push(record),
            None => {
                let from = record.failed_from().map(FileState::as_str).unwrap_or("?");
                report.skipped.push((
                    record.id,
                    format!("it failed while {from}, where no retry resumes"),
                ));
            }
        }
    }
    for ((dataset, old_batch), records) in by_batch {
        rebatch(
            state,
            publisher,
            config,
            &dataset,
            old_batch,
            records,
            &mut report,
        )
        .await?;
    }
    Ok(report)
}

async fn failed_files(
    state: &dyn StateStore,
    config: &Config,
    scope: &RetryScope,
    report: &mut RetryReport,
) -> Result<Vec<FileRecord>, RetryError> {
    let mut records = Vec::new();
    let mut keep = |r: FileRecord, report: &mut RetryReport| {
        if r.state == FileState::Failed {
            records.push(r);
        } else {
            report
                .skipped
                .push((r.id, format!("it is {}, not FAILED", r.state)));
        }
    };
    match scope {
        RetryScope::File(id) => {
            let r = state
                .get(id)
                .await?
                .ok_or_else(|| RetryError::NoFile(id.clone()))?;
            keep(r, report);
        }
        RetryScope::Batch(id) => {
            let batch = state
                .get_batch(id)
                .await?
                .ok_or_else(|| RetryError::NoBatch(id.clone()))?;
            for file in &batch.files {
                match state.get(file).await? {
                    Some(r) => keep(r, report),
                    None => report.skipped.push((file.clone(), "no record".into())),
                }
            }
        }
        RetryScope::Dataset(name) => {
            if config.dataset(name).is_none() {
                return Err(RetryError::NoDataset(name.clone()));
            }
            let mut after = None;
            loop {
                let page = state
                    .list(&FileQuery {
                        dataset: Some(name.clone()),
                        state: Some(FileState::Failed),
                        limit: 500,
                        after: after.clone(),
                    })
                    .await?;
                records.extend(page.items);
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
        }
    }
    Ok(records)
}

fn retry_transition(file: &FileId, to: FileState) -> Transition {
    Transition::new(file.clone(), Stage::Operator, FileState::Failed, to)
        .expect("the operator's retry edges are in the table")
        .reason(REASON)
}

async fn revalidate(
    state: &dyn StateStore,
    publisher: &Publisher,
    record: FileRecord,
    report: &mut RetryReport,
) -> Result<(), RetryError> {
    let t = retry_transition(&record.id, FileState::Valid).trace_id(record.trace_id.clone());
    match crate::transition::apply(state, &t).await? {
        TransitionOutcome::Applied(moved) => {
            let event = Event::FileValidated {
                file_id: moved.id.clone(),
                dataset: moved.dataset.clone(),
            };
            publisher
                .publish_with(
                    file_event_id(&moved, &event),
                    event,
                    moved.traceparent.clone(),
                )
                .await?;
            report.revalidated.push(moved.id);
        }
        TransitionOutcome::Conflict(now) => report
            .skipped
            .push((record.id, format!("it became {} meanwhile", now.state))),
        TransitionOutcome::NotFound => report.skipped.push((record.id, "no record".into())),
    }
    Ok(())
}

async fn rebatch(
    state: &dyn StateStore,
    publisher: &Publisher,
    config: &Config,
    dataset: &str,
    old_batch: Option<String>,
    records: Vec<FileRecord>,
    report: &mut RetryReport,
) -> Result<(), RetryError> {
    let old = match &old_batch {
        Some(id) => state.get_batch(id).await?,
        None => None,
    };
    let d = config.dataset(dataset);
    let seed = uuid::Uuid::new_v4().simple().to_string();
    let span = tracing::info_span!(
        parent: None,
        "batch",
        choreo.dataset = dataset,
        choreo.retry_of = ?old_batch,
    );
    let crawler = old
        .as_ref()
        .map(|b| b.crawler.clone())
        .or_else(|| d.map(|d| d.crawler_name()))
        .unwrap_or_default();
    // The dataset's job now: the operator may have fixed the configuration before retrying.
    let job = d
        .map(|d| d.job.clone())
        .or_else(|| old.as_ref().map(|b| b.job.clone()))
        .unwrap_or_else(|| "builtin".into());
    let files = records.iter().map(|r| r.id.clone()).collect();
    let id = format!("{}-r{}", Batch::id_for(dataset, &seed), &seed[..4]);
    let mut batch = Batch {
        crawl_started: old.as_ref().is_some_and(|b| b.crawl_started),
        crawl_started_at: old.as_ref().and_then(|b| b.crawl_started_at),
        crawl_ended_at: old.as_ref().and_then(|b| b.crawl_ended_at),
        traceparent: span.in_scope(choreo_telemetry::current_traceparent),
        ..Batch::new(id, dataset, crawler, job, BatchState::Cataloged, files)
    };
    // Recorded first: files that move below always have their batch.
    state.create_batch(&batch).await?;
    let trace_id = batch
        .traceparent
        .as_deref()
        .and_then(choreo_telemetry::trace_id_of)
        .map(str::to_string);
    let mut moved = Vec::new();
    for record in records {
        let t = retry_transition(&record.id, FileState::Cataloged)
            .batch(batch.id.clone())
            .trace_id(trace_id.clone());
        match crate::transition::apply(state, &t).await? {
            TransitionOutcome::Applied(r) => moved.push(r.id),
            TransitionOutcome::Conflict(now) => report
                .skipped
                .push((record.id, format!("it became {} meanwhile", now.state))),
            TransitionOutcome::NotFound => report.skipped.push((record.id, "no record".into())),
        }
    }
    if moved.is_empty() {
        // Nothing moved: close the empty batch rather than hand it to the launcher.
        batch.state = BatchState::Failed;
        batch.reason = Some("operator retry moved no file".into());
        batch.files.clear();
        state
            .update_batch(&mut batch, BatchState::Cataloged)
            .await?;
        return Ok(());
    }
    let event = Event::BatchCataloged {
        batch_id: batch.id.clone(),
        dataset: dataset.to_string(),
        files: moved.clone(),
    };
    publisher
        .publish_with(
            batch_event_id(&batch, &event),
            event,
            batch.traceparent.clone(),
        )
        .await?;
    choreo_telemetry::events::emit(crate::events::BatchRetried {
        batch_id: &batch.id,
        retry_of: old_batch.as_deref(),
        files: moved.len(),
    });
    report.rebatched.insert(batch.id, moved);
    Ok(())
}
