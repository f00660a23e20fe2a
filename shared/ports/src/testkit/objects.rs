//! [`ObjectStore`]'s contract.
//!
//! Two empty buckets: one that keeps the bytes a pin names after its key is rewritten (a versioned S3
//! bucket; the local input bucket, whose writes are pinned as they are announced), and one that keeps
//! only the latest upload of each key, where a pin can only refuse bytes it does not name.

use crate::{ObjectMeta, ObjectStore, PortError, PortErrorKind};
use choreo_domain::Pin;
use chrono::Utc;
use tokio::io::AsyncReadExt;

/// The buckets the contract writes into, both empty.
#[derive(Debug, Clone, Copy)]
pub struct ContractBuckets<'a> {
    /// Keeps every pinned upload's bytes until a pinned delete removes them.
    pub versioned: &'a str,
    /// Keeps only each key's latest upload.
    pub plain: &'a str,
}

/// Every case of [`ObjectStore`]'s contract.
pub async fn object_store_contract(s: &dyn ObjectStore, buckets: ContractBuckets<'_>) {
    objects_round_trip_under_odd_keys(s, buckets).await;
    a_local_file_is_streamed_in_and_out(s, buckets.plain).await;
    pinned_operations_mean_the_pinned_upload(s, buckets).await;
    a_pin_the_bucket_no_longer_holds_is_not_found(s, buckets.plain).await;
    listings_follow_pages_and_skip_deleted_keys(s, buckets.versioned).await;
}

/// A space, a `+` (a query string's space) and a non-ASCII letter: each must survive the encodings
/// on the way (S3's copy source is one).
const ODD: &str = "daily/a b+c/ü.csv";

async fn read(
    s: &dyn ObjectStore,
    bucket: &str,
    key: &str,
    pin: Option<&Pin>,
) -> Result<Vec<u8>, PortError> {
    let mut body = Vec::new();
    s.get(bucket, key, pin)
        .await?
        .read_to_end(&mut body)
        .await
        .expect("the body streams");
    Ok(body)
}

async fn text(s: &dyn ObjectStore, bucket: &str, key: &str) -> String {
    String::from_utf8(read(s, bucket, key, None).await.unwrap()).unwrap()
}

async fn keys(s: &dyn ObjectStore, bucket: &str, prefix: &str) -> Vec<String> {
    let listed = s.list(bucket, prefix).await.unwrap();
    listed.into_iter().map(|m| m.key).collect()
}

/// A listing and a head agree on what names the object (their times may differ in precision).
fn same(listed: &ObjectMeta, head: &ObjectMeta) {
    let names = |m: &ObjectMeta| (m.key.clone(), m.size, m.version.clone(), m.pin.clone());
    assert_eq!(names(listed), names(head), "list and head agree");
}

fn not_found<T>(r: Result<T, PortError>, what: &str) {
    match r {
        Ok(_) => panic!("{what}: found"),
        Err(e) => assert_eq!(e.kind, PortErrorKind::NotFound, "{what}: {e}"),
    }
}

