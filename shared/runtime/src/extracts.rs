//! What the operator surfaces (the command line, the auditor's API) and the extractor share about
//! scheduled extracts: sending their messages, ticking by hand, retrying failed units. The
//! extractor itself is `services/extractor`.

use choreo_domain::clock;
use choreo_domain::extract::{ExtractMessage, Tick};
use choreo_ports::{ExtractStore, OutgoingMessage, PortError, Queue};
use choreo_telemetry::events::emit;
use std::time::Duration;

/// Sends `message` to the extract queue.
pub async fn send(queue: &dyn Queue, message: &ExtractMessage) -> Result<(), PortError> {
    let kind = match message {
        ExtractMessage::ExtractTick { .. } => "ExtractTick",
        ExtractMessage::ExtractKey { .. } => "ExtractKey",
    };
    let mut attributes = std::collections::BTreeMap::from([(
        choreo_domain::event::ATTR_EVENT_TYPE.to_string(),
        kind.to_string(),
    )]);
    if let Some(tp) = choreo_telemetry::current_traceparent() {
        attributes.insert(choreo_domain::event::ATTR_TRACEPARENT.to_string(), tp);
    }
    queue
        .send(
            OutgoingMessage {
                body: message.to_json(),
                attributes,
            },
            Duration::ZERO,
        )
        .await
}

/// Ticks `extract` now, by hand: records the tick and sends it. The tick's id says it was manual.
pub async fn run_now(
    store: &dyn ExtractStore,
    queue: &dyn Queue,
    extract: &str,
) -> Result<Tick, PortError> {
    let tick = Tick::manual(extract, clock::now());
    store.add_tick(&tick).await?;
    send(
        queue,
        &ExtractMessage::ExtractTick {
            extract: extract.to_string(),
            tick_id: tick.id.clone(),
        },
    )
    .await?;
    emit(crate::events::ExtractTicked {
        extract,
        tick_id: &tick.id,
        cause: "manual",
    });
    Ok(tick)
}

/// Makes the FAILED units of `tick_id` PENDING again and sends each; returns the keys resumed.
pub async fn retry(
    store: &dyn ExtractStore,
    queue: &dyn Queue,
    tick_id: &str,
) -> Result<Vec<String>, PortError> {
    let mut resumed = Vec::new();
    for unit in store.units(tick_id).await? {
        if store.reset_unit(tick_id, &unit.key).await? {
            send(
                queue,
                &ExtractMessage::ExtractKey {
                    extract: unit.extract.clone(),
                    tick_id: tick_id.to_string(),
                    key: unit.key.clone(),
                },
            )
            .await?;
            resumed.push(unit.key);
        }
    }
    Ok(resumed)
}
