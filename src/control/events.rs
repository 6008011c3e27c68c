//! The event log in control.db: one row per event and tenant, holding the
//! notification JSON in the shape SES publishes
//! (`{eventType, mail, <object named after the event>}`). SES's sending
//! events (Send, Reject, Delivery, Bounce, ...) and sesame's own
//! (VirusDetected) share the table and the shape, so one reader serves all.

use std::collections::BTreeMap;

use anyhow::Context;
use mail_parser::{Address, MessageParser};
use rusqlite::params;
use serde::Serialize;
use serde_json::{Value, json};

use super::Control;
use crate::proto::headers::HeaderBlock;
use crate::types::{EmailAddress, unix_now};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events(
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    message_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_message ON events(tenant, message_id);
";

/// SES stops listing headers past this many bytes and says so.
const HEADERS_LIMIT: usize = 10 * 1024;

/// One stored event, as `events list --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct EventRecord {
    pub id: i64,
    pub tenant: String,
    pub message_id: String,
    pub event_type: String,
    pub created_at: i64,
    /// The SES-shaped notification.
    pub event: Value,
}

/// What the `mail` object of an event describes.
pub struct MailInfo<'a> {
    pub message_id: &'a str,
    /// When sesame received the message, in Unix milliseconds.
    pub timestamp_ms: i64,
    /// The envelope sender.
    pub source: &'a str,
    pub destination: &'a [String],
    /// The message; only its header block is read.
    pub raw: &'a [u8],
    /// Tags besides `ses:from-domain`, which is derived from `source`.
    pub tags: BTreeMap<String, Vec<String>>,
}

impl MailInfo<'_> {
    pub fn to_json(&self) -> Value {
        let block = HeaderBlock::parse(self.raw);
        let fields: Vec<(&str, String)> = block
            .fields
            .iter()
            .map(|field| {
                let text = String::from_utf8_lossy(&self.raw[field.start..field.end]);
                let value = text.split_once(':').map_or("", |(_, v)| v);
                (
                    field.name.as_str(),
                    value.replace("\r\n", "").trim().to_string(),
                )
            })
            .collect();
        let mut headers = Vec::new();
        let mut used = 0;
        let mut truncated = false;
        for (name, value) in &fields {
            used += name.len() + value.len();
            if used > HEADERS_LIMIT {
                truncated = true;
                break;
            }
            headers.push(json!({"name": name, "value": value}));
        }
        let date = fields
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("Date"))
            .map(|(_, value)| value.as_str());
        let mut tags = self.tags.clone();
        if let Some(addr) = EmailAddress::parse(self.source) {
            tags.insert("ses:from-domain".into(), vec![addr.domain().to_string()]);
        }
        json!({
            "timestamp": iso8601_millis(self.timestamp_ms),
            "messageId": self.message_id,
            "source": self.source,
            "destination": self.destination,
            "headersTruncated": truncated,
            "headers": headers,
            "commonHeaders": common_headers(block.raw(), date),
            "tags": tags,
        })
    }
}

