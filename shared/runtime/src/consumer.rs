//! The consumer loop every service runs around its [`Handler`].
//!
//! At-least-once, written down where it is decided: a message is deleted only after its handler
//! returned `Ok`, that is after its effects are durable. A worker that dies anywhere before the delete
//! leaves the message to come back after its visibility timeout, and the handler's idempotence makes
//! the second run harmless. We prefer a duplicate to a loss.
//!
//! A handler that panics is treated as one that failed permanently: the panic is caught and logged,
//! the message is made visible again at once, and its receives run out into the dead-letter queue
//! like any poison message's. Its visibility heartbeat ends with it whatever happens, so no message
//! is kept invisible by a handler that is no longer running.
//!
//! This module receives and acknowledges; what happens to each message between the two is the
//! [`crate::pipeline`] of `tower` layers.

use crate::Handler;
use crate::events::{ConsumerStarted, ConsumerStopped, MessageDeleteError, QueueReceiveError};
use crate::pipeline::{self, Pipeline};
use backon::{ExponentialBuilder, Retryable};
use choreo_ports::Queue;
use choreo_telemetry::events::emit;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

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
    /// The queue's `maxReceiveCount`: a failure on this receive sends the message to its DLQ.
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
        let (acks, pending) = tokio::sync::mpsc::unbounded_channel();
        // Deletes wait for company up to half a second, and never longer than a tenth of the
        // visibility timeout, so that they leave long before the message could come back.
        let gather = (self.settings.visibility / 10).min(ACK_GATHER);
        let acker = tokio::spawn(acknowledge(self.stage, self.queue.clone(), pending, gather));
        let pipeline = pipeline::pipeline(
            pipeline::Settings {
                stage: self.stage,
                queue: self.queue.clone(),
                visibility: self.settings.visibility,
                retry_attempts: self.settings.retry_attempts,
                retry_min_delay: self.settings.retry_min_delay,
                max_receive_count: self.settings.max_receive_count,
                acks,
            },
            self.handler.clone(),
        );
        let this = Arc::new(Running {
            consumer: self,
            pipeline,
        });
        let permits = Arc::new(Semaphore::new(this.settings.concurrency));
        let tasks = TaskTracker::new();
        let mut failures = 0u32;
        emit(ConsumerStarted {
            stage: this.stage,
            queue: this.queue.name(),
        });
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
                    emit(QueueReceiveError {
                        stage: this.stage,
                        error: &e,
                        pause,
                    });
                    drop(first);
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(pause) => continue,
                    }
                }
            };
            // A partial batch from SQS, where each receive is billed: let the next messages
            // gather a moment before asking again, so that a steady trickle is received in
            // batches rather than one call per message.
            let gather = (this.queue.messaging_system() == "aws_sqs"
                && !messages.is_empty()
                && messages.len() < max)
                .then_some(RECEIVE_GATHER);
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
                    // The pipeline settles every message itself: it cannot fail.
                    let _ = this.pipeline.clone().oneshot(Arc::new(message)).await;
                    drop(permit);
                });
            }
            if let Some(pause) = gather {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
        tasks.close();
        tasks.wait().await;
        let stage = this.stage;
        // The last sender goes with `this`: the acknowledger deletes what is left, then ends.
        drop(this);
        let _ = acker.await;
        emit(ConsumerStopped { stage });
    }
}

/// A consumer while it runs: with the pipeline its messages go through, which holds the channel
/// handled messages are acknowledged through.
struct Running {
    consumer: Consumer,
    pipeline: Pipeline,
}

impl std::ops::Deref for Running {
    type Target = Consumer;
    fn deref(&self) -> &Consumer {
        &self.consumer
    }
}

/// How long a consumer of SQS waits after a partial batch before receiving again (see `run`).
const RECEIVE_GATHER: Duration = Duration::from_millis(100);

/// The longest a handled message waits for others to be deleted with.
const ACK_GATHER: Duration = Duration::from_millis(500);

