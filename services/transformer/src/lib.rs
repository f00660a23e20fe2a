//! The transform launcher: CATALOGED → TRANSFORMING → INGESTED | FAILED, a batch at a time.
//!
//! `BatchCataloged` sends the first `JobPoll` timer; each `JobPoll` drives the batch one step, as
//! `choreo_domain::lifecycle` decides: move its
//! files to TRANSFORMING and write its manifest (an object listing the files), start one job run with
//! the manifest and the batch id as arguments, then poll the run with delayed messages to this queue
//! until it ends, and move the files to INGESTED or FAILED.
//!
//! One job run per batch, even across replicas and crashes: the start happens under a short lease, and
//! before starting, the launcher asks the job runner for a run already carrying the batch id — the
//! launcher may have died between starting a run and recording it. A start that is throttled or meets
//! a transient error is tried again at the next poll, `runtime.job_start_attempts` times in all, and
//! then the batch fails: a job that cannot start is a failure an operator must see, not a retry loop.
//!
//! Every poll renews the batch's lease `job:<batch>`. A poll timer lost outright (its queue purged,
//! the message dead-lettered) leaves the lease to lapse, and the watchdog ([`Launcher::recover`])
//! sends the batch's poll again.

pub mod events;

use async_trait::async_trait;
use choreo_domain::clock;
use choreo_domain::lifecycle::{self, NotStarted, Step};
use choreo_domain::{
    Batch, BatchState, Event, FileState, JobArgs, Manifest, ManifestFile, Stage, Transition,
};
use choreo_ports::{
    BatchOutcome, JobStart, JobStatus, LeaseOutcome, PortError, ReceivedMessage, TransitionOutcome,
};
use choreo_runtime::events::{BatchUnknown, FileLeftBatch};
use choreo_runtime::fanout;
use choreo_runtime::publish::send_timer;
use choreo_runtime::{Background, Handler, HandlerError, ServiceContext, decode};
use choreo_telemetry::events::emit;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const STAGE: Stage = Stage::Transformer;

/// The service's wiring: its queue and its handler.
pub const SPEC: choreo_runtime::ServiceSpec = choreo_runtime::ServiceSpec {
    stage: STAGE,
    queue: queue_name,
    build: handler,
    background: Some(background),
};

fn background(ctx: ServiceContext, shutdown: CancellationToken) -> Background {
    Box::pin(choreo_runtime::watchdog::run(
        ctx,
        "launcher",
        shutdown,
        |ctx| async move { Launcher { ctx }.recover().await },
    ))
}

fn batch_lease(batch_id: &str) -> String {
    format!("job:{batch_id}")
}

fn queue_name(config: &choreo_domain::Config) -> &str {
    &config.queues.transform
}

/// How long a replica may take between finding no run for a batch and recording the one it started.
/// Short: a replica that died holding it delays the batch this long.
const START_LEASE: Duration = Duration::from_secs(60);

pub struct Launcher {
    ctx: ServiceContext,
}

pub fn handler(ctx: &ServiceContext) -> Arc<dyn Handler> {
    Arc::new(Launcher { ctx: ctx.clone() })
}

/// The manifest's key in the work bucket.
pub fn manifest_key(batch: &Batch) -> String {
    format!("manifests/{}/{}.json", batch.dataset, batch.id)
}

#[async_trait]
impl Handler for Launcher {
    async fn handle(&self, message: &ReceivedMessage) -> Result<(), HandlerError> {
        let batch_id = match decode(message)?.event {
            Event::BatchCataloged { batch_id, .. } => {
                return self.on_cataloged(&batch_id).await;
            }
            Event::JobPoll { batch_id } => batch_id,
            other => {
                return Err(HandlerError::Permanent(format!(
                    "the transform launcher does not take {}",
                    other.kind().as_str()
                )));
            }
        };
        let Some(batch) = self.ctx.ports.state.get_batch(&batch_id).await? else {
            emit(BatchUnknown {
                stage: STAGE,
                batch_id: &batch_id,
            });
            return Ok(());
        };
        if !batch.state.is_terminal() {
            // Renewed by every poll: a lapse means the timer chain broke (see `recover`).
            self.ctx
                .ports
                .state
                .acquire_lease(&batch_lease(&batch.id), &batch.id, self.lease_time())
                .await?;
        }
        self.drive(batch).await
    }
}

