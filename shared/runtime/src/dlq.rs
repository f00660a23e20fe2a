//! Dead letters: each stage's dead-letter queue listed, read, redriven and purged.
//!
//! One place for what the command line (`choreo dlq ...`) and the auditor's HTTP API both offer.
//! Stages are named as in [`Stage`]; a stage's work queue comes from the configuration
//! ([`Config::queue_of`]) and its dead-letter queue is [`Queues::dlq_of`] of it. Everything goes
//! through the [`choreo_ports::Queue`] port, so both backends behave the same.
//!
//! Redrive copies before it deletes: each message is sent to the work queue with its body and
//! attributes (`event_type`, `traceparent`: the file's trace goes on), and only then deleted from the
//! dead-letter queue. A redrive interrupted between the two leaves the message in both queues: it is
//! delivered twice, which the idempotent handlers absorb. We prefer a duplicate to a lost message.

use crate::events::{DeadLetterHandBackError, DeadLettersPurged, DeadLettersRedriven};
use choreo_domain::clock;
use choreo_domain::config::Queues as QueueNames;
use choreo_domain::{Config, Envelope, Event, FileId, Stage};
use choreo_ports::{
    OutgoingMessage, PeekedMessage, PortError, Queue, QueueLookup, ReceivedMessage,
};
use choreo_telemetry::events::emit;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// How many messages `list` looks at to find the oldest: all of them on a dead-letter queue up to
/// this size. On SQS each look counts as a receive (see [`Queue::peek`]).
const OLDEST_SAMPLE: usize = 100;
/// How long a message received for redrive stays hidden from others: long enough to send it and
/// delete it, and to keep the messages left out of a selective redrive out of the next receives.
const REDRIVE_VISIBILITY: Duration = Duration::from_secs(300);
/// How long each redrive receive waits: on SQS a zero wait samples some servers only and can come
/// back empty while messages remain; one second asks them all.
const REDRIVE_WAIT: Duration = Duration::from_secs(1);

/// What went wrong with a dead-letter operation.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("stage {0} has no queue")]
    NoQueue(Stage),
    #[error(transparent)]
    Port(#[from] PortError),
}

/// One stage's dead-letter queue at a glance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DlqSummary {
    pub stage: Stage,
    /// The stage's work queue, where a redrive sends messages back.
    pub queue: String,
    pub dlq: String,
    /// Messages in the dead-letter queue (approximate on SQS).
    pub depth: u64,
    /// Since the oldest message seen was first sent to the work queue; `None` when empty. Found by
    /// peeking at most [`OLDEST_SAMPLE`] messages, so on a deeper queue it is the oldest of those.
    pub oldest_age_secs: Option<u64>,
}

/// One dead letter, decoded as far as it goes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetter {
    /// What `redrive --id` takes.
    pub message_id: String,
    pub body: DeadBody,
    /// The file the message is about, when it names one.
    pub file_id: Option<FileId>,
    /// The file's object key, when the message carries it.
    pub key: Option<String>,
    /// `event_type`, `traceparent`, ...
    pub attributes: BTreeMap<String, String>,
    /// Receives so far, those in the work queue included.
    pub receive_count: u32,
    pub first_received_at: Option<DateTime<Utc>>,
    pub sent_at: DateTime<Utc>,
}

/// A dead letter's body: the envelope if it decodes (it may be why it died if it does not).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum DeadBody {
    Envelope(Box<Envelope>),
    /// Not an envelope of this build: an S3 notification (the ingestor's queue), or garbage.
    Raw(String),
}

/// Which dead letters to redrive.
#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    /// Every message in the dead-letter queue when the redrive starts. Messages that arrive during
    /// the redrive (a redriven message failing again, say) wait for the next one, so a poison
    /// message that fails at once cannot keep a redrive going for ever.
    All,
    /// These message ids (as [`DeadLetter::message_id`]).
    Ids(Vec<String>),
}

