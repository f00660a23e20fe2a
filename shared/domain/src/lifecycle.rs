//! The batch lifecycle: the one table of a batch's legal moves, and what its stage does next.
//!
//! ```text
//!  window opens ─▶ window closes ─▶ cut ─▶ CRAWLING ─▶ CATALOGED ─▶ TRANSFORMING ─▶ INGESTED
//!  (first VALID     (timer, or the          │  (crawl, or               (one job run       └─▶ FAILED
//!   file)            crawler freed)         │   direct registration)     per batch)
//!                                           └─▶ FAILED
//! ```
//!
//! A crawler crawls a path, not a list of files. So a dataset's VALID files wait while its crawler
//! runs, and the crawl that follows covers everything that waited: when a window closes and the
//! crawler is free, every VALID file of every dataset the crawler covers is cut into batches of at
//! most `batch_max_files` ([`plan_cut`]), and one crawl catalogues them all. The first batch of the
//! cut *leads* the crawl (it holds the crawler's lease, is polled, and completes the others); the
//! others *ride* along. Each batch then gets its own job run, all started at once. A dataset
//! catalogued directly is cut the same way and registered at once, without a crawl.
//!
//! Nothing here does I/O: the crawler poller and the transform launcher read a batch, ask [`next`]
//! what to do, do it, and record the outcome with a conditional write (quickwit's `local_state.rs`
//! is the model). [`kick`] is the one rule that keeps a VALID file from waiting for ever: whoever
//! frees a crawler or a window asks it again afterwards.

use crate::batch::{Batch, BatchState};
use crate::record::{FileId, FileRecord};
use crate::state::{FileState, Stage};
use std::time::Duration;

use BatchState::*;

/// Every legal move of a batch, and the stage that makes it. A batch is created CRAWLING by the cut.
const TRANSITIONS: &[(BatchState, BatchState, Stage)] = &[
    (Crawling, Cataloged, Stage::Crawler),
    (Crawling, Failed, Stage::Crawler),
    (Cataloged, Transforming, Stage::Transformer),
    (Transforming, Transforming, Stage::Transformer),
    (Transforming, Ingested, Stage::Transformer),
    (Transforming, Failed, Stage::Transformer),
];

/// Whether `stage` may move a batch `from → to` (`Transforming → Transforming` records a job run or
/// a start attempt).
pub fn can_move(from: BatchState, to: BatchState, stage: Stage) -> bool {
    TRANSITIONS.contains(&(from, to, stage))
}

/// What the stage that owns a batch does next, read off the batch as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Crawler poller: the batch leads a crawl not yet started: take the crawler and start it.
    StartCrawl,
    /// Crawler poller: the batch's crawl was started: ask how it goes.
    PollCrawl,
    /// Crawler poller: a directly catalogued batch: register its table and partitions now.
    RegisterTable,
    /// Crawler poller: the batch rides along another's crawl; the lead (named) does the work.
    FollowLead(String),
    /// Crawler poller: catalogued (or failed) — announce it, free the crawler, kick the windows.
    /// Also the outbox case: recorded, but its event may not have gone out.
    FinishCatalog,
    /// Transform launcher: move the files to TRANSFORMING and write the manifest.
    BeginTransform,
    /// Transform launcher: start the job run (or find one started before and not recorded).
    StartJob,
    /// Transform launcher: the run is started: ask how it goes.
    PollJob,
    /// Transform launcher: ended — announce it (again, in the outbox case) and free its lease.
    FinishTransform,
    /// Not this stage's business any more (or not yet).
    Nothing,
}

/// What `stage` does next with `batch`.
pub fn next(batch: &Batch, stage: Stage) -> Step {
    match (stage, batch.state) {
        (Stage::Crawler, Crawling) => match &batch.crawl_lead {
            Some(lead) if *lead != batch.id => Step::FollowLead(lead.clone()),
            _ if batch.is_direct() => Step::RegisterTable,
            _ if batch.crawl_started => Step::PollCrawl,
            _ => Step::StartCrawl,
        },
        (Stage::Crawler, Cataloged | Failed)
            if batch.state == Cataloged || batch.failed_stage == Some(Stage::Crawler) =>
        {
            Step::FinishCatalog
        }
        (Stage::Transformer, Cataloged) => Step::BeginTransform,
        (Stage::Transformer, Transforming) if batch.job_run_id.is_some() => Step::PollJob,
        (Stage::Transformer, Transforming) => Step::StartJob,
        (Stage::Transformer, Ingested | Failed) => Step::FinishTransform,
        _ => Step::Nothing,
    }
}

/// Where a crawl's end (or a direct registration) takes the batch and its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    pub batch: BatchState,
    pub files: FileState,
    /// Why it failed, as the files' and the batch's reason.
    pub reason: Option<String>,
}

