//! The dashboard in headless Chromium: `choreo up --demo` prints its link, the page shows the
//! overview, and a click on a file opens its timeline. Screenshots go to `target/screenshots/`.

use crate::http::Http;
use crate::webdriver::Browser;
use choreo::demo;
use hyper::StatusCode;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The trace viewer the dashboard links trace ids to.
const TRACE_URL: &str = "http://127.0.0.1:6006/redirects/traces/{trace_id}";

/// `choreo up --demo` in a temporary directory, its dashboard on a free port.
struct Up {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Up {
    /// Starts it and returns the dashboard link it prints.
    fn start() -> (Up, String) {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_choreo"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(["up", "--demo"])
            .env("CHOREO_OPERATIONS__LISTEN", "127.0.0.1:0")
            .env("CHOREO_OPERATIONS__TRACE_URL", TRACE_URL)
            .env("CHOREO_RUNTIME__SCAN_INTERVAL_MS", "50")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Read stderr to its end on a thread (a full pipe would block the pipeline), passing on
        // the dashboard line.
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(link) = line.strip_prefix("dashboard: ") {
                    let _ = tx.send(link.to_string());
                }
            }
        });
        let up = Up { child, _dir: dir };
        let link = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("`choreo up --demo` printed no dashboard link");
        (up, link)
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn screenshots() -> PathBuf {
    // CARGO_TARGET_TMPDIR is `target/tmp`.
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("screenshots")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_overview_and_a_files_timeline() {
    let (_up, link) = Up::start();
    let (base, token) = link
        .split_once("/#token=")
        .unwrap_or_else(|| panic!("no token in the link: {link}"));
    assert!(base.starts_with("http://127.0.0.1:"), "{link}");

    // Wait for the demo to finish, through the API, so that the page has every file to show.
    let http = Http::default();
    let samples = demo::samples().len() as u64;
    let deadline = Instant::now() + crate::helpers::SETTLE;
    loop {
        let res = http.get(&format!("{base}/api/datasets"), Some(token)).await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.body);
        let d = res.json();
        let (mut total, mut done) = (0, 0);
        for ds in d["datasets"].as_array().unwrap() {
            total += ds["total"].as_u64().unwrap();
            for s in ["INGESTED", "QUARANTINED", "FAILED"] {
                done += ds["counts"][s].as_u64().unwrap();
            }
        }
        if total == samples && done == samples {
            break;
        }
        assert!(Instant::now() < deadline, "the demo did not finish: {d}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let browser = Browser::start().await;
    browser.goto(&link).await;

    // The overview: both datasets with their counts; the token has left the address bar.
    let overview = browser
        .wait_for_text("#datasets", |t| {
            t.contains("sales_daily") && t.contains("inventory_monthly")
        })
        .await;
    assert!(
        overview.contains("INGESTED") && overview.contains("QUARANTINED"),
        "{overview}"
    );
    let url = browser.execute("return location.href").await;
    assert!(!url.as_str().unwrap().contains(token), "{url}");
    browser
        .wait_for_text("#queues", |t| t.contains("validator"))
        .await;
    browser
        .screenshot(&screenshots().join("dashboard-overview.png"))
        .await;

    // Search for INGESTED files of sales_daily and open the first one's timeline.
    for option in [
        "#f-dataset option[value=sales_daily]",
        "#f-state option[value=INGESTED]",
    ] {
        let o = browser.find_all(option).await;
        browser
            .click(o.first().unwrap_or_else(|| panic!("no {option}")))
            .await;
    }
    browser
        .click(&browser.find_all("#filters button").await[0])
        .await;
    browser
        .wait_for_text("#files tbody", |t| {
            !t.is_empty()
                && t.lines()
                    .all(|l| l.contains("sales_daily") && l.contains("INGESTED"))
        })
        .await;
    let link = browser.find_all("#files a.file-link").await[0].clone();
    let id = browser.attribute(&link, "data-id").await.unwrap();
    browser.click(&link).await;
    browser.wait_for_text("#timeline-id", |t| t == id).await;

    // What the timeline shows is the file's record: every step, and its trace id.
    let record = http
        .get(&format!("{base}/api/files/{id}"), Some(token))
        .await
        .json();
    let trace = record["trace_id"].as_str().unwrap();
    assert_eq!(trace.len(), 32, "{record}");
    browser
        .wait_for_text("#timeline-trace", |t| t == trace)
        .await;
    // ...linked to the configured trace viewer.
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
    assert_eq!(
        browser
            .wait_for_text("#timeline-state", |t| !t.is_empty())
            .await,
        "INGESTED"
    );
    browser
        .execute("document.getElementById('timeline').scrollIntoView(); return null")
        .await;
    browser
        .screenshot(&screenshots().join("dashboard-timeline.png"))
        .await;

    // The dead-letter section's peek answers in the page: the ingestor's dead-letter queue is empty.
    let peek = browser.find_all("#dlq button").await;
    assert_eq!(peek.len(), 12, "a Peek and a Redrive button per stage");
    browser.click(&peek[0]).await;
    browser
        .wait_for_text("#dlq-output", |t| t.trim() == "[]")
        .await;
    browser.quit().await;
}
