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
//! Every timer is a message, so a crash loses no wait; every step checks the stored state first, so a
//! duplicate timer is harmless.

use async_trait::async_trait;
use choreo_domain::config::DatasetConfig;
use choreo_domain::{Batch, BatchState, Event, FileId, FileState, Stage, Transition};
use choreo_ports::{
    BatchOutcome, CrawlStart, CrawlStatus, FileQuery, LeaseOutcome, ReceivedMessage,
    TransitionOutcome,
};
use choreo_runtime::publish::{batch_event_id, send_timer};
use choreo_runtime::{Handler, HandlerError, ServiceContext, decode};
use chrono::Utc;
use std::sync::Arc;
use std::time::Duration;

pub const STAGE: Stage = Stage::Crawler;

/// The service's wiring: its queue and its handler.
pub const SPEC: choreo_runtime::ServiceSpec = choreo_runtime::ServiceSpec {
    stage: STAGE,
    queue: queue_name,
    build: handler,
};

fn queue_name(config: &choreo_domain::Config) -> &str {
    &config.queues.crawl
}

/// How long a crawler lease lasts without renewal; every poll renews it. A poller that died holding
/// it is taken over once it expires.
const CRAWL_LEASE: Duration = Duration::from_secs(15 * 60);
/// Slack on top of the batch window before a window lease whose timer was lost expires.
const WINDOW_SLACK: Duration = Duration::from_secs(60);

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
        match decode(message)?.event {
            Event::FileValidated { file_id, dataset } => {
                tracing::Span::current().record("file_id", file_id.as_str());
                self.on_validated(&file_id, &dataset).await
            }
            Event::CrawlWindowClosed { dataset, window } => {
                self.on_window_closed(&dataset, &window).await
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
            Some(d) => self.open_window(d).await,
            None => {
                tracing::warn!(dataset, "DatasetUnknown: file left VALID");
                Ok(())
            }
        }
    }

    /// Makes sure a `CrawlWindowClosed` timer is pending for the dataset's VALID files.
    async fn open_window(&self, d: &DatasetConfig) -> Result<(), HandlerError> {
        let waiting = self.valid_files(&d.name, d.batch_max_files).await?;
        if waiting.is_empty() {
            return Ok(());
        }
        if waiting.len() >= d.batch_max_files {
            return Ok(self.close_window_timer(&d.name, "", Duration::ZERO).await?);
        }
        let window = uuid::Uuid::new_v4().to_string();
        let delay = Duration::from_secs(d.batch_window_secs);
        let lease = window_lease(&d.name);
        let state = &self.ctx.ports.state;
        match state
            .acquire_lease(&lease, &window, delay + WINDOW_SLACK)
            .await?
        {
            LeaseOutcome::Acquired { .. } => {
                if let Err(e) = self.close_window_timer(&d.name, &window, delay).await {
                    state.release_lease(&lease, &window).await?;
                    return Err(e.into());
                }
                tracing::info!(dataset = %d.name, ?delay, "BatchWindowOpened");
                Ok(())
            }
            LeaseOutcome::Held { .. } => Ok(()), // a timer is pending already
        }
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
        Ok(page.items.into_iter().map(|r| r.id).collect())
    }

    async fn on_window_closed(&self, dataset: &str, window: &str) -> Result<(), HandlerError> {
        let state = &self.ctx.ports.state;
        if !window.is_empty() {
            state.release_lease(&window_lease(dataset), window).await?;
        }
        let Some(d) = self.dataset(dataset) else {
            return Ok(());
        };
        let files = self.valid_files(&d.name, d.batch_max_files).await?;
        if files.is_empty() {
            return Ok(());
        }
        let now = Utc::now();
        let id = Batch::new_id(&d.name, now);
        let crawler = d.crawler_name();
        let lease = crawler_lease(&crawler);
        if let LeaseOutcome::Held { holder, .. } =
            state.acquire_lease(&lease, &id, CRAWL_LEASE).await?
        {
            tracing::info!(dataset, %crawler, running = %holder, "CrawlDeferred: the crawler is busy");
            return Ok(());
        }
        // The batch gets a trace of its own.
        let span = tracing::info_span!(parent: None, "batch", batch_id = %id, dataset);
        let traceparent = span.in_scope(choreo_telemetry::current_traceparent);
        let batch = Batch {
            id: id.clone(),
            dataset: d.name.clone(),
            crawler,
            job: d.job.clone(),
            state: BatchState::Crawling,
            files,
            crawl_started: false,
            job_run_id: None,
            manifest: None,
            reason: None,
            failed_stage: None,
            traceparent: traceparent.clone(),
            created_at: now,
            updated_at: now,
        };
        let created = async {
            state.create_batch(&batch).await?;
            let poll = Event::CrawlPoll {
                batch_id: id.clone(),
            };
            send_timer(self.ctx.queue.as_ref(), poll, Duration::ZERO, traceparent).await
        }
        .await;
        if let Err(e) = created {
            state.release_lease(&lease, &id).await?;
            return Err(e.into());
        }
        tracing::info!(batch_id = %id, dataset, files = batch.files.len(), "BatchOpened");
        Ok(())
    }

    async fn on_poll(&self, batch_id: &str) -> Result<(), HandlerError> {
        let ports = &self.ctx.ports;
        let Some(mut batch) = ports.state.get_batch(batch_id).await? else {
            tracing::warn!(batch_id, "BatchUnknown: poll dropped");
            return Ok(());
        };
        tracing::Span::current().record("batch_id", batch_id);
        match batch.state {
            BatchState::Crawling => {}
            // The outbox case: the batch was recorded but its event may not have gone out.
            BatchState::Cataloged | BatchState::Failed => return self.announce(&batch).await,
            _ => return Ok(()),
        }
        let lease = crawler_lease(&batch.crawler);
        if let LeaseOutcome::Held { holder, .. } = ports
            .state
            .acquire_lease(&lease, &batch.id, CRAWL_LEASE)
            .await?
        {
            tracing::warn!(batch_id, %holder, "CrawlLeaseLost: another batch holds the crawler");
        }
        if !batch.crawl_started {
            match ports.crawler.start_crawl(&batch.crawler).await? {
                CrawlStart::Started => {
                    batch.crawl_started = true;
                    batch.updated_at = Utc::now();
                    if let BatchOutcome::Conflict(_) = ports
                        .state
                        .update_batch(&batch, BatchState::Crawling)
                        .await?
                    {
                        return Ok(());
                    }
                    tracing::info!(batch_id, crawler = %batch.crawler, "CrawlStarted");
                }
                CrawlStart::AlreadyRunning => {
                    tracing::info!(batch_id, crawler = %batch.crawler, "CrawlerBusy: waiting to start");
                }
            }
            return self.poll_again(&batch).await;
        }
        match ports.crawler.crawl_status(&batch.crawler).await? {
            CrawlStatus::Running => self.poll_again(&batch).await,
            CrawlStatus::Succeeded => self.complete(batch, None).await,
            CrawlStatus::Failed(reason) => self.complete(batch, Some(reason)).await,
        }
    }

    async fn poll_again(&self, batch: &Batch) -> Result<(), HandlerError> {
        let poll = Event::CrawlPoll {
            batch_id: batch.id.clone(),
        };
        send_timer(
            self.ctx.queue.as_ref(),
            poll,
            self.poll_interval(),
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
                self.announce(&batch).await?;
            }
            BatchOutcome::Conflict(Some(stored)) => self.announce(&stored).await?,
            BatchOutcome::Conflict(None) => {}
        }
        state
            .release_lease(&crawler_lease(&batch.crawler), &batch.id)
            .await?;
        // Files that became VALID during the crawl wait for the next one; so may other datasets that
        // share the crawler.
        for d in &self.ctx.settings.config.datasets {
            if d.crawler_name() == batch.crawler {
                self.open_window(d).await?;
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
