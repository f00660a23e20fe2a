//! The events topic, as SNS with filtered SQS subscriptions.
//!
//! Subscriptions live in the `subscriptions` table — one row per (topic, queue, event type) — so every
//! process sharing the data directory routes the same way, and an operator can read them with
//! `sqlite3`. [`LocalBackend::open`](crate::LocalBackend::open) replaces the topic's rows with the
//! configuration's, the way `bootstrap` declares infrastructure: the configuration is the source of
//! truth, and the last process to open wins. Publishing reads the rows and inserts one copy of the
//! message into every matching queue in one transaction: all queues get it, or none does.

use crate::db::{Db, DbError, now_ms};
use crate::queue::{Wakers, insert_message};
use async_trait::async_trait;
use choreo_domain::event::ATTR_EVENT_TYPE;
use choreo_ports::{EventBus, OutgoingMessage, PortError};
use rusqlite::{Transaction, params};
use std::sync::Arc;

/// Replaces the subscriptions of `topic` with `subs`: `(queue, event types it accepts)`.
pub(crate) fn set_subscriptions(
    tx: &Transaction<'_>,
    topic: &str,
    subs: &[(String, Vec<&'static str>)],
) -> Result<(), DbError> {
    tx.prepare_cached("DELETE FROM subscriptions WHERE topic = ?1")?
        .execute(params![topic])?;
    let mut insert = tx.prepare_cached(
        "INSERT OR IGNORE INTO subscriptions (topic, queue, event_type) VALUES (?1, ?2, ?3)",
    )?;
    for (queue, kinds) in subs {
        for kind in kinds {
            insert.execute(params![topic, queue, kind])?;
        }
    }
    Ok(())
}

/// The topic every stage publishes its events to.
pub struct LocalTopic {
    name: String,
    db: Arc<Db>,
    wakers: Arc<Wakers>,
}

impl LocalTopic {
    pub(crate) fn new(name: &str, db: Arc<Db>, wakers: Arc<Wakers>) -> Self {
        LocalTopic {
            name: name.to_string(),
            db,
            wakers,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `(queue, event_type)` for every subscription of the topic, in queue order.
    pub async fn subscriptions(&self) -> Result<Vec<(String, String)>, PortError> {
        let topic = self.name.clone();
        self.db
            .call("subscriptions", &self.name, move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT queue, event_type FROM subscriptions WHERE topic = ?1
                     ORDER BY queue, event_type",
                )?;
                let rows = stmt
                    .query_map(params![topic], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })
            .await
    }
}

#[async_trait]
impl EventBus for LocalTopic {
    async fn publish(&self, message: OutgoingMessage) -> Result<(), PortError> {
        let Some(event_type) = message.attributes.get(ATTR_EVENT_TYPE).cloned() else {
            return Err(PortError::permanent(
                "publish",
                &self.name,
                format!("message has no {ATTR_EVENT_TYPE:?} attribute to route on"),
            ));
        };
        message.check("publish", &self.name)?;
        let topic = self.name.clone();
        let queues = self
            .db
            .write("publish", &self.name, move |tx| {
                let queues = {
                    let mut stmt = tx.prepare_cached(
                        "SELECT queue FROM subscriptions WHERE topic = ?1 AND event_type = ?2",
                    )?;
                    stmt.query_map(params![topic, event_type], |r| r.get::<_, String>(0))?
                        .collect::<Result<Vec<_>, _>>()?
                };
                let now = now_ms();
                for queue in &queues {
                    insert_message(tx, queue, &message, now, now)?;
                }
                Ok(queues)
            })
            .await?;
        for queue in &queues {
            self.wakers.wake(queue);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::{backend, event_msg};
    use choreo_domain::EventKind;
    use choreo_ports::{OutgoingMessage, Queue};
    use std::time::Duration;

    async fn drain(q: &dyn Queue) -> Vec<String> {
        let got = q
            .receive(10, Duration::ZERO, Duration::from_secs(30))
            .await
            .unwrap();
        got.into_iter()
            .map(|m| m.attributes["event_type"].clone())
            .collect()
    }

    #[tokio::test]
    async fn events_route_by_type_and_the_audit_queue_gets_all() {
        let (_dir, b) = backend();
        let bus = b.ports().bus;
        for kind in EventKind::PUBLISHED {
            bus.publish(event_msg(kind)).await.unwrap();
        }
        let q = &b.config().queues;
        assert_eq!(drain(&*b.queue(&q.validate)).await, ["FileRegistered"]);
        assert_eq!(drain(&*b.queue(&q.quarantine)).await, ["FileRejected"]);
        assert_eq!(drain(&*b.queue(&q.crawl)).await, ["FileValidated"]);
        assert_eq!(drain(&*b.queue(&q.transform)).await, ["BatchCataloged"]);
        assert!(drain(&*b.queue(&q.ingest)).await.is_empty());
        let mut audit = drain(&*b.queue(&q.audit)).await;
        audit.sort();
        let mut all: Vec<_> = EventKind::PUBLISHED.iter().map(|k| k.as_str()).collect();
        all.sort();
        assert_eq!(audit, all);
        // Attributes travel with every copy.
        bus.publish(event_msg(EventKind::FileRegistered))
            .await
            .unwrap();
        let got = b
            .queue(&q.validate)
            .receive(1, Duration::ZERO, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(got[0].attributes["traceparent"], "00-abc-def-01");
        assert_eq!(b.topic().subscriptions().await.unwrap().len(), 4 + 7);
    }

    #[tokio::test]
    async fn a_message_without_event_type_is_refused() {
        let (_dir, b) = backend();
        let err = b
            .ports()
            .bus
            .publish(OutgoingMessage {
                body: "{}".into(),
                attributes: Default::default(),
            })
            .await
            .unwrap_err();
        assert!(!err.is_retryable());
        // Timers are not published: nobody subscribes to them, so they go nowhere.
        b.ports()
            .bus
            .publish(event_msg(EventKind::CrawlPoll))
            .await
            .unwrap();
        assert_eq!(
            b.queue(&b.config().queues.crawl)
                .depth()
                .await
                .unwrap()
                .total(),
            0
        );
    }
}
