//! At-least-once delivery: every message delivered twice ends exactly as every message delivered once.

use crate::helpers::{Tap, Tapped, TestApp, steps};
use async_trait::async_trait;
use choreo_domain::{BatchState, FileState};
use choreo_ports::{EventBus, OutgoingMessage, PortError, Queue, ReceivedMessage};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const DUPLICATE: &str = "x-test-duplicate";

/// Delivers every message twice: a second copy at once in the same receive (so two workers race on
/// it), and a third delivery sent back to the queue when the first is acknowledged (so the work is
/// found done). Copies carry an attribute so that they are not copied again.
struct Twice {
    inner: Arc<dyn Queue>,
    originals: Mutex<HashMap<String, ReceivedMessage>>,
}

#[async_trait]
impl Tap for Twice {
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
            if !m.attributes.contains_key(DUPLICATE) {
                self.originals
                    .lock()
                    .unwrap()
                    .insert(m.receipt.clone(), m.clone());
                out.push(m.clone());
            }
            out.push(m);
        }
        Ok(out)
    }

    async fn delete(&self, receipt: &str) -> Result<(), PortError> {
        let original = self.originals.lock().unwrap().remove(receipt);
        if let Some(m) = original {
            let mut attributes = m.attributes.clone();
            attributes.insert(DUPLICATE.into(), "1".into());
            let copy = OutgoingMessage {
                body: m.body,
                attributes,
            };
            self.inner.send(copy, Duration::ZERO).await?;
        }
        self.inner.delete(receipt).await
    }
}

type Outcome = BTreeMap<
    String,
    (
        FileState,
        Option<String>,
        Vec<(String, Option<FileState>, FileState)>,
    ),
>;

/// Fails the first attempt to publish each event, as if the worker died between its state write and
/// its publish: the message comes back, finds the file already in the stage's target state, and
/// publishes again (the outbox case).
struct FailFirstPublish {
    inner: Arc<dyn EventBus>,
    seen: Mutex<HashSet<String>>,
}

#[async_trait]
impl EventBus for FailFirstPublish {
    async fn publish(&self, message: OutgoingMessage) -> Result<(), PortError> {
        let envelope: serde_json::Value = serde_json::from_str(&message.body).unwrap();
        let id = envelope["id"].as_str().unwrap().to_string();
        if self.seen.lock().unwrap().insert(id.clone()) {
            return Err(PortError::transient(
                "publish",
                id,
                "injected: died before publishing",
            ));
        }
        self.inner.publish(message).await
    }
}

#[derive(Clone, Copy)]
enum Mode {
    Once,
    Twice,
    LostPublishes,
}

async fn run(mode: Mode) -> (Outcome, BTreeMap<(String, String), u64>, usize, usize) {
    let mut app = TestApp::new(|_| {}).await;
    let backend = app.pipeline.backend.clone();
    match mode {
        Mode::Once => app.start(),
        Mode::Twice => app.start_with(backend.ports(), move |name| {
            Tapped::queue(Twice {
                inner: backend.queue(name),
                originals: Mutex::default(),
            }) as Arc<dyn Queue>
        }),
        Mode::LostPublishes => {
            let mut ports = backend.ports();
            ports.bus = Arc::new(FailFirstPublish {
                inner: ports.bus.clone(),
                seen: Mutex::default(),
            });
            app.start_with(ports, move |name| backend.queue(name));
        }
    }
    app.put_demo_samples().await;
    app.settle().await;
    let records = app.by_key().await;
    app.stop().await;

    let outcome = records
        .iter()
        .map(|(k, r)| (k.clone(), (r.state, r.reason.clone(), steps(r))))
        .collect();
    let ports = app.pipeline.backend.ports();
    let file_events = ports
        .audit
        .counts()
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, t, _)| t.starts_with("File"))
        .map(|(d, t, n)| ((d, t), n))
        .collect();
    let batches = ports.state.batches_in(BatchState::Ingested).await.unwrap();
    let runs = crate::helpers::job_runs(&app.pipeline);
    (outcome, file_events, batches.len(), runs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_twice_changes_nothing() {
    let (once, once_events, once_batches, once_runs) = run(Mode::Once).await;
    let (twice, twice_events, twice_batches, twice_runs) = run(Mode::Twice).await;
    assert_eq!(twice, once, "final states, reasons and histories");
    assert_eq!(
        twice_events, once_events,
        "file events audited, per dataset and type"
    );
    assert_eq!(once_runs, once_batches, "one job run per batch");
    assert_eq!(
        twice_runs, twice_batches,
        "one job run per batch, even with duplicates"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_lost_after_the_write_is_made_good_by_the_redelivery() {
    let (once, once_events, _, _) = run(Mode::Once).await;
    let (lost, lost_events, batches, runs) = run(Mode::LostPublishes).await;
    assert_eq!(lost, once, "final states, reasons and histories");
    assert_eq!(lost_events, once_events, "every file event published, once");
    assert_eq!(runs, batches, "one job run per batch");
}