impl Launcher {
    /// Starts the batch's chain of `JobPoll` timers. Only `JobPoll` schedules the next one, so a
    /// duplicate `BatchCataloged` for a batch already under way does nothing.
    async fn on_cataloged(&self, batch_id: &str) -> Result<(), HandlerError> {
        let Some(batch) = self.ctx.ports.state.get_batch(batch_id).await? else {
            return Err(HandlerError::Transient(format!("no batch {batch_id} yet")));
        };
        match lifecycle::next(&batch, STAGE) {
            Step::BeginTransform => self.poll_after(&batch, Duration::ZERO).await,
            Step::FinishTransform => self.announce(&batch).await,
            _ => Ok(()),
        }
    }

    /// Does what the lifecycle says comes next for the batch.
    async fn drive(&self, batch: Batch) -> Result<(), HandlerError> {
        match lifecycle::next(&batch, STAGE) {
            Step::BeginTransform => self.begin(batch).await,
            Step::StartJob | Step::PollJob => self.run(batch).await,
            Step::FinishTransform => self.announce(&batch).await,
            _ => Ok(()),
        }
    }

    async fn poll_after(&self, batch: &Batch, delay: Duration) -> Result<(), HandlerError> {
        let poll = Event::JobPoll {
            batch_id: batch.id.clone(),
        };
        send_timer(
            self.ctx.queue.as_ref(),
            poll,
            delay,
            batch.traceparent.clone(),
        )
        .await?;
        Ok(())
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_secs(self.ctx.settings.config.runtime.poll_interval_secs)
    }

    fn lease_time(&self) -> Duration {
        Duration::from_secs(self.ctx.settings.config.runtime.lease_secs)
    }

    /// The watchdog's pass: sends the poll again for each catalogued or transforming batch whose
    /// lease lapsed (or, for a batch no poll has reached yet, that has waited a whole lease time),
    /// renewing the lease on its behalf so the next pass sees it live. Returns how many it sent.
    pub async fn recover(&self) -> Result<usize, PortError> {
        let state = &self.ctx.ports.state;
        let now = clock::now();
        let lease_time = self.lease_time();
        let mut sent = 0;
        for waiting in [BatchState::Cataloged, BatchState::Transforming] {
            for batch in state.batches_in(waiting).await? {
                let lease = batch_lease(&batch.id);
                let lapsed = match state.lease(&lease).await? {
                    Some(l) => l.expires_at <= now,
                    None => {
                        let idle = (now - batch.updated_at).to_std().unwrap_or_default();
                        idle >= lease_time
                    }
                };
                if !lapsed {
                    continue;
                }
                state.acquire_lease(&lease, &batch.id, lease_time).await?;
                emit(events::LostJobPoll {
                    batch_id: &batch.id,
                    state: batch.state,
                });
                self.poll_after(&batch, Duration::ZERO)
                    .await
                    .map_err(|e| PortError::transient("recover", &batch.id, e.to_string()))?;
                sent += 1;
            }
        }
        Ok(sent)
    }

    fn trace_id(batch: &Batch) -> Option<String> {
        batch
            .traceparent
            .as_deref()
            .and_then(choreo_telemetry::trace_id_of)
            .map(str::to_string)
    }

