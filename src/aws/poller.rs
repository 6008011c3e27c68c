//! The SQS long-poll loop shared by the feedback and inbound workers.
//!
//! A message is deleted only when its handler says so, after the handler
//! has made its effect durable; anything else becomes visible again after
//! the visibility timeout and is handled again (at-least-once). Receive
//! errors never end the loop: it backs off and polls again.

use std::future::Future;
use std::time::Duration;

use aws_sdk_sqs::Client;
use tokio::sync::watch;

use super::settings::AwsConfig;

/// What the handler decided about one SQS message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Done, or never going to work: remove it from the queue.
    Delete,
    /// Try again after the visibility timeout.
    Keep,
}

pub struct Poller {
    pub client: Client,
    pub queue_url: String,
    /// Worker name in the logs (`feedback`, `inbound`).
    pub worker: &'static str,
    pub wait_time_secs: i32,
    pub visibility_timeout_secs: i32,
}

impl Poller {
    pub fn new(client: Client, queue_url: &str, worker: &'static str, config: &AwsConfig) -> Self {
        Poller {
            client,
            queue_url: queue_url.to_string(),
            worker,
            wait_time_secs: config.wait_time_secs,
            visibility_timeout_secs: config.visibility_timeout_secs,
        }
    }

    /// Polls until `stop` turns true; a message being handled is finished
    /// first.
    pub async fn run<F, Fut>(self, mut stop: watch::Receiver<bool>, handle: F)
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Disposition>,
    {
        tracing::info!(worker = self.worker, queue = %self.queue_url, "SQS worker started");
        let mut backoff = Duration::from_secs(1);
        while !*stop.borrow() {
            let receive = self
                .client
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(self.wait_time_secs)
                .visibility_timeout(self.visibility_timeout_secs)
                .send();
            let received = tokio::select! {
                r = receive => r,
                _ = stop.changed() => break,
            };
            let messages = match received {
                Ok(output) => {
                    backoff = Duration::from_secs(1);
                    output.messages.unwrap_or_default()
                }
                Err(e) => {
                    tracing::error!(worker = self.worker, queue = %self.queue_url, error = %format!("{:#}", anyhow::Error::new(e)), retry_in_secs = backoff.as_secs(), "SQS receive failed");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => break,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            };
            for message in messages {
                let (Some(body), Some(receipt)) = (message.body, message.receipt_handle) else {
                    continue;
                };
                if handle(body).await == Disposition::Delete {
                    self.delete(&receipt, message.message_id.as_deref().unwrap_or(""))
                        .await;
                }
            }
        }
        tracing::info!(worker = self.worker, "SQS worker stopped");
    }

    async fn delete(&self, receipt: &str, sqs_id: &str) {
        let deleted = self
            .client
            .delete_message()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt)
            .send()
            .await;
        match deleted {
            Ok(_) => tracing::debug!(
                worker = self.worker,
                sqs_message_id = sqs_id,
                "SQS message deleted"
            ),
            // Handled again after the visibility timeout; handlers are idempotent.
            Err(e) => {
                tracing::warn!(worker = self.worker, sqs_message_id = sqs_id, error = %format!("{:#}", anyhow::Error::new(e)), "SQS delete failed; the message will be handled again")
            }
        }
    }
}

/// The SES JSON inside a notification: SNS-wrapped
/// (`{"Type":"Notification","Message":"<json>"}`) or raw.
pub fn unwrap_sns(body: &str) -> Result<serde_json::Value, String> {
    let outer: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    if outer["Type"] == "Notification"
        && let Some(inner) = outer["Message"].as_str()
    {
        return serde_json::from_str(inner).map_err(|e| format!("SNS Message is not JSON: {e}"));
    }
    Ok(outer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sns_envelopes_are_opened_and_raw_json_is_kept() {
        let inner = r#"{"notificationType":"Bounce"}"#;
        let sns = serde_json::json!({"Type": "Notification", "Message": inner}).to_string();
        assert_eq!(unwrap_sns(&sns).unwrap()["notificationType"], "Bounce");
        assert_eq!(unwrap_sns(inner).unwrap()["notificationType"], "Bounce");
        assert!(unwrap_sns("<xml/>").unwrap_err().contains("not JSON"));
    }
}
