//! Starting a pipeline on a fresh data directory, feeding it, and reading back what it did.

use choreo::app::Pipeline;
use choreo::demo;
use choreo_domain::{Config, FileRecord, FileState};
use choreo_ports::{
    OutgoingMessage, PeekedMessage, PortError, Ports, Queue, QueueDepth, ReceivedMessage,
};
use choreo_runtime::Settings;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a test waits for the pipeline to settle before failing.
pub const SETTLE: Duration = Duration::from_secs(180);

/// A pipeline running in this process on a temporary data directory.
pub struct TestApp {
    /// Kept for its lifetime: the data directory is removed when the app is dropped.
    pub _dir: TempDir,
    pub pipeline: Pipeline,
    pub shutdown: CancellationToken,
    tasks: Option<TaskTracker>,
}

/// The demo configuration in `dir`, sped up for tests.
pub fn demo_settings(dir: &Path, tweak: impl FnOnce(&mut Config)) -> Settings {
    let file = demo::write_config(dir, demo::CONFIG_FILE).unwrap();
    let mut settings = Settings::load(Some(&file)).unwrap();
    let c = &mut settings.config;
    c.runtime.scan_interval_ms = 50;
    c.runtime.poll_interval_secs = 1;
    for d in &mut c.datasets {
        d.batch_window_secs = 1;
    }
    c.operations.listen = None; // tests that want the dashboard ask for it, on port 0
    // The test binary cannot run a job worker; the workspace's choreo binary can.
    c.local.job_worker = Some(env!("CARGO_BIN_EXE_choreo").into());
    tweak(c);
    settings
}

impl TestApp {
    /// Opens a pipeline on a new directory with the demo's datasets; does not start it.
    pub async fn new(tweak: impl FnOnce(&mut Config)) -> TestApp {
        choreo_telemetry::init_for_tests();
        let dir = tempfile::tempdir().unwrap();
        let settings = demo_settings(dir.path(), tweak);
        let pipeline = Pipeline::open(settings).await.unwrap();
        TestApp {
            _dir: dir,
            pipeline,
            shutdown: CancellationToken::new(),
            tasks: None,
        }
    }

    /// Opens a pipeline with `settings` on `dir` (which the app keeps); does not start it.
    pub async fn with_settings(dir: TempDir, settings: Settings) -> TestApp {
        let pipeline = Pipeline::open(settings).await.unwrap();
        TestApp {
            _dir: dir,
            pipeline,
            shutdown: CancellationToken::new(),
            tasks: None,
        }
    }

    pub fn start(&mut self) {
        self.tasks = Some(self.pipeline.start(&self.shutdown));
    }

    pub fn start_with(&mut self, ports: Ports, queue: impl Fn(&str) -> Arc<dyn Queue>) {
        self.tasks = Some(self.pipeline.start_with(&self.shutdown, ports, queue));
    }

    pub async fn put(&self, key: &str, body: &[u8]) {
        let input = &self.pipeline.settings.config.buckets.input;
        self.pipeline
            .backend
            .ports()
            .objects
            .put(input, key, body.to_vec())
            .await
            .unwrap();
    }

    pub async fn put_demo_samples(&self) {
        for s in demo::samples() {
            self.put(&s.key, &s.body).await;
        }
    }

    /// Waits until the pipeline is idle, failing the test after [`SETTLE`].
    pub async fn settle(&self) {
        tokio::time::timeout(SETTLE, self.pipeline.wait_until_idle(&self.shutdown))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the pipeline did not settle in {SETTLE:?}; files: {:#?}",
                    futures_lite_block(&self.pipeline)
                )
            })
            .unwrap();
    }

    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.tasks.take() {
            t.wait().await;
        }
    }

    /// Every record, by key.
    pub async fn by_key(&self) -> BTreeMap<String, FileRecord> {
        records_by_key(&self.pipeline).await
    }
}

pub async fn records_by_key(pipeline: &Pipeline) -> BTreeMap<String, FileRecord> {
    let mut out = BTreeMap::new();
    for r in pipeline.files(None, None).await.unwrap() {
        let previous = out.insert(r.key.clone(), r);
        assert!(previous.is_none(), "two records for one key: {previous:#?}");
    }
    out
}

fn futures_lite_block(pipeline: &Pipeline) -> Vec<(String, FileState)> {
    let p = pipeline.clone();
    std::thread::spawn(move || {
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(async move {
                p.files(None, None)
                    .await
                    .map(|v| v.into_iter().map(|r| (r.key, r.state)).collect())
                    .unwrap_or_default()
            })
    })
    .join()
    .unwrap()
}

/// The (stage, from, to) steps of a record's history.
pub fn steps(r: &FileRecord) -> Vec<(String, Option<FileState>, FileState)> {
    r.history
        .iter()
        .map(|h| (h.stage.as_str().to_string(), h.from, h.to))
        .collect()
}

