//! Each tenant's receipt rule set (ordered) and IP filters. Every tenant
//! starts with one rule that stores everything for its domains; tenants
//! made by an older sesame get it once, on the first open (`rules_seeded`),
//! so an operator who later removes it is not overruled.

use anyhow::{Context, bail};
use rusqlite::{Connection, OptionalExtension, params};

use super::Control;
use crate::rules::{Cidr, FilterPolicy, IpFilter, ReceiptRule};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS receipt_rules(
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    position INTEGER NOT NULL,
    rule TEXT NOT NULL,
    PRIMARY KEY(tenant, name)
);
CREATE TABLE IF NOT EXISTS ip_filters(
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    policy TEXT NOT NULL,
    cidr TEXT NOT NULL,
    PRIMARY KEY(tenant, name)
);
";

/// Gives every tenant that never had one the default store rule.
pub(super) fn seed_default_rules(conn: &Connection) -> anyhow::Result<()> {
    let rule = serde_json::to_string(&ReceiptRule::default_store())?;
    let tx = conn.unchecked_transaction()?;
    tx.execute(
        "INSERT OR IGNORE INTO receipt_rules(tenant, name, position, rule)
         SELECT name, 'default', 0, ?1 FROM tenants WHERE rules_seeded = 0",
        [rule],
    )?;
    tx.execute(
        "UPDATE tenants SET rules_seeded = 1 WHERE rules_seeded = 0",
        [],
    )?;
    tx.commit().context("seeding the default receipt rules")?;
    Ok(())
}

fn policy_name(policy: FilterPolicy) -> &'static str {
    match policy {
        FilterPolicy::Block => "Block",
        FilterPolicy::Allow => "Allow",
    }
}

