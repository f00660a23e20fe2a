//! The state store and the audit log on DynamoDB.
//!
//! - `items.rs`: the items, their keys and index keys, and how records become items and back.
//! - `state.rs`: the [`StateStore`](choreo_ports::StateStore) on the state table.
//! - `audit.rs`: the [`AuditLog`](choreo_ports::AuditLog) on the audit table.
//! - `tables.rs`: creates both tables and their indexes.
//!
//! # The state table (`aws.state_table`)
//!
//! One table, partition key `pk` (S), no sort key, on-demand capacity. A key per file, so no dataset
//! is capped by one partition (DynamoDB serves about 1,000 write units a second per partition; the
//! seed's key on dataset type capped a dataset near 60–80 files a second).
//!
//! | item | `pk` | attributes | `gsi1pk` / `gsi1sk` |
//! |---|---|---|---|
//! | file | `F#<file id>` | one per [`FileRecord`](choreo_domain::FileRecord) field: `state` (NEW…), `size` (N), `history` as a list of maps (times as RFC 3339); `created_at` and `updated_at` only where they are not the first and last entries' times, and the pin as `pin` (its kind) when it is the `version` — so that a file's item stays under 1 KB, one write unit a move | `F#<PHASE>#<shard>` / `<dataset>#<file id>` |
//! | batch | `B#<batch id>` | `state`, `created_at`, the whole [`Batch`](choreo_domain::Batch) as JSON in `body`, `write_token` (the last update's) | `B#<STATE>` / `<created_at>#<batch id>` |
//! | lease | `L#<name>` | `holder`, `expires_at` (ms, N) | none (not indexed) |
//!
//! The global secondary index `by_phase` (keys only) answers "files of dataset D in state S"
//! without a hot partition. A file's index partition is its phase and a shard, a stable hash of its
//! id modulo `aws.index_shards`. The phase is `ACTIVE` for every state a file passes through (NEW,
//! VALID, INVALID, CATALOGED, TRANSFORMING) and the state itself for those it rests in (INGESTED,
//! QUARANTINED, FAILED). A move within a phase does not touch the index key, and a keys-only entry
//! is only written when its key changes: of a file's four moves on its way to INGESTED, only the
//! last writes the index (out of `ACTIVE`, into `INGESTED`). A listing reads ids from the index,
//! then the records (`BatchGetItem`, a hundred at a time, in id order), and keeps those in the state
//! asked for; only `ACTIVE` holds several states, and it holds only the files in flight. DynamoDB
//! allows about 1,000 WCU/s per partition, index partitions included, and a throttled index
//! throttles the table: each file writes `ACTIVE` twice (in, then out), so `index_shards` partitions
//! carry `index_shards × 500` files a second at full load, a third of that with room to spare.
//!
//! Why the dataset is in the sort key and not in `gsi1pk` (`<dataset>#<PHASE>#<shard>`): a
//! [`Transition`](choreo_domain::Transition) names the file and the states but not the dataset,
//! and the transition must be one `UpdateItem` (the history entry in the same write as the state).
//! An update expression cannot build a string from a stored attribute, so it can only set `gsi1pk`
//! to a value computed from the transition itself: the phase and the id's shard. The same layout
//! serves "files in state S" (all datasets) by Query instead of a Scan.
//!
//! Batches share the index under `B#<STATE>` (few items, created once per crawl window), so
//! `batches_in` is a Query (and a `BatchGetItem`) rather than a Scan of every file. Index reads are
//! eventually consistent: a file or batch that changed a moment ago may be listed under its old
//! state. Every write is conditional, so a stale listing costs a `Conflict`, never a wrong
//! transition.
//!
//! # The audit table (`aws.audit_table`)
//!
//! Partition key `pk` only. Events are written in pages, `P#<page id>`: the events that reached
//! the auditor within 20 ms of each other (a receive of ten, handled at once), each as its
//! envelope's JSON in the list `events`, with the time they were recorded. A page and its index
//! entry cost a write unit per KB each, so ten events together cost about 6 units where ten items
//! cost 20. A page is a new item each time, so an event delivered twice may be stored twice (in two
//! pages): the reads keep one entry per event id, so nothing is counted twice. Items written
//! before pages, one per event (`E#<event id>`), are read the same way. The index `by_time` holds
//! pages under `EVENTS#<0..15>` (a shard of the page id), sorted by `<recorded_at>#<page id>`:
//! sixteen shards, so that at 1,000 files a second no index partition takes more than a third of
//! its write limit (see `docs/cost.md`). There are no counter items: one per dataset and event type
//! took every event of its dataset, so counts derive from the trail. Alerts are `A#<id>` under
//! `ALERTS#PENDING` or `ALERTS#SENT`.

mod audit;
mod items;
mod state;
mod tables;

pub use audit::DynamoAuditLog;
pub use state::DynamoStateStore;
pub use tables::create_tables;

use aws_sdk_dynamodb::types::AttributeValue;
use choreo_ports::PortError;
use chrono::{DateTime, SecondsFormat, Utc};
use std::collections::HashMap;

/// A DynamoDB item.
type Item = HashMap<String, AttributeValue>;

/// The partition key of both tables.
const PK: &str = "pk";
/// The index keys of both tables.
const GSI1PK: &str = "gsi1pk";
const GSI1SK: &str = "gsi1sk";

/// The state table's index of files by state and dataset (and of batches by state).
pub const STATE_INDEX: &str = "by_phase";
/// The audit table's index of event pages (and alerts) by time.
pub const TIME_INDEX: &str = "by_time";

/// Put-if-absent: the condition of every create, in both tables (`#pk` bound by the request).
const ABSENT: &str = "attribute_not_exists(#pk)";

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// RFC 3339 with nanoseconds: exact, and of fixed width so that it sorts as text.
fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

fn build_error(op: &'static str, target: &str, e: impl std::fmt::Display) -> PortError {
    PortError::permanent(op, target, format!("request: {e}"))
}

#[cfg(test)]
mod testutil {
    use super::{DynamoAuditLog, DynamoStateStore, create_tables};
    use crate::client::AwsClients;
    use crate::moto::Moto;
    use choreo_domain::config::AwsSettings;

    pub(super) struct Fixture {
        // Dropped last: the server outlives the clients.
        pub(super) clients: AwsClients,
        pub(super) settings: AwsSettings,
        _moto: Moto,
    }

    impl Fixture {
        pub(super) fn state(&self) -> DynamoStateStore {
            DynamoStateStore::new(
                self.clients.dynamodb.clone(),
                &self.settings.state_table,
                self.settings.index_shards,
            )
        }

        pub(super) fn audit(&self) -> DynamoAuditLog {
            DynamoAuditLog::new(self.clients.dynamodb.clone(), &self.settings.audit_table)
        }
    }

    pub(super) async fn fixture(index_shards: u32) -> Fixture {
        let moto = Moto::start();
        let clients = AwsClients::emulator(&moto.endpoint).await;
        let settings = AwsSettings {
            index_shards,
            ..AwsSettings::default()
        };
        create_tables(&clients, &settings).await.unwrap();
        Fixture {
            clients,
            settings,
            _moto: moto,
        }
    }

    /// The calls each operation costs, by operation name.
    pub(super) fn calls(f: &Fixture) -> Vec<(String, u64)> {
        let calls = f
            .clients
            .calls
            .snapshot()
            .into_iter()
            .map(|((_, op), n)| (op, n))
            .collect();
        f.clients.calls.reset();
        calls
    }

    pub(super) fn one(op: &str) -> Vec<(String, u64)> {
        vec![(op.to_string(), 1)]
    }
}
