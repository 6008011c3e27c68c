//! Inbound mail that SES received: its receipt rule wrote the message to
//! S3, and a notification on SQS says where (an S3 event notification, or
//! SES's SNS `Received` notification with an S3 action).
//!
//! The object is fetched and handed to the same inbound path as the MX
//! listener (`InboundSink`, implemented by the gateway), under the tenant
//! that `[[aws.inbound]]` maps its bucket and prefix to. The sesame message
//! id is derived from the object's location, and the queue treats a second
//! commit of the same (message id, tenant) as done, so a notification
//! handled twice (redelivery, or a crash between the commit and the SQS
//! delete) gives one message. The SQS message is deleted only after the
//! commit.
//!
//! A notification that can never succeed (unreadable, an unmapped bucket,
//! an object that is gone, mail refused for good) is logged and deleted;
//! the object stays in S3, so nothing is lost. Transient trouble (S3, the
//! queue, a 4xx from the inbound path) keeps it for another try.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::poller::{Disposition, unwrap_sns};
use super::settings::AwsConfig;
use crate::types::MessageId;

/// Set (to anything) only by tests: the worker stops dead after an
/// inbound commit, before the SQS delete, so that a test can SIGKILL it
/// in exactly that window.
pub const STALL_AFTER_COMMIT_ENV: &str = "SESAME_FAULT_STALL_AFTER_INGEST_COMMIT";

/// One stored message that a notification points to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMail {
    pub bucket: String,
    pub key: String,
    /// The envelope from SES's notification; S3 events carry none.
    pub envelope: Option<Envelope>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub mail_from: String,
    pub recipients: Vec<String>,
    /// SES's verdicts (`spamVerdict`, `virusVerdict`, `spfVerdict`,
    /// `dkimVerdict`, `dmarcVerdict`), kept with the message.
    pub ses_verdicts: Value,
}

/// What the inbound path is given.
#[derive(Debug, Clone)]
pub struct InboundMail {
    pub message_id: MessageId,
    pub tenant: String,
    /// Absent: the recipients are read from the message's headers.
    pub envelope: Option<Envelope>,
    pub body: Vec<u8>,
}

/// Why the inbound path did not take a message.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// Worth another try later.
    pub transient: bool,
    pub reason: String,
}

/// The MX listener's inbound path (scanning, checks, durable commit).
#[async_trait]
pub trait InboundSink: Send + Sync {
    /// Returns once the message is durable for its tenant (or was already).
    async fn ingest(&self, mail: InboundMail) -> Result<(), Refusal>;
}

/// The objects a notification names; an empty list for S3's test event.
pub fn parse_notification(body: &str) -> Result<Vec<StoredMail>, String> {
    let notice = unwrap_sns(body)?;
    if notice["Event"] == "s3:TestEvent" {
        return Ok(vec![]);
    }
    if let Some(records) = notice["Records"].as_array() {
        return records.iter().map(s3_record).collect();
    }
    if notice["notificationType"] == "Received" {
        return ses_received(&notice).map(|m| vec![m]);
    }
    Err("neither an S3 event nor an SES Received notification".into())
}

fn s3_record(record: &Value) -> Result<StoredMail, String> {
    let bucket = record["s3"]["bucket"]["name"].as_str();
    let key = record["s3"]["object"]["key"].as_str();
    match (bucket, key) {
        (Some(bucket), Some(key)) => Ok(StoredMail {
            bucket: bucket.to_string(),
            key: s3_key_decode(key)?,
            envelope: None,
        }),
        _ => Err("S3 record without s3.bucket.name and s3.object.key".into()),
    }
}

fn ses_received(notice: &Value) -> Result<StoredMail, String> {
    let action = &notice["receipt"]["action"];
    if action["type"] != "S3" {
        return Err(format!(
            "Received notification of a {} action, not S3",
            action["type"]
        ));
    }
    let (Some(bucket), Some(key)) = (action["bucketName"].as_str(), action["objectKey"].as_str())
    else {
        return Err("S3 action without bucketName and objectKey".into());
    };
    let recipients: Vec<String> = notice["receipt"]["recipients"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_str().map(str::to_string))
        .collect();
    Ok(StoredMail {
        bucket: bucket.to_string(),
        key: key.to_string(),
        envelope: (!recipients.is_empty()).then(|| Envelope {
            mail_from: notice["mail"]["source"].as_str().unwrap_or("").to_string(),
            recipients,
            ses_verdicts: verdicts(&notice["receipt"]),
        }),
    })
}

fn verdicts(receipt: &Value) -> Value {
    let mut verdicts = serde_json::Map::new();
    for key in [
        "spamVerdict",
        "virusVerdict",
        "spfVerdict",
        "dkimVerdict",
        "dmarcVerdict",
    ] {
        if let Some(status) = receipt[key]["status"].as_str() {
            verdicts.insert(key.to_string(), Value::from(status));
        }
    }
    Value::Object(verdicts)
}

/// S3 event keys are URL-encoded, with `+` for a space.
fn s3_key_decode(key: &str) -> Result<String, String> {
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = key
                    .get(i + 1..i + 3)
                    .ok_or("truncated %-escape in S3 key")?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| "bad %-escape in S3 key")?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| "S3 key is not UTF-8".to_string())
}

