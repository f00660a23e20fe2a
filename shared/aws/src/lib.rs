//! The AWS backend: every port on the official SDKs.
//!
//! - `client.rs` builds the SDK clients from the standard chain (and counts API calls);
//!   `error.rs` decides which SDK errors are worth retrying.
//! - `sqs.rs` (Queue), `sns.rs` (EventBus), `s3.rs` (ObjectStore), `dynamo/` (StateStore and
//!   AuditLog), `keys.rs` (ExtractStore: the keys table of scheduled extracts), `glue.rs` (Crawler and JobRunner), `catalog.rs` (Catalog, on the Glue Data
//!   Catalog): one adapter per service.
//! - `bootstrap.rs` creates every resource the pipeline needs, idempotently; `secrets.rs` keeps the
//!   mask salt in Secrets Manager for the Glue job.
//! - `moto.rs` starts an emulator for tests.

mod backend;
pub mod bootstrap;
pub mod catalog;
pub mod client;
pub mod cost;
pub mod dynamo;
pub mod error;
pub mod events;
mod gather;
pub mod glue;
pub mod keys;
pub mod messaging_setup;
pub mod moto;
pub mod s3;
pub mod schedules;
pub mod secrets;
pub mod sns;
pub mod sqs;

pub use backend::AwsBackend;
pub use client::{AwsClients, CallCounter};
