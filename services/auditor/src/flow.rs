//! The flow: the choreography as a graph, live — the dashboard's first view.
//!
//! Nodes are the stages and the three terminal states; an edge is a queue between two stages,
//! with its backlog (the queue's depth) and its rate (files that crossed it per minute, from the
//! audit trail's events). A stage node shows its work in flight: messages being handled, and
//! files waiting in the state it consumes (NEW for the validator, VALID for the crawler...).
//!
//! Per dataset, file counts and rates are that dataset's; queue depths are not (a queue carries
//! every dataset's messages), and say so (`shared_queues`). The depths are the ones `/api/queues`
//! reads, so the flow costs what that route costs plus one audit read ([`throughput::SCAN`]
//! entries) and one count of files per state; it answers the overview and the queues with it, so
//! the dashboard's first view makes one request.

use crate::api::{Api, ApiError, Datasets, QueueView, overview, queue_views};
use crate::throughput;
use axum::Json;
use axum::extract::{Query, State};
use choreo_domain::clock;
use choreo_domain::{Envelope, Event, FileState, Stage};
use choreo_ports::AuditEntry;
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The window a rate is averaged over: long enough that a batch of files does not make it jump,
/// short enough to show a stall within minutes.
pub const RATE_WINDOW_MINUTES: i64 = 5;

#[derive(Debug, Serialize)]
pub struct Flow {
    /// The dataset shown, or `None` for all.
    pub dataset: Option<String>,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    /// Files per state (every state, zero or not).
    pub counts: BTreeMap<FileState, u64>,
    /// Rates may be short: more events happened in the window than were read.
    pub rates_partial: bool,
    /// Queue depths are every dataset's, even when one dataset is shown.
    pub shared_queues: bool,
}

/// A stage, or a terminal state (`stage` is then `None`).
#[derive(Debug, Serialize)]
pub struct Node {
    /// `ingestor`... for a stage, `INGESTED`... for a terminal state, `input` for the bucket.
    pub id: String,
    pub stage: Option<Stage>,
    /// Messages this stage is handling now (received, not yet deleted).
    pub in_flight: u64,
    /// Files in the states this stage moves them out of.
    pub files_waiting: u64,
    /// Messages in the stage's dead-letter queue: an operator must look.
    pub dlq: u64,
    /// For a terminal state: files in it.
    pub files: u64,
}

#[derive(Debug, Serialize)]
pub struct Edge {
    pub from: String,
    pub to: String,
    /// The event that travels it (`None` for the bucket's notifications).
    pub event: Option<&'static str>,
    /// Messages waiting in the queue the edge feeds (visible and delayed), when it feeds one.
    pub backlog: Option<u64>,
    /// Files that crossed it per minute, averaged over the last [`RATE_WINDOW_MINUTES`].
    pub per_minute: f64,
}

/// The edges of the choreography: from, to, the event that carries files along it, and the stage
/// whose queue it fills. The auditor is fed by every event; it is a node without edges.
const EDGES: &[(&str, &str, Option<&str>, Option<Stage>)] = &[
    ("input", "ingestor", None, Some(Stage::Ingestor)),
    (
        "ingestor",
        "validator",
        Some("FileRegistered"),
        Some(Stage::Validator),
    ),
    (
        "validator",
        "quarantine",
        Some("FileRejected"),
        Some(Stage::Quarantine),
    ),
    (
        "validator",
        "crawler",
        Some("FileValidated"),
        Some(Stage::Crawler),
    ),
    (
        "crawler",
        "transformer",
        Some("BatchCataloged"),
        Some(Stage::Transformer),
    ),
    ("quarantine", "QUARANTINED", Some("FileQuarantined"), None),
    ("transformer", "INGESTED", Some("BatchIngested"), None),
    ("crawler", "FAILED", Some("BatchFailed"), None),
    ("transformer", "FAILED", Some("BatchFailed"), None),
];

