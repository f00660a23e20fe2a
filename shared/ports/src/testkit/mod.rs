//! Contract tests a backend's adapters run against themselves, so that every backend is held to
//! one statement of each port's behaviour (enable the `testkit` feature in `[dev-dependencies]`).
//! One module per port; each exposes `<port>_contract` functions taking an empty store.

mod audit;
mod extracts;
mod state;

pub use audit::audit_log_contract;
pub use extracts::extract_store_contract;
pub use state::state_store_contract;
