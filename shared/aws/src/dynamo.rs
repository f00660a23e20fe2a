//! The state store and the audit log on DynamoDB.
//!
//! # The state table (`aws.state_table`)
//!
//! One table, partition key `pk` (S), no sort key, on-demand capacity. A key per file, so no dataset
//! is capped by one partition (DynamoDB serves about 1,000 write units a second per partition; the
//! seed's key on dataset type capped a dataset near 60–80 files a second).
//!
//! | item | `pk` | attributes | `gsi1pk` / `gsi1sk` |
//! |---|---|---|---|
//! | file | `F#<file id>` | one per [`FileRecord`] field: `state` (NEW…), `size` (N), timestamps as RFC 3339, `history` as a list of maps | `F#<PHASE>#<shard>` / `<dataset>#<file id>` |
//! | batch | `B#<batch id>` | `state`, `created_at`, the whole [`Batch`] as JSON in `body`, `write_token` (the last update's) | `B#<STATE>` / `<created_at>#<batch id>` |
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
//! [`Transition`] names the file and the states but not the dataset, and the transition must be one
//! `UpdateItem` (the history entry in the same write as the state). An update expression cannot
//! build a string from a stored attribute, so it can only set `gsi1pk` to a value computed from
//! the transition itself: the phase and the id's shard. The same layout serves "files in state S"
//! (all datasets) by Query instead of a Scan.
//!
//! Batches share the index under `B#<STATE>` (few items, created once per crawl window), so
//! `batches_in` is a Query (and a `BatchGetItem`) rather than a Scan of every file. Index reads are
//! eventually consistent: a file or batch that changed a moment ago may be listed under its old
//! state. Every write is conditional, so a stale listing costs a `Conflict`, never a wrong
//! transition.
//!
//! # The audit table (`aws.audit_table`)
//!
//! Partition key `pk` only. Events are `E#<event id>`, each one conditional put (if absent), so a
//! duplicate event is neither stored nor counted twice. The index `by_time` holds events under
//! `EVENTS#<0..15>`, sorted by `<recorded_at>#<event id>`: sixteen shards, so that at 1,000 files a
//! second (about 2,400 events) no index partition takes more than a third of its write limit (see
//! `docs/cost.md`). There are no counter items: one per dataset and event type took every event of
//! its dataset, so counts derive from the trail. Alerts are `A#<id>` under `ALERTS#PENDING` or
//! `ALERTS#SENT`.

use crate::client::AwsClients;
use crate::error::{code, condition_held, port_error};
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, IndexStatus,
    KeySchemaElement, KeyType, KeysAndAttributes, PointInTimeRecoverySpecification, Projection,
    ProjectionType, ReturnValue, ReturnValuesOnConditionCheckFailure, ScalarAttributeType,
    TableStatus,
};
use choreo_domain::config::AwsSettings;
use choreo_domain::{
    Alert, Batch, BatchState, Envelope, FileId, FileRecord, FileState, HistoryEntry, NewFile, Pin,
    Stage, SweepMark, Transition,
};
use choreo_ports::{
    AuditEntry, AuditLog, BatchOutcome, FileQuery, LeaseInfo, LeaseOutcome, Page, PortError,
    Registered, StateStore, TransitionOutcome,
};
use chrono::{DateTime, SecondsFormat, Utc};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::str::FromStr;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// A DynamoDB item.
type Item = HashMap<String, AttributeValue>;

/// The partition key of both tables.
const PK: &str = "pk";
/// The index keys of both tables.
const GSI1PK: &str = "gsi1pk";
const GSI1SK: &str = "gsi1sk";

/// The state table's index of files by state and dataset (and of batches by state).
pub const STATE_INDEX: &str = "by_phase";
/// The audit table's index of events by time (and of counters).
pub const TIME_INDEX: &str = "by_time";
/// How many partitions the audit index spreads events and counters over.
const AUDIT_SHARDS: u32 = 16;

/// Page size when a query asks for 0, as the local backend.
const DEFAULT_LIMIT: usize = 100;
/// The largest page served, whatever the query asks.
const MAX_LIMIT: usize = 10_000;
/// How many index queries `list` runs at once.
const QUERY_CONCURRENCY: usize = 16;
/// The most keys one `BatchGetItem` takes.
const BATCH_GET_MAX: usize = 100;
/// Calls of one `BatchGetItem` chunk before unprocessed keys are an error (throttling).
const UNPROCESSED_ATTEMPTS: u32 = 5;

// Conditions, by name. `#pk`, `#state` and `#holder` are bound by every request that uses them.
/// Put-if-absent.
const ABSENT: &str = "attribute_not_exists(#pk)";
/// A transition applies only from its `from` state.
const STATE_IS: &str = "#state = :from";
/// A batch update applies only from the expected state (false for a missing batch).
const BATCH_STATE_IS: &str = "#state = :expected AND #version = :version";
/// The same for a batch read at version 0, which records written before versions lack.
const BATCH_STATE_IS_FIRST: &str =
    "#state = :expected AND (attribute_not_exists(#version) OR #version = :version)";
/// A lease is taken if it is free, expired, or already the holder's (a renewal).
const LEASE_FREE: &str = "attribute_not_exists(#pk) OR #expires_at <= :now OR #holder = :holder";
/// Only the holder releases a lease.
const HELD_BY: &str = "#holder = :holder";

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

fn file_pk(id: &str) -> String {
    format!("F#{id}")
}

fn batch_pk(id: &str) -> String {
    format!("B#{id}")
}

fn lease_pk(name: &str) -> String {
    format!("L#{name}")
}

/// FNV-1a, 64 bits: a hash that never changes between builds or processes, unlike `std`'s.
fn stable_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn shard_of(key: &str, shards: u32) -> u32 {
    (stable_hash(key) % u64::from(shards.max(1))) as u32
}

/// The index partition family of files in `state`: the states a file passes through on its way
/// share one, `ACTIVE`, so that moving between them leaves the (keys-only) index alone; each state
/// a file rests in has its own.
fn phase(state: FileState) -> &'static str {
    match state {
        FileState::Ingested => "INGESTED",
        FileState::Quarantined => "QUARANTINED",
        FileState::Failed => "FAILED",
        FileState::New
        | FileState::Valid
        | FileState::Invalid
        | FileState::Cataloged
        | FileState::Transforming => ACTIVE,
    }
}

const ACTIVE: &str = "ACTIVE";

/// Every phase, for a listing of all states.
const PHASES: [&str; 4] = [ACTIVE, "INGESTED", "QUARANTINED", "FAILED"];

/// The index partition of a file in `state`.
fn file_index_pk(state: FileState, shard: u32) -> String {
    format!("F#{}#{shard}", phase(state))
}

/// The index sort key of a file: its dataset, then its id.
fn file_index_sk(dataset: &str, id: &str) -> String {
    format!("{dataset}#{id}")
}

/// The index partition of batches in `state`.
fn batch_index_pk(state: BatchState) -> String {
    format!("B#{state}")
}

