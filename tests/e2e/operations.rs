//! The auditor's operator work on the local backend: healing stuck files, alerting once per failure,
//! folding bursts into digests, and e-mailing alerts through a real SMTP server.

use crate::helpers::{Tap, Tapped, TestApp};
use async_trait::async_trait;
use choreo::demo;
use choreo_domain::{Config, FileState};
use choreo_ports::{PortError, Queue, ReceivedMessage};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Swallows messages: the first `drop` received are acknowledged and never handed over, as if a
/// worker took them and died after a bug acknowledged them (or an operator purged the queue).
struct Dropping {
    inner: Arc<dyn Queue>,
    left: AtomicUsize,
}

#[async_trait]
impl Tap for Dropping {
    fn inner(&self) -> &Arc<dyn Queue> {
        &self.inner
    }

    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, PortError> {
        let mut out = Vec::new();
        for m in self.inner.receive(max, wait, visibility).await? {
            let dropped = self
                .left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if dropped {
                self.inner.delete(&m.receipt).await?;
            } else {
                out.push(m);
            }
        }
        Ok(out)
    }
}

/// Sweeps every second, a file counting as stuck after one second in any state.
fn fast_sweep(c: &mut Config, max_republish: u32) {
    let s = &mut c.operations.sweep;
    s.interval_secs = 1;
    s.max_republish = max_republish;
    s.limits_secs = BTreeMap::new();
    s.default_secs = 1;
    c.operations.alerts.flush_interval_secs = 1;
}

/// Starts the pipeline with the validator's queue dropping its first `drop` messages.
fn start_dropping_validations(app: &mut TestApp, drop: usize) {
    let backend = app.pipeline.backend.clone();
    let validate = app.pipeline.settings.config.queues.validate.clone();
    let dropping: Arc<dyn Queue> = Tapped::queue(Dropping {
        inner: backend.queue(&validate),
        left: AtomicUsize::new(drop),
    });
    app.start_with(backend.ports(), move |name| {
        if name == validate {
            dropping.clone()
        } else {
            backend.queue(name)
        }
    });
}

