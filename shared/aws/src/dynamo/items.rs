//! The items of both tables (their layout is told in `mod.rs`): their keys, their index keys, and
//! how records become items and back.

use super::{GSI1PK, GSI1SK, Item, PK, n, s, ts};
use aws_sdk_dynamodb::types::AttributeValue;
use choreo_domain::{
    Batch, BatchState, Envelope, FileId, FileRecord, FileState, HistoryEntry, Pin, Stage,
};
use choreo_ports::{AuditEntry, PortError};
use chrono::{DateTime, Utc};
use std::str::FromStr;

/// How many partitions the audit index spreads events and counters over.
pub(super) const AUDIT_SHARDS: u32 = 16;

pub(super) fn file_pk(id: &str) -> String {
    format!("F#{id}")
}

pub(super) fn batch_pk(id: &str) -> String {
    format!("B#{id}")
}

pub(super) fn lease_pk(name: &str) -> String {
    format!("L#{name}")
}

pub(super) fn page_pk(id: &str) -> String {
    format!("P#{id}")
}

/// FNV-1a, 64 bits: a hash that never changes between builds or processes, unlike `std`'s.
pub(super) fn stable_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

pub(super) fn shard_of(key: &str, shards: u32) -> u32 {
    (stable_hash(key) % u64::from(shards.max(1))) as u32
}

/// The index partition family of files in `state`: the states a file passes through on its way
/// share one, `ACTIVE`, so that moving between them leaves the (keys-only) index alone; each state
/// a file rests in has its own.
pub(super) fn phase(state: FileState) -> &'static str {
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

pub(super) const ACTIVE: &str = "ACTIVE";

/// Every phase, for a listing of all states.
pub(super) const PHASES: [&str; 4] = [ACTIVE, "INGESTED", "QUARANTINED", "FAILED"];

/// The index partition of a file in `state`.
pub(super) fn file_index_pk(state: FileState, shard: u32) -> String {
    format!("F#{}#{shard}", phase(state))
}

/// The index sort key of a file: its dataset, then its id.
pub(super) fn file_index_sk(dataset: &str, id: &str) -> String {
    format!("{dataset}#{id}")
}

/// The index partition of batches in `state`.
pub(super) fn batch_index_pk(state: BatchState) -> String {
    format!("B#{state}")
}

/// Reads the attributes of one item (or of one map inside it), naming the item's `pk` in errors.
pub(super) struct Attrs<'a> {
    pk: &'a str,
    /// Where in the item the attributes are (`""`, or `history[2].`), for error messages.
    at: String,
    item: &'a Item,
}

impl<'a> Attrs<'a> {
    pub(super) fn new(pk: &'a str, item: &'a Item) -> Self {
        Attrs {
            pk,
            at: String::new(),
            item,
        }
    }

    pub(super) fn malformed(&self, name: &str, what: &str) -> PortError {
        PortError::permanent(
            "decode",
            self.pk,
            format!("malformed item: {}{name} {what}", self.at),
        )
    }

    pub(super) fn s(&self, name: &str) -> Result<&'a str, PortError> {
        match self.item.get(name) {
            Some(AttributeValue::S(v)) => Ok(v),
            Some(_) => Err(self.malformed(name, "is not a string")),
            None => Err(self.malformed(name, "is missing")),
        }
    }

    /// An optional string: absent (or NULL) is `None`.
    pub(super) fn opt_s(&self, name: &str) -> Result<Option<String>, PortError> {
        match self.item.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::S(v)) => Ok(Some(v.clone())),
            Some(_) => Err(self.malformed(name, "is not a string")),
        }
    }

    pub(super) fn n<T: FromStr>(&self, name: &str) -> Result<T, PortError> {
        match self.item.get(name) {
            Some(AttributeValue::N(v)) => v
                .parse()
                .map_err(|_| self.malformed(name, "is out of range")),
            Some(_) => Err(self.malformed(name, "is not a number")),
            None => Err(self.malformed(name, "is missing")),
        }
    }

    pub(super) fn time(&self, name: &str) -> Result<DateTime<Utc>, PortError> {
        DateTime::parse_from_rfc3339(self.s(name)?)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| self.malformed(name, "is not an RFC 3339 time"))
    }

    pub(super) fn parse<T: FromStr>(&self, name: &str) -> Result<T, PortError> {
        self.s(name)?
            .parse()
            .map_err(|_| self.malformed(name, "has an unknown value"))
    }

    pub(super) fn opt_parse<T: FromStr>(&self, name: &str) -> Result<Option<T>, PortError> {
        self.opt_s(name)?
            .map(|v| {
                v.parse()
                    .map_err(|_| self.malformed(name, "has an unknown value"))
            })
            .transpose()
    }

    /// The item's `pk` without its type prefix.
    pub(super) fn key_after(&self, prefix: &str) -> Result<&'a str, PortError> {
        self.s(PK)?
            .strip_prefix(prefix)
            .ok_or_else(|| self.malformed(PK, &format!("does not start with {prefix}")))
    }
}

