//! Asynchronous bounces and complaints. Outbound mail leaves with a VERP
//! envelope sender, `<message-id>@<mail-from-domain>` (see
//! `domains::envelope_sender`), so a remote MTA's late DSN, or a mailbox
//! provider's ARF complaint, comes back to the MX listener addressed to the
//! very message it is about. Such mail is not tenant mail: it is taken at
//! RCPT, read here, and turned into the events and suppression entries the
//! original message earns:
//!
//! - RFC 3464 `multipart/report; report-type=delivery-status`: a recipient
//!   with `Action: failed` and a 5.x.x status is a Permanent bounce (Bounce
//!   event, suppression BOUNCE); `Action: delayed` or a 4.x.x status is a
//!   DeliveryDelay event.
//! - RFC 5965 `report-type=feedback-report`: a Complaint event and
//!   suppression COMPLAINT for the `Original-Rcpt-To` (or the original's
//!   only recipient).
//!
//! Only recipients of the original message are acted on, so a report can
//! never suppress an address the message was not sent to. A report that
//! cannot be read is accepted and logged, never bounced (no backscatter).

use std::path::Path;
use std::sync::{Arc, Mutex};

use mail_parser::{MessageParser, MimeHeaders};
use serde_json::json;

use crate::control::{Control, iso8601_millis, ses_event};
use crate::queue::state::{EntryInfo, QueueState};
use crate::types::{MessageId, unix_now};

pub struct Feedback {
    control: Arc<Control>,
    queue: Mutex<QueueState>,
}

/// What one report says about one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Bounce {
        status: String,
        diagnostic: String,
    },
    Delay {
        status: String,
        diagnostic: String,
    },
    Complaint {
        feedback_type: String,
        user_agent: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Report {
    reporting_mta: String,
    /// (recipient as the report names it, verdict).
    verdicts: Vec<(Option<String>, Verdict)>,
}

impl Feedback {
    pub fn new(control: Arc<Control>, data_dir: &Path) -> anyhow::Result<Feedback> {
        Ok(Feedback {
            control,
            queue: Mutex::new(QueueState::open(data_dir)?),
        })
    }

    /// The message `address` is the VERP envelope sender of, if any.
    fn original(&self, address: &str) -> anyhow::Result<Option<EntryInfo>> {
        let Some((local, _)) = address.rsplit_once('@') else {
            return Ok(None);
        };
        // Cheap shape check before touching queue.db: SES ids are hex and '-'.
        if local.len() < 32 || !local.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            return Ok(None);
        }
        let queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        queue.sent_from(local, address)
    }

    /// Whether mail to `recipient` is a report about a message we sent.
    pub fn is_report_address(&self, recipient: &str) -> bool {
        match self.original(recipient) {
            Ok(found) => found.is_some(),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "queue lookup for a VERP address failed");
                false
            }
        }
    }

    /// Moves the report addresses out of `recipients` and returns them.
    pub fn take_report_addresses(&self, recipients: &mut Vec<String>) -> Vec<String> {
        let (reports, rest): (Vec<String>, Vec<String>) = recipients
            .drain(..)
            .partition(|r| self.is_report_address(r));
        *recipients = rest;
        reports
    }

    /// Reads the report sent to `addresses` and records what it says. An
    /// error means nothing could be recorded (the sender should retry).
    pub fn process(&self, id: &MessageId, addresses: &[String], body: &[u8]) -> anyhow::Result<()> {
        for address in addresses {
            let Some(original) = self.original(address)? else {
                continue;
            };
            let Some(report) = parse(body) else {
                tracing::warn!(report_id = %id, message_id = %original.message_id, tenant = %original.tenant, "feedback mail is not a delivery-status or feedback report; accepted and ignored");
                continue;
            };
            self.record(id, &original, &report)?;
        }
        Ok(())
    }

    fn record(&self, id: &MessageId, original: &EntryInfo, report: &Report) -> anyhow::Result<()> {
        let mail = super::engine::mail_object(original);
        let ts = iso8601_millis(unix_now() * 1000);
        let sent_to = |r: &str| {
            original
                .recipients
                .iter()
                .find(|o| o.eq_ignore_ascii_case(r))
                .cloned()
        };
        let mut bounced = Vec::new();
        let mut delayed = Vec::new();
        let mut complained: Vec<(String, String, String)> = Vec::new();
        for (named, verdict) in &report.verdicts {
            let recipient = match named {
                Some(r) => sent_to(r),
                // A complaint without Original-Rcpt-To: only unambiguous
                // when the message had one recipient.
                None => match original.recipients.as_slice() {
                    [only] => Some(only.clone()),
                    _ => None,
                },
            };
            let Some(recipient) = recipient else {
                tracing::warn!(report_id = %id, message_id = %original.message_id, named = ?named, "feedback names no recipient of the original message; ignored");
                continue;
            };
            match verdict {
                Verdict::Bounce { status, diagnostic } => bounced.push(json!({
                    "emailAddress": recipient, "action": "failed", "status": status,
                    "diagnosticCode": diagnostic,
                })),
                Verdict::Delay { status, diagnostic } => delayed.push(json!({
                    "emailAddress": recipient, "status": status, "diagnosticCode": diagnostic,
                })),
                Verdict::Complaint {
                    feedback_type,
                    user_agent,
                } => complained.push((recipient, feedback_type.clone(), user_agent.clone())),
            }
        }
        let tenant = &original.tenant;
        if !bounced.is_empty() {
            self.control.record_event(
                tenant,
                &ses_event(
                    "Bounce",
                    mail.clone(),
                    json!({
                        "bounceType": "Permanent", "bounceSubType": "General",
                        "bouncedRecipients": bounced, "timestamp": ts,
                        "feedbackId": id.as_str(), "reportingMTA": report.reporting_mta,
                    }),
                ),
            )?;
            for b in &bounced {
                let r = b["emailAddress"].as_str().unwrap_or_default();
                self.control
                    .suppress(tenant, r, "BOUNCE", Some(&original.message_id))?;
                tracing::warn!(report_id = %id, message_id = %original.message_id, %tenant, recipient = r, "asynchronous bounce");
            }
        }
        if !delayed.is_empty() {
            self.control.record_event(
                tenant,
                &ses_event(
                    "DeliveryDelay",
                    mail.clone(),
                    json!({
                        "timestamp": ts, "delayType": "TransientCommunicationFailure",
                        "delayedRecipients": delayed, "reportingMTA": report.reporting_mta,
                    }),
                ),
            )?;
            tracing::info!(report_id = %id, message_id = %original.message_id, %tenant, "asynchronous delay notice");
        }
        for (r, feedback_type, user_agent) in &complained {
            self.control.record_event(
                tenant,
                &ses_event(
                    "Complaint",
                    mail.clone(),
                    json!({
                        "complainedRecipients": [{"emailAddress": r}], "timestamp": ts,
                        "feedbackId": id.as_str(), "complaintFeedbackType": feedback_type,
                        "userAgent": user_agent,
                    }),
                ),
            )?;
            self.control
                .suppress(tenant, r, "COMPLAINT", Some(&original.message_id))?;
            tracing::warn!(report_id = %id, message_id = %original.message_id, %tenant, recipient = %r, "complaint");
        }
        tracing::info!(report_id = %id, message_id = %original.message_id, %tenant, reporting_mta = %report.reporting_mta, "feedback report processed");
        Ok(())
    }
}

