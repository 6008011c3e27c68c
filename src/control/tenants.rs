use anyhow::{Context, bail};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::Control;
use crate::types::unix_now;

#[derive(Debug, Clone, Serialize)]
pub struct Tenant {
    pub name: String,
    /// New tenants start in the SES sandbox: verified recipients only.
    pub sandbox: bool,
    pub delivery: String,
}

/// Tenant names become directory names (`data/tenants/<name>`), so they are
/// kept to a safe alphabet.
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !ok {
        bail!("tenant name '{name}' must be 1-64 characters of a-z, 0-9, '-' or '_'");
    }
    Ok(())
}

impl Control {
    pub fn create_tenant(&self, name: &str) -> anyhow::Result<Tenant> {
        check_name(name)?;
        let inserted = self.db().execute(
            "INSERT OR IGNORE INTO tenants(name, sandbox, delivery, created_at) VALUES (?1, 1, 'capture', ?2)",
            params![name, unix_now()],
        )?;
        if inserted == 0 {
            bail!("tenant '{name}' already exists");
        }
        self.tenant(name)?.context("tenant vanished")
    }

    /// Creates the tenant unless it exists (dev provisioning is idempotent).
    pub fn ensure_tenant(&self, name: &str) -> anyhow::Result<Tenant> {
        match self.tenant(name)? {
            Some(t) => Ok(t),
            None => self.create_tenant(name),
        }
    }

    pub fn tenant(&self, name: &str) -> anyhow::Result<Option<Tenant>> {
        Ok(self
            .db()
            .query_row(
                "SELECT name, sandbox, delivery FROM tenants WHERE name = ?1",
                [name],
                |r| {
                    Ok(Tenant {
                        name: r.get(0)?,
                        sandbox: r.get(1)?,
                        delivery: r.get(2)?,
                    })
                },
            )
            .optional()?)
    }

    pub fn require_tenant(&self, name: &str) -> anyhow::Result<Tenant> {
        self.tenant(name)?
            .with_context(|| format!("no tenant named '{name}'"))
    }

    pub fn tenants(&self) -> anyhow::Result<Vec<Tenant>> {
        let db = self.db();
        let mut stmt = db.prepare("SELECT name, sandbox, delivery FROM tenants ORDER BY name")?;
        let rows = stmt.query_map([], |r| {
            Ok(Tenant {
                name: r.get(0)?,
                sandbox: r.get(1)?,
                delivery: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn set_sandbox(&self, name: &str, sandbox: bool) -> anyhow::Result<Tenant> {
        self.require_tenant(name)?;
        self.db().execute(
            "UPDATE tenants SET sandbox = ?2 WHERE name = ?1",
            params![name, sandbox],
        )?;
        self.require_tenant(name)
    }
}
