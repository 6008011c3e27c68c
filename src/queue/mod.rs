//! The durable queue in `data/queue.db`.
//!
//! Accepted messages (envelope and body) are committed to SQLite in WAL
//! mode with synchronous=FULL before any 250 is sent. A single writer thread
//! group-commits: every request that arrives while one commit is being
//! fsynced goes into the next transaction, so concurrent sessions share one
//! fsync instead of paying one each.
//!
//! The queue lives in its own database, not in control.db: SQLite has one
//! writer per database, and the hot commit path must not wait behind
//! control-plane writes (or the other way round).

mod recover;
pub mod state;
mod writer;

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::control::open_sqlite;
use crate::types::MessageId;

pub use recover::RecoveryReport;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS queue_entries(
    seq INTEGER PRIMARY KEY,
    message_id TEXT NOT NULL,
    tenant TEXT NOT NULL,
    direction TEXT NOT NULL,
    mail_from TEXT NOT NULL,
    source TEXT,
    size INTEGER NOT NULL,
    sha256 BLOB NOT NULL,
    body BLOB NOT NULL,
    received_at INTEGER NOT NULL,
    UNIQUE(message_id, tenant)
);
CREATE TABLE IF NOT EXISTS queue_recipients(
    seq INTEGER NOT NULL REFERENCES queue_entries(seq) ON DELETE CASCADE,
    recipient TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'queued',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_response TEXT,
    PRIMARY KEY(seq, recipient)
);
CREATE TABLE IF NOT EXISTS quarantine(
    id INTEGER PRIMARY KEY,
    message_id TEXT,
    tenant TEXT,
    reason TEXT NOT NULL,
    envelope TEXT,
    body BLOB,
    quarantined_at INTEGER NOT NULL
);
";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Submitted by a tenant's app, leaving through a transport.
    Outbound,
    /// Received on the MX listener for a tenant's domain.
    Inbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }
}

/// A message ready to be made durable.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub message_id: MessageId,
    pub tenant: String,
    pub direction: Direction,
    /// The envelope sender used on the wire (for outbound mail, the VERP
    /// address on the MAIL FROM domain).
    pub mail_from: String,
    /// The sender the client gave (SES's `Source`).
    pub source: String,
    pub recipients: Vec<String>,
    pub body: Vec<u8>,
    /// What the gateway learned while accepting the message, for the
    /// transports and the tenant store: a JSON object (`scan`: the scan
    /// verdicts; inbound checks add their verdicts). `Null` when nothing.
    pub meta: serde_json::Value,
}

/// A queued message as `queue list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct QueuedEntry {
    pub message_id: String,
    pub tenant: String,
    pub direction: String,
    /// The sender the client gave.
    pub from: String,
    /// The envelope sender sesame uses when delivering.
    pub envelope_from: String,
    pub recipients: Vec<String>,
    pub size: i64,
    pub received_at: i64,
    /// Delivery state of each recipient.
    pub delivery: Vec<RecipientState>,
}

/// One recipient's delivery state, as `queue list --json` shows it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RecipientState {
    pub recipient: String,
    /// queued, inflight, delivered, deferred or bounced.
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_response: Option<String>,
    pub transport: Option<String>,
}

struct CommitRequest {
    entries: Vec<NewEntry>,
    done: oneshot::Sender<anyhow::Result<()>>,
}

/// Handle for committing to the queue; cheap to clone.
#[derive(Clone)]
pub struct Queue {
    requests: mpsc::UnboundedSender<CommitRequest>,
}

/// Owns the writer thread; dropping every `Queue` handle and then calling
/// `join` waits for the last commit.
pub struct QueueWriter {
    thread: std::thread::JoinHandle<()>,
}

impl QueueWriter {
    pub fn join(self) {
        let _ = self.thread.join();
    }
}

