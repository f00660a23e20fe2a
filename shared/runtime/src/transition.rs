//! Applying file transitions: the one place a service's conditional write is observed, so every
//! applied move emits [`FileTransitioned`] whichever store made it.

use crate::events::FileTransitioned;
use choreo_domain::Transition;
use choreo_ports::{PortError, StateStore, TransitionOutcome};
use choreo_telemetry::events::emit;

/// Applies `t` through [`StateStore::transition`], emitting [`FileTransitioned`] if it applied.
pub async fn apply(state: &dyn StateStore, t: &Transition) -> Result<TransitionOutcome, PortError> {
    let outcome = state.transition(t).await?;
    observe(t, &outcome);
    Ok(outcome)
}

/// Emits [`FileTransitioned`] for `t` if `outcome` says it applied.
pub(crate) fn observe(t: &Transition, outcome: &TransitionOutcome) {
    if let TransitionOutcome::Applied(r) = outcome {
        emit(FileTransitioned {
            stage: t.stage,
            from: t.from,
            to: t.to,
            file_id: &r.id,
            dataset: &r.dataset,
        });
    }
}
