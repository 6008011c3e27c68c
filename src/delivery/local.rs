//! Delivery into tenant stores.
//!
//! - [`Local`] is the transport of inbound mail: it writes the message into
//!   the receiving tenant's store and answers `Delivered`.
//! - [`KeepSent`] wraps the transports of outbound mail: before the
//!   message leaves, a copy goes into the sending tenant's store, so that
//!   a conversation reads as one thread in both directions. Mail kept by
//!   the capture transport is stored as `captured`, anything else as
//!   `outbound`. The copy is stored once per message (idempotent per
//!   message id), however many recipient batches and retries follow.
//!
//! A store that cannot be written is a transient outcome: the queue keeps
//! the message and retries, so accepted mail is never lost.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Outcome, Outgoing, Transport};
use crate::store::{Direction, Incoming, Stored, Stores};
use crate::types::unix_now;

/// Stores `message` for its tenant (off the async threads: SQLite and
/// fsync block).
async fn store(
    stores: &Arc<Stores>,
    message: &Outgoing,
    recipients: &[String],
    direction: Direction,
) -> anyhow::Result<Stored> {
    let stores = stores.clone();
    let message = message.clone();
    let recipients = recipients.to_vec();
    tokio::task::spawn_blocking(move || {
        stores.get(&message.tenant)?.put(&Incoming {
            id: &message.message_id,
            direction,
            mail_from: &message.mail_from,
            recipients: &recipients,
            received_at: unix_now(),
            raw: &message.body,
            meta: &message.meta,
        })
    })
    .await?
}

fn store_failed(message: &Outgoing, e: &anyhow::Error) -> String {
    tracing::error!(message_id = %message.message_id, tenant = %message.tenant, error = %format!("{e:#}"), "tenant store write failed; will retry");
    "451 4.3.0 Temporary failure writing the tenant store".to_string()
}

pub struct Local {
    pub stores: Arc<Stores>,
}

#[async_trait]
impl Transport for Local {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn deliver(&self, message: &Outgoing, recipients: &[String]) -> Vec<Outcome> {
        // Receipt rules decide; without a rule that stores, SES drops the
        // copy after running the other actions.
        let outcome = if message.meta.get("store") == Some(&serde_json::Value::Bool(false)) {
            Outcome::delivered("250 2.0.0 Ok: no receipt rule stores this message")
        } else {
            match store(&self.stores, message, recipients, Direction::Inbound).await {
                Ok(stored) => Outcome::delivered(format!(
                    "250 2.0.0 Ok: stored {} in thread {}",
                    message.message_id, stored.thread_id
                )),
                Err(e) => Outcome::transient(store_failed(message, &e)),
            }
        };
        recipients.iter().map(|_| outcome.clone()).collect()
    }
}

pub struct KeepSent {
    pub inner: Arc<dyn Transport>,
    pub stores: Arc<Stores>,
}

#[async_trait]
impl Transport for KeepSent {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn deliver(&self, message: &Outgoing, recipients: &[String]) -> Vec<Outcome> {
        // Gateway mail (`@system`: DSNs, notifications) has no tenant store.
        if !message.tenant.starts_with('@') {
            let direction = match self.inner.name() {
                "capture" => Direction::Captured,
                _ => Direction::Outbound,
            };
            if let Err(e) = store(&self.stores, message, recipients, direction).await {
                let response = store_failed(message, &e);
                return recipients
                    .iter()
                    .map(|_| Outcome::transient(response.clone()))
                    .collect();
            }
        }
        self.inner.deliver(message, recipients).await
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::delivery::capture::Capture;

    fn message(tenant: &str, meta: Value) -> Outgoing {
        Outgoing {
            message_id: "id-1".into(),
            tenant: tenant.into(),
            mail_from: "ann@ext.test".into(),
            body: Arc::new(b"Subject: hi\r\nMessage-ID: <m@ext.test>\r\n\r\nhi\r\n".to_vec()),
            meta: Arc::new(meta),
            options: Default::default(),
            require_tls: false,
        }
    }

    fn rcpts() -> Vec<String> {
        vec!["b@acme.test".into(), "c@acme.test".into()]
    }

    /// A store that cannot be written defers every recipient (the queue
    /// retries); once it can be, the retry stores the message.
    #[tokio::test]
    async fn a_store_write_failure_defers_and_the_retry_stores() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("tenants");
        std::fs::write(&blocker, b"not a directory").unwrap();
        let stores = Arc::new(Stores::new(dir.path()));
        let local = Local {
            stores: stores.clone(),
        };
        let m = message("acme", Value::Null);
        let out = local.deliver(&m, &rcpts()).await;
        assert_eq!(out.len(), 2);
        for o in &out {
            assert!(
                matches!(o, Outcome::Transient { response } if response.starts_with("451 4.3.0")),
                "{o:?}"
            );
        }
        let keep = KeepSent {
            inner: Arc::new(Capture),
            stores: stores.clone(),
        };
        let out = keep.deliver(&m, &rcpts()).await;
        assert!(
            out.iter().all(|o| matches!(o, Outcome::Transient { .. })),
            "nothing leaves unstored: {out:?}"
        );

        std::fs::remove_file(&blocker).unwrap();
        let out = local.deliver(&m, &rcpts()).await;
        assert!(
            out.iter().all(|o| matches!(o, Outcome::Delivered { .. })),
            "{out:?}"
        );
        let stored = stores
            .get("acme")
            .unwrap()
            .message("id-1")
            .unwrap()
            .unwrap();
        assert_eq!(stored["direction"], "inbound");
    }

    /// `store: false` (no receipt rule stores) delivers without storing;
    /// gateway mail is never stored; captured mail is stored as such.
    #[tokio::test]
    async fn only_what_should_be_stored_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let stores = Arc::new(Stores::new(dir.path()));
        let local = Local {
            stores: stores.clone(),
        };
        let out = local
            .deliver(&message("acme", json!({"store": false})), &rcpts())
            .await;
        assert!(out.iter().all(|o| matches!(o, Outcome::Delivered { .. })));
        assert!(
            stores
                .get("acme")
                .unwrap()
                .message("id-1")
                .unwrap()
                .is_none()
        );

        let keep = KeepSent {
            inner: Arc::new(Capture),
            stores: stores.clone(),
        };
        keep.deliver(&message("@system", Value::Null), &rcpts())
            .await;
        assert!(!dir.path().join("tenants/@system").exists());
        let out = keep.deliver(&message("beta", Value::Null), &rcpts()).await;
        assert!(out.iter().all(|o| matches!(o, Outcome::Delivered { .. })));
        let stored = stores
            .get("beta")
            .unwrap()
            .message("id-1")
            .unwrap()
            .unwrap();
        assert_eq!(stored["direction"], "captured");
    }
}
