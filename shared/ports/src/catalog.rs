use crate::PortError;
use async_trait::async_trait;
use choreo_domain::catalog::{Partition, TableDef};

/// What `ensure_table` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableOutcome {
    Created,
    /// It existed with other columns, format or location, and now has the definition's.
    Updated,
    Unchanged,
}

/// The data catalog, written directly (Glue's CreateTable and BatchCreatePartition; the local
/// `catalog` table): for datasets that declare their schema, so no crawler is needed.
#[async_trait]
pub trait Catalog: Send + Sync {
    /// Makes the table exist as `table` defines it. A table that exists with other columns, types,
    /// format or location is updated to the definition (the declared schema is the truth). A table
    /// that exists with other partition keys is a permanent error: the keys of a table with
    /// partitions cannot change, so its files need another layout or another table. Idempotent.
    async fn ensure_table(&self, table: &TableDef) -> Result<TableOutcome, PortError>;

    /// Adds `partitions` to the table (which `ensure_table` made), each with `table`'s format at its
    /// own folder. Partitions that exist already are not an error, nor changed; returns how many were
    /// new. Any number may be given; empty is a no-op.
    async fn add_partitions(
        &self,
        table: &TableDef,
        partitions: &[Partition],
    ) -> Result<usize, PortError>;
}
