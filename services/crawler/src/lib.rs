//! The catalog crawler poller: VALID → CATALOGED | FAILED, a batch at a time.
//!
//! A crawl costs at least ten minutes of Glue time however few files it sees, so files are batched:
//!
//! 1. `FileValidated` opens the dataset's batch window — a lease `window:<dataset>` taken with a
//!    conditional write, so only one timer is pending per dataset whatever the replicas — and sends a
//!    `CrawlWindowClosed` timer delayed by the window. A full batch closes the window at once.
//! 2. `CrawlWindowClosed` takes the crawler's lease `crawler:<name>` (one crawl at a time per crawler,
//!    across replicas), records a batch of the dataset's VALID files, and sends a `CrawlPoll` timer. If
//!    the crawler is busy it does nothing: the running batch re-opens the window when it ends.
//! 3. `CrawlPoll` starts the crawl if it is not started, polls it with delayed messages to this queue
//!    while it runs, and when it ends moves the batch's files, records the batch, publishes
//!    `BatchCataloged` or `BatchFailed`, releases the lease and re-opens windows for files that became
//!    VALID meanwhile.
//!
//! A dataset configured with `catalog = "direct"` batches the same way but needs no crawl: when its
//! window closes, `direct.rs` records the batch, registers its table and partitions, and completes it
//! at once, through the same `complete` and `finish` as a crawl's end.
//!
//! Every timer is a message, so a crash loses no wait, and every step checks the stored state first, so
//! a duplicate is harmless. A timer lost outright (its queue purged, the message dead-lettered) shows
//! as a lapsed lease: the watchdog ([`recover`]) sends a crawling batch whose crawler lease lapsed its
//! poll again, and opens a window for a dataset whose VALID files wait under no live lease. Crashes between two writes are covered by redelivery: a message is deleted
//! only once its step is complete, and each step's lease holder and batch id derive from the message
//! itself (the file id, the timer's envelope id), so the redelivered message finds its own lease and
//! batch and carries on rather than being locked out by them.

use async_trait::async_trait;
use choreo_domain::config::{CatalogMode, DatasetConfig};
use choreo_domain::{Batch, BatchState, Event, FileId, FileRecord, FileState, Stage, Transition};
use choreo_ports::{
    BatchOutcome, CrawlStart, CrawlStatus, FileQuery, LeaseInfo, LeaseOutcome, PortError,
    ReceivedMessage, TransitionOutcome,
};
use choreo_runtime::publish::{batch_event_id, send_timer};
use choreo_runtime::{Background, Handler, HandlerError, ServiceContext, decode};
use chrono::Utc;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

mod direct;

pub const STAGE: Stage = Stage::Crawler;

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
        "crawler",
        shutdown,
        |ctx| async move { CrawlerPoller { ctx }.recover().await },
    ))
}

fn queue_name(config: &choreo_domain::Config) -> &str {
    &config.queues.crawl
}

/// Slack on top of the batch window before a window lease expires.
const WINDOW_SLACK: Duration = Duration::from_secs(60);
/// At most how long a freshly taken crawler lease lasts before its batch's first poll renews it:
/// short, so a lease whose taker died before recording its batch is soon free again.
const FIRST_LEASE: Duration = Duration::from_secs(60);

pub struct CrawlerPoller {
    ctx: ServiceContext,
}

pub fn handler(ctx: &ServiceContext) -> Arc<dyn Handler> {
    Arc::new(CrawlerPoller { ctx: ctx.clone() })
}

fn window_lease(dataset: &str) -> String {
    format!("window:{dataset}")
}

fn crawler_lease(crawler: &str) -> String {
    format!("crawler:{crawler}")
}

#[async_trait]
impl Handler for CrawlerPoller {
    async fn handle(&self, message: &ReceivedMessage) -> Result<(), HandlerError> {
        let envelope = decode(message)?;
        match envelope.event {
            Event::FileValidated { file_id, dataset } => {
                tracing::Span::current().record("file_id", file_id.as_str());
                self.on_validated(&file_id, &dataset).await
            }
            Event::CrawlWindowClosed { dataset, window } => {
                self.on_window_closed(&dataset, &window, &envelope.id).await
            }
            Event::CrawlPoll { batch_id } => self.on_poll(&batch_id).await,
            other => Err(HandlerError::Permanent(format!(
                "the crawler poller does not take {}",
                other.kind().as_str()
            ))),
        }
    }
}

