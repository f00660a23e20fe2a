//! Queues with SQS standard-queue semantics, on one SQLite table of messages.
//!
//! A message row is visible when `visible_at <= now`. Receiving gives it a fresh receipt and pushes
//! `visible_at` forward by the visibility timeout; deleting needs that receipt; a message received
//! `max_receive_count` times is moved to the queue's dead-letter queue on its next receive (SQS's
//! redrive policy). Long polling waits on a per-queue [`Notify`] that sends in this process signal,
//! and that the database's writer signals when another process committed (see `db.rs`); it
//! re-checks every 100 ms regardless (delayed messages coming due).

use crate::db::{Db, DbError, from_ms, ms, now_ms};
use async_trait::async_trait;
use choreo_ports::{OutgoingMessage, PeekedMessage, PortError, Queue, QueueDepth, ReceivedMessage};
use rusqlite::{OptionalExtension, Transaction, params};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// SQS's limits.
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(15 * 60);
/// How often a long poll re-checks the table for messages written by other processes.
const RECHECK: Duration = Duration::from_millis(100);

/// Wakes long pollers in this process when a queue may have become non-empty.
#[derive(Default)]
pub(crate) struct Wakers {
    by_queue: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Wakers {
    pub(crate) fn get(&self, queue: &str) -> Arc<Notify> {
        let mut map = self.by_queue.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(map.entry(queue.to_string()).or_default())
    }

    pub(crate) fn wake(&self, queue: &str) {
        self.get(queue).notify_waiters();
    }

    /// Wakes every long poll (another process committed: its sends may be ours to take).
    pub(crate) fn wake_all(&self) {
        let map = self.by_queue.lock().unwrap_or_else(|p| p.into_inner());
        for notify in map.values() {
            notify.notify_waiters();
        }
    }
}

/// Declares a queue and its redrive policy (`dlq`, `max_receive_count`), replacing an older
/// declaration of the same name.
pub(crate) fn declare(
    tx: &Transaction<'_>,
    name: &str,
    dlq: Option<&str>,
    max_receive_count: Option<u32>,
) -> Result<(), DbError> {
    tx.prepare_cached(
        "INSERT INTO queues (name, dlq, max_receive_count) VALUES (?1, ?2, ?3)
         ON CONFLICT (name) DO UPDATE SET dlq = excluded.dlq,
                                           max_receive_count = excluded.max_receive_count",
    )?
    .execute(params![name, dlq, max_receive_count])?;
    Ok(())
}

/// Inserts one message (inside the caller's transaction), visible at `visible_at`.
pub(crate) fn insert_message(
    tx: &Transaction<'_>,
    queue: &str,
    message: &OutgoingMessage,
    now: i64,
    visible_at: i64,
) -> Result<String, DbError> {
    let id = uuid::Uuid::new_v4().to_string();
    let attributes = serde_json::to_string(&message.attributes)?;
    tx.prepare_cached(
        "INSERT INTO messages (id, queue, body, attributes, sent_at, visible_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        id,
        queue,
        message.body,
        attributes,
        now,
        visible_at
    ])?;
    Ok(id)
}

/// The message a receipt names: a receipt is `<seq>.<random>`, so a delete or visibility change
/// finds its row by the primary key and checks the random part. Anything else names no delivery.
fn seq_of(receipt: &str) -> Option<i64> {
    receipt.split_once('.')?.0.parse().ok()
}

/// One queue of the local backend.
pub struct LocalQueue {
    name: String,
    db: Arc<Db>,
    wakers: Arc<Wakers>,
}

impl LocalQueue {
    pub(crate) fn new(name: &str, db: Arc<Db>, wakers: Arc<Wakers>) -> Self {
        LocalQueue {
            name: name.to_string(),
            db,
            wakers,
        }
    }

