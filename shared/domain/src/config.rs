//! Configuration types. Loading (TOML file, then `CHOREO_*` environment) lives in `choreo-runtime`;
//! these types only describe and check. Every struct rejects unknown keys, so a typo is an error
//! rather than a silently ignored setting. Durations are whole seconds and say so in their names.

use crate::Secret;
use choreo_schema::{Compression, CsvDialect, Format};
use globset::{Glob, GlobMatcher};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The whole configuration of a Choreo deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Which adapters the ports use: `local` (SQLite and directories, the default) or `aws`.
    #[serde(default)]
    pub backend: BackendKind,
    /// Local backend: the directory holding `choreo.db` and one sub-directory per bucket.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default)]
    pub buckets: Buckets,
    #[serde(default)]
    pub queues: Queues,
    #[serde(default)]
    pub topics: Topics,
    #[serde(default)]
    pub runtime: RuntimeSettings,
    #[serde(default)]
    pub aws: AwsSettings,
    #[serde(default)]
    pub local: LocalSettings,
    #[serde(default)]
    pub operations: Operations,
    #[serde(default)]
    pub telemetry: TelemetrySettings,
    #[serde(default)]
    pub transform: TransformSettings,
    #[serde(default)]
    pub datasets: Vec<DatasetConfig>,
    /// Where scheduled extracts read and load, and how the local scheduler ticks.
    #[serde(default)]
    pub extract: crate::extract::ExtractSettings,
    /// Scheduled extracts (`[[extracts]]`): see [`crate::extract`].
    #[serde(default)]
    pub extracts: Vec<crate::extract::ExtractConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    #[default]
    Local,
    Aws,
}

/// Bucket names. On the local backend each is a directory under `data_dir/buckets/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Buckets {
    /// Where files land; the ingestor is notified of every object created here.
    pub input: String,
    /// Where the quarantine mover puts invalid files, each with its report beside it.
    pub failed: String,
    /// Where transforms write their output.
    pub curated: String,
    /// Choreo's own objects: validation reports and batch manifests.
    pub work: String,
}

impl Default for Buckets {
    fn default() -> Self {
        Buckets {
            input: "choreo-input".into(),
            failed: "choreo-failed".into(),
            curated: "choreo-curated".into(),
            work: "choreo-work".into(),
        }
    }
}

/// Queue names (each has a dead-letter queue named `<name>-dlq`) and their redrive settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Queues {
    /// Object-created notifications, consumed by the ingestor.
    pub ingest: String,
    /// FileRegistered, consumed by the validator.
    pub validate: String,
    /// FileRejected, consumed by the quarantine mover.
    pub quarantine: String,
    /// FileValidated and the crawler's timers, consumed by the crawler poller.
    pub crawl: String,
    /// BatchCataloged and the launcher's timers, consumed by the transform launcher.
    pub transform: String,
    /// Every event, consumed by the auditor.
    pub audit: String,
    /// Extract ticks and per-key units, consumed by the extractor (only when extracts are configured).
    pub extract: String,
    /// Receives after which a message moves to its dead-letter queue.
    pub max_receive_count: u32,
    /// Seconds a received message stays invisible; workers extend it while they run long.
    pub visibility_timeout_secs: u64,
}

impl Default for Queues {
    fn default() -> Self {
        Queues {
            ingest: "choreo-ingest".into(),
            validate: "choreo-validate".into(),
            quarantine: "choreo-quarantine".into(),
            crawl: "choreo-crawl".into(),
            transform: "choreo-transform".into(),
            audit: "choreo-audit".into(),
            extract: "choreo-extract".into(),
            max_receive_count: 5,
            visibility_timeout_secs: 60,
        }
    }
}

impl Queues {
    /// The dead-letter queue of `queue`.
    pub fn dlq_of(queue: &str) -> String {
        format!("{queue}-dlq")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Topics {
    /// The one topic every stage publishes its events to.
    pub events: String,
    /// Human-readable failure notices (an email subscription on AWS).
    pub alerts: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            events: "choreo-events".into(),
            alerts: "choreo-alerts".into(),
        }
    }
}

