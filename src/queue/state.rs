//! Delivery state in queue.db: which recipients are due, claiming them,
//! and recording what became of them.
//!
//! Per-recipient status (`queue_recipients.status`):
//! `queued` → `inflight` → `delivered` | `deferred` (→ `inflight` again when
//! `next_attempt_at` comes) | `bounced`. The delivery engine writes through
//! its own connection (small transactions, WAL, busy timeout); the
//! acceptance path keeps its group-commit writer thread.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use super::{NewEntry, migrate, path};
use crate::control::open_sqlite;

pub const QUEUED: &str = "queued";
pub const INFLIGHT: &str = "inflight";
pub const DELIVERED: &str = "delivered";
pub const DEFERRED: &str = "deferred";
pub const BOUNCED: &str = "bounced";

/// A recipient whose next attempt is due.
#[derive(Debug, Clone)]
pub struct Due {
    pub seq: i64,
    pub recipient: String,
    pub attempts: u32,
}

/// The entry a due recipient belongs to.
#[derive(Debug, Clone)]
pub struct EntryInfo {
    pub seq: i64,
    pub message_id: String,
    pub tenant: String,
    pub direction: String,
    pub mail_from: String,
    pub source: String,
    pub received_at: i64,
    pub body: Vec<u8>,
    pub recipients: Vec<String>,
    /// The entry's metadata (`NewEntry::meta`); `Null` when none.
    pub meta: serde_json::Value,
}

/// The new state of one recipient after an attempt.
#[derive(Debug, Clone)]
pub struct RecipientUpdate {
    pub recipient: String,
    pub status: &'static str,
    pub attempts: u32,
    pub next_attempt_at: i64,
    pub response: String,
    pub transport: String,
}

pub struct QueueState {
    conn: Connection,
}

impl QueueState {
    pub fn open(data_dir: &Path) -> anyhow::Result<QueueState> {
        let conn = open_sqlite(&path(data_dir))?;
        migrate(&conn)?;
        Ok(QueueState { conn })
    }

    /// Recipients left `inflight` by a crash go back to `queued`, due now:
    /// delivery is at-least-once, and a recipient whose delivery finished
    /// but was not yet recorded is delivered again.
    pub fn requeue_inflight(&self, now: i64) -> anyhow::Result<usize> {
        Ok(self.conn.execute(
            "UPDATE queue_recipients SET status = ?1, next_attempt_at = ?2 WHERE status = ?3",
            params![QUEUED, now, INFLIGHT],
        )?)
    }

