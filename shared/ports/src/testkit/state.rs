//! [`StateStore`]'s contract.
//!
//! Each case keeps to its own files (ids and a dataset of its own), leases and batches, so that the
//! cases run one after another on one store. Two need the store without files: the batches
//! (batches are not files) and the listing (which counts every file); they run first.

use crate::{
    BatchOutcome, FileQuery, LeaseInfo, LeaseOutcome, Page, Registered, StateStore,
    TransitionOutcome,
};
use choreo_domain::{
    Batch, BatchState, FileId, FileRecord, FileState, NewFile, Pin, Stage, SweepMark, Transition,
};
use chrono::{DateTime, Utc};
use std::time::Duration;

/// Every case of [`StateStore`]'s contract, on an empty store.
pub async fn state_store_contract(s: &dyn StateStore) {
    batches_are_updated_only_from_the_state_and_version_read(s).await;
    files_are_listed_in_id_order_a_page_at_a_time(s).await;
    registering_twice_returns_the_existing_record(s).await;
    a_transition_applies_once_with_its_history(s).await;
    transitions_mirror_apply_to(s).await;
    a_batch_of_transitions_applies_each_on_its_own_condition_in_order(s).await;
    a_sweep_note_holds_only_while_the_file_stays_put(s).await;
    leases_are_exclusive_until_released(s).await;
    an_expired_lease_is_taken_over(s).await;
}

/// A new file `id` of `dataset`, as the ingestor registers one (for adapters' own tests too).
pub fn new_file(id: &str, dataset: &str) -> NewFile {
    NewFile {
        id: FileId::from(id),
        dataset: dataset.into(),
        bucket: "choreo-input".into(),
        key: format!("{dataset}/{id}.csv"),
        size: 42,
        version: "v1".into(),
        pin: None,
        reason: None,
        trace_id: Some("trace-1".into()),
        traceparent: Some("00-trace-span-01".into()),
    }
}

/// The validator's move of `id` from NEW to VALID.
pub fn validate(id: &str) -> Transition {
    Transition::new(
        FileId::from(id),
        Stage::Validator,
        FileState::New,
        FileState::Valid,
    )
    .expect("the validator moves NEW to VALID")
    .validation("valid: 3 rows")
}

fn ids(page: &Page<FileRecord>) -> Vec<String> {
    page.items.iter().map(|r| r.id.to_string()).collect()
}

fn batch(id: &str, at: DateTime<Utc>) -> Batch {
    Batch {
        files: vec![FileId::from("f-1")],
        created_at: at,
        updated_at: at,
        ..Batch::new(
            id.into(),
            "d",
            "d-crawler".into(),
            "builtin".into(),
            BatchState::Crawling,
            Vec::new(),
        )
    }
}