fn migrate(conn: &rusqlite::Connection) -> anyhow::Result<()> {
    conn.execute_batch(SCHEMA).context("queue.db schema")?;
    crate::control::ensure_column(conn, "queue_entries", "source", "TEXT")?;
    crate::control::ensure_column(conn, "queue_entries", "meta", "TEXT")?;
    // Delivery state (see `state`).
    crate::control::ensure_column(
        conn,
        "queue_entries",
        "send_recorded",
        "INTEGER NOT NULL DEFAULT 0",
    )?;
    crate::control::ensure_column(conn, "queue_recipients", "transport", "TEXT")?;
    crate::control::ensure_column(conn, "queue_recipients", "updated_at", "INTEGER")?;
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS queue_recipients_due
         ON queue_recipients(status, next_attempt_at)",
    )?;
    // The daily sending quota counts a tenant's recent mail.
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS queue_entries_by_tenant ON queue_entries(tenant, received_at)",
    )?;
    Ok(())
}

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("queue.db")
}

impl Queue {
    /// Opens the queue, recovering from a crash first: corrupt entries are
    /// quarantined, never fatal and never silently dropped.
    pub fn open(data_dir: &Path) -> anyhow::Result<(Queue, QueueWriter, RecoveryReport)> {
        std::fs::create_dir_all(data_dir)?;
        let report = recover::recover(data_dir)?;
        let conn = open_sqlite(&path(data_dir))?;
        migrate(&conn)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name("queue-writer".into())
            .spawn(move || writer::run(conn, rx))?;
        Ok((Queue { requests: tx }, QueueWriter { thread }, report))
    }

    /// Returns once the entries are durable (fsynced), or with an error and
    /// nothing committed.
    pub async fn commit(&self, entries: Vec<NewEntry>) -> anyhow::Result<()> {
        let (done, wait) = oneshot::channel();
        self.requests
            .send(CommitRequest { entries, done })
            .map_err(|_| anyhow::anyhow!("queue writer has stopped"))?;
        wait.await
            .map_err(|_| anyhow::anyhow!("queue writer stopped before committing"))?
    }
}

/// Lists queued entries, oldest first (read-only; safe while `serve` runs).
pub fn list(data_dir: &Path) -> anyhow::Result<Vec<QueuedEntry>> {
    let conn = open_sqlite(&path(data_dir))?;
    migrate(&conn)?;
    let mut stmt = conn.prepare(
        "SELECT e.seq, e.message_id, e.tenant, e.direction, coalesce(e.source, e.mail_from), e.size,
                e.received_at, json_group_array(r.recipient), e.mail_from,
                json_group_array(json_object('recipient', r.recipient, 'status', r.status,
                    'attempts', r.attempts, 'next_attempt_at', r.next_attempt_at,
                    'last_response', r.last_response, 'transport', r.transport))
         FROM queue_entries e JOIN queue_recipients r ON r.seq = e.seq
         GROUP BY e.seq ORDER BY e.seq",
    )?;
    let rows = stmt.query_map([], |r| {
        let recipients: String = r.get(7)?;
        Ok(QueuedEntry {
            message_id: r.get(1)?,
            tenant: r.get(2)?,
            direction: r.get(3)?,
            from: r.get(4)?,
            envelope_from: r.get(8)?,
            size: r.get(5)?,
            received_at: r.get(6)?,
            recipients: serde_json::from_str(&recipients).unwrap_or_default(),
            delivery: serde_json::from_str(&r.get::<_, String>(9)?).unwrap_or_default(),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The stored body of a queued message (for inspection and tests).
pub fn body(data_dir: &Path, message_id: &str) -> anyhow::Result<Option<Vec<u8>>> {
    use rusqlite::OptionalExtension;
    let conn = open_sqlite(&path(data_dir))?;
    migrate(&conn)?;
    Ok(conn
        .query_row(
            "SELECT body FROM queue_entries WHERE message_id = ?1 ORDER BY seq LIMIT 1",
            [message_id],
            |r| r.get(0),
        )
        .optional()?)
}
