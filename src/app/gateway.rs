//! The `Backend` that sessions talk to: authentication, recipient policy,
//! message checks, stamping and the durable commit.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::auth::{AuthOutcome, Authenticator};
use crate::checks;
use crate::checks::dkim::DkimVerifier;
use crate::config::ListenerKind;
use crate::control::{Control, Domain};
use crate::domains;
use crate::proto::headers::HeaderBlock;
use crate::proto::{Reply, texts};
use crate::queue::{Direction, NewEntry, Queue};
use crate::scan::{ScanContext, Scanner};
use crate::session::{Backend, SessionInfo, Transaction};
use crate::signing::Signer;
use crate::types::{EmailAddress, MessageId, unix_now};

pub struct Gateway {
    pub control: Arc<Control>,
    pub auth: Authenticator,
    pub queue: Queue,
    pub scanner: Scanner,
    pub signer: Signer,
    pub dkim: DkimVerifier,
    pub feedback: crate::delivery::feedback::Feedback,
    pub quotas: checks::quota::Quotas,
    pub default_mail_from_domain: String,
    pub hostname: String,
    pub region: String,
}

impl Backend for Gateway {
    async fn authenticate(
        &self,
        session: &SessionInfo,
        username: &str,
        password: &str,
    ) -> AuthOutcome {
        let outcome = self
            .auth
            .authenticate(session.peer.ip(), username, password)
            .await;
        match &outcome {
            AuthOutcome::Success { tenant } => {
                tracing::info!(
                    session = session.session_id,
                    user = username,
                    tenant,
                    "auth ok"
                )
            }
            // The username is an access key id, not a secret; the password
            // never reaches a log.
            AuthOutcome::Invalid { .. } => {
                tracing::warn!(session = session.session_id, peer = %session.peer, user = username, "auth failed")
            }
            AuthOutcome::Throttled => {
                tracing::warn!(session = session.session_id, peer = %session.peer, user = username, "auth throttled")
            }
        }
        outcome
    }

    async fn recipient(&self, session: &SessionInfo, recipient: &str) -> Result<(), Reply> {
        if session.listener != ListenerKind::Mx {
            // Submission recipients are checked after the dot (sandbox), as
            // SES does.
            return Ok(());
        }
        // Late bounces and complaints to a VERP address we sent from.
        if self.feedback.is_report_address(recipient) {
            return Ok(());
        }
        match self.receiving_tenant(recipient)? {
            Some(_) => Ok(()),
            None => Err(texts::relaying_denied()),
        }
    }

    async fn message(&self, session: &SessionInfo, mut transaction: Transaction) -> Reply {
        let id = MessageId::generate();
        if session.listener == ListenerKind::Mx {
            let reports = self
                .feedback
                .take_report_addresses(&mut transaction.recipients);
            if !reports.is_empty() {
                if let Err(e) = self.feedback.process(&id, &reports, &transaction.body) {
                    tracing::error!(session = session.session_id, report_id = %id, error = %format!("{e:#}"), "feedback report not recorded");
                    return texts::temporary_failure();
                }
                if transaction.recipients.is_empty() {
                    return texts::accepted(id.as_str());
                }
            }
        }
        let prepared = match session.listener {
            ListenerKind::Mx => self.prepare_inbound(session, &id, transaction).await,
            _ => self.prepare_outbound(session, &id, transaction).await,
        };
        let entries = match prepared {
            Ok(entries) => entries,
            Err(reply) => {
                tracing::info!(
                    session = session.session_id,
                    message_id = %id,
                    code = reply.code,
                    reason = reply.text(),
                    "message refused"
                );
                return reply;
            }
        };
        let summary: Vec<(String, usize)> = entries
            .iter()
            .map(|e| (e.tenant.clone(), e.recipients.len()))
            .collect();
        let size = entries.first().map_or(0, |e| e.body.len());
        match self.queue.commit(entries).await {
            Ok(()) => {
                for (tenant, recipients) in summary {
                    tracing::info!(
                        session = session.session_id,
                        message_id = %id,
                        tenant,
                        recipients,
                        size,
                        "message accepted"
                    );
                }
                texts::accepted(id.as_str())
            }
            Err(e) => {
                tracing::error!(session = session.session_id, message_id = %id, error = %format!("{e:#}"), "message not queued");
                texts::temporary_failure()
            }
        }
    }
}

impl Gateway {
    fn receiving_tenant(&self, recipient: &str) -> Result<Option<String>, Reply> {
        let Some(addr) = EmailAddress::parse(recipient) else {
            return Ok(None);
        };
        self.control.receiving_tenant(addr.domain()).map_err(|e| {
            tracing::error!(error = %format!("{e:#}"), "control database lookup failed");
            texts::temporary_failure()
        })
    }

