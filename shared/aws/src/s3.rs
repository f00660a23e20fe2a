//! [`ObjectStore`] on S3.
//!
//! An object's `version` is its S3 version id when the bucket is versioned, else its ETag (without
//! the quotes S3 puts around it): either names one upload. Single-request `PutObject` and
//! `CopyObject` are used, so objects are limited to S3's 5 GiB per request.

use crate::error::port_error;
use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use choreo_ports::{ErrorKind, ObjectMeta, ObjectReader, ObjectStore, PortError};
use chrono::{DateTime, Utc};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use std::path::Path;

/// What a copy source's key keeps as is: RFC 3986's unreserved characters and the `/` separator.
const COPY_SOURCE_KEEP: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// S3 through one SDK client.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
}

impl S3Store {
    /// The store over `client`; buckets are named per call.
    pub fn new(client: aws_sdk_s3::Client) -> Self {
        S3Store { client }
    }
}

fn target(bucket: &str, key: &str) -> String {
    format!("{bucket}/{key}")
}

/// `CopyObject`'s `x-amz-copy-source`: `bucket/key`, the key percent-encoded except `/`, as S3
/// requires (a raw space, `+` or non-ASCII byte would be misread or refused).
pub fn copy_source(bucket: &str, key: &str) -> String {
    format!("{bucket}/{}", utf8_percent_encode(key, COPY_SOURCE_KEEP))
}

/// The version naming one upload: the version id, unless the bucket is unversioned (no id, or the
/// `null` id of objects written while versioning was off or suspended), else the unquoted ETag.
fn version_of(version_id: Option<&str>, e_tag: Option<&str>) -> String {
    match version_id {
        Some(v) if !v.is_empty() && v != "null" => v.to_string(),
        _ => e_tag.unwrap_or_default().trim_matches('"').to_string(),
    }
}

fn to_chrono(t: Option<&aws_smithy_types::DateTime>) -> DateTime<Utc> {
    t.and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
        .unwrap_or(DateTime::UNIX_EPOCH)
}

