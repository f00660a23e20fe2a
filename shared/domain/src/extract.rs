//! Scheduled extracts: what an extract is, its business keys, its ticks and per-key units, and the
//! pure decisions about them (which slot is due, which keys are live, how a query's named
//! parameters bind). No I/O: the scheduler and the extractor (`services/extractor`) do that.
//!
//! A schedule fires a **tick** (one per extract and schedule time, whatever the number of
//! replicas: its id is derived from the slot and written with a put-if-absent). A tick fans out one
//! **unit** per key live at the tick, each its own message and its own unit of work; a unit is
//! written put-if-absent under the tick's id, so a tick delivered twice extracts each key once.

use crate::Secret;
use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use croner::Cron;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::str::FromStr;

/// Where extracts read from and load into, and how the local scheduler ticks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExtractSettings {
    /// The MySQL source, e.g. `mysql://user:password@host:3306/db`. A secret: never logged (give it
    /// as `CHOREO_EXTRACT__MYSQL_URL`).
    pub mysql_url: Secret,
    /// The PostgreSQL-protocol warehouse the `warehouse` job loads into, e.g.
    /// `postgres://user@host:5432/db`. A secret, as `mysql_url`.
    pub warehouse_url: Secret,
    /// Seconds between two looks of the local scheduler at the schedules. A slot is ticked at most
    /// this late.
    pub scheduler_interval_secs: u64,
    /// Seconds a unit's claim lasts: a worker that died holding one leaves it to another after this.
    pub unit_lease_secs: u64,
    /// Seconds a tick may stay without being fanned out before the scheduler sends it again (its
    /// message was lost with a crash between the tick's write and its send).
    pub resend_after_secs: u64,
}

impl Default for ExtractSettings {
    fn default() -> Self {
        ExtractSettings {
            mysql_url: Secret::default(),
            warehouse_url: Secret::default(),
            scheduler_interval_secs: 10,
            unit_lease_secs: 900,
            resend_after_secs: 120,
        }
    }
}

/// One scheduled extract: a query run once per live business key at every schedule time, its rows
/// written as CSV (gzip) into the input bucket under the dataset's folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtractConfig {
    /// Lowercase letters, digits, `_` and `-`.
    pub name: String,
    /// A cron expression (five fields, or six with seconds first), e.g. `0 3,14 * * *`.
    pub schedule: String,
    /// The IANA time zone the schedule and the keys' validity dates are read in.
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// The dataset (configured under `[[datasets]]`) whose folder receives the files.
    pub dataset: String,
    /// The MySQL query, with named parameters (`:campaign`) bound from the key's parameters, plus
    /// `:key`, `:valid_from`, `:valid_to` and `:tick_time`. Values are always bound, never spliced.
    pub query: String,
    /// Where the dataset's `warehouse` job loads the files.
    #[serde(default)]
    pub warehouse: Option<WarehouseTarget>,
}

fn default_time_zone() -> String {
    "UTC".into()
}

/// A warehouse table and how a batch of an extract's files is loaded into it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarehouseTarget {
    /// `table` or `schema.table`.
    pub table: String,
    pub mode: LoadMode,
    /// The column holding the business key: `replace` deletes the rows of the batch's keys by it.
    #[serde(default)]
    pub key_column: Option<String>,
    /// The primary key `upsert` matches rows on.
    #[serde(default)]
    pub primary_key: Vec<String>,
}

/// How a batch meets the rows already in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum LoadMode {
    /// The batch's keys' rows deleted and reloaded in one transaction: readers see the old rows or
    /// the new, never an empty table.
    Replace,
    /// Rows added.
    Append,
    /// Rows matching on the primary key updated, others added.
    Upsert,
}

