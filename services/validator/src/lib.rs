//! The validator: NEW → VALID | INVALID.
//!
//! It streams the object (gunzipping as the dataset says) through `choreo-validation` against the
//! dataset's Table Schema, stores the full report in the work bucket, writes the verdict with the
//! report's one-line summary on the record, and publishes `FileValidated` or `FileRejected`.

use async_trait::async_trait;
use choreo_domain::{Event, FileRecord, FileState, Progress, Stage, Transition, UNMATCHED_DATASET};
use choreo_ports::{PortErrorKind, ReceivedMessage, TransitionOutcome};
use choreo_runtime::publish::file_event_id;
use choreo_runtime::{Handler, HandlerError, ServiceContext, decode};
use choreo_validation::{Limits, Report};
use std::sync::Arc;

pub mod events;

pub const STAGE: Stage = Stage::Validator;

/// The service's wiring: its queue and its handler.
pub const SPEC: choreo_runtime::ServiceSpec = choreo_runtime::ServiceSpec {
    stage: STAGE,
    queue: queue_name,
    build: handler,
    background: None,
};

fn queue_name(config: &choreo_domain::Config) -> &str {
    &config.queues.validate
}
const TARGETS: [FileState; 2] = [FileState::Valid, FileState::Invalid];

pub struct Validator {
    ctx: ServiceContext,
    limits: Limits,
}

pub fn handler(ctx: &ServiceContext) -> Arc<dyn Handler> {
    Arc::new(Validator {
        ctx: ctx.clone(),
        limits: Limits::default(),
    })
}

#[async_trait]
impl Handler for Validator {
    async fn handle(&self, message: &ReceivedMessage) -> Result<(), HandlerError> {
        let Event::FileRegistered { file_id, .. } = decode(message)?.event else {
            return Err(HandlerError::Permanent(
                "validator expects FileRegistered".into(),
            ));
        };
        let Some(record) = self.ctx.ports.state.get(&file_id).await? else {
            return Err(HandlerError::Transient(format!(
                "no record for {file_id} yet"
            )));
        };
        match record.state.progress(FileState::New, &TARGETS) {
            Progress::Ready => self.validate(record).await,
            Progress::AlreadyThere(_) => self.announce(&record).await,
            Progress::Beyond(_) | Progress::Behind(_) => Ok(()),
        }
    }
}

impl Validator {
    async fn validate(&self, record: FileRecord) -> Result<(), HandlerError> {
        let report = self.check(&record).await?;
        let summary = report.summary();
        // A valid file's report is its summary (rows read), kept on the record; storing it as an
        // object too would cost an S3 PUT per file for nothing. Invalid files get the full report.
        if !report.valid {
            let body = serde_json::to_vec_pretty(&report).expect("reports serialize");
            let work = &self.ctx.settings.config.buckets.work;
            self.ctx
                .ports
                .objects
                .put(work, &record.report_key(), body)
                .await?;
        }
        let to = if report.valid {
            FileState::Valid
        } else {
            FileState::Invalid
        };
        let mut t = Transition::new(record.id.clone(), STAGE, FileState::New, to)
            .expect("the validator's moves are in the table")
            .trace_id(choreo_telemetry::current_trace_id())
            .validation(summary.clone());
        if !report.valid {
            t = t.reason(summary.clone());
        }
        match choreo_runtime::transition::apply(self.ctx.ports.state.as_ref(), &t).await? {
            TransitionOutcome::Applied(r) => {
                choreo_telemetry::events::emit(events::FileValidated {
                    file_id: &r.id,
                    dataset: &r.dataset,
                    state: r.state,
                    rows: report.rows,
                    bytes: report.bytes,
                    summary: &summary,
                });
                self.announce(&r).await
            }
            // Another worker got there first: treat it as the duplicate it is.
            TransitionOutcome::Conflict(r) => match r.state.progress(FileState::New, &TARGETS) {
                Progress::AlreadyThere(_) => self.announce(&r).await,
                _ => Ok(()),
            },
            TransitionOutcome::NotFound => Err(HandlerError::Transient(format!(
                "record {} vanished",
                record.id
            ))),
        }
    }

    /// Runs the validation, or says why the file cannot be read at all.
    async fn check(&self, record: &FileRecord) -> Result<Report, HandlerError> {
        if record.dataset == UNMATCHED_DATASET {
            return Ok(unreadable(format!(
                "no dataset matches the key {:?}",
                record.key
            )));
        }
        let settings = &self.ctx.settings;
        let (Some(dataset), Some(schema)) = (
            settings.config.dataset(&record.dataset),
            settings.schemas.get(&record.dataset),
        ) else {
            return Ok(unreadable(format!(
                "dataset {:?} is no longer configured",
                record.dataset
            )));
        };
        let reader = match self
            .ctx
            .ports
            .objects
            .get(&record.bucket, &record.key, record.pin.as_ref())
            .await
        {
            Ok(r) => r,
            Err(e) if e.kind == PortErrorKind::NotFound => {
                return Ok(unreadable(format!(
                    "the object no longer exists in the input bucket ({})",
                    e.message
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let format = dataset.validation_format();
        let compression = dataset.compression_for(&record.key);
        let schema = schema.clone();
        let limits = self.limits;
        let bridge = tokio_util::io::SyncIoBridge::new(reader);
        tokio::task::spawn_blocking(move || {
            choreo_validation::validate(bridge, &format, compression, &schema, &limits)
        })
        .await
        .map_err(|e| HandlerError::Transient(format!("validation task failed: {e}")))
    }

    /// Publishes the event for the state the file is in (again, in the outbox case).
    async fn announce(&self, record: &FileRecord) -> Result<(), HandlerError> {
        let event = match record.state {
            FileState::Valid => Event::FileValidated {
                file_id: record.id.clone(),
                dataset: record.dataset.clone(),
            },
            FileState::Invalid => Event::FileRejected {
                file_id: record.id.clone(),
                dataset: record.dataset.clone(),
                reason: record.reason.clone().unwrap_or_default(),
            },
            _ => return Ok(()),
        };
        let id = file_event_id(record, &event);
        self.ctx.publisher.publish(id, event).await?;
        Ok(())
    }
}

/// A report for a file that could not be validated at all.
fn unreadable(reason: String) -> Report {
    Report {
        valid: false,
        rows: 0,
        bytes: 0,
        error_counts: Default::default(),
        errors: Vec::new(),
        fatal: Some(reason),
        notes: Vec::new(),
    }
}
