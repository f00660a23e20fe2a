//! Direct cataloguing, as data: a dataset's table built from its declared schema, and a batch's
//! partitions read off its object keys. Pure; the `Catalog` port registers what this describes.
//!
//! Partitions are inferred as a crawler infers them from Hive-style folders: below the dataset's
//! folder, every folder of a key must be a `name=value` segment (`sales/region=eu/day=2026-11-26/a.csv`
//! → keys `region`, `day`; values `eu`, `2026-11-26`), or none may be (an unpartitioned table, whose
//! location covers its sub-folders). Mixing the two, or keys that disagree on the names, is a
//! [`LayoutError`]: a table has one set of partition keys.

mod diff;

pub use diff::{KeysDiffer, Registered, TableDiff};

use crate::config::{CsvOptions, DatasetConfig, FileFormat};
use choreo_schema::{FieldType, TableSchema};
use std::collections::BTreeSet;
use std::fmt;

/// A column's type, as Glue and Hive name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::IntoStaticStr)]
#[strum(serialize_all = "lowercase")]
pub enum ColumnType {
    String,
    Bigint,
    Double,
    Boolean,
    Date,
    Timestamp,
}

impl ColumnType {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The type named `name` (any case, as catalogs may return it), if it is one of ours.
    pub fn from_name(name: &str) -> Option<Self> {
        use ColumnType::*;
        [String, Bigint, Double, Boolean, Date, Timestamp]
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(name))
    }
}

impl From<FieldType> for ColumnType {
    /// The Frictionless type's catalog type. `time`, `year` and `any` have no faithful Hive type and
    /// stay text, as a crawler would leave them.
    fn from(t: FieldType) -> Self {
        match t {
            FieldType::Integer => ColumnType::Bigint,
            FieldType::Number => ColumnType::Double,
            FieldType::Boolean => ColumnType::Boolean,
            FieldType::Date => ColumnType::Date,
            FieldType::Datetime => ColumnType::Timestamp,
            FieldType::String | FieldType::Time | FieldType::Year | FieldType::Any => {
                ColumnType::String
            }
        }
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub column_type: ColumnType,
}

/// How the table's objects are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableFormat {
    /// With `header`, readers skip each object's first line.
    Csv {
        delimiter: char,
        quote: char,
        header: bool,
    },
    JsonLines,
}

impl TableFormat {
    /// `csv` or `json`, as Glue's `classification` has it.
    pub fn classification(&self) -> &'static str {
        match self {
            TableFormat::Csv { .. } => "csv",
            TableFormat::JsonLines => "json",
        }
    }
}

/// A dataset's table as declared: what `Catalog::ensure_table` makes exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDef {
    /// The dataset it catalogues.
    pub dataset: String,
    /// The table's name: the dataset's with `-` as `_`, so queries need not quote it.
    pub name: String,
    /// The bucket and folder (empty, or ending in `/`) its objects are under.
    pub bucket: String,
    pub folder: String,
    /// The schema's fields, in order.
    pub columns: Vec<Column>,
    /// Partition keys (all `string`), outermost first; empty for an unpartitioned table.
    pub partition_keys: Vec<String>,
    pub format: TableFormat,
}

/// One partition: its values (in the order of the table's keys) and its folder in the table's bucket.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Partition {
    pub values: Vec<String>,
    /// Ends in `/`.
    pub folder: String,
}

/// A batch's partitions, as read off its keys.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Layout {
    /// The partition keys, outermost first; empty when the keys have no `name=value` folders.
    pub partition_keys: Vec<String>,
    /// Distinct, sorted.
    pub partitions: Vec<Partition>,
}

/// Why a batch's keys do not make one table. Permanent: the same keys give the same answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("key {key:?} is not under the dataset's folder {folder:?}")]
    Outside { key: String, folder: String },
    #[error("key {0:?} mixes name=value folders with other folders")]
    Mixed(String),
    #[error("keys disagree on partitions: {first:?} by {first_keys:?}, {key:?} by {keys:?}")]
    Disagree {
        first: String,
        first_keys: Vec<String>,
        key: String,
        keys: Vec<String>,
    },
    #[error("partition key {0:?} is also a column of the schema")]
    KeyIsColumn(String),
}

