//! The auditor: every event, once, in the audit trail; an alert for every failure; no file stuck.
//!
//! Its queue subscribes to every event type. Each event is appended to the audit log and counted per
//! dataset and type in the same write, deduplicated on the event id, so redeliveries never count
//! twice. A failure event (a rejected file, a failed batch) stores one alert, which the delivery loop
//! sends ([`alerts`]). Beside its consumer the auditor runs that loop and the stuck-file sweep
//! ([`sweep`]), each on one replica at a time, and serves the operators' HTTP surface when
//! `operations.listen` is set ([`server`]): the JSON API ([`api`], guarded by [`auth`]; dead letters
//! in [`dlq_routes`], the flow graph in [`flow`], the charts' series in [`charts`]) and the
//! dashboard that reads it ([`dashboard`]). With `[telemetry] listen` set,
//! it also keeps the backlog gauges that `/metrics` shows ([`gauges`]).

pub mod alerts;
pub mod api;
pub mod auth;
pub mod charts;
pub mod dashboard;
pub mod dlq_routes;
pub mod events;
pub mod extract_routes;
pub mod flow;
pub mod gauges;
pub mod server;
pub mod sweep;
#[cfg(test)]
mod test_support;
pub mod throughput;

/// How long a sweep or an alert delivery may run past its interval while it holds its lease.
pub(crate) const ROUND_SLACK: std::time::Duration = std::time::Duration::from_secs(30);

use async_trait::async_trait;
use choreo_domain::Stage;
use choreo_ports::ReceivedMessage;
use choreo_runtime::{Background, Handler, HandlerError, ServiceContext, decode};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const STAGE: Stage = Stage::Auditor;

/// The service's wiring: its queue and its handler.
pub const SPEC: choreo_runtime::ServiceSpec = choreo_runtime::ServiceSpec {
    stage: STAGE,
    queue: queue_name,
    build: handler,
    background: Some(background),
};

/// How long a queue depth read on SQS serves the dashboard and the gauges: one
/// `GetQueueAttributes` per queue per half minute, about $0.035 a month per queue, however many
/// pages are open (locally a depth is a SQLite count, read every time).
const DEPTHS_KEPT_ON_AWS: Duration = Duration::from_secs(30);

/// The HTTP surface, the alert delivery loop, the stuck-file sweep and the backlog gauges, until
/// `shutdown`.
fn background(mut ctx: ServiceContext, shutdown: CancellationToken) -> Background {
    // Names this replica in the leases that keep the loops to one replica at a time.
    let holder = format!("auditor-{}", uuid::Uuid::new_v4());
    // The pages and the gauges read depths through one cache: on SQS each read is a billed call.
    let ttl = match ctx.settings.config.backend {
        choreo_domain::config::BackendKind::Aws => DEPTHS_KEPT_ON_AWS,
        choreo_domain::config::BackendKind::Local => Duration::ZERO,
    };
    ctx.ports.queues = choreo_runtime::depths::cached(ctx.ports.queues.clone(), ttl);
    Box::pin(async move {
        tokio::join!(
            server::background(ctx.clone(), shutdown.clone()),
            alerts::deliver(ctx.clone(), holder.clone(), shutdown.clone()),
            sweep::run(ctx.clone(), holder, shutdown.clone()),
            gauges::run(ctx, shutdown),
        );
    })
}

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
        // The alert first: see `alerts` for why this order alerts once per failure.
        if let Some(alert) = alerts::for_event(&self.ctx, &envelope).await? {
            self.ctx.ports.audit.add_alert(&alert).await?;
        }
        let fresh = self.ctx.ports.audit.record(&envelope).await?;
        if fresh {
            choreo_telemetry::events::emit(events::EventAudited {
                event_type: envelope.event.kind().as_str(),
                dataset: envelope.event.dataset(),
            });
        }
        Ok(())
    }
}
