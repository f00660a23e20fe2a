//! CSV: RFC 4180 records through the `csv` crate (reading `ByteRecord`s into
//! one reused buffer; each record is UTF-8-checked once and its cells are
//! borrowed slices), the header mapped to schema fields by name (or cells to
//! fields by position when there is no header), then each row handed to the
//! [`Checker`]. The [`Guard`] underneath bounds record length and reports
//! an unterminated quote, which the `csv` crate would accept silently.

use std::collections::HashSet;
use std::io::Read;

use ::csv::{ByteRecord, ReaderBuilder};

use crate::CsvDialect;
use crate::check::{Cell, Checker};
use crate::reader::{Fatal, Guard};
use crate::report::{Collector, ErrorKind, clip};
use crate::schema::FieldType;

/// How columns map to fields.
struct Layout {
    /// For each schema field, its column (None: absent from the file).
    field_col: Vec<Option<usize>>,
    /// The expected number of cells per row, and what set it.
    width: usize,
    width_from: &'static str,
}

fn read_record<R: Read>(
    rdr: &mut ::csv::Reader<Guard<R>>,
    rec: &mut ByteRecord,
) -> Result<bool, Fatal> {
    rdr.read_byte_record(rec).map_err(|e| match e.into_kind() {
        ::csv::ErrorKind::Io(io) => Fatal::of(&io)
            .cloned()
            .unwrap_or_else(|| Fatal::new(ErrorKind::Io, format!("read error: {io}"))),
        other => Fatal::new(ErrorKind::Io, format!("CSV error: {other:?}")),
    })
}

/// The record as one `&str` (its cells concatenated), or a fatal naming the line.
fn record_text(rec: &ByteRecord) -> Result<&str, Fatal> {
    std::str::from_utf8(rec.as_slice()).map_err(|e| {
        let start = rec.position().map_or(1, |p| p.line());
        let before = &rec.as_slice()[..e.valid_up_to()];
        let line = start + before.iter().filter(|&&b| b == b'\n').count() as u64;
        Fatal::new(
            ErrorKind::InvalidUtf8,
            format!("invalid UTF-8 at line {line}"),
        )
    })
}

/// Cell `i` of a record whose text is `all`.
fn cell<'a>(rec: &ByteRecord, all: &'a str, i: usize) -> Option<&'a str> {
    rec.range(i).and_then(|r| all.get(r))
}

/// Whether a header row that names no field looks like a data row instead.
fn looks_like_data(checker: &Checker, names: &[&str]) -> bool {
    names.iter().enumerate().any(|(i, name)| {
        name.is_empty()
            || name.trim().parse::<f64>().is_ok()
            || checker.fields.get(i).is_some_and(|f| {
                !matches!(f.field_type(), FieldType::String | FieldType::Any)
                    && f.cast(name).is_some()
            })
    })
}

/// Map header names to fields, reporting header problems. `Some(layout)`,
/// plus whether the header row is really data (a missing header).
fn map_header(checker: &Checker, names: &[&str], out: &mut Collector) -> (Layout, bool) {
    let n = checker.fields.len();
    let matched = names.iter().any(|name| checker.field_index(name).is_some());
    if !matched && looks_like_data(checker, names) {
        let preview: String = names.join(",").chars().take(60).collect();
        out.push(ErrorKind::MissingHeader, None, None, Some(&preview), || {
            format!(
                "header is missing: the first row ({preview:?}) names no schema field and looks like data"
            )
        });
        let layout = Layout {
            field_col: (0..n).map(Some).collect(),
            width: n,
            width_from: "schema has",
        };
        return (layout, true);
    }
    let mut field_col = vec![None; n];
    let mut seen = HashSet::with_capacity(names.len());
    for (col, &name) in names.iter().enumerate() {
        let shown = clip(name);
        if !seen.insert(name) {
            out.push(ErrorKind::DuplicateColumn, None, Some(name), None, || {
                format!(
                    "column {shown:?} appears more than once in the header (again as column {})",
                    col + 1
                )
            });
            continue;
        }
        match checker.field_index(name) {
            Some(fi) => field_col[fi] = Some(col),
            None => out.push(ErrorKind::ExtraColumn, None, Some(name), None, || {
                format!("column {shown:?} (column {}) is not in the schema", col + 1)
            }),
        }
    }
    for (f, col) in checker.fields.iter().zip(&field_col) {
        if col.is_none() {
            out.push(ErrorKind::MissingColumn, None, Some(&f.name), None, || {
                format!("field {:?} is missing from the header", f.name)
            });
        }
    }
    let layout = Layout {
        field_col,
        width: names.len(),
        width_from: "header has",
    };
    (layout, false)
}

