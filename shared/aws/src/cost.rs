//! What a run cost in AWS requests, from the calls it made and the bytes they carried, priced per
//! million files at list prices (us-east-1, 2026):
//!
//! - SQS: $0.40 per million requests; a request is an API call per 64 KB of its payload, so a batch
//!   of ten small messages is one.
//! - SNS: $0.50 per million publish requests, by the same 64 KB chunks (`PublishBatch` included;
//!   delivery to SQS is free).
//! - DynamoDB on demand: $0.625 per million write request units, $0.125 per million read request
//!   units, counted from the items as they were written and read (AWS's item size rules):
//!   - a write costs 1 unit per KB of the item (its larger image: for `UpdateItem`, the item the
//!     response returns), charged even when its condition fails;
//!   - a write to an item carrying an index key writes the index too: one write per KB of the entry
//!     when it is put or rewritten, two when its key moves (the old entry deleted, the new one
//!     put), one when the key is removed. An entry of an index projecting ALL is the item plus 100
//!     bytes and is rewritten by every write; a keys-only entry (the state table's, see
//!     [`crate::CallCounter::keys_only_index`]) is its keys plus 100 bytes and is written only when
//!     its key changes;
//!   - a transaction doubles every unit of its items;
//!   - a read costs a unit per 4 KB read (strongly consistent) or half that (eventually), at least
//!     one per call.
//! - S3: $5 per million PUT, COPY, POST and LIST requests; $0.40 per million GET and HEAD.
//! - Glue API calls are free (crawlers and jobs bill by DPU-hour: see `docs/cost.md`).
//!
//! The ledger also counts the write units each DynamoDB partition key received, the index's keys
//! included, so that a run shows its hottest key: see [`Bill::hottest`].

use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write;

/// A DynamoDB index entry's overhead on top of its projected attributes.
const INDEX_ENTRY_OVERHEAD: usize = 100;
/// The attributes holding the index keys (see `dynamo/mod.rs`).
const INDEX_KEY: &str = "gsi1pk";
const INDEX_SORT_KEY: &str = "gsi1sk";
/// The partition key attribute of every table.
const PK: &str = "pk";
/// How many items' index keys the ledger remembers, to charge an index move to the partition the
/// entry leaves: bounded, so a long-running process does not grow without end (beyond it, the
/// departure is charged to an unnamed partition).
const REMEMBERED_ITEMS: usize = 200_000;

/// What a run's calls cost: calls and billed units per `(service, operation)`, and DynamoDB write
/// units per partition key.
#[derive(Debug, Clone, Default)]
pub struct Bill {
    pub calls: BTreeMap<(String, String), u64>,
    /// Billed units: requests for SQS, SNS and S3, request units for DynamoDB.
    pub units: BTreeMap<(String, String), f64>,
    /// DynamoDB write units by partition key: `<table> <pk>` for items, `<table>/index <key>` for
    /// index entries.
    pub partitions: BTreeMap<String, f64>,
}

impl Bill {
    /// The DynamoDB write units of the whole run.
    pub fn write_units(&self) -> f64 {
        self.partitions.values().sum()
    }