#[async_trait]
impl ObjectStore for S3Store {
    /// `HeadObject`. Its 404 (which has no body, so no error code) is `None`; a missing bucket
    /// answers the same 404 and is `None` too.
    async fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectMeta>, PortError> {
        match self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(ObjectMeta {
                key: key.to_string(),
                size: out.content_length().unwrap_or(0).max(0) as u64,
                version: version_of(out.version_id(), out.e_tag()),
                last_modified: to_chrono(out.last_modified()),
            })),
            Err(e) => {
                let err = port_error("head", target(bucket, key), e);
                if err.kind == ErrorKind::NotFound {
                    Ok(None)
                } else {
                    Err(err)
                }
            }
        }
    }

    async fn get(&self, bucket: &str, key: &str) -> Result<ObjectReader, PortError> {
        let out = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| port_error("get", target(bucket, key), e))?;
        Ok(Box::pin(out.body.into_async_read()))
    }

    async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), PortError> {
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| port_error("put", target(bucket, key), e))?;
        Ok(())
    }

    /// Streams the file from disk (`ByteStream::from_path`: the length is known up front and the
    /// body is re-read from the file if the SDK retries).
    async fn put_file(&self, bucket: &str, key: &str, path: &Path) -> Result<(), PortError> {
        let body = ByteStream::from_path(path).await.map_err(|e| {
            let not_found = std::error::Error::source(&e)
                .and_then(|s| s.downcast_ref::<std::io::Error>())
                .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound);
            let kind = if not_found {
                ErrorKind::NotFound
            } else {
                ErrorKind::Permanent
            };
            PortError::new(
                kind,
                "put_file",
                path.display().to_string(),
                aws_smithy_types::error::display::DisplayErrorContext(&e),
            )
        })?;
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(body)
            .send()
            .await
            .map_err(|e| port_error("put_file", target(bucket, key), e))?;
        Ok(())
    }

    /// `CopyObject`, server-side. A missing source is `NotFound` (`NoSuchKey`), named by the source.
    async fn copy(
        &self,
        from_bucket: &str,
        from_key: &str,
        to_bucket: &str,
        to_key: &str,
    ) -> Result<(), PortError> {
        self.client
            .copy_object()
            .copy_source(copy_source(from_bucket, from_key))
            .bucket(to_bucket)
            .key(to_key)
            .send()
            .await
            .map_err(|e| port_error("copy", target(from_bucket, from_key), e))?;
        Ok(())
    }

    /// `DeleteObject`, which S3 answers with success for a missing key. In a versioned bucket this
    /// adds a delete marker; older versions stay.
    async fn delete(&self, bucket: &str, key: &str) -> Result<(), PortError> {
        self.client
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| port_error("delete", target(bucket, key), e))?;
        Ok(())
    }

    /// `ListObjectVersions`, keeping each key's latest version unless it is a delete marker.
    ///
    /// Not `ListObjectsV2`: it gives no version ids, so in a versioned bucket its `version` (the
    /// ETag) would disagree with `head`'s (the version id). `ListObjectVersions` answers for
    /// unversioned buckets too (every object's id is `null`, so the ETag is used), with no
    /// `GetBucketVersioning` call first (whose answer moto 5.2 sends in a shape the SDK cannot
    /// parse). The cost: pages also carry noncurrent versions, and the task role needs
    /// `s3:ListBucketVersions`.
    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectMeta>, PortError> {
        let mut out = Vec::new();
        let (mut key_marker, mut version_marker) = (None::<String>, None::<String>);
        loop {
            let page = self
                .client
                .list_object_versions()
                .bucket(bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
                .map_err(|e| port_error("list", target(bucket, prefix), e))?;
            for v in page.versions() {
                let Some(key) = v.key() else { continue };
                if v.is_latest() == Some(true) {
                    out.push(ObjectMeta {
                        key: key.to_string(),
                        size: v.size().unwrap_or(0).max(0) as u64,
                        version: version_of(v.version_id(), v.e_tag()),
                        last_modified: to_chrono(v.last_modified()),
                    });
                }
            }
            // The SDK has no paginator for this operation: pages continue from a key and a version.
            if page.is_truncated() != Some(true) || page.next_key_marker().is_none() {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_string);
            version_marker = page.next_version_id_marker().map(str::to_string);
        }
        // S3 lists in UTF-8 byte order already; sorting makes the port's promise independent of it.
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AwsClients;
    use crate::moto::Moto;
    use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
    use tokio::io::AsyncReadExt;

    const KEY: &str = "daily/a b+c/ü.csv";

    #[test]
    fn copy_sources_encode_all_but_slashes() {
        assert_eq!(
            copy_source("in-b", "daily/a b+c/ü.csv"),
            "in-b/daily/a%20b%2Bc/%C3%BC.csv"
        );
        assert_eq!(copy_source("b", "x-y_z.~1/2"), "b/x-y_z.~1/2");
    }

    #[test]
    fn versions_prefer_real_ids_over_etags() {
        assert_eq!(version_of(Some("v1"), Some("\"e\"")), "v1");
        assert_eq!(version_of(Some("null"), Some("\"e\"")), "e");
        assert_eq!(version_of(None, Some("\"e\"")), "e");
    }

    async fn read(store: &S3Store, bucket: &str, key: &str) -> String {
        let mut s = String::new();
        store
            .get(bucket, key)
            .await
            .unwrap()
            .read_to_string(&mut s)
            .await
            .unwrap();
        s
    }

    async fn store_with_buckets(moto: &Moto, buckets: &[&str]) -> (AwsClients, S3Store) {
        let clients = AwsClients::emulator(&moto.endpoint).await;
        for b in buckets {
            clients.s3.create_bucket().bucket(*b).send().await.unwrap();
        }
        let store = S3Store::new(clients.s3.clone());
        (clients, store)
    }

    #[tokio::test]
    async fn s3_objects_round_trip_with_awkward_keys() {
        let moto = Moto::start();
        let (_clients, s3) = store_with_buckets(&moto, &["choreo-in", "choreo-out"]).await;

        s3.put("choreo-in", KEY, b"id,name\n1,a\n".to_vec())
            .await
            .unwrap();
        s3.put("choreo-in", "daily/z.csv", b"z".to_vec())
            .await
            .unwrap();
        s3.put("choreo-in", "monthly/m.csv", b"m".to_vec())
            .await
            .unwrap();
        assert_eq!(read(&s3, "choreo-in", KEY).await, "id,name\n1,a\n");

        let meta = s3.head("choreo-in", KEY).await.unwrap().expect("exists");
        assert_eq!(meta.key, KEY);
        assert_eq!(meta.size, 12);
        assert!(
            !meta.version.is_empty() && !meta.version.contains('"'),
            "{}",
            meta.version
        );
        assert!((Utc::now() - meta.last_modified).num_seconds().abs() < 60);
        assert_eq!(s3.head("choreo-in", "daily/none.csv").await.unwrap(), None);

        // The copy source must be encoded: the copied bytes prove the right object was found.
        s3.copy("choreo-in", KEY, "choreo-out", KEY).await.unwrap();
        s3.copy("choreo-in", KEY, "choreo-out", KEY).await.unwrap();
        assert_eq!(read(&s3, "choreo-out", KEY).await, "id,name\n1,a\n");
        let err = s3
            .copy("choreo-in", "daily/none.csv", "choreo-out", "x")
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotFound, "{err}");

        let listed = s3.list("choreo-in", "daily/").await.unwrap();
        let keys: Vec<_> = listed.iter().map(|m| m.key.as_str()).collect();
        assert_eq!(keys, [KEY, "daily/z.csv"]);
        assert_eq!(
            (&listed[0].key, listed[0].size, &listed[0].version),
            (&meta.key, meta.size, &meta.version),
            "list and head agree"
        );

        let err = match s3.get("choreo-in", "daily/none.csv").await {
            Err(e) => e,
            Ok(_) => panic!("a missing key was read"),
        };
        assert_eq!(err.kind, ErrorKind::NotFound, "{err}");

        s3.delete("choreo-in", KEY).await.unwrap();
        s3.delete("choreo-in", KEY).await.unwrap();
        assert_eq!(s3.head("choreo-in", KEY).await.unwrap(), None);
        let keys: Vec<_> = s3
            .list("choreo-in", "")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect();
        assert_eq!(keys, ["daily/z.csv", "monthly/m.csv"]);
    }

    #[tokio::test]
    async fn s3_put_file_streams_and_versioned_buckets_name_versions() {
        let moto = Moto::start();
        let (clients, s3) = store_with_buckets(&moto, &["choreo-work"]).await;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.csv");
        let line = "0123456789abcdef,ü\n";
        std::fs::write(&path, line.repeat(64 * 1024)).unwrap();
        s3.put_file("choreo-work", KEY, &path).await.unwrap();
        let meta = s3.head("choreo-work", KEY).await.unwrap().unwrap();
        assert_eq!(meta.size, (line.len() * 64 * 1024) as u64);
        assert_eq!(read(&s3, "choreo-work", KEY).await, line.repeat(64 * 1024));
        let err = s3
            .put_file("choreo-work", "x", &dir.path().join("absent"))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotFound, "{err}");

        // A versioned bucket: every upload is a version, and list agrees with head on the latest.
        clients
            .s3
            .put_bucket_versioning()
            .bucket("choreo-work")
            .versioning_configuration(
                VersioningConfiguration::builder()
                    .status(BucketVersioningStatus::Enabled)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        s3.put("choreo-work", "v.csv", b"one".to_vec())
            .await
            .unwrap();
        let first = s3.head("choreo-work", "v.csv").await.unwrap().unwrap();
        s3.put("choreo-work", "v.csv", b"one".to_vec())
            .await
            .unwrap();
        let second = s3.head("choreo-work", "v.csv").await.unwrap().unwrap();
        assert_ne!(first.version, second.version, "same bytes, new upload");
        s3.put("choreo-work", "w.csv", b"w".to_vec()).await.unwrap();
        s3.delete("choreo-work", "w.csv").await.unwrap();
        let listed = s3.list("choreo-work", "").await.unwrap();
        let keys: Vec<_> = listed.iter().map(|m| m.key.as_str()).collect();
        assert_eq!(keys, [KEY, "v.csv"], "deleted keys are not listed");
        assert_eq!(listed[1].version, second.version);
        assert_eq!(listed[1].size, 3);

        // More keys than one page holds (moto pages versions by 100, S3 by 1000).
        for i in (0..130).rev() {
            s3.put("choreo-work", &format!("many/{i:03}"), vec![b'x'; i])
                .await
                .unwrap();
        }
        s3.put("choreo-work", "many/000", b"again".to_vec())
            .await
            .unwrap();
        let listed = s3.list("choreo-work", "many/").await.unwrap();
        assert_eq!(listed.len(), 130);
        assert!(
            listed
                .iter()
                .enumerate()
                .all(|(i, m)| m.key == format!("many/{i:03}"))
        );
        assert_eq!(listed[0].size, 5, "the latest version of many/000");
        assert_eq!(listed[129].size, 129);
    }
}
