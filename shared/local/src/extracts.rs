//! The keys table, ticks and units of scheduled extracts, on SQLite.
//!
//! Ticks and units are put-if-absent (`INSERT OR IGNORE` on their ids); a unit's claim is a
//! read-and-write in one `BEGIN IMMEDIATE` transaction, the local form of DynamoDB's conditional
//! update, so two processes sharing the data directory never both run one unit.

use crate::db::{Db, DbError, from_ms, ms, now_ms};
use async_trait::async_trait;
use choreo_domain::extract::{ExtractUnit, KeyRecord, Tick, UnitState};
use choreo_ports::{EndedUnit, ExtractStore, PortError, UnitClaim, UnitEnd};
use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::{OptionalExtension, Row, params};
use std::sync::Arc;
use std::time::Duration;

/// The extract store of the local backend.
pub struct LocalExtractStore {
    db: Arc<Db>,
}

impl LocalExtractStore {
    pub(crate) fn new(db: Arc<Db>) -> Self {
        LocalExtractStore { db }
    }
}

const KEY_COLUMNS: &str = "extract, key, valid_from, valid_to, enabled, params, updated_at";
const TICK_COLUMNS: &str = "tick_id, extract, slot, manual, created_at, fanned_out_at";
const UNIT_COLUMNS: &str =
    "tick_id, extract, key, state, attempts, reason, object_key, rows, updated_at";

fn date(s: Option<String>) -> Result<Option<NaiveDate>, rusqlite::Error> {
    s.map(|s| {
        s.parse::<NaiveDate>().map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, Box::new(e))
        })
    })
    .transpose()
}

fn key_of(r: &Row<'_>) -> Result<KeyRecord, rusqlite::Error> {
    let params: String = r.get(5)?;
    Ok(KeyRecord {
        extract: r.get(0)?,
        key: r.get(1)?,
        valid_from: date(r.get(2)?)?,
        valid_to: date(r.get(3)?)?,
        enabled: r.get(4)?,
        params: serde_json::from_str(&params).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(5, rusqlite::types::Type::Text, Box::new(e))
        })?,
        updated_at: from_ms(r.get(6)?),
    })
}

fn tick_of(r: &Row<'_>) -> Result<Tick, rusqlite::Error> {
    Ok(Tick {
        id: r.get(0)?,
        extract: r.get(1)?,
        slot: from_ms(r.get(2)?),
        manual: r.get(3)?,
        created_at: from_ms(r.get(4)?),
        fanned_out_at: r.get::<_, Option<i64>>(5)?.map(from_ms),
    })
}

fn unit_of(r: &Row<'_>) -> Result<ExtractUnit, rusqlite::Error> {
    let state: String = r.get(3)?;
    Ok(ExtractUnit {
        tick_id: r.get(0)?,
        extract: r.get(1)?,
        key: r.get(2)?,
        state: UnitState::parse(&state).unwrap_or(UnitState::Failed),
        attempts: r.get(4)?,
        reason: r.get(5)?,
        object_key: r.get(6)?,
        rows: r.get::<_, Option<i64>>(7)?.map(|n| n.max(0) as u64),
        updated_at: from_ms(r.get(8)?),
    })
}

fn units_of(conn: &rusqlite::Connection, tick_id: &str) -> Result<Vec<ExtractUnit>, DbError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {UNIT_COLUMNS} FROM extract_units WHERE tick_id = ?1 ORDER BY key"
        ))?
        .query_map(params![tick_id], unit_of)?
        .collect::<Result<Vec<_>, _>>()?)
}

#[async_trait]
impl ExtractStore for LocalExtractStore {
    async fn put_key(&self, key: &KeyRecord) -> Result<(), PortError> {
        let k = key.clone();
        let params_json = serde_json::to_string(&key.params)
            .map_err(|e| PortError::permanent("put_key", &key.key, e))?;
        self.db
            .write(
                "put_key",
                format!("{}/{}", key.extract, key.key),
                move |tx| {
                    tx.prepare_cached(&format!(
                        "INSERT OR REPLACE INTO extract_keys ({KEY_COLUMNS})
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
                    ))?
                    .execute(params![
                        k.extract,
                        k.key,
                        k.valid_from.map(|d| d.to_string()),
                        k.valid_to.map(|d| d.to_string()),
                        k.enabled,
                        params_json,
                        k.updated_at.timestamp_millis(),
                    ])?;
                    Ok(())
                },
            )
            .await
    }

