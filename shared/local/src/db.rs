//! The SQLite database: opening it, its pragmas, its schema, and how every port runs SQL.
//!
//! Two connections per backend instance. Writes go to a writer thread that *commits in groups*: it
//! takes every write waiting (up to [`GROUP`]), runs each in a savepoint of one `BEGIN IMMEDIATE`
//! transaction — a write that fails rolls back its own savepoint only — commits once, and only then
//! answers each caller. A caller therefore learns of its write after it is committed, as before, and
//! a busy pipeline pays one commit (log write, lock, checkpoint share) per group rather than per
//! write. Reads run on a second connection (`query_only`) from `spawn_blocking`, beside the writer:
//! in WAL mode a reader sees the last commit and never waits for the writer.
//!
//! Several processes may share the file: `busy_timeout` makes a writer wait up to 5 s for another,
//! and every read-modify-write runs inside the writer's `BEGIN IMMEDIATE` transaction, which takes
//! the write lock up front so two processes can never interleave a read and a conditional write. A
//! database still busy after the timeout is a transient error: the caller retries.

use choreo_domain::clock;
use choreo_domain::config::Durability;
use choreo_ports::PortError;
use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use rusqlite::{Connection, ErrorCode, Transaction, TransactionBehavior};
use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::Duration;

/// The schema version this build writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 5;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS queues (
    name              TEXT PRIMARY KEY,
    dlq               TEXT,
    max_receive_count INTEGER
);

-- A receipt starts with its message's `seq`, so a delete finds its row by the primary key: the
-- table has one index besides it, the one receives scan. Ids are random UUIDs, not looked up.
CREATE TABLE IF NOT EXISTS messages (
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,
    id                TEXT NOT NULL,
    queue             TEXT NOT NULL,
    body              TEXT NOT NULL,
    attributes        TEXT NOT NULL,
    sent_at           INTEGER NOT NULL,
    visible_at        INTEGER NOT NULL,
    receive_count     INTEGER NOT NULL DEFAULT 0,
    first_received_at INTEGER,
    receipt           TEXT
);
CREATE INDEX IF NOT EXISTS messages_by_queue ON messages (queue, visible_at, seq);

CREATE TABLE IF NOT EXISTS subscriptions (
    topic      TEXT NOT NULL,
    queue      TEXT NOT NULL,
    event_type TEXT NOT NULL,
    PRIMARY KEY (topic, queue, event_type)
);

CREATE TABLE IF NOT EXISTS notified (
    bucket      TEXT NOT NULL,
    key         TEXT NOT NULL,
    version     TEXT NOT NULL,
    notified_at INTEGER NOT NULL,
    PRIMARY KEY (bucket, key, version)
);

CREATE TABLE IF NOT EXISTS files (
    id          TEXT PRIMARY KEY,
    dataset     TEXT NOT NULL,
    bucket      TEXT NOT NULL,
    key         TEXT NOT NULL,
    size        INTEGER NOT NULL,
    version     TEXT NOT NULL,
    state       TEXT NOT NULL,
    reason      TEXT,
    trace_id    TEXT,
    traceparent TEXT,
    batch_id    TEXT,
    validation  TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    history     TEXT NOT NULL,
    sweep       TEXT,
    pin         TEXT
);
CREATE INDEX IF NOT EXISTS files_by_dataset_state ON files (dataset, state, id);
CREATE INDEX IF NOT EXISTS files_by_state ON files (state, id);

