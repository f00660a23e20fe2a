//! The stuck-file sweep: nothing stays silently stuck.
//!
//! Every `interval_secs`, one replica (by a lease) lists the files of each non-terminal state. A file
//! that has been in its state longer than the state's limit — counted from its last move, or from
//! the sweep's last attempt — gets the message that moves it on sent again: its own event
//! published again with the id it was first published with (so the auditor counts it once), or the
//! poll timer of the batch it waits in. After `max_republish` attempts the file is flagged stuck on
//! its record and one alert is raised. A move clears the note, so each stay is judged on its own.

use crate::ROUND_SLACK;
use crate::events::{FileStuck, StuckFileRepublished, SweepDone, SweepError};
use choreo_domain::clock;
use choreo_domain::{Alert, AlertKind, BatchState, Event, FileRecord, FileState, Stage, SweepMark};
use choreo_ports::{FileQuery, PortError};
use choreo_runtime::ServiceContext;
use choreo_runtime::periodic::UnderLease;
use choreo_runtime::publish::{file_event_id, send_timer};
use choreo_telemetry::events::emit;
use chrono::{DateTime, Utc};
use std::collections::HashSet;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The states a file waits in for another stage's work (not the terminal ones, nor FAILED, which
/// waits for an operator).
const WAITING: [FileState; 5] = [
    FileState::New,
    FileState::Valid,
    FileState::Invalid,
    FileState::Cataloged,
    FileState::Transforming,
];

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// Files whose pending message was sent again.
    pub republished: usize,
    /// Files flagged stuck (and alerted on) by this sweep.
    pub flagged: usize,
}

/// Sweeps every `interval_secs` until `shutdown`, on one replica at a time.
pub async fn run(ctx: ServiceContext, holder: String, shutdown: CancellationToken) {
    let every = Duration::from_secs(ctx.settings.config.operations.sweep.interval_secs.max(1));
    UnderLease::new("auditor:sweep", holder, every, ROUND_SLACK)
        .run(ctx.ports.state.as_ref(), shutdown, || async {
            match sweep_once(&ctx, clock::now()).await {
                Ok(r) if r != SweepReport::default() => {
                    emit(SweepDone {
                        republished: r.republished,
                        flagged: r.flagged,
                    });
                }
                Ok(_) => {}
                Err(e) => emit(SweepError { error: &e }),
            }
        })
        .await;
}

/// One sweep, as of `now` (the caller holds the sweep's lease).
pub async fn sweep_once(
    ctx: &ServiceContext,
    now: DateTime<Utc>,
) -> Result<SweepReport, PortError> {
    let ports = &ctx.ports;
    let settings = &ctx.settings.config.operations.sweep;
    let mut report = SweepReport::default();
    // A batch is poked once per sweep, however many of its files wait.
    let mut poked = HashSet::new();
    let crawling = ports.state.batches_in(BatchState::Crawling).await?;
    for state in WAITING {
        let limit = settings
            .limits_secs
            .get(state.as_str())
            .copied()
            .unwrap_or(settings.default_secs);
        let limit = chrono::Duration::seconds(limit as i64);
        let mut query = FileQuery {
            state: Some(state),
            limit: 1000,
            ..FileQuery::default()
        };
        loop {
            let page = ports.state.list(&query).await?;
            for file in page.items {
                let mark = file.sweep.as_ref().filter(|m| m.state == file.state);
                let since = mark.map_or(file.updated_at, |m| m.last_at.max(file.updated_at));
                if now - since < limit || mark.is_some_and(|m| m.stuck) {
                    continue;
                }
                let done = mark.map_or(0, |m| m.republished);
                let give_up = done >= settings.max_republish;
                let new_mark = SweepMark {
                    state: file.state,
                    republished: if give_up { done } else { done + 1 },
                    last_at: now,
                    stuck: give_up,
                };
                // Noted first: if the file moved meanwhile, it is not stuck and nothing is sent.
                if !ports
                    .state
                    .mark_sweep(&file.id, file.history.len(), &new_mark)
                    .await?
                {
                    continue;
                }
                if give_up {
                    let alert = stuck_alert(ctx, &file, done, now);
                    ports.audit.add_alert(&alert).await?;
                    emit(FileStuck {
                        file_id: &file.id,
                        state: file.state,
                    });
                    report.flagged += 1;
                } else {
                    republish(ctx, &file, &crawling, &mut poked).await?;
                    emit(StuckFileRepublished {
                        file_id: &file.id,
                        state: file.state,
                        attempt: done + 1,
                    });
                    report.republished += 1;
                }
            }
            match page.next {
                Some(next) => query.after = Some(next),
                None => break,
            }
        }
    }
    Ok(report)
}

