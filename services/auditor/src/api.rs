//! The auditor's HTTP API: JSON views over the state store, the audit trail and the queues, and the
//! dashboard that reads them.
//!
//! | route | answers |
//! |---|---|
//! | `GET /health` | `ok`, with no token: for load balancers |
//! | `GET /`, `/dashboard.js`, `/dashboard.css` | the dashboard's static page, with no token (it holds no data; it asks for the token and calls the routes below with it) |
//! | `GET /api/datasets` | files per dataset and state, and throughput |
//! | `GET /api/flow?dataset=` | the choreography as a graph: backlog and rate per edge, work per stage, see [`crate::flow`] |
//! | `GET /api/charts/terminal?dataset=&minutes=` | files reaching each terminal state per minute, see [`crate::charts`] |
//! | `GET /api/charts/latency?dataset=&minutes=` | p50 and p95 of the time each stage holds a file |
//! | `GET /api/files?dataset=&state=&key=&limit=&after=` | file summaries in id order, a page at a time |
//! | `GET /api/files?order=recent&dataset=&state=&key=&since=&until=&limit=&before=` | the same, newest first |
//! | `GET /api/files/{id}` | one file with its history, trace id and `trace_url` |
//! | `GET /api/files/{id}/report` | an invalid file's validation report |
//! | `GET /api/batches/{id}` | one batch: its files, its crawl, its job run |
//! | `GET /api/queues` | every work queue's depth, in-flight count and its dead-letter queue's depth |
//! | `GET /api/failures?n=` | the latest rejections and batch failures |
//! | `GET /api/failures/reasons?dataset=` | the same, grouped by reason |
//! | `GET /api/dlq`, `GET /api/dlq/{stage}?n=`, `POST /api/dlq/{stage}/redrive` | dead letters, see [`crate::dlq_routes`] |
//! | `/api/extracts/...` | scheduled extracts' keys, ticks and units, see [`crate::extract_routes`] |
//!
//! Every `/api` route requires `Authorization: Bearer <operations.api_token>` and answers 401 with
//! no body otherwise.

use crate::auth::{Token, require_bearer};
use crate::{charts, dashboard, dlq_routes, flow, throughput};
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use choreo_domain::clock;
use choreo_domain::{Batch, Config, Envelope, Event, FileId, FileState, Stage};
use choreo_ports::{FileQuery, PortError, Ports};
use choreo_telemetry::events::emit;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// What the API reads from.
#[derive(Clone)]
pub struct Api {
    pub ports: Ports,
    pub config: Arc<Config>,
    /// The files per dataset and state as last counted, and when (see [`Api::file_counts`]).
    counts: Arc<tokio::sync::Mutex<Option<(std::time::Instant, FileCounts)>>>,
}

type FileCounts = Vec<(String, FileState, u64)>;

/// How long a count of the files serves the pages on AWS, where counting is a Scan of the whole
/// state table (a read unit per 8 KB of table: about $0.16 at ten million files): at most one a
/// replica every five minutes, however many pages are open. Locally a count is a SQLite query.
const COUNTS_KEPT_ON_AWS: Duration = Duration::from_secs(300);

impl Api {
    pub fn new(ports: Ports, config: Arc<Config>) -> Api {
        Api {
            ports,
            config,
            counts: Arc::default(),
        }
    }

    /// The state store's files per dataset and state, read again once the last count is older
    /// than [`COUNTS_KEPT_ON_AWS`] on AWS (every time locally). Pages asking at once share one
    /// reading.
    pub async fn file_counts(&self) -> Result<FileCounts, PortError> {
        let ttl = match self.config.backend {
            choreo_domain::config::BackendKind::Aws => COUNTS_KEPT_ON_AWS,
            choreo_domain::config::BackendKind::Local => Duration::ZERO,
        };
        let mut kept = self.counts.lock().await;
        if let Some((at, counts)) = kept.as_ref()
            && at.elapsed() < ttl
        {
            return Ok(counts.clone());
        }
        let counts = self.ports.state.counts().await?;
        *kept = Some((std::time::Instant::now(), counts.clone()));
        Ok(counts)
    }
}

/// The whole HTTP surface: `/health`, the dashboard, and the token-guarded `/api`, each request
/// answered within `operations.request_timeout_secs`.
pub fn router(api: Api) -> Router {
    let limit = Duration::from_secs(api.config.operations.request_timeout_secs.max(1));
    let token = Token::new(api.config.operations.api_token.as_deref());
    let guarded = Router::new()
        .route("/datasets", get(datasets))
        .route("/flow", get(flow::flow))
        .route("/charts/terminal", get(charts::series))
        .route("/charts/latency", get(charts::latency))
        .route("/files", get(files))
        .route("/files/{id}", get(file))
        .route("/files/{id}/report", get(report))
        .route("/batches/{id}", get(batch))
        .route("/queues", get(queues))
        .route("/failures", get(failures))
        .route("/failures/reasons", get(failure_reasons))
        .merge(dlq_routes::router())
        .merge(crate::extract_routes::router())
        // A fallback of its own, under the token like the routes: unknown `/api` paths answer
        // 401 too, so probing shows nothing.
        .fallback(|| async { StatusCode::NOT_FOUND })
        .with_state(api)
        .layer(axum::middleware::from_fn_with_state(token, require_bearer));
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .merge(dashboard::router())
        .nest("/api", guarded)
        .layer(axum::middleware::from_fn_with_state(limit, time_limit))
}

