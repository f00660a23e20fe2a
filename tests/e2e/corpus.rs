//! The bad-input corpus: `tests/corpus/bad_input.toml`, every case with its expected outcome, run
//! against one pipeline on the local backend (the demo's datasets, its API on a free port).
//!
//! A case is one of:
//! - `via = "put"` (the default): the body is written through the object store, as `choreo put`
//!   and S3 uploads do; `uploads` writes several bodies to one key in turn, each after the previous
//!   one was validated. Expected: the final state of each upload's record, in order, and a reason.
//! - `via = "drop"`: the body is written straight into the input folder by another program (or
//!   `symlink_to` makes the key a symbolic link). Expected: a state, or `none` (no record at all).
//! - `via = "cli"`: `choreo put --key KEY` from another process. Expected: `refused` (exit 2, no
//!   record) or a state.
//! - `via = "api"`: an HTTP request to the operators' API. Expected: the status and a body substring.
//!
//! Bodies: `body` (text, `\n` etc. as TOML escapes), `body_hex`, or `generate` (a named generator,
//! below); `compress = "gzip" | "zstd"` compresses it.

use crate::helpers::TestApp;
use crate::http::Http;
use choreo_domain::{FileRecord, FileState};
use hyper::Method;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

const TOKEN: &str = "corpus-token-71c2";

#[derive(Debug, Deserialize)]
struct Corpus {
    case: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default)]
    via: Via,
    #[serde(default)]
    key: String,
    body: Option<String>,
    body_hex: Option<String>,
    generate: Option<String>,
    compress: Option<String>,
    /// More bodies for the same key, uploaded after the first was validated.
    #[serde(default)]
    then: Vec<String>,
    symlink_to: Option<String>,
    /// A state (`INGESTED`, `QUARANTINED`, ...; one per upload with `then`), `none`, `refused`, or
    /// for the API an HTTP status.
    expect: Vec<String>,
    /// A substring of the record's reason (or the command's error, or the API's body).
    reason: Option<String>,
    /// A string that must appear nowhere: no record, report, log line or object holds it.
    never: Option<String>,
    method: Option<String>,
    path: Option<String>,
    json: Option<String>,
}

#[derive(Debug, Default, Deserialize, PartialEq, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum Via {
    #[default]
    Put,
    Drop,
    Cli,
    Api,
}

fn generate(name: &str) -> Vec<u8> {
    const HEADER: &str = "order_id,order_date,customer,email,amount,currency,quantity\n";
    match name {
        "zeros_512m" => vec![0u8; 512 << 20],
        "long_line_20m" => vec![b'a'; 20 << 20],
        "deep_json" => {
            let mut v = b"{\"sku\":".to_vec();
            v.extend(std::iter::repeat_n(b'[', 200_000));
            v.push(b'\n');
            v
        }
        "random_64k" => {
            // A fixed xorshift: the same bytes every run.
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            (0..65_536)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect()
        }
        "rows_50k" => {
            let mut s = HEADER.to_string();
            for i in 0..50_000 {
                s.push_str(&format!(
                    "{i},2026-11-20,Customer {i},c{i}@example.com,{i}.25,EUR,1\n"
                ));
            }
            s.into_bytes()
        }
        "customer_81" => format!(
            "{HEADER}1,2026-11-20,{},a@example.com,1.00,EUR,1\n",
            "x".repeat(81)
        )
        .into_bytes(),
        other => panic!("no generator {other:?}"),
    }
}

fn compress(how: Option<&str>, body: Vec<u8>) -> Vec<u8> {
    match how {
        None => body,
        Some("gzip") => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            e.write_all(&body).unwrap();
            e.finish().unwrap()
        }
        Some("zstd") => zstd::encode_all(&body[..], 19).unwrap(),
        Some("gzip_truncated") => {
            let mut gz = compress(Some("gzip"), body);
            gz.truncate(gz.len() / 2);
            gz
        }
        Some(other) => panic!("no compression {other:?}"),
    }
}

impl Case {
    fn body(&self) -> Vec<u8> {
        let raw = match (&self.body, &self.body_hex, &self.generate) {
            (Some(b), None, None) => b.clone().into_bytes(),
            (None, Some(h), None) => hex::decode(h).expect("body_hex"),
            (None, None, Some(g)) => generate(g),
            (None, None, None) => Vec::new(),
            _ => panic!("{}: one of body, body_hex, generate", self.name),
        };
        compress(self.compress.as_deref(), raw)
    }
}

fn load() -> Vec<Case> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/bad_input.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let corpus: Corpus =
        toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut keys = std::collections::HashSet::new();
    for c in &corpus.case {
        if c.via != Via::Api {
            assert!(
                keys.insert(c.key.clone()),
                "two cases use the key {:?}",
                c.key
            );
        }
    }
    corpus.case
}

