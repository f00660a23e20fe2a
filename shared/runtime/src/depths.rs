//! Queue depths read at most once per interval, however many pages and scrapes ask.
//!
//! On SQS a depth is a `GetQueueAttributes` call, billed like any request: a dashboard left open
//! and a metrics scrape every few seconds, each over every queue and its dead-letter queue, would
//! cost more than the pipeline moving a million files a month. The auditor reads depths through
//! [`cached`], so they cost one call per queue per interval whatever reads them.

use async_trait::async_trait;
use choreo_ports::{
    OutgoingMessage, PeekedMessage, PortError, Queue, QueueDepth, QueueLookup, ReceivedMessage,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `queues` with each queue's depth kept for `ttl` once read (zero: not kept). Everything else
/// goes straight through.
pub fn cached(queues: Arc<dyn QueueLookup>, ttl: Duration) -> Arc<dyn QueueLookup> {
    if ttl.is_zero() {
        return queues;
    }
    Arc::new(CachedQueues {
        inner: queues,
        ttl,
        depths: Arc::default(),
    })
}

type Depths = Arc<Mutex<HashMap<String, (Instant, QueueDepth)>>>;

struct CachedQueues {
    inner: Arc<dyn QueueLookup>,
    ttl: Duration,
    depths: Depths,
}

impl QueueLookup for CachedQueues {
    fn queue(&self, name: &str) -> Arc<dyn Queue> {
        Arc::new(CachedDepth {
            inner: self.inner.queue(name),
            name: name.to_string(),
            ttl: self.ttl,
            depths: self.depths.clone(),
        })
    }
}

struct CachedDepth {
    inner: Arc<dyn Queue>,
    name: String,
    ttl: Duration,
    depths: Depths,
}

#[async_trait]
impl Queue for CachedDepth {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn messaging_system(&self) -> &'static str {
        self.inner.messaging_system()
    }

    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, PortError> {
        self.inner.receive(max, wait, visibility).await
    }

    async fn delete(&self, receipt: &str) -> Result<(), PortError> {
        self.inner.delete(receipt).await
    }

    async fn delete_batch(
        &self,
        receipts: &[String],
    ) -> Result<Vec<(String, PortError)>, PortError> {
        self.inner.delete_batch(receipts).await
    }

    async fn change_visibility(
        &self,
        receipt: &str,
        visibility: Duration,
    ) -> Result<(), PortError> {
        self.inner.change_visibility(receipt, visibility).await
    }

    async fn send(&self, message: OutgoingMessage, delay: Duration) -> Result<(), PortError> {
        self.inner.send(message, delay).await
    }

    /// The depth read less than `ttl` ago, or a fresh one. Two readers at the same moment may both
    /// read: the cache bounds the rate, not the concurrency.
    async fn depth(&self) -> Result<QueueDepth, PortError> {
        let kept = self
            .depths
            .lock()
            .expect("depths lock")
            .get(&self.name)
            .copied();
        if let Some((at, depth)) = kept
            && at.elapsed() < self.ttl
        {
            return Ok(depth);
        }
        let depth = self.inner.depth().await?;
        self.depths
            .lock()
            .expect("depths lock")
            .insert(self.name.clone(), (Instant::now(), depth));
        Ok(depth)
    }

    async fn oldest_message_age(&self) -> Result<Option<Duration>, PortError> {
        self.inner.oldest_message_age().await
    }

    async fn peek(&self, max: usize) -> Result<Vec<PeekedMessage>, PortError> {
        self.inner.peek(max).await
    }

    /// Purges, and forgets the depth it makes stale.
    async fn purge(&self) -> Result<u64, PortError> {
        self.depths.lock().expect("depths lock").remove(&self.name);
        self.inner.purge().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A queue that counts its depth reads and reports that count as its depth.
    #[derive(Default)]
    struct Counting(AtomicU64);

    #[async_trait]
    impl Queue for Counting {
        fn name(&self) -> &str {
            "q"
        }
        async fn receive(
            &self,
            _: usize,
            _: Duration,
            _: Duration,
        ) -> Result<Vec<ReceivedMessage>, PortError> {
            Ok(Vec::new())
        }
        async fn delete(&self, _: &str) -> Result<(), PortError> {
            Ok(())
        }
        async fn change_visibility(&self, _: &str, _: Duration) -> Result<(), PortError> {
            Ok(())
        }
        async fn send(&self, _: OutgoingMessage, _: Duration) -> Result<(), PortError> {
            Ok(())
        }
        async fn depth(&self) -> Result<QueueDepth, PortError> {
            let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
            Ok(QueueDepth {
                visible: n,
                ..QueueDepth::default()
            })
        }
        async fn peek(&self, _: usize) -> Result<Vec<PeekedMessage>, PortError> {
            Ok(Vec::new())
        }
        async fn purge(&self) -> Result<u64, PortError> {
            Ok(0)
        }
    }

    #[tokio::test]
    async fn a_depth_is_read_once_per_interval_whoever_asks() {
        let queue = Arc::new(Counting::default());
        let q = queue.clone();
        let inner: Arc<dyn QueueLookup> = Arc::new(move |_: &str| q.clone() as Arc<dyn Queue>);
        let queues = cached(inner, Duration::from_secs(30));
        for _ in 0..5 {
            // A new handle each time, as a page refresh makes: the cache is the set's, not the handle's.
            assert_eq!(queues.queue("q").depth().await.unwrap().visible, 1);
        }
        // Past the interval, the next read asks again.
        let short = cached(
            Arc::new({
                let q = queue.clone();
                move |_: &str| q.clone() as Arc<dyn Queue>
            }),
            Duration::from_millis(20),
        );
        assert_eq!(short.queue("q").depth().await.unwrap().visible, 2);
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(short.queue("q").depth().await.unwrap().visible, 3);
        assert_eq!(queue.0.load(Ordering::SeqCst), 3);
    }
}
