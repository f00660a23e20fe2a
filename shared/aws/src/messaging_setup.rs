//! Idempotent creation of the messaging resources: queues with their dead-letter queues, the topics
//! with one filtered, raw-delivery subscription per stage queue, and the buckets with the input
//! bucket's notification to the ingest queue. Every function can run again: it converges the resource
//! on the configuration (attributes updated, no duplicate subscription) rather than failing.
//!
//! Order matters: [`create_queues`] first (the other two need the queues' ARNs), then
//! [`create_topics`] and [`create_buckets`].

use crate::AwsClients;
use crate::error::port_error;
use crate::sqs::SqsQueue;
use aws_sdk_s3::types::{
    BucketLocationConstraint, CreateBucketConfiguration, Event, NotificationConfiguration,
    QueueConfiguration,
};
use aws_sdk_sqs::types::QueueAttributeName;
use aws_smithy_runtime_api::client::result::SdkError;
use choreo_domain::config::Queues;
use choreo_domain::event::ATTR_EVENT_TYPE;
use choreo_domain::{Config, EventKind};
use choreo_ports::PortError;
use serde_json::json;
use std::collections::HashMap;

/// Seconds a dead letter is kept: 14 days, SQS's maximum, so an operator has time to look.
pub const DLQ_RETENTION_SECS: u64 = 14 * 24 * 60 * 60;
/// The queues' default long-polling wait, SQS's maximum.
pub const RECEIVE_WAIT_SECS: u64 = 20;
/// The id of the input bucket's notification to the ingest queue, so a re-run replaces ours only.
pub const NOTIFICATION_ID: &str = "choreo-ingest";

/// The SNS filter policy accepting `kinds` on the `event_type` message attribute.
pub fn filter_policy(kinds: &[EventKind]) -> String {
    let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
    json!({ ATTR_EVENT_TYPE: names }).to_string()
}

/// The parts of an ARN: `arn:partition:service:region:account:resource`.
struct Arn<'a> {
    partition: &'a str,
    region: &'a str,
    account: &'a str,
}

fn parse_arn(arn: &str) -> Result<Arn<'_>, PortError> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    match parts.as_slice() {
        ["arn", partition, _, region, account, _] => Ok(Arn {
            partition,
            region,
            account,
        }),
        _ => Err(PortError::permanent(
            "parse_arn",
            arn,
            "not an ARN of six parts",
        )),
    }
}

/// The queue policy letting the events topic and the input bucket send to the queue `queue_arn`, and
/// nothing else: each grant is conditioned on its source (`aws:SourceArn`, and `aws:SourceAccount` for
/// S3, whose bucket ARNs name no account), so no other topic or bucket can write to our queues.
pub fn queue_policy(queue_arn: &str, topic_arn: &str, bucket: &str) -> Result<String, PortError> {
    let arn = parse_arn(queue_arn)?;
    Ok(json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ChoreoEventsTopic",
                "Effect": "Allow",
                "Principal": {"Service": "sns.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
            },
            {
                "Sid": "ChoreoInputBucket",
                "Effect": "Allow",
                "Principal": {"Service": "s3.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {
                    "ArnLike": {"aws:SourceArn": format!("arn:{}:s3:::{bucket}", arn.partition)},
                    "StringEquals": {"aws:SourceAccount": arn.account},
                },
            },
        ],
    })
    .to_string())
}

/// Creates the queue `name` with `attributes`, or, if it exists with other attributes, sets them
/// (`CreateQueue` refuses an existing name with different attributes). Returns the queue's URL.
pub async fn ensure_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    attributes: HashMap<QueueAttributeName, String>,
) -> Result<String, PortError> {
    match sqs
        .create_queue()
        .queue_name(name)
        .set_attributes(Some(attributes.clone()))
        .send()
        .await
    {
        Ok(out) => out
            .queue_url
            .ok_or_else(|| PortError::permanent("create_queue", name, "no QueueUrl in the answer")),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_queue_name_exists()) =>
        {
            let url = SqsQueue::new(sqs.clone(), name).url().await?;
            sqs.set_queue_attributes()
                .queue_url(&url)
                .set_attributes(Some(attributes))
                .send()
                .await
                .map_err(|e| port_error("set_queue_attributes", name, e))?;
            tracing::debug!(queue = name, "queue existed: attributes updated");
            Ok(url)
        }
        Err(e) => Err(port_error("create_queue", name, e)),
    }
}