/// Header-style fields (`Name: value`, folded lines joined), in groups
/// separated by blank lines, as RFC 3464 and RFC 5965 lay them out.
fn field_groups(text: &str) -> Vec<Vec<(String, String)>> {
    let mut groups = Vec::new();
    let mut current: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            if !current.is_empty() {
                groups.push(std::mem::take(&mut current));
            }
        } else if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = current.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            current.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    if !current.is_empty() {
        groups.push(current);
    }
    groups
}

fn get<'a>(group: &'a [(String, String)], name: &str) -> Option<&'a str> {
    group
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// `rfc822; user@example.com` → `user@example.com`.
fn address_field(value: &str) -> String {
    let v = value.split_once(';').map_or(value, |(_, a)| a);
    v.trim().trim_matches(|c| c == '<' || c == '>').to_string()
}

/// Reads a delivery-status or feedback report; None when it is neither.
fn parse(body: &[u8]) -> Option<Report> {
    let message = MessageParser::default().parse(body)?;
    let ct = message.content_type()?;
    if !ct.ctype().eq_ignore_ascii_case("multipart")
        || !ct
            .subtype()
            .is_some_and(|s| s.eq_ignore_ascii_case("report"))
    {
        return None;
    }
    let report_type = ct.attribute("report-type")?.to_ascii_lowercase();
    let wanted = match report_type.as_str() {
        "delivery-status" => ["delivery-status", "global-delivery-status"],
        "feedback-report" => ["feedback-report", "feedback-report"],
        _ => return None,
    };
    let part = message.parts.iter().find(|p| {
        p.content_type().is_some_and(|c| {
            c.ctype().eq_ignore_ascii_case("message")
                && c.subtype()
                    .is_some_and(|s| wanted.iter().any(|w| s.eq_ignore_ascii_case(w)))
        })
    })?;
    let text = String::from_utf8_lossy(part.contents()).into_owned();
    let groups = field_groups(&text);
    if report_type == "feedback-report" {
        let fields = groups.concat();
        let feedback_type = get(&fields, "feedback-type")?.to_ascii_lowercase();
        let verdict = Verdict::Complaint {
            feedback_type,
            user_agent: get(&fields, "user-agent").unwrap_or_default().to_string(),
        };
        let named: Vec<Option<String>> = fields
            .iter()
            .filter(|(n, _)| n == "original-rcpt-to")
            .map(|(_, v)| Some(address_field(v)))
            .collect();
        let named = if named.is_empty() { vec![None] } else { named };
        return Some(Report {
            reporting_mta: String::new(),
            verdicts: named.into_iter().map(|r| (r, verdict.clone())).collect(),
        });
    }
    let (per_message, per_recipient) = groups.split_first()?;
    let reporting_mta = get(per_message, "reporting-mta")
        .map(address_field)
        .unwrap_or_default();
    let mut verdicts = Vec::new();
    for group in per_recipient {
        let Some(recipient) = get(group, "final-recipient").or(get(group, "original-recipient"))
        else {
            continue;
        };
        let action = get(group, "action")
            .unwrap_or_default()
            .to_ascii_lowercase();
        let status = get(group, "status").unwrap_or_default();
        let status = status
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        let diagnostic = get(group, "diagnostic-code")
            .unwrap_or_default()
            .to_string();
        let verdict = if action == "failed" && status.starts_with('5') {
            Verdict::Bounce { status, diagnostic }
        } else if action == "delayed" || status.starts_with('4') {
            Verdict::Delay { status, diagnostic }
        } else {
            // delivered, relayed, expanded: nothing to report.
            continue;
        };
        verdicts.push((Some(address_field(recipient)), verdict));
    }
    Some(Report {
        reporting_mta,
        verdicts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DSN: &str = "From: MAILER-DAEMON@mx.example.net\r\n\
        To: 0107-x@mail.acme.test\r\nSubject: Undelivered\r\nMIME-Version: 1.0\r\n\
        Content-Type: multipart/report; report-type=delivery-status; boundary=\"b1\"\r\n\r\n\
        --b1\r\nContent-Type: text/plain\r\n\r\nSorry.\r\n\
        --b1\r\nContent-Type: message/delivery-status\r\n\r\n\
        Reporting-MTA: dns; mx.example.net\r\n\r\n\
        Final-Recipient: rfc822; Gone@Example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n\
        Diagnostic-Code: smtp; 550 5.1.1 no such\r\n  user\r\n\r\n\
        Final-Recipient: rfc822; slow@example.net\r\nAction: delayed\r\nStatus: 4.2.2\r\n\r\n\
        Final-Recipient: rfc822; fine@example.net\r\nAction: delivered\r\nStatus: 2.0.0\r\n\
        --b1--\r\n";

    #[test]
    fn delivery_status_reports_give_bounces_and_delays() {
        let r = parse(DSN.as_bytes()).unwrap();
        assert_eq!(r.reporting_mta, "mx.example.net");
        assert_eq!(
            r.verdicts,
            vec![
                (
                    Some("Gone@Example.net".into()),
                    Verdict::Bounce {
                        status: "5.1.1".into(),
                        diagnostic: "smtp; 550 5.1.1 no such user".into()
                    }
                ),
                (
                    Some("slow@example.net".into()),
                    Verdict::Delay {
                        status: "4.2.2".into(),
                        diagnostic: String::new()
                    }
                ),
            ]
        );
    }

    #[test]
    fn arf_reports_give_complaints() {
        let arf = "From: fbl@isp.example\r\nTo: x@mail.acme.test\r\nMIME-Version: 1.0\r\n\
            Content-Type: multipart/report; report-type=feedback-report; boundary=b\r\n\r\n\
            --b\r\nContent-Type: text/plain\r\n\r\nA complaint.\r\n\
            --b\r\nContent-Type: message/feedback-report\r\n\r\n\
            Feedback-Type: abuse\r\nUser-Agent: isp-fbl/1.0\r\nVersion: 1\r\n\
            Original-Rcpt-To: <bob@example.net>\r\n\
            --b--\r\n";
        let r = parse(arf.as_bytes()).unwrap();
        assert_eq!(
            r.verdicts,
            vec![(
                Some("bob@example.net".into()),
                Verdict::Complaint {
                    feedback_type: "abuse".into(),
                    user_agent: "isp-fbl/1.0".into()
                }
            )]
        );
    }

    #[test]
    fn other_mail_is_not_a_report() {
        assert!(parse(b"Subject: hi\r\n\r\nout of office\r\n").is_none());
        assert!(parse(b"Content-Type: multipart/report; report-type=disposition-notification; boundary=b\r\n\r\n--b--\r\n").is_none());
    }
}
