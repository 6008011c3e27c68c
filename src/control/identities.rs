use anyhow::{Context, bail};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::Control;
use crate::types::{EmailAddress, domain_within, normalize_domain, unix_now};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentityKind {
    Domain,
    Email,
}

/// SES verification statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IdentityStatus {
    Pending,
    Success,
    Failed,
    TemporaryFailure,
    NotStarted,
}

impl IdentityStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityStatus::Pending => "PENDING",
            IdentityStatus::Success => "SUCCESS",
            IdentityStatus::Failed => "FAILED",
            IdentityStatus::TemporaryFailure => "TEMPORARY_FAILURE",
            IdentityStatus::NotStarted => "NOT_STARTED",
        }
    }

    /// Verified, or verified with a temporary DNS problem.
    pub fn is_verified(self) -> bool {
        matches!(
            self,
            IdentityStatus::Success | IdentityStatus::TemporaryFailure
        )
    }

    pub fn parse(s: &str) -> IdentityStatus {
        match s {
            "SUCCESS" => IdentityStatus::Success,
            "FAILED" => IdentityStatus::Failed,
            "TEMPORARY_FAILURE" => IdentityStatus::TemporaryFailure,
            "NOT_STARTED" => IdentityStatus::NotStarted,
            _ => IdentityStatus::Pending,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Identity {
    pub identity: String,
    #[serde(rename = "type")]
    pub kind: IdentityKind,
    pub status: IdentityStatus,
}

impl Identity {
    /// Does this (verified) identity cover `addr`? A domain covers its
    /// addresses and subdomains; an address covers itself and its `+label`
    /// variants, with a case-sensitive local part.
    pub fn covers(&self, addr: &EmailAddress) -> bool {
        match self.kind {
            IdentityKind::Domain => domain_within(addr.domain(), &self.identity),
            IdentityKind::Email => EmailAddress::parse(&self.identity).is_some_and(|id| {
                id.domain() == addr.domain()
                    && (id.local() == addr.local() || id.local() == addr.base_local())
            }),
        }
    }
}

/// Normalizes an identity as typed by an operator into its stored form.
fn normalize(raw: &str) -> anyhow::Result<(String, IdentityKind)> {
    if raw.contains('@') {
        let addr = EmailAddress::parse(raw)
            .with_context(|| format!("'{raw}' is not a valid email address"))?;
        Ok((addr.to_string(), IdentityKind::Email))
    } else {
        let domain =
            normalize_domain(raw).with_context(|| format!("'{raw}' is not a valid domain"))?;
        if !domain.contains('.') {
            bail!("'{raw}' is not a fully qualified domain");
        }
        Ok((domain, IdentityKind::Domain))
    }
}

impl Control {
    pub fn add_identity(
        &self,
        tenant: &str,
        raw: &str,
        status: IdentityStatus,
    ) -> anyhow::Result<Identity> {
        self.require_tenant(tenant)?;
        let (identity, kind) = normalize(raw)?;
        let kind_str = match kind {
            IdentityKind::Domain => "domain",
            IdentityKind::Email => "email",
        };
        if kind == IdentityKind::Domain
            && let Some(owner) = self.domain_owner(&identity)?
            && owner != tenant
        {
            bail!("domain '{identity}' already belongs to another tenant");
        }
        self.db().execute(
            "INSERT INTO identities(tenant, identity, kind, status, created_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(tenant, identity) DO UPDATE SET status = excluded.status",
            params![tenant, identity, kind_str, status.as_str(), unix_now()],
        )?;
        Ok(Identity {
            identity,
            kind,
            status,
        })
    }

    fn domain_owner(&self, domain: &str) -> anyhow::Result<Option<String>> {
        Ok(self
            .db()
            .query_row(
                "SELECT tenant FROM identities WHERE kind = 'domain' AND identity = ?1",
                [domain],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn identities(&self, tenant: &str) -> anyhow::Result<Vec<Identity>> {
        let db = self.db();
        let mut stmt = db.prepare(
            "SELECT identity, kind, status FROM identities WHERE tenant = ?1 ORDER BY identity",
        )?;
        let rows = stmt.query_map([tenant], |r| {
            let kind: String = r.get(1)?;
            let status: String = r.get(2)?;
            Ok(Identity {
                identity: r.get(0)?,
                kind: if kind == "domain" {
                    IdentityKind::Domain
                } else {
                    IdentityKind::Email
                },
                status: IdentityStatus::parse(&status),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn verified_identities(&self, tenant: &str) -> anyhow::Result<Vec<Identity>> {
        let mut all = self.identities(tenant)?;
        // A DNS hiccup on a verified identity must not stop its mail.
        all.retain(|i| i.status.is_verified());
        Ok(all)
    }

    /// The tenant whose verified domain (or parent domain) receives mail for
    /// `domain`; the most specific domain wins.
    pub fn receiving_tenant(&self, domain: &str) -> anyhow::Result<Option<String>> {
        Ok(self
            .db()
            .query_row(
                "SELECT tenant FROM identities
                 WHERE kind = 'domain' AND status IN ('SUCCESS', 'TEMPORARY_FAILURE')
                   AND (identity = ?1 OR substr(?1, -length(identity) - 1) = '.' || identity)
                 ORDER BY length(identity) DESC LIMIT 1",
                [domain],
                |r| r.get(0),
            )
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(raw: &str) -> Identity {
        let (identity, kind) = normalize(raw).unwrap();
        Identity {
            identity,
            kind,
            status: IdentityStatus::Success,
        }
    }

    fn addr(raw: &str) -> EmailAddress {
        EmailAddress::parse(raw).unwrap()
    }

    #[test]
    fn domain_identity_covers_addresses_and_subdomains() {
        let d = identity("Example.com");
        assert!(d.covers(&addr("anyone@example.com")));
        assert!(d.covers(&addr("a@mail.EXAMPLE.com")));
        assert!(!d.covers(&addr("a@notexample.com")));
    }

    #[test]
    fn address_identity_is_case_sensitive_and_allows_labels() {
        let a = identity("Alice@Example.com");
        assert!(a.covers(&addr("Alice@example.com")));
        assert!(a.covers(&addr("Alice+news@example.com")));
        assert!(!a.covers(&addr("alice@example.com")));
        assert!(!a.covers(&addr("Bob@example.com")));
    }

    #[test]
    fn receiving_tenant_prefers_the_most_specific_domain() {
        let dir = tempfile::tempdir().unwrap();
        let control = Control::open(dir.path()).unwrap();
        control.create_tenant("a").unwrap();
        control.create_tenant("b").unwrap();
        control
            .add_identity("a", "example.com", IdentityStatus::Success)
            .unwrap();
        control
            .add_identity("b", "sub.example.com", IdentityStatus::Success)
            .unwrap();
        control
            .add_identity("b", "pending.test", IdentityStatus::Pending)
            .unwrap();
        let owner = |d: &str| control.receiving_tenant(d).unwrap();
        assert_eq!(owner("example.com").as_deref(), Some("a"));
        assert_eq!(owner("x.sub.example.com").as_deref(), Some("b"));
        assert_eq!(owner("other.example.com").as_deref(), Some("a"));
        assert_eq!(owner("pending.test"), None);
        assert_eq!(owner("badexample.com"), None);
        assert!(
            control
                .add_identity("b", "example.com", IdentityStatus::Success)
                .is_err()
        );
    }
}
