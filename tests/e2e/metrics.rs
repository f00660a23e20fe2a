//! Metrics as an operator sees them: `choreo up --demo` with `[telemetry] listen`, scraped every
//! second by a real Prometheus (Debian's `prometheus`, which `scripts/test` installs), queried
//! through its HTTP API; the auditor's gauges against queues in a known state; and the Grafana
//! dashboard (`deploy/grafana/choreo.json`) against the metric names the services publish.

use crate::helpers::{Running, TestApp, up_demo_printing};
use crate::http::Http;
use choreo::demo;
use choreo_domain::Stage;
use choreo_ports::OutgoingMessage;
use hyper::StatusCode;
use serde_json::Value;
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long the demo and the scrapes that follow it get.
const DEADLINE: Duration = Duration::from_secs(180);

/// `choreo up --demo` in `dir`, its ops endpoint on a port of the system's choice; returns the
/// process and the endpoint's base URL, from the `metrics:` line it prints.
fn choreo_up(dir: &std::path::Path) -> (Running, String) {
    let (running, url) = up_demo_printing(
        dir,
        &[("CHOREO_TELEMETRY__LISTEN", "127.0.0.1:0")],
        "metrics: ",
    );
    let base = url
        .strip_suffix("/metrics")
        .unwrap_or_else(|| panic!("not a /metrics URL: {url}"))
        .to_string();
    (running, base)
}