impl CrawlerPoller {
    fn dataset(&self, name: &str) -> Option<&DatasetConfig> {
        self.ctx.settings.config.dataset(name)
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_secs(self.ctx.settings.config.runtime.poll_interval_secs)
    }

    /// How long a crawler lease lasts without renewal; every poll renews it. A poller that died
    /// holding it, or a lost poll timer, is noticed once it lapses.
    fn lease_time(&self) -> Duration {
        Duration::from_secs(self.ctx.settings.config.runtime.lease_secs)
    }

    fn first_lease(&self) -> Duration {
        self.lease_time().min(FIRST_LEASE)
    }

    /// The watchdog's pass: sends the poll again for each crawling batch whose crawler lease lapsed,
    /// taking the lease on the batch's behalf (so the next pass, and new windows, see it live), then
    /// opens a window for each dataset with VALID files and neither a live window nor a live crawl.
    /// Returns how many timers it sent.
    pub async fn recover(&self) -> Result<usize, PortError> {
        let state = &self.ctx.ports.state;
        let live = |l: Option<LeaseInfo>| l.is_some_and(|l| l.expires_at > Utc::now());
        let mut sent = 0;
        for batch in state.batches_in(BatchState::Crawling).await? {
            if batch.is_direct() {
                // No crawl and no crawler lease: catalogued within one message, so a direct batch
                // still CRAWLING a lease time after its last write lost that message.
                let idle = (Utc::now() - batch.updated_at).to_std().unwrap_or_default();
                if idle >= self.lease_time() {
                    tracing::warn!(batch_id = %batch.id, "LostCrawlPoll: cataloguing again");
                    self.poll_after(&batch, Duration::ZERO)
                        .await
                        .map_err(|e| PortError::transient("recover", &batch.id, e.to_string()))?;
                    sent += 1;
                }
                continue;
            }
            let lease = crawler_lease(&batch.crawler);
            if live(state.lease(&lease).await?) {
                continue; // polled lately, or another batch's crawl runs: it re-opens windows
            }
            if let LeaseOutcome::Acquired { .. } = state
                .acquire_lease(&lease, &batch.id, self.first_lease())
                .await?
            {
                tracing::warn!(batch_id = %batch.id, crawler = %batch.crawler, "LostCrawlPoll: polling again");
                self.poll_after(&batch, Duration::ZERO)
                    .await
                    .map_err(|e| PortError::transient("recover", &batch.id, e.to_string()))?;
                sent += 1;
            }
        }
        for d in &self.ctx.settings.config.datasets {
            if live(state.lease(&window_lease(&d.name)).await?) || self.crawler_busy(d).await? {
                continue;
            }
            let holder = format!("watchdog-{}", uuid::Uuid::new_v4());
            if self
                .open_window(d, &holder)
                .await
                .map_err(|e| PortError::transient("recover", &d.name, e.to_string()))?
            {
                tracing::warn!(dataset = %d.name, "LostWindowTimer: window opened again");
                sent += 1;
            }
        }
        Ok(sent)
    }

    async fn on_validated(&self, file_id: &FileId, dataset: &str) -> Result<(), HandlerError> {
        let Some(record) = self.ctx.ports.state.get(file_id).await? else {
            return Err(HandlerError::Transient(format!(
                "no record for {file_id} yet"
            )));
        };
        if record.state != FileState::Valid {
            return Ok(()); // catalogued already, or failed: a duplicate
        }
        match self.dataset(dataset) {
            Some(d) => self.open_window(d, file_id.as_str()).await.map(drop),
            None => {
                tracing::warn!(dataset, "DatasetUnknown: file left VALID");
                Ok(())
            }
        }
    }

