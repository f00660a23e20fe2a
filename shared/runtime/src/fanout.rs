//! A batch's per-file work, several at a time.
//!
//! Catalogued, started and ended a batch at a time, files still move one conditional write each:
//! independent writes that a store answers faster together than one after another (the local
//! backend commits waiting writes in one group, DynamoDB serves them in parallel). So a batch's
//! writes go out [`PER_BATCH`] at a time, their outcomes kept in the files' order, and its files'
//! transitions [`CHUNK`] to a `transition_all` call (one write on the local backend).

use choreo_domain::{FileId, Transition};
use choreo_ports::{PortError, StateStore, TransitionOutcome};
use futures_util::stream::{self, StreamExt};
use std::future::Future;
use std::sync::Arc;

/// How many of a batch's writes are in flight at once.
pub const PER_BATCH: usize = 64;

/// How many files one `transition_all` call moves, and how many such calls are in flight.
pub const CHUNK: usize = 64;
pub const CHUNKS_IN_FLIGHT: usize = 4;

/// Moves a batch's files: `ts` in chunks through [`StateStore::transition_all`], a few chunks at
/// once; the outcomes in `ts`'s order, each with its transition's file. Each applied move emits
/// its `FileTransitioned`.
pub async fn transition_all(
    state: &Arc<dyn StateStore>,
    ts: Vec<Transition>,
) -> Result<Vec<(FileId, TransitionOutcome)>, PortError> {
    let chunks: Vec<Vec<Transition>> = ts.chunks(CHUNK).map(<[Transition]>::to_vec).collect();
    let store = Arc::clone(state);
    let outcomes = try_in_order(chunks, CHUNKS_IN_FLIGHT, move |chunk| {
        let store = Arc::clone(&store);
        async move {
            let outcomes = store.transition_all(&chunk).await?;
            for (t, outcome) in chunk.iter().zip(&outcomes) {
                crate::transition::observe(t, outcome);
            }
            Ok::<_, PortError>(chunk.into_iter().map(|t| t.file).zip(outcomes))
        }
    })
    .await?;
    Ok(outcomes.into_iter().flatten().collect())
}

/// `f` over `items`, at most `limit` at a time; the outcomes in the items' order. The first error
/// is returned once every started call ended (the others may have applied: each is a conditional
/// write its retry finds done).
pub async fn try_in_order<I, T, E, F, Fut>(items: I, limit: usize, f: F) -> Result<Vec<T>, E>
where
    I: IntoIterator,
    F: FnMut(I::Item) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let outcomes: Vec<Result<T, E>> = stream::iter(items)
        .map(f)
        .buffered(limit.max(1))
        .collect()
        .await;
    outcomes.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn outcomes_keep_their_order_and_concurrency_is_bounded() {
        let running = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let out: Result<Vec<u64>, ()> = try_in_order(0..20u64, 4, |i| {
            let (running, peak) = (&running, &peak);
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20 - i)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(i * 2)
            }
        })
        .await;
        assert_eq!(out.unwrap(), (0..20).map(|i| i * 2).collect::<Vec<_>>());
        assert_eq!(peak.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn an_error_is_returned() {
        let out: Result<Vec<u32>, String> = try_in_order(0..5u32, 2, |i| async move {
            if i == 3 {
                Err(format!("file {i}"))
            } else {
                Ok(i)
            }
        })
        .await;
        assert_eq!(out.unwrap_err(), "file 3");
    }
}
