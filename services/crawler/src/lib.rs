//! The catalog crawler poller: VALID → CATALOGED | FAILED, a batch at a time, crawls shared.
//!
//! A crawl costs at least ten minutes of Glue time however few files it sees, and a crawler crawls
//! a path, not a list of files. So files wait in windows and crawls coalesce (the lifecycle and its
//! decisions are `choreo_domain::lifecycle`; this module only carries them out):
//!
//! 1. `FileValidated` opens the dataset's window — the lease `window:<dataset>`, so one timer is
//!    pending per dataset whatever the replicas — and sends a `CrawlWindowClosed` timer delayed by
//!    the window; unless the dataset's crawler is busy: then the file waits for the crawl's end.
//! 2. `CrawlWindowClosed` takes the crawler's lease `crawler:<name>` (one crawl at a time per
//!    crawler, across replicas) and *cuts*: every VALID file of every dataset the crawler covers
//!    becomes part of a batch of at most `batch_max_files`. The first batch leads the crawl, the
//!    others ride along; riders are recorded first, the lead last, so a recorded lead means a
//!    complete cut. Then the lead's `CrawlPoll` timer goes out.
//! 3. `CrawlPoll` (of the lead) starts the crawl, polls it with delayed messages to this queue
//!    while it runs, and when it ends completes every batch of the cut (riders first), announces
//!    each (`BatchCataloged` or `BatchFailed`: one job run each, all at once), frees the crawler and
//!    *kicks* the crawler's datasets: files that became VALID during the crawl are cut at once, and
//!    the next crawl covers all of them.
//!
//! A dataset configured with `catalog = "direct"` is cut the same way under the lease
//! `catalog:<dataset>`, and its batches are catalogued at once without a crawl (`direct.rs`).
//!
//! No file waits for the watchdog: a file that becomes VALID while the crawler or the window is held
//! leaves the next step to the holder, and every holder asks again ([`CrawlerPoller::kick`]) after it
//! let go. Every timer is a message, so a crash loses no wait, and every step checks the stored state
//! first, so a duplicate is harmless. A timer lost outright (its queue purged, the message
//! dead-lettered) shows as a lapsed lease: the watchdog ([`CrawlerPoller::recover`]) sends a crawling
//! lead whose crawler lease lapsed its poll again, and opens a window for a dataset whose VALID files
//! wait under no live lease. Each step's lease holder and batch ids derive from the message itself
//! (the file id, the timer's envelope id), so a redelivered message finds its own lease and batches
//! and carries on rather than being locked out by them.

use async_trait::async_trait;
use choreo_domain::clock;
use choreo_domain::config::DatasetConfig;
use choreo_domain::lifecycle::{self, Step};
use choreo_domain::{Batch, BatchState, Event, FileId, FileRecord, FileState, Stage, Transition};
use choreo_ports::{
    BatchOutcome, CrawlStart, CrawlStatus, FileQuery, LeaseInfo, LeaseOutcome, PortError,
    ReceivedMessage, TransitionOutcome,
};
use choreo_runtime::events::{BatchUnknown, FileLeftBatch};
use choreo_runtime::fanout;
use choreo_runtime::publish::send_timer;
use choreo_runtime::{Background, Handler, HandlerError, ServiceContext, decode};
use choreo_telemetry::events::emit;
use chrono::Utc;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

mod direct;
pub mod events;

/// How a lead's crawl came to run: started by it, or an unrecorded start of its own taken over.
enum Taken {
    Started,
    Over,
}

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
/// short, so a lease whose taker died before recording its cut is soon free again.
const FIRST_LEASE: Duration = Duration::from_secs(60);
/// Records read a page at a time when cutting.
const PAGE: usize = 500;

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

fn catalog_lease(dataset: &str) -> String {
    format!("catalog:{dataset}")
}

/// The lease that serialises cuts and what follows them: the crawler's, shared by the datasets it
/// covers, or a directly catalogued dataset's own.
fn group_lease(d: &DatasetConfig) -> String {
    match d.crawled_by() {
        Some(crawler) => crawler_lease(&crawler),
        None => catalog_lease(&d.name),
    }
}

