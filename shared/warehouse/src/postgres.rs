//! A plan run on PostgreSQL: every statement in one transaction, files fed to `COPY ... FROM
//! STDIN` a chunk at a time.

use crate::plan::LoadPlan;
use crate::sql;
use crate::{LoadError, LoadReport};
use choreo_domain::extract::LoadMode;
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Bytes handed to `COPY` at a time.
const CHUNK: usize = 256 << 10;

fn sql_error(e: sqlx::Error, table: &str) -> LoadError {
    match &e {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("42P01") => {
            LoadError::NoTable(table.to_string())
        }
        sqlx::Error::Database(db) => LoadError::Sql(db.message().to_string()),
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut => {
            LoadError::Unreachable(e.to_string())
        }
        _ => LoadError::Sql(e.to_string()),
    }
}

/// The header line of a gzip CSV file: its column names.
pub fn header(path: &Path) -> Result<Vec<String>, LoadError> {
    let file = std::fs::File::open(path)
        .map_err(|e| LoadError::File(format!("{}: {e}", path.display())))?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(flate2::read::MultiGzDecoder::new(file));
    let h = reader
        .headers()
        .map_err(|e| LoadError::File(format!("{}: {e}", path.display())))?;
    Ok(h.iter().map(str::to_string).collect())
}

/// Runs `plan` against the warehouse at `url` (a secret: errors do not carry it).
pub async fn load(url: &str, plan: &LoadPlan) -> Result<LoadReport, LoadError> {
    let Some(first) = plan.files.first() else {
        return Ok(LoadReport::default());
    };
    let columns = header(&first.path)?;
    for f in &plan.files[1..] {
        let other = header(&f.path)?;
        if other != columns {
            return Err(LoadError::File(format!(
                "{} has columns {other:?}, {} has {columns:?}: one batch loads one shape",
                f.object_key, first.object_key
            )));
        }
    }
    let mut conn = PgConnection::connect(url).await.map_err(|e| match e {
        sqlx::Error::Database(_) => sql_error(e, &plan.table),
        e => LoadError::Unreachable(e.to_string()),
    })?;
    let table = sql::table(&plan.table);
    let err = |e| sql_error(e, &plan.table);
    let mut tx = conn.begin().await.map_err(err)?;
    let mut report = LoadReport {
        files: plan.files.len(),
        ..LoadReport::default()
    };
    let into = match plan.mode {
        LoadMode::Replace => {
            let key_column = plan
                .key_column
                .as_deref()
                .ok_or_else(|| LoadError::Plan("mode replace needs warehouse.key_column".into()))?;
            let keys: Vec<String> = plan.keys().into_iter().map(str::to_string).collect();
            report.deleted = sqlx::query(AssertSqlSafe(sql::delete_keys_bound(
                &plan.table,
                key_column,
            )))
            .bind(keys)
            .execute(&mut *tx)
            .await
            .map_err(err)?
            .rows_affected();
            table.clone()
        }
        LoadMode::Append => table.clone(),
        LoadMode::Upsert => {
            sqlx::query(AssertSqlSafe(sql::create_stage(&plan.table)))
                .execute(&mut *tx)
                .await
                .map_err(err)?;
            sql::ident(sql::STAGE)
        }
    };
    let copy = sql::copy_from_stdin(&into, &columns);
    for f in &plan.files {
        report.copied += copy_file(&mut tx, &copy, &f.path, &plan.table).await?;
    }
    if plan.mode == LoadMode::Upsert {
        report.copied = sqlx::query(AssertSqlSafe(sql::upsert_from_stage(
            &plan.table,
            &columns,
            &plan.primary_key,
        )))
        .execute(&mut *tx)
        .await
        .map_err(err)?
        .rows_affected();
    }
    tx.commit().await.map_err(err)?;
    Ok(report)
}

/// Feeds one gzip file to a `COPY ... FROM STDIN`: a thread decompresses it into a small channel,
/// so at most a few chunks are in memory whatever the file's size.
async fn copy_file(
    conn: &mut PgConnection,
    statement: &str,
    path: &Path,
    table: &str,
) -> Result<u64, LoadError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, String>>(4);
    let p: PathBuf = path.to_path_buf();
    let reader = tokio::task::spawn_blocking(move || {
        let file = match std::fs::File::open(&p) {
            Ok(f) => f,
            Err(e) => {
                let _ = tx.blocking_send(Err(format!("{}: {e}", p.display())));
                return;
            }
        };
        let mut gz = flate2::read::MultiGzDecoder::new(file);
        loop {
            let mut chunk = vec![0; CHUNK];
            match gz.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => {
                    chunk.truncate(n);
                    if tx.blocking_send(Ok(chunk)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(format!("{}: {e}", p.display())));
                    return;
                }
            }
        }
    });
    let mut copy = conn
        .copy_in_raw(statement)
        .await
        .map_err(|e| sql_error(e, table))?;
    while let Some(chunk) = rx.recv().await {
        match chunk {
            Ok(bytes) => {
                if let Err(e) = copy.send(bytes).await {
                    drop(rx);
                    let _ = reader.await;
                    return Err(sql_error(e, table));
                }
            }
            Err(reason) => {
                let _ = copy.abort(reason.clone()).await;
                return Err(LoadError::File(reason));
            }
        }
    }
    let _ = reader.await;
    copy.finish().await.map_err(|e| sql_error(e, table))
}
