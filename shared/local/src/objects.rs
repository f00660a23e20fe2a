//! Buckets as directories: `data_dir/buckets/<bucket>/<key>`, with S3's whole-object semantics.
//!
//! Every write goes to a temporary file in `data_dir/tmp/`, is flushed (synced to disk when the
//! backend's durability is `power`), then renamed over the target, so a reader sees the old object or
//! the new one, never a part. A write into the input bucket is announced at once, as S3 sends its
//! event notification when an upload completes (see `watcher.rs`). An object's version is a
//! stamp of its modification time (ns) and size: a rewrite is a new version, as a new upload is in S3.
//!
//! Versions: the input bucket's files are written by other programs, in place or by rename, so the
//! store keeps the bytes the pipeline registered itself. Before a file is announced, its inode is
//! hard-linked under `data_dir/versions/<bucket>/` by key and version ([`LocalObjectStore::pin_sync`]);
//! a pinned read, copy or delete finds it there, so a rewrite of the key (a new file) never changes or
//! removes the one in flight. A link costs no space while the key still holds the same bytes.
//! Keys are relative paths with `/` separators, and only those the pipeline takes
//! ([`choreo_domain::key::check`]): a key that could escape its bucket (`..`, an absolute path, an
//! empty segment) is refused, and so is a hidden name (another program's temporary file), a
//! backslash or a control character, so a listing never offers a key a read would refuse. Buckets
//! hold regular files only: a key is resolved without following a symbolic link (`bucketfs.rs`), and
//! a listing reports links, FIFOs, devices and refused names apart, with the reason ([`Refused`]).

use crate::bucketfs;
use crate::watcher::Announcer;
use async_trait::async_trait;
use choreo_domain::Pin;
use choreo_ports::{ObjectMeta, ObjectReader, ObjectStore, PortError, PortErrorKind};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

/// The object store of the local backend.
#[derive(Debug, Clone)]
pub struct LocalObjectStore {
    buckets: PathBuf,
    tmp: PathBuf,
    /// Pinned versions: `<bucket>/<hash of key and version>`, hard links to registered bytes.
    versions: PathBuf,
    /// Whether a write is synced to disk before it returns (durability `power`); a rename is atomic
    /// either way, so a killed process never leaves half an object.
    sync: bool,
    /// Sends the notification of an object written into its bucket (the input bucket's).
    announcer: Option<Arc<Announcer>>,
}

fn io_error(op: &'static str, target: &str, e: io::Error) -> PortError {
    match e.kind() {
        io::ErrorKind::NotFound => PortError::new(PortErrorKind::NotFound, op, target, e),
        io::ErrorKind::PermissionDenied
        | io::ErrorKind::InvalidInput
        | io::ErrorKind::InvalidFilename
        | io::ErrorKind::IsADirectory
        | io::ErrorKind::NotADirectory
        | io::ErrorKind::DirectoryNotEmpty
        | io::ErrorKind::AlreadyExists
        | io::ErrorKind::ReadOnlyFilesystem => PortError::permanent(op, target, e),
        _ => PortError::transient(op, target, e),
    }
}

fn check_bucket(op: &'static str, bucket: &str) -> Result<(), PortError> {
    let ok = !bucket.is_empty()
        && !bucket.starts_with('.')
        && bucket
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(PortError::permanent(op, bucket, "invalid bucket name"))
    }
}

/// Checks that `key` is one the pipeline takes (which makes it a safe relative path).
pub(crate) fn check_key(op: &'static str, bucket: &str, key: &str) -> Result<(), PortError> {
    choreo_domain::key::check(key).map_err(|why| {
        PortError::permanent(
            op,
            format!("{bucket}/{key:?}"),
            format!("invalid key: {why}"),
        )
    })
}

/// An entry of a bucket's directory that is not an object, and why: the listing's by-product, for
/// the bucket watcher to report.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Refused {
    /// The entry's key (a folder's ends with `/`; a name that is not UTF-8 is shown lossily).
    pub key: String,
    /// The entry's own stamp (never its target's), so that a change is reported again.
    pub version: String,
    pub last_modified: DateTime<Utc>,
    pub reason: String,
}

/// The local stamp a pin names: locally a version id and an ETag are the same stamp.
fn stamp(pin: &Pin) -> &str {
    match pin {
        Pin::VersionId(v) | Pin::ETag(v) => v,
    }
}

/// A pinned operation whose bytes no longer exist.
fn version_gone(op: &'static str, bucket: &str, key: &str, version: &str) -> PortError {
    PortError::new(
        PortErrorKind::NotFound,
        op,
        format!("{bucket}/{key}"),
        format!("version {version} is gone: the key was rewritten or deleted since"),
    )
}

