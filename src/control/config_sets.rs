//! Configuration sets (SES's `X-SES-CONFIGURATION-SET`): per tenant, a
//! name, the outbound `TlsPolicy`, and event destinations (webhooks with an
//! HMAC secret and the event types they want).
//!
//! Every event that `record_event` stores for a message sent with a set is
//! also queued, in the same transaction, in `webhook_outbox` once per
//! matching destination: the outbox is as durable as the event log, and a
//! separate task (`delivery::webhooks`) empties it, so a slow or dead
//! endpoint never holds up delivery.

use anyhow::{Context, bail};
use rand::RngCore;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde_json::Value;

use super::Control;
use super::seal::Sealer;
use crate::types::unix_now;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS configuration_sets(
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    tls_policy TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY(tenant, name)
);
CREATE TABLE IF NOT EXISTS event_destinations(
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    config_set TEXT NOT NULL,
    url TEXT NOT NULL,
    sealed_secret BLOB NOT NULL,
    event_types TEXT NOT NULL,
    FOREIGN KEY(tenant, config_set) REFERENCES configuration_sets(tenant, name) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS webhook_outbox(
    id INTEGER PRIMARY KEY,
    destination INTEGER NOT NULL REFERENCES event_destinations(id) ON DELETE CASCADE,
    body TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS webhook_outbox_due ON webhook_outbox(next_attempt_at);
";

/// The event types a destination can ask for: the CLI's spelling and SES's
/// `eventType`.
pub const EVENT_TYPES: &[(&str, &str)] = &[
    ("send", "Send"),
    ("reject", "Reject"),
    ("delivery", "Delivery"),
    ("bounce", "Bounce"),
    ("complaint", "Complaint"),
    ("deliverydelay", "DeliveryDelay"),
];

/// SES's `TlsPolicy` of a configuration set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TlsPolicy {
    /// Outbound mail only leaves over TLS.
    Require,
    /// TLS when the receiver offers it (the default).
    Optional,
}

impl TlsPolicy {
    pub fn parse(s: &str) -> Option<TlsPolicy> {
        match s.to_ascii_lowercase().as_str() {
            "require" => Some(TlsPolicy::Require),
            "optional" => Some(TlsPolicy::Optional),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            TlsPolicy::Require => "REQUIRE",
            TlsPolicy::Optional => "OPTIONAL",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct EventDestination {
    pub url: String,
    /// SES `eventType` names.
    pub events: Vec<String>,
    /// Only in what `config-set create` prints, once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConfigSet {
    pub name: String,
    pub tls_policy: TlsPolicy,
    pub event_destinations: Vec<EventDestination>,
}

/// A webhook POST that is due, claimed for one attempt.
#[derive(Debug, Clone)]
pub struct DueWebhook {
    pub id: i64,
    pub url: String,
    pub secret: String,
    pub body: String,
    pub attempts: u32,
    pub created_at: i64,
}

/// SES: up to 64 letters, digits, `_` and `-`.
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !ok {
        bail!("configuration set name '{name}' must be 1-64 letters, digits, '_' or '-'");
    }
    Ok(())
}

/// `send,bounce` → `["Send", "Bounce"]`, refusing unknown names.
pub fn parse_event_types(list: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let Some((_, ses)) = EVENT_TYPES
            .iter()
            .find(|(cli, _)| cli.eq_ignore_ascii_case(word))
        else {
            let known: Vec<&str> = EVENT_TYPES.iter().map(|(c, _)| *c).collect();
            bail!("unknown event type '{word}' (known: {})", known.join(", "));
        };
        if !out.iter().any(|e| e == ses) {
            out.push(ses.to_string());
        }
    }
    if out.is_empty() {
        bail!("--events needs at least one event type");
    }
    Ok(out)
}

fn check_url(url: &str) -> anyhow::Result<()> {
    let parsed: reqwest::Url = url
        .parse()
        .with_context(|| format!("webhook '{url}' is not a URL"))?;
    if !["http", "https"].contains(&parsed.scheme()) || parsed.host_str().is_none() {
        bail!("webhook '{url}' must be an http:// or https:// URL");
    }
    Ok(())
}

impl Control {
    /// Creates a set, with one webhook destination when given; the
    /// destination's signing secret is generated here and only returned now.
    pub fn create_config_set(
        &self,
        tenant: &str,
        name: &str,
        tls_policy: TlsPolicy,
        webhook: Option<(&str, Vec<String>)>,
    ) -> anyhow::Result<ConfigSet> {
        check_name(name)?;
        self.require_tenant(tenant)?;
        if let Some((url, _)) = &webhook {
            check_url(url)?;
        }
        let sealer = Sealer::load(self.data_dir())?;
        let mut db = self.db();
        let tx = db.transaction()?;
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO configuration_sets(tenant, name, tls_policy, created_at)
             VALUES (?1, ?2, ?3, ?4)",
            params![tenant, name, tls_policy.as_str(), unix_now()],
        )?;
        if inserted == 0 {
            bail!("configuration set '{name}' already exists for tenant '{tenant}'");
        }
        let mut destinations = Vec::new();
        if let Some((url, events)) = webhook {
            let mut key = [0u8; 32];
            rand::thread_rng().fill_bytes(&mut key);
            let secret = format!("whsec_{}", hex::encode(key));
            tx.execute(
                "INSERT INTO event_destinations(tenant, config_set, url, sealed_secret, event_types)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![tenant, name, url, sealer.seal(secret.as_bytes()), events.join(",")],
            )?;
            destinations.push(EventDestination {
                url: url.to_string(),
                events,
                secret: Some(secret),
            });
        }
        tx.commit()?;
        Ok(ConfigSet {
            name: name.to_string(),
            tls_policy,
            event_destinations: destinations,
        })
    }

    pub fn config_sets(&self, tenant: &str) -> anyhow::Result<Vec<ConfigSet>> {
        self.require_tenant(tenant)?;
        let names: Vec<String> = {
            let db = self.db();
            let mut stmt =
                db.prepare("SELECT name FROM configuration_sets WHERE tenant = ?1 ORDER BY name")?;
            stmt.query_map([tenant], |r| r.get(0))?
                .collect::<Result<_, _>>()?
        };
        let mut out = Vec::new();
        for name in names {
            out.extend(self.config_set(tenant, &name)?);
        }
        Ok(out)
    }

    pub fn config_set(&self, tenant: &str, name: &str) -> anyhow::Result<Option<ConfigSet>> {
        let db = self.db();
        let policy: Option<String> = db
            .query_row(
                "SELECT tls_policy FROM configuration_sets WHERE tenant = ?1 AND name = ?2",
                [tenant, name],
                |r| r.get(0),
            )
            .optional()?;
        let Some(policy) = policy else {
            return Ok(None);
        };
        let mut stmt = db.prepare(
            "SELECT url, event_types FROM event_destinations
             WHERE tenant = ?1 AND config_set = ?2 ORDER BY id",
        )?;
        let destinations = stmt
            .query_map([tenant, name], |r| {
                let events: String = r.get(1)?;
                Ok(EventDestination {
                    url: r.get(0)?,
                    events: events.split(',').map(str::to_string).collect(),
                    secret: None,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(Some(ConfigSet {
            name: name.to_string(),
            tls_policy: TlsPolicy::parse(&policy).unwrap_or(TlsPolicy::Optional),
            event_destinations: destinations,
        }))
    }

    /// Claims up to `limit` due webhook POSTs: each is pushed `lease_secs`
    /// into the future, so that it is neither sent twice at once nor lost if
    /// the process dies mid-POST (it comes due again after the lease).
    pub fn claim_due_webhooks(
        &self,
        now: i64,
        limit: usize,
        lease_secs: i64,
    ) -> anyhow::Result<Vec<DueWebhook>> {
        let sealer = Sealer::load(self.data_dir())?;
        let mut db = self.db();
        let tx = db.transaction()?;
        let rows: Vec<(i64, String, Vec<u8>, String, u32, i64)> = {
            let mut stmt = tx.prepare(
                "SELECT o.id, d.url, d.sealed_secret, o.body, o.attempts, o.created_at
                 FROM webhook_outbox o JOIN event_destinations d ON d.id = o.destination
                 WHERE o.next_attempt_at <= ?1 ORDER BY o.next_attempt_at, o.id LIMIT ?2",
            )?;
            stmt.query_map(params![now, limit as i64], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })?
            .collect::<Result<_, _>>()?
        };
        let mut due = Vec::with_capacity(rows.len());
        for (id, url, sealed, body, attempts, created_at) in rows {
            tx.execute(
                "UPDATE webhook_outbox SET next_attempt_at = ?2 WHERE id = ?1",
                params![id, now + lease_secs],
            )?;
            let secret = sealer
                .open(&sealed)
                .and_then(|s| String::from_utf8(s).context("secret is not UTF-8"))
                .with_context(|| format!("webhook secret of outbox row {id}"))?;
            due.push(DueWebhook {
                id,
                url,
                secret,
                body,
                attempts,
                created_at,
            });
        }
        tx.commit()?;
        Ok(due)
    }

    /// The endpoint took it (2xx), or it was given up on: gone.
    pub fn finish_webhook(&self, id: i64) -> anyhow::Result<()> {
        self.db()
            .execute("DELETE FROM webhook_outbox WHERE id = ?1", [id])?;
        Ok(())
    }

    pub fn retry_webhook(&self, id: i64, next_attempt_at: i64, error: &str) -> anyhow::Result<()> {
        self.db().execute(
            "UPDATE webhook_outbox SET attempts = attempts + 1, next_attempt_at = ?2, last_error = ?3
             WHERE id = ?1",
            params![id, next_attempt_at, error],
        )?;
        Ok(())
    }
}

/// Queues `event` for every destination of its configuration set that asks
/// for its type. Runs inside `record_event`'s transaction.
pub(super) fn enqueue_webhooks(db: &Connection, tenant: &str, event: &Value) -> anyhow::Result<()> {
    let Some(set) = event["mail"]["tags"]["ses:configuration-set"][0].as_str() else {
        return Ok(());
    };
    let Some(event_type) = event["eventType"].as_str() else {
        return Ok(());
    };
    let mut stmt = db.prepare(
        "SELECT id, event_types FROM event_destinations WHERE tenant = ?1 AND config_set = ?2",
    )?;
    let destinations: Vec<(i64, String)> = stmt
        .query_map([tenant, set], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let now = unix_now();
    let body = event.to_string();
    for (id, types) in destinations {
        if types.split(',').any(|t| t == event_type) {
            db.execute(
                "INSERT INTO webhook_outbox(destination, body, created_at, next_attempt_at)
                 VALUES (?1, ?2, ?3, ?3)",
                params![id, body, now],
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn event_types_are_checked_and_named_as_ses_does() {
        assert_eq!(
            parse_event_types("send, Bounce,deliverydelay,send").unwrap(),
            ["Send", "Bounce", "DeliveryDelay"]
        );
        let err = parse_event_types("send,open").unwrap_err().to_string();
        assert!(err.contains("'open'"), "{err}");
        assert!(parse_event_types(" , ").is_err());
    }

    #[test]
    fn matching_events_are_queued_once_per_destination() {
        let dir = tempfile::tempdir().unwrap();
        let control = Control::open(dir.path()).unwrap();
        control.create_tenant("acme").unwrap();
        let created = control
            .create_config_set(
                "acme",
                "hooks",
                TlsPolicy::Optional,
                Some(("http://127.0.0.1:9/h", vec!["Bounce".into()])),
            )
            .unwrap();
        let secret = created.event_destinations[0].secret.clone().unwrap();
        assert!(secret.starts_with("whsec_"));
        let event = |kind: &str, set: &str| {
            json!({"eventType": kind, "mail": {"messageId": "m1",
                "tags": {"ses:configuration-set": [set]}}, "bounce": {}})
        };
        control
            .record_event("acme", &event("Bounce", "hooks"))
            .unwrap();
        control
            .record_event("acme", &event("Delivery", "hooks"))
            .unwrap();
        control
            .record_event("acme", &event("Bounce", "other"))
            .unwrap();
        let due = control.claim_due_webhooks(unix_now(), 10, 60).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].secret, secret);
        assert!(due[0].body.contains("\"Bounce\""));
        assert!(
            control
                .claim_due_webhooks(unix_now(), 10, 60)
                .unwrap()
                .is_empty(),
            "a claimed POST is leased, not handed out twice"
        );
        let listed = control.config_sets("acme").unwrap();
        assert_eq!(listed[0].event_destinations[0].secret, None);
        assert!(
            control
                .create_config_set("acme", "hooks", TlsPolicy::Require, None)
                .is_err()
        );
        assert!(
            control
                .create_config_set("acme", "x", TlsPolicy::Require, Some(("ftp://h/", vec![])))
                .is_err()
        );
    }
}