    async fn prepare_outbound(
        &self,
        session: &SessionInfo,
        id: &MessageId,
        tx: Transaction,
    ) -> Result<Vec<NewEntry>, Reply> {
        let tenant = session.tenant.clone().ok_or_else(texts::auth_required)?;
        let headers = HeaderBlock::parse(&tx.body);
        checks::header_checks(&headers)?;
        checks::authorize_submission(
            &self.control,
            &self.region,
            &tenant,
            &tx.mail_from,
            &tx.recipients,
            &headers,
        )?;
        checks::config_set::check(&self.control, &tenant, &tx.body)?;
        self.admit_by_quota(&tenant, tx.recipients.len())?;
        // Scanned before stamping (and signing): what is signed is what is sent.
        let ctx = ScanContext::outbound(
            id,
            &tenant,
            &tx.mail_from,
            &tx.recipients,
            session.peer.ip(),
        );
        let scanned = self.scanner.screen(&ctx, tx.body).await?;
        let headers = HeaderBlock::parse(&scanned);
        // SES sets its own Message-ID and Date on everything it sends.
        let stamp = [
            self.received_header(session, id, &tx.recipients),
            format!("Message-ID: <{id}@{}>\r\n", self.hostname),
            format!("Date: {}\r\n", rfc822_now()),
        ];
        let stamped = headers.rewrite(&["Message-ID", "Date"], &stamp);
        // The domain that covers the From address signs (d= aligned with
        // From) and gives the MAIL FROM domain (SPF aligned with From).
        let domain = checks::first_from(&headers)
            .and_then(|from| domains::domain_for(&self.control, &tenant, &from));
        let mail_from =
            domains::envelope_sender(&self.default_mail_from_domain, domain.as_ref(), id)?;
        let body = match &domain {
            Some(domain) => self.sign(domain, stamped)?,
            None => stamped,
        };
        Ok(vec![NewEntry {
            message_id: id.clone(),
            tenant,
            direction: Direction::Outbound,
            mail_from,
            source: tx.mail_from,
            recipients: tx.recipients,
            body,
        }])
    }

    fn admit_by_quota(&self, tenant: &str, recipients: usize) -> Result<(), Reply> {
        let quota = match self.control.tenant(tenant) {
            Ok(Some(t)) => t.send_quota,
            _ => return Err(texts::temporary_failure()),
        };
        self.quotas.admit(tenant, quota, recipients)
    }

    /// Prepends the DKIM signatures; signed exactly once, before queueing.
    fn sign(&self, domain: &Domain, message: Vec<u8>) -> Result<Vec<u8>, Reply> {
        let signatures = self.signer.sign(domain, &message).map_err(|e| {
            tracing::error!(domain = %domain.domain, error = %format!("{e:#}"), "DKIM signing failed");
            texts::temporary_failure()
        })?;
        Ok([signatures.as_bytes(), &message].concat())
    }

    /// One queue entry per receiving tenant, so tenants never share state.
    async fn prepare_inbound(
        &self,
        session: &SessionInfo,
        id: &MessageId,
        tx: Transaction,
    ) -> Result<Vec<NewEntry>, Reply> {
        let headers = HeaderBlock::parse(&tx.body);
        checks::header_checks(&headers)?;
        let mut by_tenant: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for rcpt in &tx.recipients {
            // Accepted at RCPT time; a domain removed since then is relayed
            // nowhere.
            let tenant = self
                .receiving_tenant(rcpt)?
                .ok_or_else(texts::relaying_denied)?;
            by_tenant.entry(tenant).or_default().push(rcpt.clone());
        }
        // DKIM is verified on the message as it arrived, before scanning
        // may strip a part (which would break the body hash).
        let auth_results = self.dkim.authentication_results(&tx.body).await;
        let ctx = ScanContext::inbound(id, &by_tenant, &tx.mail_from, session.peer.ip());
        let scanned = self.scanner.screen(&ctx, tx.body).await?;
        let headers = HeaderBlock::parse(&scanned);
        let mut stamp = vec![
            self.received_header(session, id, &tx.recipients),
            auth_results,
        ];
        if headers.count("Message-ID") == 0 {
            stamp.push(format!("Message-ID: <{id}@{}>\r\n", self.hostname));
        }
        // Results claiming to come from us can only be forged (RFC 8601 5).
        let body = headers.rewrite_where(|field, raw| self.forged_results(field, raw), &stamp);
        Ok(by_tenant
            .into_iter()
            .map(|(tenant, recipients)| NewEntry {
                message_id: id.clone(),
                tenant,
                direction: Direction::Inbound,
                mail_from: tx.mail_from.clone(),
                source: tx.mail_from.clone(),
                recipients,
                body: body.clone(),
            })
            .collect())
    }

    fn forged_results(&self, field: &crate::proto::headers::Field, raw: &[u8]) -> bool {
        field.name.eq_ignore_ascii_case("Authentication-Results")
            && String::from_utf8_lossy(&raw[field.name.len() + 1..])
                .trim_start()
                .split(|c: char| c == ';' || c.is_whitespace())
                .next()
                .is_some_and(|authserv| authserv.eq_ignore_ascii_case(&self.hostname))
    }

    fn received_header(
        &self,
        session: &SessionInfo,
        id: &MessageId,
        recipients: &[String],
    ) -> String {
        let with = match (session.tls, session.username.is_some()) {
            (true, true) => "ESMTPSA",
            (true, false) => "ESMTPS",
            _ => "ESMTP",
        };
        let helo: String = session
            .helo
            .as_deref()
            .unwrap_or("unknown")
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(255)
            .collect();
        let rcpt = match recipients {
            [one] => format!("\r\n\tfor <{one}>"),
            _ => String::new(),
        };
        format!(
            "Received: from {helo} ([{}])\r\n\tby {} (sesame) with {with} id {id}{rcpt};\r\n\t{}\r\n",
            session.peer.ip(),
            self.hostname,
            rfc822_now()
        )
    }
}

fn rfc822_now() -> String {
    mail_parser::DateTime::from_timestamp(unix_now()).to_rfc822()
}