async fn objects_round_trip_under_odd_keys(s: &dyn ObjectStore, b: ContractBuckets<'_>) {
    let plain = b.plain;
    s.put(plain, ODD, b"id,name\n1,a\n".to_vec()).await.unwrap();
    s.put(plain, "daily/z.csv", b"z".to_vec()).await.unwrap();
    s.put(plain, "monthly/m.csv", b"m".to_vec()).await.unwrap();
    assert_eq!(text(s, plain, ODD).await, "id,name\n1,a\n");

    let meta = s.head(plain, ODD).await.unwrap().expect("exists");
    assert_eq!((meta.key.as_str(), meta.size), (ODD, 12));
    assert!(
        !meta.version.is_empty() && !meta.version.contains('"'),
        "{}",
        meta.version
    );
    assert!(meta.pin.is_some(), "every object can be pinned");
    assert!((Utc::now() - meta.last_modified).num_seconds().abs() < 60);
    assert_eq!(s.head(plain, "daily/none.csv").await.unwrap(), None);
    not_found(
        s.get(plain, "daily/none.csv", None).await,
        "get of a missing key",
    );

    // In key order, by plain prefix (not only whole folders); listing and head agree.
    let listed = s.list(plain, "daily/").await.unwrap();
    let listed_keys: Vec<_> = listed.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(listed_keys, [ODD, "daily/z.csv"]);
    same(&listed[0], &meta);
    assert_eq!(keys(s, plain, "daily/z").await, ["daily/z.csv"]);
    assert!(keys(s, plain, "weekly/").await.is_empty());

    // Copying overwrites its target, so twice is harmless.
    for _ in 0..2 {
        s.copy(plain, ODD, None, b.versioned, ODD).await.unwrap();
    }
    assert_eq!(text(s, b.versioned, ODD).await, "id,name\n1,a\n");
    not_found(
        s.copy(plain, "daily/none.csv", None, b.versioned, "x.csv")
            .await,
        "copy of a missing key",
    );

    // Other bytes are another version (in a plain S3 bucket the version is the ETag, so the same
    // bytes again may be the same version; see the versioned case).
    s.put(plain, ODD, b"id,name\n2,b\n".to_vec()).await.unwrap();
    let other = s.head(plain, ODD).await.unwrap().unwrap();
    assert_ne!(other.version, meta.version);

    // Deleting twice is harmless; a deleted key is neither read nor listed.
    s.delete(plain, ODD, None).await.unwrap();
    s.delete(plain, ODD, None).await.unwrap();
    assert_eq!(s.head(plain, ODD).await.unwrap(), None);
    not_found(s.get(plain, ODD, None).await, "get of a deleted key");
    assert_eq!(keys(s, plain, "").await, ["daily/z.csv", "monthly/m.csv"]);
    for key in ["daily/z.csv", "monthly/m.csv"] {
        s.delete(plain, key, None).await.unwrap();
    }
    s.delete(b.versioned, ODD, None).await.unwrap();
}

