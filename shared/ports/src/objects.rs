use crate::PortError;
use async_trait::async_trait;
use choreo_domain::Pin;
use chrono::{DateTime, Utc};
use std::path::Path;

use tokio::io::AsyncRead;

/// What a listing or a head request tells about an object.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectMeta {
    pub key: String,
    /// Bytes.
    pub size: u64,
    /// Names this version of the object (S3's version id or ETag; a local stamp). Other bytes are
    /// another version; where the bucket keeps versions, so is every upload of the same bytes.
    pub version: String,
    /// How operations name this version (see [`ObjectStore`]).
    pub pin: Option<Pin>,
    pub last_modified: DateTime<Utc>,
}

/// An object's body, streamed.
pub type ObjectReader = std::pin::Pin<Box<dyn AsyncRead + Send>>;

/// Buckets of objects, as S3 has them.
///
/// `get`, `copy` and `delete` take the [`Pin`] of the bytes they mean, when the caller has one (a
/// file's record does): a pinned read or copy gets exactly those bytes or fails with `NotFound` when
/// they are gone, never another upload's; a pinned delete removes only them and leaves a newer upload
/// of the key alone. `None` means whatever the key holds now (the pipeline's own objects: reports,
/// manifests).
#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// The object's metadata, or `None` if it does not exist.
    async fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectMeta>, PortError>;

    /// Streams the object's body. A missing object (or pinned version) is an error of kind `NotFound`.
    async fn get(
        &self,
        bucket: &str,
        key: &str,
        pin: Option<&Pin>,
    ) -> Result<ObjectReader, PortError>;

    /// Writes a whole object: readers see all of it or none of it.
    async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), PortError>;

    /// Writes a local file as an object, streaming it. A missing file is an error of kind `NotFound`.
    async fn put_file(&self, bucket: &str, key: &str, path: &Path) -> Result<(), PortError>;

    /// Copies an object, overwriting the target: copying twice is harmless. A missing source (or
    /// pinned version) is an error of kind `NotFound`.
    async fn copy(
        &self,
        from_bucket: &str,
        from_key: &str,
        pin: Option<&Pin>,
        to_bucket: &str,
        to_key: &str,
    ) -> Result<(), PortError>;

    /// Deletes an object (with a pin, only that version); deleting one that is gone is not an error.
    async fn delete(&self, bucket: &str, key: &str, pin: Option<&Pin>) -> Result<(), PortError>;

    /// Every object whose key starts with `prefix` (a plain string prefix, not only a folder), in key
    /// order, each key once with its latest upload (pages are followed inside). Deleted keys are not
    /// listed; a listed object's metadata names it as `head` does.
    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectMeta>, PortError>;
}
