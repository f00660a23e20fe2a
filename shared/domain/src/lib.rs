//! Choreo's domain, free of I/O.
//!
//! A file that lands in the input bucket becomes a [`FileRecord`]. Each stage moves it one step through
//! the [`FileState`] machine (`state.rs`, the only place that knows which moves are legal) by asking the
//! state store for a conditional [`Transition`]. Stages talk through [`Envelope`]s of [`Event`]s
//! (`event.rs`, the message contracts). Files are catalogued and transformed in batches, whose
//! lifecycle — windows, cuts, shared crawls, job runs — is the pure decision table of `lifecycle.rs`. Datasets — which keys they own, their format and schema, their
//! crawler and job — are described by [`config`]; a directly catalogued dataset's table, by [`catalog`].
//! Which keys the pipeline takes at all is one predicate, [`key::check`]. Scheduled extracts — their
//! schedules, business keys, ticks and per-key units — are [`extract`].

pub mod alert;
pub mod batch;
pub mod catalog;
pub mod clock;
pub mod config;
pub mod event;
pub mod extract;
pub mod job_args;
pub mod key;
pub mod lifecycle;
pub mod record;
pub mod secret;
pub mod state;

pub use alert::{Alert, AlertKind};
pub use batch::{Batch, BatchId, BatchState, Manifest, ManifestFile};
pub use config::{Config, DatasetConfig};
pub use event::{CONTRACT_VERSION, Envelope, Event, EventKind};
pub use job_args::JobArgs;
pub use key::KeyRefusal;
pub use record::{FileId, FileRecord, HistoryEntry, NewFile, Pin, SweepMark, Transition};
pub use secret::Secret;
pub use state::{FileState, IllegalTransition, Progress, Stage};

/// Dataset name given to files whose key matches no configured dataset; the validator rejects them.
pub const UNMATCHED_DATASET: &str = "_unmatched";