/// The stamp naming one version of a file: modification time in nanoseconds and size, in hex.
fn meta_of(key: String, md: &fs::Metadata) -> ObjectMeta {
    let mtime = md.modified().unwrap_or(UNIX_EPOCH);
    let since = mtime.duration_since(UNIX_EPOCH).unwrap_or_default();
    let ns = since.as_nanos();
    let version = format!("{ns:x}-{:x}", md.len());
    ObjectMeta {
        key,
        size: md.len(),
        pin: Some(Pin::VersionId(version.clone())),
        version,
        last_modified: DateTime::<Utc>::from(mtime),
    }
}

impl LocalObjectStore {
    /// A store over `data_dir/buckets/` (buckets are created by the backend, or by [`Self::create_bucket`]).
    pub(crate) fn new(data_dir: &Path) -> io::Result<Self> {
        let store = LocalObjectStore {
            buckets: data_dir.join("buckets"),
            tmp: data_dir.join("tmp"),
            versions: data_dir.join("versions"),
            sync: true,
            announcer: None,
        };
        fs::create_dir_all(&store.buckets)?;
        fs::create_dir_all(&store.tmp)?;
        fs::create_dir_all(&store.versions)?;
        Ok(store)
    }

    /// Syncs writes to disk before they return, or not (a rename is atomic either way).
    pub(crate) fn with_sync(mut self, sync: bool) -> Self {
        self.sync = sync;
        self
    }

    /// Announces every object written into `announcer`'s bucket through it.
    pub(crate) fn with_announcer(mut self, announcer: Arc<Announcer>) -> Self {
        self.announcer = Some(announcer);
        self
    }

    /// After a write: the notification, when the bucket is the announced one.
    fn written(&self, bucket: &str, key: &str) -> Result<(), PortError> {
        if let Some(a) = self.announcer.as_ref().filter(|a| a.bucket() == bucket)
            && let Some(meta) = self.pin_sync(bucket, key)?
        {
            a.announce(&meta)?;
        }
        Ok(())
    }

    /// Creates the bucket's directory if needed.
    pub fn create_bucket(&self, bucket: &str) -> Result<(), PortError> {
        check_bucket("create_bucket", bucket)?;
        fs::create_dir_all(self.buckets.join(bucket))
            .map_err(|e| io_error("create_bucket", bucket, e))
    }

    /// The directory holding the bucket.
    pub fn bucket_dir(&self, bucket: &str) -> PathBuf {
        self.buckets.join(bucket)
    }

    /// Where the object lives on disk (it may not exist), for readers that open it themselves. The
    /// key is checked first, and refused if a symbolic link is on its way; open the path with
    /// `O_NOFOLLOW`, as [`ObjectStore::get`] does, to refuse one put there after this look.
    pub fn path_of(&self, bucket: &str, key: &str) -> Result<PathBuf, PortError> {
        check_bucket("path", bucket)?;
        check_key("path", bucket, key)?;
        let dir = self.buckets.join(bucket);
        let mut path = dir.clone();
        for name in key.split('/') {
            path.push(name);
            if fs::symlink_metadata(&path).is_ok_and(|md| md.file_type().is_symlink()) {
                return Err(PortError::permanent(
                    "path",
                    format!("{bucket}/{key:?}"),
                    bucketfs::LINK_REFUSED,
                ));
            }
        }
        Ok(path)
    }

    /// The directory for temporary files, on the same file system as the buckets.
    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    /// A fresh temporary path in [`Self::tmp_dir`].
    pub fn tmp_path(&self, tag: &str) -> PathBuf {
        self.tmp
            .join(format!(".{tag}-{}", uuid::Uuid::new_v4().simple()))
    }

    fn existing_bucket(&self, op: &'static str, bucket: &str) -> Result<PathBuf, PortError> {
        check_bucket(op, bucket)?;
        let dir = self.buckets.join(bucket);
        if dir.is_dir() {
            Ok(dir)
        } else {
            Err(PortError::new(
                PortErrorKind::NotFound,
                op,
                bucket,
                "no such bucket",
            ))
        }
    }