/// The fields SES lifts out of the headers; absent ones are left out. The
/// date is passed through as written, as SES does.
fn common_headers(raw_headers: &[u8], date: Option<&str>) -> Value {
    let mut common = serde_json::Map::new();
    let Some(parsed) = MessageParser::new().parse_headers(raw_headers) else {
        return Value::Object(common);
    };
    let list = |a: Option<&Address<'_>>| -> Vec<String> {
        a.map(|a| {
            a.iter()
                .filter_map(|addr| {
                    let mailbox = addr.address.as_deref()?;
                    Some(match addr.name.as_deref() {
                        Some(name) => format!("{name} <{mailbox}>"),
                        None => mailbox.to_string(),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
    };
    for (key, addrs) in [("from", list(parsed.from())), ("to", list(parsed.to()))] {
        if !addrs.is_empty() {
            common.insert(key.into(), json!(addrs));
        }
    }
    if let Some(id) = parsed.message_id() {
        common.insert("messageId".into(), json!(id));
    }
    if let Some(subject) = parsed.subject() {
        common.insert("subject".into(), json!(subject));
    }
    if let Some(date) = date {
        common.insert("date".into(), json!(date));
    }
    Value::Object(common)
}

/// `{eventType, mail, <eventType in camelCase>: detail}`, as SES nests it
/// (`Reject` carries `reject`, `DeliveryDelay` carries `deliveryDelay`).
pub fn ses_event(event_type: &str, mail: Value, detail: Value) -> Value {
    let mut key = event_type.to_string();
    if let Some(first) = key.get_mut(..1) {
        first.make_ascii_lowercase();
    }
    let mut event = serde_json::Map::new();
    event.insert("eventType".into(), json!(event_type));
    event.insert("mail".into(), mail);
    event.insert(key, detail);
    Value::Object(event)
}

/// `2016-01-27T14:59:38.237Z`, the timestamp format of SES events.
pub fn iso8601_millis(ms: i64) -> String {
    let seconds = mail_parser::DateTime::from_timestamp(ms.div_euclid(1000)).to_rfc3339();
    let millis = ms.rem_euclid(1000);
    match seconds.strip_suffix('Z') {
        Some(base) => format!("{base}.{millis:03}Z"),
        None => seconds,
    }
}

impl Control {
    /// Stores an event built by `ses_event`; its type and message id are
    /// read from the JSON so that the columns cannot disagree with it.
    pub fn record_event(&self, tenant: &str, event: &Value) -> anyhow::Result<i64> {
        let event_type = event["eventType"]
            .as_str()
            .context("event without eventType")?;
        let message_id = event["mail"]["messageId"]
            .as_str()
            .context("event without mail.messageId")?;
        let mut db = self.db();
        let tx = db.transaction()?;
        tx.execute(
            "INSERT INTO events(tenant, message_id, event_type, created_at, json)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                tenant,
                message_id,
                event_type,
                unix_now(),
                event.to_string()
            ],
        )
        .with_context(|| format!("recording a {event_type} event for tenant '{tenant}'"))?;
        let id = tx.last_insert_rowid();
        // Webhook POSTs are queued with the event, so neither exists alone.
        super::config_sets::enqueue_webhooks(&tx, tenant, event)
            .with_context(|| format!("queueing webhooks for a {event_type} event"))?;
        tx.commit()?;
        Ok(id)
    }

    /// A tenant's events, oldest first, optionally for one message.
    pub fn events(
        &self,
        tenant: &str,
        message_id: Option<&str>,
    ) -> anyhow::Result<Vec<EventRecord>> {
        let db = self.db();
        let mut stmt = db.prepare(
            "SELECT id, tenant, message_id, event_type, created_at, json FROM events
             WHERE tenant = ?1 AND (?2 IS NULL OR message_id = ?2) ORDER BY id",
        )?;
        let rows = stmt.query_map(params![tenant, message_id], |r| {
            let json: String = r.get(5)?;
            Ok(EventRecord {
                id: r.get(0)?,
                tenant: r.get(1)?,
                message_id: r.get(2)?,
                event_type: r.get(3)?,
                created_at: r.get(4)?,
                event: serde_json::from_str(&json).unwrap_or(Value::Null),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAW: &[u8] = b"From: App <app@acme.test>\r\nTo: a@x.test, B <b@y.test>\r\n\
        Subject: Hello\r\n there\r\nMessage-ID: <m1@acme.test>\r\n\
        Date: Wed, 27 Jan 2016 14:58:45 +0000\r\n\r\nbody\r\n";

    fn mail() -> Value {
        MailInfo {
            message_id: "0107-id",
            timestamp_ms: 1_453_906_778_237,
            source: "app@acme.test",
            destination: &["a@x.test".to_string()],
            raw: RAW,
            tags: BTreeMap::from([("ses:source-ip".into(), vec!["127.0.0.1".into()])]),
        }
        .to_json()
    }

    #[test]
    fn mail_object_has_the_ses_shape() {
        let m = mail();
        assert_eq!(m["timestamp"], "2016-01-27T14:59:38.237Z");
        assert_eq!(m["messageId"], "0107-id");
        assert_eq!(m["destination"], json!(["a@x.test"]));
        assert_eq!(m["headersTruncated"], false);
        assert_eq!(
            m["headers"][2],
            json!({"name": "Subject", "value": "Hello there"})
        );
        assert_eq!(
            m["commonHeaders"],
            json!({
                "from": ["App <app@acme.test>"],
                "to": ["a@x.test", "B <b@y.test>"],
                "messageId": "m1@acme.test",
                "subject": "Hello there",
                "date": "Wed, 27 Jan 2016 14:58:45 +0000",
            })
        );
        assert_eq!(m["tags"]["ses:from-domain"], json!(["acme.test"]));
        assert_eq!(m["tags"]["ses:source-ip"], json!(["127.0.0.1"]));
    }

    #[test]
    fn huge_headers_are_truncated_and_say_so() {
        let mut raw = Vec::new();
        for i in 0..200 {
            raw.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "v".repeat(80)).as_bytes());
        }
        raw.extend_from_slice(b"\r\nbody\r\n");
        let m = MailInfo {
            message_id: "id",
            timestamp_ms: 0,
            source: "",
            destination: &[],
            raw: &raw,
            tags: BTreeMap::new(),
        }
        .to_json();
        assert_eq!(m["headersTruncated"], true);
        assert!(m["headers"].as_array().unwrap().len() < 200);
    }

    #[test]
    fn events_are_recorded_and_listed_per_tenant_and_message() {
        let dir = tempfile::tempdir().unwrap();
        let control = Control::open(dir.path()).unwrap();
        control.create_tenant("acme").unwrap();
        control.create_tenant("beta").unwrap();
        let reject = ses_event("Reject", mail(), json!({"reason": "Bad content"}));
        assert_eq!(reject["reject"]["reason"], "Bad content");
        control.record_event("acme", &reject).unwrap();
        let other = ses_event("DeliveryDelay", mail(), json!({}));
        assert!(other.get("deliveryDelay").is_some());
        control.record_event("acme", &other).unwrap();

        let all = control.events("acme", None).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].event_type, "Reject");
        assert_eq!(all[0].message_id, "0107-id");
        assert_eq!(all[0].event, reject);
        assert_eq!(control.events("acme", Some("0107-id")).unwrap().len(), 2);
        assert!(control.events("acme", Some("other")).unwrap().is_empty());
        assert!(control.events("beta", None).unwrap().is_empty());
        assert!(control.record_event("nobody", &reject).is_err());
        assert!(control.record_event("acme", &json!({"mail": {}})).is_err());
    }
}
