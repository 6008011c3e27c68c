//! Domain identities' DNS-side state: DKIM keys (sealed at rest), the SES
//! statuses for verification, DKIM and MAIL FROM, and the MAIL FROM
//! behaviour on MX failure.

use anyhow::{Context, bail};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::{Control, IdentityStatus};
use crate::types::unix_now;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS domains(
    domain TEXT PRIMARY KEY,
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    dkim_status TEXT NOT NULL,
    mail_from_status TEXT NOT NULL,
    -- when each status last changed: PENDING and TEMPORARY_FAILURE expire
    verification_since INTEGER NOT NULL,
    dkim_since INTEGER NOT NULL,
    mail_from_since INTEGER NOT NULL,
    mail_from_behavior TEXT NOT NULL DEFAULT 'USE_DEFAULT_VALUE',
    -- verified without DNS (dev domain, operator attestation): never re-checked
    attested INTEGER NOT NULL DEFAULT 0,
    -- bumped on every change of the published records: the zone serial
    records_changed_at INTEGER NOT NULL,
    last_checked_at INTEGER
);
CREATE TABLE IF NOT EXISTS dkim_keys(
    domain TEXT NOT NULL REFERENCES domains(domain) ON DELETE CASCADE,
    selector TEXT NOT NULL,
    key_type TEXT NOT NULL,
    public_key TEXT NOT NULL,
    sealed_private BLOB NOT NULL,
    state TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    activated_at INTEGER,
    retire_at INTEGER,
    PRIMARY KEY(domain, selector)
);
";

/// RFC 6376 / RFC 8463 key types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    Rsa,
    Ed25519,
}

impl KeyType {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Rsa => "rsa",
            KeyType::Ed25519 => "ed25519",
        }
    }

    fn parse(s: &str) -> KeyType {
        if s == "ed25519" {
            KeyType::Ed25519
        } else {
            KeyType::Rsa
        }
    }
}

