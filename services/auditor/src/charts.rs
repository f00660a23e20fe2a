//! What the dashboard's charts plot: files reaching each terminal state per minute, and how long
//! each stage holds a file (p50, p95).
//!
//! Both are read with a bounded cost, whatever the store holds. The series comes from the newest
//! [`throughput::SCAN`] audit entries, as throughput does, and says when older minutes may be
//! short (`partial`). Latencies come from the histories of at most [`LATENCY_SAMPLE`] files per
//! terminal state: the store lists files in id order and ids are hashes, so the first ones read are
//! a sample across time rather than the oldest; only steps taken within the window count.

use crate::api::{Api, ApiError};
use crate::throughput;
use axum::Json;
use axum::extract::{Query, State};
use choreo_domain::clock;
use choreo_domain::{Envelope, Event, FileRecord, FileState, Stage};
use choreo_ports::{AuditEntry, FileQuery};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// The longest window a chart may ask for, in minutes.
pub const MAX_MINUTES: i64 = 6 * 60;
/// Files read per terminal state for the latencies.
pub const LATENCY_SAMPLE: usize = 500;

const TERMINAL: [FileState; 3] = [
    FileState::Ingested,
    FileState::Quarantined,
    FileState::Failed,
];

#[derive(Debug, Serialize)]
pub struct Series {
    /// The start of each minute, oldest first.
    pub minutes: Vec<DateTime<Utc>>,
    /// Per terminal state, files that reached it in each minute.
    pub series: BTreeMap<FileState, Vec<u64>>,
    /// The older minutes may be short: the entries read did not reach back to the window's start.
    pub partial: bool,
}

/// Files reaching each terminal state per minute over the `minutes` before `now` (the current,
/// unfinished minute last), from audit entries newest first.
pub fn per_minute(
    entries: &[AuditEntry],
    dataset: Option<&str>,
    now: DateTime<Utc>,
    minutes: i64,
    scanned: usize,
) -> Series {
    let this_minute = now.duration_trunc(TimeDelta::minutes(1)).unwrap_or(now);
    let start = this_minute - TimeDelta::minutes(minutes - 1);
    let len = minutes as usize;
    let mut series: BTreeMap<FileState, Vec<u64>> =
        TERMINAL.into_iter().map(|s| (s, vec![0; len])).collect();
    for e in entries {
        if e.occurred_at < start || dataset.is_some_and(|d| d != e.dataset) {
            continue;
        }
        let Ok(envelope) = serde_json::from_value::<Envelope>(e.body.clone()) else {
            continue;
        };
        let (state, n) = match envelope.event {
            Event::FileQuarantined { .. } => (FileState::Quarantined, 1),
            Event::BatchIngested { files, .. } => (FileState::Ingested, files.len()),
            Event::BatchFailed { files, .. } => (FileState::Failed, files.len()),
            _ => continue,
        };
        let i = (e.occurred_at - start).num_minutes() as usize;
        if let Some(slot) = series.get_mut(&state).and_then(|v| v.get_mut(i)) {
            *slot += n as u64;
        }
    }
    Series {
        minutes: (0..minutes)
            .map(|i| start + TimeDelta::minutes(i))
            .collect(),
        series,
        partial: entries.len() >= scanned && entries.last().is_some_and(|e| e.occurred_at >= start),
    }
}

#[derive(Debug, Serialize, PartialEq)]
pub struct StageLatency {
    pub stage: Stage,
    /// Files whose step at this stage was measured.
    pub files: usize,
    pub p50_ms: u64,
    pub p95_ms: u64,
}

/// How long each stage held each file, from the histories: the time from the entry before the
/// stage's first step to its last step, so that the transformer's launch and its job count as one,
/// and time spent waiting in the stage's queue counts too (it is what the file waited). The
/// ingestor's registration has no before, and retries by an operator are not a stage.
pub fn latencies(records: &[FileRecord], since: DateTime<Utc>) -> Vec<StageLatency> {
    let mut per_stage: HashMap<Stage, Vec<i64>> = HashMap::new();
    for r in records {
        let mut by_stage: HashMap<Stage, i64> = HashMap::new();
        for pair in r.history.windows(2) {
            let (before, step) = (&pair[0], &pair[1]);
            if step.at < since || matches!(step.stage, Stage::Operator | Stage::Ingestor) {
                continue;
            }
            *by_stage.entry(step.stage).or_default() += (step.at - before.at).num_milliseconds();
        }
        for (stage, ms) in by_stage {
            per_stage.entry(stage).or_default().push(ms.max(0));
        }
    }
    let order = |s: &Stage| Stage::SERVICES.iter().position(|x| x == s);
    let mut out: Vec<StageLatency> = per_stage
        .into_iter()
        .map(|(stage, mut ms)| {
            ms.sort_unstable();
            StageLatency {
                stage,
                files: ms.len(),
                p50_ms: percentile(&ms, 50) as u64,
                p95_ms: percentile(&ms, 95) as u64,
            }
        })
        .collect();
    out.sort_by_key(|l| order(&l.stage));
    out
}