fn build_error(op: &'static str, target: &str, e: impl std::fmt::Display) -> PortError {
    PortError::permanent(op, target, format!("request: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Items ↔ records.

/// Reads the attributes of one item (or of one map inside it), naming the item's `pk` in errors.
struct Attrs<'a> {
    pk: &'a str,
    /// Where in the item the attributes are (`""`, or `history[2].`), for error messages.
    at: String,
    item: &'a Item,
}

impl<'a> Attrs<'a> {
    fn new(pk: &'a str, item: &'a Item) -> Self {
        Attrs {
            pk,
            at: String::new(),
            item,
        }
    }

    fn malformed(&self, name: &str, what: &str) -> PortError {
        PortError::permanent(
            "decode",
            self.pk,
            format!("malformed item: {}{name} {what}", self.at),
        )
    }

    fn s(&self, name: &str) -> Result<&'a str, PortError> {
        match self.item.get(name) {
            Some(AttributeValue::S(v)) => Ok(v),
            Some(_) => Err(self.malformed(name, "is not a string")),
            None => Err(self.malformed(name, "is missing")),
        }
    }

    /// An optional string: absent (or NULL) is `None`.
    fn opt_s(&self, name: &str) -> Result<Option<String>, PortError> {
        match self.item.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::S(v)) => Ok(Some(v.clone())),
            Some(_) => Err(self.malformed(name, "is not a string")),
        }
    }

    fn n<T: FromStr>(&self, name: &str) -> Result<T, PortError> {
        match self.item.get(name) {
            Some(AttributeValue::N(v)) => v
                .parse()
                .map_err(|_| self.malformed(name, "is out of range")),
            Some(_) => Err(self.malformed(name, "is not a number")),
            None => Err(self.malformed(name, "is missing")),
        }
    }

    fn time(&self, name: &str) -> Result<DateTime<Utc>, PortError> {
        DateTime::parse_from_rfc3339(self.s(name)?)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| self.malformed(name, "is not an RFC 3339 time"))
    }

    fn parse<T: FromStr>(&self, name: &str) -> Result<T, PortError> {
        self.s(name)?
            .parse()
            .map_err(|_| self.malformed(name, "has an unknown value"))
    }

    fn opt_parse<T: FromStr>(&self, name: &str) -> Result<Option<T>, PortError> {
        self.opt_s(name)?
            .map(|v| {
                v.parse()
                    .map_err(|_| self.malformed(name, "has an unknown value"))
            })
            .transpose()
    }

    /// The item's `pk` without its type prefix.
    fn key_after(&self, prefix: &str) -> Result<&'a str, PortError> {
        self.s(PK)?
            .strip_prefix(prefix)
            .ok_or_else(|| self.malformed(PK, &format!("does not start with {prefix}")))
    }
}

fn put_opt(item: &mut Item, name: &str, v: &Option<String>) {
    if let Some(v) = v {
        item.insert(name.to_string(), s(v));
    }
}

/// A history entry as a map attribute. Absent options are left out.
struct HistoryMap(AttributeValue);

impl From<&HistoryEntry> for HistoryMap {
    fn from(h: &HistoryEntry) -> Self {
        let mut m = Item::from([
            ("at".to_string(), s(ts(h.at))),
            ("stage".to_string(), s(h.stage.as_str())),
            ("to".to_string(), s(h.to.as_str())),
        ]);
        if let Some(from) = h.from {
            m.insert("from".into(), s(from.as_str()));
        }
        put_opt(&mut m, "reason", &h.reason);
        put_opt(&mut m, "trace_id", &h.trace_id);
        HistoryMap(AttributeValue::M(m))
    }
}

fn history_entry(a: &Attrs<'_>) -> Result<HistoryEntry, PortError> {
    Ok(HistoryEntry {
        at: a.time("at")?,
        stage: a.parse::<Stage>("stage")?,
        from: a.opt_parse::<FileState>("from")?,
        to: a.parse::<FileState>("to")?,
        reason: a.opt_s("reason")?,
        trace_id: a.opt_s("trace_id")?,
    })
}

/// A file record as an item: `pk` and one attribute per field, without the index keys (which
/// depend on the shard count; see [`DynamoStateStore::file_item`]).
struct FileItem(Item);

impl From<&FileRecord> for FileItem {
    fn from(r: &FileRecord) -> Self {
        let history = r
            .history
            .iter()
            .map(|h| HistoryMap::from(h).0)
            .collect::<Vec<_>>();
        let mut item = Item::from([
            (PK.to_string(), s(file_pk(r.id.as_str()))),
            ("dataset".to_string(), s(&r.dataset)),
            ("bucket".to_string(), s(&r.bucket)),
            ("key".to_string(), s(&r.key)),
            ("size".to_string(), n(r.size)),
            ("version".to_string(), s(&r.version)),
            ("state".to_string(), s(r.state.as_str())),
            ("created_at".to_string(), s(ts(r.created_at))),
            ("updated_at".to_string(), s(ts(r.updated_at))),
            ("history".to_string(), AttributeValue::L(history)),
        ]);
        put_opt(&mut item, "reason", &r.reason);
        put_opt(&mut item, "trace_id", &r.trace_id);
        put_opt(&mut item, "traceparent", &r.traceparent);
        put_opt(&mut item, "batch_id", &r.batch_id);
        put_opt(&mut item, "validation", &r.validation);
        let sweep = r
            .sweep
            .as_ref()
            .map(|m| serde_json::to_string(m).expect("sweep marks always serialize"));
        put_opt(&mut item, "sweep", &sweep);
        // The pin as one attribute named by its kind, readable in the console.
        match &r.pin {
            Some(Pin::VersionId(v)) => put_opt(&mut item, "pin_version_id", &Some(v.clone())),
            Some(Pin::ETag(e)) => put_opt(&mut item, "pin_etag", &Some(e.clone())),
            None => {}
        }
        FileItem(item)
    }
}

impl TryFrom<FileItem> for FileRecord {
    type Error = PortError;