impl Control {
    /// The tenant's rules in evaluation order.
    pub fn receipt_rules(&self, tenant: &str) -> anyhow::Result<Vec<ReceiptRule>> {
        let db = self.db();
        let mut stmt = db.prepare(
            "SELECT name, rule FROM receipt_rules WHERE tenant = ?1 ORDER BY position, name",
        )?;
        let rows = stmt.query_map([tenant], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        rows.map(|row| {
            let (name, json) = row?;
            serde_json::from_str(&json).with_context(|| format!("stored receipt rule '{name}'"))
        })
        .collect()
    }

    /// Inserts `rule` at `position` (1-based; `None`: last).
    pub fn add_receipt_rule(
        &self,
        tenant: &str,
        rule: &ReceiptRule,
        position: Option<usize>,
    ) -> anyhow::Result<()> {
        self.require_tenant(tenant)?;
        let mut names = self.rule_names(tenant)?;
        if names.contains(&rule.name) {
            bail!("tenant '{tenant}' already has a rule named '{}'", rule.name);
        }
        let index = insert_index(position, names.len())?;
        names.insert(index, rule.name.clone());
        let db = self.db();
        let tx = db.unchecked_transaction()?;
        tx.execute(
            "INSERT INTO receipt_rules(tenant, name, position, rule) VALUES (?1, ?2, 0, ?3)",
            params![tenant, rule.name, serde_json::to_string(rule)?],
        )?;
        renumber(&tx, tenant, &names)?;
        tx.commit()?;
        Ok(())
    }

    pub fn remove_receipt_rule(&self, tenant: &str, name: &str) -> anyhow::Result<()> {
        self.require_tenant(tenant)?;
        let removed = self.db().execute(
            "DELETE FROM receipt_rules WHERE tenant = ?1 AND name = ?2",
            params![tenant, name],
        )?;
        if removed == 0 {
            bail!("tenant '{tenant}' has no rule named '{name}'");
        }
        Ok(())
    }

    /// Moves a rule to `position` (1-based).
    pub fn move_receipt_rule(
        &self,
        tenant: &str,
        name: &str,
        position: usize,
    ) -> anyhow::Result<()> {
        self.require_tenant(tenant)?;
        let mut names = self.rule_names(tenant)?;
        let Some(from) = names.iter().position(|n| n == name) else {
            bail!("tenant '{tenant}' has no rule named '{name}'");
        };
        let moved = names.remove(from);
        let index = insert_index(Some(position), names.len())?;
        names.insert(index, moved);
        let db = self.db();
        let tx = db.unchecked_transaction()?;
        renumber(&tx, tenant, &names)?;
        tx.commit()?;
        Ok(())
    }

    fn rule_names(&self, tenant: &str) -> anyhow::Result<Vec<String>> {
        Ok(self
            .receipt_rules(tenant)?
            .into_iter()
            .map(|r| r.name)
            .collect())
    }

    pub fn ip_filters(&self, tenant: &str) -> anyhow::Result<Vec<IpFilter>> {
        let db = self.db();
        let mut stmt = db
            .prepare("SELECT name, policy, cidr FROM ip_filters WHERE tenant = ?1 ORDER BY name")?;
        let rows = stmt.query_map([tenant], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        rows.map(|row| {
            let (name, policy, cidr) = row?;
            Ok(IpFilter {
                policy: FilterPolicy::parse(&policy)
                    .with_context(|| format!("IP filter '{name}': policy '{policy}'"))?,
                cidr: Cidr::parse(&cidr).map_err(|e| anyhow::anyhow!("IP filter '{name}': {e}"))?,
                name,
            })
        })
        .collect()
    }

    pub fn add_ip_filter(&self, tenant: &str, filter: &IpFilter) -> anyhow::Result<()> {
        self.require_tenant(tenant)?;
        let exists: Option<i64> = self
            .db()
            .query_row(
                "SELECT 1 FROM ip_filters WHERE tenant = ?1 AND name = ?2",
                params![tenant, filter.name],
                |r| r.get(0),
            )
            .optional()?;
        if exists.is_some() {
            bail!(
                "tenant '{tenant}' already has an IP filter named '{}'",
                filter.name
            );
        }
        self.db().execute(
            "INSERT INTO ip_filters(tenant, name, policy, cidr) VALUES (?1, ?2, ?3, ?4)",
            params![
                tenant,
                filter.name,
                policy_name(filter.policy),
                filter.cidr.to_string()
            ],
        )?;
        Ok(())
    }

    pub fn remove_ip_filter(&self, tenant: &str, name: &str) -> anyhow::Result<()> {
        self.require_tenant(tenant)?;
        let removed = self.db().execute(
            "DELETE FROM ip_filters WHERE tenant = ?1 AND name = ?2",
            params![tenant, name],
        )?;
        if removed == 0 {
            bail!("tenant '{tenant}' has no IP filter named '{name}'");
        }
        Ok(())
    }
}

/// 1-based `position` as an index into a list of `len` (after removal).
fn insert_index(position: Option<usize>, len: usize) -> anyhow::Result<usize> {
    match position {
        None => Ok(len),
        Some(p) if (1..=len + 1).contains(&p) => Ok(p - 1),
        Some(p) => bail!("position {p} is out of range: 1 to {}", len + 1),
    }
}

fn renumber(tx: &rusqlite::Transaction<'_>, tenant: &str, names: &[String]) -> anyhow::Result<()> {
    for (i, name) in names.iter().enumerate() {
        tx.execute(
            "UPDATE receipt_rules SET position = ?3 WHERE tenant = ?1 AND name = ?2",
            params![tenant, name, i as i64],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::parse_rule;

    fn names(c: &Control, tenant: &str) -> Vec<String> {
        c.receipt_rules(tenant)
            .unwrap()
            .into_iter()
            .map(|r| r.name)
            .collect()
    }

    #[test]
    fn new_tenants_start_with_the_default_store_rule() {
        let dir = tempfile::tempdir().unwrap();
        let c = Control::open(dir.path()).unwrap();
        c.create_tenant("t").unwrap();
        assert_eq!(
            c.receipt_rules("t").unwrap(),
            [ReceiptRule::default_store()]
        );
        // Removed on purpose: not re-created by the next open.
        c.remove_receipt_rule("t", "default").unwrap();
        drop(c);
        let c = Control::open(dir.path()).unwrap();
        assert!(c.receipt_rules("t").unwrap().is_empty());
    }

    /// Tenants from before receipt rules get the default rule once.
    #[test]
    fn existing_tenants_are_migrated_to_the_default_rule() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::control::open_sqlite(&dir.path().join("control.db")).unwrap();
        conn.execute_batch(
            "CREATE TABLE tenants(name TEXT PRIMARY KEY, sandbox INTEGER NOT NULL,
                delivery TEXT NOT NULL, created_at INTEGER NOT NULL, on_infected TEXT);
             INSERT INTO tenants VALUES ('old', 1, 'capture', 0, NULL);",
        )
        .unwrap();
        drop(conn);
        let c = Control::open(dir.path()).unwrap();
        assert_eq!(names(&c, "old"), ["default"]);
        assert!(c.require_tenant("old").unwrap().dmarc_enforce);
    }

    #[test]
    fn rules_are_ordered_and_movable() {
        let dir = tempfile::tempdir().unwrap();
        let c = Control::open(dir.path()).unwrap();
        c.create_tenant("t").unwrap();
        let rule = |name: &str| {
            parse_rule(&format!(
                r#"{{"name":"{name}","actions":[{{"type":"stop"}}]}}"#
            ))
            .unwrap()
        };
        c.add_receipt_rule("t", &rule("first"), Some(1)).unwrap();
        c.add_receipt_rule("t", &rule("last"), None).unwrap();
        assert_eq!(names(&c, "t"), ["first", "default", "last"]);
        assert!(c.add_receipt_rule("t", &rule("last"), None).is_err());
        assert!(c.add_receipt_rule("t", &rule("x"), Some(9)).is_err());
        c.move_receipt_rule("t", "last", 1).unwrap();
        assert_eq!(names(&c, "t"), ["last", "first", "default"]);
        c.move_receipt_rule("t", "last", 3).unwrap();
        assert_eq!(names(&c, "t"), ["first", "default", "last"]);
        assert!(c.move_receipt_rule("t", "nope", 1).is_err());
        c.remove_receipt_rule("t", "first").unwrap();
        assert_eq!(names(&c, "t"), ["default", "last"]);
        assert!(c.remove_receipt_rule("t", "first").is_err());
    }

    #[test]
    fn ip_filters_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let c = Control::open(dir.path()).unwrap();
        c.create_tenant("t").unwrap();
        let filter = IpFilter {
            name: "lab".into(),
            policy: FilterPolicy::Block,
            cidr: Cidr::parse("10.0.0.0/8").unwrap(),
        };
        c.add_ip_filter("t", &filter).unwrap();
        assert!(c.add_ip_filter("t", &filter).is_err());
        assert_eq!(c.ip_filters("t").unwrap(), [filter]);
        c.remove_ip_filter("t", "lab").unwrap();
        assert!(c.ip_filters("t").unwrap().is_empty());
    }
}
