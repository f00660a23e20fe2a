//! What registering a table over the one a catalog holds comes to: one rule for every catalog.
//!
//! Names (columns and partition keys) compare case-insensitively, as Glue and Athena keep them
//! lowercased. Partition keys cannot change under a table, since its partitions would no longer
//! fit: a difference there is refused. Any other difference (columns, types, location, format) is
//! rewritten, as is a table the catalog cannot read back as one Choreo registers.

use super::TableDef;

/// A table as a catalog reads it back, for [`TableDef::diff`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    /// One that reads back whole as a table registered directly.
    Direct(TableDef),
    /// Anything else: a crawled table, or one edited by hand into a shape Choreo never writes.
    /// `partition_keys` are its keys when the catalog records them (a local crawl records none).
    Other { partition_keys: Option<Vec<String>> },
}

/// What [`TableDef::diff`] finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableDiff {
    /// The table is as wanted: nothing to write.
    Same,
    /// The table is rewritten with the one wanted.
    Changed,
}

/// A table partitioned by other keys than the batch. Permanent: the table has to be dropped (or
/// the dataset's folders changed) by hand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the table is partitioned by {have:?}, the batch by {want:?}")]
pub struct KeysDiffer {
    pub have: Vec<String>,
    pub want: Vec<String>,
}

fn same_names(a: &[String], b: &[String]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a.eq_ignore_ascii_case(b))
}

impl TableDef {
    /// What registering `self` over `existing` takes (see the module docs). The dataset and table
    /// names are not compared: the catalog found `existing` by them.
    pub fn diff(&self, existing: &Registered) -> Result<TableDiff, KeysDiffer> {
        let have = match existing {
            Registered::Direct(t) => Some(&t.partition_keys),
            Registered::Other { partition_keys } => partition_keys.as_ref(),
        };
        if let Some(have) = have
            && !same_names(have, &self.partition_keys)
        {
            return Err(KeysDiffer {
                have: have.clone(),
                want: self.partition_keys.clone(),
            });
        }
        let Registered::Direct(t) = existing else {
            return Ok(TableDiff::Changed);
        };
        let same = t.bucket == self.bucket
            && t.folder == self.folder
            && t.format == self.format
            && t.columns.len() == self.columns.len()
            && t.columns.iter().zip(&self.columns).all(|(a, b)| {
                a.name.eq_ignore_ascii_case(&b.name) && a.column_type == b.column_type
            });
        Ok(if same {
            TableDiff::Same
        } else {
            TableDiff::Changed
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Column, ColumnType, TableFormat};

    fn table(keys: &[&str]) -> TableDef {
        TableDef {
            dataset: "sales".into(),
            name: "sales".into(),
            bucket: "in".into(),
            folder: "sales/".into(),
            columns: vec![
                Column {
                    name: "id".into(),
                    column_type: ColumnType::Bigint,
                },
                Column {
                    name: "amount".into(),
                    column_type: ColumnType::Double,
                },
            ],
            partition_keys: keys.iter().map(|k| k.to_string()).collect(),
            format: TableFormat::Csv {
                delimiter: ',',
                quote: '"',
                header: true,
            },
        }
    }

    fn direct(t: &TableDef) -> Registered {
        Registered::Direct(t.clone())
    }

    #[test]
    fn a_table_as_wanted_is_left_whatever_the_case_of_its_names() {
        let t = table(&["day"]);
        assert_eq!(t.diff(&direct(&t)), Ok(TableDiff::Same));
        let mut upper = t.clone();
        upper.columns[0].name = "ID".into();
        upper.partition_keys = vec!["Day".into()];
        assert_eq!(t.diff(&direct(&upper)), Ok(TableDiff::Same));
        let mut renamed = t.clone();
        renamed.dataset = "other".into();
        renamed.name = "other".into();
        assert_eq!(
            t.diff(&direct(&renamed)),
            Ok(TableDiff::Same),
            "found by name"
        );
    }

    #[test]
    fn any_other_difference_rewrites_the_table() {
        let t = table(&["day"]);
        let changes: [fn(&mut TableDef); 7] = [
            |t| t.columns[1].column_type = ColumnType::String,
            |t| t.columns[1].name = "total".into(),
            |t| drop(t.columns.pop()),
            |t| t.bucket = "out".into(),
            |t| t.folder = "sales/eu/".into(),
            |t| t.format = TableFormat::JsonLines,
            |t| {
                t.format = TableFormat::Csv {
                    delimiter: ',',
                    quote: '"',
                    header: false,
                }
            },
        ];
        for (i, change) in changes.iter().enumerate() {
            let mut existing = t.clone();
            change(&mut existing);
            assert_eq!(
                t.diff(&direct(&existing)),
                Ok(TableDiff::Changed),
                "change {i}"
            );
        }
        let crawled = Registered::Other {
            partition_keys: None,
        };
        assert_eq!(t.diff(&crawled), Ok(TableDiff::Changed));
        let hand_made = Registered::Other {
            partition_keys: Some(vec!["DAY".into()]),
        };
        assert_eq!(t.diff(&hand_made), Ok(TableDiff::Changed));
    }

    #[test]
    fn other_partition_keys_are_refused() {
        let t = table(&["day"]);
        for have in [&[][..], &["region", "day"][..], &["month"][..]] {
            let existing = table(have);
            let err = t.diff(&direct(&existing)).unwrap_err();
            assert_eq!(err.have, existing.partition_keys);
            let other = Registered::Other {
                partition_keys: Some(existing.partition_keys.clone()),
            };
            assert_eq!(t.diff(&other), Err(err));
        }
        let err = table(&[]).diff(&direct(&t)).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"the table is partitioned by ["day"], the batch by []"#
        );
    }
}
