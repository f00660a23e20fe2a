//! [`Catalog`]'s contract, on an empty catalog (Glue: its database exists, without tables).

use crate::{Catalog, PortErrorKind, TableOutcome};
use choreo_domain::catalog::{Column, ColumnType, Partition, TableDef, TableFormat};

/// Every case of [`Catalog`]'s contract.
pub async fn catalog_contract(c: &dyn Catalog) {
    a_table_is_created_then_left_or_updated_to_its_definition(c).await;
    partitions_are_added_once_in_any_number(c).await;
}

/// The contract's table: dataset `sales` under `sales/` in `choreo-input`, a CSV of `id` (bigint)
/// and `amount` (double), partitioned by `keys`. For adapters' own tests too.
pub fn table(keys: &[&str]) -> TableDef {
    TableDef {
        dataset: "sales".into(),
        name: "sales".into(),
        bucket: "choreo-input".into(),
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

/// One change to a table's definition.
type Change = fn(&mut TableDef);

/// A partition of [`table`]`(["region", "day"])`.
pub fn partition(region: &str, day: u32) -> Partition {
    Partition {
        values: vec![region.into(), format!("{day}")],
        folder: format!("sales/region={region}/day={day}/"),
    }
}

async fn a_table_is_created_then_left_or_updated_to_its_definition(c: &dyn Catalog) {
    let mut t = table(&["region", "day"]);
    assert_eq!(c.ensure_table(&t).await.unwrap(), TableOutcome::Created);
    assert_eq!(c.ensure_table(&t).await.unwrap(), TableOutcome::Unchanged);
    // Each kind of change is an update, and the next call finds the table as defined.
    let changes: [(&str, Change); 4] = [
        ("a type", |t| t.columns[1].column_type = ColumnType::String),
        ("a column", |t| {
            t.columns.push(Column {
                name: "note".into(),
                column_type: ColumnType::String,
            })
        }),
        ("the format", |t| t.format = TableFormat::JsonLines),
        ("the location", |t| t.folder = "sales-v2/".into()),
    ];
    for (what, change) in changes {
        change(&mut t);
        assert_eq!(
            c.ensure_table(&t).await.unwrap(),
            TableOutcome::Updated,
            "{what}"
        );
        assert_eq!(
            c.ensure_table(&t).await.unwrap(),
            TableOutcome::Unchanged,
            "{what}"
        );
    }
    for keys in [&["day"][..], &[], &["day", "region"]] {
        let mut other = t.clone();
        other.partition_keys = keys.iter().map(|k| k.to_string()).collect();
        let err = c.ensure_table(&other).await.unwrap_err();
        assert_eq!(err.kind, PortErrorKind::Permanent, "{keys:?}: {err}");
    }
    assert_eq!(c.ensure_table(&t).await.unwrap(), TableOutcome::Unchanged);
}

async fn partitions_are_added_once_in_any_number(c: &dyn Catalog) {
    let t = table(&["region", "day"]);
    c.ensure_table(&t).await.unwrap();
    // More than one Glue batch (100); then again, with five new ones among them, out of order.
    let first: Vec<Partition> = (0..150).map(|d| partition("eu", d)).collect();
    assert_eq!(c.add_partitions(&t, &first).await.unwrap(), 150);
    let mut again: Vec<Partition> = (0..5).map(|d| partition("us", d)).collect();
    again.extend(first[..50].iter().rev().cloned());
    assert_eq!(c.add_partitions(&t, &again).await.unwrap(), 5);
    assert_eq!(c.add_partitions(&t, &again).await.unwrap(), 0);
    assert_eq!(c.add_partitions(&t, &[]).await.unwrap(), 0);
}
