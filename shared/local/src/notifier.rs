//! S3 event notifications for the input bucket's directory.
//!
//! Objects written through the object store are notified as the write completes ([`Announcer`]),
//! as S3 notifies an upload. Files written into the directory by other programs are found by a scan. A file is
//! notified once its size and modification time were the same in two scans in a row (a file still
//! being copied in keeps changing), with the body S3 sends to SQS. Which `(key, version)` pairs were
//! notified is recorded in the `notified` table in the same transaction as the ingest-queue message,
//! so a crash never loses or doubles a notification, and two processes scanning the same directory
//! never both send one. An in-memory copy of the table spares a query per file per scan. Rows of
//! objects that are gone are pruned, so the table holds what the bucket holds.

use crate::db::{Db, DbError, now_ms};
use crate::objects::LocalObjectStore;
use crate::queue::{Wakers, insert_message};
use choreo_ports::{ObjectMeta, ObjectStore, OutgoingMessage, PortError};
use chrono::SecondsFormat;
use rusqlite::params;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What one scan did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScanResult {
    /// Notifications sent.
    pub sent: usize,
    /// Objects seen but not yet stable (changed since the previous scan, or seen for the first time).
    pub pending: usize,
}

#[derive(Default)]
struct ScanState {
    /// Key → versions notified (by any process, as of the last look).
    notified: HashMap<String, HashSet<String>>,
    /// Key → version seen by the previous scan, for objects not notified yet.
    seen: HashMap<String, String>,
}

pub(crate) struct Notifier {
    db: Arc<Db>,
    wakers: Arc<Wakers>,
    objects: Arc<LocalObjectStore>,
    bucket: String,
    queue: String,
    state: tokio::sync::Mutex<ScanState>,
}

/// Records a `(key, version)` as notified and queues its notification, in the caller's
/// transaction; `false` when some process notified it already.
fn notify_in(
    tx: &rusqlite::Transaction<'_>,
    bucket: &str,
    queue: &str,
    meta: &ObjectMeta,
    now: i64,
) -> Result<bool, DbError> {
    let inserted = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO notified (bucket, key, version, notified_at)
         VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![bucket, meta.key, meta.version, now])?;
    if inserted == 1 {
        let message = OutgoingMessage {
            body: s3_notification(bucket, meta),
            attributes: Default::default(),
        };
        insert_message(tx, queue, &message, now, now)?;
    }
    Ok(inserted == 1)
}

/// Sends the notification of an object as its write completes, as S3 does: the object store calls
/// it after writing into the input bucket, so `choreo put` needs no scan to be seen.
pub(crate) struct Announcer {
    db: Arc<Db>,
    wakers: Arc<Wakers>,
    bucket: String,
    queue: String,
}

impl std::fmt::Debug for Announcer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Announcer")
            .field("bucket", &self.bucket)
            .field("queue", &self.queue)
            .finish()
    }
}

impl Announcer {
    pub(crate) fn new(db: Arc<Db>, wakers: Arc<Wakers>, bucket: &str, queue: &str) -> Self {
        Announcer {
            db,
            wakers,
            bucket: bucket.to_string(),
            queue: queue.to_string(),
        }
    }

