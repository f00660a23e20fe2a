//! The local scheduler: ticks each extract's schedule (on AWS, EventBridge Scheduler sends the ticks
//! and this loop does not run).
//!
//! Every replica runs it; the tick's id is derived from its slot and written put-if-absent, so one
//! replica wins each slot and only it sends the tick. A slot is due when it is the latest schedule
//! time not yet ticked ([`Schedule::due`]): a process that was down across several slots ticks once,
//! for the latest. A tick whose message was lost (the winner died between the write and the send)
//! has no fan-out after `resend_after_secs`: any replica sends it again, and a duplicate tick is
//! harmless (each key is extracted once per tick).

use crate::events::ExtractScheduleError;
use choreo_domain::clock;
use choreo_domain::config::BackendKind;
use choreo_domain::extract::{ExtractConfig, ExtractMessage, Schedule, Tick};
use choreo_ports::{ExtractStore, PortError, Queue};
use choreo_runtime::ServiceContext;
use choreo_runtime::events::ExtractTicked;
use choreo_telemetry::events::emit;
use chrono::{DateTime, Utc};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Runs until `shutdown`; returns at once on AWS or without extracts.
pub async fn run(ctx: ServiceContext, shutdown: CancellationToken) {
    let config = &ctx.settings.config;
    if config.backend != BackendKind::Local || config.extracts.is_empty() {
        return;
    }
    let interval = Duration::from_secs(config.extract.scheduler_interval_secs.max(1));
    let resend_after = chrono::Duration::seconds(config.extract.resend_after_secs as i64);
    loop {
        let now = clock::now();
        let mut next = now + chrono::Duration::from_std(interval).unwrap_or_default();
        for e in &config.extracts {
            let schedule = match e.parsed_schedule() {
                Ok(s) => s,
                Err(err) => {
                    emit(ExtractScheduleError {
                        extract: &e.name,
                        error: &err,
                    });
                    continue;
                }
            };
            let store = ctx.ports.extracts.as_ref();
            if let Err(err) = look(store, ctx.queue.as_ref(), e, &schedule, now, resend_after).await
            {
                emit(ExtractScheduleError {
                    extract: &e.name,
                    error: &err,
                });
            }
            if let Some(slot) = schedule.next_after(now) {
                next = next.min(slot);
            }
        }
        // Wake at the next slot if it comes before the next look.
        let wait = (next - clock::now()).to_std().unwrap_or_default();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait.max(Duration::from_millis(50))) => {}
        }
    }
}

/// One look at one extract's schedule at `now`: tick the due slot, or resend a lost tick.
/// Returns the tick it sent, if any.
pub async fn look(
    store: &dyn ExtractStore,
    queue: &dyn Queue,
    e: &ExtractConfig,
    schedule: &Schedule,
    now: DateTime<Utc>,
    resend_after: chrono::Duration,
) -> Result<Option<Tick>, PortError> {
    let since = store.schedule_since(&e.name, now).await?;
    let last = store.last_scheduled_tick(&e.name).await?;
    if let Some(slot) = schedule.due(since, last.as_ref().map(|t| t.slot), now) {
        let tick = Tick::scheduled(&e.name, slot);
        if !store.add_tick(&tick).await? {
            // Another replica won this slot: it sends the tick.
            return Ok(None);
        }
        send_tick(queue, &tick, "schedule").await?;
        return Ok(Some(tick));
    }
    match last {
        Some(t) if t.fanned_out_at.is_none() && now - t.created_at > resend_after => {
            send_tick(queue, &t, "resend").await?;
            Ok(Some(t))
        }
        _ => Ok(None),
    }
}

async fn send_tick(queue: &dyn Queue, tick: &Tick, cause: &'static str) -> Result<(), PortError> {
    crate::send(
        queue,
        &ExtractMessage::ExtractTick {
            extract: tick.extract.clone(),
            tick_id: tick.id.clone(),
        },
    )
    .await?;
    emit(ExtractTicked {
        extract: &tick.extract,
        tick_id: &tick.id,
        cause,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[tokio::test]
    async fn one_tick_per_slot_across_replicas_a_missed_run_caught_up_once_a_lost_tick_resent() {
        let dir = tempfile::tempdir().unwrap();
        let config = choreo_domain::Config {
            data_dir: dir.path().into(),
            ..Default::default()
        };
        let backend = choreo_local::LocalBackend::open(&config).unwrap();
        let (store, queue) = (backend.ports().extracts, backend.queue("ticks"));
        let (store, queue) = (store.as_ref(), queue.as_ref());
        let e: ExtractConfig = serde_json::from_value(serde_json::json!({
            "name": "c", "schedule": "0 3,14 * * *", "dataset": "d", "query": "SELECT 1"
        }))
        .unwrap();
        let s = e.parsed_schedule().unwrap();
        let (never, always) = (
            chrono::Duration::days(36500),
            chrono::Duration::days(-36500),
        );
        let at = |d: u32, h: u32, m: u32| Utc.with_ymd_and_hms(2026, 12, d, h, m, 0).unwrap();
        let depth = || async { queue.depth().await.unwrap().total() };

        // First seen at midnight: the slots before are not caught up.
        assert_eq!(
            look(store, queue, &e, &s, at(1, 0, 0), never)
                .await
                .unwrap(),
            None
        );
        // Two replicas look after 03:00: one tick, one message.
        let a = look(store, queue, &e, &s, at(1, 3, 0), never)
            .await
            .unwrap();
        let b = look(store, queue, &e, &s, at(1, 3, 1), never)
            .await
            .unwrap();
        assert_eq!(a.map(|t| t.slot), Some(at(1, 3, 0)));
        assert_eq!(b, None);
        assert_eq!(depth().await, 1);
        // Down from then until the 3rd at 10:00: four slots missed, one tick, for the latest.
        let t = look(store, queue, &e, &s, at(3, 10, 0), never)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(t.slot, at(3, 3, 0));
        assert_eq!(
            look(store, queue, &e, &s, at(3, 10, 1), never)
                .await
                .unwrap(),
            None
        );
        assert_eq!(depth().await, 2);
        // Its message lost (never fanned out): sent again once resend_after has passed.
        let again = look(store, queue, &e, &s, at(3, 10, 2), always)
            .await
            .unwrap();
        assert_eq!(again.map(|r| r.id), Some(t.id));
        assert_eq!(depth().await, 3);
    }
}
