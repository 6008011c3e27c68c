//! SES feedback: Bounce, Complaint, Delivery and DeliveryDelay
//! notifications from SQS become sesame events of the tenant that sent the
//! message, and hard bounces and complaints go on its suppression list.
//!
//! A notification names SES's MessageId; `ses_messages` in control.db
//! (written by the `ses` transport) turns it into the tenant and sesame's
//! id. Events keep SES's JSON shape, with `mail.messageId` set to sesame's
//! id and SES's own id kept as `mail.sesMessageId`.
//!
//! Handling (see `Handled`): a notification is deleted from SQS after its
//! control.db writes, and also when it can never be applied (not JSON, a
//! type sesame does not track, or an SES id this node never sent: with
//! one queue per node, fanned out from SNS, those belong to other nodes).
//! A control.db failure keeps it for another try. Delivery is
//! at-least-once: a notification handled again records its event again.

use std::sync::Arc;

use serde_json::{Value, json};

use super::poller::{Disposition, unwrap_sns};
use crate::control::{Control, ses_event};

/// The notification types that become events.
const TRACKED: &[&str] = &["Bounce", "Complaint", "Delivery", "DeliveryDelay"];

#[derive(Debug, PartialEq, Eq)]
pub enum Handled {
    Recorded {
        tenant: String,
        message_id: String,
        event_type: String,
    },
    /// Never applicable; deleted after a log line saying why.
    Dropped(String),
}

/// Handles one SQS message body; logs what became of it.
pub fn handle(control: &Arc<Control>, body: &str) -> Disposition {
    match apply(control, body) {
        Ok(Handled::Recorded {
            tenant,
            message_id,
            event_type,
        }) => {
            tracing::info!(tenant, message_id, event_type, "SES feedback recorded");
            Disposition::Delete
        }
        Ok(Handled::Dropped(reason)) => {
            tracing::warn!(reason, "SES feedback dropped");
            Disposition::Delete
        }
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "SES feedback not recorded; kept for another try");
            Disposition::Keep
        }
    }
}

pub fn apply(control: &Control, body: &str) -> anyhow::Result<Handled> {
    let notice = match unwrap_sns(body) {
        Ok(notice) => notice,
        Err(reason) => return Ok(Handled::Dropped(reason)),
    };
    let Some(kind) = notice["eventType"]
        .as_str()
        .or(notice["notificationType"].as_str())
    else {
        return Ok(Handled::Dropped(
            "neither eventType nor notificationType".into(),
        ));
    };
    if !TRACKED.contains(&kind) {
        return Ok(Handled::Dropped(format!("type '{kind}' is not tracked")));
    }
    let Some(ses_id) = notice["mail"]["messageId"].as_str() else {
        return Ok(Handled::Dropped(format!("{kind} without mail.messageId")));
    };
    let Some(sent) = control.ses_message(ses_id)? else {
        return Ok(Handled::Dropped(format!(
            "{kind} for SES message {ses_id}, which this node did not send"
        )));
    };
    let mut mail = notice["mail"].clone();
    mail["messageId"] = json!(sent.message_id);
    mail["sesMessageId"] = json!(ses_id);
    let detail_key = lower_first(kind);
    let detail = notice[&detail_key].clone();
    for (address, reason) in suppressions(kind, &detail) {
        control.suppress(&sent.tenant, &address, reason, Some(&sent.message_id))?;
    }
    control.record_event(&sent.tenant, &ses_event(kind, mail, detail))?;
    Ok(Handled::Recorded {
        tenant: sent.tenant,
        message_id: sent.message_id,
        event_type: kind.to_string(),
    })
}

/// Hard bounces and complaints suppress their recipients, as on SES's
/// account-level suppression list; transient bounces do not.
fn suppressions(kind: &str, detail: &Value) -> Vec<(String, &'static str)> {
    let (list, reason) = match kind {
        "Bounce" if detail["bounceType"] == "Permanent" => ("bouncedRecipients", "BOUNCE"),
        "Complaint" => ("complainedRecipients", "COMPLAINT"),
        _ => return vec![],
    };
    detail[list]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["emailAddress"].as_str())
        .map(|a| (a.to_string(), reason))
        .collect()
}

/// `DeliveryDelay` → `deliveryDelay`, the key of the event's detail.
fn lower_first(kind: &str) -> String {
    let mut key = kind.to_string();
    if let Some(first) = key.get_mut(..1) {
        first.make_ascii_lowercase();
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control_with_send() -> (tempfile::TempDir, Control) {
        let dir = tempfile::tempdir().unwrap();
        let control = Control::open(dir.path()).unwrap();
        control.create_tenant("acme").unwrap();
        control
            .record_ses_message("ses-1", "acme", "sesame-1", &["bob@x.test".into()])
            .unwrap();
        (dir, control)
    }

    fn bounce(bounce_type: &str) -> String {
        let inner = json!({
            "notificationType": "Bounce",
            "mail": {"messageId": "ses-1", "source": "app@acme.test", "destination": ["bob@x.test"]},
            "bounce": {"bounceType": bounce_type, "bounceSubType": "General",
                       "bouncedRecipients": [{"emailAddress": "Bob@x.test"}]},
        });
        json!({"Type": "Notification", "Message": inner.to_string()}).to_string()
    }

    #[test]
    fn a_hard_bounce_suppresses_and_becomes_an_event_under_sesames_id() {
        let (_dir, control) = control_with_send();
        let handled = apply(&control, &bounce("Permanent")).unwrap();
        assert!(
            matches!(handled, Handled::Recorded { ref event_type, .. } if event_type == "Bounce")
        );
        assert!(control.is_suppressed("acme", "bob@x.test").unwrap());
        let events = control.events("acme", Some("sesame-1")).unwrap();
        assert_eq!(events.len(), 1);
        let event = &events[0].event;
        assert_eq!(event["eventType"], "Bounce");
        assert_eq!(event["mail"]["sesMessageId"], "ses-1");
        assert_eq!(event["bounce"]["bounceType"], "Permanent");
    }

    #[test]
    fn a_transient_bounce_does_not_suppress() {
        let (_dir, control) = control_with_send();
        apply(&control, &bounce("Transient")).unwrap();
        assert!(!control.is_suppressed("acme", "bob@x.test").unwrap());
    }

    #[test]
    fn unknown_ids_types_and_garbage_are_dropped() {
        let (_dir, control) = control_with_send();
        let other = bounce("Permanent").replace("ses-1", "ses-9");
        for body in [
            other.as_str(),
            "not json",
            r#"{"eventType":"Open","mail":{"messageId":"ses-1"}}"#,
            r#"{"foo":1}"#,
        ] {
            assert!(
                matches!(apply(&control, body).unwrap(), Handled::Dropped(_)),
                "{body}"
            );
        }
        assert!(control.events("acme", None).unwrap().is_empty());
    }
}
