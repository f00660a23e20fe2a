//! [`EventBus`] on an SNS topic whose SQS subscriptions filter on the `event_type` attribute and use
//! raw message delivery (set up by [`crate::messaging_setup::create_topics`]), so each stage's queue
//! receives the body as published, with its message attributes, not wrapped in an SNS envelope.

use crate::error::port_error;
use async_trait::async_trait;
use aws_sdk_sns::types::MessageAttributeValue;
use choreo_domain::alert::Message;
use choreo_domain::event::{ATTR_AWS_TRACE_HEADER, ATTR_EVENT_TYPE};
use choreo_ports::{EventBus, Notifier, OutgoingMessage, PortError};
use std::sync::Arc;
use tokio::sync::OnceCell;

/// The events topic, by name.
#[derive(Debug, Clone)]
pub struct SnsBus {
    client: aws_sdk_sns::Client,
    topic: String,
    /// Found on first use; a topic's ARN never changes while the topic exists.
    arn: Arc<OnceCell<String>>,
}

impl SnsBus {
    /// The topic called `topic` (a name, not an ARN). No call is made until the first publish.
    pub fn new(client: aws_sdk_sns::Client, topic: &str) -> Self {
        SnsBus {
            client,
            topic: topic.to_string(),
            arn: Default::default(),
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
    async fn publish(&self, message: OutgoingMessage) -> Result<(), PortError> {
        if !message.attributes.contains_key(ATTR_EVENT_TYPE) {
            return Err(PortError::permanent(
                "publish",
                &self.topic,
                format!("message has no {ATTR_EVENT_TYPE:?} attribute to route on"),
            ));
        }
        message.check("publish", &self.topic)?;
        let arn = self.topic_arn().await?;
        let mut message = message;
        // SNS takes X-Ray's header on the request (and, with active tracing, hands it to the
        // subscribed queues as their AWSTraceHeader); `traceparent` goes as an attribute.
        let xray = message.attributes.remove(ATTR_AWS_TRACE_HEADER);
        let mut req = self.client.publish().topic_arn(arn).message(message.body);
        for (k, v) in message.attributes {
            let value = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(v)
                .build()
                .map_err(|e| PortError::permanent("publish", &self.topic, e))?;
            req = req.message_attributes(k, value);
        }
        let req = req.customize().mutate_request(move |r| {
            if let Some(header) = &xray {
                r.headers_mut().insert("X-Amzn-Trace-Id", header.clone());
            }
        });
        req.send()
            .await
            .map_err(|e| port_error("publish", &self.topic, e))?;
        Ok(())
    }
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