/// Waits until `key` has `n` records and the last is past NEW (or the deadline).
async fn wait_validated(app: &TestApp, key: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rs: Vec<FileRecord> = app
            .pipeline
            .files(None, None)
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.key == key)
            .collect();
        if rs.len() >= n && rs.iter().all(|r| r.state != FileState::New) {
            return;
        }
        assert!(Instant::now() < deadline, "{key}: not validated: {rs:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn contains_ci(hay: &str, needle: &str) -> bool {
    hay.to_lowercase().contains(&needle.to_lowercase())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_case_of_the_bad_input_corpus_has_its_expected_outcome() {
    let cases = load();
    assert!(cases.len() >= 50, "the corpus has {} cases", cases.len());
    let mut app = TestApp::new(|c| {
        c.operations.listen = Some("127.0.0.1:0".into());
        c.operations.api_token = Some(TOKEN.into());
    })
    .await;
    app.start();
    let config = app.pipeline.settings.config.clone();
    let data_dir = config.data_dir.clone();
    let input_dir = data_dir.join("buckets").join(&config.buckets.input);
    let mut failures = Vec::new();
    let mut cli_out: BTreeMap<String, (i32, String)> = BTreeMap::new();

    // Files first: all of them in flight at once.
    for c in cases.iter().filter(|c| c.via != Via::Api) {
        match c.via {
            Via::Put => {
                app.put(&c.key, &c.body()).await;
                for (i, next) in c.then.iter().enumerate() {
                    wait_validated(&app, &c.key, i + 1).await;
                    app.put(&c.key, next.as_bytes()).await;
                }
            }
            Via::Drop => {
                let path = input_dir.join(&c.key);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                match &c.symlink_to {
                    Some(target) => {
                        let target = target.replace("{data_dir}", &data_dir.display().to_string());
                        std::os::unix::fs::symlink(target, &path).unwrap();
                    }
                    None => std::fs::write(&path, c.body()).unwrap(),
                }
            }
            Via::Cli => {
                let file = data_dir.join("corpus-cli-body");
                std::fs::write(&file, c.body()).unwrap();
                let out = std::process::Command::new(env!("CARGO_BIN_EXE_choreo"))
                    .arg("--config")
                    .arg(data_dir.join(choreo::demo::CONFIG_FILE))
                    .args(["put", "--key", &c.key])
                    .arg(&file)
                    .output()
                    .unwrap();
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                cli_out.insert(c.name.clone(), (out.status.code().unwrap_or(-1), text));
            }
            Via::Api => unreachable!(),
        }
    }
    app.settle().await;
    let mut by_key: BTreeMap<String, Vec<FileRecord>> = BTreeMap::new();
    for r in app.pipeline.files(None, None).await.unwrap() {
        by_key.entry(r.key.clone()).or_default().push(r);
    }
    for rs in by_key.values_mut() {
        rs.sort_by_key(|r| r.created_at);
    }
    for c in cases.iter().filter(|c| c.via != Via::Api) {
        let mut records = by_key.get(&c.key).cloned().unwrap_or_default();
        // A key that is a folder (a linked one): nothing under it either.
        let under = format!("{}/", c.key);
        records.extend(
            by_key
                .iter()
                .filter(|(k, _)| k.starts_with(&under))
                .flat_map(|(_, rs)| rs.iter().cloned()),
        );
        let states: Vec<String> = records.iter().map(|r| r.state.to_string()).collect();
        let got = if c.via == Via::Cli {
            let (code, text) = &cli_out[&c.name];
            if *code == 2 {
                if !records.is_empty() {
                    failures.push(format!("{}: refused, yet recorded: {states:?}", c.name));
                }
                if let Some(r) = &c.reason
                    && !contains_ci(text, r)
                {
                    failures.push(format!(
                        "{}: the refusal {text:?} does not say {r:?}",
                        c.name
                    ));
                }
                vec!["refused".to_string()]
            } else if *code != 0 {
                vec![format!("exit {code}: {text}")]
            } else {
                states.clone()
            }
        } else if records.is_empty() {
            vec!["none".to_string()]
        } else {
            states.clone()
        };
        if got != c.expect {
            failures.push(format!(
                "{}: expected {:?}, got {got:?} {records:#?}",
                c.name, c.expect
            ));
            continue;
        }
        if let (Some(want), Some(last)) = (&c.reason, records.last()) {
            let reason = last.reason.clone().unwrap_or_default();
            if !contains_ci(&reason, want) {
                failures.push(format!(
                    "{}: reason {reason:?} does not say {want:?}",
                    c.name
                ));
            }
        }
    }

    // The API's cases.
    let addr = std::fs::read_to_string(choreo_auditor::server::addr_file(&data_dir)).unwrap();
    let http = Http::default();
    for c in cases.iter().filter(|c| c.via == Via::Api) {
        let method = Method::from_bytes(c.method.as_deref().unwrap_or("GET").as_bytes()).unwrap();
        let url = format!("http://{addr}{}", c.path.as_deref().unwrap());
        let body: Option<serde_json::Value> = c
            .json
            .as_deref()
            .map(|j| serde_json::from_str(j).expect("json"));
        let res = http.send(method, &url, Some(TOKEN), body.as_ref()).await;
        let got = res.status.as_u16().to_string();
        if vec![got.clone()] != c.expect {
            failures.push(format!(
                "{}: expected {:?}, got {got} {:?}",
                c.name, c.expect, res.body
            ));
        } else if let Some(r) = &c.reason
            && !contains_ci(&res.body, r)
        {
            failures.push(format!(
                "{}: body {:?} does not say {r:?}",
                c.name, res.body
            ));
        }
    }
    app.stop().await;

    // What must appear nowhere: records, reports, objects in every bucket.
    for c in &cases {
        let Some(secret) = &c.never else { continue };
        let mut found = Vec::new();
        for r in by_key.values().flatten() {
            if serde_json::to_string(r).unwrap().contains(secret.as_str()) {
                found.push(format!("record {}", r.id));
            }
        }
        for entry in walk(&data_dir.join("buckets")) {
            if std::fs::read(&entry)
                .is_ok_and(|b| String::from_utf8_lossy(&b).contains(secret.as_str()))
            {
                found.push(entry.display().to_string());
            }
        }
        if !found.is_empty() {
            failures.push(format!("{}: {secret:?} leaked into {found:?}", c.name));
        }
    }
    println!(
        "bad-input corpus: {} cases, {} failed",
        cases.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every regular file under `dir`, not following links.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out
}