    /// Makes sure a `CrawlWindowClosed` timer is pending for the dataset's VALID files. `holder` names
    /// the caller's message (a file or batch id): if it dies after taking the window lease and before
    /// sending the timer, its redelivery takes the lease again as its own and sends the timer.
    /// Returns whether it sent a timer.
    async fn open_window(&self, d: &DatasetConfig, holder: &str) -> Result<bool, HandlerError> {
        let waiting = self.valid_files(&d.name, d.batch_max_files).await?;
        if waiting.is_empty() || self.crawler_busy(d).await? {
            // A crawl of this crawler runs: its batch re-opens windows when it ends (and the
            // watchdog does, if that end is lost), so a timer now would only find it busy.
            return Ok(false);
        }
        if waiting.len() >= d.batch_max_files {
            self.close_window_timer(&d.name, "", Duration::ZERO).await?;
            return Ok(true);
        }
        let window = holder.to_string();
        let delay = Duration::from_secs(d.batch_window_secs);
        let lease = window_lease(&d.name);
        let state = &self.ctx.ports.state;
        match state
            .acquire_lease(&lease, &window, delay + self.lease_time().min(WINDOW_SLACK))
            .await?
        {
            LeaseOutcome::Acquired { .. } => {
                if let Err(e) = self.close_window_timer(&d.name, &window, delay).await {
                    state.release_lease(&lease, &window).await?;
                    return Err(e.into());
                }
                tracing::info!(dataset = %d.name, ?delay, "BatchWindowOpened");
                Ok(true)
            }
            LeaseOutcome::Held { .. } => Ok(false), // a timer is pending already
        }
    }

    /// Whether a crawl of the dataset's crawler holds its lease (never, for a direct dataset).
    async fn crawler_busy(&self, d: &DatasetConfig) -> Result<bool, PortError> {
        let Some(crawler) = d.crawled_by() else {
            return Ok(false);
        };
        let lease = self.ctx.ports.state.lease(&crawler_lease(&crawler)).await?;
        Ok(lease.is_some_and(|l| l.expires_at > Utc::now()))
    }

    async fn close_window_timer(
        &self,
        dataset: &str,
        window: &str,
        delay: Duration,
    ) -> Result<(), choreo_ports::PortError> {
        let event = Event::CrawlWindowClosed {
            dataset: dataset.to_string(),
            window: window.to_string(),
        };
        send_timer(self.ctx.queue.as_ref(), event, delay, None).await
    }

    async fn valid_files(&self, dataset: &str, limit: usize) -> Result<Vec<FileId>, HandlerError> {
        let records = self.valid_records(dataset, limit).await?;
        Ok(records.into_iter().map(|r| r.id).collect())
    }

    async fn valid_records(
        &self,
        dataset: &str,
        limit: usize,
    ) -> Result<Vec<FileRecord>, HandlerError> {
        let page = self
            .ctx
            .ports
            .state
            .list(&FileQuery {
                dataset: Some(dataset.to_string()),
                state: Some(FileState::Valid),
                limit,
                after: None,
            })
            .await?;
        Ok(page.items)
    }

    /// Closes a window: records a batch of the dataset's VALID files and starts polling it, unless the
    /// crawler is busy. The batch id derives from the timer's envelope id, so a redelivered timer
    /// finds the batch (and crawler lease) it created before dying.
    async fn on_window_closed(
        &self,
        dataset: &str,
        window: &str,
        timer_id: &str,
    ) -> Result<(), HandlerError> {
        let state = &self.ctx.ports.state;
        let Some(d) = self.dataset(dataset) else {
            return Ok(());
        };
        if d.catalog == CatalogMode::Direct {
            return self.close_direct_window(d, window, timer_id).await;
        }
        let crawler = d.crawler_name();
        let lease = crawler_lease(&crawler);
        let id = Batch::id_for(&d.name, timer_id);
        let existing = state.get_batch(&id).await?;
        if existing.is_none() {
            let files = self.valid_files(&d.name, d.batch_max_files).await?;
            if files.is_empty() {
                return self.release_window(dataset, window).await;
            }
            if let LeaseOutcome::Held { holder, .. } =
                state.acquire_lease(&lease, &id, self.first_lease()).await?
            {
                // The running batch re-opens the window when it ends.
                tracing::info!(dataset, %crawler, running = %holder, "CrawlDeferred: the crawler is busy");
                return self.release_window(dataset, window).await;
            }
            // The batch gets a trace of its own.
            let span = tracing::info_span!(parent: None, "batch", batch_id = %id, dataset);
            let traceparent = span.in_scope(choreo_telemetry::current_traceparent);
            let batch = Batch {
                traceparent,
                ..Batch::new(
                    id.clone(),
                    &d.name,
                    crawler,
                    d.job.clone(),
                    BatchState::Crawling,
                    files,
                )
            };
            state.create_batch(&batch).await?;
            tracing::info!(batch_id = %id, dataset, files = batch.files.len(), "BatchOpened");
            self.poll_after(&batch, Duration::ZERO).await?;
        } else if let Some(batch) = existing {
            // A redelivered timer: the batch exists; make sure it is being polled.
            if batch.state == BatchState::Crawling {
                self.poll_after(&batch, Duration::ZERO).await?;
            }
        }
        self.release_window(dataset, window).await
    }

