//! File records, batch records and leases, as DynamoDB conditional writes on SQLite.
//!
//! A file's fields are columns (the seed's audit fields — dataset, bucket and key, state, size — are
//! readable with `sqlite3` as they are), its history a JSON array beside them. A transition reads the
//! record and writes it back in one `BEGIN IMMEDIATE` transaction, and the `UPDATE` repeats the
//! condition on the stored state: the history entry is written with the state, or neither is.
//! "Files of dataset D in state S" is served by the `(dataset, state, id)` index.

use crate::db::{Db, DbError, bad_column, from_ms, ms, now_ms, parse_ts, ts};
use async_trait::async_trait;
use choreo_domain::clock;
use choreo_domain::{
    Batch, BatchState, FileId, FileRecord, FileState, NewFile, SweepMark, Transition,
};
use choreo_ports::{
    BatchOutcome, FileQuery, LeaseInfo, LeaseOutcome, Page, PortError, Registered, StateStore,
    TransitionOutcome,
};
use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};
use std::sync::Arc;
use std::time::Duration;

/// Page size when a query asks for 0.
const DEFAULT_LIMIT: usize = 100;
/// The largest page served, whatever the query asks.
const MAX_LIMIT: usize = 10_000;

const FILE_COLUMNS: &str = "id, dataset, bucket, key, size, version, state, reason, trace_id, \
                            traceparent, batch_id, validation, created_at, updated_at, history, sweep, \
                            pin";

/// The state store of the local backend.
pub struct LocalStateStore {
    db: Arc<Db>,
}

/// A file row as stored, before its text columns are parsed.
struct FileRow {
    id: String,
    dataset: String,
    bucket: String,
    key: String,
    size: i64,
    version: String,
    state: String,
    reason: Option<String>,
    trace_id: Option<String>,
    traceparent: Option<String>,
    batch_id: Option<String>,
    validation: Option<String>,
    created_at: String,
    updated_at: String,
    history: String,
    sweep: Option<String>,
    pin: Option<String>,
}

impl FileRow {
    fn read(r: &Row<'_>) -> rusqlite::Result<FileRow> {
        Ok(FileRow {
            id: r.get(0)?,
            dataset: r.get(1)?,
            bucket: r.get(2)?,
            key: r.get(3)?,
            size: r.get(4)?,
            version: r.get(5)?,
            state: r.get(6)?,
            reason: r.get(7)?,
            trace_id: r.get(8)?,
            traceparent: r.get(9)?,
            batch_id: r.get(10)?,
            validation: r.get(11)?,
            created_at: r.get(12)?,
            updated_at: r.get(13)?,
            history: r.get(14)?,
            sweep: r.get(15)?,
            pin: r.get(16)?,
        })
    }

    fn into_record(self) -> Result<FileRecord, DbError> {
        Ok(FileRecord {
            state: self
                .state
                .parse::<FileState>()
                .map_err(|_| bad_column("file state", &self.state))?,
            id: FileId(self.id),
            dataset: self.dataset,
            bucket: self.bucket,
            key: self.key,
            size: self.size.max(0) as u64,
            version: self.version,
            pin: self.pin.as_deref().map(serde_json::from_str).transpose()?,
            reason: self.reason,
            trace_id: self.trace_id,
            traceparent: self.traceparent,
            batch_id: self.batch_id,
            validation: self.validation,
            created_at: parse_ts(&self.created_at)?,
            updated_at: parse_ts(&self.updated_at)?,
            history: serde_json::from_str(&self.history)?,
            sweep: self
                .sweep
                .as_deref()
                .map(serde_json::from_str)
                .transpose()?,
        })
    }
}

/// A conditional transition inside the caller's transaction.
fn apply(tx: &Transaction<'_>, t: &Transition) -> Result<TransitionOutcome, DbError> {
    let Some(mut rec) = get_file(tx, t.file.as_str())? else {
        return Ok(TransitionOutcome::NotFound);
    };
    if rec.state != t.from {
        return Ok(TransitionOutcome::Conflict(rec));
    }
    t.apply_to(&mut rec, clock::now());
    let changed = tx
        .prepare_cached(
            "UPDATE files SET state = ?1, reason = ?2, batch_id = ?3, validation = ?4,
             updated_at = ?5, history = ?6, sweep = NULL
             WHERE id = ?7 AND state = ?8",
        )?
        .execute(params![
            rec.state.as_str(),
            rec.reason,
            rec.batch_id,
            rec.validation,
            ts(rec.updated_at),
            serde_json::to_string(&rec.history)?,
            rec.id.as_str(),
            t.from.as_str(),
        ])?;
    if changed != 1 {
        // Cannot happen inside the transaction; if it did, report what is stored.
        return match get_file(tx, t.file.as_str())? {
            Some(current) => Ok(TransitionOutcome::Conflict(current)),
            None => Ok(TransitionOutcome::NotFound),
        };
    }
    Ok(TransitionOutcome::Applied(rec))
}