/// What every demo file must end as, with words its reason must contain.
pub fn assert_demo_outcome(records: &BTreeMap<String, FileRecord>) {
    use FileState::*;
    let samples = demo::samples();
    assert_eq!(records.len(), samples.len(), "one record per sample file");
    for s in samples {
        let r = records
            .get(&s.key)
            .unwrap_or_else(|| panic!("no record for {}", s.key));
        match s.defect {
            None => {
                assert_eq!(r.state, Ingested, "{}: {:?}", s.key, r.reason);
                let expected = vec![
                    ("ingestor".to_string(), None, New),
                    ("validator".into(), Some(New), Valid),
                    ("crawler".into(), Some(Valid), Cataloged),
                    ("transformer".into(), Some(Cataloged), Transforming),
                    ("transformer".into(), Some(Transforming), Ingested),
                ];
                assert_eq!(steps(r), expected, "{}", s.key);
                assert!(r.batch_id.is_some());
            }
            Some(defect) => {
                assert_eq!(r.state, Quarantined, "{} ({defect})", s.key);
                let reason = r.reason.clone().unwrap_or_default().to_lowercase();
                let words: &[&str] = match defect {
                    "bad types" => &["type"],
                    "missing column" => &["missing", "currency"],
                    "ragged rows" => &["ragged"],
                    "empty file" => &["empty"],
                    "binary garbage" => &["utf-8"],
                    "invalid UTF-8" => &["utf-8"],
                    "truncated gzip" => &["gzip"],
                    "a bad JSON line" => &["json"],
                    "a key that matches no dataset" => &["no dataset matches"],
                    other => panic!("unknown defect {other}"),
                };
                for w in words {
                    assert!(
                        reason.contains(w),
                        "{} ({defect}): reason {reason:?} lacks {w:?}",
                        s.key
                    );
                }
                let expected = vec![
                    ("ingestor".to_string(), None, New),
                    ("validator".into(), Some(New), Invalid),
                    ("quarantine".into(), Some(Invalid), Quarantined),
                ];
                assert_eq!(steps(r), expected, "{}", s.key);
            }
        }
        for h in &r.history {
            assert!(h.trace_id.is_some(), "{}: history without trace id", s.key);
        }
    }
}

/// How many job runs the local job runner recorded (the local backend's own table).
pub fn job_runs(pipeline: &Pipeline) -> usize {
    let db = pipeline.settings.config.data_dir.join("choreo.db");
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("SELECT COUNT(*) FROM job_runs", [], |r| r.get::<_, i64>(0))
        .unwrap() as usize
}

/// The standard output of a command that must have succeeded (its standard error in the failure).
pub fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A program of the workspace's `.venv` (which `scripts/test` fills), or the bare name from `PATH`.
pub fn venv_bin(name: &str) -> std::path::PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".venv/bin")
        .join(name);
    if venv.exists() { venv } else { name.into() }
}

/// A test's queue fault: changes what `receive` hands over or what `delete` does; [`Tapped`]
/// forwards everything else to [`Tap::inner`].
#[async_trait::async_trait]
pub trait Tap: Send + Sync + 'static {
    fn inner(&self) -> &Arc<dyn Queue>;

    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, PortError> {
        self.inner().receive(max, wait, visibility).await
    }

    async fn delete(&self, receipt: &str) -> Result<(), PortError> {
        self.inner().delete(receipt).await
    }
}

/// A [`Tap`] as a queue.
pub struct Tapped<T>(pub T);

impl<T: Tap> Tapped<T> {
    pub fn queue(tap: T) -> Arc<Tapped<T>> {
        Arc::new(Tapped(tap))
    }
}

#[async_trait::async_trait]
impl<T: Tap> Queue for Tapped<T> {
    fn name(&self) -> &str {
        self.0.inner().name()
    }

    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, PortError> {
        self.0.receive(max, wait, visibility).await
    }

    async fn delete(&self, receipt: &str) -> Result<(), PortError> {
        self.0.delete(receipt).await
    }

    async fn change_visibility(&self, receipt: &str, v: Duration) -> Result<(), PortError> {
        self.0.inner().change_visibility(receipt, v).await
    }

    async fn send(&self, message: OutgoingMessage, delay: Duration) -> Result<(), PortError> {
        self.0.inner().send(message, delay).await
    }

    async fn depth(&self) -> Result<QueueDepth, PortError> {
        self.0.inner().depth().await
    }

    async fn peek(&self, max: usize) -> Result<Vec<PeekedMessage>, PortError> {
        self.0.inner().peek(max).await
    }

    async fn purge(&self) -> Result<u64, PortError> {
        self.0.inner().purge().await
    }
}

/// A child process stopped with SIGTERM (and waited for) when dropped.
pub struct Running(pub std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let _ = self.0.wait();
    }
}

/// `choreo up --demo` in `dir` with `env` added, scanning every 50 ms; returns the process and
/// what follows `prefix` on the first line of its stderr that starts with it (an address it
/// prints). Its stderr is read to its end on a thread: a full pipe would block the pipeline.
pub fn up_demo_printing(
    dir: &Path,
    env: &[(&str, &str)],
    prefix: &'static str,
) -> (Running, String) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_choreo"))
        .arg("--data-dir")
        .arg(dir)
        .args(["up", "--demo"])
        .envs(env.iter().copied())
        .env("CHOREO_RUNTIME__SCAN_INTERVAL_MS", "50")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix(prefix) {
                let _ = tx.send(rest.to_string());
            }
        }
    });
    let running = Running(child);
    let found = rx
        .recv_timeout(Duration::from_secs(120))
        .unwrap_or_else(|_| panic!("`choreo up --demo` printed no line starting {prefix:?}"));
    (running, found)
}