    async fn release_window(&self, dataset: &str, window: &str) -> Result<(), HandlerError> {
        if !window.is_empty() {
            let state = &self.ctx.ports.state;
            state.release_lease(&window_lease(dataset), window).await?;
        }
        Ok(())
    }

    async fn on_poll(&self, batch_id: &str) -> Result<(), HandlerError> {
        let ports = &self.ctx.ports;
        let Some(mut batch) = ports.state.get_batch(batch_id).await? else {
            tracing::warn!(batch_id, "BatchUnknown: poll dropped");
            return Ok(());
        };
        tracing::Span::current().record("batch_id", batch_id);
        if batch.is_direct() {
            // A sweep's poke at a direct batch whose timer was lost: there is no crawl to poll.
            return self.catalog_directly(batch, None).await;
        }
        match batch.state {
            BatchState::Crawling => {}
            // The outbox case: the batch was recorded but its event may not have gone out.
            BatchState::Cataloged | BatchState::Failed => return self.finish(&batch).await,
            _ => return Ok(()),
        }
        let lease = crawler_lease(&batch.crawler);
        if let LeaseOutcome::Held { holder, .. } = ports
            .state
            .acquire_lease(&lease, &batch.id, self.lease_time())
            .await?
        {
            if !batch.crawl_started {
                // Our lease lapsed (a lost timer) and another batch took the crawler: wait for it
                // rather than start a second crawl; its end frees the crawler.
                tracing::info!(batch_id, %holder, "CrawlerBusy: another batch holds the crawler");
                return self.poll_after(&batch, self.poll_interval()).await;
            }
            tracing::warn!(batch_id, %holder, "CrawlLeaseLost: another batch holds the crawler");
        }
        if !batch.crawl_started {
            // The attempt is recorded before it is made: a poller that dies between starting the
            // crawl and recording it leaves `crawl_started_at` set, and the redelivered poll then
            // takes the running crawl as this batch's own rather than waiting for it to end — for
            // ever on the local backend, where only a poll ends a crawl.
            let attempted = batch.crawl_started_at.is_some();
            if !attempted {
                batch.crawl_started_at = Some(Utc::now());
                if let BatchOutcome::Conflict(_) = ports
                    .state
                    .update_batch(&batch, BatchState::Crawling)
                    .await?
                {
                    return Ok(());
                }
            }
            let taken = match ports.crawler.start_crawl(&batch.crawler).await? {
                CrawlStart::Started => {
                    batch.crawl_started_at = Some(Utc::now());
                    Some("CrawlStarted")
                }
                CrawlStart::AlreadyRunning if attempted => Some("CrawlTakenOver"),
                CrawlStart::AlreadyRunning => None,
            };
            batch.updated_at = Utc::now();
            if taken.is_some() {
                batch.crawl_started = true;
            } else {
                // Another batch's crawl: the mark goes, so that a later poll does not take it.
                batch.crawl_started_at = None;
            }
            if let BatchOutcome::Conflict(_) = ports
                .state
                .update_batch(&batch, BatchState::Crawling)
                .await?
            {
                return Ok(());
            }
            match taken {
                Some(event) => tracing::info!(batch_id, crawler = %batch.crawler, "{event}"),
                None => {
                    tracing::info!(batch_id, crawler = %batch.crawler, "CrawlerBusy: waiting to start")
                }
            }
            return self.poll_after(&batch, self.poll_interval()).await;
        }
        match ports.crawler.crawl_status(&batch.crawler).await? {
            CrawlStatus::Running => self.poll_after(&batch, self.poll_interval()).await,
            CrawlStatus::Succeeded => self.complete(batch, None).await,
            CrawlStatus::Failed(reason) => self.complete(batch, Some(reason)).await,
        }
    }

