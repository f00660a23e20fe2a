//! The ingestor on its own, on the local backend: the local bucket's notifications become NEW
//! records and `FileRegistered` events; a key no dataset owns is registered to be rejected; a
//! notification delivered twice registers once.

use choreo_domain::{Event, FileState, UNMATCHED_DATASET};
use choreo_ports::{FileQuery, OutgoingMessage};
use choreo_runtime::testkit::{StageRig, dataset};

#[tokio::test(start_paused = true)]
async fn notified_objects_are_registered_once_and_announced() {
    let mut rig = StageRig::open(vec![dataset("sales")], |_| {});
    let (objects, input) = (rig.ports().objects, rig.config().buckets.input.clone());
    objects
        .put(&input, "sales/a.csv", b"id,amount\n1,2\n".to_vec())
        .await
        .unwrap();
    objects
        .put(&input, "elsewhere/b.csv", b"x\n".to_vec())
        .await
        .unwrap();
    // The first notification, kept to be delivered again later.
    let ingest = rig.queue(&rig.config().queues.ingest);
    let first = ingest.peek(1).await.unwrap().remove(0);
    rig.start(choreo_ingestor::SPEC);

    let validate = rig.config().queues.validate.clone();
    let registered = rig
        .until("two registrations", || async {
            let seen = rig.published(&validate).await;
            if seen.len() >= 2 {
                Ok(seen)
            } else {
                Err(format!("{seen:?}"))
            }
        })
        .await;
    let all = rig.state().list_all(FileQuery::default()).await.unwrap();
    assert_eq!(all.len(), 2, "{all:?}");
    let by_key = |k: &str| all.iter().find(|r| r.key == k).unwrap().clone();
    let (sales, other) = (by_key("sales/a.csv"), by_key("elsewhere/b.csv"));
    assert_eq!(
        (sales.state, sales.dataset.as_str()),
        (FileState::New, "sales")
    );
    assert_eq!(other.dataset, UNMATCHED_DATASET);
    assert!(other.reason.is_some(), "the validator will say why");
    assert!(
        sales.pin.is_some(),
        "the version that was notified is pinned"
    );
    assert!(
        registered
            .iter()
            .all(|e| matches!(e, Event::FileRegistered { .. }))
    );

    // The same notification again: no second record; an event, if any, under the first's id.
    ingest
        .send(
            OutgoingMessage {
                body: first.body.clone(),
                attributes: first.attributes.clone(),
            },
            std::time::Duration::ZERO,
        )
        .await
        .unwrap();
    rig.until("the duplicate consumed", || async {
        match ingest.depth().await.unwrap() {
            d if d.visible + d.in_flight == 0 => Ok(()),
            d => Err(format!("{d:?}")),
        }
    })
    .await;
    assert_eq!(
        rig.state()
            .list_all(FileQuery::default())
            .await
            .unwrap()
            .len(),
        2
    );
    let ids: std::collections::HashMap<String, String> = rig
        .published_envelopes(&validate)
        .await
        .into_iter()
        .map(|e| {
            let Event::FileRegistered { file_id, .. } = &e.event else {
                panic!("{e:?}")
            };
            (e.id.clone(), file_id.to_string())
        })
        .collect();
    assert_eq!(ids.len(), 2, "one event id per file: {ids:?}");
    rig.stop().await;
}