/// A Hive-style `name=value` folder, the name lowercased as Hive and Glue keep column names.
fn hive_segment(segment: &str) -> Option<(String, &str)> {
    let (name, value) = segment.split_once('=')?;
    (!name.is_empty() && !value.is_empty()).then(|| (name.to_ascii_lowercase(), value))
}

/// The partitions of objects at `keys`, all under `folder` (empty, or ending in `/`). Values are
/// taken as they appear in the key (not unescaped).
pub fn infer_partitions<'a>(
    folder: &str,
    keys: impl IntoIterator<Item = &'a str>,
) -> Result<Layout, LayoutError> {
    let mut first: Option<(&str, Vec<String>)> = None;
    let mut partitions = BTreeSet::new();
    for key in keys {
        let rest = key
            .strip_prefix(folder)
            .ok_or_else(|| LayoutError::Outside {
                key: key.to_string(),
                folder: folder.to_string(),
            })?;
        let dirs: Vec<&str> = match rest.rsplit_once('/') {
            Some((dirs, _file)) => dirs.split('/').collect(),
            None => Vec::new(),
        };
        let hive: Vec<(String, &str)> = dirs.iter().filter_map(|d| hive_segment(d)).collect();
        if !hive.is_empty() && hive.len() != dirs.len() {
            return Err(LayoutError::Mixed(key.to_string()));
        }
        let names: Vec<String> = hive.iter().map(|(n, _)| n.clone()).collect();
        match &first {
            None => first = Some((key, names.clone())),
            Some((first_key, first_names)) if *first_names != names => {
                return Err(LayoutError::Disagree {
                    first: first_key.to_string(),
                    first_keys: first_names.clone(),
                    key: key.to_string(),
                    keys: names,
                });
            }
            Some(_) => {}
        }
        if !hive.is_empty() {
            partitions.insert(Partition {
                values: hive.iter().map(|(_, v)| v.to_string()).collect(),
                folder: format!("{folder}{}/", dirs.join("/")),
            });
        }
    }
    Ok(Layout {
        partition_keys: first.map(|(_, names)| names).unwrap_or_default(),
        partitions: partitions.into_iter().collect(),
    })
}

