//! The dashboard in headless Chromium: `choreo up --demo` prints its link; the flow graph shows
//! the demo's counts, the charts have data, a quarantined file's timeline shows its failed step
//! and its reason, an ingested file's shows every step and links its trace and its batch; every
//! view fits a phone's width. A screenshot of each view, at 1280 and 390 px, goes to
//! `target/dashboard-screenshots/`.

use crate::helpers::{Running, up_demo_printing};
use crate::http::Http;
use crate::webdriver::Browser;
use choreo::demo;
use hyper::StatusCode;
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The trace viewer the dashboard links trace ids to.
const TRACE_URL: &str = "http://127.0.0.1:6006/redirects/traces/{trace_id}";

/// `choreo up --demo` in a temporary directory, its dashboard on a free port.
struct Up {
    _child: Running,
    _dir: tempfile::TempDir,
}

impl Up {
    /// Starts it and returns the dashboard link it prints.
    fn start() -> (Up, String) {
        let dir = tempfile::tempdir().unwrap();
        let (child, link) = up_demo_printing(
            dir.path(),
            &[
                ("CHOREO_OPERATIONS__LISTEN", "127.0.0.1:0"),
                ("CHOREO_OPERATIONS__TRACE_URL", TRACE_URL),
            ],
            "dashboard: ",
        );
        (
            Up {
                _child: child,
                _dir: dir,
            },
            link,
        )
    }
}

fn screenshots() -> PathBuf {
    // CARGO_TARGET_TMPDIR is `target/tmp`.
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("dashboard-screenshots")
}

/// Shows the view the fragment names, as a link or a refresh would.
async fn open(browser: &Browser, fragment: &str) {
    let script = format!(
        "location.hash = {}; return null",
        serde_json::json!(fragment)
    );
    browser.execute(&script).await;
}

/// Fails the test if the page is wider than the window (a phone would scroll sideways).
async fn assert_fits(browser: &Browser, view: &str) {
    let widths = browser
        .execute(
            "return [document.documentElement.scrollWidth, document.body.scrollWidth, window.innerWidth]",
        )
        .await;
    let w: Vec<u64> = widths
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert!(
        w[0] <= w[2] && w[1] <= w[2],
        "the {view} view overflows the window: scrollWidth {} (body {}) > innerWidth {}",
        w[0],
        w[1],
        w[2]
    );
}