    fn try_from(FileItem(item): FileItem) -> Result<Self, PortError> {
        let pk = match item.get(PK) {
            Some(AttributeValue::S(pk)) => pk.as_str(),
            _ => "(no pk)",
        };
        let a = Attrs::new(pk, &item);
        let history = match item.get("history") {
            Some(AttributeValue::L(entries)) => entries
                .iter()
                .enumerate()
                .map(|(i, e)| match e {
                    AttributeValue::M(m) => history_entry(&Attrs {
                        pk,
                        at: format!("history[{i}]."),
                        item: m,
                    }),
                    _ => Err(a.malformed(&format!("history[{i}]"), "is not a map")),
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => return Err(a.malformed("history", "is not a list")),
            None => return Err(a.malformed("history", "is missing")),
        };
        Ok(FileRecord {
            id: FileId(a.key_after("F#")?.to_string()),
            dataset: a.s("dataset")?.to_string(),
            bucket: a.s("bucket")?.to_string(),
            key: a.s("key")?.to_string(),
            size: a.n("size")?,
            version: a.s("version")?.to_string(),
            pin: match (a.opt_s("pin_version_id")?, a.opt_s("pin_etag")?) {
                (Some(v), _) => Some(Pin::VersionId(v)),
                (None, Some(e)) => Some(Pin::ETag(e)),
                (None, None) => None,
            },
            state: a.parse("state")?,
            reason: a.opt_s("reason")?,
            trace_id: a.opt_s("trace_id")?,
            traceparent: a.opt_s("traceparent")?,
            batch_id: a.opt_s("batch_id")?,
            validation: a.opt_s("validation")?,
            created_at: a.time("created_at")?,
            updated_at: a.time("updated_at")?,
            history,
            sweep: a
                .opt_s("sweep")?
                .map(|j| serde_json::from_str(&j))
                .transpose()
                .map_err(|e| a.malformed("sweep", &e.to_string()))?,
        })
    }
}

/// A batch as an item: its state and creation time as attributes (for the condition and the
/// index), the whole record as JSON in `body`.
struct BatchItem(Item);

impl TryFrom<&Batch> for BatchItem {
    type Error = PortError;

    fn try_from(b: &Batch) -> Result<Self, PortError> {
        let body = serde_json::to_string(b)
            .map_err(|e| PortError::permanent("encode", batch_pk(&b.id), e))?;
        let created = ts(b.created_at);
        Ok(BatchItem(Item::from([
            (PK.to_string(), s(batch_pk(&b.id))),
            ("state".to_string(), s(b.state.as_str())),
            ("dataset".to_string(), s(&b.dataset)),
            ("created_at".to_string(), s(&created)),
            ("body".to_string(), s(body)),
            ("version".to_string(), n(b.version)),
            (GSI1PK.to_string(), s(batch_index_pk(b.state))),
            (GSI1SK.to_string(), s(format!("{created}#{}", b.id))),
        ])))
    }
}

impl TryFrom<BatchItem> for Batch {
    type Error = PortError;

    fn try_from(BatchItem(item): BatchItem) -> Result<Self, PortError> {
        let pk = match item.get(PK) {
            Some(AttributeValue::S(pk)) => pk.as_str(),
            _ => "(no pk)",
        };
        let a = Attrs::new(pk, &item);
        serde_json::from_str(a.s("body")?)
            .map_err(|e| a.malformed("body", &format!("is not a batch: {e}")))
    }
}

/// The attribute naming the write that put a batch item: a fresh token per [`StateStore::update_batch`]
/// call, the same over the SDK's retries of that call.
const WRITE_TOKEN: &str = "write_token";

/// A lease as stored.
struct Lease {
    holder: String,
    expires_at_ms: i64,
}

impl TryFrom<&Item> for Lease {
    type Error = PortError;

    fn try_from(item: &Item) -> Result<Self, PortError> {
        let pk = match item.get(PK) {
            Some(AttributeValue::S(pk)) => pk.as_str(),
            _ => "(no pk)",
        };
        let a = Attrs::new(pk, item);
        Ok(Lease {
            holder: a.s("holder")?.to_string(),
            expires_at_ms: a.n("expires_at")?,
        })
    }
}

fn from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

// ---------------------------------------------------------------------------------------------
// The state store.

/// The [`StateStore`] on one DynamoDB table (see the module documentation for its layout).
#[derive(Debug, Clone)]
pub struct DynamoStateStore {
    client: Client,
    table: String,
    index_shards: u32,
}

/// The `want` files with the smallest ids after `after`: how pages are cut from several shards.
struct Smallest {
    want: usize,
    after: Option<String>,
    items: BTreeMap<String, FileRecord>,
}

impl Smallest {
    fn new(want: usize, after: Option<String>) -> Self {
        Smallest {
            want,
            after,
            items: BTreeMap::new(),
        }
    }

    fn offer(&mut self, rec: FileRecord) {
        if self.after.as_deref().is_some_and(|a| rec.id.as_str() <= a) {
            return;
        }
        self.items.insert(rec.id.0.clone(), rec);
        if self.items.len() > self.want {
            self.items.pop_last();
        }
    }

    fn is_full(&self) -> bool {
        self.items.len() >= self.want
    }

    /// A page of `limit` (`want` is `limit + 1`: one more tells whether another page exists).
    fn into_page(self, limit: usize) -> Page<FileRecord> {
        let more = self.items.len() > limit;
        let items: Vec<FileRecord> = self.items.into_values().take(limit).collect();
        let next = if more {
            items.last().map(|r| r.id.to_string())
        } else {
            None
        };
        Page { items, next }
    }
}

/// One index query of `list`: a partition, and the dataset's key range in it if there is one.
struct IndexQuery {
    pk: String,
    /// The dataset whose files are wanted; within one dataset the index is in id order.
    dataset: Option<String>,
}

impl DynamoStateStore {
    /// A state store on `table`, spreading each state's index entries over `index_shards`
    /// partitions (`aws.index_shards`; 0 counts as 1). Every process must use the same shard count:
    /// a file's shard is computed at each write, and `list` queries shards `0..index_shards`.
    pub fn new(client: Client, table: &str, index_shards: u32) -> Self {
        DynamoStateStore {
            client,
            table: table.to_string(),
            index_shards: index_shards.max(1),
        }
    }

    /// The whole item of a file record, index keys included.
    fn file_item(&self, rec: &FileRecord) -> Item {
        let mut item = FileItem::from(rec).0;
        let shard = shard_of(rec.id.as_str(), self.index_shards);
        item.insert(GSI1PK.into(), s(file_index_pk(rec.state, shard)));
        item.insert(
            GSI1SK.into(),
            s(file_index_sk(&rec.dataset, rec.id.as_str())),
        );
        item
    }

    /// A consistent read of one item.
    async fn get_item(&self, op: &'static str, pk: String) -> Result<Option<Item>, PortError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, s(&pk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| port_error(op, &pk, e))?;
        Ok(out.item)
    }

    async fn get_file(&self, op: &'static str, id: &str) -> Result<Option<FileRecord>, PortError> {
        self.get_item(op, file_pk(id))
            .await?
            .map(|i| FileRecord::try_from(FileItem(i)))
            .transpose()
    }

    /// The ids in one index partition (or in one dataset's range of it) after `after`, in id order
    /// within a dataset. With `limit`, at most that many: the smallest.
    async fn index_ids(
        client: Client,
        table: String,
        q: IndexQuery,
        after: Option<String>,
        limit: Option<usize>,
    ) -> Result<BTreeSet<String>, PortError> {
        let mut req = client
            .query()
            .table_name(&table)
            .index_name(STATE_INDEX)
            .expression_attribute_names("#pk", GSI1PK)
            .expression_attribute_values(":pk", s(&q.pk));
        let ordered = q.dataset.is_some();
        if let Some(d) = &q.dataset {
            // `<dataset>#<id>` sorts by id within the dataset; `<dataset>$` is just past the
            // range, as '$' follows '#' and dataset names hold neither.
            let lo = format!("{d}#{}", after.as_deref().unwrap_or(""));
            req = req
                .key_condition_expression("#pk = :pk AND #sk BETWEEN :lo AND :hi")
                .expression_attribute_names("#sk", GSI1SK)
                .expression_attribute_values(":lo", s(lo))
                .expression_attribute_values(":hi", s(format!("{d}$")));
            if let Some(n) = limit {
                req = req.limit(i32::try_from(n + 1).unwrap_or(i32::MAX).min(1000));
            }
        } else {
            req = req.key_condition_expression("#pk = :pk");
        }
        let mut pages = req.into_paginator().send();
        let mut ids = BTreeSet::new();
        while let Some(page) = pages
            .try_next()
            .await
            .map_err(|e| port_error("list", &q.pk, e))?
        {
            for item in page.items.unwrap_or_default() {
                let pk = match item.get(PK) {
                    Some(AttributeValue::S(pk)) => pk.as_str(),
                    _ => "(no pk)",
                };
                let id = Attrs::new(pk, &item).key_after("F#")?;
                if after.as_deref().is_none_or(|a| id > a) {
                    ids.insert(id.to_string());
                }
            }
            if let Some(n) = limit {
                while ids.len() > n {
                    ids.pop_last();
                }
                // In id order, the first `n` found are the smallest.
                if ordered && ids.len() >= n {
                    break;
                }
            }
        }
        Ok(ids)
    }

    /// Every file, by a paginated Scan of the whole table: each page reads the table once.
    async fn scan_files(&self, mut found: Smallest) -> Result<Smallest, PortError> {
        let mut req = self
            .client
            .scan()
            .table_name(&self.table)
            .expression_attribute_names("#pk", PK)
            .expression_attribute_values(":f", s("F#"));
        req = match &found.after {
            Some(after) => req
                .filter_expression("begins_with(#pk, :f) AND #pk > :after")
                .expression_attribute_values(":after", s(file_pk(after))),
            None => req.filter_expression("begins_with(#pk, :f)"),
        };
        let mut pages = req.into_paginator().send();
        while let Some(page) = pages
            .try_next()
            .await
            .map_err(|e| port_error("list", &self.table, e))?
        {
            for item in page.items.unwrap_or_default() {
                found.offer(FileRecord::try_from(FileItem(item))?);
            }
        }
        Ok(found)
    }

    /// Runs index queries a few at a time and merges the ids they found.
    async fn query_ids(
        &self,
        queries: Vec<IndexQuery>,
        after: Option<String>,
        limit: Option<usize>,
    ) -> Result<BTreeSet<String>, PortError> {
        let mut all = BTreeSet::new();
        let mut queries = queries.into_iter();
        let mut running = JoinSet::new();
        loop {
            while running.len() < QUERY_CONCURRENCY {
                let Some(q) = queries.next() else { break };
                running.spawn(Self::index_ids(
                    self.client.clone(),
                    self.table.clone(),
                    q,
                    after.clone(),
                    limit,
                ));
            }
            let Some(done) = running.join_next().await else {
                break;
            };
            let ids = done.map_err(|e| {
                PortError::transient("list", &self.table, format!("query task: {e}"))
            })??;
            all.extend(ids);
            if let Some(n) = limit {
                while all.len() > n {
                    all.pop_last();
                }
            }
        }
        Ok(all)
    }

    /// The files found through the index partitions of `phases` (in `dataset`'s range if given)
    /// that are in `state` (any if `None`): their ids from the keys-only index, then the records,
    /// read in id order a hundred at a time until `want` match. Only `ACTIVE` holds several
    /// states, so only there are more records read than kept: the files in flight.
    async fn list_in(
        &self,
        phases: &[&str],
        state: Option<FileState>,
        dataset: Option<&str>,
        want: usize,
        after: Option<String>,
    ) -> Result<Smallest, PortError> {
        let filtered = state.is_some_and(|s| phase(s) == ACTIVE);
        let queries = phases
            .iter()
            .flat_map(|phase| {
                (0..self.index_shards).map(move |shard| IndexQuery {
                    pk: format!("F#{phase}#{shard}"),
                    dataset: dataset.map(str::to_string),
                })
            })
            .collect();
        let ids = self
            .query_ids(queries, after.clone(), (!filtered).then_some(want))
            .await?;
        let ids: Vec<String> = ids.into_iter().map(|id| file_pk(&id)).collect();
        let mut found = Smallest::new(want, after);
        for chunk in ids.chunks(BATCH_GET_MAX) {
            for item in self.batch_get("list", chunk).await? {
                let rec = FileRecord::try_from(FileItem(item))?;
                if state.is_none_or(|s| rec.state == s) && dataset.is_none_or(|d| rec.dataset == d)
                {
                    found.offer(rec);
                }
            }
            // Chunks come in id order: a full page cannot gain a smaller id from the next.
            if found.is_full() {
                break;
            }
        }
        Ok(found)
    }

    /// The items of `pks` (eventually consistent, like the index that named them), in no order;
    /// items deleted meanwhile are left out. At most [`BATCH_GET_MAX`] keys a call; keys DynamoDB
    /// leaves unprocessed (throttling) are asked again after a pause.
    async fn batch_get(&self, op: &'static str, pks: &[String]) -> Result<Vec<Item>, PortError> {
        let mut out = Vec::with_capacity(pks.len());
        for chunk in pks.chunks(BATCH_GET_MAX) {
            let mut keys: Vec<Item> = chunk
                .iter()
                .map(|pk| Item::from([(PK.to_string(), s(pk))]))
                .collect();
            for attempt in 0.. {
                if keys.is_empty() {
                    break;
                }
                if attempt == UNPROCESSED_ATTEMPTS {
                    return Err(PortError::transient(
                        op,
                        &self.table,
                        format!("{} keys left unprocessed", keys.len()),
                    ));
                }
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                }
                let wanted = KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .build()
                    .map_err(|e| build_error(op, &self.table, e))?;
                let got = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, wanted)
                    .send()
                    .await
                    .map_err(|e| port_error(op, &self.table, e))?;
                out.extend(
                    got.responses
                        .and_then(|mut r| r.remove(&self.table))
                        .unwrap_or_default(),
                );
                keys = got
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(&self.table))
                    .map(|k| k.keys)
                    .unwrap_or_default();
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl StateStore for DynamoStateStore {
    async fn register(&self, file: NewFile) -> Result<Registered, PortError> {
        let rec = file.into_record(Utc::now());
        let pk = file_pk(rec.id.as_str());
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(self.file_item(&rec)))
            .condition_expression(ABSENT)
            .expression_attribute_names("#pk", PK)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match put {
            Ok(_) => Ok(Registered::Created(rec)),
            Err(e) if code(&e) == Some("ConditionalCheckFailedException") => {
                // The item as it stood when the condition failed; an emulator that does not return
                // it costs a read.
                let old = match e.into_service_error() {
                    PutItemError::ConditionalCheckFailedException(c) => c.item,
                    _ => None,
                };
                let existing = match old {
                    Some(item) => Some(FileRecord::try_from(FileItem(item))?),
                    None => self.get_file("register", rec.id.as_str()).await?,
                };
                existing.map(Registered::Exists).ok_or_else(|| {
                    PortError::transient("register", pk, "exists, then vanished: try again")
                })
            }
            Err(e) => Err(port_error("register", pk, e)),
        }
    }

    async fn get(&self, id: &FileId) -> Result<Option<FileRecord>, PortError> {
        self.get_file("get", id.as_str()).await
    }

    async fn transition(&self, t: &Transition) -> Result<TransitionOutcome, PortError> {
        let at = Utc::now();
        let pk = file_pk(t.file.as_str());
        let shard = shard_of(t.file.as_str(), self.index_shards);
        // What `Transition::apply_to` does, as one update expression.
        let mut sets = vec![
            "#state = :to",
            "#updated_at = :at",
            "#history = list_append(#history, :entry)",
        ];
        let mut names = HashMap::from([
            ("#state".to_string(), "state".to_string()),
            ("#updated_at".to_string(), "updated_at".to_string()),
            ("#history".to_string(), "history".to_string()),
            ("#sweep".to_string(), "sweep".to_string()),
        ]);
        let mut values = Item::from([
            (":from".to_string(), s(t.from.as_str())),
            (":to".to_string(), s(t.to.as_str())),
            (":at".to_string(), s(ts(at))),
            (
                ":entry".to_string(),
                AttributeValue::L(vec![HistoryMap::from(&t.history_entry(at)).0]),
            ),
        ]);
        // The index entry moves only between phases: within one, the keys-only index is not
        // written at all.
        if phase(t.from) != phase(t.to) {
            sets.push("#gsi1pk = :gsi1pk");
            names.insert("#gsi1pk".into(), GSI1PK.into());
            values.insert(":gsi1pk".into(), s(file_index_pk(t.to, shard)));
        }
        // The sweep's note is about the state being left.
        let mut remove = vec!["#sweep"];
        // A move to FAILED without a reason keeps the reason the file had; any other move sets it
        // (or clears it).
        match &t.reason {
            Some(r) => {
                sets.push("#reason = :reason");
                values.insert(":reason".into(), s(r));
            }
            None if t.to != FileState::Failed => remove.push("#reason"),
            None => {}
        }
        if t.reason.is_some() || remove.contains(&"#reason") {
            names.insert("#reason".into(), "reason".into());
        }
        if let Some(b) = &t.batch_id {
            sets.push("#batch_id = :batch_id");
            names.insert("#batch_id".into(), "batch_id".into());
            values.insert(":batch_id".into(), s(b));
        }
        if let Some(v) = &t.validation {
            sets.push("#validation = :validation");
            names.insert("#validation".into(), "validation".into());
            values.insert(":validation".into(), s(v));
        }
        let update = format!("SET {} REMOVE {}", sets.join(", "), remove.join(", "));
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, s(&pk))
            .update_expression(update)
            .condition_expression(STATE_IS)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(out) => {
                let item = out.attributes.ok_or_else(|| {
                    PortError::permanent("transition", &pk, "no attributes returned")
                })?;
                Ok(TransitionOutcome::Applied(FileRecord::try_from(FileItem(
                    item,
                ))?))
            }
            // A failed condition is an outcome: the file is elsewhere, or is not there at all.
            Err(e) if code(&e) == Some("ConditionalCheckFailedException") => {
                let old = match e.into_service_error() {
                    UpdateItemError::ConditionalCheckFailedException(c) => c.item,
                    _ => None,
                };
                let current = match old {
                    Some(item) => Some(FileRecord::try_from(FileItem(item))?),
                    None => self.get_file("transition", t.file.as_str()).await?,
                };
                Ok(match current {
                    Some(r) => TransitionOutcome::Conflict(r),
                    None => TransitionOutcome::NotFound,
                })
            }
            Err(e) => Err(port_error("transition", pk, e)),
        }
    }