impl LoadMode {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// What is wrong with an extract's configuration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExtractConfigError {
    #[error("extract name {0:?} must be non-empty lowercase letters, digits, '_' or '-'")]
    BadName(String),
    #[error("extract {0:?} is configured twice")]
    Duplicate(String),
    #[error("extract {name:?}: bad schedule {schedule:?}: {error}")]
    BadSchedule {
        name: String,
        schedule: String,
        error: String,
    },
    #[error("extract {name:?}: unknown time zone {zone:?}")]
    BadTimeZone { name: String, zone: String },
    #[error("extract {name:?}: dataset {dataset:?} is not configured")]
    NoDataset { name: String, dataset: String },
    #[error("extract {0:?}: mode replace needs warehouse.key_column")]
    ReplaceWithoutKey(String),
    #[error("extract {0:?}: mode upsert needs warehouse.primary_key")]
    UpsertWithoutKey(String),
    #[error("extract {name:?}: {error}")]
    BadQuery { name: String, error: String },
    #[error("dataset {0:?} is loaded by two extracts' warehouse targets")]
    SharedDataset(String),
}

impl ExtractConfig {
    /// The schedule, parsed with its time zone.
    pub fn parsed_schedule(&self) -> Result<Schedule, ExtractConfigError> {
        Schedule::parse(&self.schedule, &self.time_zone).map_err(|e| match e {
            ScheduleError::Cron(error) => ExtractConfigError::BadSchedule {
                name: self.name.clone(),
                schedule: self.schedule.clone(),
                error,
            },
            ScheduleError::TimeZone => ExtractConfigError::BadTimeZone {
                name: self.name.clone(),
                zone: self.time_zone.clone(),
            },
        })
    }