/// How a crawl that ended, or a direct registration, ends the batch: `failure` is the crawler's or
/// the catalog's reason.
pub fn catalog_ending(direct: bool, failure: Option<&str>) -> Ending {
    match failure {
        None => Ending {
            batch: Cataloged,
            files: FileState::Cataloged,
            reason: None,
        },
        Some(r) => Ending {
            batch: Failed,
            files: FileState::Failed,
            reason: Some(if direct {
                format!("cataloguing failed: {r}")
            } else {
                format!("crawl failed: {r}")
            }),
        },
    }
}

/// How a job run's end ends the batch: `failure` is the run's (or the start's) reason.
pub fn job_ending(failure: Option<String>) -> Ending {
    match failure {
        None => Ending {
            batch: Ingested,
            files: FileState::Ingested,
            reason: None,
        },
        Some(r) => Ending {
            batch: Failed,
            files: FileState::Failed,
            reason: Some(r),
        },
    }
}

/// What a start attempt that did not start a run leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotStarted {
    /// Count the attempt on the batch and try again at the next poll.
    TryAgain,
    /// The last allowed attempt: the batch fails with this reason.
    GiveUp(String),
}

/// A job start throttled or met by a transient error, on the batch's `attempts`-th try (counting
/// this one), with at most `limit` tries allowed: a job that cannot start is a failure an operator
/// must see, not a retry loop.
pub fn after_failed_start(job: &str, attempts: u32, limit: u32, why: &str) -> NotStarted {
    if attempts >= limit.max(1) {
        NotStarted::GiveUp(format!(
            "job {job} could not start after {attempts} attempts: {why}"
        ))
    } else {
        NotStarted::TryAgain
    }
}

/// Whether a window must be opened for a dataset, asked by whoever may have left its VALID files
/// without a cut coming: a file that just became VALID, a cut that ended, a crawl that ended.
///
/// - `group_busy`: the dataset's crawler (or, catalogued directly, its catalogue) is held — its end
///   asks again, so a window now would only find it busy;
/// - `window_open`: a window timer is pending (or its cut runs, and asks again when it ends);
/// - `waiting`: the dataset has VALID files that are in no crawling batch.
///
/// The caller asks *after* freeing what it held: a file that became VALID while the crawler or the
/// window was held found it busy and left the asking to the holder, so the holder must ask once it
/// let go, or the file would wait for the watchdog.
pub fn kick(group_busy: bool, window_open: bool, waiting: bool) -> bool {
    waiting && !group_busy && !window_open
}

/// How long a window stays open: the dataset's window after a file arrives at an idle crawler; no
/// time at all when files waited through a crawl (they waited long enough).
pub fn window_delay(window: Duration, after_crawl: bool) -> Duration {
    if after_crawl { Duration::ZERO } else { window }
}

/// One batch of a cut: a dataset and its files, oldest registration first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub dataset: String,
    pub files: Vec<FileId>,
}

/// Cuts the VALID files that wait (of every dataset a crawler covers) into batches: per dataset,
/// oldest registration first, at most `max_files(dataset)` files each. The built-in transform keeps
/// the last row of a primary key within a batch, so older files go first.
pub fn plan_cut(mut waiting: Vec<FileRecord>, max_files: impl Fn(&str) -> usize) -> Vec<Chunk> {
    waiting.sort_by(|a, b| {
        (&a.dataset, a.created_at, &a.key, &a.id).cmp(&(&b.dataset, b.created_at, &b.key, &b.id))
    });
    let mut chunks: Vec<Chunk> = Vec::new();
    for r in waiting {
        let max = max_files(&r.dataset).max(1);
        match chunks.last_mut() {
            Some(c) if c.dataset == r.dataset && c.files.len() < max => c.files.push(r.id),
            _ => chunks.push(Chunk {
                dataset: r.dataset,
                files: vec![r.id],
            }),
        }
    }
    chunks
}

