//! [`Queue`] on SQS standard queues.
//!
//! The queue URL is resolved once, lazily, with `GetQueueUrl` (a name is what the configuration holds;
//! every other call needs the URL). Redrive to the dead-letter queue is SQS's own redrive policy, set by
//! [`crate::messaging_setup::create_queues`]: the adapter does nothing for it.
//!
//! Acknowledging is idempotent: deleting a delivery whose receipt SQS no longer honours (the message
//! was deleted already, moved to its DLQ, purged, or the receipt expired) is `Ok`, because the message is
//! not ours to delete any more and saying so as an error would only make the caller retry in vain. A
//! receipt SQS calls malformed, or one issued by another queue, stays an error: that is a bug.

use crate::error::port_error;
use async_trait::async_trait;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, Message, MessageAttributeValue, MessageSystemAttributeName,
    MessageSystemAttributeNameForSends, MessageSystemAttributeValue, QueueAttributeName,
};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use choreo_domain::event::ATTR_AWS_TRACE_HEADER;
use choreo_ports::{
    OutgoingMessage, PeekedMessage, PortError, PortErrorKind, Queue, QueueDepth, ReceivedMessage,
};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::OnceCell;

/// SQS's limits.
const MAX_BATCH: usize = 10;
const MAX_WAIT_SECS: u64 = 20;
const MAX_VISIBILITY_SECS: u64 = 12 * 60 * 60;
const MAX_DELAY_SECS: u64 = 15 * 60;

/// One SQS queue, by name.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    name: String,
    /// Resolved on first use; a queue's URL never changes while the queue exists.
    url: std::sync::Arc<OnceCell<String>>,
}

impl SqsQueue {
    /// The queue called `name`. No call is made until the queue is first used.
    pub fn new(client: aws_sdk_sqs::Client, name: &str) -> Self {
        SqsQueue {
            client,
            name: name.to_string(),
            url: Default::default(),
        }
    }

    /// The queue's URL, looked up once with `GetQueueUrl` (a missing queue is `NotFound`).
    pub async fn url(&self) -> Result<String, PortError> {
        self.url
            .get_or_try_init(|| async {
                let out = self
                    .client
                    .get_queue_url()
                    .queue_name(&self.name)
                    .send()
                    .await
                    .map_err(|e| port_error("get_queue_url", &self.name, e))?;
                out.queue_url.ok_or_else(|| {
                    PortError::permanent("get_queue_url", &self.name, "no QueueUrl in the answer")
                })
            })
            .await
            .cloned()
    }

    /// Deletes many deliveries with `DeleteMessageBatch`, ten per call. Returns the receipts that
    /// were not deleted, each with its error (a sender fault is permanent, a service fault
    /// transient); a stale receipt counts as deleted, as in [`Queue::delete`]. A call that fails as a
    /// whole ends the batch with `Err`: the caller may retry every receipt, since deleting is
    /// idempotent.
    pub async fn delete_batch(
        &self,
        receipts: &[String],
    ) -> Result<Vec<(String, PortError)>, PortError> {
        let mut failures = Vec::new();
        if receipts.is_empty() {
            return Ok(failures);
        }
        let url = self.url().await?;
        for chunk in receipts.chunks(MAX_BATCH) {
            let mut entries = Vec::with_capacity(chunk.len());
            for (i, receipt) in chunk.iter().enumerate() {
                if receipt.is_empty() {
                    // SQS would refuse the whole call for one empty handle.
                    failures.push((
                        receipt.clone(),
                        PortError::permanent("delete_batch", &self.name, "empty receipt handle"),
                    ));
                    continue;
                }
                entries.push(
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(receipt)
                        .build()
                        .map_err(|e| PortError::permanent("delete_batch", &self.name, e))?,
                );
            }
            if entries.is_empty() {
                continue;
            }
            let out = self
                .client
                .delete_message_batch()
                .queue_url(&url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| port_error("delete_batch", &self.name, e))?;
            for failed in out.failed() {
                let Some(receipt) = failed.id().parse::<usize>().ok().and_then(|i| chunk.get(i))
                else {
                    return Err(PortError::permanent(
                        "delete_batch",
                        &self.name,
                        format!("SQS reported a failure for unknown entry {:?}", failed.id()),
                    ));
                };
                let message = failed.message().unwrap_or_default();
                if is_stale_receipt(failed.code(), message) {
                    tracing::debug!(queue = %self.name, code = failed.code(), message,
                        "stale receipt in a batch delete: the message is already gone");
                    continue;
                }
                let kind = if failed.sender_fault() {
                    PortErrorKind::Permanent
                } else {
                    PortErrorKind::Transient
                };
                failures.push((
                    receipt.clone(),
                    PortError::new(
                        kind,
                        "delete_batch",
                        &self.name,
                        format!("{}: {message}", failed.code()),
                    ),
                ));
            }
        }
        Ok(failures)
    }
}

