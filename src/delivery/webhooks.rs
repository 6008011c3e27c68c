//! Empties control.db's `webhook_outbox`: each queued event is POSTed as
//! its SES JSON to its destination, signed, from a task of its own, and
//! retried with exponential backoff until it is taken or too old. Delivery
//! only ever inserts rows, so a slow or dead endpoint never holds it up.
//!
//! Signature: `X-Sesame-Timestamp: <unix seconds>` and
//! `X-Sesame-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`,
//! the key being the destination's secret as printed by `config-set
//! create` (its UTF-8 bytes). `X-Sesame-Delivery` names the outbox row, the
//! same on every retry, so a receiver can drop duplicates.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::Client;
use reqwest::header::CONTENT_TYPE;
use sha2::Sha256;
use tokio::sync::watch;

use crate::control::{Control, DueWebhook};
use crate::types::unix_now;

/// Longer than any POST can take (REQUEST_TIMEOUT), so a leased row is
/// only handed out again when its attempt died with the process.
const LEASE_SECS: i64 = 60;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const BATCH: usize = 64;

/// When to give up and how fast to back off (the delivery retry settings).
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base_secs: i64,
    pub max_delay_secs: i64,
    pub max_age_secs: i64,
}

impl Backoff {
    /// The next attempt after `attempts` failures, or None past the age.
    fn next(&self, attempts: u32, created_at: i64, now: i64) -> Option<i64> {
        if now - created_at >= self.max_age_secs {
            return None;
        }
        let delay = self
            .base_secs
            .saturating_mul(1i64 << attempts.min(30))
            .min(self.max_delay_secs);
        Some(now + delay)
    }
}

/// `v1=<hex>` over `"{timestamp}.{body}"`.
pub fn signature(secret: &str, timestamp: i64, body: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(format!("{timestamp}.{body}").as_bytes());
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

pub async fn run(
    control: Arc<Control>,
    backoff: Backoff,
    poll: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let client = match Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .user_agent(concat!("sesame/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhook client could not be built; event webhooks stay queued");
            return;
        }
    };
    let mut posts = tokio::task::JoinSet::new();
    loop {
        match control.claim_due_webhooks(unix_now(), BATCH, LEASE_SECS) {
            Ok(due) => {
                for hook in due {
                    let (client, control) = (client.clone(), control.clone());
                    posts.spawn(async move { post(&client, &control, backoff, hook).await });
                }
            }
            Err(e) => tracing::error!(error = %format!("{e:#}"), "webhook outbox unreadable"),
        }
        while posts.try_join_next().is_some() {}
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = stop.changed() => break,
        }
    }
    // What is still in flight comes due again after its lease.
    posts.abort_all();
}

async fn post(client: &Client, control: &Control, backoff: Backoff, hook: DueWebhook) {
    // The URL may carry a token; logs name only the host.
    let host = reqwest::Url::parse(&hook.url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default();
    let timestamp = unix_now();
    let sent = client
        .post(&hook.url)
        .header(CONTENT_TYPE, "application/json")
        .header("X-Sesame-Timestamp", timestamp.to_string())
        .header(
            "X-Sesame-Signature",
            signature(&hook.secret, timestamp, &hook.body),
        )
        .header("X-Sesame-Delivery", hook.id.to_string())
        .body(hook.body.clone())
        .send()
        .await;
    let error = match sent {
        Ok(r) if r.status().is_success() => {
            tracing::info!(webhook = %host, outbox = hook.id, attempts = hook.attempts + 1, "event webhook delivered");
            if let Err(e) = control.finish_webhook(hook.id) {
                tracing::error!(outbox = hook.id, error = %format!("{e:#}"), "delivered webhook not recorded (it will be sent again)");
            }
            return;
        }
        Ok(r) => format!("HTTP {}", r.status().as_u16()),
        Err(e) => e.without_url().to_string(),
    };
    let now = unix_now();
    let recorded = match backoff.next(hook.attempts, hook.created_at, now) {
        Some(at) => {
            tracing::warn!(webhook = %host, outbox = hook.id, attempts = hook.attempts + 1, retry_at = at, error = %error, "event webhook POST failed; will retry");
            control.retry_webhook(hook.id, at, &error)
        }
        None => {
            tracing::error!(webhook = %host, outbox = hook.id, attempts = hook.attempts + 1, error = %error, "event webhook given up (the event stays in the event log)");
            control.finish_webhook(hook.id)
        }
    };
    if let Err(e) = recorded {
        tracing::error!(outbox = hook.id, error = %format!("{e:#}"), "webhook retry not recorded");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_stops_at_the_age() {
        let b = Backoff {
            base_secs: 2,
            max_delay_secs: 10,
            max_age_secs: 100,
        };
        assert_eq!(b.next(0, 0, 5), Some(7));
        assert_eq!(b.next(2, 0, 5), Some(13));
        assert_eq!(b.next(40, 0, 5), Some(15));
        assert_eq!(b.next(1, 0, 100), None);
    }

    #[test]
    fn signatures_cover_timestamp_and_body() {
        let a = signature("s", 1, "{}");
        assert!(a.starts_with("v1=") && a.len() == 3 + 64, "{a}");
        assert_ne!(a, signature("s", 2, "{}"));
        assert_ne!(a, signature("s", 1, "{ }"));
        assert_ne!(a, signature("t", 1, "{}"));
    }
}
