//! S3 event notifications for the input bucket's directory.
//!
//! Objects written through the object store are notified as the write completes ([`Announcer`]),
//! as S3 notifies an upload. Files written into the directory by other programs are notified as
//! their writers close them or rename them in (file events), or, found by a scan, once *quiet*: not
//! changed for `[local] quiet_secs` and — where the kernel can tell, through a read lease — open
//! for writing nowhere. A writer that pauses mid-row is still writing, so its partial file is never
//! taken. Each notification has the body S3 sends to SQS. An entry that is not an object (a
//! symbolic link, a FIFO, a name the pipeline does not take) is refused, once per version, with a
//! `KeyRefused` warning giving the reason, and never read. Which `(key, version)` pairs were
//! notified is recorded in the `notified` table in the same transaction as the ingest-queue message,
//! so a crash never loses or doubles a notification, and two processes scanning the same directory
//! never both send one. An in-memory copy of the table spares a query per file per scan. Rows of
//! objects that are gone are pruned, so the table holds what the bucket holds.

use crate::db::{Db, DbError, now_ms};
use crate::events::{BucketEventsError, BucketScanError, BucketWatchError, KeyRefused, PinFailed};
use crate::objects::{LocalObjectStore, Refused};
use crate::queue::{Wakers, insert_message};
use choreo_ports::{ObjectMeta, OutgoingMessage, PortError};
use choreo_telemetry::events::emit;
use chrono::SecondsFormat;
use rusqlite::params;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;

/// What one scan did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScanResult {
    /// Notifications sent.
    pub sent: usize,
    /// Entries seen but not settled yet: objects changed within the quiet period or open for
    /// writing, and refused entries not yet quiet (so not yet reported).
    pub pending: usize,
    /// Entries refused (reported) by this scan: links, FIFOs, names the pipeline does not take.
    pub refused: usize,
}

#[derive(Default)]
struct ScanState {
    /// Key → versions notified (by any process, as of the last look).
    notified: HashMap<String, HashSet<String>>,
    /// Key → the version scans last saw and since when, for entries not notified or refused yet.
    seen: HashMap<String, (String, Instant)>,
    /// Key → the version refused and reported, so that each is reported once.
    refused: HashMap<String, String>,
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

    /// Whether the entry `key` at `version`, last modified at `modified`, has been quiet for
    /// `quiet`: by its modification time, or, should that be in the future, by what scans saw.
    fn is_quiet(
        &mut self,
        key: &str,
        version: &str,
        modified: SystemTime,
        quiet: Duration,
    ) -> bool {
        let now = Instant::now();
        let since = match self.seen.get(key) {
            Some((v, since)) if v == version => *since,
            _ => {
                self.seen
                    .insert(key.to_string(), (version.to_string(), now));
                now
            }
        };
        let unchanged = SystemTime::now()
            .duration_since(modified)
            .unwrap_or_default();
        unchanged.max(now - since) >= quiet
    }

    /// Reports `refused` (a `KeyRefused` warning with the reason) unless this version was already:
    /// `true` when it was reported now.
    fn refuse(&mut self, bucket: &str, refused: &Refused) -> bool {
        if self.refused.get(&refused.key) == Some(&refused.version) {
            return false;
        }
        emit(KeyRefused {
            bucket,
            key: &refused.key,
            reason: &refused.reason,
        });
        self.seen.remove(&refused.key);
        self.refused
            .insert(refused.key.clone(), refused.version.clone());
        true
    }
}

/// Quiet files, sorted by [`BucketWatcher::not_being_written`].
#[derive(Default)]
struct Sorted {
    ready: Vec<ObjectMeta>,
    writing: usize,
    unreadable: Vec<Refused>,
}

pub(crate) struct BucketWatcher {
    db: Arc<Db>,
    wakers: Arc<Wakers>,
    objects: Arc<LocalObjectStore>,
    bucket: String,
    queue: String,
    /// How long a file found by a scan must be unchanged (and not open for writing) to be complete.
    quiet: Duration,
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

impl BucketWatcher {
    /// Builds the bucket watcher, loading the notified pairs of `bucket` (a blocking read, done at open).
    pub(crate) fn new(
        db: Arc<Db>,
        wakers: Arc<Wakers>,
        objects: Arc<LocalObjectStore>,
        bucket: &str,
        queue: &str,
        quiet: Duration,
    ) -> Result<BucketWatcher, PortError> {
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
        Ok(BucketWatcher {
            db,
            wakers,
            objects,
            bucket: bucket.to_string(),
            queue: queue.to_string(),
            quiet,
            state: tokio::sync::Mutex::new(ScanState {
                notified,
                ..Default::default()
            }),
        })
    }