    async fn set_key_enabled(
        &self,
        extract: &str,
        key: &str,
        enabled: bool,
    ) -> Result<bool, PortError> {
        let (e, k) = (extract.to_string(), key.to_string());
        self.db
            .write("set_key_enabled", format!("{extract}/{key}"), move |tx| {
                let n = tx
                    .prepare_cached(
                        "UPDATE extract_keys SET enabled = ?3, updated_at = ?4
                         WHERE extract = ?1 AND key = ?2",
                    )?
                    .execute(params![e, k, enabled, now_ms()])?;
                Ok(n == 1)
            })
            .await
    }

    async fn keys(&self, extract: &str) -> Result<Vec<KeyRecord>, PortError> {
        let e = extract.to_string();
        self.db
            .call("keys", extract, move |conn| {
                Ok(conn
                    .prepare_cached(&format!(
                        "SELECT {KEY_COLUMNS} FROM extract_keys WHERE extract = ?1 ORDER BY key"
                    ))?
                    .query_map(params![e], key_of)?
                    .collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    async fn schedule_since(
        &self,
        extract: &str,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, PortError> {
        let e = extract.to_string();
        self.db
            .write("schedule_since", extract, move |tx| {
                tx.prepare_cached(
                    "INSERT OR IGNORE INTO extract_schedules (extract, since) VALUES (?1, ?2)",
                )?
                .execute(params![e, now.timestamp_millis()])?;
                let since: i64 = tx
                    .prepare_cached("SELECT since FROM extract_schedules WHERE extract = ?1")?
                    .query_row(params![e], |r| r.get(0))?;
                Ok(from_ms(since))
            })
            .await
    }

    async fn add_tick(&self, tick: &Tick) -> Result<bool, PortError> {
        let t = tick.clone();
        self.db
            .write("add_tick", tick.id.clone(), move |tx| {
                let n = tx
                    .prepare_cached(&format!(
                        "INSERT OR IGNORE INTO extract_ticks ({TICK_COLUMNS})
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
                    ))?
                    .execute(params![
                        t.id,
                        t.extract,
                        t.slot.timestamp_millis(),
                        t.manual,
                        t.created_at.timestamp_millis(),
                        t.fanned_out_at.map(|f| f.timestamp_millis()),
                    ])?;
                Ok(n == 1)
            })
            .await
    }

    async fn tick(&self, tick_id: &str) -> Result<Option<Tick>, PortError> {
        let id = tick_id.to_string();
        self.db
            .call("tick", tick_id, move |conn| {
                Ok(conn
                    .prepare_cached(&format!(
                        "SELECT {TICK_COLUMNS} FROM extract_ticks WHERE tick_id = ?1"
                    ))?
                    .query_row(params![id], tick_of)
                    .optional()?)
            })
            .await
    }

    async fn last_scheduled_tick(&self, extract: &str) -> Result<Option<Tick>, PortError> {
        let e = extract.to_string();
        self.db
            .call("last_scheduled_tick", extract, move |conn| {
                Ok(conn
                    .prepare_cached(&format!(
                        "SELECT {TICK_COLUMNS} FROM extract_ticks
                         WHERE extract = ?1 AND manual = 0 ORDER BY slot DESC LIMIT 1"
                    ))?
                    .query_row(params![e], tick_of)
                    .optional()?)
            })
            .await
    }

    async fn ticks(&self, extract: Option<&str>, limit: usize) -> Result<Vec<Tick>, PortError> {
        let e = extract.map(str::to_string);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.db
            .call("ticks", extract.unwrap_or("*"), move |conn| {
                Ok(conn
                    .prepare_cached(&format!(
                        "SELECT {TICK_COLUMNS} FROM extract_ticks
                         WHERE ?1 IS NULL OR extract = ?1
                         ORDER BY created_at DESC, tick_id DESC LIMIT ?2"
                    ))?
                    .query_map(params![e, limit], tick_of)?
                    .collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    async fn fan_out(
        &self,
        tick_id: &str,
        extract: &str,
        keys: &[String],
    ) -> Result<Vec<ExtractUnit>, PortError> {
        let (t, e, keys) = (tick_id.to_string(), extract.to_string(), keys.to_vec());
        self.db
            .write("fan_out", tick_id, move |tx| {
                let now = now_ms();
                {
                    let mut insert = tx.prepare_cached(
                        "INSERT OR IGNORE INTO extract_units
                         (tick_id, extract, key, state, attempts, updated_at)
                         VALUES (?1, ?2, ?3, 'PENDING', 0, ?4)",
                    )?;
                    for k in &keys {
                        insert.execute(params![t, e, k, now])?;
                    }
                }
                tx.prepare_cached(
                    "UPDATE extract_ticks SET fanned_out_at = ?2
                     WHERE tick_id = ?1 AND fanned_out_at IS NULL",
                )?
                .execute(params![t, now])?;
                units_of(tx, &t)
            })
            .await
    }

    async fn units(&self, tick_id: &str) -> Result<Vec<ExtractUnit>, PortError> {
        let t = tick_id.to_string();
        self.db
            .call("units", tick_id, move |conn| units_of(conn, &t))
            .await
    }

    async fn claim_unit(
        &self,
        tick_id: &str,
        key: &str,
        holder: &str,
        lease: Duration,
    ) -> Result<UnitClaim, PortError> {
        let (t, k, h) = (tick_id.to_string(), key.to_string(), holder.to_string());
        let lease = ms(lease);
        self.db
            .write("claim_unit", format!("{tick_id}/{key}"), move |tx| {
                let row: Option<(ExtractUnit, Option<i64>)> = tx
                    .prepare_cached(&format!(
                        "SELECT {UNIT_COLUMNS}, claimed_until FROM extract_units
                         WHERE tick_id = ?1 AND key = ?2"
                    ))?
                    .query_row(params![t, k], |r| Ok((unit_of(r)?, r.get(9)?)))
                    .optional()?;
                let Some((unit, claimed_until)) = row else {
                    return Ok(UnitClaim::Missing);
                };
                let now = now_ms();
                match unit.state {
                    UnitState::Extracted => return Ok(UnitClaim::Done(unit)),
                    UnitState::Failed => return Ok(UnitClaim::Failed(unit)),
                    UnitState::Running if claimed_until.is_some_and(|u| u > now) => {
                        return Ok(UnitClaim::Busy(unit));
                    }
                    UnitState::Running | UnitState::Pending => {}
                }
                tx.prepare_cached(
                    "UPDATE extract_units SET state = 'RUNNING', attempts = attempts + 1,
                         holder = ?3, claimed_until = ?4, updated_at = ?5
                     WHERE tick_id = ?1 AND key = ?2",
                )?
                .execute(params![t, k, h, now + lease, now])?;
                Ok(UnitClaim::Claimed(ExtractUnit {
                    state: UnitState::Running,
                    attempts: unit.attempts + 1,
                    updated_at: from_ms(now),
                    ..unit
                }))
            })
            .await
    }

    async fn finish_unit(
        &self,
        tick_id: &str,
        key: &str,
        holder: &str,
        end: &UnitEnd,
    ) -> Result<bool, PortError> {
        let (t, k, h) = (tick_id.to_string(), key.to_string(), holder.to_string());
        let EndedUnit {
            state,
            reason,
            object_key,
            rows,
        } = end.record();
        self.db
            .write("finish_unit", format!("{tick_id}/{key}"), move |tx| {
                let n = tx
                    .prepare_cached(
                        "UPDATE extract_units SET state = ?4, reason = ?5, object_key = ?6,
                             rows = ?7, holder = NULL, claimed_until = NULL, updated_at = ?8
                         WHERE tick_id = ?1 AND key = ?2 AND state = 'RUNNING' AND holder = ?3",
                    )?
                    .execute(params![
                        t,
                        k,
                        h,
                        state.as_str(),
                        reason,
                        object_key,
                        rows,
                        now_ms()
                    ])?;
                Ok(n == 1)
            })
            .await
    }

    async fn reset_unit(&self, tick_id: &str, key: &str) -> Result<bool, PortError> {
        let (t, k) = (tick_id.to_string(), key.to_string());
        self.db
            .write("reset_unit", format!("{tick_id}/{key}"), move |tx| {
                let n = tx
                    .prepare_cached(
                        "UPDATE extract_units SET state = 'PENDING', updated_at = ?3
                         WHERE tick_id = ?1 AND key = ?2 AND state = 'FAILED'",
                    )?
                    .execute(params![t, k, now_ms()])?;
                Ok(n == 1)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, LocalExtractStore) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_with(
            &dir.path().join("choreo.db"),
            choreo_domain::config::Durability::Process,
        )
        .unwrap();
        (dir, LocalExtractStore::new(db))
    }

    /// The port's contract (`choreo_ports::testkit`), on SQLite.
    #[tokio::test]
    async fn the_extract_store_keeps_the_ports_contract() {
        let (_dir, s) = store();
        choreo_ports::testkit::extract_store_contract(&s).await;
    }
}