fn get_file(conn: &Connection, id: &str) -> Result<Option<FileRecord>, DbError> {
    let row = conn
        .prepare_cached(&format!("SELECT {FILE_COLUMNS} FROM files WHERE id = ?1"))?
        .query_row(params![id], FileRow::read)
        .optional()?;
    row.map(FileRow::into_record).transpose()
}

fn get_batch(conn: &Connection, id: &str) -> Result<Option<Batch>, DbError> {
    let body: Option<String> = conn
        .prepare_cached("SELECT body FROM batches WHERE id = ?1")?
        .query_row(params![id], |r| r.get(0))
        .optional()?;
    Ok(body.map(|b| serde_json::from_str(&b)).transpose()?)
}

impl LocalStateStore {
    pub(crate) fn new(db: Arc<Db>) -> Self {
        LocalStateStore { db }
    }
}

#[async_trait]
impl StateStore for LocalStateStore {
    async fn register(&self, file: NewFile) -> Result<Registered, PortError> {
        let target = file.id.to_string();
        self.db
            .write("register", target, move |tx| {
                if let Some(existing) = get_file(tx, file.id.as_str())? {
                    return Ok(Registered::Exists(existing));
                }
                let rec = file.into_record(clock::now());
                tx.prepare_cached(&format!(
                    "INSERT INTO files ({FILE_COLUMNS})
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, NULL, ?16)"
                ))?
                .execute(params![
                        rec.id.as_str(),
                        rec.dataset,
                        rec.bucket,
                        rec.key,
                        rec.size as i64,
                        rec.version,
                        rec.state.as_str(),
                        rec.reason,
                        rec.trace_id,
                        rec.traceparent,
                        rec.batch_id,
                        rec.validation,
                        ts(rec.created_at),
                        ts(rec.updated_at),
                        serde_json::to_string(&rec.history)?,
                        rec.pin.as_ref().map(serde_json::to_string).transpose()?,
                    ],
                )?;
                Ok(Registered::Created(rec))
            })
            .await
    }

    async fn get(&self, id: &FileId) -> Result<Option<FileRecord>, PortError> {
        let id = id.to_string();
        self.db
            .call("get", id.clone(), move |conn| get_file(conn, &id))
            .await
    }

    async fn transition(&self, t: &Transition) -> Result<TransitionOutcome, PortError> {
        let t = t.clone();
        self.db
            .write("transition", t.file.to_string(), move |tx| apply(tx, &t))
            .await
    }

    /// All in one write: a batch's files move together.
    async fn transition_all(&self, ts: &[Transition]) -> Result<Vec<TransitionOutcome>, PortError> {
        let ts = ts.to_vec();
        let target = ts.first().map_or_else(String::new, |t| t.file.to_string());
        self.db
            .write("transition_all", target, move |tx| {
                ts.iter().map(|t| apply(tx, t)).collect()
            })
            .await
    }

    async fn list(&self, query: &FileQuery) -> Result<Page<FileRecord>, PortError> {
        let query = query.clone();
        self.db
            .call("list", "files", move |conn| {
                let limit = if query.limit == 0 {
                    DEFAULT_LIMIT
                } else {
                    query.limit.min(MAX_LIMIT)
                };
                let mut conditions = Vec::new();
                let mut args: Vec<String> = Vec::new();
                if let Some(d) = &query.dataset {
                    args.push(d.clone());
                    conditions.push(format!("dataset = ?{}", args.len()));
                }
                if let Some(s) = query.state {
                    args.push(s.as_str().to_string());
                    conditions.push(format!("state = ?{}", args.len()));
                }
                if let Some(after) = &query.after {
                    args.push(after.clone());
                    conditions.push(format!("id > ?{}", args.len()));
                }
                let filter = if conditions.is_empty() {
                    String::new()
                } else {
                    format!("WHERE {}", conditions.join(" AND "))
                };
                // One more than asked tells whether another page exists.
                let sql = format!(
                    "SELECT {FILE_COLUMNS} FROM files {filter} ORDER BY id LIMIT {}",
                    limit + 1
                );
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows = stmt
                    .query_map(rusqlite::params_from_iter(args.iter()), FileRow::read)?
                    .collect::<Result<Vec<_>, _>>()?;
                let more = rows.len() > limit;
                let items = rows
                    .into_iter()
                    .take(limit)
                    .map(FileRow::into_record)
                    .collect::<Result<Vec<_>, _>>()?;
                let next = if more {
                    items.last().map(|r| r.id.to_string())
                } else {
                    None
                };
                Ok(Page { items, next })
            })
            .await
    }

    async fn counts(&self) -> Result<Vec<(String, FileState, u64)>, PortError> {
        self.db
            .call("counts", "files", |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT dataset, state, COUNT(*) FROM files GROUP BY dataset, state
                     ORDER BY dataset, state",
                )?;
                let rows = stmt
                    .query_map([], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                        ))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                rows.into_iter()
                    .map(|(d, s, n)| {
                        let state = s
                            .parse::<FileState>()
                            .map_err(|_| bad_column("file state", &s))?;
                        Ok((d, state, n as u64))
                    })
                    .collect()
            })
            .await
    }

    async fn create_batch(&self, batch: &Batch) -> Result<bool, PortError> {
        let batch = batch.clone();
        self.db
            .write("create_batch", batch.id.clone(), move |tx| {
                let inserted = tx
                    .prepare_cached(
                        "INSERT OR IGNORE INTO batches (id, state, dataset, created_ms, body)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?
                    .execute(params![
                        batch.id,
                        batch.state.as_str(),
                        batch.dataset,
                        batch.created_at.timestamp_millis(),
                        serde_json::to_string(&batch)?,
                    ])?;
                Ok(inserted == 1)
            })
            .await
    }

    async fn get_batch(&self, id: &str) -> Result<Option<Batch>, PortError> {
        let id = id.to_string();
        self.db
            .call("get_batch", id.clone(), move |conn| get_batch(conn, &id))
            .await
    }

    async fn update_batch(
        &self,
        batch: &mut Batch,
        expected: BatchState,
    ) -> Result<BatchOutcome, PortError> {
        let read_at = batch.version;
        let next = Batch {
            version: read_at + 1,
            ..batch.clone()
        };
        let outcome = self
            .db
            .write("update_batch", next.id.clone(), move |tx| {
                // The version lives in the body; records written before it have none, which is 0.
                let changed = tx
                    .prepare_cached(
                        "UPDATE batches SET state = ?1, dataset = ?2, body = ?3
                     WHERE id = ?4 AND state = ?5
                       AND coalesce(json_extract(body, '$.version'), 0) = ?6",
                    )?
                    .execute(params![
                        next.state.as_str(),
                        next.dataset,
                        serde_json::to_string(&next)?,
                        next.id,
                        expected.as_str(),
                        i64::try_from(read_at).unwrap_or(i64::MAX),
                    ])?;
                if changed == 1 {
                    Ok(BatchOutcome::Applied)
                } else {
                    Ok(BatchOutcome::Conflict(
                        get_batch(tx, &next.id)?.map(Box::new),
                    ))
                }
            })
            .await?;
        if outcome == BatchOutcome::Applied {
            batch.version = read_at + 1;
        }
        Ok(outcome)
    }

    async fn batches_in(&self, state: BatchState) -> Result<Vec<Batch>, PortError> {
        self.db
            .call("batches_in", state.as_str(), move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT body FROM batches WHERE state = ?1 ORDER BY created_ms, id",
                )?;
                let bodies = stmt
                    .query_map(params![state.as_str()], |r| r.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()?;
                let mut batches = bodies
                    .iter()
                    .map(|b| serde_json::from_str(b))
                    .collect::<Result<Vec<Batch>, _>>()?;
                // `created_ms` orders by the millisecond; within one, by the exact time.
                batches.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
                Ok(batches)
            })
            .await
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<LeaseOutcome, PortError> {
        let (name, holder) = (name.to_string(), holder.to_string());
        let ttl = ms(ttl);
        self.db
            .write("acquire_lease", name.clone(), move |tx| {
                let now = now_ms();
                let current: Option<(String, i64)> = tx
                    .prepare_cached("SELECT holder, expires_at FROM leases WHERE name = ?1")?
                    .query_row(params![name], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                if let Some((h, expires_at)) = current
                    && h != holder
                    && expires_at > now
                {
                    return Ok(LeaseOutcome::Held {
                        holder: h,
                        expires_at: from_ms(expires_at),
                    });
                }
                let expires_at = now.saturating_add(ttl);
                tx.prepare_cached(
                    "INSERT INTO leases (name, holder, expires_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,
                                                      expires_at = excluded.expires_at",
                )?
                .execute(params![name, holder, expires_at])?;
                Ok(LeaseOutcome::Acquired {
                    expires_at: from_ms(expires_at),
                })
            })
            .await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), PortError> {
        let (name, holder) = (name.to_string(), holder.to_string());
        self.db
            .write("release_lease", name.clone(), move |tx| {
                tx.prepare_cached("DELETE FROM leases WHERE name = ?1 AND holder = ?2")?
                    .execute(params![name, holder])?;
                Ok(())
            })
            .await
    }

    async fn lease(&self, name: &str) -> Result<Option<LeaseInfo>, PortError> {
        let name = name.to_string();
        self.db
            .call("lease", name.clone(), move |conn| {
                Ok(conn
                    .prepare_cached("SELECT holder, expires_at FROM leases WHERE name = ?1")?
                    .query_row(params![name], |r| {
                        Ok(LeaseInfo {
                            holder: r.get(0)?,
                            expires_at: from_ms(r.get(1)?),
                        })
                    })
                    .optional()?)
            })
            .await
    }

    async fn mark_sweep(
        &self,
        id: &FileId,
        history_len: usize,
        mark: &SweepMark,
    ) -> Result<bool, PortError> {
        let (id, mark) = (id.to_string(), mark.clone());
        self.db
            .write("mark_sweep", id.clone(), move |tx| {
                let Some(rec) = get_file(tx, &id)? else {
                    return Ok(false);
                };
                if rec.state != mark.state || rec.history.len() != history_len {
                    return Ok(false);
                }
                tx.prepare_cached("UPDATE files SET sweep = ?1 WHERE id = ?2")?
                    .execute(params![serde_json::to_string(&mark)?, id])?;
                Ok(true)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::backend;
    use choreo_domain::{FileId, FileState, NewFile, Stage, Transition};
    use choreo_ports::TransitionOutcome;

    #[tokio::test]
    async fn keeps_the_ports_contract() {
        let (_dir, b) = backend();
        choreo_ports::testkit::state_store_contract(b.ports().state.as_ref()).await;
    }

    /// Two backends on one database file, as two processes would be: each transition's read and
    /// write are one `BEGIN IMMEDIATE` transaction.
    #[tokio::test]
    async fn racing_transitions_apply_exactly_once_and_history_matches() {
        let (_dir, a) = backend();
        let b = crate::LocalBackend::open(a.config()).unwrap();
        let file = NewFile {
            id: FileId::from("f-1"),
            dataset: "d".into(),
            bucket: "in".into(),
            key: "d/f-1.csv".into(),
            size: 42,
            version: "v1".into(),
            pin: None,
            reason: None,
            trace_id: None,
            traceparent: None,
        };
        a.ports().state.register(file).await.unwrap();
        let validate = Transition::new(
            FileId::from("f-1"),
            Stage::Validator,
            FileState::New,
            FileState::Valid,
        )
        .unwrap();
        let mut tasks = Vec::new();
        for i in 0..8 {
            let s = if i % 2 == 0 {
                a.ports().state
            } else {
                b.ports().state
            };
            let t = validate.clone();
            tasks.push(tokio::spawn(async move { s.transition(&t).await.unwrap() }));
        }
        let mut applied = 0;
        for t in tasks {
            match t.await.unwrap() {
                TransitionOutcome::Applied(_) => applied += 1,
                TransitionOutcome::Conflict(r) => assert_eq!(r.state, FileState::Valid),
                TransitionOutcome::NotFound => panic!("not found"),
            }
        }
        assert_eq!(applied, 1);
        let rec = a
            .ports()
            .state
            .get(&FileId::from("f-1"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            rec.history.len(),
            2,
            "one history entry per applied transition"
        );
        assert_eq!(rec.history[1].to, FileState::Valid);
    }
}
