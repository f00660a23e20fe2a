//! [`EventBus`] on an SNS topic whose SQS subscriptions filter on the `event_type` attribute and use
//! raw message delivery (set up by [`crate::messaging_setup::create_topics`]), so each stage's queue
//! receives the body as published, with its message attributes, not wrapped in an SNS envelope.

use crate::error::port_error;
use crate::gather::{self, Gathering};
use async_trait::async_trait;
use aws_sdk_sns::types::{MessageAttributeValue, PublishBatchRequestEntry};
use choreo_domain::alert::Message;
use choreo_domain::event::ATTR_EVENT_TYPE;
use choreo_ports::{EventBus, Notifier, OutgoingMessage, PortError};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OnceCell, mpsc, oneshot};

/// How publishes gather into `PublishBatch` calls: at most the ten messages and 256 KB it takes;
/// a batch that is not full waits 20 ms for more (handlers finishing close together, a wave of
/// files through one stage, then share a call); four calls in flight at once per bus.
const BATCHES: Gathering = Gathering {
    window: Duration::from_millis(20),
    max_items: 10,
    max_bytes: 256 * 1024,
    in_flight: 4,
};

/// The events topic, by name.
#[derive(Debug, Clone)]
pub struct SnsBus {
    client: aws_sdk_sns::Client,
    topic: String,
    /// Found on first use; a topic's ARN never changes while the topic exists.
    arn: Arc<OnceCell<String>>,
    /// The publishes waiting for a batch, drained by a task started on the first publish.
    queue: Arc<std::sync::OnceLock<mpsc::UnboundedSender<Waiting>>>,
}

/// A publish waiting for its batch, and where its outcome goes.
struct Waiting {
    message: OutgoingMessage,
    done: oneshot::Sender<Result<(), PortError>>,
}

impl SnsBus {
    /// The topic called `topic` (a name, not an ARN). No call is made until the first publish.
    pub fn new(client: aws_sdk_sns::Client, topic: &str) -> Self {
        SnsBus {
            client,
            topic: topic.to_string(),
            arn: Default::default(),
            queue: Default::default(),
        }
    }

    /// The topic whose ARN is known (from deployment outputs, say): no lookup, so the task role
    /// needs no `sns:ListTopics`.
    pub fn with_arn(client: aws_sdk_sns::Client, topic_arn: &str) -> Self {
        let topic = topic_arn
            .rsplit(':')
            .next()
            .unwrap_or(topic_arn)
            .to_string();
        SnsBus {
            client,
            topic,
            arn: Arc::new(OnceCell::new_with(Some(topic_arn.to_string()))),
            queue: Default::default(),
        }
    }

    /// The topic's ARN, found once with `ListTopics` (paginated) by the name after the ARN's last
    /// `:`. Not `CreateTopic`, though it is idempotent and returns the ARN: a service's task role
    /// should be able to publish without the right to create topics. A missing topic is `NotFound`.
    pub async fn topic_arn(&self) -> Result<String, PortError> {
        self.arn
            .get_or_try_init(|| find_topic_arn(&self.client, &self.topic))
            .await
            .cloned()
    }
}

/// The ARN of the topic called `name`, by listing every topic of the account and region.
pub(crate) async fn find_topic_arn(
    client: &aws_sdk_sns::Client,
    name: &str,
) -> Result<String, PortError> {
    let mut pages = client.list_topics().into_paginator().items().send();
    while let Some(topic) = pages.next().await {
        let topic = topic.map_err(|e| port_error("list_topics", name, e))?;
        if let Some(arn) = topic.topic_arn()
            && arn.rsplit(':').next() == Some(name)
        {
            return Ok(arn.to_string());
        }
    }
    Err(PortError::not_found("find_topic", name))
}

#[async_trait]
impl EventBus for SnsBus {
    /// As the port says. A message without an `event_type` attribute is refused (no subscription
    /// could route it), as on the local backend. `Ok` means SNS accepted the message; SNS then
    /// delivers to the subscribed queues, retrying SQS deliveries by itself.
    ///
    /// Publishes leave in `PublishBatch` calls, which SNS bills as one request per 64 KB: each
    /// publish joins the next batch and waits for that batch's answer about itself. A batch waits
    /// at most [`BATCHES`]' window for company, and while its calls in flight are on their way
    /// the next ones gather (`gather.rs`).
    async fn publish(&self, message: OutgoingMessage) -> Result<(), PortError> {
        if !message.attributes.contains_key(ATTR_EVENT_TYPE) {
            return Err(PortError::permanent(
                "publish",
                &self.topic,
                format!("message has no {ATTR_EVENT_TYPE:?} attribute to route on"),
            ));
        }
        message.check("publish", &self.topic)?;
        let (done, outcome) = oneshot::channel();
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            let batches = Batches {
                client: self.client.clone(),
                topic: self.topic.clone(),
                arn: self.arn.clone(),
            };
            tokio::spawn(batches.drain(rx));
            tx
        });
        let gone = || PortError::transient("publish", &self.topic, "the publishing task ended");
        queue.send(Waiting { message, done }).map_err(|_| gone())?;
        outcome.await.map_err(|_| gone())?
    }
}

/// What the publishing task needs of the bus (not its queue: the task ends when the last bus
/// holding the queue is dropped).
struct Batches {
    client: aws_sdk_sns::Client,
    topic: String,
    arn: Arc<OnceCell<String>>,
}

