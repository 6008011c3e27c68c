//! SES sending quotas per tenant (`GetAccount.SendQuota`): MaxSendRate
//! (recipients per second) and Max24HourSend (recipients per rolling 24
//! hours). A tenant without its own values gets SES's: the sandbox's 1/s
//! and 200 a day, or production's 14/s and 50000 a day. -1 is unlimited.

use anyhow::bail;
use rusqlite::params;
use serde::Serialize;

use super::Control;

pub const SANDBOX: SendQuota = SendQuota {
    max_send_rate: 1,
    max_24_hour_send: 200,
};
pub const PRODUCTION: SendQuota = SendQuota {
    max_send_rate: 14,
    max_24_hour_send: 50_000,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SendQuota {
    pub max_send_rate: i64,
    pub max_24_hour_send: i64,
}

impl SendQuota {
    /// The quota in force: the tenant's own values over SES's defaults.
    pub fn effective(sandbox: bool, rate: Option<i64>, daily: Option<i64>) -> SendQuota {
        let base = if sandbox { SANDBOX } else { PRODUCTION };
        SendQuota {
            max_send_rate: rate.unwrap_or(base.max_send_rate),
            max_24_hour_send: daily.unwrap_or(base.max_24_hour_send),
        }
    }
}

pub(super) fn migrate(conn: &rusqlite::Connection) -> anyhow::Result<()> {
    super::ensure_column(conn, "tenants", "max_send_rate", "INTEGER")?;
    super::ensure_column(conn, "tenants", "max_24h_send", "INTEGER")
}

fn check(key: &str, value: i64) -> anyhow::Result<()> {
    if value < 1 && value != -1 {
        bail!("{key} must be at least 1, or -1 for unlimited (not {value})");
    }
    Ok(())
}

impl Control {
    /// Sets the given values; the others keep theirs.
    pub fn set_send_quota(
        &self,
        tenant: &str,
        max_send_rate: Option<i64>,
        max_24h_send: Option<i64>,
    ) -> anyhow::Result<()> {
        if let Some(v) = max_send_rate {
            check("--max-send-rate", v)?;
        }
        if let Some(v) = max_24h_send {
            check("--max-24h-send", v)?;
        }
        self.require_tenant(tenant)?;
        self.db().execute(
            "UPDATE tenants SET max_send_rate = coalesce(?2, max_send_rate),
                                max_24h_send = coalesce(?3, max_24h_send)
             WHERE name = ?1",
            params![tenant, max_send_rate, max_24h_send],
        )?;
        Ok(())
    }
}