    /// Dataset and state: one Query per shard of the state's phase. A dataset only: that for every
    /// phase. A state only: every shard of its phase, read whole (the index is in dataset order, the
    /// page in id order). Then the page's records (see `list_in`). Neither: a Scan of the whole
    /// table per page — for the command line, not for handlers.
    async fn list(&self, query: &FileQuery) -> Result<Page<FileRecord>, PortError> {
        let limit = if query.limit == 0 {
            DEFAULT_LIMIT
        } else {
            query.limit.min(MAX_LIMIT)
        };
        let want = limit + 1;
        let after = query.after.clone();
        let dataset = query.dataset.as_deref();
        let found = match (dataset, query.state) {
            (_, Some(state)) => {
                self.list_in(&[phase(state)], Some(state), dataset, want, after)
                    .await?
            }
            (Some(_), None) => self.list_in(&PHASES, None, dataset, want, after).await?,
            (None, None) => self.scan_files(Smallest::new(want, after)).await?,
        };
        Ok(found.into_page(limit))
    }

    /// A paginated Scan of the whole table projecting dataset and state: it reads every item, so
    /// it costs about one read unit per 8 KB of table per call. For the command line.
    async fn counts(&self) -> Result<Vec<(String, FileState, u64)>, PortError> {
        let mut pages = self
            .client
            .scan()
            .table_name(&self.table)
            .filter_expression("begins_with(#pk, :f)")
            .projection_expression("#pk, #dataset, #state")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#dataset", "dataset")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":f", s("F#"))
            .into_paginator()
            .send();
        let mut counts: BTreeMap<(String, FileState), u64> = BTreeMap::new();
        while let Some(page) = pages
            .try_next()
            .await
            .map_err(|e| port_error("counts", &self.table, e))?
        {
            for item in page.items.unwrap_or_default() {
                let pk = match item.get(PK) {
                    Some(AttributeValue::S(pk)) => pk.as_str(),
                    _ => "(no pk)",
                };
                let a = Attrs::new(pk, &item);
                *counts
                    .entry((a.s("dataset")?.to_string(), a.parse("state")?))
                    .or_default() += 1;
            }
        }
        Ok(counts.into_iter().map(|((d, st), c)| (d, st, c)).collect())
    }