/// Settings of the aws backend. Region and credentials come from the SDK's standard chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsSettings {
    /// An emulator's endpoint (moto, LocalStack); leave unset on AWS. `AWS_ENDPOINT_URL` does the same.
    pub endpoint_url: Option<String>,
    /// DynamoDB table of file, batch and lease records.
    pub state_table: String,
    /// DynamoDB table of the audit trail.
    pub audit_table: String,
    /// DynamoDB table of scheduled extracts' keys, ticks and units (created when extracts are
    /// configured).
    pub extract_table: String,
    /// Partitions the state index spreads each phase over, so that no index partition is hot:
    /// every file is put into and taken out of the `ACTIVE` phase, two writes, so 16 shards keep
    /// each partition near an eighth of DynamoDB's 1,000 write units a second at 1,000 files a
    /// second, with room for an uneven hash (`docs/cost.md`). Each listing queries every shard.
    pub index_shards: u32,
    /// Glue database the crawlers write tables to.
    pub glue_database: String,
    /// IAM role the Glue crawlers and jobs run as.
    pub glue_role: String,
    /// Glue job that runs the built-in transform (for datasets whose `job` is `builtin`).
    pub builtin_job: String,
    /// IAM role EventBridge Scheduler assumes to send extracts' ticks to the extract queue
    /// (`sqs:SendMessage` on it).
    pub scheduler_role: String,
    /// Secrets Manager secret holding `transform.mask_salt` for the built-in Glue job: `choreo
    /// bootstrap` creates it, and the job is given its name, never the salt.
    pub mask_salt_secret: String,
}

impl Default for AwsSettings {
    fn default() -> Self {
        AwsSettings {
            endpoint_url: None,
            state_table: "choreo-state".into(),
            audit_table: "choreo-audit".into(),
            extract_table: "choreo-extracts".into(),
            index_shards: 16,
            glue_database: "choreo".into(),
            glue_role: "arn:aws:iam::123456789012:role/choreo-glue".into(),
            builtin_job: "choreo-builtin".into(),
            scheduler_role: "arn:aws:iam::123456789012:role/choreo-scheduler".into(),
            mask_salt_secret: "choreo-mask-salt".into(),
        }
    }
}

/// Settings of the local backend's stand-ins for AWS services.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalSettings {
    /// Seconds a local crawl takes at least, from its start to the poll that may complete it; 0 (the
    /// default) completes it at the first poll. Glue crawls take minutes: a few seconds here show
    /// batches waiting on a busy crawler, and give a test time to kill a replica mid-crawl.
    pub crawl_min_secs: u64,
    /// What a commit to the local database survives. `process` (the default): a commit is in the
    /// operating system's hands when it returns, so a killed process (`kill -9`, a panic, an OOM kill)
    /// loses nothing; a power loss or kernel crash may roll the database back to an earlier
    /// consistent point (SQLite WAL with `synchronous = NORMAL`: the log is synced at checkpoints).
    /// `power`: every commit is synced to disk before it returns (`synchronous = FULL`), a few
    /// hundred commits a second on an ordinary disk.
    pub durability: Durability,
    /// Seconds a file found by a scan of the input bucket's directory must have gone unchanged, and
    /// (where the kernel can tell, through a read lease) no process may hold it open for writing,
    /// before it counts as complete. Files whose writers close them or rename them in are complete
    /// at once (file events); this covers the rest: files already there at start, and what events
    /// missed. 5 (the default) rides out a writer's ordinary pauses — a stalled network copy, a
    /// buffered writer between flushes — and costs a scanned file 5 s; 0 takes a file as soon as no
    /// one has it open for writing.
    pub quiet_secs: u64,
    /// MiB of memory (heap and private mappings: `RLIMIT_DATA`) each local job may use: the built-in
    /// transform and `command:` jobs run as child processes with this limit, so a job that needs
    /// more fails its batch with "ran out of memory" instead of taking the pipeline down. 0: no
    /// limit. Default 1024; the built-in transform's worker peaked at 73 MiB on a 256 MiB batch.
    pub job_memory_mb: u64,
    /// The program that runs the built-in transform, as `<program> job-worker`. Default: the running
    /// program itself (`choreo` and every service binary answer `job-worker`); set it when the
    /// pipeline is embedded in another program (a test harness) to a `choreo` binary.
    pub job_worker: Option<std::path::PathBuf>,
}

impl Default for LocalSettings {
    fn default() -> Self {
        LocalSettings {
            crawl_min_secs: 0,
            durability: Durability::default(),
            quiet_secs: 5,
            job_memory_mb: 1024,
            job_worker: None,
        }
    }
}

/// What a commit of the local backend survives: see [`LocalSettings::durability`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    #[default]
    Process,
    Power,
}

/// Settings of the built-in transform (the local job runner's and the Glue script's).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransformSettings {
    /// Prepended to a value before it is hashed (lowercase hex SHA-256) in a dataset's
    /// `personal_data` columns. Without it a hash of a guessable value (a phone number, an e-mail
    /// address) is reversed by hashing guesses; keep it secret and give it from the environment
    /// (`CHOREO_TRANSFORM__MASK_SALT`). Changing it changes every masked value from then on, so joins
    /// across the change no longer match. Required when any dataset names `personal_data`.
    pub mask_salt: Secret,
}

