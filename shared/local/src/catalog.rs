//! The local catalog: the `catalog` table (one row per dataset, written by a crawl or directly) and
//! the `partitions` table (written directly), as Glue's Data Catalog holds tables and partitions.
//!
//! A direct table records its crawler as `direct`, its columns' types and its format; a crawled one
//! has names only (`types` is NULL). Locations are `<bucket>/<folder>`. Every write is one
//! `BEGIN IMMEDIATE` transaction, so two pollers registering the same table or partitions at once
//! end with one row each.

use crate::db::{Db, DbError, parse_ts, ts};
use async_trait::async_trait;
use choreo_domain::catalog::{
    Column, ColumnType, Partition, Registered, TableDef, TableDiff, TableFormat,
};
use choreo_domain::clock;
use choreo_ports::{Catalog, PortError, TableOutcome};
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use std::sync::Arc;

/// What a direct table records as its crawler.
pub const DIRECT: &str = "direct";

/// One dataset's table in the local catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogTable {
    pub dataset: String,
    /// The crawler that wrote it, or [`DIRECT`].
    pub crawler: String,
    /// Crawled: the union of the columns of the dataset's objects, in order of first appearance.
    /// Direct: the schema's fields.
    pub columns: Vec<String>,
    /// The columns' catalog types (`bigint`, `double`, ...), when registered directly; a crawl
    /// infers names only.
    pub types: Option<Vec<String>>,
    /// Partition keys, outermost first (a direct table's; empty otherwise).
    pub partition_keys: Vec<String>,
    /// How the objects are read, when registered directly: `{"classification": "csv", ...}`.
    pub format: Option<serde_json::Value>,
    /// Objects the latest crawl read (0 for a direct table, which reads none).
    pub files: u64,
    /// `<input bucket>/<prefix or pattern>` when crawled; `<bucket>/<folder>` when direct.
    pub location: String,
    pub updated_at: DateTime<Utc>,
}

/// One partition of a direct table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogPartition {
    pub values: Vec<String>,
    /// `<bucket>/<folder>`.
    pub location: String,
}

/// The [`Catalog`] port on the local database.
#[derive(Clone)]
pub struct LocalCatalog {
    db: Arc<Db>,
}

fn format_json(format: &TableFormat) -> serde_json::Value {
    match format {
        TableFormat::Csv {
            delimiter,
            quote,
            header,
        } => serde_json::json!({
            "classification": "csv", "delimiter": delimiter, "quote": quote, "header": header,
        }),
        TableFormat::JsonLines => serde_json::json!({"classification": "json"}),
    }
}

/// A `catalog` row as `ensure_table` reads it: crawler, columns, types, partition keys, format,
/// location.
type Stored = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
);

/// The table a format's JSON describes, if it is exactly what [`format_json`] writes.
fn format_of(json: &str) -> Option<TableFormat> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let one = |key: &str| {
        let mut chars = v[key].as_str()?.chars();
        chars.next().filter(|_| chars.next().is_none())
    };
    let format = match v["classification"].as_str()? {
        "csv" => TableFormat::Csv {
            delimiter: one("delimiter")?,
            quote: one("quote")?,
            header: v["header"].as_bool()?,
        },
        "json" => TableFormat::JsonLines,
        _ => return None,
    };
    (format_json(&format) == v).then_some(format)
}

/// The stored row read back for [`TableDef::diff`] (`wanted` names it): a direct table whole,
/// anything else (a crawled one has no types) by its partition keys, if it has any.
fn registered(wanted: &TableDef, row: &Stored) -> Result<Registered, DbError> {
    let (crawler, columns, types, keys, format, location) = row;
    let partition_keys: Option<Vec<String>> =
        keys.as_deref().map(serde_json::from_str).transpose()?;
    let direct = || -> Option<TableDef> {
        let names: Vec<String> = serde_json::from_str(columns).ok()?;
        let types: Vec<String> = serde_json::from_str(types.as_deref()?).ok()?;
        let columns = (names.len() == types.len())
            .then(|| {
                names
                    .into_iter()
                    .zip(&types)
                    .map(|(name, t)| {
                        let column_type = ColumnType::from_name(t)?;
                        Some(Column { name, column_type })
                    })
                    .collect::<Option<Vec<_>>>()
            })
            .flatten()?;
        let (bucket, folder) = location.split_once('/')?;
        Some(TableDef {
            dataset: wanted.dataset.clone(),
            name: wanted.name.clone(),
            bucket: bucket.to_string(),
            folder: folder.to_string(),
            columns,
            partition_keys: partition_keys.clone()?,
            format: format_of(format.as_deref()?)?,
        })
    };
    Ok(match direct().filter(|_| crawler == DIRECT) {
        Some(t) => Registered::Direct(t),
        None => Registered::Other { partition_keys },
    })
}