/// Whether an SQS error about a receipt handle means the handle was once good but is no longer
/// honoured (the message is gone or the receipt expired), rather than that it is malformed or belongs
/// to another queue. SQS says "The receipt handle has expired" for the first (code
/// `ReceiptHandleIsInvalid`, or `InvalidParameterValue` from older endpoints) and "... is not a valid
/// receipt handle" / "... is not valid for this queue" for the others.
fn is_stale_receipt(code: &str, message: &str) -> bool {
    let receipt_code =
        code == "ReceiptHandleIsInvalid" || code.ends_with("#ReceiptHandleIsInvalid");
    if message.contains("has expired") {
        return receipt_code || code == "InvalidParameterValue";
    }
    receipt_code
        && !message.contains("not a valid receipt handle")
        && !message.contains("not valid for this queue")
}

/// Whole seconds, rounded up so that a short non-zero duration stays non-zero, capped at `max`
/// (`Duration::MAX` included).
fn secs_ceil(d: Duration, max: u64) -> i32 {
    let secs = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
    secs.min(max) as i32
}

fn millis_to_time(ms: &str) -> Option<DateTime<Utc>> {
    ms.parse::<i64>()
        .ok()
        .and_then(DateTime::<Utc>::from_timestamp_millis)
}

/// A received SQS message as the port has it. Only `String` (and `String.*`) attributes are kept.
fn to_received(queue: &str, m: Message) -> Result<ReceivedMessage, PortError> {
    let missing =
        |what: &str| PortError::permanent("receive", queue, format!("message without {what}"));
    let system = m.attributes.unwrap_or_default();
    let mut attributes = m
        .message_attributes
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, v)| v.data_type.starts_with("String"))
        .filter_map(|(k, v)| v.string_value.map(|s| (k, s)))
        .collect::<BTreeMap<_, _>>();
    // The X-Ray header is a system attribute on SQS; the port carries it as an ordinary one.
    if let Some(header) = system.get(&MessageSystemAttributeName::AwsTraceHeader) {
        attributes.insert(ATTR_AWS_TRACE_HEADER.to_string(), header.clone());
    }
    let sent_at = system
        .get(&MessageSystemAttributeName::SentTimestamp)
        .and_then(|s| millis_to_time(s))
        // Asked for on every receive; should SQS leave it out, the message is still delivered.
        .unwrap_or_else(Utc::now);
    Ok(ReceivedMessage {
        id: m.message_id.ok_or_else(|| missing("MessageId"))?,
        receipt: m.receipt_handle.ok_or_else(|| missing("ReceiptHandle"))?,
        body: m.body.unwrap_or_default(),
        attributes,
        receive_count: system
            .get(&MessageSystemAttributeName::ApproximateReceiveCount)
            .and_then(|s| s.parse().ok())
            .unwrap_or(1),
        sent_at,
        first_received_at: system
            .get(&MessageSystemAttributeName::ApproximateFirstReceiveTimestamp)
            .and_then(|s| millis_to_time(s)),
    })
}

