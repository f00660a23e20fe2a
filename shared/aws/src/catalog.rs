//! The [`Catalog`] on the Glue Data Catalog: tables and partitions registered directly, for datasets
//! that declare their schema — no crawler, no crawl.
//!
//! A table is an external table over `s3://<bucket>/<folder>`: CSV through `OpenCSVSerde` (it honours
//! the dataset's quote character; a header is skipped with `skip.header.line.count`), JSON Lines
//! through the OpenX `JsonSerDe`, both as text. Partition keys are strings, and each partition carries
//! the table's storage at its own folder, as a crawler writes them.

use crate::error::{code, is_transient_code, port_error};
use async_trait::async_trait;
use aws_sdk_glue::Client;
use aws_sdk_glue::types::{Column, PartitionInput, SerDeInfo, StorageDescriptor, TableInput};
use choreo_domain::catalog::{
    Column as Col, ColumnType, Partition, Registered, TableDef, TableDiff, TableFormat,
};
use choreo_ports::{Catalog, PortError, PortErrorKind, TableOutcome};
use std::collections::HashMap;

/// BatchCreatePartition takes at most 100 partitions a call.
const PARTITIONS_PER_CALL: usize = 100;
const INPUT_FORMAT: &str = "org.apache.hadoop.mapred.TextInputFormat";
const OUTPUT_FORMAT: &str = "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat";
const CSV_SERDE: &str = "org.apache.hadoop.hive.serde2.OpenCSVSerde";
const JSON_SERDE: &str = "org.openx.data.jsonserde.JsonSerDe";

/// The [`Catalog`] on Glue, writing to the database `aws.glue_database` (which the bootstrap creates).
#[derive(Debug, Clone)]
pub struct GlueCatalog {
    client: Client,
    database: String,
}

impl GlueCatalog {
    pub fn new(client: Client, database: &str) -> Self {
        GlueCatalog {
            client,
            database: database.to_string(),
        }
    }
}

fn location(bucket: &str, folder: &str) -> String {
    format!("s3://{bucket}/{folder}")
}

fn storage(table: &TableDef, folder: &str) -> StorageDescriptor {
    let columns = table
        .columns
        .iter()
        .map(|c| column(&c.name, c.column_type.as_str()))
        .collect();
    let serde = match &table.format {
        TableFormat::Csv {
            delimiter, quote, ..
        } => SerDeInfo::builder()
            .serialization_library(CSV_SERDE)
            .parameters("separatorChar", delimiter.to_string())
            .parameters("quoteChar", quote.to_string()),
        TableFormat::JsonLines => SerDeInfo::builder().serialization_library(JSON_SERDE),
    };
    StorageDescriptor::builder()
        .set_columns(Some(columns))
        .location(location(&table.bucket, folder))
        .input_format(INPUT_FORMAT)
        .output_format(OUTPUT_FORMAT)
        .serde_info(serde.build())
        .build()
}

fn column(name: &str, column_type: &str) -> Column {
    Column::builder()
        .name(name)
        .r#type(column_type)
        .build()
        .expect("a column has a name")
}

fn table_parameters(table: &TableDef) -> HashMap<String, String> {
    let mut params = HashMap::from([
        ("EXTERNAL".to_string(), "TRUE".to_string()),
        (
            "classification".to_string(),
            table.format.classification().to_string(),
        ),
    ]);
    if let TableFormat::Csv { header, .. } = table.format {
        let skip = if header { "1" } else { "0" };
        params.insert("skip.header.line.count".into(), skip.into());
    }
    params
}

fn table_input(table: &TableDef) -> TableInput {
    TableInput::builder()
        .name(&table.name)
        .description(format!(
            "Dataset {}, registered directly by Choreo from its schema.",
            table.dataset
        ))
        .table_type("EXTERNAL_TABLE")
        .storage_descriptor(storage(table, &table.folder))
        .set_partition_keys(Some(
            table
                .partition_keys
                .iter()
                .map(|k| column(k, "string"))
                .collect(),
        ))
        .set_parameters(Some(table_parameters(table)))
        .build()
        .expect("a table has a name")
}

fn key_names(keys: &[Column]) -> Vec<String> {
    keys.iter().map(|k| k.name().to_ascii_lowercase()).collect()
}