    /// CATALOGED: move the files to TRANSFORMING, write the manifest (the files, oldest
    /// first, with the dataset's schema and personal-data columns), record the batch as TRANSFORMING.
    async fn begin(&self, mut batch: Batch) -> Result<(), HandlerError> {
        let ports = &self.ctx.ports;
        let trace_id = Self::trace_id(&batch);
        let mut entries = Vec::with_capacity(batch.files.len());
        let mut kept = Vec::with_capacity(batch.files.len());
        let moves = batch.files.iter().map(|file| {
            Transition::new(
                file.clone(),
                STAGE,
                FileState::Cataloged,
                FileState::Transforming,
            )
            .expect("the launcher's moves are in the table")
            .trace_id(trace_id.clone())
        });
        let state = &ports.state;
        let outcomes = fanout::transition_all(state, moves.collect()).await?;
        choreo_runtime::trace::batch_step(
            "transform",
            STAGE,
            &batch,
            FileState::Cataloged,
            &outcomes,
        );
        for (file, outcome) in outcomes {
            let record = match outcome {
                TransitionOutcome::Applied(r) => r,
                TransitionOutcome::Conflict(r)
                    if r.state == FileState::Transforming
                        && r.batch_id.as_deref() == Some(batch.id.as_str()) =>
                {
                    r
                }
                TransitionOutcome::Conflict(r) => {
                    emit(FileLeftBatch {
                        stage: STAGE,
                        batch_id: &batch.id,
                        file_id: &file,
                        state: Some(r.state),
                    });
                    continue;
                }
                TransitionOutcome::NotFound => continue,
            };
            kept.push(record.id.clone());
            entries.push(record);
        }
        // Oldest registration first: the built-in transform keeps the last row of a primary key.
        entries.sort_by(|a, b| (a.created_at, &a.key).cmp(&(b.created_at, &b.key)));
        let settings = &self.ctx.settings;
        let dataset = settings.config.dataset(&batch.dataset);
        let manifest = Manifest {
            batch_id: batch.id.clone(),
            dataset: batch.dataset.clone(),
            files: entries
                .into_iter()
                .map(|r| ManifestFile {
                    file_id: r.id,
                    bucket: r.bucket,
                    key: r.key,
                    pin: r.pin,
                })
                .collect(),
            schema: settings.schemas.get(&batch.dataset).cloned(),
            personal_data: dataset.map(|d| d.personal_data.clone()).unwrap_or_default(),
            format: dataset.map(|d| d.format),
            csv: dataset.map(|d| d.csv.clone()),
        };
        let work = &self.ctx.settings.config.buckets.work;
        let key = manifest_key(&batch);
        ports
            .objects
            .put(
                work,
                &key,
                serde_json::to_vec_pretty(&manifest).expect("json"),
            )
            .await?;
        batch.files = kept;
        batch.manifest = Some(format!("{work}/{key}"));
        batch.state = BatchState::Transforming;
        batch.updated_at = clock::now();
        match ports
            .state
            .update_batch(&mut batch, BatchState::Cataloged)
            .await?
        {
            BatchOutcome::Applied => self.run(batch).await,
            // Another poll got there first; it carries on.
            BatchOutcome::Conflict(_) => Ok(()),
        }
    }

    /// TRANSFORMING: start the run if there is none, then poll it.
    async fn run(&self, mut batch: Batch) -> Result<(), HandlerError> {
        let ports = &self.ctx.ports;
        let run_id = match batch.job_run_id.clone() {
            Some(id) => id,
            None => match self.start(&batch).await? {
                Started::Run(id) => {
                    batch.job_run_id = Some(id.clone());
                    batch.updated_at = clock::now();
                    if let BatchOutcome::Conflict(_) = ports
                        .state
                        .update_batch(&mut batch, BatchState::Transforming)
                        .await?
                    {
                        return Ok(());
                    }
                    id
                }
                Started::Busy => return self.poll_after(&batch, self.poll_interval()).await,
                Started::NotYet(why) => return self.not_started(batch, why).await,
                Started::Refused(reason) => return self.complete(batch, Some(reason)).await,
            },
        };
        match ports.jobs.run_status(&batch.job, &run_id).await? {
            JobStatus::Running => self.poll_after(&batch, self.poll_interval()).await,
            JobStatus::Succeeded => self.complete(batch, None).await,
            JobStatus::Failed { state, reason } => {
                let why = format!("job run {run_id} ended {state}: {reason}");
                self.complete(batch, Some(why)).await
            }
        }
    }

    async fn start(&self, batch: &Batch) -> Result<Started, HandlerError> {
        let state = &self.ctx.ports.state;
        let jobs = &self.ctx.ports.jobs;
        let lease = format!("jobstart:{}", batch.id);
        let holder = uuid::Uuid::new_v4().to_string();
        if let LeaseOutcome::Held { .. } = state.acquire_lease(&lease, &holder, START_LEASE).await?
        {
            return Ok(Started::Busy);
        }
        let outcome = async {
            if let Some(id) = jobs.find_run(&batch.job, &batch.id).await? {
                emit(events::JobRunFound {
                    batch_id: &batch.id,
                    run_id: &id,
                });
                return Ok(Started::Run(id));
            }
            let args = JobArgs {
                batch_id: batch.id.clone(),
                dataset: batch.dataset.clone(),
                manifest: batch.manifest.clone().unwrap_or_default(),
            }
            .to_arguments();
            match jobs.start_run(&batch.job, &args).await {
                Ok(JobStart::Started { run_id }) => {
                    emit(events::JobRunStarted {
                        batch_id: &batch.id,
                        job: &batch.job,
                        run_id: &run_id,
                    });
                    Ok(Started::Run(run_id))
                }
                Ok(JobStart::Throttled) => {
                    emit(events::JobRunThrottled {
                        batch_id: &batch.id,
                        job: &batch.job,
                    });
                    Ok(Started::NotYet(
                        "throttled (too many concurrent runs)".into(),
                    ))
                }
                Err(e) if !e.is_retryable() => {
                    Ok(Started::Refused(format!("job could not start: {e}")))
                }
                Err(e) => {
                    emit(events::JobRunNotStarted {
                        batch_id: &batch.id,
                        job: &batch.job,
                        error: &e,
                    });
                    Ok(Started::NotYet(e.to_string()))
                }
            }
        }
        .await;
        state.release_lease(&lease, &holder).await?;
        outcome
    }

