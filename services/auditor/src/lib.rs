//! The auditor: every event, once, in the audit trail.
//!
//! Its queue subscribes to every event type. Each event is appended to the audit log and counted per
//! dataset and type in the same write, deduplicated on the event id, so redeliveries never count twice.
//! Failures are logged as alerts (one per failure event).
//!
//! Beside its consumer it serves the operators' HTTP surface when `operations.listen` is set
//! ([`server`]): the JSON API ([`api`], guarded by [`auth`]; dead letters in [`dlq_routes`]) and
//! the dashboard that reads it ([`dashboard`]).

pub mod api;
pub mod auth;
pub mod dashboard;
pub mod dlq_routes;
pub mod server;
pub mod throughput;

use async_trait::async_trait;
use choreo_domain::{Event, Stage};
use choreo_ports::ReceivedMessage;
use choreo_runtime::{Handler, HandlerError, ServiceContext, decode};
use std::sync::Arc;

pub const STAGE: Stage = Stage::Auditor;

/// The service's wiring: its queue and its handler.
pub const SPEC: choreo_runtime::ServiceSpec = choreo_runtime::ServiceSpec {
    stage: STAGE,
    queue: queue_name,
    build: handler,
    background: Some(server::background),
};

fn queue_name(config: &choreo_domain::Config) -> &str {
    &config.queues.audit
}

pub struct Auditor {
    ctx: ServiceContext,
}

pub fn handler(ctx: &ServiceContext) -> Arc<dyn Handler> {
    Arc::new(Auditor { ctx: ctx.clone() })
}

#[async_trait]
impl Handler for Auditor {
    async fn handle(&self, message: &ReceivedMessage) -> Result<(), HandlerError> {
        let envelope = decode(message)?;
        let fresh = self.ctx.ports.audit.record(&envelope).await?;
        if !fresh {
            return Ok(()); // a redelivery: recorded and alerted on already
        }
        match &envelope.event {
            Event::FileRejected {
                file_id,
                dataset,
                reason,
            } => {
                tracing::warn!(%file_id, dataset, reason, "FileRejectedAlert");
            }
            Event::BatchFailed {
                batch_id,
                dataset,
                stage,
                reason,
                files,
            } => {
                tracing::error!(batch_id, dataset, %stage, reason, files = files.len(), "BatchFailedAlert");
            }
            event => {
                tracing::debug!(
                    event_type = event.kind().as_str(),
                    dataset = event.dataset(),
                    "EventAudited"
                );
            }
        }
        Ok(())
    }
}
