//! Scheduled extracts end to end, against the real MariaDB and PostgreSQL of the machine
//! (`scripts/test` installs and starts them; without them these tests fail, they do not skip):
//! keys → tick → one unit per live key → CSV (gzip) in the input bucket → validated → catalogued
//! → loaded into PostgreSQL by the `warehouse` job. Each test makes its own MariaDB tables and
//! PostgreSQL schema, named with a random suffix, and drops them.

use crate::helpers::{TestApp, demo_settings};
use choreo_domain::extract::{ExtractMessage, KeyRecord, UnitState};
use choreo_domain::{AlertKind, Config, FileState};
use choreo_runtime::Settings;
use serde_json::json;
use sqlx::{AssertSqlSafe, Connection, Row};
use std::collections::BTreeMap;

pub fn mysql_url() -> String {
    std::env::var("CHOREO_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

pub fn postgres_url() -> String {
    std::env::var("CHOREO_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Runs each statement on MariaDB.
pub async fn mysql(statements: &[String]) {
    let mut c = sqlx::MySqlConnection::connect(&mysql_url())
        .await
        .expect("MariaDB at 127.0.0.1:3306 (scripts/test starts it)");
    for s in statements {
        sqlx::raw_sql(AssertSqlSafe(s.clone()))
            .execute(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{s}: {e}"));
    }
}

/// Runs each statement on PostgreSQL.
pub async fn postgres(statements: &[String]) {
    let mut c = sqlx::PgConnection::connect(&postgres_url())
        .await
        .expect("PostgreSQL at 127.0.0.1:5432 (scripts/test starts it)");
    for s in statements {
        sqlx::raw_sql(AssertSqlSafe(s.clone()))
            .execute(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{s}: {e}"));
    }
}

/// `(id, campaign, amount)` of a warehouse table, by id.
async fn rows(table: &str) -> Vec<(i32, String, String)> {
    let mut c = sqlx::PgConnection::connect(&postgres_url()).await.unwrap();
    sqlx::query(AssertSqlSafe(format!(
        "SELECT id, campaign, amount::text FROM {table} ORDER BY id"
    )))
    .fetch_all(&mut c)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

fn suffix() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// A dataset of extract files (`id,campaign,amount`) loaded by the `warehouse` job.
fn dataset(name: &str) -> serde_json::Value {
    json!({
        "name": name,
        "match": {"prefix": format!("{name}/")},
        "format": "csv",
        "catalog": "direct",
        "job": "warehouse",
        "batch_window_secs": 1,
        "schema": {"fields": [
            {"name": "id", "type": "integer", "constraints": {"required": true}},
            {"name": "campaign", "type": "string"},
            {"name": "amount", "type": "number"}
        ], "primaryKey": ["id"]}
    })
}

fn extract(
    name: &str,
    dataset: &str,
    query: &str,
    warehouse: serde_json::Value,
) -> serde_json::Value {
    json!({
        "name": name,
        // Never due during a test: ticks come from `run_now`.
        "schedule": "0 3 1 1 *",
        "time_zone": "Europe/Paris",
        "dataset": dataset,
        "query": query,
        "warehouse": warehouse,
    })
}

/// The demo pipeline plus `datasets` and `extracts`, reading this machine's databases.
async fn app(
    datasets: Vec<serde_json::Value>,
    extracts: Vec<serde_json::Value>,
    tweak: impl FnOnce(&mut Config),
) -> TestApp {
    choreo_telemetry::init_for_tests();
    let dir = tempfile::tempdir().unwrap();
    let settings = demo_settings(dir.path(), |c| {
        for d in datasets {
            c.datasets.push(serde_json::from_value(d).unwrap());
        }
        for e in extracts {
            c.extracts.push(serde_json::from_value(e).unwrap());
        }
        c.extract.mysql_url = mysql_url().into();
        c.extract.warehouse_url = postgres_url().into();
        tweak(c);
    });
    // The datasets were added after the schemas were read: read them again.
    let settings = Settings::from_config(settings.config, dir.path(), None).unwrap();
    TestApp::with_settings(dir, settings).await
}

async fn put_key(app: &TestApp, extract: &str, key: &str, params: &[(&str, &str)], enabled: bool) {
    let k = KeyRecord {
        extract: extract.into(),
        key: key.into(),
        valid_from: Some("2020-01-01".parse().unwrap()),
        valid_to: None,
        enabled,
        params: params
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        updated_at: chrono::Utc::now(),
    };
    app.pipeline
        .monitor
        .ports()
        .extracts
        .put_key(&k)
        .await
        .unwrap();
}

async fn run(app: &TestApp, extract: &str) -> String {
    let ports = app.pipeline.monitor.ports();
    let queue = app
        .pipeline
        .monitor
        .queue(&app.pipeline.settings.config.queues.extract);
    choreo_extractor::run_now(ports.extracts.as_ref(), queue.as_ref(), extract)
        .await
        .unwrap()
        .id
}

/// Each unit of the tick: key → (state, rows, reason).
async fn units(app: &TestApp, tick: &str) -> BTreeMap<String, (UnitState, Option<u64>, String)> {
    app.pipeline
        .monitor
        .ports()
        .extracts
        .units(tick)
        .await
        .unwrap()
        .into_iter()
        .map(|u| (u.key, (u.state, u.rows, u.reason.unwrap_or_default())))
        .collect()
}

/// The states of the files under `prefix`.
async fn states(app: &TestApp, prefix: &str) -> Vec<(String, FileState)> {
    app.by_key()
        .await
        .into_iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(k, r)| (k, r.state))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_keys_are_extracted_once_each_and_replace_their_rows_in_the_warehouse() {
    let s = suffix();
    let (src, schema) = (format!("test.campaign_src_{s}"), format!("choreo_e2e_{s}"));
    let table = format!("{schema}.campaign_rows");
    mysql(&[
        format!("CREATE TABLE {src} (id INT PRIMARY KEY, campaign VARCHAR(32), amount DECIMAL(10,2), note TEXT)"),
        format!("INSERT INTO {src} VALUES (1,'spring',10.50,'a, \"quoted\" note'),(2,'spring',20,NULL),(3,'spring',30,'x'),(4,'summer',40,'y'),(5,'summer',50,'z'),(6,'winter',60,'w')"),
    ])
    .await;
    postgres(&[
        format!("CREATE SCHEMA {schema}"),
        format!("CREATE TABLE {table} (id INT PRIMARY KEY, campaign TEXT NOT NULL, amount NUMERIC(10,2))"),
        // A stale row of a key that is reloaded, and a row of a key no tick touches.
        format!("INSERT INTO {table} VALUES (99, 'spring', 1), (100, 'autumn', 2)"),
    ])
    .await;
    let mut app = app(
        vec![dataset("campaign_rows")],
        vec![extract(
            "campaigns",
            "campaign_rows",
            &format!(
                "SELECT id, campaign, amount FROM {src} WHERE campaign = :campaign ORDER BY id"
            ),
            json!({"table": table, "mode": "replace", "key_column": "campaign"}),
        )],
        |_| {},
    )
    .await;
    put_key(&app, "campaigns", "spring", &[("campaign", "spring")], true).await;
    put_key(&app, "campaigns", "summer", &[("campaign", "summer")], true).await;
    put_key(
        &app,
        "campaigns",
        "winter",
        &[("campaign", "winter")],
        false,
    )
    .await;
    // A key without the query's parameter fails alone.
    put_key(&app, "campaigns", "nameless", &[], true).await;
    app.start();

    let tick = run(&app, "campaigns").await;
    app.settle().await;
    let u = units(&app, &tick).await;
    assert_eq!(u.len(), 3, "the disabled key has no unit: {u:?}");
    assert_eq!(u["spring"].0, UnitState::Extracted, "{u:?}");
    assert_eq!(u["spring"].1, Some(3));
    assert_eq!(u["summer"].1, Some(2));
    assert_eq!(u["nameless"].0, UnitState::Failed);
    assert!(u["nameless"].2.contains(":campaign"), "{u:?}");
    let files = states(&app, "campaign_rows/").await;
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(
        files.iter().all(|(_, s)| *s == FileState::Ingested),
        "{files:?}"
    );
    let loaded = rows(&table).await;
    let money = |id: i32, c: &str, a: &str| (id, c.to_string(), a.to_string());
    assert_eq!(
        loaded,
        [
            money(1, "spring", "10.50"),
            money(2, "spring", "20.00"),
            money(3, "spring", "30.00"),
            money(4, "summer", "40.00"),
            money(5, "summer", "50.00"),
            money(100, "autumn", "2.00"),
        ]
    );
    let alerts = app.pipeline.monitor.ports().audit.alerts(50).await.unwrap();
    assert!(
        alerts
            .iter()
            .any(|a| a.kind == AlertKind::ExtractFailed
                && a.keys[0].starts_with("campaigns/nameless")),
        "{alerts:#?}"
    );

    // The same tick delivered again: every unit is done or failed, nothing is extracted twice.
    let queue = app
        .pipeline
        .monitor
        .queue(&app.pipeline.settings.config.queues.extract);
    let again = ExtractMessage::ExtractTick {
        extract: "campaigns".into(),
        tick_id: tick.clone(),
    };
    choreo_extractor::send(queue.as_ref(), &again)
        .await
        .unwrap();
    choreo_extractor::send(queue.as_ref(), &again)
        .await
        .unwrap();
    app.settle().await;
    assert_eq!(states(&app, "campaign_rows/").await.len(), 2);
    let ports = app.pipeline.monitor.ports();
    for unit in ports.extracts.units(&tick).await.unwrap() {
        assert_eq!(unit.attempts, 1, "{unit:?}");
    }

    // New rows at the source, a key's parameters edited without a restart: the next tick
    // replaces that key's rows, in one transaction.
    mysql(&[format!("INSERT INTO {src} VALUES (7,'spring',70,'new')")]).await;
    put_key(
        &app,
        "campaigns",
        "nameless",
        &[("campaign", "nothing-matches")],
        true,
    )
    .await;
    let second = run(&app, "campaigns").await;
    app.settle().await;
    let u = units(&app, &second).await;
    assert_eq!(u["spring"].1, Some(4), "{u:?}");
    assert_eq!(
        u["nameless"],
        (UnitState::Extracted, Some(0), String::new())
    );
    let loaded = rows(&table).await;
    assert_eq!(loaded.iter().filter(|r| r.1 == "spring").count(), 4);
    assert_eq!(loaded.iter().filter(|r| r.1 == "summer").count(), 2);
    assert!(loaded.contains(&money(100, "autumn", "2.00")));

    app.stop().await;
    mysql(&[format!("DROP TABLE {src}")]).await;
    postgres(&[format!("DROP SCHEMA {schema} CASCADE")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_fails_only_its_key_and_a_retry_resumes_it() {
    let s = suffix();
    let (src, schema) = (format!("test.bad_src_{s}"), format!("choreo_e2e_{s}"));
    let missing_src = format!("test.bad_missing_{s}");
    mysql(&[
        format!("CREATE TABLE {src} (id INT PRIMARY KEY, campaign VARCHAR(32), amount DOUBLE, extra INT)"),
        format!("INSERT INTO {src} VALUES (1,'a',1.5,7),(2,'a',2.5,8)"),
    ])
    .await;
    postgres(&[
        format!("CREATE SCHEMA {schema}"),
        // No primary key: the retried key appends the same ids again.
        format!("CREATE TABLE {schema}.fine (id INT, campaign TEXT, amount DOUBLE PRECISION)"),
    ])
    .await;
    let query = |from: &str, extra: &str| {
        format!(
            "SELECT id, campaign, amount{extra} FROM {from} WHERE campaign = :campaign ORDER BY id"
        )
    };
    let mut app = app(
        vec![
            dataset("fine_rows"),
            dataset("wide_rows"),
            dataset("absent_rows"),
            dataset("unsourced_rows"),
        ],
        vec![
            extract("fine", "fine_rows", &query(&src, ""), json!({"table": format!("{schema}.fine"), "mode": "append"})),
            // A column the schema does not expect: the file is rejected and quarantined.
            extract("wide", "wide_rows", &query(&src, ", extra"), json!({"table": format!("{schema}.fine"), "mode": "append"})),
            // A warehouse table that does not exist (yet): the batch fails, a retry loads it.
            extract("absent", "absent_rows", &query(&src, ""), json!({"table": format!("{schema}.absent"), "mode": "upsert", "primary_key": ["id"]})),
            // A source table that does not exist (yet): the unit fails, a retry extracts it.
            extract("unsourced", "unsourced_rows", &query(&missing_src, ""), json!({"table": format!("{schema}.fine"), "mode": "append"})),
        ],
        |_| {},
    )
    .await;
    for e in ["fine", "wide", "absent", "unsourced"] {
        put_key(&app, e, "a", &[("campaign", "a")], true).await;
    }
    app.start();
    let mut ticks = BTreeMap::new();
    for e in ["fine", "wide", "absent", "unsourced"] {
        ticks.insert(e, run(&app, e).await);
    }
    // A tick for an extract no one configured.
    let queue = app
        .pipeline
        .monitor
        .queue(&app.pipeline.settings.config.queues.extract);
    let unknown = ExtractMessage::ExtractTick {
        extract: "nowhere".into(),
        tick_id: "nowhere@manual".into(),
    };
    choreo_extractor::send(queue.as_ref(), &unknown)
        .await
        .unwrap();
    app.settle().await;

    assert_eq!(
        units(&app, &ticks["fine"]).await["a"].0,
        UnitState::Extracted
    );
    assert_eq!(states(&app, "fine_rows/").await[0].1, FileState::Ingested);
    assert_eq!(rows(&format!("{schema}.fine")).await.len(), 2);
    assert_eq!(
        states(&app, "wide_rows/").await[0].1,
        FileState::Quarantined
    );
    let absent = app
        .by_key()
        .await
        .into_iter()
        .find(|(k, _)| k.starts_with("absent_rows/"))
        .unwrap()
        .1;
    assert_eq!(absent.state, FileState::Failed);
    let reason = absent.reason.clone().unwrap_or_default();
    assert!(
        reason.contains(&format!("{schema}.absent does not exist")),
        "{reason}"
    );
    let u = units(&app, &ticks["unsourced"]).await;
    assert_eq!(u["a"].0, UnitState::Failed);
    assert!(u["a"].2.contains("doesn't exist"), "{u:?}");
    assert!(states(&app, "unsourced_rows/").await.is_empty());
    let alerts = app.pipeline.monitor.ports().audit.alerts(50).await.unwrap();
    let kinds: Vec<(&str, &str)> = alerts
        .iter()
        .map(|a| (a.kind.as_str(), a.dataset.as_str()))
        .collect();
    for expected in [
        ("ExtractFailed", "unsourced_rows"),
        ("ExtractFailed", ""),
        ("FileRejected", "wide_rows"),
        ("BatchFailed", "absent_rows"),
    ] {
        assert!(kinds.contains(&expected), "{expected:?} in {kinds:?}");
    }

    // Fix both, retry both: the extract resumes its FAILED unit, the files' retry reloads.
    mysql(&[format!("CREATE TABLE {missing_src} AS SELECT * FROM {src}")]).await;
    postgres(&[
        format!("CREATE TABLE {schema}.absent (id INT PRIMARY KEY, campaign TEXT, amount DOUBLE PRECISION)"),
        format!("INSERT INTO {schema}.absent VALUES (1, 'old', 0)"),
    ])
    .await;
    let ports = app.pipeline.monitor.ports();
    let resumed =
        choreo_extractor::retry(ports.extracts.as_ref(), queue.as_ref(), &ticks["unsourced"])
            .await
            .unwrap();
    assert_eq!(resumed, ["a"]);
    let report = app
        .pipeline
        .retry(&choreo_runtime::retry::RetryScope::Dataset(
            "absent_rows".into(),
        ))
        .await
        .unwrap();
    assert_eq!(report.retried(), 1, "{report:?}");
    app.settle().await;
    assert_eq!(
        units(&app, &ticks["unsourced"]).await["a"].0,
        UnitState::Extracted
    );
    assert_eq!(rows(&format!("{schema}.fine")).await.len(), 4, "appended");
    // Upserted: the old row of id 1 updated, id 2 added.
    assert_eq!(
        rows(&format!("{schema}.absent")).await,
        [
            (1, "a".to_string(), "1.5".to_string()),
            (2, "a".to_string(), "2.5".to_string())
        ]
    );

    app.stop().await;
    mysql(&[
        format!("DROP TABLE {src}"),
        format!("DROP TABLE {missing_src}"),
    ])
    .await;
    postgres(&[format!("DROP SCHEMA {schema} CASCADE")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mysql_that_is_down_fails_the_unit_with_a_clear_reason() {
    let mut app = app(
        vec![dataset("down_rows")],
        vec![extract(
            "down",
            "down_rows",
            "SELECT id FROM t WHERE c = :key",
            serde_json::Value::Null,
        )],
        // Nothing listens on port 9 (discard) of loopback here; a password to check it is hidden.
        |c| c.extract.mysql_url = "mysql://etl:hunter2@127.0.0.1:9/test".into(),
    )
    .await;
    put_key(&app, "down", "k", &[], true).await;
    app.start();
    let tick = run(&app, "down").await;
    app.settle().await;
    let u = units(&app, &tick).await;
    assert_eq!(u["k"].0, UnitState::Failed);
    assert!(u["k"].2.starts_with("MySQL is unreachable"), "{u:?}");
    assert!(!u["k"].2.contains("hunter2"), "{u:?}");
    app.stop().await;
}

const EXTRACT_TOML: &str = r#"
[[datasets]]
name = "campaign_rows"
match = { prefix = "campaign_rows/" }
format = "csv"
job = "warehouse"
schema = { fields = [{ name = "id", type = "integer" }] }

[[extracts]]
name = "campaigns"
schedule = "0 3 1 1 *"
dataset = "campaign_rows"
query = "SELECT id FROM t WHERE c = :campaign"
"#;

#[test]
fn keys_and_ticks_from_the_command_line() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let file = choreo::demo::write_config(dir.path(), choreo::demo::CONFIG_FILE).unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap()
        .write_all(EXTRACT_TOML.as_bytes())
        .unwrap();
    let choreo = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_choreo"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let json = |args: &[&str]| -> serde_json::Value {
        serde_json::from_str(&crate::helpers::ok(choreo(args))).unwrap()
    };
    crate::helpers::ok(choreo(&[
        "keys",
        "put",
        "campaigns",
        "spring",
        "--from",
        "2026-01-01",
        "--param",
        "campaign=spring",
    ]));
    let keys = json(&["keys", "list", "campaigns", "--json"]);
    assert_eq!(keys[0]["key"], "spring");
    assert_eq!(keys[0]["params"]["campaign"], "spring");
    assert_eq!(keys[0]["valid_from"], "2026-01-01");
    assert_eq!(keys[0]["enabled"], true);
    crate::helpers::ok(choreo(&["keys", "disable", "campaigns", "spring"]));
    assert_eq!(
        json(&["keys", "list", "campaigns", "--json"])[0]["enabled"],
        false
    );

    let refused = choreo(&["keys", "put", "campaigns", "a/b"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("names a folder"));
    assert_eq!(
        choreo(&["keys", "disable", "campaigns", "nope"])
            .status
            .code(),
        Some(1)
    );
    let unknown = choreo(&["extract", "run", "nope"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no extract named"));

    let tick = crate::helpers::ok(choreo(&["extract", "run", "campaigns"]));
    let tick = tick.trim();
    assert!(
        tick.starts_with("campaigns@") && tick.contains("-manual-"),
        "{tick}"
    );
    let ticks = json(&["extract", "ticks", "campaigns", "--json"]);
    assert_eq!(ticks[0]["tick"]["id"], tick);
    assert_eq!(
        ticks[0]["units"],
        json!([]),
        "not fanned out: nothing runs the extractor"
    );
    let list = json(&["extract", "list", "--json"]);
    assert_eq!(list[0]["name"], "campaigns");
    assert_eq!(list[0]["keys"], 1);
    assert_eq!(list[0]["last_tick"], tick);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_ticks_through_the_api() {
    use crate::http::Http;
    use hyper::{Method, StatusCode};
    const TOKEN: &str = "extract-token-9c2e";
    let mut app = app(
        vec![dataset("api_rows")],
        vec![extract(
            "api",
            "api_rows",
            "SELECT id FROM t WHERE c = :campaign",
            serde_json::Value::Null,
        )],
        |c| {
            c.operations.listen = Some("127.0.0.1:0".into());
            c.operations.api_token = Some(TOKEN.into());
        },
    )
    .await;
    app.start();
    let path = choreo_auditor::server::addr_file(&app.pipeline.settings.config.data_dir);
    let mut addr = None;
    for _ in 0..600 {
        if let Ok(a) = std::fs::read_to_string(&path) {
            addr = Some(a);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let base = format!(
        "http://{}/api/extracts",
        addr.expect("the auditor's address")
    );
    let http = Http::default();
    let send = |method: Method, path: &str, body: Option<serde_json::Value>| {
        let (http, url) = (&http, format!("{base}{path}"));
        async move { http.send(method, &url, Some(TOKEN), body.as_ref()).await }
    };

    assert_eq!(http.get(&base, None).await.status, StatusCode::UNAUTHORIZED);
    let put = send(
        Method::PUT,
        "/api/keys/spring",
        Some(json!({"valid_from": "2026-01-01", "params": {"campaign": "spring"}})),
    )
    .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    let bad = send(
        Method::PUT,
        "/api/keys/autumn",
        Some(json!({"colour": "red"})),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    let keys = send(Method::GET, "/api/keys", None).await.json();
    assert_eq!(keys[0]["params"]["campaign"], "spring");
    let off = send(Method::POST, "/api/keys/spring/disable", None).await;
    assert_eq!(off.json()["enabled"], false);
    assert_eq!(
        send(Method::POST, "/api/keys/winter/disable", None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(Method::POST, "/nope/run", None).await.status,
        StatusCode::NOT_FOUND
    );
    let tick = send(Method::POST, "/api/run", None).await.json();
    let id = tick["id"].as_str().unwrap().to_string();
    app.settle().await;
    let ticks = send(Method::GET, "/ticks?extract=api", None).await.json();
    assert_eq!(ticks[0]["tick"]["id"], id.as_str());
    assert!(ticks[0]["tick"]["fanned_out_at"].is_string(), "{ticks}");
    assert_eq!(ticks[0]["units"], json!([]), "the only key is disabled");
    let list = send(Method::GET, "", None).await.json();
    assert_eq!(list[0]["name"], "api");
    assert_eq!(list[0]["keys"], 1);
    app.stop().await;
}
