//! The queue workers inside `serve`.
//!
//! Every `poll_ms` the engine asks queue.db for due recipients, groups them
//! by (message, destination domain), and starts one delivery per group as
//! long as a worker slot and a slot for that domain are free (a busy domain
//! waits for the next pass; other domains go on). A group is marked
//! `inflight` before anything is sent, and its outcome is recorded in one
//! transaction afterwards.
//!
//! Guarantees:
//! - Nothing acknowledged is lost: a recipient leaves the queue only as
//!   `delivered` or `bounced`.
//! - At-least-once: after a crash, `inflight` recipients are queued again
//!   (`requeue_inflight` at start), so one whose delivery finished just
//!   before the crash is delivered twice. The window is one SMTP
//!   transaction.
//! - Events are written to control.db before the queue records the
//!   outcome, so a crash in between repeats an event rather than losing it.
//!   The Send event is the exception: it is claimed in queue.db first
//!   (`send_recorded`), so it is at-most-once.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use super::schedule::{Next, Schedule};
use super::simulator::{self, Behaviour};
use super::{Outcome, Outgoing, Transport, dsn, recipient_domain};
use crate::config::Config;
use crate::control::{Control, MailInfo, TlsPolicy, iso8601_millis, ses_event};
use crate::proto::headers::HeaderBlock;
use crate::proto::send_options::SendOptions;
use crate::queue::state::{self, QueueState, RecipientUpdate};
use crate::queue::{Direction, NewEntry};
use crate::types::{MessageId, unix_now};

/// How often finished mail past its retention is purged (and at start).
const PURGE_EVERY: Duration = Duration::from_secs(60);

/// Queue tenant of gateway-generated mail; no real tenant has this name.
pub const SYSTEM_TENANT: &str = "@system";

/// Headers SES strips before sending.
const SES_HEADERS: &[&str] = &[
    "X-SES-CONFIGURATION-SET",
    "X-SES-MESSAGE-TAGS",
    "X-SES-SOURCE-ARN",
    "X-SES-FROM-ARN",
    "X-SES-RETURN-PATH-ARN",
];

pub struct Transports {
    pub capture: Arc<dyn Transport>,
    pub mx: Arc<dyn Transport>,
    /// Inbound mail into the tenant's store.
    pub local: Arc<dyn Transport>,
    /// Present when `[delivery.relay]` is configured.
    pub relay: Option<Arc<dyn Transport>>,
    pub simulator: Arc<dyn Transport>,
    /// Present when the config has an `[aws]` section.
    pub ses: Option<Arc<dyn Transport>>,
}

pub struct Engine {
    queue: Mutex<QueueState>,
    control: Arc<Control>,
    transports: Transports,
    schedule: Schedule,
    hostname: String,
    system_transport: String,
    poll: Duration,
    batch: usize,
    workers: Arc<Semaphore>,
    per_domain_limit: usize,
    per_domain: Mutex<HashMap<String, Arc<Semaphore>>>,
    retention_secs: i64,
}

/// How one recipient was routed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Transport,
    Simulator(Behaviour),
    Suppressed,
}

