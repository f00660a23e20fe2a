//! Object-created notifications, in the three shapes AWS delivers them to a queue: S3's own event
//! (`{"Records":[...]}`, keys form-URL-encoded), the same wrapped in an SNS notification, and an
//! EventBridge "Object Created" event. Parsing is pure; the handler decides what to do with the result.

use choreo_domain::Pin;
use serde::Deserialize;

/// One created object, its key decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectCreated {
    pub bucket: String,
    pub key: String,
    pub size: u64,
    /// Version id, else sequencer, else ETag: whatever names this upload.
    pub version: String,
    /// How later operations name these bytes: the version id, else the ETag.
    pub pin: Option<Pin>,
}

/// What a notification message said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notification {
    /// S3's `s3:TestEvent`, sent when notifications are configured: nothing to do.
    Test,
    /// Created objects (other S3 event names in the same message are left out).
    Created(Vec<ObjectCreated>),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed notification: {0}")]
pub struct MalformedNotification(pub String);

pub fn parse(body: &str) -> Result<Notification, MalformedNotification> {
    let value: serde_json::Value =
        serde_json::from_str(body).map_err(|e| MalformedNotification(e.to_string()))?;
    parse_value(value, 0)
}

fn parse_value(value: serde_json::Value, depth: u8) -> Result<Notification, MalformedNotification> {
    let bad = |e: serde_json::Error| MalformedNotification(e.to_string());
    if value.get("Event").and_then(|e| e.as_str()) == Some("s3:TestEvent") {
        return Ok(Notification::Test);
    }
    if value.get("Records").is_some() {
        let event: S3Event = serde_json::from_value(value).map_err(bad)?;
        let created = event
            .records
            .into_iter()
            .filter(|r| r.event_name.starts_with("ObjectCreated:"))
            .map(|r| {
                let o = r.s3.object;
                Ok(ObjectCreated {
                    bucket: r.s3.bucket.name,
                    key: decode_key(&o.key)?,
                    size: o.size.unwrap_or(0),
                    pin: Pin::from_parts(o.version_id.as_deref(), o.e_tag.as_deref()),
                    version: o.version_id.or(o.sequencer).or(o.e_tag).unwrap_or_default(),
                })
            })
            .collect::<Result<_, MalformedNotification>>()?;
        return Ok(Notification::Created(created));
    }
    if value.get("Type").and_then(|t| t.as_str()) == Some("Notification") && depth == 0 {
        let inner = value
            .get("Message")
            .and_then(|m| m.as_str())
            .ok_or_else(|| MalformedNotification("SNS notification without Message".into()))?;
        let inner: serde_json::Value =
            serde_json::from_str(inner).map_err(|e| MalformedNotification(e.to_string()))?;
        return parse_value(inner, depth + 1);
    }
    if value.get("detail-type").is_some() {
        let event: EventBridgeEvent = serde_json::from_value(value).map_err(bad)?;
        if event.detail_type != "Object Created" {
            return Ok(Notification::Created(Vec::new()));
        }
        let o = event.detail.object;
        // EventBridge carries keys as they are, not URL-encoded.
        return Ok(Notification::Created(vec![ObjectCreated {
            bucket: event.detail.bucket.name,
            key: o.key,
            size: o.size.unwrap_or(0),
            pin: Pin::from_parts(o.version_id.as_deref(), o.etag.as_deref()),
            version: o.version_id.or(o.sequencer).or(o.etag).unwrap_or_default(),
        }]));
    }
    Err(MalformedNotification(
        "neither an S3 event, an SNS notification nor an EventBridge event".into(),
    ))
}

/// S3 form-URL-encodes keys in notifications: `+` is a space, `%xx` a byte of UTF-8.
pub fn decode_key(raw: &str) -> Result<String, MalformedNotification> {
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(|k| k.into_owned())
        .map_err(|_| MalformedNotification(format!("key {raw:?} is not UTF-8 once decoded")))
}