/// The states whose files wait for `stage` to move them.
fn consumes(stage: Stage) -> &'static [FileState] {
    match stage {
        Stage::Validator => &[FileState::New],
        Stage::Quarantine => &[FileState::Invalid],
        Stage::Crawler => &[FileState::Valid],
        Stage::Transformer => &[FileState::Cataloged, FileState::Transforming],
        _ => &[],
    }
}

/// Files that moved along each edge since `since`, keyed by (from, to). A batch failure counts on
/// the edge of the stage it failed at; registrations count on both the bucket's edge and the
/// ingestor's, which carry the same files.
pub fn crossings(
    entries: &[AuditEntry],
    dataset: Option<&str>,
    since: DateTime<Utc>,
) -> BTreeMap<(&'static str, &'static str), u64> {
    let mut out = BTreeMap::new();
    for e in entries {
        if e.occurred_at < since || dataset.is_some_and(|d| d != e.dataset) {
            continue;
        }
        // An entry of a newer contract counts for nothing rather than failing the view.
        let Ok(envelope) = serde_json::from_value::<Envelope>(e.body.clone()) else {
            continue;
        };
        let (edges, n): (&[(&str, &str)], usize) = match &envelope.event {
            Event::FileRegistered { .. } => {
                (&[("input", "ingestor"), ("ingestor", "validator")], 1)
            }
            Event::FileRejected { .. } => (&[("validator", "quarantine")], 1),
            Event::FileValidated { .. } => (&[("validator", "crawler")], 1),
            Event::BatchCataloged { files, .. } => (&[("crawler", "transformer")], files.len()),
            Event::FileQuarantined { .. } => (&[("quarantine", "QUARANTINED")], 1),
            Event::BatchIngested { files, .. } => (&[("transformer", "INGESTED")], files.len()),
            Event::BatchFailed {
                stage: Stage::Crawler,
                files,
                ..
            } => (&[("crawler", "FAILED")], files.len()),
            Event::BatchFailed { files, .. } => (&[("transformer", "FAILED")], files.len()),
            _ => continue,
        };
        for edge in edges {
            *out.entry(*edge).or_default() += n as u64;
        }
    }
    out
}

/// The graph from what was read: files per state, queue depths, and the newest audit entries.
pub fn build(
    dataset: Option<String>,
    counts: BTreeMap<FileState, u64>,
    queues: &[QueueView],
    entries: &[AuditEntry],
    now: DateTime<Utc>,
) -> Flow {
    let since = now - TimeDelta::minutes(RATE_WINDOW_MINUTES);
    let crossed = crossings(entries, dataset.as_deref(), since);
    let queue = |stage: Stage| queues.iter().find(|q| q.stage == stage);
    let mut nodes = vec![Node {
        id: "input".into(),
        stage: None,
        in_flight: 0,
        files_waiting: 0,
        dlq: 0,
        files: 0,
    }];
    for stage in Stage::SERVICES {
        let q = queue(stage);
        nodes.push(Node {
            id: stage.as_str().into(),
            stage: Some(stage),
            in_flight: q.map_or(0, |q| q.in_flight),
            files_waiting: consumes(stage).iter().map(|s| counts[s]).sum(),
            dlq: q.map_or(0, |q| q.dlq.depth),
            files: 0,
        });
    }
    for s in [
        FileState::Ingested,
        FileState::Quarantined,
        FileState::Failed,
    ] {
        nodes.push(Node {
            id: s.as_str().into(),
            stage: None,
            in_flight: 0,
            files_waiting: 0,
            dlq: 0,
            files: counts[&s],
        });
    }
    let edges = EDGES
        .iter()
        .map(|&(from, to, event, feeds)| Edge {
            from: from.into(),
            to: to.into(),
            event,
            backlog: feeds.and_then(queue).map(|q| q.visible + q.delayed),
            per_minute: crossed.get(&(from, to)).copied().unwrap_or(0) as f64
                / RATE_WINDOW_MINUTES as f64,
        })
        .collect();
    // Rates are short when every entry read is inside the window: older ones were not reached.
    let rates_partial =
        entries.len() >= throughput::SCAN && entries.last().is_some_and(|e| e.occurred_at >= since);
    Flow {
        shared_queues: dataset.is_some(),
        dataset,
        nodes,
        edges,
        counts,
        rates_partial,
    }
}