#[async_trait]
impl Queue for SqsQueue {
    async fn delete_batch(
        &self,
        receipts: &[String],
    ) -> Result<Vec<(String, PortError)>, PortError> {
        SqsQueue::delete_batch(self, receipts).await
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn messaging_system(&self) -> &'static str {
        "aws_sqs"
    }

    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, PortError> {
        let url = self.url().await?;
        let out = self
            .client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(max.clamp(1, MAX_BATCH) as i32)
            .wait_time_seconds(wait.as_secs().min(MAX_WAIT_SECS) as i32)
            .visibility_timeout(secs_ceil(visibility, MAX_VISIBILITY_SECS))
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_system_attribute_names(MessageSystemAttributeName::AwsTraceHeader)
            .message_system_attribute_names(
                MessageSystemAttributeName::ApproximateFirstReceiveTimestamp,
            )
            .send()
            .await
            .map_err(|e| port_error("receive", &self.name, e))?;
        out.messages
            .unwrap_or_default()
            .into_iter()
            .map(|m| to_received(&self.name, m))
            .collect()
    }

    async fn delete(&self, receipt: &str) -> Result<(), PortError> {
        let url = self.url().await?;
        match self
            .client
            .delete_message()
            .queue_url(url)
            .receipt_handle(receipt)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                if let Some(se) = e.as_service_error()
                    && is_stale_receipt(
                        se.code().unwrap_or_default(),
                        se.message().unwrap_or_default(),
                    )
                {
                    tracing::debug!(queue = %self.name, error = %se.message().unwrap_or_default(),
                        "stale receipt on delete: the message is already gone");
                    return Ok(());
                }
                Err(port_error("delete", &self.name, e))
            }
        }
    }

    /// As the port says; a receipt SQS no longer honours (message deleted, moved or no longer in
    /// flight) is `Ok`, as on the local backend: there is no delivery left to extend or hand back.
    async fn change_visibility(
        &self,
        receipt: &str,
        visibility: Duration,
    ) -> Result<(), PortError> {
        let url = self.url().await?;
        match self
            .client
            .change_message_visibility()
            .queue_url(url)
            .receipt_handle(receipt)
            .visibility_timeout(secs_ceil(visibility, MAX_VISIBILITY_SECS))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                if let Some(se) = e.as_service_error() {
                    let code = se.code().unwrap_or_default();
                    let message = se.message().unwrap_or_default();
                    if se.is_message_not_inflight() || is_stale_receipt(code, message) {
                        tracing::debug!(queue = %self.name, code, message,
                            "visibility change on a delivery that is gone");
                        return Ok(());
                    }
                }
                Err(port_error("change_visibility", &self.name, e))
            }
        }
    }

    async fn send(&self, mut message: OutgoingMessage, delay: Duration) -> Result<(), PortError> {
        message.check("send", &self.name)?;
        let url = self.url().await?;
        let mut req = self
            .client
            .send_message()
            .queue_url(url)
            .delay_seconds(secs_ceil(delay, MAX_DELAY_SECS));
        // X-Ray's header travels as SQS's own system attribute, outside the ten-attribute limit.
        if let Some(header) = message.attributes.remove(ATTR_AWS_TRACE_HEADER) {
            let value = MessageSystemAttributeValue::builder()
                .data_type("String")
                .string_value(header)
                .build()
                .map_err(|e| PortError::permanent("send", &self.name, e))?;
            req = req.message_system_attributes(
                MessageSystemAttributeNameForSends::AwsTraceHeader,
                value,
            );
        }
        req = req.message_body(message.body);
        for (k, v) in message.attributes {
            req = req.message_attributes(k, string_attribute(v, &self.name)?);
        }
        req.send()
            .await
            .map_err(|e| port_error("send", &self.name, e))?;
        Ok(())
    }

    /// As the port says: receives with a visibility timeout of zero, so every peek counts as a
    /// receive. SQS samples its servers on each receive, so a receive may bring back messages
    /// already seen, or none while more exist; peeking stops at `max` distinct messages, or after a
    /// receive that brings nothing new.
    async fn peek(&self, max: usize) -> Result<Vec<PeekedMessage>, PortError> {
        let mut seen = std::collections::HashSet::new();
        let mut out: Vec<PeekedMessage> = Vec::new();
        while out.len() < max {
            let want = (max - out.len()).min(MAX_BATCH);
            let got = self
                .receive(want, Duration::from_secs(1), Duration::ZERO)
                .await?;
            let before = out.len();
            for m in got {
                if seen.insert(m.id.clone()) && out.len() < max {
                    out.push(PeekedMessage {
                        id: m.id,
                        body: m.body,
                        attributes: m.attributes,
                        receive_count: m.receive_count,
                        sent_at: m.sent_at,
                        first_received_at: m.first_received_at,
                    });
                }
            }
            if out.len() == before {
                break;
            }
        }
        out.sort_by_key(|m| m.sent_at);
        Ok(out)
    }

    /// As the port says; `PurgeQueue` within a minute of the last one is refused by SQS
    /// (`PurgeQueueInProgress`, permanent: retrying at once cannot help).
    async fn purge(&self) -> Result<u64, PortError> {
        let before = self.depth().await?.total();
        let url = self.url().await?;
        self.client
            .purge_queue()
            .queue_url(url)
            .send()
            .await
            .map_err(|e| port_error("purge", &self.name, e))?;
        Ok(before)
    }

    async fn depth(&self) -> Result<QueueDepth, PortError> {
        let url = self.url().await?;
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(|e| port_error("depth", &self.name, e))?;
        let attrs = out.attributes.unwrap_or_default();
        let count = |name: QueueAttributeName| {
            attrs
                .get(&name)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(QueueDepth {
            visible: count(QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            delayed: count(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        })
    }
}

/// A `String` message attribute.
fn string_attribute(value: String, queue: &str) -> Result<MessageAttributeValue, PortError> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(|e| PortError::permanent("send", queue, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AwsClients;
    use crate::messaging_setup::{create_queues, ensure_queue, queue_arn};
    use crate::moto::Moto;
    use choreo_domain::Config;
    use choreo_ports::testkit::{EmulatorDifferences, QueueUnderTest, queue_contract};
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const NO_WAIT: Duration = Duration::ZERO;
    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn message(body: &str) -> OutgoingMessage {
        OutgoingMessage {
            body: body.to_string(),
            attributes: BTreeMap::from([
                ("event_type".to_string(), "FileRegistered".to_string()),
                ("traceparent".to_string(), TRACEPARENT.to_string()),
            ]),
        }
    }

    /// Moto with the configuration's queues.
    async fn queues() -> (Moto, AwsClients, Config) {
        let moto = Moto::start();
        let clients = AwsClients::emulator(&moto.endpoint).await;
        let config = Config::default();
        create_queues(&clients, &config).await.unwrap();
        (moto, clients, config)
    }

    /// The port's contract (`choreo_ports::testkit`), on SQS (moto), tolerating moto's documented
    /// differences only: each case on a queue of its own with its dead-letter queue and redrive
    /// policy, as `create_queues` makes them.
    #[tokio::test]
    async fn the_queue_contract() {
        let moto = Moto::start();
        let clients = AwsClients::emulator(&moto.endpoint).await;
        let n = AtomicUsize::new(0);
        let fresh = async || {
            let name = format!("contract-{}", n.fetch_add(1, Ordering::Relaxed));
            let dlq = format!("{name}-dlq");
            let max_receive_count = 3;
            ensure_queue(&clients.sqs, &dlq, HashMap::new())
                .await
                .unwrap();
            let redrive = serde_json::json!({
                "deadLetterTargetArn": queue_arn(&clients.sqs, &dlq).await.unwrap(),
                "maxReceiveCount": max_receive_count,
            });
            let attributes =
                HashMap::from([(QueueAttributeName::RedrivePolicy, redrive.to_string())]);
            ensure_queue(&clients.sqs, &name, attributes).await.unwrap();
            QueueUnderTest {
                queue: Arc::new(SqsQueue::new(clients.sqs.clone(), &name)),
                dlq: Arc::new(SqsQueue::new(clients.sqs.clone(), &dlq)),
                max_receive_count,
            }
        };
        queue_contract(fresh, EmulatorDifferences::MOTO).await;
    }

    #[tokio::test]
    async fn the_url_is_looked_up_once_and_a_missing_queue_is_not_found() {
        let (_moto, clients, config) = queues().await;
        let q = SqsQueue::new(clients.sqs.clone(), &config.queues.validate);
        clients.calls.reset();
        q.send(message("m"), NO_WAIT).await.unwrap();
        let got = q.receive(1, NO_WAIT, Duration::from_secs(1)).await.unwrap();
        q.delete(&got[0].receipt).await.unwrap();
        let resolved = clients
            .calls
            .snapshot()
            .into_iter()
            .find(|((_, op), _)| op == "GetQueueUrl");
        assert_eq!(resolved.map(|(_, n)| n), Some(1));

        let missing = SqsQueue::new(clients.sqs.clone(), "choreo-nope");
        let err = missing.depth().await.unwrap_err();
        assert_eq!(err.kind, PortErrorKind::NotFound, "{err}");
    }

    #[tokio::test]
    async fn the_x_ray_header_travels_as_the_aws_trace_header_system_attribute() {
        let (_moto, clients, config) = queues().await;
        let q = SqsQueue::new(clients.sqs.clone(), &config.queues.validate);
        let header = "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=1";
        let mut m = message("{}");
        m.attributes
            .insert(ATTR_AWS_TRACE_HEADER.to_string(), header.to_string());
        q.send(m, Duration::ZERO).await.unwrap();

        // Read raw: SQS has it as its own system attribute, not as one of the message's.
        let url = q.url().await.unwrap();
        let raw = clients
            .sqs
            .receive_message()
            .queue_url(url)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::AwsTraceHeader)
            .visibility_timeout(0)
            .send()
            .await
            .unwrap();
        let raw = &raw.messages.unwrap()[0];
        assert_eq!(
            raw.attributes.as_ref().unwrap()[&MessageSystemAttributeName::AwsTraceHeader],
            header
        );
        assert!(
            !raw.message_attributes
                .as_ref()
                .unwrap()
                .contains_key(ATTR_AWS_TRACE_HEADER)
        );
        // Through the port, it is an attribute beside traceparent.
        let got = q.receive(1, NO_WAIT, Duration::from_secs(1)).await.unwrap();
        assert_eq!(got[0].attributes[ATTR_AWS_TRACE_HEADER], header);
        assert_eq!(got[0].attributes["traceparent"], TRACEPARENT);
    }

    #[test]
    fn stale_receipts_are_told_from_bad_ones() {
        assert!(is_stale_receipt(
            "ReceiptHandleIsInvalid",
            "The receipt handle has expired."
        ));
        assert!(is_stale_receipt(
            "InvalidParameterValue",
            "Value AQEB for parameter ReceiptHandle is invalid. Reason: The receipt handle has expired."
        ));
        // moto's wording for a handle it no longer knows.
        assert!(is_stale_receipt(
            "ReceiptHandleIsInvalid",
            "The input receipt handle is invalid."
        ));
        assert!(!is_stale_receipt(
            "ReceiptHandleIsInvalid",
            "The input receipt handle \"x\" is not a valid receipt handle."
        ));
        assert!(!is_stale_receipt(
            "ReceiptHandleIsInvalid",
            "The receipt handle \"AQEB\" is not valid for this queue."
        ));
        assert!(!is_stale_receipt("InvalidParameterValue", "bad value"));
    }

    #[test]
    fn durations_round_up_and_cap() {
        assert_eq!(secs_ceil(Duration::ZERO, 900), 0);
        assert_eq!(secs_ceil(Duration::from_millis(1), 900), 1);
        assert_eq!(secs_ceil(Duration::from_millis(1500), 900), 2);
        assert_eq!(secs_ceil(Duration::from_secs(3600), 900), 900);
        assert_eq!(secs_ceil(Duration::MAX, 900), 900);
    }
}
