//! The extracts' source: one key's rows, from MySQL to a CSV (gzip) file, a row at a time.
//!
//! The query is the configuration's, its named parameters turned into `?` and bound from the key
//! ([`NamedQuery`]): values are never spliced into the SQL. Rows are streamed from the server and
//! written as CSV as they come into chunks that a thread compresses (gzip) into a local file while
//! the next rows arrive; memory holds one row and a few chunks whatever the row count. The file is
//! then streamed to the bucket. The header is
//! the query's column names, which the dataset's schema checks like any other file's.

use choreo_domain::extract::NamedQuery;
use futures_util::TryStreamExt;
pub use sqlx::mysql::MySqlPool;
use sqlx::mysql::{MySqlPoolOptions, MySqlRow};
use sqlx::{AssertSqlSafe, Column, Executor, Row, SqlSafeStr, Statement, TypeInfo, ValueRef};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// What one extract wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub rows: u64,
    pub columns: usize,
    /// Compressed bytes.
    pub bytes: u64,
}

/// Why a key's extract failed. Each reads as a reason an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The server did not answer (down, refused, timed out): a retry later may succeed.
    #[error("MySQL is unreachable: {0}")]
    Unreachable(String),
    /// The server refused the query (syntax, a missing table or column, a permission).
    #[error("the query failed: {0}")]
    Query(String),
    /// A value could not be turned into text.
    #[error("column {column:?}: {error}")]
    Decode { column: String, error: String },
    /// The local file could not be written.
    #[error("writing the extract file: {0}")]
    Local(String),
}

impl SourceError {
    /// Whether the unit should be handed back rather than failed: only our own disk's errors.
    pub fn is_local(&self) -> bool {
        matches!(self, SourceError::Local(_))
    }
}

/// A pool of MySQL connections, opened lazily: a configuration without a reachable MySQL still
/// starts, and only its extracts fail. `url` is a secret: errors never carry it.
pub fn pool(url: &str, connections: u32) -> Result<MySqlPool, String> {
    MySqlPoolOptions::new()
        .max_connections(connections.max(1))
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy(url)
        .map_err(|e| redact(&e.to_string(), url))
}

/// `message` without the password of `url`, should a driver ever echo it.
pub fn redact(message: &str, url: &str) -> String {
    let password = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .and_then(|(user_info, _)| user_info.split_once(':'))
        .map(|(_, pw)| pw)
        .filter(|pw| !pw.is_empty());
    match password {
        Some(pw) => message.replace(pw, "***"),
        None => message.to_string(),
    }
}

fn classify(e: sqlx::Error, url: &str) -> SourceError {
    let text = redact(&e.to_string(), url);
    match e {
        sqlx::Error::Database(_) | sqlx::Error::ColumnNotFound(_) => SourceError::Query(text),
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Protocol(_) => SourceError::Unreachable(text),
        _ => SourceError::Query(text),
    }
}

/// How a column's values become text, decided once per column from its MySQL type.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Signed,
    Unsigned,
    Float,
    Double,
    Date,
    DateTime,
    Timestamp,
    Time,
    /// Text, decimals, JSON, enums, sets, blobs: the server's own bytes.
    Bytes,
}

fn kind_of(type_name: &str) -> Kind {
    let unsigned = type_name.ends_with("UNSIGNED");
    match type_name.split_whitespace().next().unwrap_or("") {
        "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" | "YEAR" if unsigned => {
            Kind::Unsigned
        }
        "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" => Kind::Signed,
        "YEAR" | "BIT" => Kind::Unsigned,
        "BOOLEAN" => Kind::Signed,
        "FLOAT" => Kind::Float,
        "DOUBLE" => Kind::Double,
        "DATE" => Kind::Date,
        "DATETIME" => Kind::DateTime,
        "TIMESTAMP" => Kind::Timestamp,
        "TIME" => Kind::Time,
        _ => Kind::Bytes,
    }
}