    /// Checks what serde cannot, given the configured dataset names.
    pub fn check(&self, datasets: &[&str]) -> Result<(), ExtractConfigError> {
        if !is_name(&self.name) {
            return Err(ExtractConfigError::BadName(self.name.clone()));
        }
        self.parsed_schedule()?;
        if !datasets.contains(&self.dataset.as_str()) {
            return Err(ExtractConfigError::NoDataset {
                name: self.name.clone(),
                dataset: self.dataset.clone(),
            });
        }
        NamedQuery::parse(&self.query).map_err(|error| ExtractConfigError::BadQuery {
            name: self.name.clone(),
            error,
        })?;
        if let Some(w) = &self.warehouse {
            match w.mode {
                LoadMode::Replace if w.key_column.is_none() => {
                    return Err(ExtractConfigError::ReplaceWithoutKey(self.name.clone()));
                }
                LoadMode::Upsert if w.primary_key.is_empty() => {
                    return Err(ExtractConfigError::UpsertWithoutKey(self.name.clone()));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// Whether `s` may name a business key: it becomes a folder of the object key, so no `/`.
pub fn is_key_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && s != "."
        && s != ".."
}

/// Checks a whole set of extracts against the configured datasets.
pub fn check_all(extracts: &[ExtractConfig], datasets: &[&str]) -> Result<(), ExtractConfigError> {
    let mut names = std::collections::HashSet::new();
    let mut loaded = std::collections::HashSet::new();
    for e in extracts {
        e.check(datasets)?;
        if !names.insert(&e.name) {
            return Err(ExtractConfigError::Duplicate(e.name.clone()));
        }
        if e.warehouse.is_some() && !loaded.insert(&e.dataset) {
            return Err(ExtractConfigError::SharedDataset(e.dataset.clone()));
        }
    }
    Ok(())
}

#[derive(Debug)]
pub enum ScheduleError {
    Cron(String),
    TimeZone,
}

/// A cron expression read in a time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    zone: Tz,
}

impl Schedule {
    pub fn parse(expr: &str, zone: &str) -> Result<Schedule, ScheduleError> {
        let cron = Cron::from_str(expr).map_err(|e| ScheduleError::Cron(e.to_string()))?;
        let zone = Tz::from_str(zone).map_err(|_| ScheduleError::TimeZone)?;
        Ok(Schedule { cron, zone })
    }

    /// The latest schedule time at or before `now`.
    pub fn latest_at_or_before(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = now.with_timezone(&self.zone);
        self.cron
            .find_previous_occurrence(&local, true)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The first schedule time after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&self.zone);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The calendar date of `t` in the schedule's zone (what keys' validity windows are read in).
    pub fn date_of(&self, t: DateTime<Utc>) -> NaiveDate {
        t.with_timezone(&self.zone).date_naive()
    }

    /// The slot to tick now, if any: the latest schedule time at or before `now` that is later than
    /// both `since` (when the scheduler first saw the extract: slots before it are not caught up)
    /// and the `last` slot ticked. A process down across several slots ticks once, for the latest:
    /// catching up means one fresh extract, not one per missed slot.
    pub fn due(
        &self,
        since: DateTime<Utc>,
        last: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let latest = self.latest_at_or_before(now)?;
        let floor = last.map_or(since, |l| l.max(since));
        (latest > floor).then_some(latest)
    }
}

/// `expr` (five fields, or six with seconds first) as an EventBridge Scheduler expression,
/// `cron(minutes hours day-of-month month day-of-week year)`: no seconds (a six-field expression
/// must have `0` there), `?` in whichever day field is `*` (EventBridge wants one of them `?`), and
/// numeric days of the week moved from cron's 0–6 (7 too) from Sunday to EventBridge's 1–7.
pub fn eventbridge_cron(expr: &str) -> Result<String, String> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    let fields = match fields.as_slice() {
        [_, _, _, _, _] => fields,
        ["0", rest @ ..] if rest.len() == 5 => rest.to_vec(),
        [_, _, _, _, _, _] => {
            return Err(format!(
                "{expr:?}: EventBridge schedules have no seconds (use 0 or five fields)"
            ));
        }
        _ => return Err(format!("{expr:?}: five fields expected")),
    };
    let (mut dom, mut dow) = (fields[2].to_string(), fields[4].to_string());
    let dow_digits = |s: &str| -> Result<String, String> {
        // Each number in a list or range moves up one; names (MON) are the same in both.
        let mut out = String::new();
        let mut num = String::new();
        for c in s.chars().chain(std::iter::once('\0')) {
            if c.is_ascii_digit() {
                num.push(c);
                continue;
            }
            if !num.is_empty() {
                let n: u32 = num
                    .parse()
                    .map_err(|_| format!("{expr:?}: bad day {num}"))?;
                if n > 7 {
                    return Err(format!("{expr:?}: day of week {n} is out of range"));
                }
                out.push_str(&(n % 7 + 1).to_string());
                num.clear();
            }
            if c != '\0' {
                out.push(c);
            }
        }
        Ok(out)
    };
    match (dom.as_str(), dow.as_str()) {
        (_, "*") => dow = "?".into(),
        ("*", _) => {
            dom = "?".into();
            dow = dow_digits(&dow)?;
        }
        _ => {
            return Err(format!(
                "{expr:?}: EventBridge cannot schedule on days of the month and of the week at once"
            ));
        }
    }
    if dow.contains('/') {
        return Err(format!(
            "{expr:?}: steps in the day of the week are not portable"
        ));
    }
    Ok(format!(
        "cron({} {} {dom} {} {dow} *)",
        fields[0], fields[1], fields[3]
    ))
}

/// One business key of an extract, as operators edit it in the keys table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub extract: String,
    /// Letters, digits, `_`, `-`, `.` (see [`is_key_name`]).
    pub key: String,
    /// First day the key is live (inclusive), in the extract's time zone; none: since always.
    pub valid_from: Option<NaiveDate>,
    /// Last day the key is live (inclusive); none: for ever.
    pub valid_to: Option<NaiveDate>,
    pub enabled: bool,
    /// Values of the query's named parameters.
    pub params: BTreeMap<String, String>,
    pub updated_at: DateTime<Utc>,
}

impl KeyRecord {
    /// Whether a tick on `day` extracts this key.
    pub fn is_live(&self, day: NaiveDate) -> bool {
        self.enabled
            && self.valid_from.is_none_or(|f| f <= day)
            && self.valid_to.is_none_or(|t| day <= t)
    }
}

