//! A file's trace across batch work.
//!
//! A file's trace starts at its registration and follows its messages through the validator, the
//! quarantine mover and the auditor. From the crawler on, work is done a batch at a time, in the
//! batch's own trace; so each step that moves a batch's files also leaves one span in each file's
//! trace: a child of the file's registration, linked to the batch's span, carrying the step's
//! facts. Opening a file's trace shows every stage it passed; following the link shows the batch's
//! crawl or job. (See docs/observability.md.)

use choreo_domain::{Batch, FileId, FileState, Stage};
use choreo_ports::TransitionOutcome;

/// Leaves a span in the trace of each file `outcomes` moved (those applied), for `step` of `batch`.
pub fn batch_step(
    step: &'static str,
    stage: Stage,
    batch: &Batch,
    from: FileState,
    outcomes: &[(FileId, TransitionOutcome)],
) {
    for (_, outcome) in outcomes {
        let TransitionOutcome::Applied(file) = outcome else {
            continue;
        };
        let span = tracing::info_span!(
            parent: None,
            "batch_step",
            otel.name = step,
            choreo.stage = stage.as_str(),
            choreo.file_id = %file.id,
            choreo.dataset = %file.dataset,
            choreo.key = %file.key,
            choreo.batch_id = %batch.id,
            choreo.state.from = from.as_str(),
            choreo.state.to = file.state.as_str(),
        );
        choreo_telemetry::set_parent_from(&span, file.traceparent.as_deref(), None);
        choreo_telemetry::add_link(&span, batch.traceparent.as_deref());
    }
}
