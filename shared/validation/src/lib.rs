//! Streaming validation of a CSV or JSON Lines object, plain, gzip or zstd,
//! against a Frictionless Table Schema (<https://specs.frictionlessdata.io/table-schema/>).
//!
//! [`validate`] is the one entry point. It takes any `std::io::Read` and reads
//! it once, so memory stays flat whatever the input size. The pieces, bottom up:
//!
//! - `reader` — the guard between the caller's bytes and the parsers: gzip
//!   (`MultiGzDecoder`) and zstd (multi-frame, window capped at
//!   [`ZSTD_MAX_WINDOW_LOG`]) decoding with decompression-bomb limits, BOM
//!   stripping, and (for JSON Lines) a line-length bound. Hostile input ends
//!   in a fatal reason, never a panic or unbounded buffering.
//! - `csv` — an RFC 4180 parser of our own (a SIMD bitmap of the structural
//!   bytes, cells borrowed from one reused buffer, UTF-8 checked once per
//!   buffer, records handed on in groups), record length bounded, quoting as
//!   `csv_core` and Python's `csv`;
//!   optionally split over two threads ([`Limits::threads`]). `jsonl` — one
//!   object per line. Both map the header (or JSON keys) to schema fields and
//!   report structural problems (missing/extra/duplicate columns, ragged and
//!   blank rows, bad JSON).
//! - `types` — casting a cell to its field's type and format, with
//!   allocation-free fast paths for the default formats.
//! - `check` — the schema compiled once (casters, bounds, patterns, enums)
//!   and the per-row checks: missing values, types, constraints, `unique`
//!   and `primaryKey`. A cell takes a quick path that only accepts (typed
//!   bounds, no allocation) and falls back to the general path, which
//!   reports, whenever it cannot. CSV rows are screened a group and a column
//!   at a time before that.
//! - `words` — small string sets (missing values, enums, booleans).
//! - `pattern` — anchored regexes, with a backtracking-free matcher for the
//!   simple patterns most schemas use.
//! - `unique` — the memory-bounded state for `unique` and `primaryKey`.
//! - [`schema`] — the Table Schema as serde types, checked on load.
//! - [`cast`] — [`Casts`]: the same checks one cell at a time, typed, for
//!   callers that keep rows (the built-in transform).
//! - [`report`] — the [`Report`]: counts of every error by kind, the first
//!   [`Limits::max_errors_kept`] in detail, a fatal reason, and a one-line
//!   [`Report::summary`].
//!
//! # Memory
//!
//! A run holds: the read buffer (256 KiB, growing only to hold a record
//! longer than that, up to [`Limits::max_line_bytes`]) and its structural
//! bitmap (an eighth of its size); with two threads, a
//! queue of at most four such buffers and their cell offsets; the gzip or
//! zstd decoder state (zstd: at most a 2^23 = 8 MiB window); the first
//! [`Limits::max_errors_kept`] errors (values and messages clipped); and
//! the uniqueness table.
//!
//! `unique` and `primaryKey` cost 8 bytes per distinct value, for all such
//! constraints together, in one open-addressing table of 64-bit keys sized
//! (a power of two of slots, at most 80% full) for
//! [`Limits::max_unique_tracked`] values: by default 1,500,000 values, 2^21
//! slots, 16 MiB at most, committed page by page as it fills. An integer
//! column rising in a constant step (sequential ids) is tracked as a run and
//! costs nothing. Past the bound, uniqueness is no longer checked and
//! [`Report::notes`] says so. With 64-bit keys a false repeat is possible but
//! unlikely: about n^2 / 2^65 for n values (1 in 16 million at the bound).
//!
//! All together a run stays under 32 MB of resident memory however large
//! the input (`tests/memory.rs` checks it on a generated 1 GB stream).

pub mod cast;
mod cell;
mod check;
mod csv;
mod jsonl;
mod pattern;
mod reader;
pub mod report;
mod types;
mod unique;
mod words;

use std::io::Read;

use serde::{Deserialize, Serialize};

pub use cast::{Cast, Casts};
pub use reader::{Decoded, RATIO_GRACE_BYTES, ZSTD_MAX_WINDOW_LOG};
pub use report::{ErrorKind, MAX_VALUE_CHARS, Report, RowError};
// The schema and the formats are data of their own crate, which the domain uses without the engine.
pub use check::SchemaCheck;
pub use choreo_schema as schema;
pub use choreo_schema::{
    Compression, Constraints, CsvDialect, Field, FieldType, Format, PrimaryKey, SchemaError,
    TableSchema,
};

use check::Checker;
use reader::{Guard, Syntax};
use report::Collector;

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
    /// Distinct values tracked for `unique` and `primaryKey`, all of them
    /// together. Each costs 8 bytes in one hash table sized for this many at
    /// most 80% full (a power of two of slots: 2^21 slots = 16 MiB at the
    /// default). Integer values that rise in a constant step (sequential ids)
    /// cost nothing and do not count. Beyond the bound uniqueness is no
    /// longer checked and [`Report::notes`] says so. Default 1,500,000.
    pub max_unique_tracked: usize,
    /// Threads for CSV: with 2, this thread reads, decompresses and splits
    /// records while a second one checks them (a bounded queue of a few
    /// 256 KiB buffers between them); with 1, this thread does everything.
    /// Default: 1, for callers that validate several files at once (the
    /// validator service): a second thread pays off only with a free core
    /// (benchmark: 739 MB/s with 2 vs 482 with 1 on an idle 2-core machine,
    /// slower than 1 when the other core is busy). `choreo validate` uses 2.
    /// JSON Lines uses one.
    pub threads: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line_bytes: 1024 * 1024,
            max_expanded_bytes: 64 * 1024 * 1024 * 1024,
            max_ratio: 1000,
            max_errors_kept: 20,
            max_unique_tracked: 1_500_000,
            threads: 1,
        }
    }
}

/// Validate `input` (read to the end, once) against `schema`.
///
/// Never panics on bad input and never buffers more than a few buffers'
/// worth of it (a record is bounded by [`Limits::max_line_bytes`]); problems
/// end up in the [`Report`]. `input` is read on the calling thread (it need
/// not be `Send`); with [`Limits::threads`] = 2, CSV rows are checked on a
/// second, scoped thread.
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
            let guard = Guard::new(input, compression, Syntax::Raw, limits);
            csv::run(
                guard,
                dialect,
                limits.max_line_bytes,
                limits.threads,
                &mut checker,
                &mut out,
            )
        }
        Format::JsonLines => {
            let guard = Guard::new(input, compression, Syntax::Lines, limits);
            jsonl::run(guard, &mut checker, &mut out)
        }
    };
    out.finish(rows, bytes)
}