/// Middleware: answers 503 if the request is not answered within `limit` (reading its body
/// included), dropping the work. tower's `TimeoutLayer` does the same, but its `timeout` feature
/// would rebuild the AWS SDK, which shares our tower.
async fn time_limit(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            emit(crate::events::ApiRequestTimeout { limit });
            ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the request took longer than {} s", limit.as_secs()),
            )
            .into_response()
        }
    }
}

/// An error answered as `{"error": message}`.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, message.into())
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError(StatusCode::NOT_FOUND, message.into())
    }
}

impl From<PortError> for ApiError {
    fn from(e: PortError) -> Self {
        emit(crate::events::ApiStoreError { error: &e });
        ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

#[derive(Serialize)]
pub struct Datasets {
    /// Every state, in pipeline order: the columns of the overview.
    states: &'static [FileState],
    datasets: Vec<DatasetView>,
    /// The hour's throughput may be short: more events happened than were read.
    throughput_partial: bool,
}

#[derive(Serialize)]
struct DatasetView {
    name: String,
    /// Files per state; every state is present, zero or not.
    counts: BTreeMap<FileState, u64>,
    total: u64,
    throughput: throughput::Throughput,
}

async fn datasets(State(api): State<Api>) -> ApiResult<Datasets> {
    let counts = api.file_counts().await?;
    let recent = api.ports.audit.recent(throughput::SCAN).await?;
    Ok(Json(overview(&api.config, &counts, &recent, clock::now())))
}

/// Files per dataset and state with throughput, from the store's counts and the newest audit
/// entries: configured datasets first (in configuration order, even without files), then any
/// other dataset the store has files for.
pub fn overview(
    config: &Config,
    counts: &[(String, FileState, u64)],
    recent: &[choreo_ports::AuditEntry],
    now: DateTime<Utc>,
) -> Datasets {
    let (rates, throughput_partial) = throughput::from_audit(recent, now, throughput::SCAN);
    let mut names: Vec<String> = config.datasets.iter().map(|d| d.name.clone()).collect();
    for (d, _, _) in counts {
        if !names.contains(d) {
            names.push(d.clone());
        }
    }
    let datasets = names
        .into_iter()
        .map(|name| {
            let mut by_state: BTreeMap<FileState, u64> =
                FileState::ALL.iter().map(|&s| (s, 0)).collect();
            for (_, s, n) in counts.iter().filter(|(d, _, _)| *d == name) {
                *by_state.entry(*s).or_default() += n;
            }
            DatasetView {
                total: by_state.values().sum(),
                throughput: rates.get(&name).copied().unwrap_or_default(),
                counts: by_state,
                name,
            }
        })
        .collect();
    Datasets {
        states: FileState::ALL,
        datasets,
        throughput_partial,
    }
}

#[derive(Deserialize)]
struct FilesParams {
    dataset: Option<String>,
    state: Option<String>,
    /// A substring of the object key.
    key: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
    /// `recent` for newest first; id order otherwise.
    order: Option<String>,
    /// Newest first only: files updated at or after this time (RFC 3339).
    since: Option<DateTime<Utc>>,
    /// Newest first only: files updated before this time (RFC 3339).
    until: Option<DateTime<Utc>>,
    /// Newest first only: the `next` of the previous page.
    before: Option<String>,
}

/// Files per page, unless asked otherwise; and the most a page may hold.
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 500;
/// With a key filter, the most records one request reads: the store has no index on keys.
const KEY_SCAN: usize = 5000;
/// Newest first, the most records one request reads: the store has no index on update time, so
/// the files are read (filtered by dataset and state in the store) and sorted here.
pub const RECENT_SCAN: usize = 5000;

#[derive(Serialize)]
struct FilesPage {
    items: Vec<FileSummary>,
    /// Pass as `after` (id order) or `before` (newest first) for the next page; absent on the last.
    next: Option<String>,
    /// Newest first only: whether every file matching the store's filters was read. When not,
    /// the order holds among the [`RECENT_SCAN`] files read, and newer files may be missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    read_all: Option<bool>,
}

/// A file without its history: what a list shows.
#[derive(Serialize)]
pub struct FileSummary {
    id: FileId,
    dataset: String,
    key: String,
    state: FileState,
    size: u64,
    reason: Option<String>,
    updated_at: DateTime<Utc>,
}

impl From<choreo_domain::FileRecord> for FileSummary {
    fn from(r: choreo_domain::FileRecord) -> Self {
        FileSummary {
            id: r.id,
            dataset: r.dataset,
            key: r.key,
            state: r.state,
            size: r.size,
            reason: r.reason,
            updated_at: r.updated_at,
        }
    }
}

/// Files filtered by dataset and state in the store, in id order or newest first (`order=recent`).
///
/// In id order, a key filter is applied to what the store returns, reading at most [`KEY_SCAN`]
/// records: a page may then hold fewer than `limit` files while `next` is set, and following
/// `next` continues the scan.
async fn files(State(api): State<Api>, Query(p): Query<FilesParams>) -> ApiResult<FilesPage> {
    let state = match p.state.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => Some(
            s.parse::<FileState>()
                .map_err(|e| ApiError::bad_request(e.to_string()))?,
        ),
        None => None,
    };
    let limit = p.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let key = p.key.filter(|k| !k.is_empty());
    let mut query = FileQuery {
        dataset: p.dataset.filter(|d| !d.is_empty()),
        state,
        limit,
        after: p.after.filter(|a| !a.is_empty()),
    };
    match p.order.as_deref() {
        None | Some("") | Some("id") => {}
        Some("recent") => {
            let window = (p.since, p.until);
            let before = match p.before.as_deref().filter(|b| !b.is_empty()) {
                Some(b) => Some(RecentCursor::parse(b)?),
                None => None,
            };
            query.after = None;
            query.limit = MAX_PAGE;
            return recent_files(&api, query, key, window, before, limit).await;
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unknown order {other:?}: id or recent"
            )));
        }
    }
    let mut items = Vec::new();
    let mut scanned = 0;
    loop {
        let page = api.ports.state.list(&query).await?;
        scanned += page.items.len();
        for r in page.items {
            if items.len() == limit {
                // A full page: the next one starts after the last record read.
                return Ok(Json(FilesPage {
                    items,
                    next: query.after,
                    read_all: None,
                }));
            }
            query.after = Some(r.id.0.clone());
            if key.as_ref().is_none_or(|k| r.key.contains(k.as_str())) {
                items.push(r.into());
            }
        }
        match page.next {
            None => {
                return Ok(Json(FilesPage {
                    items,
                    next: None,
                    read_all: None,
                }));
            }
            Some(_) if items.len() == limit || scanned >= KEY_SCAN => {
                return Ok(Json(FilesPage {
                    items,
                    next: query.after,
                    read_all: None,
                }));
            }
            Some(next) => query.after = Some(next),
        }
    }
}

