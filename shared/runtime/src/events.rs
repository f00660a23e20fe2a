//! The runtime's named events: the consumer loop's, file transitions, and the operator tools'
//! (see [`choreo_telemetry::events`] for the pattern).
//!
//! Every event here that belongs to a stage carries it as `stage` (the [`choreo_domain::Stage`]'s
//! name: the consumer is built with it, a transition carries its mover). The adapters' events
//! (`choreo_aws::events`, `choreo_local::events`) carry none: they are about a bucket, a table or
//! an AWS call, often shared by every stage of a `choreo up`, and a task-local stage would not
//! reach the tasks the consumer spawns per message without being set again in each. Their log
//! lines still say the stage through the span they run in.

use choreo_domain::{FileId, FileState, Stage};
use choreo_telemetry::events::{InternalEvent, counted};
use std::fmt::Display;
use std::time::Duration;

/// The consumer loop started on its queue.
pub struct ConsumerStarted<'a> {
    pub stage: &'static str,
    pub queue: &'a str,
}

impl InternalEvent for ConsumerStarted<'_> {
    fn emit(self) {
        tracing::info!(stage = self.stage, queue = self.queue, "ConsumerStarted");
        counted("ConsumerStarted");
    }
}

/// The consumer loop drained its messages and stopped.
pub struct ConsumerStopped {
    pub stage: &'static str,
}

impl InternalEvent for ConsumerStopped {
    fn emit(self) {
        tracing::info!(stage = self.stage, "ConsumerStopped");
        counted("ConsumerStopped");
    }
}

/// A receive failed; the loop pauses (growing with each failure in a row) and tries again.
pub struct QueueReceiveError<'a> {
    pub stage: &'static str,
    pub error: &'a dyn Display,
    pub pause: Duration,
}

impl InternalEvent for QueueReceiveError<'_> {
    fn emit(self) {
        tracing::warn!(stage = self.stage, error = %self.error, pause = ?self.pause, "QueueReceiveError");
        counted("QueueReceiveError");
    }
}

/// A message was received and is about to be handled.
pub struct MessageReceived<'a> {
    pub stage: &'static str,
    pub message_id: &'a str,
    pub receive_count: u32,
}

impl InternalEvent for MessageReceived<'_> {
    fn emit(self) {
        tracing::debug!(
            stage = self.stage,
            message_id = self.message_id,
            receive_count = self.receive_count,
            "MessageReceived"
        );
        counted("MessageReceived");
        metrics::counter!("choreo_messages_received_total", "stage" => self.stage).increment(1);
    }
}

/// A handler failed transiently and runs again in process after `after`.
pub struct HandlerRetry<'a> {
    pub stage: &'static str,
    pub error: &'a dyn Display,
    pub after: Duration,
}

impl InternalEvent for HandlerRetry<'_> {
    fn emit(self) {
        // Info, not warn: a steady stream of these is a dependency in trouble, one is routine.
        tracing::info!(stage = self.stage, error = %self.error, after = ?self.after, "HandlerRetry");
        counted("HandlerRetry");
        metrics::counter!("choreo_handler_retries_total", "stage" => self.stage).increment(1);
    }
}

/// A message's handling ended: one of [`MessageHandled`], [`MessageRetryLater`] or
/// [`MessageRejected`], each counted in `choreo_messages_handled_total` under its outcome and timed
/// (in-process retries included) in `choreo_handler_duration_seconds`. Three events rather than one
/// with an outcome field, so that the two an operator acts on keep their own names and levels.
fn handled(stage: &'static str, outcome: &'static str, duration: Duration) {
    metrics::counter!("choreo_messages_handled_total", "stage" => stage, "outcome" => outcome)
        .increment(1);
    metrics::histogram!("choreo_handler_duration_seconds", "stage" => stage, "outcome" => outcome)
        .record(duration.as_secs_f64());
}

/// A message was handled: it is acknowledged (outcome `ok`).
pub struct MessageHandled<'a> {
    pub stage: &'static str,
    pub message_id: &'a str,
    pub duration: Duration,
}

impl InternalEvent for MessageHandled<'_> {
    fn emit(self) {
        tracing::debug!(
            stage = self.stage,
            message_id = self.message_id,
            duration = ?self.duration,
            "MessageHandled"
        );
        counted("MessageHandled");
        handled(self.stage, "ok", self.duration);
    }
}

/// Transient errors outlasted the in-process retries: the message is given back to its queue
/// after `pause` (outcome `retry_later`).
pub struct MessageRetryLater<'a> {
    pub stage: &'static str,
    pub message_id: &'a str,
    pub duration: Duration,
    pub error: &'a str,
    pub pause: Duration,
}

