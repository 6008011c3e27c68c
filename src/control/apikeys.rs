//! API keys for the tenant HTTP API. A key is 32 random bytes (hex) shown
//! once at creation; control.db keeps only its sha256, which is enough to
//! find the key's tenant (a slow hash is not needed for a secret this
//! long) and useless to whoever reads the database.

use rand::RngCore;
use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::Control;
use crate::types::unix_now;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS api_keys(
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    key_sha256 TEXT NOT NULL UNIQUE,
    is_static INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);
";

/// Every key starts with this, so a leaked one is recognisable.
const PREFIX: &str = "ssk_";

/// What `apikey create` prints, once.
#[derive(Debug, Serialize)]
pub struct NewApiKey {
    pub tenant: String,
    pub id: String,
    pub key: String,
}

/// A key as `apikey list` shows it: never the secret.
#[derive(Debug, Serialize)]
pub struct ApiKeyInfo {
    pub id: String,
    pub tenant: String,
    /// The dev key, honoured only while dev mode is on.
    pub is_static: bool,
    pub created_at: i64,
}

/// Who a presented key belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyOwner {
    pub tenant: String,
    pub is_static: bool,
}

fn digest(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The id names a key in listings: the start of its hash, not of the key.
fn id_of(key: &str) -> String {
    format!("key-{}", &digest(key)[..12])
}

impl Control {
    pub fn create_api_key(&self, tenant: &str) -> anyhow::Result<NewApiKey> {
        self.require_tenant(tenant)?;
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let key = format!("{PREFIX}{}", hex::encode(secret));
        let id = id_of(&key);
        self.db().execute(
            "INSERT INTO api_keys(id, tenant, key_sha256, is_static, created_at)
             VALUES (?1, ?2, ?3, 0, ?4)",
            params![id, tenant, digest(&key), unix_now()],
        )?;
        Ok(NewApiKey {
            tenant: tenant.to_string(),
            id,
            key,
        })
    }

    /// The fixed dev key (dev provisioning is idempotent).
    pub fn ensure_static_api_key(&self, tenant: &str, key: &str) -> anyhow::Result<()> {
        self.db().execute(
            "INSERT INTO api_keys(id, tenant, key_sha256, is_static, created_at)
             VALUES (?1, ?2, ?3, 1, ?4)
             ON CONFLICT(key_sha256) DO UPDATE SET tenant = excluded.tenant, is_static = 1",
            params![id_of(key), tenant, digest(key), unix_now()],
        )?;
        Ok(())
    }

    pub fn api_keys(&self, tenant: &str) -> anyhow::Result<Vec<ApiKeyInfo>> {
        self.require_tenant(tenant)?;
        let db = self.db();
        let mut stmt = db.prepare(
            "SELECT id, tenant, is_static, created_at FROM api_keys WHERE tenant = ?1
             ORDER BY created_at, id",
        )?;
        let rows = stmt.query_map([tenant], |r| {
            Ok(ApiKeyInfo {
                id: r.get(0)?,
                tenant: r.get(1)?,
                is_static: r.get(2)?,
                created_at: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn api_key_owner(&self, key: &str) -> anyhow::Result<Option<ApiKeyOwner>> {
        Ok(self
            .db()
            .query_row(
                "SELECT tenant, is_static FROM api_keys WHERE key_sha256 = ?1",
                [digest(key)],
                |r| {
                    Ok(ApiKeyOwner {
                        tenant: r.get(0)?,
                        is_static: r.get(1)?,
                    })
                },
            )
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_shown_once_and_stored_as_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let control = Control::open(dir.path()).unwrap();
        control.create_tenant("acme").unwrap();
        let new = control.create_api_key("acme").unwrap();
        assert!(new.key.starts_with(PREFIX) && new.key.len() == PREFIX.len() + 64);
        let owner = control.api_key_owner(&new.key).unwrap().unwrap();
        assert_eq!(owner.tenant, "acme");
        assert!(!owner.is_static);
        assert!(control.api_key_owner("ssk_wrong").unwrap().is_none());
        let listed = control.api_keys("acme").unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, new.id);
        let stored: String = control
            .db()
            .query_row("SELECT key_sha256 FROM api_keys", [], |r| r.get(0))
            .unwrap();
        assert!(!stored.contains(&new.key[PREFIX.len()..]));
        assert!(control.create_api_key("nobody").is_err());
        control.ensure_static_api_key("acme", "dev-key").unwrap();
        control.ensure_static_api_key("acme", "dev-key").unwrap();
        assert!(control.api_key_owner("dev-key").unwrap().unwrap().is_static);
        assert_eq!(control.api_keys("acme").unwrap().len(), 2);
    }
}
