//! What a run cost in AWS requests: API calls per file by service and operation, priced per million
//! files at list prices (us-east-1, 2026):
//!
//! - SQS: $0.40 per million requests (each API call is a request; a batch call is one).
//! - SNS: $0.50 per million publishes (delivery to SQS is free).
//! - DynamoDB on demand: $0.625 per million write request units, $0.125 per million read request
//!   units. Units are estimated from calls, index writes included, erring high:
//!   - `UpdateItem` (a file's transition): 2 units for the item (a record with its history is 1–2 KB)
//!     and 2 for the state index, whose key changes (a delete and a put there);
//!   - `PutItem` (a registration with its index entry, a lease, a batch): 2 units;
//!   - `DeleteItem` (a lease released): 1 unit;
//!   - `TransactWriteItems` (an audit event and its counter): 2 items, doubled for the transaction,
//!     plus their two index entries: 6 units;
//!   - a strongly consistent `GetItem`, or a `Query`/`Scan` page of small items: 1 read unit.
//! - S3: $5 per million PUT, COPY, POST and LIST requests; $0.40 per million GET and HEAD.
//! - Glue API calls are free (crawlers and jobs bill by DPU-hour, not counted here).

use std::collections::BTreeMap;
use std::fmt::Write;

/// Price in dollars per million calls of `(service, operation)`.
fn price_per_million(service: &str, operation: &str) -> f64 {
    match (service, operation) {
        ("SQS", _) => 0.40,
        ("SNS", "Publish") => 0.50,
        ("SNS", _) => 0.0,
        ("DynamoDB", op) => dynamodb_units(op) * dynamodb_unit_price(op),
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

fn dynamodb_units(op: &str) -> f64 {
    match op {
        "UpdateItem" => 4.0,
        "PutItem" => 2.0,
        "TransactWriteItems" => 6.0,
        op if is_dynamodb_write(op) => 1.0,
        _ => 1.0,
    }
}

fn dynamodb_unit_price(op: &str) -> f64 {
    if is_dynamodb_write(op) { 0.625 } else { 0.125 }
}

/// A table of calls per file and the cost per million files.
pub fn report(calls: &BTreeMap<(String, String), u64>, files: u64) -> String {
    let files = files.max(1) as f64;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<10} {:<28} {:>10} {:>14} {:>16}",
        "SERVICE", "OPERATION", "CALLS", "CALLS/FILE", "$/M FILES"
    );
    let mut by_service: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    let mut total = 0.0;
    for ((service, op), n) in calls {
        let per_file = *n as f64 / files;
        let cost = per_file * price_per_million(service, op);
        total += cost;
        let s = by_service.entry(service).or_default();
        s.0 += per_file;
        s.1 += cost;
        let _ = writeln!(
            out,
            "{service:<10} {op:<28} {n:>10} {per_file:>14.2} {cost:>16.2}"
        );
    }
    let _ = writeln!(out);
    for (service, (per_file, cost)) in &by_service {
        let _ = writeln!(
            out,
            "{service:<10} {:<28} {:>10} {per_file:>14.2} {cost:>16.2}",
            "(all)", ""
        );
    }
    let _ = writeln!(
        out,
        "\nrequest cost per million files: ${total:.2} (the Step Functions design of the seed: about $302)"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_follow_the_list() {
        let calls = BTreeMap::from([
            (("SQS".to_string(), "SendMessage".to_string()), 10),
            (("SNS".to_string(), "Publish".to_string()), 10),
            (("DynamoDB".to_string(), "UpdateItem".to_string()), 10),
            (("DynamoDB".to_string(), "GetItem".to_string()), 10),
        ]);
        let text = report(&calls, 10);
        // Per file: SQS 0.40 + SNS 0.50 + DynamoDB 4 x 0.625 + 0.125 = 3.525 per million files.
        assert!(text.contains("$3.52") || text.contains("$3.53"), "{text}");
    }
}
