//! The control plane in `data/control.db`: tenants, identities and
//! credentials. SQLite in WAL mode with synchronous=FULL, so every change an
//! operator makes survives a crash.

mod apikeys;
mod config_sets;
mod credentials;
mod domains;
mod events;
mod identities;
mod quotas;
mod rules;
pub mod seal;
mod ses_messages;
mod suppression;
mod tenants;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use anyhow::Context;
use rusqlite::Connection;

pub use apikeys::{ApiKeyInfo, ApiKeyOwner, NewApiKey};
pub use config_sets::{
    ConfigSet, DueWebhook, EVENT_TYPES, EventDestination, TlsPolicy, parse_event_types,
};
pub use credentials::{NewCredential, StoredCredential, ses_smtp_password};
pub use domains::{
    DkimKey, Domain, KeyState, KeyType, MailFromBehavior, NewKey, StatusUpdate, Tracked,
};
pub use events::{EventRecord, MailInfo, iso8601_millis, ses_event};
pub use identities::{Identity, IdentityKind, IdentityStatus};
pub use quotas::SendQuota;
pub use ses_messages::SesMessage;
pub use suppression::Suppressed;
pub use tenants::{DkimSigner, Tenant};

/// Opens SQLite the way every sesame database wants it.
pub fn open_sqlite(path: &Path) -> anyhow::Result<Connection> {
    let conn = Connection::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

/// Adds a column that a newer sesame needs to a table an older one made.
pub fn ensure_column(
    conn: &Connection,
    table: &str,
    column: &str,
    decl: &str,
) -> anyhow::Result<()> {
    let present: bool = conn.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2",
        [table, column],
        |r| r.get(0),
    )?;
    if !present {
        conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))
            .with_context(|| format!("adding {table}.{column}"))?;
    }
    Ok(())
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tenants(
    name TEXT PRIMARY KEY,
    sandbox INTEGER NOT NULL,
    delivery TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS identities(
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    identity TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY(tenant, identity)
);
-- A domain belongs to one tenant: MX routing depends on it.
CREATE UNIQUE INDEX IF NOT EXISTS one_owner_per_domain ON identities(identity) WHERE kind = 'domain';
CREATE TABLE IF NOT EXISTS credentials(
    username TEXT PRIMARY KEY,
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    password_hash TEXT NOT NULL,
    sealed_secret BLOB,
    is_static INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);
";

/// Handle on the control database, shared by the whole process.
pub struct Control {
    conn: Mutex<Connection>,
    data_dir: std::path::PathBuf,
}

impl Control {
    pub fn open(data_dir: &Path) -> anyhow::Result<Control> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
        let conn = open_sqlite(&data_dir.join("control.db"))?;
        conn.execute_batch(SCHEMA).context("control.db schema")?;
        tenants::migrate(&conn)?;
        conn.execute_batch(domains::SCHEMA)
            .context("control.db domains schema")?;
        conn.execute_batch(events::SCHEMA)
            .context("control.db events schema")?;
        conn.execute_batch(suppression::SCHEMA)
            .context("control.db suppression schema")?;
        conn.execute_batch(rules::SCHEMA)
            .context("control.db receipt rules schema")?;
        rules::seed_default_rules(&conn)?;
        conn.execute_batch(apikeys::SCHEMA)
            .context("control.db api keys schema")?;
        conn.execute_batch(ses_messages::SCHEMA)
            .context("control.db ses_messages schema")?;
        conn.execute_batch(config_sets::SCHEMA)
            .context("control.db configuration sets schema")?;
        Ok(Control {
            conn: Mutex::new(conn),
            data_dir: data_dir.to_path_buf(),
        })
    }

    fn db(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent
        // (transactions roll back), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}