/// The nearest-rank percentile of sorted, non-empty `values`.
fn percentile(sorted: &[i64], p: usize) -> i64 {
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

#[derive(Deserialize)]
pub struct ChartParams {
    dataset: Option<String>,
    /// The window, in minutes (default 60, at most [`MAX_MINUTES`]).
    minutes: Option<i64>,
}

impl ChartParams {
    fn minutes(&self) -> i64 {
        self.minutes.unwrap_or(60).clamp(1, MAX_MINUTES)
    }

    fn dataset(&self) -> Option<String> {
        self.dataset.clone().filter(|d| !d.is_empty())
    }
}

pub async fn series(
    State(api): State<Api>,
    Query(p): Query<ChartParams>,
) -> Result<Json<Series>, ApiError> {
    let entries = api.ports.audit.recent(throughput::SCAN).await?;
    Ok(Json(per_minute(
        &entries,
        p.dataset().as_deref(),
        clock::now(),
        p.minutes(),
        throughput::SCAN,
    )))
}

#[derive(Serialize)]
pub struct Latencies {
    pub stages: Vec<StageLatency>,
    /// Files whose histories were read.
    pub files_read: usize,
}

pub async fn latency(
    State(api): State<Api>,
    Query(p): Query<ChartParams>,
) -> Result<Json<Latencies>, ApiError> {
    let mut records = Vec::new();
    for state in TERMINAL {
        let page = api
            .ports
            .state
            .list(&FileQuery {
                dataset: p.dataset(),
                state: Some(state),
                limit: LATENCY_SAMPLE,
                after: None,
            })
            .await?;
        records.extend(page.items);
    }
    let since = clock::now() - TimeDelta::minutes(p.minutes());
    Ok(Json(Latencies {
        stages: latencies(&records, since),
        files_read: records.len(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::entry;
    use choreo_domain::{FileId, HistoryEntry};

    #[test]
    fn terminal_files_fall_in_the_minute_they_ended() {
        let now = DateTime::parse_from_rfc3339("2026-12-07T16:30:20Z")
            .unwrap()
            .to_utc();
        let entries = vec![
            entry(
                Event::BatchIngested {
                    batch_id: "b".into(),
                    dataset: "d".into(),
                    files: vec![FileId("a".into()), FileId("b".into())],
                },
                now - TimeDelta::seconds(5),
            ),
            entry(
                Event::FileQuarantined {
                    file_id: "q".into(),
                    dataset: "d".into(),
                    bucket: "f".into(),
                    key: "k".into(),
                },
                now - TimeDelta::seconds(50),
            ),
            // Before the window.
            entry(
                Event::FileQuarantined {
                    file_id: "old".into(),
                    dataset: "d".into(),
                    bucket: "f".into(),
                    key: "k".into(),
                },
                now - TimeDelta::minutes(10),
            ),
        ];
        let s = per_minute(&entries, None, now, 3, throughput::SCAN);
        assert_eq!(s.minutes.len(), 3);
        assert_eq!(
            s.minutes[2],
            DateTime::parse_from_rfc3339("2026-12-07T16:30:00Z").unwrap()
        );
        assert_eq!(s.series[&FileState::Ingested], vec![0, 0, 2]);
        assert_eq!(s.series[&FileState::Quarantined], vec![0, 1, 0]);
        assert_eq!(s.series[&FileState::Failed], vec![0, 0, 0]);
        assert!(!s.partial);
        let other = per_minute(&entries, Some("e"), now, 3, throughput::SCAN);
        assert_eq!(other.series[&FileState::Ingested], vec![0, 0, 0]);
    }

    fn record(steps: &[(i64, Stage, FileState)]) -> FileRecord {
        let t0 = DateTime::parse_from_rfc3339("2026-12-07T16:00:00Z")
            .unwrap()
            .to_utc();
        let mut r = choreo_domain::NewFile {
            id: FileId("f".into()),
            dataset: "d".into(),
            bucket: "b".into(),
            key: "k".into(),
            size: 1,
            version: "v".into(),
            pin: None,
            reason: None,
            trace_id: None,
            traceparent: None,
        }
        .into_record(t0);
        let mut from = FileState::New;
        for &(ms, stage, to) in steps {
            r.history.push(HistoryEntry {
                at: t0 + TimeDelta::milliseconds(ms),
                stage,
                from: Some(from),
                to,
                reason: None,
                trace_id: None,
            });
            from = to;
        }
        r
    }

    #[test]
    fn a_stage_holds_a_file_from_the_step_before_it_to_its_last_step() {
        let since = DateTime::parse_from_rfc3339("2026-12-07T15:00:00Z")
            .unwrap()
            .to_utc();
        let records: Vec<FileRecord> = (1..=20)
            .map(|i| {
                record(&[
                    (100 * i, Stage::Validator, FileState::Valid),
                    (100 * i + 1000, Stage::Crawler, FileState::Cataloged),
                    (100 * i + 1500, Stage::Transformer, FileState::Transforming),
                    (100 * i + 4000, Stage::Transformer, FileState::Ingested),
                ])
            })
            .collect();
        let l = latencies(&records, since);
        assert_eq!(
            l,
            vec![
                StageLatency {
                    stage: Stage::Validator,
                    files: 20,
                    p50_ms: 1000,
                    p95_ms: 1900,
                },
                StageLatency {
                    stage: Stage::Crawler,
                    files: 20,
                    p50_ms: 1000,
                    p95_ms: 1000,
                },
                // The launch and the job, together.
                StageLatency {
                    stage: Stage::Transformer,
                    files: 20,
                    p50_ms: 3000,
                    p95_ms: 3000,
                },
            ]
        );
        // Steps before the window are left out.
        let later = since + TimeDelta::hours(2);
        assert!(latencies(&records, later).is_empty());
    }
}
