//! The auditor's HTTP API: JSON views over the state store, the audit trail and the queues, and the
//! dashboard that reads them.
//!
//! | route | answers |
//! |---|---|
//! | `GET /health` | `ok`, with no token: for load balancers |
//! | `GET /`, `/dashboard.js`, `/dashboard.css` | the dashboard's static page, with no token (it holds no data; it asks for the token and calls the routes below with it) |
//! | `GET /api/datasets` | files per dataset and state, and throughput |
//! | `GET /api/files?dataset=&state=&key=&limit=&after=` | file summaries, a page at a time |
//! | `GET /api/files/{id}` | one file with its history, trace id and `trace_url` |
//! | `GET /api/queues` | every work queue's depth, in-flight count and its dead-letter queue's depth |
//! | `GET /api/failures?n=` | the latest rejections and batch failures |
//! | `GET /api/dlq`, `GET /api/dlq/{stage}?n=`, `POST /api/dlq/{stage}/redrive` | dead letters, see [`crate::dlq_routes`] |
//! | `/api/extracts/...` | scheduled extracts' keys, ticks and units, see [`crate::extract_routes`] |
//!
//! Every `/api` route requires `Authorization: Bearer <operations.api_token>` and answers 401 with
//! no body otherwise.

use crate::auth::{Token, require_bearer};
use crate::{dashboard, dlq_routes, throughput};
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use choreo_domain::{Config, Envelope, Event, FileId, FileState, Stage};
use choreo_ports::{FileQuery, PortError, Ports};
use choreo_telemetry::events::emit;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// What the API reads from.
#[derive(Clone)]
pub struct Api {
    pub ports: Ports,
    pub config: Arc<Config>,
}

/// The whole HTTP surface: `/health`, the dashboard, and the token-guarded `/api`, each request
/// answered within `operations.request_timeout_secs`.
pub fn router(api: Api) -> Router {
    let limit = Duration::from_secs(api.config.operations.request_timeout_secs.max(1));
    let token = Token::new(api.config.operations.api_token.as_deref());
    let guarded = Router::new()
        .route("/datasets", get(datasets))
        .route("/files", get(files))
        .route("/files/{id}", get(file))
        .route("/queues", get(queues))
        .route("/failures", get(failures))
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
struct Datasets {
    /// Every state, in pipeline order: the columns of the overview.
    states: [FileState; 8],
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

/// Configured datasets first (in configuration order, even without files), then any other dataset
/// the store has files for.
async fn datasets(State(api): State<Api>) -> ApiResult<Datasets> {
    let counts = api.ports.state.counts().await?;
    let recent = api.ports.audit.recent(throughput::SCAN).await?;
    let (rates, throughput_partial) = throughput::from_audit(&recent, Utc::now(), throughput::SCAN);
    let mut names: Vec<String> = api.config.datasets.iter().map(|d| d.name.clone()).collect();
    for (d, _, _) in &counts {
        if !names.contains(d) {
            names.push(d.clone());
        }
    }
    let datasets = names
        .into_iter()
        .map(|name| {
            let mut by_state: BTreeMap<FileState, u64> =
                FileState::ALL.into_iter().map(|s| (s, 0)).collect();
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
    Ok(Json(Datasets {
        states: FileState::ALL,
        datasets,
        throughput_partial,
    }))
}

#[derive(Deserialize)]
struct FilesParams {
    dataset: Option<String>,
    state: Option<String>,
    /// A substring of the object key.
    key: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
}

/// Files per page, unless asked otherwise; and the most a page may hold.
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 500;
/// With a key filter, the most records one request reads: the store has no index on keys.
const KEY_SCAN: usize = 5000;

#[derive(Serialize)]
struct FilesPage {
    items: Vec<FileSummary>,
    /// Pass as `after` for the next page; absent on the last.
    next: Option<String>,
}

/// A file without its history: what a list shows.
#[derive(Serialize)]
struct FileSummary {
    id: FileId,
    dataset: String,
    key: String,
    state: FileState,
    size: u64,
    reason: Option<String>,
    updated_at: DateTime<Utc>,
}

/// Files in id order, filtered by dataset and state in the store. A key filter is applied to what
/// the store returns, reading at most [`KEY_SCAN`] records: a page may then hold fewer than `limit`
/// files while `next` is set, and following `next` continues the scan.
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
                }));
            }
            if key.as_ref().is_none_or(|k| r.key.contains(k.as_str())) {
                items.push(FileSummary {
                    id: r.id.clone(),
                    dataset: r.dataset,
                    key: r.key,
                    state: r.state,
                    size: r.size,
                    reason: r.reason,
                    updated_at: r.updated_at,
                });
            }
            query.after = Some(r.id.0);
        }
        match page.next {
            None => return Ok(Json(FilesPage { items, next: None })),
            Some(_) if items.len() == limit || scanned >= KEY_SCAN => {
                return Ok(Json(FilesPage {
                    items,
                    next: query.after,
                }));
            }
            Some(next) => query.after = Some(next),
        }
    }
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

#[derive(Serialize)]
struct QueueView {
    stage: Stage,
    queue: String,
    visible: u64,
    in_flight: u64,
    delayed: u64,
    dlq: DlqDepth,
}

#[derive(Serialize)]
struct DlqDepth {
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

async fn queues(State(api): State<Api>) -> ApiResult<Vec<QueueView>> {
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
            dlq: dlq_depth(&api, name).await?,
        });
    }
    Ok(Json(out))
}

#[derive(Deserialize)]
struct FailuresParams {
    n: Option<usize>,
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

/// The latest failures (rejected files, failed batches), newest first, from the newest
/// [`throughput::SCAN`] audit entries.
async fn failures(
    State(api): State<Api>,
    Query(p): Query<FailuresParams>,
) -> ApiResult<Vec<Failure>> {
    let n = p.n.unwrap_or(20).clamp(1, 200);
    let recent = api.ports.audit.recent(throughput::SCAN).await?;
    let out = recent
        .into_iter()
        .filter_map(|e| {
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
        .take(n)
        .collect();
    Ok(Json(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

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