impl InternalEvent for MessageRetryLater<'_> {
    fn emit(self) {
        tracing::warn!(
            stage = self.stage,
            message_id = self.message_id,
            duration = ?self.duration,
            error = self.error,
            pause = ?self.pause,
            "MessageRetryLater"
        );
        counted("MessageRetryLater");
        handled(self.stage, "retry_later", self.duration);
    }
}

/// A permanent error: the message is given back at once, and goes to the dead-letter queue once
/// its receives run out (outcome `rejected`).
pub struct MessageRejected<'a> {
    pub stage: &'static str,
    pub message_id: &'a str,
    pub duration: Duration,
    pub error: &'a str,
    pub receives_before_dead_letter: u32,
}

impl InternalEvent for MessageRejected<'_> {
    fn emit(self) {
        tracing::error!(
            stage = self.stage,
            message_id = self.message_id,
            duration = ?self.duration,
            error = self.error,
            receives_before_dead_letter = self.receives_before_dead_letter,
            "MessageRejected"
        );
        counted("MessageRejected");
        handled(self.stage, "rejected", self.duration);
    }
}

/// A message failed on its last allowed receive: the queue's redrive moves it to the dead-letter
/// queue instead of delivering it again.
pub struct MessageDeadLettered<'a> {
    pub stage: &'static str,
    pub message_id: &'a str,
    pub receive_count: u32,
}

impl InternalEvent for MessageDeadLettered<'_> {
    fn emit(self) {
        tracing::error!(
            stage = self.stage,
            message_id = self.message_id,
            receive_count = self.receive_count,
            "MessageDeadLettered"
        );
        counted("MessageDeadLettered");
        metrics::counter!("choreo_messages_dead_lettered_total", "stage" => self.stage)
            .increment(1);
    }
}

/// Handled messages could not be deleted. Their effects are durable: each comes back once and
/// finds its work done (a harmless duplicate).
pub struct MessageDeleteError<'a> {
    pub stage: &'static str,
    pub error: &'a dyn Display,
    pub messages: usize,
}

impl InternalEvent for MessageDeleteError<'_> {
    fn emit(self) {
        tracing::warn!(stage = self.stage, error = %self.error, messages = self.messages, "MessageDeleteError");
        counted("MessageDeleteError");
    }
}

/// Renewing a running message's visibility failed; the next renewal tries again.
pub struct VisibilityExtendError<'a> {
    pub stage: &'static str,
    pub error: &'a dyn Display,
}

impl InternalEvent for VisibilityExtendError<'_> {
    fn emit(self) {
        tracing::warn!(stage = self.stage, error = %self.error, "VisibilityExtendError");
        counted("VisibilityExtendError");
    }
}

/// A handler panicked: taken as a permanent failure of its message.
pub struct HandlerPanicked<'a> {
    pub stage: &'static str,
    pub panic: &'a str,
}

impl InternalEvent for HandlerPanicked<'_> {
    fn emit(self) {
        tracing::error!(stage = self.stage, panic = self.panic, "HandlerPanicked");
        counted("HandlerPanicked");
    }
}

/// A service's background work (the auditor's server and sweeps) panicked.
pub struct BackgroundTaskPanicked<'a> {
    pub stage: Stage,
    pub error: &'a dyn Display,
}

impl InternalEvent for BackgroundTaskPanicked<'_> {
    fn emit(self) {
        tracing::error!(stage = self.stage.as_str(), error = %self.error, "BackgroundTaskPanicked");
        counted("BackgroundTaskPanicked");
    }
}

/// A file's state changed: a conditional write that applied.
pub struct FileTransitioned<'a> {
    pub stage: Stage,
    pub from: FileState,
    pub to: FileState,
    pub file_id: &'a FileId,
    pub dataset: &'a str,
}

impl InternalEvent for FileTransitioned<'_> {
    fn emit(self) {
        let (stage, from, to) = (self.stage.as_str(), self.from.as_str(), self.to.as_str());
        tracing::info!(
            stage,
            from,
            to,
            file_id = %self.file_id,
            dataset = self.dataset,
            "FileTransitioned"
        );
        counted("FileTransitioned");
        metrics::counter!("choreo_file_transitions_total", "stage" => stage, "from" => from, "to" => to)
            .increment(1);
    }
}

/// A poll timer named a batch that has no record: dropped.
pub struct BatchUnknown<'a> {
    pub stage: Stage,
    pub batch_id: &'a str,
}

