//! [`Crawler`]'s and [`JobRunner`]'s contracts.

use crate::{CrawlStart, CrawlStatus, Crawler, JobRunner, JobStart, JobStatus, PortErrorKind};
use choreo_domain::JobArgs;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Every case of [`Crawler`]'s contract, on `crawler`, a configured crawler that is not running and
/// whose crawl stays `Running` for a moment (a few hundred milliseconds to a few seconds) before it
/// succeeds.
pub async fn crawler_contract(c: &dyn Crawler, crawler: &str) {
    a_crawl_runs_once_at_a_time_then_succeeds(c, crawler).await;
    an_unknown_crawler_is_not_found(c).await;
}

/// How long a crawl may take to end.
const SETTLE: Duration = Duration::from_secs(20);

async fn a_crawl_runs_once_at_a_time_then_succeeds(c: &dyn Crawler, crawler: &str) {
    assert_eq!(c.start_crawl(crawler).await.unwrap(), CrawlStart::Started);
    assert_eq!(
        c.start_crawl(crawler).await.unwrap(),
        CrawlStart::AlreadyRunning
    );
    assert_eq!(c.crawl_status(crawler).await.unwrap(), CrawlStatus::Running);
    let deadline = Instant::now() + SETTLE;
    let ended = loop {
        match c.crawl_status(crawler).await.unwrap() {
            CrawlStatus::Running if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            status => break status,
        }
    };
    assert_eq!(ended, CrawlStatus::Succeeded);
    // Polling again changes nothing; and the crawler, ready again, starts a new crawl.
    assert_eq!(
        c.crawl_status(crawler).await.unwrap(),
        CrawlStatus::Succeeded
    );
    assert_eq!(c.start_crawl(crawler).await.unwrap(), CrawlStart::Started);
}

async fn an_unknown_crawler_is_not_found(c: &dyn Crawler) {
    let err = c.start_crawl("no-crawler").await.unwrap_err();
    assert_eq!(err.kind, PortErrorKind::NotFound, "{err}");
    let err = c.crawl_status("no-crawler").await.unwrap_err();
    assert_eq!(err.kind, PortErrorKind::NotFound, "{err}");
}

/// Every case of [`JobRunner`]'s contract, on `job`: a job that succeeds after running for a moment
/// (or at once), of which no run was started yet.
pub async fn job_runner_contract(jobs: &dyn JobRunner, job: &str) {
    runs_are_found_by_the_batch_they_name(jobs, job).await;
    a_run_is_polled_until_it_succeeds(jobs, job).await;
    a_run_needs_its_batch_and_an_unknown_run_is_not_found(jobs, job).await;
}

/// The one argument the port requires of every run: the batch it is for.
fn args(batch: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(JobArgs::BATCH_ID.to_string(), batch.to_string())])
}

async fn started(jobs: &dyn JobRunner, job: &str, batch: &str) -> String {
    match jobs.start_run(job, &args(batch)).await.unwrap() {
        JobStart::Started { run_id } => run_id,
        other => panic!("{job} for {batch}: {other:?}"),
    }
}

async fn runs_are_found_by_the_batch_they_name(jobs: &dyn JobRunner, job: &str) {
    assert_eq!(jobs.find_run(job, "b-1").await.unwrap(), None);
    let one = started(jobs, job, "b-1").await;
    let two = started(jobs, job, "b-2").await;
    assert_ne!(one, two);
    assert_eq!(jobs.find_run(job, "b-1").await.unwrap(), Some(one));
    assert_eq!(jobs.find_run(job, "b-2").await.unwrap(), Some(two));
    assert_eq!(jobs.find_run(job, "b-3").await.unwrap(), None);
}

async fn a_run_is_polled_until_it_succeeds(jobs: &dyn JobRunner, job: &str) {
    let run = started(jobs, job, "b-4").await;
    let deadline = Instant::now() + SETTLE;
    let ended = loop {
        match jobs.run_status(job, &run).await.unwrap() {
            JobStatus::Running if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            status => break status,
        }
    };
    assert_eq!(ended, JobStatus::Succeeded);
    // Polling an ended run again changes nothing.
    assert_eq!(
        jobs.run_status(job, &run).await.unwrap(),
        JobStatus::Succeeded
    );
}

async fn a_run_needs_its_batch_and_an_unknown_run_is_not_found(jobs: &dyn JobRunner, job: &str) {
    let err = jobs.start_run(job, &BTreeMap::new()).await.unwrap_err();
    assert_eq!(err.kind, PortErrorKind::Permanent, "{err}");
    let err = jobs.run_status(job, "jr_none").await.unwrap_err();
    assert_eq!(err.kind, PortErrorKind::NotFound, "{err}");
}