/// The lease a batch's cut holds until its crawl (or direct registration) is finished.
fn batch_group_lease(batch: &Batch) -> String {
    if batch.is_direct() {
        catalog_lease(&batch.dataset)
    } else {
        crawler_lease(&batch.crawler)
    }
}

fn live(lease: Option<LeaseInfo>) -> bool {
    lease.is_some_and(|l| l.expires_at > clock::now())
}

#[async_trait]
impl Handler for CrawlerPoller {
    async fn handle(&self, message: &ReceivedMessage) -> Result<(), HandlerError> {
        let envelope = decode(message)?;
        match envelope.event {
            Event::FileValidated { file_id, dataset } => {
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

    /// The datasets cut together with `d`: those its crawler covers, or `d` alone when direct.
    fn group_of<'a>(&'a self, d: &'a DatasetConfig) -> Vec<&'a DatasetConfig> {
        match d.crawled_by() {
            Some(c) => self
                .ctx
                .settings
                .config
                .datasets
                .iter()
                .filter(|o| o.crawled_by().as_deref() == Some(c.as_str()))
                .collect(),
            None => vec![d],
        }
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

    /// The watchdog's pass: sends the poll again for each crawling lead whose crawler lease lapsed,
    /// taking the lease on the batch's behalf (so the next pass, and new windows, see it live), then
    /// opens a window for each dataset with VALID files and neither a live window nor a live crawl.
    /// Returns how many timers it sent.
    pub async fn recover(&self) -> Result<usize, PortError> {
        let state = &self.ctx.ports.state;
        let mut sent = 0;
        let timer_error = |id: &str, e: HandlerError| PortError::transient("recover", id, e);
        for batch in state.batches_in(BatchState::Crawling).await? {
            if matches!(lifecycle::next(&batch, STAGE), Step::FollowLead(_)) {
                continue; // its lead is looked at
            }
            if batch.is_direct() {
                // No crawl: catalogued within one message, so a direct batch still CRAWLING a
                // lease time after its last write lost that message.
                let idle = (clock::now() - batch.updated_at)
                    .to_std()
                    .unwrap_or_default();
                if idle >= self.lease_time() {
                    emit(events::LostCrawlPoll {
                        batch_id: &batch.id,
                        crawler: &batch.crawler,
                    });
                    self.poll_after(&batch, Duration::ZERO)
                        .await
                        .map_err(|e| timer_error(&batch.id, e))?;
                    sent += 1;
                }
                continue;
            }
            let lease = crawler_lease(&batch.crawler);
            if live(state.lease(&lease).await?) {
                continue; // polled lately, or another cut holds the crawler: it kicks when done
            }
            if let LeaseOutcome::Acquired { .. } = state
                .acquire_lease(&lease, &batch.id, self.first_lease())
                .await?
            {
                emit(events::LostCrawlPoll {
                    batch_id: &batch.id,
                    crawler: &batch.crawler,
                });
                self.poll_after(&batch, Duration::ZERO)
                    .await
                    .map_err(|e| timer_error(&batch.id, e))?;
                sent += 1;
            }
        }
        for d in &self.ctx.settings.config.datasets {
            let holder = format!("watchdog-{}", uuid::Uuid::new_v4());
            let delay = Duration::from_secs(d.batch_window_secs);
            if self
                .kick(d, &holder, delay)
                .await
                .map_err(|e| timer_error(&d.name, e))?
            {
                emit(events::LostWindowTimer { dataset: &d.name });
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
            Some(d) => {
                let delay =
                    lifecycle::window_delay(Duration::from_secs(d.batch_window_secs), false);
                self.kick(d, file_id.as_str(), delay).await.map(drop)
            }
            None => {
                emit(events::DatasetUnknown { dataset });
                Ok(())
            }
        }
    }

    /// Makes sure a cut is coming for `d`'s VALID files ([`lifecycle::kick`]): opens the window —
    /// takes `window:<d>` and sends `CrawlWindowClosed` after `delay` — unless the dataset's crawler
    /// (or catalogue) is held, a window is open already, or no file waits. Callers that held the
    /// crawler or a window call it after freeing them. `holder` names the caller's message (a file
    /// or batch id): if it dies after taking the window lease and before sending the timer, its
    /// redelivery takes the lease again as its own and sends the timer. Returns whether it sent one.
    async fn kick(
        &self,
        d: &DatasetConfig,
        holder: &str,
        delay: Duration,
    ) -> Result<bool, HandlerError> {
        let state = &self.ctx.ports.state;
        let lease = window_lease(&d.name);
        // The cheap questions first: a busy stream of files asks them once per file.
        let group_busy = live(state.lease(&group_lease(d)).await?);
        let window_open = !group_busy
            && state
                .lease(&lease)
                .await?
                .is_some_and(|l| l.expires_at > clock::now() && l.holder != holder);
        let waiting = !group_busy && !window_open && !self.waiting(&d.name, 1).await?.is_empty();
        if !lifecycle::kick(group_busy, window_open, waiting) {
            return Ok(false);
        }
        let window = holder.to_string();
        match state
            .acquire_lease(&lease, &window, delay + self.lease_time().min(WINDOW_SLACK))
            .await?
        {
            LeaseOutcome::Acquired { .. } => {
                let event = Event::CrawlWindowClosed {
                    dataset: d.name.clone(),
                    window: window.clone(),
                };
                if let Err(e) = send_timer(self.ctx.queue.as_ref(), event, delay, None).await {
                    state.release_lease(&lease, &window).await?;
                    return Err(e.into());
                }
                emit(events::BatchWindowOpened {
                    dataset: &d.name,
                    delay,
                });
                Ok(true)
            }
            LeaseOutcome::Held { .. } => Ok(false), // a timer is pending already
        }
    }

    /// Up to `limit` of the dataset's VALID records, in id order.
    async fn waiting(&self, dataset: &str, limit: usize) -> Result<Vec<FileRecord>, HandlerError> {
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

    /// Every VALID record of the dataset.
    async fn all_waiting(&self, dataset: &str) -> Result<Vec<FileRecord>, HandlerError> {
        let query = FileQuery {
            dataset: Some(dataset.to_string()),
            state: Some(FileState::Valid),
            limit: PAGE,
            after: None,
        };
        Ok(self.ctx.ports.state.list_all(query).await?)
    }

    /// A window closed: unless the group is busy (its end kicks), cut every waiting file of the
    /// group into batches and catalogue them — one crawl for all, or directly. The lead's id derives
    /// from the timer's envelope id, so a redelivered timer finds the cut it made before dying.
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
        let lead_id = Batch::id_for(&d.name, timer_id);
        if let Some(lead) = state.get_batch(&lead_id).await? {
            // A redelivered timer: the cut was made; carry it on.
            self.release_window(&d.name, window).await?;
            return self.drive(lead).await;
        }
        let group = group_lease(d);
        if let LeaseOutcome::Held { holder, .. } = state
            .acquire_lease(&group, &lead_id, self.first_lease())
            .await?
        {
            emit(events::CrawlDeferred {
                dataset,
                running: &holder,
            });
            return self.window_done(d, window).await;
        }
        let Some((lead, keys)) = self.cut(d, &lead_id).await? else {
            state.release_lease(&group, &lead_id).await?;
            return self.window_done(d, window).await;
        };
        self.release_window(&d.name, window).await?;
        if lead.is_direct() {
            // The cut's keys are in hand: no need to read its records back.
            return self.catalog_directly(lead, keys).await;
        }
        self.drive(lead).await
    }

    /// Frees the window and asks again for the files that arrived while it was held.
    async fn window_done(&self, d: &DatasetConfig, window: &str) -> Result<(), HandlerError> {
        self.release_window(&d.name, window).await?;
        let delay = Duration::from_secs(d.batch_window_secs);
        self.kick(d, window, delay).await.map(drop)
    }

    async fn release_window(&self, dataset: &str, window: &str) -> Result<(), HandlerError> {
        if !window.is_empty() {
            let state = &self.ctx.ports.state;
            state.release_lease(&window_lease(dataset), window).await?;
        }
        Ok(())
    }

    /// Records the cut, holding the group's lease: the waiting files of the group's datasets in
    /// batches of at most `batch_max_files` (riders first, then the lead, which lists them).
    /// Files of crawling batches are left out: they are a cut's already (one recorded by an
    /// earlier try of this very cut, whose riders this one keeps). Returns the lead and the keys of
    /// the cut's files — `None` when riders of an earlier try were kept, whose keys it never read —
    /// or `None` when nothing waits.
    async fn cut(
        &self,
        d: &DatasetConfig,
        lead_id: &str,
    ) -> Result<Option<(Batch, Option<Vec<String>>)>, HandlerError> {
        let state = &self.ctx.ports.state;
        let crawling = state.batches_in(BatchState::Crawling).await?;
        let taken: HashSet<&FileId> = crawling.iter().flat_map(|b| &b.files).collect();
        let mut riders: Vec<String> = crawling
            .iter()
            .filter(|b| b.crawl_lead.as_deref() == Some(lead_id))
            .map(|b| b.id.clone())
            .collect();
        let mut waiting = Vec::new();
        for member in self.group_of(d) {
            let records = self.all_waiting(&member.name).await?;
            waiting.extend(records.into_iter().filter(|r| !taken.contains(&r.id)));
        }
        let config = &self.ctx.settings.config;
        let max = |name: &str| config.dataset(name).map_or(1, |d| d.batch_max_files);
        let keys = riders
            .is_empty()
            .then(|| waiting.iter().map(|r| r.key.clone()).collect());
        let mut chunks = lifecycle::plan_cut(waiting, max);
        let Some(last) = chunks.pop() else {
            return Ok(None);
        };
        // The batches get a trace of their own.
        let span = tracing::info_span!(
            parent: None,
            "batch",
            choreo.stage = STAGE.as_str(),
            choreo.batch_id = %lead_id,
            choreo.dataset = %d.name,
        );
        let traceparent = span.in_scope(choreo_telemetry::current_traceparent);
        let crawler = d.crawled_by().unwrap_or_default();
        let batch = |id: String, chunk: lifecycle::Chunk| {
            let job = config
                .dataset(&chunk.dataset)
                .map_or_else(|| d.job.clone(), |c| c.job.clone());
            Batch {
                traceparent: traceparent.clone(),
                crawl_lead: Some(lead_id.to_string()),
                ..Batch::new(
                    id,
                    &chunk.dataset,
                    crawler.clone(),
                    job,
                    BatchState::Crawling,
                    chunk.files,
                )
            }
        };
        for chunk in chunks {
            let id = lifecycle::rider_id(lead_id, riders.len() + 1);
            let rider = batch(id.clone(), chunk);
            state.create_batch(&rider).await?;
            emit(events::BatchOpened {
                batch_id: &id,
                dataset: &rider.dataset,
                files: rider.files.len(),
                lead: Some(lead_id),
                riders: 0,
            });
            riders.push(id);
        }
        let lead = Batch {
            riders,
            ..batch(lead_id.to_string(), last)
        };
        state.create_batch(&lead).await?;
        emit(events::BatchOpened {
            batch_id: &lead.id,
            dataset: &lead.dataset,
            files: lead.files.len(),
            lead: None,
            riders: lead.riders.len(),
        });
        Ok(Some((lead, keys)))
    }

    async fn on_poll(&self, batch_id: &str) -> Result<(), HandlerError> {
        let Some(batch) = self.ctx.ports.state.get_batch(batch_id).await? else {
            emit(BatchUnknown {
                stage: STAGE,
                batch_id,
            });
            return Ok(());
        };
        self.drive(batch).await
    }

    /// Does what the lifecycle says comes next for the batch.
    async fn drive(&self, batch: Batch) -> Result<(), HandlerError> {
        match lifecycle::next(&batch, STAGE) {
            Step::StartCrawl => self.start_crawl(batch).await,
            Step::PollCrawl => self.poll_crawl(batch).await,
            Step::RegisterTable => self.catalog_directly(batch, None).await,
            // A sweep's poke at a rider: its lead does the work.
            Step::FollowLead(lead) => match self.ctx.ports.state.get_batch(&lead).await? {
                Some(lead) => Box::pin(self.drive(lead)).await,
                None => Ok(()),
            },
            Step::FinishCatalog => self.finish(&batch).await,
            _ => Ok(()),
        }
    }

    /// Starts the lead's crawl, under the crawler's lease.
    async fn start_crawl(&self, mut batch: Batch) -> Result<(), HandlerError> {
        let ports = &self.ctx.ports;
        let batch_id = batch.id.clone();
        let lease = crawler_lease(&batch.crawler);
        if let LeaseOutcome::Held { holder, .. } = ports
            .state
            .acquire_lease(&lease, &batch.id, self.lease_time())
            .await?
        {
            // Our lease lapsed (a lost timer) and another cut took the crawler: wait for it rather
            // than start a second crawl; its end frees the crawler.
            emit(events::CrawlerBusy {
                batch_id: &batch_id,
                crawler: &batch.crawler,
                holder: Some(&holder),
            });
            return self.poll_after(&batch, self.poll_interval()).await;
        }
        // The attempt is recorded before it is made: a poller that dies between starting the crawl
        // and recording it leaves `crawl_started_at` set, and the redelivered poll then takes the
        // running crawl as this batch's own rather than waiting for it to end — for ever on the
        // local backend, where only a poll ends a crawl.
        let attempted = batch.crawl_started_at.is_some();
        if !attempted {
            batch.crawl_started_at = Some(clock::now());
            if let BatchOutcome::Conflict(_) = ports
                .state
                .update_batch(&mut batch, BatchState::Crawling)
                .await?
            {
                return Ok(());
            }
        }
        let taken = match ports.crawler.start_crawl(&batch.crawler).await? {
            CrawlStart::Started => {
                batch.crawl_started_at = Some(clock::now());
                Some(Taken::Started)
            }
            CrawlStart::AlreadyRunning if attempted => Some(Taken::Over),
            CrawlStart::AlreadyRunning => None,
        };
        batch.updated_at = clock::now();
        if taken.is_some() {
            batch.crawl_started = true;
        } else {
            // Another batch's crawl: the mark goes, so that a later poll does not take it.
            batch.crawl_started_at = None;
        }
        if let BatchOutcome::Conflict(_) = ports
            .state
            .update_batch(&mut batch, BatchState::Crawling)
            .await?
        {
            return Ok(());
        }
        let (crawler, riders) = (&batch.crawler, batch.riders.len());
        match taken {
            Some(Taken::Started) => emit(events::CrawlStarted {
                batch_id: &batch_id,
                crawler,
                riders,
            }),
            Some(Taken::Over) => emit(events::CrawlTakenOver {
                batch_id: &batch_id,
                crawler,
                riders,
            }),
            None => emit(events::CrawlerBusy {
                batch_id: &batch_id,
                crawler,
                holder: None,
            }),
        }
        self.poll_after(&batch, self.poll_interval()).await
    }

    /// Polls the lead's crawl, renewing the crawler's lease; completes the cut when it ended.
    async fn poll_crawl(&self, batch: Batch) -> Result<(), HandlerError> {
        let ports = &self.ctx.ports;
        let lease = crawler_lease(&batch.crawler);
        if let LeaseOutcome::Held { holder, .. } = ports
            .state
            .acquire_lease(&lease, &batch.id, self.lease_time())
            .await?
        {
            emit(events::CrawlLeaseLost {
                batch_id: &batch.id,
                holder: &holder,
            });
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

    /// The cut's crawl (or registration) ended: completes the riders, then the lead, then finishes.
    async fn complete(&self, lead: Batch, failure: Option<String>) -> Result<(), HandlerError> {
        let ending = lifecycle::catalog_ending(lead.is_direct(), failure.as_deref());
        let ended_at = clock::now();
        for id in &lead.riders {
            if let Some(rider) = self.ctx.ports.state.get_batch(id).await?
                && rider.state == BatchState::Crawling
            {
                let rider = Batch {
                    crawl_started_at: lead.crawl_started_at,
                    ..rider
                };
                self.complete_one(rider, &ending, ended_at).await?;
            }
        }
        match self.complete_one(lead, &ending, ended_at).await? {
            // Still crawling: another handler updated the lead since it was read, and its poll
            // completes the cut.
            Some(lead) if lead.state == BatchState::Crawling => Ok(()),
            Some(lead) => self.finish(&lead).await,
            None => Ok(()),
        }
    }

    /// Moves one batch's files and records the batch ended; returns the batch as stored, or `None`
    /// when it is gone.
    async fn complete_one(
        &self,
        mut batch: Batch,
        ending: &lifecycle::Ending,
        ended_at: chrono::DateTime<Utc>,
    ) -> Result<Option<Batch>, HandlerError> {
        let state = &self.ctx.ports.state;
        let to = ending.files;
        let trace_id = batch
            .traceparent
            .as_deref()
            .and_then(choreo_telemetry::trace_id_of)
            .map(str::to_string);
        let moves = batch.files.iter().map(|file| {
            let mut t = Transition::new(file.clone(), STAGE, FileState::Valid, to)
                .expect("the crawler's moves are in the table")
                .batch(batch.id.clone())
                .trace_id(trace_id.clone());
            if let Some(r) = &ending.reason {
                t = t.reason(r.clone());
            }
            t
        });
        let outcomes = fanout::transition_all(state, moves.collect()).await?;
        let step = if batch.is_direct() {
            "catalog"
        } else {
            "crawl"
        };
        choreo_runtime::trace::batch_step(step, STAGE, &batch, FileState::Valid, &outcomes);
        let mut kept = Vec::with_capacity(batch.files.len());
        for (file, outcome) in outcomes {
            match outcome {
                TransitionOutcome::Applied(_) => kept.push(file),
                TransitionOutcome::Conflict(r)
                    if r.state == to && r.batch_id.as_deref() == Some(batch.id.as_str()) =>
                {
                    kept.push(file)
                }
                TransitionOutcome::Conflict(r) => emit(FileLeftBatch {
                    stage: STAGE,
                    batch_id: &batch.id,
                    file_id: &file,
                    state: Some(r.state),
                }),
                TransitionOutcome::NotFound => emit(FileLeftBatch {
                    stage: STAGE,
                    batch_id: &batch.id,
                    file_id: &file,
                    state: None,
                }),
            }
        }
        batch.files = kept;
        batch.crawl_ended_at = Some(ended_at);
        batch.state = ending.batch;
        batch.reason = ending.reason.clone();
        batch.failed_stage = ending.reason.is_some().then_some(STAGE);
        batch.updated_at = clock::now();
        match state.update_batch(&mut batch, BatchState::Crawling).await? {
            BatchOutcome::Applied => {
                emit(events::CrawlEnded {
                    batch_id: &batch.id,
                    dataset: &batch.dataset,
                    state: batch.state,
                    files: batch.files.len(),
                    crawl_lead: !batch.is_direct() && batch.crawl_lead.is_none(),
                });
                Ok(Some(batch))
            }
            BatchOutcome::Conflict(stored) => Ok(stored.map(|b| *b)),
        }
    }

    /// After the cut's crawl ended and was recorded: announce every batch of it, free the group's
    /// lease, and kick its datasets, so files that became VALID meanwhile are cut at once. Every part
    /// is idempotent, so a redelivered poll runs it again safely.
    async fn finish(&self, lead: &Batch) -> Result<(), HandlerError> {
        let state = &self.ctx.ports.state;
        for id in &lead.riders {
            if let Some(rider) = state.get_batch(id).await? {
                self.announce(&rider).await?;
            }
        }
        self.announce(lead).await?;
        state
            .release_lease(&batch_group_lease(lead), &lead.id)
            .await?;
        let Some(d) = self.dataset(&lead.dataset) else {
            return Ok(());
        };
        for member in self.group_of(d) {
            let window = Duration::from_secs(member.batch_window_secs);
            let delay = lifecycle::window_delay(window, !lead.is_direct());
            self.kick(member, &lead.id, delay).await?;
        }
        Ok(())
    }

    async fn announce(&self, batch: &Batch) -> Result<(), HandlerError> {
        self.ctx.publisher.announce(batch, STAGE).await?;
        Ok(())
    }
}