/// Batches are created once, listed by state oldest first, and updated only from the state and the
/// version they were read at. Needs a store without files: batches are not files.
async fn batches_are_updated_only_from_the_state_and_version_read(s: &dyn StateStore) {
    let now = Utc::now();
    let b2 = batch("b-2", now + chrono::Duration::milliseconds(10));
    let b1 = batch("b-1", now);
    assert!(s.create_batch(&b2).await.unwrap());
    assert!(s.create_batch(&b1).await.unwrap());
    assert!(!s.create_batch(&b1).await.unwrap(), "created once");
    assert_eq!(s.get_batch("b-1").await.unwrap(), Some(b1.clone()));
    let crawling: Vec<_> = s
        .batches_in(BatchState::Crawling)
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.id)
        .collect();
    assert_eq!(crawling, ["b-1", "b-2"], "oldest first");

    // Two handlers read b-1 at once; the first to write wins, in the same state or another.
    let (mut first, mut second) = (b1.clone(), b1.clone());
    first.crawl_started = true;
    assert_eq!(
        s.update_batch(&mut first, BatchState::Crawling)
            .await
            .unwrap(),
        BatchOutcome::Applied
    );
    assert_eq!(first.version, 1, "the caller's copy follows the stored one");
    assert_eq!(s.get_batch("b-1").await.unwrap(), Some(first.clone()));
    second.crawl_started_at = Some(Utc::now());
    assert_eq!(
        s.update_batch(&mut second, BatchState::Crawling)
            .await
            .unwrap(),
        BatchOutcome::Conflict(Some(Box::new(first.clone()))),
        "read before the first write: its version is stale"
    );
    assert_eq!(second.version, 0, "a conflict leaves the copy as it was");

    // The winner goes on from its copy.
    let mut next = first.clone();
    next.state = BatchState::Cataloged;
    assert_eq!(
        s.update_batch(&mut next, BatchState::Crawling)
            .await
            .unwrap(),
        BatchOutcome::Applied
    );
    assert_eq!(s.get_batch("b-1").await.unwrap(), Some(next.clone()));
    let mut moved_on = first.clone();
    moved_on.state = BatchState::Failed;
    assert_eq!(
        s.update_batch(&mut moved_on, BatchState::Crawling)
            .await
            .unwrap(),
        BatchOutcome::Conflict(Some(Box::new(next.clone()))),
        "not in the expected state any more"
    );
    assert_eq!(
        s.update_batch(&mut batch("b-9", now), BatchState::Crawling)
            .await
            .unwrap(),
        BatchOutcome::Conflict(None)
    );
    assert_eq!(s.get_batch("b-9").await.unwrap(), None, "no update creates");
    assert_eq!(
        s.batches_in(BatchState::Cataloged).await.unwrap(),
        vec![next]
    );
    assert_eq!(s.batches_in(BatchState::Crawling).await.unwrap(), vec![b2]);

    // Oldest first to the nanosecond: two batches created within one millisecond, the later one
    // with the smaller id.
    let ms = DateTime::from_timestamp_millis(now.timestamp_millis()).expect("a time");
    let later = Batch {
        state: BatchState::Transforming,
        ..batch("b-a", ms + chrono::Duration::microseconds(600))
    };
    let earlier = Batch {
        state: BatchState::Transforming,
        ..batch("b-z", ms + chrono::Duration::microseconds(200))
    };
    assert!(s.create_batch(&later).await.unwrap());
    assert!(s.create_batch(&earlier).await.unwrap());
    assert_eq!(
        s.batches_in(BatchState::Transforming).await.unwrap(),
        vec![earlier, later]
    );

    // Batches are not files.
    let files = s.list(&FileQuery::default()).await.unwrap();
    assert!(files.items.is_empty());
    assert!(s.counts().await.unwrap().is_empty());
}