/// Files per state over every dataset, from `/api/datasets`.
fn totals(datasets: &Value) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    for ds in datasets["datasets"].as_array().unwrap() {
        for (state, n) in ds["counts"].as_object().unwrap() {
            *out.entry(state.clone()).or_default() += n.as_u64().unwrap();
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_flow_charts_timelines_and_lists() {
    let (_up, link) = Up::start();
    let (base, token) = link
        .split_once("/#token=")
        .unwrap_or_else(|| panic!("no token in the link: {link}"));
    assert!(base.starts_with("http://127.0.0.1:"), "{link}");

    // Wait for the demo to finish, through the API, so that the page has every file to show.
    let http = Http::default();
    let samples = demo::samples().len() as u64;
    let deadline = Instant::now() + crate::helpers::SETTLE;
    let counts = loop {
        let res = http.get(&format!("{base}/api/datasets"), Some(token)).await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.body);
        let t = totals(&res.json());
        let done: u64 = ["INGESTED", "QUARANTINED", "FAILED"]
            .iter()
            .map(|s| t[*s])
            .sum();
        if t.values().sum::<u64>() == samples && done == samples {
            break t;
        }
        assert!(Instant::now() < deadline, "the demo did not finish: {t:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(
        counts["INGESTED"] > 0 && counts["QUARANTINED"] > 0,
        "{counts:?}"
    );
    let api = |path: String| {
        let http = &http;
        async move {
            let res = http.get(&format!("{base}{path}"), Some(token)).await;
            assert_eq!(res.status, StatusCode::OK, "{path}: {}", res.body);
            res.json()
        }
    };

    let dir = screenshots();
    println!("dashboard screenshots: {}", dir.display());
    let browser = Browser::start().await;
    assert_eq!(browser.set_page_width(1280, 1000).await, 1280);
    browser.goto(&link).await;

    // The flow, the first view: every terminal state's node shows the demo's count, and the
    // token has left the address bar.
    for state in ["INGESTED", "QUARANTINED", "FAILED"] {
        let css = format!("#flow-graph [data-node={state}] .count");
        let want = counts[state].to_string();
        browser.wait_for_content(&css, |t| t == want).await;
    }
    let url = browser.execute("return location.href").await;
    assert!(!url.as_str().unwrap().contains(token), "{url}");
    // Every stage is drawn with its dead letters, and the queue into the quarantine mover
    // carried the demo's invalid files.
    for stage in [
        "ingestor",
        "validator",
        "quarantine",
        "crawler",
        "transformer",
        "auditor",
    ] {
        let node = browser
            .wait_for_content(&format!("#flow-graph [data-node={stage}]"), |t| {
                t.contains("DLQ")
            })
            .await;
        assert!(node.contains("in flight"), "{node}");
    }
    browser
        .wait_for_content("#flow-graph [data-edge='validator>quarantine']", |t| {
            t.contains("/min")
        })
        .await;
    // ...and the tables below it: both datasets, every queue.
    let overview = browser
        .wait_for_text("#datasets", |t| {
            t.contains("sales_daily") && t.contains("inventory_monthly")
        })
        .await;
    assert!(overview.contains("QUARANTINED"), "{overview}");
    browser
        .wait_for_text("#queues", |t| t.contains("validator"))
        .await;
    assert_fits(&browser, "flow").await;
    browser.screenshot(&dir.join("flow.png")).await;

    // One dataset: its own counts, and a note that queues are shared.
    let sales = api("/api/flow?dataset=sales_daily".into()).await;
    let pick = browser.find_all("#dataset option[value=sales_daily]").await;
    browser.click(&pick[0]).await;
    let want = sales["counts"]["INGESTED"].to_string();
    assert_ne!(want, counts["INGESTED"].to_string(), "the datasets differ");
    browser
        .wait_for_content("#flow-graph [data-node=INGESTED] .count", |t| t == want)
        .await;
    browser
        .wait_for_text("#flow-note", |t| t.contains("every dataset"))
        .await;
    browser
        .click(&browser.find_all("#dataset option[value='']").await[0])
        .await;
    let all = counts["INGESTED"].to_string();
    browser
        .wait_for_content("#flow-graph [data-node=INGESTED] .count", |t| t == all)
        .await;

    // The charts: the files done in the last hour, and time per stage.
    browser
        .click(&browser.find_all("#nav a[data-view=charts]").await[0])
        .await;
    let done_bars = "#chart-terminal rect.bar";
    let deadline = Instant::now() + crate::webdriver::PATIENCE;
    while browser.count(done_bars).await == 0 {
        assert!(Instant::now() < deadline, "the terminal chart has no bars");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let plotted: u64 = browser
        .execute(
            "return [...document.querySelectorAll('#chart-terminal rect.bar title')]
                .reduce((n, t) => n + Number(t.textContent.split(': ').pop()), 0)",
        )
        .await
        .as_u64()
        .unwrap();
    assert_eq!(
        plotted, samples,
        "every file done within the hour is plotted once"
    );
    let latency = browser
        .wait_for_content("#chart-latency", |t| t.contains("validator"))
        .await;
    assert!(latency.contains("p95"), "{latency}");
    assert!(browser.count("#chart-latency rect.bar.p50").await >= 3);
    assert_fits(&browser, "charts").await;
    browser.screenshot(&dir.join("charts.png")).await;

    // The files, newest first: the quarantined ones, found by state and key; the filters are in
    // the address, so a reload shows the same list.
    browser
        .click(&browser.find_all("#nav a[data-view=files]").await[0])
        .await;
    browser
        .wait_for_text("#files tbody", |t| !t.is_empty())
        .await;
    let listed = api("/api/files?order=recent&limit=25".into()).await;
    let newest = listed["items"][0]["id"].as_str().unwrap().to_string();
    browser
        .wait_for_text("#files tbody", |t| {
            t.lines().next().is_some_and(|l| l.contains(&newest))
        })
        .await;
    // Pages of 5: the second is the API's second, and a reload keeps it.
    let page_ids = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["id"].as_str().unwrap().to_string())
            .collect()
    };
    let first = api("/api/files?order=recent&limit=5".into()).await;
    let cursor = first["next"].as_str().unwrap();
    let second = page_ids(&api(format!("/api/files?order=recent&limit=5&before={cursor}")).await);
    open(&browser, "view=files&size=5").await;
    let shows = |ids: Vec<String>| {
        move |t: &str| {
            let lines: Vec<&str> = t.lines().collect();
            lines.len() == ids.len()
                && lines
                    .iter()
                    .zip(&ids)
                    .all(|(l, id)| l.contains(id.as_str()))
        }
    };
    browser
        .wait_for_text("#files tbody", shows(page_ids(&first)))
        .await;
    browser
        .click(&browser.find_all("#next-page").await[0])
        .await;
    browser
        .wait_for_text("#files tbody", shows(second.clone()))
        .await;
    browser.execute("location.reload(); return null").await;
    browser
        .wait_for_text("#files tbody", shows(second.clone()))
        .await;
    browser
        .wait_for_text("#page-number", |t| t == "page 2")
        .await;
    browser
        .click(&browser.find_all("#prev-page").await[0])
        .await;
    browser
        .wait_for_text("#files tbody", shows(page_ids(&first)))
        .await;
    open(&browser, "view=files").await;

    let o = browser.find_all("#f-state option[value=QUARANTINED]").await;
    browser.click(&o[0]).await;
    let key = browser.find_all("#f-key").await[0].clone();
    browser.send_keys(&key, "2026-11-07").await;
    browser
        .click(&browser.find_all("#filters button").await[0])
        .await;
    let quarantined = |t: &str| {
        t.lines().count() == 1 && t.contains("QUARANTINED") && t.contains("daily/2026-11-07.csv")
    };
    browser.wait_for_text("#files tbody", quarantined).await;
    browser.execute("location.reload(); return null").await;
    browser.wait_for_text("#files tbody", quarantined).await;
    assert_fits(&browser, "files").await;
    browser.screenshot(&dir.join("files.png")).await;

    // A quarantined file's timeline: its failed step in red with the validator's reason, and
    // its report's errors inline.
    let row = browser.find_all("#files a.file-link").await[0].clone();
    let id = browser.attribute(&row, "data-id").await.unwrap();
    browser.click(&row).await;
    browser.wait_for_text("#timeline-id", |t| t == id).await;
    let record = api(format!("/api/files/{id}")).await;
    let reason = record["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["to"] == "INVALID")
        .and_then(|h| h["reason"].as_str())
        .unwrap_or_else(|| panic!("no reason for INVALID in {record}"))
        .to_string();
    let failed = browser
        .wait_for_content("#timeline-bars .bar-row.failed", |t| t.contains("INVALID"))
        .await;
    assert!(failed.contains(&reason), "{failed:?} lacks {reason:?}");
    assert!(
        browser.count("#timeline-bars .bar-row.failed").await == 2,
        "INVALID and QUARANTINED are the failed steps"
    );
    assert!(
        browser.count("#timeline-bars .bar-row:not(.failed)").await >= 1,
        "NEW is not"
    );
    let report = api(format!("/api/files/{id}/report")).await;
    let first_error = report["errors"][0]["message"].as_str().unwrap().to_string();
    browser
        .wait_for_text("#report-errors tbody", |t| t.contains(&first_error))
        .await;
    assert_fits(&browser, "quarantined file").await;
    browser.screenshot(&dir.join("file-quarantined.png")).await;

    // An ingested file's timeline: every step, and its trace id linked to the viewer.
    let ingested =
        api("/api/files?order=recent&state=INGESTED&dataset=sales_daily&limit=1".into()).await;
    let id = ingested["items"][0]["id"].as_str().unwrap().to_string();
    open(&browser, &format!("view=file&id={id}")).await;
    browser.wait_for_text("#timeline-id", |t| t == id).await;
    let record = api(format!("/api/files/{id}")).await;
    let trace = record["trace_id"].as_str().unwrap();
    assert_eq!(trace.len(), 32, "{record}");
    browser
        .wait_for_text("#timeline-trace", |t| t == trace)
        .await;
    let to_viewer = browser.find_all("#timeline-trace a").await;
    assert_eq!(to_viewer.len(), 1, "the trace id is a link");
    assert_eq!(
        browser.attribute(&to_viewer[0], "href").await.as_deref(),
        Some(TRACE_URL.replace("{trace_id}", trace).as_str())
    );
    assert_eq!(record["trace_url"], TRACE_URL.replace("{trace_id}", trace));
    let steps = browser
        .wait_for_text("#timeline-steps tbody", |t| t.contains("INGESTED"))
        .await;
    let lines: Vec<&str> = steps.lines().collect();
    let expected = [
        ("ingestor", "∅ → NEW"),
        ("validator", "NEW → VALID"),
        ("crawler", "VALID → CATALOGED"),
        ("transformer", "CATALOGED → TRANSFORMING"),
        ("transformer", "TRANSFORMING → INGESTED"),
    ];
    assert_eq!(lines.len(), expected.len(), "{steps}");
    for (line, (stage, step)) in lines.iter().zip(expected) {
        assert!(
            line.contains(stage) && line.contains(step),
            "{line:?} is not {stage} {step}"
        );
    }
    assert_eq!(browser.count("#timeline-bars .bar-row").await, 5);
    assert_eq!(browser.count("#timeline-bars .bar-row.failed").await, 0);
    assert_eq!(
        browser
            .wait_for_text("#timeline-state", |t| !t.is_empty())
            .await,
        "INGESTED"
    );
    browser.screenshot(&dir.join("file-ingested.png")).await;

    // Its batch: the crawl and the job run as bars, the file among the batch's files.
    let batch = record["batch_id"].as_str().unwrap().to_string();
    browser
        .click(&browser.find_all("#timeline-batch a").await[0])
        .await;
    browser.wait_for_text("#batch-id", |t| t == batch).await;
    browser
        .wait_for_text("#batch-files tbody", |t| t.contains(&id))
        .await;
    browser
        .wait_for_content("#batch-bars", |t| t.contains("job run"))
        .await;
    browser.screenshot(&dir.join("batch.png")).await;

    // The failures, grouped by reason: the quarantined file's group lists it.
    browser
        .click(&browser.find_all("#nav a[data-view=failures]").await[0])
        .await;
    let groups = browser
        .wait_for_text("#reasons tbody", |t| t.contains("invalid"))
        .await;
    let rejected = api("/api/failures/reasons".into()).await;
    let largest = rejected[0]["reason"].as_str().unwrap();
    assert!(groups.lines().next().unwrap().contains(largest), "{groups}");
    assert_fits(&browser, "failures").await;
    browser.screenshot(&dir.join("failures.png")).await;

    // The dead-letter view's peek answers in the page: the ingestor's dead-letter queue is empty.
    browser
        .click(&browser.find_all("#nav a[data-view=dlq]").await[0])
        .await;
    browser
        .wait_for_text("#dlq tbody", |t| t.contains("ingestor"))
        .await;
    let peek = browser.find_all("#dlq button").await;
    assert_eq!(peek.len(), 12, "a Peek and a Redrive button per stage");
    browser.click(&peek[0]).await;
    browser
        .wait_for_text("#dlq-output", |t| t.trim() == "[]")
        .await;
    browser.screenshot(&dir.join("dlq.png")).await;

    // On a phone: every view fits the width, the tables scroll in their box.
    assert_eq!(browser.set_page_width(390, 844).await, 390);
    for (name, fragment, ready) in [
        ("flow", "view=flow".to_string(), "#flow-graph svg"),
        ("charts", "view=charts".to_string(), "#chart-terminal svg"),
        ("files", "view=files".to_string(), "#files tbody tr"),
        (
            "file",
            format!("view=file&id={id}"),
            "#timeline-bars .bar-row",
        ),
        (
            "batch",
            format!("view=batch&id={batch}"),
            "#batch-files tbody tr",
        ),
        ("failures", "view=failures".to_string(), "#reasons tbody tr"),
        ("dlq", "view=dlq".to_string(), "#dlq tbody tr"),
    ] {
        open(&browser, &fragment).await;
        let visible = format!("#view-{name}:not([hidden]) {ready}");
        let deadline = Instant::now() + crate::webdriver::PATIENCE;
        while browser.count(&visible).await == 0 {
            assert!(Instant::now() < deadline, "the {name} view did not show");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_fits(&browser, name).await;
        browser
            .screenshot(&dir.join(format!("{name}-390.png")))
            .await;
    }
    browser.quit().await;
}
