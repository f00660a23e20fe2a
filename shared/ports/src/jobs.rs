use crate::PortError;
use async_trait::async_trait;
use std::collections::BTreeMap;

/// What starting a crawl did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrawlStart {
    Started,
    /// The crawler was running already (Glue's `CrawlerRunningException`): wait, then start again.
    AlreadyRunning,
}

/// The state of a crawler's latest crawl.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrawlStatus {
    Running,
    Succeeded,
    Failed(String),
}

/// Catalogue crawlers, as Glue has them: a crawler is named, crawls its configured targets, and runs at
/// most once at a time. A crawler that is not configured is an error of kind `NotFound`.
#[async_trait]
pub trait Crawler: Send + Sync {
    /// Starts the crawler. A crawler already running is `Ok(AlreadyRunning)`, not an error.
    async fn start_crawl(&self, crawler: &str) -> Result<CrawlStart, PortError>;

    /// The status of the crawler's latest crawl. Polling may advance a local crawl; it is idempotent.
    async fn crawl_status(&self, crawler: &str) -> Result<CrawlStatus, PortError>;
}

/// What starting a job run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobStart {
    Started {
        run_id: String,
    },
    /// Too many concurrent runs (Glue's `ConcurrentRunsExceededException`): try again later.
    Throttled,
}

/// The state of a job run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobStatus {
    Running,
    Succeeded,
    /// Ended FAILED, ERROR, TIMEOUT or STOPPED (`state`), with the job's message.
    Failed {
        state: String,
        reason: String,
    },
}

/// Transform jobs, as Glue has them. Every run carries the batch id among its arguments (`--batch_id`),
/// which is how a launcher that died between starting a run and recording it finds the run again.
#[async_trait]
pub trait JobRunner: Send + Sync {
    /// The run of `job` whose arguments name `batch_id`, if any.
    async fn find_run(&self, job: &str, batch_id: &str) -> Result<Option<String>, PortError>;

    /// Starts a run of `job` with `arguments` (which must include `--batch_id`).
    async fn start_run(
        &self,
        job: &str,
        arguments: &BTreeMap<String, String>,
    ) -> Result<JobStart, PortError>;

    /// The run's status. Polling may advance a local run; it is idempotent.
    async fn run_status(&self, job: &str, run_id: &str) -> Result<JobStatus, PortError>;
}
