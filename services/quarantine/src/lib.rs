//! The quarantine mover: INVALID → QUARANTINED.
//!
//! It copies the invalid file — the version that was validated, named by the record's pin — to the
//! failed bucket under its file id (`<file id>/<key>`), puts its validation report beside it
//! (`<file id>.report.json`), removes that version from the input bucket (a newer upload of the key
//! is another file and stays), and only then records the move. Each step is idempotent (copy
//! overwrites, delete of a missing object succeeds), so a worker that dies half-way is simply run
//! again by the redelivered message. Copy before delete: nothing is lost.

use async_trait::async_trait;
use choreo_domain::{Event, FileRecord, FileState, Progress, Stage, Transition};
use choreo_ports::{PortErrorKind, ReceivedMessage, TransitionOutcome};
use choreo_runtime::publish::file_event_id;
use choreo_runtime::{Handler, HandlerError, ServiceContext, decode};
use std::sync::Arc;

pub mod events;

pub const STAGE: Stage = Stage::Quarantine;

/// The service's wiring: its queue and its handler.
pub const SPEC: choreo_runtime::ServiceSpec = choreo_runtime::ServiceSpec {
    stage: STAGE,
    queue: queue_name,
    build: handler,
    background: None,
};

fn queue_name(config: &choreo_domain::Config) -> &str {
    &config.queues.quarantine
}
const TARGETS: [FileState; 1] = [FileState::Quarantined];

pub struct Quarantine {
    ctx: ServiceContext,
}

pub fn handler(ctx: &ServiceContext) -> Arc<dyn Handler> {
    Arc::new(Quarantine { ctx: ctx.clone() })
}

#[async_trait]
impl Handler for Quarantine {
    async fn handle(&self, message: &ReceivedMessage) -> Result<(), HandlerError> {
        let Event::FileRejected { file_id, .. } = decode(message)?.event else {
            return Err(HandlerError::Permanent(
                "quarantine expects FileRejected".into(),
            ));
        };
        let Some(record) = self.ctx.ports.state.get(&file_id).await? else {
            return Err(HandlerError::Transient(format!(
                "no record for {file_id} yet"
            )));
        };
        match record.state.progress(FileState::Invalid, &TARGETS) {
            Progress::Ready => self.quarantine(record).await,
            Progress::AlreadyThere(_) => self.announce(&record).await,
            Progress::Beyond(_) | Progress::Behind(_) => Ok(()),
        }
    }
}

impl Quarantine {
    async fn quarantine(&self, record: FileRecord) -> Result<(), HandlerError> {
        let buckets = &self.ctx.settings.config.buckets;
        let objects = &self.ctx.ports.objects;
        let mut note = None;
        let kept = record.quarantine_key();
        let pin = record.pin.as_ref();
        match objects
            .copy(&record.bucket, &record.key, pin, &buckets.failed, &kept)
            .await
        {
            Ok(()) => {}
            // Gone from the input: either an earlier attempt already moved it, or someone deleted it.
            Err(e) if e.kind == PortErrorKind::NotFound => {
                if objects.head(&buckets.failed, &kept).await?.is_none() {
                    note = Some("the object had vanished from the input bucket");
                }
            }
            Err(e) => return Err(e.into()),
        }
        let report = self.report(&record).await?;
        objects
            .put(&buckets.failed, &record.quarantine_report_key(), report)
            .await?;
        objects.delete(&record.bucket, &record.key, pin).await?;

        let reason = match (record.reason.clone(), note) {
            (Some(r), Some(n)) => format!("{r}; {n}"),
            (Some(r), None) => r,
            (None, Some(n)) => n.to_string(),
            (None, None) => "invalid".to_string(),
        };
        let t = Transition::new(
            record.id.clone(),
            STAGE,
            FileState::Invalid,
            FileState::Quarantined,
        )
        .expect("the quarantine's move is in the table")
        .reason(reason)
        .trace_id(choreo_telemetry::current_trace_id());
        match choreo_runtime::transition::apply(self.ctx.ports.state.as_ref(), &t).await? {
            TransitionOutcome::Applied(r) => {
                choreo_telemetry::events::emit(events::FileQuarantined {
                    file_id: &r.id,
                    dataset: &r.dataset,
                    key: &r.key,
                    kept: &r.quarantine_key(),
                });
                self.announce(&r).await
            }
            TransitionOutcome::Conflict(r) if r.state == FileState::Quarantined => {
                self.announce(&r).await
            }
            TransitionOutcome::Conflict(_) => Ok(()),
            TransitionOutcome::NotFound => Err(HandlerError::Transient(format!(
                "record {} vanished",
                record.id
            ))),
        }
    }

    /// The validator's report from the work bucket, or one made from the record if it is missing.
    async fn report(&self, record: &FileRecord) -> Result<Vec<u8>, HandlerError> {
        let work = &self.ctx.settings.config.buckets.work;
        let key = record.report_key();
        match self.ctx.ports.objects.get(work, &key, None).await {
            Ok(mut reader) => {
                let mut body = Vec::new();
                tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut body)
                    .await
                    .map_err(|e| HandlerError::Transient(format!("reading {key}: {e}")))?;
                Ok(body)
            }
            Err(e) if e.kind == PortErrorKind::NotFound => Ok(serde_json::to_vec_pretty(
                &serde_json::json!({"valid": false, "fatal": record.reason, "file_id": record.id}),
            )
            .expect("json")),
            Err(e) => Err(e.into()),
        }
    }

    async fn announce(&self, record: &FileRecord) -> Result<(), HandlerError> {
        let event = Event::FileQuarantined {
            file_id: record.id.clone(),
            dataset: record.dataset.clone(),
            bucket: self.ctx.settings.config.buckets.failed.clone(),
            key: record.quarantine_key(),
        };
        let id = file_event_id(record, &event);
        self.ctx.publisher.publish(id, event).await?;
        Ok(())
    }
}
