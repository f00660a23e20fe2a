//! The auditor on its own, on the local backend and tokio's paused clock: the stuck-file sweep
//! publishes a lost event again with its first id, and flags the file with one alert when that does
//! not help.

use choreo_domain::{AlertKind, Event, FileState};
use choreo_runtime::testkit::{StageRig, dataset};
use std::time::Duration;

#[tokio::test(start_paused = true)]
async fn a_file_whose_event_was_lost_is_published_again_then_flagged_once() {
    let limit = Duration::from_secs(120);
    let mut rig = StageRig::open(vec![dataset("sales")], |c| {
        let sweep = &mut c.operations.sweep;
        sweep.interval_secs = 20;
        sweep.max_republish = 2;
        sweep.limits_secs.insert("NEW".into(), limit.as_secs());
    });
    // Registered, but its FileRegistered never went out: nothing would ever validate it.
    let f = rig.file("sales", "a.csv", "id,amount\n1,2\n", false).await;
    rig.start(choreo_auditor::SPEC);
    let validate = rig.config().queues.validate.clone();

    // Not before the state's limit.
    tokio::time::sleep(limit - Duration::from_secs(1)).await;
    assert!(rig.published(&validate).await.is_empty());

    let flagged = rig
        .until("the file flagged stuck", || async {
            let r = rig.record(&f.id).await;
            match &r.sweep {
                Some(mark) if mark.stuck => Ok(mark.clone()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    assert_eq!(flagged.state, FileState::New);
    assert_eq!(flagged.republished, 2);
    let again = rig.published(&validate).await;
    assert_eq!(again.len(), 2, "published again twice: {again:?}");
    assert!(again.iter().all(|e| matches!(
        e,
        Event::FileRegistered { file_id, .. } if *file_id == f.id
    )));
    // Both copies carry the id the event was first published with: the audit trail counts it once.
    let ids: Vec<String> = rig
        .published_envelopes(&validate)
        .await
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids[0], ids[1]);

    // More sweeps raise no second alert.
    tokio::time::sleep(limit * 3).await;
    let alerts = rig.ports().audit.alerts(100).await.unwrap();
    let stuck: Vec<_> = alerts
        .iter()
        .filter(|a| a.kind == AlertKind::FileStuck)
        .collect();
    assert_eq!(stuck.len(), 1, "{alerts:?}");
    assert_eq!(rig.published(&validate).await.len(), 2);
    rig.stop().await;
}
