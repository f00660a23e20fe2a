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

/// Many files and small batches: full batches close at once, several timers at a time, and each
/// file lands in exactly one batch, none of them empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_batches_split_the_files_without_overlap() {
    const FILES: u32 = 12;
    let mut app = TestApp::new(|c| {
        for d in &mut c.datasets {
            if d.name == "sales_daily" {
                d.catalog = CatalogMode::Direct;
                d.batch_max_files = 3;
            }
        }
    })
    .await;
    app.start();
    for i in 0..FILES {
        let day = format!("2026-11-{:02}", 10 + i % 4);
        app.put(&format!("daily/day={day}/{i}.csv"), &order(i, &day))
            .await;
    }
    app.settle().await;
    let records = app.by_key().await;
    app.stop().await;
    assert_eq!(records.len(), FILES as usize);
    assert!(
        records.values().all(|r| r.state == FileState::Ingested),
        "{records:#?}"
    );
    let ports = app.pipeline.backend.ports();
    let batches = ports
        .state
        .batches_in(choreo_domain::BatchState::Ingested)
        .await
        .unwrap();
    let mut batched: Vec<_> = batches.iter().flat_map(|b| b.files.clone()).collect();
    assert!(
        batches
            .iter()
            .all(|b| !b.files.is_empty() && b.files.len() <= 3),
        "{batches:#?}"
    );
    batched.sort();
    batched.dedup();
    assert_eq!(batched.len(), FILES as usize, "{batches:#?}");
    assert_eq!(
        catalog(&app.pipeline)
            .partitions("sales_daily")
            .unwrap()
            .len(),
        4
    );
    assert_eq!(crawls(&app.pipeline), 0);
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

/// The crawler poller's handler alone, on a pipeline that is not started: a window timer delivered
/// twice (its worker died before deleting it) makes one batch and registers its partitions once; a
/// batch whose timer was lost mid-way is finished by the sweep's `CrawlPoll`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_timers_and_sweep_pokes_catalogue_a_batch_once() {
    use choreo_domain::{Batch, BatchState, Envelope, Event, FileId, NewFile, Stage, Transition};
    use choreo_ports::ReceivedMessage;
    use choreo_runtime::ServiceContext;

    let app = TestApp::new(|c| {
        for d in &mut c.datasets {
            if d.name == "sales_daily" {
                d.catalog = CatalogMode::Direct;
            }
        }
    })
    .await;
    let pipeline = &app.pipeline;
    let ports = pipeline.backend.ports();
    let input = pipeline.settings.config.buckets.input.clone();
    let valid = |key: &str| {
        let (ports, input, key) = (ports.clone(), input.clone(), key.to_string());
        async move {
            let id = FileId::derive(&input, &key, "v1");
            let file = NewFile {
                id: id.clone(),
                dataset: "sales_daily".into(),
                bucket: input,
                key,
                size: 1,
                version: "v1".into(),
                pin: None,
                reason: None,
                trace_id: None,
                traceparent: None,
            };
            ports.state.register(file).await.unwrap();
            let t = Transition::new(
                id.clone(),
                Stage::Validator,
                FileState::New,
                FileState::Valid,
            )
            .unwrap();
            ports.state.transition(&t).await.unwrap();
            id
        }
    };
    let ctx = ServiceContext::new(
        pipeline.settings.clone(),
        ports.clone(),
        pipeline
            .backend
            .queue(&pipeline.settings.config.queues.crawl),
    );
    let handler = (choreo_crawler::SPEC.build)(&ctx);
    let delivery = |envelope: &Envelope| ReceivedMessage {
        id: envelope.id.clone(),
        receipt: "r".into(),
        body: envelope.to_json(),
        attributes: Default::default(),
        receive_count: 1,
        sent_at: chrono::Utc::now(),
        first_received_at: None,
    };

    let a = valid("daily/day=2026-11-26/a.csv").await;
    let b = valid("daily/day=2026-11-27/b.csv").await;
    let timer = Envelope::new(Event::CrawlWindowClosed {
        dataset: "sales_daily".into(),
        window: String::new(),
    });
    handler.handle(&delivery(&timer)).await.unwrap();
    handler.handle(&delivery(&timer)).await.unwrap();
    let batches = ports.state.batches_in(BatchState::Cataloged).await.unwrap();
    assert_eq!(batches.len(), 1, "{batches:#?}");
    assert!(batches[0].is_direct());
    let mut files = batches[0].files.clone();
    files.sort();
    let mut expected = vec![a.clone(), b.clone()];
    expected.sort();
    assert_eq!(files, expected);
    for id in [&a, &b] {
        let r = ports.state.get(id).await.unwrap().unwrap();
        assert_eq!(r.state, FileState::Cataloged);
        assert_eq!(r.batch_id.as_deref(), Some(batches[0].id.as_str()));
    }
    assert_eq!(
        catalog(pipeline).partitions("sales_daily").unwrap().len(),
        2
    );

    // A batch recorded by a worker that died before cataloguing it, its timer lost: the sweep pokes it.
    let c = valid("daily/day=2026-11-28/c.csv").await;
    let stranded = Batch::new(
        "b-sales_daily-stranded".into(),
        "sales_daily",
        String::new(),
        "builtin".into(),
        BatchState::Crawling,
        vec![c.clone()],
    );
    ports.state.create_batch(&stranded).await.unwrap();
    let poke = Envelope::new(Event::CrawlPoll {
        batch_id: stranded.id.clone(),
    });
    handler.handle(&delivery(&poke)).await.unwrap();
    handler.handle(&delivery(&poke)).await.unwrap();
    let stored = ports.state.get_batch(&stranded.id).await.unwrap().unwrap();
    assert_eq!(stored.state, BatchState::Cataloged);
    let r = ports.state.get(&c).await.unwrap().unwrap();
    assert_eq!(r.state, FileState::Cataloged);
    assert_eq!(
        catalog(pipeline).partitions("sales_daily").unwrap().len(),
        3
    );
    assert_eq!(crawls(pipeline), 0);
}

