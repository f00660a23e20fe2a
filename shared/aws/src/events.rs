//! The AWS backend's named events (see [`choreo_telemetry::events`]): retried SDK calls, the
//! resources `choreo setup` creates or updates, and answers the adapters did not expect.
//!
//! They carry no `stage`: an adapter serves every stage of a `choreo up` alike, and a task-local
//! stage would not reach the tasks the consumer spawns per message. Their log lines name the stage
//! through the span they run in; their counts are `choreo_events_total{event}` alone.

use choreo_telemetry::events::{InternalEvent, counted};
use std::fmt::Display;

/// The SDK retried a call (`attempt` > 1), after the attempt before failed with `after`.
pub struct AwsCallRetried<'a> {
    pub service: &'a str,
    pub operation: &'a str,
    pub attempt: u32,
    pub max_attempts: Option<u32>,
    pub after: Option<&'a str>,
}

impl InternalEvent for AwsCallRetried<'_> {
    fn emit(self) {
        tracing::warn!(
            service = self.service,
            operation = self.operation,
            attempt = self.attempt,
            max_attempts = self.max_attempts,
            after = self.after,
            "AwsCallRetried"
        );
        counted("AwsCallRetried");
    }
}

/// A batch update whose answer was lost found its own write token stored: an earlier attempt
/// applied it.
pub struct BatchWriteAnswerLost<'a> {
    pub batch_id: &'a str,
}

impl InternalEvent for BatchWriteAnswerLost<'_> {
    fn emit(self) {
        tracing::info!(batch_id = self.batch_id, "BatchWriteAnswerLost");
        counted("BatchWriteAnswerLost");
    }
}

/// Glue reported a crawler state this build does not know: taken as running, so polling goes on
/// (a crawl that never ends is what the auditor's stuck sweeps are for).
pub struct GlueCrawlerStateUnknown<'a> {
    pub crawler: &'a str,
    pub state: Option<&'a str>,
}

impl InternalEvent for GlueCrawlerStateUnknown<'_> {
    fn emit(self) {
        tracing::warn!(
            crawler = self.crawler,
            state = self.state,
            "GlueCrawlerStateUnknown"
        );
        counted("GlueCrawlerStateUnknown");
    }
}

/// Glue reported a job run state this build does not know: taken as running.
pub struct GlueJobRunStateUnknown<'a> {
    pub state: &'a str,
}

impl InternalEvent for GlueJobRunStateUnknown<'_> {
    fn emit(self) {
        tracing::warn!(state = self.state, "GlueJobRunStateUnknown");
        counted("GlueJobRunStateUnknown");
    }
}

/// Defines an event of `&str` facts, logged at info under its own name and counted: the resources
/// `choreo setup` (and the direct catalogue) create or change.
macro_rules! resource_event {
    ($(#[$doc:meta])* $name:ident { $($field:ident),+ $(,)? }) => {
        $(#[$doc])*
        pub struct $name<'a> {
            $(pub $field: &'a str,)+
        }

        impl InternalEvent for $name<'_> {
            fn emit(self) {
                tracing::info!($($field = self.$field,)+ stringify!($name));
                counted(stringify!($name));
            }
        }
    };
}

resource_event!(
    /// The state table (or its history table) was created.
    TableCreated { table }
);
resource_event!(
    /// The Glue database the crawlers write to was created.
    GlueDatabaseCreated { database }
);
resource_event!(
    /// A dataset's table was created in the Glue catalogue (direct cataloguing).
    GlueTableCreated { table, database }
);
resource_event!(
    /// A dataset's table in the Glue catalogue was changed to its schema's (direct cataloguing).
    GlueTableUpdated { table, database }
);
resource_event!(
    /// A dataset's crawler was created, over `paths`.
    GlueCrawlerCreated { crawler, paths }
);
resource_event!(
    /// A crawler's role, database or paths were changed to the configuration's.
    GlueCrawlerUpdated { crawler, paths }
);
resource_event!(
    /// A dataset's Glue job was created.
    GlueJobCreated { job }
);
resource_event!(
    /// A Glue job's definition was changed to the configuration's.
    GlueJobUpdated { job }
);
resource_event!(
    /// A stage's queue and its dead-letter queue exist with the configured attributes.
    QueueReady { queue, dlq }
);
resource_event!(
    /// A queue is subscribed to the events topic with its filter.
    SubscriptionReady { queue, topic }
);
resource_event!(
    /// The alert e-mail address is subscribed to the alerts topic (it confirms by e-mail first).
    AlertEmailSubscribed { email, topic }
);
resource_event!(
    /// The buckets exist, the input one versioned and notifying the ingest queue.
    BucketsReady { bucket, queue }
);
resource_event!(
    /// The masking salt's secret was created.
    MaskSaltSecretCreated { secret }
);

/// A duplicate subscription of a queue to the events topic (a delivery twice over) was removed.
pub struct DuplicateSubscriptionRemoved<'a> {
    pub subscription: &'a str,
    pub queue: &'a str,
}

impl InternalEvent for DuplicateSubscriptionRemoved<'_> {
    fn emit(self) {
        tracing::warn!(
            subscription = self.subscription,
            queue = self.queue,
            "DuplicateSubscriptionRemoved"
        );
        counted("DuplicateSubscriptionRemoved");
    }
}

/// The masking salt's secret held another value and was replaced: masked values change from now
/// on, so the same personal value masks differently before and after.
pub struct MaskSaltSecretUpdated<'a> {
    pub secret: &'a dyn Display,
}

impl InternalEvent for MaskSaltSecretUpdated<'_> {
    fn emit(self) {
        tracing::warn!(secret = %self.secret, "MaskSaltSecretUpdated");
        counted("MaskSaltSecretUpdated");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use choreo_telemetry::events::{Recorded, emit};

    #[test]
    fn events_count_under_their_own_names() {
        let recorded = Recorded::new();
        recorded.run(|| {
            emit(GlueTableCreated {
                table: "orders",
                database: "choreo_db",
            });
            emit(AwsCallRetried {
                service: "SQS",
                operation: "ReceiveMessage",
                attempt: 2,
                max_attempts: Some(3),
                after: Some("throttled"),
            });
        });
        let count = |event| recorded.value("choreo_events_total", &[("event", event)]);
        assert_eq!(count("GlueTableCreated"), 1.0);
        assert_eq!(count("AwsCallRetried"), 1.0);
    }
}