/// Appends column `i` of `row` as text to `out` (nothing for NULL).
fn cell(row: &MySqlRow, i: usize, kind: Kind, out: &mut Vec<u8>) -> Result<(), sqlx::Error> {
    if row.try_get_raw(i)?.is_null() {
        return Ok(());
    }
    match kind {
        Kind::Signed => write!(out, "{}", row.try_get_unchecked::<i64, _>(i)?),
        Kind::Unsigned => write!(out, "{}", row.try_get_unchecked::<u64, _>(i)?),
        Kind::Float => write!(out, "{}", row.try_get_unchecked::<f32, _>(i)?),
        Kind::Double => write!(out, "{}", row.try_get_unchecked::<f64, _>(i)?),
        Kind::Date => write!(out, "{}", row.try_get_unchecked::<chrono::NaiveDate, _>(i)?),
        Kind::DateTime | Kind::Timestamp => write!(
            out,
            "{}",
            row.try_get_unchecked::<chrono::NaiveDateTime, _>(i)?
                .format("%Y-%m-%dT%H:%M:%S%.f")
        ),
        Kind::Time => write!(out, "{}", row.try_get_unchecked::<chrono::NaiveTime, _>(i)?),
        Kind::Bytes => {
            out.extend_from_slice(row.try_get_unchecked::<&[u8], _>(i)?);
            Ok(())
        }
    }
    .expect("writing to a Vec cannot fail");
    Ok(())
}

/// Bytes of CSV handed to the compressing thread at a time. With [`IN_FLIGHT`] chunks queued, the
/// file's bytes in memory stay under 1.5 MiB whatever the row count.
const CHUNK: usize = 256 << 10;
const IN_FLIGHT: usize = 4;

/// A CSV writer into memory, quoting only what needs it, whose bytes leave a chunk at a time.
fn csv_chunk() -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::with_capacity(CHUNK + (64 << 10)))
}

/// The compressing end: gzip (fast) into `path`, a chunk at a time, on a thread of its own so that
/// compression overlaps reading the rows. Returns the compressed size.
fn compressor(
    path: &Path,
    mut chunks: tokio::sync::mpsc::Receiver<Vec<u8>>,
) -> std::io::Result<tokio::task::JoinHandle<std::io::Result<u64>>> {
    let file = std::fs::File::create(path)?;
    Ok(tokio::task::spawn_blocking(move || {
        let mut gz = flate2::write::GzEncoder::new(
            std::io::BufWriter::with_capacity(CHUNK, file),
            flate2::Compression::fast(),
        );
        while let Some(chunk) = chunks.blocking_recv() {
            gz.write_all(&chunk)?;
        }
        let mut inner = gz.finish()?;
        inner.flush()?;
        inner.get_ref().sync_all()?;
        Ok(inner.get_ref().metadata()?.len())
    }))
}

/// Runs `query` with `values` bound and writes its rows as CSV (gzip) to `path`.
pub async fn extract(
    pool: &MySqlPool,
    url_for_redaction: &str,
    query: &NamedQuery,
    values: &[String],
    path: &Path,
) -> Result<Written, SourceError> {
    let local = |e: std::io::Error| SourceError::Local(e.to_string());
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(IN_FLIGHT);
    let compressed = compressor(path, rx).map_err(local)?;
    let rows = read_rows(pool, url_for_redaction, query, values, &tx).await;
    drop(tx);
    let bytes = compressed
        .await
        .map_err(|e| SourceError::Local(e.to_string()))?
        .map_err(local);
    let (count, columns) = rows?;
    Ok(Written {
        rows: count,
        columns,
        bytes: bytes?,
    })
}

