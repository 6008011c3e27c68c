//! The `Backend` that sessions talk to: authentication, recipient policy,
//! message checks, stamping and the durable commit.

mod ingest;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::auth::{AuthOutcome, Authenticator};
use crate::checks;
use crate::checks::inbound::{Envelope, InboundAuth, SesStatus};
use crate::config::ListenerKind;
use crate::control::{Control, DkimSigner, Domain};
use crate::domains;
use crate::proto::headers::HeaderBlock;
use crate::proto::{Reply, texts};
use crate::queue::{Direction, NewEntry, Queue};
use crate::rules::{self, Plan, RecipientOutcome};
use crate::scan::{ScanContext, Scanner, Screened, Verdict};
use crate::session::{Backend, SessionInfo, Transaction};
use crate::signing::Signer;
use crate::types::{EmailAddress, MessageId, unix_now};

use super::received;

pub struct Gateway {
    pub control: Arc<Control>,
    pub auth: Authenticator,
    pub queue: Queue,
    pub scanner: Scanner,
    pub signer: Signer,
    pub inbound_auth: InboundAuth,
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
        self.route_recipient(session, recipient).map(|_| ())
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
        let notifications = received::notifications(&entries);
        match self.queue.commit(entries).await {
            Ok(()) => {
                // Only once the message is durable, and never awaited.
                received::send(notifications);
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
    /// SES order for one recipient: its tenant (a verified domain), the
    /// tenant's IP filters, then its receipt rules (match, TLS policy,
    /// bounce). Gives the tenant and the recipient's plan, or the refusal.
    fn route_recipient(
        &self,
        session: &SessionInfo,
        recipient: &str,
    ) -> Result<(String, Plan), Reply> {
        let addr = EmailAddress::parse(recipient).ok_or_else(texts::relaying_denied)?;
        let tenant = self
            .receiving_tenant(recipient)?
            .ok_or_else(texts::relaying_denied)?;
        let db_error = |e: anyhow::Error| {
            tracing::error!(tenant, error = %format!("{e:#}"), "control database lookup failed");
            texts::temporary_failure()
        };
        let filters = self.control.ip_filters(&tenant).map_err(db_error)?;
        if !rules::ip_allowed(&filters, session.peer.ip()) {
            tracing::info!(session = session.session_id, peer = %session.peer, tenant, "refused by the tenant's IP filter");
            return Err(texts::ip_filtered());
        }
        let rule_set = self.control.receipt_rules(&tenant).map_err(db_error)?;
        let refusal = match rules::plan_for(&rule_set, &addr, session.tls) {
            RecipientOutcome::Accept(plan) => return Ok((tenant, plan)),
            RecipientOutcome::NoMatch => (None, texts::mailbox_does_not_exist()),
            RecipientOutcome::TlsRequired { rule } => (Some(rule), texts::starttls_first()),
            RecipientOutcome::Bounce {
                rule,
                smtp_reply_code,
                status_code,
                message,
            } => {
                // Validated as 4xx/5xx when the rule was added.
                let code = smtp_reply_code.parse().unwrap_or(550);
                (Some(rule), texts::rule_bounce(code, &status_code, &message))
            }
        };
        let (rule, reply) = refusal;
        tracing::info!(session = session.session_id, tenant, recipient, rule = rule.unwrap_or_default(), reply = %reply, "recipient refused by receipt rules");
        Err(reply)
    }

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
        // Read once: authorization, quota and signing all go by this row.
        let account = match self.control.tenant(&tenant) {
            Ok(Some(account)) => account,
            Ok(None) => return Err(texts::temporary_failure()),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "control database lookup failed");
                return Err(texts::temporary_failure());
            }
        };
        let headers = HeaderBlock::parse(&tx.body);
        checks::header_checks(&headers)?;
        checks::authorize_submission(
            &self.control,
            &self.region,
            &account,
            &tx.mail_from,
            &tx.recipients,
            &headers,
        )?;
        checks::config_set::check(&self.control, &tenant, &tx.body)?;
        self.quotas
            .admit(&tenant, account.send_quota, tx.recipients.len())?;
        // Scanned before stamping (and signing): what is signed is what is sent.
        let ctx = ScanContext::outbound(
            id,
            &tenant,
            &tx.mail_from,
            &tx.recipients,
            session.peer.ip(),
        );
        let screened = self.scanner.screen(&ctx, tx.body).await?;
        let meta = serde_json::json!({ "scan": screened.meta() });
        let scanned = screened.body;
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
            // Not when SES signs (Easy DKIM): one signature per d=, not two.
            Some(domain) if account.dkim_signer == DkimSigner::Sesame => {
                self.sign(domain, stamped)?
            }
            _ => stamped,
        };
        Ok(vec![NewEntry {
            message_id: id.clone(),
            tenant,
            direction: Direction::Outbound,
            mail_from,
            source: tx.mail_from,
            recipients: tx.recipients,
            body,
            meta,
        }])
    }

    /// Prepends the DKIM signatures; signed exactly once, before queueing.
    fn sign(&self, domain: &Domain, message: Vec<u8>) -> Result<Vec<u8>, Reply> {
        let signatures = self.signer.sign(domain, &message).map_err(|e| {
            tracing::error!(domain = %domain.domain, error = %format!("{e:#}"), "DKIM signing failed");
            texts::temporary_failure()
        })?;
        Ok([signatures.as_bytes(), &message].concat())
    }

    /// One queue entry per receiving tenant, so tenants never share state:
    /// the tenant's recipients share it, with the add-header actions of all
    /// the rules they matched, and `meta` saying what was found and done.
    /// Callable without an SMTP session (the recipients are routed again
    /// here, so a rule changed since RCPT, or mail that never saw RCPT,
    /// gets the rules as they are now).
    async fn prepare_inbound(
        &self,
        session: &SessionInfo,
        id: &MessageId,
        tx: Transaction,
    ) -> Result<Vec<NewEntry>, Reply> {
        let headers = HeaderBlock::parse(&tx.body);
        checks::header_checks(&headers)?;
        let mut by_tenant: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut plans: BTreeMap<String, Plan> = BTreeMap::new();
        for rcpt in &tx.recipients {
            // A recipient the rules refuse now refuses the whole message:
            // the sender learns it, rather than one recipient vanishing.
            let (tenant, plan) = self.route_recipient(session, rcpt)?;
            by_tenant
                .entry(tenant.clone())
                .or_default()
                .push(rcpt.clone());
            match plans.get_mut(&tenant) {
                Some(known) => known.merge(plan),
                None => {
                    plans.insert(tenant, plan);
                }
            }
        }
        let received_at_ms = received::now_ms();
        // Verified on the message as it arrived, before scanning may strip
        // a part (which would break a DKIM body hash).
        let envelope = Envelope {
            ip: session.peer.ip(),
            helo: session.helo.as_deref().unwrap_or("unknown"),
            mail_from: &tx.mail_from,
        };
        let auth = self.inbound_auth.check(&envelope, &tx.body).await;
        if auth.dmarc_rejects() && self.enforces_dmarc(by_tenant.keys())? {
            return Err(texts::dmarc_reject(&auth.dmarc_domain));
        }
        let ctx = ScanContext::inbound(id, &by_tenant, &tx.mail_from, session.peer.ip());
        let screened = if plans.values().any(|p| p.scan) {
            self.scanner.screen(&ctx, tx.body).await?
        } else {
            Screened::unscanned(tx.body)
        };
        let virus = match screened.verdict {
            None => SesStatus::Disabled,
            Some(Verdict::Pass) => SesStatus::Pass,
            Some(Verdict::Fail) => SesStatus::Fail,
            Some(Verdict::ProcessingFailed) => SesStatus::ProcessingFailed,
        };
        let scan_meta = screened.meta();
        let scanned = screened.body;
        let headers = HeaderBlock::parse(&scanned);
        let mut stamp = vec![self.received_header(session, id, &tx.recipients)];
        stamp.extend(auth.headers.iter().cloned());
        if headers.count("Message-ID") == 0 {
            stamp.push(format!("Message-ID: <{id}@{}>\r\n", self.hostname));
        }
        // A failed p=reject kept because the tenant does not enforce DMARC
        // is at least as suspect as a quarantined one.
        let flagged = auth.dmarc_quarantines() || auth.dmarc_rejects();
        Ok(plans
            .into_iter()
            .map(|(tenant, plan)| {
                let recipients = by_tenant.remove(&tenant).unwrap_or_default();
                let mut lines = stamp.clone();
                lines.extend(plan.header_lines());
                // Results claiming to come from us can only be forged (RFC 8601 5).
                let body =
                    headers.rewrite_where(|field, raw| self.forged_results(field, raw), &lines);
                let meta = serde_json::json!({
                    "scan": scan_meta,
                    "receipt": {
                        "timestamp": crate::control::iso8601_millis(received_at_ms),
                        "recipients": recipients,
                        "spfVerdict": auth.spf.verdict(),
                        "dkimVerdict": auth.dkim.verdict(),
                        "dmarcVerdict": auth.dmarc.verdict(),
                        "dmarcPolicy": auth.dmarc_policy,
                        "virusVerdict": virus.verdict(),
                        // sesame has no spam filter: nothing is judged.
                        "spamVerdict": SesStatus::Gray.verdict(),
                    },
                    "flagged": flagged,
                    "store": plan.stores(),
                    "rules": plan.rules,
                });
                NewEntry {
                    message_id: id.clone(),
                    tenant,
                    direction: Direction::Inbound,
                    mail_from: tx.mail_from.clone(),
                    source: tx.mail_from.clone(),
                    recipients,
                    body,
                    meta,
                }
            })
            .collect())
    }

    /// The strictest setting among the receiving tenants: one reply answers
    /// all of them.
    fn enforces_dmarc<'a>(&self, tenants: impl Iterator<Item = &'a String>) -> Result<bool, Reply> {
        for tenant in tenants {
            let row = self.control.tenant(tenant).map_err(|e| {
                tracing::error!(tenant, error = %format!("{e:#}"), "control database lookup failed");
                texts::temporary_failure()
            })?;
            if row.is_some_and(|t| t.dmarc_enforce) {
                return Ok(true);
            }
        }
        Ok(false)
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