    /// The partition key that received the most write units, with its share of all of them.
    pub fn hottest(&self) -> Option<(&str, f64)> {
        let total = self.write_units();
        self.partitions
            .iter()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(k, u)| (k.as_str(), if total > 0.0 { u / total } else { 0.0 }))
    }

    /// The write units a second each shared partition key would take at 1,000 files a second,
    /// busiest first: index partitions and items that are nobody's own (leases, counters). The
    /// items of one file, event, batch or alert (`F#`, `E#`, `B#`, `A#`) are left out: their writes
    /// do not grow with the rate.
    pub fn shared_rates(&self, files: u64) -> Vec<(String, f64)> {
        let per = files.max(1) as f64;
        let mut rates: Vec<(String, f64)> = self
            .partitions
            .iter()
            .filter(|(key, _)| {
                let pk = key.split_once(' ').map_or("", |(_, pk)| pk);
                key.contains("/index ")
                    || !["F#", "E#", "B#", "A#"].iter().any(|p| pk.starts_with(p))
            })
            .map(|(key, units)| (key.clone(), units / per * 1000.0))
            .collect();
        rates.sort_by(|a, b| b.1.total_cmp(&a.1));
        rates
    }

    /// The write units of each kind of key, busiest first: items by their type prefix
    /// (`choreo-state F#`, `choreo-audit E#`), index entries by their partition family without the
    /// shard (`choreo-state/index F#ACTIVE`). Where a run's writes go, for `docs/cost.md`.
    pub fn write_units_by_kind(&self) -> Vec<(String, f64)> {
        let mut kinds: BTreeMap<String, f64> = BTreeMap::new();
        for (key, units) in &self.partitions {
            let (table, pk) = key.split_once(' ').unwrap_or((key.as_str(), ""));
            let kind = if table.ends_with("/index") {
                pk.trim_end_matches(|c: char| c.is_ascii_digit())
                    .trim_end_matches('#')
            } else {
                pk.find('#').map_or(pk, |i| &pk[..=i])
            };
            *kinds.entry(format!("{table} {kind}")).or_default() += units;
        }
        let mut kinds: Vec<(String, f64)> = kinds.into_iter().collect();
        kinds.sort_by(|a, b| b.1.total_cmp(&a.1));
        kinds
    }

    /// Dollars per million files, for a run that moved `files` files.
    pub fn per_million_files(&self, files: u64) -> f64 {
        let files = files.max(1) as f64;
        self.units
            .iter()
            .map(|((service, op), units)| units / files * unit_price(service, op))
            .sum()
    }
}

/// Dollars per million billed units of `(service, operation)`.
fn unit_price(service: &str, operation: &str) -> f64 {
    match (service, operation) {
        ("SQS", _) => 0.40,
        ("SNS", "Publish" | "PublishBatch") => 0.50,
        ("SNS", _) => 0.0,
        ("DynamoDB", op) if is_dynamodb_write(op) => 0.625,
        ("DynamoDB", _) => 0.125,
        ("S3", "GetObject" | "HeadObject") => 0.40,
        ("S3", _) => 5.0,
        _ => 0.0,
    }
}

fn is_dynamodb_write(op: &str) -> bool {
    matches!(
        op,
        "PutItem" | "UpdateItem" | "DeleteItem" | "TransactWriteItems" | "BatchWriteItem"
    )
}

/// The running account behind [`Bill`], fed one finished call at a time.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    bill: Bill,
    /// Each item's index key as last written, by `<table> <pk>`.
    index_keys: HashMap<String, String>,
    /// The tables whose index projects keys only.
    keys_only: HashSet<String>,
}

impl Ledger {
    pub(crate) fn bill(&self) -> Bill {
        self.bill.clone()
    }

    pub(crate) fn reset(&mut self) {
        let keys_only = std::mem::take(&mut self.keys_only);
        *self = Ledger {
            keys_only,
            ..Ledger::default()
        };
    }

    pub(crate) fn keys_only_index(&mut self, table: &str) {
        self.keys_only.insert(table.to_string());
    }

    /// Counts one attempt of `operation`, unpriced.
    pub(crate) fn count(&mut self, service: &str, operation: &str) {
        *self
            .bill
            .calls
            .entry((service.to_string(), operation.to_string()))
            .or_default() += 1;
    }

    /// Accounts for one attempt of `operation`: `request` and `response` are the bodies when
    /// they were in memory, `succeeded` whether the service applied it.
    pub(crate) fn record(
        &mut self,
        service: &str,
        operation: &str,
        request: Option<&[u8]>,
        response: Option<&[u8]>,
        succeeded: bool,
    ) {
        self.count(service, operation);
        let key = (service.to_string(), operation.to_string());
        let units = match service {
            "SQS" | "SNS" => chunks_of_64k(request.map_or(0, <[u8]>::len)),
            "DynamoDB" => {
                let json = |b: Option<&[u8]>| {
                    b.and_then(|b| serde_json::from_slice::<Value>(b).ok())
                        .unwrap_or(Value::Null)
                };
                self.dynamodb(operation, &json(request), &json(response), succeeded)
            }
            _ => 1.0,
        };
        *self.bill.units.entry(key).or_default() += units;
    }