    /// A start that was throttled or met a transient error: counted on the batch, tried again at the
    /// next poll, and after `runtime.job_start_attempts` of them the batch fails.
    async fn not_started(&self, mut batch: Batch, why: String) -> Result<(), HandlerError> {
        let limit = self.ctx.settings.config.runtime.job_start_attempts;
        batch.start_attempts += 1;
        let decision = lifecycle::after_failed_start(&batch.job, batch.start_attempts, limit, &why);
        if let NotStarted::GiveUp(reason) = decision {
            return self.complete(batch, Some(reason)).await;
        }
        batch.updated_at = clock::now();
        match self
            .ctx
            .ports
            .state
            .update_batch(&mut batch, BatchState::Transforming)
            .await?
        {
            BatchOutcome::Applied => self.poll_after(&batch, self.poll_interval()).await,
            BatchOutcome::Conflict(_) => Ok(()), // another poll moved it on; it carries on
        }
    }

    async fn complete(
        &self,
        mut batch: Batch,
        failure: Option<String>,
    ) -> Result<(), HandlerError> {
        let state = &self.ctx.ports.state;
        let ending = lifecycle::job_ending(failure);
        let to = ending.files;
        let trace_id = Self::trace_id(&batch);
        let moves = batch.files.iter().map(|file| {
            let t = Transition::new(file.clone(), STAGE, FileState::Transforming, to)
                .expect("the launcher's moves are in the table")
                .trace_id(trace_id.clone());
            match &ending.reason {
                Some(r) => t.reason(r.clone()),
                None => t,
            }
        });
        let outcomes = fanout::transition_all(state, moves.collect()).await?;
        choreo_runtime::trace::batch_step(
            "job_end",
            STAGE,
            &batch,
            FileState::Transforming,
            &outcomes,
        );
        for (file, outcome) in outcomes {
            if let TransitionOutcome::Conflict(r) = outcome
                && r.state != to
            {
                emit(FileLeftBatch {
                    stage: STAGE,
                    batch_id: &batch.id,
                    file_id: &file,
                    state: Some(r.state),
                });
            }
        }
        batch.state = ending.batch;
        batch.failed_stage = ending.reason.is_some().then_some(STAGE);
        batch.reason = ending.reason;
        batch.updated_at = clock::now();
        match state
            .update_batch(&mut batch, BatchState::Transforming)
            .await?
        {
            BatchOutcome::Applied => {
                emit(events::JobRunEnded {
                    batch_id: &batch.id,
                    dataset: &batch.dataset,
                    state: batch.state,
                    run_id: batch.job_run_id.as_deref(),
                });
                self.announce(&batch).await
            }
            // Still transforming: another handler updated the batch since it was read, and its
            // poll completes it.
            BatchOutcome::Conflict(Some(stored)) if stored.state == BatchState::Transforming => {
                Ok(())
            }
            BatchOutcome::Conflict(Some(stored)) => self.announce(&stored).await,
            BatchOutcome::Conflict(None) => Ok(()),
        }
    }

    /// Publishes the batch's final event (again, in the outbox case) and frees its lease.
    async fn announce(&self, batch: &Batch) -> Result<(), HandlerError> {
        self.ctx
            .ports
            .state
            .release_lease(&batch_lease(&batch.id), &batch.id)
            .await?;
        self.ctx.publisher.announce(batch, STAGE).await?;
        Ok(())
    }
}

enum Started {
    Run(String),
    /// Another replica is starting it: poll again later.
    Busy,
    /// Throttled, or a transient error: an attempt that counts (see `not_started`).
    NotYet(String),
    /// The runner refused the job for good (it does not exist, say): the batch fails.
    Refused(String),
}