/// Sends again what moves `file` out of its state.
async fn republish(
    ctx: &ServiceContext,
    file: &FileRecord,
    crawling: &[choreo_domain::Batch],
    poked: &mut HashSet<String>,
) -> Result<(), PortError> {
    let config = &ctx.settings.config;
    let ports = &ctx.ports;
    let tp = file.traceparent.clone();
    let publish = |event: Event| {
        let id = file_event_id(file, &event);
        ctx.publisher.publish_with(id, event, tp.clone())
    };
    let timer = |queue: &str, event: Event| {
        let queue = ports.queues.queue(queue);
        let tp = tp.clone();
        async move { send_timer(&*queue, event, Duration::ZERO, tp).await }
    };
    match file.state {
        FileState::New => {
            publish(Event::FileRegistered {
                file_id: file.id.clone(),
                dataset: file.dataset.clone(),
                bucket: file.bucket.clone(),
                key: file.key.clone(),
                size: file.size,
            })
            .await
        }
        FileState::Invalid => {
            publish(Event::FileRejected {
                file_id: file.id.clone(),
                dataset: file.dataset.clone(),
                reason: file.reason.clone().unwrap_or_default(),
            })
            .await
        }
        FileState::Valid => match crawling.iter().find(|b| b.files.contains(&file.id)) {
            // In a crawl whose poll timer was lost.
            Some(b) if poked.insert(b.id.clone()) => {
                timer(
                    &config.queues.crawl,
                    Event::CrawlPoll {
                        batch_id: b.id.clone(),
                    },
                )
                .await
            }
            Some(_) => Ok(()),
            None => {
                publish(Event::FileValidated {
                    file_id: file.id.clone(),
                    dataset: file.dataset.clone(),
                })
                .await
            }
        },
        FileState::Cataloged | FileState::Transforming => {
            let Some(batch_id) = file.batch_id.clone() else {
                return Ok(());
            };
            if !poked.insert(batch_id.clone()) {
                return Ok(());
            }
            let Some(batch) = ports.state.get_batch(&batch_id).await? else {
                return Ok(());
            };
            if batch.state == BatchState::Cataloged {
                // The launcher never heard of the batch: its event again.
                ctx.publisher.announce(&batch, Stage::Crawler).await
            } else {
                // Under way: its poll timer was lost.
                timer(&config.queues.transform, Event::JobPoll { batch_id }).await
            }
        }
        _ => Ok(()),
    }
}

fn stuck_alert(ctx: &ServiceContext, file: &FileRecord, tries: u32, now: DateTime<Utc>) -> Alert {
    let minutes = (now - file.updated_at).num_minutes();
    Alert {
        id: format!("stuck:{}:{}", file.id, file.history.len()),
        kind: AlertKind::FileStuck,
        dataset: file.dataset.clone(),
        // The sweep looks at states another stage moves files out of (WAITING); an operator's
        // otherwise.
        stage: file.state.waits_for().unwrap_or(Stage::Operator),
        keys: vec![file.key.clone()],
        reason: format!(
            "{} for {minutes} min; its message was sent again {tries} time(s) without effect",
            file.state
        ),
        trace_id: file.trace_id.clone(),
        link: crate::alerts::link(ctx, Some(&file.id), None),
        created_at: now,
        sent_at: None,
    }
}
