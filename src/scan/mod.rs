//! Attachment scanning with clamd, in both directions.
//!
//! `Scanner::screen` runs after the sender/recipient checks and before the
//! message is stamped, signed and queued: every attachment and non-text
//! part goes to clamd in parallel under one per-message timeout; infected
//! parts are stripped (or the message refused, per tenant); parts that could
//! not be scanned follow `oversize` / `on_scanner_error`; and the message
//! leaves with `X-Sesame-Virus-Verdict`. Nothing passes unscanned without
//! saying so.

mod clamd;
mod health;
mod notify;
mod parts;
mod policy;
mod strip;
mod verdict;
mod webhook;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::config::{Config, InfectedAction, ScanConfig};
use crate::control::Control;
use crate::proto::headers::HeaderBlock;
use crate::proto::{Reply, texts};
use crate::queue::{Direction, Queue};
use crate::types::MessageId;
use clamd::Clamd;
use notify::{Detection, Notifier};
use parts::Part;
use policy::Action;
use verdict::Outcome;

pub use health::{ClamdHealth, Status, status};
pub use notify::SYSTEM_TENANT;
pub use strip::VERDICT_HEADER;
pub use verdict::{PartVerdict, Verdict};

/// Who a message is from and for. Policies and notifications are per
/// tenant, and a tenant only ever hears about its own recipients.
pub struct ScanContext<'a> {
    pub direction: Direction,
    pub message_id: &'a MessageId,
    pub mail_from: &'a str,
    pub peer: IpAddr,
    tenants: Vec<(&'a str, &'a [String])>,
}

impl<'a> ScanContext<'a> {
    pub fn outbound(
        message_id: &'a MessageId,
        tenant: &'a str,
        mail_from: &'a str,
        recipients: &'a [String],
        peer: IpAddr,
    ) -> Self {
        ScanContext {
            direction: Direction::Outbound,
            message_id,
            mail_from,
            peer,
            tenants: vec![(tenant, recipients)],
        }
    }

    pub fn inbound(
        message_id: &'a MessageId,
        by_tenant: &'a BTreeMap<String, Vec<String>>,
        mail_from: &'a str,
        peer: IpAddr,
    ) -> Self {
        ScanContext {
            direction: Direction::Inbound,
            message_id,
            mail_from,
            peer,
            tenants: by_tenant
                .iter()
                .map(|(t, r)| (t.as_str(), r.as_slice()))
                .collect(),
        }
    }
}

/// A screened message: what may be queued, and how each part was judged
/// (kept with the message so the tenant store can show per-attachment
/// verdicts, including those of parts that were stripped).
pub struct Screened {
    pub body: Vec<u8>,
    /// `None` when scanning is disabled.
    pub verdict: Option<Verdict>,
    pub parts: Vec<PartVerdict>,
}

impl Screened {
    /// The `scan` member of a queue entry's metadata.
    pub fn meta(&self) -> serde_json::Value {
        serde_json::json!({
            "verdict": self.verdict.map_or("DISABLED", Verdict::as_str),
            "parts": self.parts,
        })
    }
}

pub struct Scanner {
    config: ScanConfig,
    clamd: Arc<Clamd>,
    control: Arc<Control>,
    notifier: Notifier,
}

impl Scanner {
    /// Builds the scanner; when scanning is on, logs clamd's health (loudly
    /// if mail would go unscanned) and keeps watching it.
    pub async fn start(
        config: &Config,
        control: Arc<Control>,
        queue: Queue,
    ) -> anyhow::Result<Scanner> {
        let scan = config.scan.clone();
        let clamd = Arc::new(Clamd::new(scan.address()?, scan.connections));
        if scan.enabled {
            health::announce_and_watch(clamd.clone(), scan.on_scanner_error).await;
        } else {
            tracing::warn!(
                "attachment scanning is disabled ([scan] enabled = false): mail is queued unscanned"
            );
        }
        Ok(Scanner {
            notifier: Notifier::new(&scan, &config.hostname, control.clone(), queue)?,
            config: scan,
            clamd,
            control,
        })
    }

    /// The message as it may be queued (infected parts stripped, verdict
    /// header set) with the verdicts behind it, or the reply that refuses it.
    pub async fn screen(&self, ctx: &ScanContext<'_>, body: Vec<u8>) -> Result<Screened, Reply> {
        if !self.config.enabled {
            return Ok(Screened {
                body: strip::set_verdict(body, None),
                verdict: None,
                parts: Vec::new(),
            });
        }
        let started = Instant::now();
        // Parsing and decoding a 40 MB message is CPU work: off the reactor.
        let (body, mut found) = tokio::task::spawn_blocking(move || {
            let found = parts::collect(&body);
            (body, found)
        })
        .await
        .map_err(|e| {
            tracing::error!(message_id = %ctx.message_id, error = %e, "MIME parsing failed");
            texts::temporary_failure()
        })?;
        let parsed = started.elapsed();
        let verdicts = self.scan(&mut found).await;
        let verdict = verdict::message_verdict(&verdicts);
        let on_infected = match verdict {
            Verdict::Fail => self.on_infected(ctx)?,
            // Not consulted without a detection; skip the lookup.
            _ => InfectedAction::Strip,
        };
        // What the notifications describe: the headers as received.
        let headers = match verdict {
            Verdict::Fail => HeaderBlock::parse(&body).raw().to_vec(),
            _ => Vec::new(),
        };
        let outcome = match policy::decide(&verdicts, on_infected, &self.config) {
            Some(refusal) => Err(refusal),
            None => remove_infected(body, &verdicts).map_err(|why| {
                // Never deliver what could not be cut out.
                tracing::error!(message_id = %ctx.message_id, why, "infected part not strippable; rejecting");
                texts::virus_detected(&policy::signatures(&verdicts).join(", "))
            }),
        };
        let refusal = outcome.as_ref().err();
        log_scan(ctx, verdict, &verdicts, refusal, parsed, started.elapsed());
        if verdict == Verdict::Fail {
            let detection = Detection {
                ctx,
                headers: &headers,
                parts: &verdicts,
                action: Action::of(refusal),
            };
            self.notifier.detected(&detection).await;
        }
        let header = verdict::header_value(&verdicts);
        outcome.map(|body| Screened {
            body: strip::set_verdict(body, Some(&header)),
            verdict: Some(verdict),
            parts: verdicts,
        })
    }

