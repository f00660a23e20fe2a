//! The transform launcher's named events (see [`choreo_telemetry::events`]). Job runs count in
//! `choreo_job_runs_total` when started and when they end; batches it ends count in
//! `choreo_batches_total{stage="transformer"}` as `ingested` or `failed`. `BatchUnknown`,
//! `FileLeftBatch` and `FileTransitioned` are the runtime's.

use crate::STAGE;
use choreo_domain::BatchState;
use choreo_telemetry::events::{InternalEvent, counted};
use std::fmt::Display;

fn job_runs(outcome: &'static str) {
    metrics::counter!("choreo_job_runs_total", "outcome" => outcome).increment(1);
}

/// The watchdog found a transforming batch whose poll timer was lost, and sent it again.
pub struct LostJobPoll<'a> {
    pub batch_id: &'a str,
    pub state: BatchState,
}

impl InternalEvent for LostJobPoll<'_> {
    fn emit(self) {
        tracing::warn!(
            batch_id = self.batch_id,
            state = self.state.as_str(),
            "LostJobPoll"
        );
        counted("LostJobPoll");
    }
}

/// A batch's job run was started before, and its id not recorded (the launcher died between):
/// found by the batch id in its arguments, and taken, rather than started twice.
pub struct JobRunFound<'a> {
    pub batch_id: &'a str,
    pub run_id: &'a str,
}

impl InternalEvent for JobRunFound<'_> {
    fn emit(self) {
        tracing::info!(
            batch_id = self.batch_id,
            run_id = self.run_id,
            "JobRunFound"
        );
        counted("JobRunFound");
    }
}

/// A batch's job run started.
pub struct JobRunStarted<'a> {
    pub batch_id: &'a str,
    pub job: &'a str,
    pub run_id: &'a str,
}

impl InternalEvent for JobRunStarted<'_> {
    fn emit(self) {
        tracing::info!(
            batch_id = self.batch_id,
            job = self.job,
            run_id = self.run_id,
            "JobRunStarted"
        );
        counted("JobRunStarted");
        job_runs("started");
    }
}

/// The job has as many runs as it may: the start is tried again later.
pub struct JobRunThrottled<'a> {
    pub batch_id: &'a str,
    pub job: &'a str,
}

impl InternalEvent for JobRunThrottled<'_> {
    fn emit(self) {
        tracing::info!(batch_id = self.batch_id, job = self.job, "JobRunThrottled");
        counted("JobRunThrottled");
    }
}

/// Starting the job run failed transiently: the start is tried again later.
pub struct JobRunNotStarted<'a> {
    pub batch_id: &'a str,
    pub job: &'a str,
    pub error: &'a dyn Display,
}

impl InternalEvent for JobRunNotStarted<'_> {
    fn emit(self) {
        tracing::warn!(batch_id = self.batch_id, job = self.job, error = %self.error, "JobRunNotStarted");
        counted("JobRunNotStarted");
    }
}

/// A batch's transformation ended, recorded INGESTED or FAILED: its job run's end, or its start
/// given up (`run_id` none).
pub struct JobRunEnded<'a> {
    pub batch_id: &'a str,
    pub dataset: &'a str,
    pub state: BatchState,
    pub run_id: Option<&'a str>,
}

impl InternalEvent for JobRunEnded<'_> {
    fn emit(self) {
        let failed = self.state == BatchState::Failed;
        tracing::info!(
            batch_id = self.batch_id,
            dataset = self.dataset,
            state = self.state.as_str(),
            run_id = self.run_id,
            "JobRunEnded"
        );
        counted("JobRunEnded");
        let outcome = if failed { "failed" } else { "ingested" };
        metrics::counter!("choreo_batches_total", "stage" => STAGE.as_str(), "outcome" => outcome)
            .increment(1);
        if self.run_id.is_some() {
            job_runs(if failed { "failed" } else { "succeeded" });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use choreo_telemetry::events::{Recorded, emit};

    #[test]
    fn job_runs_and_batches_count_by_outcome() {
        let recorded = Recorded::new();
        recorded.run(|| {
            emit(JobRunStarted {
                batch_id: "b-1",
                job: "builtin",
                run_id: "r-1",
            });
            emit(JobRunEnded {
                batch_id: "b-1",
                dataset: "orders",
                state: BatchState::Ingested,
                run_id: Some("r-1"),
            });
            emit(JobRunEnded {
                batch_id: "b-2",
                dataset: "orders",
                state: BatchState::Failed,
                run_id: None,
            });
        });
        let runs = |outcome| recorded.value("choreo_job_runs_total", &[("outcome", outcome)]);
        assert_eq!(runs("started"), 1.0);
        assert_eq!(runs("succeeded"), 1.0);
        assert_eq!(runs("failed"), 0.0, "b-2's job never ran");
        let batches = |outcome| {
            recorded.value(
                "choreo_batches_total",
                &[("stage", "transformer"), ("outcome", outcome)],
            )
        };
        assert_eq!(batches("ingested"), 1.0);
        assert_eq!(batches("failed"), 1.0);
    }
}
