//! The auditor's HTTP API over a pipeline that ran the demo's files, on the local backend.

use crate::helpers::TestApp;
use crate::http::Http;
use choreo_auditor::server::addr_file;
use choreo_domain::config::Queues;
use choreo_domain::{FileState, Stage};
use choreo_ports::OutgoingMessage;
use hyper::{Method, StatusCode};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const TOKEN: &str = "test-token-4f1d";

/// A demo pipeline serving its API on a free port, and the API's base URL.
async fn app_with_api() -> (TestApp, String) {
    let mut app = TestApp::new(|c| {
        c.operations.listen = Some("127.0.0.1:0".into());
        c.operations.api_token = Some(TOKEN.into());
    })
    .await;
    app.start();
    let addr = wait_for_addr(&app).await;
    (app, format!("http://{addr}"))
}

/// The address the auditor bound, once it has written it.
async fn wait_for_addr(app: &TestApp) -> String {
    let path = addr_file(&app.pipeline.settings.config.data_dir);
    for _ in 0..600 {
        if let Ok(a) = std::fs::read_to_string(&path) {
            return a;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the auditor wrote no {}", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_but_health_needs_the_token() {
    let (mut app, base) = app_with_api().await;
    let http = Http::default();
    let health = http.get(&format!("{base}/health"), None).await;
    assert_eq!(
        (health.status, health.body.as_str()),
        (StatusCode::OK, "ok")
    );

    let routes = [
        (Method::GET, "/api/datasets"),
        (Method::GET, "/api/files"),
        (Method::GET, "/api/files?state=INGESTED&limit=2"),
        (Method::GET, "/api/files?order=recent&limit=2"),
        (Method::GET, "/api/files/f-0000"),
        (Method::GET, "/api/files/f-0000/report"),
        (Method::GET, "/api/batches/b-0000"),
        (Method::GET, "/api/flow"),
        (Method::GET, "/api/charts/terminal?minutes=5"),
        (Method::GET, "/api/charts/latency"),
        (Method::GET, "/api/queues"),
        (Method::GET, "/api/failures"),
        (Method::GET, "/api/failures/reasons"),
        (Method::GET, "/api/dlq"),
        (Method::GET, "/api/dlq/validator?n=5"),
        (Method::POST, "/api/dlq/validator/redrive"),
        (Method::GET, "/api/no-such-route"),
    ];
    for (method, route) in routes {
        let url = format!("{base}{route}");
        for bearer in [
            None,
            Some("wrong"),
            Some(&TOKEN[..TOKEN.len() - 1]),
            Some(""),
        ] {
            let res = http.send(method.clone(), &url, bearer, None).await;
            assert_eq!(
                res.status,
                StatusCode::UNAUTHORIZED,
                "{method} {route} {bearer:?}"
            );
            assert_eq!(res.body, "", "{method} {route}: a 401 shows nothing");
        }
        let res = http.send(method.clone(), &url, Some(TOKEN), None).await;
        assert_ne!(res.status, StatusCode::UNAUTHORIZED, "{method} {route}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_shows_datasets_files_histories_queues_and_failures() {
    let (mut app, base) = app_with_api().await;
    let http = Http::default();
    let get = |path: &str| {
        let (http, url) = (http.clone(), format!("{base}{path}"));
        async move {
            let res = http.get(&url, Some(TOKEN)).await;
            assert_eq!(res.status, StatusCode::OK, "{url}: {}", res.body);
            res.json()
        }
    };
    app.put_demo_samples().await;
    app.settle().await;
    let records = app.pipeline.files(None, None).await.unwrap();

    // Datasets: the counts `choreo files list` shows, every state present; throughput counts
    // every file, as all of them ended within the hour.
    let datasets = get("/api/datasets").await;
    let mut expected: BTreeMap<(String, String), u64> = BTreeMap::new();
    for r in &records {
        *expected
            .entry((r.dataset.clone(), r.state.as_str().to_string()))
            .or_default() += 1;
    }
    let mut shown = BTreeMap::new();
    let mut done_last_hour = 0;
    for d in datasets["datasets"].as_array().unwrap() {
        let counts = d["counts"].as_object().unwrap();
        assert_eq!(counts.len(), FileState::ALL.len(), "{d}");
        for (state, n) in counts {
            if n.as_u64().unwrap() > 0 {
                shown.insert(
                    (d["name"].as_str().unwrap().to_string(), state.clone()),
                    n.as_u64().unwrap(),
                );
            }
        }
        assert_eq!(
            d["total"],
            counts.values().map(|n| n.as_u64().unwrap()).sum::<u64>()
        );
        done_last_hour += d["throughput"]["last_hour"].as_u64().unwrap();
    }
    assert_eq!(shown, expected);
    assert_eq!(done_last_hour as usize, records.len(), "{datasets}");

    // Paging through every file, three at a time: each once.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &after {
            Some(a) => format!("/api/files?limit=3&after={a}"),
            None => "/api/files?limit=3".to_string(),
        };
        let page = get(&path).await;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 3);
        seen.extend(items.iter().map(|f| f["id"].as_str().unwrap().to_string()));
        pages += 1;
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => break,
        }
    }
    let all: BTreeSet<String> = records.iter().map(|r| r.id.0.clone()).collect();
    assert_eq!(
        seen.len(),
        all.len(),
        "a file shown twice or missed: {seen:?}"
    );
    assert_eq!(seen.iter().cloned().collect::<BTreeSet<_>>(), all);
    assert!(pages >= records.len().div_ceil(3));

    // Filters: dataset and state in the store, key substring over what it returns.
    let ingested_sales: BTreeSet<String> = records
        .iter()
        .filter(|r| r.dataset == "sales_daily" && r.state == FileState::Ingested)
        .map(|r| r.id.0.clone())
        .collect();
    assert!(!ingested_sales.is_empty());
    let page = get("/api/files?dataset=sales_daily&state=ingested&limit=500").await;
    let ids: BTreeSet<String> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ingested_sales);
    let needle = ".jsonl";
    let page = get(&format!("/api/files?key={needle}&limit=500")).await;
    let keys: BTreeSet<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["key"].as_str().unwrap())
        .collect();
    let expected_keys: BTreeSet<&str> = records
        .iter()
        .filter(|r| r.key.contains(needle))
        .map(|r| r.key.as_str())
        .collect();
    assert!(!expected_keys.is_empty());
    assert_eq!(keys, expected_keys);
    let bad = http
        .get(&format!("{base}/api/files?state=DONE"), Some(TOKEN))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);

    // One file: its whole history and its trace id.
    let r = records
        .iter()
        .find(|r| r.state == FileState::Ingested)
        .unwrap();
    let file = get(&format!("/api/files/{}", r.id)).await;
    let steps: Vec<(&Value, &str)> = file["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (&h["from"], h["to"].as_str().unwrap()))
        .collect();
    assert_eq!(
        steps,
        vec![
            (&Value::Null, "NEW"),
            (&Value::from("NEW"), "VALID"),
            (&Value::from("VALID"), "CATALOGED"),
            (&Value::from("CATALOGED"), "TRANSFORMING"),
            (&Value::from("TRANSFORMING"), "INGESTED"),
        ]
    );
    assert!(r.trace_id.is_some());
    assert_eq!(file["trace_id"].as_str(), r.trace_id.as_deref());
    assert_eq!(file["key"], r.key.as_str());
    let missing = http
        .get(&format!("{base}/api/files/f-none"), Some(TOKEN))
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    // Failures: the rejected files, each quarantined now.
    let failures = get("/api/failures?n=100").await;
    let rejected: BTreeSet<String> = failures
        .as_array()
        .unwrap()
        .iter()
        .inspect(|f| assert_eq!(f["event_type"], "FileRejected", "{f}"))
        .flat_map(|f| f["files"].as_array().unwrap().clone())
        .map(|id| id.as_str().unwrap().to_string())
        .collect();
    let quarantined: BTreeSet<String> = records
        .iter()
        .filter(|r| r.state == FileState::Quarantined)
        .map(|r| r.id.0.clone())
        .collect();
    assert!(!quarantined.is_empty());
    assert_eq!(rejected, quarantined);

    // Queues: every stage's, empty once settled; a dead letter shows in its stage's DLQ depth.
    let config = &app.pipeline.settings.config;
    let dlq = Queues::dlq_of(&config.queues.validate);
    app.pipeline
        .backend
        .queue(&dlq)
        .send(
            OutgoingMessage {
                body: "{}".into(),
                ..Default::default()
            },
            Duration::ZERO,
        )
        .await
        .unwrap();
    let queues = get("/api/queues").await;
    let stages: Vec<&str> = queues
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["stage"].as_str().unwrap())
        .collect();
    let services: Vec<&str> = Stage::SERVICES.iter().map(|s| s.as_str()).collect();
    assert_eq!(stages, services);
    for q in queues.as_array().unwrap() {
        assert_eq!(
            (&q["visible"], &q["in_flight"], &q["delayed"]),
            (&0.into(), &0.into(), &0.into()),
            "{q}"
        );
        let dead = if q["stage"] == "validator" { 1 } else { 0 };
        assert_eq!(q["dlq"]["depth"], dead, "{q}");
    }
    assert_eq!(queues[1]["dlq"]["queue"].as_str(), Some(dlq.as_str()));
    let dlqs = get("/api/dlq").await;
    let validator = dlqs
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["stage"] == "validator")
        .unwrap();
    assert_eq!(
        (&validator["dlq"], &validator["depth"]),
        (&Value::from(dlq.as_str()), &1.into())
    );
    assert!(validator["oldest_age_secs"].is_u64(), "{validator}");

    // Peek shows the dead letter without taking it; redrive moves it back to the validator's queue.
    let peek = get("/api/dlq/validator?n=5").await;
    assert_eq!(peek.as_array().unwrap().len(), 1, "{peek}");
    assert_eq!(
        peek[0]["body"],
        serde_json::json!({"kind": "raw", "value": "{}"})
    );
    assert_eq!(
        get("/api/dlq").await[1]["depth"],
        1,
        "peeking takes nothing"
    );
    let redriven = http
        .send(
            Method::POST,
            &format!("{base}/api/dlq/validator/redrive"),
            Some(TOKEN),
            Some(&serde_json::json!({"all": true})),
        )
        .await;
    assert_eq!(redriven.status, StatusCode::OK, "{}", redriven.body);
    assert_eq!(redriven.json()["moved"], 1, "{}", redriven.body);
    let missing = http
        .send(
            Method::POST,
            &format!("{base}/api/dlq/validator/redrive"),
            Some(TOKEN),
            Some(&serde_json::json!({"ids": ["no-such-message"]})),
        )
        .await;
    assert_eq!(
        missing.json()["missing"],
        serde_json::json!(["no-such-message"])
    );
    let unknown = http
        .send(
            Method::POST,
            &format!("{base}/api/dlq/nobody/redrive"),
            Some(TOKEN),
            None,
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    // Shutdown stops the server and removes the address it advertised.
    app.stop().await;
    assert!(!addr_file(&app.pipeline.settings.config.data_dir).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redrive_says_what_it_takes_or_is_refused() {
    let (mut app, base) = app_with_api().await;
    let http = Http::default();
    // The crawler's dead letters: nothing in this pipeline sends the crawler anything meanwhile.
    let dlq = app
        .pipeline
        .backend
        .queue(&Queues::dlq_of(&app.pipeline.settings.config.queues.crawl));
    for n in 0..2 {
        let body = format!("dead letter {n}");
        let m = OutgoingMessage {
            body,
            ..Default::default()
        };
        dlq.send(m, Duration::ZERO).await.unwrap();
    }
    let url = format!("{base}/api/dlq/crawler/redrive");
    let ids = serde_json::json!(["x"]);
    for (body, says) in [
        // A typo of `ids` used to redrive everything.
        (Some(serde_json::json!({"id": ids})), "unknown field `id`"),
        (None, "the body is empty"),
        (Some(serde_json::json!({})), "nothing is selected"),
        (
            Some(serde_json::json!({"all": false})),
            "nothing is selected",
        ),
        (
            Some(serde_json::json!({"all": true, "ids": ids})),
            "exclude each other",
        ),
        (Some(serde_json::json!(["all"])), "not a redrive request"),
    ] {
        let res = http
            .send(Method::POST, &url, Some(TOKEN), body.as_ref())
            .await;
        assert_eq!(
            res.status,
            StatusCode::BAD_REQUEST,
            "{body:?}: {}",
            res.body
        );
        let error = res.json()["error"].as_str().unwrap().to_string();
        assert!(
            error.contains(says) && error.contains(r#"{"all": true}"#),
            "{body:?}: {error}"
        );
        assert_eq!(
            dlq.depth().await.unwrap().total(),
            2,
            "{body:?} moved something"
        );
    }
    let all = http
        .send(
            Method::POST,
            &url,
            Some(TOKEN),
            Some(&serde_json::json!({"all": true})),
        )
        .await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    assert_eq!(all.json()["moved"], 2, "{}", all.body);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_in_use_is_logged_and_the_pipeline_runs_on() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut app = TestApp::new(|c| {
        c.operations.listen = Some(addr);
        c.operations.api_token = Some(TOKEN.into());
    })
    .await;
    app.start();
    app.put_demo_samples().await;
    app.settle().await;
    let records = app.by_key().await;
    app.stop().await;
    crate::helpers::assert_demo_outcome(&records);
    assert!(!addr_file(&app.pipeline.settings.config.data_dir).exists());
}
