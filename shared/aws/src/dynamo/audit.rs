//! The [`AuditLog`] on the audit table: the events, in pages, and the alerts. The table's layout
//! is told in `mod.rs`.

use super::items::{AUDIT_SHARDS, Attrs, EventItem, PageItem, page_entries, page_pk};
use super::{ABSENT, GSI1PK, GSI1SK, Item, PK, TIME_INDEX, s, ts};
use crate::error::{condition_held, port_error};
use crate::gather::{self, Gathering};
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use choreo_domain::clock;
use choreo_domain::{Alert, Envelope};
use choreo_ports::{AuditEntry, AuditLog, PortError};
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How events gather into pages. A page that is not full waits 20 ms for more: the events of one
/// receive (up to ten, handled at once) and of the handlers finishing with them share a page. At
/// most ten events, a receive's worth: under load a page fills and leaves at once rather than wait
/// out the window while its handlers hold their permits (and ten events are some 3 KB, far below
/// DynamoDB's 400 KB an item). Four page writes in flight; while they all wait, events gather into
/// the next pages.
const PAGES: Gathering = Gathering {
    window: Duration::from_millis(20),
    max_items: 10,
    max_bytes: 16 * 1024,
    in_flight: 4,
};

/// The [`AuditLog`] on its own DynamoDB table (its layout: `mod.rs`).
#[derive(Debug, Clone)]
pub struct DynamoAuditLog {
    client: Client,
    table: String,
    /// The events waiting for a page, drained by a task started on the first `record`.
    queue: Arc<std::sync::OnceLock<mpsc::UnboundedSender<Waiting>>>,
}

/// An event waiting for its page, and where its outcome goes.
struct Waiting {
    id: String,
    /// The envelope as JSON, as the page keeps it.
    body: String,
    done: oneshot::Sender<Result<bool, PortError>>,
}

impl DynamoAuditLog {
    /// An audit log on `table` (not the state table: the trail grows forever and is read
    /// differently).
    pub fn new(client: Client, table: &str) -> Self {
        DynamoAuditLog {
            client,
            table: table.to_string(),
            queue: Default::default(),
        }
    }

    /// Up to `limit` items of one index partition, in index order (`forward`).
    async fn query_partition(
        &self,
        op: &'static str,
        pk: &str,
        limit: Option<usize>,
        forward: bool,
    ) -> Result<Vec<Item>, PortError> {
        let mut req = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(TIME_INDEX)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", GSI1PK)
            .expression_attribute_values(":pk", s(pk))
            .scan_index_forward(forward);
        if let Some(n) = limit {
            req = req.limit(i32::try_from(n).unwrap_or(i32::MAX).clamp(1, 1000));
        }
        let mut pages = req.into_paginator().send();
        let mut all = Vec::new();
        while let Some(page) = pages.try_next().await.map_err(|e| port_error(op, pk, e))? {
            all.extend(page.items.unwrap_or_default());
            if limit.is_some_and(|n| all.len() >= n) {
                all.truncate(limit.unwrap_or(usize::MAX));
                break;
            }
        }
        Ok(all)
    }

    /// The newest events of one shard of the trail, at least `limit` of them if it holds that
    /// many (whole pages, so a few more), each with the key it sorts by.
    async fn newest_in_shard(
        &self,
        shard: u32,
        limit: usize,
    ) -> Result<Vec<(Sorted, AuditEntry)>, PortError> {
        let pk = format!("EVENTS#{shard}");
        // `limit` items hold at least `limit` events: a page holds one or more.
        let mut found = Vec::new();
        for item in self
            .query_partition("recent", &pk, Some(limit), false)
            .await?
        {
            found.extend(entries_of(item)?);
        }
        Ok(found)
    }

    /// Alerts of one index partition (`PENDING` or `SENT`), at most `limit`, in time order.
    async fn alerts_in(
        &self,
        op: &'static str,
        partition: &str,
        limit: usize,
        forward: bool,
    ) -> Result<Vec<Alert>, PortError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.query_partition(op, partition, Some(limit), forward)
            .await?
            .iter()
            .map(|item| {
                let pk = match item.get(PK) {
                    Some(AttributeValue::S(pk)) => pk.as_str(),
                    _ => "(no pk)",
                };
                let a = Attrs::new(pk, item);
                let mut alert: Alert = serde_json::from_str(a.s("body")?)
                    .map_err(|e| a.malformed("body", &format!("is not an alert: {e}")))?;
                alert.sent_at = match a.opt_s("sent_at")? {
                    Some(_) => Some(a.time("sent_at")?),
                    None => None,
                };
                Ok(alert)
            })
            .collect()
    }
}

/// Where an entry sorts in the trail: its page's index sort key (time, then page id), then its
/// place in the page.
type Sorted = (String, usize);