    async fn create_batch(&self, batch: &Batch) -> Result<bool, PortError> {
        let pk = batch_pk(&batch.id);
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(BatchItem::try_from(batch)?.0))
            .condition_expression(ABSENT)
            .expression_attribute_names("#pk", PK)
            .send()
            .await;
        condition_held("create_batch", pk, put)
    }

    async fn get_batch(&self, id: &str) -> Result<Option<Batch>, PortError> {
        self.get_item("get_batch", batch_pk(id))
            .await?
            .map(|i| Batch::try_from(BatchItem(i)))
            .transpose()
    }

    /// A put conditional on the stored state, carrying a token of its own ([`WRITE_TOKEN`]): when
    /// the condition fails against an item bearing that token, this very write was applied by an
    /// earlier attempt whose answer was lost, and the outcome is `Applied`.
    async fn update_batch(
        &self,
        batch: &mut Batch,
        expected: BatchState,
    ) -> Result<BatchOutcome, PortError> {
        let pk = batch_pk(&batch.id);
        let token = uuid::Uuid::new_v4().to_string();
        let read_at = batch.version;
        let next = Batch {
            version: read_at + 1,
            ..batch.clone()
        };
        let mut item = BatchItem::try_from(&next)?.0;
        item.insert(WRITE_TOKEN.to_string(), s(&token));
        let condition = if read_at == 0 {
            BATCH_STATE_IS_FIRST
        } else {
            BATCH_STATE_IS
        };
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":expected", s(expected.as_str()))
            .expression_attribute_values(":version", n(read_at))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match put {
            Ok(_) => {
                batch.version = next.version;
                Ok(BatchOutcome::Applied)
            }
            Err(e) if code(&e) == Some("ConditionalCheckFailedException") => {
                let old = match e.into_service_error() {
                    PutItemError::ConditionalCheckFailedException(c) => c.item,
                    _ => None,
                };
                let current = match old {
                    Some(item) => Some(item),
                    None => self.get_item("update_batch", pk.clone()).await?,
                };
                if current
                    .as_ref()
                    .and_then(|item| item.get(WRITE_TOKEN))
                    .is_some_and(|t| *t == s(&token))
                {
                    choreo_telemetry::events::emit(crate::events::BatchWriteAnswerLost {
                        batch_id: &batch.id,
                    });
                    batch.version = next.version;
                    return Ok(BatchOutcome::Applied);
                }
                let current = current.map(|i| Batch::try_from(BatchItem(i))).transpose()?;
                Ok(BatchOutcome::Conflict(current.map(Box::new)))
            }
            Err(e) => Err(port_error("update_batch", pk, e)),
        }
    }

    /// A Query of the index partition of `state` (eventually consistent; keys only), then the
    /// batches' items, oldest first. A batch that left `state` between the two is left out.
    async fn batches_in(&self, state: BatchState) -> Result<Vec<Batch>, PortError> {
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(STATE_INDEX)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", GSI1PK)
            .expression_attribute_values(":pk", s(batch_index_pk(state)))
            .into_paginator()
            .send();
        let mut pks = Vec::new();
        while let Some(page) = pages
            .try_next()
            .await
            .map_err(|e| port_error("batches_in", state.as_str(), e))?
        {
            for item in page.items.unwrap_or_default() {
                if let Some(AttributeValue::S(pk)) = item.get(PK) {
                    pks.push(pk.clone());
                }
            }
        }
        let mut batches = Vec::with_capacity(pks.len());
        for item in self.batch_get("batches_in", &pks).await? {
            let batch = Batch::try_from(BatchItem(item))?;
            if batch.state == state {
                batches.push(batch);
            }
        }
        batches.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(batches)
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<LeaseOutcome, PortError> {
        let pk = lease_pk(name);
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        // A lease released between our failed put and our read is free again: try again.
        for _ in 0..3 {
            let now = Utc::now().timestamp_millis();
            let expires_at = now.saturating_add(ttl_ms);
            let put = self
                .client
                .put_item()
                .table_name(&self.table)
                .item(PK, s(&pk))
                .item("holder", s(holder))
                .item("expires_at", n(expires_at))
                .condition_expression(LEASE_FREE)
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#expires_at", "expires_at")
                .expression_attribute_names("#holder", "holder")
                .expression_attribute_values(":now", n(now))
                .expression_attribute_values(":holder", s(holder))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .send()
                .await;
            match put {
                Ok(_) => {
                    return Ok(LeaseOutcome::Acquired {
                        expires_at: from_ms(expires_at),
                    });
                }
                Err(e) if code(&e) == Some("ConditionalCheckFailedException") => {
                    let old = match e.into_service_error() {
                        PutItemError::ConditionalCheckFailedException(c) => c.item,
                        _ => None,
                    };
                    let current = match old {
                        Some(item) => Some(item),
                        None => self.get_item("acquire_lease", pk.clone()).await?,
                    };
                    if let Some(item) = current {
                        let lease = Lease::try_from(&item)?;
                        return Ok(LeaseOutcome::Held {
                            holder: lease.holder,
                            expires_at: from_ms(lease.expires_at_ms),
                        });
                    }
                }
                Err(e) => return Err(port_error("acquire_lease", pk, e)),
            }
        }
        Err(PortError::transient(
            "acquire_lease",
            pk,
            "the lease changed hands during every attempt",
        ))
    }

    async fn lease(&self, name: &str) -> Result<Option<LeaseInfo>, PortError> {
        let Some(item) = self.get_item("lease", lease_pk(name)).await? else {
            return Ok(None);
        };
        let lease = Lease::try_from(&item)?;
        Ok(Some(LeaseInfo {
            holder: lease.holder,
            expires_at: from_ms(lease.expires_at_ms),
        }))
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), PortError> {
        let pk = lease_pk(name);
        let deleted = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(PK, s(&pk))
            .condition_expression(HELD_BY)
            .expression_attribute_names("#holder", "holder")
            .expression_attribute_values(":holder", s(holder))
            .send()
            .await;
        // Not ours (or gone): nothing to do.
        condition_held("release_lease", pk, deleted).map(|_| ())
    }

    async fn mark_sweep(
        &self,
        id: &FileId,
        history_len: usize,
        mark: &SweepMark,
    ) -> Result<bool, PortError> {
        let pk = file_pk(id.as_str());
        let body = serde_json::to_string(mark).expect("sweep marks always serialize");
        let updated = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, s(&pk))
            .update_expression("SET #sweep = :sweep")
            .condition_expression("#state = :state AND size(#history) = :len")
            .expression_attribute_names("#sweep", "sweep")
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#history", "history")
            .expression_attribute_values(":sweep", s(body))
            .expression_attribute_values(":state", s(mark.state.as_str()))
            .expression_attribute_values(":len", n(history_len as u64))
            .send()
            .await;
        condition_held("mark_sweep", pk, updated)
    }
}

// ---------------------------------------------------------------------------------------------
// The audit log.

/// The [`AuditLog`] on its own DynamoDB table (see the module documentation for its layout).
#[derive(Debug, Clone)]
pub struct DynamoAuditLog {
    client: Client,
    table: String,
}