impl Batches {
    async fn drain(self, rx: mpsc::UnboundedReceiver<Waiting>) {
        let this = Arc::new(self);
        gather::drain(
            rx,
            BATCHES,
            |w| w.message.size(),
            |batch| {
                let this = this.clone();
                async move { this.send(batch).await }
            },
        )
        .await;
    }

    /// One `PublishBatch`, each publish told its own outcome.
    async fn send(&self, batch: Vec<Waiting>) {
        let arn = match self
            .arn
            .get_or_try_init(|| find_topic_arn(&self.client, &self.topic))
            .await
        {
            Ok(arn) => arn.clone(),
            Err(e) => {
                for w in batch {
                    let _ = w.done.send(Err(e.clone()));
                }
                return;
            }
        };
        let mut entries = Vec::with_capacity(batch.len());
        let mut waiting = HashMap::with_capacity(batch.len());
        for (i, w) in batch.into_iter().enumerate() {
            match entry(&i.to_string(), &w.message, &self.topic) {
                Ok(e) => {
                    entries.push(e);
                    waiting.insert(i.to_string(), w.done);
                }
                Err(e) => {
                    let _ = w.done.send(Err(e));
                }
            }
        }
        if entries.is_empty() {
            return;
        }
        let sent = self
            .client
            .publish_batch()
            .topic_arn(arn)
            .set_publish_batch_request_entries(Some(entries))
            .send()
            .await;
        match sent {
            Ok(out) => {
                for ok in out.successful() {
                    if let Some(done) = ok.id().and_then(|id| waiting.remove(id)) {
                        let _ = done.send(Ok(()));
                    }
                }
                for failed in out.failed() {
                    if let Some(done) = waiting.remove(failed.id()) {
                        let what = format!(
                            "{}: {}",
                            failed.code(),
                            failed.message().unwrap_or("no message")
                        );
                        // The sender's fault will not pass next time; SNS's may.
                        let e = if failed.sender_fault() {
                            PortError::permanent("publish", &self.topic, what)
                        } else {
                            PortError::transient("publish", &self.topic, what)
                        };
                        let _ = done.send(Err(e));
                    }
                }
                // An entry SNS answered nothing about was not published.
                for (_, done) in waiting {
                    let _ = done.send(Err(PortError::transient(
                        "publish",
                        &self.topic,
                        "no answer for this message in the batch",
                    )));
                }
            }
            Err(e) => {
                let e = port_error("publish", &self.topic, e);
                for (_, done) in waiting {
                    let _ = done.send(Err(e.clone()));
                }
            }
        }
    }
}

/// A batch entry for `message`. X-Ray's header cannot ride a batch's request, so it goes as the
/// `AWSTraceHeader` message attribute, which the consumers read when `traceparent` is missing.
fn entry(
    id: &str,
    message: &OutgoingMessage,
    topic: &str,
) -> Result<PublishBatchRequestEntry, PortError> {
    let mut attributes = HashMap::with_capacity(message.attributes.len());
    for (k, v) in &message.attributes {
        let value = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(v)
            .build()
            .map_err(|e| PortError::permanent("publish", topic, e))?;
        attributes.insert(k.clone(), value);
    }
    PublishBatchRequestEntry::builder()
        .id(id)
        .message(&message.body)
        .set_message_attributes(Some(attributes))
        .build()
        .map_err(|e| PortError::permanent("publish", topic, e))
}

/// Alerts on the alerts topic: its subscriptions (the e-mail address `choreo bootstrap` subscribes,
/// a chat hook, a pager) deliver them.
#[derive(Debug, Clone)]
pub struct SnsNotifier {
    topic: SnsBus,
}

impl SnsNotifier {
    pub fn new(client: aws_sdk_sns::Client, topic: &str) -> Self {
        SnsNotifier {
            topic: SnsBus::new(client, topic),
        }
    }
}

#[async_trait]
impl Notifier for SnsNotifier {
    /// One `Publish` with the subject (SNS takes at most 100 characters; the domain cuts it) and the
    /// body as the e-mail's text.
    async fn notify(&self, message: &Message) -> Result<(), PortError> {
        let arn = self.topic.topic_arn().await?;
        self.topic
            .client
            .publish()
            .topic_arn(&arn)
            .subject(&message.subject)
            .message(&message.body)
            .send()
            .await
            .map_err(|e| port_error("publish", &arn, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AwsClients;
    use crate::messaging_setup::{create_queues, create_topics};
    use crate::moto::Moto;
    use crate::sqs::SqsQueue;
    use choreo_domain::config::Config;

    /// The port's contract (`choreo_ports::testkit`), on SNS with the configuration's filtered SQS
    /// subscriptions (moto).
    #[tokio::test]
    async fn the_event_bus_keeps_the_ports_contract() {
        let moto = Moto::start();
        let clients = AwsClients::emulator(&moto.endpoint).await;
        let config = Config::default();
        create_queues(&clients, &config).await.unwrap();
        create_topics(&clients, &config).await.unwrap();
        let subscribers: Vec<_> = config
            .subscriptions()
            .into_iter()
            .map(|(q, kinds)| {
                let queue: Arc<dyn choreo_ports::Queue> =
                    Arc::new(SqsQueue::new(clients.sqs.clone(), &q));
                (
                    queue,
                    kinds.iter().map(|k| k.as_str().to_string()).collect(),
                )
            })
            .collect();
        let bus = Arc::new(SnsBus::new(clients.sns.clone(), &config.topics.events));
        choreo_ports::testkit::event_bus_contract(bus, &subscribers).await;
    }
}