/// Prometheus scraping `target` (`host:port`) every second, its data in `dir`; returns the process
/// and its base URL.
fn prometheus(dir: &std::path::Path, target: &str) -> (Running, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: choreo\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus is not installed (scripts/test installs Debian's)");
    (Running(child), format!("http://127.0.0.1:{port}"))
}

/// Percent-encodes a PromQL expression for a query string.
fn encode(query: &str) -> String {
    query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The series of an instant query: each one's labels and value.
async fn query(http: &Http, prometheus: &str, promql: &str) -> Vec<(Value, f64)> {
    let url = format!("{prometheus}/api/v1/query?query={}", encode(promql));
    let Ok(response) = http.try_send(hyper::Method::GET, &url, None, None).await else {
        return Vec::new(); // not up yet
    };
    if response.status != StatusCode::OK {
        return Vec::new();
    }
    let body = response.json();
    assert_eq!(body["status"], "success", "{promql}: {body}");
    body["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|series| {
            let value = series["value"][1].as_str().unwrap().parse().unwrap();
            (series["metric"].clone(), value)
        })
        .collect()
}

/// Queries until `done` holds for the series, failing the test at `deadline` with the last ones.
async fn query_until(
    http: &Http,
    prometheus: &str,
    promql: &str,
    deadline: Instant,
    done: impl Fn(&[(Value, f64)]) -> bool,
) -> Vec<(Value, f64)> {
    loop {
        let series = query(http, prometheus, promql).await;
        if done(&series) {
            return series;
        }
        assert!(
            Instant::now() < deadline,
            "{promql} never got what was expected; last: {series:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn labels(series: &[(Value, f64)], label: &str) -> BTreeSet<String> {
    series
        .iter()
        .filter_map(|(m, _)| m[label].as_str().map(str::to_string))
        .collect()
}

/// The six stages' `stage` label values.
fn stages() -> BTreeSet<String> {
    Stage::SERVICES.map(|s| s.as_str().to_string()).into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_demos_counters_and_gauges() {
    let deadline = Instant::now() + DEADLINE;
    let dir = tempfile::tempdir().unwrap();
    let (_up, ops) = choreo_up(&dir.path().join("data"));
    let http = Http::default();

    let health = http.get(&format!("{ops}/health"), None).await;
    assert_eq!(health.status, StatusCode::OK, "{health:?}");
    let ready = http.get(&format!("{ops}/ready"), None).await;
    assert_eq!(ready.status, StatusCode::OK, "{ready:?}");

    let target = ops.strip_prefix("http://").unwrap();
    let (_prometheus, prom) = prometheus(dir.path(), target);
    query_until(&http, &prom, "up{job=\"choreo\"}", deadline, |s| {
        s.iter().any(|(_, v)| *v == 1.0)
    })
    .await;

    // The demo is done when every sample is counted in a terminal state (the auditor's gauge).
    let samples = demo::samples().len() as f64;
    query_until(
        &http,
        &prom,
        "sum(choreo_files{state=~\"INGESTED|QUARANTINED|FAILED\"})",
        deadline,
        |s| s.first().is_some_and(|(_, v)| *v == samples),
    )
    .await;

    // The backlog gauges: every stage's queue in each state, drained once the demo is done.
    let backlog = query_until(
        &http,
        &prom,
        "choreo_queue_messages{state=\"visible\"}",
        deadline,
        |s| s.len() == Stage::SERVICES.len() && s.iter().all(|(_, v)| *v == 0.0),
    )
    .await;
    assert_eq!(labels(&backlog, "stage"), stages());
    let states = query(&http, &prom, "choreo_queue_messages").await;
    assert_eq!(states.len(), Stage::SERVICES.len() * 3, "{states:?}");
    assert_eq!(
        labels(&states, "state"),
        ["delayed", "in_flight", "visible"].map(String::from).into()
    );
    let dead = query(&http, &prom, "choreo_dlq_messages").await;
    assert_eq!(labels(&dead, "stage"), stages());
    let age = query(&http, &prom, "choreo_queue_oldest_message_age_seconds").await;
    assert_eq!(
        age.len(),
        Stage::SERVICES.len(),
        "the local queue tells its age: {age:?}"
    );

    // Still answering after the work: nothing about the demo made the process unready.
    let ready = http.get(&format!("{ops}/ready"), None).await;
    assert_eq!(ready.status, StatusCode::OK, "{ready:?}");

    // Every query of the Grafana dashboard is PromQL that this Prometheus accepts.
    for expr in dashboard_queries() {
        let promql = expr.replace("$__rate_interval", "1m");
        let url = format!("{prom}/api/v1/query?query={}", encode(&promql));
        let response = http.get(&url, None).await;
        assert_eq!(response.status, StatusCode::OK, "{promql}: {response:?}");
    }

    // Every stage handled messages in the demo (rejected files go through the quarantine mover).
    let handled = query_until(
        &http,
        &prom,
        "sum by (stage) (choreo_messages_handled_total)",
        deadline,
        |s| labels(s, "stage").len() == Stage::SERVICES.len(),
    )
    .await;
    assert_eq!(labels(&handled, "stage"), stages());
    assert!(handled.iter().all(|(_, v)| *v > 0.0), "{handled:?}");
}

#[tokio::test]
async fn the_gauges_read_what_the_queues_and_files_hold() {
    let app = TestApp::new(|_| {}).await;
    let config = &app.pipeline.settings.config;
    let ports = app.pipeline.backend.ports();
    let message = || OutgoingMessage {
        body: "{}".into(),
        attributes: Default::default(),
    };
    let validate = ports.queues.queue(&config.queues.validate);
    validate.send(message(), Duration::ZERO).await.unwrap();
    validate.send(message(), Duration::ZERO).await.unwrap();
    validate
        .receive(1, Duration::ZERO, Duration::from_secs(60))
        .await
        .unwrap();
    let crawl = ports.queues.queue(&config.queues.crawl);
    crawl
        .send(message(), Duration::from_secs(60))
        .await
        .unwrap();
    let dlq = choreo_domain::config::Queues::dlq_of(&config.queues.quarantine);
    ports
        .queues
        .queue(&dlq)
        .send(message(), Duration::ZERO)
        .await
        .unwrap();

    assert!(choreo_telemetry::metrics::install());
    choreo_auditor::gauges::set_queue_gauges(config, ports.queues.as_ref())
        .await
        .unwrap();
    choreo_auditor::gauges::set_file_gauges(config, ports.state.as_ref())
        .await
        .unwrap();
    let text = choreo_telemetry::metrics::render();
    let has = |line: &str| assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
    let q = &config.queues;
    has(&format!(
        "choreo_queue_messages{{stage=\"validator\",queue=\"{}\",state=\"visible\"}} 1",
        q.validate
    ));
    has(&format!(
        "choreo_queue_messages{{stage=\"validator\",queue=\"{}\",state=\"in_flight\"}} 1",
        q.validate
    ));
    has(&format!(
        "choreo_queue_messages{{stage=\"crawler\",queue=\"{}\",state=\"delayed\"}} 1",
        q.crawl
    ));
    has(&format!(
        "choreo_dlq_messages{{stage=\"quarantine\",queue=\"{dlq}\"}} 1"
    ));
    has(&format!(
        "choreo_dlq_messages{{stage=\"validator\",queue=\"{}-dlq\"}} 0",
        q.validate
    ));
    // A delayed message is a timer, not backlog.
    has(&format!(
        "choreo_queue_oldest_message_age_seconds{{stage=\"crawler\",queue=\"{}\"}} 0",
        q.crawl
    ));
    // No file yet: every state of every dataset reads zero rather than being absent.
    let dataset = &config.datasets[0].name;
    has(&format!(
        "choreo_files{{dataset=\"{dataset}\",state=\"INGESTED\"}} 0"
    ));
}

/// Every metric the services publish: the names the dashboards, alerts and docs rely on.
const CONTRACT: [&str; 17] = [
    "choreo_messages_received_total",
    "choreo_messages_handled_total",
    "choreo_handler_retries_total",
    "choreo_messages_dead_lettered_total",
    "choreo_file_transitions_total",
    "choreo_validation_bytes_total",
    "choreo_validation_rows_total",
    "choreo_files_validated_total",
    "choreo_batches_total",
    "choreo_crawls_total",
    "choreo_job_runs_total",
    "choreo_events_total",
    "choreo_handler_duration_seconds",
    "choreo_queue_messages",
    "choreo_dlq_messages",
    "choreo_queue_oldest_message_age_seconds",
    "choreo_files",
];

fn dashboard() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/choreo.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("the dashboard is JSON")
}

/// The PromQL of every panel of the Grafana dashboard.
fn dashboard_queries() -> Vec<String> {
    dashboard()["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().clone())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect()
}

/// The `choreo_*` names in a PromQL expression, a histogram's series named by the histogram.
fn metric_names(promql: &str) -> Vec<String> {
    promql
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("choreo_"))
        .map(|w| {
            // No published name ends so: these are a histogram's series.
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| w.strip_suffix(suffix))
                .unwrap_or(w)
                .to_string()
        })
        .collect()
}

#[test]
fn the_grafana_dashboard_queries_the_published_metrics_through_its_datasource_variable() {
    let dashboard = dashboard();
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(
        variables.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "a Prometheus datasource variable: {variables:?}"
    );
    let mut used = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap();
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{title}");
            let expr = target["expr"].as_str().unwrap();
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{title}: {expr} reads no choreo metric");
            for name in names {
                assert!(
                    CONTRACT.contains(&name.as_str()),
                    "{title}: {name} is not published"
                );
                used.insert(name);
            }
        }
    }
    // What an on-call engineer looks at first is all there; the events counter is for ad-hoc queries.
    let unused: Vec<_> = CONTRACT
        .iter()
        .filter(|m| !used.contains(**m) && **m != "choreo_events_total")
        .collect();
    assert!(unused.is_empty(), "no panel shows {unused:?}");
}

#[test]
fn metric_names_reads_a_histograms_series_as_the_histogram() {
    assert_eq!(
        metric_names(
            "histogram_quantile(0.5, sum by (le) (rate(choreo_handler_duration_seconds_bucket[1m])))"
        ),
        ["choreo_handler_duration_seconds"]
    );
    assert_eq!(
        metric_names("max by (stage) (choreo_queue_oldest_message_age_seconds)"),
        ["choreo_queue_oldest_message_age_seconds"]
    );
    assert_eq!(
        metric_names("rate(choreo_handler_duration_seconds_count[1m]) / on() choreo_files"),
        ["choreo_handler_duration_seconds", "choreo_files"]
    );
    assert_eq!(
        metric_names("sum(choreo_nope_total)"),
        ["choreo_nope_total"]
    );
}