    pub(crate) fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Notifies `meta` unless it was notified already (blocking: called from the object store's
    /// blocking task).
    pub(crate) fn announce(&self, meta: &ObjectMeta) -> Result<(), PortError> {
        let (bucket, queue, meta) = (self.bucket.clone(), self.queue.clone(), meta.clone());
        let sent = self.db.write_blocking("notify", &self.bucket, move |tx| {
            notify_in(tx, &bucket, &queue, &meta, now_ms())
        })?;
        if sent {
            self.wakers.wake(&self.queue);
        }
        Ok(())
    }
}

/// Encodes a key as S3 does in event notifications: `application/x-www-form-urlencoded`, so a space
/// is `+` and every byte outside `A-Z a-z 0-9 - _ . * /` is `%XX` (S3 leaves `/` as it is).
pub fn s3_key_encode(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for &b in key.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' | b'/' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The notification S3 sends to an SQS queue when `meta` is created in `bucket`.
pub fn s3_notification(bucket: &str, meta: &ObjectMeta) -> String {
    serde_json::json!({
        "Records": [{
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": "local",
            "eventTime": meta.last_modified.to_rfc3339_opts(SecondsFormat::Millis, true),
            "eventName": "ObjectCreated:Put",
            "s3": {
                "s3SchemaVersion": "1.0",
                "bucket": {"name": bucket, "arn": format!("arn:aws:s3:::{bucket}")},
                "object": {
                    "key": s3_key_encode(&meta.key),
                    "size": meta.size,
                    "eTag": meta.version,
                    "sequencer": meta.version,
                }
            }
        }]
    })
    .to_string()
}

impl Notifier {
    /// Builds the notifier, loading the notified pairs of `bucket` (a blocking read, done at open).
    pub(crate) fn new(
        db: Arc<Db>,
        wakers: Arc<Wakers>,
        objects: Arc<LocalObjectStore>,
        bucket: &str,
        queue: &str,
    ) -> Result<Notifier, PortError> {
        let mut notified: HashMap<String, HashSet<String>> = HashMap::new();
        let b = bucket.to_string();
        let rows = db.blocking("open", bucket, move |conn| {
            let mut stmt = conn.prepare("SELECT key, version FROM notified WHERE bucket = ?1")?;
            let rows = stmt
                .query_map(params![b], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })?;
        for (key, version) in rows {
            notified.entry(key).or_default().insert(version);
        }
        Ok(Notifier {
            db,
            wakers,
            objects,
            bucket: bucket.to_string(),
            queue: queue.to_string(),
            state: tokio::sync::Mutex::new(ScanState {
                notified,
                seen: HashMap::new(),
            }),
        })
    }

    pub(crate) async fn scan_once(&self) -> Result<ScanResult, PortError> {
        let mut state = self.state.lock().await;
        let listing = self.objects.list(&self.bucket, "").await?;
        let present: HashSet<&str> = listing.iter().map(|m| m.key.as_str()).collect();

        let mut result = ScanResult::default();
        let mut ready = Vec::new();
        for meta in &listing {
            let already = state
                .notified
                .get(&meta.key)
                .is_some_and(|v| v.contains(&meta.version));
            if already {
                state.seen.remove(&meta.key);
                continue;
            }
            if state.seen.get(&meta.key) == Some(&meta.version) {
                ready.push(meta.clone());
            } else {
                state.seen.insert(meta.key.clone(), meta.version.clone());
                result.pending += 1;
            }
        }
        state.seen.retain(|k, _| present.contains(k.as_str()));

        // Rows of objects that are gone; only the versions this process knows, so a version another
        // process notified meanwhile is never pruned.
        let gone: Vec<(String, Vec<String>)> = state
            .notified
            .iter()
            .filter(|(k, _)| !present.contains(k.as_str()))
            .map(|(k, v)| (k.clone(), v.iter().cloned().collect()))
            .collect();

        if !ready.is_empty() || !gone.is_empty() {
            let bucket = self.bucket.clone();
            let queue = self.queue.clone();
            let to_send = ready.clone();
            let prune = gone.clone();
            let sent = self
                .db
                .write("notify", &self.bucket, move |tx| {
                    let now = now_ms();
                    let mut sent = Vec::new();
                    for meta in &to_send {
                        if notify_in(tx, &bucket, &queue, meta, now)? {
                            sent.push(meta.key.clone());
                        }
                    }
                    for (key, versions) in &prune {
                        for version in versions {
                            tx.prepare_cached("DELETE FROM notified WHERE bucket = ?1 AND key = ?2 AND version = ?3")?
            .execute(
                                params![bucket, key, version],
                            )?;
                        }
                    }
                    Ok::<_, DbError>(sent)
                })
                .await?;
            result.sent = sent.len();
            for meta in ready {
                state.seen.remove(&meta.key);
                state
                    .notified
                    .entry(meta.key)
                    .or_default()
                    .insert(meta.version);
            }
            for (key, _) in gone {
                state.notified.remove(&key);
            }
            if result.sent > 0 {
                tracing::debug!(bucket = %self.bucket, sent = result.sent, "notified new objects");
                self.wakers.wake(&self.queue);
            }
        }
        Ok(result)
    }

    pub(crate) async fn run(&self, interval: Duration, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.scan_once().await {
                tracing::warn!(bucket = %self.bucket, error = %e, "scanning the input bucket failed");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::s3_key_encode;
    use crate::testutil::backend;
    use choreo_ports::ObjectStore;
    use std::time::Duration;

    async fn bodies(b: &crate::LocalBackend) -> Vec<serde_json::Value> {
        let q = b.queue(&b.config().queues.ingest);
        let got = q
            .receive(10, Duration::ZERO, Duration::from_secs(30))
            .await
            .unwrap();
        for m in &got {
            q.delete(&m.receipt).await.unwrap();
        }
        got.iter()
            .map(|m| serde_json::from_str(&m.body).unwrap())
            .collect()
    }

    #[test]
    fn keys_are_form_urlencoded() {
        assert_eq!(s3_key_encode("a b/ü.csv"), "a+b/%C3%BC.csv");
        assert_eq!(s3_key_encode("d/x=1&y+z.csv"), "d/x%3D1%26y%2Bz.csv");
    }

    #[tokio::test]
    async fn a_new_file_is_notified_once_when_stable() {
        let (_dir, b) = backend();
        let input = b.config().buckets.input.clone();
        let dir = b.objects().bucket_dir(&input);
        std::fs::create_dir_all(dir.join("a b")).unwrap();
        std::fs::write(dir.join("a b/ü.csv"), "x,y\n1,2\n").unwrap();
        std::fs::write(dir.join(".hidden.csv"), "x").unwrap();

        let first = b.scan_once().await.unwrap();
        assert_eq!(
            (first.sent, first.pending),
            (0, 1),
            "not yet known to be stable"
        );
        let second = b.scan_once().await.unwrap();
        assert_eq!((second.sent, second.pending), (1, 0));
        let third = b.scan_once().await.unwrap();
        assert_eq!((third.sent, third.pending), (0, 0), "notified once");

        let got = bodies(&b).await;
        assert_eq!(got.len(), 1);
        let rec = &got[0]["Records"][0];
        assert_eq!(rec["eventSource"], "aws:s3");
        assert_eq!(rec["eventName"], "ObjectCreated:Put");
        assert_eq!(rec["s3"]["bucket"]["name"], input.as_str());
        assert_eq!(rec["s3"]["bucket"]["arn"], format!("arn:aws:s3:::{input}"));
        assert_eq!(rec["s3"]["object"]["key"], "a+b/%C3%BC.csv");
        assert_eq!(rec["s3"]["object"]["size"], 8);
        let meta = b
            .objects()
            .head(&input, "a b/ü.csv")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rec["s3"]["object"]["eTag"], meta.version.as_str());
        assert!(bodies(&b).await.is_empty());
    }

    #[tokio::test]
    async fn a_changing_file_waits_and_a_rewrite_is_notified_again() {
        let (_dir, b) = backend();
        let input = b.config().buckets.input.clone();
        let path = b.objects().bucket_dir(&input).join("f.csv");
        std::fs::write(&path, "a").unwrap();
        b.scan_once().await.unwrap();
        std::fs::write(&path, "ab").unwrap();
        assert_eq!(
            b.scan_once().await.unwrap().sent,
            0,
            "changed since last scan"
        );
        assert_eq!(b.scan_once().await.unwrap().sent, 1);
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&path, "abc").unwrap();
        assert_eq!(b.scan_once().await.unwrap().sent, 0);
        assert_eq!(b.scan_once().await.unwrap().sent, 1, "a new version");
        let got = bodies(&b).await;
        let sizes: Vec<_> = got
            .iter()
            .map(|g| g["Records"][0]["s3"]["object"]["size"].as_u64().unwrap())
            .collect();
        assert_eq!(sizes.len(), 2);
        assert!(sizes.contains(&2) && sizes.contains(&3), "{sizes:?}");
    }

    #[tokio::test]
    async fn a_put_is_notified_at_once_and_never_again_by_a_scan() {
        let (_dir, b) = backend();
        let input = b.config().buckets.input.clone();
        b.objects()
            .put(&input, "daily/p.csv", b"x,y\n1,2\n".to_vec())
            .await
            .unwrap();
        let got = bodies(&b).await;
        assert_eq!(got.len(), 1, "notified as the put returned");
        assert_eq!(got[0]["Records"][0]["s3"]["object"]["key"], "daily/p.csv");
        for _ in 0..3 {
            assert_eq!(b.scan_once().await.unwrap().sent, 0);
        }
        assert!(bodies(&b).await.is_empty());
        // Other buckets are not notified.
        let work = b.config().buckets.work.clone();
        b.objects()
            .put(&work, "r.json", b"{}".to_vec())
            .await
            .unwrap();
        assert!(bodies(&b).await.is_empty());
    }

    #[tokio::test]
    async fn the_notified_set_survives_reopening() {
        let (_dir, b) = backend();
        let input = b.config().buckets.input.clone();
        let dir = b.objects().bucket_dir(&input);
        std::fs::write(dir.join("k.csv"), "1").unwrap();
        b.scan_once().await.unwrap();
        assert_eq!(b.scan_once().await.unwrap().sent, 1);
        let again = crate::LocalBackend::open(b.config()).unwrap();
        assert_eq!(again.scan_once().await.unwrap(), Default::default());
        assert_eq!(again.scan_once().await.unwrap().sent, 0);
        // Two notifiers that have both seen a file stable send it only once between them.
        std::fs::write(dir.join("k2.csv"), "2").unwrap();
        b.scan_once().await.unwrap();
        again.scan_once().await.unwrap();
        let sent = b.scan_once().await.unwrap().sent + again.scan_once().await.unwrap().sent;
        assert_eq!(sent, 1);
        // A deleted object's row is pruned.
        b.objects().delete(&input, "k.csv").await.unwrap();
        b.scan_once().await.unwrap();
        let rows: i64 = b
            .db_blocking(|c| {
                c.prepare_cached("SELECT COUNT(*) FROM notified WHERE key = 'k.csv'")?
                    .query_row([], |r| r.get(0))
            })
            .unwrap();
        assert_eq!(rows, 0);
    }

    #[tokio::test]
    async fn run_notifier_stops_on_shutdown() {
        let (_dir, b) = backend();
        let input = b.config().buckets.input.clone();
        b.objects()
            .put(&input, "r.csv", b"1".to_vec())
            .await
            .unwrap();
        let token = tokio_util::sync::CancellationToken::new();
        let runner = {
            let b = b.clone();
            let t = token.clone();
            tokio::spawn(async move { b.run_notifier(t).await })
        };
        let got = b
            .queue(&b.config().queues.ingest)
            .receive(1, Duration::from_secs(5), Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(got.len(), 1);
        token.cancel();
        tokio::time::timeout(Duration::from_secs(5), runner)
            .await
            .unwrap()
            .unwrap();
    }
}
