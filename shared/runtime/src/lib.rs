//! The runtime every service shares.
//!
//! - [`settings`] loads the configuration (TOML file, then `CHOREO_*` environment) and the datasets'
//!   schemas.
//! - [`consumer`] is the loop around a [`Handler`]: receive in batches, bounded concurrency, extend
//!   visibility while a handler runs, retry transient errors, delete only after success, drain on
//!   shutdown.
//! - [`publish`] turns events into messages with their `event_type` and `traceparent` attributes.
//! - [`depths`] reads queue depths at most once per interval (the auditor's pages and gauges).
//! - [`dlq`] lists, reads, redrives and purges the stages' dead-letter queues (the CLI and the
//!   auditor's API share it).
//! - [`extracts`] sends scheduled extracts' ticks and key messages, by hand or on retry.
//! - [`retry`] resumes FAILED files from before the step that failed (the operator's `files retry`).
//! - [`ops`] serves `/metrics`, `/health` and `/ready` at `[telemetry] listen` (every binary and
//!   `choreo up`), within the limits of [`http`].
//! - [`limits`] raises the open-file limit at start (every binary).
//! - [`shutdown`] turns SIGTERM and Ctrl-C into one cancellation signal.
//! - [`trace`] leaves a span in each file's trace for the batch work that moved it.
//! - [`transition`] applies a file transition and emits its event.
//! - [`events`] names what the runtime logs and counts.
//! - `testkit` (feature `testkit`) runs one stage on the local backend on tokio's paused clock, for
//!   the services' own tests.
//! - [`watchdog`] finds long work whose poll timer was lost, by its lapsed lease, on one replica.

pub mod consumer;
pub mod depths;
pub mod dlq;
pub mod events;
pub mod extracts;
pub mod fanout;
pub mod handler;
pub mod http;
pub mod limits;
pub mod ops;
pub mod periodic;
pub mod pipeline;
pub mod publish;
pub mod retry;
pub mod service;
pub mod settings;
pub mod shutdown;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod trace;
pub mod transition;
pub mod watchdog;

pub use consumer::{Consumer, ConsumerSettings};
pub use handler::{Handler, HandlerError};
pub use publish::{Publisher, decode};
pub use service::{Background, ServiceContext, ServiceSpec};
pub use settings::{Settings, SettingsError};