fn a_valid_sample() -> demo::Sample {
    demo::samples()
        .into_iter()
        .find(|s| s.defect.is_none() && s.key.ends_with(".csv"))
        .expect("the demo has a plain valid CSV")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sweep_heals_a_file_whose_message_was_lost() {
    let mut app = TestApp::new(|c| fast_sweep(c, 3)).await;
    start_dropping_validations(&mut app, 1);
    let sample = a_valid_sample();
    app.put(&sample.key, &sample.body).await;
    app.settle().await;

    let records = app.by_key().await;
    let r = &records[&sample.key];
    assert_eq!(r.state, FileState::Ingested, "{r:#?}");
    assert!(r.sweep.is_none(), "a move clears the sweep's note: {r:#?}");
    // The event published again carried its first id: the trail counts one registration.
    let counts = app.pipeline.backend.ports().audit.counts().await.unwrap();
    let registered: u64 = counts
        .iter()
        .filter(|(_, t, _)| t == "FileRegistered")
        .map(|(_, _, n)| n)
        .sum();
    assert_eq!(registered, 1, "{counts:?}");
    let alerts = app.pipeline.backend.ports().audit.alerts(10).await.unwrap();
    assert!(
        alerts.is_empty(),
        "a healed file raises no alert: {alerts:#?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_that_stays_stuck_is_flagged_and_alerted_on_once() {
    let mut app = TestApp::new(|c| fast_sweep(c, 2)).await;
    // Every validation message is lost: the file cannot leave NEW.
    start_dropping_validations(&mut app, usize::MAX);
    let sample = a_valid_sample();
    app.put(&sample.key, &sample.body).await;

    let audit = app.pipeline.backend.ports().audit;
    let deadline = Instant::now() + Duration::from_secs(60);
    let record = loop {
        let records = app.by_key().await;
        if let Some(r) = records.get(&sample.key)
            && r.sweep.as_ref().is_some_and(|m| m.stuck)
            && audit
                .alerts(10)
                .await
                .unwrap()
                .iter()
                .all(|a| a.sent_at.is_some())
        {
            break r.clone();
        }
        assert!(
            Instant::now() < deadline,
            "not flagged in time: {records:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(record.state, FileState::New);
    let mark = record.sweep.unwrap();
    assert_eq!((mark.state, mark.republished), (FileState::New, 2));
    // More sweeps change nothing: one alert, sent once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let alerts = audit.alerts(10).await.unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let a = &alerts[0];
    assert_eq!(
        (a.kind.as_str(), a.stage.as_str()),
        ("FileStuck", "validator")
    );
    assert_eq!(a.keys, vec![sample.key.clone()]);
    assert!(
        a.link.ends_with(&format!("#file={}", record.id)),
        "{}",
        a.link
    );
    assert_eq!(a.trace_id, record.trace_id);
    assert!(a.sent_at.is_some());
    app.stop().await;
}

/// An SMTP server (aiosmtpd, from `.venv`) writing every message it receives into a maildir.
struct SmtpServer {
    child: std::process::Child,
    port: u16,
    maildir: PathBuf,
}

impl SmtpServer {
    fn start(dir: &Path) -> SmtpServer {
        let python = crate::helpers::venv_bin("python");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let maildir = dir.join("maildir");
        let child = std::process::Command::new(&python)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("aiosmtpd is needed (scripts/test installs it into .venv): {python:?}: {e}")
            });
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "aiosmtpd did not start on {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        SmtpServer {
            child,
            port,
            maildir,
        }
    }

    /// Every message received so far, as text.
    fn messages(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.maildir.join("new")) else {
            return Vec::new();
        };
        entries
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_rejected_file_is_e_mailed_once_and_a_burst_is_one_digest() {
    let mail_dir = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start(mail_dir.path());
    let port = smtp.port;
    let mut app = TestApp::new(move |c| {
        let a = &mut c.operations.alerts;
        a.smtp_url = Some(format!("smtp://127.0.0.1:{port}").into());
        a.smtp_to = vec!["oncall@example.com".into()];
        a.digest_threshold = 3;
        // Long enough for the demo's rejections to arrive within one or two deliveries.
        a.flush_interval_secs = 8;
        c.operations.dashboard_url = "http://dash.example".into();
    })
    .await;
    app.start();
    app.put_demo_samples().await;
    app.settle().await;

    let invalid: Vec<String> = demo::samples()
        .into_iter()
        .filter(|s| s.defect.is_some())
        .map(|s| s.key)
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let audit = app.pipeline.backend.ports().audit;
    while !audit.pending_alerts(100).await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "alerts still waiting");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let alerts = audit.alerts(100).await.unwrap();
    assert_eq!(
        alerts.len(),
        invalid.len(),
        "one alert per rejected file: {alerts:#?}"
    );

    let mails = smtp.messages();
    assert!(!mails.is_empty());
    // Each rejected key is in exactly one e-mail, with its dataset, stage, reason and a link.
    for key in &invalid {
        let with_key: Vec<&String> = mails
            .iter()
            .filter(|m| m.contains(&format!("key:      {key}")))
            .collect();
        assert_eq!(with_key.len(), 1, "{key} in {} e-mails", with_key.len());
        let m = with_key[0];
        assert!(m.contains("FileRejected at stage validator"), "{m}");
        assert!(m.contains("details:  http://dash.example/#file="), "{m}");
        assert!(m.contains("trace id: "), "{m}");
    }
    // Nine rejections within a delivery or two exceed the threshold of three: digests, not a storm.
    assert!(
        mails.len() < invalid.len(),
        "{} e-mails for {} failures",
        mails.len(),
        invalid.len()
    );
    assert!(
        mails
            .iter()
            .any(|m| m.contains("failures since the last alert"))
    );
    app.stop().await;
}
