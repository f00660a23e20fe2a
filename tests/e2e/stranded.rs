//! A file that becomes VALID while its dataset's batch is being cut must still be catalogued without
//! the watchdog.
//!
//! Seen once in three runs of 2,000 files (direct catalog, `batch_max_files = 1000`): 136 files that
//! became VALID while the third batch was being cut got no window and waited ~290 s for the watchdog.
//! Here the race is made certain: the state store holds back the cut's listing of VALID files until
//! more files became VALID after it, so every cut misses files that arrived during it. The watchdog
//! looks every `lease_secs / 3` (300 s by default), far beyond this test's patience.

use crate::helpers::TestApp;
use async_trait::async_trait;
use choreo_domain::config::CatalogMode;
use choreo_domain::{
    Batch, BatchState, FileId, FileRecord, FileState, NewFile, SweepMark, Transition,
};
use choreo_ports::{
    BatchOutcome, FileQuery, LeaseInfo, LeaseOutcome, Page, PortError, Registered, StateStore,
    TransitionOutcome,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const FILES: usize = 2_000;

/// A state store whose listings of many VALID files (a cut's, not a window's one-record look)
/// come back only once more files became VALID than they hold, or after a second.
struct SlowCut {
    inner: Arc<dyn StateStore>,
    held: AtomicUsize,
}

impl SlowCut {
    async fn valid_now(&self, dataset: Option<String>) -> usize {
        let query = FileQuery {
            dataset,
            state: Some(FileState::Valid),
            limit: 10_000,
            after: None,
        };
        self.inner.list_all(query).await.unwrap().len()
    }
}

#[async_trait]
impl StateStore for SlowCut {
    async fn register(&self, file: NewFile) -> Result<Registered, PortError> {
        self.inner.register(file).await
    }
    async fn get(&self, id: &FileId) -> Result<Option<FileRecord>, PortError> {
        self.inner.get(id).await
    }
    async fn transition(&self, t: &Transition) -> Result<TransitionOutcome, PortError> {
        self.inner.transition(t).await
    }
    async fn transition_all(&self, ts: &[Transition]) -> Result<Vec<TransitionOutcome>, PortError> {
        self.inner.transition_all(ts).await
    }
    async fn list(&self, query: &FileQuery) -> Result<Page<FileRecord>, PortError> {
        let page = self.inner.list(query).await?;
        if query.state == Some(FileState::Valid) && query.limit > 1 && query.after.is_none() {
            let listed = page.items.len();
            let deadline = Instant::now() + Duration::from_secs(1);
            while Instant::now() < deadline {
                if self.valid_now(query.dataset.clone()).await > listed {
                    self.held.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        Ok(page)
    }
    async fn counts(&self) -> Result<Vec<(String, FileState, u64)>, PortError> {
        self.inner.counts().await
    }
    async fn create_batch(&self, batch: &Batch) -> Result<bool, PortError> {
        self.inner.create_batch(batch).await
    }
    async fn get_batch(&self, id: &str) -> Result<Option<Batch>, PortError> {
        self.inner.get_batch(id).await
    }
    async fn update_batch(
        &self,
        batch: &mut Batch,
        expected: BatchState,
    ) -> Result<BatchOutcome, PortError> {
        self.inner.update_batch(batch, expected).await
    }
    async fn batches_in(&self, state: BatchState) -> Result<Vec<Batch>, PortError> {
        self.inner.batches_in(state).await
    }
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<LeaseOutcome, PortError> {
        self.inner.acquire_lease(name, holder, ttl).await
    }
    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), PortError> {
        self.inner.release_lease(name, holder).await
    }
    async fn lease(&self, name: &str) -> Result<Option<LeaseInfo>, PortError> {
        self.inner.lease(name).await
    }
    async fn mark_sweep(
        &self,
        id: &FileId,
        history_len: usize,
        mark: &SweepMark,
    ) -> Result<bool, PortError> {
        self.inner.mark_sweep(id, history_len, mark).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_that_become_valid_while_a_batch_is_cut_are_catalogued_without_the_watchdog() {
    let mut app = TestApp::new(|c| {
        for d in &mut c.datasets {
            d.catalog = CatalogMode::Direct;
            d.batch_max_files = 1_000;
        }
        c.runtime.lease_secs = 900; // the watchdog looks every 300 s
    })
    .await;
    let backend = app.pipeline.backend.clone();
    let mut ports = backend.ports();
    let slow = Arc::new(SlowCut {
        inner: ports.state.clone(),
        held: AtomicUsize::new(0),
    });
    ports.state = slow.clone();
    app.start_with(ports, move |name| backend.queue(name));

    let started = Instant::now();
    for i in 0..FILES {
        let body = format!(
            "order_id,order_date,customer,email,amount,currency,quantity\n{i},2026-12-07,c{i},c{i}@example.com,1.50,EUR,1\n"
        );
        app.put(&format!("daily/s-{i:05}.csv"), body.as_bytes())
            .await;
    }
    let state = app.pipeline.backend.ports().state;
    let deadline = Duration::from_secs(120);
    loop {
        let ingested: u64 = state
            .counts()
            .await
            .unwrap()
            .iter()
            .filter(|(_, s, _)| *s == FileState::Ingested)
            .map(|(_, _, n)| n)
            .sum();
        if ingested as usize == FILES {
            break;
        }
        let valid: Vec<_> = app
            .pipeline
            .files(None, Some(FileState::Valid))
            .await
            .unwrap();
        assert!(
            started.elapsed() < deadline,
            "{ingested} of {FILES} files INGESTED after {deadline:?}; {} wait VALID with no cut coming \
             (cuts that missed files: {})",
            valid.len(),
            slow.held.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let held = slow.held.load(Ordering::Relaxed);
    eprintln!(
        "stranded: {FILES} files INGESTED in {:.1} s; {held} cut(s) missed files that became VALID meanwhile",
        started.elapsed().as_secs_f64()
    );
    assert!(held > 0, "the race was never provoked");
    app.stop().await;
}