/// Where a newest-first page ends: the last file's update time and id (ids break ties), written
/// `<RFC 3339 time>~<id>`. Keyed on values rather than a position, a page reloaded later still
/// starts where it did, whatever moved meanwhile.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct RecentCursor(DateTime<Utc>, String);

impl RecentCursor {
    fn of(f: &FileSummary) -> RecentCursor {
        RecentCursor(f.updated_at, f.id.0.clone())
    }

    fn parse(s: &str) -> Result<RecentCursor, ApiError> {
        let bad = || ApiError::bad_request(format!("not a cursor: {s:?}"));
        let (at, id) = s.split_once('~').ok_or_else(bad)?;
        let at = DateTime::parse_from_rfc3339(at).map_err(|_| bad())?;
        Ok(RecentCursor(at.to_utc(), id.to_string()))
    }

    fn render(&self) -> String {
        format!(
            "{}~{}",
            self.0.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            self.1
        )
    }
}

/// Newest first: reads at most [`RECENT_SCAN`] records the store's filters match, keeps those the
/// key, the time window and the cursor allow, and answers the newest `limit`.
async fn recent_files(
    api: &Api,
    mut query: FileQuery,
    key: Option<String>,
    (since, until): (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
    before: Option<RecentCursor>,
    limit: usize,
) -> ApiResult<FilesPage> {
    let mut kept = Vec::new();
    let mut scanned = 0;
    let read_all = loop {
        let page = api.ports.state.list(&query).await?;
        scanned += page.items.len();
        kept.extend(
            page.items
                .into_iter()
                .filter(|r| key.as_ref().is_none_or(|k| r.key.contains(k.as_str())))
                .filter(|r| since.is_none_or(|t| r.updated_at >= t))
                .filter(|r| until.is_none_or(|t| r.updated_at < t))
                .map(FileSummary::from)
                .filter(|f| before.as_ref().is_none_or(|b| RecentCursor::of(f) < *b)),
        );
        match page.next {
            None => break true,
            Some(_) if scanned >= RECENT_SCAN => break false,
            Some(next) => query.after = Some(next),
        }
    };
    kept.sort_by(|a, b| RecentCursor::of(b).cmp(&RecentCursor::of(a)));
    let next = (kept.len() > limit).then(|| RecentCursor::of(&kept[limit - 1]).render());
    kept.truncate(limit);
    Ok(Json(FilesPage {
        items: kept,
        next,
        read_all: Some(read_all),
    }))
}

/// One file with its whole history, its trace id, and the trace's address in the configured viewer.
#[derive(Serialize)]
struct FileView {
    #[serde(flatten)]
    record: choreo_domain::FileRecord,
    trace_url: Option<String>,
}

async fn file(State(api): State<Api>, Path(id): Path<String>) -> Result<Json<FileView>, ApiError> {
    match api.ports.state.get(&FileId(id.clone())).await? {
        Some(record) => Ok(Json(FileView {
            trace_url: record
                .trace_id
                .as_deref()
                .and_then(|t| api.config.operations.trace_link(t)),
            record,
        })),
        None => Err(ApiError::not_found(format!("no file {id}"))),
    }
}

/// The most of a report the API reads: the validator keeps a bounded number of errors, so a
/// report is small; this only guards against an object that is not one.
const MAX_REPORT: u64 = 1 << 20;

/// An invalid file's validation report, as the validator stored it: beside the quarantined file
/// in the failed bucket, or in the work bucket before the quarantine mover has moved it. Valid
/// files have none (their summary is on the record).
async fn report(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Some(record) = api.ports.state.get(&FileId(id.clone())).await? else {
        return Err(ApiError::not_found(format!("no file {id}")));
    };
    let buckets = &api.config.buckets;
    let places = [
        (&buckets.failed, record.quarantine_report_key()),
        (&buckets.work, record.report_key()),
    ];
    for (bucket, key) in places {
        let reader = match api.ports.objects.get(bucket, &key, None).await {
            Ok(r) => r,
            Err(e) if e.kind == choreo_ports::PortErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        let mut body = Vec::new();
        reader
            .take(MAX_REPORT)
            .read_to_end(&mut body)
            .await
            .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, format!("{key}: {e}")))?;
        return serde_json::from_slice(&body)
            .map(Json)
            .map_err(|e| ApiError(StatusCode::BAD_GATEWAY, format!("{key}: {e}")));
    }
    Err(ApiError::not_found(format!("file {id} has no report")))
}

