//! The crawler poller's named events (see [`choreo_telemetry::events`]). Batches it opens count as
//! `choreo_batches_total{stage="crawler",outcome="sealed"}`, batches it ends as `cataloged` or
//! `failed`; crawls count in `choreo_crawls_total` when started and when their lead ends.
//! `BatchUnknown`, `FileLeftBatch` and `FileTransitioned` are the runtime's.

use crate::STAGE;
use choreo_domain::BatchState;
use choreo_telemetry::events::{InternalEvent, counted};
use std::fmt::Debug;
use std::time::Duration;

fn batches(outcome: &'static str) {
    metrics::counter!("choreo_batches_total", "stage" => STAGE.as_str(), "outcome" => outcome)
        .increment(1);
}

fn crawls(outcome: &'static str) {
    metrics::counter!("choreo_crawls_total", "outcome" => outcome).increment(1);
}

/// The watchdog found a crawling batch whose poll timer was lost, and sent it again: a crawl's
/// lead to poll its crawler, or a direct batch to be catalogued again.
pub struct LostCrawlPoll<'a> {
    pub batch_id: &'a str,
    /// Empty for a direct batch.
    pub crawler: &'a str,
}

impl InternalEvent for LostCrawlPoll<'_> {
    fn emit(self) {
        tracing::warn!(
            batch_id = self.batch_id,
            crawler = self.crawler,
            "LostCrawlPoll"
        );
        counted("LostCrawlPoll");
    }
}

/// The watchdog found VALID files of a dataset with no window open and no crawl running, and
/// opened a window again.
pub struct LostWindowTimer<'a> {
    pub dataset: &'a str,
}

impl InternalEvent for LostWindowTimer<'_> {
    fn emit(self) {
        tracing::warn!(dataset = self.dataset, "LostWindowTimer");
        counted("LostWindowTimer");
    }
}

/// A validated file names a dataset no longer configured: it stays VALID.
pub struct DatasetUnknown<'a> {
    pub dataset: &'a str,
}

impl InternalEvent for DatasetUnknown<'_> {
    fn emit(self) {
        tracing::warn!(dataset = self.dataset, "DatasetUnknown");
        counted("DatasetUnknown");
    }
}

/// A dataset's batch window opened: its VALID files are cut into batches after `delay`.
pub struct BatchWindowOpened<'a> {
    pub dataset: &'a str,
    pub delay: Duration,
}

impl InternalEvent for BatchWindowOpened<'_> {
    fn emit(self) {
        tracing::info!(dataset = self.dataset, delay = ?self.delay, "BatchWindowOpened");
        counted("BatchWindowOpened");
    }
}

/// A window closed while the dataset's crawler (or catalogue) was held by `running`: the cut
/// waits for that crawl's end, which opens the next window.
pub struct CrawlDeferred<'a> {
    pub dataset: &'a str,
    pub running: &'a str,
}

impl InternalEvent for CrawlDeferred<'_> {
    fn emit(self) {
        tracing::info!(
            dataset = self.dataset,
            running = self.running,
            "CrawlDeferred"
        );
        counted("CrawlDeferred");
    }
}

/// A cut sealed a batch of VALID files: a lead (with `riders`) or a rider of `lead`'s crawl.
pub struct BatchOpened<'a> {
    pub batch_id: &'a str,
    pub dataset: &'a str,
    pub files: usize,
    pub lead: Option<&'a str>,
    pub riders: usize,
}

impl InternalEvent for BatchOpened<'_> {
    fn emit(self) {
        tracing::info!(
            batch_id = self.batch_id,
            dataset = self.dataset,
            files = self.files,
            lead = self.lead,
            riders = self.riders,
            "BatchOpened"
        );
        counted("BatchOpened");
        batches("sealed");
    }
}

/// Another batch holds the crawler (`holder`), or its crawl runs (`holder` unknown): this one
/// polls again later.
pub struct CrawlerBusy<'a> {
    pub batch_id: &'a str,
    pub crawler: &'a str,
    pub holder: Option<&'a str>,
}

impl InternalEvent for CrawlerBusy<'_> {
    fn emit(self) {
        tracing::info!(
            batch_id = self.batch_id,
            crawler = self.crawler,
            holder = self.holder,
            "CrawlerBusy"
        );
        counted("CrawlerBusy");
    }
}

