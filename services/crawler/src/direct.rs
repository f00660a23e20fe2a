//! Direct cataloguing, for datasets configured with `catalog = "direct"`: the batch's table comes
//! from the dataset's schema and its partitions from the batch's keys, registered through the
//! [`Catalog`](choreo_ports::Catalog) port at once — no crawler lease, no crawl, no poll timers.
//!
//! Batching is the crawler's (the window, the size limit), so there is still one job run per batch.
//! When the window closes, the batch is recorded under the lease `catalog:<dataset>` (so that two
//! timers closing at once cannot put one file in two batches), catalogued, and completed as a crawl
//! completes: files VALID → CATALOGED (or FAILED, when the catalog refuses for good), the batch
//! recorded, `BatchCataloged` (or `BatchFailed`) published, the lease freed and the window re-opened
//! for files that arrived meanwhile. A redelivered timer finds its batch by id and carries on; a
//! sweep's `CrawlPoll` for a batch whose timer was lost does the same.

use crate::{CrawlerPoller, FIRST_LEASE};
use choreo_domain::catalog::{TableDef, infer_partitions};
use choreo_domain::config::DatasetConfig;
use choreo_domain::{Batch, BatchState, FileRecord};
use choreo_ports::{LeaseOutcome, PortError};
use choreo_runtime::HandlerError;

fn catalog_lease(dataset: &str) -> String {
    format!("catalog:{dataset}")
}

impl CrawlerPoller {
    /// Closes a direct dataset's window: records a batch of its VALID files and catalogues it, unless
    /// another batch of the dataset is being recorded (it re-opens the window when it ends).
    pub(crate) async fn close_direct_window(
        &self,
        d: &DatasetConfig,
        window: &str,
        timer_id: &str,
    ) -> Result<(), HandlerError> {
        let state = &self.ctx.ports.state;
        let id = Batch::id_for(&d.name, timer_id);
        let (batch, records) = match state.get_batch(&id).await? {
            Some(batch) => (batch, None),
            None => {
                // Held until the batch is announced. Registering is a few calls, so the crawler's
                // first lease (a minute) is ample, and a holder that died frees it soon. The files
                // are listed under it: listed before, they could be another batch's, catalogued
                // in the milliseconds between the listing and the lease.
                let lease = catalog_lease(&d.name);
                if let LeaseOutcome::Held { holder, .. } =
                    state.acquire_lease(&lease, &id, FIRST_LEASE).await?
                {
                    tracing::info!(dataset = %d.name, running = %holder, "CatalogDeferred: a batch is being catalogued");
                    return self.release_window(&d.name, window).await;
                }
                let records = self.valid_records(&d.name, d.batch_max_files).await?;
                if records.is_empty() {
                    state.release_lease(&lease, &id).await?;
                    return self.release_window(&d.name, window).await;
                }
                let span =
                    tracing::info_span!(parent: None, "batch", batch_id = %id, dataset = %d.name);
                let traceparent = span.in_scope(choreo_telemetry::current_traceparent);
                let batch = Batch {
                    traceparent,
                    ..Batch::new(
                        id.clone(),
                        &d.name,
                        // No crawler: what marks the batch as catalogued directly.
                        String::new(),
                        d.job.clone(),
                        BatchState::Crawling,
                        records.iter().map(|r| r.id.clone()).collect(),
                    )
                };
                state.create_batch(&batch).await?;
                tracing::info!(batch_id = %id, dataset = %d.name, files = batch.files.len(), "BatchOpened");
                (batch, Some(records))
            }
        };
        self.catalog_directly(batch, records).await?;
        self.release_window(&d.name, window).await
    }

    /// Registers the batch's table and partitions, then completes the batch as a crawl's end does.
    /// A batch already completed is only finished (announced, its lease freed) again. `records` are
    /// the batch's file records when the caller has them; otherwise they are read.
    pub(crate) async fn catalog_directly(
        &self,
        batch: Batch,
        records: Option<Vec<FileRecord>>,
    ) -> Result<(), HandlerError> {
        match batch.state {
            BatchState::Crawling => {}
            BatchState::Cataloged | BatchState::Failed => return self.finish(&batch).await,
            _ => return Ok(()),
        }
        let records = match records {
            Some(r) => r,
            None => self.records_of(&batch).await?,
        };
        match self.register(&batch, &records).await {
            Ok(()) => self.complete(batch, None).await,
            // Throttling, a busy store: the timer comes back and tries again.
            Err(e) if e.is_retryable() => Err(e.into()),
            // The catalog refuses the table or its partitions (a layout it cannot hold, a missing
            // database): retrying cannot help, so the batch fails as a failed crawl does.
            Err(e) => self.complete(batch, Some(e.to_string())).await,
        }
    }

    /// Ensures the table and adds the partitions the batch's keys name. Both are idempotent.
    async fn register(&self, batch: &Batch, records: &[FileRecord]) -> Result<(), PortError> {
        if records.is_empty() {
            // None left VALID: an earlier attempt registered them and began completing.
            return Ok(());
        }
        let ctx = &self.ctx;
        let refuse = |message: String| PortError::permanent("catalog", &batch.dataset, message);
        let d = self
            .dataset(&batch.dataset)
            .ok_or_else(|| refuse("the dataset is no longer configured".into()))?;
        let schema = ctx
            .settings
            .schemas
            .get(&d.name)
            .ok_or_else(|| refuse("the dataset has no schema".into()))?;
        let layout = infer_partitions(d.folder(), records.iter().map(|r| r.key.as_str()))
            .map_err(|e| refuse(e.to_string()))?;
        let bucket = &ctx.settings.config.buckets.input;
        let table = TableDef::of(d, schema, bucket, layout.partition_keys)
            .map_err(|e| refuse(e.to_string()))?;
        let catalog = &ctx.ports.catalog;
        let outcome = catalog.ensure_table(&table).await?;
        let added = catalog.add_partitions(&table, &layout.partitions).await?;
        tracing::info!(
            batch_id = %batch.id,
            table = %table.name,
            ?outcome,
            partitions = layout.partitions.len(),
            added,
            "TableRegistered"
        );
        Ok(())
    }

    /// The records of the batch's files that are still VALID (the others have moved on, and
    /// `complete` leaves them out).
    async fn records_of(&self, batch: &Batch) -> Result<Vec<FileRecord>, HandlerError> {
        let mut records = Vec::with_capacity(batch.files.len());
        for id in &batch.files {
            if let Some(r) = self.ctx.ports.state.get(id).await?
                && r.state == choreo_domain::FileState::Valid
            {
                records.push(r);
            }
        }
        Ok(records)
    }

    /// After a direct batch was recorded: announce it, free the dataset's catalog lease and re-open
    /// its window for files that became VALID meanwhile. Idempotent, as `finish` is.
    pub(crate) async fn finish_direct(&self, batch: &Batch) -> Result<(), HandlerError> {
        self.announce(batch).await?;
        let state = &self.ctx.ports.state;
        state
            .release_lease(&catalog_lease(&batch.dataset), &batch.id)
            .await?;
        if let Some(d) = self.dataset(&batch.dataset) {
            self.open_window(d, &batch.id).await?;
        }
        Ok(())
    }
}