/// The entries of one item of the trail: a page's events, or the one event of an item written
/// before pages (`E#<event id>`), each with the key it sorts by.
fn entries_of(item: Item) -> Result<Vec<(Sorted, AuditEntry)>, PortError> {
    let sk = match item.get(GSI1SK) {
        Some(AttributeValue::S(sk)) => sk.clone(),
        _ => String::new(),
    };
    if item.contains_key(PageItem::EVENTS) {
        return Ok(page_entries(&item)?
            .into_iter()
            .enumerate()
            .map(|(i, e)| ((sk.clone(), i), e))
            .collect());
    }
    Ok(vec![((sk, 0), AuditEntry::try_from(EventItem(item))?)])
}

/// Keeps the first entry of each event id, in the order given.
fn first_of_each(entries: impl IntoIterator<Item = AuditEntry>) -> Vec<AuditEntry> {
    let mut seen = HashSet::new();
    entries
        .into_iter()
        .filter(|e| seen.insert(e.event_id.clone()))
        .collect()
}

/// What the paging task needs of the log (not its queue: the task ends when the last log holding
/// the queue is dropped).
struct Pages {
    client: Client,
    table: String,
}

impl Pages {
    async fn drain(self, rx: mpsc::UnboundedReceiver<Waiting>) {
        let this = Arc::new(self);
        gather::drain(
            rx,
            PAGES,
            |w| w.body.len(),
            |page| {
                let this = this.clone();
                async move { this.write(page).await }
            },
        )
        .await;
    }

    /// One page: a put of a new item (its id is fresh, so the SDK's retry of a put whose answer
    /// was lost writes the same item again). Each event is told whether it was new to the page.
    async fn write(&self, page: Vec<Waiting>) {
        let id = uuid::Uuid::new_v4().to_string();
        let mut bodies = Vec::with_capacity(page.len());
        let mut fresh = HashSet::with_capacity(page.len());
        let mut outcomes = Vec::with_capacity(page.len());
        for w in page {
            let new = fresh.insert(w.id);
            if new {
                bodies.push(w.body);
            }
            outcomes.push((w.done, new));
        }
        let item = PageItem::new(&id, clock::now(), bodies).0;
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map(drop)
            .map_err(|e| port_error("record", page_pk(&id), e));
        for (done, new) in outcomes {
            let _ = done.send(put.clone().map(|()| new));
        }
    }
}

fn alert_pk(id: &str) -> String {
    format!("A#{id}")
}

const ALERTS_PENDING: &str = "ALERTS#PENDING";
const ALERTS_SENT: &str = "ALERTS#SENT";