#[derive(Deserialize)]
pub struct FlowParams {
    dataset: Option<String>,
}

/// The flow with what the dashboard shows beside it — the overview of `/api/datasets` and the
/// queues of `/api/queues` — from the same reads: on AWS the store's counts are a Scan, and the
/// page asks every few seconds.
#[derive(Serialize)]
pub struct FlowView {
    #[serde(flatten)]
    pub flow: Flow,
    pub overview: Datasets,
    pub queues: Vec<QueueView>,
}

pub async fn flow(
    State(api): State<Api>,
    Query(p): Query<FlowParams>,
) -> Result<Json<FlowView>, ApiError> {
    let dataset = p.dataset.filter(|d| !d.is_empty());
    let all = api.file_counts().await?;
    let mut counts: BTreeMap<FileState, u64> = FileState::ALL.iter().map(|&s| (s, 0)).collect();
    for (d, s, n) in &all {
        if dataset.as_ref().is_none_or(|want| want == d) {
            *counts.entry(*s).or_default() += n;
        }
    }
    let queues = queue_views(&api).await?;
    let entries = api.ports.audit.recent(throughput::SCAN).await?;
    let now = clock::now();
    Ok(Json(FlowView {
        flow: build(dataset, counts, &queues, &entries, now),
        overview: overview(&api.config, &all, &entries, now),
        queues,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::entry;
    use choreo_domain::FileId;

    fn files(n: usize) -> Vec<FileId> {
        (0..n).map(|i| FileId(format!("f-{i}"))).collect()
    }

    #[test]
    fn rates_count_files_on_the_edge_they_crossed_within_the_window() {
        let now = clock::now();
        let recent = now - TimeDelta::minutes(1);
        let entries = vec![
            entry(
                Event::BatchIngested {
                    batch_id: "b".into(),
                    dataset: "d".into(),
                    files: files(10),
                },
                recent,
            ),
            entry(
                Event::BatchFailed {
                    batch_id: "c".into(),
                    dataset: "d".into(),
                    stage: Stage::Crawler,
                    reason: "r".into(),
                    files: files(5),
                },
                recent,
            ),
            entry(
                Event::FileRejected {
                    file_id: "f".into(),
                    dataset: "e".into(),
                    reason: "r".into(),
                },
                recent,
            ),
            // Older than the window: not in the rate.
            entry(
                Event::BatchIngested {
                    batch_id: "a".into(),
                    dataset: "d".into(),
                    files: files(100),
                },
                now - TimeDelta::minutes(RATE_WINDOW_MINUTES + 1),
            ),
        ];
        let mut counts: BTreeMap<FileState, u64> = FileState::ALL.iter().map(|&s| (s, 0)).collect();
        counts.insert(FileState::Valid, 3);
        counts.insert(FileState::Ingested, 110);
        let flow = build(Some("d".into()), counts, &[], &entries, now);
        let rate = |from: &str, to: &str| {
            flow.edges
                .iter()
                .find(|e| e.from == from && e.to == to)
                .unwrap()
                .per_minute
        };
        assert_eq!(rate("transformer", "INGESTED"), 2.0);
        assert_eq!(rate("crawler", "FAILED"), 1.0);
        assert_eq!(rate("transformer", "FAILED"), 0.0);
        // Dataset e's rejection is not d's.
        assert_eq!(rate("validator", "quarantine"), 0.0);
        let node = |id: &str| flow.nodes.iter().find(|n| n.id == id).unwrap();
        assert_eq!(node("crawler").files_waiting, 3);
        assert_eq!(node("INGESTED").files, 110);
        assert!(flow.shared_queues);
        assert!(!flow.rates_partial);
    }
}
