//! The gateway as the sink of mail that SES received (`aws::ingest`): the
//! message takes the MX listener's inbound path (`prepare_inbound`:
//! checks, scanning, stamping) and its durable commit, restricted to the
//! recipients of the tenant that owns the S3 bucket. SES's verdicts, when
//! its notification has them, are kept in the entry's metadata (`ses`).

use async_trait::async_trait;
use mail_parser::MessageParser;

use super::Gateway;
use crate::aws::ingest::{InboundMail, InboundSink, Refusal};
use crate::config::ListenerKind;
use crate::session::{SessionInfo, Transaction};

/// The peer SES mail is recorded as coming from: SES's inbound endpoint
/// connected to no socket of ours.
const SES_PEER: &str = "0.0.0.0:0";

#[async_trait]
impl InboundSink for Gateway {
    async fn ingest(&self, mail: InboundMail) -> Result<(), Refusal> {
        let (mail_from, candidates, ses_verdicts) = match mail.envelope {
            Some(envelope) => (
                envelope.mail_from,
                envelope.recipients,
                envelope.ses_verdicts,
            ),
            None => {
                let (mail_from, recipients) = header_envelope(&mail.body);
                (mail_from, recipients, serde_json::Value::Null)
            }
        };
        // A bucket belongs to one tenant: recipients of other tenants'
        // domains (or none of ours) in the same message are not its mail.
        let mut recipients = Vec::new();
        for rcpt in candidates {
            let owner = self.receiving_tenant(&rcpt).map_err(|reply| Refusal {
                transient: true,
                reason: reply.text().to_string(),
            })?;
            if owner.as_deref() == Some(mail.tenant.as_str()) && !recipients.contains(&rcpt) {
                recipients.push(rcpt);
            }
        }
        if recipients.is_empty() {
            return Err(Refusal {
                transient: false,
                reason: format!("no recipient in a domain of tenant '{}'", mail.tenant),
            });
        }
        let session = SessionInfo {
            session_id: 0,
            peer: SES_PEER.parse().expect("a socket address"),
            listener: ListenerKind::Mx,
            tls: true,
            helo: Some("amazonses.com".into()),
            tenant: None,
            username: None,
        };
        let tx = Transaction {
            mail_from,
            recipients,
            body: mail.body,
        };
        let mut entries = self
            .prepare_inbound(&session, &mail.message_id, tx)
            .await
            .map_err(|reply| Refusal {
                transient: reply.code < 500,
                reason: reply.text().to_string(),
            })?;
        // SES saw the connecting client; sesame did not (its SPF ran
        // against no address). SES's verdicts, when the notification has
        // them, are the receipt verdicts; the full set stays under `ses`.
        if let Some(ses) = ses_verdicts.as_object() {
            for entry in &mut entries {
                for (key, status) in ses {
                    entry.meta["receipt"][key] = serde_json::json!({ "status": status });
                }
                entry.meta["ses"] = ses_verdicts.clone();
            }
        }
        self.queue.commit(entries).await.map_err(|e| Refusal {
            transient: true,
            reason: format!("{e:#}"),
        })
    }
}

/// Without SES's envelope (an S3 event carries none): the sender from
/// Return-Path (which SES adds) or From, the recipients from To and Cc.
fn header_envelope(body: &[u8]) -> (String, Vec<String>) {
    let Some(message) = MessageParser::default().parse_headers(body) else {
        return (String::new(), vec![]);
    };
    let addresses = |header: Option<&mail_parser::Address<'_>>| -> Vec<String> {
        header
            .into_iter()
            .flat_map(|a| a.iter())
            .filter_map(|a| a.address().map(str::to_string))
            .collect()
    };
    let mail_from = message
        .return_path()
        .as_text()
        .map(|s| s.trim_matches(['<', '>']).to_string())
        .or_else(|| addresses(message.from()).into_iter().next())
        .unwrap_or_default();
    let mut recipients = addresses(message.to());
    recipients.extend(addresses(message.cc()));
    (mail_from, recipients)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_an_envelope_it_comes_from_the_headers() {
        let body = b"Return-Path: <bounce@sender.test>\r\nFrom: Ann <ann@sender.test>\r\n\
            To: a@acme.test, Bob <b@other.test>\r\nCc: c@acme.test\r\n\r\nhi\r\n";
        let (from, rcpts) = header_envelope(body);
        assert_eq!(from, "bounce@sender.test");
        assert_eq!(rcpts, ["a@acme.test", "b@other.test", "c@acme.test"]);
        let (from, _) = header_envelope(b"From: ann@sender.test\r\nTo: a@acme.test\r\n\r\n");
        assert_eq!(from, "ann@sender.test");
    }
}