impl TableDef {
    /// The table of `dataset` in `bucket`, its columns from `schema`, partitioned by `partition_keys`.
    /// A partition key that is also a column is refused: a table cannot have both.
    pub fn of(
        dataset: &DatasetConfig,
        schema: &TableSchema,
        bucket: &str,
        partition_keys: Vec<String>,
    ) -> Result<TableDef, LayoutError> {
        let columns: Vec<Column> = schema
            .fields
            .iter()
            .map(|f| Column {
                name: f.name.clone(),
                column_type: f.field_type.into(),
            })
            .collect();
        if let Some(k) = partition_keys
            .iter()
            .find(|k| columns.iter().any(|c| c.name.eq_ignore_ascii_case(k)))
        {
            return Err(LayoutError::KeyIsColumn(k.clone()));
        }
        let format = match dataset.format {
            FileFormat::Csv => {
                let CsvOptions {
                    delimiter,
                    quote,
                    header,
                } = dataset.csv.clone();
                TableFormat::Csv {
                    delimiter,
                    quote,
                    header,
                }
            }
            FileFormat::Jsonl => TableFormat::JsonLines,
        };
        Ok(TableDef {
            dataset: dataset.name.clone(),
            name: dataset.name.replace('-', "_"),
            bucket: bucket.to_string(),
            folder: dataset.folder().to_string(),
            columns,
            partition_keys,
            format,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CatalogMode, CompressionSetting, KeyMatch, SchemaSource};

    fn keys(layout: &Layout) -> Vec<&str> {
        layout.partition_keys.iter().map(String::as_str).collect()
    }

    #[test]
    fn frictionless_types_map_to_hive_types() {
        use FieldType::*;
        let mapped: Vec<&str> = [
            String, Integer, Number, Boolean, Date, Datetime, Time, Year, Any,
        ]
        .into_iter()
        .map(|t| ColumnType::from(t).as_str())
        .collect();
        for name in &mapped {
            let t = ColumnType::from_name(&name.to_uppercase()).unwrap();
            assert_eq!(t.as_str(), *name);
        }
        assert_eq!(ColumnType::from_name("int"), None);
        assert_eq!(
            mapped,
            [
                "string",
                "bigint",
                "double",
                "boolean",
                "date",
                "timestamp",
                "string",
                "string",
                "string"
            ]
        );
    }

    #[test]
    fn hive_folders_become_partitions() {
        let l = infer_partitions(
            "sales/",
            [
                "sales/region=eu/day=2026-11-26/a.csv",
                "sales/region=eu/day=2026-11-26/b.csv",
                "sales/Region=us/day=2026-11-25/c.csv",
            ],
        )
        .unwrap();
        assert_eq!(keys(&l), ["region", "day"]);
        assert_eq!(
            l.partitions,
            [
                Partition {
                    values: vec!["eu".into(), "2026-11-26".into()],
                    folder: "sales/region=eu/day=2026-11-26/".into(),
                },
                Partition {
                    values: vec!["us".into(), "2026-11-25".into()],
                    folder: "sales/Region=us/day=2026-11-25/".into(),
                },
            ]
        );
    }

    #[test]
    fn keys_without_hive_folders_make_an_unpartitioned_table() {
        for keys in [
            &["sales/a.csv", "sales/2026/11/b.csv"][..],
            &["sales/a=/b.csv"][..],
            &[][..],
        ] {
            let l = infer_partitions("sales/", keys.iter().copied()).unwrap();
            assert_eq!(l, Layout::default(), "{keys:?}");
        }
        let l = infer_partitions("", ["day=1/a.csv"]).unwrap();
        assert_eq!(keys(&l), ["day"]);
        assert_eq!(l.partitions[0].folder, "day=1/");
    }

    #[test]
    fn inconsistent_layouts_are_refused() {
        assert!(matches!(
            infer_partitions("s/", ["s/region=eu/2026/a.csv"]),
            Err(LayoutError::Mixed(_))
        ));
        assert!(matches!(
            infer_partitions("s/", ["s/region=eu/a.csv", "s/b.csv"]),
            Err(LayoutError::Disagree { .. })
        ));
        assert!(matches!(
            infer_partitions("s/", ["s/region=eu/a.csv", "s/day=1/region=eu/b.csv"]),
            Err(LayoutError::Disagree { .. })
        ));
        assert!(matches!(
            infer_partitions("s/", ["t/a.csv"]),
            Err(LayoutError::Outside { .. })
        ));
    }

    #[test]
    fn tables_follow_the_schema_and_the_dataset() {
        let schema = TableSchema::parse(
            r#"{"fields":[{"name":"id","type":"integer"},{"name":"at","type":"datetime"},
                          {"name":"note"}]}"#,
        )
        .unwrap();
        let mut d = DatasetConfig {
            name: "sales-eu".into(),
            key_match: KeyMatch {
                prefix: None,
                pattern: Some("sales/**/*.csv".into()),
            },
            format: FileFormat::Csv,
            compression: CompressionSetting::Auto,
            csv: CsvOptions::default(),
            schema: SchemaSource::Path("s.json".into()),
            catalog: CatalogMode::Direct,
            crawler: None,
            job: "builtin".into(),
            batch_window_secs: 1,
            batch_max_files: 10,
            personal_data: Vec::new(),
        };
        let t = TableDef::of(&d, &schema, "in", vec!["day".into()]).unwrap();
        assert_eq!(t.name, "sales_eu");
        assert_eq!((t.bucket.as_str(), t.folder.as_str()), ("in", "sales/"));
        let cols: Vec<(&str, &str)> = t
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.column_type.as_str()))
            .collect();
        assert_eq!(
            cols,
            [("id", "bigint"), ("at", "timestamp"), ("note", "string")]
        );
        assert_eq!(
            t.format,
            TableFormat::Csv {
                delimiter: ',',
                quote: '"',
                header: true
            }
        );
        d.format = FileFormat::Jsonl;
        let t = TableDef::of(&d, &schema, "in", vec![]).unwrap();
        assert_eq!(t.format.classification(), "json");
        assert_eq!(
            TableDef::of(&d, &schema, "in", vec!["ID".into()]),
            Err(LayoutError::KeyIsColumn("ID".into()))
        );
    }
}
