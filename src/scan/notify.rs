//! Telling people about malware. Every detection, per tenant: a
//! VirusDetected event (plus SES's Reject event when the message was
//! refused), a warning in the log, a mail to `scan.notify_email` queued
//! like any outbound message, and a POST to `scan.notify_webhook`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::ScanContext;
use super::policy::Action;
use super::strip::text_body;
use super::verdict::{PartVerdict, Verdict, printable};
use super::webhook::Webhook;
use crate::config::ScanConfig;
use crate::control::{Control, MailInfo, iso8601_millis, ses_event};
use crate::queue::{Direction, NewEntry, Queue};
use crate::types::MessageId;

/// The queue's tenant for sesame's own mail to the operator. `@` cannot
/// appear in a tenant name, so no tenant can own (or read) these.
pub const SYSTEM_TENANT: &str = "@system";

pub struct Notifier {
    control: Arc<Control>,
    queue: Queue,
    hostname: String,
    email: Option<String>,
    webhook: Option<Webhook>,
}

/// A message in which malware was found.
pub struct Detection<'a> {
    pub ctx: &'a ScanContext<'a>,
    /// The header block as received (for the events' `mail` object).
    pub headers: &'a [u8],
    pub parts: &'a [PartVerdict],
    pub action: Action,
}

impl Notifier {
    pub fn new(
        config: &ScanConfig,
        hostname: &str,
        control: Arc<Control>,
        queue: Queue,
    ) -> anyhow::Result<Notifier> {
        Ok(Notifier {
            control,
            queue,
            hostname: hostname.to_string(),
            email: config.notify_email.clone(),
            webhook: config
                .notify_webhook
                .as_deref()
                .map(Webhook::new)
                .transpose()?,
        })
    }

    /// Records and sends everything; failures are logged, never returned:
    /// the message's fate is already decided.
    pub async fn detected(&self, d: &Detection<'_>) {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |t| t.as_millis() as i64);
        let infected: Vec<&PartVerdict> = d
            .parts
            .iter()
            .filter(|p| p.verdict == Verdict::Fail)
            .collect();
        let direction = d.ctx.direction.as_str();
        for &(tenant, recipients) in &d.ctx.tenants {
            for p in &infected {
                tracing::warn!(
                    tenant,
                    direction,
                    message_id = %d.ctx.message_id,
                    sender = d.ctx.mail_from,
                    filename = %p.display_name(),
                    signature = p.signature.as_deref().unwrap_or_default(),
                    action = d.action.as_str(),
                    "virus detected"
                );
            }
            let mail = MailInfo {
                message_id: d.ctx.message_id.as_str(),
                timestamp_ms: now_ms,
                source: d.ctx.mail_from,
                destination: recipients,
                raw: d.headers,
                tags: BTreeMap::from([("ses:source-ip".to_string(), vec![d.ctx.peer.to_string()])]),
            }
            .to_json();
            self.record(tenant, d, &mail, now_ms);
            let summary = json!({
                "notificationType": "VirusDetected",
                "timestamp": iso8601_millis(now_ms),
                "tenant": tenant,
                "direction": direction,
                "messageId": d.ctx.message_id.as_str(),
                "sender": d.ctx.mail_from,
                "recipients": recipients,
                "action": d.action,
                "detections": infected,
            });
            if let Some(to) = &self.email {
                self.mail(to, tenant, d, recipients, &infected).await;
            }
            if let Some(hook) = &self.webhook {
                hook.send(&summary);
            }
        }
    }

    fn record(&self, tenant: &str, d: &Detection<'_>, mail: &Value, now_ms: i64) {
        let detected = ses_event(
            "VirusDetected",
            mail.clone(),
            json!({
                "timestamp": iso8601_millis(now_ms),
                "direction": d.ctx.direction.as_str(),
                "action": d.action,
                "virusVerdict": {"status": "FAIL"},
                "attachments": d.parts,
            }),
        );
        let mut events = vec![detected];
        if d.action == Action::Rejected {
            events.push(ses_event(
                "Reject",
                mail.clone(),
                json!({"reason": "Bad content"}),
            ));
        }
        for event in &events {
            if let Err(e) = self.control.record_event(tenant, event) {
                tracing::error!(tenant, message_id = %d.ctx.message_id, error = %format!("{e:#}"), "event not recorded");
            }
        }
    }

    async fn mail(
        &self,
        to: &str,
        tenant: &str,
        d: &Detection<'_>,
        recipients: &[String],
        infected: &[&PartVerdict],
    ) {
        let id = MessageId::generate();
        let from = format!("postmaster@{}", self.hostname);
        let signatures: Vec<&str> = infected
            .iter()
            .filter_map(|p| p.signature.as_deref())
            .collect();
        let action = match d.action {
            Action::Stripped => {
                "stripped: each infected part was replaced by a notice, the rest was queued"
            }
            Action::Rejected => "rejected: the sender was refused with a 5xx reply",
            Action::Deferred => {
                "deferred: the sender got a 4xx reply (another part could not be scanned)"
            }
        };
        let mut text = format!(
            "sesame found malware in a message.\r\n\r\n\
             Tenant:     {tenant}\r\n\
             Direction:  {}\r\n\
             Message id: {}\r\n\
             Sender:     {}\r\n\
             Recipients: {}\r\n\
             Action:     {action}\r\n\r\nDetections:\r\n",
            d.ctx.direction.as_str(),
            d.ctx.message_id,
            printable(d.ctx.mail_from, 256),
            recipients.join(", "),
        );
        for p in infected {
            text.push_str(&format!(
                "  {} ({}, {} bytes, sha256 {})\r\n    Signature: {}\r\n",
                p.display_name(),
                p.content_type,
                p.size,
                p.sha256,
                p.signature.as_deref().unwrap_or_default()
            ));
        }
        text.push_str(&format!(
            "\r\nEvents: sesame events list {tenant} --message {} --json\r\n",
            d.ctx.message_id
        ));
        let (encoding, body) = text_body(&text);
        let mut message = format!(
            "From: sesame <{from}>\r\nTo: <{to}>\r\n\
             Subject: [sesame] Virus detected: {} (tenant {tenant}, {})\r\n\
             Date: {}\r\nMessage-ID: <{id}@{}>\r\n\
             Auto-Submitted: auto-generated\r\nMIME-Version: 1.0\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\
             Content-Transfer-Encoding: {encoding}\r\n\r\n",
            printable(&signatures.join(", "), 200),
            d.ctx.direction.as_str(),
            mail_parser::DateTime::from_timestamp(crate::types::unix_now()).to_rfc822(),
            self.hostname,
        )
        .into_bytes();
        message.extend_from_slice(&body);
        let entry = NewEntry {
            message_id: id.clone(),
            tenant: SYSTEM_TENANT.to_string(),
            direction: Direction::Outbound,
            source: from.clone(),
            mail_from: from,
            recipients: vec![to.to_string()],
            body: message,
            meta: serde_json::Value::Null,
        };
        match self.queue.commit(vec![entry]).await {
            Ok(()) => tracing::info!(
                notification_id = %id,
                about = %d.ctx.message_id,
                tenant,
                "virus notification mail queued"
            ),
            Err(e) => tracing::error!(
                about = %d.ctx.message_id,
                tenant,
                error = %format!("{e:#}"),
                "virus notification mail not queued"
            ),
        }
    }
}
