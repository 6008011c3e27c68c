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
