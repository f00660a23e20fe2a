//! The ports: one narrow trait per external system, each method's contract in its rustdoc.
//!
//! Handlers see only these traits, never an AWS or SQLite type. `choreo-local` implements them on
//! SQLite and directories; the AWS backend on the official SDKs. Every method returns [`PortError`],
//! whose [`PortErrorKind`] is the one place that says whether retrying can help. Expected conflicts — a
//! failed condition, a file already registered — are outcomes in the `Ok` value, not errors.

mod audit;
mod bus;
mod catalog;
mod error;
mod extracts;
mod jobs;
mod notify;
mod objects;
mod queue;
mod state;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use audit::{AuditEntry, AuditLog};
pub use bus::EventBus;
pub use catalog::{Catalog, TableOutcome};
pub use error::{PortError, PortErrorKind};
pub use extracts::{EndedUnit, ExtractStore, NoExtractStore, UnitClaim, UnitEnd};
pub use jobs::{CrawlStart, CrawlStatus, Crawler, JobRunner, JobStart, JobStatus};
pub use notify::Notifier;
pub use objects::{ObjectMeta, ObjectReader, ObjectStore};
pub use queue::{OutgoingMessage, PeekedMessage, Queue, QueueDepth, QueueLookup, ReceivedMessage};
pub use state::{
    BatchOutcome, FileQuery, LeaseInfo, LeaseOutcome, Page, Registered, StateStore,
    TransitionOutcome,
};

use std::sync::Arc;

/// Everything a backend provides, as the services take it.
#[derive(Clone)]
pub struct Ports {
    pub bus: Arc<dyn EventBus>,
    pub objects: Arc<dyn ObjectStore>,
    pub state: Arc<dyn StateStore>,
    pub crawler: Arc<dyn Crawler>,
    pub catalog: Arc<dyn Catalog>,
    pub jobs: Arc<dyn JobRunner>,
    pub audit: Arc<dyn AuditLog>,
    pub queues: Arc<dyn QueueLookup>,
    pub notifier: Arc<dyn Notifier>,
    /// The keys table, ticks and units of scheduled extracts.
    pub extracts: Arc<dyn ExtractStore>,
}