impl InternalEvent for BatchUnknown<'_> {
    fn emit(self) {
        tracing::warn!(
            stage = self.stage.as_str(),
            batch_id = self.batch_id,
            "BatchUnknown"
        );
        counted("BatchUnknown");
    }
}

/// A batch's file was not where the batch's move expected it (`state`, or no record at all): it
/// moved elsewhere meanwhile, and the batch goes on without it.
pub struct FileLeftBatch<'a> {
    pub stage: Stage,
    pub batch_id: &'a str,
    pub file_id: &'a FileId,
    pub state: Option<FileState>,
}

impl InternalEvent for FileLeftBatch<'_> {
    fn emit(self) {
        tracing::warn!(
            stage = self.stage.as_str(),
            batch_id = self.batch_id,
            file_id = %self.file_id,
            state = self.state.map(FileState::as_str),
            "FileLeftBatch"
        );
        counted("FileLeftBatch");
    }
}

/// An event was published to the bus.
pub struct EventPublished<'a> {
    pub event_type: &'static str,
    pub event_id: &'a dyn Display,
}

impl InternalEvent for EventPublished<'_> {
    fn emit(self) {
        tracing::debug!(event_type = self.event_type, event_id = %self.event_id, "EventPublished");
        counted("EventPublished");
    }
}

/// A tick was sent: for a schedule slot (the scheduler's replica that won the put-if-absent), again
/// (its first message was lost), or by hand.
pub struct ExtractTicked<'a> {
    pub extract: &'a str,
    pub tick_id: &'a str,
    /// Why: `schedule`, `resend` (its first message was lost) or `manual`.
    pub cause: &'static str,
}

impl InternalEvent for ExtractTicked<'_> {
    fn emit(self) {
        tracing::info!(
            extract = self.extract,
            tick_id = self.tick_id,
            cause = self.cause,
            "ExtractTicked"
        );
        counted("ExtractTicked");
    }
}

/// SIGTERM or Ctrl-C: the services stop receiving and drain their in-flight messages.
pub struct ShutdownRequested;

impl InternalEvent for ShutdownRequested {
    fn emit(self) {
        tracing::info!("ShutdownRequested");
        counted("ShutdownRequested");
    }
}

/// A periodic task (a watchdog, the sweep, alert delivery) could not take its lease this round; it
/// tries at the next.
pub struct PeriodicLeaseError<'a> {
    pub lease: &'a str,
    pub error: &'a dyn Display,
}

impl InternalEvent for PeriodicLeaseError<'_> {
    fn emit(self) {
        tracing::warn!(lease = self.lease, error = %self.error, "PeriodicLeaseError");
        counted("PeriodicLeaseError");
    }
}

/// A watchdog pass failed; the next pass tries again.
pub struct WatchdogPassError<'a> {
    pub watchdog: &'a str,
    pub error: &'a dyn Display,
}

impl InternalEvent for WatchdogPassError<'_> {
    fn emit(self) {
        tracing::warn!(watchdog = self.watchdog, error = %self.error, "WatchdogPassError");
        counted("WatchdogPassError");
    }
}

/// A watchdog found long work whose poll timers were lost, and sent them again.
pub struct LostTimersRecovered<'a> {
    pub watchdog: &'a str,
    pub timers: usize,
}

impl InternalEvent for LostTimersRecovered<'_> {
    fn emit(self) {
        tracing::warn!(
            watchdog = self.watchdog,
            timers = self.timers,
            "LostTimersRecovered"
        );
        counted("LostTimersRecovered");
    }
}

/// Dead letters taken for a redrive could not be made visible again in the DLQ; they reappear
/// there when their visibility lapses.
pub struct DeadLetterHandBackError<'a> {
    pub error: &'a dyn Display,
}

impl InternalEvent for DeadLetterHandBackError<'_> {
    fn emit(self) {
        tracing::warn!(error = %self.error, "DeadLetterHandBackError");
        counted("DeadLetterHandBackError");
    }
}

/// An operator moved a stage's dead letters back to its queue; `missing` of the ids asked for
/// were not found.
pub struct DeadLettersRedriven {
    pub stage: Stage,
    pub moved: u64,
    pub missing: usize,
}

impl InternalEvent for DeadLettersRedriven {
    fn emit(self) {
        tracing::info!(
            stage = self.stage.as_str(),
            moved = self.moved,
            missing = self.missing,
            "DeadLettersRedriven"
        );
        counted("DeadLettersRedriven");
    }
}