/// A tick: one firing of an extract's schedule (or an operator's `choreo extract run`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tick {
    /// `<extract>@<slot, YYYYMMDDTHHMMSSZ>`, with `-manual-<n>` for a tick by hand: sortable by
    /// time, and the same on every replica for a scheduled slot.
    pub id: String,
    pub extract: String,
    /// The schedule time (or the moment of a tick by hand).
    pub slot: DateTime<Utc>,
    pub manual: bool,
    pub created_at: DateTime<Utc>,
    /// When its units were written; none while its message is on its way (or was lost).
    pub fanned_out_at: Option<DateTime<Utc>>,
}

impl Tick {
    /// The tick of a schedule slot.
    pub fn scheduled(extract: &str, slot: DateTime<Utc>) -> Tick {
        Tick {
            id: format!("{extract}@{}", slot.format("%Y%m%dT%H%M%SZ")),
            extract: extract.to_string(),
            slot,
            manual: false,
            created_at: crate::clock::now(),
            fanned_out_at: None,
        }
    }

    /// A tick by hand, at `now`.
    pub fn manual(extract: &str, now: DateTime<Utc>) -> Tick {
        let nonce = &uuid::Uuid::new_v4().simple().to_string()[..6];
        Tick {
            id: format!("{extract}@{}-manual-{nonce}", now.format("%Y%m%dT%H%M%SZ")),
            extract: extract.to_string(),
            slot: now,
            manual: true,
            created_at: now,
            fanned_out_at: None,
        }
    }
}

/// Where a unit stands.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::EnumString,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum UnitState {
    /// Written by the fan-out; its message is on its way.
    Pending,
    /// A worker holds it (until its claim lapses).
    Running,
    /// Its file is in the input bucket: the pipeline has it.
    Extracted,
    /// It failed with a reason, and was alerted on; an operator's retry makes it PENDING again.
    Failed,
}

impl UnitState {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(s: &str) -> Option<UnitState> {
        s.parse().ok()
    }
}

/// One key's extract within one tick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExtractUnit {
    pub tick_id: String,
    pub extract: String,
    pub key: String,
    pub state: UnitState,
    /// Claims taken so far.
    pub attempts: u32,
    pub reason: Option<String>,
    /// The object written into the input bucket.
    pub object_key: Option<String>,
    pub rows: Option<u64>,
    pub updated_at: DateTime<Utc>,
}

/// The object key of a unit's file: `<dataset folder><key>/<tick id>.csv.gz`. The same for every
/// attempt, so a retried unit overwrites its own file rather than adding another.
pub fn object_key(folder: &str, key: &str, tick_id: &str) -> String {
    let tick = tick_id.replace('@', "_");
    format!("{folder}{key}/{tick}.csv.gz")
}

/// The business key an extract's object belongs to: its first folder under the dataset's.
pub fn key_of_object<'a>(folder: &str, object_key: &'a str) -> Option<&'a str> {
    let rest = object_key.strip_prefix(folder)?;
    let (key, file) = rest.split_once('/')?;
    (!key.is_empty() && !file.is_empty()).then_some(key)
}

/// The messages on the extract queue. They are the extractor's own (not published to the topic),
/// so they are not [`crate::Event`]s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ExtractMessage {
    /// Fan the tick out: one unit, and one `ExtractKey`, per live key.
    ExtractTick { extract: String, tick_id: String },
    /// Extract one key's rows for one tick.
    ExtractKey {
        extract: String,
        tick_id: String,
        key: String,
    },
}

impl ExtractMessage {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("extract messages always serialize")
    }
}

/// A query with named parameters, turned into MySQL's positional `?` form.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedQuery {
    /// The query with each `:name` replaced by `?`.
    pub sql: String,
    /// The names, in the order their `?` appear (a name used twice appears twice).
    pub params: Vec<String>,
}