/// The ARN of the queue called `name`.
pub async fn queue_arn(sqs: &aws_sdk_sqs::Client, name: &str) -> Result<String, PortError> {
    let url = SqsQueue::new(sqs.clone(), name).url().await?;
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| port_error("get_queue_attributes", name, e))?;
    out.attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .ok_or_else(|| PortError::permanent("get_queue_attributes", name, "no QueueArn"))
}

/// Every queue the configuration runs ([`Config::running_queues`]) and its dead-letter queue
/// ([`Queues::dlq_of`]).
///
/// Dead-letter queues keep messages [`DLQ_RETENTION_SECS`]. Work queues get the redrive policy
/// (`maxReceiveCount` = `queues.max_receive_count`), `queues.visibility_timeout_secs`, long polling
/// of [`RECEIVE_WAIT_SECS`], and [`queue_policy`]. The events topic's ARN in the policy is derived
/// from the queue's ARN (same partition, region and account), so topics may be created afterwards.
pub async fn create_queues(clients: &AwsClients, config: &Config) -> Result<(), PortError> {
    let sqs = &clients.sqs;
    // With extracts, their queue too (the extractor's, which EventBridge Scheduler sends ticks to).
    for name in config.running_queues() {
        let dlq = Queues::dlq_of(name);
        let dlq_attributes = HashMap::from([(
            QueueAttributeName::MessageRetentionPeriod,
            DLQ_RETENTION_SECS.to_string(),
        )]);
        ensure_queue(sqs, &dlq, dlq_attributes).await?;
        let dlq_arn = queue_arn(sqs, &dlq).await?;
        let (prefix, _) = dlq_arn.rsplit_once(':').unwrap_or((&dlq_arn, ""));
        let own_arn = format!("{prefix}:{name}");
        let a = parse_arn(&dlq_arn)?;
        let topic_arn = format!(
            "arn:{}:sns:{}:{}:{}",
            a.partition, a.region, a.account, config.topics.events
        );
        let redrive = json!({
            "deadLetterTargetArn": dlq_arn,
            "maxReceiveCount": config.queues.max_receive_count,
        });
        let attributes = HashMap::from([
            (QueueAttributeName::RedrivePolicy, redrive.to_string()),
            (
                QueueAttributeName::VisibilityTimeout,
                config.queues.visibility_timeout_secs.to_string(),
            ),
            (
                QueueAttributeName::ReceiveMessageWaitTimeSeconds,
                RECEIVE_WAIT_SECS.to_string(),
            ),
            (
                QueueAttributeName::Policy,
                queue_policy(&own_arn, &topic_arn, &config.buckets.input)?,
            ),
        ]);
        ensure_queue(sqs, name, attributes).await?;
        choreo_telemetry::events::emit(crate::events::QueueReady {
            queue: name,
            dlq: &dlq,
        });
    }
    Ok(())
}

/// Creates the topic `name` (`CreateTopic` is idempotent) and returns its ARN.
pub async fn ensure_topic(sns: &aws_sdk_sns::Client, name: &str) -> Result<String, PortError> {
    let out = sns
        .create_topic()
        .name(name)
        .send()
        .await
        .map_err(|e| port_error("create_topic", name, e))?;
    out.topic_arn
        .ok_or_else(|| PortError::permanent("create_topic", name, "no TopicArn in the answer"))
}