/// Deletes handled messages in batches of up to ten (one `DeleteMessageBatch` instead of ten
/// `DeleteMessage`s on SQS, each billed as a request), waiting up to `gather` for a batch to fill:
/// at a few messages a second that turns most deletes into shared ones, and a message whose delete
/// waits is already handled (should the process die meanwhile, it comes back and finds its work
/// done). Ends when every sender is gone and everything sent has been deleted.
async fn acknowledge(
    stage: &'static str,
    queue: Arc<dyn Queue>,
    mut pending: tokio::sync::mpsc::UnboundedReceiver<String>,
    gather: Duration,
) {
    while let Some(first) = pending.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + gather;
        while batch.len() < 10 {
            match tokio::time::timeout_at(deadline, pending.recv()).await {
                Ok(Some(r)) => batch.push(r),
                Ok(None) | Err(_) => break,
            }
        }
        let delete = || queue.delete_batch(&batch);
        match delete
            .retry(ExponentialBuilder::default().with_max_times(3))
            .when(|e| e.is_retryable())
            .await
        {
            // The effects are durable; the messages will come back and find their work done.
            Ok(failed) => {
                for (_, e) in failed {
                    emit(MessageDeleteError {
                        stage,
                        error: &e,
                        messages: 1,
                    });
                }
            }
            Err(e) => emit(MessageDeleteError {
                stage,
                error: &e,
                messages: batch.len(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HandlerError;
    use async_trait::async_trait;
    use choreo_domain::Config;
    use choreo_domain::config::Queues;
    use choreo_local::LocalBackend;
    use choreo_ports::OutgoingMessage;
    use choreo_ports::ReceivedMessage;
    use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering::SeqCst};

    /// A handler that sleeps, fails as told, and counts.
    #[derive(Default)]
    struct Probe {
        sleep: Duration,
        transient_failures: AtomicU32,
        permanent: bool,
        calls: AtomicU32,
        running: AtomicUsize,
        max_running: AtomicUsize,
        done: AtomicU32,
    }

    #[async_trait]
    impl Handler for Probe {
        async fn handle(&self, _: &ReceivedMessage) -> Result<(), HandlerError> {
            self.calls.fetch_add(1, SeqCst);
            let now = self.running.fetch_add(1, SeqCst) + 1;
            self.max_running.fetch_max(now, SeqCst);
            tokio::time::sleep(self.sleep).await;
            self.running.fetch_sub(1, SeqCst);
            if self.permanent {
                return Err(HandlerError::Permanent("poison".into()));
            }
            let left = self.transient_failures.load(SeqCst);
            if left > 0 {
                self.transient_failures.store(left - 1, SeqCst);
                return Err(HandlerError::Transient("busy".into()));
            }
            self.done.fetch_add(1, SeqCst);
            Ok(())
        }
    }

    struct Rig {
        _dir: tempfile::TempDir,
        backend: LocalBackend,
        queue: Arc<dyn Queue>,
        settings: ConsumerSettings,
    }

    fn rig(max_receive_count: u32) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        config.queues.max_receive_count = max_receive_count;
        config.runtime.concurrency = 3;
        let backend = LocalBackend::open(&config).unwrap();
        let queue = backend.queue(&config.queues.validate);
        let mut settings = ConsumerSettings::from_config(&config);
        settings.wait = Duration::from_millis(50);
        settings.retry_min_delay = Duration::from_millis(1);
        Rig {
            _dir: dir,
            backend,
            queue,
            settings,
        }
    }

    async fn send(queue: &dyn Queue, n: usize) {
        for i in 0..n {
            let m = OutgoingMessage {
                body: format!("m{i}"),
                ..Default::default()
            };
            queue.send(m, Duration::ZERO).await.unwrap();
        }
    }

    /// Runs the consumer until `until` holds (or 20 s pass), then shuts it down and waits for it.
    async fn run_until(rig: &Rig, probe: Arc<Probe>, until: impl Fn(&Probe) -> bool) {
        let shutdown = CancellationToken::new();
        let consumer = Consumer::new(
            "test",
            rig.queue.clone(),
            probe.clone(),
            rig.settings.clone(),
        );
        let task = tokio::spawn(consumer.run(shutdown.clone()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !until(&probe) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn handles_everything_once_with_bounded_concurrency_and_deletes_it() {
        let rig = rig(5);
        send(rig.queue.as_ref(), 25).await;
        let probe = Arc::new(Probe {
            sleep: Duration::from_millis(20),
            ..Probe::default()
        });
        run_until(&rig, probe.clone(), |p| p.done.load(SeqCst) == 25).await;
        assert_eq!(probe.done.load(SeqCst), 25);
        assert_eq!(probe.calls.load(SeqCst), 25, "no message handled twice");
        assert!(
            probe.max_running.load(SeqCst) <= 3,
            "concurrency is bounded"
        );
        assert!(
            probe.max_running.load(SeqCst) > 1,
            "messages run concurrently"
        );
        assert_eq!(rig.queue.depth().await.unwrap().total(), 0, "all deleted");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_long_handler_keeps_its_message_invisible() {
        let mut rig = rig(5);
        rig.settings.visibility = Duration::from_millis(400);
        send(rig.queue.as_ref(), 1).await;
        let probe = Arc::new(Probe {
            sleep: Duration::from_millis(1500),
            ..Probe::default()
        });
        // A second consumer on the same queue would take the message if its visibility lapsed.
        let shutdown = CancellationToken::new();
        let c2 = Consumer::new(
            "other",
            rig.queue.clone(),
            probe.clone(),
            rig.settings.clone(),
        );
        let t2 = tokio::spawn(c2.run(shutdown.clone()));
        run_until(&rig, probe.clone(), |p| p.done.load(SeqCst) == 1).await;
        // Give a lapsed visibility every chance to show.
        tokio::time::sleep(Duration::from_millis(800)).await;
        shutdown.cancel();
        t2.await.unwrap();
        assert_eq!(probe.done.load(SeqCst), 1);
        assert_eq!(
            probe.calls.load(SeqCst),
            1,
            "delivered once, though it ran 3.75 timeouts"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn transient_errors_are_retried_in_process() {
        let rig = rig(5);
        send(rig.queue.as_ref(), 1).await;
        let probe = Arc::new(Probe {
            transient_failures: AtomicU32::new(2),
            ..Probe::default()
        });
        run_until(&rig, probe.clone(), |p| p.done.load(SeqCst) == 1).await;
        assert_eq!(probe.calls.load(SeqCst), 3, "two failures, then success");
        assert_eq!(rig.queue.depth().await.unwrap().total(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_poison_message_reaches_the_dead_letter_queue() {
        let rig = rig(2);
        send(rig.queue.as_ref(), 1).await;
        let dlq = rig.backend.queue(&Queues::dlq_of(rig.queue.name()));
        let probe = Arc::new(Probe {
            permanent: true,
            ..Probe::default()
        });
        let dlq2 = dlq.clone();
        run_until(&rig, probe.clone(), move |_| futures_depth(&dlq2) == 1).await;
        assert_eq!(dlq.depth().await.unwrap().total(), 1);
        assert_eq!(rig.queue.depth().await.unwrap().total(), 0);
        assert_eq!(
            probe.calls.load(SeqCst),
            2,
            "handled max_receive_count times"
        );
    }

    /// A handler that panics on every message.
    #[derive(Default)]
    struct Panics {
        calls: AtomicU32,
    }

    #[async_trait]
    impl Handler for Panics {
        async fn handle(&self, _: &ReceivedMessage) -> Result<(), HandlerError> {
            self.calls.fetch_add(1, SeqCst);
            panic!("index out of bounds");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_handler_releases_its_message_to_the_dead_letter_queue() {
        let rig = rig(2);
        send(rig.queue.as_ref(), 1).await;
        let dlq = rig.backend.queue(&Queues::dlq_of(rig.queue.name()));
        let handler = Arc::new(Panics::default());
        let shutdown = CancellationToken::new();
        let consumer = Consumer::new(
            "test",
            rig.queue.clone(),
            handler.clone(),
            rig.settings.clone(),
        );
        let task = tokio::spawn(consumer.run(shutdown.clone()));
        // Visibility is 60 s: only a release, not a lapse, brings the message back within this.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while futures_depth(&dlq) == 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        shutdown.cancel();
        task.await
            .expect("the consumer survives its handler's panics");
        assert_eq!(dlq.depth().await.unwrap().total(), 1, "dead-lettered");
        assert_eq!(rig.queue.depth().await.unwrap().total(), 0);
        assert_eq!(
            handler.calls.load(SeqCst),
            2,
            "once per receive, no retries"
        );
    }

    /// Fails a message whose body is `poison` permanently and one whose body is `busy`
    /// transiently, always; fails the others transiently `flaky_failures` times in all, then
    /// succeeds.
    #[derive(Default)]
    struct ByBody {
        flaky_failures: AtomicU32,
        done: AtomicU32,
    }

    #[async_trait]
    impl Handler for ByBody {
        async fn handle(&self, message: &ReceivedMessage) -> Result<(), HandlerError> {
            if message.body == "poison" {
                return Err(HandlerError::Permanent("poison".into()));
            }
            if message.body == "busy" {
                return Err(HandlerError::Transient("busy for ever".into()));
            }
            let left = self.flaky_failures.load(SeqCst);
            if left > 0 {
                self.flaky_failures.store(left - 1, SeqCst);
                return Err(HandlerError::Transient("busy".into()));
            }
            self.done.fetch_add(1, SeqCst);
            Ok(())
        }
    }

    // Current-thread, so the consumer's tasks all record into the test's recorder.
    #[tokio::test(flavor = "current_thread")]
    async fn counts_receives_outcomes_retries_and_dead_letters() {
        let recorded = choreo_telemetry::events::Recorded::new();
        let _guard = recorded.install();
        let mut rig = rig(2);
        rig.settings.retry_attempts = 1;
        // Caps the pause before a given-back message comes again.
        rig.settings.visibility = Duration::from_secs(1);
        for body in ["flaky", "poison", "busy"] {
            let m = OutgoingMessage {
                body: body.into(),
                ..Default::default()
            };
            rig.queue.send(m, Duration::ZERO).await.unwrap();
        }
        let dlq = rig.backend.queue(&Queues::dlq_of(rig.queue.name()));
        // Two attempts on the first receive (one in-process retry) fail; it is given back, and
        // the first attempt of its second receive fails, the retry succeeds.
        let handler = Arc::new(ByBody {
            flaky_failures: AtomicU32::new(3),
            ..ByBody::default()
        });
        let shutdown = CancellationToken::new();
        let consumer = Consumer::new(
            "test",
            rig.queue.clone(),
            handler.clone(),
            rig.settings.clone(),
        );
        let task = tokio::spawn(consumer.run(shutdown.clone()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while (handler.done.load(SeqCst) == 0 || futures_depth(&dlq) < 2)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        shutdown.cancel();
        task.await.unwrap();
        assert_eq!(handler.done.load(SeqCst), 1);
        assert_eq!(
            dlq.depth().await.unwrap().total(),
            2,
            "the poison and the busy one"
        );

        let stage = ("stage", "test");
        let value = |name, labels: &[(&str, &str)]| recorded.value(name, labels);
        let handled = |outcome| {
            value(
                "choreo_messages_handled_total",
                &[stage, ("outcome", outcome)],
            )
        };
        assert_eq!(value("choreo_messages_received_total", &[stage]), 6.0);
        assert_eq!(handled("ok"), 1.0, "the flaky one, on its second receive");
        assert_eq!(
            handled("retry_later"),
            3.0,
            "the flaky one's first receive, both of the busy one's"
        );
        assert_eq!(handled("rejected"), 2.0, "the poison, once per receive");
        assert_eq!(
            value("choreo_handler_retries_total", &[stage]),
            4.0,
            "one in-process retry per receive of the flaky and busy ones; none of the poison"
        );
        assert_eq!(
            value("choreo_messages_dead_lettered_total", &[stage]),
            2.0,
            "the poison and the busy one, each on its last receive"
        );
        assert_eq!(
            value("choreo_handler_duration_seconds_count", &[stage]),
            6.0
        );
        assert_eq!(
            value("choreo_events_total", &[("event", "ConsumerStopped")]),
            1.0
        );
    }

    /// A queue's depth from synchronous code (the `until` predicate).
    fn futures_depth(q: &Arc<dyn Queue>) -> u64 {
        let q = q.clone();
        std::thread::spawn(move || {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(async move { q.depth().await.unwrap().total() })
        })
        .join()
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_drains_in_flight_messages() {
        let rig = rig(5);
        send(rig.queue.as_ref(), 2).await;
        let probe = Arc::new(Probe {
            sleep: Duration::from_millis(600),
            ..Probe::default()
        });
        // Shut down as soon as both are in flight; run() must return only after they finish.
        run_until(&rig, probe.clone(), |p| p.running.load(SeqCst) == 2).await;
        assert_eq!(
            probe.done.load(SeqCst),
            2,
            "in-flight work finished before run() returned"
        );
        assert_eq!(
            rig.queue.depth().await.unwrap().total(),
            0,
            "and was acknowledged"
        );
    }
}