/// The most files of a batch the view reads one by one.
const BATCH_FILES: usize = 200;

/// A batch with its files' summaries (the first [`BATCH_FILES`]), when its job ran, and its trace.
#[derive(Serialize)]
struct BatchView {
    #[serde(flatten)]
    batch: Batch,
    file_summaries: Vec<FileSummary>,
    /// When the first of its files read moved to TRANSFORMING: the batch record keeps no time
    /// for its job run, the files' histories do.
    job_started_at: Option<DateTime<Utc>>,
    /// When the last of them left TRANSFORMING.
    job_ended_at: Option<DateTime<Utc>>,
    trace_id: Option<String>,
    trace_url: Option<String>,
}

async fn batch(State(api): State<Api>, Path(id): Path<String>) -> ApiResult<BatchView> {
    let Some(batch) = api.ports.state.get_batch(&id).await? else {
        return Err(ApiError::not_found(format!("no batch {id}")));
    };
    let mut file_summaries = Vec::new();
    let (mut job_started_at, mut job_ended_at) = (None, None);
    for f in batch.files.iter().take(BATCH_FILES) {
        let Some(r) = api.ports.state.get(f).await? else {
            continue;
        };
        // Only this batch's steps: a retried file has run in an earlier batch too.
        for h in r.history.iter().filter(|h| h.at >= batch.created_at) {
            if h.to == FileState::Transforming {
                job_started_at = Some(job_started_at.map_or(h.at, |t: DateTime<Utc>| t.min(h.at)));
            }
            if h.from == Some(FileState::Transforming) {
                job_ended_at = job_ended_at.max(Some(h.at));
            }
        }
        file_summaries.push(r.into());
    }
    let trace_id = batch
        .traceparent
        .as_deref()
        .and_then(choreo_telemetry::trace_id_of)
        .map(str::to_string);
    Ok(Json(BatchView {
        trace_url: trace_id
            .as_deref()
            .and_then(|t| api.config.operations.trace_link(t)),
        trace_id,
        file_summaries,
        job_started_at,
        job_ended_at,
        batch,
    }))
}

#[derive(Serialize)]
pub struct QueueView {
    pub stage: Stage,
    pub queue: String,
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
    pub dlq: DlqDepth,
}

