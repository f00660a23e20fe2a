//! [`AuditLog`]'s contract.

use crate::AuditLog;
use choreo_domain::{Alert, AlertKind, Envelope, Event, FileId, Stage};
use chrono::{DateTime, TimeZone, Utc};

/// Every case of [`AuditLog`]'s contract, on an empty log.
pub async fn audit_log_contract(a: &dyn AuditLog) {
    a_duplicate_event_is_recorded_and_counted_once(a).await;
    an_alert_is_stored_once_and_sent_once(a).await;
}

fn validated(dataset: &str) -> Envelope {
    Envelope::new(Event::FileValidated {
        file_id: FileId::from("f-1"),
        dataset: dataset.into(),
    })
}

/// Events are counted and listed once by id, per dataset and type (an event of no dataset under
/// `""`), and read back newest first as they were sent. A duplicate may be answered `true` (a
/// store that cannot tell at no cost) but never counts.
async fn a_duplicate_event_is_recorded_and_counted_once(a: &dyn AuditLog) {
    assert!(a.counts().await.unwrap().is_empty());
    assert!(a.recent(10).await.unwrap().is_empty());
    let e1 = validated("d");
    assert!(a.record(&e1).await.unwrap());
    a.record(&e1).await.unwrap();
    assert_eq!(
        a.counts().await.unwrap(),
        vec![("d".to_string(), "FileValidated".to_string(), 1)],
        "unchanged by the duplicate"
    );
    assert!(a.record(&validated("d")).await.unwrap());
    assert!(a.record(&validated("other")).await.unwrap());
    let poll = Envelope::new(Event::CrawlPoll {
        batch_id: "b-1".into(),
    });
    assert!(a.record(&poll).await.unwrap());
    let mut counts = a.counts().await.unwrap();
    counts.sort();
    assert_eq!(
        counts,
        vec![
            (String::new(), "CrawlPoll".to_string(), 1),
            ("d".to_string(), "FileValidated".to_string(), 2),
            ("other".to_string(), "FileValidated".to_string(), 1),
        ]
    );

    let recent = a.recent(2).await.unwrap();
    assert_eq!(recent.len(), 2);
    assert_eq!(recent[0].event_id, poll.id, "newest first");
    assert_eq!(recent[1].dataset, "other");
    let all = a.recent(10).await.unwrap();
    assert_eq!(all.len(), 4);
    assert!(all.windows(2).all(|w| w[0].recorded_at >= w[1].recorded_at));
    let first = all.last().unwrap();
    assert_eq!(first.event_id, e1.id);
    assert_eq!(first.event_type, "FileValidated");
    assert_eq!(first.dataset, "d");
    assert_eq!(first.occurred_at, e1.occurred_at);
    assert_eq!(first.body["event"]["type"], "FileValidated");
    assert_eq!(Envelope::from_json(&first.body.to_string()).unwrap(), e1);
    assert!(a.recent(0).await.unwrap().is_empty());
}

fn alert(id: &str, created_at: DateTime<Utc>) -> Alert {
    Alert {
        id: id.into(),
        kind: AlertKind::BatchFailed,
        dataset: "d".into(),
        stage: Stage::Crawler,
        keys: vec![format!("k/{id}/1"), format!("k/{id}/2")],
        reason: "crawl failed".into(),
        trace_id: Some("t".into()),
        link: "http://dash/#batch=b".into(),
        created_at,
        sent_at: None,
    }
}

/// Alerts are stored once by id, wait oldest first, are marked sent once (the first time stays),
/// and are listed newest first, sent or not.
async fn an_alert_is_stored_once_and_sent_once(a: &dyn AuditLog) {
    let minute = |m: u32| {
        Utc.with_ymd_and_hms(2026, 11, 26, 12, m, 0)
            .single()
            .expect("a time")
    };
    // `c` comes a quarter second after `a`, within the same second: order is by time, not by how
    // the time is written.
    let (a1, b2, c1) = (
        alert("a", minute(1)),
        alert("b", minute(2)),
        alert("c", minute(1) + chrono::Duration::milliseconds(250)),
    );
    assert!(a.pending_alerts(10).await.unwrap().is_empty());
    assert!(a.add_alert(&b2).await.unwrap());
    assert!(a.add_alert(&a1).await.unwrap());
    assert!(a.add_alert(&c1).await.unwrap());
    assert!(!a.add_alert(&a1).await.unwrap(), "duplicate");
    assert_eq!(
        a.pending_alerts(10).await.unwrap(),
        vec![a1.clone(), c1.clone(), b2.clone()],
        "oldest first"
    );
    assert_eq!(a.pending_alerts(1).await.unwrap(), vec![a1.clone()]);
    assert!(a.pending_alerts(0).await.unwrap().is_empty());

    let at = Utc::now();
    a.mark_alerts_sent(&["a".into(), "unknown".into()], at)
        .await
        .unwrap();
    // Marking again keeps the first time.
    a.mark_alerts_sent(&["a".into()], at + chrono::Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(
        a.pending_alerts(10).await.unwrap(),
        vec![c1.clone(), b2.clone()]
    );
    let all = a.alerts(10).await.unwrap();
    let seen: Vec<(&str, bool)> = all
        .iter()
        .map(|a| (a.id.as_str(), a.sent_at.is_some()))
        .collect();
    assert_eq!(
        seen,
        [("b", false), ("c", false), ("a", true)],
        "newest first"
    );
    assert_eq!(
        all[2].sent_at.map(|t| t.timestamp_millis()),
        Some(at.timestamp_millis())
    );
    assert_eq!(
        Alert {
            sent_at: None,
            ..all[2].clone()
        },
        a1,
        "stored as it was added"
    );
    assert_eq!(a.alerts(1).await.unwrap(), vec![b2]);
}
