//! The extractor: scheduled extracts from MySQL into the pipeline.
//!
//! Its queue carries two messages of its own ([`ExtractMessage`]):
//!
//! - `ExtractTick` — a schedule fired ([`scheduler`] on the local backend, EventBridge Scheduler on
//!   AWS, `choreo extract run` by hand). The handler reads the extract's keys from the keys table,
//!   writes a unit per key live on the tick's day (put-if-absent under the tick's id) and sends an
//!   `ExtractKey` per unit still PENDING. A tick delivered twice writes no second unit, and the
//!   second round of `ExtractKey`s finds the units claimed or done.
//! - `ExtractKey` — one key of one tick: claim the unit (a conditional write with a lease), run the
//!   query for the key (`choreo_warehouse::mysql`), write the CSV (gzip) into the input bucket under the dataset's
//!   folder, record the unit EXTRACTED. The ingestor then registers the file like any other, and the
//!   pipeline validates, catalogues and loads it (the dataset's `warehouse` job).
//!
//! A key that fails (its query, a MySQL that is down, a missing parameter, an unknown extract) fails
//! alone: its unit is recorded FAILED with the reason and an alert is stored for the auditor to
//! send; the other keys go on. `choreo extract retry` makes FAILED units PENDING and sends them again.
//!
//! Delivery is at least once: a worker that dies after writing the file but before recording the
//! unit leaves the claim to lapse, and the next claim writes the same object key again (the
//! ingestor sees a second version of it: the file may be loaded twice in `append` mode, never
//! lost; `replace` and `upsert` absorb it).

pub mod events;
pub mod scheduler;

pub use choreo_runtime::extracts::{retry, run_now, send};

use async_trait::async_trait;
use choreo_domain::clock;
use choreo_domain::extract::{
    ExtractConfig, ExtractMessage, ExtractUnit, NamedQuery, Tick, object_key,
};
use choreo_domain::{Alert, AlertKind, Stage};
use choreo_ports::{ExtractStore, PortError, ReceivedMessage, UnitClaim, UnitEnd};
use choreo_runtime::{Background, Handler, HandlerError, ServiceContext};
use choreo_telemetry::events::emit;
use chrono::Utc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub const STAGE: Stage = Stage::Extractor;

/// The service's wiring: its queue, its handler, and the local scheduler beside it.
pub const SPEC: choreo_runtime::ServiceSpec = choreo_runtime::ServiceSpec {
    stage: STAGE,
    queue: queue_name,
    build: handler,
    background: Some(background),
};

fn queue_name(config: &choreo_domain::Config) -> &str {
    &config.queues.extract
}

fn background(ctx: ServiceContext, shutdown: CancellationToken) -> Background {
    Box::pin(scheduler::run(ctx, shutdown))
}

pub fn handler(ctx: &ServiceContext) -> Arc<dyn Handler> {
    Arc::new(Extractor {
        ctx: ctx.clone(),
        holder: format!("extractor-{}", uuid::Uuid::new_v4()),
        pool: OnceLock::new(),
    })
}

pub struct Extractor {
    ctx: ServiceContext,
    /// Names this replica in the units it claims.
    holder: String,
    /// MySQL connections, made at the first key (the URL may be wrong: only extracts fail then).
    pool: OnceLock<Result<choreo_warehouse::mysql::MySqlPool, String>>,
}

#[async_trait]
impl Handler for Extractor {
    async fn handle(&self, message: &ReceivedMessage) -> Result<(), HandlerError> {
        let parsed: ExtractMessage = serde_json::from_str(&message.body)
            .map_err(|e| HandlerError::Permanent(format!("not an extract message: {e}")))?;
        match parsed {
            ExtractMessage::ExtractTick { extract, tick_id } => {
                self.fan_out(&extract, &tick_id).await
            }
            ExtractMessage::ExtractKey {
                extract,
                tick_id,
                key,
            } => self.extract_key(&extract, &tick_id, &key).await,
        }
    }
}

impl Extractor {
    fn store(&self) -> &dyn ExtractStore {
        self.ctx.ports.extracts.as_ref()
    }