    /// One non-waiting receive: the messages delivered, and the dead-letter queue that got any moved.
    async fn try_receive(
        &self,
        max: usize,
        visibility: Duration,
    ) -> Result<(Vec<ReceivedMessage>, Option<String>), PortError> {
        let queue = self.name.clone();
        let visibility = ms(visibility);
        self.db
            .write("receive", &self.name, move |tx| {
                let now = now_ms();
                let policy: Option<(Option<String>, Option<u32>)> = tx
                    .prepare_cached("SELECT dlq, max_receive_count FROM queues WHERE name = ?1")?
                    .query_row(params![queue], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                let (dlq, max_rc) = match policy {
                    Some((Some(dlq), Some(n))) if n > 0 => (Some(dlq), Some(n)),
                    _ => (None, None),
                };
                let mut delivered = Vec::new();
                let mut moved = false;
                let mut select = tx.prepare_cached(
                    "SELECT seq, id, body, attributes, sent_at, receive_count, first_received_at
                     FROM messages WHERE queue = ?1 AND visible_at <= ?2
                     ORDER BY visible_at, seq LIMIT ?3",
                )?;
                // Messages moved to the DLQ do not count, so select again until `max` are delivered
                // or none are left.
                loop {
                    let want = max - delivered.len();
                    let rows = select
                        .query_map(params![queue, now, want as i64], |r| {
                            Ok((
                                r.get::<_, i64>(0)?,
                                r.get::<_, String>(1)?,
                                r.get::<_, String>(2)?,
                                r.get::<_, String>(3)?,
                                r.get::<_, i64>(4)?,
                                r.get::<_, u32>(5)?,
                                r.get::<_, Option<i64>>(6)?,
                            ))
                        })?
                        .collect::<Result<Vec<_>, _>>()?;
                    if rows.is_empty() {
                        break;
                    }
                    let mut moved_now = 0;
                    for (seq, id, body, attributes, sent_at, count, first) in rows {
                        if let (Some(dlq), Some(max_rc)) = (&dlq, max_rc)
                            && count >= max_rc
                        {
                            tx.prepare_cached(
                                "UPDATE messages SET queue = ?1, visible_at = ?2, receipt = NULL
                                 WHERE seq = ?3",
                            )?
                            .execute(params![dlq, now, seq])?;
                            moved = true;
                            moved_now += 1;
                            continue;
                        }
                        let receipt = format!("{seq}.{}", uuid::Uuid::new_v4().simple());
                        let first = first.unwrap_or(now);
                        tx.prepare_cached(
                            "UPDATE messages SET receive_count = receive_count + 1, receipt = ?1,
                                 visible_at = ?2, first_received_at = ?3
                             WHERE seq = ?4",
                        )?
                        .execute(params![
                            receipt,
                            now + visibility,
                            first,
                            seq
                        ])?;
                        delivered.push(ReceivedMessage {
                            id,
                            receipt,
                            body,
                            attributes: serde_json::from_str(&attributes)?,
                            receive_count: count + 1,
                            sent_at: from_ms(sent_at),
                            first_received_at: Some(from_ms(first)),
                        });
                    }
                    if delivered.len() >= max || moved_now == 0 {
                        break;
                    }
                }
                Ok((delivered, if moved { dlq } else { None }))
            })
            .await
    }
}

#[async_trait]
impl Queue for LocalQueue {
    fn name(&self) -> &str {
        &self.name
    }

    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, PortError> {
        let max = max.clamp(1, 10);
        let deadline = tokio::time::Instant::now() + wait;
        let notify = self.wakers.get(&self.name);
        loop {
            // Register interest before looking, so a send between the look and the wait still wakes us.
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (messages, moved_to) = self.try_receive(max, visibility).await?;
            if let Some(dlq) = moved_to {
                self.wakers.wake(&dlq);
            }
            if !messages.is_empty() {
                return Ok(messages);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let nap = RECHECK.min(deadline - now);
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep(nap) => {}
            }
        }
    }

    async fn delete(&self, receipt: &str) -> Result<(), PortError> {
        self.delete_batch(&[receipt.to_string()]).await.map(drop)
    }

    /// One write for the whole batch: the consumer acknowledges what it handled ten at a time.
    async fn delete_batch(
        &self,
        receipts: &[String],
    ) -> Result<Vec<(String, PortError)>, PortError> {
        let queue = self.name.clone();
        let receipts = receipts.to_vec();
        self.db
            .write("delete_batch", &self.name, move |tx| {
                let mut delete = tx.prepare_cached(
                    "DELETE FROM messages WHERE seq = ?1 AND queue = ?2 AND receipt = ?3",
                )?;
                for receipt in &receipts {
                    if let Some(seq) = seq_of(receipt) {
                        delete.execute(params![seq, queue, receipt])?;
                    }
                }
                Ok(Vec::new())
            })
            .await
    }

    async fn change_visibility(
        &self,
        receipt: &str,
        visibility: Duration,
    ) -> Result<(), PortError> {
        let queue = self.name.clone();
        let receipt = receipt.to_string();
        let visibility = ms(visibility);
        let changed = self
            .db
            .write("change_visibility", &self.name, move |tx| {
                let Some(seq) = seq_of(&receipt) else {
                    return Ok(0);
                };
                Ok(tx
                    .prepare_cached(
                        "UPDATE messages SET visible_at = ?1
                         WHERE seq = ?2 AND queue = ?3 AND receipt = ?4",
                    )?
                    .execute(params![now_ms() + visibility, seq, queue, receipt])?)
            })
            .await?;
        if changed > 0 && visibility == 0 {
            self.wakers.wake(&self.name);
        }
        Ok(())
    }