/// Subscribes the queue `queue_arn` to `topic_arn` with raw message delivery and `filter_policy` on
/// message attributes, or, if the queue is subscribed already, sets those attributes on the existing
/// subscription (AWS refuses `Subscribe` with different attributes; moto silently overwrites them) and
/// removes duplicates left by earlier runs. Returns the subscription's ARN.
pub async fn ensure_subscription(
    sns: &aws_sdk_sns::Client,
    topic_arn: &str,
    queue_arn: &str,
    filter_policy: &str,
) -> Result<String, PortError> {
    let mut existing = Vec::new();
    let mut pages = sns
        .list_subscriptions_by_topic()
        .topic_arn(topic_arn)
        .into_paginator()
        .items()
        .send();
    while let Some(sub) = pages.next().await {
        let sub = sub.map_err(|e| port_error("list_subscriptions", topic_arn, e))?;
        if sub.protocol() == Some("sqs")
            && sub.endpoint() == Some(queue_arn)
            && let Some(arn) = sub.subscription_arn()
            // A subscription awaiting confirmation has no ARN yet, and no attributes to set.
            && arn.starts_with("arn:")
        {
            existing.push(arn.to_string());
        }
    }
    let attributes = [
        ("RawMessageDelivery", "true"),
        ("FilterPolicyScope", "MessageAttributes"),
        ("FilterPolicy", filter_policy),
    ];
    let Some((keep, duplicates)) = existing.split_first() else {
        let mut req = sns
            .subscribe()
            .topic_arn(topic_arn)
            .protocol("sqs")
            .endpoint(queue_arn)
            .return_subscription_arn(true);
        for (k, v) in attributes {
            req = req.attributes(k, v);
        }
        let out = req
            .send()
            .await
            .map_err(|e| port_error("subscribe", queue_arn, e))?;
        return out
            .subscription_arn
            .ok_or_else(|| PortError::permanent("subscribe", queue_arn, "no SubscriptionArn"));
    };
    for (k, v) in attributes {
        sns.set_subscription_attributes()
            .subscription_arn(keep)
            .attribute_name(k)
            .attribute_value(v)
            .send()
            .await
            .map_err(|e| port_error("set_subscription_attributes", keep, e))?;
    }
    for dup in duplicates {
        choreo_telemetry::events::emit(crate::events::DuplicateSubscriptionRemoved {
            subscription: dup,
            queue: queue_arn,
        });
        sns.unsubscribe()
            .subscription_arn(dup)
            .send()
            .await
            .map_err(|e| port_error("unsubscribe", dup, e))?;
    }
    Ok(keep.clone())
}

/// The events and alerts topics, the alert e-mail's subscription if one is configured, and the events
/// topic's subscriptions ([`Config::subscriptions`]), each with raw delivery, so a stage receives the
/// body as published with its message attributes. Needs the queues ([`create_queues`]).
pub async fn create_topics(clients: &AwsClients, config: &Config) -> Result<(), PortError> {
    let events = ensure_topic(&clients.sns, &config.topics.events).await?;
    let alerts = ensure_topic(&clients.sns, &config.topics.alerts).await?;
    if let Some(email) = &config.operations.alerts.email {
        // SNS answers a repeated Subscribe with the subscription it has: re-running is harmless.
        // The address receives a confirmation e-mail first, and alerts once it is confirmed.
        clients
            .sns
            .subscribe()
            .topic_arn(&alerts)
            .protocol("email")
            .endpoint(email)
            .send()
            .await
            .map_err(|e| port_error("subscribe", &alerts, e))?;
        choreo_telemetry::events::emit(crate::events::AlertEmailSubscribed {
            email,
            topic: &config.topics.alerts,
        });
    }
    for (queue, kinds) in config.subscriptions() {
        let arn = queue_arn(&clients.sqs, &queue).await?;
        ensure_subscription(&clients.sns, &events, &arn, &filter_policy(&kinds)).await?;
        choreo_telemetry::events::emit(crate::events::SubscriptionReady {
            queue: &queue,
            topic: &config.topics.events,
        });
    }
    Ok(())
}

/// Creates the bucket `name` in the client's region. One that exists and is ours is fine (S3 says
/// `BucketAlreadyOwnedByYou`, or, in us-east-1, simply succeeds); one owned by another account is a
/// permanent error.
pub async fn ensure_bucket(s3: &aws_sdk_s3::Client, name: &str) -> Result<(), PortError> {
    let mut req = s3.create_bucket().bucket(name);
    // us-east-1 refuses a location constraint naming itself; every other region requires one.
    if let Some(region) = s3.config().region().map(|r| r.as_ref().to_string())
        && region != "us-east-1"
    {
        req = req.create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(region.as_str()))
                .build(),
        );
    }
    match req.send().await {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_bucket_already_owned_by_you()) =>
        {
            Ok(())
        }
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_bucket_already_exists()) =>
        {
            Err(PortError::permanent(
                "create_bucket",
                name,
                "the bucket name is taken by another account; choose another in [buckets]",
            ))
        }
        Err(e) => Err(port_error("create_bucket", name, e)),
    }
}

