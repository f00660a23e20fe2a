//! Service-tier tests: one stage run through its [`ServiceSpec`] on the local backend, on tokio's
//! paused clock, so its decisions — windows, leases, job-start attempts, retries — play out in
//! milliseconds instead of the minutes they are configured for.
//!
//! A [`StageRig`] opens the local backend on a temporary directory and replaces the pipeline's clock
//! ([`choreo_domain::clock`]) with tokio's: a batch window of ten minutes closes when tokio's clock
//! has moved ten minutes, which a paused runtime does at once when nothing else is left to run. The
//! database waits on its writer with tokio's clock held still, so no timer fires in the middle of a
//! write. Tests run on `#[tokio::test(start_paused = true)]`; the rig must be opened inside it.
//!
//! Only the stage under test runs. Its input arrives as the published events its queue subscribes to
//! ([`StageRig::publish`]); what it publishes goes to every other subscribed queue, where the test
//! reads it ([`StageRig::published`]) — nobody consumes it.

use crate::{ServiceSpec, Settings};
use choreo_domain::config::DatasetConfig;
use choreo_domain::{
    Config, Envelope, Event, FileId, FileRecord, FileState, NewFile, Stage, Transition, clock,
};
use choreo_local::LocalBackend;
use choreo_ports::{JobRunner, JobStart, JobStatus, PortError, Ports, Queue, StateStore};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The longest a [`StageRig::until`] waits, in the paused clock's time.
pub const PATIENCE: Duration = Duration::from_secs(6 * 3600);

/// A stage under test and the backend it runs on.
pub struct StageRig {
    pub settings: Arc<Settings>,
    pub backend: LocalBackend,
    shutdown: CancellationToken,
    running: Option<JoinHandle<()>>,
    _clock: clock::Replaced,
    _dir: tempfile::TempDir,
}

/// A CSV dataset `name` with columns `id` (integer, required, the primary key) and `amount`
/// (number), owning the keys under `<name>/`, with the configuration's default window and batch size.
pub fn dataset(name: &str) -> DatasetConfig {
    serde_json::from_value(serde_json::json!({
        "name": name,
        "match": { "prefix": format!("{name}/") },
        "format": "csv",
        "schema": {
            "fields": [
                {"name": "id", "type": "integer", "constraints": {"required": true}},
                {"name": "amount", "type": "number"}
            ],
            "primaryKey": ["id"]
        },
    }))
    .expect("the test dataset is a valid configuration")
}

impl StageRig {
    /// Opens the local backend with `datasets` on a new directory, the configuration's defaults
    /// changed by `tweak`; the pipeline's clock follows tokio's from here on, on this thread.
    pub fn open(datasets: Vec<DatasetConfig>, tweak: impl FnOnce(&mut Config)) -> StageRig {
        let (wall, start) = (chrono::Utc::now(), tokio::time::Instant::now());
        let replaced = clock::set_source(move || wall + (tokio::time::Instant::now() - start));
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut config = Config {
            data_dir: dir.path().to_path_buf(),
            datasets,
            ..Config::default()
        };
        config.operations.listen = None;
        tweak(&mut config);
        let settings = Settings::from_config(config, dir.path(), None)
            .expect("the test configuration is valid");
        let backend = LocalBackend::open(&settings.config).expect("the local backend opens");
        StageRig {
            settings: Arc::new(settings),
            backend,
            shutdown: CancellationToken::new(),
            running: None,
            _clock: replaced,
            _dir: dir,
        }
    }

    pub fn config(&self) -> &Config {
        &self.settings.config
    }

    pub fn ports(&self) -> Ports {
        self.backend.ports()
    }

    pub fn state(&self) -> Arc<dyn StateStore> {
        self.backend.ports().state
    }

    /// Starts the stage (its consumer and background work) on its own queue.
    pub fn start(&mut self, spec: ServiceSpec) {
        self.start_with(spec, self.ports());
    }

    /// Starts the stage with `ports` instead of the backend's own (a failing job runner, say).
    pub fn start_with(&mut self, spec: ServiceSpec, ports: Ports) {
        let queue = self.queue((spec.queue)(&self.settings.config));
        let run = spec.run(self.settings.clone(), ports, queue, self.shutdown.clone());
        self.running = Some(tokio::spawn(run));
    }

