//! Per-tenant message stores: `data/tenants/<tenant>/store.db` (SQLite,
//! WAL, synchronous=FULL) and `data/tenants/<tenant>/blobs/` (the raw
//! messages and attachments, content-addressed).
//!
//! Each tenant has its own database and directory, and every read goes
//! through the store of the tenant asking: no query can reach another
//! tenant's mail. Storing is idempotent per sesame message id, so a
//! redelivered queue entry never duplicates a message.

mod blobs;
pub mod entity;
mod query;
pub mod thread;
mod write;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{Context, bail};
use rusqlite::Connection;

use crate::control::open_sqlite;
use blobs::Blobs;

pub use query::{AttachmentFile, MessageFilter, Page};
pub use write::{Incoming, Stored};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages(
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    direction TEXT NOT NULL,
    mail_from TEXT NOT NULL,
    recipients TEXT NOT NULL,
    from_search TEXT NOT NULL,
    to_search TEXT NOT NULL,
    subject TEXT,
    date INTEGER,
    message_id TEXT,
    ancestry TEXT NOT NULL,
    entity TEXT NOT NULL,
    size INTEGER NOT NULL,
    raw_sha256 TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    thread_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_thread ON messages(thread_id, seq);
CREATE TABLE IF NOT EXISTS attachments(
    message_seq INTEGER NOT NULL REFERENCES messages(seq) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    filename TEXT,
    content_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    content_id TEXT,
    disposition TEXT,
    verdict TEXT,
    signature TEXT,
    removed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY(message_seq, idx)
);
-- Every Message-ID a stored message names, placeholders included.
CREATE TABLE IF NOT EXISTS containers(
    message_id TEXT PRIMARY KEY,
    thread_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS containers_by_thread ON containers(thread_id);
CREATE TABLE IF NOT EXISTS threads(
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    subject TEXT,
    subject_key TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS threads_by_subject ON threads(subject_key);
-- Ids of threads merged into another: they keep resolving.
CREATE TABLE IF NOT EXISTS thread_aliases(
    alias TEXT PRIMARY KEY,
    thread_id TEXT NOT NULL
);
";

/// How a stored message reached the tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Received for the tenant (MX listener).
    Inbound,
    /// Sent by the tenant and handed to a real transport (or the simulator).
    Outbound,
    /// Sent by the tenant and kept on this machine by the capture transport.
    Captured,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
            Direction::Captured => "captured",
        }
    }

    pub fn parse(s: &str) -> Option<Direction> {
        match s {
            "inbound" => Some(Direction::Inbound),
            "outbound" => Some(Direction::Outbound),
            "captured" => Some(Direction::Captured),
            _ => None,
        }
    }
}

/// One tenant's store.
pub struct Store {
    conn: Mutex<Connection>,
    blobs: Blobs,
}

impl Store {
    pub fn open(dir: &Path) -> anyhow::Result<Store> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create store dir {}", dir.display()))?;
        let conn = open_sqlite(&dir.join("store.db"))?;
        conn.execute_batch(SCHEMA).context("store.db schema")?;
        Ok(Store {
            conn: Mutex::new(conn),
            blobs: Blobs::open(dir.join("blobs"))?,
        })
    }

    fn db(&self) -> MutexGuard<'_, Connection> {
        // Transactions roll back on panic, so a poisoned lock is still sound.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The stores of every tenant, opened on first use and kept open.
pub struct Stores {
    root: PathBuf,
    open: Mutex<HashMap<String, Arc<Store>>>,
}

impl Stores {
    pub fn new(data_dir: &Path) -> Stores {
        Stores {
            root: data_dir.join("tenants"),
            open: Mutex::new(HashMap::new()),
        }
    }

    /// The tenant's store. Tenant names are checked again here because
    /// they become directory names.
    pub fn get(&self, tenant: &str) -> anyhow::Result<Arc<Store>> {
        let safe = !tenant.is_empty()
            && tenant.len() <= 64
            && tenant
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !safe {
            bail!("'{tenant}' cannot have a store");
        }
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(store) = open.get(tenant) {
            return Ok(store.clone());
        }
        let store = Arc::new(Store::open(&self.root.join(tenant))?);
        open.insert(tenant.to_string(), store.clone());
        Ok(store)
    }
}

#[cfg(test)]
mod tests;
