use crate::PortError;
use async_trait::async_trait;
use choreo_domain::{
    Batch, BatchState, FileId, FileRecord, FileState, NewFile, SweepMark, Transition,
};
use chrono::{DateTime, Utc};
use std::time::Duration;

/// The result of a registration (a put-if-absent).
#[derive(Debug, Clone, PartialEq)]
pub enum Registered {
    /// The record was created NEW.
    Created(FileRecord),
    /// A record with this id existed already (a duplicate notification); it is returned unchanged.
    Exists(FileRecord),
}

/// The result of a conditional transition.
#[derive(Debug, Clone, PartialEq)]
pub enum TransitionOutcome {
    /// The stored state was `from`; the record now holds `to` and the new history entry.
    Applied(FileRecord),
    /// The stored state was not `from`: nothing was written. The record as it stands is returned so the
    /// caller can tell a duplicate from a real conflict.
    Conflict(FileRecord),
    /// No record has this id.
    NotFound,
}

/// The result of a conditional batch update.
#[derive(Debug, Clone, PartialEq)]
pub enum BatchOutcome {
    Applied,
    /// The stored batch was not in the expected state, or was updated since it was read (or is
    /// missing: `None`).
    Conflict(Option<Box<Batch>>),
}

/// The result of trying to take a lease.
#[derive(Debug, Clone, PartialEq)]
pub enum LeaseOutcome {
    /// The lease is ours until `expires_at`.
    Acquired { expires_at: DateTime<Utc> },
    /// Someone else holds it.
    Held {
        holder: String,
        expires_at: DateTime<Utc>,
    },
}

/// A lease as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseInfo {
    pub holder: String,
    pub expires_at: DateTime<Utc>,
}

/// Which files to list. Results come in id order, `limit` at a time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileQuery {
    pub dataset: Option<String>,
    pub state: Option<FileState>,
    /// Records a page, at most; 0 means the store's default page (100 on both backends).
    pub limit: usize,
    /// The `next` of the previous page.
    pub after: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `after` to get the next page; `None` on the last one.
    pub next: Option<String>,
}

/// File records, batch records and leases. Every change is a conditional write; the history entry of a
/// transition is written in the same atomic write as the state.
#[async_trait]
pub trait StateStore: Send + Sync {
    /// Creates the record NEW if no record has its id (put-if-absent).
    async fn register(&self, file: NewFile) -> Result<Registered, PortError>;

    async fn get(&self, id: &FileId) -> Result<Option<FileRecord>, PortError>;

    /// Applies `t` if and only if the stored state is `t.from`, appending its history entry in the same
    /// write. A failed condition is `Ok(Conflict)`, never an error.
    async fn transition(&self, t: &Transition) -> Result<TransitionOutcome, PortError>;

    /// Applies each of `ts` as [`StateStore::transition`] does — each conditional on its own file's
    /// state — and returns their outcomes in the same order. For a batch's files: a store may apply
    /// them in one write (the local backend does); by default they go one after another. An error
    /// may leave some applied: retrying finds them done (`Conflict` in their target state).
    async fn transition_all(&self, ts: &[Transition]) -> Result<Vec<TransitionOutcome>, PortError> {
        let mut outcomes = Vec::with_capacity(ts.len());
        for t in ts {
            outcomes.push(self.transition(t).await?);
        }
        Ok(outcomes)
    }

    /// Files filtered by dataset and state, a page at a time.
    async fn list(&self, query: &FileQuery) -> Result<Page<FileRecord>, PortError>;

    /// Every file `query` filters for, following its pages (`query.limit` a page).
    async fn list_all(&self, query: FileQuery) -> Result<Vec<FileRecord>, PortError> {
        let mut query = query;
        let mut out = Vec::new();
        loop {
            let page = self.list(&query).await?;
            out.extend(page.items);
            match page.next {
                Some(next) => query.after = Some(next),
                None => return Ok(out),
            }
        }
    }

    /// How many files each dataset has in each state (states with no file are left out).
    async fn counts(&self) -> Result<Vec<(String, FileState, u64)>, PortError>;

    /// Creates a batch record; `Ok(false)` if one with its id exists.
    async fn create_batch(&self, batch: &Batch) -> Result<bool, PortError>;

    async fn get_batch(&self, id: &str) -> Result<Option<Batch>, PortError>;

    /// Replaces the batch record if and only if its stored state is `expected` and its stored
    /// version is `batch.version` (the one it was read at). When applied, the stored version and
    /// `batch.version` are one more, so the caller can update its copy again.
    async fn update_batch(
        &self,
        batch: &mut Batch,
        expected: BatchState,
    ) -> Result<BatchOutcome, PortError>;

    /// Batches in `state`, oldest first.
    async fn batches_in(&self, state: BatchState) -> Result<Vec<Batch>, PortError>;

    /// Takes the lease `name` for `holder` for `ttl` if it is free, expired, or already `holder`'s (which
    /// renews it). Leases coordinate replicas: one crawl per crawler, one pending window per dataset.
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<LeaseOutcome, PortError>;

    /// Releases the lease if `holder` holds it; otherwise does nothing.
    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), PortError>;

    /// The lease `name` as stored, or `None` if it was never taken or has been released. An expired
    /// lease is returned as it is, its expiry in the past: what that means is the caller's to judge
    /// (a watchdog reads it as a lost timer).
    async fn lease(&self, name: &str) -> Result<Option<LeaseInfo>, PortError>;

    /// Stores the sweep's note on the file if and only if it is still in `mark.state` with a history
    /// of `history_len` entries (it has not moved since the sweep read it). `Ok(false)` if it moved:
    /// nothing is written. A transition clears the note.
    async fn mark_sweep(
        &self,
        id: &FileId,
        history_len: usize,
        mark: &SweepMark,
    ) -> Result<bool, PortError>;
}