    /// Stops the stage and waits for it to drain; it can be started again (a restarted replica).
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.running.take() {
            task.await.expect("the stage stops without panicking");
        }
        self.shutdown = CancellationToken::new();
    }

    pub fn queue(&self, name: &str) -> Arc<dyn Queue> {
        self.backend.queue(name)
    }

    /// Publishes `event` as the stage before would, under a fresh id.
    pub async fn publish(&self, event: Event) {
        let id = Envelope::new(event.clone()).id;
        crate::Publisher::new(self.ports().bus)
            .publish(id, event)
            .await
            .expect("the local topic takes the event");
    }

    /// Every envelope waiting on `queue` (a subscriber nobody consumes), oldest first, left in
    /// place.
    pub async fn published_envelopes(&self, queue: &str) -> Vec<Envelope> {
        self.queue(queue)
            .peek(1000)
            .await
            .expect("peek")
            .iter()
            .map(|m| serde_json::from_str(&m.body).expect("an envelope"))
            .collect()
    }

    /// The events of [`StageRig::published_envelopes`].
    pub async fn published(&self, queue: &str) -> Vec<Event> {
        let envelopes = self.published_envelopes(queue).await;
        envelopes.into_iter().map(|e| e.event).collect()
    }

    /// Puts `body` at `<dataset>/<name>` in the input bucket and returns the file the ingestor would
    /// register for it, unregistered.
    pub async fn put(&self, dataset: &str, name: &str, body: &str) -> NewFile {
        let objects = self.ports().objects;
        let bucket = &self.settings.config.buckets.input;
        let key = format!("{dataset}/{name}");
        objects
            .put(bucket, &key, body.as_bytes().to_vec())
            .await
            .expect("put");
        let meta = objects
            .head(bucket, &key)
            .await
            .expect("head")
            .expect("the object just put");
        NewFile {
            id: FileId::derive(bucket, &key, &meta.version),
            dataset: dataset.to_string(),
            bucket: bucket.clone(),
            key,
            size: meta.size,
            version: meta.version,
            pin: meta.pin,
            reason: None,
            trace_id: None,
            traceparent: None,
        }
    }

    /// [`StageRig::put`], registered as the ingestor would; `valid` moves it on to VALID as the
    /// validator would. Nothing is published.
    pub async fn file(&self, dataset: &str, name: &str, body: &str, valid: bool) -> FileRecord {
        let new = self.put(dataset, name, body).await;
        let (id, state) = (new.id.clone(), self.state());
        state.register(new).await.expect("register");
        if valid {
            let t = Transition::new(
                id.clone(),
                Stage::Validator,
                FileState::New,
                FileState::Valid,
            )
            .expect("the validator's move")
            .validation("valid");
            state.transition(&t).await.expect("transition");
        }
        self.record(&id).await
    }

    pub async fn record(&self, id: &FileId) -> FileRecord {
        self.state()
            .get(id)
            .await
            .expect("get")
            .expect("the file is registered")
    }

    /// Waits, in the paused clock's time, until `check` holds; panics after [`PATIENCE`] with what
    /// `check` last saw.
    pub async fn until<T, F, Fut>(&self, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, String>>,
    {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            match check().await {
                Ok(v) => return v,
                Err(seen) if tokio::time::Instant::now() >= deadline => {
                    panic!("{what}: not within {PATIENCE:?} of paused time; last seen: {seen}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    /// How long the paused clock has moved since `since`.
    pub fn elapsed(since: tokio::time::Instant) -> Duration {
        tokio::time::Instant::now() - since
    }
}

/// A job runner that answers "too many runs" (`JobStart::Throttled`) to its first `throttle` starts
/// and hands the rest to `inner`; it counts every start asked of it.
pub struct ThrottledJobs {
    inner: Arc<dyn JobRunner>,
    throttle: AtomicUsize,
    starts: AtomicUsize,
}

impl ThrottledJobs {
    pub fn new(inner: Arc<dyn JobRunner>, throttle: usize) -> Arc<ThrottledJobs> {
        Arc::new(ThrottledJobs {
            inner,
            throttle: AtomicUsize::new(throttle),
            starts: AtomicUsize::new(0),
        })
    }

    /// Starts asked for so far, throttled or not.
    pub fn starts(&self) -> usize {
        self.starts.load(Ordering::SeqCst)
    }

    /// Throttles the next `n` starts (0: none).
    pub fn throttle_next(&self, n: usize) {
        self.throttle.store(n, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl JobRunner for ThrottledJobs {
    async fn find_run(&self, job: &str, batch_id: &str) -> Result<Option<String>, PortError> {
        self.inner.find_run(job, batch_id).await
    }

    async fn start_run(
        &self,
        job: &str,
        args: &BTreeMap<String, String>,
    ) -> Result<JobStart, PortError> {
        self.starts.fetch_add(1, Ordering::SeqCst);
        let throttled = self
            .throttle
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if throttled {
            return Ok(JobStart::Throttled);
        }
        self.inner.start_run(job, args).await
    }

    async fn run_status(&self, job: &str, run_id: &str) -> Result<JobStatus, PortError> {
        self.inner.run_status(job, run_id).await
    }
}