impl Selection {
    /// The selection a redrive request's JSON body makes: `{"all": true}` or `{"ids": ["...", ...]}`.
    /// Anything else is refused with a message saying what is expected: an empty body, an unknown
    /// field (`{"id": [...]}` must not fall back to everything), `all` and `ids` together, `"all":
    /// false` alone, an empty list. Redriving everything is never a default.
    pub fn from_json(body: &[u8]) -> Result<Selection, BadSelection> {
        /// The body, field for field.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Request {
            #[serde(default)]
            all: bool,
            ids: Option<Vec<String>>,
        }
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(BadSelection::new("the body is empty"));
        }
        let request: Request = serde_json::from_slice(body)
            .map_err(|e| BadSelection::new(format!("the body is not a redrive request: {e}")))?;
        match (request.all, request.ids) {
            (true, None) => Ok(Selection::All),
            (false, Some(ids)) if !ids.is_empty() => Ok(Selection::Ids(ids)),
            (false, Some(_)) => Err(BadSelection::new("\"ids\" is empty")),
            (true, Some(_)) => Err(BadSelection::new("\"all\" and \"ids\" exclude each other")),
            (false, None) => Err(BadSelection::new("nothing is selected")),
        }
    }
}

/// A redrive request that selects nothing clearly; its message says what is expected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}; send {{\"all\": true}} or {{\"ids\": [message ids]}}")]
pub struct BadSelection(String);

impl BadSelection {
    fn new(what: impl Into<String>) -> BadSelection {
        BadSelection(what.into())
    }
}

/// What a redrive did.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct RedriveReport {
    /// Messages sent back to the work queue and deleted from the dead-letter queue.
    pub moved: u64,
    /// Selected ids not found in the dead-letter queue (redriven or purged already, or a typo).
    pub missing: Vec<String>,
}

/// The stage's work queue and dead-letter queue names.
fn names(config: &Config, stage: Stage) -> Result<(String, String), DlqError> {
    let queue = config.queue_of(stage).ok_or(DlqError::NoQueue(stage))?;
    Ok((queue.to_string(), QueueNames::dlq_of(queue)))
}

/// Every stage's dead-letter queue, in pipeline order.
pub async fn list(queues: &dyn QueueLookup, config: &Config) -> Result<Vec<DlqSummary>, DlqError> {
    let mut out = Vec::new();
    for stage in Stage::SERVICES {
        let (queue, dlq) = names(config, stage)?;
        let q = queues.queue(&dlq);
        let depth = q.depth().await?.total();
        let oldest_age_secs = if depth == 0 {
            None
        } else {
            let now = clock::now();
            q.peek(OLDEST_SAMPLE)
                .await?
                .iter()
                .map(|m| m.sent_at)
                .min()
                .map(|t| (now - t).num_seconds().max(0) as u64)
        };
        out.push(DlqSummary {
            stage,
            queue,
            dlq,
            depth,
            oldest_age_secs,
        });
    }
    Ok(out)
}

/// Up to `n` dead letters of `stage`, oldest first where the backend can tell, without taking them
/// (on SQS each counts as a receive: see [`Queue::peek`]).
pub async fn peek(
    queues: &dyn QueueLookup,
    config: &Config,
    stage: Stage,
    n: usize,
) -> Result<Vec<DeadLetter>, DlqError> {
    let (_, dlq) = names(config, stage)?;
    let messages = queues.queue(&dlq).peek(n).await?;
    Ok(messages.into_iter().map(dead_letter).collect())
}

