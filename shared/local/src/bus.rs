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

    /// The port's contract (`choreo_ports::testkit`), routed by the configuration's subscriptions.
    #[tokio::test]
    async fn the_event_bus_keeps_the_ports_contract() {
        let (_dir, b) = backend();
        let subscribers: Vec<_> = b
            .config()
            .subscriptions()
            .into_iter()
            .map(|(q, kinds)| {
                (
                    b.queue(&q),
                    kinds.iter().map(|k| k.as_str().to_string()).collect(),
                )
            })
            .collect();
        choreo_ports::testkit::event_bus_contract(b.ports().bus, &subscribers).await;
    }

    /// The subscriptions are rows an operator can read: one per (queue, event type). Timers are
    /// not among them: published, they go nowhere.
    #[tokio::test]
    async fn subscriptions_are_rows_per_queue_and_type() {
        let (_dir, b) = backend();
        let rows: usize = b
            .config()
            .subscriptions()
            .iter()
            .map(|(_, kinds)| kinds.len())
            .sum();
        assert_eq!(b.topic().subscriptions().await.unwrap().len(), rows);
        assert_eq!(rows, 4 + 7);
        b.ports()
            .bus
            .publish(event_msg(EventKind::CrawlPoll))
            .await
            .unwrap();
        let crawl = b.queue(&b.config().queues.crawl);
        assert_eq!(crawl.depth().await.unwrap().total(), 0);
    }
}
