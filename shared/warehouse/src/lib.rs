//! The databases of scheduled extracts: the MySQL source, and the PostgreSQL-protocol warehouse
//! the `warehouse` job loads a batch of an extract's files into.
//!
//! - [`mysql`] streams one key's rows to a CSV (gzip) file in flat memory (the extractor's).
//! - [`plan`] decides what a batch loads: the last file of each business key in the batch (a key
//!   extracted twice before its batch ran loads its newest rows once), the table, the mode. Pure.
//! - [`sql`] writes the statements: identifiers quoted, values bound or (for Redshift's batch API,
//!   which takes none) quoted literals. Pure and unit-tested, for both targets.
//! - [`postgres`] runs a plan over a connection: `COPY ... FROM STDIN` fed from the gzip files a
//!   chunk at a time (flat memory), every statement in one transaction, so a `replace` is never
//!   seen half done and a failed load leaves the table as it was.
//! - [`redshift`] is the same plan as Redshift statements: `COPY ... FROM 's3://...' IAM_ROLE`, run
//!   in one transaction by the Data API's `BatchExecuteStatement`.

pub mod mysql;
pub mod plan;
pub mod postgres;
pub mod redshift;
pub mod sql;

pub use plan::{LoadPlan, PlanFile, plan};

/// Why a load failed, as the batch's reason reads it.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the warehouse is unreachable: {0}")]
    Unreachable(String),
    #[error("warehouse table {0} does not exist")]
    NoTable(String),
    #[error("the warehouse refused the load: {0}")]
    Sql(String),
    #[error("{0}")]
    File(String),
    #[error("{0}")]
    Plan(String),
}

/// What a load did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LoadReport {
    /// Rows deleted first (`replace`).
    pub deleted: u64,
    /// Rows copied in.
    pub copied: u64,
    /// Files loaded.
    pub files: usize,
}