/// An operator purged a stage's dead letters.
pub struct DeadLettersPurged {
    pub stage: Stage,
    pub purged: u64,
}

impl InternalEvent for DeadLettersPurged {
    fn emit(self) {
        tracing::info!(
            stage = self.stage.as_str(),
            purged = self.purged,
            "DeadLettersPurged"
        );
        counted("DeadLettersPurged");
    }
}

/// The open-file limit was raised at start.
pub struct FdLimitRaised {
    pub limit: u64,
}

impl InternalEvent for FdLimitRaised {
    fn emit(self) {
        tracing::debug!(limit = self.limit, "FdLimitRaised");
        counted("FdLimitRaised");
    }
}

/// The open-file limit could not be raised: many files at once may fail with EMFILE.
pub struct FdLimitRaiseError<'a> {
    pub error: &'a dyn Display,
}

impl InternalEvent for FdLimitRaiseError<'_> {
    fn emit(self) {
        tracing::warn!(error = %self.error, "FdLimitRaiseError");
        counted("FdLimitRaiseError");
    }
}

/// An operator's retry put FAILED files into a new batch.
pub struct BatchRetried<'a> {
    pub batch_id: &'a str,
    pub retry_of: Option<&'a str>,
    pub files: usize,
}

impl InternalEvent for BatchRetried<'_> {
    fn emit(self) {
        tracing::info!(batch_id = self.batch_id, retry_of = ?self.retry_of, files = self.files, "BatchRetried");
        counted("BatchRetried");
    }
}

/// The ops endpoint could not bind its address: no /metrics, /health or /ready; the service runs on.
pub struct OpsBindError<'a, E: Display> {
    pub listen: &'a str,
    pub error: E,
}

impl<E: Display> InternalEvent for OpsBindError<'_, E> {
    fn emit(self) {
        tracing::error!(listen = self.listen, error = %self.error, "OpsBindError");
        counted("OpsBindError");
    }
}

/// The ops endpoint serves /metrics, /health and /ready at `addr`.
pub struct OpsListening {
    pub addr: std::net::SocketAddr,
}

impl InternalEvent for OpsListening {
    fn emit(self) {
        tracing::info!(addr = %self.addr, "OpsListening");
        counted("OpsListening");
    }
}

/// Accepting a connection failed (out of descriptors, say); the server pauses and goes on.
pub struct HttpAcceptError<E: Display> {
    pub error: E,
}

impl<E: Display> InternalEvent for HttpAcceptError<E> {
    fn emit(self) {
        tracing::warn!(error = %self.error, "HttpAcceptError");
        counted("HttpAcceptError");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use choreo_telemetry::events::{Recorded, emit};

    #[test]
    fn a_transition_counts_by_stage_from_and_to() {
        let recorded = Recorded::new();
        let id = FileId::from("f-1");
        recorded.run(|| {
            for to in [FileState::Valid, FileState::Invalid, FileState::Valid] {
                emit(FileTransitioned {
                    stage: Stage::Validator,
                    from: FileState::New,
                    to,
                    file_id: &id,
                    dataset: "orders",
                });
            }
        });
        let series = |to| {
            recorded.value(
                "choreo_file_transitions_total",
                &[("stage", "validator"), ("from", "NEW"), ("to", to)],
            )
        };
        assert_eq!(series("VALID"), 2.0);
        assert_eq!(series("INVALID"), 1.0);
        assert_eq!(
            recorded.value("choreo_events_total", &[("event", "FileTransitioned")]),
            3.0
        );
    }

    #[test]
    fn a_handled_message_counts_its_outcome_and_times_it() {
        let recorded = Recorded::new();
        recorded.run(|| {
            emit(MessageHandled {
                stage: "validator",
                message_id: "m-1",
                duration: Duration::from_millis(5),
            });
            emit(MessageRejected {
                stage: "validator",
                message_id: "m-2",
                duration: Duration::from_millis(7),
                error: "poison",
                receives_before_dead_letter: 1,
            });
        });
        let handled = |outcome| {
            recorded.value(
                "choreo_messages_handled_total",
                &[("stage", "validator"), ("outcome", outcome)],
            )
        };
        assert_eq!(handled("ok"), 1.0);
        assert_eq!(handled("rejected"), 1.0);
        assert_eq!(handled("retry_later"), 0.0);
        assert_eq!(
            recorded.value(
                "choreo_handler_duration_seconds_count",
                &[("stage", "validator"), ("outcome", "rejected")]
            ),
            1.0
        );
    }
}
