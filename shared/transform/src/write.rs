//! The output: one Parquet file (snappy) with typed columns in schema order — integer → Int64,
//! number → Float64, boolean → Boolean, everything else and every masked column → Utf8; a missing
//! value is null — and [`FILE_ID`], written [`ARROW_BATCH`] rows at a time in row groups of at most
//! [`ROW_GROUP`] rows and [`ROW_GROUP_BYTES`].

use crate::rules::{FILE_ID, Rules};
use arrow_array::{ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field as ArrowField, Schema as ArrowSchema};
use choreo_validation::Cast;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use std::io::Write;
use std::sync::Arc;

/// Most rows a Parquet row group holds.
pub const ROW_GROUP: usize = 64 * 1024;
/// Most bytes (encoded) a row group holds: wide rows make smaller groups, so the writer's buffer
/// stays bounded whatever the rows' width.
pub const ROW_GROUP_BYTES: usize = 32 << 20;
/// Rows turned into Arrow arrays at once.
pub const ARROW_BATCH: usize = 8 * 1024;

/// A kept row: its file (an index in the manifest) and one value per schema field.
pub(crate) struct Row {
    pub(crate) file: u32,
    pub(crate) values: Vec<Cast<'static>>,
}

/// The Parquet output, a few thousand rows at a time.
pub(crate) struct RowWriter<W: Write + Send> {
    writer: ArrowWriter<W>,
    schema: Arc<ArrowSchema>,
    types: Vec<DataType>,
    file_ids: Vec<String>,
    rows: Vec<Row>,
    written: u64,
}

impl<W: Write + Send> RowWriter<W> {
    pub(crate) fn new(rules: &Rules, file_ids: Vec<String>, out: W) -> Result<Self, String> {
        let types: Vec<DataType> = (0..rules.names.len())
            .map(|i| rules.arrow_type(i))
            .collect();
        let mut fields: Vec<ArrowField> = rules
            .names
            .iter()
            .zip(&types)
            .map(|(n, t)| ArrowField::new(n, t.clone(), true))
            .collect();
        fields.push(ArrowField::new(FILE_ID, DataType::Utf8, false));
        let schema = Arc::new(ArrowSchema::new(fields));
        let props = WriterProperties::builder()
            .set_compression(parquet::basic::Compression::SNAPPY)
            .set_max_row_group_row_count(Some(ROW_GROUP))
            .set_max_row_group_bytes(Some(ROW_GROUP_BYTES))
            .build();
        let writer = ArrowWriter::try_new(out, Arc::clone(&schema), Some(props))
            .map_err(|e| format!("writing Parquet: {e}"))?;
        Ok(RowWriter {
            writer,
            schema,
            types,
            file_ids,
            rows: Vec::with_capacity(ARROW_BATCH),
            written: 0,
        })
    }

    pub(crate) fn push(&mut self, row: Row) -> Result<(), String> {
        self.rows.push(row);
        if self.rows.len() >= ARROW_BATCH {
            self.write_rows()?;
        }
        Ok(())
    }

    /// Hands the rows gathered so far to the Parquet writer, as one record batch.
    fn write_rows(&mut self) -> Result<(), String> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let rows = &self.rows;
        let mut columns: Vec<ArrayRef> = self
            .types
            .iter()
            .enumerate()
            .map(|(i, t)| column(t, rows.iter().map(|r| &r.values[i])))
            .collect();
        columns.push(Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| &self.file_ids[r.file as usize]),
        )));
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), columns)
            .map_err(|e| format!("building a record batch: {e}"))?;
        self.writer
            .write(&batch)
            .map_err(|e| format!("writing Parquet: {e}"))?;
        self.written += rows.len() as u64;
        self.rows.clear();
        Ok(())
    }

    /// Ends the file; returns its writer and the rows written.
    pub(crate) fn finish(mut self) -> Result<(W, u64), String> {
        self.write_rows()?;
        let out = self
            .writer
            .into_inner()
            .map_err(|e| format!("writing Parquet: {e}"))?;
        Ok((out, self.written))
    }
}

/// One Arrow column of `ty` from the rows' values (which the checks have typed to match).
fn column<'a>(ty: &DataType, values: impl Iterator<Item = &'a Cast<'static>>) -> ArrayRef {
    match ty {
        DataType::Int64 => Arc::new(Int64Array::from_iter(values.map(|v| match v {
            Cast::Int(x) => Some(*x),
            _ => None,
        }))),
        DataType::Float64 => Arc::new(Float64Array::from_iter(values.map(|v| match v {
            Cast::Num(x) => Some(*x),
            Cast::Int(x) => Some(*x as f64),
            _ => None,
        }))),
        DataType::Boolean => Arc::new(BooleanArray::from_iter(values.map(|v| match v {
            Cast::Bool(x) => Some(*x),
            _ => None,
        }))),
        _ => Arc::new(StringArray::from_iter(values.map(|v| match v {
            Cast::Text(t) => Some(t.to_string()),
            Cast::Int(x) => Some(x.to_string()),
            Cast::Num(x) => Some(x.to_string()),
            Cast::Bool(x) => Some(x.to_string()),
            Cast::Null => None,
        }))),
    }
}