/// How each service's consumer loop behaves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeSettings {
    /// Messages a worker handles at once.
    pub concurrency: usize,
    /// Messages asked for per receive (SQS allows at most 10).
    pub receive_batch: usize,
    /// Seconds a receive waits for a message (long polling; SQS allows at most 20). A receive returns
    /// as soon as a message arrives, so long waits cost nothing but spare empty receives.
    pub receive_wait_secs: u64,
    /// In-process attempts at a message whose handler failed with a transient error, before it is
    /// left for redelivery.
    pub retry_attempts: usize,
    /// Seconds between two polls of a running crawl or job run.
    pub poll_interval_secs: u64,
    /// Seconds a crawl's or a batch's lease lasts unless a poll renews it. Every poll renews it, so
    /// an expired lease means the poll timer was lost (a purged or dead-lettered message) or the
    /// replica holding it died: the stage's watchdog then sends the timer again.
    pub lease_secs: u64,
    /// Tries at starting a batch's job run (throttled, or a transient error), one per poll, before
    /// the batch's files move to FAILED.
    pub job_start_attempts: u32,
    /// Local backend: milliseconds between scans of the input bucket's directory where its file
    /// events cannot be watched, and before the scan that follows lost events. Files are notified
    /// as their writers close them (events), or once quiet for `[local] quiet_secs` (scans).
    pub scan_interval_ms: u64,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        RuntimeSettings {
            concurrency: 16,
            receive_batch: 10,
            receive_wait_secs: 20,
            retry_attempts: 3,
            poll_interval_secs: 1,
            lease_secs: 900,
            job_start_attempts: 5,
            scan_interval_ms: 250,
        }
    }
}

/// What the auditor offers the on-call engineer: its HTTP API and dashboard, alerts, and the sweep
/// that heals stuck files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Operations {
    /// Where the auditor serves its API and dashboard (`host:port`; port 0 picks a free one); none
    /// (the default) serves nothing. An address in use is logged and the pipeline runs on.
    pub listen: Option<String>,
    /// The bearer token every route but `/health` requires. Without one, those routes answer 401:
    /// nothing is shown to anyone.
    pub api_token: Option<Secret>,
    /// The dashboard's address as the on-call engineer reaches it, for the links in alerts.
    pub dashboard_url: String,
    /// A trace viewer's address for one trace, with `{trace_id}` where the id goes (for Phoenix:
    /// `http://127.0.0.1:6006/redirects/traces/{trace_id}`); the dashboard links each file's
    /// trace id through it. None shows the id alone.
    pub trace_url: Option<String>,
    /// Connections the API server holds at once; more wait in the system's accept queue. Each
    /// costs a file descriptor and some buffers, so this bounds both, whatever clients do.
    pub max_connections: usize,
    /// Seconds a connection has to send a request's headers (the first request's, and each next
    /// one's on a kept-alive connection); then it is closed. Keeps slow or silent clients from
    /// holding connections.
    pub header_read_timeout_secs: u64,
    /// Seconds a request may take, reading its body included; then it is answered 503.
    pub request_timeout_secs: u64,
    pub alerts: AlertSettings,
    pub sweep: SweepSettings,
}

/// What `operations.trace_url` replaces with a trace's id.
pub const TRACE_ID_PLACEHOLDER: &str = "{trace_id}";

impl Operations {
    /// The trace viewer's address of one trace, when a viewer is configured.
    pub fn trace_link(&self, trace_id: &str) -> Option<String> {
        self.trace_url
            .as_ref()
            .map(|url| url.replace(TRACE_ID_PLACEHOLDER, trace_id))
    }
}

impl Default for Operations {
    fn default() -> Self {
        Operations {
            listen: None,
            api_token: None,
            dashboard_url: "http://127.0.0.1:8080".into(),
            trace_url: None,
            max_connections: 256,
            header_read_timeout_secs: 5,
            request_timeout_secs: 30,
            alerts: AlertSettings::default(),
            sweep: SweepSettings::default(),
        }
    }
}

/// What every service process serves for its platform: `/metrics` (Prometheus text), `/health`
/// (alive) and `/ready` (its queue and state store answer). Traces are configured apart, by the
/// standard `OTEL_*` variables only.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySettings {
    /// Where to serve them (`host:port`; port 0 picks a free one); none (the default) serves
    /// nothing. `choreo up` serves its six services on one address, each metric with a `stage` label.
    pub listen: Option<String>,
}