    /// Pins the bytes each key holds now (see [`LocalObjectStore::pin_sync`]): a notification names
    /// the pinned version, so the bytes a record is about are kept whatever happens to the key.
    /// `None` for a key that holds no file now; an error for one the store refuses (a link, a key
    /// the pipeline does not take) or cannot pin.
    async fn pin(
        &self,
        keys: impl Iterator<Item = String>,
    ) -> Vec<Result<Option<ObjectMeta>, PortError>> {
        let keys: Vec<String> = keys.collect();
        if keys.is_empty() {
            return Vec::new();
        }
        let (objects, bucket) = (self.objects.clone(), self.bucket.clone());
        tokio::task::spawn_blocking(move || {
            keys.iter().map(|k| objects.pin_sync(&bucket, k)).collect()
        })
        .await
        .unwrap_or_default()
    }

    pub(crate) async fn scan_once(&self) -> Result<ScanResult, PortError> {
        let mut state = self.state.lock().await;
        let (objects, bucket) = (Arc::clone(&self.objects), self.bucket.clone());
        let (listing, refused) = tokio::task::spawn_blocking(move || objects.walk(&bucket, ""))
            .await
            .map_err(|e| PortError::transient("scan", &self.bucket, e))??;
        let present: HashSet<&str> = listing
            .iter()
            .map(|m| m.key.as_str())
            .chain(refused.iter().map(|r| r.key.as_str()))
            .collect();

        let mut result = ScanResult::default();
        let mut quiet = Vec::new();
        for meta in &listing {
            let already = state
                .notified
                .get(&meta.key)
                .is_some_and(|v| v.contains(&meta.version));
            if already {
                state.seen.remove(&meta.key);
            } else if state.is_quiet(
                &meta.key,
                &meta.version,
                meta.last_modified.into(),
                self.quiet,
            ) {
                quiet.push(meta.clone());
            } else {
                result.pending += 1;
            }
        }
        for r in &refused {
            // Reported once quiet, as an object would be notified: a hidden file renamed in at
            // once, as write-then-rename does, is never reported. Pending until then.
            if state.refused.get(&r.key) == Some(&r.version) {
                continue;
            }
            if state.is_quiet(&r.key, &r.version, r.last_modified.into(), self.quiet) {
                result.refused += usize::from(state.refuse(&self.bucket, r));
            } else {
                result.pending += 1;
            }
        }
        state.seen.retain(|k, _| present.contains(k.as_str()));
        state.refused.retain(|k, _| present.contains(k.as_str()));
        let Sorted {
            ready,
            writing,
            unreadable,
        } = self.not_being_written(quiet).await?;
        result.pending += writing;
        for r in &unreadable {
            result.refused += usize::from(state.refuse(&self.bucket, r));
        }
        // Pin what is about to be notified; a file that changed since the listing waits for the next
        // scan under its new version.
        let mut pinned = Vec::with_capacity(ready.len());
        for (meta, now) in ready
            .iter()
            .zip(self.pin(ready.iter().map(|m| m.key.clone())).await)
        {
            match now {
                Ok(Some(now)) if now.version == meta.version => pinned.push(now),
                Ok(Some(now)) => {
                    state.is_quiet(&now.key, &now.version, now.last_modified.into(), self.quiet);
                    result.pending += 1;
                }
                Ok(None) => {}
                Err(e) => {
                    emit(PinFailed {
                        bucket: &self.bucket,
                        key: &meta.key,
                        error: &e,
                    });
                }
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

    /// Sorts files quiet long enough: those no process holds open for writing (ready), how many
    /// one does, and those that cannot be read (refused: no stage could read them either).
    async fn not_being_written(&self, quiet: Vec<ObjectMeta>) -> Result<Sorted, PortError> {
        let dir = self.objects.bucket_dir(&self.bucket);
        tokio::task::spawn_blocking(move || {
            let mut sorted = Sorted::default();
            for meta in quiet {
                match crate::bucketfs::open_file(&dir, &meta.key) {
                    Ok(file) if crate::bucketfs::open_for_writing(&file) == Some(true) => {
                        sorted.writing += 1
                    }
                    Ok(_) => sorted.ready.push(meta),
                    // Gone since the listing: nothing to notify.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => sorted.unreadable.push(Refused {
                        reason: format!("cannot be read: {e}"),
                        key: meta.key,
                        version: meta.version,
                        last_modified: meta.last_modified,
                    }),
                }
            }
            sorted
        })
        .await
        .map_err(|e| PortError::transient("scan", &self.bucket, e))
    }

    /// Runs until `shutdown`: notifies each file as its writer closes it or renames it into the
    /// bucket (the operating system's file events), and scans for what events cannot show. A scan
    /// at the start notifies the files already there that are quiet; while files are pending, a
    /// scan every quiet period (at least `interval`) takes them as they become quiet; after that,
    /// with events, a scan every [`SAFETY_SCAN`] catches what events missed (a file written through
    /// a mount that sends none, events lost to an overflow), and a new folder or an overflow brings
    /// a scan after `interval`. Without events (no inotify), a scan every `interval`.
    pub(crate) async fn run(&self, interval: Duration, shutdown: CancellationToken) {
        let dir = self.objects.bucket_dir(&self.bucket);
        let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
        let watcher = watch(&dir, tx)
            .inspect_err(|e| {
                emit(BucketWatchError {
                    bucket: &self.bucket,
                    error: e,
                })
            })
            .ok();
        let calm = if watcher.is_some() {
            SAFETY_SCAN.max(interval)
        } else {
            interval
        };
        let mut next_scan = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(next_scan) => {
                    let pending = match self.scan_once().await {
                        Ok(r) => r.pending,
                        Err(e) => {
                            emit(BucketScanError { bucket: &self.bucket, error: &e });
                            1 // look again soon
                        }
                    };
                    let wait = if pending > 0 { self.quiet.clamp(interval, calm) } else { calm };
                    next_scan = tokio::time::Instant::now() + wait;
                }
                Some(first) = events.recv() => {
                    let mut batch = vec![first];
                    while let Ok(more) = events.try_recv() {
                        batch.push(more);
                    }
                    let rescan = self.on_events(&dir, batch).await.unwrap_or_else(|e| {
                        emit(BucketEventsError { bucket: &self.bucket, error: &e });
                        true
                    });
                    if rescan {
                        next_scan = next_scan.min(tokio::time::Instant::now() + interval);
                    }
                }
            }
        }
    }