/// Twelve files over two datasets, six of them VALID. Listed by dataset and state, by either, or by
/// neither, always in id order, `limit` at a time; a dataset's filter is exact. Needs a store
/// without files: it lists and counts them all.
async fn files_are_listed_in_id_order_a_page_at_a_time(s: &dyn StateStore) {
    for i in 0..12 {
        let dataset = if i % 2 == 0 { "even" } else { "odd" };
        s.register(new_file(&format!("f-{i:02}"), dataset))
            .await
            .unwrap();
    }
    for i in [2, 3, 4, 6, 8, 10] {
        s.transition(&validate(&format!("f-{i:02}"))).await.unwrap();
    }

    // Dataset and state, two at a time.
    let mut q = FileQuery {
        dataset: Some("even".into()),
        state: Some(FileState::Valid),
        limit: 2,
        after: None,
    };
    let mut seen = Vec::new();
    loop {
        let page = s.list(&q).await.unwrap();
        assert!(page.items.len() <= 2);
        assert!(
            page.items
                .iter()
                .all(|r| r.dataset == "even" && r.state == FileState::Valid)
        );
        seen.extend(ids(&page));
        match page.next {
            Some(n) => q.after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, ["f-02", "f-04", "f-06", "f-08", "f-10"]);

    // A dataset only: every state.
    let even = s
        .list(&FileQuery {
            dataset: Some("even".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&even), ["f-00", "f-02", "f-04", "f-06", "f-08", "f-10"]);
    assert_eq!(even.next, None);
    let first = s
        .list(&FileQuery {
            dataset: Some("odd".into()),
            limit: 3,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&first), ["f-01", "f-03", "f-05"]);
    assert_eq!(first.next.as_deref(), Some("f-05"));
    assert_eq!(first.items[1].state, FileState::Valid);

    // A state only: every dataset.
    let valid = s
        .list(&FileQuery {
            state: Some(FileState::Valid),
            limit: 4,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&valid), ["f-02", "f-03", "f-04", "f-06"]);
    assert_eq!(valid.next.as_deref(), Some("f-06"));

    // Neither: everything, in id order, a page at a time.
    let mut q = FileQuery {
        limit: 5,
        ..Default::default()
    };
    let mut seen = Vec::new();
    loop {
        let page = s.list(&q).await.unwrap();
        assert!(page.items.len() <= 5);
        seen.extend(ids(&page));
        match page.next {
            Some(n) => q.after = Some(n),
            None => break,
        }
    }
    let all: Vec<String> = (0..12).map(|i| format!("f-{i:02}")).collect();
    assert_eq!(seen, all);
    let followed = s
        .list_all(FileQuery {
            limit: 5,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        followed
            .iter()
            .map(|r| r.id.to_string())
            .collect::<Vec<_>>(),
        all
    );

    // Another dataset whose name starts like this one stays out of its range.
    s.register(new_file("f-00x", "even-more")).await.unwrap();
    let even_new = s
        .list(&FileQuery {
            dataset: Some("even".into()),
            state: Some(FileState::New),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&even_new), ["f-00"]);

    let mut counts = s.counts().await.unwrap();
    counts.sort();
    assert_eq!(
        counts,
        vec![
            ("even".to_string(), FileState::New, 1),
            ("even".to_string(), FileState::Valid, 5),
            ("even-more".to_string(), FileState::New, 1),
            ("odd".to_string(), FileState::New, 5),
            ("odd".to_string(), FileState::Valid, 1),
        ]
    );
}

/// A registration is a put-if-absent: the second returns the first record unchanged, pin included.
async fn registering_twice_returns_the_existing_record(s: &dyn StateStore) {
    for (id, pin) in [
        ("reg-1", Pin::VersionId("3HL4kqtJlcpXroDTDmJ".into())),
        (
            "reg-2",
            Pin::ETag("\"9b2cf535f27731c974343645a3985328\"".into()),
        ),
    ] {
        let file = NewFile {
            pin: Some(pin),
            ..new_file(id, "reg")
        };
        let created = match s.register(file.clone()).await.unwrap() {
            Registered::Created(r) => r,
            other => panic!("{other:?}"),
        };
        assert_eq!(created.state, FileState::New);
        assert_eq!(created.history.len(), 1);
        assert_eq!(created.history[0].from, None);
        assert_eq!(created.pin, file.pin);
        let again = NewFile { size: 99, ..file };
        match s.register(again).await.unwrap() {
            Registered::Exists(r) => assert_eq!(r, created),
            other => panic!("{other:?}"),
        }
        assert_eq!(s.get(&FileId::from(id)).await.unwrap(), Some(created));
    }
    assert_eq!(s.get(&FileId::from("reg-404")).await.unwrap(), None);
}

/// A transition applies only from its `from` state, its history entry in the same write; a second
/// attempt is a `Conflict` carrying the record as it stands.
async fn a_transition_applies_once_with_its_history(s: &dyn StateStore) {
    s.register(new_file("once-1", "once")).await.unwrap();
    let t = validate("once-1").trace_id(Some("trace-2".into()));
    let applied = match s.transition(&t).await.unwrap() {
        TransitionOutcome::Applied(r) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(applied.state, FileState::Valid);
    assert_eq!(applied.validation.as_deref(), Some("valid: 3 rows"));
    assert_eq!(applied.history.len(), 2);
    let h = &applied.history[1];
    assert_eq!(
        (h.from, h.to, h.stage),
        (Some(FileState::New), FileState::Valid, Stage::Validator)
    );
    assert_eq!(h.trace_id.as_deref(), Some("trace-2"));
    assert_eq!(h.at, applied.updated_at);
    match s.transition(&t).await.unwrap() {
        TransitionOutcome::Conflict(current) => assert_eq!(current, applied),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.get(&FileId::from("once-1")).await.unwrap(), Some(applied));
    assert_eq!(
        s.transition(&validate("once-404")).await.unwrap(),
        TransitionOutcome::NotFound
    );
}

/// What a store writes is what [`Transition::apply_to`] computes: reasons kept or cleared, batch
/// ids set, the history grown by one entry per move.
async fn transitions_mirror_apply_to(s: &dyn StateStore) {
    let Registered::Created(mut expected) =
        s.register(new_file("mirror-1", "mirror")).await.unwrap()
    else {
        panic!("registered twice")
    };
    let id = FileId::from("mirror-1");
    let steps = [
        validate("mirror-1").reason("looked fine"),
        // To FAILED without a reason: the previous reason stays; the batch id is set.
        Transition::new(
            id.clone(),
            Stage::Crawler,
            FileState::Valid,
            FileState::Failed,
        )
        .unwrap()
        .batch("b-1"),
        // Any other move without a reason clears it.
        Transition::new(
            id.clone(),
            Stage::Operator,
            FileState::Failed,
            FileState::Valid,
        )
        .unwrap(),
        Transition::new(
            id.clone(),
            Stage::Crawler,
            FileState::Valid,
            FileState::Failed,
        )
        .unwrap()
        .reason("crawl failed")
        .batch("b-2"),
    ];
    for t in steps {
        let TransitionOutcome::Applied(got) = s.transition(&t).await.unwrap() else {
            panic!("{t:?} did not apply")
        };
        t.apply_to(&mut expected, got.updated_at);
        assert_eq!(got, expected, "after {:?} -> {:?}", t.from, t.to);
    }
    assert_eq!(expected.history.len(), 5);
    assert_eq!(expected.reason.as_deref(), Some("crawl failed"));
    assert_eq!(expected.batch_id.as_deref(), Some("b-2"));
    assert_eq!(expected.failed_from(), Some(FileState::Valid));
    assert_eq!(s.get(&id).await.unwrap(), Some(expected));
}

/// `transition_all` answers each transition as `transition` would, in order.
async fn a_batch_of_transitions_applies_each_on_its_own_condition_in_order(s: &dyn StateStore) {
    for id in ["all-1", "all-2", "all-3"] {
        s.register(new_file(id, "all")).await.unwrap();
    }
    s.transition(&validate("all-2")).await.unwrap();
    let ts = [
        validate("all-1"),
        validate("all-2"),
        validate("all-404"),
        validate("all-3"),
    ];
    let outcomes = s.transition_all(&ts).await.unwrap();
    let shape: Vec<&str> = outcomes
        .iter()
        .map(|o| match o {
            TransitionOutcome::Applied(_) => "applied",
            TransitionOutcome::Conflict(_) => "conflict",
            TransitionOutcome::NotFound => "not found",
        })
        .collect();
    assert_eq!(shape, ["applied", "conflict", "not found", "applied"]);
    for id in ["all-1", "all-2", "all-3"] {
        let r = s.get(&FileId::from(id)).await.unwrap().unwrap();
        assert_eq!((r.state, r.history.len()), (FileState::Valid, 2), "{id}");
    }
    assert!(s.transition_all(&[]).await.unwrap().is_empty());
}

/// The sweep's note is written only while the file is where the sweep saw it, is listed with the
/// file, and is cleared by its next move.
async fn a_sweep_note_holds_only_while_the_file_stays_put(s: &dyn StateStore) {
    let id = FileId::from("sweep-1");
    s.register(new_file("sweep-1", "sweep")).await.unwrap();
    let mark = SweepMark {
        state: FileState::New,
        republished: 1,
        last_at: Utc::now(),
        stuck: false,
    };
    assert!(!s.mark_sweep(&id, 2, &mark).await.unwrap(), "stale history");
    let valid = SweepMark {
        state: FileState::Valid,
        ..mark.clone()
    };
    assert!(!s.mark_sweep(&id, 1, &valid).await.unwrap(), "other state");
    assert!(
        !s.mark_sweep(&FileId::from("sweep-404"), 1, &mark)
            .await
            .unwrap(),
        "no file"
    );
    assert_eq!(s.get(&FileId::from("sweep-404")).await.unwrap(), None);
    assert_eq!(s.get(&id).await.unwrap().unwrap().sweep, None);

    assert!(s.mark_sweep(&id, 1, &mark).await.unwrap());
    let r = s.get(&id).await.unwrap().unwrap();
    assert_eq!(
        r.sweep.as_ref().map(|m| (m.state, m.republished)),
        Some((FileState::New, 1))
    );
    let listed = s
        .list(&FileQuery {
            dataset: Some("sweep".into()),
            state: Some(FileState::New),
            ..FileQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&listed), ["sweep-1"]);
    assert_eq!(listed.items[0].sweep, r.sweep, "listed with its note");
    let t = Transition::new(
        id.clone(),
        Stage::Validator,
        FileState::New,
        FileState::Valid,
    )
    .unwrap();
    let TransitionOutcome::Applied(moved) = s.transition(&t).await.unwrap() else {
        panic!("not applied");
    };
    assert_eq!(moved.sweep, None, "a move clears the note");
    assert_eq!(s.get(&id).await.unwrap().unwrap().sweep, None);
}

/// A lease is its holder's alone: renewed by the holder, released by the holder only. A TTL far
/// longer than the case, so that no assertion depends on timing.
async fn leases_are_exclusive_until_released(s: &dyn StateStore) {
    let ttl = Duration::from_secs(60);
    assert_eq!(s.lease("crawl:d").await.unwrap(), None, "never taken");
    let LeaseOutcome::Acquired { expires_at: first } =
        s.acquire_lease("crawl:d", "a", ttl).await.unwrap()
    else {
        panic!("free lease refused")
    };
    assert!(first > Utc::now());
    assert_eq!(
        s.lease("crawl:d").await.unwrap(),
        Some(LeaseInfo {
            holder: "a".into(),
            expires_at: first
        })
    );
    assert_eq!(
        s.acquire_lease("crawl:d", "b", ttl).await.unwrap(),
        LeaseOutcome::Held {
            holder: "a".into(),
            expires_at: first
        }
    );
    // The holder renews: a later expiry (leases count in milliseconds).
    tokio::time::sleep(Duration::from_millis(5)).await;
    let LeaseOutcome::Acquired {
        expires_at: renewed,
    } = s.acquire_lease("crawl:d", "a", ttl).await.unwrap()
    else {
        panic!("renewal refused")
    };
    assert!(renewed > first);
    assert_eq!(
        s.lease("crawl:d").await.unwrap().map(|l| l.expires_at),
        Some(renewed)
    );
    // A release by someone else does nothing.
    s.release_lease("crawl:d", "b").await.unwrap();
    assert!(matches!(
        s.acquire_lease("crawl:d", "b", ttl).await.unwrap(),
        LeaseOutcome::Held { holder, .. } if holder == "a"
    ));
    // The holder's frees it for anyone.
    s.release_lease("crawl:d", "a").await.unwrap();
    assert_eq!(s.lease("crawl:d").await.unwrap(), None, "released");
    assert!(matches!(
        s.acquire_lease("crawl:d", "c", ttl).await.unwrap(),
        LeaseOutcome::Acquired { .. }
    ));
    // Leases are independent of each other.
    assert!(matches!(
        s.acquire_lease("crawl:e", "a", ttl).await.unwrap(),
        LeaseOutcome::Acquired { .. }
    ));
    s.release_lease("never-taken", "a").await.unwrap();
    assert_eq!(s.lease("never-taken").await.unwrap(), None);
}

/// Once expired, a lease is anyone's; until then it is read as it stands, its expiry in the past.
/// The old holder's release does not free the new holder's lease.
async fn an_expired_lease_is_taken_over(s: &dyn StateStore) {
    let short = Duration::from_millis(300);
    let LeaseOutcome::Acquired { expires_at } =
        s.acquire_lease("pending:d", "a", short).await.unwrap()
    else {
        panic!("free lease refused")
    };
    tokio::time::sleep(short + Duration::from_millis(100)).await;
    let lapsed = s
        .lease("pending:d")
        .await
        .unwrap()
        .expect("an expired lease is kept");
    assert_eq!(
        lapsed,
        LeaseInfo {
            holder: "a".into(),
            expires_at
        }
    );
    assert!(lapsed.expires_at < Utc::now());

    let ttl = Duration::from_secs(60);
    assert!(matches!(
        s.acquire_lease("pending:d", "b", ttl).await.unwrap(),
        LeaseOutcome::Acquired { .. }
    ));
    assert!(matches!(
        s.acquire_lease("pending:d", "a", ttl).await.unwrap(),
        LeaseOutcome::Held { holder, .. } if holder == "b"
    ));
    s.release_lease("pending:d", "a").await.unwrap();
    assert!(matches!(
        s.acquire_lease("pending:d", "a", ttl).await.unwrap(),
        LeaseOutcome::Held { holder, .. } if holder == "b"
    ));
    s.release_lease("pending:d", "b").await.unwrap();
    assert!(matches!(
        s.acquire_lease("pending:d", "a", ttl).await.unwrap(),
        LeaseOutcome::Acquired { .. }
    ));
}