/// How failures reach people: always the log; on AWS the alerts topic (and its e-mail subscription);
/// on the local backend SMTP when `smtp_url` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertSettings {
    /// Seconds between two deliveries of the alerts waiting: what arrives within one interval goes
    /// out together.
    pub flush_interval_secs: u64,
    /// More alerts than this waiting at a delivery go out as one digest instead of one each.
    pub digest_threshold: usize,
    /// AWS: an address `choreo bootstrap` subscribes to the alerts topic.
    pub email: Option<String>,
    /// Local backend: the SMTP server to send through, e.g. `smtp://localhost:25`.
    pub smtp_url: Option<Secret>,
    /// Sender and recipient of alert e-mails sent by SMTP.
    pub smtp_from: String,
    pub smtp_to: Vec<String>,
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            flush_interval_secs: 10,
            digest_threshold: 3,
            email: None,
            smtp_url: None,
            smtp_from: "choreo@localhost".into(),
            smtp_to: Vec::new(),
        }
    }
}

/// The sweep that finds files stuck in a non-terminal state and publishes their pending event again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SweepSettings {
    /// Seconds between two sweeps.
    pub interval_secs: u64,
    /// Times a stuck file's event is published again before it is alerted on and flagged.
    pub max_republish: u32,
    /// Seconds a file may stay in each state before it counts as stuck, by state name (`NEW`,
    /// `VALID`, `INVALID`, `CATALOGED`, `TRANSFORMING`). A state not listed uses `default_secs`.
    pub limits_secs: std::collections::BTreeMap<String, u64>,
    pub default_secs: u64,
}

impl Default for SweepSettings {
    fn default() -> Self {
        SweepSettings {
            interval_secs: 60,
            max_republish: 3,
            limits_secs: [
                ("NEW", 300),
                ("INVALID", 300),
                ("VALID", 3600),
                ("CATALOGED", 3600),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
            default_secs: 7200,
        }
    }
}

/// One dataset: the files it owns and how to check, catalogue and transform them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetConfig {
    /// Lowercase letters, digits, `_` and `-`.
    pub name: String,
    /// Which keys of the input bucket belong to the dataset.
    #[serde(rename = "match")]
    pub key_match: KeyMatch,
    pub format: FileFormat,
    /// `auto` decides by the key's extension (`.gz` is gzip, `.zst` is zstd).
    #[serde(default)]
    pub compression: CompressionSetting,
    #[serde(default)]
    pub csv: CsvOptions,
    /// A Frictionless Table Schema: a path (relative to the config file) or an inline table.
    pub schema: SchemaSource,
    /// How batches are catalogued: `crawler` (the default) runs a crawler over the dataset's folder;
    /// `direct` registers the table from `schema` and the batch's partitions without one.
    #[serde(default)]
    pub catalog: CatalogMode,
    /// The crawler that catalogues the dataset; defaults to `<name>-crawler`. Not with `direct`.
    #[serde(default)]
    pub crawler: Option<String>,
    /// The job that transforms a batch: `builtin` (the default) or a job of the dataset's own — on
    /// the local backend `command:<shell command>`, on AWS a Glue job name.
    #[serde(default = "default_job")]
    pub job: String,
    /// Columns of the schema holding personal data, which the built-in transform writes masked: the
    /// lowercase hex SHA-256 of `transform.mask_salt` followed by the value, so equal values still
    /// join and group but the value itself is not in the curated bucket. A name not in the schema
    /// is a configuration error.
    #[serde(default)]
    pub personal_data: Vec<String>,
    /// Seconds a dataset's window stays open after its first file became VALID; when it closes, every
    /// waiting file is cut into batches (a busy crawler holds files until its crawl ends, and the
    /// next crawl covers them all: see `lifecycle`).
    #[serde(default = "default_batch_window")]
    pub batch_window_secs: u64,
    /// The most files one batch — one job run — holds; a cut of more makes several batches.
    #[serde(default = "default_batch_max")]
    pub batch_max_files: usize,
}

impl DatasetConfig {
    /// The crawler a `crawler`-mode dataset uses (see [`Self::crawled_by`] for one that may be direct).
    pub fn crawler_name(&self) -> String {
        self.crawler
            .clone()
            .unwrap_or_else(|| format!("{}-crawler", self.name))
    }

    /// The crawler that catalogues the dataset; `None` when it is catalogued directly.
    pub fn crawled_by(&self) -> Option<String> {
        match self.catalog {
            CatalogMode::Crawler => Some(self.crawler_name()),
            CatalogMode::Direct => None,
        }
    }