    /// Writes `fill`'s output to a temporary file, syncs it, and renames it to the object's path.
    fn write_atomically(
        &self,
        op: &'static str,
        bucket: &str,
        key: &str,
        fill: impl FnOnce(&mut fs::File) -> io::Result<()>,
    ) -> Result<(), PortError> {
        let target = format!("{bucket}/{key}");
        let dir = self.existing_bucket(op, bucket)?;
        check_key(op, bucket, key)?;
        let tmp = self.tmp_path("put");
        let sync = self.sync;
        let result = (|| {
            let mut file = fs::File::create(&tmp)?;
            fill(&mut file)?;
            file.flush()?;
            // A version is stamped by modification time and size, and the kernel stamps files from
            // a clock that ticks every few milliseconds: a rewrite of the same size within one tick
            // would carry the old stamp and pass for the old bytes (a pin would read the new ones,
            // the ingestor would take it for the file it already has). A rewrite is stamped after
            // what it replaces.
            if let Ok(Some(old)) = bucketfs::lstat(&dir, key)
                && let (Ok(was), Ok(now)) = (old.modified(), file.metadata()?.modified())
                && now <= was
            {
                file.set_modified(was + std::time::Duration::from_micros(1))?;
            }
            if sync {
                file.sync_all()?;
            }
            drop(file);
            // The key's folders are made, and the file renamed in, without following a link.
            match bucketfs::rename_into(&dir, key, &tmp) {
                Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {
                    // The bucket is on another file system: stage beside the target instead.
                    bucketfs::copy_into(&dir, key, &tmp, sync)?;
                    fs::remove_file(&tmp)
                }
                other => other,
            }?;
            // Make the rename itself durable.
            if sync {
                let _ = bucketfs::sync_parent(&dir, key);
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(|e| io_error(op, &target, e))
    }

    fn head_sync(&self, bucket: &str, key: &str) -> Result<Option<ObjectMeta>, PortError> {
        let dir = self.existing_bucket("head", bucket)?;
        check_key("head", bucket, key)?;
        let target = || format!("{bucket}/{key}");
        match bucketfs::lstat(&dir, key) {
            Ok(Some(md)) if md.is_file() => Ok(Some(meta_of(key.to_string(), &md))),
            // A folder: no object of that key.
            Ok(Some(md)) if md.is_dir() => Ok(None),
            Ok(Some(_)) => Err(PortError::permanent(
                "head",
                target(),
                bucketfs::NOT_REGULAR,
            )),
            Ok(None) => Ok(None),
            Err(e) => Err(io_error("head", &target(), e)),
        }
    }

    /// Where the bytes of `key` at `version` are pinned.
    fn version_path(&self, bucket: &str, key: &str, version: &str) -> PathBuf {
        let mut h = Sha256::new();
        h.update(key.as_bytes());
        h.update([0u8]);
        h.update(version.as_bytes());
        self.versions
            .join(bucket)
            .join(hex::encode(&h.finalize()[..16]))
    }

    /// Pins the bytes `key` holds now (a hard link under their version) and returns their metadata,
    /// `None` if the key holds no regular file. The version is read off the linked inode itself, so
    /// it names exactly the bytes pinned even if the key is being replaced meanwhile. Where links
    /// cannot be made (another file system), the file is not pinned: a pinned read then still
    /// refuses any other version, it just cannot find this one once the key is rewritten.
    pub(crate) fn pin_sync(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<ObjectMeta>, PortError> {
        let target = format!("{bucket}/{key}");
        let bucket_dir = self.existing_bucket("pin", bucket)?;
        check_key("pin", bucket, key)?;
        let dir = self.versions.join(bucket);
        fs::create_dir_all(&dir).map_err(|e| io_error("pin", &target, e))?;
        let tmp = dir.join(format!(".pin-{}", uuid::Uuid::new_v4().simple()));
        // Neither the key's folders nor its name are followed: a link there is seen below, refused.
        match bucketfs::link_to(&bucket_dir, key, &tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {
                return self.head_sync(bucket, key);
            }
            Err(e) => return Err(io_error("pin", &target, e)),
        }
        let pinned = (|| {
            let md = fs::symlink_metadata(&tmp)?;
            if !md.is_file() {
                return Ok(None);
            }
            let meta = meta_of(key.to_string(), &md);
            fs::rename(&tmp, self.version_path(bucket, key, &meta.version))?;
            Ok(Some(meta))
        })();
        let _ = fs::remove_file(&tmp); // gone after the rename; else not a file, or failed
        pinned.map_err(|e| io_error("pin", &target, e))
    }

    /// The path holding the bytes `pin` names (see [`Self::open_sync`]), for readers that open files
    /// by path (the built-in transform); without a pin, the key's path.
    pub fn path_of_version(
        &self,
        bucket: &str,
        key: &str,
        pin: Option<&Pin>,
    ) -> Result<PathBuf, PortError> {
        let path = self.path_of(bucket, key)?;
        let Some(version) = pin.map(stamp) else {
            return Ok(path);
        };
        for p in [self.version_path(bucket, key, version), path] {
            if fs::metadata(&p)
                .is_ok_and(|md| md.is_file() && meta_of(key.to_string(), &md).version == *version)
            {
                return Ok(p);
            }
        }
        Err(version_gone("path", bucket, key, version))
    }

    /// Removes pinned versions that no key holds any more (link count 1) and that have not changed
    /// for `age`: the bytes of files rewritten or deleted long ago, as a lifecycle rule expires S3's
    /// noncurrent versions. A pin the key still holds costs nothing and stays. Returns how many went.
    pub(crate) fn prune_versions(&self, age: std::time::Duration) -> io::Result<usize> {
        use std::os::unix::fs::MetadataExt;
        let cutoff = std::time::SystemTime::now()
            .checked_sub(age)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs() as i64);
        let mut removed = 0;
        for bucket in fs::read_dir(&self.versions)? {
            let bucket = bucket?;
            if !bucket.file_type()?.is_dir() {
                continue;
            }
            for pin in fs::read_dir(bucket.path())? {
                let pin = pin?;
                let Ok(md) = pin.metadata() else { continue };
                // ctime moves when the link count does: the age counts from the key's rewrite.
                if md.is_file() && md.nlink() == 1 && md.ctime() <= cutoff {
                    fs::remove_file(pin.path())?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// Opens the bytes an operation means: with a pin, that version (from its pinned link, or the key
    /// while it still holds it), else `NotFound`; without, whatever the key holds.
    fn open_sync(
        &self,
        op: &'static str,
        bucket: &str,
        key: &str,
        pin: Option<&Pin>,
    ) -> Result<fs::File, PortError> {
        let target = format!("{bucket}/{key}");
        let dir = self.existing_bucket(op, bucket)?;
        check_key(op, bucket, key)?;
        // The pinned link (`None`: under the versions, which only the store writes) or the key,
        // resolved without following a link.
        let open = |p: Option<&Path>| -> Result<Option<(fs::File, ObjectMeta)>, PortError> {
            let opened = match p {
                Some(p) => fs::File::open(p),
                None => bucketfs::open_file(&dir, key),
            };
            match opened {
                Ok(f) => {
                    let md = f.metadata().map_err(|e| io_error(op, &target, e))?;
                    Ok(md.is_file().then(|| (f, meta_of(key.to_string(), &md))))
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::IsADirectory
                    ) =>
                {
                    Ok(None)
                }
                Err(e) => Err(io_error(op, &target, e)),
            }
        };
        let Some(version) = pin.map(stamp) else {
            return open(None)?
                .map(|(f, _)| f)
                .ok_or_else(|| PortError::not_found(op, target.clone()));
        };
        let pinned = self.version_path(bucket, key, version);
        for p in [Some(pinned.as_path()), None] {
            if let Some((f, meta)) = open(p)?
                && meta.version == version
            {
                return Ok(f);
            }
        }
        Err(version_gone(op, bucket, key, version))
    }

    fn delete_sync(&self, bucket: &str, key: &str, pin: Option<&Pin>) -> Result<(), PortError> {
        let dir = self.existing_bucket("delete", bucket)?;
        check_key("delete", bucket, key)?;
        if let Some(version) = pin.map(stamp) {
            let target = format!("{bucket}/{key}");
            match fs::remove_file(self.version_path(bucket, key, version)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(io_error("delete", &target, e));
                }
                _ => {}
            }
            // The key itself only while it still holds this version: a newer upload stays.
            match bucketfs::lstat(&dir, key) {
                Ok(Some(md))
                    if md.is_file() && meta_of(key.to_string(), &md).version == *version => {}
                Ok(_) => return Ok(()),
                Err(e) => return Err(io_error("delete", &target, e)),
            }
        }
        // Also removes the folders the object leaves empty, as S3 has no folders to leave behind.
        bucketfs::remove(&dir, key).map_err(|e| io_error("delete", &format!("{bucket}/{key}"), e))
    }

    fn list_sync(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectMeta>, PortError> {
        Ok(self.walk(bucket, prefix)?.0)
    }

    /// Every object under `prefix` in key order, and, apart, every entry that is not one: a link
    /// (to a file or a folder: never followed), a FIFO, socket or device, a name the pipeline does
    /// not take (hidden, a backslash, a control character, not UTF-8). A refused folder is one entry;
    /// nothing beneath it is looked at.
    pub(crate) fn walk(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<(Vec<ObjectMeta>, Vec<Refused>), PortError> {
        let dir = self.existing_bucket("list", bucket)?;
        let (mut out, mut refused) = (Vec::new(), Vec::new());
        let mut stack = vec![(dir, String::new())];
        while let Some((path, key_prefix)) = stack.pop() {
            let entries = match fs::read_dir(&path) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error("list", bucket, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| io_error("list", bucket, e))?;
                // The entry itself, never a link's target; an entry gone since is skipped.
                let Ok(md) = entry.metadata() else { continue };
                let name = entry.file_name();
                let mut key = format!("{key_prefix}{}", name.to_string_lossy());
                if md.is_dir() {
                    key.push('/');
                }
                if !(key.starts_with(prefix) || (md.is_dir() && prefix.starts_with(&key))) {
                    continue;
                }
                let why = if name.to_str().is_none() {
                    Some("the name is not UTF-8".to_string())
                } else if md.file_type().is_symlink() {
                    Some(bucketfs::LINK_REFUSED.to_string())
                } else if !md.is_dir() && !md.is_file() {
                    Some(bucketfs::NOT_REGULAR.to_string())
                } else {
                    let checked = if md.is_dir() {
                        &key[..key.len() - 1]
                    } else {
                        &key
                    };
                    choreo_domain::key::check(checked)
                        .err()
                        .map(|why| why.to_string())
                };
                match why {
                    Some(reason) => {
                        let stamp = meta_of(key, &md);
                        refused.push(Refused {
                            key: stamp.key,
                            version: stamp.version,
                            last_modified: stamp.last_modified,
                            reason,
                        });
                    }
                    None if md.is_dir() => stack.push((entry.path(), key)),
                    None => out.push(meta_of(key, &md)),
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        refused.sort_by(|a, b| a.key.cmp(&b.key));
        Ok((out, refused))
    }
}

async fn blocking<T: Send + 'static>(
    op: &'static str,
    target: String,
    f: impl FnOnce() -> Result<T, PortError> + Send + 'static,
) -> Result<T, PortError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| PortError::permanent(op, target, format!("task failed: {e}")))?
}

/// Runs `$body` with `$s`, a clone of the store (two paths), in a blocking task.
macro_rules! on_store {
    ($self:ident, $op:literal, $target:expr, |$s:ident| $body:expr) => {{
        let $s = $self.clone();
        blocking($op, $target, move || $body).await
    }};
}

#[async_trait]
impl ObjectStore for LocalObjectStore {
    async fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectMeta>, PortError> {
        let (b, k) = (bucket.to_string(), key.to_string());
        on_store!(self, "head", format!("{bucket}/{key}"), |s| s
            .head_sync(&b, &k))
    }

    async fn get(
        &self,
        bucket: &str,
        key: &str,
        pin: Option<&Pin>,
    ) -> Result<ObjectReader, PortError> {
        let (b, k, p) = (bucket.to_string(), key.to_string(), pin.cloned());
        let file = on_store!(self, "get", format!("{bucket}/{key}"), |s| s.open_sync(
            "get",
            &b,
            &k,
            p.as_ref()
        ))?;
        Ok(Box::pin(tokio::fs::File::from_std(file)))
    }

    async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), PortError> {
        let (b, k) = (bucket.to_string(), key.to_string());
        on_store!(self, "put", format!("{bucket}/{key}"), |s| {
            s.write_atomically("put", &b, &k, |f| f.write_all(&body))?;
            s.written(&b, &k)
        })
    }

    async fn put_file(&self, bucket: &str, key: &str, path: &Path) -> Result<(), PortError> {
        let (b, k, p) = (bucket.to_string(), key.to_string(), path.to_path_buf());
        on_store!(self, "put_file", format!("{bucket}/{key}"), |s| {
            let mut src = fs::File::open(&p)
                .map_err(|e| io_error("put_file", &p.display().to_string(), e))?;
            s.write_atomically("put_file", &b, &k, |f| io::copy(&mut src, f).map(|_| ()))?;
            s.written(&b, &k)
        })
    }

    async fn copy(
        &self,
        from_bucket: &str,
        from_key: &str,
        pin: Option<&Pin>,
        to_bucket: &str,
        to_key: &str,
    ) -> Result<(), PortError> {
        let from = format!("{from_bucket}/{from_key}");
        let (fb, fk, p) = (from_bucket.to_string(), from_key.to_string(), pin.cloned());
        let (b, k) = (to_bucket.to_string(), to_key.to_string());
        on_store!(self, "copy", from, |s| {
            let mut file = s.open_sync("copy", &fb, &fk, p.as_ref())?;
            s.write_atomically("copy", &b, &k, |f| io::copy(&mut file, f).map(|_| ()))?;
            s.written(&b, &k)
        })
    }

    async fn delete(&self, bucket: &str, key: &str, pin: Option<&Pin>) -> Result<(), PortError> {
        let (b, k, p) = (bucket.to_string(), key.to_string(), pin.cloned());
        on_store!(self, "delete", format!("{bucket}/{key}"), |s| s
            .delete_sync(&b, &k, p.as_ref()))
    }

    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectMeta>, PortError> {
        let (b, p) = (bucket.to_string(), prefix.to_string());
        on_store!(self, "list", bucket.to_string(), |s| s.list_sync(&b, &p))
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::backend;
    use choreo_ports::{ObjectStore, PortErrorKind};
    use tokio::io::AsyncReadExt;

    async fn read(store: &dyn ObjectStore, bucket: &str, key: &str) -> String {
        let mut s = String::new();
        store
            .get(bucket, key, None)
            .await
            .unwrap()
            .read_to_string(&mut s)
            .await
            .unwrap();
        s
    }

    async fn read_pinned(
        store: &dyn ObjectStore,
        bucket: &str,
        key: &str,
        pin: &choreo_domain::Pin,
    ) -> Result<String, choreo_ports::PortError> {
        let mut s = String::new();
        store
            .get(bucket, key, Some(pin))
            .await?
            .read_to_string(&mut s)
            .await
            .unwrap();
        Ok(s)
    }

    #[tokio::test]
    async fn a_pinned_version_outlives_a_rewrite_of_its_key_and_its_delete_spares_the_newer() {
        let (_dir, b) = backend();
        let s = b.objects();
        let input = b.config().buckets.input.clone();
        let failed = b.config().buckets.failed.clone();
        s.put(&input, "daily/race.csv", b"valid".to_vec())
            .await
            .unwrap();
        let first = s.pin_sync(&input, "daily/race.csv").unwrap().unwrap();
        let pin1 = first.pin.clone().unwrap();
        // A writer replaces the key in place of the pipeline (not through the store).
        let path = s.path_of(&input, "daily/race.csv").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        std::fs::write(path.with_extension("tmp"), b"invalid!!").unwrap();
        std::fs::rename(path.with_extension("tmp"), &path).unwrap();
        let second = s.pin_sync(&input, "daily/race.csv").unwrap().unwrap();
        let pin2 = second.pin.clone().unwrap();
        assert_ne!(pin1, pin2);

        assert_eq!(
            read_pinned(&*s, &input, "daily/race.csv", &pin1)
                .await
                .unwrap(),
            "valid"
        );
        assert_eq!(read(&*s, &input, "daily/race.csv").await, "invalid!!");
        let by_path = s
            .path_of_version(&input, "daily/race.csv", Some(&pin1))
            .unwrap();
        assert_eq!(std::fs::read(by_path).unwrap(), b"valid");

        // Quarantining the second version: its copy has its bytes, its delete leaves the first.
        s.copy(
            &input,
            "daily/race.csv",
            Some(&pin2),
            &failed,
            "f2/daily/race.csv",
        )
        .await
        .unwrap();
        assert_eq!(read(&*s, &failed, "f2/daily/race.csv").await, "invalid!!");
        s.delete(&input, "daily/race.csv", Some(&pin2))
            .await
            .unwrap();
        assert!(s.head(&input, "daily/race.csv").await.unwrap().is_none());
        assert_eq!(
            read_pinned(&*s, &input, "daily/race.csv", &pin1)
                .await
                .unwrap(),
            "valid"
        );
        let err = read_pinned(&*s, &input, "daily/race.csv", &pin2)
            .await
            .unwrap_err();
        assert_eq!(err.kind, PortErrorKind::NotFound, "{err}");

        // A pinned delete of a version the key no longer holds leaves the key's newer bytes.
        s.put(&input, "daily/race.csv", b"third".to_vec())
            .await
            .unwrap();
        s.delete(&input, "daily/race.csv", Some(&pin1))
            .await
            .unwrap();
        assert_eq!(read(&*s, &input, "daily/race.csv").await, "third");
        let err = read_pinned(&*s, &input, "daily/race.csv", &pin1)
            .await
            .unwrap_err();
        assert_eq!(err.kind, PortErrorKind::NotFound, "{err}");

        // Pins no key holds any more go once old enough; the one the key still holds stays.
        std::thread::sleep(std::time::Duration::from_millis(5));
        std::fs::write(path.with_extension("tmp"), b"fourth").unwrap();
        std::fs::rename(path.with_extension("tmp"), &path).unwrap();
        let pinned_now = s.pin_sync(&input, "daily/race.csv").unwrap().unwrap();
        assert_eq!(
            s.prune_versions(std::time::Duration::from_secs(3600))
                .unwrap(),
            0
        );
        assert_eq!(
            s.prune_versions(std::time::Duration::ZERO).unwrap(),
            1,
            "the third upload's pin, which the key no longer holds"
        );
        assert_eq!(
            read_pinned(
                &*s,
                &input,
                "daily/race.csv",
                pinned_now.pin.as_ref().unwrap()
            )
            .await
            .unwrap(),
            "fourth"
        );

        // An unpinned version (say, backfilled) rewritten in place: gone, never the new bytes.
        let unpinned = s.head(&input, "daily/race.csv").await.unwrap().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        std::fs::write(s.path_of(&input, "daily/race.csv").unwrap(), b"fourth!").unwrap();
        let stale = choreo_domain::Pin::VersionId(unpinned.version.clone() + "x");
        assert!(
            read_pinned(&*s, &input, "daily/race.csv", &stale)
                .await
                .is_err()
        );
    }

    /// The port's contract (`choreo_ports::testkit`): the input bucket keeps pinned uploads (its
    /// writes are pinned as they are announced), the work bucket only the latest.
    #[tokio::test]
    async fn the_object_store_keeps_the_ports_contract() {
        let (_dir, b) = backend();
        let buckets = choreo_ports::testkit::ContractBuckets {
            versioned: &b.config().buckets.input,
            plain: &b.config().buckets.work,
        };
        choreo_ports::testkit::object_store_contract(&*b.objects(), buckets).await;
    }

    /// The kernel's file clock ticks every few milliseconds; rewrites of one size in one tick are
    /// still new versions.
    #[tokio::test]
    async fn quick_rewrites_of_one_size_are_new_versions() {
        let (_dir, b) = backend();
        let (s, work) = (b.objects(), b.config().buckets.work.clone());
        let mut seen = std::collections::HashSet::new();
        for i in 0..200 {
            s.put(&work, "k.csv", format!("{:03}", i % 10).into_bytes())
                .await
                .unwrap();
            let version = s.head(&work, "k.csv").await.unwrap().unwrap().version;
            assert!(seen.insert(version.clone()), "write {i} kept {version}");
        }
    }

    /// The layout on disk: a version stamps the size, a delete leaves no empty folder behind, and
    /// temporary files never linger.
    #[tokio::test]
    async fn writes_leave_only_objects_on_disk() {
        let (_dir, b) = backend();
        let s = b.objects();
        let (input, failed) = (&b.config().buckets.input, &b.config().buckets.failed);
        s.put(input, "daily/a.csv", b"a,b\n1,2\n".to_vec())
            .await
            .unwrap();
        s.put(input, "daily/sub/b.csv", b"x".to_vec())
            .await
            .unwrap();
        let meta = s.head(input, "daily/a.csv").await.unwrap().unwrap();
        assert!(meta.version.ends_with("-8"), "{}", meta.version);
        s.copy(input, "daily/a.csv", None, failed, "q/a.csv")
            .await
            .unwrap();
        s.delete(input, "daily/sub/b.csv", None).await.unwrap();
        assert!(!s.bucket_dir(input).join("daily/sub").exists());
        assert!(s.bucket_dir(input).join("daily").exists());
        assert_eq!(std::fs::read_dir(s.tmp_dir()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn keys_that_escape_are_refused() {
        let (_dir, b) = backend();
        let s = b.objects();
        let input = b.config().buckets.input.clone();
        for key in ["../x", "a/../../x", "/etc/passwd", "a//b", "", "a/", "./a"] {
            let err = s.put(&input, key, b"x".to_vec()).await.unwrap_err();
            assert_eq!(err.kind, PortErrorKind::Permanent, "{key:?}");
        }
        assert!(s.head(&input, "../x").await.is_err());
        // A key that is a directory's, or runs through a file, cannot be written: retrying won't help.
        s.put(&input, "dir/file", b"x".to_vec()).await.unwrap();
        assert_eq!(
            s.put(&input, "dir", b"x".to_vec()).await.unwrap_err().kind,
            PortErrorKind::Permanent
        );
        assert_eq!(
            s.put(&input, "dir/file/sub", b"x".to_vec())
                .await
                .unwrap_err()
                .kind,
            PortErrorKind::Permanent
        );
        assert!(s.head(&input, "dir").await.unwrap().is_none());
        assert!(s.put("../etc", "x", b"x".to_vec()).await.is_err());
        let err = s.list("no-such-bucket", "").await.unwrap_err();
        assert_eq!(err.kind, PortErrorKind::NotFound);
    }

    /// Issue 12, finding 2: a bucket holds regular files only; a link is never followed.
    #[tokio::test]
    async fn links_in_a_bucket_are_refused_never_followed() {
        use std::os::unix::fs::symlink;
        let (dir, b) = backend();
        let s = b.objects();
        let (input, failed) = (
            b.config().buckets.input.clone(),
            b.config().buckets.failed.clone(),
        );
        let root = s.bucket_dir(&input);
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret.csv"), "TOP-SECRET").unwrap();
        std::fs::create_dir_all(root.join("daily")).unwrap();
        symlink("/proc/self/environ", root.join("daily/env.csv")).unwrap();
        symlink(outside.join("secret.csv"), root.join("daily/file.csv")).unwrap();
        symlink(&outside, root.join("daily/folder")).unwrap();
        s.put(&input, "daily/real.csv", b"real".to_vec())
            .await
            .unwrap();

        let (objects, refused) = s.walk(&input, "").unwrap();
        let keys: Vec<_> = objects.iter().map(|m| m.key.as_str()).collect();
        assert_eq!(keys, ["daily/real.csv"]);
        let refused: Vec<_> = refused
            .iter()
            .map(|r| (r.key.as_str(), r.reason.as_str()))
            .collect();
        assert_eq!(
            refused,
            [
                ("daily/env.csv", crate::bucketfs::LINK_REFUSED),
                ("daily/file.csv", crate::bucketfs::LINK_REFUSED),
                ("daily/folder", crate::bucketfs::LINK_REFUSED),
            ]
        );
        for key in ["daily/env.csv", "daily/file.csv", "daily/folder/secret.csv"] {
            let Err(e) = s.get(&input, key, None).await else {
                panic!("{key} was read through a link")
            };
            assert_eq!(e.kind, PortErrorKind::Permanent, "{key}");
            assert!(e.message.contains("symbolic link"), "{e}");
            assert!(!e.to_string().contains("TOP-SECRET"), "{e}");
            assert_eq!(
                s.head(&input, key).await.unwrap_err().kind,
                PortErrorKind::Permanent
            );
            let e = s
                .copy(&input, key, None, &failed, "copied.csv")
                .await
                .unwrap_err();
            assert_eq!(e.kind, PortErrorKind::Permanent, "{key}");
            assert!(s.path_of(&input, key).is_err(), "{key}");
        }
        // Nothing is written through a linked folder; deleting a link leaves its target.
        let e = s
            .put(&input, "daily/folder/new.csv", b"x".to_vec())
            .await
            .unwrap_err();
        assert_eq!(e.kind, PortErrorKind::Permanent);
        assert!(!outside.join("new.csv").exists());
        assert!(s.head(&failed, "copied.csv").await.unwrap().is_none());
        s.delete(&input, "daily/file.csv", None).await.unwrap();
        assert!(outside.join("secret.csv").exists());
    }

    #[tokio::test]
    async fn keys_the_pipeline_does_not_take_are_refused_and_listed_apart() {
        let (_dir, b) = backend();
        let s = b.objects();
        let input = b.config().buckets.input.clone();
        let root = s.bucket_dir(&input);
        for key in ["daily/.hidden.csv", "daily/a\\b.csv", "daily/new\nline.csv"] {
            let e = s.put(&input, key, b"x".to_vec()).await.unwrap_err();
            assert_eq!(e.kind, PortErrorKind::Permanent, "{key:?}");
        }
        std::fs::create_dir_all(root.join("daily/.partial")).unwrap();
        std::fs::write(root.join("daily/.partial/x.csv"), "x").unwrap();
        std::fs::write(root.join("daily/a\\b.csv"), "x").unwrap();
        std::fs::write(root.join("daily/ok.csv"), "x").unwrap();
        let (objects, refused) = s.walk(&input, "").unwrap();
        assert_eq!(objects.len(), 1);
        assert_eq!(objects[0].key, "daily/ok.csv");
        let refused: Vec<_> = refused.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(refused, ["daily/.partial/", "daily/a\\b.csv"]);
        assert_eq!(s.list(&input, "").await.unwrap(), objects);
    }

    #[tokio::test]
    async fn hidden_files_are_not_listed() {
        let (_dir, b) = backend();
        let s = b.objects();
        let input = b.config().buckets.input.clone();
        std::fs::write(s.bucket_dir(&input).join(".partial.csv"), "x").unwrap();
        s.put(&input, "seen.csv", b"x".to_vec()).await.unwrap();
        let keys: Vec<_> = s
            .list(&input, "")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect();
        assert_eq!(keys, ["seen.csv"]);
    }
}
