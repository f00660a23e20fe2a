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

/// SQS's limits, to which longer durations are clamped as the port says.
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(15 * 60);
const MAX_WAIT: Duration = Duration::from_secs(20);
const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 60 * 60);
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
/// finds its row by the primary key and checks the random part. Anything else is malformed: no
/// queue issued it, and, as SQS does, the caller hears so.
fn seq_of(receipt: &str, op: &'static str, queue: &str) -> Result<i64, PortError> {
    receipt
        .split_once('.')
        .and_then(|(seq, _)| seq.parse().ok())
        .ok_or_else(|| {
            PortError::permanent(
                op,
                queue,
                format!("{receipt:?} is not a valid receipt handle"),
            )
        })
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
        let visibility = ms(visibility.min(MAX_VISIBILITY));
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
        let deadline = tokio::time::Instant::now() + wait.min(MAX_WAIT);
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
        seq_of(receipt, "delete", &self.name)?;
        self.delete_batch(&[receipt.to_string()]).await.map(drop)
    }

    /// One write for the whole batch: the consumer acknowledges what it handled ten at a time. A
    /// receipt that names no row in flight here is stale, and deleting it does nothing.
    async fn delete_batch(
        &self,
        receipts: &[String],
    ) -> Result<Vec<(String, PortError)>, PortError> {
        let mut failed = Vec::new();
        let mut rows = Vec::with_capacity(receipts.len());
        for receipt in receipts {
            match seq_of(receipt, "delete_batch", &self.name) {
                Ok(seq) => rows.push((seq, receipt.clone())),
                Err(e) => failed.push((receipt.clone(), e)),
            }
        }
        if rows.is_empty() {
            return Ok(failed);
        }
        let queue = self.name.clone();
        self.db
            .write("delete_batch", &self.name, move |tx| {
                let mut delete = tx.prepare_cached(
                    "DELETE FROM messages WHERE seq = ?1 AND queue = ?2 AND receipt = ?3",
                )?;
                for (seq, receipt) in &rows {
                    delete.execute(params![seq, queue, receipt])?;
                }
                Ok(())
            })
            .await?;
        Ok(failed)
    }

    async fn change_visibility(
        &self,
        receipt: &str,
        visibility: Duration,
    ) -> Result<(), PortError> {
        let seq = seq_of(receipt, "change_visibility", &self.name)?;
        let queue = self.name.clone();
        let receipt = receipt.to_string();
        let visibility = ms(visibility.min(MAX_VISIBILITY));
        // Only while in flight: a lapsed delivery's message is visible again, maybe being received
        // by another consumer, and hiding it again would take it from them (SQS refuses too).
        let changed = self
            .db
            .write("change_visibility", &self.name, move |tx| {
                let now = now_ms();
                Ok(tx
                    .prepare_cached(
                        "UPDATE messages SET visible_at = ?1
                         WHERE seq = ?2 AND queue = ?3 AND receipt = ?4 AND visible_at > ?5",
                    )?
                    .execute(params![now + visibility, seq, queue, receipt, now])?)
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

    /// As the port says: oldest first by `sent_at`, visible, in flight or delayed, and without
    /// counting a receive.
    async fn peek(&self, max: usize) -> Result<Vec<PeekedMessage>, PortError> {
        let queue = self.name.clone();
        self.db
            .call("peek", &self.name, move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT id, body, attributes, receive_count, sent_at, first_received_at
                     FROM messages WHERE queue = ?1 ORDER BY sent_at, seq LIMIT ?2",
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
    use choreo_ports::QueueDepth;
    use choreo_ports::testkit::{EmulatorDifferences, QueueUnderTest, queue_contract};
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    const NO_WAIT: Duration = Duration::ZERO;

    /// The port's contract (`choreo_ports::testkit`), on SQLite: each case on a queue of its own,
    /// declared with its dead-letter queue as `LocalBackend::open` declares the configured ones.
    #[tokio::test]
    async fn the_queue_contract() {
        let (_dir, b) = backend();
        let n = AtomicUsize::new(0);
        let fresh = async || {
            let name = format!("contract-{}", n.fetch_add(1, Ordering::Relaxed));
            let dlq = format!("{name}-dlq");
            let max_receive_count = 3;
            let (q, d) = (name.clone(), dlq.clone());
            b.db.write("declare", &name, move |tx| {
                super::declare(tx, &d, None, None)?;
                super::declare(tx, &q, Some(&d), Some(max_receive_count))?;
                Ok(())
            })
            .await
            .unwrap();
            QueueUnderTest {
                queue: b.queue(&name),
                dlq: b.queue(&dlq),
                max_receive_count,
            }
        };
        queue_contract(fresh, EmulatorDifferences::default()).await;
    }

    /// The configured queues get their redrive policy from the configuration when the backend
    /// opens.
    #[tokio::test]
    async fn configured_queues_dead_letter_after_max_receive_count() {
        let (_dir, b) = backend();
        let name = b.config().queues.quarantine.clone();
        let max = b.config().queues.max_receive_count;
        let q = b.queue(&name);
        q.send(msg("poison"), NO_WAIT).await.unwrap();
        for _ in 0..=max {
            q.receive(1, NO_WAIT, Duration::ZERO).await.unwrap();
        }
        assert_eq!(q.depth().await.unwrap(), QueueDepth::default());
        let dlq = b.queue(&format!("{name}-dlq"));
        assert_eq!(dlq.depth().await.unwrap().visible, 1);
    }

    /// Stricter than the port: the local queue honours only a delivery's own receipt, so a consumer
    /// whose delivery lapsed cannot delete the message from under the one that has it now.
    #[tokio::test]
    async fn an_earlier_receipt_deletes_nothing() {
        let (_dir, b) = backend();
        let q = b.queue("q");
        q.send(msg("m"), NO_WAIT).await.unwrap();
        let first = q.receive(1, NO_WAIT, Duration::ZERO).await.unwrap();
        let second = q
            .receive(1, NO_WAIT, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(second[0].id, first[0].id);
        q.delete(&first[0].receipt).await.unwrap();
        assert_eq!(q.depth().await.unwrap().in_flight, 1);
        q.delete(&second[0].receipt).await.unwrap();
        assert_eq!(q.depth().await.unwrap(), QueueDepth::default());
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
}