    async fn fan_out(&self, extract: &str, tick_id: &str) -> Result<(), HandlerError> {
        let config = &self.ctx.settings.config;
        let Some(e) = config.extract(extract) else {
            emit(events::ExtractUnknown { extract, tick_id });
            let reason = format!("a tick for extract {extract:?}, which is not configured");
            return self.alert(extract, "", tick_id, "(tick)", 0, &reason).await;
        };
        let tick = match self.store().tick(tick_id).await? {
            Some(t) => t,
            None => {
                // A tick from outside (EventBridge Scheduler): recorded on arrival.
                let t = Tick {
                    id: tick_id.to_string(),
                    extract: extract.to_string(),
                    slot: clock::now(),
                    manual: false,
                    created_at: clock::now(),
                    fanned_out_at: None,
                };
                self.store().add_tick(&t).await?;
                t
            }
        };
        let schedule = e
            .parsed_schedule()
            .map_err(|e| HandlerError::Permanent(e.to_string()))?;
        let day = schedule.date_of(tick.slot);
        let live: Vec<String> = self
            .store()
            .keys(extract)
            .await?
            .into_iter()
            .filter(|k| k.is_live(day))
            .map(|k| k.key)
            .collect();
        let units = self.store().fan_out(tick_id, extract, &live).await?;
        let mut sent = 0;
        for unit in units
            .iter()
            .filter(|u| u.state == choreo_domain::extract::UnitState::Pending)
        {
            let message = ExtractMessage::ExtractKey {
                extract: extract.to_string(),
                tick_id: tick_id.to_string(),
                key: unit.key.clone(),
            };
            send(self.ctx.queue.as_ref(), &message).await?;
            sent += 1;
        }
        emit(events::ExtractTickFannedOut {
            extract,
            tick_id,
            live_keys: live.len(),
            sent,
        });
        Ok(())
    }

    async fn extract_key(
        &self,
        extract: &str,
        tick_id: &str,
        key: &str,
    ) -> Result<(), HandlerError> {
        let settings = &self.ctx.settings.config.extract;
        let lease = Duration::from_secs(settings.unit_lease_secs.max(1));
        let unit = match self
            .store()
            .claim_unit(tick_id, key, &self.holder, lease)
            .await?
        {
            UnitClaim::Claimed(u) => u,
            UnitClaim::Done(_) => {
                emit(events::ExtractKeySkipped {
                    tick_id,
                    key,
                    found: "extracted",
                });
                return Ok(());
            }
            UnitClaim::Failed(_) => {
                emit(events::ExtractKeySkipped {
                    tick_id,
                    key,
                    found: "failed",
                });
                return Ok(());
            }
            UnitClaim::Missing => {
                emit(events::ExtractKeySkipped {
                    tick_id,
                    key,
                    found: "missing",
                });
                return Ok(());
            }
            // Another worker runs it: come back after the visibility timeout, by when it is done
            // (the unit then reads EXTRACTED) or its claim has lapsed (and this one takes over).
            UnitClaim::Busy(_) => {
                return Err(HandlerError::Transient(format!(
                    "{tick_id}/{key} is being extracted by another worker"
                )));
            }
        };
        match self.run_unit(extract, &unit).await {
            Ok(()) => Ok(()),
            Err(Failure::Unit(reason)) => {
                let end = UnitEnd::Failed {
                    reason: reason.clone(),
                };
                if self
                    .store()
                    .finish_unit(tick_id, key, &self.holder, &end)
                    .await?
                {
                    emit(events::ExtractKeyFailed {
                        extract,
                        tick_id,
                        key,
                        reason: &reason,
                    });
                    let dataset = self
                        .ctx
                        .settings
                        .config
                        .extract(extract)
                        .map_or("", |e| e.dataset.as_str());
                    self.alert(extract, dataset, tick_id, key, unit.attempts, &reason)
                        .await?;
                }
                Ok(())
            }
            Err(Failure::Transient(reason)) => {
                let end = UnitEnd::Released {
                    reason: reason.clone(),
                };
                self.store()
                    .finish_unit(tick_id, key, &self.holder, &end)
                    .await?;
                emit(events::ExtractKeyReleased {
                    tick_id,
                    key,
                    reason: &reason,
                });
                Err(HandlerError::Transient(reason))
            }
        }
    }