fn event_pk(id: &str) -> String {
    format!("E#{id}")
}

/// An audit entry as an item.
struct EventItem(Item);

impl From<&AuditEntry> for EventItem {
    fn from(e: &AuditEntry) -> Self {
        let recorded = ts(e.recorded_at);
        EventItem(Item::from([
            (PK.to_string(), s(event_pk(&e.event_id))),
            ("event_type".to_string(), s(&e.event_type)),
            ("dataset".to_string(), s(&e.dataset)),
            ("occurred_at".to_string(), s(ts(e.occurred_at))),
            ("recorded_at".to_string(), s(&recorded)),
            ("body".to_string(), s(e.body.to_string())),
            (
                GSI1PK.to_string(),
                s(format!("EVENTS#{}", shard_of(&e.event_id, AUDIT_SHARDS))),
            ),
            (GSI1SK.to_string(), s(format!("{recorded}#{}", e.event_id))),
        ]))
    }
}

impl TryFrom<EventItem> for AuditEntry {
    type Error = PortError;

    fn try_from(EventItem(item): EventItem) -> Result<Self, PortError> {
        let pk = match item.get(PK) {
            Some(AttributeValue::S(pk)) => pk.as_str(),
            _ => "(no pk)",
        };
        let a = Attrs::new(pk, &item);
        Ok(AuditEntry {
            event_id: a.key_after("E#")?.to_string(),
            event_type: a.s("event_type")?.to_string(),
            dataset: a.s("dataset")?.to_string(),
            occurred_at: a.time("occurred_at")?,
            recorded_at: a.time("recorded_at")?,
            body: serde_json::from_str(a.s("body")?)
                .map_err(|e| a.malformed("body", &format!("is not JSON: {e}")))?,
        })
    }
}

impl DynamoAuditLog {
    /// An audit log on `table` (not the state table: the trail grows forever and is read
    /// differently).
    pub fn new(client: Client, table: &str) -> Self {
        DynamoAuditLog {
            client,
            table: table.to_string(),
        }
    }

    /// Queries every shard of one index family (`EVENTS` or `COUNTS`), each up to `per_shard`
    /// items, in index order (`forward`).
    async fn query_shards(
        &self,
        op: &'static str,
        family: &str,
        per_shard: Option<usize>,
        forward: bool,
    ) -> Result<Vec<Item>, PortError> {
        let mut all = Vec::new();
        for shard in 0..AUDIT_SHARDS {
            let pk = format!("{family}#{shard}");
            all.extend(self.query_partition(op, &pk, per_shard, forward).await?);
        }
        Ok(all)
    }

    /// Up to `limit` items of one index partition, in index order (`forward`).
    async fn query_partition(
        &self,
        op: &'static str,
        pk: &str,
        limit: Option<usize>,
        forward: bool,
    ) -> Result<Vec<Item>, PortError> {
        let mut req = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(TIME_INDEX)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", GSI1PK)
            .expression_attribute_values(":pk", s(pk))
            .scan_index_forward(forward);
        if let Some(n) = limit {
            req = req.limit(i32::try_from(n).unwrap_or(i32::MAX).clamp(1, 1000));
        }
        let mut pages = req.into_paginator().send();
        let mut all = Vec::new();
        while let Some(page) = pages.try_next().await.map_err(|e| port_error(op, pk, e))? {
            all.extend(page.items.unwrap_or_default());
            if limit.is_some_and(|n| all.len() >= n) {
                all.truncate(limit.unwrap_or(usize::MAX));
                break;
            }
        }
        Ok(all)
    }

    /// Alerts of one index partition (`PENDING` or `SENT`), at most `limit`, in time order.
    async fn alerts_in(
        &self,
        op: &'static str,
        partition: &str,
        limit: usize,
        forward: bool,
    ) -> Result<Vec<Alert>, PortError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.query_partition(op, partition, Some(limit), forward)
            .await?
            .iter()
            .map(|item| {
                let pk = match item.get(PK) {
                    Some(AttributeValue::S(pk)) => pk.as_str(),
                    _ => "(no pk)",
                };
                let a = Attrs::new(pk, item);
                let mut alert: Alert = serde_json::from_str(a.s("body")?)
                    .map_err(|e| a.malformed("body", &format!("is not an alert: {e}")))?;
                alert.sent_at = match a.opt_s("sent_at")? {
                    Some(_) => Some(a.time("sent_at")?),
                    None => None,
                };
                Ok(alert)
            })
            .collect()
    }
}

fn alert_pk(id: &str) -> String {
    format!("A#{id}")
}

const ALERTS_PENDING: &str = "ALERTS#PENDING";
const ALERTS_SENT: &str = "ALERTS#SENT";

#[async_trait]
impl AuditLog for DynamoAuditLog {
    /// One conditional put of the event, if absent: a redelivered event finds its item and
    /// answers `false`, so nothing is recorded or counted twice. No counter item: one would take
    /// every event of its dataset (DynamoDB serves an item about 1,000 writes a second), so counts
    /// derive from the trail instead. An SDK retry after a lost response also answers `false`,
    /// which is still "recorded once".
    async fn record(&self, envelope: &Envelope) -> Result<bool, PortError> {
        let entry = AuditEntry {
            event_id: envelope.id.clone(),
            event_type: envelope.event.kind().as_str().to_string(),
            dataset: envelope.event.dataset().to_string(),
            occurred_at: envelope.occurred_at,
            recorded_at: Utc::now(),
            body: serde_json::to_value(envelope)
                .map_err(|e| PortError::permanent("record", &envelope.id, e))?,
        };
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(EventItem::from(&entry).0))
            .condition_expression(ABSENT)
            .expression_attribute_names("#pk", PK)
            .send()
            .await;
        condition_held("record", event_pk(&envelope.id), put)
    }

    /// Counted from the trail: every event's dataset and type, read from the time index's
    /// partitions (keys and two attributes only). Its cost grows with the trail (half a read unit
    /// per 4 KB of index), so it is for tests and the command line, not for a dashboard's refresh.
    async fn counts(&self) -> Result<Vec<(String, String, u64)>, PortError> {
        let mut counts: BTreeMap<(String, String), u64> = BTreeMap::new();
        for shard in 0..AUDIT_SHARDS {
            let pk = format!("EVENTS#{shard}");
            let mut pages = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(TIME_INDEX)
                .key_condition_expression("#gsi1pk = :pk")
                .projection_expression("#pk, #dataset, #event_type")
                .expression_attribute_names("#gsi1pk", GSI1PK)
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#dataset", "dataset")
                .expression_attribute_names("#event_type", "event_type")
                .expression_attribute_values(":pk", s(&pk))
                .into_paginator()
                .send();
            while let Some(page) = pages
                .try_next()
                .await
                .map_err(|e| port_error("counts", &pk, e))?
            {
                for item in page.items.unwrap_or_default() {
                    let key = match item.get(PK) {
                        Some(AttributeValue::S(k)) => k.as_str(),
                        _ => "(no pk)",
                    };
                    let a = Attrs::new(key, &item);
                    *counts
                        .entry((a.s("dataset")?.to_string(), a.s("event_type")?.to_string()))
                        .or_default() += 1;
                }
            }
        }
        Ok(counts.into_iter().map(|((d, t), n)| (d, t, n)).collect())
    }

    /// The newest `limit` of each shard, merged newest first.
    async fn recent(&self, limit: usize) -> Result<Vec<AuditEntry>, PortError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let items = self
            .query_shards("recent", "EVENTS", Some(limit), false)
            .await?;
        let mut entries = items
            .into_iter()
            .map(|item| {
                let sk = match item.get(GSI1SK) {
                    Some(AttributeValue::S(sk)) => sk.clone(),
                    _ => String::new(),
                };
                Ok((sk, AuditEntry::try_from(EventItem(item))?))
            })
            .collect::<Result<Vec<_>, PortError>>()?;
        entries.sort_by(|a, b| b.0.cmp(&a.0));
        entries.truncate(limit);
        Ok(entries.into_iter().map(|(_, e)| e).collect())
    }

    /// An item `A#<id>` (put if absent), indexed under `ALERTS#PENDING` by creation time until sent.
    /// Alerts are rare (failures), so one index partition each for pending and sent is plenty.
    async fn add_alert(&self, alert: &Alert) -> Result<bool, PortError> {
        let pk = alert_pk(&alert.id);
        let created = ts(alert.created_at);
        let body =
            serde_json::to_string(alert).map_err(|e| PortError::permanent("add_alert", &pk, e))?;
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(PK, s(&pk))
            .item("body", s(body))
            .item("created_at", s(&created))
            .item(GSI1PK, s(ALERTS_PENDING))
            .item(GSI1SK, s(format!("{created}#{}", alert.id)))
            .condition_expression(ABSENT)
            .expression_attribute_names("#pk", PK)
            .send()
            .await;
        condition_held("add_alert", pk, put)
    }

    async fn pending_alerts(&self, limit: usize) -> Result<Vec<Alert>, PortError> {
        self.alerts_in("pending_alerts", ALERTS_PENDING, limit, true)
            .await
    }

    /// Moves each alert from the pending partition to the sent one, if it is still pending.
    async fn mark_alerts_sent(&self, ids: &[String], at: DateTime<Utc>) -> Result<(), PortError> {
        for id in ids {
            let pk = alert_pk(id);
            let updated = self
                .client
                .update_item()
                .table_name(&self.table)
                .key(PK, s(&pk))
                .update_expression("SET #sent_at = :at, #gsi1pk = :sent")
                .condition_expression("#gsi1pk = :pending")
                .expression_attribute_names("#sent_at", "sent_at")
                .expression_attribute_names("#gsi1pk", GSI1PK)
                .expression_attribute_values(":at", s(ts(at)))
                .expression_attribute_values(":sent", s(ALERTS_SENT))
                .expression_attribute_values(":pending", s(ALERTS_PENDING))
                .send()
                .await;
            // Sent already: nothing to do.
            condition_held("mark_alerts_sent", pk, updated)?;
        }
        Ok(())
    }

    /// The newest of the pending and of the sent, merged newest first.
    async fn alerts(&self, limit: usize) -> Result<Vec<Alert>, PortError> {
        let mut all = self
            .alerts_in("alerts", ALERTS_PENDING, limit, false)
            .await?;
        all.extend(self.alerts_in("alerts", ALERTS_SENT, limit, false).await?);
        all.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        all.truncate(limit);
        Ok(all)
    }
}