#[async_trait]
impl AuditLog for DynamoAuditLog {
    /// The event joins the next page of the trail — one item holding the events that arrived
    /// within [`PAGES`]' window of each other — and waits for that page to be written. A page and its
    /// index entry cost a write unit per KB each, whatever the number of events in it: an event
    /// alone costs 2 units, ten together about 6. A page is a new item each time, so an event
    /// delivered again in another page is stored again: `Ok(false)` only for a duplicate within
    /// its own page, and the reads (`counts`, `recent`) keep one entry per event id. No counter
    /// item: one would take every event of its dataset (DynamoDB serves an item about 1,000 writes
    /// a second), so counts derive from the trail.
    async fn record(&self, envelope: &Envelope) -> Result<bool, PortError> {
        let body = serde_json::to_string(envelope)
            .map_err(|e| PortError::permanent("record", &envelope.id, e))?;
        let (done, outcome) = oneshot::channel();
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            let pages = Pages {
                client: self.client.clone(),
                table: self.table.clone(),
            };
            tokio::spawn(pages.drain(rx));
            tx
        });
        let gone = || PortError::transient("record", &envelope.id, "the paging task ended");
        queue
            .send(Waiting {
                id: envelope.id.clone(),
                body,
                done,
            })
            .map_err(|_| gone())?;
        outcome.await.map_err(|_| gone())?
    }

    /// Counted from the trail: every page of the time index's partitions, read whole, each event
    /// id once. Its cost grows with the trail (half a read unit per 4 KB of index), so it is for
    /// tests and the command line, not for a dashboard's refresh.
    async fn counts(&self) -> Result<Vec<(String, String, u64)>, PortError> {
        let mut seen = HashSet::new();
        let mut counts: BTreeMap<(String, String), u64> = BTreeMap::new();
        for shard in 0..AUDIT_SHARDS {
            let pk = format!("EVENTS#{shard}");
            for item in self.query_partition("counts", &pk, None, true).await? {
                for (_, e) in entries_of(item)? {
                    if seen.insert(e.event_id) {
                        *counts.entry((e.dataset, e.event_type)).or_default() += 1;
                    }
                }
            }
        }
        Ok(counts.into_iter().map(|((d, t), n)| (d, t, n)).collect())
    }

    /// The newest `limit` events of each shard, merged newest first, each event id once (at its
    /// first recording among those read).
    async fn recent(&self, limit: usize) -> Result<Vec<AuditEntry>, PortError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut entries = Vec::new();
        for shard in 0..AUDIT_SHARDS {
            entries.extend(self.newest_in_shard(shard, limit).await?);
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut entries = first_of_each(entries.into_iter().map(|(_, e)| e));
        entries.reverse();
        entries.truncate(limit);
        Ok(entries)
    }

    /// An item `A#<id>` (put if absent), indexed under `ALERTS#PENDING` by creation time until sent.
    /// Alerts are rare (failures), so one index partition each for pending and sent is plenty.
    async fn add_alert(&self, alert: &Alert) -> Result<bool, PortError> {
        let pk = alert_pk(&alert.id);
        let created = ts(alert.created_at);
        let body =
            serde_json::to_string(alert).map_err(|e| PortError::permanent("add_alert", &pk, e))?;
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(PK, s(&pk))
            .item("body", s(body))
            .item("created_at", s(&created))
            .item(GSI1PK, s(ALERTS_PENDING))
            .item(GSI1SK, s(format!("{created}#{}", alert.id)))
            .condition_expression(ABSENT)
            .expression_attribute_names("#pk", PK)
            .send()
            .await;
        condition_held("add_alert", pk, put)
    }

    async fn pending_alerts(&self, limit: usize) -> Result<Vec<Alert>, PortError> {
        self.alerts_in("pending_alerts", ALERTS_PENDING, limit, true)
            .await
    }

    /// Moves each alert from the pending partition to the sent one, if it is still pending.
    async fn mark_alerts_sent(&self, ids: &[String], at: DateTime<Utc>) -> Result<(), PortError> {
        for id in ids {
            let pk = alert_pk(id);
            let updated = self
                .client
                .update_item()
                .table_name(&self.table)
                .key(PK, s(&pk))
                .update_expression("SET #sent_at = :at, #gsi1pk = :sent")
                .condition_expression("#gsi1pk = :pending")
                .expression_attribute_names("#sent_at", "sent_at")
                .expression_attribute_names("#gsi1pk", GSI1PK)
                .expression_attribute_values(":at", s(ts(at)))
                .expression_attribute_values(":sent", s(ALERTS_SENT))
                .expression_attribute_values(":pending", s(ALERTS_PENDING))
                .send()
                .await;
            // Sent already: nothing to do.
            condition_held("mark_alerts_sent", pk, updated)?;
        }
        Ok(())
    }

    /// The newest of the pending and of the sent, merged newest first.
    async fn alerts(&self, limit: usize) -> Result<Vec<Alert>, PortError> {
        let mut all = self
            .alerts_in("alerts", ALERTS_PENDING, limit, false)
            .await?;
        all.extend(self.alerts_in("alerts", ALERTS_SENT, limit, false).await?);
        all.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        all.truncate(limit);
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use crate::dynamo::testutil::{calls, fixture};
    use choreo_domain::{Envelope, Event, FileId};
    use choreo_ports::AuditLog;

    #[tokio::test]
    async fn the_audit_log_keeps_the_ports_contract() {
        let f = fixture(4).await;
        choreo_ports::testkit::audit_log_contract(&f.audit()).await;
    }

    #[tokio::test]
    async fn events_recorded_together_share_one_put_and_are_read_once() {
        let f = fixture(4).await;
        calls(&f);
        let audit = f.audit();
        let events: Vec<Envelope> = (0..5).map(|_| validated("d")).collect();
        let mut all = events.clone();
        all.push(events[0].clone());
        let mut together = tokio::task::JoinSet::new();
        for e in all {
            let audit = audit.clone();
            together.spawn(async move { audit.record(&e).await.unwrap() });
        }
        let fresh = together.join_all().await;
        assert_eq!(fresh.iter().filter(|f| !**f).count(), 1, "{fresh:?}");
        assert_eq!(calls(&f), vec![("PutItem".to_string(), 1)]);
        // The same event again, in a page of its own: stored, but counted and listed once.
        audit.record(&events[0]).await.unwrap();
        assert_eq!(
            audit.counts().await.unwrap(),
            vec![("d".to_string(), "FileValidated".to_string(), 5)]
        );
        let recent = audit.recent(10).await.unwrap();
        assert_eq!(recent.len(), 5);
        let ids: std::collections::BTreeSet<_> = recent.iter().map(|e| &e.event_id).collect();
        assert_eq!(ids, events.iter().map(|e| &e.id).collect());
    }

    fn validated(dataset: &str) -> Envelope {
        Envelope::new(Event::FileValidated {
            file_id: FileId::from("f-1"),
            dataset: dataset.into(),
        })
    }
}