    /// A DynamoDB call's request units, charging its write units to their partitions.
    fn dynamodb(&mut self, op: &str, req: &Value, resp: &Value, succeeded: bool) -> f64 {
        let table = req["TableName"].as_str().unwrap_or("?").to_string();
        match op {
            "PutItem" => {
                let item = req["Item"].as_object();
                self.write(&table, item, item, succeeded, false, 1.0)
            }
            "UpdateItem" => {
                // The item after the update when the response carries it; else its key and the
                // values the update sets, a lower bound.
                let returned = resp["Attributes"].as_object();
                let after = returned.cloned().unwrap_or_else(|| {
                    let mut m = req["Key"].as_object().cloned().unwrap_or_default();
                    if let Some(v) = req["ExpressionAttributeValues"].as_object() {
                        m.extend(v.clone());
                    }
                    m
                });
                let key = req["Key"].as_object();
                let removes_index = removes(req, INDEX_KEY);
                self.write(&table, key, Some(&after), succeeded, removes_index, 1.0)
            }
            "DeleteItem" => {
                let key = req["Key"].as_object();
                let units = self.charge(&table, key, 1);
                if succeeded {
                    self.leave_index(&table, key, 1.0);
                }
                units
            }
            "TransactWriteItems" => {
                let mut units = 0.0;
                for t in req["TransactItems"].as_array().into_iter().flatten() {
                    if let Some(put) = t.get("Put") {
                        let table = put["TableName"].as_str().unwrap_or("?").to_string();
                        let item = put["Item"].as_object();
                        units += self.write(&table, item, item, succeeded, false, 2.0);
                    } else if let Some(u) = t.get("Update").or(t.get("Delete")) {
                        let table = u["TableName"].as_str().unwrap_or("?").to_string();
                        let key = u["Key"].as_object();
                        let body = u["ExpressionAttributeValues"].as_object();
                        let mut m = key.cloned().unwrap_or_default();
                        m.extend(body.cloned().unwrap_or_default());
                        units += self.write(&table, key, Some(&m), succeeded, false, 2.0);
                    } else if let Some(c) = t.get("ConditionCheck") {
                        let table = c["TableName"].as_str().unwrap_or("?").to_string();
                        units += self.charge(&table, c["Key"].as_object(), 2);
                    }
                }
                units
            }
            "BatchWriteItem" => {
                let mut units = 0.0;
                for (table, requests) in req["RequestItems"].as_object().into_iter().flatten() {
                    for r in requests.as_array().into_iter().flatten() {
                        let item = r["PutRequest"]["Item"].as_object();
                        units += self.write(table, item, item, succeeded, false, 1.0);
                    }
                }
                units
            }
            // Reads: a unit per 4 KB read, half for eventually consistent ones, one at least.
            _ => {
                let bytes: usize = match resp.get("Items") {
                    Some(Value::Array(items)) => items
                        .iter()
                        .filter_map(Value::as_object)
                        .map(item_size)
                        .sum(),
                    _ => resp["Item"].as_object().map_or(0, item_size),
                };
                let units = bytes.div_ceil(4096).max(1) as f64;
                if req["ConsistentRead"].as_bool() == Some(true) {
                    units
                } else {
                    (units / 2.0).max(0.5)
                }
            }
        }
    }

    /// One item written: its units, plus its index entry's when the write succeeded. `factor` is 2
    /// in a transaction.
    fn write(
        &mut self,
        table: &str,
        key: Option<&Map<String, Value>>,
        after: Option<&Map<String, Value>>,
        succeeded: bool,
        removes_index: bool,
        factor: f64,
    ) -> f64 {
        let size = after.map_or(0, item_size);
        let mut units = self.charge(table, key, size.div_ceil(1024).max(1)) * factor;
        if !succeeded {
            return units;
        }
        if removes_index {
            units += self.leave_index(table, key, factor);
        } else if let Some(new_key) = after.and_then(|a| a.get(INDEX_KEY)).and_then(s_of) {
            let item = item_id(table, key);
            let old = self.index_keys.get(&item).cloned();
            let keys_only = self.keys_only.contains(table);
            if keys_only && old.as_deref() == Some(new_key) {
                return units;
            }
            let projected = match (keys_only, after) {
                (true, Some(a)) => a
                    .iter()
                    .filter(|(k, _)| [PK, INDEX_KEY, INDEX_SORT_KEY].contains(&k.as_str()))
                    .map(|(k, v)| k.len() + value_size(v))
                    .sum(),
                _ => size,
            };
            let entry = (projected + INDEX_ENTRY_OVERHEAD).div_ceil(1024) as f64 * factor;
            if old.as_deref().is_some_and(|o| o != new_key) {
                units += self.leave_index(table, key, factor);
            }
            *self
                .bill
                .partitions
                .entry(format!("{table}/index {new_key}"))
                .or_default() += entry;
            units += entry;
            if self.index_keys.len() < REMEMBERED_ITEMS || old.is_some() {
                self.index_keys.insert(item, new_key.to_string());
            }
        }
        units
    }

