//! Scheduled extracts' routes: the operator's `choreo extract` and `choreo keys` over HTTP, on the
//! same store and the same functions (`choreo_runtime::extracts`).
//!
//! - `GET /extracts` — every configured extract: schedule, zone, dataset, warehouse, key count.
//! - `GET /extracts/{name}/keys` — its keys, live or not.
//! - `PUT /extracts/{name}/keys/{key}` — create or replace a key: `{"valid_from": "2026-03-01",
//!   "valid_to": null, "enabled": true, "params": {"campaign": "spring"}}` (all optional). Live at
//!   the next tick.
//! - `POST /extracts/{name}/keys/{key}/disable`, `.../enable`.
//! - `POST /extracts/{name}/run` — tick now, by hand; answers the tick.
//! - `GET /extracts/ticks?extract=&n=` — the latest ticks with their per-key units.
//! - `POST /extracts/ticks/{tick_id}/retry` — resume the tick's FAILED units.

use crate::api::{Api, ApiError};
use axum::extract::{Path, Query, State};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use choreo_domain::clock;
use choreo_domain::extract::{ExtractUnit, KeyRecord, Tick, is_key_name};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;

pub fn router() -> Router<Api> {
    Router::new()
        .route("/extracts", get(list))
        .route("/extracts/ticks", get(ticks))
        .route("/extracts/ticks/{tick_id}/retry", post(retry))
        .route("/extracts/{name}/run", post(run))
        .route("/extracts/{name}/keys", get(keys))
        .route("/extracts/{name}/keys/{key}", put(put_key))
        .route("/extracts/{name}/keys/{key}/disable", post(disable))
        .route("/extracts/{name}/keys/{key}/enable", post(enable))
}

fn configured(api: &Api, name: &str) -> Result<(), ApiError> {
    api.config
        .extract(name)
        .map(|_| ())
        .ok_or_else(|| ApiError::not_found(format!("no extract {name:?}")))
}

async fn list(State(api): State<Api>) -> Result<Json<Vec<Value>>, ApiError> {
    let mut out = Vec::new();
    for e in &api.config.extracts {
        out.push(json!({
            "name": e.name,
            "schedule": e.schedule,
            "time_zone": e.time_zone,
            "dataset": e.dataset,
            "warehouse": e.warehouse.as_ref().map(|w| json!({"table": w.table, "mode": w.mode})),
            "keys": api.ports.extracts.keys(&e.name).await?.len(),
        }));
    }
    Ok(Json(out))
}

async fn keys(
    State(api): State<Api>,
    Path(name): Path<String>,
) -> Result<Json<Vec<KeyRecord>>, ApiError> {
    configured(&api, &name)?;
    Ok(Json(api.ports.extracts.keys(&name).await?))
}

/// A key as an operator writes it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyBody {
    valid_from: Option<NaiveDate>,
    valid_to: Option<NaiveDate>,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    params: BTreeMap<String, String>,
}

fn yes() -> bool {
    true
}

async fn put_key(
    State(api): State<Api>,
    Path((name, key)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<KeyRecord>, ApiError> {
    configured(&api, &name)?;
    if !is_key_name(&key) {
        return Err(ApiError::bad_request(format!(
            "key {key:?} must be letters, digits, '_', '-' or '.'"
        )));
    }
    let b: KeyBody = if body.is_empty() {
        serde_json::from_str("{}")
    } else {
        serde_json::from_slice(&body)
    }
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let record = KeyRecord {
        extract: name,
        key,
        valid_from: b.valid_from,
        valid_to: b.valid_to,
        enabled: b.enabled,
        params: b.params,
        updated_at: clock::now(),
    };
    api.ports.extracts.put_key(&record).await?;
    Ok(Json(record))
}

async fn set_enabled(
    api: &Api,
    name: &str,
    key: &str,
    enabled: bool,
) -> Result<Json<Value>, ApiError> {
    configured(api, name)?;
    if !api
        .ports
        .extracts
        .set_key_enabled(name, key, enabled)
        .await?
    {
        return Err(ApiError::not_found(format!("no key {key:?} in {name:?}")));
    }
    Ok(Json(
        json!({"extract": name, "key": key, "enabled": enabled}),
    ))
}

async fn disable(
    State(api): State<Api>,
    Path((name, key)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    set_enabled(&api, &name, &key, false).await
}

async fn enable(
    State(api): State<Api>,
    Path((name, key)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    set_enabled(&api, &name, &key, true).await
}

async fn run(State(api): State<Api>, Path(name): Path<String>) -> Result<Json<Tick>, ApiError> {
    configured(&api, &name)?;
    let queue = api.ports.queues.queue(&api.config.queues.extract);
    let tick =
        choreo_runtime::extracts::run_now(api.ports.extracts.as_ref(), queue.as_ref(), &name)
            .await?;
    Ok(Json(tick))
}

#[derive(Deserialize)]
struct TicksParams {
    extract: Option<String>,
    n: Option<usize>,
}

#[derive(Serialize)]
struct TickView {
    tick: Tick,
    units: Vec<ExtractUnit>,
}

async fn ticks(
    State(api): State<Api>,
    Query(p): Query<TicksParams>,
) -> Result<Json<Vec<TickView>>, ApiError> {
    let n = p.n.unwrap_or(10).clamp(1, 100);
    let mut out = Vec::new();
    for tick in api.ports.extracts.ticks(p.extract.as_deref(), n).await? {
        let units = api.ports.extracts.units(&tick.id).await?;
        out.push(TickView { tick, units });
    }
    Ok(Json(out))
}

async fn retry(
    State(api): State<Api>,
    Path(tick_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let queue = api.ports.queues.queue(&api.config.queues.extract);
    let resumed =
        choreo_runtime::extracts::retry(api.ports.extracts.as_ref(), queue.as_ref(), &tick_id)
            .await?;
    Ok(Json(json!({"tick_id": tick_id, "resumed": resumed})))
}
