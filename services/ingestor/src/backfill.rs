//! Backfill: registering objects already in the input bucket that have no record — those that
//! landed before notifications were wired, or whose notifications were lost.
//!
//! Each unrecorded object goes through [`crate::register`], the ingestor's own path for a
//! notification: same routing, same put-if-absent, same `FileRegistered`, a trace per file. It is
//! called directly rather than by sending S3-shaped notifications to the ingest queue, so that
//! `choreo backfill` says exactly what it registered, and works whether or not the pipeline runs
//! (the validator takes the files up once it does).
//!
//! # Which objects have a record
//!
//! A record's id is derived from bucket, key and version ([`choreo_domain::FileId::derive`]), but
//! the version a notification carries and the one a listing gives are not always the same: on an
//! unversioned S3 bucket the ingestor keys a notified object on its notification's `sequencer`,
//! which a listing does not show (it gives the ETag). Deriving the id from the listing and relying
//! on the put-if-absent would register such objects a second time. So backfill first reads the
//! records of the input bucket's keys, and an object counts as recorded when a record for its key
//! has its version (the local backend and versioned buckets, where both sides agree), or was
//! created at or after the object's last modification, less [`CLOCK_SKEW`] (the record is of this
//! upload or a later one: a registration never precedes its upload). Only an object rewritten since
//! its key's last record is registered anew, under the id its listed version gives; running backfill
//! again finds that record and changes nothing.
//!
//! Cost: one listing of the bucket (under the prefix) and one listing of the records of each
//! dataset the keys route to. An object whose notification is still on its way when backfill runs
//! may be registered twice on an unversioned S3 bucket (once under its ETag, once under its
//! sequencer): run backfill once notifications have caught up.

use crate::notification::ObjectCreated;
use crate::{Registration, register};
use choreo_domain::{FileRecord, UNMATCHED_DATASET};
use choreo_ports::{FileQuery, ObjectMeta, PortError};
use choreo_runtime::ServiceContext;
use chrono::{DateTime, Utc};
use std::collections::{BTreeSet, HashMap};

/// How far S3's clock (an object's last modification) may be ahead of ours (a record's creation)
/// without making a recorded object look newer than its record.
pub const CLOCK_SKEW: chrono::Duration = chrono::Duration::seconds(5);

/// What a backfill did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackfillReport {
    /// Objects listed under the prefix.
    pub listed: u64,
    /// Objects registered now.
    pub registered: u64,
    /// Objects that had a record already, left untouched.
    pub recorded: u64,
    /// Objects whose keys the pipeline does not take, left untouched (each logged as `KeyRefused`).
    pub refused: u64,
}

/// A record's version and creation time, what [`is_recorded`] compares an object with.
type Seen = (String, DateTime<Utc>);

/// Registers every object of the input bucket under `prefix` that has no record. `progress` is
/// called with the number of objects looked at so far, out of `listed` (given once, first).
pub async fn backfill(
    ctx: &ServiceContext,
    prefix: &str,
    progress: &mut (dyn FnMut(BackfillProgress) + Send),
) -> Result<BackfillReport, PortError> {
    let config = &ctx.settings.config;
    let bucket = &config.buckets.input;
    let objects = ctx.ports.objects.list(bucket, prefix).await?;
    let mut report = BackfillReport {
        listed: objects.len() as u64,
        ..Default::default()
    };
    progress(BackfillProgress::Listed(report.listed));
    let datasets: BTreeSet<&str> = objects
        .iter()
        .map(|o| {
            ctx.settings
                .router
                .route(&o.key)
                .unwrap_or(UNMATCHED_DATASET)
        })
        .collect();
    let mut records: HashMap<String, Vec<Seen>> = HashMap::new();
    for dataset in datasets {
        for r in records_of(ctx, dataset).await? {
            if &r.bucket == bucket {
                records
                    .entry(r.key)
                    .or_default()
                    .push((r.version, r.created_at));
            }
        }
    }
    for (done, object) in objects.into_iter().enumerate() {
        let seen = records.get(&object.key).map(Vec::as_slice).unwrap_or(&[]);
        if is_recorded(&object, seen) {
            report.recorded += 1;
        } else {
            let created = ObjectCreated {
                bucket: bucket.clone(),
                key: object.key,
                size: object.size,
                version: object.version,
                pin: object.pin,
            };
            match register(ctx, created).await? {
                Registration::Created => report.registered += 1,
                Registration::Refused => report.refused += 1,
                // Registered under this version meanwhile (by a notification, or a backfill
                // running beside this one).
                Registration::Republished | Registration::Exists | Registration::Foreign => {
                    report.recorded += 1
                }
            }
        }
        progress(BackfillProgress::Done(done as u64 + 1));
    }
    choreo_telemetry::events::emit(crate::events::BackfillFinished {
        prefix,
        listed: report.listed,
        registered: report.registered,
    });
    Ok(report)
}

/// How far a backfill is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackfillProgress {
    /// The listing is in: this many objects to look at.
    Listed(u64),
    /// This many looked at.
    Done(u64),
}

/// Every record of `dataset`, following pages.
async fn records_of(ctx: &ServiceContext, dataset: &str) -> Result<Vec<FileRecord>, PortError> {
    let query = FileQuery {
        dataset: Some(dataset.to_string()),
        state: None,
        limit: 500,
        after: None,
    };
    ctx.ports.state.list_all(query).await
}

/// Whether one of the records of an object's key is about this upload of it: see the module's
/// header.
pub fn is_recorded(object: &ObjectMeta, records: &[Seen]) -> bool {
    records.iter().any(|(version, created_at)| {
        *version == object.version || *created_at + CLOCK_SKEW >= object.last_modified
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn object(version: &str, modified_secs: i64) -> ObjectMeta {
        ObjectMeta {
            key: "daily/a.csv".into(),
            size: 1,
            version: version.into(),
            pin: None,
            last_modified: Utc.timestamp_opt(1_000_000 + modified_secs, 0).unwrap(),
        }
    }

    fn seen(version: &str, created_secs: i64) -> Seen {
        (
            version.into(),
            Utc.timestamp_opt(1_000_000 + created_secs, 0).unwrap(),
        )
    }

    #[test]
    fn an_object_is_recorded_by_its_version_or_a_later_record() {
        // No record for the key.
        assert!(!is_recorded(&object("e1", 0), &[]));
        // Same version: whenever the record was made.
        assert!(is_recorded(&object("e1", 100), &[seen("e1", 0)]));
        // Registered from a notification under another version marker (a sequencer), after the
        // upload: the same upload.
        assert!(is_recorded(&object("e1", 0), &[seen("0055", 1)]));
        // Within the clock skew allowed.
        assert!(is_recorded(&object("e1", 4), &[seen("0055", 0)]));
        // Rewritten well after its key's last record: a new upload without a record.
        assert!(!is_recorded(&object("e2", 60), &[seen("0055", 0)]));
        assert!(is_recorded(
            &object("e2", 60),
            &[seen("0055", 0), seen("e2", 61)]
        ));
    }
}