#[derive(Deserialize)]
struct S3Event {
    #[serde(rename = "Records")]
    records: Vec<S3Record>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct S3Record {
    event_name: String,
    s3: S3Entity,
}

#[derive(Deserialize)]
struct S3Entity {
    bucket: Bucket,
    object: S3Object,
}

#[derive(Deserialize)]
struct Bucket {
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct S3Object {
    key: String,
    size: Option<u64>,
    e_tag: Option<String>,
    version_id: Option<String>,
    sequencer: Option<String>,
}

#[derive(Deserialize)]
struct EventBridgeEvent {
    #[serde(rename = "detail-type")]
    detail_type: String,
    detail: EventBridgeDetail,
}

#[derive(Deserialize)]
struct EventBridgeDetail {
    bucket: Bucket,
    object: EventBridgeObject,
}

#[derive(Deserialize)]
struct EventBridgeObject {
    key: String,
    size: Option<u64>,
    etag: Option<String>,
    #[serde(rename = "version-id")]
    version_id: Option<String>,
    sequencer: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIRECT: &str = r#"{"Records":[
      {"eventVersion":"2.1","eventSource":"aws:s3","eventName":"ObjectCreated:Put",
       "s3":{"bucket":{"name":"in"},"object":{"key":"daily/a+b%C3%BC.csv","size":12,"eTag":"e1","sequencer":"0055"}}},
      {"eventVersion":"2.1","eventSource":"aws:s3","eventName":"ObjectRemoved:Delete",
       "s3":{"bucket":{"name":"in"},"object":{"key":"daily/gone.csv","sequencer":"0056"}}},
      {"eventVersion":"2.1","eventSource":"aws:s3","eventName":"ObjectCreated:CompleteMultipartUpload",
       "s3":{"bucket":{"name":"in"},"object":{"key":"daily/c%2Bd.csv","size":3,"versionId":"v9","sequencer":"0057"}}}]}"#;

    #[test]
    fn direct_s3_events_decode_keys_and_keep_versions() {
        let Notification::Created(objs) = parse(DIRECT).unwrap() else {
            panic!("expected objects")
        };
        assert_eq!(objs.len(), 2, "the removal is left out");
        assert_eq!(objs[0].key, "daily/a bü.csv");
        assert_eq!(objs[0].version, "0055");
        assert_eq!(objs[0].size, 12);
        assert_eq!(objs[1].key, "daily/c+d.csv");
        assert_eq!(objs[1].version, "v9");
    }

    #[test]
    fn sns_wrapped_and_test_events() {
        let wrapped = serde_json::json!({"Type":"Notification","MessageId":"m","Message": DIRECT})
            .to_string();
        assert!(matches!(parse(&wrapped).unwrap(), Notification::Created(v) if v.len() == 2));
        let test = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"in"}"#;
        assert_eq!(parse(test).unwrap(), Notification::Test);
        let wrapped_test = serde_json::json!({"Type":"Notification","Message": test}).to_string();
        assert_eq!(parse(&wrapped_test).unwrap(), Notification::Test);
    }

    #[test]
    fn eventbridge_object_created() {
        let eb = r#"{"version":"0","detail-type":"Object Created","source":"aws.s3",
          "detail":{"bucket":{"name":"in"},"object":{"key":"monthly/x y.jsonl","size":5,"etag":"e","sequencer":"s1"}}}"#;
        let Notification::Created(objs) = parse(eb).unwrap() else {
            panic!()
        };
        assert_eq!(objs[0].key, "monthly/x y.jsonl");
        assert_eq!(objs[0].version, "s1");
    }

    #[test]
    fn garbage_is_malformed() {
        assert!(parse("not json").is_err());
        assert!(parse(r#"{"hello":"world"}"#).is_err());
        assert!(parse(r#"{"Records":[{"eventName":"ObjectCreated:Put"}]}"#).is_err());
        assert!(parse(r#"{"Records":[{"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"%FF"}}}]}"#).is_err());
    }
}