    async fn poll_after(&self, batch: &Batch, delay: Duration) -> Result<(), HandlerError> {
        let poll = Event::CrawlPoll {
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

    /// Moves the batch's files, records the batch, announces it, and frees the crawler.
    async fn complete(
        &self,
        mut batch: Batch,
        failure: Option<String>,
    ) -> Result<(), HandlerError> {
        let state = &self.ctx.ports.state;
        let (to, reason) = match &failure {
            None => (FileState::Cataloged, None),
            Some(r) if batch.is_direct() => {
                (FileState::Failed, Some(format!("cataloguing failed: {r}")))
            }
            Some(r) => (FileState::Failed, Some(format!("crawl failed: {r}"))),
        };
        let trace_id = batch
            .traceparent
            .as_deref()
            .and_then(choreo_telemetry::trace_id_of)
            .map(str::to_string);
        let mut kept = Vec::with_capacity(batch.files.len());
        for file in &batch.files {
            let mut t = Transition::new(file.clone(), STAGE, FileState::Valid, to)
                .expect("the crawler's moves are in the table")
                .batch(batch.id.clone())
                .trace_id(trace_id.clone());
            if let Some(r) = &reason {
                t = t.reason(r.clone());
            }
            match state.transition(&t).await? {
                TransitionOutcome::Applied(_) => kept.push(file.clone()),
                TransitionOutcome::Conflict(r)
                    if r.state == to && r.batch_id.as_deref() == Some(batch.id.as_str()) =>
                {
                    kept.push(file.clone())
                }
                TransitionOutcome::Conflict(r) => {
                    tracing::warn!(file_id = %file, state = %r.state, "FileLeftBatch: it moved elsewhere")
                }
                TransitionOutcome::NotFound => {
                    tracing::warn!(file_id = %file, "FileLeftBatch: no record")
                }
            }
        }
        batch.files = kept;
        batch.crawl_ended_at = Some(Utc::now());
        batch.state = if failure.is_none() {
            BatchState::Cataloged
        } else {
            BatchState::Failed
        };
        batch.reason = reason;
        batch.failed_stage = failure.is_some().then_some(STAGE);
        batch.updated_at = Utc::now();
        match state.update_batch(&batch, BatchState::Crawling).await? {
            BatchOutcome::Applied => {
                tracing::info!(batch_id = %batch.id, state = %batch.state, files = batch.files.len(), "CrawlEnded");
                self.finish(&batch).await
            }
            BatchOutcome::Conflict(Some(stored)) => self.finish(&stored).await,
            BatchOutcome::Conflict(None) => Ok(()),
        }
    }

    /// After a batch's crawl ended and was recorded: announce it, free the crawler, and re-open
    /// windows for files that became VALID meanwhile (also of other datasets sharing the crawler).
    /// Every part is idempotent, so a redelivered poll runs it again safely.
    async fn finish(&self, batch: &Batch) -> Result<(), HandlerError> {
        if batch.is_direct() {
            return self.finish_direct(batch).await;
        }
        self.announce(batch).await?;
        let state = &self.ctx.ports.state;
        state
            .release_lease(&crawler_lease(&batch.crawler), &batch.id)
            .await?;
        for d in &self.ctx.settings.config.datasets {
            if d.crawler_name() == batch.crawler {
                self.open_window(d, &batch.id).await?;
            }
        }
        Ok(())
    }

    async fn announce(&self, batch: &Batch) -> Result<(), HandlerError> {
        let event = match batch.state {
            BatchState::Cataloged => Event::BatchCataloged {
                batch_id: batch.id.clone(),
                dataset: batch.dataset.clone(),
                files: batch.files.clone(),
            },
            BatchState::Failed if batch.failed_stage == Some(STAGE) => Event::BatchFailed {
                batch_id: batch.id.clone(),
                dataset: batch.dataset.clone(),
                stage: STAGE,
                reason: batch.reason.clone().unwrap_or_default(),
                files: batch.files.clone(),
            },
            _ => return Ok(()),
        };
        self.ctx
            .publisher
            .publish_with(
                batch_event_id(batch, &event),
                event,
                batch.traceparent.clone(),
            )
            .await?;
        Ok(())
    }
}
