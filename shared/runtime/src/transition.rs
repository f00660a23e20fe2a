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
    // One file's move, in the handler's span (which is in the file's trace): say which.
    if let TransitionOutcome::Applied(_) = &outcome {
        choreo_telemetry::annotate("choreo.state.from", t.from.as_str());
        choreo_telemetry::annotate("choreo.state.to", t.to.as_str());
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout;
    use choreo_domain::{Config, FileId, FileState, NewFile, Stage};
    use choreo_local::LocalBackend;
    use choreo_telemetry::events::Recorded;
    use std::sync::Arc;

    fn new_file(id: &str) -> NewFile {
        NewFile {
            id: FileId::from(id),
            dataset: "orders".into(),
            bucket: "in".into(),
            key: format!("{id}.csv"),
            size: 1,
            version: "v1".into(),
            pin: None,
            reason: None,
            trace_id: None,
            traceparent: None,
        }
    }

    fn validate(id: &str) -> Transition {
        Transition::new(
            FileId::from(id),
            Stage::Validator,
            FileState::New,
            FileState::Valid,
        )
        .unwrap()
    }

    // Current-thread, so the store's awaits resume on the thread the recorder is installed on.
    #[tokio::test(flavor = "current_thread")]
    async fn only_applied_moves_are_counted_one_at_a_time_or_by_batch() {
        let recorded = Recorded::new();
        let _guard = recorded.install();
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        let backend = LocalBackend::open(&config).unwrap();
        let state: Arc<dyn StateStore> = backend.ports().state;
        for id in ["f-1", "f-2", "f-3"] {
            state.register(new_file(id)).await.unwrap();
        }
        assert!(matches!(
            apply(state.as_ref(), &validate("f-1")).await.unwrap(),
            TransitionOutcome::Applied(_)
        ));
        // A duplicate: a conflict, not a second move.
        assert!(matches!(
            apply(state.as_ref(), &validate("f-1")).await.unwrap(),
            TransitionOutcome::Conflict(_)
        ));
        let ts = ["f-1", "f-2", "f-3", "f-404"].map(validate).to_vec();
        fanout::transition_all(&state, ts).await.unwrap();
        assert_eq!(
            recorded.value(
                "choreo_file_transitions_total",
                &[("stage", "validator"), ("from", "NEW"), ("to", "VALID")]
            ),
            3.0,
            "f-1 once, f-2 and f-3 by batch; neither conflicts nor missing records count"
        );
    }
}