pub(super) fn put_opt(item: &mut Item, name: &str, v: &Option<String>) {
    if let Some(v) = v {
        item.insert(name.to_string(), s(v));
    }
}

/// A history entry as a map attribute. Absent options are left out.
pub(super) struct HistoryMap(pub(super) AttributeValue);

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

pub(super) fn history_entry(a: &Attrs<'_>) -> Result<HistoryEntry, PortError> {
    Ok(HistoryEntry {
        at: a.time("at")?,
        stage: a.parse::<Stage>("stage")?,
        from: a.opt_parse::<FileState>("from")?,
        to: a.parse::<FileState>("to")?,
        reason: a.opt_s("reason")?,
        trace_id: a.opt_s("trace_id")?,
    })
}

/// The attribute naming the kind of a pin that is the record's version; its values are the names
/// of the attributes that hold a pin that is not.
const PIN: &str = "pin";
const PIN_VERSION_ID: &str = "pin_version_id";
const PIN_ETAG: &str = "pin_etag";

/// A file record as an item: `pk` and one attribute per field, without the index keys (which
/// depend on the shard count; see `DynamoStateStore::file_item` in `state.rs`).
pub(super) struct FileItem(pub(super) Item);

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
            ("history".to_string(), AttributeValue::L(history)),
        ]);
        // The record's times are its first and last history entries' (registration and every
        // transition write both at once), so they are stored only where they differ: 80 bytes a
        // file, the difference between one write unit and two late in its life (`docs/cost.md`).
        if r.history.first().map(|h| h.at) != Some(r.created_at) {
            item.insert("created_at".to_string(), s(ts(r.created_at)));
        }
        if r.history.last().map(|h| h.at) != Some(r.updated_at) {
            item.insert("updated_at".to_string(), s(ts(r.updated_at)));
        }
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
        // The pin as one attribute named by its kind, readable in the console; when it is the
        // record's version (an S3 version id, or an ETag that serves as the version), only its
        // kind, in `pin`.
        match &r.pin {
            Some(Pin::VersionId(v)) if *v == r.version => {
                item.insert(PIN.to_string(), s(PIN_VERSION_ID));
            }
            Some(Pin::ETag(e)) if *e == r.version => {
                item.insert(PIN.to_string(), s(PIN_ETAG));
            }
            Some(Pin::VersionId(v)) => put_opt(&mut item, PIN_VERSION_ID, &Some(v.clone())),
            Some(Pin::ETag(e)) => put_opt(&mut item, PIN_ETAG, &Some(e.clone())),
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
        let version = a.s("version")?.to_string();
        Ok(FileRecord {
            id: FileId(a.key_after("F#")?.to_string()),
            dataset: a.s("dataset")?.to_string(),
            bucket: a.s("bucket")?.to_string(),
            key: a.s("key")?.to_string(),
            size: a.n("size")?,
            version: version.clone(),
            pin: match (a.opt_s(PIN)?, a.opt_s(PIN_VERSION_ID)?, a.opt_s(PIN_ETAG)?) {
                (Some(kind), _, _) if kind == PIN_VERSION_ID => Some(Pin::VersionId(version)),
                (Some(kind), _, _) if kind == PIN_ETAG => Some(Pin::ETag(version)),
                (Some(_), _, _) => return Err(a.malformed(PIN, "has an unknown value")),
                (None, Some(v), _) => Some(Pin::VersionId(v)),
                (None, None, Some(e)) => Some(Pin::ETag(e)),
                (None, None, None) => None,
            },
            state: a.parse("state")?,
            reason: a.opt_s("reason")?,
            trace_id: a.opt_s("trace_id")?,
            traceparent: a.opt_s("traceparent")?,
            batch_id: a.opt_s("batch_id")?,
            validation: a.opt_s("validation")?,
            created_at: match (a.opt_s("created_at")?, history.first()) {
                (None, Some(first)) => first.at,
                _ => a.time("created_at")?,
            },
            updated_at: match (a.opt_s("updated_at")?, history.last()) {
                (None, Some(last)) => last.at,
                _ => a.time("updated_at")?,
            },
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
pub(super) struct BatchItem(pub(super) Item);

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
pub(super) const WRITE_TOKEN: &str = "write_token";

/// A lease as stored.
pub(super) struct Lease {
    pub(super) holder: String,
    pub(super) expires_at_ms: i64,
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

pub(super) fn from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// An audit event as an item of its own, as written before pages (`E#<event id>`): read, never
/// written.
pub(super) struct EventItem(pub(super) Item);

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

/// A page of the audit trail as an item: the events recorded together, each as its envelope's
/// JSON, in the order they arrived, and the time they were recorded. Indexed like an event was,
/// under a shard of its id.
pub(super) struct PageItem(pub(super) Item);

impl PageItem {
    /// The attribute holding the events: a page's mark (an item of one event has `body`).
    pub(super) const EVENTS: &'static str = "events";

    pub(super) fn new(id: &str, recorded_at: DateTime<Utc>, bodies: Vec<String>) -> Self {
        let recorded = ts(recorded_at);
        PageItem(Item::from([
            (PK.to_string(), s(page_pk(id))),
            ("recorded_at".to_string(), s(&recorded)),
            (
                Self::EVENTS.to_string(),
                AttributeValue::L(bodies.into_iter().map(s).collect()),
            ),
            (
                GSI1PK.to_string(),
                s(format!("EVENTS#{}", shard_of(id, AUDIT_SHARDS))),
            ),
            (GSI1SK.to_string(), s(format!("{recorded}#{id}"))),
        ]))
    }
}

/// The entries of a page, in the order they were recorded.
pub(super) fn page_entries(item: &Item) -> Result<Vec<AuditEntry>, PortError> {
    let pk = match item.get(PK) {
        Some(AttributeValue::S(pk)) => pk.as_str(),
        _ => "(no pk)",
    };
    let a = Attrs::new(pk, item);
    let recorded_at = a.time("recorded_at")?;
    let Some(AttributeValue::L(events)) = item.get(PageItem::EVENTS) else {
        return Err(a.malformed(PageItem::EVENTS, "is not a list"));
    };
    events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let malformed = |what: &str| a.malformed(&format!("{}[{i}]", PageItem::EVENTS), what);
            let AttributeValue::S(body) = e else {
                return Err(malformed("is not a string"));
            };
            let envelope: Envelope = serde_json::from_str(body)
                .map_err(|e| malformed(&format!("is not an event's envelope: {e}")))?;
            Ok(AuditEntry::of(&envelope, recorded_at))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dynamo::testutil::fixture;
    use choreo_ports::StateStore;

    /// The times a record's history holds and a pin that is its version are not stored twice,
    /// and read back as they were; other times and pins are stored as they are.
    #[test]
    fn a_file_item_stores_nothing_twice_and_reads_back_whole() {
        let at = Utc::now();
        let mut rec = choreo_ports::testkit::new_file("f-1", "d").into_record(at);
        rec.pin = Some(Pin::ETag(rec.version.clone()));
        let item = FileItem::from(&rec).0;
        for absent in ["created_at", "updated_at", PIN_ETAG, PIN_VERSION_ID] {
            assert!(!item.contains_key(absent), "{absent}: {item:?}");
        }
        assert_eq!(item[PIN], s(PIN_ETAG));
        assert_eq!(FileRecord::try_from(FileItem(item)).unwrap(), rec);
        rec.pin = Some(Pin::VersionId(rec.version.clone()));
        let item = FileItem::from(&rec).0;
        assert_eq!(item[PIN], s(PIN_VERSION_ID));
        assert_eq!(FileRecord::try_from(FileItem(item)).unwrap(), rec);
        rec.pin = Some(Pin::VersionId("another".into()));
        rec.updated_at = at + chrono::Duration::seconds(1);
        let item = FileItem::from(&rec).0;
        assert!(!item.contains_key(PIN) && item.contains_key("updated_at"));
        assert_eq!(FileRecord::try_from(FileItem(item)).unwrap(), rec);
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
        assert_eq!(err.kind, choreo_ports::PortErrorKind::Permanent);
        assert_eq!(err.target, "F#f-bad");
        assert!(err.message.contains("history is missing"), "{err}");
    }
}