/// Check one data row; `Err` for a fatal (invalid UTF-8).
fn check_record(
    rec: &ByteRecord,
    row: u64,
    layout: &Layout,
    checker: &mut Checker,
    out: &mut Collector,
) -> Result<(), Fatal> {
    let all = record_text(rec)?;
    let len = rec.len();
    if len != layout.width {
        out.push(ErrorKind::RaggedRow, Some(row), None, None, || {
            format!(
                "row {row} has {len} cells, {} {}",
                layout.width_from, layout.width
            )
        });
    }
    if (0..len).all(|i| cell(rec, all, i).is_none_or(|c| checker.is_missing(c))) {
        out.push(ErrorKind::BlankRow, Some(row), None, None, || {
            format!("row {row} is blank")
        });
        return Ok(());
    }
    checker.check_row(
        row,
        |fi| match layout.field_col[fi].and_then(|col| cell(rec, all, col)) {
            Some(text) => Cell::Text(text),
            None => Cell::Skip,
        },
        out,
    );
    Ok(())
}

/// Count `n` empty lines as blank rows (in bulk past the detailed ones).
fn blank_lines(n: u64, rows: &mut u64, out: &mut Collector) {
    let detailed = n.min(out.room() as u64);
    for _ in 0..detailed {
        *rows += 1;
        let row = *rows;
        out.push(ErrorKind::BlankRow, Some(row), None, None, || {
            format!("row {row} is blank (an empty line)")
        });
    }
    out.count_only(ErrorKind::BlankRow, n - detailed);
    *rows += n - detailed;
}

/// Validate CSV from `guard`; returns (data rows, bytes).
pub(crate) fn run<R: Read>(
    guard: Guard<R>,
    dialect: &CsvDialect,
    checker: &mut Checker,
    out: &mut Collector,
) -> (u64, u64) {
    let mut rdr = ReaderBuilder::new()
        .delimiter(dialect.delimiter)
        .quote(dialect.quote)
        .double_quote(true)
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(64 * 1024)
        .from_reader(guard);
    let mut rec = ByteRecord::new();
    let mut rows = 0u64;
    let mut any_record = false;
    let mut records = 0u64;
    let result = (|| -> Result<(), Fatal> {
        if !read_record(&mut rdr, &mut rec)? {
            return Ok(());
        }
        any_record = true;
        let layout = if dialect.header {
            // Empty lines before the header are not rows.
            rdr.get_mut().take_empty_lines_before(0);
            let all = record_text(&rec)?;
            let names: Vec<&str> = (0..rec.len()).filter_map(|i| cell(&rec, all, i)).collect();
            let (layout, header_is_data) = map_header(checker, &names, out);
            if header_is_data {
                rows += 1;
                check_record(&rec, rows, &layout, checker, out)?;
            }
            layout
        } else {
            let layout = Layout {
                field_col: (0..checker.fields.len()).map(Some).collect(),
                width: checker.fields.len(),
                width_from: "schema has",
            };
            blank_lines(rdr.get_mut().take_empty_lines_before(0), &mut rows, out);
            rows += 1;
            check_record(&rec, rows, &layout, checker, out)?;
            layout
        };
        records += 1;
        while read_record(&mut rdr, &mut rec)? {
            blank_lines(
                rdr.get_mut().take_empty_lines_before(records),
                &mut rows,
                out,
            );
            records += 1;
            rows += 1;
            check_record(&rec, rows, &layout, checker, out)?;
        }
        // Empty lines at the end (the final newline does not make one).
        blank_lines(
            rdr.get_mut().take_empty_lines_before(u64::MAX),
            &mut rows,
            out,
        );
        Ok(())
    })();
    if let Err(f) = result {
        out.fatal(f.kind, None, f.message);
    }
    let bytes = rdr.get_ref().bytes();
    if bytes == 0 {
        out.fatal(ErrorKind::EmptyFile, None, "empty file".into());
    } else if !any_record && !out.has_fatal() {
        let what = if dialect.header {
            "no header row"
        } else {
            "no rows"
        };
        out.fatal(ErrorKind::EmptyFile, None, format!("empty file: {what}"));
    }
    (rows, bytes)
}
