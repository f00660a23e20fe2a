//! The outcome of one validation run: [`Report`], its [`RowError`]s and their
//! [`ErrorKind`]s, plus the `Collector` that builds a report while rows
//! stream past (counting every error, keeping only the first few in detail).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest cell value (in chars) copied into a [`RowError`].
pub const MAX_VALUE_CHARS: usize = 100;

/// What went wrong. Serialized (and used as the `error_counts` key) in
/// snake_case, e.g. `ragged_row`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Fatal: no bytes (after decompression), or no rows at all.
    EmptyFile,
    /// Fatal: the text is not UTF-8.
    InvalidUtf8,
    /// Fatal: the gzip or zstd stream is corrupt or truncated.
    CorruptCompression,
    /// Fatal: decompression expanded beyond `Limits::max_expanded_bytes` or `Limits::max_ratio`.
    DecompressionBomb,
    /// Fatal: a line (a CSV record) is longer than `Limits::max_line_bytes`.
    LineTooLong,
    /// Fatal: the file ends inside a quoted CSV field.
    UnterminatedQuote,
    /// Fatal: the reader itself failed (not a property of the content).
    Io,
    /// Fatal: the schema handed to `validate` is not usable.
    InvalidSchema,
    /// Fatal: the CSV dialect handed to `validate` is not usable.
    InvalidDialect,
    MissingHeader,
    MissingColumn,
    ExtraColumn,
    DuplicateColumn,
    RaggedRow,
    BlankRow,
    TypeError,
    Required,
    Unique,
    PrimaryKey,
    Minimum,
    Maximum,
    MinLength,
    MaxLength,
    Pattern,
    Enum,
    BadJson,
    NotAnObject,
}

/// How many error kinds there are (`NotAnObject` is the last).
const KINDS: usize = ErrorKind::NotAnObject as usize + 1;

impl ErrorKind {
    /// Every kind, in declaration order.
    pub const ALL: [ErrorKind; KINDS] = {
        use ErrorKind::*;
        [
            EmptyFile,
            InvalidUtf8,
            CorruptCompression,
            DecompressionBomb,
            LineTooLong,
            UnterminatedQuote,
            Io,
            InvalidSchema,
            InvalidDialect,
            MissingHeader,
            MissingColumn,
            ExtraColumn,
            DuplicateColumn,
            RaggedRow,
            BlankRow,
            TypeError,
            Required,
            Unique,
            PrimaryKey,
            Minimum,
            Maximum,
            MinLength,
            MaxLength,
            Pattern,
            Enum,
            BadJson,
            NotAnObject,
        ]
    };

    /// The snake_case name, as serialized.
    pub fn as_str(self) -> &'static str {
        use ErrorKind::*;
        match self {
            EmptyFile => "empty_file",
            InvalidUtf8 => "invalid_utf8",
            CorruptCompression => "corrupt_compression",
            DecompressionBomb => "decompression_bomb",
            LineTooLong => "line_too_long",
            UnterminatedQuote => "unterminated_quote",
            Io => "io",
            InvalidSchema => "invalid_schema",
            InvalidDialect => "invalid_dialect",
            MissingHeader => "missing_header",
            MissingColumn => "missing_column",
            ExtraColumn => "extra_column",
            DuplicateColumn => "duplicate_column",
            RaggedRow => "ragged_row",
            BlankRow => "blank_row",
            TypeError => "type_error",
            Required => "required",
            Unique => "unique",
            PrimaryKey => "primary_key",
            Minimum => "minimum",
            Maximum => "maximum",
            MinLength => "min_length",
            MaxLength => "max_length",
            Pattern => "pattern",
            Enum => "enum",
            BadJson => "bad_json",
            NotAnObject => "not_an_object",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem, located as precisely as the format allows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RowError {
    /// 1-based data row (the header is not counted); `None` for file- or header-level problems.
    pub row: Option<u64>,
    /// The schema field (or header column) concerned, if any.
    pub field: Option<String>,
    pub kind: ErrorKind,
    pub message: String,
    /// The offending cell, truncated to [`MAX_VALUE_CHARS`] chars.
    pub value: Option<String>,
}

/// The result of [`crate::validate`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// True iff there are no errors and no fatal reason.
    pub valid: bool,
    /// Data rows read (excluding the header).
    pub rows: u64,
    /// Bytes read after decompression.
    pub bytes: u64,
    /// Every error counted by kind (the snake_case name), including a fatal one.
    pub error_counts: BTreeMap<String, u64>,
    /// The first `Limits::max_errors_kept` errors in detail.
    pub errors: Vec<RowError>,
    /// Why the file could not be read to the end, if it could not.
    pub fatal: Option<String>,
    /// Remarks that are not errors, e.g. that uniqueness stopped being checked.
    #[serde(default)]
    pub notes: Vec<String>,
}

impl Report {
    /// Total number of errors of all kinds.
    pub fn error_total(&self) -> u64 {
        self.error_counts.values().sum()
    }