    /// The folder of the dataset's literal key prefix: its `prefix`, else its `pattern` up to the
    /// first glob character, cut back to the last `/` (`daily/2026-` → `daily/`; `*.csv` → ``).
    /// Crawlers crawl it and a direct table's location is it: both name folders, not key prefixes.
    pub fn folder(&self) -> &str {
        let m = &self.key_match;
        let literal = match (&m.prefix, &m.pattern) {
            (Some(prefix), _) => prefix.as_str(),
            (None, Some(pattern)) => {
                let end = pattern
                    .find(['*', '?', '[', '{', '\\'])
                    .unwrap_or(pattern.len());
                &pattern[..end]
            }
            (None, None) => "",
        };
        &literal[..literal.rfind('/').map_or(0, |i| i + 1)]
    }

    /// The validation format, with the CSV dialect.
    pub fn validation_format(&self) -> Format {
        match self.format {
            FileFormat::Csv => Format::Csv(CsvDialect {
                delimiter: self.csv.delimiter as u8,
                quote: self.csv.quote as u8,
                header: self.csv.header,
            }),
            FileFormat::Jsonl => Format::JsonLines,
        }
    }

    /// The compression of the object at `key`.
    pub fn compression_for(&self, key: &str) -> Compression {
        match self.compression {
            CompressionSetting::None => Compression::None,
            CompressionSetting::Gzip => Compression::Gzip,
            CompressionSetting::Zstd => Compression::Zstd,
            CompressionSetting::Auto => Compression::from_key(key),
        }
    }
}

/// A key belongs to a dataset when it starts with `prefix` and matches `pattern` (a glob such as
/// `daily/*.csv`), whichever of the two are given.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyMatch {
    pub prefix: Option<String>,
    pub pattern: Option<String>,
}

/// How a dataset's batches are catalogued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatalogMode {
    /// A crawler infers the table from the files: for datasets whose columns drift or are unknown.
    /// At least ten minutes of Glue time per batch.
    #[default]
    Crawler,
    /// The table comes from the dataset's schema and the partitions from the batch's keys
    /// (`name=value` folders), registered directly: a few catalog calls per batch, no crawl.
    Direct,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    Csv,
    Jsonl,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompressionSetting {
    #[default]
    Auto,
    None,
    Gzip,
    Zstd,
}

/// The CSV dialect. Text is UTF-8, with or without a byte-order mark.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CsvOptions {
    pub delimiter: char,
    pub quote: char,
    /// Whether the first row names the columns.
    pub header: bool,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            delimiter: ',',
            quote: '"',
            header: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SchemaSource {
    Path(PathBuf),
    Inline(serde_json::Value),
}

fn default_data_dir() -> PathBuf {
    PathBuf::from(".choreo")
}
fn default_job() -> String {
    "builtin".into()
}
fn default_batch_window() -> u64 {
    60
}
fn default_batch_max() -> usize {
    100
}

impl Default for Config {
    fn default() -> Self {
        Config {
            backend: BackendKind::default(),
            data_dir: default_data_dir(),
            buckets: Buckets::default(),
            queues: Queues::default(),
            topics: Topics::default(),
            runtime: RuntimeSettings::default(),
            aws: AwsSettings::default(),
            local: LocalSettings::default(),
            operations: Operations::default(),
            telemetry: TelemetrySettings::default(),
            transform: TransformSettings::default(),
            datasets: Vec::new(),
            extract: crate::extract::ExtractSettings::default(),
            extracts: Vec::new(),
        }
    }
}

