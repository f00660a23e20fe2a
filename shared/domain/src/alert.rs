//! Alerts: one human-readable message per failure, for the on-call engineer.
//!
//! The auditor stores an alert before sending it, keyed by the failure it is about (the failure
//! event's id, or the stuck file and its state), so a redelivered event never alerts twice. What waits
//! to be sent goes out together at each delivery: one message each, or one digest when many wait.

use crate::state::Stage;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// What an alert is about: the failure event it was raised for, or the sweep's or the extractor's
/// finding.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr, strum::Display,
)]
pub enum AlertKind {
    /// The validator rejected a file (a `FileRejected` event).
    FileRejected,
    /// A batch failed at its crawl or its job run (a `BatchFailed` event).
    BatchFailed,
    /// The sweep found a file that stayed in its state though its message was sent again.
    FileStuck,
    /// A key's extract failed.
    ExtractFailed,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// One failure, as told to a person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// What the alert is about, once: `event:<failure event id>` or `stuck:<file id>:<entries>`.
    pub id: String,
    pub kind: AlertKind,
    pub dataset: String,
    /// The stage that failed (or the one a stuck file waits for).
    pub stage: Stage,
    /// The object keys concerned (one for a file; a batch's files).
    pub keys: Vec<String>,
    pub reason: String,
    pub trace_id: Option<String>,
    /// Where the dashboard shows it.
    pub link: String,
    pub created_at: DateTime<Utc>,
    /// When it went out; `None` while it waits.
    pub sent_at: Option<DateTime<Utc>>,
}

/// An e-mail's worth: subject and plain-text body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub subject: String,
    pub body: String,
}

/// SNS refuses subjects over 100 characters.
const MAX_SUBJECT: usize = 100;
/// Keys listed in one alert before "and N more".
const MAX_KEYS: usize = 10;

impl Alert {
    /// The message for this alert alone.
    pub fn message(&self) -> Message {
        let what = match self.keys.as_slice() {
            [one] => one.clone(),
            keys => format!("{} files", keys.len()),
        };
        Message {
            subject: subject(&format!(
                "[choreo] {} in {}: {} ({})",
                self.kind, self.stage, self.dataset, what
            )),
            body: self.details(),
        }
    }

    /// Several alerts folded into one message, so that a burst is one e-mail, not a storm.
    pub fn digest(alerts: &[Alert]) -> Message {
        let datasets: std::collections::BTreeSet<&str> =
            alerts.iter().map(|a| a.dataset.as_str()).collect();
        let mut body = format!(
            "{} failures since the last alert, in {}.\n",
            alerts.len(),
            datasets.into_iter().collect::<Vec<_>>().join(", ")
        );
        for (i, a) in alerts.iter().enumerate() {
            let _ = write!(body, "\n#{} ", i + 1);
            body.push_str(&a.details());
        }
        Message {
            subject: subject(&format!("[choreo] {} failures", alerts.len())),
            body,
        }
    }

    fn details(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "{} at stage {}", self.kind, self.stage);
        let _ = writeln!(s, "dataset:  {}", self.dataset);
        for key in self.keys.iter().take(MAX_KEYS) {
            let _ = writeln!(s, "key:      {key}");
        }
        if self.keys.len() > MAX_KEYS {
            let _ = writeln!(s, "          and {} more", self.keys.len() - MAX_KEYS);
        }
        let _ = writeln!(s, "reason:   {}", self.reason);
        let _ = writeln!(s, "trace id: {}", self.trace_id.as_deref().unwrap_or("-"));
        let _ = writeln!(s, "when:     {}", self.created_at.to_rfc3339());
        let _ = writeln!(s, "details:  {}", self.link);
        s
    }
}

fn subject(s: &str) -> String {
    if s.chars().count() <= MAX_SUBJECT {
        return s.to_string();
    }
    let mut cut: String = s.chars().take(MAX_SUBJECT - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(n: usize) -> Alert {
        Alert {
            id: format!("event:{n}"),
            kind: AlertKind::FileRejected,
            dataset: "orders".into(),
            stage: Stage::Validator,
            keys: vec![format!("orders/2026-11-{n:02}.csv")],
            reason: "row 3, field amount: \"x\" is not a number".into(),
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
            link: "http://dash/#file=abc".into(),
            created_at: crate::clock::now(),
            sent_at: None,
        }
    }

    #[test]
    fn a_message_names_dataset_key_stage_reason_trace_and_link() {
        let m = alert(1).message();
        assert_eq!(
            m.subject,
            "[choreo] FileRejected in validator: orders (orders/2026-11-01.csv)"
        );
        for part in [
            "dataset:  orders",
            "key:      orders/2026-11-01.csv",
            "stage validator",
            "is not a number",
            "trace id: 4bf92f3577b34da6a3ce929d0e0e4736",
            "details:  http://dash/#file=abc",
        ] {
            assert!(m.body.contains(part), "{part} missing from\n{}", m.body);
        }
    }

    #[test]
    fn a_digest_lists_every_alert_and_long_subjects_are_cut() {
        let alerts: Vec<Alert> = (1..=5).map(alert).collect();
        let d = Alert::digest(&alerts);
        assert_eq!(d.subject, "[choreo] 5 failures");
        assert_eq!(d.body.matches("key:      orders/").count(), 5);
        let mut long = alert(1);
        long.dataset = "d".repeat(200);
        assert_eq!(long.message().subject.chars().count(), MAX_SUBJECT);
        let mut batch = alert(2);
        batch.keys = (0..25).map(|i| format!("k{i}")).collect();
        let m = batch.message();
        assert!(m.subject.ends_with("(25 files)"));
        assert!(m.body.contains("and 15 more"));
    }
}