/// The same on AWS (moto): the bootstrap makes no crawler for the direct dataset, and after a run
/// Glue holds its table, typed from the schema, and its partitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_dataset_is_catalogued_in_glue_without_a_crawler() {
    use crate::aws::{choreo, files};
    use crate::helpers::ok;
    use choreo_aws::moto::Moto;

    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let config = choreo::demo::write_config(dir.path(), choreo::demo::CONFIG_FILE).unwrap();
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "schema = \"schemas/sales_daily.json\"",
        "schema = \"schemas/sales_daily.json\"\ncatalog = \"direct\"",
    );
    std::fs::write(&config, text).unwrap();
    ok(choreo(&moto, dir.path()).arg("bootstrap").output().unwrap());

    let clients = choreo_aws::AwsClients::emulator(&moto.endpoint).await;
    let glue = &clients.glue;
    let crawlers = glue.list_crawlers().send().await.unwrap();
    assert_eq!(crawlers.crawler_names(), ["inventory_monthly-crawler"]);

    let keys = [
        ("daily/region=eu/day=2026-11-26/a.csv", "2026-11-26"),
        ("daily/region=us/day=2026-11-25/b.csv", "2026-11-25"),
    ];
    for (i, (key, day)) in keys.iter().enumerate() {
        clients
            .s3
            .put_object()
            .bucket("choreo-input")
            .key(*key)
            .body(order(i as u32, day).into())
            .send()
            .await
            .unwrap();
    }
    ok(choreo(&moto, dir.path())
        .args(["up", "--exit-when-idle"])
        .output()
        .unwrap());
    let records = files(&moto, dir.path());
    assert_eq!(records.len(), keys.len(), "{records:#?}");
    assert!(
        records.values().all(|r| r.state.as_str() == "INGESTED"),
        "{records:#?}"
    );

    let table = glue
        .get_table()
        .database_name("choreo")
        .name("sales_daily")
        .send()
        .await
        .unwrap()
        .table
        .unwrap();
    let sd = table.storage_descriptor().unwrap();
    assert_eq!(sd.location(), Some("s3://choreo-input/daily/"));
    let columns: Vec<(&str, &str)> = sd
        .columns()
        .iter()
        .map(|c| (c.name(), c.r#type().unwrap()))
        .collect();
    assert_eq!(columns[0], ("order_id", "bigint"));
    assert_eq!(columns[4], ("amount", "double"));
    let partition_keys: Vec<&str> = table.partition_keys().iter().map(|k| k.name()).collect();
    assert_eq!(partition_keys, ["region", "day"]);
    let partitions = glue
        .get_partitions()
        .database_name("choreo")
        .table_name("sales_daily")
        .send()
        .await
        .unwrap();
    let mut found: Vec<(Vec<String>, String)> = partitions
        .partitions()
        .iter()
        .map(|p| {
            let location = p.storage_descriptor().unwrap().location().unwrap();
            (p.values().to_vec(), location.to_string())
        })
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            (
                vec!["eu".to_string(), "2026-11-26".to_string()],
                "s3://choreo-input/daily/region=eu/day=2026-11-26/".to_string()
            ),
            (
                vec!["us".to_string(), "2026-11-25".to_string()],
                "s3://choreo-input/daily/region=us/day=2026-11-25/".to_string()
            ),
        ]
    );
    // Still no crawler for it.
    let crawlers = glue.list_crawlers().send().await.unwrap();
    assert_eq!(crawlers.crawler_names(), ["inventory_monthly-crawler"]);
}
