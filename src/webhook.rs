//! POSTs notification JSON (scan detections to `scan.notify_webhook`, SES
//! `Received` notifications of receipt rules) from a background task,
//! retrying with exponential backoff, so a slow or failing endpoint never
//! delays an SMTP reply. Retries live in memory: a restart drops the ones
//! still pending (the event in control.db stays).

use std::time::Duration;

use reqwest::header::CONTENT_TYPE;
use reqwest::{Client, StatusCode, Url};

/// 1 + 2 + 4 + 8 + 16 s of waiting: about half a minute of outage covered.
const ATTEMPTS: u32 = 6;
const FIRST_RETRY: Duration = Duration::from_secs(1);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Webhook {
    client: Client,
    url: Url,
}

impl Webhook {
    pub fn new(url: &str) -> anyhow::Result<Webhook> {
        let client = Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("sesame/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Webhook {
            client,
            url: url.parse()?,
        })
    }

    /// Queues the POST and returns at once.
    pub fn send(&self, payload: &serde_json::Value) {
        let client = self.client.clone();
        let url = self.url.clone();
        let body = payload.to_string();
        tokio::spawn(async move { deliver(&client, url, body).await });
    }
}

async fn deliver(client: &Client, url: Url, body: String) {
    // The URL may carry a token; logs name only the host.
    let host = url.host_str().unwrap_or_default().to_string();
    let mut delay = FIRST_RETRY;
    for attempt in 1..=ATTEMPTS {
        let sent = client
            .post(url.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {
                tracing::info!(webhook = %host, attempt, "webhook notification delivered");
                return;
            }
            Ok(r) if !retryable(r.status()) => {
                tracing::error!(webhook = %host, status = r.status().as_u16(), "webhook refused the notification; not retrying");
                return;
            }
            Ok(r) => {
                tracing::warn!(webhook = %host, attempt, status = r.status().as_u16(), "webhook notification failed; will retry")
            }
            Err(e) => {
                tracing::warn!(webhook = %host, attempt, error = %e.without_url(), "webhook notification failed; will retry")
            }
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
    }
    tracing::error!(webhook = %host, attempts = ATTEMPTS, "webhook notification given up");
}

/// Server trouble and throttling pass; other refusals will not.
fn retryable(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
}