/// Makes the input bucket send `s3:ObjectCreated:*` to the queue `queue_arn`, keeping the bucket's
/// other notifications (an operator's EventBridge or Lambda wiring) and replacing only ours (by
/// [`NOTIFICATION_ID`] or queue). Nothing is written when ours is in place already, so a re-run does
/// not make S3 send another `s3:TestEvent`.
pub async fn ensure_notification(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    queue_arn: &str,
) -> Result<(), PortError> {
    let current = match s3
        .get_bucket_notification_configuration()
        .bucket(bucket)
        .send()
        .await
    {
        Ok(current) => current,
        // moto 5.2 answers a bucket without notifications with `<GetBucketNotificationResponse/>`
        // where S3 sends `<NotificationConfiguration/>`, and the SDK refuses the root element. A
        // success whose body configures nothing is that empty answer.
        Err(SdkError::ServiceError(se))
            if se.raw().status().is_success()
                && se
                    .raw()
                    .body()
                    .bytes()
                    .is_some_and(|b| !String::from_utf8_lossy(b).contains("Configuration")) =>
        {
            aws_sdk_s3::operation::get_bucket_notification_configuration::GetBucketNotificationConfigurationOutput::builder().build()
        }
        Err(e) => return Err(port_error("get_bucket_notification", bucket, e)),
    };
    let ours =
        |q: &QueueConfiguration| q.id() == Some(NOTIFICATION_ID) || q.queue_arn() == queue_arn;
    let in_place = current.queue_configurations().iter().any(|q| {
        ours(q)
            && q.queue_arn() == queue_arn
            && q.events() == [Event::S3ObjectCreated]
            && q.filter().is_none()
    });
    if in_place {
        return Ok(());
    }
    let mut queues: Vec<QueueConfiguration> = current
        .queue_configurations()
        .iter()
        .filter(|q| !ours(q))
        .cloned()
        .collect();
    queues.push(
        QueueConfiguration::builder()
            .id(NOTIFICATION_ID)
            .queue_arn(queue_arn)
            .events(Event::S3ObjectCreated)
            .build()
            .map_err(|e| PortError::permanent("put_bucket_notification", bucket, e))?,
    );
    let config = NotificationConfiguration::builder()
        .set_queue_configurations(Some(queues))
        .set_topic_configurations(Some(current.topic_configurations().to_vec()))
        .set_lambda_function_configurations(Some(current.lambda_function_configurations().to_vec()))
        .set_event_bridge_configuration(current.event_bridge_configuration().cloned())
        .build();
    s3.put_bucket_notification_configuration()
        .bucket(bucket)
        .notification_configuration(config)
        .send()
        .await
        .map_err(|e| port_error("put_bucket_notification", bucket, e))?;
    Ok(())
}

