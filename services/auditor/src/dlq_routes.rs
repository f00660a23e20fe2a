//! Dead-letter routes: the seam to `choreo_runtime::dlq` (list, peek, redrive, purge), which is
//! being written on another branch.
//!
//! Listing is real (each DLQ's depth through `Queue::depth`). Peeking and redriving answer
//! 501 Not Implemented until these two handlers call `dlq::peek` and `dlq::redrive`: that is the
//! only change this file needs.

use crate::api::{Api, ApiError, dlq_depth, stage_queues};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use choreo_domain::Stage;
use serde::{Deserialize, Serialize};

pub fn router() -> Router<Api> {
    Router::new()
        .route("/dlq", get(list))
        .route("/dlq/{stage}", get(peek))
        .route("/dlq/{stage}/redrive", post(redrive))
}

#[derive(Serialize)]
struct DlqView {
    stage: Stage,
    /// The work queue whose dead letters these are.
    source: String,
    #[serde(flatten)]
    dlq: crate::api::DlqDepth,
}

async fn list(State(api): State<Api>) -> Result<Json<Vec<DlqView>>, ApiError> {
    let mut out = Vec::new();
    for (stage, queue) in stage_queues(&api.config) {
        out.push(DlqView {
            stage,
            source: queue.to_string(),
            dlq: dlq_depth(&api, queue).await?,
        });
    }
    Ok(Json(out))
}

#[derive(Deserialize)]
struct PeekParams {
    #[allow(dead_code)] // read once peek is wired
    n: Option<usize>,
}

/// The work queue of the service stage named `stage`, or 404.
fn source_queue(api: &Api, stage: &str) -> Result<String, ApiError> {
    stage_queues(&api.config)
        .into_iter()
        .find(|(s, _)| s.as_str() == stage)
        .map(|(_, q)| q.to_string())
        .ok_or_else(|| ApiError::not_found(format!("no stage {stage:?}")))
}

/// Placeholder: will return `dlq::peek(queues, config, stage, n)`.
async fn peek(
    State(api): State<Api>,
    Path(stage): Path<String>,
    Query(_p): Query<PeekParams>,
) -> Result<Json<()>, ApiError> {
    source_queue(&api, &stage)?;
    Err(not_yet("peek"))
}

/// Placeholder: will return `dlq::redrive(queues, config, stage)`.
async fn redrive(State(api): State<Api>, Path(stage): Path<String>) -> Result<Json<()>, ApiError> {
    source_queue(&api, &stage)?;
    Err(not_yet("redrive"))
}

fn not_yet(what: &str) -> ApiError {
    ApiError(
        StatusCode::NOT_IMPLEMENTED,
        format!("dead-letter {what} is not available from the API in this build yet"),
    )
}