impl NamedQuery {
    /// Finds `:name` parameters outside quotes and comments. `::` and a `:` not followed by a letter
    /// or `_` are left as they are; a `?` of the query's own is refused, since it would take a value
    /// no one names.
    pub fn parse(query: &str) -> Result<NamedQuery, String> {
        let b = query.as_bytes();
        let (mut sql, mut params) = (String::with_capacity(query.len()), Vec::new());
        let mut i = 0;
        let mut copied = 0;
        while i < b.len() {
            match b[i] {
                q @ (b'\'' | b'"' | b'`') => {
                    i += 1;
                    while i < b.len() && b[i] != q {
                        i += if b[i] == b'\\' { 2 } else { 1 };
                    }
                    i += 1;
                }
                b'-' if b.get(i + 1) == Some(&b'-') => {
                    while i < b.len() && b[i] != b'\n' {
                        i += 1;
                    }
                }
                b'#' => {
                    while i < b.len() && b[i] != b'\n' {
                        i += 1;
                    }
                }
                b'/' if b.get(i + 1) == Some(&b'*') => {
                    i += 2;
                    while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                        i += 1;
                    }
                    i += 2;
                }
                b'?' => return Err("the query has a `?`: name its parameters (`:name`)".into()),
                b':' if b.get(i + 1) == Some(&b':') => i += 2,
                b':' if b
                    .get(i + 1)
                    .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_') =>
                {
                    let start = i + 1;
                    let mut end = start;
                    while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
                        end += 1;
                    }
                    sql.push_str(&query[copied..i]);
                    sql.push('?');
                    params.push(query[start..end].to_string());
                    copied = end;
                    i = end;
                }
                _ => i += 1,
            }
        }
        sql.push_str(&query[copied.min(query.len())..]);
        Ok(NamedQuery { sql, params })
    }

    /// The values to bind, in order: the key's parameters, then the built-in names. A name with no
    /// value is the key's error, reported with the name.
    pub fn bind_values(
        &self,
        key: &KeyRecord,
        tick_time: DateTime<Utc>,
    ) -> Result<Vec<String>, String> {
        self.params
            .iter()
            .map(|name| {
                if let Some(v) = key.params.get(name) {
                    return Ok(v.clone());
                }
                let builtin = match name.as_str() {
                    "key" => Some(key.key.clone()),
                    "valid_from" => key.valid_from.map(|d| d.to_string()),
                    "valid_to" => key.valid_to.map(|d| d.to_string()),
                    "tick_time" => Some(tick_time.format("%Y-%m-%d %H:%M:%S").to_string()),
                    _ => None,
                };
                builtin.ok_or_else(|| format!("key {:?} has no value for :{name}", key.key))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    #[test]
    fn a_missed_run_of_slots_is_caught_up_once_with_the_latest() {
        let s = Schedule::parse("0 3,14 * * *", "UTC").unwrap();
        let since = at(2026, 12, 1, 0, 0);
        // Ticked the 1st at 03:00; down until the 3rd at 10:00: four slots missed, one tick.
        let last = Some(at(2026, 12, 1, 3, 0));
        assert_eq!(
            s.due(since, last, at(2026, 12, 3, 10, 0)),
            Some(at(2026, 12, 3, 3, 0))
        );
        // Once ticked, nothing until the next slot.
        let last = Some(at(2026, 12, 3, 3, 0));
        assert_eq!(s.due(since, last, at(2026, 12, 3, 13, 59)), None);
        assert_eq!(
            s.due(since, last, at(2026, 12, 3, 14, 0)),
            Some(at(2026, 12, 3, 14, 0))
        );
    }

    #[test]
    fn slots_before_the_scheduler_first_saw_the_extract_are_not_caught_up() {
        let s = Schedule::parse("0 3 * * *", "UTC").unwrap();
        let since = at(2026, 12, 3, 10, 0);
        assert_eq!(s.due(since, None, at(2026, 12, 3, 11, 0)), None);
        assert_eq!(
            s.due(since, None, at(2026, 12, 4, 3, 0)),
            Some(at(2026, 12, 4, 3, 0))
        );
    }

    #[test]
    fn schedules_are_read_in_their_time_zone() {
        let s = Schedule::parse("0 3 * * *", "Europe/Paris").unwrap();
        // 03:00 in Paris in December is 02:00 UTC.
        assert_eq!(
            s.latest_at_or_before(at(2026, 12, 3, 2, 30)),
            Some(at(2026, 12, 3, 2, 0))
        );
        assert_eq!(
            s.next_after(at(2026, 12, 3, 2, 0)),
            Some(at(2026, 12, 4, 2, 0))
        );
        assert!(matches!(
            Schedule::parse("0 3 * * *", "Mars/Olympus"),
            Err(ScheduleError::TimeZone)
        ));
        assert!(matches!(
            Schedule::parse("0 25 * * *", "UTC"),
            Err(ScheduleError::Cron(_))
        ));
    }

    fn key(enabled: bool, from: Option<&str>, to: Option<&str>) -> KeyRecord {
        KeyRecord {
            extract: "campaigns".into(),
            key: "spring".into(),
            valid_from: from.map(|d| d.parse().unwrap()),
            valid_to: to.map(|d| d.parse().unwrap()),
            enabled,
            params: BTreeMap::from([("campaign".to_string(), "c-1".to_string())]),
            updated_at: crate::clock::now(),
        }
    }

    #[test]
    fn a_key_is_live_when_enabled_within_its_window_inclusive() {
        let day = |d: &str| d.parse::<NaiveDate>().unwrap();
        let k = key(true, Some("2026-03-01"), Some("2026-05-31"));
        assert!(k.is_live(day("2026-03-01")));
        assert!(k.is_live(day("2026-05-31")));
        assert!(!k.is_live(day("2026-02-28")));
        assert!(!k.is_live(day("2026-06-01")));
        assert!(!key(false, None, None).is_live(day("2026-04-01")));
        assert!(key(true, None, None).is_live(day("1999-01-01")));
    }

    #[test]
    fn named_parameters_become_positional_outside_quotes_and_comments() {
        let q = NamedQuery::parse(
            "SELECT a, ':x' AS s, `b:c` FROM t -- :no\n WHERE c = :campaign /* :nope */ \
             AND d >= :valid_from AND e::text = :campaign",
        )
        .unwrap();
        assert_eq!(q.params, ["campaign", "valid_from", "campaign"]);
        assert_eq!(
            q.sql,
            "SELECT a, ':x' AS s, `b:c` FROM t -- :no\n WHERE c = ? /* :nope */ \
             AND d >= ? AND e::text = ?"
        );
        let values = q
            .bind_values(&key(true, Some("2026-03-01"), None), at(2026, 3, 2, 3, 0))
            .unwrap();
        assert_eq!(values, ["c-1", "2026-03-01", "c-1"]);
        let err = NamedQuery::parse("SELECT * FROM t WHERE x = :region")
            .unwrap()
            .bind_values(&key(true, None, None), at(2026, 3, 2, 3, 0))
            .unwrap_err();
        assert!(err.contains(":region"), "{err}");
        assert!(NamedQuery::parse("SELECT * FROM t WHERE x = ?").is_err());
    }

    #[test]
    fn tick_ids_are_the_same_on_every_replica_and_sort_by_time() {
        let a = Tick::scheduled("campaigns", at(2026, 12, 3, 3, 0));
        assert_eq!(a.id, "campaigns@20261203T030000Z");
        assert_eq!(
            a,
            Tick {
                created_at: a.created_at,
                ..Tick::scheduled("campaigns", at(2026, 12, 3, 3, 0))
            }
        );
        let m = Tick::manual("campaigns", at(2026, 12, 3, 9, 0));
        assert!(m.id > a.id && m.id.starts_with("campaigns@20261203T090000Z-manual-"));
    }

    #[test]
    fn object_keys_carry_the_key_as_a_folder() {
        let k = object_key("campaigns/", "spring", "campaigns@20261203T030000Z");
        assert_eq!(k, "campaigns/spring/campaigns_20261203T030000Z.csv.gz");
        assert_eq!(key_of_object("campaigns/", &k), Some("spring"));
        assert_eq!(key_of_object("campaigns/", "campaigns/x.csv.gz"), None);
        assert!(is_key_name("spring-2026.v2"));
        assert!(!is_key_name("a/b") && !is_key_name("..") && !is_key_name(""));
    }

    #[test]
    fn configs_are_checked() {
        let mut e = ExtractConfig {
            name: "campaigns".into(),
            schedule: "0 3,14 * * *".into(),
            time_zone: "UTC".into(),
            dataset: "campaign_rows".into(),
            query: "SELECT * FROM rows WHERE campaign = :campaign".into(),
            warehouse: Some(WarehouseTarget {
                table: "public.rows".into(),
                mode: LoadMode::Replace,
                key_column: Some("campaign".into()),
                primary_key: vec![],
            }),
        };
        let ds = ["campaign_rows"];
        check_all(std::slice::from_ref(&e), &ds).unwrap();
        assert!(matches!(
            check_all(&[e.clone(), e.clone()], &ds),
            Err(ExtractConfigError::Duplicate(_))
        ));
        e.warehouse.as_mut().unwrap().mode = LoadMode::Upsert;
        assert!(matches!(
            e.check(&ds),
            Err(ExtractConfigError::UpsertWithoutKey(_))
        ));
        e.warehouse.as_mut().unwrap().key_column = None;
        e.warehouse.as_mut().unwrap().mode = LoadMode::Replace;
        assert!(matches!(
            e.check(&ds),
            Err(ExtractConfigError::ReplaceWithoutKey(_))
        ));
        e.warehouse = None;
        assert!(matches!(
            e.check(&["other"]),
            Err(ExtractConfigError::NoDataset { .. })
        ));
        e.time_zone = "Nowhere/Else".into();
        assert!(matches!(
            e.check(&ds),
            Err(ExtractConfigError::BadTimeZone { .. })
        ));
    }

    #[test]
    fn cron_expressions_become_eventbridge_ones() {
        assert_eq!(
            eventbridge_cron("0 3,14 * * *").unwrap(),
            "cron(0 3,14 * * ? *)"
        );
        assert_eq!(
            eventbridge_cron("0 0 3 * * *").unwrap(),
            "cron(0 3 * * ? *)"
        );
        assert_eq!(
            eventbridge_cron("30 6 * * 1-5").unwrap(),
            "cron(30 6 ? * 2-6 *)"
        );
        assert_eq!(
            eventbridge_cron("0 9 * * 0,6").unwrap(),
            "cron(0 9 ? * 1,7 *)"
        );
        assert_eq!(eventbridge_cron("0 9 * * 7").unwrap(), "cron(0 9 ? * 1 *)");
        assert_eq!(
            eventbridge_cron("0 9 * * MON").unwrap(),
            "cron(0 9 ? * MON *)"
        );
        assert_eq!(
            eventbridge_cron("15 4 1 * *").unwrap(),
            "cron(15 4 1 * ? *)"
        );
        assert!(eventbridge_cron("0 9 1 * MON").is_err());
        assert!(eventbridge_cron("5 0 9 * * *").is_err());
        assert!(eventbridge_cron("0 9 * *").is_err());
    }

    #[test]
    fn messages_round_trip_with_their_type_tag() {
        let m = ExtractMessage::ExtractKey {
            extract: "campaigns".into(),
            tick_id: "campaigns@20261203T030000Z".into(),
            key: "spring".into(),
        };
        let json = m.to_json();
        assert!(json.contains(r#""type":"ExtractKey""#), "{json}");
        assert_eq!(serde_json::from_str::<ExtractMessage>(&json).unwrap(), m);
    }
}
