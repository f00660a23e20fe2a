//! The quarantine mover on its own, on the local backend: the validated version moves to the
//! failed bucket with its report, a newer upload of the key stays, and a redelivery moves nothing
//! twice.

use choreo_domain::{Event, FileRecord, FileState, Stage, Transition};
use choreo_runtime::testkit::{StageRig, dataset};

async fn rejected(rig: &StageRig, name: &str) -> FileRecord {
    let f = rig.file("sales", name, "id,amount\nx,1\n", false).await;
    let t = Transition::new(
        f.id.clone(),
        Stage::Validator,
        FileState::New,
        FileState::Invalid,
    )
    .unwrap()
    .reason("type_error: 1 row");
    rig.state().transition(&t).await.unwrap();
    rig.record(&f.id).await
}

fn event(f: &FileRecord) -> Event {
    Event::FileRejected {
        file_id: f.id.clone(),
        dataset: f.dataset.clone(),
        reason: f.reason.clone().unwrap_or_default(),
    }
}

#[tokio::test(start_paused = true)]
async fn the_validated_version_moves_to_the_failed_bucket_and_a_newer_upload_stays() {
    let mut rig = StageRig::open(vec![dataset("sales")], |_| {});
    let f = rejected(&rig, "a.csv").await;
    // The key is uploaded again after validation: another file, which must stay.
    let newer = rig.put("sales", "a.csv", "id,amount\n2,2\n").await;
    rig.start(choreo_quarantine::SPEC);
    rig.publish(event(&f)).await;

    let moved = rig
        .until("QUARANTINED", || async {
            let r = rig.record(&f.id).await;
            match r.state {
                FileState::Quarantined => Ok(r),
                s => Err(s.to_string()),
            }
        })
        .await;
    assert!(moved.reason.unwrap_or_default().contains("type_error"));
    let (objects, buckets) = (rig.ports().objects, rig.config().buckets.clone());
    let kept = objects
        .head(&buckets.failed, &f.quarantine_key())
        .await
        .unwrap()
        .expect("the invalid bytes are kept");
    assert_eq!(kept.size, f.size);
    assert!(
        objects
            .head(&buckets.failed, &f.quarantine_report_key())
            .await
            .unwrap()
            .is_some(),
        "the report is beside them"
    );
    let input = objects.head(&buckets.input, &f.key).await.unwrap().unwrap();
    assert_eq!(input.version, newer.version, "the newer upload stays");
    let announced: Vec<_> = rig
        .published(&rig.config().queues.audit)
        .await
        .into_iter()
        .filter(|e| matches!(e, Event::FileQuarantined { .. }))
        .collect();
    assert_eq!(announced.len(), 1, "{announced:?}");

    // A redelivered rejection finds the work done and announces it again, moving nothing.
    rig.publish(event(&f)).await;
    rig.until("the second announcement", || async {
        let n = rig
            .published(&rig.config().queues.audit)
            .await
            .into_iter()
            .filter(|e| matches!(e, Event::FileQuarantined { .. }))
            .count();
        if n == 2 { Ok(()) } else { Err(format!("{n}")) }
    })
    .await;
    assert_eq!(rig.record(&f.id).await.history.len(), moved.history.len());
    rig.stop().await;
}
