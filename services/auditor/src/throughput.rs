//! Throughput: files that reached a terminal state per dataset, over the last minute and hour.
//!
//! Derived from the audit trail, not from the file records: the events that end a file's way
//! through the pipeline say when it ended and how many files it carried — `FileQuarantined` (one
//! file QUARANTINED), `BatchIngested` (its files INGESTED), `BatchFailed` (its files FAILED). The
//! newest audit entries are read (a bounded number, [`SCAN`]), so a request costs the same whatever
//! the number of files; the file records have no index on their update time, and scanning them
//! would grow with the store. When more events happened in the last hour than were read, the hour's
//! figure is a lower bound and says so (`partial`).

use choreo_domain::{Envelope, Event};
use choreo_ports::AuditEntry;
use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use std::collections::BTreeMap;

/// How many of the newest audit entries a throughput figure reads.
pub const SCAN: usize = 2000;

/// Files of one dataset that reached a terminal state recently.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Throughput {
    pub last_minute: u64,
    pub last_hour: u64,
}

/// Throughput per dataset from `entries` (newest first, as `AuditLog::recent` returns them), and
/// whether the hour's figures may be short: every entry was read and the oldest is still within
/// the hour.
pub fn from_audit(
    entries: &[AuditEntry],
    now: DateTime<Utc>,
    scanned: usize,
) -> (BTreeMap<String, Throughput>, bool) {
    let minute_ago = now - TimeDelta::minutes(1);
    let hour_ago = now - TimeDelta::hours(1);
    let mut out: BTreeMap<String, Throughput> = BTreeMap::new();
    for entry in entries {
        if entry.occurred_at < hour_ago {
            continue;
        }
        let files = match terminal_files(entry) {
            0 => continue,
            n => n,
        };
        let t = out.entry(entry.dataset.clone()).or_default();
        t.last_hour += files;
        if entry.occurred_at >= minute_ago {
            t.last_minute += files;
        }
    }
    let partial =
        entries.len() >= scanned && entries.last().is_some_and(|e| e.occurred_at >= hour_ago);
    (out, partial)
}

/// How many files the event moved to a terminal state.
fn terminal_files(entry: &AuditEntry) -> u64 {
    // Entries whose body does not parse (a newer contract) count for nothing rather than failing
    // the whole overview.
    let Ok(envelope) = serde_json::from_value::<Envelope>(entry.body.clone()) else {
        return 0;
    };
    match envelope.event {
        Event::FileQuarantined { .. } => 1,
        Event::BatchIngested { files, .. } | Event::BatchFailed { files, .. } => files.len() as u64,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::entry;
    use choreo_domain::{FileId, Stage};

    fn files(n: usize) -> Vec<FileId> {
        (0..n).map(|i| FileId(format!("f-{i}"))).collect()
    }

    #[test]
    fn counts_files_that_ended_in_the_last_minute_and_hour() {
        let now = choreo_domain::clock::now();
        let entries = vec![
            entry(
                Event::BatchIngested {
                    batch_id: "b2".into(),
                    dataset: "d".into(),
                    files: files(3),
                },
                now - TimeDelta::seconds(10),
            ),
            entry(
                Event::FileValidated {
                    file_id: "f-9".into(),
                    dataset: "d".into(),
                },
                now - TimeDelta::seconds(20),
            ),
            entry(
                Event::FileQuarantined {
                    file_id: "f-8".into(),
                    dataset: "e".into(),
                    bucket: "b".into(),
                    key: "k".into(),
                },
                now - TimeDelta::minutes(5),
            ),
            entry(
                Event::BatchFailed {
                    batch_id: "b1".into(),
                    dataset: "d".into(),
                    stage: Stage::Transformer,
                    reason: "r".into(),
                    files: files(2),
                },
                now - TimeDelta::minutes(30),
            ),
            entry(
                Event::BatchIngested {
                    batch_id: "b0".into(),
                    dataset: "d".into(),
                    files: files(7),
                },
                now - TimeDelta::minutes(90),
            ),
        ];
        let (t, partial) = from_audit(&entries, now, SCAN);
        assert_eq!(
            t["d"],
            Throughput {
                last_minute: 3,
                last_hour: 5
            }
        );
        assert_eq!(
            t["e"],
            Throughput {
                last_minute: 0,
                last_hour: 1
            }
        );
        assert!(!partial);
        // Reading only the two newest entries, all within the hour, may miss some.
        let (_, partial) = from_audit(&entries[..2], now, 2);
        assert!(partial);
    }
}
