//! Dead-letter routes: the operator's `choreo dlq` from the dashboard, on the same functions
//! (`choreo_runtime::dlq`).
//!
//! - `GET /dlq` — every stage's dead-letter queue: depth and oldest message's age.
//! - `GET /dlq/{stage}?n=` — up to `n` (default 10, at most 100) dead letters, decoded, without
//!   taking them.
//! - `POST /dlq/{stage}/redrive` — back to the stage's queue, copy before delete. The JSON body
//!   says which: `{"ids": [...]}` picks messages, `{"all": true}` takes every one there when the
//!   redrive starts. Any other body (none, an unknown field, both) is a 400 saying so: a typo must
//!   never redrive everything.

use crate::api::{Api, ApiError};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use choreo_domain::Stage;
use choreo_runtime::dlq::{self, DeadLetter, DlqError, DlqSummary, RedriveReport, Selection};
use serde::Deserialize;

pub fn router() -> Router<Api> {
    Router::new()
        .route("/dlq", get(list))
        .route("/dlq/{stage}", get(peek))
        .route("/dlq/{stage}/redrive", post(redrive))
}

impl From<DlqError> for ApiError {
    fn from(e: DlqError) -> Self {
        match e {
            DlqError::NoQueue(stage) => ApiError::not_found(format!("stage {stage} has no queue")),
            DlqError::Port(e) => e.into(),
        }
    }
}

/// The service stage named `stage`, or 404.
fn stage(name: &str) -> Result<Stage, ApiError> {
    name.parse::<Stage>()
        .ok()
        .filter(|s| Stage::SERVICES.contains(s))
        .ok_or_else(|| ApiError::not_found(format!("no stage {name:?}")))
}

async fn list(State(api): State<Api>) -> Result<Json<Vec<DlqSummary>>, ApiError> {
    Ok(Json(dlq::list(&*api.ports.queues, &api.config).await?))
}

#[derive(Deserialize)]
struct PeekParams {
    n: Option<usize>,
}

async fn peek(
    State(api): State<Api>,
    Path(name): Path<String>,
    Query(p): Query<PeekParams>,
) -> Result<Json<Vec<DeadLetter>>, ApiError> {
    let n = p.n.unwrap_or(10).clamp(1, 100);
    let stage = stage(&name)?;
    Ok(Json(
        dlq::peek(&*api.ports.queues, &api.config, stage, n).await?,
    ))
}

async fn redrive(
    State(api): State<Api>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<RedriveReport>, ApiError> {
    let stage = stage(&name)?;
    let selection =
        Selection::from_json(&body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let report = dlq::redrive(
        &*api.ports.queues,
        &api.config,
        stage,
        &selection,
        &mut |_| {},
    )
    .await?;
    Ok(Json(report))
}
