//! The audit trail: every event once, keyed by its id, with a counter per dataset and event type.
//!
//! `record` inserts the event if its id is new and bumps the counter in the same transaction only
//! then, so a redelivered event is neither stored nor counted twice.

use crate::db::{Db, parse_ts, ts};
use async_trait::async_trait;
use choreo_domain::clock;
use choreo_domain::{Alert, Envelope};
use choreo_ports::{AuditEntry, AuditLog, PortError};
use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::params;
use std::sync::Arc;

/// The audit log of the local backend.
pub struct LocalAuditLog {
    db: Arc<Db>,
}

impl LocalAuditLog {
    pub(crate) fn new(db: Arc<Db>) -> Self {
        LocalAuditLog { db }
    }
}

#[async_trait]
impl AuditLog for LocalAuditLog {
    async fn record(&self, envelope: &Envelope) -> Result<bool, PortError> {
        let id = envelope.id.clone();
        let event_type = envelope.event.kind().as_str();
        let dataset = envelope.event.dataset().to_string();
        let occurred_at = ts(envelope.occurred_at);
        let body = serde_json::to_string(envelope).map_err(|e| {
            PortError::permanent("record", envelope.id.clone(), format!("serialize: {e}"))
        })?;
        self.db
            .write("record", id.clone(), move |tx| {
                let inserted = tx
                    .prepare_cached(
                        "INSERT OR IGNORE INTO audit_events
                         (event_id, event_type, dataset, occurred_at, recorded_at, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )?
                    .execute(params![
                        id,
                        event_type,
                        dataset,
                        occurred_at,
                        ts(clock::now()),
                        body
                    ])?;
                if inserted == 0 {
                    return Ok(false);
                }
                tx.prepare_cached(
                    "INSERT INTO audit_counts (dataset, event_type, count) VALUES (?1, ?2, 1)
                     ON CONFLICT (dataset, event_type) DO UPDATE SET count = count + 1",
                )?
                .execute(params![dataset, event_type])?;
                Ok(true)
            })
            .await
    }

    async fn counts(&self) -> Result<Vec<(String, String, u64)>, PortError> {
        self.db
            .call("counts", "audit", |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT dataset, event_type, count FROM audit_counts
                     ORDER BY dataset, event_type",
                )?;
                let rows = stmt
                    .query_map([], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)?.max(0) as u64))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })
            .await
    }

    async fn recent(&self, limit: usize) -> Result<Vec<AuditEntry>, PortError> {
        self.db
            .call("recent", "audit", move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT event_id, event_type, dataset, occurred_at, recorded_at, body
                     FROM audit_events ORDER BY rowid DESC LIMIT ?1",
                )?;
                let rows = stmt
                    .query_map(params![limit as i64], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, String>(4)?,
                            r.get::<_, String>(5)?,
                        ))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                rows.into_iter()
                    .map(
                        |(event_id, event_type, dataset, occurred, recorded, body)| {
                            Ok(AuditEntry {
                                event_id,
                                event_type,
                                dataset,
                                occurred_at: parse_ts(&occurred)?,
                                recorded_at: parse_ts(&recorded)?,
                                body: serde_json::from_str(&body)?,
                            })
                        },
                    )
                    .collect()
            })
            .await
    }

    async fn add_alert(&self, alert: &Alert) -> Result<bool, PortError> {
        let (id, created, body) = (
            alert.id.clone(),
            sortable_ts(alert.created_at),
            serde_json::to_string(alert).map_err(|e| {
                PortError::permanent("add_alert", alert.id.clone(), format!("serialize: {e}"))
            })?,
        );
        self.db
            .write("add_alert", id.clone(), move |tx| {
                let inserted = tx
                    .prepare_cached(
                        "INSERT OR IGNORE INTO alerts (id, created_at, sent_at, body)
                     VALUES (?1, ?2, NULL, ?3)",
                    )?
                    .execute(params![id, created, body])?;
                Ok(inserted == 1)
            })
            .await
    }

    async fn pending_alerts(&self, limit: usize) -> Result<Vec<Alert>, PortError> {
        self.alerts_where(
            "pending_alerts",
            "WHERE sent_at IS NULL ORDER BY created_at, id",
            limit,
        )
        .await
    }

    async fn mark_alerts_sent(&self, ids: &[String], at: DateTime<Utc>) -> Result<(), PortError> {
        let ids = ids.to_vec();
        self.db
            .write("mark_alerts_sent", "alerts", move |tx| {
                let mut stmt = tx.prepare_cached(
                    "UPDATE alerts SET sent_at = ?1 WHERE id = ?2 AND sent_at IS NULL",
                )?;
                for id in &ids {
                    stmt.execute(params![ts(at), id])?;
                }
                Ok(())
            })
            .await
    }

    async fn alerts(&self, limit: usize) -> Result<Vec<Alert>, PortError> {
        self.alerts_where("alerts", "ORDER BY created_at DESC, id DESC", limit)
            .await
    }
}

/// An alert's creation time as its column holds it: with every digit of the nanoseconds, so that
/// the text sorts as the time does (`ts` leaves out zero digits, and `12:01:00Z` sorts after
/// `12:01:00.250Z`).
fn sortable_ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

impl LocalAuditLog {
    /// Alerts as stored (`sent_at` comes from its column, the rest from the body).
    async fn alerts_where(
        &self,
        op: &'static str,
        clause: &'static str,
        limit: usize,
    ) -> Result<Vec<Alert>, PortError> {
        self.db
            .call(op, "alerts", move |conn| {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT body, sent_at FROM alerts {clause} LIMIT ?1"
                ))?;
                let rows = stmt
                    .query_map(params![limit as i64], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                rows.into_iter()
                    .map(|(body, sent)| {
                        let mut alert: Alert = serde_json::from_str(&body)?;
                        alert.sent_at = sent.as_deref().map(parse_ts).transpose()?;
                        Ok(alert)
                    })
                    .collect()
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::backend;

    #[tokio::test]
    async fn keeps_the_ports_contract() {
        let (_dir, b) = backend();
        choreo_ports::testkit::audit_log_contract(b.ports().audit.as_ref()).await;
    }

    /// SQLite tells a duplicate at no cost: it is answered `false` and not stored.
    #[tokio::test]
    async fn a_duplicate_is_known_as_one() {
        let (_dir, b) = backend();
        let audit = b.ports().audit;
        let e = choreo_domain::Envelope::new(choreo_domain::Event::CrawlPoll {
            batch_id: "b-1".into(),
        });
        assert!(audit.record(&e).await.unwrap());
        assert!(!audit.record(&e).await.unwrap());
    }
}
