//! Contract tests a backend's adapters run against themselves, so that every backend is held to
//! one statement of each port's behaviour (enable the `testkit` feature in `[dev-dependencies]`).
//! One module per port; each exposes `<port>_contract` functions taking an empty store.

mod extracts;
mod queue;
mod state;

pub use extracts::extract_store_contract;
pub use queue::{EmulatorDifferences, QueueUnderTest, queue_contract};
pub use state::batch_store_contract;