    /// Notifies the files that `events` show complete; `Ok(true)` when a scan should look soon (a
    /// folder was made or moved in with its files, or events were lost).
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
            if let EventKind::Create(_) = event.kind
                && let Some(path) = event.paths.first()
                && std::fs::symlink_metadata(path)
                    .is_ok_and(|md| md.file_type().is_symlink() || md.is_dir())
            {
                // A link made in the bucket: refused now rather than at the next scan. A folder:
                // its watch is added as it appears, but a file written and closed in it before
                // that sends no event — a scan soon finds it, rather than the safety scan.
                rescan = true;
            }
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
                Ok(Some(meta)) => ready.push(meta),
                // A folder renamed in, or a file gone already: the scan sorts it out.
                Ok(None) => rescan |= self.objects.bucket_dir(&self.bucket).join(key).is_dir(),
                // Not an object (a link, a FIFO, a key the pipeline does not take): the scan
                // reports it with its reason.
                Err(_) => rescan = true,
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
    // A linked folder in the bucket is not watched: its target is not the bucket's (`ln -s /`
    // would otherwise watch the whole file system), and its files are refused anyway.
    let config = notify::Config::default()
        .with_event_kinds(
            EventKindMask::CREATE | EventKindMask::MODIFY_NAME | EventKindMask::ACCESS_CLOSE,
        )
        .with_follow_symlinks(false);
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

    /// Makes `path` look last written `secs` ago, as a file that has been quiet that long.
    fn backdate(path: &std::path::Path, secs: u64) {
        let file = std::fs::File::options().append(true).open(path).unwrap();
        file.set_modified(std::time::SystemTime::now() - Duration::from_secs(secs))
            .unwrap();
    }

    #[tokio::test]
    async fn a_file_found_by_a_scan_is_notified_once_quiet() {
        let (_dir, b) = backend();
        let input = b.config().buckets.input.clone();
        let dir = b.objects().bucket_dir(&input);
        std::fs::create_dir_all(dir.join("a b")).unwrap();
        std::fs::write(dir.join("a b/ü.csv"), "x,y\n1,2\n").unwrap();
        std::fs::write(dir.join(".hidden.csv"), "x").unwrap();

        let first = b.scan_once().await.unwrap();
        assert_eq!(
            (first.sent, first.pending, first.refused),
            (0, 2, 0),
            "written just now: within the quiet period"
        );
        backdate(&dir.join("a b/ü.csv"), 5);
        backdate(&dir.join(".hidden.csv"), 5);
        let second = b.scan_once().await.unwrap();
        assert_eq!((second.sent, second.pending, second.refused), (1, 0, 1));
        let third = b.scan_once().await.unwrap();
        assert_eq!(third, Default::default(), "notified once, refused once");

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
        backdate(&path, 60);
        assert_eq!(b.scan_once().await.unwrap().sent, 1, "quiet for a minute");
        std::fs::write(&path, "ab").unwrap();
        let changed = b.scan_once().await.unwrap();
        assert_eq!((changed.sent, changed.pending), (0, 1), "changed just now");
        backdate(&path, 5);
        assert_eq!(b.scan_once().await.unwrap().sent, 1, "a new version");
        let got = bodies(&b).await;
        let sizes: Vec<_> = got
            .iter()
            .map(|g| g["Records"][0]["s3"]["object"]["size"].as_u64().unwrap())
            .collect();
        assert_eq!(sizes, [1, 2]);
    }

