use crate::PortError;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// A message as received, with what SQS tells about its deliveries.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedMessage {
    pub id: String,
    /// Names this delivery; deleting or extending needs it.
    pub receipt: String,
    pub body: String,
    /// String attributes: `event_type`, `traceparent`, ...
    pub attributes: BTreeMap<String, String>,
    /// How many times the message has been received, this delivery included (in the source queue
    /// too, for a message moved to a dead-letter queue).
    pub receive_count: u32,
    pub sent_at: DateTime<Utc>,
    pub first_received_at: Option<DateTime<Utc>>,
}

/// A message seen without being taken: what [`Queue::peek`] returns. There is no receipt, so it cannot
/// be deleted or hidden through this value.
#[derive(Debug, Clone, PartialEq)]
pub struct PeekedMessage {
    pub id: String,
    pub body: String,
    pub attributes: BTreeMap<String, String>,
    /// Receives so far (in the source queue too, for a message moved to a dead-letter queue).
    pub receive_count: u32,
    pub sent_at: DateTime<Utc>,
    pub first_received_at: Option<DateTime<Utc>>,
}

/// A message to send or publish.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OutgoingMessage {
    pub body: String,
    /// At most 10, as SQS allows.
    pub attributes: BTreeMap<String, String>,
}

impl OutgoingMessage {
    /// SQS's limit on message attributes (SNS delivering to SQS keeps it).
    pub const MAX_ATTRIBUTES: usize = 10;
    /// SQS's limit on a message: body plus attribute names, types and values.
    pub const MAX_BYTES: usize = 256 * 1024;

    /// The bytes SQS counts against [`Self::MAX_BYTES`]: the body, and each attribute's name,
    /// `String` data type and value.
    pub fn size(&self) -> usize {
        self.body.len()
            + self
                .attributes
                .iter()
                .map(|(k, v)| k.len() + "String".len() + v.len())
                .sum::<usize>()
    }

    /// Checks the message against the limits SQS enforces, so that every backend refuses what AWS
    /// would refuse, before any call. Attribute sizes count their `String` data type, as SQS does.
    pub fn check(&self, op: &'static str, target: &str) -> Result<(), PortError> {
        if self.attributes.len() > Self::MAX_ATTRIBUTES {
            return Err(PortError::permanent(
                op,
                target,
                format!(
                    "{} message attributes (at most {} are allowed)",
                    self.attributes.len(),
                    Self::MAX_ATTRIBUTES
                ),
            ));
        }
        let size = self.size();
        if size > Self::MAX_BYTES {
            return Err(PortError::permanent(
                op,
                target,
                format!(
                    "message of {size} bytes exceeds the {}-byte limit",
                    Self::MAX_BYTES
                ),
            ));
        }
        Ok(())
    }
}

/// A queue's approximate depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueDepth {
    /// Ready to be received.
    pub visible: u64,
    /// Received and neither deleted nor back yet.
    pub in_flight: u64,
    /// Sent with a delay that has not passed.
    pub delayed: u64,
}

impl QueueDepth {
    pub fn total(&self) -> u64 {
        self.visible + self.in_flight + self.delayed
    }
}

/// One queue with SQS standard-queue semantics: at-least-once delivery, in any order.
#[async_trait]
pub trait Queue: Send + Sync {
    fn name(&self) -> &str;

