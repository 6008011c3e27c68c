//! The per-tenant suppression list (SES's account-level list): addresses
//! that hard-bounced or complained. A send to one of them is accepted but
//! not delivered, and gives Bounce `Permanent/OnAccountSuppressionList`.
//! Addresses are compared case-insensitively (stored lower-cased).

use anyhow::bail;
use rusqlite::params;
use serde::Serialize;

use super::Control;
use crate::types::unix_now;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS suppression(
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    address TEXT NOT NULL,
    reason TEXT NOT NULL,
    message_id TEXT,
    last_update INTEGER NOT NULL,
    PRIMARY KEY(tenant, address)
);
";

/// One entry, with SES's field names.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Suppressed {
    pub email_address: String,
    /// BOUNCE or COMPLAINT.
    pub reason: String,
    pub message_id: Option<String>,
    /// Unix seconds.
    pub last_update_time: i64,
}

impl Control {
    /// Adds or refreshes an entry (the newest reason and message win).
    pub fn suppress(
        &self,
        tenant: &str,
        address: &str,
        reason: &str,
        message_id: Option<&str>,
    ) -> anyhow::Result<()> {
        if !["BOUNCE", "COMPLAINT"].contains(&reason) {
            bail!("suppression reason must be BOUNCE or COMPLAINT, not '{reason}'");
        }
        self.require_tenant(tenant)?;
        self.db().execute(
            "INSERT INTO suppression(tenant, address, reason, message_id, last_update)
             VALUES (?1, lower(?2), ?3, ?4, ?5)
             ON CONFLICT(tenant, address) DO UPDATE SET reason = ?3, message_id = ?4, last_update = ?5",
            params![tenant, address, reason, message_id, unix_now()],
        )?;
        Ok(())
    }

    /// True when the address was removed.
    pub fn unsuppress(&self, tenant: &str, address: &str) -> anyhow::Result<bool> {
        self.require_tenant(tenant)?;
        Ok(self.db().execute(
            "DELETE FROM suppression WHERE tenant = ?1 AND address = lower(?2)",
            params![tenant, address],
        )? > 0)
    }

    pub fn is_suppressed(&self, tenant: &str, address: &str) -> anyhow::Result<bool> {
        Ok(self.db().query_row(
            "SELECT count(*) > 0 FROM suppression WHERE tenant = ?1 AND address = lower(?2)",
            params![tenant, address],
            |r| r.get(0),
        )?)
    }

    pub fn suppression_list(&self, tenant: &str) -> anyhow::Result<Vec<Suppressed>> {
        self.require_tenant(tenant)?;
        let db = self.db();
        let mut stmt = db.prepare(
            "SELECT address, reason, message_id, last_update FROM suppression
             WHERE tenant = ?1 ORDER BY address",
        )?;
        let rows = stmt.query_map([tenant], |r| {
            Ok(Suppressed {
                email_address: r.get(0)?,
                reason: r.get(1)?,
                message_id: r.get(2)?,
                last_update_time: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suppression_is_per_tenant_and_case_insensitive() {
        let dir = tempfile::tempdir().unwrap();
        let control = Control::open(dir.path()).unwrap();
        control.create_tenant("acme").unwrap();
        control.create_tenant("beta").unwrap();
        control
            .suppress("acme", "Bob@X.test", "BOUNCE", Some("m1"))
            .unwrap();
        assert!(control.is_suppressed("acme", "bob@x.test").unwrap());
        assert!(!control.is_suppressed("beta", "bob@x.test").unwrap());
        let list = control.suppression_list("acme").unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].email_address, "bob@x.test");
        assert_eq!(list[0].reason, "BOUNCE");
        assert_eq!(list[0].message_id.as_deref(), Some("m1"));
        control
            .suppress("acme", "bob@x.test", "COMPLAINT", Some("m2"))
            .unwrap();
        assert_eq!(control.suppression_list("acme").unwrap().len(), 1);
        assert!(control.suppress("acme", "c@x.test", "OTHER", None).is_err());
        assert!(control.unsuppress("acme", "BOB@x.test").unwrap());
        assert!(!control.unsuppress("acme", "bob@x.test").unwrap());
        assert!(
            control
                .suppress("nobody", "a@b.test", "BOUNCE", None)
                .is_err()
        );
    }
}