    /// Due recipients, most overdue first.
    pub fn due(&self, now: i64, limit: usize) -> anyhow::Result<Vec<Due>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, recipient, attempts FROM queue_recipients
             WHERE status IN ('queued', 'deferred') AND next_attempt_at <= ?1
             ORDER BY next_attempt_at, seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![now, limit as i64], |r| {
            Ok(Due {
                seq: r.get(0)?,
                recipient: r.get(1)?,
                attempts: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Marks recipients in flight so no other pass picks them up.
    pub fn claim(&mut self, seq: i64, recipients: &[String]) -> anyhow::Result<()> {
        let tx = self.conn.transaction()?;
        for r in recipients {
            tx.execute(
                "UPDATE queue_recipients SET status = ?3 WHERE seq = ?1 AND recipient = ?2",
                params![seq, r, INFLIGHT],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn entry(&self, seq: i64) -> anyhow::Result<Option<EntryInfo>> {
        let info = self
            .conn
            .query_row(
                "SELECT seq, message_id, tenant, direction, mail_from, coalesce(source, mail_from),
                        received_at, body,
                        (SELECT json_group_array(recipient) FROM queue_recipients r WHERE r.seq = e.seq),
                        meta
                 FROM queue_entries e WHERE seq = ?1",
                [seq],
                |r| {
                    let recipients: String = r.get(8)?;
                    Ok(EntryInfo {
                        seq: r.get(0)?,
                        message_id: r.get(1)?,
                        tenant: r.get(2)?,
                        direction: r.get(3)?,
                        mail_from: r.get(4)?,
                        source: r.get(5)?,
                        received_at: r.get(6)?,
                        body: r.get(7)?,
                        recipients: serde_json::from_str(&recipients).unwrap_or_default(),
                        meta: r
                            .get::<_, Option<String>>(9)?
                            .and_then(|m| serde_json::from_str(&m).ok())
                            .unwrap_or_default(),
                    })
                },
            )
            .optional()?;
        Ok(info)
    }

    /// The outbound entry that was sent with the VERP envelope sender
    /// `address` (`<message-id>@<mail-from-domain>`): what an asynchronous
    /// bounce or complaint addressed there is about.
    pub fn sent_from(&self, message_id: &str, address: &str) -> anyhow::Result<Option<EntryInfo>> {
        let seq: Option<i64> = self
            .conn
            .query_row(
                "SELECT seq FROM queue_entries
                 WHERE message_id = ?1 AND direction = 'outbound' AND lower(mail_from) = lower(?2)
                 ORDER BY seq LIMIT 1",
                [message_id, address],
                |r| r.get(0),
            )
            .optional()?;
        match seq {
            Some(seq) => self.entry(seq),
            None => Ok(None),
        }
    }

    /// True exactly once per entry: whoever gets true emits the Send event.
    pub fn take_send_event(&self, seq: i64) -> anyhow::Result<bool> {
        Ok(self.conn.execute(
            "UPDATE queue_entries SET send_recorded = 1 WHERE seq = ?1 AND send_recorded = 0",
            [seq],
        )? == 1)
    }

    /// Records the outcome of an attempt and queues the mail it caused
    /// (DSNs, auto-replies) in one transaction: a DSN exists if and only if
    /// the bounce that caused it is recorded, so a crash can neither lose
    /// nor duplicate it.
    pub fn record(
        &mut self,
        seq: i64,
        updates: &[RecipientUpdate],
        new_entries: &[NewEntry],
        now: i64,
    ) -> anyhow::Result<()> {
        let tx = self.conn.transaction()?;
        for u in updates {
            tx.execute(
                "UPDATE queue_recipients SET status = ?3, attempts = ?4, next_attempt_at = ?5,
                        last_response = ?6, transport = ?7, updated_at = ?8
                 WHERE seq = ?1 AND recipient = ?2",
                params![
                    seq,
                    u.recipient,
                    u.status,
                    u.attempts,
                    u.next_attempt_at,
                    u.response,
                    u.transport,
                    now
                ],
            )?;
        }
        for entry in new_entries {
            super::writer::insert(&tx, entry)?;
        }
        tx.commit()?;
        Ok(())
    }
}

impl QueueState {
    /// Deletes messages whose every recipient was delivered or bounced
    /// at or before `finished_before`, and returns how many. Captured mail stays:
    /// queue.db is its only copy until the tenant store takes it.
    pub fn purge_finished(&self, finished_before: i64) -> anyhow::Result<usize> {
        Ok(self.conn.execute(
            "DELETE FROM queue_entries WHERE seq IN (
                SELECT seq FROM queue_recipients GROUP BY seq
                HAVING sum(status NOT IN ('delivered', 'bounced')) = 0
                   AND sum(coalesce(transport, '') = 'capture') = 0
                   AND max(coalesce(updated_at, 0)) <= ?1)",
            [finished_before],
        )?)
    }

    /// Attempts made so far for these recipients.
    pub fn due_attempts(
        &self,
        seq: i64,
        recipients: &[String],
    ) -> anyhow::Result<Vec<(String, u32)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT attempts FROM queue_recipients WHERE seq = ?1 AND recipient = ?2",
        )?;
        let mut out = Vec::new();
        for r in recipients {
            let attempts: u32 = stmt.query_row(params![seq, r], |row| row.get(0))?;
            out.push((r.clone(), attempts));
        }
        Ok(out)
    }
}