/// A Glue table read back for [`TableDef::diff`] (`wanted` names it): whole when it is exactly what
/// [`table_input`] writes for some table (our formats, SerDe and SerDe parameters; our table
/// parameters among its own, as Glue may add others), otherwise by its partition keys.
fn registered(wanted: &TableDef, table: &aws_sdk_glue::types::Table) -> Registered {
    let partition_keys = key_names(table.partition_keys());
    let direct = || -> Option<TableDef> {
        let sd = table.storage_descriptor()?;
        let (bucket, folder) = sd.location()?.strip_prefix("s3://")?.split_once('/')?;
        let serde = sd.serde_info()?;
        let serde_params = serde.parameters().cloned().unwrap_or_default();
        let params = table.parameters().cloned().unwrap_or_default();
        let one = |key: &str| {
            let mut chars = serde_params.get(key)?.chars();
            chars.next().filter(|_| chars.next().is_none())
        };
        let format = match serde.serialization_library()? {
            CSV_SERDE => TableFormat::Csv {
                delimiter: one("separatorChar")?,
                quote: one("quoteChar")?,
                header: match params.get("skip.header.line.count")?.as_str() {
                    "1" => true,
                    "0" => false,
                    _ => return None,
                },
            },
            JSON_SERDE => TableFormat::JsonLines,
            _ => return None,
        };
        let columns = sd
            .columns()
            .iter()
            .map(|c| {
                Some(Col {
                    name: c.name().to_string(),
                    column_type: ColumnType::from_name(c.r#type()?)?,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        let def = TableDef {
            dataset: wanted.dataset.clone(),
            name: wanted.name.clone(),
            bucket: bucket.to_string(),
            folder: folder.to_string(),
            columns,
            partition_keys: partition_keys.clone(),
            format,
        };
        // What the read-back leaves out must be what we would write for it.
        let ours = table_input(&def);
        let ours_sd = ours.storage_descriptor()?;
        let ours_serde_params = ours_sd
            .serde_info()
            .and_then(|s| s.parameters().cloned())
            .unwrap_or_default();
        let exact = sd.input_format() == ours_sd.input_format()
            && sd.output_format() == ours_sd.output_format()
            && serde_params == ours_serde_params
            && ours
                .parameters()
                .into_iter()
                .flatten()
                .all(|(k, v)| params.get(k) == Some(v));
        exact.then_some(def)
    };
    match direct() {
        Some(t) => Registered::Direct(t),
        None => Registered::Other {
            partition_keys: Some(partition_keys),
        },
    }
}

impl GlueCatalog {
    async fn get_table(&self, name: &str) -> Result<Option<aws_sdk_glue::types::Table>, PortError> {
        match self
            .client
            .get_table()
            .database_name(&self.database)
            .name(name)
            .send()
            .await
        {
            Ok(out) => Ok(out.table),
            // The database missing is also EntityNotFound: CreateTable then says so.
            Err(e) if code(&e) == Some("EntityNotFoundException") => Ok(None),
            Err(e) => Err(port_error("ensure_table", name, e)),
        }
    }
}

#[async_trait]
impl Catalog for GlueCatalog {
    /// GetTable first (the common case, once per batch, is a table that exists and matches: one
    /// read); CreateTable when missing; UpdateTable when the columns, format or location differ.
    /// A CreateTable that loses a race (`AlreadyExistsException`) compares with the winner's table.
    async fn ensure_table(&self, table: &TableDef) -> Result<TableOutcome, PortError> {
        let wanted = table_input(table);
        let existing = match self.get_table(&table.name).await? {
            Some(t) => t,
            None => {
                let created = self
                    .client
                    .create_table()
                    .database_name(&self.database)
                    .table_input(wanted.clone())
                    .send()
                    .await;
                match created {
                    Ok(_) => {
                        choreo_telemetry::events::emit(crate::events::GlueTableCreated {
                            table: &table.name,
                            database: &self.database,
                        });
                        return Ok(TableOutcome::Created);
                    }
                    Err(e) if code(&e) == Some("AlreadyExistsException") => {
                        self.get_table(&table.name).await?.ok_or_else(|| {
                            PortError::transient("ensure_table", &table.name, "created and gone")
                        })?
                    }
                    Err(e) => return Err(port_error("ensure_table", &table.name, e)),
                }
            }
        };
        match table.diff(&registered(table, &existing)) {
            Ok(TableDiff::Same) => return Ok(TableOutcome::Unchanged),
            Ok(TableDiff::Changed) => {}
            Err(e) => return Err(PortError::permanent("ensure_table", &table.name, e)),
        }
        self.client
            .update_table()
            .database_name(&self.database)
            .table_input(wanted)
            .send()
            .await
            .map_err(|e| port_error("ensure_table", &table.name, e))?;
        choreo_telemetry::events::emit(crate::events::GlueTableUpdated {
            table: &table.name,
            database: &self.database,
        });
        Ok(TableOutcome::Updated)
    }

    /// BatchCreatePartition, 100 at a time. Entries that exist come back among its `Errors` as
    /// `AlreadyExistsException`: not a failure, only not new. Any other entry error fails the call
    /// (transient if its code is), after the chunks before it were written; calling again is safe.
    async fn add_partitions(
        &self,
        table: &TableDef,
        partitions: &[Partition],
    ) -> Result<usize, PortError> {
        let mut added = 0;
        for chunk in partitions.chunks(PARTITIONS_PER_CALL) {
            let inputs = chunk
                .iter()
                .map(|p| {
                    PartitionInput::builder()
                        .set_values(Some(p.values.clone()))
                        .storage_descriptor(storage(table, &p.folder))
                        .build()
                })
                .collect();
            let out = self
                .client
                .batch_create_partition()
                .database_name(&self.database)
                .table_name(&table.name)
                .set_partition_input_list(Some(inputs))
                .send()
                .await
                .map_err(|e| port_error("add_partitions", &table.name, e))?;
            let mut existed = 0;
            for e in out.errors() {
                let detail = e.error_detail();
                let error_code = detail.and_then(|d| d.error_code()).unwrap_or_default();
                if error_code == "AlreadyExistsException" {
                    existed += 1;
                    continue;
                }
                let kind = if is_transient_code(error_code) {
                    PortErrorKind::Transient
                } else {
                    PortErrorKind::Permanent
                };
                return Err(PortError::new(
                    kind,
                    "add_partitions",
                    &table.name,
                    format!(
                        "partition {:?}: {error_code}: {}",
                        e.partition_values(),
                        detail.and_then(|d| d.error_message()).unwrap_or_default()
                    ),
                ));
            }
            added += chunk.len() - existed;
        }
        Ok(added)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AwsClients;
    use crate::moto::Moto;
    use choreo_ports::PortErrorKind;
    use choreo_ports::testkit::{sales_partition as partition, sales_table as table};

    #[test]
    fn tables_are_external_text_tables_over_the_folder() {
        let t = table_input(&table(&["region"]));
        let sd = t.storage_descriptor().unwrap();
        assert_eq!(sd.location(), Some("s3://choreo-input/sales/"));
        assert_eq!(
            sd.serde_info().unwrap().serialization_library(),
            Some(CSV_SERDE)
        );
        assert_eq!(t.parameters().unwrap()["skip.header.line.count"], "1");
        assert_eq!(key_names(t.partition_keys()), ["region"]);
        let mut json = table(&[]);
        json.format = TableFormat::JsonLines;
        let t = table_input(&json);
        assert_eq!(t.parameters().unwrap()["classification"], "json");
        assert!(
            !t.parameters()
                .unwrap()
                .contains_key("skip.header.line.count")
        );
    }

    /// The table Glue would return for `input`, with `extra` table parameters of its own.
    fn as_glue_returns(input: &TableInput, extra: &[(&str, &str)]) -> aws_sdk_glue::types::Table {
        let mut params = input.parameters().cloned().unwrap_or_default();
        params.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        aws_sdk_glue::types::Table::builder()
            .name(input.name())
            .set_storage_descriptor(input.storage_descriptor().cloned())
            .set_partition_keys(input.partition_keys.clone())
            .set_parameters(Some(params))
            .build()
            .unwrap()
    }

    #[test]
    fn tables_read_back_whole_only_when_they_are_ours() {
        let mut t = table(&["region"]);
        for format in [TableFormat::JsonLines, t.format.clone()] {
            t.format = format;
            let glue = as_glue_returns(&table_input(&t), &[("UPDATED_BY_CRAWLER", "x")]);
            assert_eq!(registered(&t, &glue), Registered::Direct(t.clone()));
        }
        let mut input = table_input(&t);
        let mut sd = input.storage_descriptor.take().unwrap();
        sd.serde_info = Some(
            SerDeInfo::builder()
                .serialization_library("LazySimpleSerDe")
                .build(),
        );
        input.storage_descriptor = Some(sd);
        let other = Registered::Other {
            partition_keys: Some(vec!["region".into()]),
        };
        assert_eq!(registered(&t, &as_glue_returns(&input, &[])), other);
        let mut input = table_input(&t);
        input.parameters.as_mut().unwrap().remove("EXTERNAL");
        assert_eq!(registered(&t, &as_glue_returns(&input, &[])), other);
    }

    async fn glue_catalog(moto: &Moto) -> (AwsClients, GlueCatalog) {
        let clients = AwsClients::emulator(&moto.endpoint).await;
        clients
            .glue
            .create_database()
            .database_input(
                aws_sdk_glue::types::DatabaseInput::builder()
                    .name("choreo")
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        let c = GlueCatalog::new(clients.glue.clone(), "choreo");
        (clients, c)
    }

    /// The port's contract (`choreo_ports::testkit`), on Glue (moto).
    #[tokio::test]
    async fn the_catalog_keeps_the_ports_contract() {
        let moto = Moto::start();
        let (_clients, c) = glue_catalog(&moto).await;
        choreo_ports::testkit::catalog_contract(&c).await;
    }

    #[tokio::test]
    async fn glue_partitions_are_at_their_folders_and_a_missing_database_is_not_retried() {
        let moto = Moto::start();
        let (clients, c) = glue_catalog(&moto).await;
        let t = table(&["region", "day"]);
        c.ensure_table(&t).await.unwrap();
        c.add_partitions(&t, &[partition("us", 3)]).await.unwrap();
        let got = clients
            .glue
            .get_partition()
            .database_name("choreo")
            .table_name("sales")
            .set_partition_values(Some(vec!["us".into(), "3".into()]))
            .send()
            .await
            .unwrap()
            .partition
            .unwrap();
        assert_eq!(
            got.storage_descriptor().unwrap().location(),
            Some("s3://choreo-input/sales/region=us/day=3/")
        );

        // No database: not found, which fails the batch rather than retrying.
        let lost = GlueCatalog::new(clients.glue.clone(), "nowhere");
        let err = lost.ensure_table(&t).await.unwrap_err();
        assert_ne!(err.kind, PortErrorKind::Transient, "{err}");
    }
}
