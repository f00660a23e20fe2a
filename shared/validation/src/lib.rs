//! Streaming validation of a CSV or JSON Lines object, plain or gzip, against
//! a Frictionless Table Schema (<https://specs.frictionlessdata.io/table-schema/>).
//!
//! [`validate`] is the one entry point. It takes any `std::io::Read` and reads
//! it once, row by row, so memory stays flat whatever the input size. The
//! pieces, bottom up:
//!
//! - `reader` — the guard between the caller's bytes and the
//!   parsers: gzip decoding (`MultiGzDecoder`) with decompression-bomb limits,
//!   BOM stripping, and a record-length bound (with CSV quote tracking, which
//!   also detects an unterminated quote at EOF). Hostile input ends in a
//!   fatal reason, never a panic or unbounded buffering.
//! - `csv` / `jsonl` — the two formats: records become rows of cells, the
//!   header (or JSON keys) map to schema fields, and structural problems
//!   (missing/extra/duplicate columns, ragged and blank rows, bad JSON) are
//!   reported.
//! - `types` — casting a cell to its field's type and format.
//! - `check` — the schema compiled once (casters, bounds, anchored regexes,
//!   enums) and the per-row checks: missing values, types, constraints,
//!   `unique` and `primaryKey` (tracked as 64-bit hashes, bounded by
//!   [`Limits::max_unique_tracked`]).
//! - [`schema`] — the Table Schema as serde types, checked on load.
//! - [`report`] — the [`Report`]: counts of every error by kind, the first
//!   [`Limits::max_errors_kept`] in detail, a fatal reason, and a one-line
//!   [`Report::summary`].

mod check;
mod csv;
mod jsonl;
mod reader;
pub mod report;
pub mod schema;
mod types;

use std::io::Read;

use serde::{Deserialize, Serialize};

pub use reader::RATIO_GRACE_BYTES;
pub use report::{ErrorKind, MAX_VALUE_CHARS, Report, RowError};
pub use schema::{Constraints, Field, FieldType, PrimaryKey, SchemaError, TableSchema};

use check::Checker;
use reader::{Guard, Syntax};
use report::Collector;

/// How the object's bytes are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
}

/// The object's format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Format {
    Csv(CsvDialect),
    JsonLines,
}

/// CSV dialect. Quotes are RFC 4180 style (doubled to escape).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CsvDialect {
    pub delimiter: u8,
    pub quote: u8,
    /// Whether the first row names the columns.
    pub header: bool,
}

impl Default for CsvDialect {
    fn default() -> Self {
        CsvDialect {
            delimiter: b',',
            quote: b'"',
            header: true,
        }
    }
}

/// Bounds that keep hostile input from costing unbounded time or memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Longest line (CSV record, quoted newlines included) in bytes. Default 1 MiB.
    pub max_line_bytes: usize,
    /// Most bytes a compressed input may expand to. Default 64 GiB.
    pub max_expanded_bytes: u64,
    /// Largest expanded/compressed ratio once [`RATIO_GRACE_BYTES`] (10 MiB)
    /// have been expanded. Default 1000.
    pub max_ratio: u64,
    /// Errors kept in detail in [`Report::errors`]. Default 20.
    pub max_errors_kept: usize,
    /// Distinct values tracked for `unique` and `primaryKey`, all fields
    /// together (8 bytes each, plus hash-table overhead). Beyond it uniqueness
    /// is no longer checked and [`Report::notes`] says so. Default 4,000,000 (≈ 32 MB).
    pub max_unique_tracked: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line_bytes: 1024 * 1024,
            max_expanded_bytes: 64 * 1024 * 1024 * 1024,
            max_ratio: 1000,
            max_errors_kept: 20,
            max_unique_tracked: 4_000_000,
        }
    }
}

/// Validate `input` (read to the end, once) against `schema`.
///
/// Never panics on bad input and never buffers more than one record (bounded
/// by [`Limits::max_line_bytes`]); problems end up in the [`Report`].
pub fn validate<R: Read>(
    input: R,
    format: &Format,
    compression: Compression,
    schema: &TableSchema,
    limits: &Limits,
) -> Report {
    let mut out = Collector::new(limits.max_errors_kept);
    let mut checker = match Checker::new(schema, limits.max_unique_tracked) {
        Ok(c) => c,
        Err(e) => {
            out.fatal(
                ErrorKind::InvalidSchema,
                None,
                format!("invalid schema: {e}"),
            );
            return out.finish(0, 0);
        }
    };
    let (rows, bytes) = match format {
        Format::Csv(dialect) => {
            let syntax = Syntax::Csv {
                quote: dialect.quote,
                delimiter: dialect.delimiter,
            };
            let guard = Guard::new(input, compression, syntax, limits);
            csv::run(guard, dialect, &mut checker, &mut out)
        }
        Format::JsonLines => {
            let guard = Guard::new(input, compression, Syntax::Lines, limits);
            jsonl::run(guard, &mut checker, &mut out)
        }
    };
    out.finish(rows, bytes)
}
