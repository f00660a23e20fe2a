//! Direct cataloguing, for datasets configured with `catalog = "direct"`: a cut's table comes from
//! the dataset's schema and its partitions from the batches' keys, registered through the
//! [`Catalog`](choreo_ports::Catalog) port at once — no crawler lease, no crawl, no poll timers.
//!
//! Windows and cuts are the crawler's (under the lease `catalog:<dataset>` rather than a crawler's,
//! so two timers closing at once cannot put one file in two batches), so there is still one job run
//! per batch. The cut is registered and completed as a crawl's end completes it: files VALID →
//! CATALOGED (or FAILED, when the catalog refuses for good), the batches recorded and announced, the
//! lease freed and the dataset kicked for files that arrived meanwhile. A redelivered timer finds its
//! lead by id and carries on; a sweep's `CrawlPoll` for a batch whose timer was lost does the same.

use crate::CrawlerPoller;
use choreo_domain::catalog::{TableDef, infer_partitions};
use choreo_domain::{Batch, BatchState, FileState};
use choreo_ports::PortError;
use choreo_runtime::{HandlerError, fanout};
use std::sync::Arc;

impl CrawlerPoller {
    /// Registers the table and partitions of the cut `lead` leads, then completes the cut as a
    /// crawl's end does. `keys` are the keys of the cut's files when the caller has them (the cut
    /// itself); otherwise (a redelivered timer, a sweep's poke) those still VALID are read back.
    pub(crate) async fn catalog_directly(
        &self,
        lead: Batch,
        keys: Option<Vec<String>>,
    ) -> Result<(), HandlerError> {
        let keys = match keys {
            Some(keys) => keys,
            None => self.waiting_keys(&lead).await?,
        };
        match self.register(&lead, &keys).await {
            Ok(()) => self.complete(lead, None).await,
            // Throttling, a busy store: the timer comes back and tries again.
            Err(e) if e.is_retryable() => Err(e.into()),
            // The catalog refuses the table or its partitions (a layout it cannot hold, a missing
            // database): retrying cannot help, so the cut fails as a failed crawl does.
            Err(e) => self.complete(lead, Some(e.to_string())).await,
        }
    }

    /// Ensures the table and adds the partitions `keys` name. Both are idempotent.
    async fn register(&self, batch: &Batch, keys: &[String]) -> Result<(), PortError> {
        if keys.is_empty() {
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
        let layout = infer_partitions(d.folder(), keys.iter().map(String::as_str))
            .map_err(|e| refuse(e.to_string()))?;
        let bucket = &ctx.settings.config.buckets.input;
        let table = TableDef::of(d, schema, bucket, layout.partition_keys)
            .map_err(|e| refuse(e.to_string()))?;
        let catalog = &ctx.ports.catalog;
        let outcome = catalog.ensure_table(&table).await?;
        let added = catalog.add_partitions(&table, &layout.partitions).await?;
        choreo_telemetry::events::emit(crate::events::TableRegistered {
            batch_id: &batch.id,
            table: &table.name,
            outcome: &outcome,
            partitions: layout.partitions.len(),
            added,
        });
        Ok(())
    }

    /// The keys of the cut's files (the lead's and its riders') that are still VALID: the others
    /// have moved on, and `complete` leaves them out.
    async fn waiting_keys(&self, lead: &Batch) -> Result<Vec<String>, HandlerError> {
        let state = &self.ctx.ports.state;
        let mut files = lead.files.clone();
        for id in &lead.riders {
            if let Some(rider) = state.get_batch(id).await?
                && rider.state == BatchState::Crawling
            {
                files.extend(rider.files);
            }
        }
        let state = Arc::clone(state);
        let records = fanout::try_in_order(files, fanout::PER_BATCH, move |id| {
            let state = Arc::clone(&state);
            async move { state.get(&id).await }
        })
        .await?;
        Ok(records
            .into_iter()
            .flatten()
            .filter(|r| r.state == FileState::Valid)
            .map(|r| r.key)
            .collect())
    }
}