/// Where a key is in its life: published and waiting to verify (rotation),
/// signing, still published after being replaced, or gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    Pending,
    Active,
    Retiring,
    Retired,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Pending => "pending",
            KeyState::Active => "active",
            KeyState::Retiring => "retiring",
            KeyState::Retired => "retired",
        }
    }

    fn parse(s: &str) -> KeyState {
        match s {
            "pending" => KeyState::Pending,
            "retiring" => KeyState::Retiring,
            "retired" => KeyState::Retired,
            _ => KeyState::Active,
        }
    }

    /// Published in DNS (and so checked by verification).
    pub fn is_published(self) -> bool {
        self != KeyState::Retired
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DkimKey {
    pub selector: String,
    pub key_type: KeyType,
    /// Base64 of the public key as published in `p=`.
    pub public_key: String,
    pub state: KeyState,
    pub created_at: i64,
    pub activated_at: Option<i64>,
    pub retire_at: Option<i64>,
}

/// A new key pair, private half already sealed.
pub struct NewKey {
    pub selector: String,
    pub key_type: KeyType,
    pub public_key: String,
    pub sealed_private: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MailFromBehavior {
    UseDefaultValue,
    RejectMessage,
}

impl MailFromBehavior {
    pub fn parse(s: &str) -> Option<MailFromBehavior> {
        match s.to_ascii_uppercase().replace('-', "_").as_str() {
            "USE_DEFAULT_VALUE" => Some(MailFromBehavior::UseDefaultValue),
            "REJECT_MESSAGE" => Some(MailFromBehavior::RejectMessage),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            MailFromBehavior::UseDefaultValue => "USE_DEFAULT_VALUE",
            MailFromBehavior::RejectMessage => "REJECT_MESSAGE",
        }
    }
}

/// One status with the time it last changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Tracked {
    pub status: IdentityStatus,
    pub since: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Domain {
    pub domain: String,
    pub tenant: String,
    pub verification: Tracked,
    pub dkim: Tracked,
    pub mail_from: Tracked,
    pub mail_from_domain: String,
    pub mail_from_behavior: MailFromBehavior,
    pub attested: bool,
    pub records_changed_at: i64,
    pub last_checked_at: Option<i64>,
    pub keys: Vec<DkimKey>,
}

impl Domain {
    pub fn active_keys(&self) -> impl Iterator<Item = &DkimKey> {
        self.keys.iter().filter(|k| k.state == KeyState::Active)
    }

    pub fn published_keys(&self) -> impl Iterator<Item = &DkimKey> {
        self.keys.iter().filter(|k| k.state.is_published())
    }
}

/// The statuses a verification run decided on.
pub struct StatusUpdate {
    pub verification: Tracked,
    pub dkim: Tracked,
    pub mail_from: Tracked,
}

impl Control {
    /// Creates a domain identity with its first DKIM keys (active at once:
    /// nothing is sent from the domain before it verifies anyway).
    pub fn add_domain(
        &self,
        tenant: &str,
        domain: &str,
        keys: Vec<NewKey>,
        attested: bool,
    ) -> anyhow::Result<Domain> {
        let status = if attested {
            IdentityStatus::Success
        } else {
            IdentityStatus::Pending
        };
        let identity = self.add_identity(tenant, domain, status)?;
        let domain = identity.identity;
        if self.domain(&domain)?.is_some() {
            bail!("domain '{domain}' already exists");
        }
        let now = unix_now();
        let mut db = self.db();
        let tx = db.transaction()?;
        tx.execute(
            "INSERT INTO domains(domain, tenant, dkim_status, mail_from_status, verification_since,
                dkim_since, mail_from_since, attested, records_changed_at)
             VALUES (?1, ?2, ?3, ?3, ?4, ?4, ?4, ?5, ?4)",
            params![domain, tenant, status.as_str(), now, attested],
        )?;
        for key in keys {
            insert_key(&tx, &domain, key, KeyState::Active, now)?;
        }
        tx.commit()?;
        drop(db);
        self.domain(&domain)?.context("domain vanished")
    }

    pub fn domain(&self, domain: &str) -> anyhow::Result<Option<Domain>> {
        let db = self.db();
        let row = db
            .query_row(
                "SELECT d.domain, d.tenant, i.status, d.verification_since, d.dkim_status, d.dkim_since,
                        d.mail_from_status, d.mail_from_since, d.mail_from_behavior, d.attested,
                        d.records_changed_at, d.last_checked_at
                 FROM domains d JOIN identities i ON i.tenant = d.tenant AND i.identity = d.domain
                 WHERE d.domain = ?1",
                [domain],
                |r| {
                    let tracked = |status: String, since: i64| Tracked {
                        status: IdentityStatus::parse(&status),
                        since,
                    };
                    let name: String = r.get(0)?;
                    Ok(Domain {
                        mail_from_domain: format!("mail.{name}"),
                        domain: name,
                        tenant: r.get(1)?,
                        verification: tracked(r.get(2)?, r.get(3)?),
                        dkim: tracked(r.get(4)?, r.get(5)?),
                        mail_from: tracked(r.get(6)?, r.get(7)?),
                        mail_from_behavior: MailFromBehavior::parse(&r.get::<_, String>(8)?)
                            .unwrap_or(MailFromBehavior::UseDefaultValue),
                        attested: r.get(9)?,
                        records_changed_at: r.get(10)?,
                        last_checked_at: r.get(11)?,
                        keys: Vec::new(),
                    })
                },
            )
            .optional()?;
        let Some(mut domain) = row else {
            return Ok(None);
        };
        let mut stmt = db.prepare(
            "SELECT selector, key_type, public_key, state, created_at, activated_at, retire_at
             FROM dkim_keys WHERE domain = ?1 ORDER BY created_at, selector",
        )?;
        domain.keys = stmt
            .query_map([&domain.domain], |r| {
                Ok(DkimKey {
                    selector: r.get(0)?,
                    key_type: KeyType::parse(&r.get::<_, String>(1)?),
                    public_key: r.get(2)?,
                    state: KeyState::parse(&r.get::<_, String>(3)?),
                    created_at: r.get(4)?,
                    activated_at: r.get(5)?,
                    retire_at: r.get(6)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(Some(domain))
    }

    pub fn require_domain(&self, domain: &str) -> anyhow::Result<Domain> {
        let name = crate::types::normalize_domain(domain)
            .with_context(|| format!("'{domain}' is not a valid domain"))?;
        self.domain(&name)?
            .with_context(|| format!("no domain '{name}'; add it with `sesame domain add`"))
    }

    pub fn domain_names(&self) -> anyhow::Result<Vec<String>> {
        let db = self.db();
        let mut stmt = db.prepare("SELECT domain FROM domains ORDER BY domain")?;
        let names = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(names)
    }

    /// The sealed private key of a selector (only the signing module opens it).
    pub fn sealed_dkim_key(&self, domain: &str, selector: &str) -> anyhow::Result<Vec<u8>> {
        Ok(self.db().query_row(
            "SELECT sealed_private FROM dkim_keys WHERE domain = ?1 AND selector = ?2",
            [domain, selector],
            |r| r.get(0),
        )?)
    }

    /// Publishes rotation keys; they sign once their records verify.
    pub fn add_pending_keys(&self, domain: &str, keys: Vec<NewKey>) -> anyhow::Result<()> {
        let now = unix_now();
        let mut db = self.db();
        let tx = db.transaction()?;
        let pending: i64 = tx.query_row(
            "SELECT count(*) FROM dkim_keys WHERE domain = ?1 AND state = 'pending'",
            [domain],
            |r| r.get(0),
        )?;
        if pending > 0 {
            bail!("a rotation of '{domain}' is already waiting for its records to verify");
        }
        for key in keys {
            insert_key(&tx, domain, key, KeyState::Pending, now)?;
        }
        tx.execute(
            "UPDATE domains SET records_changed_at = ?2 WHERE domain = ?1",
            params![domain, now],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Pending keys start signing; the keys they replace stay published
    /// until `retire_at`.
    pub fn promote_pending_keys(&self, domain: &str, retire_at: i64) -> anyhow::Result<()> {
        let now = unix_now();
        let mut db = self.db();
        let tx = db.transaction()?;
        tx.execute(
            "UPDATE dkim_keys SET state = 'retiring', retire_at = ?2 WHERE domain = ?1 AND state = 'active'",
            params![domain, retire_at],
        )?;
        tx.execute(
            "UPDATE dkim_keys SET state = 'active', activated_at = ?2 WHERE domain = ?1 AND state = 'pending'",
            params![domain, now],
        )?;
        tx.execute(
            "UPDATE domains SET records_changed_at = ?2 WHERE domain = ?1",
            params![domain, now],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Unpublishes keys whose grace period is over; true if any changed.
    pub fn retire_due_keys(&self, domain: &str, now: i64) -> anyhow::Result<bool> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let changed = tx.execute(
            "UPDATE dkim_keys SET state = 'retired' WHERE domain = ?1 AND state = 'retiring' AND retire_at <= ?2",
            params![domain, now],
        )?;
        if changed > 0 {
            tx.execute(
                "UPDATE domains SET records_changed_at = ?2 WHERE domain = ?1",
                params![domain, now],
            )?;
        }
        tx.commit()?;
        Ok(changed > 0)
    }

    pub fn update_domain_statuses(
        &self,
        domain: &str,
        update: &StatusUpdate,
    ) -> anyhow::Result<()> {
        let mut db = self.db();
        let tx = db.transaction()?;
        tx.execute(
            "UPDATE identities SET status = ?2 WHERE kind = 'domain' AND identity = ?1",
            params![domain, update.verification.status.as_str()],
        )?;
        tx.execute(
            "UPDATE domains SET verification_since = ?2, dkim_status = ?3, dkim_since = ?4,
                mail_from_status = ?5, mail_from_since = ?6, last_checked_at = ?7
             WHERE domain = ?1",
            params![
                domain,
                update.verification.since,
                update.dkim.status.as_str(),
                update.dkim.since,
                update.mail_from.status.as_str(),
                update.mail_from.since,
                unix_now()
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn set_mail_from_behavior(
        &self,
        domain: &str,
        behavior: MailFromBehavior,
    ) -> anyhow::Result<()> {
        self.require_domain(domain)?;
        self.db().execute(
            "UPDATE domains SET mail_from_behavior = ?2 WHERE domain = ?1",
            params![domain, behavior.as_str()],
        )?;
        Ok(())
    }

    /// The selectors a domain has ever used (selectors are never reused).
    pub fn selectors(&self, domain: &str) -> anyhow::Result<Vec<String>> {
        let db = self.db();
        let mut stmt = db.prepare("SELECT selector FROM dkim_keys WHERE domain = ?1")?;
        let selectors = stmt
            .query_map([domain], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(selectors)
    }
}

fn insert_key(
    tx: &rusqlite::Transaction<'_>,
    domain: &str,
    key: NewKey,
    state: KeyState,
    now: i64,
) -> anyhow::Result<()> {
    let activated = (state == KeyState::Active).then_some(now);
    tx.execute(
        "INSERT INTO dkim_keys(domain, selector, key_type, public_key, sealed_private, state, created_at, activated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            domain,
            key.selector,
            key.key_type.as_str(),
            key.public_key,
            key.sealed_private,
            state.as_str(),
            now,
            activated
        ],
    )?;
    Ok(())
}
