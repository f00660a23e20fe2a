//! Direct cataloguing on the local backend: a dataset that declares `catalog = "direct"` is
//! catalogued from its schema and its keys' `name=value` folders, without a crawl.

use crate::helpers::{TestApp, steps};
use choreo::app::Pipeline;
use choreo_backend::Backend;
use choreo_domain::FileState;
use choreo_domain::config::CatalogMode;
use choreo_local::LocalCatalog;
use std::sync::Arc;

const ORDERS: &str = "order_id,order_date,customer,email,amount,currency,quantity\n";

/// The demo with its daily sales catalogued directly.
async fn direct_app() -> TestApp {
    let mut app = TestApp::new(|c| {
        for d in &mut c.datasets {
            if d.name == "sales_daily" {
                d.catalog = CatalogMode::Direct;
            }
        }
    })
    .await;
    app.start();
    app
}

fn catalog(pipeline: &Pipeline) -> Arc<LocalCatalog> {
    match &pipeline.backend {
        Backend::Local(b) => b.catalog(),
        Backend::Aws(_) => panic!("a local pipeline"),
    }
}

/// Rows of the local crawler's `crawls` table: one per crawler that ever started.
fn crawls(pipeline: &Pipeline) -> i64 {
    let db = pipeline.settings.config.data_dir.join("choreo.db");
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("SELECT COUNT(*) FROM crawls", [], |r| r.get(0))
        .unwrap()
}

fn order(id: u32, day: &str) -> Vec<u8> {
    format!("{ORDERS}{id},{day},Ada Rossi,a@example.com,4.20,EUR,2\n").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_dataset_is_catalogued_without_a_crawl() {
    let mut app = direct_app().await;
    let keys = [
        ("daily/region=eu/day=2026-11-26/a.csv", "2026-11-26"),
        ("daily/region=eu/day=2026-11-26/b.csv", "2026-11-26"),
        ("daily/region=us/day=2026-11-25/c.csv", "2026-11-25"),
    ];
    for (i, (key, day)) in keys.iter().enumerate() {
        app.put(key, &order(i as u32, day)).await;
    }
    app.settle().await;
    let records = app.by_key().await;
    app.stop().await;

    assert_eq!(records.len(), keys.len());
    for r in records.values() {
        assert_eq!(r.state, FileState::Ingested, "{}: {:?}", r.key, r.reason);
        assert!(
            steps(r).contains(&(
                "crawler".into(),
                Some(FileState::Valid),
                FileState::Cataloged
            )),
            "{r:#?}"
        );
    }

    let catalog = catalog(&app.pipeline);
    let table = catalog.table("sales_daily").unwrap().expect("a table");
    assert_eq!(table.crawler, "direct");
    assert_eq!(
        table.columns,
        [
            "order_id",
            "order_date",
            "customer",
            "email",
            "amount",
            "currency",
            "quantity"
        ]
    );
    assert_eq!(
        table.types.as_deref().unwrap(),
        [
            "bigint", "date", "string", "string", "double", "string", "bigint"
        ]
    );
    assert_eq!(table.partition_keys, ["region", "day"]);
    assert_eq!(table.location, "choreo-input/daily/");
    assert_eq!(table.format.unwrap()["header"], true);
    let partitions: Vec<(Vec<String>, String)> = catalog
        .partitions("sales_daily")
        .unwrap()
        .into_iter()
        .map(|p| (p.values, p.location))
        .collect();
    assert_eq!(
        partitions,
        [
            (
                vec!["eu".to_string(), "2026-11-26".to_string()],
                "choreo-input/daily/region=eu/day=2026-11-26/".to_string()
            ),
            (
                vec!["us".to_string(), "2026-11-25".to_string()],
                "choreo-input/daily/region=us/day=2026-11-25/".to_string()
            ),
        ]
    );
    assert_eq!(crawls(&app.pipeline), 0, "no crawler ran");
}

/// A layout the table cannot hold fails the batch as a failed crawl would, with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layout_the_table_cannot_hold_fails_the_batch() {
    let mut app = direct_app().await;
    app.put("daily/region=eu/a.csv", &order(1, "2026-11-26"))
        .await;
    app.settle().await;
    // The table is partitioned by region now; an object outside any partition cannot join it.
    app.put("daily/b.csv", &order(2, "2026-11-26")).await;
    app.settle().await;
    let records = app.by_key().await;
    app.stop().await;

    assert_eq!(records["daily/region=eu/a.csv"].state, FileState::Ingested);
    let failed = &records["daily/b.csv"];
    assert_eq!(failed.state, FileState::Failed, "{failed:#?}");
    let reason = failed.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("cataloguing failed") && reason.contains("partitioned by"),
        "{reason}"
    );
    let catalog = catalog(&app.pipeline);
    assert_eq!(catalog.partitions("sales_daily").unwrap().len(), 1);
    assert_eq!(crawls(&app.pipeline), 0);
}
