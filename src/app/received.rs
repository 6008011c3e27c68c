//! SES `Received` notifications for the `webhook` actions of receipt rules:
//! built from the queue entries (their `meta` holds the verdicts and the
//! rules applied) and posted once the entries are durable.

use base64::Engine;
use serde_json::{Value, json};

use crate::control::MailInfo;
use crate::queue::{Direction, NewEntry};
use crate::rules::RuleAction;
use crate::webhook::Webhook;

pub struct Notification {
    url: String,
    payload: Value,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// One notification per webhook action of each inbound entry, with the
/// recipients of the rule that holds it.
pub fn notifications(entries: &[NewEntry]) -> Vec<Notification> {
    let mut out = Vec::new();
    for entry in entries.iter().filter(|e| e.direction == Direction::Inbound) {
        let Some(rules) = entry.meta["rules"].as_array() else {
            continue;
        };
        // Built (headers parsed) only for a message some rule posts.
        let mut mail: Option<Value> = None;
        for rule in rules {
            let actions: Vec<RuleAction> =
                serde_json::from_value(rule["actions"].clone()).unwrap_or_default();
            for action in actions {
                let RuleAction::Webhook {
                    url,
                    include_content,
                } = action
                else {
                    continue;
                };
                let mail = mail.get_or_insert_with(|| {
                    MailInfo {
                        message_id: entry.message_id.as_str(),
                        timestamp_ms: now_ms(),
                        source: &entry.source,
                        destination: &entry.recipients,
                        raw: &entry.body,
                        tags: Default::default(),
                    }
                    .to_json()
                });
                let payload = payload(entry, rule, &url, include_content, mail.clone());
                out.push(Notification { url, payload });
            }
        }
    }
    out
}

/// SES's shape: `notificationType`, `receipt` (verdicts, the rule's
/// recipients, the action), `mail`, and `content` when asked for.
fn payload(entry: &NewEntry, rule: &Value, url: &str, include_content: bool, mail: Value) -> Value {
    let receipt = &entry.meta["receipt"];
    let mut receipt_json = json!({
        "timestamp": receipt["timestamp"],
        "recipients": rule["recipients"],
        "spamVerdict": receipt["spamVerdict"],
        "virusVerdict": receipt["virusVerdict"],
        "spfVerdict": receipt["spfVerdict"],
        "dkimVerdict": receipt["dkimVerdict"],
        "dmarcVerdict": receipt["dmarcVerdict"],
        "action": {"type": "Webhook", "url": url, "ruleName": rule["name"]},
    });
    if !receipt["dmarcPolicy"].is_null() {
        receipt_json["dmarcPolicy"] = receipt["dmarcPolicy"].clone();
    }
    let mut payload = json!({
        "notificationType": "Received",
        "receipt": receipt_json,
        "mail": mail,
    });
    if include_content {
        payload["content"] = json!(base64::engine::general_purpose::STANDARD.encode(&entry.body));
    }
    payload
}

/// Posts in the background (retried; see `webhook`).
pub fn send(notifications: Vec<Notification>) {
    for n in notifications {
        match Webhook::new(&n.url) {
            Ok(hook) => hook.send(&n.payload),
            Err(e) => tracing::error!(error = %format!("{e:#}"), "receipt rule webhook unusable"),
        }
    }
}