    async fn send(&self, message: OutgoingMessage, delay: Duration) -> Result<(), PortError> {
        message.check("send", &self.name)?;
        let queue = self.name.clone();
        let delay = ms(delay.min(MAX_DELAY));
        self.db
            .write("send", &self.name, move |tx| {
                let now = now_ms();
                insert_message(tx, &queue, &message, now, now + delay)?;
                Ok(())
            })
            .await?;
        self.wakers.wake(&self.name);
        Ok(())
    }

    async fn depth(&self) -> Result<QueueDepth, PortError> {
        let queue = self.name.clone();
        self.db
            .call("depth", &self.name, move |conn| {
                let now = now_ms();
                Ok(conn
                    .prepare_cached(
                        "SELECT
                         COALESCE(SUM(visible_at <= ?2), 0),
                         COALESCE(SUM(visible_at > ?2 AND receive_count > 0), 0),
                         COALESCE(SUM(visible_at > ?2 AND receive_count = 0), 0)
                     FROM messages WHERE queue = ?1",
                    )?
                    .query_row(params![queue, now], |r| {
                        Ok(QueueDepth {
                            visible: r.get::<_, i64>(0)? as u64,
                            in_flight: r.get::<_, i64>(1)? as u64,
                            delayed: r.get::<_, i64>(2)? as u64,
                        })
                    })?)
            })
            .await
    }

    /// From the oldest `sent_at` of the messages that are not still delayed: one never received
    /// with its `visible_at` ahead is a timer waiting, not backlog.
    async fn oldest_message_age(&self) -> Result<Option<Duration>, PortError> {
        let queue = self.name.clone();
        self.db
            .call("oldest_message_age", &self.name, move |conn| {
                let now = now_ms();
                let oldest: Option<i64> = conn
                    .prepare_cached(
                        "SELECT MIN(sent_at) FROM messages
                         WHERE queue = ?1 AND (visible_at <= ?2 OR receive_count > 0)",
                    )?
                    .query_row(params![queue, now], |r| r.get(0))?;
                let age_ms = oldest.map_or(0, |sent| (now - sent).max(0));
                Ok(Some(Duration::from_millis(age_ms as u64)))
            })
            .await
    }

