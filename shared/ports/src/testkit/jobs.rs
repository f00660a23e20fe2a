//! [`Crawler`]'s contract.

use crate::{CrawlStart, CrawlStatus, Crawler, PortErrorKind};
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
