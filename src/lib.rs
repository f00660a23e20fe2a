//! Choreo: an event-driven ETL pipeline, as a choreography of six small services.
//!
//! Files land in the input bucket. The ingestor registers each one NEW; the validator checks it
//! against its dataset's schema (VALID or INVALID); the quarantine mover takes invalid files to the
//! failed bucket (QUARANTINED); the crawler poller batches valid files and catalogues them
//! (CATALOGED); the transform launcher runs the dataset's job per batch (TRANSFORMING, then INGESTED
//! or FAILED); the auditor records every event. The services talk only through queues, and each state
//! change is a conditional write.
//!
//! Where things live:
//! - `shared/domain`: the file record, the state machine, the message contracts, the configuration.
//! - `shared/ports`: the traits the services see (Queue, EventBus, ObjectStore, StateStore, ...).
//! - `shared/runtime`: the consumer loop, configuration loading, publishing, shutdown.
//! - `shared/local`: the embedded backend (SQLite and directories); `shared/backend` picks one.
//! - `services/*`: one crate per stage, each a handler and a thin binary; `services/extractor` runs
//!   scheduled extracts from MySQL into the pipeline, and `shared/warehouse` loads them.
//! - this crate: [`app::Pipeline`] (all six services in one process), the `choreo` command line, and
//!   [`bench`], the pipeline's end-to-end benchmark; [`terminal::escape`] for what it prints, and
//!   [`progress`] for the bars and lines it shows while it waits.

pub mod app;
pub mod bench;
pub mod bench_transform;
pub mod cli;
pub mod demo;
pub mod extract_cli;
pub mod progress;
pub mod terminal;