/// The rows of `catalog`, for one dataset or all.
pub(crate) fn tables(
    conn: &Connection,
    dataset: Option<&str>,
) -> Result<Vec<CatalogTable>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT dataset, crawler, columns, types, partition_keys, format, files, location, updated_at
         FROM catalog WHERE ?1 IS NULL OR dataset = ?1 ORDER BY dataset",
    )?;
    type Row = (
        String,
        String,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        i64,
        String,
        String,
    );
    let rows = stmt
        .query_map(params![dataset], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
            ))
        })?
        .collect::<Result<Vec<Row>, _>>()?;
    rows.into_iter()
        .map(
            |(dataset, crawler, columns, types, keys, format, files, location, updated)| {
                Ok(CatalogTable {
                    dataset,
                    crawler,
                    columns: serde_json::from_str(&columns)?,
                    types: types.as_deref().map(serde_json::from_str).transpose()?,
                    partition_keys: keys
                        .as_deref()
                        .map(serde_json::from_str)
                        .transpose()?
                        .unwrap_or_default(),
                    format: format.as_deref().map(serde_json::from_str).transpose()?,
                    files: files.max(0) as u64,
                    location,
                    updated_at: parse_ts(&updated)?,
                })
            },
        )
        .collect()
}

impl LocalCatalog {
    pub(crate) fn new(db: Arc<Db>) -> Self {
        LocalCatalog { db }
    }

    /// The dataset's table, if a crawl or a direct registration wrote one. (A short blocking read.)
    pub fn table(&self, dataset: &str) -> Result<Option<CatalogTable>, PortError> {
        self.db.blocking("catalog_table", dataset, |conn| {
            Ok(tables(conn, Some(dataset))?.into_iter().next())
        })
    }

    /// Every table, by dataset. (A short blocking read.)
    pub fn tables(&self) -> Result<Vec<CatalogTable>, PortError> {
        self.db
            .blocking("catalog", "catalog", |conn| tables(conn, None))
    }

    /// The dataset's partitions, by values. (A short blocking read.)
    pub fn partitions(&self, dataset: &str) -> Result<Vec<CatalogPartition>, PortError> {
        self.db.blocking("partitions", dataset, |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT partition_values, location FROM partitions WHERE dataset = ?1
                 ORDER BY partition_values",
            )?;
            let rows = stmt
                .query_map(params![dataset], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter()
                .map(|(values, location)| {
                    Ok(CatalogPartition {
                        values: serde_json::from_str(&values)?,
                        location,
                    })
                })
                .collect()
        })
    }
}