/// Streams the rows as CSV chunks into `chunks`; returns (rows, columns).
async fn read_rows(
    pool: &MySqlPool,
    url_for_redaction: &str,
    query: &NamedQuery,
    values: &[String],
    chunks: &tokio::sync::mpsc::Sender<Vec<u8>>,
) -> Result<(u64, usize), SourceError> {
    let gone = || SourceError::Local("the compressing thread stopped".into());
    let mut q = sqlx::query(AssertSqlSafe(query.sql.as_str()));
    for v in values {
        q = q.bind(v.as_str());
    }
    let mut conn = pool
        .acquire()
        .await
        .map_err(|e| classify(e, url_for_redaction))?;
    let mut rows = q.fetch(&mut *conn);
    let (mut count, mut kinds, mut names) = (0u64, Vec::new(), Vec::new());
    let local = |e: csv::Error| SourceError::Local(e.to_string());
    let mut out = csv_chunk();
    // One row's values, reused: the row's bytes, and where each field ends.
    let (mut buf, mut ends) = (Vec::with_capacity(64 << 10), Vec::new());
    while let Some(row) = rows
        .try_next()
        .await
        .map_err(|e| classify(e, url_for_redaction))?
    {
        if kinds.is_empty() {
            for c in row.columns() {
                names.push(c.name().to_string());
                kinds.push(kind_of(c.type_info().name()));
            }
            out.write_record(&names).map_err(local)?;
        }
        buf.clear();
        ends.clear();
        for (i, kind) in kinds.iter().enumerate() {
            cell(&row, i, *kind, &mut buf).map_err(|e| SourceError::Decode {
                column: names[i].clone(),
                error: e.to_string(),
            })?;
            ends.push(buf.len());
        }
        let starts = std::iter::once(0).chain(ends.iter().copied());
        out.write_record(starts.zip(ends.iter().copied()).map(|(s, e)| &buf[s..e]))
            .map_err(local)?;
        count += 1;
        if out.get_ref().len() >= CHUNK {
            let full = std::mem::replace(&mut out, csv_chunk())
                .into_inner()
                .map_err(|e| SourceError::Local(e.error().to_string()))?;
            chunks.send(full).await.map_err(|_| gone())?;
        }
    }
    drop(rows);
    if kinds.is_empty() {
        // No rows: the header still says what the query returns, so the file validates (or not)
        // like any other; the columns come from the prepared statement.
        let prepared = (&mut *conn)
            .prepare(AssertSqlSafe(query.sql.clone()).into_sql_str())
            .await
            .map_err(|e| classify(e, url_for_redaction))?;
        names = prepared
            .columns()
            .iter()
            .map(|c| c.name().to_string())
            .collect();
        out.write_record(&names).map_err(local)?;
    }
    let rest = out
        .into_inner()
        .map_err(|e| SourceError::Local(e.error().to_string()))?;
    if !rest.is_empty() {
        chunks.send(rest).await.map_err(|_| gone())?;
    }
    Ok((count, names.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_messages() {
        let url = "mysql://etl:s3cr3t@db.internal:3306/sales";
        assert_eq!(
            redact("access denied for etl:s3cr3t@db.internal", url),
            "access denied for etl:***@db.internal"
        );
        assert_eq!(redact("refused", "mysql://root@127.0.0.1/test"), "refused");
    }

    #[test]
    fn fields_are_quoted_as_the_csv_crate_reads_them() {
        let mut w = csv_chunk();
        let fields: [&[u8]; 5] = [b"plain", b"a,b", b"say \"hi\"", b"two\nlines", b""];
        w.write_record(fields).unwrap();
        let mut out = w.into_inner().unwrap();
        // A record of one empty field (a one-column extract's empty value) is not an empty line.
        let mut w = csv_chunk();
        w.write_record([&b""[..]]).unwrap();
        out.extend(w.into_inner().unwrap());
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(&out[..]);
        let records: Vec<Vec<String>> = reader
            .records()
            .map(|r| r.unwrap().iter().map(str::to_string).collect())
            .collect();
        assert_eq!(
            records,
            [
                vec!["plain", "a,b", "say \"hi\"", "two\nlines", ""],
                vec![""]
            ]
        );
    }

    #[test]
    fn column_types_pick_their_text_form() {
        assert!(matches!(kind_of("BIGINT UNSIGNED"), Kind::Unsigned));
        assert!(matches!(kind_of("INT"), Kind::Signed));
        assert!(matches!(kind_of("DATETIME"), Kind::DateTime));
        assert!(matches!(kind_of("DECIMAL"), Kind::Bytes));
        assert!(matches!(kind_of("VARCHAR"), Kind::Bytes));
        assert!(matches!(kind_of("DOUBLE"), Kind::Double));
    }
}
