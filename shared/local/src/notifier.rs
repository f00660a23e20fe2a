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
use std::path::Path;
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

impl ScanState {
    /// Objects notified (by this process or, the database said, another): no longer pending.
    fn remember(&mut self, notified: Vec<ObjectMeta>) {
        for meta in notified {
            self.seen.remove(&meta.key);
            self.notified
                .entry(meta.key)
                .or_default()
                .insert(meta.version);
        }
    }
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
                    "versionId": meta.version,
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

    /// Pins the bytes each key holds now (see [`LocalObjectStore::pin_sync`]): a notification names
    /// the pinned version, so the bytes a record is about are kept whatever happens to the key.
    /// `None` for a key that holds no file now, or that the store refuses (hidden, escaping).
    async fn pin(&self, keys: impl Iterator<Item = String>) -> Vec<Option<ObjectMeta>> {
        let keys: Vec<String> = keys.collect();
        if keys.is_empty() {
            return Vec::new();
        }
        let (objects, bucket) = (self.objects.clone(), self.bucket.clone());
        tokio::task::spawn_blocking(move || {
            keys.iter()
                .map(|k| {
                    objects.pin_sync(&bucket, k).unwrap_or_else(|e| {
                        tracing::warn!(bucket = %bucket, key = %k, error = %e, "PinFailed: not notified");
                        None
                    })
                })
                .collect()
        })
        .await
        .unwrap_or_default()
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
        // Pin what is about to be notified; a file that changed since the listing waits for the next
        // scan under its new version.
        let mut pinned = Vec::with_capacity(ready.len());
        for (meta, now) in ready
            .iter()
            .zip(self.pin(ready.iter().map(|m| m.key.clone())).await)
        {
            match now {
                Some(now) if now.version == meta.version => pinned.push(now),
                Some(now) => {
                    state.seen.insert(now.key, now.version);
                    result.pending += 1;
                }
                None => {}
            }
        }
        let ready = pinned;

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
                    let mut delete = tx.prepare_cached(
                        "DELETE FROM notified WHERE bucket = ?1 AND key = ?2 AND version = ?3",
                    )?;
                    for (key, versions) in &prune {
                        for version in versions {
                            delete.execute(params![bucket, key, version])?;
                        }
                    }
                    Ok::<_, DbError>(sent)
                })
                .await?;
            result.sent = sent.len();
            state.remember(ready);
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

    /// Runs until `shutdown`: notifies each file as its writer closes it or renames it into the
    /// bucket (the operating system's file events), and scans for what events cannot show. Two
    /// scans an `interval` apart at the start notify the files already there (stable across both);
    /// after that, with events, a scan every [`SAFETY_SCAN`] catches what events missed (a file
    /// written through a mount that sends none, events lost to an overflow — these then need to look
    /// the same across two such scans), and a new folder or an overflow brings two quick scans
    /// again. Without events (no inotify), a scan every `interval`, as before there were any.
    pub(crate) async fn run(&self, interval: Duration, shutdown: CancellationToken) {
        let dir = self.objects.bucket_dir(&self.bucket);
        let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
        let watcher = watch(&dir, tx)
            .inspect_err(|e| {
                tracing::warn!(bucket = %self.bucket, error = %e, "NotifierWatchError: scanning only")
            })
            .ok();
        let calm = if watcher.is_some() {
            SAFETY_SCAN.max(interval)
        } else {
            interval
        };
        let mut quick_scans = 2u32;
        let mut next_scan = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(next_scan) => {
                    if let Err(e) = self.scan_once().await {
                        tracing::warn!(bucket = %self.bucket, error = %e, "scanning the input bucket failed");
                    }
                    quick_scans = quick_scans.saturating_sub(1);
                    let wait = if quick_scans > 0 { interval } else { calm };
                    next_scan = tokio::time::Instant::now() + wait;
                }
                Some(first) = events.recv() => {
                    let mut batch = vec![first];
                    while let Ok(more) = events.try_recv() {
                        batch.push(more);
                    }
                    let rescan = self.on_events(&dir, batch).await.unwrap_or_else(|e| {
                        tracing::warn!(bucket = %self.bucket, error = %e, "notifying closed files failed; a scan will");
                        true
                    });
                    if rescan {
                        quick_scans = 2;
                        next_scan = next_scan.min(tokio::time::Instant::now() + interval);
                    }
                }
            }
        }
    }

    /// Notifies the files that `events` show complete; `Ok(true)` when a scan should look soon (a
    /// folder was moved in with its files, or events were lost). A folder made in place needs no
    /// scan: the watch covers it as it appears, and its files are closed after that.
    async fn on_events(
        &self,
        dir: &Path,
        events: Vec<notify::Result<notify::Event>>,
    ) -> Result<bool, PortError> {
        use notify::EventKind;
        use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
        let mut rescan = false;
        let mut keys = Vec::new();
        for event in events {
            let Ok(event) = event else {
                rescan = true;
                continue;
            };
            rescan |= event.need_rescan();
            let complete = match event.kind {
                EventKind::Access(AccessKind::Close(AccessMode::Write)) => event.paths.first(),
                EventKind::Modify(ModifyKind::Name(RenameMode::To)) => event.paths.first(),
                EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => event.paths.get(1),
                _ => None,
            };
            if let Some(key) = complete.and_then(|p| key_of(dir, p)) {
                keys.push(key);
            }
        }
        let mut ready = Vec::with_capacity(keys.len());
        for (key, pinned) in keys.iter().zip(self.pin(keys.iter().cloned()).await) {
            match pinned {
                Some(meta) => ready.push(meta),
                // A folder renamed in, or a file gone already: the scan sorts it out.
                None => rescan |= self.objects.bucket_dir(&self.bucket).join(key).is_dir(),
            }
        }
        if ready.is_empty() {
            return Ok(rescan);
        }
        let (bucket, queue) = (self.bucket.clone(), self.queue.clone());
        let to_send = ready.clone();
        let sent = self
            .db
            .write("notify", &self.bucket, move |tx| {
                let now = now_ms();
                let mut sent = 0;
                for meta in &to_send {
                    sent += usize::from(notify_in(tx, &bucket, &queue, meta, now)?);
                }
                Ok(sent)
            })
            .await?;
        self.state.lock().await.remember(ready);
        if sent > 0 {
            self.wakers.wake(&self.queue);
        }
        Ok(rescan)
    }
}

