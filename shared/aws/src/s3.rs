//! [`ObjectStore`] on S3.
//!
//! An object's `version` is its S3 version id when the bucket is versioned, else its ETag (without
//! the quotes S3 puts around it): either names one upload. Single-request `PutObject` and
//! `CopyObject` are used, so objects are limited to S3's 5 GiB per request.
//!
//! A [`Pin`] names the bytes an operation means: a version id goes in the request; an ETag makes it
//! conditional (`If-Match`), and when the key holds another upload now, the bucket's versions are
//! searched for the one with that ETag (a versioned bucket keeps it; an unversioned one has lost it,
//! and the operation says `NotFound` rather than touch the newer upload).

use crate::error::port_error;
use async_trait::async_trait;
use aws_sdk_s3::operation::list_object_versions::ListObjectVersionsOutput;
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response as HttpResponse;
use choreo_domain::Pin;
use choreo_ports::{ObjectMeta, ObjectReader, ObjectStore, PortError, PortErrorKind};
use chrono::{DateTime, Utc};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use std::ops::ControlFlow;
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

/// Whether S3 said "not those bytes": a failed `If-Match` (412), or a key that is gone (404, a
/// delete marker), where an ETag-pinned operation looks for its version among the bucket's versions.
fn missed<E>(e: &SdkError<E, HttpResponse>) -> bool {
    matches!(e, SdkError::ServiceError(se) if matches!(se.raw().status().as_u16(), 404 | 412))
}

fn gone(op: &'static str, bucket: &str, key: &str, pin: &Pin) -> PortError {
    PortError::new(
        PortErrorKind::NotFound,
        op,
        target(bucket, key),
        format!("{pin} is gone: the key holds another upload and the bucket keeps no such version"),
    )
}

fn quoted(etag: &str) -> String {
    format!("\"{etag}\"")
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
                pin: Pin::from_parts(out.version_id(), out.e_tag()),
                last_modified: to_chrono(out.last_modified()),
            })),
            Err(e) => {
                let err = port_error("head", target(bucket, key), e);
                if err.kind == PortErrorKind::NotFound {
                    Ok(None)
                } else {
                    Err(err)
                }
            }
        }
    }

    async fn get(
        &self,
        bucket: &str,
        key: &str,
        pin: Option<&Pin>,
    ) -> Result<ObjectReader, PortError> {
        let request = self.client.get_object().bucket(bucket).key(key);
        let request = match pin {
            None => request,
            Some(Pin::VersionId(v)) => request.version_id(v),
            Some(Pin::ETag(e)) => request.if_match(quoted(e)),
        };
        let out = match request.send().await {
            Ok(out) => out,
            Err(e) if matches!(pin, Some(Pin::ETag(_))) && missed(&e) => {
                let pin = pin.expect("matched");
                let Some(version) = self.version_with(bucket, key, pin).await? else {
                    return Err(gone("get", bucket, key, pin));
                };
                self.client
                    .get_object()
                    .bucket(bucket)
                    .key(key)
                    .version_id(version)
                    .send()
                    .await
                    .map_err(|e| port_error("get", target(bucket, key), e))?
            }
            Err(e) => return Err(port_error("get", target(bucket, key), e)),
        };
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
                PortErrorKind::NotFound
            } else {
                PortErrorKind::Permanent
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
        pin: Option<&Pin>,
        to_bucket: &str,
        to_key: &str,
    ) -> Result<(), PortError> {
        let source = copy_source(from_bucket, from_key);
        let request = self.client.copy_object();
        let request = match pin {
            None => request.copy_source(source),
            Some(Pin::VersionId(v)) => request.copy_source(format!("{source}?versionId={v}")),
            // The latest upload, if it is still the pinned one (checked first: an emulator may
            // ignore the condition); else the version with that ETag.
            Some(p @ Pin::ETag(e)) => {
                let head = self.head(from_bucket, from_key).await?;
                if head.is_some_and(|h| h.pin.as_ref() == Some(p) || h.version == *e) {
                    request.copy_source(source).copy_source_if_match(quoted(e))
                } else {
                    match self.version_with(from_bucket, from_key, p).await? {
                        Some(v) => request.copy_source(format!("{source}?versionId={v}")),
                        None => return Err(gone("copy", from_bucket, from_key, p)),
                    }
                }
            }
        };
        request
            .bucket(to_bucket)
            .key(to_key)
            .send()
            .await
            .map_err(|e| port_error("copy", target(from_bucket, from_key), e))?;
        Ok(())
    }

    /// `DeleteObject`, which S3 answers with success for a missing key. In a versioned bucket this
    /// adds a delete marker; older versions stay.
    ///
    /// Pinned: a version id deletes that version for good; an ETag deletes the latest upload only if
    /// it is that one (`If-Match`), else the version with that ETag, else nothing (it is gone).
    async fn delete(&self, bucket: &str, key: &str, pin: Option<&Pin>) -> Result<(), PortError> {
        let request = self.client.delete_object().bucket(bucket).key(key);
        let request = match pin {
            None => request,
            Some(Pin::VersionId(v)) => request.version_id(v),
            Some(Pin::ETag(e)) => request.if_match(quoted(e)),
        };
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e) if matches!(pin, Some(Pin::ETag(_))) && missed(&e) => {
                let pin = pin.expect("matched");
                let Some(version) = self.version_with(bucket, key, pin).await? else {
                    return Ok(());
                };
                self.client
                    .delete_object()
                    .bucket(bucket)
                    .key(key)
                    .version_id(version)
                    .send()
                    .await
                    .map_err(|e| port_error("delete", target(bucket, key), e))?;
                Ok(())
            }
            Err(e) => Err(port_error("delete", target(bucket, key), e)),
        }
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
        self.version_pages("list", bucket, prefix, |page| {
            for v in page.versions() {
                let Some(key) = v.key() else { continue };
                if v.is_latest() == Some(true) {
                    out.push(ObjectMeta {
                        key: key.to_string(),
                        size: v.size().unwrap_or(0).max(0) as u64,
                        version: version_of(v.version_id(), v.e_tag()),
                        pin: Pin::from_parts(v.version_id(), v.e_tag()),
                        last_modified: to_chrono(v.last_modified()),
                    });
                }
            }
            ControlFlow::Continue(())
        })
        .await?;
        // S3 lists in UTF-8 byte order already; sorting makes the port's promise independent of it.
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}

