//! The validator on its own, on the local backend and tokio's paused clock: its verdicts, the outbox
//! case, and retries until a record appears or the message is dead-lettered.

use choreo_domain::{Config, Event, FileId, FileRecord, FileState};
use choreo_runtime::testkit::{StageRig, dataset};
use std::time::Duration;

fn registered(f: &FileRecord) -> Event {
    Event::FileRegistered {
        file_id: f.id.clone(),
        dataset: f.dataset.clone(),
        bucket: f.bucket.clone(),
        key: f.key.clone(),
        size: f.size,
    }
}

fn rig(tweak: impl FnOnce(&mut Config)) -> StageRig {
    StageRig::open(vec![dataset("sales")], tweak)
}

async fn state_of(rig: &StageRig, id: &FileId, want: FileState) -> Result<FileRecord, String> {
    let r = rig.record(id).await;
    if r.state == want {
        Ok(r)
    } else {
        Err(format!("{}", r.state))
    }
}

#[tokio::test(start_paused = true)]
async fn valid_files_go_on_to_the_crawler_and_invalid_ones_to_quarantine_with_a_report() {
    let mut rig = rig(|_| {});
    rig.start(choreo_validator::SPEC);
    let good = rig
        .file("sales", "good.csv", "id,amount\n1,2.5\n2,3\n", false)
        .await;
    let bad = rig
        .file("sales", "bad.csv", "id,amount\nx,2.5\n", false)
        .await;
    rig.publish(registered(&good)).await;
    rig.publish(registered(&bad)).await;

    let good = rig
        .until("VALID", || state_of(&rig, &good.id, FileState::Valid))
        .await;
    let bad = rig
        .until("INVALID", || state_of(&rig, &bad.id, FileState::Invalid))
        .await;
    assert!(
        good.validation.as_deref().unwrap_or("").contains('2'),
        "{good:?}"
    );
    assert!(bad.reason.is_some());
    let q = &rig.config().queues;
    assert_eq!(
        rig.published(&q.crawl).await,
        vec![Event::FileValidated {
            file_id: good.id.clone(),
            dataset: "sales".into()
        }]
    );
    let rejected = rig.published(&q.quarantine).await;
    assert!(
        matches!(&rejected[..], [Event::FileRejected { file_id, .. }] if *file_id == bad.id),
        "{rejected:?}"
    );
    // The invalid file's full report is kept; the valid one's summary is on its record only.
    let work = &rig.config().buckets.work;
    let objects = rig.ports().objects;
    assert!(
        objects
            .head(work, &bad.report_key())
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        objects
            .head(work, &good.report_key())
            .await
            .unwrap()
            .is_none()
    );
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_file_already_valid_is_announced_again_not_validated_again() {
    let mut rig = rig(|_| {});
    // A validator that moved the file and died before publishing: the outbox case.
    let f = rig.file("sales", "a.csv", "id,amount\n1,2\n", true).await;
    let before = rig.record(&f.id).await;
    rig.start(choreo_validator::SPEC);
    rig.publish(registered(&f)).await;

    let crawl = rig.config().queues.crawl.clone();
    let announced = rig
        .until("the announcement", || async {
            let seen = rig.published(&crawl).await;
            if seen.is_empty() {
                Err("nothing".into())
            } else {
                Ok(seen)
            }
        })
        .await;
    assert_eq!(
        announced,
        vec![Event::FileValidated {
            file_id: f.id.clone(),
            dataset: "sales".into()
        }]
    );
    assert_eq!(
        rig.record(&f.id).await.history,
        before.history,
        "no second move"
    );
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_event_ahead_of_its_record_is_retried_until_the_record_appears() {
    let mut rig = rig(|c| c.queues.max_receive_count = 10);
    rig.start(choreo_validator::SPEC);
    // The event arrives before the record can be read (a replica's read behind the write).
    let new = rig.put("sales", "a.csv", "id,amount\n1,2\n").await;
    rig.publish(Event::FileRegistered {
        file_id: new.id.clone(),
        dataset: new.dataset.clone(),
        bucket: new.bucket.clone(),
        key: new.key.clone(),
        size: new.size,
    })
    .await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let id = new.id.clone();
    assert!(rig.state().get(&id).await.unwrap().is_none());
    rig.state().register(new).await.unwrap();

    rig.until("VALID", || state_of(&rig, &id, FileState::Valid))
        .await;
    let dlq = choreo_domain::config::Queues::dlq_of(&rig.config().queues.validate);
    assert!(rig.published(&dlq).await.is_empty(), "not dead-lettered");
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_event_whose_record_never_appears_is_dead_lettered_after_its_receives() {
    let mut rig = rig(|c| c.queues.max_receive_count = 3);
    rig.start(choreo_validator::SPEC);
    let ghost = FileId::from("f-never-registered");
    rig.publish(Event::FileRegistered {
        file_id: ghost.clone(),
        dataset: "sales".into(),
        bucket: rig.config().buckets.input.clone(),
        key: "sales/ghost.csv".into(),
        size: 1,
    })
    .await;
    let dlq = choreo_domain::config::Queues::dlq_of(&rig.config().queues.validate);
    let dead = rig
        .until("the dead letter", || async {
            match rig.published(&dlq).await.pop() {
                Some(e) => Ok(e),
                None => Err("not yet".into()),
            }
        })
        .await;
    assert!(matches!(dead, Event::FileRegistered { file_id, .. } if file_id == ghost));
    assert!(
        rig.published(&rig.config().queues.validate)
            .await
            .is_empty()
    );
    rig.stop().await;
}