#[async_trait]
impl Catalog for LocalCatalog {
    async fn ensure_table(&self, table: &TableDef) -> Result<TableOutcome, PortError> {
        let t = table.clone();
        self.db
            .write("ensure_table", &table.dataset, move |tx| {
                let columns: Vec<&str> = t.columns.iter().map(|c| c.name.as_str()).collect();
                let types: Vec<&str> = t.columns.iter().map(|c| c.column_type.as_str()).collect();
                let columns = serde_json::to_string(&columns)?;
                let types = serde_json::to_string(&types)?;
                let keys = serde_json::to_string(&t.partition_keys)?;
                let format = format_json(&t.format).to_string();
                let location = format!("{}/{}", t.bucket, t.folder);
                let stored: Option<Stored> = tx
                    .prepare_cached(
                        "SELECT crawler, columns, types, partition_keys, format, location
                         FROM catalog WHERE dataset = ?1",
                    )?
                    .query_row(params![t.dataset], |r| {
                        Ok((
                            r.get(0)?,
                            r.get(1)?,
                            r.get(2)?,
                            r.get(3)?,
                            r.get(4)?,
                            r.get(5)?,
                        ))
                    })
                    .optional()?;
                let outcome = match &stored {
                    None => TableOutcome::Created,
                    Some(row) => match t.diff(&registered(&t, row)?) {
                        Ok(TableDiff::Same) => return Ok(TableOutcome::Unchanged),
                        Ok(TableDiff::Changed) => TableOutcome::Updated,
                        Err(e) => {
                            return Err(DbError::Port(PortError::permanent(
                                "ensure_table",
                                &t.dataset,
                                e,
                            )));
                        }
                    },
                };
                tx.prepare_cached(
                    "INSERT INTO catalog (dataset, crawler, columns, types, partition_keys, format,
                                          files, location, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7, ?8)
                     ON CONFLICT (dataset) DO UPDATE SET crawler = excluded.crawler,
                         columns = excluded.columns, types = excluded.types,
                         partition_keys = excluded.partition_keys, format = excluded.format,
                         files = 0, location = excluded.location, updated_at = excluded.updated_at",
                )?
                .execute(params![
                    t.dataset,
                    DIRECT,
                    columns,
                    types,
                    keys,
                    format,
                    location,
                    ts(clock::now())
                ])?;
                Ok(outcome)
            })
            .await
    }

    async fn add_partitions(
        &self,
        table: &TableDef,
        partitions: &[Partition],
    ) -> Result<usize, PortError> {
        if partitions.is_empty() {
            return Ok(0);
        }
        let dataset = table.dataset.clone();
        let rows: Vec<(String, String)> = partitions
            .iter()
            .map(|p| {
                let values = serde_json::to_string(&p.values).expect("strings serialize");
                (values, format!("{}/{}", table.bucket, p.folder))
            })
            .collect();
        self.db
            .write("add_partitions", &table.dataset, move |tx| {
                let now = ts(clock::now());
                let mut added = 0;
                for (values, location) in &rows {
                    // An existing partition is kept as it is, as BatchCreatePartition keeps it.
                    added += tx.prepare_cached("INSERT INTO partitions (dataset, partition_values, location, created_at)
                         VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING")?
            .execute(
                        params![dataset, values, location, now],
                    )?;
                }
                Ok(added)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::backend;
    use choreo_domain::catalog::{ColumnType, Partition};
    use choreo_ports::testkit::sales_table as table;
    use choreo_ports::{Catalog, TableOutcome};

    fn partition(day: &str) -> Partition {
        Partition {
            values: vec![day.into()],
            folder: format!("sales/day={day}/"),
        }
    }

    /// The port's contract (`choreo_ports::testkit`).
    #[tokio::test]
    async fn the_catalog_keeps_the_ports_contract() {
        let (_dir, b) = backend();
        choreo_ports::testkit::catalog_contract(&*b.catalog()).await;
    }

    /// What the `catalog` and `partitions` rows hold, for the warehouse to read.
    #[tokio::test]
    async fn rows_hold_the_definition() {
        let (_dir, b) = backend();
        let c = b.catalog();
        let mut t = table(&["day"]);
        c.ensure_table(&t).await.unwrap();
        t.columns[1].column_type = ColumnType::String;
        assert_eq!(c.ensure_table(&t).await.unwrap(), TableOutcome::Updated);
        let stored = c.table("sales").unwrap().unwrap();
        assert_eq!(stored.crawler, "direct");
        assert_eq!(stored.columns, ["id", "amount"]);
        assert_eq!(stored.types.unwrap(), ["bigint", "string"]);
        assert_eq!(stored.partition_keys, ["day"]);
        assert_eq!(stored.location, "choreo-input/sales/");
        assert_eq!(stored.format.unwrap()["header"], true);
        let err = c.ensure_table(&table(&[])).await.unwrap_err();
        assert!(err.to_string().contains("partitioned by"), "{err}");

        let two = [partition("2026-11-25"), partition("2026-11-26")];
        c.add_partitions(&t, &two).await.unwrap();
        let stored = c.partitions("sales").unwrap();
        assert_eq!(stored.len(), 2);
        assert_eq!(stored[0].values, ["2026-11-25"]);
        assert_eq!(stored[0].location, "choreo-input/sales/day=2026-11-25/");
        assert!(c.partitions("events").unwrap().is_empty());
    }
}
