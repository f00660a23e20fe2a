//! The consumer loop every service runs around its [`Handler`].
//!
//! At-least-once, written down where it is decided: a message is deleted only after its handler
//! returned `Ok`, that is after its effects are durable. A worker that dies anywhere before the delete
//! leaves the message to come back after its visibility timeout, and the handler's idempotence makes
//! the second run harmless. We prefer a duplicate to a loss.

use crate::{Handler, HandlerError};
use backon::{ExponentialBuilder, Retryable};
use choreo_domain::event::ATTR_TRACEPARENT;
use choreo_ports::{Queue, ReceivedMessage};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// How one consumer receives and runs messages.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// Messages per receive (1..=10).
    pub batch: usize,
    /// Messages handled at once.
    pub concurrency: usize,
    /// Long-polling wait per receive.
    pub wait: Duration,
    /// Visibility timeout given at receive and renewed while the handler runs.
    pub visibility: Duration,
    /// In-process attempts for transient errors before leaving the message for redelivery.
    pub retry_attempts: usize,
    /// First backoff delay between attempts (doubling, with jitter).
    pub retry_min_delay: Duration,
    /// The queue's `maxReceiveCount`, for log lines that say how close a message is to its DLQ.
    pub max_receive_count: u32,
}

impl ConsumerSettings {
    pub fn from_config(config: &choreo_domain::Config) -> Self {
        let rt = &config.runtime;
        ConsumerSettings {
            batch: rt.receive_batch.clamp(1, 10),
            concurrency: rt.concurrency.max(1),
            wait: Duration::from_secs(rt.receive_wait_secs),
            visibility: Duration::from_secs(config.queues.visibility_timeout_secs.max(1)),
            retry_attempts: rt.retry_attempts,
            retry_min_delay: Duration::from_millis(100),
            max_receive_count: config.queues.max_receive_count,
        }
    }
}

/// One queue, one handler.
pub struct Consumer {
    stage: &'static str,
    queue: Arc<dyn Queue>,
    handler: Arc<dyn Handler>,
    settings: ConsumerSettings,
}

impl Consumer {
    pub fn new(
        stage: &'static str,
        queue: Arc<dyn Queue>,
        handler: Arc<dyn Handler>,
        settings: ConsumerSettings,
    ) -> Self {
        Consumer {
            stage,
            queue,
            handler,
            settings,
        }
    }

    /// Runs until `shutdown` fires, then stops receiving and waits for the messages in hand.
    pub async fn run(self, shutdown: CancellationToken) {
        let this = Arc::new(self);
        let permits = Arc::new(Semaphore::new(this.settings.concurrency));
        let tasks = TaskTracker::new();
        let mut failures = 0u32;
        tracing::info!(
            stage = this.stage,
            queue = this.queue.name(),
            "ConsumerStarted"
        );
        while !shutdown.is_cancelled() {
            // Never hold more messages than we can start: their visibility would tick away unused.
            let first = tokio::select! {
                _ = shutdown.cancelled() => break,
                p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            };
            let room = 1 + permits.available_permits();
            let max = room.min(this.settings.batch);
            let received = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = this.queue.receive(max, this.settings.wait, this.settings.visibility) => r,
            };
            let messages = match received {
                Ok(m) => {
                    failures = 0;
                    m
                }
                Err(e) => {
                    failures += 1;
                    let pause = Duration::from_millis(200 * 2u64.pow(failures.min(6)));
                    tracing::warn!(stage = this.stage, error = %e, ?pause, "QueueReceiveError");
                    drop(first);
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(pause) => continue,
                    }
                }
            };
            let mut first = Some(first);
            for message in messages {
                let permit = match first.take() {
                    Some(p) => p,
                    None => permits
                        .clone()
                        .acquire_owned()
                        .await
                        .expect("the semaphore is never closed"),
                };
                let this = this.clone();
                tasks.spawn(async move {
                    this.process(message).await;
                    drop(permit);
                });
            }
        }
        tasks.close();
        tasks.wait().await;
        tracing::info!(stage = this.stage, "ConsumerStopped");
    }

    async fn process(&self, message: ReceivedMessage) {
        let span = tracing::info_span!(
            "handle",
            stage = self.stage,
            message_id = %message.id,
            receive_count = message.receive_count,
        );
        choreo_telemetry::set_parent_from(
            &span,
            message.attributes.get(ATTR_TRACEPARENT).map(String::as_str),
        );
        async {
            let heartbeat = self.keep_invisible(message.receipt.clone());
            let result = (|| self.handler.handle(&message))
                .retry(
                    ExponentialBuilder::default()
                        .with_min_delay(self.settings.retry_min_delay)
                        .with_max_times(self.settings.retry_attempts)
                        .with_jitter(),
                )
                .when(HandlerError::is_transient)
                .notify(|e, after| tracing::debug!(error = %e, ?after, "HandlerRetry"))
                .await;
            heartbeat.abort();
            match result {
                Ok(()) => self.acknowledge(&message).await,
                Err(HandlerError::Transient(e)) => {
                    // Give it back after a pause that grows with each delivery.
                    let pause = Duration::from_secs(2u64.pow(message.receive_count.min(6)))
                        .min(self.settings.visibility);
                    tracing::warn!(error = %e, ?pause, "MessageRetryLater");
                    let _ = self.queue.change_visibility(&message.receipt, pause).await;
                }
                Err(HandlerError::Permanent(e)) => {
                    let left = self
                        .settings
                        .max_receive_count
                        .saturating_sub(message.receive_count);
                    tracing::error!(
                        error = %e,
                        receives_before_dead_letter = left,
                        "MessageRejected: it goes to the dead-letter queue once its receives run out"
                    );
                    let _ = self
                        .queue
                        .change_visibility(&message.receipt, Duration::ZERO)
                        .await;
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Renews the message's visibility every half timeout while its handler runs.
    fn keep_invisible(&self, receipt: String) -> tokio::task::JoinHandle<()> {
        let queue = self.queue.clone();
        let visibility = self.settings.visibility;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(visibility / 2).await;
                if let Err(e) = queue.change_visibility(&receipt, visibility).await {
                    tracing::warn!(error = %e, "VisibilityExtendError");
                }
            }
        })
    }

    async fn acknowledge(&self, message: &ReceivedMessage) {
        let delete = || self.queue.delete(&message.receipt);
        if let Err(e) = delete
            .retry(ExponentialBuilder::default().with_max_times(3))
            .when(|e| e.is_retryable())
            .await
        {
            // The effects are durable; the message will come back and find its work done.
            tracing::warn!(error = %e, "MessageDeleteError: expect one harmless duplicate");
        }
    }
}