/// The sesame id of a stored message: the same object always gets the
/// same id, shaped like every other sesame id.
pub fn message_id_for(bucket: &str, key: &str) -> MessageId {
    let digest = hex::encode(Sha256::digest(format!("s3://{bucket}/{key}")));
    let d = |range: std::ops::Range<usize>| &digest[range];
    MessageId::from_stored(format!(
        "0107{}-{}-{}-{}-{}-{}-000000",
        d(0..12),
        d(12..20),
        d(20..24),
        d(24..28),
        d(28..32),
        d(32..44)
    ))
}

/// Fetches objects and feeds the inbound path.
pub struct Ingest {
    pub s3: aws_sdk_s3::Client,
    pub config: Arc<AwsConfig>,
    pub sink: Arc<dyn InboundSink>,
    pub stall_after_commit: bool,
}

impl Ingest {
    pub async fn handle(&self, body: &str) -> Disposition {
        let objects = match parse_notification(body) {
            Ok(objects) => objects,
            Err(reason) => {
                tracing::warn!(reason, "inbound notification dropped");
                return Disposition::Delete;
            }
        };
        let mut disposition = Disposition::Delete;
        for object in objects {
            if self.ingest_object(object).await == Disposition::Keep {
                disposition = Disposition::Keep;
            }
        }
        disposition
    }

    async fn ingest_object(&self, object: StoredMail) -> Disposition {
        let StoredMail {
            bucket,
            key,
            envelope,
        } = object;
        let Some(mapping) = self.config.tenant_for_object(&bucket, &key) else {
            tracing::error!(
                bucket,
                key,
                "inbound object in no [[aws.inbound]] bucket/prefix; left in S3"
            );
            return Disposition::Delete;
        };
        let message_id = message_id_for(&bucket, &key);
        let body = match self.fetch(&bucket, &key).await {
            Ok(Some(body)) => body,
            Ok(None) => {
                tracing::error!(
                    bucket,
                    key,
                    "inbound object does not exist; notification dropped"
                );
                return Disposition::Delete;
            }
            Err(e) => {
                tracing::warn!(bucket, key, error = %format!("{e:#}"), "inbound object not fetched; will retry");
                return Disposition::Keep;
            }
        };
        let mail = InboundMail {
            message_id: message_id.clone(),
            tenant: mapping.tenant.clone(),
            envelope,
            body,
        };
        match self.sink.ingest(mail).await {
            Ok(()) => {
                tracing::info!(message_id = %message_id, tenant = %mapping.tenant, bucket, key, "inbound message from S3 committed");
                if self.stall_after_commit {
                    tracing::warn!(message_id = %message_id, "fault injection: stalling after the inbound commit, before the SQS delete");
                    std::future::pending::<()>().await;
                }
                Disposition::Delete
            }
            Err(refusal) if refusal.transient => {
                tracing::warn!(message_id = %message_id, bucket, key, reason = refusal.reason, "inbound message deferred; will retry");
                Disposition::Keep
            }
            Err(refusal) => {
                tracing::error!(message_id = %message_id, bucket, key, reason = refusal.reason, "inbound message refused; left in S3");
                Disposition::Delete
            }
        }
    }

    /// `Ok(None)` when the object does not exist.
    async fn fetch(&self, bucket: &str, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let output = match self.s3.get_object().bucket(bucket).key(key).send().await {
            Ok(output) => output,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
                return Ok(None);
            }
            Err(e) => return Err(anyhow::Error::new(e).context("S3 GetObject")),
        };
        let bytes = output.body.collect().await?.into_bytes();
        Ok(Some(bytes.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn s3_events_name_their_objects_with_decoded_keys() {
        let event = json!({"Records": [{"eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": "mail"}, "object": {"key": "acme/a+b%2Fc"}}}]});
        let objects = parse_notification(&event.to_string()).unwrap();
        assert_eq!(objects.len(), 1);
        assert_eq!(objects[0].bucket, "mail");
        assert_eq!(objects[0].key, "acme/a b/c");
        assert_eq!(objects[0].envelope, None);
        assert!(
            parse_notification(r#"{"Event":"s3:TestEvent"}"#)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn ses_received_notifications_carry_the_envelope() {
        let inner = json!({"notificationType": "Received",
            "mail": {"messageId": "abc", "source": "x@y.test"},
            "receipt": {"recipients": ["a@acme.test"], "spfVerdict": {"status": "PASS"},
                        "action": {"type": "S3", "bucketName": "mail", "objectKey": "acme/abc"}}});
        let sns = json!({"Type": "Notification", "Message": inner.to_string()}).to_string();
        let objects = parse_notification(&sns).unwrap();
        assert_eq!(objects[0].key, "acme/abc");
        let envelope = objects[0].envelope.clone().unwrap();
        assert_eq!(envelope.mail_from, "x@y.test");
        assert_eq!(envelope.recipients, ["a@acme.test"]);
        assert_eq!(envelope.ses_verdicts, json!({"spfVerdict": "PASS"}));
        let lambda = inner.to_string().replace("\"S3\"", "\"Lambda\"");
        assert!(parse_notification(&lambda).is_err());
        assert!(parse_notification("{}").is_err());
    }

    #[test]
    fn the_same_object_always_gets_the_same_id() {
        let a = message_id_for("mail", "acme/1");
        assert_eq!(a.as_str(), message_id_for("mail", "acme/1").as_str());
        assert_ne!(a.as_str(), message_id_for("mail", "acme/2").as_str());
        let parts: Vec<&str> = a.as_str().split('-').collect();
        assert_eq!(parts.len(), 7);
        assert_eq!(parts[0].len(), 16);
        assert_eq!(parts[6], "000000");
    }
}
