//! Enforces each tenant's SES sending quota at submission, counting
//! recipients as SES does.
//!
//! - Max24HourSend: recipients of the tenant's outbound mail accepted in the
//!   last 24 hours, counted in queue.db (so the count survives restarts).
//!   A message that would go past the quota is refused whole.
//! - MaxSendRate: a token bucket per tenant (in memory), refilled at the
//!   rate. SES lets senders "exceed this quota for short bursts"; here a
//!   burst is up to a minute's worth (`BURST_SECS`). A message is taken
//!   while the bucket is not empty and then costs one token per recipient,
//!   which may leave it in debt: a message with more recipients than the
//!   bucket holds is still possible, and the next ones wait until the debt
//!   is repaid. The bucket starts full at each start of `serve`.
//!
//! Sessions checking at the same instant may both pass before either is
//! queued: the quota can be overshot by the messages in flight at once.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use rusqlite::Connection;

use crate::control::{SendQuota, open_sqlite};
use crate::proto::{Reply, texts};
use crate::types::unix_now;

const DAY_SECS: i64 = 24 * 3600;
const BURST_SECS: f64 = 60.0;

struct Bucket {
    tokens: f64,
    at: Instant,
}

pub struct Quotas {
    queue: Mutex<Connection>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Quotas {
    pub fn open(data_dir: &Path) -> anyhow::Result<Quotas> {
        Ok(Quotas {
            queue: Mutex::new(open_sqlite(&crate::queue::path(data_dir))?),
            buckets: Mutex::new(HashMap::new()),
        })
    }

    pub fn admit(&self, tenant: &str, quota: SendQuota, recipients: usize) -> Result<(), Reply> {
        let n = recipients as i64;
        if quota.max_24_hour_send >= 0 {
            let sent = self.sent_last_day(tenant).map_err(|e| {
                tracing::error!(tenant, error = %format!("{e:#}"), "daily quota count failed");
                texts::temporary_failure()
            })?;
            if sent + n > quota.max_24_hour_send {
                tracing::warn!(
                    tenant,
                    sent,
                    recipients,
                    quota = quota.max_24_hour_send,
                    "daily quota exceeded"
                );
                return Err(texts::daily_quota_exceeded());
            }
        }
        if quota.max_send_rate >= 0 {
            let rate = quota.max_send_rate as f64;
            let capacity = rate * BURST_SECS;
            let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let bucket = buckets.entry(tenant.to_string()).or_insert(Bucket {
                tokens: capacity,
                at: now,
            });
            let refill = now.duration_since(bucket.at).as_secs_f64() * rate;
            bucket.tokens = (bucket.tokens + refill).min(capacity);
            bucket.at = now;
            if bucket.tokens < 1.0 {
                tracing::warn!(tenant, rate = quota.max_send_rate, "sending rate exceeded");
                return Err(texts::sending_rate_exceeded());
            }
            bucket.tokens -= n as f64;
        }
        Ok(())
    }

    fn sent_last_day(&self, tenant: &str) -> anyhow::Result<i64> {
        let queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        Ok(queue.query_row(
            "SELECT count(*) FROM queue_entries e JOIN queue_recipients r ON r.seq = e.seq
             WHERE e.tenant = ?1 AND e.direction = 'outbound' AND e.received_at > ?2",
            rusqlite::params![tenant, unix_now() - DAY_SECS],
            |r| r.get(0),
        )?)
    }
}