/// The id of the `n`-th batch riding along the crawl that `lead` leads.
pub fn rider_id(lead: &str, n: usize) -> String {
    format!("{lead}-{n}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::NewFile;
    use chrono::{TimeZone, Utc};

    fn batch(state: BatchState) -> Batch {
        Batch::new("b-1".into(), "d", "c".into(), "job".into(), state, vec![])
    }

    #[test]
    fn the_crawler_starts_polls_and_finishes_a_lead() {
        let mut b = batch(Crawling);
        assert_eq!(next(&b, Stage::Crawler), Step::StartCrawl);
        b.crawl_lead = Some(b.id.clone());
        assert_eq!(next(&b, Stage::Crawler), Step::StartCrawl);
        b.crawl_started = true;
        assert_eq!(next(&b, Stage::Crawler), Step::PollCrawl);
        b.state = Cataloged;
        assert_eq!(next(&b, Stage::Crawler), Step::FinishCatalog);
        b.state = Failed;
        b.failed_stage = Some(Stage::Crawler);
        assert_eq!(next(&b, Stage::Crawler), Step::FinishCatalog);
        b.failed_stage = Some(Stage::Transformer);
        assert_eq!(
            next(&b, Stage::Crawler),
            Step::Nothing,
            "the launcher's failure"
        );
        assert_eq!(next(&b, Stage::Transformer), Step::FinishTransform);
    }

    #[test]
    fn a_rider_follows_its_lead_and_a_direct_batch_registers() {
        let mut b = batch(Crawling);
        b.crawl_lead = Some("b-0".into());
        assert_eq!(next(&b, Stage::Crawler), Step::FollowLead("b-0".into()));
        let mut d = batch(Crawling);
        d.crawler = String::new();
        assert_eq!(next(&d, Stage::Crawler), Step::RegisterTable);
        assert_eq!(next(&d, Stage::Transformer), Step::Nothing);
    }

    #[test]
    fn the_launcher_begins_starts_polls_and_finishes() {
        let mut b = batch(Cataloged);
        assert_eq!(next(&b, Stage::Transformer), Step::BeginTransform);
        b.state = Transforming;
        assert_eq!(next(&b, Stage::Transformer), Step::StartJob);
        b.job_run_id = Some("jr".into());
        assert_eq!(next(&b, Stage::Transformer), Step::PollJob);
        b.state = Ingested;
        assert_eq!(next(&b, Stage::Transformer), Step::FinishTransform);
        assert_eq!(next(&b, Stage::Crawler), Step::Nothing);
    }

    #[test]
    fn the_table_has_each_stage_s_moves_only() {
        assert!(can_move(Crawling, Cataloged, Stage::Crawler));
        assert!(!can_move(Crawling, Cataloged, Stage::Transformer));
        assert!(can_move(Transforming, Ingested, Stage::Transformer));
        assert!(!can_move(Ingested, Transforming, Stage::Transformer));
        assert!(!can_move(Cataloged, Crawling, Stage::Crawler));
    }

    #[test]
    fn endings_name_what_failed() {
        assert_eq!(catalog_ending(false, None).files, FileState::Cataloged);
        let e = catalog_ending(false, Some("boom"));
        assert_eq!(
            (e.batch, e.files, e.reason.as_deref()),
            (Failed, FileState::Failed, Some("crawl failed: boom"))
        );
        let d = catalog_ending(true, Some("no table"));
        assert_eq!(d.reason.as_deref(), Some("cataloguing failed: no table"));
        assert_eq!(job_ending(None).batch, Ingested);
        assert_eq!(job_ending(Some("x".into())).files, FileState::Failed);
    }

    #[test]
    fn a_job_that_cannot_start_gives_up_at_the_limit() {
        assert_eq!(after_failed_start("j", 1, 3, "t"), NotStarted::TryAgain);
        assert_eq!(after_failed_start("j", 2, 3, "t"), NotStarted::TryAgain);
        assert_eq!(
            after_failed_start("j", 3, 3, "throttled"),
            NotStarted::GiveUp("job j could not start after 3 attempts: throttled".into())
        );
        assert!(matches!(
            after_failed_start("j", 1, 0, "t"),
            NotStarted::GiveUp(_)
        ));
    }

    #[test]
    fn a_window_opens_only_for_waiting_files_with_nothing_held() {
        assert!(kick(false, false, true));
        assert!(!kick(true, false, true), "the crawl's end asks again");
        assert!(!kick(false, true, true), "the pending cut takes them");
        assert!(!kick(false, false, false));
        let w = Duration::from_secs(2);
        assert_eq!(window_delay(w, false), w);
        assert_eq!(window_delay(w, true), Duration::ZERO);
    }

    fn record(dataset: &str, key: &str, second: u32) -> FileRecord {
        NewFile {
            id: FileId(format!("{dataset}/{key}")),
            dataset: dataset.into(),
            bucket: "in".into(),
            key: key.into(),
            size: 1,
            version: "v".into(),
            pin: None,
            reason: None,
            trace_id: None,
            traceparent: None,
        }
        .into_record(Utc.with_ymd_and_hms(2026, 12, 7, 0, 0, second).unwrap())
    }

    #[test]
    fn a_cut_is_per_dataset_oldest_first_and_bounded() {
        let waiting = vec![
            record("a", "3", 3),
            record("b", "1", 1),
            record("a", "1", 1),
            record("a", "2", 2),
            record("a", "4", 4),
            record("a", "5", 5),
        ];
        let chunks = plan_cut(waiting, |d| if d == "a" { 2 } else { 10 });
        let shape: Vec<(String, Vec<String>)> = chunks
            .into_iter()
            .map(|c| (c.dataset, c.files.into_iter().map(|f| f.0).collect()))
            .collect();
        assert_eq!(
            shape,
            vec![
                ("a".into(), vec!["a/1".into(), "a/2".into()]),
                ("a".into(), vec!["a/3".into(), "a/4".into()]),
                ("a".into(), vec!["a/5".into()]),
                ("b".into(), vec!["b/1".into()]),
            ]
        );
        assert!(plan_cut(Vec::new(), |_| 1).is_empty());
        assert_eq!(rider_id("b-d-x", 2), "b-d-x-2");
    }
}