    /// As the port says: in delivery order, visible or in flight, and without counting a receive.
    async fn peek(&self, max: usize) -> Result<Vec<PeekedMessage>, PortError> {
        let queue = self.name.clone();
        self.db
            .call("peek", &self.name, move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT id, body, attributes, receive_count, sent_at, first_received_at
                     FROM messages WHERE queue = ?1 ORDER BY visible_at, seq LIMIT ?2",
                )?;
                let rows = stmt.query_map(params![queue, max as i64], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, u32>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, Option<i64>>(5)?,
                    ))
                })?;
                let mut out = Vec::new();
                for row in rows {
                    let (id, body, attributes, receive_count, sent_at, first) = row?;
                    out.push(PeekedMessage {
                        id,
                        body,
                        attributes: serde_json::from_str(&attributes)?,
                        receive_count,
                        sent_at: from_ms(sent_at),
                        first_received_at: first.map(from_ms),
                    });
                }
                Ok(out)
            })
            .await
    }

    async fn purge(&self) -> Result<u64, PortError> {
        let queue = self.name.clone();
        self.db
            .write("purge", &self.name, move |tx| {
                Ok(tx
                    .prepare_cached("DELETE FROM messages WHERE queue = ?1")?
                    .execute(params![queue])? as u64)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::{backend, msg};
    use choreo_ports::Queue;
    use std::collections::HashSet;
    use std::time::Duration;

    const NO_WAIT: Duration = Duration::ZERO;

    #[tokio::test]
    async fn visibility_timeout_redelivers_and_counts_receives() {
        let (_dir, b) = backend();
        let q = b.queue(&b.config().queues.validate);
        q.send(msg("hello"), NO_WAIT).await.unwrap();
        let first = q
            .receive(10, NO_WAIT, Duration::from_millis(200))
            .await
            .unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].body, "hello");
        assert_eq!(first[0].receive_count, 1);
        assert!(first[0].first_received_at.is_some());
        assert!(
            q.receive(10, NO_WAIT, Duration::from_secs(30))
                .await
                .unwrap()
                .is_empty(),
            "invisible while in flight"
        );
        let d = q.depth().await.unwrap();
        assert_eq!((d.visible, d.in_flight, d.delayed), (0, 1, 0));
        tokio::time::sleep(Duration::from_millis(250)).await;
        let second = q
            .receive(10, NO_WAIT, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].id, first[0].id);
        assert_eq!(second[0].receive_count, 2);
        assert_ne!(second[0].receipt, first[0].receipt);
        assert_eq!(second[0].first_received_at, first[0].first_received_at);
        // The old receipt no longer names a delivery: deleting with it does nothing.
        q.delete(&first[0].receipt).await.unwrap();
        assert_eq!(q.depth().await.unwrap().in_flight, 1);
        q.delete(&second[0].receipt).await.unwrap();
        q.delete(&second[0].receipt).await.unwrap();
        assert_eq!(q.depth().await.unwrap().total(), 0);
    }

    #[tokio::test]
    async fn a_batch_delete_takes_what_its_receipts_name() {
        let (_dir, b) = backend();
        let q = b.queue(&b.config().queues.validate);
        for i in 0..3 {
            q.send(msg(&format!("m{i}")), NO_WAIT).await.unwrap();
        }
        let got = q
            .receive(10, NO_WAIT, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(got.len(), 3);
        let mut receipts: Vec<String> = got[..2].iter().map(|m| m.receipt.clone()).collect();
        receipts.push("not-a-receipt".into());
        assert!(q.delete_batch(&receipts).await.unwrap().is_empty());
        let d = q.depth().await.unwrap();
        assert_eq!(
            (d.visible, d.in_flight),
            (0, 1),
            "the third is still in flight"
        );
    }

    #[tokio::test]
    async fn exhausted_messages_move_to_the_dead_letter_queue() {
        let (_dir, b) = backend();
        let name = b.config().queues.quarantine.clone();
        let max = b.config().queues.max_receive_count;
        let q = b.queue(&name);
        q.send(msg("poison"), NO_WAIT).await.unwrap();
        for i in 1..=max {
            let got = q.receive(1, NO_WAIT, Duration::ZERO).await.unwrap();
            assert_eq!(got.len(), 1, "receive {i}");
            assert_eq!(got[0].receive_count, i);
        }
        assert!(
            q.receive(1, NO_WAIT, Duration::ZERO)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(q.depth().await.unwrap().total(), 0);
        let dlq = b.queue(&format!("{name}-dlq"));
        assert_eq!(dlq.depth().await.unwrap().visible, 1);
        let dead = dlq
            .receive(10, NO_WAIT, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].body, "poison");
        assert_eq!(dead[0].receive_count, max + 1);
    }

    #[tokio::test]
    async fn delay_hides_a_message_until_due() {
        let (_dir, b) = backend();
        let q = b.queue(&b.config().queues.crawl);
        q.send(msg("timer"), Duration::from_millis(300))
            .await
            .unwrap();
        assert_eq!(q.depth().await.unwrap().delayed, 1);
        assert!(
            q.receive(10, NO_WAIT, Duration::from_secs(30))
                .await
                .unwrap()
                .is_empty()
        );
        let got = q
            .receive(10, Duration::from_secs(3), Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(got.len(), 1, "the long poll sees the message once due");
    }

    #[tokio::test]
    async fn oldest_message_age_counts_backlog_not_timers() {
        let (_dir, b) = backend();
        let q = b.queue(&b.config().queues.crawl);
        assert_eq!(q.oldest_message_age().await.unwrap(), Some(Duration::ZERO));
        q.send(msg("timer"), Duration::from_secs(60)).await.unwrap();
        assert_eq!(
            q.oldest_message_age().await.unwrap(),
            Some(Duration::ZERO),
            "a delayed message is not backlog"
        );
        q.send(msg("work"), NO_WAIT).await.unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
        let age = q.oldest_message_age().await.unwrap().unwrap();
        assert!(age >= Duration::from_millis(100), "{age:?}");
        // In flight still counts: it has not been dealt with.
        let got = q
            .receive(1, NO_WAIT, Duration::from_secs(30))
            .await
            .unwrap();
        assert!(q.oldest_message_age().await.unwrap().unwrap() >= age);
        q.delete(&got[0].receipt).await.unwrap();
        assert_eq!(q.oldest_message_age().await.unwrap(), Some(Duration::ZERO));
    }

    #[tokio::test]
    async fn change_visibility_zero_makes_it_visible_and_wakes_pollers() {
        let (_dir, b) = backend();
        let q = b.queue(&b.config().queues.transform);
        q.send(msg("m"), NO_WAIT).await.unwrap();
        let got = q
            .receive(1, NO_WAIT, Duration::from_secs(60))
            .await
            .unwrap();
        let q2 = b.queue(&b.config().queues.transform);
        let waiter = tokio::spawn(async move {
            q2.receive(1, Duration::from_secs(5), Duration::from_secs(60))
                .await
                .unwrap()
        });
        tokio::time::sleep(Duration::from_millis(150)).await;
        q.change_visibility(&got[0].receipt, Duration::ZERO)
            .await
            .unwrap();
        let again = waiter.await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].id, got[0].id);
        // A longer extension keeps it hidden.
        q.change_visibility(&again[0].receipt, Duration::from_secs(60))
            .await
            .unwrap();
        assert!(
            q.receive(1, NO_WAIT, Duration::ZERO)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_long_poll_returns_when_a_message_arrives() {
        let (_dir, b) = backend();
        let q = b.queue("any-queue");
        let q2 = b.queue("any-queue");
        let start = std::time::Instant::now();
        let waiter = tokio::spawn(async move {
            q2.receive(10, Duration::from_secs(10), Duration::from_secs(30))
                .await
                .unwrap()
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        q.send(msg("late"), NO_WAIT).await.unwrap();
        let got = waiter.await.unwrap();
        assert_eq!(got.len(), 1);
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn receive_clamps_max_and_depth_counts() {
        let (_dir, b) = backend();
        let q = b.queue(&b.config().queues.audit);
        for i in 0..15 {
            q.send(msg(&format!("m{i}")), NO_WAIT).await.unwrap();
        }
        let got = q
            .receive(100, NO_WAIT, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(got.len(), 10);
        assert_eq!(
            q.receive(0, NO_WAIT, Duration::from_secs(30))
                .await
                .unwrap()
                .len(),
            1
        );
        let d = q.depth().await.unwrap();
        assert_eq!((d.visible, d.in_flight, d.delayed), (4, 11, 0));
    }

    #[tokio::test]
    async fn two_processes_never_share_an_invisible_message() {
        let (dir, a) = backend();
        let b = crate::LocalBackend::open(&a.config().clone()).unwrap();
        assert_eq!(a.db_path(), dir.path().join("choreo.db"));
        let name = a.config().queues.validate.clone();
        let n = 60;
        for i in 0..n {
            a.queue(&name)
                .send(msg(&format!("m{i}")), NO_WAIT)
                .await
                .unwrap();
        }
        let mut tasks = Vec::new();
        for backend in [a.clone(), b.clone(), a.clone(), b.clone()] {
            let q = backend.queue(&name);
            tasks.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                loop {
                    let got = q
                        .receive(3, Duration::from_millis(200), Duration::from_secs(60))
                        .await
                        .unwrap();
                    if got.is_empty() {
                        return ids;
                    }
                    ids.extend(got.into_iter().map(|m| m.id));
                }
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        let unique: HashSet<_> = all.iter().collect();
        assert_eq!(all.len(), n, "every message received once");
        assert_eq!(unique.len(), n);
    }

    #[tokio::test]
    async fn limits_are_enforced() {
        let (_dir, b) = backend();
        let q = b.queue("q");
        let mut m = msg("x");
        for i in 0..11 {
            m.attributes.insert(format!("a{i}"), "v".into());
        }
        let err = q.send(m, NO_WAIT).await.unwrap_err();
        assert!(!err.is_retryable());
        let big = msg(&"x".repeat(300 * 1024));
        assert!(q.send(big, NO_WAIT).await.is_err());
    }

    #[tokio::test]
    async fn peek_and_purge() {
        let (_dir, b) = backend();
        let q = b.local_queue("q");
        q.send(msg("a"), NO_WAIT).await.unwrap();
        q.send(msg("b"), Duration::from_secs(60)).await.unwrap();
        let peeked = q.peek(10).await.unwrap();
        assert_eq!(peeked.len(), 2);
        assert_eq!(peeked[0].body, "a");
        assert_eq!(peeked[0].receive_count, 0);
        assert_eq!(q.peek(1).await.unwrap().len(), 1);
        // Peeking took nothing and counted no receive.
        let got = q
            .receive(10, NO_WAIT, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!((got.len(), got[0].receive_count), (1, 1));
        let peeked = q.peek(10).await.unwrap();
        assert_eq!(peeked.len(), 2, "in flight, still shown");
        assert_eq!(
            peeked.iter().find(|m| m.body == "a").unwrap().receive_count,
            1
        );
        assert!(peeked.iter().any(|m| m.first_received_at.is_some()));
        assert_eq!(q.purge().await.unwrap(), 2);
        assert_eq!(q.depth().await.unwrap().total(), 0);
    }
}
