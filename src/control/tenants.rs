use anyhow::{Context, bail};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::Control;
use super::quotas::SendQuota;
use crate::config::InfectedAction;
use crate::types::unix_now;

#[derive(Debug, Clone, Serialize)]
pub struct Tenant {
    pub name: String,
    /// New tenants start in the SES sandbox: verified recipients only.
    pub sandbox: bool,
    pub delivery: String,
    /// Overrides `scan.on_infected`; absent means the configured default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_infected: Option<InfectedAction>,
    /// Refuse mail whose DMARC check fails under the sender's `p=reject`.
    pub dmarc_enforce: bool,
    /// Who DKIM-signs the tenant's outbound mail (shown when not sesame,
    /// like `on_infected` when not the default).
    #[serde(skip_serializing_if = "DkimSigner::is_sesame")]
    pub dkim_signer: DkimSigner,
    /// The quota in force (its own values, or SES's for its mode).
    pub send_quota: SendQuota,
}

/// `sesame` signs at submission (the default); `ses` leaves it to SES's
/// Easy DKIM, so that a message is not signed twice under the same d=.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DkimSigner {
    Sesame,
    Ses,
}

impl DkimSigner {
    pub fn parse(s: &str) -> Option<DkimSigner> {
        match s {
            "sesame" => Some(DkimSigner::Sesame),
            "ses" => Some(DkimSigner::Ses),
            _ => None,
        }
    }

    fn is_sesame(&self) -> bool {
        *self == DkimSigner::Sesame
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DkimSigner::Sesame => "sesame",
            DkimSigner::Ses => "ses",
        }
    }
}

/// Adds the columns that later versions introduced to an older control.db.
pub(super) fn migrate(conn: &rusqlite::Connection) -> anyhow::Result<()> {
    super::ensure_column(conn, "tenants", "on_infected", "TEXT")?;
    super::ensure_column(
        conn,
        "tenants",
        "dmarc_enforce",
        "INTEGER NOT NULL DEFAULT 1",
    )?;
    // 0 until the tenant got its default receipt rule (see `rules`).
    super::ensure_column(
        conn,
        "tenants",
        "rules_seeded",
        "INTEGER NOT NULL DEFAULT 0",
    )?;
    super::ensure_column(
        conn,
        "tenants",
        "dkim_signer",
        "TEXT NOT NULL DEFAULT 'sesame'",
    )?;
    super::quotas::migrate(conn)
}

fn tenant_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Tenant> {
    let on_infected: Option<String> = r.get(3)?;
    let dkim_signer: String = r.get(4)?;
    let sandbox = r.get(1)?;
    Ok(Tenant {
        name: r.get(0)?,
        sandbox,
        delivery: r.get(2)?,
        on_infected: on_infected.as_deref().and_then(InfectedAction::parse),
        dmarc_enforce: r.get(5)?,
        dkim_signer: DkimSigner::parse(&dkim_signer).unwrap_or(DkimSigner::Sesame),
        send_quota: SendQuota::effective(sandbox, r.get(6)?, r.get(7)?),
    })
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
        super::rules::seed_default_rules(&self.db())?;
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
                "SELECT name, sandbox, delivery, on_infected, dkim_signer, dmarc_enforce, max_send_rate, max_24h_send
                 FROM tenants WHERE name = ?1",
                [name],
                tenant_row,
            )
            .optional()?)
    }

    pub fn require_tenant(&self, name: &str) -> anyhow::Result<Tenant> {
        self.tenant(name)?
            .with_context(|| format!("no tenant named '{name}'"))
    }

    pub fn tenants(&self) -> anyhow::Result<Vec<Tenant>> {
        let db = self.db();
        let mut stmt = db.prepare(
            "SELECT name, sandbox, delivery, on_infected, dkim_signer, dmarc_enforce, max_send_rate, max_24h_send
             FROM tenants ORDER BY name",
        )?;
        let rows = stmt.query_map([], tenant_row)?;
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

    /// How the tenant's outbound mail leaves: `capture`, `mx`, `relay` or
    /// `ses`.
    pub fn set_delivery(&self, name: &str, delivery: &str) -> anyhow::Result<Tenant> {
        if !["capture", "mx", "relay", "ses"].contains(&delivery) {
            bail!("delivery must be capture, mx, relay or ses, not '{delivery}'");
        }
        self.require_tenant(name)?;
        self.db().execute(
            "UPDATE tenants SET delivery = ?2 WHERE name = ?1",
            params![name, delivery],
        )?;
        self.require_tenant(name)
    }

    pub fn set_dmarc_enforce(&self, name: &str, enforce: bool) -> anyhow::Result<Tenant> {
        self.require_tenant(name)?;
        self.db().execute(
            "UPDATE tenants SET dmarc_enforce = ?2 WHERE name = ?1",
            params![name, enforce],
        )?;
        self.require_tenant(name)
    }

    pub fn set_dkim_signer(&self, name: &str, signer: DkimSigner) -> anyhow::Result<Tenant> {
        self.require_tenant(name)?;
        self.db().execute(
            "UPDATE tenants SET dkim_signer = ?2 WHERE name = ?1",
            params![name, signer.as_str()],
        )?;
        self.require_tenant(name)
    }

    /// `None` returns the tenant to the configured `scan.on_infected`.
    pub fn set_on_infected(
        &self,
        name: &str,
        action: Option<InfectedAction>,
    ) -> anyhow::Result<Tenant> {
        self.require_tenant(name)?;
        self.db().execute(
            "UPDATE tenants SET on_infected = ?2 WHERE name = ?1",
            params![name, action.map(InfectedAction::as_str)],
        )?;
        self.require_tenant(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A control.db from before per-tenant scanning policies gains the
    /// column, keeps its tenants, and is not migrated twice.
    #[test]
    fn an_old_tenants_table_gains_on_infected() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::control::open_sqlite(&dir.path().join("control.db")).unwrap();
        conn.execute_batch(
            "CREATE TABLE tenants(name TEXT PRIMARY KEY, sandbox INTEGER NOT NULL,
                delivery TEXT NOT NULL, created_at INTEGER NOT NULL);
             INSERT INTO tenants VALUES ('old', 1, 'capture', 0);",
        )
        .unwrap();
        drop(conn);
        let control = Control::open(dir.path()).unwrap();
        assert_eq!(control.require_tenant("old").unwrap().on_infected, None);
        control
            .set_on_infected("old", Some(InfectedAction::Reject))
            .unwrap();
        drop(control);
        let control = Control::open(dir.path()).unwrap();
        let old = control.require_tenant("old").unwrap();
        assert_eq!(old.on_infected, Some(InfectedAction::Reject));
        assert!(old.sandbox);
        let reset = control.set_on_infected("old", None).unwrap();
        assert_eq!(reset.on_infected, None);
        assert_eq!(reset.dkim_signer, DkimSigner::Sesame);
        let ses = control.set_dkim_signer("old", DkimSigner::Ses).unwrap();
        assert_eq!(ses.dkim_signer, DkimSigner::Ses);
    }
}