    /// Sends every part to clamd at once (the pool bounds the concurrency);
    /// whatever has not been answered when the timeout strikes fails.
    async fn scan(&self, parts: &mut [Part]) -> Vec<PartVerdict> {
        let mut outcomes: Vec<Option<Outcome>> = parts.iter().map(|_| None).collect();
        let mut tasks = JoinSet::new();
        let mut index_of = HashMap::new();
        for (i, part) in parts.iter_mut().enumerate() {
            if part.size > self.config.max_part_bytes {
                outcomes[i] = Some(Outcome::Oversize {
                    limit: self.config.max_part_bytes,
                });
                continue;
            }
            let data = std::mem::take(&mut part.data);
            let clamd = self.clamd.clone();
            let task = tasks.spawn(async move { clamd.scan(&data).await });
            index_of.insert(task.id(), i);
        }
        let timeout = Duration::from_secs(self.config.timeout_secs);
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                done = tasks.join_next_with_id() => {
                    let (id, outcome) = match done {
                        None => break,
                        Some(Ok((id, Ok(answer)))) => (id, Outcome::Answer(answer)),
                        Some(Ok((id, Err(why)))) => (id, Outcome::Failed(why)),
                        Some(Err(e)) => (e.id(), Outcome::Failed(format!("scan task failed: {e}"))),
                    };
                    outcomes[index_of[&id]] = Some(outcome);
                }
                // Dropping `tasks` aborts the rest; their connections close.
                _ = &mut deadline => break,
            }
        }
        parts
            .iter()
            .zip(outcomes)
            .map(|(part, outcome)| {
                let outcome = outcome.unwrap_or_else(|| {
                    Outcome::Failed(format!("clamd did not answer within {timeout:?}"))
                });
                PartVerdict::new(part, outcome)
            })
            .collect()
    }

    /// The strictest policy among the receiving tenants: one reply answers
    /// all of them.
    fn on_infected(&self, ctx: &ScanContext<'_>) -> Result<InfectedAction, Reply> {
        for &(tenant, _) in &ctx.tenants {
            let row = self.control.tenant(tenant).map_err(|e| {
                tracing::error!(tenant, error = %format!("{e:#}"), "control database lookup failed");
                texts::temporary_failure()
            })?;
            let action = row
                .and_then(|t| t.on_infected)
                .unwrap_or(self.config.on_infected);
            if action == InfectedAction::Reject {
                return Ok(InfectedAction::Reject);
            }
        }
        Ok(InfectedAction::Strip)
    }
}

/// `raw` without its infected parts; an error when one cannot be located.
fn remove_infected(raw: Vec<u8>, verdicts: &[PartVerdict]) -> Result<Vec<u8>, String> {
    let infected: Vec<&PartVerdict> = verdicts
        .iter()
        .filter(|p| p.verdict == Verdict::Fail)
        .collect();
    if infected.is_empty() {
        return Ok(raw);
    }
    let names: Vec<String> = infected.iter().map(|p| p.display_name()).collect();
    let removals = infected
        .iter()
        .zip(&names)
        .map(|(p, name)| {
            Ok(strip::Removal {
                site: p
                    .site
                    .ok_or_else(|| format!("{name} has no usable offsets in the message"))?,
                name,
                signature: p.signature.as_deref().unwrap_or_default(),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    strip::strip(&raw, &removals)
}

/// One line per scanned message, with every part's verdict, and where the
/// time went (`parse_ms`: MIME parsing, decoding and hashing).
fn log_scan(
    ctx: &ScanContext<'_>,
    verdict: Verdict,
    parts: &[PartVerdict],
    refusal: Option<&Reply>,
    parsed: Duration,
    took: Duration,
) {
    let outcome = refusal.map_or_else(|| "accepted".to_string(), Reply::to_string);
    let details = serde_json::to_string(parts).unwrap_or_default();
    let parse_ms = parsed.as_millis() as u64;
    let elapsed_ms = took.as_millis() as u64;
    if verdict == Verdict::Pass {
        tracing::info!(message_id = %ctx.message_id, direction = ctx.direction.as_str(), verdict = verdict.as_str(), parts = parts.len(), parse_ms, elapsed_ms, parts_json = %details, "message scanned");
    } else {
        tracing::warn!(message_id = %ctx.message_id, direction = ctx.direction.as_str(), verdict = verdict.as_str(), outcome, parts = parts.len(), parse_ms, elapsed_ms, parts_json = %details, "message scanned");
    }
}
