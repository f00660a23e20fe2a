//! Calls that leave together: each caller hands its item to one task, which gathers the items that
//! arrive within a short window into one call (SNS's `PublishBatch`, a page of the audit trail) and
//! tells each caller its own outcome through the item. Several calls may be on their way at once;
//! while they all are, the next items gather.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};

/// How a batch is gathered.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Gathering {
    /// How long a batch that is not full waits for company after its first item.
    pub window: Duration,
    /// The most items one call takes.
    pub max_items: usize,
    /// The most bytes (by the caller's measure) one call takes; an item that would pass it waits
    /// for the next batch.
    pub max_bytes: usize,
    /// Calls on their way at once.
    pub in_flight: usize,
}

/// Gathers `rx`'s items into batches and hands each to `send` on a task of its own, until every
/// sender is gone.
pub(crate) async fn drain<T, F, Fut>(
    mut rx: mpsc::UnboundedReceiver<T>,
    how: Gathering,
    size: fn(&T) -> usize,
    send: F,
) where
    T: Send + 'static,
    F: Fn(Vec<T>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(how.in_flight));
    let mut next: Option<T> = None;
    loop {
        let first = match next.take() {
            Some(item) => item,
            None => match rx.recv().await {
                Some(item) => item,
                None => return,
            },
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = size(&first);
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + how.window;
        while batch.len() < how.max_items {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(item)) if bytes + size(&item) > how.max_bytes => {
                    next = Some(item);
                    break;
                }
                Ok(Some(item)) => {
                    bytes += size(&item);
                    batch.push(item);
                }
                Ok(None) | Err(_) => break,
            }
        }
        let call = send(batch);
        tokio::spawn(async move {
            call.await;
            drop(slot);
        });
    }
}