/// A configuration that is well-formed but makes no sense.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("operations.trace_url {0:?} must hold {{trace_id}} where a trace's id goes")]
    BadTraceUrl(String),
    #[error("dataset name {0:?} must be non-empty lowercase letters, digits, '_' or '-'")]
    BadName(String),
    #[error("dataset {0:?} is configured twice")]
    Duplicate(String),
    #[error("dataset {0:?} needs `match.prefix` or `match.pattern`")]
    NoMatch(String),
    #[error("dataset {name:?}: bad pattern {pattern:?}: {error}")]
    BadPattern {
        name: String,
        pattern: String,
        error: String,
    },
    #[error("dataset {0:?}: batch_max_files must be at least 1")]
    BadBatch(String),
    #[error("dataset {0:?}: csv delimiter and quote must be single ASCII characters")]
    BadDialect(String),
    #[error(
        "dataset {0:?}: `crawler` cannot be set with `catalog = \"direct\"`, which uses no crawler"
    )]
    CrawlerWithDirect(String),
    #[error("dataset {0:?}: `crawler` must not be empty")]
    EmptyCrawler(String),
    #[error("queues.max_receive_count must be at least 1")]
    BadReceiveCount,
    #[error(
        "runtime.lease_secs ({lease}) must be at least twice runtime.poll_interval_secs ({poll}): \
         every poll renews the lease, and a lease that lapses between two polls looks like a lost timer"
    )]
    BadLease { lease: u64, poll: u64 },
    #[error(
        "dataset {0:?} names personal_data but transform.mask_salt is empty \
         (set it, e.g. with CHOREO_TRANSFORM__MASK_SALT)"
    )]
    NoMaskSalt(String),
    #[error(
        "operations.{0} must be at least 1: the API server would serve nobody, or give nobody time"
    )]
    BadServerLimit(&'static str),
    #[error(transparent)]
    Extract(#[from] crate::extract::ExtractConfigError),
}

impl Config {
    /// Checks what serde cannot: names, patterns, limits.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.queues.max_receive_count == 0 {
            return Err(ConfigError::BadReceiveCount);
        }
        let (lease, poll) = (self.runtime.lease_secs, self.runtime.poll_interval_secs);
        if lease < 2 * poll.max(1) {
            return Err(ConfigError::BadLease { lease, poll });
        }
        let ops = &self.operations;
        for (name, value) in [
            ("max_connections", ops.max_connections as u64),
            ("header_read_timeout_secs", ops.header_read_timeout_secs),
            ("request_timeout_secs", ops.request_timeout_secs),
        ] {
            if value == 0 {
                return Err(ConfigError::BadServerLimit(name));
            }
        }
        if let Some(url) = &ops.trace_url
            && !url.contains(TRACE_ID_PLACEHOLDER)
        {
            return Err(ConfigError::BadTraceUrl(url.clone()));
        }
        let mut seen = std::collections::HashSet::new();
        for d in &self.datasets {
            let ok = !d.name.is_empty()
                && d.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
            if !ok {
                return Err(ConfigError::BadName(d.name.clone()));
            }
            if !seen.insert(&d.name) {
                return Err(ConfigError::Duplicate(d.name.clone()));
            }
            if d.key_match.prefix.is_none() && d.key_match.pattern.is_none() {
                return Err(ConfigError::NoMatch(d.name.clone()));
            }
            if d.batch_max_files == 0 {
                return Err(ConfigError::BadBatch(d.name.clone()));
            }
            if !d.csv.delimiter.is_ascii() || !d.csv.quote.is_ascii() {
                return Err(ConfigError::BadDialect(d.name.clone()));
            }
            match (&d.crawler, d.catalog) {
                (Some(_), CatalogMode::Direct) => {
                    return Err(ConfigError::CrawlerWithDirect(d.name.clone()));
                }
                (Some(c), _) if c.is_empty() => {
                    return Err(ConfigError::EmptyCrawler(d.name.clone()));
                }
                _ => {}
            }
            if !d.personal_data.is_empty() && self.transform.mask_salt.is_empty() {
                return Err(ConfigError::NoMaskSalt(d.name.clone()));
            }
        }
        KeyRouter::new(&self.datasets)?;
        let names: Vec<&str> = self.datasets.iter().map(|d| d.name.as_str()).collect();
        crate::extract::check_all(&self.extracts, &names)?;
        Ok(())
    }

    pub fn extract(&self, name: &str) -> Option<&crate::extract::ExtractConfig> {
        self.extracts.iter().find(|e| e.name == name)
    }

    /// The extract whose warehouse target loads `dataset`'s batches (the `warehouse` job's).
    pub fn warehouse_of(&self, dataset: &str) -> Option<&crate::extract::ExtractConfig> {
        self.extracts
            .iter()
            .find(|e| e.dataset == dataset && e.warehouse.is_some())
    }

    /// The queues the pipeline runs: [`Config::all_queues`], and the extract queue when extracts
    /// are configured.
    pub fn running_queues(&self) -> Vec<&str> {
        let mut queues = self.all_queues().to_vec();
        if !self.extracts.is_empty() {
            queues.push(&self.queues.extract);
        }
        queues
    }

    pub fn dataset(&self, name: &str) -> Option<&DatasetConfig> {
        self.datasets.iter().find(|d| d.name == name)
    }

    /// The topic's subscriptions: each stage's queue takes only the event types it consumes, the
    /// auditor's takes every published type. Routing is this table, not code in the services.
    pub fn subscriptions(&self) -> Vec<(String, Vec<crate::EventKind>)> {
        use crate::EventKind;
        let q = &self.queues;
        vec![
            (q.validate.clone(), vec![EventKind::FileRegistered]),
            (q.quarantine.clone(), vec![EventKind::FileRejected]),
            (q.crawl.clone(), vec![EventKind::FileValidated]),
            (q.transform.clone(), vec![EventKind::BatchCataloged]),
            (q.audit.clone(), EventKind::PUBLISHED.to_vec()),
        ]
    }

    /// The work queue a stage's service consumes; `None` for the operator, who has none. Its
    /// dead-letter queue is [`Queues::dlq_of`] of it.
    pub fn queue_of(&self, stage: crate::Stage) -> Option<&str> {
        use crate::Stage;
        let q = &self.queues;
        match stage {
            Stage::Ingestor => Some(&q.ingest),
            Stage::Validator => Some(&q.validate),
            Stage::Quarantine => Some(&q.quarantine),
            Stage::Crawler => Some(&q.crawl),
            Stage::Transformer => Some(&q.transform),
            Stage::Auditor => Some(&q.audit),
            Stage::Extractor => Some(&q.extract),
            Stage::Operator => None,
        }
    }

    /// Every work queue, in pipeline order.
    pub fn all_queues(&self) -> [&str; 6] {
        let q = &self.queues;
        [
            &q.ingest,
            &q.validate,
            &q.quarantine,
            &q.crawl,
            &q.transform,
            &q.audit,
        ]
    }
}