#[derive(Serialize)]
pub struct DlqDepth {
    pub queue: String,
    /// Every message in it: dead letters wait for an operator, whether visible or being peeked.
    pub depth: u64,
}

/// The dead-letter queue of `queue` and how many messages it holds.
async fn dlq_depth(api: &Api, queue: &str) -> Result<DlqDepth, PortError> {
    let name = choreo_domain::config::Queues::dlq_of(queue);
    let depth = api.ports.queues.queue(&name).depth().await?.total();
    Ok(DlqDepth { queue: name, depth })
}

/// Every service's queue with its depths and its dead-letter queue's.
pub async fn queue_views(api: &Api) -> Result<Vec<QueueView>, PortError> {
    let mut out = Vec::new();
    for stage in Stage::SERVICES {
        let name = api.config.queue_of(stage).unwrap_or_default();
        let d = api.ports.queues.queue(name).depth().await?;
        out.push(QueueView {
            stage,
            queue: name.to_string(),
            visible: d.visible,
            in_flight: d.in_flight,
            delayed: d.delayed,
            dlq: dlq_depth(api, name).await?,
        });
    }
    Ok(out)
}

async fn queues(State(api): State<Api>) -> ApiResult<Vec<QueueView>> {
    Ok(Json(queue_views(&api).await?))
}

#[derive(Deserialize)]
struct FailuresParams {
    n: Option<usize>,
    dataset: Option<String>,
}

#[derive(Serialize)]
struct Failure {
    at: DateTime<Utc>,
    event_type: String,
    dataset: String,
    reason: String,
    /// The rejected file, or the failed batch's files.
    files: Vec<FileId>,
    batch_id: Option<String>,
    stage: Option<Stage>,
}

/// The failures (rejected files, failed batches) among `entries`, newest first as they come.
fn failures_in(entries: Vec<choreo_ports::AuditEntry>) -> impl Iterator<Item = Failure> {
    entries.into_iter().filter_map(|e| {
        let envelope: Envelope = serde_json::from_value(e.body).ok()?;
        let (files, batch_id, stage, reason) = match envelope.event {
            Event::FileRejected {
                file_id, reason, ..
            } => (vec![file_id], None, Some(Stage::Validator), reason),
            Event::BatchFailed {
                batch_id,
                stage,
                reason,
                files,
                ..
            } => (files, Some(batch_id), Some(stage), reason),
            _ => return None,
        };
        Some(Failure {
            at: envelope.occurred_at,
            event_type: e.event_type,
            dataset: e.dataset,
            reason,
            files,
            batch_id,
            stage,
        })
    })
}

/// The latest failures (rejected files, failed batches), newest first, from the newest
/// [`throughput::SCAN`] audit entries.
async fn failures(
    State(api): State<Api>,
    Query(p): Query<FailuresParams>,
) -> ApiResult<Vec<Failure>> {
    let n = p.n.unwrap_or(20).clamp(1, 200);
    let dataset = p.dataset.filter(|d| !d.is_empty());
    let recent = api.ports.audit.recent(throughput::SCAN).await?;
    let out = failures_in(recent)
        .filter(|f| dataset.as_ref().is_none_or(|d| *d == f.dataset))
        .take(n)
        .collect();
    Ok(Json(out))
}

/// Failures that share a reason, once the details that differ from file to file are set aside.
#[derive(Serialize, Debug, PartialEq)]
struct ReasonGroup {
    /// What the reasons have in common (see [`reason_group`]).
    reason: String,
    stage: Option<Stage>,
    /// Rejections and batch failures in the group.
    failures: usize,
    files: usize,
    datasets: Vec<String>,
    latest_at: DateTime<Utc>,
    /// The newest reason in full, as an example.
    example: String,
    /// A few of the files, newest first, to open.
    sample_files: Vec<FileId>,
}