CREATE TABLE IF NOT EXISTS batches (
    id         TEXT PRIMARY KEY,
    state      TEXT NOT NULL,
    dataset    TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    body       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS batches_by_state ON batches (state, created_ms, id);

CREATE TABLE IF NOT EXISTS leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS audit_events (
    event_id    TEXT PRIMARY KEY,
    event_type  TEXT NOT NULL,
    dataset     TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    body        TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS audit_counts (
    dataset    TEXT NOT NULL,
    event_type TEXT NOT NULL,
    count      INTEGER NOT NULL,
    PRIMARY KEY (dataset, event_type)
);

CREATE TABLE IF NOT EXISTS alerts (
    id         TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    sent_at    TEXT,
    body       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_pending ON alerts (created_at) WHERE sent_at IS NULL;

CREATE TABLE IF NOT EXISTS crawls (
    crawler     TEXT PRIMARY KEY,
    state       TEXT NOT NULL,
    last_status TEXT,
    last_error  TEXT,
    started_at  INTEGER,
    finished_at INTEGER
);

-- Every crawl ever started, beside `crawls` (which holds only each crawler's current state): the
-- history Glue keeps as `GetCrawlerMetrics` and crawl logs. `finished_at` and `status` are NULL while
-- the crawl runs.
CREATE TABLE IF NOT EXISTS crawl_runs (
    crawler     TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    status      TEXT,
    PRIMARY KEY (crawler, started_at)
);

CREATE TABLE IF NOT EXISTS catalog (
    dataset        TEXT PRIMARY KEY,
    crawler        TEXT NOT NULL,
    columns        TEXT NOT NULL,
    files          INTEGER NOT NULL,
    location       TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    types          TEXT,
    partition_keys TEXT,
    format         TEXT
);

CREATE TABLE IF NOT EXISTS partitions (
    dataset          TEXT NOT NULL,
    partition_values TEXT NOT NULL,
    location         TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    PRIMARY KEY (dataset, partition_values)
);

CREATE TABLE IF NOT EXISTS job_runs (
    run_id        TEXT PRIMARY KEY,
    job           TEXT NOT NULL,
    batch_id      TEXT NOT NULL,
    arguments     TEXT NOT NULL,
    state         TEXT NOT NULL,
    error         TEXT,
    started_at    INTEGER NOT NULL,
    finished_at   INTEGER,
    claim         TEXT,
    claimed_until INTEGER
);
CREATE INDEX IF NOT EXISTS job_runs_by_batch ON job_runs (job, batch_id, started_at);

CREATE TABLE IF NOT EXISTS extract_keys (
    extract    TEXT NOT NULL,
    key        TEXT NOT NULL,
    valid_from TEXT,
    valid_to   TEXT,
    enabled    INTEGER NOT NULL,
    params     TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (extract, key)
);

CREATE TABLE IF NOT EXISTS extract_schedules (
    extract TEXT PRIMARY KEY,
    since   INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS extract_ticks (
    tick_id       TEXT PRIMARY KEY,
    extract       TEXT NOT NULL,
    slot          INTEGER NOT NULL,
    manual        INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    fanned_out_at INTEGER
);
CREATE INDEX IF NOT EXISTS extract_ticks_by_slot ON extract_ticks (extract, manual, slot);

CREATE TABLE IF NOT EXISTS extract_units (
    tick_id       TEXT NOT NULL,
    extract       TEXT NOT NULL,
    key           TEXT NOT NULL,
    state         TEXT NOT NULL,
    attempts      INTEGER NOT NULL,
    reason        TEXT,
    object_key    TEXT,
    rows          INTEGER,
    holder        TEXT,
    claimed_until INTEGER,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (tick_id, key)
);
"#;

/// An error inside a database closure: SQL, or a port error decided by the closure itself.
#[derive(Debug)]
pub(crate) enum DbError {
    Sql(rusqlite::Error),
    Port(PortError),
}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        DbError::Sql(e)
    }
}

impl From<PortError> for DbError {
    fn from(e: PortError) -> Self {
        DbError::Port(e)
    }
}

impl From<serde_json::Error> for DbError {
    fn from(e: serde_json::Error) -> Self {
        DbError::Sql(rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
    }
}

/// Maps a SQLite error to a port error: a busy or locked database (or a failing disk) is transient,
/// anything else — a constraint, a malformed row — is permanent.
pub(crate) fn sql_error(op: &'static str, target: &str, e: rusqlite::Error) -> PortError {
    let transient = matches!(
        e.sqlite_error_code(),
        Some(
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::SystemIoFailure
                | ErrorCode::DiskFull
                | ErrorCode::CannotOpen
        )
    );
    if transient {
        PortError::transient(op, target, format!("sqlite: {e}"))
    } else {
        PortError::permanent(op, target, format!("sqlite: {e}"))
    }
}

/// The shared database handle.
pub(crate) struct Db {
    /// The writer thread's inbox; the thread ends when the last handle goes.
    writes: Mutex<mpsc::Sender<Job>>,
    /// What the writer calls when another connection (another process) committed.
    foreign: Arc<OnceLock<ForeignCommit>>,
    /// The connection reads use.
    reader: Mutex<Connection>,
    path: PathBuf,
}

/// How long an open keeps trying a database that is busy.
const OPEN_PATIENCE: Duration = Duration::from_secs(10);

/// The most writes one group commit takes.
const GROUP: usize = 128;
/// How often the writer looks for another process's commits, busy or idle.
const PROBE: Duration = Duration::from_millis(10);

type ForeignCommit = Box<dyn Fn() + Send + Sync>;

type Erased = Box<dyn Any + Send>;
/// A write as the writer thread runs it.
type Run = Box<dyn FnOnce(&Transaction<'_>) -> Result<Erased, DbError> + Send>;
/// Where a write's outcome goes.
type Reply = Box<dyn FnOnce(Result<Erased, PortError>) + Send>;

/// One write for the writer thread: the closure, type-erased, and where its outcome goes.
struct Job {
    op: &'static str,
    target: String,
    run: Run,
    reply: Reply,
}

/// The writer thread: group commits until every sender is gone. Between groups, and every
/// [`PROBE`] while idle, it reads `PRAGMA data_version`, which changes on this connection only when
/// *another* connection committed: another process's sends, which wake none of this process's long
/// polls by themselves.
fn writer(mut conn: Connection, inbox: mpsc::Receiver<Job>, foreign: Arc<OnceLock<ForeignCommit>>) {
    let mut seen = data_version(&conn);
    let mut probed = std::time::Instant::now();
    loop {
        match inbox.recv_timeout(PROBE) {
            Ok(first) => {
                let mut jobs = vec![first];
                while jobs.len() < GROUP {
                    match inbox.try_recv() {
                        Ok(job) => jobs.push(job),
                        Err(_) => break,
                    }
                }
                commit_group(&mut conn, jobs);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        if probed.elapsed() >= PROBE {
            probed = std::time::Instant::now();
            let now = data_version(&conn);
            if now != seen
                && let Some(wake) = foreign.get()
            {
                wake();
            }
            seen = now;
        }
    }
}

fn data_version(conn: &Connection) -> Option<i64> {
    conn.prepare_cached("PRAGMA data_version")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .ok()
}

/// Runs `jobs` in one transaction, each in a savepoint of its own, commits, then answers each.
fn commit_group(conn: &mut Connection, jobs: Vec<Job>) {
    let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let e = e.to_string();
            for job in jobs {
                let cause = rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                    Some(e.clone()),
                );
                (job.reply)(Err(sql_error(job.op, &job.target, cause)));
            }
            return;
        }
    };
    let mut done = Vec::with_capacity(jobs.len());
    for job in jobs {
        let outcome = run_in_savepoint(&tx, job.run);
        let outcome = match outcome {
            Ok(v) => Ok(v),
            Err(DbError::Sql(e)) => Err(sql_error(job.op, &job.target, e)),
            Err(DbError::Port(e)) => Err(e),
        };
        done.push((job.op, job.target, job.reply, outcome));
    }
    let committed = tx.commit();
    for (op, target, reply, outcome) in done {
        let outcome = match &committed {
            Ok(()) => outcome,
            // Nothing of the group is durable: every write is retried by its caller.
            Err(e) => Err(PortError::transient(
                op,
                &target,
                format!("sqlite commit: {e}"),
            )),
        };
        reply(outcome);
    }
}

/// Runs one write in a savepoint: kept if it returns `Ok`, rolled back alone if not (or if it
/// panics, which fails that write only).
fn run_in_savepoint(tx: &Transaction<'_>, run: Run) -> Result<Erased, DbError> {
    tx.prepare_cached("SAVEPOINT job")?.execute([])?;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(tx)))
        .unwrap_or_else(|_| {
            Err(DbError::Sql(rusqlite::Error::ToSqlConversionFailure(
                "the write panicked".into(),
            )))
        });
    if outcome.is_err() {
        tx.prepare_cached("ROLLBACK TO job")?.execute([])?;
    }
    tx.prepare_cached("RELEASE job")?.execute([])?;
    outcome
}

impl Db {
    /// Opens (creating if needed) the database at `path`, sets the pragmas and creates the schema.
    #[cfg(test)]
    pub(crate) fn open(path: &Path) -> Result<Arc<Db>, PortError> {
        Db::open_with(path, Durability::default())
    }

    /// As [`Db::open`], with commits synced as `durability` says. Processes opening one new file at
    /// once race to switch it to WAL and create the schema, and SQLite answers some of those races
    /// with "database is locked" at once rather than waiting: a busy open is tried again for up to
    /// [`OPEN_PATIENCE`].
    pub(crate) fn open_with(path: &Path, durability: Durability) -> Result<Arc<Db>, PortError> {
        let started = std::time::Instant::now();
        loop {
            match Db::try_open(path, durability) {
                Err(e) if e.is_retryable() && started.elapsed() < OPEN_PATIENCE => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                other => return other,
            }
        }
    }

    fn try_open(path: &Path, durability: Durability) -> Result<Arc<Db>, PortError> {
        let target = path.display().to_string();
        let err = |e| sql_error("open", &target, e);
        let mut conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(PortError::permanent(
                "open",
                &target,
                format!("could not switch to WAL mode (journal_mode is {mode})"),
            ));
        }
        // In WAL mode, NORMAL writes each commit to the log before it returns (a killed process loses
        // nothing: the log is the operating system's) and syncs the log at checkpoints; FULL syncs
        // every commit. A sync costs milliseconds on ordinary disks, which would cap the whole
        // pipeline at a few hundred commits a second. See `LocalSettings::durability`.
        let synchronous = match durability {
            Durability::Process => "NORMAL",
            Durability::Power => "FULL",
        };
        conn.pragma_update(None, "synchronous", synchronous)
            .map_err(err)?;
        // Hot pages stay in memory (64 MiB at most), temporary b-trees too.
        conn.pragma_update(None, "cache_size", -65536)
            .map_err(err)?;
        conn.pragma_update(None, "temp_store", "MEMORY")
            .map_err(err)?;
        // Checkpoint every 16 MiB of log rather than 4: a page written by many commits is copied
        // back once.
        conn.pragma_update(None, "wal_autocheckpoint", 4096)
            .map_err(err)?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let version: i64 = tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(err)?;
        if version > SCHEMA_VERSION {
            return Err(PortError::permanent(
                "open",
                &target,
                format!(
                    "database schema version {version} is newer than this build's ({SCHEMA_VERSION})"
                ),
            ));
        }
        if version == 1 {
            // Version 2 added the sweep's note on file records (and the alerts table, which SCHEMA
            // creates).
            tx.execute_batch("ALTER TABLE files ADD COLUMN sweep TEXT")
                .map_err(err)?;
        }
        if (1..3).contains(&version) {
            // Version 3 added what direct cataloguing records on a table, the partitions table and
            // the crawl history (`crawl_runs`; crawls before the upgrade are not in it), the new
            // tables created by SCHEMA.
            tx.execute_batch(
                "ALTER TABLE catalog ADD COLUMN types TEXT;
                 ALTER TABLE catalog ADD COLUMN partition_keys TEXT;
                 ALTER TABLE catalog ADD COLUMN format TEXT;",
            )
            .map_err(err)?;
        }
        if (1..4).contains(&version) {
            // Version 4 dropped the unique indexes on messages' ids and receipts (a write each per
            // send, receive and delete): the table is copied into one without them. A receipt handed
            // out before lacks the `seq.` prefix, so deleting with it does nothing and its message
            // comes back once — a harmless duplicate.
            tx.execute_batch(
                "CREATE TABLE messages_v4 (
                     seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, queue TEXT NOT NULL,
                     body TEXT NOT NULL, attributes TEXT NOT NULL, sent_at INTEGER NOT NULL,
                     visible_at INTEGER NOT NULL, receive_count INTEGER NOT NULL DEFAULT 0,
                     first_received_at INTEGER, receipt TEXT);
                 INSERT INTO messages_v4 SELECT seq, id, queue, body, attributes, sent_at, visible_at,
                     receive_count, first_received_at, receipt FROM messages;
                 DROP TABLE messages;
                 ALTER TABLE messages_v4 RENAME TO messages;",
            )
            .map_err(err)?;
        }
        if (1..5).contains(&version) {
            // Version 5 added the pin of the bytes a file record is about (JSON; NULL for older
            // records, which go by key).
            tx.execute_batch("ALTER TABLE files ADD COLUMN pin TEXT")
                .map_err(err)?;
        }
        tx.execute_batch(SCHEMA).map_err(err)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(err)?;
        tx.commit().map_err(err)?;

        let reader = Connection::open(path).map_err(err)?;
        reader.busy_timeout(Duration::from_secs(5)).map_err(err)?;
        reader
            .pragma_update(None, "query_only", "ON")
            .map_err(err)?;
        reader
            .pragma_update(None, "cache_size", -16384)
            .map_err(err)?;
        let (writes, inbox) = mpsc::channel();
        let foreign = Arc::new(OnceLock::new());
        let wake = Arc::clone(&foreign);
        std::thread::Builder::new()
            .name("choreo-db-writer".into())
            .spawn(move || writer(conn, inbox, wake))
            .map_err(|e| PortError::permanent("open", &target, e))?;
        Ok(Arc::new(Db {
            writes: Mutex::new(writes),
            foreign,
            reader: Mutex::new(reader),
            path: path.to_path_buf(),
        }))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Has the writer call `wake` whenever another connection committed (set once; later calls are
    /// ignored).
    pub(crate) fn on_foreign_commit(&self, wake: ForeignCommit) {
        let _ = self.foreign.set(wake);
    }

    /// Reads with `f` on this thread (for synchronous callers: `open`, inspection helpers).
    pub(crate) fn blocking<T>(
        &self,
        op: &'static str,
        target: &str,
        f: impl FnOnce(&Connection) -> Result<T, DbError>,
    ) -> Result<T, PortError> {
        let conn = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        match f(&conn) {
            Ok(v) => Ok(v),
            Err(DbError::Sql(e)) => Err(sql_error(op, target, e)),
            Err(DbError::Port(e)) => Err(e),
        }
    }

    /// Reads with `f` in a blocking task. Errors name `op` and `target`.
    pub(crate) async fn call<T, F>(
        self: &Arc<Self>,
        op: &'static str,
        target: impl Into<String>,
        f: F,
    ) -> Result<T, PortError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, DbError> + Send + 'static,
    {
        let target = target.into();
        let db = Arc::clone(self);
        let t = target.clone();
        let clock = CallerClock::read();
        let joined = tokio::task::spawn_blocking(move || {
            let _clock = clock.install();
            db.blocking(op, &t, f)
        })
        .await;
        joined.unwrap_or_else(|e| {
            Err(PortError::permanent(
                op,
                target,
                format!("database task failed: {e}"),
            ))
        })
    }

    /// Hands `f` to the writer thread; `reply` gets its outcome once it is committed.
    fn submit<T, F>(
        &self,
        op: &'static str,
        target: &str,
        f: F,
        reply: Reply,
    ) -> Result<(), PortError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, DbError> + Send + 'static,
    {
        let clock = CallerClock::read();
        let job = Job {
            op,
            target: target.to_string(),
            run: Box::new(move |tx| {
                let _clock = clock.install();
                f(tx).map(|v| Box::new(v) as Erased)
            }),
            reply,
        };
        let writes = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        writes
            .send(job)
            .map_err(|_| PortError::permanent(op, target, "the database writer has stopped"))
    }

    fn answered<T: 'static>(
        op: &'static str,
        target: &str,
        answer: Option<Result<Erased, PortError>>,
    ) -> Result<T, PortError> {
        match answer {
            Some(Ok(v)) => Ok(*v
                .downcast::<T>()
                .expect("a write answers with its own type")),
            Some(Err(e)) => Err(e),
            None => Err(PortError::permanent(
                op,
                target,
                "the database writer stopped before answering",
            )),
        }
    }

    /// Runs `f` inside a `BEGIN IMMEDIATE` transaction (a savepoint of the writer's group commit),
    /// returning once it is committed; `Err` from `f` rolls back its changes only.
    pub(crate) async fn write<T, F>(
        self: &Arc<Self>,
        op: &'static str,
        target: impl Into<String>,
        f: F,
    ) -> Result<T, PortError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, DbError> + Send + 'static,
    {
        let target = target.into();
        let (reply, answer) = tokio::sync::oneshot::channel();
        let reply = Box::new(move |outcome| {
            let _ = reply.send(outcome);
        });
        self.submit(op, &target, f, reply)?;
        let answer = if clock::is_replaced() {
            // On a test's paused clock, a wait tokio cannot see would let it jump ahead to the next
            // timer mid-write; a blocking task holds it still, as SQLite's own time would.
            tokio::task::spawn_blocking(move || answer.blocking_recv().ok())
                .await
                .ok()
                .flatten()
        } else {
            answer.await.ok()
        };
        Self::answered(op, &target, answer)
    }

    /// As [`Db::write`], waiting on this thread (for synchronous callers: `open`, the object store's
    /// blocking tasks).
    pub(crate) fn write_blocking<T, F>(
        &self,
        op: &'static str,
        target: &str,
        f: F,
    ) -> Result<T, PortError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, DbError> + Send + 'static,
    {
        let (reply, answer) = mpsc::sync_channel(1);
        let reply = Box::new(move |outcome| {
            let _ = reply.send(outcome);
        });
        self.submit(op, target, f, reply)?;
        Self::answered(op, target, answer.recv().ok())
    }
}

/// Milliseconds since the epoch, the unit of every timestamp the queues and leases compare.
pub(crate) fn now_ms() -> i64 {
    clock::now_ms()
}

/// The caller's clock, carried to the thread that runs its statement. Only a replaced clock (a
/// test's) is carried, frozen at the moment the statement was handed over; otherwise the statement
/// reads the system clock when it runs, as it always did.
struct CallerClock(Option<DateTime<Utc>>);

impl CallerClock {
    fn read() -> CallerClock {
        CallerClock(clock::is_replaced().then(clock::now))
    }

    fn install(self) -> Option<clock::Replaced> {
        self.0.map(|at| clock::set_source(move || at))
    }
}

pub(crate) fn from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// A duration in whole milliseconds, saturating.
pub(crate) fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
}

