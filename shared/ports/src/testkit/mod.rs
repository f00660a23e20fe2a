//! Contract tests a backend's adapters run against themselves, so that every backend is held to
//! one statement of each port's behaviour (enable the `testkit` feature in `[dev-dependencies]`).
//! One module per port; each exposes a `<port>_contract` function taking an empty store (the
//! queue's takes a factory of fresh queues, one per case).

mod audit;
mod bus;
mod catalog;
mod extracts;
mod jobs;
mod objects;
mod queue;
mod state;

pub use audit::audit_log_contract;
pub use bus::{Subscriber, event_bus_contract};
pub use catalog::{catalog_contract, partition as sales_partition, table as sales_table};
pub use extracts::extract_store_contract;
pub use jobs::{crawler_contract, job_runner_contract};
pub use objects::{ContractBuckets, object_store_contract};
pub use queue::{EmulatorDifferences, QueueUnderTest, queue_contract};
pub use state::{new_file, state_store_contract, validate};
