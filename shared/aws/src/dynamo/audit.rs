//! The [`AuditLog`] on the audit table: the events, once each, and the alerts. The table's layout
//! is told in `mod.rs`.

use super::items::{AUDIT_SHARDS, Attrs, EventItem, event_pk};
use super::{ABSENT, GSI1PK, GSI1SK, Item, PK, TIME_INDEX, s, ts};
use crate::error::{condition_held, port_error};
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use choreo_domain::clock;
use choreo_domain::{Alert, Envelope};
use choreo_ports::{AuditEntry, AuditLog, PortError};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

/// The [`AuditLog`] on its own DynamoDB table (its layout: `mod.rs`).
#[derive(Debug, Clone)]
pub struct DynamoAuditLog {
    client: Client,
    table: String,
}

impl DynamoAuditLog {
    /// An audit log on `table` (not the state table: the trail grows forever and is read
    /// differently).
    pub fn new(client: Client, table: &str) -> Self {
        DynamoAuditLog {
            client,
            table: table.to_string(),
        }
    }

    /// Queries every shard of one index family (`EVENTS` or `COUNTS`), each up to `per_shard`
    /// items, in index order (`forward`).
    async fn query_shards(
        &self,
        op: &'static str,
        family: &str,
        per_shard: Option<usize>,
        forward: bool,
    ) -> Result<Vec<Item>, PortError> {
        let mut all = Vec::new();
        for shard in 0..AUDIT_SHARDS {
            let pk = format!("{family}#{shard}");
            all.extend(self.query_partition(op, &pk, per_shard, forward).await?);
        }
        Ok(all)
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

fn alert_pk(id: &str) -> String {
    format!("A#{id}")
}

const ALERTS_PENDING: &str = "ALERTS#PENDING";
const ALERTS_SENT: &str = "ALERTS#SENT";

#[async_trait]
impl AuditLog for DynamoAuditLog {
    /// One conditional put of the event, if absent: a redelivered event finds its item and
    /// answers `false`, so nothing is recorded or counted twice. No counter item: one would take
    /// every event of its dataset (DynamoDB serves an item about 1,000 writes a second), so counts
    /// derive from the trail instead. An SDK retry after a lost response also answers `false`,
    /// which is still "recorded once".
    async fn record(&self, envelope: &Envelope) -> Result<bool, PortError> {
        let entry = AuditEntry {
            event_id: envelope.id.clone(),
            event_type: envelope.event.kind().as_str().to_string(),
            dataset: envelope.event.dataset().to_string(),
            occurred_at: envelope.occurred_at,
            recorded_at: clock::now(),
            body: serde_json::to_value(envelope)
                .map_err(|e| PortError::permanent("record", &envelope.id, e))?,
        };
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(EventItem::from(&entry).0))
            .condition_expression(ABSENT)
            .expression_attribute_names("#pk", PK)
            .send()
            .await;
        condition_held("record", event_pk(&envelope.id), put)
    }

    /// Counted from the trail: every event's dataset and type, read from the time index's
    /// partitions (keys and two attributes only). Its cost grows with the trail (half a read unit
    /// per 4 KB of index), so it is for tests and the command line, not for a dashboard's refresh.
    async fn counts(&self) -> Result<Vec<(String, String, u64)>, PortError> {
        let mut counts: BTreeMap<(String, String), u64> = BTreeMap::new();
        for shard in 0..AUDIT_SHARDS {
            let pk = format!("EVENTS#{shard}");
            let mut pages = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(TIME_INDEX)
                .key_condition_expression("#gsi1pk = :pk")
                .projection_expression("#pk, #dataset, #event_type")
                .expression_attribute_names("#gsi1pk", GSI1PK)
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#dataset", "dataset")
                .expression_attribute_names("#event_type", "event_type")
                .expression_attribute_values(":pk", s(&pk))
                .into_paginator()
                .send();
            while let Some(page) = pages
                .try_next()
                .await
                .map_err(|e| port_error("counts", &pk, e))?
            {
                for item in page.items.unwrap_or_default() {
                    let key = match item.get(PK) {
                        Some(AttributeValue::S(k)) => k.as_str(),
                        _ => "(no pk)",
                    };
                    let a = Attrs::new(key, &item);
                    *counts
                        .entry((a.s("dataset")?.to_string(), a.s("event_type")?.to_string()))
                        .or_default() += 1;
                }
            }
        }
        Ok(counts.into_iter().map(|((d, t), n)| (d, t, n)).collect())
    }

    /// The newest `limit` of each shard, merged newest first.
    async fn recent(&self, limit: usize) -> Result<Vec<AuditEntry>, PortError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let items = self
            .query_shards("recent", "EVENTS", Some(limit), false)
            .await?;
        let mut entries = items
            .into_iter()
            .map(|item| {
                let sk = match item.get(GSI1SK) {
                    Some(AttributeValue::S(sk)) => sk.clone(),
                    _ => String::new(),
                };
                Ok((sk, AuditEntry::try_from(EventItem(item))?))
            })
            .collect::<Result<Vec<_>, PortError>>()?;
        entries.sort_by(|a, b| b.0.cmp(&a.0));
        entries.truncate(limit);
        Ok(entries.into_iter().map(|(_, e)| e).collect())
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
    async fn a_record_costs_one_put_duplicate_or_not() {
        let f = fixture(4).await;
        calls(&f);
        let audit = f.audit();
        let e = validated("d");
        audit.record(&e).await.unwrap();
        assert!(!audit.record(&e).await.unwrap());
        assert_eq!(calls(&f), vec![("PutItem".to_string(), 2)]);
    }

    fn validated(dataset: &str) -> Envelope {
        Envelope::new(Event::FileValidated {
            file_id: FileId::from("f-1"),
            dataset: dataset.into(),
        })
    }
}
