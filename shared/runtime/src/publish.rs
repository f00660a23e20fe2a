//! Events to messages and back.

use crate::HandlerError;
use choreo_domain::event::{ATTR_AWS_TRACE_HEADER, ATTR_EVENT_TYPE, ATTR_TRACEPARENT};
use choreo_domain::{Envelope, Event};
use choreo_ports::{EventBus, OutgoingMessage, PortError, Queue, ReceivedMessage};
use std::sync::Arc;
use std::time::Duration;

/// Publishes events to the topic and sends timers to a stage's own queue, with the current span's trace
/// context in the `traceparent` attribute.
#[derive(Clone)]
pub struct Publisher {
    bus: Arc<dyn EventBus>,
}

impl Publisher {
    pub fn new(bus: Arc<dyn EventBus>) -> Self {
        Publisher { bus }
    }

    /// Publishes `event` under the id `id`, in the current span's trace.
    ///
    /// The id is derived from what the event reports (a file and its history length, a batch), not
    /// drawn at random: an event published again — the outbox case, or a duplicate message finding the
    /// work done — carries the same id as the first, so consumers that deduplicate (the auditor) see
    /// it once.
    pub async fn publish(&self, id: String, event: Event) -> Result<(), PortError> {
        self.publish_with(id, event, choreo_telemetry::current_traceparent())
            .await
    }

    /// As [`Publisher::publish`], with an explicit trace context (a batch's events carry the batch's
    /// own trace).
    pub async fn publish_with(
        &self,
        id: String,
        event: Event,
        traceparent: Option<String>,
    ) -> Result<(), PortError> {
        choreo_telemetry::events::emit(crate::events::EventPublished {
            event_type: event.kind().as_str(),
            event_id: &id,
        });
        let mut envelope = Envelope::new(event);
        envelope.id = id;
        self.bus.publish(message(envelope, traceparent)).await
    }
}

impl Publisher {
    /// Publishes what `stage` made of `batch` ([`choreo_domain::Batch::announcement`]) under the
    /// batch's event id and in the batch's trace; again, in the outbox case, under the same id.
    /// Nothing while the batch is under way.
    pub async fn announce(
        &self,
        batch: &choreo_domain::Batch,
        stage: choreo_domain::Stage,
    ) -> Result<(), PortError> {
        let Some(event) = batch.announcement(stage) else {
            return Ok(());
        };
        self.publish_with(
            batch_event_id(batch, &event),
            event,
            batch.traceparent.clone(),
        )
        .await
    }
}

/// Sends `event` to `queue` after `delay`: the durable timer used to poll long work.
pub async fn send_timer(
    queue: &dyn Queue,
    event: Event,
    delay: Duration,
    traceparent: Option<String>,
) -> Result<(), PortError> {
    queue
        .send(message(Envelope::new(event), traceparent), delay)
        .await
}

/// The id of an event about a file, unique per transition: see [`Publisher::publish`].
pub fn file_event_id(record: &choreo_domain::FileRecord, event: &Event) -> String {
    format!(
        "{}/{}/{}",
        record.id,
        record.history.len(),
        event.kind().as_str()
    )
}

/// The id of an event about a batch (each batch reaches each of its events once).
pub fn batch_event_id(batch: &choreo_domain::Batch, event: &Event) -> String {
    format!("{}/{}", batch.id, event.kind().as_str())
}

fn message(envelope: Envelope, traceparent: Option<String>) -> OutgoingMessage {
    let mut attributes = std::collections::BTreeMap::from([(
        ATTR_EVENT_TYPE.to_string(),
        envelope.event.kind().as_str().to_string(),
    )]);
    if let Some(tp) = traceparent {
        if let Some(xray) = choreo_telemetry::aws_trace_header_of(&tp) {
            attributes.insert(ATTR_AWS_TRACE_HEADER.to_string(), xray);
        }
        attributes.insert(ATTR_TRACEPARENT.to_string(), tp);
    }
    OutgoingMessage {
        body: envelope.to_json(),
        attributes,
    }
}

/// Parses a received message's envelope. A body that is not a known envelope is permanent: it will not
/// parse better next time, so it heads for the dead-letter queue.
/// The facts it carries become attributes of the handler's span, so that a trace viewer finds the
/// span by file, batch or dataset.
pub fn decode(message: &ReceivedMessage) -> Result<Envelope, HandlerError> {
    let envelope =
        Envelope::from_json(&message.body).map_err(|e| HandlerError::Permanent(e.to_string()))?;
    annotate(&envelope.event);
    Ok(envelope)
}

fn annotate(event: &Event) {
    use choreo_telemetry::annotate;
    annotate("choreo.event", event.kind().as_str());
    if !event.dataset().is_empty() {
        annotate("choreo.dataset", event.dataset().to_string());
    }
    match event {
        Event::FileRegistered { file_id, key, .. } => {
            annotate("choreo.file_id", file_id.to_string());
            annotate("choreo.key", key.clone());
        }
        Event::FileValidated { file_id, .. }
        | Event::FileRejected { file_id, .. }
        | Event::FileQuarantined { file_id, .. } => annotate("choreo.file_id", file_id.to_string()),
        Event::BatchCataloged { batch_id, .. }
        | Event::BatchIngested { batch_id, .. }
        | Event::BatchFailed { batch_id, .. }
        | Event::CrawlPoll { batch_id }
        | Event::JobPoll { batch_id } => annotate("choreo.batch_id", batch_id.clone()),
        Event::CrawlWindowClosed { .. } => {}
    }
}
