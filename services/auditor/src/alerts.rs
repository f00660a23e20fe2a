//! Alerts: composed when a failure event arrives, stored, and sent by a delivery loop.
//!
//! The handler stores the alert *before* it records the event, keyed by the event's id: if the
//! worker dies between the two, the redelivered event finds the alert stored (nothing changes) and
//! records the event; if the alert cannot be stored, the event is not recorded either and comes
//! back. So every failure gets exactly one stored alert. The delivery loop — one replica at a time,
//! by a lease — sends what waits every `flush_interval_secs`: one message each, or one digest when
//! more than `digest_threshold` wait, so a burst of failures is one e-mail, not a storm. An alert is
//! marked sent after the notifier accepted it; a crash in between can send it twice (at least once
//! to the outside world, as any notifier), never lose it.

use crate::ROUND_SLACK;
use crate::events::{AlertDeliveryError, AlertDigestSent, AlertNotified, AlertSent};
use choreo_domain::alert::Message;
use choreo_domain::clock;
use choreo_domain::{Alert, AlertKind, Envelope, Event, FileId, Stage};
use choreo_ports::{PortError, Ports};
use choreo_runtime::ServiceContext;
use choreo_runtime::periodic::UnderLease;
use choreo_telemetry::events::emit;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Alerts handed to the notifier in one delivery, at most (the rest wait for the next).
const DELIVERY_LIMIT: usize = 500;

/// The alert a failure event raises, or `None` for an event that is not a failure.
pub async fn for_event(
    ctx: &ServiceContext,
    envelope: &Envelope,
) -> Result<Option<Alert>, PortError> {
    let (kind, dataset, stage, files, reason, batch) = match &envelope.event {
        Event::FileRejected {
            file_id,
            dataset,
            reason,
        } => (
            AlertKind::FileRejected,
            dataset,
            Stage::Validator,
            vec![file_id.clone()],
            reason,
            None,
        ),
        Event::BatchFailed {
            batch_id,
            dataset,
            stage,
            reason,
            files,
        } => (
            AlertKind::BatchFailed,
            dataset,
            *stage,
            files.clone(),
            reason,
            Some(batch_id.as_str()),
        ),
        _ => return Ok(None),
    };
    let state = &ctx.ports.state;
    let mut keys = Vec::with_capacity(files.len());
    let mut trace_id = None;
    for id in &files {
        match state.get(id).await? {
            Some(r) => {
                trace_id = trace_id.or(r.trace_id.clone());
                keys.push(r.key);
            }
            None => keys.push(format!("(file {id}: no record)")),
        }
    }
    if let Some(batch_id) = batch
        && let Some(b) = state.get_batch(batch_id).await?
        && let Some(tp) = b.traceparent.as_deref()
    {
        // A batch has a trace of its own, linked to its files' traces.
        trace_id = choreo_telemetry::trace_id_of(tp)
            .map(str::to_string)
            .or(trace_id);
    }
    Ok(Some(Alert {
        id: format!("event:{}", envelope.id),
        kind,
        dataset: dataset.clone(),
        stage,
        keys,
        reason: reason.clone(),
        trace_id,
        link: link(ctx, files.first(), batch),
        created_at: clock::now(),
        sent_at: None,
    }))
}

/// The dashboard's page for the file (or the batch's first file).
pub fn link(ctx: &ServiceContext, file: Option<&FileId>, batch: Option<&str>) -> String {
    let base = ctx
        .settings
        .config
        .operations
        .dashboard_url
        .trim_end_matches('/');
    match (file, batch) {
        (Some(f), _) => format!("{base}/#file={f}"),
        (None, Some(b)) => format!("{base}/#batch={b}"),
        (None, None) => base.to_string(),
    }
}

/// Sends the alerts that wait, every `flush_interval_secs`, until `shutdown`; one replica at a time.
pub async fn deliver(ctx: ServiceContext, holder: String, shutdown: CancellationToken) {
    let settings = ctx.settings.config.operations.alerts.clone();
    let every = Duration::from_secs(settings.flush_interval_secs.max(1));
    UnderLease::new("auditor:alerts", holder, every, ROUND_SLACK)
        .run(ctx.ports.state.as_ref(), shutdown, || async {
            if let Err(e) = deliver_once(&ctx.ports, settings.digest_threshold).await {
                emit(AlertDeliveryError { error: &e });
            }
        })
        .await;
}

/// One delivery (the caller holds the delivery's lease): what waits, as single messages or one
/// digest. Returns how many alerts went out.
pub async fn deliver_once(ports: &Ports, digest_threshold: usize) -> Result<usize, PortError> {
    let pending = ports.audit.pending_alerts(DELIVERY_LIMIT).await?;
    if pending.is_empty() {
        return Ok(0);
    }
    if pending.len() > digest_threshold {
        notify(ports, &Alert::digest(&pending)).await?;
        let ids: Vec<String> = pending.iter().map(|a| a.id.clone()).collect();
        ports.audit.mark_alerts_sent(&ids, clock::now()).await?;
        emit(AlertDigestSent {
            alerts: pending.len(),
        });
    } else {
        for alert in &pending {
            notify(ports, &alert.message()).await?;
            ports
                .audit
                .mark_alerts_sent(std::slice::from_ref(&alert.id), clock::now())
                .await?;
            emit(AlertSent { alert: &alert.id });
        }
    }
    Ok(pending.len())
}

/// Logs the message in full, then hands it to the backend's notifier.
async fn notify(ports: &Ports, message: &Message) -> Result<(), PortError> {
    emit(AlertNotified {
        subject: &message.subject,
        body: &message.body,
    });
    ports.notifier.notify(message).await
}