/// Sends the selected dead letters of `stage` back to its work queue, one at a time: copy, then
/// delete (see the module's header). `progress` is called with the number moved so far after each.
/// Messages received but not selected are handed back (made visible) before returning, error or not.
pub async fn redrive(
    queues: &dyn QueueLookup,
    config: &Config,
    stage: Stage,
    selection: &Selection,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<RedriveReport, DlqError> {
    let (queue, dlq) = names(config, stage)?;
    let (dlq, target) = (queues.queue(&dlq), queues.queue(&queue));
    // Whole milliseconds, as queues stamp `sent_at`. Every message sent up to now is stamped at or
    // before `started`; waiting for the next millisecond before sending any copy stamps every copy
    // after it, so a message sent in the same millisecond as the start is still taken, and a copy
    // that dies again at once is not.
    let now = clock::now();
    let started = DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now);
    while clock::now().timestamp_millis() <= started.timestamp_millis() {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let mut run = Redrive {
        started,
        wanted: match selection {
            Selection::All => None,
            Selection::Ids(ids) => Some(ids.iter().cloned().collect()),
        },
        seen: HashSet::new(),
        held: Vec::new(),
        moved: 0,
    };
    let result = run.go(&dlq, &target, progress).await;
    // Hand back what was received but not moved, so it need not wait out the visibility timeout.
    // Failing that is harmless: it comes back by itself after REDRIVE_VISIBILITY.
    for receipt in &run.held {
        if let Err(e) = dlq.change_visibility(receipt, Duration::ZERO).await {
            emit(DeadLetterHandBackError { error: &e });
        }
    }
    result?;
    let mut missing: Vec<String> = run.wanted.unwrap_or_default().into_iter().collect();
    missing.sort();
    emit(DeadLettersRedriven {
        stage,
        moved: run.moved,
        missing: missing.len(),
    });
    Ok(RedriveReport {
        moved: run.moved,
        missing,
    })
}

/// One redrive's progress.
struct Redrive {
    started: DateTime<Utc>,
    /// Ids still to find; `None` for all.
    wanted: Option<HashSet<String>>,
    seen: HashSet<String>,
    /// Receipts of messages received and left where they are.
    held: Vec<String>,
    moved: u64,
}

impl Redrive {
    async fn go(
        &mut self,
        dlq: &Arc<dyn Queue>,
        target: &Arc<dyn Queue>,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<(), PortError> {
        loop {
            if self.wanted.as_ref().is_some_and(HashSet::is_empty) {
                return Ok(());
            }
            let got = dlq.receive(10, REDRIVE_WAIT, REDRIVE_VISIBILITY).await?;
            let mut new = false;
            for m in got {
                new |= self.seen.insert(m.id.clone());
                if !self.selects(&m) {
                    self.held.push(m.receipt);
                    continue;
                }
                let copy = OutgoingMessage {
                    body: m.body,
                    attributes: m.attributes,
                };
                if let Err(e) = target.send(copy, Duration::ZERO).await {
                    self.held.push(m.receipt);
                    return Err(e);
                }
                // Sent: from here on the message is safe in the work queue. Should this delete
                // fail, it stays in both queues, and a duplicate is what the handlers are built for.
                dlq.delete(&m.receipt).await?;
                self.moved += 1;
                progress(self.moved);
            }
            // Empty, or only messages seen already (left out, or back after a long run): done.
            if !new {
                return Ok(());
            }
        }
    }

    /// Whether `m` is to be moved, taking it off the wanted list if so.
    fn selects(&mut self, m: &ReceivedMessage) -> bool {
        match &mut self.wanted {
            // Sent after the redrive started: it died again during this redrive (or was sent by
            // another); it waits for the next one.
            None => m.sent_at <= self.started,
            Some(ids) => ids.remove(&m.id),
        }
    }
}

/// Deletes every message of `stage`'s dead-letter queue; returns how many (approximate on SQS).
pub async fn purge(
    queues: &dyn QueueLookup,
    config: &Config,
    stage: Stage,
) -> Result<u64, DlqError> {
    let (_, dlq) = names(config, stage)?;
    let n = queues.queue(&dlq).purge().await?;
    emit(DeadLettersPurged { stage, purged: n });
    Ok(n)
}

fn dead_letter(m: PeekedMessage) -> DeadLetter {
    let (body, file_id, key) = match Envelope::from_json(&m.body) {
        Ok(env) => {
            let (file_id, key) = file_of(&env.event);
            (DeadBody::Envelope(Box::new(env)), file_id, key)
        }
        Err(_) => (DeadBody::Raw(m.body), None, None),
    };
    DeadLetter {
        message_id: m.id,
        body,
        file_id,
        key,
        attributes: m.attributes,
        receive_count: m.receive_count,
        first_received_at: m.first_received_at,
        sent_at: m.sent_at,
    }
}

/// The file an event is about, and its key when the event carries it. Batch events and timers name
/// no single file.
fn file_of(event: &Event) -> (Option<FileId>, Option<String>) {
    match event {
        Event::FileRegistered { file_id, key, .. }
        | Event::FileQuarantined { file_id, key, .. } => (Some(file_id.clone()), Some(key.clone())),
        Event::FileValidated { file_id, .. } | Event::FileRejected { file_id, .. } => {
            (Some(file_id.clone()), None)
        }
        _ => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use choreo_local::LocalBackend;
    use choreo_ports::QueueDepth;

    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn backend() -> (tempfile::TempDir, LocalBackend, Config) {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        let b = LocalBackend::open(&config).unwrap();
        (dir, b, config)
    }

    fn registered(n: u32) -> OutgoingMessage {
        let event = Event::FileRegistered {
            file_id: FileId(format!("f-{n}")),
            dataset: "daily".into(),
            bucket: "choreo-input".into(),
            key: format!("daily/{n}.csv"),
            size: 10,
        };
        OutgoingMessage {
            body: Envelope::new(event).to_json(),
            attributes: BTreeMap::from([
                ("event_type".into(), "FileRegistered".into()),
                ("traceparent".into(), TRACEPARENT.into()),
            ]),
        }
    }

    fn raw(body: &str) -> OutgoingMessage {
        OutgoingMessage {
            body: body.into(),
            ..Default::default()
        }
    }

    async fn bury(b: &LocalBackend, config: &Config, stage: Stage, m: OutgoingMessage) {
        let dlq = QueueNames::dlq_of(config.queue_of(stage).unwrap());
        b.queue(&dlq).send(m, Duration::ZERO).await.unwrap();
    }

    async fn drain(q: &dyn Queue) -> Vec<ReceivedMessage> {
        let mut out = Vec::new();
        loop {
            let got = q
                .receive(10, Duration::ZERO, Duration::from_secs(60))
                .await
                .unwrap();
            if got.is_empty() {
                return out;
            }
            out.extend(got);
        }
    }

    #[test]
    fn a_redrive_body_selects_all_or_ids_explicitly() {
        assert_eq!(
            Selection::from_json(br#"{"all": true}"#),
            Ok(Selection::All)
        );
        assert_eq!(
            Selection::from_json(br#"{"ids": ["a", "b"], "all": false}"#),
            Ok(Selection::Ids(vec!["a".into(), "b".into()]))
        );
        for (body, says) in [
            (&br#"{"id": ["a"]}"#[..], "unknown field `id`"),
            (b"", "empty"),
            (b"  \n", "empty"),
            (b"{}", "nothing is selected"),
            (br#"{"all": false}"#, "nothing is selected"),
            (br#"{"ids": []}"#, "empty"),
            (br#"{"all": true, "ids": ["a"]}"#, "exclude each other"),
            (br#"{"all": "yes"}"#, "invalid type"),
            (b"all", "not a redrive request"),
        ] {
            let e = Selection::from_json(body).unwrap_err().to_string();
            assert!(e.contains(says), "{body:?}: {e}");
            assert!(e.contains(r#"{"all": true}"#), "{e}");
        }
    }

    #[tokio::test]
    async fn list_and_peek_show_dead_letters_decoded() {
        let (_dir, b, config) = backend();
        let queues = b.ports().queues;
        bury(&b, &config, Stage::Validator, registered(1)).await;
        bury(&b, &config, Stage::Validator, raw("not an envelope")).await;

        let summary = list(queues.as_ref(), &config).await.unwrap();
        assert_eq!(summary.len(), 6);
        for s in &summary {
            if s.stage == Stage::Validator {
                assert_eq!(
                    (s.queue.as_str(), s.dlq.as_str()),
                    ("choreo-validate", "choreo-validate-dlq")
                );
                assert_eq!(s.depth, 2);
                assert!(s.oldest_age_secs.is_some());
            } else {
                assert_eq!((s.depth, s.oldest_age_secs), (0, None), "{s:?}");
            }
        }

        let dead = peek(queues.as_ref(), &config, Stage::Validator, 10)
            .await
            .unwrap();
        assert_eq!(dead.len(), 2);
        assert!(
            matches!(&dead[0].body, DeadBody::Envelope(e) if matches!(e.event, Event::FileRegistered { .. }))
        );
        assert_eq!(dead[0].file_id, Some(FileId("f-1".into())));
        assert_eq!(dead[0].key.as_deref(), Some("daily/1.csv"));
        assert_eq!(dead[0].attributes["traceparent"], TRACEPARENT);
        assert_eq!(dead[1].body, DeadBody::Raw("not an envelope".into()));
        assert_eq!(
            (dead[1].file_id.as_ref(), dead[1].key.as_ref()),
            (None, None)
        );
        // Peeking took nothing.
        assert_eq!(
            peek(queues.as_ref(), &config, Stage::Validator, 1)
                .await
                .unwrap()
                .len(),
            1
        );
        let json = serde_json::to_value(&dead[0]).unwrap();
        assert_eq!(json["body"]["kind"], "envelope");
        assert_eq!(json["body"]["value"]["event"]["type"], "FileRegistered");

        assert!(matches!(
            peek(queues.as_ref(), &config, Stage::Operator, 1).await,
            Err(DlqError::NoQueue(Stage::Operator))
        ));
    }

    #[tokio::test]
    async fn redrive_all_sends_every_message_back_with_its_attributes() {
        let (_dir, b, config) = backend();
        let queues = b.ports().queues;
        for n in 0..13 {
            bury(&b, &config, Stage::Validator, registered(n)).await;
        }
        let mut seen = Vec::new();
        let report = redrive(
            queues.as_ref(),
            &config,
            Stage::Validator,
            &Selection::All,
            &mut |n| seen.push(n),
        )
        .await
        .unwrap();
        assert_eq!(
            report,
            RedriveReport {
                moved: 13,
                missing: vec![]
            }
        );
        assert_eq!(seen, (1..=13).collect::<Vec<_>>());
        let dlq = b.queue("choreo-validate-dlq");
        assert_eq!(dlq.depth().await.unwrap().total(), 0);
        let back = drain(b.queue("choreo-validate").as_ref()).await;
        assert_eq!(back.len(), 13);
        let mut keys: Vec<_> = back
            .iter()
            .map(|m| {
                assert_eq!(m.attributes["traceparent"], TRACEPARENT);
                assert_eq!(m.attributes["event_type"], "FileRegistered");
                assert_eq!(m.receive_count, 1, "a fresh message in the work queue");
                let env = Envelope::from_json(&m.body).unwrap();
                let Event::FileRegistered { key, .. } = env.event else {
                    panic!()
                };
                key
            })
            .collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 13);
    }

    #[tokio::test]
    async fn redrive_by_id_moves_only_those_and_hands_the_rest_back() {
        let (_dir, b, config) = backend();
        let queues = b.ports().queues;
        for n in 0..4 {
            bury(&b, &config, Stage::Crawler, registered(n)).await;
        }
        let dead = peek(queues.as_ref(), &config, Stage::Crawler, 10)
            .await
            .unwrap();
        let chosen = vec![
            dead[1].message_id.clone(),
            dead[3].message_id.clone(),
            "nope".into(),
        ];
        let report = redrive(
            queues.as_ref(),
            &config,
            Stage::Crawler,
            &Selection::Ids(chosen),
            &mut |_| {},
        )
        .await
        .unwrap();
        assert_eq!(report.moved, 2);
        assert_eq!(report.missing, vec!["nope".to_string()]);
        let back = drain(b.queue("choreo-crawl").as_ref()).await;
        let mut bodies: Vec<_> = back.iter().map(|m| m.body.clone()).collect();
        bodies.sort();
        let mut expected = vec![
            serde_json::to_string(&dead[1].body_envelope()).unwrap(),
            serde_json::to_string(&dead[3].body_envelope()).unwrap(),
        ];
        expected.sort();
        assert_eq!(bodies, expected);
        // The others are visible again at once, not hidden for the redrive's visibility timeout.
        let left = drain(b.queue("choreo-crawl-dlq").as_ref()).await;
        let mut ids: Vec<_> = left.into_iter().map(|m| m.id).collect();
        ids.sort();
        let mut want = vec![dead[0].message_id.clone(), dead[2].message_id.clone()];
        want.sort();
        assert_eq!(ids, want);
    }

    /// A work queue whose every message dies at once: what is sent to it lands in its DLQ.
    struct DiesAtOnce {
        dlq: Arc<dyn Queue>,
        sent: std::sync::atomic::AtomicU64,
    }

    #[async_trait]
    impl Queue for DiesAtOnce {
        fn name(&self) -> &str {
            "choreo-validate"
        }
        async fn receive(
            &self,
            _: usize,
            _: Duration,
            _: Duration,
        ) -> Result<Vec<ReceivedMessage>, PortError> {
            Ok(Vec::new())
        }
        async fn delete(&self, _: &str) -> Result<(), PortError> {
            Ok(())
        }
        async fn change_visibility(&self, _: &str, _: Duration) -> Result<(), PortError> {
            Ok(())
        }
        async fn send(&self, message: OutgoingMessage, delay: Duration) -> Result<(), PortError> {
            self.sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.dlq.send(message, delay).await
        }
        async fn depth(&self) -> Result<QueueDepth, PortError> {
            Ok(QueueDepth::default())
        }
        async fn peek(&self, _: usize) -> Result<Vec<PeekedMessage>, PortError> {
            Ok(Vec::new())
        }
        async fn purge(&self) -> Result<u64, PortError> {
            Ok(0)
        }
    }

    #[tokio::test]
    async fn a_message_that_dies_again_during_the_redrive_waits_for_the_next() {
        let (_dir, b, config) = backend();
        for n in 0..3 {
            bury(&b, &config, Stage::Validator, registered(n)).await;
        }
        let work = Arc::new(DiesAtOnce {
            dlq: b.queue("choreo-validate-dlq"),
            sent: Default::default(),
        });
        let w = work.clone();
        let local = b.clone();
        let queues = move |name: &str| -> Arc<dyn Queue> {
            if name == "choreo-validate" {
                w.clone()
            } else {
                local.queue(name)
            }
        };
        let report = redrive(
            &queues,
            &config,
            Stage::Validator,
            &Selection::All,
            &mut |_| {},
        )
        .await
        .unwrap();
        assert_eq!(report.moved, 3, "each once, not round and round");
        assert_eq!(work.sent.load(std::sync::atomic::Ordering::SeqCst), 3);
        // The copies are in the DLQ, visible for the next redrive.
        let dlq = b.queue("choreo-validate-dlq");
        assert_eq!(dlq.depth().await.unwrap().visible, 3);
    }

    #[tokio::test]
    async fn purge_empties_one_stage_only() {
        let (_dir, b, config) = backend();
        let queues = b.ports().queues;
        for n in 0..3 {
            bury(&b, &config, Stage::Transformer, registered(n)).await;
        }
        bury(&b, &config, Stage::Quarantine, raw("x")).await;
        assert_eq!(
            purge(queues.as_ref(), &config, Stage::Transformer)
                .await
                .unwrap(),
            3
        );
        let depths: BTreeMap<_, _> = list(queues.as_ref(), &config)
            .await
            .unwrap()
            .into_iter()
            .map(|s| (s.stage.as_str(), s.depth))
            .collect();
        assert_eq!(depths["transformer"], 0);
        assert_eq!(depths["quarantine"], 1);
    }

    impl DeadLetter {
        fn body_envelope(&self) -> &Envelope {
            match &self.body {
                DeadBody::Envelope(e) => e,
                DeadBody::Raw(_) => panic!("not an envelope"),
            }
        }
    }
}