    /// `units` write units charged to the item's own partition.
    fn charge(&mut self, table: &str, key: Option<&Map<String, Value>>, units: usize) -> f64 {
        let units = units as f64;
        *self.bill.partitions.entry(item_id(table, key)).or_default() += units;
        units
    }

    /// The item's index entry deleted: one unit, charged to the partition it leaves.
    fn leave_index(&mut self, table: &str, key: Option<&Map<String, Value>>, factor: f64) -> f64 {
        let old = self
            .index_keys
            .remove(&item_id(table, key))
            .unwrap_or_else(|| "(unknown)".to_string());
        *self
            .bill
            .partitions
            .entry(format!("{table}/index {old}"))
            .or_default() += factor;
        factor
    }
}

fn item_id(table: &str, key: Option<&Map<String, Value>>) -> String {
    let pk = key.and_then(|k| k.get(PK)).and_then(s_of).unwrap_or("?");
    format!("{table} {pk}")
}

fn s_of(v: &Value) -> Option<&str> {
    v.get("S").and_then(Value::as_str)
}

/// Whether the update expression removes `attribute` (through its `#name`).
fn removes(req: &Value, attribute: &str) -> bool {
    let Some(expr) = req["UpdateExpression"].as_str() else {
        return false;
    };
    let Some((_, removed)) = expr.split_once("REMOVE") else {
        return false;
    };
    let removed = removed.split(" SET ").next().unwrap_or("");
    removed.split(',').map(str::trim).any(|name| {
        name == attribute || req["ExpressionAttributeNames"][name].as_str() == Some(attribute)
    })
}

fn chunks_of_64k(bytes: usize) -> f64 {
    bytes.div_ceil(64 * 1024).max(1) as f64
}

/// An item's size by DynamoDB's rules: each attribute's name plus its value.
pub(crate) fn item_size(item: &Map<String, Value>) -> usize {
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

/// A value's size: strings and binaries by their bytes, numbers by their digits (two per byte,
/// plus one), lists and maps 3 bytes plus a byte per element.
fn value_size(v: &Value) -> usize {
    let Some((kind, inner)) = v.as_object().and_then(|m| m.iter().next()) else {
        return 0;
    };
    let strings = || {
        inner
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
    };
    match kind.as_str() {
        "S" => inner.as_str().map_or(0, str::len),
        "B" => inner.as_str().map_or(0, |b| b.len() * 3 / 4),
        "N" => inner.as_str().map_or(1, number_size),
        "BOOL" | "NULL" => 1,
        "SS" => strings().map(str::len).sum(),
        "BS" => strings().map(|b| b.len() * 3 / 4).sum(),
        "NS" => strings().map(number_size).sum(),
        "L" => {
            3 + inner
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| value_size(e) + 1)
                .sum::<usize>()
        }
        "M" => {
            3 + inner
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, e)| k.len() + value_size(e) + 1)
                .sum::<usize>()
        }
        _ => 0,
    }
}

fn number_size(n: &str) -> usize {
    let digits = n.chars().filter(char::is_ascii_digit).count();
    digits.div_ceil(2) + 1
}