/// The input, failed, curated and work buckets, and the input bucket's object-created notification
/// to the ingest queue (which must exist: run [`create_queues`] first; its policy lets the input
/// bucket send).
pub async fn create_buckets(clients: &AwsClients, config: &Config) -> Result<(), PortError> {
    let b = &config.buckets;
    for bucket in [&b.input, &b.failed, &b.curated, &b.work] {
        ensure_bucket(&clients.s3, bucket).await?;
    }
    // The input bucket keeps every upload as a version, so a file in flight keeps its bytes when
    // its key is uploaded again (see `Pin`).
    clients
        .s3
        .put_bucket_versioning()
        .bucket(&b.input)
        .versioning_configuration(
            aws_sdk_s3::types::VersioningConfiguration::builder()
                .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .map_err(|e| crate::error::port_error("put_bucket_versioning", &b.input, e))?;
    let ingest = queue_arn(&clients.sqs, &config.queues.ingest).await?;
    ensure_notification(&clients.s3, &b.input, &ingest).await?;
    choreo_telemetry::events::emit(crate::events::BucketsReady {
        bucket: &b.input,
        queue: &config.queues.ingest,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::moto::Moto;
    use crate::s3::S3Store;
    use crate::sns::SnsBus;
    use crate::sqs::SqsQueue;
    use choreo_domain::event::ATTR_TRACEPARENT;
    use choreo_ports::{EventBus, ObjectStore, OutgoingMessage, Queue, ReceivedMessage};
    use std::collections::BTreeMap;
    use std::time::Duration;

    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    async fn setup() -> (Moto, AwsClients, Config) {
        let moto = Moto::start();
        let clients = AwsClients::emulator(&moto.endpoint).await;
        let config = Config::default();
        create_queues(&clients, &config).await.unwrap();
        (moto, clients, config)
    }

    async fn drain(clients: &AwsClients, queue: &str, wait: Duration) -> Vec<ReceivedMessage> {
        let q = SqsQueue::new(clients.sqs.clone(), queue);
        let mut out = Vec::new();
        loop {
            let got = q.receive(10, wait, Duration::from_secs(60)).await.unwrap();
            if got.is_empty() {
                return out;
            }
            out.extend(got);
        }
    }

    fn event(kind: EventKind, body: &str) -> OutgoingMessage {
        OutgoingMessage {
            body: body.to_string(),
            attributes: BTreeMap::from([
                (ATTR_EVENT_TYPE.to_string(), kind.as_str().to_string()),
                (ATTR_TRACEPARENT.to_string(), TRACEPARENT.to_string()),
            ]),
        }
    }

    #[test]
    fn messaging_policies_and_filters() {
        assert_eq!(
            filter_policy(&[EventKind::FileRegistered]),
            r#"{"event_type":["FileRegistered"]}"#
        );
        let p: serde_json::Value = serde_json::from_str(
            &queue_policy(
                "arn:aws:sqs:eu-west-1:111122223333:q",
                "arn:aws:sns:eu-west-1:111122223333:t",
                "in-b",
            )
            .unwrap(),
        )
        .unwrap();
        let s3 = &p["Statement"][1]["Condition"];
        assert_eq!(s3["ArnLike"]["aws:SourceArn"], "arn:aws:s3:::in-b");
        assert_eq!(s3["StringEquals"]["aws:SourceAccount"], "111122223333");
        assert!(queue_policy("q", "t", "b").is_err());
    }

    #[tokio::test]
    async fn messaging_sns_routes_raw_events_by_type() {
        let (_moto, clients, config) = setup().await;
        create_topics(&clients, &config).await.unwrap();
        // A re-run converges instead of duplicating.
        create_topics(&clients, &config).await.unwrap();
        let events = SnsBus::new(clients.sns.clone(), &config.topics.events);
        let arn = events.topic_arn().await.unwrap();
        let subs = clients
            .sns
            .list_subscriptions_by_topic()
            .topic_arn(&arn)
            .send()
            .await
            .unwrap();
        assert_eq!(subs.subscriptions().len(), 5, "{subs:?}");

        let body = r#"{"version":1,"event":{"type":"FileRegistered"}}"#;
        clients.calls.reset();
        events
            .publish(event(EventKind::FileRegistered, body))
            .await
            .unwrap();
        let q = &config.queues;
        // The ARN was cached by `topic_arn` above: publishing made one call, and never CreateTopic.
        let calls: Vec<String> = clients
            .calls
            .snapshot()
            .into_keys()
            .map(|(_, op)| op)
            .collect();
        assert_eq!(calls, ["PublishBatch"]);
        for queue in [&q.validate, &q.audit] {
            let got = drain(&clients, queue, Duration::from_secs(1)).await;
            assert_eq!(got.len(), 1, "{queue}: {got:?}");
            assert_eq!(got[0].body, body, "{queue}: raw, not wrapped");
            assert_eq!(got[0].attributes[ATTR_EVENT_TYPE], "FileRegistered");
            assert_eq!(got[0].attributes[ATTR_TRACEPARENT], TRACEPARENT);
        }
        for queue in [&q.ingest, &q.quarantine, &q.crawl, &q.transform] {
            let got = drain(&clients, queue, Duration::ZERO).await;
            assert!(got.is_empty(), "{queue} got {got:?}");
        }

        // Every published kind reaches its stage and the auditor; published together, they share
        // `PublishBatch` calls, each told its own outcome.
        clients.calls.reset();
        let mut published = tokio::task::JoinSet::new();
        for kind in EventKind::PUBLISHED {
            let events = events.clone();
            published.spawn(async move { events.publish(event(kind, "{}")).await });
        }
        for outcome in published.join_all().await {
            outcome.unwrap();
        }
        let batches = clients.calls.snapshot()[&("SNS".to_string(), "PublishBatch".to_string())];
        assert!(
            (batches as usize) < EventKind::PUBLISHED.len(),
            "{batches} calls for {} events",
            EventKind::PUBLISHED.len()
        );
        let kinds = |got: Vec<ReceivedMessage>| {
            let mut k: Vec<String> = got
                .into_iter()
                .map(|m| m.attributes[ATTR_EVENT_TYPE].clone())
                .collect();
            k.sort();
            k
        };
        let wait = Duration::from_secs(1);
        assert_eq!(
            kinds(drain(&clients, &q.quarantine, wait).await),
            ["FileRejected"]
        );
        assert_eq!(
            kinds(drain(&clients, &q.crawl, wait).await),
            ["FileValidated"]
        );
        assert_eq!(
            kinds(drain(&clients, &q.transform, wait).await),
            ["BatchCataloged"]
        );
        let mut all: Vec<String> = EventKind::PUBLISHED
            .iter()
            .map(|k| k.as_str().into())
            .collect();
        all.sort();
        assert_eq!(kinds(drain(&clients, &q.audit, wait).await), all);

        // A bus given the ARN publishes without looking the topic up.
        clients.calls.reset();
        let known = SnsBus::with_arn(clients.sns.clone(), &arn);
        known
            .publish(event(EventKind::FileRejected, "{}"))
            .await
            .unwrap();
        let calls: Vec<String> = clients
            .calls
            .snapshot()
            .into_keys()
            .map(|(_, op)| op)
            .collect();
        assert_eq!(calls, ["PublishBatch"]);
        assert_eq!(
            kinds(drain(&clients, &q.quarantine, wait).await),
            ["FileRejected"]
        );

        // Unroutable messages are refused; a topic that does not exist is NotFound.
        let err = events
            .publish(OutgoingMessage {
                body: "{}".into(),
                attributes: BTreeMap::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.kind, choreo_ports::PortErrorKind::Permanent);
        let err = SnsBus::new(clients.sns.clone(), "choreo-events-nope")
            .publish(event(EventKind::FileRegistered, "{}"))
            .await
            .unwrap_err();
        assert_eq!(err.kind, choreo_ports::PortErrorKind::NotFound, "{err}");
    }

    #[tokio::test]
    async fn messaging_alerts_reach_the_alerts_topic_and_its_e_mail() {
        let (_moto, clients, mut config) = setup().await;
        config.operations.alerts.email = Some("oncall@example.com".into());
        create_topics(&clients, &config).await.unwrap();
        create_topics(&clients, &config).await.unwrap();
        let alerts = crate::sns::find_topic_arn(&clients.sns, &config.topics.alerts)
            .await
            .unwrap();
        let subs = clients
            .sns
            .list_subscriptions_by_topic()
            .topic_arn(&alerts)
            .send()
            .await
            .unwrap();
        let emails: Vec<_> = subs
            .subscriptions()
            .iter()
            .filter(|s| s.protocol() == Some("email"))
            .map(|s| s.endpoint().unwrap_or_default())
            .collect();
        assert_eq!(emails, ["oncall@example.com"], "{subs:?}");

        // What the e-mail would carry, seen through a queue subscribed to the topic.
        let watcher = &config.queues.audit;
        let queue_arn = queue_arn(&clients.sqs, watcher).await.unwrap();
        clients
            .sns
            .subscribe()
            .topic_arn(&alerts)
            .protocol("sqs")
            .endpoint(&queue_arn)
            .send()
            .await
            .unwrap();
        let notifier = crate::sns::SnsNotifier::new(clients.sns.clone(), &config.topics.alerts);
        let message = choreo_domain::alert::Message {
            subject: "[choreo] FileRejected in validator: orders (a.csv)".into(),
            body: "dataset:  orders\nkey:      a.csv\n".into(),
        };
        choreo_ports::Notifier::notify(&notifier, &message)
            .await
            .unwrap();
        let got = drain(&clients, watcher, Duration::from_secs(1)).await;
        assert_eq!(got.len(), 1, "{got:?}");
        let envelope: serde_json::Value = serde_json::from_str(&got[0].body).unwrap();
        assert_eq!(envelope["Subject"], message.subject.as_str());
        assert_eq!(envelope["Message"], message.body.as_str());
    }

    #[tokio::test]
    async fn messaging_queues_converge_on_the_configuration() {
        let (_moto, clients, mut config) = setup().await;
        config.queues.visibility_timeout_secs = 120;
        config.queues.max_receive_count = 7;
        create_queues(&clients, &config).await.unwrap();
        let url = SqsQueue::new(clients.sqs.clone(), &config.queues.audit)
            .url()
            .await
            .unwrap();
        let attrs = clients
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap();
        assert_eq!(attrs[&QueueAttributeName::VisibilityTimeout], "120");
        assert_eq!(
            attrs[&QueueAttributeName::ReceiveMessageWaitTimeSeconds],
            "20"
        );
        let redrive: serde_json::Value =
            serde_json::from_str(&attrs[&QueueAttributeName::RedrivePolicy]).unwrap();
        assert_eq!(redrive["maxReceiveCount"], 7);
        let dlq_arn = queue_arn(&clients.sqs, &Queues::dlq_of(&config.queues.audit))
            .await
            .unwrap();
        assert_eq!(redrive["deadLetterTargetArn"], dlq_arn);
        let policy: serde_json::Value =
            serde_json::from_str(&attrs[&QueueAttributeName::Policy]).unwrap();
        assert_eq!(
            policy["Statement"][0]["Condition"]["ArnEquals"]["aws:SourceArn"],
            "arn:aws:sns:us-east-1:123456789012:choreo-events"
        );
        let dlq_url = SqsQueue::new(clients.sqs.clone(), &Queues::dlq_of(&config.queues.audit))
            .url()
            .await
            .unwrap();
        let dlq_attrs = clients
            .sqs
            .get_queue_attributes()
            .queue_url(dlq_url)
            .attribute_names(QueueAttributeName::MessageRetentionPeriod)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap();
        assert_eq!(
            dlq_attrs[&QueueAttributeName::MessageRetentionPeriod],
            "1209600"
        );
    }

    #[tokio::test]
    async fn messaging_s3_notifications_reach_the_ingest_queue() {
        let (_moto, clients, config) = setup().await;
        create_buckets(&clients, &config).await.unwrap();
        // A re-run: buckets we own are fine, and the notification is not duplicated.
        create_buckets(&clients, &config).await.unwrap();
        let n = clients
            .s3
            .get_bucket_notification_configuration()
            .bucket(&config.buckets.input)
            .send()
            .await
            .unwrap();
        assert_eq!(n.queue_configurations().len(), 1, "{n:?}");

        let store = S3Store::new(clients.s3.clone());
        let key = "daily/a b+c/ü.csv";
        store
            .put(&config.buckets.input, key, b"id\n1\n".to_vec())
            .await
            .unwrap();
        let got = drain(&clients, &config.queues.ingest, Duration::from_secs(1)).await;
        let bodies: Vec<serde_json::Value> = got
            .iter()
            .map(|m| serde_json::from_str(&m.body).unwrap())
            .collect();
        // Like S3, moto sends one test event when the notification is configured, and the re-run,
        // which found ours in place, sent none. moto keeps the order: the test event comes first.
        let (tests, records): (Vec<_>, Vec<_>) =
            bodies.iter().partition(|b| b.get("Event").is_some());
        assert_eq!(tests.len(), 1, "{bodies:?}");
        assert!(bodies[0].get("Event").is_some(), "{bodies:?}");
        for t in &tests {
            assert_eq!(t["Event"], "s3:TestEvent");
            assert_eq!(t["Bucket"], config.buckets.input.as_str());
        }
        assert_eq!(records.len(), 1, "{bodies:?}");
        let record = &records[0]["Records"][0];
        assert!(
            record["eventName"]
                .as_str()
                .unwrap()
                .starts_with("ObjectCreated:"),
            "{record}"
        );
        assert_eq!(
            record["s3"]["bucket"]["name"],
            config.buckets.input.as_str()
        );
        assert_eq!(record["s3"]["object"]["size"], 5);
        assert!(record["s3"]["object"]["eTag"].is_string(), "{record}");
        // Form-URL-encoded as S3 does: a space is '+', '+' is %2B, non-ASCII is UTF-8 in %XX. AWS
        // keeps '/' as is; moto encodes it as %2F. Both decode to the key.
        let raw = record["s3"]["object"]["key"].as_str().unwrap();
        assert!(
            raw == "daily/a+b%2Bc/%C3%BC.csv" || raw == "daily%2Fa+b%2Bc%2F%C3%BC.csv",
            "{raw}"
        );
        let spaced = raw.replace('+', " ");
        let decoded = percent_encoding::percent_decode_str(&spaced)
            .decode_utf8()
            .unwrap();
        assert_eq!(decoded, key);
    }
}