/// How often the bucket is scanned while file events arrive: a safety net.
const SAFETY_SCAN: Duration = Duration::from_secs(30);

/// Watches `dir` and its sub-folders (new ones as they appear) for files closed after writing and
/// renames into it; events go to `tx`. Dropping the watcher stops it.
fn watch(
    dir: &Path,
    tx: tokio::sync::mpsc::UnboundedSender<notify::Result<notify::Event>>,
) -> notify::Result<notify::RecommendedWatcher> {
    use notify::{EventKindMask, RecursiveMode, Watcher};
    let config = notify::Config::default().with_event_kinds(
        EventKindMask::CREATE | EventKindMask::MODIFY_NAME | EventKindMask::ACCESS_CLOSE,
    );
    let mut watcher = notify::RecommendedWatcher::new(
        move |event| {
            let _ = tx.send(event);
        },
        config,
    )?;
    watcher.watch(dir, RecursiveMode::Recursive)?;
    Ok(watcher)
}

/// The key of a file under the bucket's directory, `/`-separated; `None` outside it or for a
/// hidden name (another program's temporary file).
fn key_of(dir: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(dir).ok()?;
    let mut parts = Vec::new();
    for c in rel.components() {
        let part = c.as_os_str().to_str()?;
        if part.starts_with('.') {
            return None;
        }
        parts.push(part);
    }
    (!parts.is_empty()).then(|| parts.join("/"))
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

    /// Notifications on the ingest queue, waiting up to `wait` for the first.
    async fn bodies_within(b: &crate::LocalBackend, wait: Duration) -> Vec<serde_json::Value> {
        let q = b.queue(&b.config().queues.ingest);
        let got = q.receive(10, wait, Duration::from_secs(30)).await.unwrap();
        for m in &got {
            q.delete(&m.receipt).await.unwrap();
        }
        got.iter()
            .map(|m| serde_json::from_str(&m.body).unwrap())
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_file_written_in_place_is_notified_when_its_writer_closes_it() {
        use std::io::Write;
        let (_dir, b) = backend();
        let input = b.config().buckets.input.clone();
        let dir = b.objects().bucket_dir(&input);
        let shutdown = tokio_util::sync::CancellationToken::new();
        let running = tokio::spawn({
            let (b, s) = (b.clone(), shutdown.clone());
            async move { b.run_notifier(s).await }
        });
        tokio::time::sleep(Duration::from_millis(600)).await; // past the two starting scans

        // A slow writer: half a file, a pause longer than two scan intervals, the rest.
        std::fs::create_dir_all(dir.join("daily")).unwrap();
        let mut file = std::fs::File::create(dir.join("daily/slow.csv")).unwrap();
        file.write_all(b"x,y\n1,").unwrap();
        file.flush().unwrap();
        assert!(
            bodies_within(&b, Duration::from_millis(800))
                .await
                .is_empty(),
            "nothing while the writer holds it open"
        );
        file.write_all(b"2\n").unwrap();
        drop(file);
        let got = bodies_within(&b, Duration::from_secs(2)).await;
        assert_eq!(got.len(), 1, "{got:?}");
        let object = &got[0]["Records"][0]["s3"]["object"];
        assert_eq!(
            (object["key"].as_str(), object["size"].as_u64()),
            (Some("daily/slow.csv"), Some(8))
        );

        // A file renamed into the bucket is complete as it lands; a hidden one is not an object.
        let staged = b.objects().tmp_path("staged");
        std::fs::write(&staged, "a\n1\n").unwrap();
        std::fs::write(dir.join(".partial.csv"), "a\n").unwrap();
        std::fs::rename(&staged, dir.join("moved.csv")).unwrap();
        let got = bodies_within(&b, Duration::from_secs(2)).await;
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0]["Records"][0]["s3"]["object"]["key"], "moved.csv");
        assert!(
            bodies_within(&b, Duration::from_millis(300))
                .await
                .is_empty()
        );

        // A folder moved in whole: its files had no events here; the quick scans find them.
        let folder = b.objects().tmp_path("folder");
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("a.csv"), "a\n1\n").unwrap();
        std::fs::write(folder.join("b.csv"), "a\n2\n").unwrap();
        std::fs::rename(&folder, dir.join("batch")).unwrap();
        let mut keys = Vec::new();
        for _ in 0..3 {
            for got in bodies_within(&b, Duration::from_secs(1)).await {
                let key = &got["Records"][0]["s3"]["object"]["key"];
                keys.push(key.as_str().unwrap().to_string());
            }
        }
        keys.sort();
        assert_eq!(keys, ["batch/a.csv", "batch/b.csv"]);
        shutdown.cancel();
        running.await.unwrap();
    }

    #[test]
    fn keys_are_relative_and_hidden_names_are_not_objects() {
        let dir = std::path::Path::new("/data/buckets/in");
        assert_eq!(
            super::key_of(dir, &dir.join("a/b.csv")).as_deref(),
            Some("a/b.csv")
        );
        assert_eq!(super::key_of(dir, &dir.join(".tmp/b.csv")), None);
        assert_eq!(super::key_of(dir, &dir.join("a/.b.csv")), None);
        assert_eq!(
            super::key_of(dir, std::path::Path::new("/elsewhere/b.csv")),
            None
        );
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
        b.objects().delete(&input, "k.csv", None).await.unwrap();
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