    /// Extracts one claimed unit and records it EXTRACTED.
    async fn run_unit(&self, extract: &str, unit: &ExtractUnit) -> Result<(), Failure> {
        let started = Instant::now();
        let config = &self.ctx.settings.config;
        let e: &ExtractConfig = config.extract(extract).ok_or_else(|| {
            Failure::Unit(format!("extract {extract:?} is not configured (any more)"))
        })?;
        let dataset = config
            .dataset(&e.dataset)
            .ok_or_else(|| Failure::Unit(format!("dataset {:?} is not configured", e.dataset)))?;
        let key = self
            .store()
            .keys(extract)
            .await
            .map_err(port)?
            .into_iter()
            .find(|k| k.key == unit.key)
            .ok_or_else(|| {
                Failure::Unit(format!("key {:?} is no longer in the keys table", unit.key))
            })?;
        let query = NamedQuery::parse(&e.query).map_err(Failure::Unit)?;
        let tick_time = self
            .store()
            .tick(&unit.tick_id)
            .await
            .map_err(port)?
            .map_or_else(Utc::now, |t| t.slot);
        let values = query.bind_values(&key, tick_time).map_err(Failure::Unit)?;
        let url = config.extract.mysql_url.expose();
        if url.is_empty() {
            return Err(Failure::Unit(
                "extract.mysql_url is not set (CHOREO_EXTRACT__MYSQL_URL)".into(),
            ));
        }
        let pool = self
            .pool
            .get_or_init(|| {
                choreo_warehouse::mysql::pool(
                    url,
                    self.ctx.settings.config.runtime.concurrency as u32,
                )
            })
            .as_ref()
            .map_err(|e| Failure::Unit(format!("extract.mysql_url: {e}")))?;
        let file = tempfile::NamedTempFile::new()
            .map_err(|e| Failure::Transient(format!("a temporary file: {e}")))?;
        let written = choreo_warehouse::mysql::extract(pool, url, &query, &values, file.path())
            .await
            .map_err(|e| {
                if e.is_local() {
                    Failure::Transient(e.to_string())
                } else {
                    Failure::Unit(e.to_string())
                }
            })?;
        let object = object_key(dataset.folder(), &unit.key, &unit.tick_id);
        self.ctx
            .ports
            .objects
            .put_file(&config.buckets.input, &object, file.path())
            .await
            .map_err(port)?;
        let end = UnitEnd::Extracted {
            object_key: object.clone(),
            rows: written.rows,
        };
        self.store()
            .finish_unit(&unit.tick_id, &unit.key, &self.holder, &end)
            .await
            .map_err(port)?;
        emit(events::ExtractKeyWritten {
            extract,
            tick_id: &unit.tick_id,
            key: &unit.key,
            object_key: &object,
            rows: written.rows,
            bytes: written.bytes,
            elapsed: started.elapsed(),
        });
        Ok(())
    }

    /// Stores an alert for the auditor's delivery loop to send, once per unit attempt.
    async fn alert(
        &self,
        extract: &str,
        dataset: &str,
        tick_id: &str,
        key: &str,
        attempt: u32,
        reason: &str,
    ) -> Result<(), HandlerError> {
        let alert = Alert {
            id: format!("extract:{tick_id}:{key}:{attempt}"),
            kind: AlertKind::ExtractFailed,
            dataset: dataset.to_string(),
            stage: STAGE,
            keys: vec![format!("{extract}/{key} ({tick_id})")],
            reason: reason.to_string(),
            trace_id: choreo_telemetry::current_trace_id(),
            link: self.ctx.settings.config.operations.dashboard_url.clone(),
            created_at: clock::now(),
            sent_at: None,
        };
        self.ctx.ports.audit.add_alert(&alert).await?;
        Ok(())
    }
}

/// How a unit's run ended when it did not succeed.
enum Failure {
    /// The key's own failure: recorded, alerted, not retried until an operator says so.
    Unit(String),
    /// Ours (the bucket, the store, the disk): handed back and retried.
    Transient(String),
}

fn port(e: PortError) -> Failure {
    if e.is_retryable() {
        Failure::Transient(e.to_string())
    } else {
        Failure::Unit(e.to_string())
    }
}