async fn a_local_file_is_streamed_in_and_out(s: &dyn ObjectStore, plain: &str) {
    let dir = std::env::temp_dir().join(format!(
        "choreo-object-contract-{}-{}",
        std::process::id(),
        Utc::now().timestamp_nanos_opt().unwrap_or_default()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("big.csv");
    // Larger than one read of the body, so the reader is polled many times.
    let body = "0123456789abcdef,ü\n".repeat(64 * 1024);
    std::fs::write(&path, &body).unwrap();
    s.put_file(plain, "big/big.csv", &path).await.unwrap();
    let meta = s.head(plain, "big/big.csv").await.unwrap().unwrap();
    assert_eq!(meta.size, body.len() as u64);
    assert_eq!(text(s, plain, "big/big.csv").await, body);
    assert!(path.exists(), "the source is left alone");
    not_found(
        s.put_file(plain, "big/absent.csv", &dir.join("absent"))
            .await,
        "put_file of a missing file",
    );
    assert_eq!(s.head(plain, "big/absent.csv").await.unwrap(), None);
    std::fs::remove_dir_all(&dir).unwrap();
    s.delete(plain, "big/big.csv", None).await.unwrap();
}

async fn pinned_operations_mean_the_pinned_upload(s: &dyn ObjectStore, b: ContractBuckets<'_>) {
    let (versioned, key) = (b.versioned, "pins/race.csv");
    s.put(versioned, key, b"valid".to_vec()).await.unwrap();
    let first = s.head(versioned, key).await.unwrap().unwrap().pin.unwrap();
    s.put(versioned, key, b"invalid!!".to_vec()).await.unwrap();
    let second = s.head(versioned, key).await.unwrap().unwrap().pin.unwrap();
    assert_ne!(first, second);
    // Where uploads are kept, each is a version of its own, even of the same bytes.
    s.put(versioned, "pins/same.csv", b"same".to_vec())
        .await
        .unwrap();
    let once = s.head(versioned, "pins/same.csv").await.unwrap().unwrap();
    s.put(versioned, "pins/same.csv", b"same".to_vec())
        .await
        .unwrap();
    let twice = s.head(versioned, "pins/same.csv").await.unwrap().unwrap();
    assert_ne!(once.version, twice.version, "same bytes, new upload");
    s.delete(versioned, "pins/same.csv", None).await.unwrap();

    assert_eq!(
        read(s, versioned, key, Some(&first)).await.unwrap(),
        b"valid"
    );
    assert_eq!(
        read(s, versioned, key, Some(&second)).await.unwrap(),
        b"invalid!!"
    );
    assert_eq!(text(s, versioned, key).await, "invalid!!");
    s.copy(versioned, key, Some(&first), b.plain, "pins/first.csv")
        .await
        .unwrap();
    assert_eq!(text(s, b.plain, "pins/first.csv").await, "valid");

    // A pinned delete removes those bytes only (what the key holds after it is the backend's).
    s.delete(versioned, key, Some(&second)).await.unwrap();
    not_found(
        read(s, versioned, key, Some(&second)).await,
        "a deleted pinned upload",
    );
    assert_eq!(
        read(s, versioned, key, Some(&first)).await.unwrap(),
        b"valid"
    );
    // It spares a newer upload of the key, and deleting the gone upload again is harmless.
    s.put(versioned, key, b"third".to_vec()).await.unwrap();
    s.delete(versioned, key, Some(&first)).await.unwrap();
    s.delete(versioned, key, Some(&first)).await.unwrap();
    assert_eq!(text(s, versioned, key).await, "third");
    not_found(
        read(s, versioned, key, Some(&first)).await,
        "a deleted pinned upload",
    );
    not_found(
        s.copy(versioned, key, Some(&first), b.plain, "pins/gone.csv")
            .await,
        "a copy of a deleted pinned upload",
    );
    s.delete(versioned, key, None).await.unwrap();
    s.delete(b.plain, "pins/first.csv", None).await.unwrap();
}

async fn a_pin_the_bucket_no_longer_holds_is_not_found(s: &dyn ObjectStore, plain: &str) {
    s.put(plain, "k.csv", b"one".to_vec()).await.unwrap();
    let one = s.head(plain, "k.csv").await.unwrap().unwrap().pin.unwrap();
    assert_eq!(read(s, plain, "k.csv", Some(&one)).await.unwrap(), b"one");
    s.put(plain, "k.csv", b"two".to_vec()).await.unwrap();
    // Never the newer bytes under the old pin.
    not_found(
        read(s, plain, "k.csv", Some(&one)).await,
        "an overwritten upload",
    );
    not_found(
        s.copy(plain, "k.csv", Some(&one), plain, "k2.csv").await,
        "a copy of an overwritten upload",
    );
    s.delete(plain, "k.csv", Some(&one)).await.unwrap();
    assert_eq!(
        text(s, plain, "k.csv").await,
        "two",
        "a pinned delete spares the newer upload"
    );
    s.delete(plain, "k.csv", None).await.unwrap();
}

async fn listings_follow_pages_and_skip_deleted_keys(s: &dyn ObjectStore, versioned: &str) {
    // More keys than a page holds (moto pages versions by 100, S3 by 1000), written out of order,
    // one of them twice: a listing shows each key once, with its latest upload.
    for i in (0..130).rev() {
        s.put(versioned, &format!("many/{i:03}"), vec![b'x'; i])
            .await
            .unwrap();
    }
    s.put(versioned, "many/000", b"again".to_vec())
        .await
        .unwrap();
    s.put(versioned, "many/gone", b"w".to_vec()).await.unwrap();
    s.delete(versioned, "many/gone", None).await.unwrap();
    let listed = s.list(versioned, "many/").await.unwrap();
    assert_eq!(listed.len(), 130, "deleted keys are not listed");
    for (i, m) in listed.iter().enumerate() {
        assert_eq!(m.key, format!("many/{i:03}"));
    }
    assert_eq!(listed[0].size, 5, "the latest upload of many/000");
    assert_eq!(listed[129].size, 129);
    same(
        &listed[0],
        &s.head(versioned, "many/000").await.unwrap().unwrap(),
    );
}