/// Timestamps stored as text: RFC 3339 with as many fractional digits as needed, so they round-trip.
pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

pub(crate) fn parse_ts(s: &str) -> Result<DateTime<Utc>, DbError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| DbError::Sql(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))
}

/// A text column that should have held JSON or an enum name but did not.
pub(crate) fn bad_column(what: &str, value: &str) -> DbError {
    DbError::Sql(rusqlite::Error::InvalidColumnType(
        0,
        format!("{what}: {value:?}"),
        rusqlite::types::Type::Text,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_twice_sets_wal_and_keeps_the_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("choreo.db");
        let a = Db::open(&path).unwrap();
        let _b = Db::open(&path).unwrap();
        let conn = Connection::open(&path).unwrap();
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode.to_lowercase(), "wal");
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        drop(conn);
        assert_eq!(a.path(), path.as_path());
    }

    #[test]
    fn a_version_1_database_gains_the_sweep_column_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("choreo.db");
        // A version-1 database: no `sweep` column, no alerts table, one file.
        {
            let _db = Db::open(&path).unwrap();
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "ALTER TABLE files DROP COLUMN pin; ALTER TABLE files DROP COLUMN sweep; DROP TABLE alerts;
                 ALTER TABLE catalog DROP COLUMN types;
                 ALTER TABLE catalog DROP COLUMN partition_keys;
                 ALTER TABLE catalog DROP COLUMN format; DROP TABLE partitions;
                 INSERT INTO files (id, dataset, bucket, key, size, version, state,
                                    created_at, updated_at, history)
                 VALUES ('f-1', 'd', 'in', 'k', 1, 'v', 'NEW', 't', 't', '[]');
                 PRAGMA user_version = 1;",
            )
            .unwrap();
        }
        let _db = Db::open(&path).unwrap();
        let conn = Connection::open(&path).unwrap();
        let (id, sweep): (String, Option<String>) = conn
            .query_row("SELECT id, sweep FROM files", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((id.as_str(), sweep), ("f-1", None));
        let alerts: i64 = conn
            .query_row("SELECT COUNT(*) FROM alerts", [], |r| r.get(0))
            .unwrap();
        assert_eq!(alerts, 0);
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
    }

    #[test]
    fn a_version_2_database_gains_the_catalog_columns_and_crawl_history_and_keeps_its_tables() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("choreo.db");
        // A version-2 database: a crawled table, no direct-catalogue columns, no partitions table,
        // no crawl history.
        {
            let _db = Db::open(&path).unwrap();
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "ALTER TABLE files DROP COLUMN pin; DROP TABLE crawl_runs;
                 INSERT INTO crawls (crawler, state, last_status, started_at, finished_at)
                 VALUES ('c', 'READY', 'SUCCEEDED', 1, 2);
                 ALTER TABLE catalog DROP COLUMN types;
                 ALTER TABLE catalog DROP COLUMN partition_keys;
                 ALTER TABLE catalog DROP COLUMN format; DROP TABLE partitions;
                 INSERT INTO catalog (dataset, crawler, columns, files, location, updated_at)
                 VALUES ('d', 'd-crawler', '[\"id\"]', 1, 'in/d/', '2026-11-26T00:00:00Z');
                 PRAGMA user_version = 2;",
            )
            .unwrap();
        }
        let _db = Db::open(&path).unwrap();
        let conn = Connection::open(&path).unwrap();
        let runs: i64 = conn
            .query_row("SELECT COUNT(*) FROM crawl_runs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(runs, 0, "the history starts empty");
        let state: String = conn
            .query_row("SELECT state FROM crawls WHERE crawler = 'c'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(state, "READY");
        let tables = crate::catalog::tables(&conn, None).map_err(|_| ()).unwrap();
        assert_eq!(tables.len(), 1);
        assert_eq!(tables[0].columns, ["id"]);
        assert_eq!(
            (tables[0].types.clone(), tables[0].partition_keys.len()),
            (None, 0)
        );
        let partitions: i64 = conn
            .query_row("SELECT COUNT(*) FROM partitions", [], |r| r.get(0))
            .unwrap();
        assert_eq!(partitions, 0);
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
    }

    #[test]
    fn a_version_3_database_keeps_its_messages_without_the_unique_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("choreo.db");
        {
            let _db = Db::open(&path).unwrap();
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "ALTER TABLE files DROP COLUMN pin; DROP TABLE messages;
                 CREATE TABLE messages (
                     seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
                     queue TEXT NOT NULL, body TEXT NOT NULL, attributes TEXT NOT NULL,
                     sent_at INTEGER NOT NULL, visible_at INTEGER NOT NULL,
                     receive_count INTEGER NOT NULL DEFAULT 0, first_received_at INTEGER,
                     receipt TEXT UNIQUE);
                 INSERT INTO messages (id, queue, body, attributes, sent_at, visible_at)
                 VALUES ('m-1', 'q', 'hello', '{}', 1, 1);
                 PRAGMA user_version = 3;",
            )
            .unwrap();
        }
        let _db = Db::open(&path).unwrap();
        let conn = Connection::open(&path).unwrap();
        let (seq, body): (i64, String) = conn
            .query_row("SELECT seq, body FROM messages", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((seq, body.as_str()), (1, "hello"));
        let unique: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM pragma_index_list('messages') WHERE \"unique\" = 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(unique, 0);
        conn.execute(
            "INSERT INTO messages (id, queue, body, attributes, sent_at, visible_at)
             VALUES ('m-2', 'q', 'again', '{}', 2, 2)",
            [],
        )
        .unwrap();
        let next: i64 = conn
            .query_row("SELECT MAX(seq) FROM messages", [], |r| r.get(0))
            .unwrap();
        assert_eq!(next, 2, "the sequence goes on");
    }

    #[test]
    fn processes_opening_one_new_file_at_once_all_get_it() {
        for round in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("choreo.db");
            let start = Arc::new(std::sync::Barrier::new(4));
            let openers: Vec<_> = (0..4)
                .map(|_| {
                    let (path, start) = (path.clone(), Arc::clone(&start));
                    std::thread::spawn(move || {
                        start.wait();
                        Db::open(&path).map(drop)
                    })
                })
                .collect();
            for o in openers {
                o.join()
                    .unwrap()
                    .unwrap_or_else(|e| panic!("round {round}: {e}"));
            }
        }
    }

    #[test]
    fn busy_is_transient_and_constraints_are_not() {
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        );
        assert!(sql_error("op", "t", busy).is_retryable());
        let constraint = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT),
            None,
        );
        assert!(!sql_error("op", "t", constraint).is_retryable());
    }

    #[test]
    fn timestamps_round_trip() {
        let t = choreo_domain::clock::now();
        assert_eq!(parse_ts(&ts(t)).unwrap(), t);
    }
}