impl Engine {
    pub fn new(
        config: &Config,
        control: Arc<Control>,
        transports: Transports,
    ) -> anyhow::Result<Engine> {
        let d = &config.delivery;
        let queue = QueueState::open(&config.data_dir)?;
        let requeued = queue.requeue_inflight(unix_now())?;
        if requeued > 0 {
            tracing::warn!(
                recipients = requeued,
                "recipients in flight at the last stop were queued again (at-least-once delivery)"
            );
        }
        Ok(Engine {
            queue: Mutex::new(queue),
            control,
            transports,
            schedule: Schedule {
                base_secs: d.retry_base_secs,
                max_delay_secs: d.retry_max_delay_secs,
                max_age_secs: d.max_age_secs,
            },
            hostname: config.hostname.clone(),
            system_transport: d.system_transport.clone(),
            poll: Duration::from_millis(d.poll_ms),
            batch: (d.workers * 8).max(64),
            workers: Arc::new(Semaphore::new(d.workers)),
            per_domain_limit: d.per_domain,
            per_domain: Mutex::new(HashMap::new()),
            retention_secs: d.retention_hours * 3600,
        })
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn domain_slots(&self, domain: &str) -> Arc<Semaphore> {
        let mut map = self.per_domain.lock().unwrap_or_else(|e| e.into_inner());
        // Forget idle domains so the map does not grow without bound.
        if map.len() > 10_000 {
            map.retain(|_, s| s.available_permits() < self.per_domain_limit);
        }
        map.entry(domain.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_domain_limit)))
            .clone()
    }

    /// Runs until `stop` turns true, then waits for deliveries in flight.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut tasks = tokio::task::JoinSet::new();
        let mut purged_at: Option<Instant> = None;
        loop {
            if purged_at.is_none_or(|t| t.elapsed() >= PURGE_EVERY) {
                self.purge();
                purged_at = Some(Instant::now());
            }
            if let Err(e) = self.dispatch(&mut tasks) {
                tracing::error!(error = %format!("{e:#}"), "delivery pass failed");
            }
            while tasks.try_join_next().is_some() {}
            tokio::select! {
                _ = tokio::time::sleep(self.poll) => {}
                _ = stop.changed() => break,
            }
        }
        // Deliveries in flight finish (each is bounded by the SMTP
        // timeouts); what a SIGKILL interrupts is queued again at start.
        while tasks.join_next().await.is_some() {}
    }

    /// Drops finished mail older than `delivery.retention_hours`.
    fn purge(&self) {
        match self
            .queue()
            .purge_finished(unix_now() - self.retention_secs)
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                messages = n,
                "purged finished messages past their retention"
            ),
            Err(e) => tracing::error!(error = %format!("{e:#}"), "queue purge failed"),
        }
    }

    fn dispatch(self: &Arc<Self>, tasks: &mut tokio::task::JoinSet<()>) -> anyhow::Result<()> {
        if self.workers.available_permits() == 0 {
            return Ok(());
        }
        let due = self.queue().due(unix_now(), self.batch)?;
        let mut groups: BTreeMap<(i64, String), Vec<String>> = BTreeMap::new();
        for d in due {
            groups
                .entry((d.seq, recipient_domain(&d.recipient)))
                .or_default()
                .push(d.recipient);
        }
        for ((seq, domain), recipients) in groups {
            let Ok(worker) = self.workers.clone().try_acquire_owned() else {
                break;
            };
            let Ok(slot) = self.domain_slots(&domain).try_acquire_owned() else {
                continue;
            };
            self.queue().claim(seq, &recipients)?;
            let engine = self.clone();
            tasks.spawn(async move {
                engine.deliver_group(seq, recipients, (worker, slot)).await;
            });
        }
        Ok(())
    }

    async fn deliver_group(
        self: Arc<Self>,
        seq: i64,
        recipients: Vec<String>,
        _permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
    ) {
        if let Err(e) = self.try_deliver_group(seq, &recipients).await {
            // Left in flight: queued again at the next start. Say so loudly.
            tracing::error!(seq, error = %format!("{e:#}"), "delivery could not be recorded");
        }
    }

    async fn try_deliver_group(&self, seq: i64, recipients: &[String]) -> anyhow::Result<()> {
        let started = Instant::now();
        let Some(entry) = self.queue().entry(seq)? else {
            return Ok(());
        };
        let outbound = entry.direction == Direction::Outbound.as_str();
        let evented = outbound && entry.tenant != SYSTEM_TENANT;
        let attempts: HashMap<String, u32> = self
            .queue()
            .due_attempts(seq, recipients)?
            .into_iter()
            .collect();
        let mail = evented.then(|| mail_object(&entry));
        if let Some(mail) = &mail
            && self.queue().take_send_event(seq)?
        {
            self.event(&entry.tenant, ses_event("Send", mail.clone(), json!({})));
        }

        // Route each recipient: simulator, suppressed, or the transport.
        let mut routes = Vec::with_capacity(recipients.len());
        for r in recipients {
            let route = if let Some(b) = simulator::behaviour(r) {
                Route::Simulator(b)
            } else if evented && self.control.is_suppressed(&entry.tenant, r)? {
                Route::Suppressed
            } else {
                Route::Transport
            };
            routes.push(route);
        }
        let body = HeaderBlock::parse(&entry.body).rewrite(SES_HEADERS, &[]);
        let options = SendOptions::from_headers(&entry.body);
        let require_tls = evented && self.requires_tls(&entry.tenant, &options)?;
        let message = Outgoing {
            message_id: entry.message_id.clone(),
            tenant: entry.tenant.clone(),
            mail_from: entry.mail_from.clone(),
            body: Arc::new(body),
            options,
            meta: Arc::new(entry.meta.clone()),
            require_tls,
        };
        let transport = self.transport_for(&entry.tenant, outbound)?;
        let to_transport: Vec<String> = recipients
            .iter()
            .zip(&routes)
            .filter(|(_, r)| **r == Route::Transport)
            .map(|(r, _)| r.clone())
            .collect();
        let to_simulator: Vec<String> = recipients
            .iter()
            .zip(&routes)
            .filter(|(_, r)| matches!(r, Route::Simulator(_)))
            .map(|(r, _)| r.clone())
            .collect();
        let mut outcomes: HashMap<String, (Outcome, &'static str)> = HashMap::new();
        if !to_transport.is_empty() {
            let result = match &transport {
                Ok(t) => t.deliver(&message, &to_transport).await,
                Err(reason) => to_transport
                    .iter()
                    .map(|_| Outcome::transient(reason.clone()))
                    .collect(),
            };
            let name = transport.as_ref().map_or("none", |t| t.name());
            for (r, o) in to_transport.iter().zip(result) {
                outcomes.insert(r.clone(), (o, name));
            }
        }
        if !to_simulator.is_empty() {
            let result = self
                .transports
                .simulator
                .deliver(&message, &to_simulator)
                .await;
            for (r, o) in to_simulator.iter().zip(result) {
                outcomes.insert(r.clone(), (o, "simulator"));
            }
        }
        for (r, route) in recipients.iter().zip(&routes) {
            if *route == Route::Suppressed {
                outcomes.insert(
                    r.clone(),
                    (
                        Outcome::permanent("5.1.1", simulator::SUPPRESSED_RESPONSE),
                        "suppression",
                    ),
                );
            }
        }

        let now = unix_now();
        let mut updates = Vec::new();
        let mut delivered: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut bounced: BTreeMap<(&str, &str), Vec<Value>> = BTreeMap::new();
        let mut delayed = Vec::new();
        let mut failed_for_dsn: Vec<(String, String, String)> = Vec::new();
        let mut complained = Vec::new();
        let mut auto_replies = Vec::new();
        for (r, route) in recipients.iter().zip(&routes) {
            let (outcome, transport_name) = outcomes
                .remove(r)
                .unwrap_or_else(|| (Outcome::transient("451 4.3.0 no outcome"), "none"));
            let tries = attempts.get(r).copied().unwrap_or(0) + 1;
            let mut update = RecipientUpdate {
                recipient: r.clone(),
                status: state::DELIVERED,
                attempts: tries,
                next_attempt_at: now,
                response: outcome.response().to_string(),
                transport: transport_name.to_string(),
            };
            match outcome {
                Outcome::Delivered { response } => {
                    tracing::info!(message_id = %entry.message_id, tenant = %entry.tenant, recipient = %r, transport = transport_name, response = %response, "delivered");
                    delivered.entry(response).or_default().push(r.clone());
                    match route {
                        Route::Simulator(Behaviour::Complaint) => complained.push(r.clone()),
                        Route::Simulator(Behaviour::OutOfOffice) => auto_replies.push(r.clone()),
                        _ => {}
                    }
                }
                Outcome::Permanent { response, status } => {
                    update.status = state::BOUNCED;
                    tracing::warn!(message_id = %entry.message_id, tenant = %entry.tenant, recipient = %r, transport = transport_name, response = %response, "bounced");
                    let sub_type = match route {
                        Route::Suppressed | Route::Simulator(Behaviour::SuppressionList) => {
                            "OnAccountSuppressionList"
                        }
                        _ => "General",
                    };
                    bounced
                        .entry(("Permanent", sub_type))
                        .or_default()
                        .push(json!({
                            "emailAddress": r, "action": "failed", "status": status,
                            "diagnosticCode": format!("smtp; {response}"),
                        }));
                    if sub_type == "General" {
                        failed_for_dsn.push((r.clone(), status.clone(), response.clone()));
                    }
                    // A hard bounce from a real receiver suppresses the address.
                    // SES's synchronous refusals are about the message or the
                    // account, never the recipient (its recipient bounces come
                    // back later as feedback, see aws::feedback).
                    if evented
                        && *route == Route::Transport
                        && transport_name != "ses"
                        && status.starts_with('5')
                    {
                        self.control.suppress(
                            &entry.tenant,
                            r,
                            "BOUNCE",
                            Some(&entry.message_id),
                        )?;
                    }
                }
                Outcome::Transient { response } => {
                    match self.schedule.next(tries, entry.received_at, now) {
                        Next::RetryAt(at) => {
                            update.status = state::DEFERRED;
                            update.next_attempt_at = at;
                            tracing::info!(message_id = %entry.message_id, tenant = %entry.tenant, recipient = %r, attempts = tries, retry_at = at, response = %response, "deferred");
                            delayed.push(json!({
                                "emailAddress": r,
                                "status": super::enhanced_status(&response),
                                "diagnosticCode": format!("smtp; {response}"),
                            }));
                        }
                        Next::GiveUp => {
                            update.status = state::BOUNCED;
                            let response = format!("{response} (gave up after {tries} attempts)");
                            update.response = response.clone();
                            tracing::warn!(message_id = %entry.message_id, tenant = %entry.tenant, recipient = %r, attempts = tries, response = %response, "bounced at maximum age");
                            bounced
                                .entry(("Transient", "General"))
                                .or_default()
                                .push(json!({
                                    "emailAddress": r, "action": "failed", "status": "4.4.7",
                                    "diagnosticCode": format!("smtp; {response}"),
                                }));
                            failed_for_dsn.push((r.clone(), "4.4.7".into(), response));
                        }
                    }
                }
            }
            updates.push(update);
        }

        // Mail the outcome causes: one DSN for this attempt's failures, and
        // the simulator's auto-replies.
        let mut new_entries = Vec::new();
        if outbound
            && !entry.mail_from.is_empty()
            && !entry.source.is_empty()
            && !failed_for_dsn.is_empty()
        {
            let dsn_id = MessageId::generate();
            let body = dsn::build(&dsn::Report {
                hostname: &self.hostname,
                message_id: &entry.message_id,
                dsn_id: dsn_id.as_str(),
                to: &entry.source,
                arrival: entry.received_at,
                failed: failed_for_dsn
                    .iter()
                    .map(|(r, s, d)| dsn::Failed {
                        recipient: r,
                        status: s,
                        diagnostic: d,
                    })
                    .collect(),
                original: &entry.body,
            });
            tracing::info!(message_id = %entry.message_id, dsn_id = %dsn_id, to = %entry.source, "DSN queued");
            new_entries.push(NewEntry {
                message_id: dsn_id,
                tenant: SYSTEM_TENANT.into(),
                direction: Direction::Outbound,
                mail_from: String::new(),
                source: String::new(),
                recipients: vec![entry.source.clone()],
                body,
                meta: serde_json::Value::Null,
            });
        }
        if !entry.source.is_empty() {
            for r in &auto_replies {
                new_entries.push(self.auto_reply(r, &entry.source, &entry.message_id));
            }
        }

        // Events first (at-least-once), then the durable record.
        if let Some(mail) = &mail {
            let ts = iso8601_millis(now * 1000);
            let took = started.elapsed().as_millis() as i64;
            for (response, rcpts) in &delivered {
                self.event(
                    &entry.tenant,
                    ses_event(
                        "Delivery",
                        mail.clone(),
                        json!({
                            "timestamp": ts, "processingTimeMillis": took, "recipients": rcpts,
                            "smtpResponse": response, "reportingMTA": self.hostname,
                        }),
                    ),
                );
            }
            for ((bounce_type, sub_type), rcpts) in &bounced {
                self.event(
                    &entry.tenant,
                    ses_event(
                        "Bounce",
                        mail.clone(),
                        json!({
                            "bounceType": bounce_type, "bounceSubType": sub_type,
                            "bouncedRecipients": rcpts, "timestamp": ts,
                            "feedbackId": MessageId::generate().as_str(),
                            "reportingMTA": format!("dns; {}", self.hostname),
                        }),
                    ),
                );
            }
            if !delayed.is_empty() {
                self.event(&entry.tenant, ses_event("DeliveryDelay", mail.clone(), json!({
                    "timestamp": ts, "delayType": "TransientCommunicationFailure",
                    "expirationTime": iso8601_millis(self.schedule.expires_at(entry.received_at) * 1000),
                    "delayedRecipients": delayed, "reportingMTA": self.hostname,
                })));
            }
            if !complained.is_empty() {
                let list: Vec<Value> = complained
                    .iter()
                    .map(|r| json!({"emailAddress": r}))
                    .collect();
                self.event(
                    &entry.tenant,
                    ses_event(
                        "Complaint",
                        mail.clone(),
                        json!({
                            "complainedRecipients": list, "timestamp": ts,
                            "feedbackId": MessageId::generate().as_str(),
                            "complaintFeedbackType": "abuse",
                            "userAgent": "Amazon SES Mailbox Simulator",
                        }),
                    ),
                );
            }
        }
        self.queue().record(seq, &updates, &new_entries, now)?;
        Ok(())
    }

    fn transport_for(
        &self,
        tenant: &str,
        outbound: bool,
    ) -> anyhow::Result<Result<Arc<dyn Transport>, String>> {
        // Inbound mail is for a tenant's own store.
        if !outbound {
            return Ok(Ok(self.transports.local.clone()));
        }
        let mode = if tenant == SYSTEM_TENANT {
            self.system_transport.clone()
        } else {
            match self.control.tenant(tenant)? {
                Some(t) => t.delivery,
                None => return Ok(Err(format!("451 4.3.0 tenant '{tenant}' does not exist"))),
            }
        };
        Ok(match mode.as_str() {
            "capture" => Ok(self.transports.capture.clone()),
            "mx" => Ok(self.transports.mx.clone()),
            "ses" => match &self.transports.ses {
                Some(ses) => Ok(ses.clone()),
                None => Err("451 4.3.5 delivery mode 'ses' needs an [aws] config section".into()),
            },
            "relay" => self.transports.relay.clone().ok_or_else(|| {
                "451 4.3.5 delivery mode 'relay' needs [delivery.relay] in the config".to_string()
            }),
            // A mode this build does not know (a control.db edited by hand or
            // by a newer version): kept queued and retried, never lost.
            other => Err(format!("451 4.3.5 unknown delivery mode '{other}'")),
        })
    }

    /// Whether the message's configuration set has `TlsPolicy REQUIRE`.
    fn requires_tls(&self, tenant: &str, options: &SendOptions) -> anyhow::Result<bool> {
        let Some(name) = &options.configuration_set else {
            return Ok(false);
        };
        Ok(self
            .control
            .config_set(tenant, name)?
            .is_some_and(|set| set.tls_policy == TlsPolicy::Require))
    }

    fn event(&self, tenant: &str, event: Value) {
        if let Err(e) = self.control.record_event(tenant, &event) {
            tracing::error!(tenant, error = %format!("{e:#}"), "event not recorded");
        }
    }

    /// What SES's `ooto@` answers: an auto-reply to the sender.
    fn auto_reply(&self, from: &str, to: &str, original: &str) -> NewEntry {
        let id = MessageId::generate();
        let body = format!(
            "From: <{from}>\r\nTo: <{to}>\r\nSubject: Out of the office\r\n\
             Date: {}\r\nMessage-ID: <{id}@{}>\r\nAuto-Submitted: auto-replied\r\n\
             In-Reply-To: <{original}@{}>\r\nMIME-Version: 1.0\r\n\
             Content-Type: text/plain; charset=us-ascii\r\n\r\n\
             I am out of the office (Amazon SES mailbox simulator).\r\n",
            mail_parser::DateTime::from_timestamp(unix_now()).to_rfc822(),
            self.hostname,
            self.hostname,
        );
        NewEntry {
            message_id: id,
            tenant: SYSTEM_TENANT.into(),
            direction: Direction::Outbound,
            mail_from: String::new(),
            source: String::new(),
            recipients: vec![to.to_string()],
            body: body.into_bytes(),
            meta: Value::Null,
        }
    }
}

/// The `mail` object of every event about this message.
pub(crate) fn mail_object(entry: &state::EntryInfo) -> Value {
    let options = SendOptions::from_headers(&entry.body);
    let mut tags: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if let Some(set) = options.configuration_set {
        tags.insert("ses:configuration-set".into(), vec![set]);
    }
    for (name, value) in options.tags {
        tags.entry(name).or_default().push(value);
    }
    tags.insert("ses:operation".into(), vec!["SendSmtpEmail".into()]);
    MailInfo {
        message_id: &entry.message_id,
        timestamp_ms: entry.received_at * 1000,
        source: &entry.source,
        destination: &entry.recipients,
        raw: &entry.body,
        tags,
    }
    .to_json()
}