// ---------------------------------------------------------------------------------------------
// Tables.

/// How long `create_tables` waits for a table to become ACTIVE.
const ACTIVE_TIMEOUT: Duration = Duration::from_secs(300);

/// Creates the state and audit tables with their indexes, if they do not exist, and waits until
/// they are ACTIVE; then enables point-in-time recovery on both (an emulator that refuses is
/// logged at debug level and ignored). An existing table without its index is an error: the
/// adapters cannot work without it.
pub async fn create_tables(clients: &AwsClients, settings: &AwsSettings) -> Result<(), PortError> {
    let emulated = clients.endpoint.is_some();
    // The state index is keys only, so that moves within a phase do not write it; the audit
    // trail's carries whole events, which `recent` reads straight from it.
    for (table, index, projection) in [
        (&settings.state_table, STATE_INDEX, ProjectionType::KeysOnly),
        (&settings.audit_table, TIME_INDEX, ProjectionType::All),
    ] {
        create_table(&clients.dynamodb, table, index, projection).await?;
        wait_active(&clients.dynamodb, table, index).await?;
        enable_pitr(&clients.dynamodb, table, emulated).await?;
    }
    Ok(())
}

async fn create_table(
    client: &Client,
    table: &str,
    index: &str,
    projection: ProjectionType,
) -> Result<(), PortError> {
    let op = "create_table";
    let attr = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(|e| build_error(op, table, e))
    };
    let key = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .map_err(|e| build_error(op, table, e))
    };
    let gsi = GlobalSecondaryIndex::builder()
        .index_name(index)
        .key_schema(key(GSI1PK, KeyType::Hash)?)
        .key_schema(key(GSI1SK, KeyType::Range)?)
        .projection(Projection::builder().projection_type(projection).build())
        .build()
        .map_err(|e| build_error(op, table, e))?;
    let created = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr(PK)?)
        .attribute_definitions(attr(GSI1PK)?)
        .attribute_definitions(attr(GSI1SK)?)
        .key_schema(key(PK, KeyType::Hash)?)
        .global_secondary_indexes(gsi)
        .send()
        .await;
    match created {
        Ok(_) => {
            choreo_telemetry::events::emit(crate::events::TableCreated { table });
            Ok(())
        }
        Err(e) if code(&e) == Some("ResourceInUseException") => {
            tracing::debug!(table, "table exists");
            Ok(())
        }
        Err(e) => Err(port_error(op, table, e)),
    }
}