    /// How many errors of `kind` were counted.
    pub fn count(&self, kind: ErrorKind) -> u64 {
        self.error_counts.get(kind.as_str()).copied().unwrap_or(0)
    }

    /// One specific line for the file record, e.g. `valid: 120 rows`,
    /// `invalid: ragged_row: row 4 has 3 cells, header has 5 (and 2 more errors)`,
    /// or `invalid: corrupt gzip stream: ... (after 10 rows)`.
    pub fn summary(&self) -> String {
        let rows = plural(self.rows, "row");
        if let Some(fatal) = &self.fatal {
            return if self.rows > 0 {
                format!("invalid: {fatal} (after {rows})")
            } else {
                format!("invalid: {fatal}")
            };
        }
        if self.valid {
            return format!("valid: {rows}");
        }
        let total = self.error_total();
        match self.errors.first() {
            Some(first) => {
                let more = total.saturating_sub(1);
                if more == 0 {
                    format!("invalid: {}: {}", first.kind, first.message)
                } else {
                    format!(
                        "invalid: {}: {} (and {})",
                        first.kind,
                        first.message,
                        plural(more, "more error")
                    )
                }
            }
            None => format!("invalid: {}", plural(total, "error")),
        }
    }
}

fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// Truncate a value to [`MAX_VALUE_CHARS`] chars for a [`RowError`].
pub(crate) fn truncate_value(s: &str) -> String {
    clip(s).to_owned()
}

/// The first [`MAX_VALUE_CHARS`] chars of `s`, for values shown in messages.
pub(crate) fn clip(s: &str) -> &str {
    if s.len() <= MAX_VALUE_CHARS {
        return s; // no more chars than bytes
    }
    match s.char_indices().nth(MAX_VALUE_CHARS) {
        Some((at, _)) => &s[..at],
        None => s,
    }
}

/// [`clip`] for a `Cow`, without copying a borrowed one.
pub(crate) fn clip_cow(s: Cow<'_, str>) -> Cow<'_, str> {
    match s {
        Cow::Borrowed(b) => Cow::Borrowed(clip(b)),
        Cow::Owned(o) if o.len() <= MAX_VALUE_CHARS || o.chars().nth(MAX_VALUE_CHARS).is_none() => {
            Cow::Owned(o)
        }
        Cow::Owned(o) => Cow::Owned(clip(&o).to_owned()),
    }
}

/// Longest message (in chars) kept in a [`RowError`].
const MAX_MESSAGE_CHARS: usize = 500;

/// Builds a [`Report`] while rows stream: counts every error, keeps the
/// first `max_kept` in detail, and only formats messages it keeps.
#[derive(Debug)]
pub(crate) struct Collector {
    /// Errors counted, by `ErrorKind as usize`.
    counts: [u64; KINDS],
    errors: Vec<RowError>,
    max_kept: usize,
    fatal: Option<String>,
    notes: Vec<String>,
}

impl Collector {
    pub(crate) fn new(max_kept: usize) -> Self {
        Collector {
            counts: [0; KINDS],
            errors: Vec::new(),
            max_kept,
            fatal: None,
            notes: Vec::new(),
        }
    }

    /// Count one error; keep it (building its message) only if there is room.
    pub(crate) fn push(
        &mut self,
        kind: ErrorKind,
        row: Option<u64>,
        field: Option<&str>,
        value: Option<&str>,
        message: impl FnOnce() -> String,
    ) {
        self.counts[kind as usize] += 1;
        if self.errors.len() < self.max_kept {
            let mut message = message();
            if let Some((at, _)) = message.char_indices().nth(MAX_MESSAGE_CHARS) {
                message.truncate(at);
                message.push('…');
            }
            self.errors.push(RowError {
                row,
                field: field.map(truncate_value),
                kind,
                message,
                value: value.map(truncate_value),
            });
        }
    }

    /// How many more errors would be kept in detail.
    pub(crate) fn room(&self) -> usize {
        self.max_kept.saturating_sub(self.errors.len())
    }

    /// Count `n` errors of `kind` without details.
    pub(crate) fn count_only(&mut self, kind: ErrorKind, n: u64) {
        if n > 0 {
            self.counts[kind as usize] += n;
        }
    }

    /// Record the reason the file could not be read to the end (first one wins).
    pub(crate) fn fatal(&mut self, kind: ErrorKind, row: Option<u64>, message: String) {
        if self.fatal.is_some() {
            return;
        }
        self.push(kind, row, None, None, || message.clone());
        self.fatal = Some(message);
    }

    pub(crate) fn has_fatal(&self) -> bool {
        self.fatal.is_some()
    }

    pub(crate) fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    pub(crate) fn finish(self, rows: u64, bytes: u64) -> Report {
        Report {
            valid: self.counts.iter().all(|&n| n == 0) && self.fatal.is_none(),
            rows,
            bytes,
            error_counts: ErrorKind::ALL
                .iter()
                .filter(|&&k| self.counts[k as usize] > 0)
                .map(|&k| (k.as_str().to_owned(), self.counts[k as usize]))
                .collect(),
            errors: self.errors,
            fatal: self.fatal,
            notes: self.notes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collector_counts_all_but_keeps_first_n() {
        let mut c = Collector::new(2);
        for i in 1..=5 {
            c.push(ErrorKind::TypeError, Some(i), Some("a"), Some("x"), || {
                format!("bad {i}")
            });
        }
        let r = c.finish(5, 10);
        assert!(!r.valid);
        assert_eq!(r.count(ErrorKind::TypeError), 5);
        assert_eq!(r.errors.len(), 2);
        assert_eq!(r.errors[1].row, Some(2));
        assert_eq!(
            r.summary(),
            "invalid: type_error: bad 1 (and 4 more errors)"
        );
    }

    #[test]
    fn summary_valid_and_fatal() {
        let r = Collector::new(20).finish(1, 3);
        assert_eq!(r.summary(), "valid: 1 row");
        let mut c = Collector::new(20);
        c.fatal(ErrorKind::EmptyFile, None, "empty file".into());
        let r = c.finish(0, 0);
        assert!(!r.valid);
        assert_eq!(r.summary(), "invalid: empty file");
        assert_eq!(r.count(ErrorKind::EmptyFile), 1);
    }

    #[test]
    fn values_are_truncated_to_100_chars() {
        let long = "é".repeat(150);
        let t = truncate_value(&long);
        assert_eq!(t.chars().count(), MAX_VALUE_CHARS);
        assert_eq!(truncate_value("short"), "short");
    }

    #[test]
    fn all_lists_every_kind_in_order() {
        for (i, k) in ErrorKind::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i, "{k}");
        }
        // Exhaustive: a new kind fails to compile here until listed in ALL.
        let last = |k: ErrorKind| match k {
            ErrorKind::NotAnObject => true,
            ErrorKind::EmptyFile
            | ErrorKind::InvalidUtf8
            | ErrorKind::CorruptCompression
            | ErrorKind::DecompressionBomb
            | ErrorKind::LineTooLong
            | ErrorKind::UnterminatedQuote
            | ErrorKind::Io
            | ErrorKind::InvalidSchema
            | ErrorKind::InvalidDialect
            | ErrorKind::MissingHeader
            | ErrorKind::MissingColumn
            | ErrorKind::ExtraColumn
            | ErrorKind::DuplicateColumn
            | ErrorKind::RaggedRow
            | ErrorKind::BlankRow
            | ErrorKind::TypeError
            | ErrorKind::Required
            | ErrorKind::Unique
            | ErrorKind::PrimaryKey
            | ErrorKind::Minimum
            | ErrorKind::Maximum
            | ErrorKind::MinLength
            | ErrorKind::MaxLength
            | ErrorKind::Pattern
            | ErrorKind::Enum
            | ErrorKind::BadJson => false,
        };
        assert!(last(ErrorKind::ALL[KINDS - 1]));
        assert_eq!(ErrorKind::ALL.len(), 27);
    }

    #[test]
    fn kinds_serialize_snake_case() {
        let s = serde_json::to_string(&ErrorKind::DecompressionBomb).unwrap();
        assert_eq!(s, "\"decompression_bomb\"");
        assert_eq!(ErrorKind::NotAnObject.as_str(), "not_an_object");
    }
}