/// A table of calls and units per file, the cost per million files and the hottest partition key.
pub fn report(bill: &Bill, files: u64) -> String {
    let per = files.max(1) as f64;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<10} {:<22} {:>8} {:>11} {:>11} {:>11}",
        "SERVICE", "OPERATION", "CALLS", "CALLS/FILE", "UNITS/FILE", "$/M FILES"
    );
    let mut by_service: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for ((service, op), n) in &bill.calls {
        let units = bill
            .units
            .get(&(service.clone(), op.clone()))
            .copied()
            .unwrap_or(0.0);
        let cost = units / per * unit_price(service, op);
        let s = by_service.entry(service).or_default();
        s.0 += *n as f64 / per;
        s.1 += cost;
        let _ = writeln!(
            out,
            "{service:<10} {op:<22} {n:>8} {:>11.2} {:>11.2} {cost:>11.2}",
            *n as f64 / per,
            units / per
        );
    }
    let _ = writeln!(out);
    for (service, (calls, cost)) in &by_service {
        let _ = writeln!(
            out,
            "{service:<10} {:<22} {:>8} {calls:>11.2} {:>11} {cost:>11.2}",
            "(all)", "", ""
        );
    }
    if let Some((key, share)) = bill.hottest() {
        let _ = writeln!(
            out,
            "\nDynamoDB write units: {:.1} per file; the hottest partition key, {key}, took {:.1} % of them",
            bill.write_units() / per,
            share * 100.0
        );
        let kinds = bill
            .write_units_by_kind()
            .into_iter()
            .map(|(kind, units)| format!("{kind} {:.2}", units / per))
            .collect::<Vec<_>>();
        let _ = writeln!(out, "  by kind of key: {}", kinds.join(", "));
    }
    let rates = bill.shared_rates(files);
    if !rates.is_empty() {
        let _ = writeln!(
            out,
            "shared partition keys at 1,000 files a second (a partition serves 1,000 WCU/s):"
        );
        for (key, rate) in rates.iter().take(3) {
            let _ = writeln!(out, "  {key}: {rate:.0} WCU/s");
        }
    }
    let _ = writeln!(
        out,
        "\nrequest cost per million files: ${:.2} (the Step Functions design of the seed: about $302)",
        bill.per_million_files(files)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(l: &mut Ledger, service: &str, op: &str, req: Value, resp: Value) {
        let req = serde_json::to_vec(&req).unwrap();
        let resp = serde_json::to_vec(&resp).unwrap();
        l.record(service, op, Some(&req), Some(&resp), true);
    }

    #[test]
    fn item_sizes_follow_dynamodbs_rules() {
        let item = json!({
            "pk": {"S": "F#abc"},              // 2 + 5
            "size": {"N": "12345"},            // 4 + 3 + 1
            "ok": {"BOOL": true},              // 2 + 1
            "history": {"L": [{"M": {"to": {"S": "NEW"}}}]}, // 7 + 3 + (3 + 2 + 3 + 1) + 1
        });
        assert_eq!(item_size(item.as_object().unwrap()), 7 + 8 + 3 + 20);
    }

    #[test]
    fn writes_are_priced_by_size_with_their_index_moves() {
        let mut l = Ledger::default();
        let big = "x".repeat(1500);
        // A put of a 1.5 KB item with an index key: 2 units, and 2 for its index entry.
        record(
            &mut l,
            "DynamoDB",
            "PutItem",
            json!({"TableName": "t", "Item": {"pk": {"S": "F#1"}, "gsi1pk": {"S": "F#NEW#0"}, "b": {"S": big}}}),
            json!({}),
        );
        // An update moving the key: the item (2), the entry deleted (1) and put (2).
        record(
            &mut l,
            "DynamoDB",
            "UpdateItem",
            json!({"TableName": "t", "Key": {"pk": {"S": "F#1"}}, "UpdateExpression": "SET #g = :g"}),
            json!({"Attributes": {"pk": {"S": "F#1"}, "gsi1pk": {"S": "F#VALID#0"}, "b": {"S": big}}}),
        );
        // An update removing the key: the item (2) and the entry deleted (1).
        record(
            &mut l,
            "DynamoDB",
            "UpdateItem",
            json!({"TableName": "t", "Key": {"pk": {"S": "F#1"}}, "UpdateExpression": "SET #s = :s REMOVE #g",
                   "ExpressionAttributeNames": {"#g": "gsi1pk", "#s": "state"}}),
            json!({"Attributes": {"pk": {"S": "F#1"}, "b": {"S": big}}}),
        );
        let bill = l.bill();
        assert_eq!(bill.units[&("DynamoDB".into(), "PutItem".into())], 4.0);
        assert_eq!(
            bill.units[&("DynamoDB".into(), "UpdateItem".into())],
            5.0 + 3.0
        );
        assert_eq!(bill.partitions["t F#1"], 6.0);
        assert_eq!(bill.partitions["t/index F#NEW#0"], 3.0);
        assert_eq!(bill.partitions["t/index F#VALID#0"], 3.0);
        assert_eq!(bill.write_units(), 12.0);
        assert_eq!(
            bill.write_units_by_kind(),
            vec![
                ("t F#".to_string(), 6.0),
                ("t/index F#NEW".to_string(), 3.0),
                ("t/index F#VALID".to_string(), 3.0)
            ]
        );
        let (key, share) = bill.hottest().unwrap();
        assert_eq!((key, share), ("t F#1", 0.5));
        // The file's own item is not shared; its index partitions are, and scale with the rate.
        let rates = bill.shared_rates(1);
        assert_eq!(
            rates,
            vec![
                ("t/index F#NEW#0".to_string(), 3000.0),
                ("t/index F#VALID#0".to_string(), 3000.0)
            ]
        );
    }

    #[test]
    fn a_keys_only_entry_is_small_and_written_only_when_its_key_moves() {
        let mut l = Ledger::default();
        l.keys_only_index("t");
        let big = "x".repeat(1500);
        let item = |phase: &str| json!({"pk": {"S": "F#1"}, "gsi1pk": {"S": phase}, "gsi1sk": {"S": "d#1"}, "b": {"S": big}});
        record(
            &mut l,
            "DynamoDB",
            "PutItem",
            json!({"TableName": "t", "Item": item("F#ACTIVE#0")}),
            json!({}),
        );
        // Within the phase: the item only.
        record(
            &mut l,
            "DynamoDB",
            "UpdateItem",
            json!({"TableName": "t", "Key": {"pk": {"S": "F#1"}}}),
            json!({"Attributes": item("F#ACTIVE#0")}),
        );
        // Out of it: the item, and the small entry moved.
        record(
            &mut l,
            "DynamoDB",
            "UpdateItem",
            json!({"TableName": "t", "Key": {"pk": {"S": "F#1"}}}),
            json!({"Attributes": item("F#INGESTED#0")}),
        );
        let bill = l.bill();
        assert_eq!(
            bill.units[&("DynamoDB".into(), "PutItem".into())],
            2.0 + 1.0
        );
        assert_eq!(
            bill.units[&("DynamoDB".into(), "UpdateItem".into())],
            2.0 + 2.0 + 2.0
        );
        assert_eq!(bill.partitions["t/index F#ACTIVE#0"], 2.0);
        assert_eq!(bill.partitions["t/index F#INGESTED#0"], 1.0);
    }

    #[test]
    fn a_transaction_doubles_and_reads_are_by_4_kb() {
        let mut l = Ledger::default();
        record(
            &mut l,
            "DynamoDB",
            "TransactWriteItems",
            json!({"TransactItems": [
                {"Put": {"TableName": "a", "Item": {"pk": {"S": "E#1"}}}},
                {"Update": {"TableName": "a", "Key": {"pk": {"S": "C#x"}}}},
            ]}),
            json!({}),
        );
        let item = json!({"pk": {"S": "x".repeat(5000)}});
        record(
            &mut l,
            "DynamoDB",
            "GetItem",
            json!({"TableName": "a", "ConsistentRead": true}),
            json!({"Item": item}),
        );
        record(
            &mut l,
            "DynamoDB",
            "Query",
            json!({"TableName": "a"}),
            json!({"Items": [item, item]}),
        );
        let bill = l.bill();
        assert_eq!(
            bill.units[&("DynamoDB".into(), "TransactWriteItems".into())],
            4.0
        );
        assert_eq!(bill.units[&("DynamoDB".into(), "GetItem".into())], 2.0);
        assert_eq!(bill.units[&("DynamoDB".into(), "Query".into())], 1.5);
    }

    #[test]
    fn messages_are_priced_by_64_kb_chunks_and_dollars_follow_the_list() {
        let mut l = Ledger::default();
        let small = vec![b'x'; 1000];
        let large = vec![b'x'; 100 * 1024];
        for _ in 0..10 {
            l.record("SNS", "PublishBatch", Some(&small), None, true);
            l.record("SQS", "SendMessage", Some(&large), None, true);
        }
        let bill = l.bill();
        // Per file: SNS 1 x 0.50 + SQS 2 x 0.40.
        assert!((bill.per_million_files(10) - 1.30).abs() < 1e-9);
        let text = report(&bill, 10);
        assert!(text.contains("$1.30"), "{text}");
    }
}