async fn wait_active(client: &Client, table: &str, index: &str) -> Result<(), PortError> {
    let deadline = Instant::now() + ACTIVE_TIMEOUT;
    loop {
        let out = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| port_error("create_tables", table, e))?;
        let desc = out.table.ok_or_else(|| {
            PortError::permanent("create_tables", table, "DescribeTable returned no table")
        })?;
        let gsi = desc
            .global_secondary_indexes()
            .iter()
            .find(|g| g.index_name() == Some(index));
        let Some(gsi) = gsi else {
            return Err(PortError::permanent(
                "create_tables",
                table,
                format!("the table exists without the index {index}: add it, or use another table"),
            ));
        };
        let table_active = desc.table_status() == Some(&TableStatus::Active);
        let index_active = gsi.index_status().is_none_or(|s| *s == IndexStatus::Active);
        if table_active && index_active {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(PortError::transient(
                "create_tables",
                table,
                format!("not ACTIVE after {} s", ACTIVE_TIMEOUT.as_secs()),
            ));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn enable_pitr(client: &Client, table: &str, emulated: bool) -> Result<(), PortError> {
    let spec = PointInTimeRecoverySpecification::builder()
        .point_in_time_recovery_enabled(true)
        .build()
        .map_err(|e| build_error("create_tables", table, e))?;
    // Right after creation AWS may answer ContinuousBackupsUnavailableException for a while.
    for _ in 0..20 {
        let updated = client
            .update_continuous_backups()
            .table_name(table)
            .point_in_time_recovery_specification(spec.clone())
            .send()
            .await;
        match updated {
            Ok(_) => return Ok(()),
            Err(e) if code(&e) == Some("ContinuousBackupsUnavailableException") => {
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
            Err(e) if emulated => {
                let e = port_error("create_tables", table, e);
                tracing::debug!(table, error = %e, "the emulator refused point-in-time recovery");
                return Ok(());
            }
            Err(e) => return Err(port_error("create_tables", table, e)),
        }
    }
    Err(PortError::transient(
        "create_tables",
        table,
        "continuous backups stayed unavailable: enable point-in-time recovery later",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::moto::Moto;
    use choreo_domain::Event;
    use std::collections::BTreeSet;

    struct Fixture {
        // Dropped last: the server outlives the clients.
        clients: AwsClients,
        settings: AwsSettings,
        _moto: Moto,
    }

    impl Fixture {
        fn state(&self) -> DynamoStateStore {
            DynamoStateStore::new(
                self.clients.dynamodb.clone(),
                &self.settings.state_table,
                self.settings.index_shards,
            )
        }

        fn audit(&self) -> DynamoAuditLog {
            DynamoAuditLog::new(self.clients.dynamodb.clone(), &self.settings.audit_table)
        }
    }

    async fn fixture(index_shards: u32) -> Fixture {
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

    fn new_file(id: &str, dataset: &str) -> NewFile {
        NewFile {
            id: FileId::from(id),
            dataset: dataset.into(),
            bucket: "choreo-input".into(),
            key: format!("{dataset}/{id}.csv"),
            size: 42,
            version: "v1".into(),
            pin: None,
            reason: None,
            trace_id: Some("trace-1".into()),
            traceparent: Some("00-trace-span-01".into()),
        }
    }

    fn validate(id: &str) -> Transition {
        Transition::new(
            FileId::from(id),
            Stage::Validator,
            FileState::New,
            FileState::Valid,
        )
        .unwrap()
        .validation("valid: 3 rows")
    }

    #[tokio::test]
    async fn create_tables_is_idempotent_and_enables_recovery() {
        let f = fixture(4).await;
        create_tables(&f.clients, &f.settings).await.unwrap();
        for table in [&f.settings.state_table, &f.settings.audit_table] {
            let out = f
                .clients
                .dynamodb
                .describe_continuous_backups()
                .table_name(table)
                .send()
                .await
                .unwrap();
            let pitr = out
                .continuous_backups_description
                .and_then(|d| d.point_in_time_recovery_description)
                .and_then(|p| p.point_in_time_recovery_status)
                .map(|s| s.as_str().to_string());
            assert_eq!(pitr.as_deref(), Some("ENABLED"), "{table}");
        }
    }

    #[tokio::test]
    async fn the_state_store_keeps_the_ports_contract() {
        // The contract's listing (files `f-00`..`f-11`) spreads over several index partitions.
        let shards: BTreeSet<u32> = (0..12).map(|i| shard_of(&format!("f-{i:02}"), 4)).collect();
        assert!(shards.len() > 1, "{shards:?}");
        let f = fixture(4).await;
        choreo_ports::testkit::state_store_contract(&f.state()).await;
    }

    #[tokio::test]
    async fn the_audit_log_keeps_the_ports_contract() {
        let f = fixture(4).await;
        choreo_ports::testkit::audit_log_contract(&f.audit()).await;
    }

    /// A moto that serves one request at a time, as DynamoDB serializes the writes to one item.
    /// `moto_server` runs threaded and its DynamoDB checks a condition and writes without a lock,
    /// so two racing conditional writes can both succeed there; DynamoDB never lets them.
    struct SerialMoto {
        child: std::process::Child,
        endpoint: String,
    }

    impl SerialMoto {
        fn start() -> SerialMoto {
            let python = match std::env::var_os("CHOREO_MOTO_SERVER") {
                Some(server) => std::path::Path::new(&server).with_file_name("python"),
                None => std::path::PathBuf::from(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../../.venv/bin/python"
                )),
            };
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .unwrap()
                .port();
            let script = "import sys, moto.server as m\n\
                          run = m.run_simple\n\
                          m.run_simple = lambda *a, **k: run(*a, **{**k, 'threaded': False})\n\
                          m.main(['-H', '127.0.0.1', '-p', sys.argv[1]])";
            let child = std::process::Command::new(&python)
                .args(["-c", script, &port.to_string()])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start moto with {}: {e}", python.display()));
            let mut moto = SerialMoto {
                child,
                endpoint: format!("http://127.0.0.1:{port}"),
            };
            let deadline = Instant::now() + Duration::from_secs(30);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                if let Ok(Some(status)) = moto.child.try_wait() {
                    panic!("serial moto exited at start ({status})");
                }
                assert!(Instant::now() < deadline, "moto did not answer within 30 s");
                std::thread::sleep(Duration::from_millis(100));
            }
            moto
        }
    }

    impl Drop for SerialMoto {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn racing_transitions_apply_exactly_once() {
        let moto = SerialMoto::start();
        let clients = AwsClients::emulator(&moto.endpoint).await;
        create_tables(&clients, &AwsSettings::default())
            .await
            .unwrap();
        let s = DynamoStateStore::new(clients.dynamodb.clone(), "choreo-state", 4);
        s.register(new_file("f-1", "d")).await.unwrap();
        let mut tasks = JoinSet::new();
        for _ in 0..8 {
            let s = s.clone();
            tasks.spawn(async move { s.transition(&validate("f-1")).await.unwrap() });
        }
        let mut applied = 0;
        while let Some(outcome) = tasks.join_next().await {
            match outcome.unwrap() {
                TransitionOutcome::Applied(_) => applied += 1,
                TransitionOutcome::Conflict(r) => assert_eq!(r.state, FileState::Valid),
                TransitionOutcome::NotFound => panic!("not found"),
            }
        }
        assert_eq!(applied, 1);
        let rec = s.get(&FileId::from("f-1")).await.unwrap().unwrap();
        assert_eq!(
            rec.history.len(),
            2,
            "one history entry per applied transition"
        );
        drop(clients);
    }

    #[tokio::test]
    async fn a_malformed_item_is_a_permanent_error_naming_it() {
        let f = fixture(4).await;
        f.clients
            .dynamodb
            .put_item()
            .table_name(&f.settings.state_table)
            .item(PK, s("F#f-bad"))
            .item("state", s("DONE"))
            .send()
            .await
            .unwrap();
        let err = f.state().get(&FileId::from("f-bad")).await.unwrap_err();
        assert_eq!(err.kind, choreo_ports::ErrorKind::Permanent);
        assert_eq!(err.target, "F#f-bad");
        assert!(err.message.contains("history is missing"), "{err}");
    }

    /// The calls each operation costs, by operation name.
    fn calls(f: &Fixture) -> Vec<(String, u64)> {
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

    fn one(op: &str) -> Vec<(String, u64)> {
        vec![(op.to_string(), 1)]
    }

    #[tokio::test]
    async fn each_outcome_costs_one_call() {
        let f = fixture(4).await;
        let s = f.state();
        s.register(new_file("f-1", "d")).await.unwrap();
        calls(&f);
        // A duplicate registration and a conflicting transition read the item from the failed
        // condition itself (ReturnValuesOnConditionCheckFailure), not with a second request.
        assert!(matches!(
            s.register(new_file("f-1", "d")).await.unwrap(),
            Registered::Exists(_)
        ));
        assert_eq!(calls(&f), one("PutItem"));
        assert!(matches!(
            s.transition(&validate("f-1")).await.unwrap(),
            TransitionOutcome::Applied(_)
        ));
        assert_eq!(calls(&f), one("UpdateItem"));
        assert!(matches!(
            s.transition(&validate("f-1")).await.unwrap(),
            TransitionOutcome::Conflict(_)
        ));
        assert_eq!(calls(&f), one("UpdateItem"));
        // Only a missing file costs the read that tells NotFound from a race.
        s.transition(&validate("f-2")).await.unwrap();
        assert_eq!(
            calls(&f),
            vec![("GetItem".to_string(), 1), ("UpdateItem".to_string(), 1)]
        );
        // Dataset and state: one Query per shard of the phase, then one read of the records found,
        // no Scan.
        s.list(&FileQuery {
            dataset: Some("d".into()),
            state: Some(FileState::Valid),
            ..Default::default()
        })
        .await
        .unwrap();
        assert_eq!(
            calls(&f),
            vec![("BatchGetItem".to_string(), 1), ("Query".to_string(), 4)]
        );
        s.list(&FileQuery::default()).await.unwrap();
        assert_eq!(calls(&f), one("Scan"));
        let b = batch("b-1", 0);
        s.create_batch(&b).await.unwrap();
        calls(&f);
        let mut stale = b.clone();
        stale.state = BatchState::Failed;
        s.update_batch(&mut stale, BatchState::Cataloged)
            .await
            .unwrap();
        assert_eq!(calls(&f), one("PutItem"));
        s.batches_in(BatchState::Crawling).await.unwrap();
        assert_eq!(
            calls(&f),
            vec![("BatchGetItem".to_string(), 1), ("Query".to_string(), 1)]
        );
        s.acquire_lease("l", "a", Duration::from_secs(60))
            .await
            .unwrap();
        calls(&f);
        s.acquire_lease("l", "b", Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(calls(&f), one("PutItem"));
        let audit = f.audit();
        let e = validated("d");
        audit.record(&e).await.unwrap();
        assert!(!audit.record(&e).await.unwrap());
        assert_eq!(calls(&f), vec![("PutItem".to_string(), 2)]);
    }

    fn batch(id: &str, at_offset_ms: i64) -> Batch {
        let at = Utc::now() + chrono::Duration::milliseconds(at_offset_ms);
        Batch {
            files: vec![FileId::from("f-1")],
            created_at: at,
            updated_at: at,
            ..Batch::new(
                id.into(),
                "d",
                "d-crawler".into(),
                "builtin".into(),
                BatchState::Crawling,
                Vec::new(),
            )
        }
    }

    fn validated(dataset: &str) -> Envelope {
        Envelope::new(Event::FileValidated {
            file_id: FileId::from("f-1"),
            dataset: dataset.into(),
        })
    }
}