    /// What carries the messages, as OpenTelemetry's `messaging.system` names it (`aws_sqs`).
    fn messaging_system(&self) -> &'static str {
        "choreo_local"
    }

    /// Receives up to `max` messages (clamped to 1..=10), waiting up to `wait` for the first (long
    /// polling; an empty result is normal). Each received message stays invisible for `visibility`,
    /// then is delivered again unless deleted. A message already received `maxReceiveCount` times is
    /// moved to the queue's dead-letter queue instead of being delivered.
    ///
    /// As on SQS, `wait` is clamped to 20 s and `visibility` to 12 hours, and a backend may round
    /// `visibility` up to whole seconds (SQS does). A visibility of zero leaves the message visible:
    /// that delivery is over at once.
    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, PortError>;

    /// Deletes the delivery named by `receipt`. Deleting twice, or a message already gone (deleted,
    /// moved to the dead-letter queue, purged), is not an error: acknowledging is idempotent. A
    /// receipt of an earlier delivery of a message received again since may or may not delete it
    /// (SQS asks for the latest and does not say). A malformed receipt, which no queue issued, is a
    /// permanent error: that is a bug.
    async fn delete(&self, receipt: &str) -> Result<(), PortError>;

    /// Deletes several deliveries in as few calls as the backend allows (SQS: ten per call). Returns
    /// the receipts that could not be deleted, each with its error (a malformed receipt among them,
    /// as a permanent error, while the others are deleted); `Err` means the call failed as a whole,
    /// and every receipt may be retried (deleting is idempotent).
    async fn delete_batch(
        &self,
        receipts: &[String],
    ) -> Result<Vec<(String, PortError)>, PortError> {
        let mut failed = Vec::new();
        for r in receipts {
            if let Err(e) = self.delete(r).await {
                failed.push((r.clone(), e));
            }
        }
        Ok(failed)
    }

    /// Makes the delivery invisible for `visibility` from now (zero makes it visible at once). Used to
    /// keep a long-running message from being redelivered, and to hand a failing one back early.
    ///
    /// Only a delivery in flight changes. One that is over (deleted, moved, or visible again because
    /// its visibility lapsed) is left as it is, without an error, as on SQS (which answers
    /// `MessageNotInflight`, or nothing): a late extension must not hide a message another consumer
    /// may be taking. A malformed receipt is a permanent error.
    async fn change_visibility(&self, receipt: &str, visibility: Duration)
    -> Result<(), PortError>;

    /// Sends a message that becomes visible after `delay` (at most 15 minutes, as SQS allows; a longer
    /// one is clamped, and a backend may round it up to whole seconds, as SQS does): the durable
    /// timer the crawler and launcher poll with. A message over [`OutgoingMessage`]'s limits is a
    /// permanent error, and nothing is sent.
    async fn send(&self, message: OutgoingMessage, delay: Duration) -> Result<(), PortError>;

    /// Approximate counts, as SQS's `ApproximateNumberOfMessages*` attributes.
    async fn depth(&self) -> Result<QueueDepth, PortError>;

    /// How long the oldest message that is visible or in flight (not one still delayed) has been in
    /// the queue, as CloudWatch's `ApproximateAgeOfOldestMessage`: zero for a queue that holds none.
    /// `None` where the backend cannot tell: SQS has no API for it (CloudWatch has the metric), so
    /// nothing invents a number.
    async fn oldest_message_age(&self) -> Result<Option<Duration>, PortError> {
        Ok(None)
    }

    /// Up to `max` messages, oldest first (by `sent_at`: a dead letter is as old as its first send)
    /// where the backend can tell, each once, without taking them: for inspecting a dead-letter
    /// queue. Messages in flight or still delayed may be left out, so fewer than `max` does not prove
    /// the queue holds no more.
    ///
    /// On SQS this is a receive with a visibility timeout of zero, repeated until `max` distinct
    /// messages are seen or a receive brings nothing new: each peek **counts as a receive** (it raises
    /// the receive count, and on a queue with a redrive policy it can move a message to its
    /// dead-letter queue), which is why it is meant for dead-letter queues, which have none.
    async fn peek(&self, max: usize) -> Result<Vec<PeekedMessage>, PortError>;

    /// Deletes every message of the queue, in flight, delayed or visible (SQS's `PurgeQueue`); their
    /// receipts are stale from then on. Returns how many:
    /// exact on the local backend; on SQS the approximate depth just before the purge, since SQS does
    /// not say (and allows one purge per queue a minute, taking up to that long to finish).
    async fn purge(&self) -> Result<u64, PortError>;
}

/// Every queue of the backend, by name: work queues, their dead-letter queues (`<name>-dlq`, see
/// `Queues::dlq_of` in the configuration) and any other. What reads across stages takes it: the
/// auditor's depth report and sweeps, and dead-letter inspection and redrive.
pub trait QueueLookup: Send + Sync {
    /// The queue `name`. Cheap; no call is made until the queue is used.
    fn queue(&self, name: &str) -> Arc<dyn Queue>;
}

impl<F> QueueLookup for F
where
    F: Fn(&str) -> Arc<dyn Queue> + Send + Sync,
{
    fn queue(&self, name: &str) -> Arc<dyn Queue> {
        self(name)
    }
}
