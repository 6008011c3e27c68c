//! Which SES MessageId belongs to which sesame message. The `ses`
//! transport writes a row per accepted SendEmail; SES feedback (bounces,
//! complaints, deliveries) names only SES's id, and is tied back to the
//! tenant and to sesame's id through this table.

use rusqlite::{OptionalExtension, params};

use super::Control;
use crate::types::unix_now;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS ses_messages(
    ses_message_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    message_id TEXT NOT NULL,
    recipients TEXT NOT NULL,
    sent_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ses_messages_by_message ON ses_messages(message_id);
";

/// The sesame side of one SES send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SesMessage {
    pub tenant: String,
    pub message_id: String,
    pub recipients: Vec<String>,
}

impl Control {
    pub fn record_ses_message(
        &self,
        ses_message_id: &str,
        tenant: &str,
        message_id: &str,
        recipients: &[String],
    ) -> anyhow::Result<()> {
        self.db().execute(
            "INSERT OR REPLACE INTO ses_messages(ses_message_id, tenant, message_id, recipients, sent_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                ses_message_id,
                tenant,
                message_id,
                serde_json::to_string(recipients)?,
                unix_now()
            ],
        )?;
        Ok(())
    }

    pub fn ses_message(&self, ses_message_id: &str) -> anyhow::Result<Option<SesMessage>> {
        let row: Option<(String, String, String)> = self
            .db()
            .query_row(
                "SELECT tenant, message_id, recipients FROM ses_messages WHERE ses_message_id = ?1",
                [ses_message_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        Ok(row.map(|(tenant, message_id, recipients)| SesMessage {
            tenant,
            message_id,
            recipients: serde_json::from_str(&recipients).unwrap_or_default(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ses_id_leads_back_to_tenant_and_message() {
        let dir = tempfile::tempdir().unwrap();
        let control = Control::open(dir.path()).unwrap();
        let rcpts = vec!["a@x.test".to_string(), "b@x.test".to_string()];
        control
            .record_ses_message("ses-1", "acme", "m-1", &rcpts)
            .unwrap();
        let found = control.ses_message("ses-1").unwrap().unwrap();
        assert_eq!(found.tenant, "acme");
        assert_eq!(found.message_id, "m-1");
        assert_eq!(found.recipients, rcpts);
        assert!(control.ses_message("ses-2").unwrap().is_none());
    }
}