/// A lead started its crawl.
pub struct CrawlStarted<'a> {
    pub batch_id: &'a str,
    pub crawler: &'a str,
    pub riders: usize,
}

impl InternalEvent for CrawlStarted<'_> {
    fn emit(self) {
        tracing::info!(
            batch_id = self.batch_id,
            crawler = self.crawler,
            riders = self.riders,
            "CrawlStarted"
        );
        counted("CrawlStarted");
        crawls("started");
    }
}

/// A lead whose start was attempted but not recorded found its crawler running, and takes that
/// crawl as its own (not a new crawl).
pub struct CrawlTakenOver<'a> {
    pub batch_id: &'a str,
    pub crawler: &'a str,
    pub riders: usize,
}

impl InternalEvent for CrawlTakenOver<'_> {
    fn emit(self) {
        tracing::info!(
            batch_id = self.batch_id,
            crawler = self.crawler,
            riders = self.riders,
            "CrawlTakenOver"
        );
        counted("CrawlTakenOver");
    }
}

/// A polling lead found its crawler's lease held by another batch (its own lapsed).
pub struct CrawlLeaseLost<'a> {
    pub batch_id: &'a str,
    pub holder: &'a str,
}

impl InternalEvent for CrawlLeaseLost<'_> {
    fn emit(self) {
        tracing::warn!(
            batch_id = self.batch_id,
            holder = self.holder,
            "CrawlLeaseLost"
        );
        counted("CrawlLeaseLost");
    }
}

/// A batch's cataloguing ended (its crawl's, or its direct registration): recorded CATALOGED or
/// FAILED, with the files that stayed in it. A crawl's lead ending counts the crawl's outcome.
pub struct CrawlEnded<'a> {
    pub batch_id: &'a str,
    pub dataset: &'a str,
    pub state: BatchState,
    pub files: usize,
    /// Whether the batch led a crawl (rather than riding one, or being catalogued directly).
    pub crawl_lead: bool,
}

impl InternalEvent for CrawlEnded<'_> {
    fn emit(self) {
        let failed = self.state == BatchState::Failed;
        tracing::info!(
            batch_id = self.batch_id,
            dataset = self.dataset,
            state = self.state.as_str(),
            files = self.files,
            "CrawlEnded"
        );
        counted("CrawlEnded");
        batches(if failed { "failed" } else { "cataloged" });
        if self.crawl_lead {
            crawls(if failed { "failed" } else { "succeeded" });
        }
    }
}

/// A direct cut's table and partitions were registered in the catalogue.
pub struct TableRegistered<'a> {
    pub batch_id: &'a str,
    pub table: &'a str,
    pub outcome: &'a dyn Debug,
    pub partitions: usize,
    pub added: usize,
}

impl InternalEvent for TableRegistered<'_> {
    fn emit(self) {
        tracing::info!(
            batch_id = self.batch_id,
            table = self.table,
            outcome = ?self.outcome,
            partitions = self.partitions,
            added = self.added,
            "TableRegistered"
        );
        counted("TableRegistered");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use choreo_telemetry::events::{Recorded, emit};

    #[test]
    fn batches_and_crawls_count_by_outcome() {
        let recorded = Recorded::new();
        recorded.run(|| {
            emit(BatchOpened {
                batch_id: "b-1",
                dataset: "orders",
                files: 3,
                lead: None,
                riders: 1,
            });
            emit(CrawlStarted {
                batch_id: "b-1",
                crawler: "c",
                riders: 1,
            });
            for (crawl_lead, state) in [(true, BatchState::Cataloged), (false, BatchState::Failed)]
            {
                emit(CrawlEnded {
                    batch_id: "b-1",
                    dataset: "orders",
                    state,
                    files: 3,
                    crawl_lead,
                });
            }
        });
        let batches = |outcome| {
            recorded.value(
                "choreo_batches_total",
                &[("stage", "crawler"), ("outcome", outcome)],
            )
        };
        assert_eq!(batches("sealed"), 1.0);
        assert_eq!(batches("cataloged"), 1.0);
        assert_eq!(batches("failed"), 1.0);
        let crawls = |outcome| recorded.value("choreo_crawls_total", &[("outcome", outcome)]);
        assert_eq!(crawls("started"), 1.0);
        assert_eq!(crawls("succeeded"), 1.0, "the lead's crawl");
        assert_eq!(crawls("failed"), 0.0, "a rider's end is not a crawl's");
    }
}