/// Matches object keys to datasets; the first dataset in configuration order wins.
#[derive(Debug, Clone)]
pub struct KeyRouter {
    routes: Vec<(String, Option<String>, Option<GlobMatcher>)>,
}

impl KeyRouter {
    pub fn new(datasets: &[DatasetConfig]) -> Result<Self, ConfigError> {
        let routes = datasets
            .iter()
            .map(|d| {
                let glob = match &d.key_match.pattern {
                    Some(p) => Some(
                        Glob::new(p)
                            .map_err(|e| ConfigError::BadPattern {
                                name: d.name.clone(),
                                pattern: p.clone(),
                                error: e.to_string(),
                            })?
                            .compile_matcher(),
                    ),
                    None => None,
                };
                Ok((d.name.clone(), d.key_match.prefix.clone(), glob))
            })
            .collect::<Result<_, ConfigError>>()?;
        Ok(KeyRouter { routes })
    }

    /// The dataset that owns `key`, if any.
    pub fn route(&self, key: &str) -> Option<&str> {
        self.routes
            .iter()
            .find(|(_, prefix, glob)| {
                prefix.as_deref().is_none_or(|p| key.starts_with(p))
                    && glob.as_ref().is_none_or(|g| g.is_match(key))
            })
            .map(|(name, _, _)| name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset(name: &str, prefix: Option<&str>, pattern: Option<&str>) -> DatasetConfig {
        DatasetConfig {
            name: name.into(),
            key_match: KeyMatch {
                prefix: prefix.map(Into::into),
                pattern: pattern.map(Into::into),
            },
            format: FileFormat::Csv,
            compression: CompressionSetting::Auto,
            csv: CsvOptions::default(),
            schema: SchemaSource::Path("s.json".into()),
            catalog: CatalogMode::Crawler,
            crawler: None,
            job: default_job(),
            personal_data: Vec::new(),
            batch_window_secs: 1,
            batch_max_files: 10,
        }
    }

    #[test]
    fn keys_route_by_prefix_and_pattern() {
        let ds = vec![
            dataset("daily", Some("daily/"), None),
            dataset("monthly", None, Some("monthly/**/*.jsonl.gz")),
        ];
        let r = KeyRouter::new(&ds).unwrap();
        assert_eq!(r.route("daily/2026-11-26.csv"), Some("daily"));
        assert_eq!(r.route("monthly/2026/11.jsonl.gz"), Some("monthly"));
        assert_eq!(r.route("monthly/2026/11.csv"), None);
        assert_eq!(r.route("misc/readme.txt"), None);
    }

    #[test]
    fn bad_configs_are_refused() {
        let mut c = Config {
            datasets: vec![dataset("Daily", Some("d/"), None)],
            ..Config::default()
        };
        assert!(matches!(c.check(), Err(ConfigError::BadName(_))));
        c.datasets = vec![dataset("d", None, None)];
        assert!(matches!(c.check(), Err(ConfigError::NoMatch(_))));
        c.datasets = vec![dataset("d", None, Some("a/[z"))];
        assert!(matches!(c.check(), Err(ConfigError::BadPattern { .. })));
        c.datasets = vec![dataset("d", Some("a"), None), dataset("d", Some("b"), None)];
        assert!(matches!(c.check(), Err(ConfigError::Duplicate(_))));
        c.datasets = vec![dataset("d", Some("a"), None)];
        assert!(c.check().is_ok());
        c.datasets[0].personal_data = vec!["email".into()];
        assert!(matches!(c.check(), Err(ConfigError::NoMaskSalt(_))));
        c.transform.mask_salt = "pepper".into();
        assert!(c.check().is_ok());
        assert!(!format!("{c:?}").contains("pepper"));
        c.transform.mask_salt = Secret::default();
        c.datasets[0].personal_data.clear();
        c.datasets[0].catalog = CatalogMode::Direct;
        assert!(c.check().is_ok());
        c.datasets[0].crawler = Some("d-crawler".into());
        let err = c.check().unwrap_err();
        assert!(matches!(err, ConfigError::CrawlerWithDirect(_)), "{err}");
        assert!(err.to_string().contains("direct"), "{err}");
        c.datasets[0].catalog = CatalogMode::Crawler;
        c.datasets[0].crawler = Some(String::new());
        assert!(matches!(c.check(), Err(ConfigError::EmptyCrawler(_))));
    }

    #[test]
    fn a_trace_url_says_where_the_trace_id_goes() {
        let mut c = Config::default();
        assert_eq!(c.operations.trace_link("abc"), None);
        c.operations.trace_url = Some("http://127.0.0.1:6006/projects/default/traces".into());
        let err = c.check().unwrap_err();
        assert!(matches!(err, ConfigError::BadTraceUrl(_)), "{err}");
        c.operations.trace_url = Some("http://127.0.0.1:6006/redirects/traces/{trace_id}".into());
        c.check().unwrap();
        assert_eq!(
            c.operations.trace_link("abc").as_deref(),
            Some("http://127.0.0.1:6006/redirects/traces/abc")
        );
    }

    #[test]
    fn debug_shows_no_secret() {
        let c: Config = serde_json::from_value(serde_json::json!({
            "operations": {
                "api_token": "tok-3141",
                "alerts": {"smtp_url": "smtp://alerts:pw-2718@mail.example.com:587"}
            },
            "transform": {"mask_salt": "salt-1618"}
        }))
        .unwrap();
        assert_eq!(c.operations.api_token.as_deref(), Some("tok-3141"));
        let shown = format!("{c:?} {c:#?}");
        for secret in ["tok-3141", "pw-2718", "salt-1618"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("api_token: Some(<redacted>)"), "{shown}");
    }

    #[test]
    fn catalog_mode_is_lowercase_and_defaults_to_crawler() {
        let d: DatasetConfig = serde_json::from_value(serde_json::json!({
            "name": "d", "match": {"prefix": "d/"}, "format": "csv", "schema": "s.json"
        }))
        .unwrap();
        assert_eq!(d.catalog, CatalogMode::Crawler);
        assert_eq!(d.crawled_by().as_deref(), Some("d-crawler"));
        let d: DatasetConfig = serde_json::from_value(serde_json::json!({
            "name": "d", "match": {"prefix": "d/"}, "format": "csv", "schema": "s.json",
            "catalog": "direct"
        }))
        .unwrap();
        assert_eq!(d.catalog, CatalogMode::Direct);
        assert_eq!(d.crawled_by(), None);
    }

    #[test]
    fn folders_are_the_literal_prefix_cut_to_a_slash() {
        let folder = |prefix, pattern| dataset("d", prefix, pattern).folder().to_string();
        assert_eq!(folder(Some("daily/"), None), "daily/");
        assert_eq!(folder(Some("daily/2026-"), None), "daily/");
        assert_eq!(folder(Some("a/b/"), Some("a/b/*.csv")), "a/b/");
        assert_eq!(folder(None, Some("monthly/**/*.gz")), "monthly/");
        assert_eq!(folder(None, Some("*.csv")), "");
        assert_eq!(folder(None, Some("exact/key.csv")), "exact/");
    }

    #[test]
    fn every_service_stage_has_its_own_queue() {
        let c = Config::default();
        let queues: std::collections::HashSet<_> = crate::Stage::SERVICES
            .iter()
            .map(|&s| c.queue_of(s).unwrap())
            .collect();
        assert_eq!(queues, c.all_queues().into_iter().collect());
        assert_eq!(c.queue_of(crate::Stage::Validator), Some("choreo-validate"));
        assert_eq!(c.queue_of(crate::Stage::Operator), None);
    }

    #[test]
    fn compression_follows_the_extension_when_auto() {
        let d = dataset("d", Some("d/"), None);
        assert_eq!(d.compression_for("d/a.csv.gz"), Compression::Gzip);
        assert_eq!(d.compression_for("d/a.csv"), Compression::None);
        assert_eq!(d.compression_for("d/a.jsonl.zst"), Compression::Zstd);
    }
}
