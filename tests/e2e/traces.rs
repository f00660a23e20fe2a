//! Traces in a real trace store: `choreo up --demo` exports over OTLP, configured by the standard
//! variables alone, to Phoenix (`arize-phoenix`, which `scripts/test` installs into `.venv-phoenix`),
//! and Phoenix's REST API shows each file's trace holding spans from every stage the file passed.

use crate::helpers::ok;
use crate::http::Http;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A Phoenix server on free loopback ports, with its store in a temporary directory.
struct Phoenix {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl Phoenix {
    async fn start() -> Phoenix {
        let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-phoenix/bin/phoenix");
        assert!(
            bin.exists(),
            "{} is missing: scripts/test installs arize-phoenix into .venv-phoenix",
            bin.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new(&bin)
            .arg("serve")
            .env("PHOENIX_WORKING_DIR", dir.path())
            .env("PHOENIX_HOST", "127.0.0.1")
            .env("PHOENIX_PORT", port.to_string())
            .env("PHOENIX_GRPC_PORT", free_port().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let phoenix = Phoenix {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let http = Http::default();
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if let Ok(r) = http
                .try_send(
                    hyper::Method::GET,
                    &format!("{}/healthz", phoenix.base),
                    None,
                    None,
                )
                .await
                && r.status.is_success()
            {
                return phoenix;
            }
            assert!(Instant::now() < deadline, "Phoenix did not start in 180 s");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Every span Phoenix holds, following its pages.
    async fn spans(&self) -> Vec<Value> {
        let http = Http::default();
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = format!("{}/v1/projects/default/spans?limit=1000", self.base);
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let page = http.get(&url, None).await.json();
            out.extend(page["data"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return out,
            }
        }
    }
}

impl Drop for Phoenix {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The stages whose spans a trace holds, by their `choreo.stage` attribute.
fn stages_of(spans: &[&Value]) -> BTreeSet<String> {
    spans
        .iter()
        .filter_map(|s| s["attributes"]["choreo.stage"].as_str())
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_files_trace_in_phoenix_holds_every_stage_it_passed() {
    let phoenix = Phoenix::start().await;
    let dir = tempfile::tempdir().unwrap();
    let choreo = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_choreo"));
        c.arg("--data-dir").arg(dir.path()).args(args);
        c
    };
    // The standard variables only; the batch processor's delay shortened so the test is quick.
    let out = choreo(&["up", "--demo", "--exit-when-idle"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &phoenix.base)
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .env("CHOREO_RUNTIME__SCAN_INTERVAL_MS", "50")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    ok(out);
    let files: Vec<Value> =
        serde_json::from_str(&ok(choreo(&["files", "list", "--json"]).output().unwrap())).unwrap();
    assert!(files.len() >= 10, "{files:?}");

    // Spans are exported in batches and flushed as `choreo up` exits; Phoenix stores them a
    // moment after it accepts them.
    let deadline = Instant::now() + Duration::from_secs(60);
    let spans = loop {
        let spans = phoenix.spans().await;
        let traces: BTreeSet<&str> = spans
            .iter()
            .filter_map(|s| s["context"]["trace_id"].as_str())
            .collect();
        let all_there = files
            .iter()
            .all(|f| traces.contains(f["trace_id"].as_str().unwrap()));
        if all_there || Instant::now() > deadline {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mut by_trace: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for s in &spans {
        by_trace
            .entry(s["context"]["trace_id"].as_str().unwrap())
            .or_default()
            .push(s);
    }

    let expected = |state: &str| -> BTreeSet<String> {
        let stages: &[&str] = match state {
            "INGESTED" => &["ingestor", "validator", "crawler", "transformer", "auditor"],
            "QUARANTINED" => &["ingestor", "validator", "quarantine", "auditor"],
            other => panic!("the demo ends no file {other}"),
        };
        stages.iter().map(|s| s.to_string()).collect()
    };
    let mut seen = BTreeMap::<String, usize>::new();
    for f in &files {
        let (state, key) = (f["state"].as_str().unwrap(), f["key"].as_str().unwrap());
        let trace = f["trace_id"].as_str().unwrap();
        let spans = by_trace.get(trace).cloned().unwrap_or_default();
        assert_eq!(
            stages_of(&spans),
            expected(state),
            "{state} {key}: trace {trace}"
        );
        *seen.entry(state.to_string()).or_default() += 1;
        // Every span of the file's trace is about this file, or its batch.
        for s in &spans {
            let a = &s["attributes"];
            if let Some(id) = a["choreo.file_id"].as_str() {
                assert_eq!(id, f["id"].as_str().unwrap(), "{s}");
            }
        }
        // The consumer's spans carry the messaging attributes; the ingest span starts the trace.
        let roots: Vec<_> = spans.iter().filter(|s| s["parent_id"].is_null()).collect();
        assert_eq!(
            roots.len(),
            1,
            "{key}: one root, the registration: {roots:?}"
        );
        assert_eq!(roots[0]["name"], "ingest");
        assert_eq!(roots[0]["attributes"]["choreo.key"], key);
        let processed = spans
            .iter()
            .filter(|s| s["attributes"]["messaging.operation.type"] == "process")
            .count();
        assert!(processed >= 3, "{key}: {processed} message spans");
        for s in spans
            .iter()
            .filter(|s| s["attributes"]["messaging.operation.type"] == "process")
        {
            let a = &s["attributes"];
            assert!(a["messaging.message.id"].is_string(), "{s}");
            assert!(a["messaging.destination.name"].is_string(), "{s}");
        }
        // A file that was batched: one span per batch step, each naming the move it made.
        if state == "INGESTED" {
            let steps: BTreeSet<(String, String)> = spans
                .iter()
                .filter(|s| s["attributes"]["choreo.batch_id"] == f["batch_id"])
                .filter_map(|s| {
                    let a = &s["attributes"];
                    Some((
                        a["choreo.state.from"].as_str()?.to_string(),
                        a["choreo.state.to"].as_str()?.to_string(),
                    ))
                })
                .collect();
            let want: BTreeSet<(String, String)> = [
                ("VALID", "CATALOGED"),
                ("CATALOGED", "TRANSFORMING"),
                ("TRANSFORMING", "INGESTED"),
            ]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
            assert_eq!(steps, want, "{key}");
        }
    }
    assert!(
        seen["INGESTED"] >= 1 && seen["QUARANTINED"] >= 1,
        "{seen:?}"
    );
}