impl S3Store {
    /// The id of `key`'s version that `pin` names, if the bucket keeps it as a version (an ETag pin
    /// in a versioned bucket; `None` in an unversioned one, whose versions are all `null`).
    async fn version_with(
        &self,
        bucket: &str,
        key: &str,
        pin: &Pin,
    ) -> Result<Option<String>, PortError> {
        let etag = match pin {
            Pin::VersionId(v) => return Ok(Some(v.clone())),
            Pin::ETag(e) => e.as_str(),
        };
        let mut found = None;
        self.version_pages("list_versions", bucket, key, |page| {
            found = page
                .versions()
                .iter()
                .find(|v| {
                    v.key() == Some(key)
                        && v.e_tag().map(|t| t.trim_matches('"')) == Some(etag)
                        && v.version_id().is_some_and(|id| id != "null")
                })
                .and_then(|v| v.version_id().map(str::to_string));
            // Versions come in key order: once past the key, there is none further on.
            let past = page
                .versions()
                .last()
                .and_then(|v| v.key())
                .is_some_and(|k| k > key);
            if found.is_some() || past {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .await?;
        Ok(found)
    }

    /// Every page of `ListObjectVersions` under `prefix`, in turn, until `visit` breaks: the SDK has
    /// no paginator for this operation, so pages continue from a key and a version marker.
    async fn version_pages(
        &self,
        op: &'static str,
        bucket: &str,
        prefix: &str,
        mut visit: impl FnMut(&ListObjectVersionsOutput) -> ControlFlow<()>,
    ) -> Result<(), PortError> {
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
                .map_err(|e| port_error(op, target(bucket, prefix), e))?;
            if visit(&page).is_break()
                || page.is_truncated() != Some(true)
                || page.next_key_marker().is_none()
            {
                return Ok(());
            }
            key_marker = page.next_key_marker().map(str::to_string);
            version_marker = page.next_version_id_marker().map(str::to_string);
        }
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
            .get(bucket, key, None)
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

    async fn read_pinned(
        s3: &S3Store,
        bucket: &str,
        key: &str,
        pin: &Pin,
    ) -> Result<String, PortError> {
        let mut s = String::new();
        s3.get(bucket, key, Some(pin))
            .await?
            .read_to_string(&mut s)
            .await
            .unwrap();
        Ok(s)
    }

    async fn versioned(clients: &AwsClients, bucket: &str) {
        clients
            .s3
            .put_bucket_versioning()
            .bucket(bucket)
            .versioning_configuration(
                VersioningConfiguration::builder()
                    .status(BucketVersioningStatus::Enabled)
                    .build(),
            )
            .send()
            .await
            .unwrap();
    }

    /// The port's contract (`choreo_ports::testkit`), on S3 (moto): a versioned bucket keeps pinned
    /// uploads, an unversioned one only the latest (its pins are ETags).
    #[tokio::test]
    async fn the_object_store_keeps_the_ports_contract() {
        let moto = Moto::start();
        let (clients, s3) = store_with_buckets(&moto, &["choreo-versioned", "choreo-plain"]).await;
        versioned(&clients, "choreo-versioned").await;
        let buckets = choreo_ports::testkit::ContractBuckets {
            versioned: "choreo-versioned",
            plain: "choreo-plain",
        };
        choreo_ports::testkit::object_store_contract(&s3, buckets).await;
    }

    /// An ETag pin in a versioned bucket (what a notification without a version id gives: moto
    /// sends only the ETag) finds its upload among the versions once the key holds a newer one.
    #[tokio::test]
    async fn etag_pins_find_their_version_in_a_versioned_bucket() {
        let moto = Moto::start();
        let (clients, s3) = store_with_buckets(&moto, &["choreo-in", "choreo-out"]).await;
        versioned(&clients, "choreo-in").await;
        s3.put("choreo-in", KEY, b"valid".to_vec()).await.unwrap();
        let etag = clients
            .s3
            .head_object()
            .bucket("choreo-in")
            .key(KEY)
            .send()
            .await
            .unwrap()
            .e_tag()
            .unwrap()
            .to_string();
        let by_etag = Pin::from_parts(None, Some(&etag)).unwrap();
        s3.put("choreo-in", KEY, b"invalid!!".to_vec())
            .await
            .unwrap();

        assert_eq!(
            read_pinned(&s3, "choreo-in", KEY, &by_etag).await.unwrap(),
            "valid"
        );
        s3.copy("choreo-in", KEY, Some(&by_etag), "choreo-out", "a")
            .await
            .unwrap();
        assert_eq!(read(&s3, "choreo-out", "a").await, "valid");
        // A delete of an upload that is no longer the latest removes that version only.
        s3.delete("choreo-in", KEY, Some(&by_etag)).await.unwrap();
        assert_eq!(read(&s3, "choreo-in", KEY).await, "invalid!!");
        let err = read_pinned(&s3, "choreo-in", KEY, &by_etag)
            .await
            .unwrap_err();
        assert_eq!(err.kind, PortErrorKind::NotFound, "{err}");
    }
}