    /// Issue 12, finding 3: a writer that pauses longer than the quiet period is still writing.
    #[tokio::test]
    async fn a_quiet_file_still_open_for_writing_is_not_complete() {
        use std::io::Write;
        let (_dir, b) = backend();
        let input = b.config().buckets.input.clone();
        let path = b.objects().bucket_dir(&input).join("slow.csv");
        let mut writer = std::fs::File::create(&path).unwrap();
        writer.write_all(b"x,y\n1,").unwrap();
        writer
            .set_modified(std::time::SystemTime::now() - Duration::from_secs(60))
            .unwrap();
        for _ in 0..3 {
            let r = b.scan_once().await.unwrap();
            assert_eq!((r.sent, r.pending), (0, 1), "open for writing");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        writer.write_all(b"2\n").unwrap();
        drop(writer);
        backdate(&path, 60);
        assert_eq!(b.scan_once().await.unwrap().sent, 1);
        let got = bodies(&b).await;
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0]["Records"][0]["s3"]["object"]["size"], 8,
            "the whole file"
        );
    }

    /// Issue 12, finding 3: a writer that pauses 1.5 s mid-row while the bucket watcher starts (its
    /// scans see the same partial file over and over) has its file notified once, whole.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_pausing_mid_row_is_notified_once_whole() {
        use std::io::Write;
        let (_dir, b) = backend();
        let input = b.config().buckets.input.clone();
        let path = b.objects().bucket_dir(&input).join("paused.csv");
        let mut writer = std::fs::File::create(&path).unwrap();
        writer.write_all(b"x,y\n1,").unwrap();
        let writing = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1500));
            writer.write_all(b"2\n3,4\n").unwrap();
        });
        let shutdown = tokio_util::sync::CancellationToken::new();
        let running = tokio::spawn({
            let (b, s) = (b.clone(), shutdown.clone());
            async move { b.watch_input_bucket(s).await }
        });
        writing.join().unwrap();
        let mut sizes = Vec::new();
        for _ in 0..4 {
            for got in bodies_within(&b, Duration::from_millis(500)).await {
                sizes.push(got["Records"][0]["s3"]["object"]["size"].as_u64().unwrap());
            }
        }
        shutdown.cancel();
        running.await.unwrap();
        assert_eq!(sizes, [12], "only the whole file, once");
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
            async move { b.watch_input_bucket(s).await }
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

        // A folder of finished files moved in whole: its files had no events here; the scan that
        // follows finds them.
        let folder = b.objects().tmp_path("folder");
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("a.csv"), "a\n1\n").unwrap();
        std::fs::write(folder.join("b.csv"), "a\n2\n").unwrap();
        backdate(&folder.join("a.csv"), 10);
        backdate(&folder.join("b.csv"), 10);
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

        // A folder made in place and a file written into it at once, maybe before the folder's
        // watch exists: found by the scan the folder's creation brings, once quiet — not left to
        // the safety scan half a minute later.
        std::fs::create_dir_all(dir.join("fresh/deeper")).unwrap();
        std::fs::write(dir.join("fresh/deeper/c.csv"), "a\n3\n").unwrap();
        let mut got = Vec::new();
        for _ in 0..20 {
            got.extend(bodies_within(&b, Duration::from_millis(500)).await);
            if !got.is_empty() {
                break;
            }
        }
        assert_eq!(got.len(), 1, "within the quiet period and a scan");
        assert_eq!(
            got[0]["Records"][0]["s3"]["object"]["key"],
            "fresh/deeper/c.csv"
        );
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
        backdate(&dir.join("k.csv"), 10);
        assert_eq!(b.scan_once().await.unwrap().sent, 1);
        let again = crate::LocalBackend::open(b.config()).unwrap();
        assert_eq!(again.scan_once().await.unwrap(), Default::default());
        assert_eq!(again.scan_once().await.unwrap().sent, 0);
        // Two bucket watchers that both find a file quiet send it only once between them.
        std::fs::write(dir.join("k2.csv"), "2").unwrap();
        backdate(&dir.join("k2.csv"), 10);
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
    async fn watch_input_bucket_stops_on_shutdown() {
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
            tokio::spawn(async move { b.watch_input_bucket(t).await })
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