/// The part of a reason that groups it: up to its second `:` (the validator's `invalid: <kind>`,
/// a job's `job run failed: <state>`), without what differs between otherwise equal failures:
/// remarks in parentheses (`(after 21 rows)`), quoted values (a key, a field's value) written
/// `"…"`, and numbers (rows, lines, counts, exit codes) written `N`. Numbers inside a word stay:
/// `UTF-8` is a name.
fn reason_group(reason: &str) -> String {
    let head: String = reason.splitn(3, ':').take(2).collect::<Vec<_>>().join(":");
    let mut plain = String::with_capacity(head.len());
    let (mut depth, mut quoted) = (0usize, false);
    for c in head.chars() {
        match c {
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth > 0 => depth -= 1,
            '"' if depth == 0 => {
                quoted = !quoted;
                if quoted {
                    plain.push_str("\"…\"");
                }
            }
            c if depth == 0 && !quoted => plain.push(c),
            _ => {}
        }
    }
    plain
        .split_whitespace()
        .map(|word| {
            let bare = word.trim_end_matches([',', '.', ';']);
            if !bare.is_empty() && bare.chars().all(|c| c.is_ascii_digit()) {
                word.replacen(bare, "N", 1)
            } else {
                word.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Groups failures (newest first) by stage and [`reason_group`], the largest group first.
fn group_by_reason(failures: impl Iterator<Item = Failure>) -> Vec<ReasonGroup> {
    let mut groups: Vec<ReasonGroup> = Vec::new();
    for f in failures {
        let reason = reason_group(&f.reason);
        let i = match groups
            .iter()
            .position(|g| g.reason == reason && g.stage == f.stage)
        {
            Some(i) => i,
            None => {
                groups.push(ReasonGroup {
                    reason,
                    stage: f.stage,
                    failures: 0,
                    files: 0,
                    datasets: Vec::new(),
                    latest_at: f.at,
                    example: f.reason.clone(),
                    sample_files: Vec::new(),
                });
                groups.len() - 1
            }
        };
        let g = &mut groups[i];
        g.failures += 1;
        g.files += f.files.len();
        if !g.datasets.contains(&f.dataset) {
            g.datasets.push(f.dataset);
        }
        let room = 5 - g.sample_files.len().min(5);
        g.sample_files.extend(f.files.into_iter().take(room));
    }
    // Stable: equal groups keep the order of their newest failure.
    groups.sort_by_key(|g| std::cmp::Reverse(g.files));
    groups
}

/// The failures among the newest [`throughput::SCAN`] audit entries, grouped by reason.
async fn failure_reasons(
    State(api): State<Api>,
    Query(p): Query<FailuresParams>,
) -> ApiResult<Vec<ReasonGroup>> {
    let dataset = p.dataset.filter(|d| !d.is_empty());
    let recent = api.ports.audit.recent(throughput::SCAN).await?;
    Ok(Json(group_by_reason(failures_in(recent).filter(|f| {
        dataset.as_ref().is_none_or(|d| *d == f.dataset)
    }))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::entry;
    use axum::body::Body;
    use choreo_domain::{NewFile, Transition};
    use choreo_ports::StateStore;
    use http_body_util::BodyExt;
    use serde_json::Value;
    use tower::ServiceExt;

    const TOKEN: &str = "secret";

    /// The API over a fresh local backend, and its ports to fill.
    async fn app() -> (tempfile::TempDir, Router, Ports) {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        config.operations.api_token = Some(TOKEN.into());
        config.operations.trace_url = Some("http://viewer/{trace_id}".into());
        let backend = choreo_backend::Backend::open(&config).await.unwrap();
        let ports = backend.ports();
        let api = Api::new(ports.clone(), Arc::new(config));
        (dir, router(api), ports)
    }

    async fn get_json(app: &Router, uri: &str) -> (StatusCode, Value) {
        let req = Request::get(uri)
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .unwrap();
        let res = app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// Registers file `n` of `dataset` and moves it along `path`.
    async fn file(store: &dyn StateStore, n: u32, dataset: &str, path: &[(Stage, FileState)]) {
        let id = FileId(format!("f-{n:03}"));
        store
            .register(NewFile {
                id: id.clone(),
                dataset: dataset.into(),
                bucket: "in".into(),
                key: format!("{dataset}/{n}.csv"),
                size: 10,
                version: "v".into(),
                pin: None,
                reason: None,
                trace_id: None,
                traceparent: None,
            })
            .await
            .unwrap();
        let mut from = FileState::New;
        for &(stage, to) in path {
            let mut t = Transition::new(id.clone(), stage, from, to).unwrap();
            if to == FileState::Invalid {
                t = t.reason(format!("invalid: type_error: row {n} is not a number"));
            }
            store.transition(&t).await.unwrap();
            from = to;
        }
    }

    #[tokio::test]
    async fn files_newest_first_page_by_a_cursor_that_survives_new_updates() {
        let (_dir, app, ports) = app().await;
        for n in 0..7 {
            file(ports.state.as_ref(), n, "d", &[]).await;
            // Distinct update times, so newest first is n = 6, 5, ...
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (status, first) = get_json(&app, "/api/files?order=recent&limit=3").await;
        assert_eq!(status, StatusCode::OK, "{first}");
        let ids = |page: &Value| -> Vec<String> {
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["id"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(ids(&first), ["f-006", "f-005", "f-004"]);
        assert_eq!(first["read_all"], true);
        // A file updated after the first page was read moves to the top, and the second page
        // still starts where the first ended.
        file(ports.state.as_ref(), 50, "d", &[]).await;
        let next = first["next"].as_str().unwrap();
        let uri = format!("/api/files?order=recent&limit=3&before={next}");
        let (_, second) = get_json(&app, &uri).await;
        assert_eq!(ids(&second), ["f-003", "f-002", "f-001"]);
        let uri = format!(
            "/api/files?order=recent&limit=3&before={}",
            second["next"].as_str().unwrap()
        );
        let (_, last) = get_json(&app, &uri).await;
        assert_eq!(ids(&last), ["f-000"]);
        assert!(last["next"].is_null());
        // A time window: nothing is newer than now.
        let since = (clock::now() + chrono::TimeDelta::seconds(1))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let (_, none) = get_json(&app, &format!("/api/files?order=recent&since={since}")).await;
        assert_eq!(ids(&none), Vec::<String>::new());
        let (status, _) = get_json(&app, "/api/files?order=sideways").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _) = get_json(&app, "/api/files?order=recent&before=nonsense").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn the_flow_counts_files_waiting_at_each_stage_and_in_each_terminal_state() {
        let (_dir, app, ports) = app().await;
        let state = ports.state.as_ref();
        file(state, 1, "d", &[]).await;
        file(state, 2, "d", &[(Stage::Validator, FileState::Valid)]).await;
        file(state, 3, "e", &[(Stage::Validator, FileState::Valid)]).await;
        let quarantined = [
            (Stage::Validator, FileState::Invalid),
            (Stage::Quarantine, FileState::Quarantined),
        ];
        file(state, 4, "d", &quarantined).await;
        ports
            .audit
            .record(&Envelope::new(Event::FileQuarantined {
                file_id: "f-004".into(),
                dataset: "d".into(),
                bucket: "failed".into(),
                key: "k".into(),
            }))
            .await
            .unwrap();
        let (status, flow) = get_json(&app, "/api/flow?dataset=d").await;
        assert_eq!(status, StatusCode::OK, "{flow}");
        let node = |id: &str| {
            flow["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|n| n["id"] == id)
                .unwrap_or_else(|| panic!("no node {id} in {flow}"))
                .clone()
        };
        assert_eq!(node("validator")["files_waiting"], 1);
        assert_eq!(node("crawler")["files_waiting"], 1, "e's file is not d's");
        assert_eq!(node("QUARANTINED")["files"], 1);
        assert_eq!(node("auditor")["dlq"], 0);
        let edge = flow["edges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["from"] == "quarantine" && e["to"] == "QUARANTINED")
            .unwrap()
            .clone();
        assert_eq!(edge["per_minute"], 1.0 / flow::RATE_WINDOW_MINUTES as f64);
        let (_, all) = get_json(&app, "/api/flow").await;
        assert_eq!(all["counts"]["VALID"], 2);
        assert_eq!(all["shared_queues"], false);
        // The overview and the queues beside it, from the same reads.
        let overview = &all["overview"]["datasets"];
        let d = overview
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "d")
            .unwrap();
        assert_eq!(d["total"], 3);
        assert_eq!(d["throughput"]["last_hour"], 1);
        assert_eq!(all["queues"].as_array().unwrap().len(), 6);
    }

    #[tokio::test]
    async fn failures_group_by_reason_whatever_the_row() {
        let (_dir, app, ports) = app().await;
        for (n, reason) in [
            (1, "invalid: type_error: row 3: \"x\" is not an integer"),
            (
                2,
                "invalid: type_error: row 17: \"y\" is not an integer (and 2 more errors)",
            ),
            (3, "invalid: missing_header: no column id"),
        ] {
            ports
                .audit
                .record(&Envelope::new(Event::FileRejected {
                    file_id: FileId(format!("f-{n}")),
                    dataset: "d".into(),
                    reason: reason.into(),
                }))
                .await
                .unwrap();
        }
        let (status, groups) = get_json(&app, "/api/failures/reasons").await;
        assert_eq!(status, StatusCode::OK, "{groups}");
        let groups = groups.as_array().unwrap();
        assert_eq!(groups.len(), 2, "{groups:?}");
        assert_eq!(groups[0]["reason"], "invalid: type_error");
        assert_eq!(groups[0]["files"], 2);
        assert_eq!(groups[0]["stage"], "validator");
        assert_eq!(groups[1]["reason"], "invalid: missing_header");
        let (_, none) = get_json(&app, "/api/failures/reasons?dataset=other").await;
        assert_eq!(none, serde_json::json!([]));
    }

    #[tokio::test]
    async fn an_invalid_files_report_is_read_from_where_the_validator_or_quarantine_left_it() {
        let (_dir, app, ports) = app().await;
        file(
            ports.state.as_ref(),
            1,
            "d",
            &[(Stage::Validator, FileState::Invalid)],
        )
        .await;
        file(ports.state.as_ref(), 2, "d", &[]).await;
        let record = ports
            .state
            .get(&FileId("f-001".into()))
            .await
            .unwrap()
            .unwrap();
        let work = Config::default().buckets.work;
        let report =
            serde_json::json!({"valid": false, "errors": [{"row": 3, "message": "not a number"}]});
        ports
            .objects
            .put(&work, &record.report_key(), report.to_string().into_bytes())
            .await
            .unwrap();
        let (status, got) = get_json(&app, "/api/files/f-001/report").await;
        assert_eq!(status, StatusCode::OK, "{got}");
        assert_eq!(got, report);
        let (status, _) = get_json(&app, "/api/files/f-002/report").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = get_json(&app, "/api/files/nobody/report").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn a_batch_shows_its_files_and_its_trace() {
        let (_dir, app, ports) = app().await;
        file(
            ports.state.as_ref(),
            1,
            "d",
            &[(Stage::Validator, FileState::Valid)],
        )
        .await;
        let mut b = Batch::new(
            "b-1".into(),
            "d",
            "crawler".into(),
            "job".into(),
            choreo_domain::BatchState::Crawling,
            vec![FileId("f-001".into())],
        );
        b.traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
        assert!(ports.state.create_batch(&b).await.unwrap());
        let (status, got) = get_json(&app, "/api/batches/b-1").await;
        assert_eq!(status, StatusCode::OK, "{got}");
        assert_eq!(got["state"], "CRAWLING");
        assert_eq!(got["file_summaries"][0]["id"], "f-001");
        assert_eq!(got["file_summaries"][0]["state"], "VALID");
        assert_eq!(
            got["trace_url"],
            "http://viewer/4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let (status, _) = get_json(&app, "/api/batches/b-2").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn the_charts_answer_from_the_audit_trail_and_the_histories() {
        let (_dir, app, ports) = app().await;
        let path = [
            (Stage::Validator, FileState::Valid),
            (Stage::Crawler, FileState::Cataloged),
            (Stage::Transformer, FileState::Transforming),
            (Stage::Transformer, FileState::Ingested),
        ];
        file(ports.state.as_ref(), 1, "d", &path).await;
        let ended = entry(
            Event::BatchIngested {
                batch_id: "b".into(),
                dataset: "d".into(),
                files: vec![FileId("f-001".into())],
            },
            clock::now(),
        );
        let envelope: Envelope = serde_json::from_value(ended.body).unwrap();
        ports.audit.record(&envelope).await.unwrap();
        let (status, series) = get_json(&app, "/api/charts/terminal?minutes=5").await;
        assert_eq!(status, StatusCode::OK, "{series}");
        assert_eq!(series["minutes"].as_array().unwrap().len(), 5);
        // In the current minute, or the one before if a minute turned since it was recorded.
        let ingested: Vec<u64> = series["series"]["INGESTED"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_u64().unwrap())
            .collect();
        assert_eq!(ingested[..3], [0, 0, 0], "{series}");
        assert_eq!(ingested[3] + ingested[4], 1, "{series}");
        let (status, latency) = get_json(&app, "/api/charts/latency").await;
        assert_eq!(status, StatusCode::OK, "{latency}");
        assert_eq!(latency["files_read"], 1);
        let stages: Vec<&str> = latency["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["stage"].as_str().unwrap())
            .collect();
        assert_eq!(stages, ["validator", "crawler", "transformer"]);
    }

    #[test]
    fn reasons_group_without_their_numbers_and_details() {
        assert_eq!(
            reason_group("invalid: type_error: row 3 is bad"),
            "invalid: type_error"
        );
        assert_eq!(
            reason_group("job run 42 failed: exit code 2"),
            "job run N failed: exit code N"
        );
        assert_eq!(reason_group("timeout"), "timeout");
        // The same fatal reason, at another line and with or without a remark.
        for reason in [
            "invalid: invalid UTF-8 at line 22 (after 21 rows)",
            "invalid: invalid UTF-8 at line 1",
        ] {
            assert_eq!(reason_group(reason), "invalid: invalid UTF-8 at line N");
        }
        assert_eq!(
            reason_group("invalid: no dataset matches the key \"misc/a: b.txt\""),
            "invalid: no dataset matches the key \"…\""
        );
    }

    #[tokio::test]
    async fn a_request_that_takes_too_long_is_answered_503() {
        let limit = Duration::from_millis(200);
        let app = Router::new()
            .route(
                "/slow",
                get(|| tokio::time::sleep(Duration::from_secs(600))),
            )
            .route("/quick", get(|| async { "ok" }))
            .layer(axum::middleware::from_fn_with_state(limit, time_limit));
        let get = |uri: &str| Request::get(uri).body(Body::empty()).unwrap();
        let slow = app.clone().oneshot(get("/slow")).await.unwrap();
        assert_eq!(slow.status(), StatusCode::SERVICE_UNAVAILABLE);
        let quick = app.oneshot(get("/quick")).await.unwrap();
        assert_eq!(quick.status(), StatusCode::OK);
    }
}
