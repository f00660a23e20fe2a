//! The catalog and transform stages' failure handling across the pipeline: failed crawls and job
//! starts moving files to FAILED with one alert a batch, and `files retry` resuming them — on the
//! local backend, and on the aws backend against moto. (Lost timers recovered through their leases'
//! expiry, and job-start attempts, are the stages' own tests: `services/*/tests/stage.rs`.)

use crate::helpers::{TestApp, ok};
use async_trait::async_trait;
use choreo::demo;
use choreo_aws::moto::Moto;
use choreo_domain::{AlertKind, Config, FileRecord, FileState};
use choreo_ports::{CrawlStart, CrawlStatus, Crawler, PortError};
use choreo_runtime::retry::RetryScope;
use choreo_runtime::testkit::ThrottledJobs;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Takes one from `counter` if it is not zero.
fn take(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

/// Leases of a few seconds, so a lost timer is noticed within seconds; the sweep (which also sends
/// timers again, after an hour) kept out of the way.
fn short_leases(c: &mut Config) {
    c.runtime.poll_interval_secs = 1;
    c.runtime.lease_secs = 3;
    c.operations.sweep.interval_secs = 3600;
}

fn valid_keys() -> Vec<String> {
    demo::samples()
        .into_iter()
        .filter(|s| s.defect.is_none())
        .map(|s| s.key)
        .collect()
}

/// The local crawler, except that its first `fail` crawls end FAILED once they have run.
struct FailingCrawler {
    inner: Arc<dyn Crawler>,
    fail: AtomicUsize,
}

#[async_trait]
impl Crawler for FailingCrawler {
    async fn start_crawl(&self, crawler: &str) -> Result<CrawlStart, PortError> {
        self.inner.start_crawl(crawler).await
    }

    async fn crawl_status(&self, crawler: &str) -> Result<CrawlStatus, PortError> {
        match self.inner.crawl_status(crawler).await? {
            CrawlStatus::Succeeded if take(&self.fail) => {
                Ok(CrawlStatus::Failed("the classifier found no table".into()))
            }
            other => Ok(other),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_crawls_and_unstartable_jobs_fail_their_files_once_and_retry_resumes_them() {
    let mut app = TestApp::new(|c| {
        short_leases(c);
        c.runtime.job_start_attempts = 2;
    })
    .await;
    let mut ports = app.pipeline.backend.ports();
    ports.crawler = Arc::new(FailingCrawler {
        inner: ports.crawler.clone(),
        fail: AtomicUsize::new(1),
    });
    ports.jobs = ThrottledJobs::new(ports.jobs.clone(), 2);
    let backend = app.pipeline.backend.clone();
    app.start_with(ports, move |name| backend.queue(name));
    app.put_demo_samples().await;
    app.settle().await;

    let records = app.by_key().await;
    let failed: Vec<_> = valid_keys()
        .into_iter()
        .filter(|k| records[k].state == FileState::Failed)
        .collect();
    let reasons: Vec<String> = failed
        .iter()
        .map(|k| records[k].reason.clone().unwrap_or_default())
        .collect();
    let crawl_failed = reasons
        .iter()
        .filter(|r| r.contains("crawl failed: the classifier found no table"))
        .count();
    let start_failed = reasons
        .iter()
        .filter(|r| r.contains("could not start after 2 attempts"))
        .count();
    assert!(crawl_failed > 0, "no file failed its crawl: {reasons:?}");
    assert!(
        start_failed > 0,
        "no file failed its job start: {reasons:?}"
    );
    assert_eq!(crawl_failed + start_failed, failed.len(), "{reasons:?}");

    // One alert a failed batch, naming its files.
    let failed_batches: std::collections::BTreeSet<_> = failed
        .iter()
        .map(|k| {
            records[k]
                .batch_id
                .clone()
                .expect("a failed file names its batch")
        })
        .collect();
    assert_eq!(failed_batches.len(), 2, "{failed_batches:?}");
    let audit = app.pipeline.monitor.ports().audit;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let alerts = loop {
        let alerts: Vec<_> = audit
            .alerts(100)
            .await
            .unwrap()
            .into_iter()
            .filter(|a| a.kind == AlertKind::BatchFailed)
            .collect();
        if alerts.len() >= 2 || tokio::time::Instant::now() > deadline {
            break alerts;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(alerts.len(), 2, "{alerts:#?}");
    let alerted_keys: usize = alerts.iter().map(|a| a.keys.len()).sum();
    assert_eq!(alerted_keys, failed.len());

    // Retry every dataset's FAILED files: the crawl's go back to VALID, the job's to CATALOGED.
    let mut revalidated = 0;
    let mut rebatched = 0;
    for d in ["sales_daily", "inventory_monthly"] {
        let report = app
            .pipeline
            .retry(&RetryScope::Dataset(d.into()))
            .await
            .unwrap();
        assert!(report.skipped.is_empty(), "{report:?}");
        revalidated += report.revalidated.len();
        rebatched += report.rebatched.values().map(Vec::len).sum::<usize>();
    }
    assert_eq!((revalidated, rebatched), (crawl_failed, start_failed));
    app.settle().await;
    app.stop().await;

    let records = app.by_key().await;
    for key in &failed {
        let r = &records[key];
        assert_eq!(r.state, FileState::Ingested, "{key}: {:?}", r.reason);
        let retried = r
            .history
            .iter()
            .filter(|h| h.from == Some(FileState::Failed));
        assert_eq!(
            retried.count(),
            1,
            "{key}: one operator retry in its history"
        );
    }
    // Retrying again finds nothing FAILED.
    let report = app
        .pipeline
        .retry(&RetryScope::Dataset("sales_daily".into()))
        .await
        .unwrap();
    assert_eq!(report.retried(), 0);
}

/// The `choreo` binary on the aws backend against `moto`, with the configuration `config`.
fn choreo_aws(moto: &Moto, config: &Path) -> Command {
    let mut cmd = crate::aws::choreo_on(moto);
    cmd.arg("--config").arg(config);
    cmd
}

#[test]
fn a_glue_job_that_does_not_exist_fails_its_batch_and_retry_resumes_it_on_aws() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let fixed = demo::write_config(dir.path(), "fixed.toml").unwrap();
    // The same configuration, but the sales dataset names a Glue job nobody created.
    let text = std::fs::read_to_string(&fixed).unwrap();
    let broken_text = text.replacen(
        "name = \"sales_daily\"",
        "name = \"sales_daily\"\njob = \"no-such-job\"",
        1,
    );
    assert_ne!(text, broken_text);
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, broken_text).unwrap();

    ok(choreo_aws(&moto, &broken)
        .arg("bootstrap")
        .output()
        .unwrap());
    // One `put` a folder: keys are the prefix and the file name.
    let mut folders: BTreeMap<String, Vec<std::path::PathBuf>> = BTreeMap::new();
    for s in demo::samples() {
        let (prefix, name) = s.key.rsplit_once('/').unwrap();
        let file = dir.path().join("samples").join(prefix).join(name);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, &s.body).unwrap();
        folders.entry(format!("{prefix}/")).or_default().push(file);
    }
    for (prefix, files) in &folders {
        ok(choreo_aws(&moto, &broken)
            .args(["put", "--prefix", prefix])
            .args(files)
            .output()
            .unwrap());
    }
    ok(choreo_aws(&moto, &broken)
        .args(["up", "--exit-when-idle"])
        .output()
        .unwrap());

    let list = |config: &Path| -> BTreeMap<String, FileRecord> {
        let out = ok(choreo_aws(&moto, config)
            .args(["files", "list", "--json"])
            .output()
            .unwrap());
        let records: Vec<FileRecord> = serde_json::from_str(&out).unwrap();
        records.into_iter().map(|r| (r.key.clone(), r)).collect()
    };
    let records = list(&broken);
    let valid = valid_keys();
    let (sales, others): (Vec<_>, Vec<_>) = valid.iter().partition(|k| k.starts_with("daily/"));
    assert!(!sales.is_empty() && !others.is_empty());
    for k in &sales {
        let r = &records[*k];
        assert_eq!(r.state, FileState::Failed, "{k}");
        let reason = r.reason.as_deref().unwrap_or("");
        assert!(reason.contains("could not start"), "{k}: {reason}");
    }
    for k in &others {
        assert_eq!(records[*k].state, FileState::Ingested, "{k}");
    }

    // With the job fixed, retry the dataset: its files go back to CATALOGED in a new batch.
    let out = ok(choreo_aws(&moto, &fixed)
        .args(["files", "retry", "--dataset", "sales_daily"])
        .output()
        .unwrap());
    assert!(
        out.contains(&format!("{} file(s) retried, 0 skipped", sales.len())),
        "{out}"
    );
    ok(choreo_aws(&moto, &fixed)
        .args(["up", "--exit-when-idle"])
        .output()
        .unwrap());
    let records = list(&fixed);
    for k in &valid {
        assert_eq!(records[k].state, FileState::Ingested, "{k}");
    }
}
