//! The backlog gauges: what each stage's queue and dead-letter queue hold, and files per state.
//!
//! Counters are moved by the services as they work; these are levels, read from the queues and the
//! state store every [`EVERY`] by each auditor replica (replicas report the same values: dashboards
//! take their `max`). They are what ECS scaling and the DLQ alarms need:
//!
//! - `choreo_queue_messages{stage,queue,state}`: visible, in flight and delayed messages of a
//!   stage's work queue.
//! - `choreo_dlq_messages{stage,queue}`: every message of its dead-letter queue.
//! - `choreo_queue_oldest_message_age_seconds{stage,queue}`: on the local backend only. SQS has no
//!   API for it; CloudWatch's `ApproximateAgeOfOldestMessage` is the signal there, and no number
//!   is invented.
//! - `choreo_files{dataset,state}`: files per dataset and state, zero included, on the local
//!   backend only. On AWS the only way to count files by state is a Scan of the whole table, whose
//!   cost grows with every file ever registered: at ten million files, a Scan a minute would cost
//!   more than the pipeline itself. There `choreo_file_transitions_total` and the audit trail's
//!   counters tell the same story.

use crate::events::GaugesError;
use choreo_domain::config::{BackendKind, Queues as QueueNames};
use choreo_domain::{Config, FileState, Stage};
use choreo_ports::{PortError, QueueLookup, StateStore};
use choreo_runtime::ServiceContext;
use choreo_telemetry::events::emit;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Time between two readings.
pub const EVERY: Duration = Duration::from_secs(5);

/// Sets the gauges every [`EVERY`] until `shutdown`. A failed reading is logged and the gauges keep
/// their last values until the next one.
/// Nothing is read when `[telemetry] listen` is unset: nobody would see the gauges.
pub async fn run(ctx: ServiceContext, shutdown: CancellationToken) {
    let config = &ctx.settings.config;
    if config.telemetry.listen.is_none() {
        return;
    }
    let files = config.backend == BackendKind::Local;
    loop {
        if let Err(error) = set_queue_gauges(config, ctx.ports.queues.as_ref()).await {
            emit(GaugesError {
                what: "queues",
                error,
            });
        }
        if files && let Err(error) = set_file_gauges(config, ctx.ports.state.as_ref()).await {
            emit(GaugesError {
                what: "files",
                error,
            });
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}

/// Reads every stage's queue and dead-letter queue and sets their gauges.
pub async fn set_queue_gauges(config: &Config, queues: &dyn QueueLookup) -> Result<(), PortError> {
    for stage in Stage::SERVICES {
        let Some(name) = config.queue_of(stage) else {
            continue;
        };
        let queue = queues.queue(name);
        let depth = queue.depth().await?;
        for (state, n) in [
            ("visible", depth.visible),
            ("in_flight", depth.in_flight),
            ("delayed", depth.delayed),
        ] {
            metrics::gauge!(
                "choreo_queue_messages",
                "stage" => stage.as_str(),
                "queue" => name.to_string(),
                "state" => state,
            )
            .set(n as f64);
        }
        if let Some(age) = queue.oldest_message_age().await? {
            metrics::gauge!(
                "choreo_queue_oldest_message_age_seconds",
                "stage" => stage.as_str(),
                "queue" => name.to_string(),
            )
            .set(age.as_secs_f64());
        }
        let dlq = QueueNames::dlq_of(name);
        let dead = queues.queue(&dlq).depth().await?.total();
        metrics::gauge!("choreo_dlq_messages", "stage" => stage.as_str(), "queue" => dlq)
            .set(dead as f64);
    }
    Ok(())
}

/// Reads the files per dataset and state and sets their gauges: every state of every configured
/// dataset, so a state that empties reads zero rather than its last count.
pub async fn set_file_gauges(config: &Config, state: &dyn StateStore) -> Result<(), PortError> {
    let mut files: BTreeMap<(String, FileState), u64> = BTreeMap::new();
    for dataset in &config.datasets {
        for &s in FileState::ALL {
            files.insert((dataset.name.clone(), s), 0);
        }
    }
    for (dataset, s, n) in state.counts().await? {
        *files.entry((dataset, s)).or_default() += n;
    }
    for ((dataset, s), n) in files {
        metrics::gauge!("choreo_files", "dataset" => dataset, "state" => s.as_str()).set(n as f64);
    }
    Ok(())
}
