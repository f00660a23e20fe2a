//! [`StateStore`]'s contract.

use crate::{BatchOutcome, FileQuery, StateStore};
use choreo_domain::{Batch, BatchState, FileId};
use chrono::Utc;

fn batch(id: &str, at_offset_ms: i64) -> Batch {
    let at = Utc::now() + chrono::Duration::milliseconds(at_offset_ms);
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

/// The batch half of [`StateStore`]'s contract, on an empty store: batches are created once, listed
/// by state oldest first, and updated only from the state and the version they were read at.
pub async fn batch_store_contract(s: &dyn StateStore) {
    let b2 = batch("b-2", 10);
    let b1 = batch("b-1", 0);
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
        s.update_batch(&mut batch("b-9", 0), BatchState::Crawling)
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
    // Batches are not files.
    let files = s.list(&FileQuery::default()).await.unwrap();
    assert!(files.items.is_empty());
    assert!(s.counts().await.unwrap().is_empty());
}
