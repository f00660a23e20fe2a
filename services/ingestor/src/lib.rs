//! The ingestor: the pipeline's entrance.
//!
//! It reads object-created notifications ([`notification`]), matches each key to a dataset, and
//! registers the file NEW with a put-if-absent, then publishes `FileRegistered`. Every file starts its
//! own trace here. A key that matches no dataset is registered too (dataset `_unmatched`), so that the
//! validator rejects it and the quarantine mover takes it out of the input bucket with a reason: no file
//! goes unaccounted for. A key the pipeline does not take ([`choreo_domain::key::check`]: hidden
//! names, backslashes, control characters, `..`) is refused instead, with a `KeyRefused` warning
//! giving the reason: registering it would leave a file no stage can read, NEW for ever.
//!
//! [`backfill`] registers, through the same path, objects that are in the input bucket without a
//! notification ever having reached the ingestor.

pub mod backfill;
pub mod events;
pub mod notification;

use async_trait::async_trait;
use choreo_domain::{Event, FileId, FileState, NewFile, Stage, UNMATCHED_DATASET};
use choreo_ports::{PortError, ReceivedMessage, Registered};
use choreo_runtime::publish::file_event_id;
use choreo_runtime::{Handler, HandlerError, ServiceContext};
use choreo_telemetry::events::emit;
use notification::{Notification, ObjectCreated};
use std::sync::Arc;
use tracing::Instrument;

pub const STAGE: Stage = Stage::Ingestor;

/// The service's wiring: its queue and its handler.
pub const SPEC: choreo_runtime::ServiceSpec = choreo_runtime::ServiceSpec {
    stage: STAGE,
    queue: queue_name,
    build: handler,
    background: None,
};

fn queue_name(config: &choreo_domain::Config) -> &str {
    &config.queues.ingest
}

pub struct Ingestor {
    ctx: ServiceContext,
}

pub fn handler(ctx: &ServiceContext) -> Arc<dyn Handler> {
    Arc::new(Ingestor { ctx: ctx.clone() })
}

#[async_trait]
impl Handler for Ingestor {
    async fn handle(&self, message: &ReceivedMessage) -> Result<(), HandlerError> {
        match notification::parse(&message.body) {
            Ok(Notification::Test) => {
                emit(events::TestEventSkipped);
                Ok(())
            }
            Ok(Notification::Created(objects)) => {
                for object in objects {
                    register(&self.ctx, object).await?;
                }
                Ok(())
            }
            Err(e) => {
                emit(events::NotificationMalformed {
                    error: &e,
                    body: truncate(&message.body, 200),
                });
                Err(HandlerError::Permanent(e.to_string()))
            }
        }
    }
}

/// What [`register`] did with an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// A new record, NEW; `FileRegistered` published.
    Created,
    /// The record existed and was still NEW: `FileRegistered` published again (the outbox case).
    Republished,
    /// The record existed and had moved on: nothing done.
    Exists,
    /// Not in the input bucket: ignored.
    Foreign,
    /// A key the pipeline does not take: not registered, a `KeyRefused` warning says why.
    Refused,
}

/// Registers one created object (put-if-absent on the id derived from bucket, key and version) and
/// publishes `FileRegistered`, in a trace of its own: a notification's objects and backfilled ones
/// take this one path.
pub async fn register(
    ctx: &ServiceContext,
    object: ObjectCreated,
) -> Result<Registration, PortError> {
    if let Err(why) = choreo_domain::key::check(&object.key) {
        emit(events::KeyRefused {
            bucket: &object.bucket,
            key: &object.key,
            reason: &why,
        });
        return Ok(Registration::Refused);
    }
    // One trace per file: the span has no parent, and links to the notification that told of it.
    let span = tracing::info_span!(
        parent: None,
        "ingest",
        choreo.stage = STAGE.as_str(),
        choreo.bucket = %object.bucket,
        choreo.key = %object.key,
        choreo.file_id = tracing::field::Empty,
        choreo.dataset = tracing::field::Empty,
    );
    choreo_telemetry::add_link(&span, choreo_telemetry::current_traceparent().as_deref());
    register_in_span(ctx, object).instrument(span).await
}

async fn register_in_span(
    ctx: &ServiceContext,
    object: ObjectCreated,
) -> Result<Registration, PortError> {
    let settings = &ctx.settings;
    if object.bucket != settings.config.buckets.input {
        emit(events::NotificationForeignBucket {
            bucket: &object.bucket,
        });
        return Ok(Registration::Foreign);
    }
    let id = FileId::derive(&object.bucket, &object.key, &object.version);
    let dataset = settings.router.route(&object.key);
    let span = tracing::Span::current();
    span.record("choreo.file_id", id.as_str());
    span.record("choreo.dataset", dataset.unwrap_or(UNMATCHED_DATASET));
    let file = NewFile {
        id: id.clone(),
        dataset: dataset.unwrap_or(UNMATCHED_DATASET).to_string(),
        bucket: object.bucket,
        key: object.key,
        size: object.size,
        version: object.version,
        pin: object.pin,
        reason: dataset
            .is_none()
            .then(|| "no dataset matches the key".to_string()),
        trace_id: choreo_telemetry::current_trace_id(),
        traceparent: choreo_telemetry::current_traceparent(),
    };
    let (record, outcome) = match ctx.ports.state.register(file).await? {
        Registered::Created(r) => {
            emit(events::FileRegistered {
                file_id: &r.id,
                dataset: &r.dataset,
                size: r.size,
            });
            (r, Registration::Created)
        }
        // A duplicate notification. If the file is still NEW, the first registration may have died
        // before publishing (the outbox case): publish again. Otherwise it has moved on: done.
        Registered::Exists(r) if r.state == FileState::New => (r, Registration::Republished),
        Registered::Exists(_) => return Ok(Registration::Exists),
    };
    let event = Event::FileRegistered {
        file_id: record.id.clone(),
        dataset: record.dataset.clone(),
        bucket: record.bucket.clone(),
        key: record.key.clone(),
        size: record.size,
    };
    let id = file_event_id(&record, &event);
    ctx.publisher
        .publish_with(id, event, record.traceparent)
        .await?;
    Ok(outcome)
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
